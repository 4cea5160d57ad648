"""Learning the temperature coefficient from where the client chose to focus.

When a client move is followed by ``temp_comp_learn_idle_s`` seconds without another client move, the focuser
was imaging there: typically the result of an autofocus run. The pair (averaged temperature at the end of that
move, the client's position) is recorded. A robust line through the pairs (Theil-Sen: the median of the pairwise
slopes, so one bad autofocus run cannot drag it) is the coefficient, in steps per degree C.

Only the client's own positions are recorded, never a position compensation moved to by itself, so the fit
measures what the client found, not what the current coefficient did. Pairs are kept in the motor's frame (like
every position in the state file) and mapped to the client's frame when fitted.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from typing import Any

from alpaca_focuser.focuser.moves import Frame

log = logging.getLogger(__name__)

PAIRS_KEPT = 200
MIN_POINTS = 3
MIN_SPAN_C = 1.5
SAME_TEMPERATURE_C = 1e-9  # pairs closer than this in temperature give no slope


def theil_sen(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """(slope, intercept) of the Theil-Sen line, or None when no two x values differ.

    The slope is the median of the slopes of all pairs of points with different x; the intercept is the median
    of ``y - slope * x``.
    """
    slopes = [(ys[j] - ys[i]) / (xs[j] - xs[i])
              for i in range(len(xs)) for j in range(i + 1, len(xs))
              if abs(xs[j] - xs[i]) > SAME_TEMPERATURE_C]
    if not slopes:
        return None
    import statistics  # with decimal and fractions, ~1 MB: only once there is something to fit (idle RSS)

    slope = statistics.median(slopes)
    intercept = statistics.median(y - slope * x for x, y in zip(xs, ys))
    return slope, intercept


def r_squared(xs: list[float], ys: list[float], slope: float, intercept: float) -> float:
    """1 - SS_res / SS_tot for the given line. It can be below 0 for a robust line through outliers; when every
    y is the same, 1 if the line goes through them all, else 0."""
    mean = math.fsum(ys) / len(ys)
    total = math.fsum((y - mean) ** 2 for y in ys)
    residual = math.fsum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys))
    if total == 0:
        return 1.0 if residual == 0 else 0.0
    return 1.0 - residual / total


def _valid_pair(item: Any) -> bool:
    return (isinstance(item, dict) and isinstance(item.get("temperature"), (int, float))
            and not isinstance(item.get("temperature"), bool) and math.isfinite(item["temperature"])
            and isinstance(item.get("position"), int) and not isinstance(item.get("position"), bool))


class Learner:
    """The recorded pairs of one focuser and the candidate waiting out its idle time."""

    def __init__(self, name: str, saved: Any) -> None:
        self.name = name
        pairs = saved if isinstance(saved, list) else []
        self._pairs: list[dict[str, Any]] = [p for p in pairs if _valid_pair(p)][-PAIRS_KEPT:]
        if len(self._pairs) != len(pairs):
            log.warning("%s: ignored %d malformed learned pairs in the state file", name,
                        len(pairs) - len(self._pairs))
        # (monotonic time, temperature, motor position, the client move's serial)
        self._candidate: tuple[float, float, int, int] | None = None
        self._lock = threading.Lock()

    def pairs(self) -> list[dict[str, Any]]:
        """The pairs, for the state file."""
        with self._lock:
            return [dict(p) for p in self._pairs]

    def client_move_ended(self, now: float, temperature: float, motor_position: int, serial: int = 0) -> None:
        """A client move ended where the client asked; it becomes a pair if no other client Move or Halt comes
        for the idle time. ``serial`` identifies the move (the motion engine's count of client commands)."""
        with self._lock:
            self._candidate = (now, temperature, motor_position, serial)

    def cancel(self) -> None:
        """Another client move, a Halt, a SyncPosition or a disconnect: the candidate was not imaged at."""
        with self._lock:
            self._candidate = None

    def due(self, now: float, idle_s: float, frame: Frame, serial: int = 0) -> bool:
        """Record the candidate once its idle time has passed, unless a client command came after its move
        (``serial``: the count now). True when a pair was added (save the state)."""
        with self._lock:
            if self._candidate is not None and self._candidate[3] != serial:
                self._candidate = None  # the client moved or halted since
            if self._candidate is None or now - self._candidate[0] < idle_s:
                return False
            _, temperature, motor, _ = self._candidate
            self._candidate = None
            self._pairs.append({"temperature": round(temperature, 3), "position": motor,
                                "time": round(time.time(), 1)})
            del self._pairs[:-PAIRS_KEPT]
            count = len(self._pairs)
        log.info("%s: learned pair recorded: position %d at %.2f °C (averaged), %d pair(s); %s", self.name,
                 frame.to_client(motor), temperature, count, json.dumps(self.report(frame)))
        return True

    def clear(self) -> int:
        with self._lock:
            count = len(self._pairs)
            self._pairs.clear()
            self._candidate = None
        log.info("%s: %d learned pair(s) cleared", self.name, count)
        return count

    def report(self, frame: Frame) -> dict[str, Any]:
        """``{"coefficient", "points", "span_c", "r2"}``; coefficient and r2 are None while there are fewer than
        3 pairs or they span less than 1.5 deg C."""
        with self._lock:
            xs = [float(p["temperature"]) for p in self._pairs]
            ys = [float(frame.to_client(p["position"])) for p in self._pairs]
        span = max(xs) - min(xs) if xs else 0.0
        result: dict[str, Any] = {"coefficient": None, "points": len(xs), "span_c": round(span, 2), "r2": None}
        if len(xs) < MIN_POINTS or span < MIN_SPAN_C - 1e-9:
            return result
        line = theil_sen(xs, ys)
        if line is None:
            return result
        slope, intercept = line
        r2 = r_squared(xs, ys, slope, intercept)
        result["coefficient"] = round(slope, 2)
        result["r2"] = round(r2, 3)
        return result
