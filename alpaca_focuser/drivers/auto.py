"""``driver = "auto"``: probe the port at connect and drive whatever controller answered.

``connect()`` runs on the device's worker thread (never on a request thread, see base.py). The first connect
probes the port (probe.py: every registered dialect's handshake, queries only, in the safe order) and builds the
registered driver that answered from the same ``[[focuser]]`` table, as if the config had named it, then
connects it; from then on every call goes to that driver.

Reconnects keep the first choice while it still answers:

* After an unplug while connected, the chosen driver's own engine reopens the port and redoes *its* handshake
  with backoff (serial_engine.py), exactly as with ``driver = "moonlite"``: the controller that comes back on a
  port is almost always the one that left, and sending it other protocols' queries would only cost time.
* On a later connect (Connected false then true), the first choice is tried first. Only if it no longer answers
  (no reply, or nonsense: DEVICE_NOT_RESPONDING) is the port probed again, in the safe order, which also finds a
  different controller plugged into the same port. A port that cannot be opened is reported as such, without
  probing. A server restart probes afresh.

``baud`` in the table, when set, restricts the probe to that speed (and the chosen driver uses it); unset, each
controller is tried at its own default speed (then its other usual ones). ``max_step`` is checked against what
the controller found can reach, once connected.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

from alpaca_focuser.config import FocuserConfig
from alpaca_focuser.config_keys import AUTO
from alpaca_focuser.drivers.base import DriverCapabilities, DriverStatus, FocuserDriver
from alpaca_focuser.drivers.link_stats import LinkStats, LinkStatsSnapshot
from alpaca_focuser.drivers.probe import REOPEN_PAUSE, ProbeResult, probe_port
from alpaca_focuser.drivers.protocol import Cancelled
from alpaca_focuser.drivers.registry import serial_driver_class
from alpaca_focuser.errors import DEVICE_NOT_RESPONDING, SERIAL_PORT_ERROR, DriverError

log = logging.getLogger(__name__)


class AutoDriver(FocuserDriver):
    """The driver of whatever registered controller answers on ``cfg.port`` (see the module docstring)."""

    kind = AUTO

    def __init__(self, cfg: FocuserConfig, *, probe_timeout: float | None = None) -> None:
        """``probe_timeout``: each handshake's window while probing (default: each dialect's own)."""
        assert cfg.port is not None  # guaranteed by config validation
        self.cfg, self.port, self.probe_timeout = cfg, cfg.port, probe_timeout
        self._lock = threading.Lock()
        self._inner: FocuserDriver | None = None  # the chosen controller's driver
        self._closed = threading.Event()  # close(): a probe in progress stops
        self.last_probe: ProbeResult | None = None
        self.probes = 0  # how many times the port was probed

    # --- what was chosen ------------------------------------------------------------------------------------------
    @property
    def inner(self) -> FocuserDriver | None:
        """The driver of the controller that answered (None before the first successful probe)."""
        with self._lock:
            return self._inner

    @property
    def chosen(self) -> str | None:
        """The config name of the controller in use (``"myfp2"``), or None before the first probe found one."""
        inner = self.inner
        return None if inner is None else inner.kind

    def link_stats(self) -> LinkStatsSnapshot:
        """The chosen driver's link counters (empty before the first connect)."""
        inner = self.inner
        stats = getattr(inner, "link_stats", None)
        return stats() if callable(stats) else LinkStats().snapshot()

    # --- FocuserDriver -------------------------------------------------------------------------------------------
    def connect(self) -> None:
        inner = self.inner
        if inner is not None:
            if inner.status().connected:
                return
            try:
                inner.connect()
                return
            except DriverError as exc:
                if exc.number != DEVICE_NOT_RESPONDING:
                    raise  # the port itself: probing it would fail the same way
                log.warning("%s: the %s controller no longer answers (%s); probing the port again", self.port,
                            inner.kind, exc.message)
        chosen = self._probe()
        try:
            chosen.connect()
            self._check_range(chosen)
            with self._lock:  # close() sets _closed, then closes what it finds here under the lock
                if self._closed.is_set():
                    raise self._cancelled()
                self._inner = chosen
        except BaseException:
            chosen.close()
            raise
        log.info("%s: driving the %s controller found there (%s)", self.port, chosen.kind,
                 chosen.capabilities().description)

    def _probe(self) -> FocuserDriver:
        """Probe the port and build the driver of what answered. Raises DriverError."""
        self.probes += 1
        try:
            result = probe_port(self.port, baud=self.cfg.baud, timeout=self.probe_timeout,
                                read_timeout=self.cfg.read_timeout, stop=self._closed)
        except Cancelled:
            raise self._cancelled() from None
        self.last_probe = result
        if result.port_error is not None:
            raise result.port_error
        found = result.found
        if found is None:
            raise DriverError(f"No focuser controller answered on {self.port} (tried {result.tried}; is it powered, "
                              f"and is it one of these?)", DEVICE_NOT_RESPONDING)
        log.info("%s: %s answered the probe", self.port, result.summary())
        if self._closed.wait(REOPEN_PAUSE):  # the chosen driver reopens the port: a board that resets does so
            raise self._cancelled()
        # The driver the config would have built had it named this controller.
        return serial_driver_class(found.driver).from_config(replace(self.cfg, driver=found.driver, baud=found.baud))

    def _cancelled(self) -> DriverError:
        return DriverError(f"Connecting to {self.port} was cancelled (shutting down)", SERIAL_PORT_ERROR)

    def _check_range(self, driver: FocuserDriver) -> None:
        top = driver.capabilities().max_position
        if self.cfg.max_step > top:
            raise DriverError(f"max_step = {self.cfg.max_step} is beyond what the {driver.kind} controller found on "
                              f"{self.port} can reach (0..{top}): set max_step to {top} or less")

    def disconnect(self) -> None:
        """Disconnect the chosen controller; it stays the first choice for the next connect."""
        inner = self.inner
        if inner is not None:
            inner.disconnect()

    def close(self) -> None:
        """At shutdown: a probe in progress stops, and a controller found meanwhile is let go."""
        self._closed.set()
        inner = self.inner
        if inner is not None:
            inner.close()

    def status(self) -> DriverStatus:
        inner = self.inner
        return inner.status() if inner is not None else DriverStatus(connected=False, position=0, moving=False)

    def capabilities(self) -> DriverCapabilities:
        inner = self.inner
        if inner is not None:
            return inner.capabilities()
        return DriverCapabilities(max_position=self.cfg.max_step, has_temperature=False,
                                  description=f"Focuser on {self.port} (controller detected at connect)")

    def move_to(self, target: int) -> None:
        self._usable().move_to(target)

    def halt(self) -> None:
        inner = self.inner
        if inner is not None:
            inner.halt()

    def sync(self, position: int) -> None:
        self._usable().sync(position)

    def _usable(self) -> FocuserDriver:
        inner = self.inner
        if inner is None:
            raise DriverError(f"The focuser on {self.port} is not connected", SERIAL_PORT_ERROR)
        return inner

