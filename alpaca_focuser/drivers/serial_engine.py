"""The serial engine: one focuser controller on a serial port, whatever its protocol (the ``Dialect``).

One thread per port ("<dialect>-<name>") owns it: it opens it, handshakes, sends queued commands and polls at
the dialect's cadence. Everything else only reads the snapshot (``status()``) or queues work, so the serial
traffic does not depend on how many Alpaca clients poll, and a request thread never waits on the line.

Halt jumps everything: ``halt()`` drops queued moves and signals the owner thread through a file descriptor it
waits on together with the port, so the halt frame is written the moment it is asked for, even while the reply
to an earlier command is still on its way (serial_link.py explains how that reply stays matched). Only Halt
jumps; other commands wait their turn.

Fault semantics (what the focuser layer sees):

* ``connect()`` failing raises ``DriverError`` (SERIAL_PORT_ERROR: the port cannot be opened;
  DEVICE_NOT_RESPONDING: it opened but no controller answered) and leaves the driver disconnected.
* Once connected, ``status().connected`` stays True until ``disconnect()``: the user asked to be connected
  and the driver keeps trying. When the port fails (USB unplugged, SerialException/OSError: 0x501) or the
  controller stops answering (``MAX_FAILED_POLLS`` consecutive bad polls, or a command it does not accept: 0x502),
  ``status().fault`` carries a message naming the port and the failure, ``moving`` is False (we cannot know,
  and must never report motion forever) and the last known position is kept. The owner thread reopens the same
  path with exponential backoff, redoes the handshake, reads the position back from the firmware (never zeroes
  it) and clears ``fault``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, ClassVar, TypedDict

import serial

from alpaca_focuser.drivers.base import DriverCapabilities, DriverStatus, FocuserDriver
from alpaca_focuser.drivers.dialect import Dialect
from alpaca_focuser.drivers.link_stats import LinkStatsSnapshot
from alpaca_focuser.drivers.serial_owner import Mailbox, PortOwner
from alpaca_focuser.errors import SERIAL_PORT_ERROR, DriverError, InvalidValueError

if TYPE_CHECKING:
    from alpaca_focuser.config import FocuserConfig

log = logging.getLogger(__name__)


class EngineOptions(TypedDict, total=False):
    """``SerialEngine``'s keyword arguments, for the drivers that pass them through (``**engine:
    Unpack[EngineOptions]``): left out, each takes the engine's default, which for the link timings and the baud
    rate is the dialect's (``LinkSettings``)."""

    baud: int | None
    read_timeout: float
    name: str | None
    moving_poll_interval: float | None
    idle_poll_interval: float | None
    handshake_timeout: float | None
    reconnect_max_backoff: float
    serial_factory: Callable[..., serial.Serial]


