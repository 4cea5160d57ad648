"""Moonlite-compatible focuser controller on a USB serial port.

One thread per driver ("moonlite-<name>") owns the port: it opens it, handshakes, sends queued commands and
polls. Everything else only reads the snapshot (``status()``) or queues work, so the serial traffic does not
depend on how many Alpaca clients poll, and a request thread never waits on the 9600 baud line.

Fault semantics (what the focuser layer sees):

* ``connect()`` failing raises ``DriverError`` (SERIAL_PORT_ERROR: the port cannot be opened;
  DEVICE_NOT_RESPONDING: it opened but no controller answered) and leaves the driver disconnected.
* Once connected, ``status().connected`` stays True until ``disconnect()``: the user asked to be connected
  and the driver keeps trying. When the port fails (USB unplugged, SerialException/OSError) or the controller
  stops answering (``MAX_FAILED_POLLS`` consecutive bad polls), ``status().fault`` carries a message naming
  the port and the failure, ``moving`` is False (we cannot know, and must never report motion forever) and the
  last known position is kept. The focuser layer turns ``fault`` into a DriverException for hardware members.
  The owner thread reopens the same path with exponential backoff, redoes the handshake, reads the position
  back from the firmware (never zeroes it) and clears ``fault``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Callable, TypeVar

import serial

from alpaca_focuser.drivers import moonlite_protocol as mp
from alpaca_focuser.drivers.base import DriverCapabilities, DriverStatus, FocuserDriver
from alpaca_focuser.drivers.ports import PORT_ERRORS, describe_port_error, open_serial
from alpaca_focuser.errors import DEVICE_NOT_RESPONDING, SERIAL_PORT_ERROR, DriverError, InvalidValueError

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_FAILED_POLLS = 3  # consecutive bad replies on an open port before it counts as lost (~1.5 s if silent)
INIT_TRIES = 3  # tries per query while (re)connecting: a noisy line must not fail the connect at once
INITIAL_BACKOFF = 0.5  # first reconnect delay; doubles up to reconnect_max_backoff
STALL_SECONDS = 2.0  # GI says moving but GP has not changed for this long: the motor has stopped
STALL_AFTER_HALT = 0.5  # the same after a halt, when the motor is only decelerating


class _LinkLost(Exception):
    """The port failed or the controller stopped answering: fault, close, reconnect."""

    def __init__(self, message: str, number: int = DEVICE_NOT_RESPONDING) -> None:
        super().__init__(message)
        self.number = number  # SERIAL_PORT_ERROR for the port, DEVICE_NOT_RESPONDING for the controller


class MoonliteDriver(FocuserDriver):
    kind = "moonlite"

    def __init__(self, port: str, *, baud: int = 9600, read_timeout: float = 0.5, speed_code: int | None = None,
                 half_step: bool | None = None, name: str = "moonlite", moving_poll_interval: float = 0.1,
                 idle_poll_interval: float = 1.0, handshake_timeout: float = 3.0,
                 reconnect_max_backoff: float = 10.0,
                 serial_factory: Callable[..., serial.Serial] = serial.Serial) -> None:
        if speed_code is not None and speed_code not in mp.STEP_DELAY_CODES:
            raise ValueError(f"speed_code must be one of {mp.STEP_DELAY_CODES}, got {speed_code!r}")
        self.port, self.baud, self.read_timeout, self.name = port, baud, read_timeout, name
        self.speed_code, self.half_step = speed_code, half_step  # applied on every (re)connect when not None
        self.moving_poll_interval, self.idle_poll_interval = moving_poll_interval, idle_poll_interval
        self.handshake_timeout, self.reconnect_max_backoff = handshake_timeout, reconnect_max_backoff
        self._serial_factory = serial_factory

        self._lock = threading.Lock()  # guards the snapshot, the command queue and the facts below
        self._status = DriverStatus(connected=False, position=0, moving=False)
        self._queue: deque[tuple[str, int]] = deque()  # ("move", target) / ("sync", position)
        self._halt = threading.Event()  # checked before every transaction: Halt jumps the queue
        self._wake = threading.Event()
        self._stop = threading.Event()  # replaced per connection, so a late old thread can never resume
        self._thread: threading.Thread | None = None
        self._connected_event = threading.Event()
        self._connect_error: DriverError | None = None
        # Facts read from the firmware (written by the owner thread, read by anyone).
        self.firmware_version: str | None = None
        self.has_temperature = False
        self.half_step_enabled: bool | None = None
        self.step_delay: int | None = None
        # Counters for tests and benchmarks (written by the owner thread only).
        self._closed_transactions = 0
        self.failed_polls = 0  # replies that timed out or failed validation
        self.reconnects = 0
        self.halt_requested_at: float | None = None  # monotonic time of the last halt() call
        self.halt_sent_at: float | None = None  # monotonic time the last ":FQ#" was written
        # Owner-thread state.
        self._link: mp.MoonliteLink | None = None
        self._hw_moving = False  # a move or halt was sent and no GI since has reported stopped
        self._failures = 0  # consecutive failed polls
        self._halted = False  # the last command that moved the motor was a halt
        self._stall_position: int | None = None  # GP while GI says moving, and since when it has not changed
        self._stall_since = 0.0

    @property
    def transactions(self) -> int:
        """Commands written to the line since this driver was created (for tests and benchmarks)."""
        link = self._link
        return self._closed_transactions + (link.transactions if link is not None else 0)

    # --- FocuserDriver: caller side (never touches the port) ----------------------------------------------------
    def connect(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self.status().connected:
            return
        self.disconnect()  # reap a thread left from a failed connect, if any
        self._stop = stop = threading.Event()
        self._halt.clear()
        self._connected_event.clear()
        self._connect_error = None
        with self._lock:
            self._queue.clear()
        self._thread = threading.Thread(target=self._run, args=(stop,), name=f"moonlite-{self.name}", daemon=True)
        self._thread.start()
        # The owner thread's connect is bounded by the handshake and per-read timeouts; the margin is a backstop.
        if not self._connected_event.wait(self.handshake_timeout + 20 * self.read_timeout + 5.0):
            self.disconnect()
            raise DriverError(f"Connecting to the Moonlite controller on {self.port} timed out", SERIAL_PORT_ERROR)
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
                log.info("Moonlite %s: disconnected from %s", self.name, self.port)
            self._status = replace(self._status, connected=False, moving=False, fault=None,
                                   updated=time.monotonic())

    def status(self) -> DriverStatus:
        with self._lock:
            return self._status

    def capabilities(self) -> DriverCapabilities:
        version = self.firmware_version or "unknown"
        return DriverCapabilities(max_position=mp.MAX_POSITION, has_temperature=self.has_temperature,
                                  description=f"Moonlite-compatible focuser on {self.port}, firmware {version}")

    def move_to(self, target: int) -> None:
        self._check_range(target, "Move target")
        with self._lock:
            self._require_usable()
            # A newer target supersedes a queued one: only the last Move matters to the client.
            self._queue = deque(c for c in self._queue if c[0] != "move")
            self._queue.append(("move", target))
            # IsMoving must be true the instant Move returns; only a GI poll after FG may clear it.
            self._status = replace(self._status, moving=True, updated=time.monotonic())
        self._wake.set()

    def halt(self) -> None:
        with self._lock:
            self._queue = deque(c for c in self._queue if c[0] != "move")
            self.halt_requested_at = time.monotonic()
            self._halt.set()
        self._wake.set()

    def sync(self, position: int) -> None:
        self._check_range(position, "Sync position")
        with self._lock:
            self._require_usable()
            self._queue.append(("sync", position))
            # Like Move and IsMoving: Position reflects the sync the instant the Action returns.
            self._status = replace(self._status, position=position, updated=time.monotonic())
        self._wake.set()

    @staticmethod
    def _check_range(value: int, what: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= mp.MAX_POSITION:
            raise InvalidValueError(f"{what} {value} is outside the Moonlite range 0..{mp.MAX_POSITION}")

    def _require_usable(self) -> None:
        if not self._status.connected:
            raise DriverError(f"The Moonlite focuser on {self.port} is not connected", SERIAL_PORT_ERROR)
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
            except (DriverError, mp.Cancelled) as exc:
                self._connect_error = exc if isinstance(exc, DriverError) else DriverError(
                    f"Connecting to {self.port} was cancelled", SERIAL_PORT_ERROR)
                return
            log.info("Moonlite %s: connected on %s, firmware %s, position %d", self.name, self.port,
                     self.firmware_version, self.status().position)
            self._connected_event.set()
            while not stop.is_set():
                try:
                    self._serve(stop)
                except _LinkLost as exc:
                    self._lose_link(str(exc), exc.number)
                    self._reconnect(stop)
        except mp.Cancelled:
            pass
        except Exception as exc:  # a bug must not leave a silent dead thread behind a "connected" snapshot
            log.exception("Moonlite %s: owner thread crashed", self.name)
            self._publish(moving=False, fault=f"Moonlite driver on {self.port} failed internally: {exc!r}",
                          fault_number=DriverError.number)
        finally:
            self._finish()
            self._connected_event.set()

    def _finish(self) -> None:
        """Close the port. A halt requested just before (shutdown: halt, then close) is still sent."""
        if self._link is not None and self._halt.is_set():
            try:
                self._do_halt()
                # One query before closing: its reply proves the controller has read FQ.
                if self._query(mp.GET_MOVING, mp.parse_moving):
                    log.warning("Moonlite %s: the motor still reports moving after the final halt", self.name)
            except (*PORT_ERRORS, mp.ProtocolError) as exc:
                log.warning("Moonlite %s: could not confirm the final halt: %s", self.name, describe_port_error(exc))
        self._close_port()

    def _serve(self, stop: threading.Event) -> None:
        """Commands and polls until the link fails (raises _LinkLost) or ``stop`` is set."""
        # The state was just read by the (re)connect: the first poll is one interval away.
        next_poll = time.monotonic() + (self.moving_poll_interval if self._hw_moving else self.idle_poll_interval)
        while not stop.is_set():
            self._wake.clear()  # before looking at the queue, so a wake-up set after this is never lost
            try:
                if self._halt.is_set():
                    self._do_halt()
                    next_poll = time.monotonic()  # see the motor stop within one poll
                    continue
                with self._lock:
                    command = self._queue.popleft() if self._queue else None
                if command is not None:
                    if command[0] == "move":
                        self._do_move(command[1])
                    else:
                        self._do_sync(command[1])
                    next_poll = time.monotonic()
                    continue
                now = time.monotonic()
                if now >= next_poll:
                    ok = self._poll_moving() if self._hw_moving else self._poll_idle()
                    interval = self.moving_poll_interval if self._hw_moving else self.idle_poll_interval
                    # A failed poll is retried at once: the failure count, not the interval, bounds the wait.
                    next_poll = now + interval if ok else time.monotonic()
                    continue
            except PORT_ERRORS as exc:
                raise _LinkLost(f"serial port error: {describe_port_error(exc)}", SERIAL_PORT_ERROR) from exc
            self._wake.wait(max(0.0, next_poll - now))

    # Commands -----------------------------------------------------------------------------------------------
    def _do_halt(self) -> None:
        self._halt.clear()
        self._write(mp.encode_command(mp.HALT))
        self._halted, self._stall_position = True, None
        self.halt_sent_at = time.monotonic()
        self._hw_moving = True  # FQ is not acknowledged: keep polling GI until the motor reports stopped
        log.info("Moonlite %s: halt sent", self.name)

    def _do_move(self, target: int) -> None:
        # SN is never acknowledged: read GN back, because FG after a lost or garbled SN moves somewhere else.
        readback: object = None
        for _ in range(3):
            if self._halt.is_set():
                return  # a Halt arrived before the move started: do not start it
            self._write(mp.encode_set_target(target))
            try:
                readback = self._query(mp.GET_TARGET, mp.parse_position)
                if readback == target:
                    break
                log.warning("Moonlite %s: GN read back %s after SN%04X; retrying", self.name, readback, target)
            except mp.ProtocolError as exc:
                readback = exc
                self._drain()
        else:
            raise _LinkLost(f"the controller did not accept target {target} (GN read back: {readback})")
        if not self._halt.is_set():
            self._write(mp.encode_command(mp.START_MOVE))
            self._hw_moving = True
            self._halted, self._stall_position = False, None

    def _do_sync(self, position: int) -> None:
        self._write(mp.encode_set_position(position))
        reported = self._poll_query(mp.GET_POSITION, mp.parse_position)
        if reported is not None:
            if reported != position and not self._hw_moving:
                log.warning("Moonlite %s: synced to %d but the controller reports %d", self.name, position,
                            reported)
            self._publish(position=reported)

    # Polls --------------------------------------------------------------------------------------------------
    def _poll_moving(self) -> bool:
        position = self._poll_query(mp.GET_POSITION, mp.parse_position)
        moving = None if position is None else self._poll_query(mp.GET_MOVING, mp.parse_moving)
        if moving is False:
            # The move may have ended between GP and GI: the final position is the one read after GI.
            position = self._poll_query(mp.GET_POSITION, mp.parse_position)
        if position is None or moving is None:
            return False
        if moving and self._stalled(position):
            log.warning("Moonlite %s: the controller reports moving but the position has stayed at %d; treating "
                        "the motor as stopped", self.name, position)
            moving = False
        self._hw_moving = moving
        self._publish(position=position, moving=moving)
        return True

    def _stalled(self, position: int) -> bool:
        """GI says moving, but GP has not changed for a while. Some clones compute GI from the last SN target,
        so it never clears after a halt (or at power-up); a motor that really moves changes GP every poll."""
        now = time.monotonic()
        if position != self._stall_position:
            self._stall_position, self._stall_since = position, now
            return False
        return now - self._stall_since >= (STALL_AFTER_HALT if self._halted else STALL_SECONDS)

    def _poll_idle(self) -> bool:
        previous = self.status().position
        position = self._poll_query(mp.GET_POSITION, mp.parse_position)
        if position is None:
            return False
        changes: dict[str, object] = {"position": position}
        if position != previous:
            # Something moved it (hand paddle, another program before we connected): follow it as a move.
            moving = self._poll_query(mp.GET_MOVING, mp.parse_moving)
            if moving is None:
                return False
            self._hw_moving = moving
            changes["moving"] = moving
        if self.has_temperature:
            # GT reads the conversion started by the previous poll's C (a DS18B20 takes ~750 ms).
            temperature = self._poll_query(mp.GET_TEMPERATURE, mp.parse_temperature)
            if temperature is None:
                return False
            self._write(mp.encode_command(mp.START_CONVERSION))
            changes["temperature"] = temperature
        self._publish(**changes)
        return True

    def _poll_query(self, cmd: str, parser: Callable[[bytes], T]) -> T | None:
        """One polled query. A bad reply is dropped with a warning and counted; too many in a row: _LinkLost.
        None also when a Halt is pending: it must not wait for the rest of a poll cycle."""
        if self._halt.is_set():
            return None
        try:
            value = self._query(cmd, parser)
        except mp.ProtocolError as exc:
            self._failures += 1
            self.failed_polls += 1
            log.warning("Moonlite %s: discarded reply to :%s# (%s) [%d/%d]", self.name, cmd, exc,
                        self._failures, MAX_FAILED_POLLS)
            if self._failures >= MAX_FAILED_POLLS:
                raise _LinkLost(f"no valid reply to :{cmd}# {MAX_FAILED_POLLS} times in a row ({exc})") from exc
            self._drain()
            return None
        self._failures = 0
        return value

    # Transport and (re)connection -------------------------------------------------------------------------
    def _open_link(self) -> mp.MoonliteLink:
        if self._link is None:
            raise serial.PortNotOpenError()  # handled like any port failure: fault and reconnect
        return self._link

    def _write(self, frame: bytes) -> None:
        self._open_link().send(frame)

    def _query(self, cmd: str, parser: Callable[[bytes], T]) -> T:
        return self._open_link().query(cmd, parser)

    def _drain(self) -> None:
        self._stop.wait(mp.DRAIN_TIME)

    def _close_port(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            self._closed_transactions += link.transactions
            try:
                link.port.close()
            except Exception as exc:  # closing a vanished device can fail; it is gone either way
                log.debug("Moonlite %s: closing %s: %s", self.name, self.port, exc)

    def _open_and_initialise(self, stop: threading.Event) -> None:
        """Open the port, handshake and read the state into the snapshot. Raises DriverError or mp.Cancelled."""
        self._close_port()
        port = open_serial(self.port, baud=self.baud, read_timeout=self.read_timeout, factory=self._serial_factory)
        self._link = mp.MoonliteLink(port, self.read_timeout)
        try:
            state = self._link.initialise(stop, self.handshake_timeout, speed_code=self.speed_code,
                                          half_step=self.half_step, tries=INIT_TRIES)
        except BaseException as exc:
            self._close_port()
            if isinstance(exc, mp.NoController):
                raise DriverError(f"No reply from Moonlite controller on {self.port} after "
                                  f"{self.handshake_timeout:.1f} s (is it powered, and is the baud rate "
                                  f"{self.baud}?)", DEVICE_NOT_RESPONDING) from exc
            if isinstance(exc, mp.ProtocolError):
                raise DriverError(f"The Moonlite controller on {self.port} answered the handshake but then "
                                  f"gave no valid reply: {exc}", DEVICE_NOT_RESPONDING) from exc
            if isinstance(exc, PORT_ERRORS):
                raise DriverError(f"Serial port {self.port} failed: {describe_port_error(exc)}",
                                  SERIAL_PORT_ERROR) from exc
            raise
        self.firmware_version, self.has_temperature = state.version, state.temperature is not None
        self.step_delay, self.half_step_enabled = state.step_delay, state.half_step
        self._hw_moving = state.moving
        self._failures = 0
        self._publish(connected=True, position=state.position, moving=state.moving,
                      temperature=state.temperature, fault=None)

    def _lose_link(self, detail: str, number: int) -> None:
        self._close_port()
        self._hw_moving = False
        message = f"Lost the Moonlite controller on {self.port}: {detail}; reconnecting automatically"
        with self._lock:  # one step, so a Move racing in cannot leave the faulted snapshot "moving"
            dropped = len(self._queue)
            self._queue.clear()  # a stale move must not start by surprise after the reconnect
            self._status = replace(self._status, moving=False, fault=message, fault_number=number,
                                   updated=time.monotonic())
        log.error("Moonlite %s: %s%s", self.name, message,
                  f" ({dropped} queued command(s) dropped)" if dropped else "")

    def _reconnect(self, stop: threading.Event) -> None:
        delay = INITIAL_BACKOFF
        while not stop.wait(delay):
            try:
                self._open_and_initialise(stop)
            except DriverError as exc:
                delay = min(delay * 2, self.reconnect_max_backoff)
                log.info("Moonlite %s: reconnect failed (next try in %.1f s): %s", self.name, delay, exc)
                self._publish(moving=False, fault=f"{exc.message} (connection lost; reconnecting automatically)",
                              fault_number=exc.number)
                continue
            self.reconnects += 1
            log.info("Moonlite %s: reconnected on %s at position %d", self.name, self.port,
                     self.status().position)
            return
