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
from typing import Callable

import serial

from alpaca_focuser.drivers.base import DriverCapabilities, DriverStatus, FocuserDriver
from alpaca_focuser.drivers.dialect import Dialect, Reading
from alpaca_focuser.drivers.link_stats import LinkStats, LinkStatsSnapshot
from alpaca_focuser.drivers.ports import PORT_ERRORS, describe_port_error, open_serial
from alpaca_focuser.drivers.protocol import Cancelled, NoController, ProtocolError
from alpaca_focuser.drivers.serial_link import HaltSignal, SerialLink
from alpaca_focuser.errors import DEVICE_NOT_RESPONDING, SERIAL_PORT_ERROR, DriverError, InvalidValueError

log = logging.getLogger(__name__)

MAX_FAILED_POLLS = 3  # consecutive bad replies on an open port before it counts as lost (~1.5 s if silent)
INITIAL_BACKOFF = 0.5  # first reconnect delay; doubles up to reconnect_max_backoff
RETARGET_STOP_TIMEOUT = 10.0  # quirks.retarget_needs_halt: how long to wait for the halted motor to stop


class _LinkLost(Exception):
    """The port failed or the controller stopped answering: fault, close, reconnect."""

    def __init__(self, message: str, number: int = DEVICE_NOT_RESPONDING) -> None:
        super().__init__(message)
        self.number = number  # SERIAL_PORT_ERROR for the port, DEVICE_NOT_RESPONDING for the controller


