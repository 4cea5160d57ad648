"""Temperature compensation: the averaged temperature, the reference, and when a correction is due.

This module decides; it moves nothing. The focuser calls it from its motion worker while the focuser is idle
and hands a correction to the motion engine, which moves with backlash handling like any move.

The rule (issue 7): with TempComp on, the target is ``client_position + round(coefficient * (T_avg - T_ref))``,
where the position and ``T_ref`` are taken when the client last moved, or when TempComp was switched on. A
correction is due whenever the averaged temperature has moved at least the threshold since the last correction.
Computing from the reference rather than adding step to step means rounding never accumulates.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from alpaca_focuser.focuser.moves import Frame

log = logging.getLogger(__name__)

EVENTS_KEPT = 200  # recent corrections kept for the page's chart and the metrics
EPSILON_C = 1e-6  # an average that reaches the threshold up to float noise has reached it


def round_half_away(value: float) -> int:
    """Round to the nearest integer, halves away from zero (Python's round() sends 2.5 to 2)."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


class TemperatureWindow:
    """Temperature samples taken at a steady pace, and their average over the last ``window_s`` seconds.

    Sampling at a fixed pace, however often the hardware reports, makes the mean a time-weighted average: a
    reading that lasted one poll counts for one poll's worth of the window, which is what smooths a spike.
    """

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque()
        self._last = -math.inf
        self._cached: tuple[float, float, float | None] | None = None  # (window_s, newest sample time, average)
        self._lock = threading.Lock()

    @staticmethod
    def sample_period(window_s: float) -> float:
        """About 20 samples per window, but never more often than 10 per second or less than once a second."""
        return min(1.0, max(0.1, window_s / 20.0))

    def offer(self, now: float, celsius: float, window_s: float) -> None:
        """A reading; kept when a sample is due."""
        with self._lock:
            if now - self._last < self.sample_period(window_s):
                return
            self._last = now
            self._samples.append((now, celsius))
            while self._samples and self._samples[0][0] <= now - window_s:
                self._samples.popleft()

    def average(self, now: float, window_s: float) -> float | None:
        """The mean of the samples of the last ``window_s`` seconds; None when there are none. Computed once per
        sample and window (the worker asks ten times a second, a Pi Zero need not add up an hour of samples each
        time)."""
        with self._lock:
            newest = self._samples[-1][0] if self._samples else -math.inf
            cached = self._cached
            if cached is None or cached[:2] != (window_s, newest):
                values = [c for t, c in self._samples if t > newest - window_s]
                cached = self._cached = (window_s, newest, math.fsum(values) / len(values) if values else None)
            if newest <= now - window_s:
                return None  # no reading for a whole window: there is nothing to average
            return cached[2]

    def clear(self) -> None:
        """Forget the samples (after a reconnect, the old ones may be from another night)."""
        with self._lock:
            self._samples.clear()
            self._last = -math.inf
            self._cached = None


@dataclass(frozen=True)
class Correction:
    target: int  # client frame, clamped
    current: int  # client frame, where the focuser stands
    temperature: float  # the averaged temperature it is for
    delta_c: float  # T_avg - T_ref
    reference: int  # the client-frame reference position

    @property
    def steps(self) -> int:
        return self.target - self.current


class TempCompensation:
    """The state of one focuser's compensation: on/off, paused by a Halt, the reference, the records."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.name = name
        self.enabled = enabled  # the client's TempComp, remembered across restarts by the caller
        self.suspended = False  # after a Halt, until the next client Move or TempComp switch
        self._reference: tuple[int, float] | None = None  # (motor position, averaged temperature)
        self._last_temperature = 0.0  # the averaged temperature of the last correction (or of the reference)
        self.corrections = 0
        self._events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self._lock = threading.Lock()

    # --- what clients and the motion engine tell us ------------------------------------------------------------
    def switch(self, on: bool) -> None:
        """TempComp set by a client. Switching on (or re-asserting it after a Halt) takes a new reference."""
        with self._lock:
            if on and (not self.enabled or self.suspended):
                self._reference = None
            self.suspended = False
            self.enabled = on

    def halted(self) -> None:
        with self._lock:
            if self.enabled and not self.suspended:
                log.info("%s: temperature compensation paused by Halt until the next Move or TempComp switch",
                         self.name)
            self.suspended = True

    def client_moved(self) -> None:
        """A client move ended where the client asked: the reference is taken afresh (IFocuserV3: a Move with
        TempComp on is carried out, and the client's choice becomes the new base)."""
        with self._lock:
            self.suspended = False
            self._reference = None

    def reset_reference(self) -> None:
        """SyncPosition, a reconnect: the next evaluation takes a new reference."""
        with self._lock:
            self._reference = None

    def take_reference(self, average: float, current: int, frame: Frame) -> None:
        """Take the reference now if there is none (the focuser is idle at ``current``)."""
        with self._lock:
            self._take_reference(average, current, frame)

    def _take_reference(self, average: float, current: int, frame: Frame) -> bool:
        if self._reference is not None:
            return False
        self._reference = (frame.to_motor(current), average)
        self._last_temperature = average
        log.info("%s: temperature compensation reference: position %d at %.2f °C (averaged)", self.name, current,
                 average)
        return True

    # --- the decision ----------------------------------------------------------------------------------------
    def evaluate(self, average: float, current: int, frame: Frame, coefficient: float,
                 threshold: float) -> Correction | None:
        """The correction due now, if any (the focuser is idle at ``current``, client frame)."""
        with self._lock:
            if self._take_reference(average, current, frame) or self._reference is None:
                return None
            if abs(average - self._last_temperature) < threshold - EPSILON_C:
                return None
            self._last_temperature = average
            reference_motor, reference_temperature = self._reference
            reference = frame.to_client(reference_motor)
            delta = average - reference_temperature
            target = min(max(reference + round_half_away(coefficient * delta), 0), frame.span)
        if target == current:
            log.debug("%s: averaged temperature %.2f °C (%+.2f °C): no step to make", self.name, average, delta)
            return None
        return Correction(target, current, average, delta, reference)

    def record(self, correction: Correction) -> None:
        """A correction the motion engine started."""
        with self._lock:
            self.corrections += 1
            self._events.append({"time": time.time(), "temperature": correction.temperature,
                                 "delta_c": correction.delta_c, "steps": correction.steps,
                                 "target": correction.target})
        log.info("%s: temperature compensation: averaged %.2f °C, %+.2f °C since the reference, %+d steps to %d "
                 "(reference %d)", self.name, correction.temperature, correction.delta_c, correction.steps,
                 correction.target, correction.reference)

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._events]
