"""Per-link counters of a serial focuser: what was sent and answered, what went wrong, and how long it took.

The serial engine records them on its owner thread; anyone may take a ``snapshot()`` (a frozen copy) at any
time. They are shaped for export as Prometheus metrics (counters by command, and histograms as cumulative bucket
counts plus sum and count) without this package depending on prometheus_client.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

#: Upper bounds (seconds) of the round-trip histogram: a 9600-baud reply takes 5-10 ms, a slow GT ~750 ms.
ROUND_TRIP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Upper bounds (seconds) of the halt latency histogram (Halt asked for -> halt frame written).
HALT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25)


@dataclass(frozen=True)
class Timing:
    """Durations in seconds: how many, their sum, the worst, and ``buckets`` as (upper bound, how many took at
    most that long) pairs, cumulative like a Prometheus histogram (the ``+Inf`` bucket is ``count``)."""

    count: int = 0
    total: float = 0.0
    worst: float = 0.0
    buckets: tuple[tuple[float, int], ...] = ()

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


class _TimingRecorder:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds, self.per_bucket = bounds, [0] * len(bounds)
        self.count, self.total, self.worst = 0, 0.0, 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.worst = max(self.worst, seconds)
        index = bisect.bisect_left(self.bounds, seconds)
        if index < len(self.bounds):
            self.per_bucket[index] += 1

    def freeze(self) -> Timing:
        running, cumulative = 0, []
        for bound, n in zip(self.bounds, self.per_bucket):
            running += n
            cumulative.append((bound, running))
        return Timing(self.count, self.total, self.worst, tuple(cumulative))


def _frozen(counter: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(counter))


@dataclass(frozen=True)
class LinkStatsSnapshot:
    """A consistent copy of a link's counters since the driver was created (they survive reconnects)."""

    sent: Mapping[str, int] = field(default_factory=dict)  # frames written, by command name (halts included)
    replies: Mapping[str, int] = field(default_factory=dict)  # valid replies received, by command
    bad_replies: Mapping[str, int] = field(default_factory=dict)  # replies discarded as malformed, by command
    timeouts: Mapping[str, int] = field(default_factory=dict)  # no complete reply in time, by command
    round_trip: Mapping[str, Timing] = field(default_factory=dict)  # command written -> its reply complete
    failed_polls: int = 0  # polled queries whose reply was missing or bad (they are retried)
    stray: int = 0  # well-formed frames that answered nothing awaited (a query's ``matches`` refused them)
    noise: int = 0  # runs of bytes a framer dropped as noise (reboot chatter, a wrong baud rate)
    halt_replies: int = 0  # replies of a halt itself, consumed (never taken for another command's reply)
    faults: int = 0  # times the link was declared lost (port gone: 0x501, controller silent or garbled: 0x502)
    reconnects: int = 0  # successful automatic reconnections after a fault
    halts_requested: int = 0
    halts_sent: int = 0  # halt frames written (a halt asked for while the controller is idle may not be)
    halts_out_of_band: int = 0  # of those, written while the reply to an earlier command was still on its way
    halt_latency: Timing = Timing()  # halt asked for -> halt frame written


class LinkStats:
    """The mutable counters behind ``LinkStatsSnapshot``. Thread-safe; cheap enough for every transaction."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: Counter[str] = Counter()
        self._replies: Counter[str] = Counter()
        self._bad: Counter[str] = Counter()
        self._timeouts: Counter[str] = Counter()
        self._round_trip: dict[str, _TimingRecorder] = {}
        self._halt_latency = _TimingRecorder(HALT_BUCKETS)
        self._failed_polls = self._stray = self._noise = self._halt_replies = self._faults = self._reconnects = 0
        self._halts_requested = self._halts_sent = self._halts_out_of_band = 0

    def command_sent(self, command: str) -> None:
        with self._lock:
            self._sent[command] += 1

    def reply_received(self, command: str, round_trip: float) -> None:
        with self._lock:
            self._replies[command] += 1
            recorder = self._round_trip.get(command)
            if recorder is None:
                recorder = self._round_trip[command] = _TimingRecorder(ROUND_TRIP_BUCKETS)
            recorder.add(round_trip)

    def bad_reply(self, command: str) -> None:
        with self._lock:
            self._bad[command] += 1

    def timeout(self, command: str) -> None:
        with self._lock:
            self._timeouts[command] += 1

    def poll_failed(self) -> None:
        with self._lock:
            self._failed_polls += 1

    def stray_frame(self) -> None:
        with self._lock:
            self._stray += 1

    def noise_dropped(self) -> None:
        with self._lock:
            self._noise += 1

    def halt_reply(self) -> None:
        with self._lock:
            self._halt_replies += 1

    def fault(self) -> None:
        with self._lock:
            self._faults += 1

    def reconnect(self) -> None:
        with self._lock:
            self._reconnects += 1

    def halt_requested(self) -> None:
        with self._lock:
            self._halts_requested += 1

    def halt_sent(self, latency: float, *, out_of_band: bool) -> None:
        with self._lock:
            self._halts_sent += 1
            self._halts_out_of_band += out_of_band
            self._halt_latency.add(latency)

    def snapshot(self) -> LinkStatsSnapshot:
        with self._lock:
            return LinkStatsSnapshot(
                sent=_frozen(self._sent), replies=_frozen(self._replies), bad_replies=_frozen(self._bad),
                timeouts=_frozen(self._timeouts),
                round_trip=MappingProxyType({k: r.freeze() for k, r in self._round_trip.items()}),
                failed_polls=self._failed_polls, stray=self._stray, noise=self._noise,
                halt_replies=self._halt_replies, faults=self._faults,
                reconnects=self._reconnects,
                halts_requested=self._halts_requested, halts_sent=self._halts_sent,
                halts_out_of_band=self._halts_out_of_band, halt_latency=self._halt_latency.freeze())
