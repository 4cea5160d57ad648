"""Prometheus metrics: ``GET /metrics`` in the text exposition format, from a registry of our own.

Everything is read-only and cheap to scrape every few seconds. Request counts, durations and ASCOM errors are
counted as requests are answered; per-focuser values, serial-link counters and discovery counters are read at
scrape time from the same snapshots the Alpaca API reads (``driver.status()``, ``driver.link_stats()``), so a
scrape never touches a serial line. The registry is per server (not the library's global one), so several
servers in one process (the tests) keep their own figures; it also carries the library's process, platform and
garbage-collector collectors.

Metric names (the README's "Monitoring" section explains them):

    alpaca_http_requests_total{member,method,status}     requests answered
    alpaca_http_request_duration_seconds{method}         time in the application, histogram
    alpaca_ascom_errors_total{member,number}             ASCOM errors answered inside a 200, number as 0x...
    alpaca_focuser_connected / _moving / _fault / _position_steps / _temperature_celsius / _temp_comp
    alpaca_focuser_temp_comp_corrections_total / _snapshot_age_seconds          {device,name}
    alpaca_serial_commands_sent_total{device,name,command} / alpaca_serial_replies_received_total{...,command}
    alpaca_serial_bad_replies_total / _timeouts_total / _faults_total / _reconnects_total {device,name}
    alpaca_serial_round_trip_seconds{device,name}                               histogram
    alpaca_discovery_replies_total / _rate_limited_total / _ignored_total
    alpaca_focuser_build_info{version}, process_*, python_gc_*, python_info
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import falcon
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, GCCollector, Histogram,
                               PlatformCollector, ProcessCollector, disable_created_metrics, generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from alpaca_focuser import __version__
from alpaca_focuser.alpaca.device_api import DEVICE_ROUTE
from alpaca_focuser.alpaca.members import VERBS
from alpaca_focuser.focuser.device import FocuserDevice

if TYPE_CHECKING:  # the snapshot's shape only: the HTTP layer does no serial work
    from alpaca_focuser.drivers.link_stats import LinkStatsSnapshot, Timing

log = logging.getLogger(__name__)

# Request durations in the application: a GET is well under a millisecond here, a Connected=true PUT can take
# seconds (a serial handshake).
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, math.inf)
FOCUSER_LABELS = ("device", "name")
# Label values are bounded, so a scanner sending made-up methods or paths cannot grow the series without limit.
KNOWN_METHODS = frozenset(("GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"))


class RequestMetrics:
    """A Falcon middleware counting every answered request by member, method and status, and timing it.

    ``member`` is the Alpaca member for the device API (``position``; ``unknown`` for names outside the member
    table, so a scanner cannot grow the label set) and the route for everything else (``/management/...``,
    ``/setup``, ``/metrics``; ``unrouted`` when nothing matched)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests = Counter("alpaca_http_requests", "HTTP requests answered, by member, method and status",
                                 ("member", "method", "status"), registry=registry)
        self._duration = Histogram("alpaca_http_request_duration_seconds",
                                   "Time from routing to the reply in the application (not waitress queueing)",
                                   ("method",), buckets=DURATION_BUCKETS, registry=registry)
        self._errors = Counter("alpaca_ascom_errors", "ASCOM errors answered inside an HTTP 200, by member and "
                                                      "error number", ("member", "number"), registry=registry)
        # Label lookups cost more than the increment; keep the children (the label sets are small and bounded).
        self._request_children: dict[tuple[str, str, int], Any] = {}
        self._duration_children: dict[str, Any] = {}

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_start = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        start = getattr(req.context, "metrics_start", None)
        elapsed = None if start is None else time.perf_counter() - start
        method = req.method if req.method in KNOWN_METHODS else "other"
        template = req.uri_template
        if template == DEVICE_ROUTE:
            member = req.path.rsplit("/", 1)[-1]
            if member not in VERBS:
                member = "unknown"
        else:
            member = template or "unrouted"
        key = (member, method, resp.status_code)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self._requests.labels(member, method, str(resp.status_code))
        child.inc()
        if elapsed is not None:
            timer = self._duration_children.get(method)
            if timer is None:
                timer = self._duration_children[method] = self._duration.labels(method)
            timer.observe(elapsed)

    def ascom_error(self, member: str, number: int) -> None:
        """Count one ASCOM error answered for ``member`` (its URL name)."""
        self._errors.labels(member, f"0x{number:X}").inc()


