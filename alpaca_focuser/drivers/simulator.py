"""A simulated focuser that moves in real time, so motion, halts and polling behave as on hardware.

Motion is computed from time (start position, target, start time, speed) rather than stepped by a thread, so
the position is always exact for "now" and nothing has to run while the focuser sits idle.
"""

from __future__ import annotations

import math
import random
import threading
import time
from typing import Callable

from alpaca_focuser.drivers.base import DriverCapabilities, DriverStatus, FocuserDriver
from alpaca_focuser.errors import NotConnectedError

# The simulator is not limited by a 16-bit firmware counter; the focuser layer clamps to MaxStep anyway.
SIMULATOR_MAX_POSITION = 2**31 - 1


class SimulatorDriver(FocuserDriver):
    kind = "simulator"

    def __init__(self, *, speed: float = 2000.0, position: int = 0, temperature: float = 10.0,
                 has_temperature: bool = True, connect_delay: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self._speed = float(speed)
        self._clock = clock
        self._lock = threading.Lock()
        self._connected = False
        self._start_position = position
        self._target = position
        self._start_time = clock()
        self._base_temperature = temperature
        self._has_temperature = has_temperature
        self._connect_delay = connect_delay
        self._rng = random.Random()
        self._temperature_fixed = False  # set_temperature() stops the drift and the noise

    # --- motion model -------------------------------------------------------------------------------------------
    def _position_at(self, now: float) -> int:
        travelled = int((now - self._start_time) * self._speed)
        distance = self._target - self._start_position
        if travelled >= abs(distance):
            return self._target
        return self._start_position + (travelled if distance > 0 else -travelled)

    def _temperature_at(self, now: float) -> float:
        if self._temperature_fixed:
            return self._base_temperature
        # A slow night-time drift (about 1 C over half an hour, like a cooling dome) with a little sensor noise.
        drift = -0.6 * math.sin(now / 1800.0) - 0.0005 * (now % 3600.0)
        noise = self._rng.gauss(0.0, 0.03)
        return round(self._base_temperature + drift + noise, 2)

    def set_temperature(self, celsius: float) -> None:
        """Set the simulated ambient temperature (demonstrations, tests). From then on it stays exactly there,
        with neither drift nor noise, until the next call, so what a test scripts is what the focuser reads."""
        with self._lock:
            self._base_temperature = float(celsius)
            self._temperature_fixed = True

    # --- FocuserDriver -------------------------------------------------------------------------------------------
    def connect(self) -> None:
        if self._connect_delay:
            time.sleep(self._connect_delay)  # worker thread only: makes Connecting observable, as on hardware
        with self._lock:
            self._connected = True

    def disconnect(self) -> None:
        with self._lock:
            self._connected = False

    def status(self) -> DriverStatus:
        now = self._clock()
        with self._lock:
            position = self._position_at(now)
            return DriverStatus(
                connected=self._connected,
                position=position,
                moving=position != self._target,
                temperature=self._temperature_at(now) if self._has_temperature else None,
                updated=now,
            )

    def capabilities(self) -> DriverCapabilities:
        return DriverCapabilities(max_position=SIMULATOR_MAX_POSITION, has_temperature=self._has_temperature,
                                  description=f"Simulated focuser ({self._speed:g} steps/s)")

    def move_to(self, target: int) -> None:
        now = self._clock()
        with self._lock:
            if not self._connected:
                raise NotConnectedError("The simulated focuser is not connected")
            self._start_position = self._position_at(now)
            self._start_time = now
            self._target = target

    def halt(self) -> None:
        now = self._clock()
        with self._lock:
            self._start_position = self._target = self._position_at(now)
            self._start_time = now

    def sync(self, position: int) -> None:
        now = self._clock()
        with self._lock:
            self._start_position = self._target = position
            self._start_time = now