class SerialEngine(FocuserDriver):
    """A ``FocuserDriver`` for any serial ``Dialect``. Settings left None take the dialect's defaults."""

    #: A registered driver's dialect class (registry.py); ``DIALECT()`` must do for a handshake (probe.py).
    DIALECT: ClassVar[type[Dialect]]

    @classmethod
    def from_config(cls, cfg: FocuserConfig) -> SerialEngine:
        """The driver a ``[[focuser]]`` table naming it asks for; every registered driver implements it."""
        raise NotImplementedError(f"{cls.__name__} is not a registered driver")

    def __init__(self, port: str, dialect: Dialect, *, baud: int | None = None, read_timeout: float = 0.5,
                 name: str | None = None, moving_poll_interval: float | None = None,
                 idle_poll_interval: float | None = None, handshake_timeout: float | None = None,
                 reconnect_max_backoff: float = 10.0,
                 serial_factory: Callable[..., serial.Serial] = serial.Serial) -> None:
        settings = dialect.link_settings
        self.dialect, self.kind, self.title = dialect, dialect.name, dialect.title
        self.port, self.name, self.read_timeout = port, name or dialect.name, read_timeout
        self.baud = baud if baud is not None else settings.default_baud
        self.moving_poll_interval = settings.moving_poll_interval if moving_poll_interval is None \
            else moving_poll_interval
        self.idle_poll_interval = settings.idle_poll_interval if idle_poll_interval is None else idle_poll_interval
        self.handshake_timeout = settings.handshake_timeout if handshake_timeout is None else handshake_timeout
        self.reconnect_max_backoff = reconnect_max_backoff
        self.serial_factory = serial_factory
        self.label = f"{self.title} {self.name}"  # log prefix

        self._mail = Mailbox()
        self._stop = threading.Event()  # replaced per connection, so a late old thread can never resume
        self._thread: threading.Thread | None = None

    # --- facts and counters -----------------------------------------------------------------------------------
    @property
    def firmware_version(self) -> str | None:
        return self.dialect.firmware

    @property
    def has_temperature(self) -> bool:
        return self.dialect.has_temperature

    def link_stats(self) -> LinkStatsSnapshot:
        """The link's counters since this driver was created (see link_stats.py)."""
        return self._mail.stats.snapshot()

    @property
    def transactions(self) -> int:
        """Frames written to the line since this driver was created."""
        return sum(self.link_stats().sent.values())

    @property
    def failed_polls(self) -> int:
        return self.link_stats().failed_polls

    @property
    def reconnects(self) -> int:
        return self.link_stats().reconnects

    @property
    def halt_requested_at(self) -> float | None:
        """Monotonic time of the last ``halt()`` call."""
        return self._mail.halt_requested_at

    @property
    def halt_sent_at(self) -> float | None:
        """Monotonic time the last halt frame was written."""
        return self._mail.halt_sent_at

    # --- FocuserDriver: caller side (never touches the port) ----------------------------------------------------
    def connect(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self.status().connected:
            return
        self.disconnect()  # reap a thread left from a failed connect, if any
        self._stop = stop = threading.Event()
        self._mail.halts.take()
        with self._mail.lock:
            self._mail.queue.clear()
        owner = PortOwner(self, self._mail, stop)
        self._thread = threading.Thread(target=owner.run, name=f"{self.kind}-{self.name}", daemon=True)
        self._thread.start()
        # The owner thread's connect is bounded by the handshake and per-read timeouts; the margin is a backstop.
        if not owner.connected.wait(self.handshake_timeout + 20 * self.read_timeout + 5.0):
            self.disconnect()
            raise DriverError(f"Connecting to the {self.title} controller on {self.port} timed out",
                              SERIAL_PORT_ERROR)
        if owner.connect_error is not None:
            self._thread.join(2.0)
            raise owner.connect_error

    def disconnect(self) -> None:
        thread = self._thread
        if thread is not None:
            self._stop.set()
            self._mail.wake.set()
            if thread is not threading.current_thread():
                thread.join(2 * self.read_timeout + 2.0)
                if thread.is_alive():
                    log.error("%s: the owner thread did not stop; the port may still be open", thread.name)
            self._thread = None
        with self._mail.lock:
            self._mail.queue.clear()
            if self._mail.status.connected:
                log.info("%s: disconnected from %s", self.label, self.port)
            self._mail.status = replace(self._mail.status, connected=False, moving=False, fault=None,
                                        updated=time.monotonic())

    def status(self) -> DriverStatus:
        with self._mail.lock:
            return self._mail.status

    def capabilities(self) -> DriverCapabilities:
        return DriverCapabilities(max_position=self.dialect.features.max_position,
                                  has_temperature=self.dialect.has_temperature,
                                  description=self.dialect.description(self.port))

    def move_to(self, target: int) -> None:
        self._check_range(target, "Move target")
        mail = self._mail
        with mail.lock:
            self._require_usable()
            # A newer target supersedes a queued one: only the last Move matters to the client.
            mail.queue = deque(c for c in mail.queue if c[0] != "move")
            mail.queue.append(("move", target))
            # IsMoving must be true the instant Move returns; only a poll after the move started may clear it.
            mail.status = replace(mail.status, moving=True, updated=time.monotonic())
        mail.wake.set()

    def halt(self) -> None:
        mail = self._mail
        with mail.lock:
            mail.queue = deque(c for c in mail.queue if c[0] != "move")
            mail.halt_requested_at = time.monotonic()
            mail.halts.request()  # under the lock: a command taken after this sees it as ``interrupted``
        mail.stats.halt_requested()
        mail.wake.set()

    def sync(self, position: int) -> None:
        self._check_range(position, "Sync position")
        mail = self._mail
        with mail.lock:
            self._require_usable()
            mail.queue.append(("sync", position))
            # Like Move and IsMoving: Position reflects the sync the instant the Action returns.
            mail.status = replace(mail.status, position=position, updated=time.monotonic())
        mail.wake.set()

    def _check_range(self, value: int, what: str) -> None:
        top = self.dialect.features.max_position
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise InvalidValueError(f"{what} {value} is outside the {self.title} range 0..{top}")

    def _require_usable(self) -> None:
        if not self._mail.status.connected:
            raise DriverError(f"The {self.title} focuser on {self.port} is not connected", SERIAL_PORT_ERROR)
        if self._mail.status.fault:
            raise DriverError(self._mail.status.fault, SERIAL_PORT_ERROR)