class FocuserCollector(Collector):
    """Per-focuser gauges read at scrape time from the snapshots the API reads; never any I/O."""

    def __init__(self, devices: Mapping[int, FocuserDevice]) -> None:
        self.devices = devices

    def describe(self) -> Iterable[Metric]:
        return []  # values exist only at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "connected": GaugeMetricFamily("alpaca_focuser_connected", "1 while the device is connected",
                                           labels=FOCUSER_LABELS),
            "moving": GaugeMetricFamily("alpaca_focuser_moving", "1 while the motor moves (IsMoving)",
                                        labels=FOCUSER_LABELS),
            "fault": GaugeMetricFamily("alpaca_focuser_fault", "1 while the hardware reports a fault (the API "
                                                               "answers DriverException)", labels=FOCUSER_LABELS),
            "position": GaugeMetricFamily("alpaca_focuser_position_steps", "Position in steps, while connected",
                                          labels=FOCUSER_LABELS),
            "temperature": GaugeMetricFamily("alpaca_focuser_temperature_celsius", "Focuser temperature sensor "
                                             "reading, while connected", labels=FOCUSER_LABELS),
            "temp_comp": GaugeMetricFamily("alpaca_focuser_temp_comp", "1 while temperature compensation is on "
                                                                       "(TempComp)", labels=FOCUSER_LABELS),
            "corrections": CounterMetricFamily("alpaca_focuser_temp_comp_corrections", "Moves made by "
                                               "temperature compensation", labels=FOCUSER_LABELS),
            "age": GaugeMetricFamily("alpaca_focuser_snapshot_age_seconds", "Seconds since the driver last read "
                                     "the hardware (grows when polling stalls)", labels=FOCUSER_LABELS),
        }
        now = time.monotonic()
        link: list[Metric] = []
        for number, device in sorted(self.devices.items()):
            labels = [str(number), device.name()]
            try:
                status = device.driver.status()
                connected = device.connected()
                families["connected"].add_metric(labels, float(connected))
                families["moving"].add_metric(labels, float(status.moving))
                families["fault"].add_metric(labels, float(status.fault is not None))
                families["temp_comp"].add_metric(labels, float(device.temp_comp()))
                families["age"].add_metric(labels, max(0.0, now - status.updated))
                if connected and device.cfg.absolute:
                    families["position"].add_metric(labels, float(status.position))
                if connected and status.temperature is not None and device.driver.capabilities().has_temperature:
                    families["temperature"].add_metric(labels, float(status.temperature))
                families["corrections"].add_metric(labels, float(device.temp_comp_corrections))
                link_stats = getattr(device.driver, "link_stats", None)
                if callable(link_stats):
                    link.extend(link_families(link_stats(), labels))
            except Exception:  # one broken device must not cost the scrape of every other metric
                log.exception("Metrics: reading focuser %d failed", number)
        yield from (family for family in families.values() if family.samples)
        yield from merge_families(link)


