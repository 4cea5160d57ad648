"""The last hour of each focuser's position and temperature, kept in memory for the setup page's chart.

One thread samples every focuser every few seconds from the driver's snapshot (never the serial line), so the
chart is already full when a phone opens the page, whether or not anybody was watching.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable

from alpaca_focuser.focuser.device import FocuserDevice

log = logging.getLogger(__name__)

INTERVAL = 5.0  # seconds between samples
DEPTH = 3600.0  # seconds kept

#: One sample: unix time (s), position (None: not connected or relative), temperature (°C or None), moving.
Sample = tuple[float, int | None, float | None, bool]


class HistorySampler:
    def __init__(self, devices: dict[int, FocuserDevice], interval: float = INTERVAL, depth: float = DEPTH,
                 clock: Callable[[], float] = time.time) -> None:
        self.devices = devices
        self.interval = interval
        self.depth = depth
        self._clock = clock
        size = int(depth / interval) + 1
        self._samples: dict[int, deque[Sample]] = {n: deque(maxlen=size) for n in devices}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="history-sampler", daemon=True)

    def start(self) -> None:
        self.sample_once()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample_once()
            except Exception:  # a bad snapshot must not end the history for good
                log.exception("History sampling failed")

    def sample_once(self) -> None:
        now = self._clock()
        for number, device in self.devices.items():
            status = device.driver.status()
            ok = status.connected and not status.fault
            position = status.position if ok and device.cfg.absolute else None
            has_sensor = device.driver.capabilities().has_temperature
            temperature = status.temperature if ok and has_sensor else None
            self.record(number, (round(now, 1), position, temperature, ok and status.moving))

    def record(self, number: int, sample: Sample) -> None:
        """Keep one sample (oldest ones fall off after ``depth`` seconds)."""
        with self._lock:
            self._samples[number].append(sample)

    def history(self, number: int) -> dict[str, Any]:
        """JSON for ``/setup/v1/focuser/<n>/history``: samples oldest first, plus temperature-compensation
        corrections (``FocuserDevice.temp_comp_events()``)."""
        now = self._clock()
        with self._lock:
            samples = [list(s) for s in self._samples.get(number, ()) if s[0] >= now - self.depth]
        device = self.devices[number]
        events = [e for e in device.temp_comp_events() if e["time"] >= now - self.depth]
        return {"now": round(now, 1), "interval": self.interval, "depth": self.depth,
                "fields": ["time", "position", "temperature", "moving"], "samples": samples,
                "tempcomp_events": events}