class SerialEngine(FocuserDriver):
    """A ``FocuserDriver`` for any serial ``Dialect``. Settings left None take the dialect's defaults."""

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
        self._serial_factory = serial_factory
        self._label = f"{self.title} {self.name}"  # log prefix

        self._lock = threading.Lock()  # guards the snapshot, the command queue and halt_requested_at
        self._status = DriverStatus(connected=False, position=0, moving=False)
        self._queue: deque[tuple[str, int]] = deque()  # ("move", target) / ("sync", position)
        self._halts = HaltSignal()  # Halt jumps the queue, and wakes a wait for a reply
        self._wake = threading.Event()
        self._stop = threading.Event()  # replaced per connection, so a late old thread can never resume
        self._thread: threading.Thread | None = None
        self._connected_event = threading.Event()
        self._connect_error: DriverError | None = None
        self._stats = LinkStats()
        self.halt_requested_at: float | None = None  # monotonic time of the last halt() call
        self.halt_sent_at: float | None = None  # monotonic time the last halt frame was written
        # Owner-thread state.
        self._link: SerialLink | None = None
        self._hw_moving = False  # a move or halt was sent and no poll since has reported stopped
        self._halted = False  # the last command that moved the motor was a halt
        self._stall_position: int | None = None  # the position while "moving", and since when it has not changed
        self._stall_since = 0.0

    # --- facts and counters -----------------------------------------------------------------------------------
    @property
    def firmware_version(self) -> str | None:
        return self.dialect.firmware

    @property
    def has_temperature(self) -> bool:
        return self.dialect.has_temperature

    def link_stats(self) -> LinkStatsSnapshot:
        """The link's counters since this driver was created (see link_stats.py)."""
        return self._stats.snapshot()

    @property
    def transactions(self) -> int:
        """Frames written to the line since this driver was created."""
        return sum(self._stats.snapshot().sent.values())

    @property
    def failed_polls(self) -> int:
        return self._stats.snapshot().failed_polls

    @property
    def reconnects(self) -> int:
        return self._stats.snapshot().reconnects

    # --- FocuserDriver: caller side (never touches the port) ----------------------------------------------------
    def connect(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self.status().connected:
            return
        self.disconnect()  # reap a thread left from a failed connect, if any
        self._stop = stop = threading.Event()
        self._halts.take()
        self._connected_event.clear()
        self._connect_error = None
        with self._lock:
            self._queue.clear()
        self._thread = threading.Thread(target=self._run, args=(stop,), name=f"{self.kind}-{self.name}",
                                        daemon=True)
        self._thread.start()
        # The owner thread's connect is bounded by the handshake and per-read timeouts; the margin is a backstop.
        if not self._connected_event.wait(self.handshake_timeout + 20 * self.read_timeout + 5.0):
            self.disconnect()
            raise DriverError(f"Connecting to the {self.title} controller on {self.port} timed out",
                              SERIAL_PORT_ERROR)
        if self._connect_error is not None:
            self._thread.join(2.0)
            raise self._connect_error

    def disconnect(self) -> None:
        thread = self._thread
        if thread is not None:
            self._stop.set()
            self._wake.set()
            if thread is not threading.current_thread():
                thread.join(2 * self.read_timeout + 2.0)
                if thread.is_alive():
                    log.error("%s: the owner thread did not stop; the port may still be open", thread.name)
            self._thread = None
        with self._lock:
            self._queue.clear()
            if self._status.connected:
                log.info("%s: disconnected from %s", self._label, self.port)
            self._status = replace(self._status, connected=False, moving=False, fault=None,
                                   updated=time.monotonic())

    def status(self) -> DriverStatus:
        with self._lock:
            return self._status

    def capabilities(self) -> DriverCapabilities:
        return DriverCapabilities(max_position=self.dialect.features.max_position,
                                  has_temperature=self.dialect.has_temperature,
                                  description=self.dialect.description(self.port))

    def move_to(self, target: int) -> None:
        self._check_range(target, "Move target")
        with self._lock:
            self._require_usable()
            # A newer target supersedes a queued one: only the last Move matters to the client.
            self._queue = deque(c for c in self._queue if c[0] != "move")
            self._queue.append(("move", target))
            # IsMoving must be true the instant Move returns; only a poll after the move started may clear it.
            self._status = replace(self._status, moving=True, updated=time.monotonic())
        self._wake.set()

    def halt(self) -> None:
        with self._lock:
            self._queue = deque(c for c in self._queue if c[0] != "move")
            self.halt_requested_at = time.monotonic()
            self._halts.request()  # under the lock: a command popped after this sees it as ``interrupted``
        self._stats.halt_requested()
        self._wake.set()

    def sync(self, position: int) -> None:
        self._check_range(position, "Sync position")
        with self._lock:
            self._require_usable()
            self._queue.append(("sync", position))
            # Like Move and IsMoving: Position reflects the sync the instant the Action returns.
            self._status = replace(self._status, position=position, updated=time.monotonic())
        self._wake.set()

    def close(self) -> None:
        self.disconnect()

    def _check_range(self, value: int, what: str) -> None:
        top = self.dialect.features.max_position
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise InvalidValueError(f"{what} {value} is outside the {self.title} range 0..{top}")

    def _require_usable(self) -> None:
        if not self._status.connected:
            raise DriverError(f"The {self.title} focuser on {self.port} is not connected", SERIAL_PORT_ERROR)
        if self._status.fault:
            raise DriverError(self._status.fault, SERIAL_PORT_ERROR)

    def _publish(self, **changes: object) -> None:
        """Update the snapshot. ``moving`` stays True while a Move is queued but not yet started, and the
        position stays at a queued sync's value until the sync has been sent."""
        with self._lock:
            if changes.get("moving") is False and any(c[0] == "move" for c in self._queue):
                changes["moving"] = True
            syncs = [c[1] for c in self._queue if c[0] == "sync"]
            if syncs and "position" in changes:
                changes["position"] = syncs[-1]  # a poll from before a queued sync must not undo it
            self._status = replace(self._status, updated=time.monotonic(), **changes)  # type: ignore[arg-type]

    # --- owner thread ----------------------------------------------------------------------------------------
    def _run(self, stop: threading.Event) -> None:
        try:
            try:
                self._open_and_initialise(stop)
            except (DriverError, Cancelled) as exc:
                self._connect_error = exc if isinstance(exc, DriverError) else DriverError(
                    f"Connecting to {self.port} was cancelled", SERIAL_PORT_ERROR)
                return
            log.info("%s: connected on %s, firmware %s, position %d", self._label, self.port,
                     self.dialect.firmware, self.status().position)
            self._connected_event.set()
            while not stop.is_set():
                try:
                    self._serve(stop)
                except _LinkLost as exc:
                    self._lose_link(str(exc), exc.number)
                    self._reconnect(stop)
        except Cancelled:
            pass
        except Exception as exc:  # a bug must not leave a silent dead thread behind a "connected" snapshot
            log.exception("%s: owner thread crashed", self._label)
            self._publish(moving=False, fault=f"{self.title} driver on {self.port} failed internally: {exc!r}",
                          fault_number=DriverError.number)
        finally:
            self._finish()
            self._connected_event.set()

    def _finish(self) -> None:
        """Close the port. A halt requested just before (shutdown: halt, then close) is still sent."""
        link = self._link
        if link is not None and self._halts.is_set():
            try:
                self._send_halt()
                # One poll before closing: its reply proves the controller has read the halt.
                reading = self.dialect.poll(link, True, self.status().position)
                if reading is not None and reading.moving:
                    log.warning("%s: the motor still reports moving after the final halt", self._label)
            except (*PORT_ERRORS, ProtocolError) as exc:
                log.warning("%s: could not confirm the final halt: %s", self._label, describe_port_error(exc))
        self._close_port()

    def _serve(self, stop: threading.Event) -> None:
        """Commands and polls until the link fails (raises _LinkLost) or ``stop`` is set."""
        link = self._open_link()
        link.halts, link.on_halt, link.halt_reply = self._halts, self._send_halt, self.dialect.is_halt_reply
        # The state was just read by the (re)connect: the first poll is one interval away.
        next_poll = time.monotonic() + (self.moving_poll_interval if self._hw_moving else self.idle_poll_interval)
        while not stop.is_set():
            self._wake.clear()  # before looking at the queue, so a wake-up set after this is never lost
            try:
                if self._halts.is_set():
                    self._send_halt()
                    next_poll = time.monotonic()  # see the motor stop within one poll
                    continue
                with self._lock:
                    command = self._queue.popleft() if self._queue else None
                    link.command_mark = self._halts.requests  # a halt from now on interrupts this command
                if command is not None:
                    if command[0] == "move":
                        self._do_move(link, command[1])
                    else:
                        self._do_sync(link, command[1])
                    next_poll = time.monotonic()
                    continue
                now = time.monotonic()
                if now >= next_poll:
                    ok = self._poll(link)
                    interval = self.moving_poll_interval if self._hw_moving else self.idle_poll_interval
                    # A failed poll is retried at once: the failure count, not the interval, bounds the wait.
                    next_poll = now + interval if ok else time.monotonic()
                    continue
            except PORT_ERRORS as exc:
                raise _LinkLost(f"serial port error: {describe_port_error(exc)}", SERIAL_PORT_ERROR) from exc
            except ProtocolError as exc:  # too many bad polls, or a command the controller did not take
                raise _LinkLost(str(exc)) from exc
            self._wake.wait(max(0.0, next_poll - now))

    # Commands -----------------------------------------------------------------------------------------------
    def _send_halt(self) -> None:
        """Write the pending halt now: from the serve loop, or from inside a wait for a reply (the link)."""
        if not self._halts.take():
            return
        link = self._open_link()
        requested = self.halt_requested_at
        if not self._hw_moving and not self.dialect.quirks.halt_when_idle:
            log.info("%s: halt while the controller is idle: not sent (this firmware would keep it armed)",
                     self._label)
            self._publish(moving=False)
            return
        try:
            out_of_band = link.write_halt(self.dialect.halt_frame(), answers=self.dialect.quirks.halt_answers)
        except PORT_ERRORS:
            self._halts.request(count=False)  # still wanted: sent first thing after the reconnect
            raise
        self.halt_sent_at = now = time.monotonic()
        self._stats.halt_sent(now - (requested or now), out_of_band=out_of_band)
        self._halted, self._stall_position = True, None
        self._hw_moving = True  # keep polling "moving" until the motor reports stopped
        log.info("%s: halt sent%s", self._label, " while a reply was on its way" if out_of_band else "")

    def _do_move(self, link: SerialLink, target: int) -> None:
        if self._hw_moving and self.dialect.quirks.retarget_needs_halt and not self._stop_for_retarget(link):
            return
        if self.dialect.move(link, target):
            self._hw_moving = True
            self._halted, self._stall_position = False, None

    def _stop_for_retarget(self, link: SerialLink) -> bool:
        """Halt and wait until the motor reports stopped (a firmware that ignores a move while moving). False if
        the user's Halt came meanwhile. IsMoving stays true throughout: the client's move is still on."""
        link.write_halt(self.dialect.halt_frame(), answers=self.dialect.quirks.halt_answers)
        self._halted, self._stall_position = True, None
        deadline = time.monotonic() + RETARGET_STOP_TIMEOUT
        while not link.interrupted and not link.stop.is_set():
            link.pause(self.moving_poll_interval)
            reading = self.dialect.poll(link, True, self.status().position)
            if reading is not None and self._apply(reading, publish_moving=False) is False:
                return not link.interrupted
            if time.monotonic() > deadline:
                log.warning("%s: the motor did not report stopped %.0f s after a halt; moving anyway", self._label,
                            RETARGET_STOP_TIMEOUT)
                return True
        return False

    def _do_sync(self, link: SerialLink, position: int) -> None:
        reported = self.dialect.sync(link, position)
        if reported is not None:
            if reported != position and not self._hw_moving:
                log.warning("%s: synced to %d but the controller reports %d", self._label, position, reported)
            self._publish(position=reported)

    # Polls --------------------------------------------------------------------------------------------------
    def _poll(self, link: SerialLink) -> bool:
        reading = self.dialect.poll(link, self._hw_moving, self.status().position)
        if reading is None:
            return False
        self._apply(reading)
        return True

    def _apply(self, reading: Reading, *, publish_moving: bool = True) -> bool | None:
        """Take a reading into the owner's state and the snapshot; returns ``moving`` as understood (None when
        the reading did not say)."""
        changes: dict[str, object] = {}
        moving = reading.moving
        if reading.position is not None:
            changes["position"] = reading.position
            if moving and self._stalled(reading.position):
                log.warning("%s: the controller reports moving but the position has stayed at %d; treating the "
                            "motor as stopped", self._label, reading.position)
                moving = False
        if moving is not None:
            self._hw_moving = moving
            if publish_moving:
                changes["moving"] = moving
        if reading.temperature is not None:
            changes["temperature"] = reading.temperature
        self._publish(**changes)
        return moving

    def _stalled(self, position: int) -> bool:
        """"Moving", but the position has not changed for a while. Some Moonlite clones compute GI from the last
        SN target, so it never clears after a halt (or at power-up); a motor that really moves changes position
        every poll."""
        quirks = self.dialect.quirks
        window = quirks.stall_after_halt if self._halted else quirks.stall_seconds
        now = time.monotonic()
        if position != self._stall_position:
            self._stall_position, self._stall_since = position, now
            return False
        return window is not None and now - self._stall_since >= window

    # Transport and (re)connection -------------------------------------------------------------------------
    def _open_link(self) -> SerialLink:
        if self._link is None:
            raise serial.PortNotOpenError()  # handled like any port failure: fault and reconnect
        return self._link

    def _close_port(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            try:
                link.port.close()
            except Exception as exc:  # closing a vanished device can fail; it is gone either way
                log.debug("%s: closing %s: %s", self._label, self.port, exc)

    def _open_and_initialise(self, stop: threading.Event) -> None:
        """Open the port, handshake and read the state into the snapshot. Raises DriverError or Cancelled."""
        self._close_port()
        port = open_serial(self.port, baud=self.baud, read_timeout=self.read_timeout, factory=self._serial_factory)
        self._link = link = SerialLink(port, self.dialect.framer(), self.read_timeout,
                                       command_name=self.dialect.command_name, stats=self._stats, stop=stop,
                                       max_failures=MAX_FAILED_POLLS, label=self._label)
        try:
            self.dialect.handshake(link, self.handshake_timeout)
            state = self.dialect.initialise(link)
        except BaseException as exc:
            self._close_port()
            if isinstance(exc, NoController):
                raise DriverError(f"No reply from {self.title} controller on {self.port} after "
                                  f"{self.handshake_timeout:.1f} s (is it powered, and is the baud rate "
                                  f"{self.baud}?)", DEVICE_NOT_RESPONDING) from exc
            if isinstance(exc, ProtocolError):
                raise DriverError(f"The {self.title} controller on {self.port} answered the handshake but then "
                                  f"gave no valid reply: {exc}", DEVICE_NOT_RESPONDING) from exc
            if isinstance(exc, PORT_ERRORS):
                raise DriverError(f"Serial port {self.port} failed: {describe_port_error(exc)}",
                                  SERIAL_PORT_ERROR) from exc
            raise
        assert state.position is not None and state.moving is not None, "initialise() must read both"
        self._hw_moving = state.moving
        self._publish(connected=True, position=state.position, moving=state.moving,
                      temperature=state.temperature, fault=None)

    def _lose_link(self, detail: str, number: int) -> None:
        self._close_port()
        self._hw_moving = False
        self._stats.fault()
        message = f"Lost the {self.title} controller on {self.port}: {detail}; reconnecting automatically"
        with self._lock:  # one step, so a Move racing in cannot leave the faulted snapshot "moving"
            dropped = len(self._queue)
            self._queue.clear()  # a stale move must not start by surprise after the reconnect
            self._status = replace(self._status, moving=False, fault=message, fault_number=number,
                                   updated=time.monotonic())
        log.error("%s: %s%s", self._label, message, f" ({dropped} queued command(s) dropped)" if dropped else "")

    def _reconnect(self, stop: threading.Event) -> None:
        delay = INITIAL_BACKOFF
        while not stop.wait(delay):
            try:
                self._open_and_initialise(stop)
            except DriverError as exc:
                delay = min(delay * 2, self.reconnect_max_backoff)
                log.info("%s: reconnect failed (next try in %.1f s): %s", self._label, delay, exc)
                self._publish(moving=False, fault=f"{exc.message} (connection lost; reconnecting automatically)",
                              fault_number=exc.number)
                continue
            self._stats.reconnect()
            log.info("%s: reconnected on %s at position %d", self._label, self.port, self.status().position)
            return
