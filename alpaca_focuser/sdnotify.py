"""systemd's notify protocol (sd_notify(3)) without a dependency: READY=1, STOPPING=1 and the watchdog.

Everything here is best effort: when the service does not run under systemd (no ``$NOTIFY_SOCKET``) or the
socket is gone, the calls do nothing, because a missing supervisor must never stop the focuser.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def _socket_address(path: str) -> str | bytes:
    # A leading "@" names a socket in Linux's abstract namespace, which the kernel spells with a NUL byte.
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    return path


def notify(message: str) -> bool:
    """Send ``message`` (e.g. "READY=1") to ``$NOTIFY_SOCKET``. False when unset or on any error; never raises."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), _socket_address(path))
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL in a malformed path
        log.debug("sd_notify(%r) to %r failed: %s", message, path, exc)
        return False
    return True


class Watchdog:
    """Sends WATCHDOG=1 every WATCHDOG_USEC/2 while the application says it is healthy.

    Pinging only while healthy is the point: when the HTTP server or the serial link wedges, systemd stops
    hearing from us and restarts the service (WatchdogSec= in the unit, Restart=on-failure).
    """

    def __init__(self, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError("watchdog interval must be positive")
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_environment(cls) -> Watchdog | None:
        """A Watchdog when systemd asked for one (WATCHDOG_USEC, and WATCHDOG_PID is ours if set), else None."""
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        if pid:
            try:
                if int(pid) != os.getpid():
                    return None  # meant for another process (e.g. we were started by a wrapper)
            except ValueError:
                log.warning("Ignoring malformed WATCHDOG_PID=%r", pid)
                return None
        try:
            period = int(usec)
        except ValueError:
            if usec:
                log.warning("Ignoring malformed WATCHDOG_USEC=%r", usec)
            return None
        if period <= 0:
            return None
        # sd_watchdog_enabled(3) recommends pinging at half the period, leaving slack for a slow scheduler.
        return cls(period / 2 / 1_000_000)

    def start(self, is_healthy: Callable[[], bool]) -> None:
        if self._thread is not None:
            raise RuntimeError("Watchdog already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(is_healthy,), name="systemd-watchdog",
                                        daemon=True)
        self._thread.start()
        log.info("systemd watchdog: pinging every %.3g s while healthy", self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=max(1.0, self.interval_s))

    def _run(self, is_healthy: Callable[[], bool]) -> None:
        was_healthy = True
        while True:
            try:
                healthy = bool(is_healthy())
            except Exception:  # a broken health probe means unhealthy, not a dead watchdog thread
                log.exception("Health probe failed")
                healthy = False
            if healthy:
                notify("WATCHDOG=1")
            elif was_healthy:
                log.warning("Unhealthy: withholding the systemd watchdog ping (systemd will restart us)")
            was_healthy = healthy
            if self._stop.wait(self.interval_s):
                return