def link_families(stats: LinkStatsSnapshot, labels: Sequence[str]) -> list[Metric]:
    """Metric families for one serial link's counters (``driver.link_stats()``, see drivers/link_stats.py).

    Counters by command (sent, replies, bad replies, timeouts), the round-trip histogram by command, the link's
    faults and reconnects, what the framers dropped, and the halts with their request -> wire latency."""
    out: list[Metric] = []
    command_labels = (*FOCUSER_LABELS, "command")
    for counts, name, doc in (
            (stats.sent, "alpaca_serial_commands_sent", "Commands written to the port"),
            (stats.replies, "alpaca_serial_replies_received", "Valid replies read, by the command they answer"),
            (stats.bad_replies, "alpaca_serial_bad_replies", "Replies discarded as malformed, by command"),
            (stats.timeouts, "alpaca_serial_timeouts", "Commands whose reply did not come in time")):
        family = CounterMetricFamily(name, doc, labels=command_labels)
        for command, count in sorted(counts.items()):
            family.add_metric([*labels, command], float(count))
        out.append(family)
    for value, name, doc in (
            (stats.failed_polls, "failed_polls", "Polled queries whose reply was missing or bad (retried)"),
            (stats.stray, "stray_replies", "Well-formed replies that answered nothing awaited (discarded)"),
            (stats.noise, "noise", "Runs of bytes dropped as noise (reboot chatter, wrong baud rate)"),
            (stats.faults, "faults", "Times the link was declared lost (0x501 port, 0x502 controller)"),
            (stats.reconnects, "reconnects", "Successful automatic reconnections after a fault"),
            (stats.halts_requested, "halts_requested", "Halts asked for"),
            (stats.halts_sent, "halts_sent", "Halt commands written to the port"),
            (stats.halts_out_of_band, "halts_out_of_band", "Halts written while a reply was still on its way")):
        family = CounterMetricFamily(f"alpaca_serial_{name}", doc, labels=FOCUSER_LABELS)
        family.add_metric(list(labels), float(value))
        out.append(family)
    round_trip = HistogramMetricFamily("alpaca_serial_round_trip_seconds", "Command written -> its reply complete",
                                       labels=command_labels)
    for command, timing in sorted(stats.round_trip.items()):
        round_trip.add_metric([*labels, command], _buckets(timing), timing.total)
    halt = HistogramMetricFamily("alpaca_serial_halt_latency_seconds", "Halt asked for -> halt command written",
                                 labels=FOCUSER_LABELS)
    halt.add_metric(list(labels), _buckets(stats.halt_latency), stats.halt_latency.total)
    return [*out, round_trip, halt]


def _buckets(timing: Timing) -> list[tuple[str, float]]:
    return [*((_bound(le), float(n)) for le, n in timing.buckets), ("+Inf", float(timing.count))]


def _bound(le: float) -> str:
    return "+Inf" if math.isinf(le) else repr(float(le))


def merge_families(families: Iterable[Metric]) -> list[Metric]:
    """One family per name: the exposition format allows each name's HELP/TYPE block only once."""
    merged: dict[str, Metric] = {}
    for family in families:
        if family.name in merged:
            merged[family.name].samples.extend(family.samples)
        else:
            merged[family.name] = family
    return list(merged.values())


class DiscoveryCollector(Collector):
    """Discovery counters, read at scrape time from the responder (absent when discovery is off)."""

    def __init__(self, responder: Callable[[], Any]) -> None:
        self.responder = responder

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        responder = self.responder()
        if responder is None:
            return
        for name, attr, doc in (
                ("alpaca_discovery_replies", "replies_sent", "Discovery requests answered"),
                ("alpaca_discovery_rate_limited", "requests_rate_limited", "Discovery requests dropped by the "
                                                                           "per-sender rate limit"),
                ("alpaca_discovery_ignored", "requests_ignored", "Datagrams not answered (malformed, "
                                                                 "rate-limited or from an unreachable interface)")):
            yield CounterMetricFamily(name, doc, value=float(getattr(responder, attr, 0)))


class ServerMetrics:
    """The server's registry and its collectors; ``resource`` serves it, ``requests`` is the middleware."""

    def __init__(self, devices: Mapping[int, FocuserDevice], discovery: Callable[[], Any] = lambda: None) -> None:
        # No "_created" series beside every counter and histogram: they double the scrape and nobody graphs them.
        # (A process-wide switch of the library; this server is its only user.)
        disable_created_metrics()
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.requests = RequestMetrics(self.registry)
        self.registry.register(FocuserCollector(devices))
        self.registry.register(DiscoveryCollector(discovery))
        info = GaugeMetricFamily("alpaca_focuser_build_info", "The running version (always 1)", labels=["version"])
        info.add_metric([__version__], 1.0)
        self.registry.register(_Constant([info]))
        self.resource = MetricsResource(self.registry)


class _Constant(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


class MetricsResource:
    """``GET /metrics``: the Prometheus text exposition of the server's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(self.registry)
