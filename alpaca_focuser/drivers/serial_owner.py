"""The owner thread of a serial engine: the only code that touches the port (see serial_engine.py).

``PortOwner.run`` opens the port, handshakes through the dialect, then serves: Halt first (also from inside a
wait for a reply, through the link), then queued commands in order, then polls at the dialect's cadence. A port
error or a controller that stops answering faults the snapshot and reconnects with backoff. ``Mailbox`` is all it
shares with request threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING

import serial

from alpaca_focuser.drivers.base import DriverStatus
from alpaca_focuser.drivers.dialect import Reading, wait_out_boot
from alpaca_focuser.drivers.link_stats import LinkStats
from alpaca_focuser.drivers.ports import PORT_ERRORS, describe_port_error, open_serial
from alpaca_focuser.drivers.protocol import Cancelled, NoController, ProtocolError
from alpaca_focuser.drivers.serial_link import HaltSignal, SerialLink
from alpaca_focuser.errors import DEVICE_NOT_RESPONDING, SERIAL_PORT_ERROR, DriverError

if TYPE_CHECKING:
    from alpaca_focuser.drivers.serial_engine import SerialEngine

log = logging.getLogger(__name__)

MAX_FAILED_POLLS = 3  # consecutive bad replies on an open port before it counts as lost (~1.5 s if silent)
INITIAL_BACKOFF = 0.5  # first reconnect delay; doubles up to reconnect_max_backoff
RETARGET_STOP_TIMEOUT = 10.0  # quirks.retarget_needs_halt: how long to wait for the halted motor to stop


class _LinkLost(Exception):
    """The port failed or the controller stopped answering: fault, close, reconnect."""

    def __init__(self, message: str, number: int = DEVICE_NOT_RESPONDING) -> None:
        super().__init__(message)
        self.number = number  # SERIAL_PORT_ERROR for the port, DEVICE_NOT_RESPONDING for the controller


Command = tuple[str, int]  # ("move", target) or ("sync", position)


class Mailbox:
    """What request threads and the owner thread share, under one lock: the snapshot and the command queue;
    and the halt signal, which wakes the owner even while it waits for a reply. Requests only ever touch this."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status = DriverStatus(connected=False, position=0, moving=False)
        self.queue: deque[Command] = deque()
        self.halts = HaltSignal()  # Halt jumps the queue, and wakes a wait for a reply
        self.wake = threading.Event()  # anything else queued
        self.stats = LinkStats()
        self.halt_requested_at: float | None = None  # monotonic time of the last halt() call
        self.halt_sent_at: float | None = None  # monotonic time the last halt frame was written

    def publish(self, **changes: object) -> None:
        """Update the snapshot. ``moving`` stays True while a Move is queued but not yet started, and the
        position stays at a queued sync's value until the sync has been sent."""
        with self.lock:
            if changes.get("moving") is False and any(c[0] == "move" for c in self.queue):
                changes["moving"] = True
            syncs = [c[1] for c in self.queue if c[0] == "sync"]
            if syncs and "position" in changes:
                changes["position"] = syncs[-1]  # a poll from before a queued sync must not undo it
            self.status = replace(self.status, updated=time.monotonic(), **changes)  # type: ignore[arg-type]

    def next_command(self) -> tuple[Command | None, int]:
        """The next queued command (or None), and the halt count it starts from: a halt asked for after this
        interrupts it (``halt()`` counts under the same lock)."""
        with self.lock:
            return (self.queue.popleft() if self.queue else None), self.halts.requests

    def fault(self, message: str, number: int) -> int:
        """Show a fault (not moving; the position kept) and drop the queue in one step, so a Move racing in
        cannot leave the faulted snapshot "moving". Returns how many commands were dropped."""
        with self.lock:
            dropped = len(self.queue)
            self.queue.clear()  # a stale move must not start by surprise after the reconnect
            self.status = replace(self.status, moving=False, fault=message, fault_number=number,
                                  updated=time.monotonic())
        return dropped


class PortOwner:
    """One connection's owner thread (``run``). The engine gives its settings; ``mail`` is shared state."""

    def __init__(self, engine: SerialEngine, mail: Mailbox, stop: threading.Event) -> None:
        self.engine, self.dialect, self.mail, self.stop = engine, engine.dialect, mail, stop
        self.label, self.title, self.port = engine.label, engine.title, engine.port
        self.connected = threading.Event()  # set once connected, or once connecting failed
        self.connect_error: DriverError | None = None
        self._link: SerialLink | None = None
        self._hw_moving = False  # a move or halt was sent and no poll since has reported stopped
        self._halted = False  # the last command that moved the motor was a halt
        self._stall_position: int | None = None  # the position while "moving", and since when it has not changed
        self._stall_since = 0.0

    def run(self) -> None:
        stop = self.stop
        try:
            try:
                self._open_and_initialise(stop)
            except (DriverError, Cancelled) as exc:
                self.connect_error = exc if isinstance(exc, DriverError) else DriverError(
                    f"Connecting to {self.port} was cancelled", SERIAL_PORT_ERROR)
                return
            log.info("%s: connected on %s, firmware %s, position %d", self.label, self.port,
                     self.dialect.firmware, self.mail.status.position)
            self.connected.set()
            while not stop.is_set():
                try:
                    self._serve(stop)
                except _LinkLost as exc:
                    self._lose_link(str(exc), exc.number)
                    self._reconnect(stop)
        except Cancelled:
            pass
        except Exception as exc:  # a bug must not leave a silent dead thread behind a "connected" snapshot
            log.exception("%s: owner thread crashed", self.label)
            self.mail.publish(moving=False, fault=f"{self.title} driver on {self.port} failed internally: {exc!r}",
                              fault_number=DriverError.number)
        finally:
            self._finish()
            self.connected.set()

    def _finish(self) -> None:
        """Close the port. A halt requested just before (shutdown: halt, then close) is still sent."""
        link = self._link
        if link is not None and self.mail.halts.is_set():
            try:
                self._send_halt()
                # One poll before closing: its reply proves the controller has read the halt.
                reading = self.dialect.poll(link, True, self.mail.status.position)
                if reading is not None and reading.moving:
                    log.warning("%s: the motor still reports moving after the final halt", self.label)
            except PORT_ERRORS + (ProtocolError,) as exc:
                log.warning("%s: could not confirm the final halt: %s", self.label, describe_port_error(exc))
        self._close_port()

    def _serve(self, stop: threading.Event) -> None:
        """Commands and polls until the link fails (raises _LinkLost) or ``stop`` is set."""
        link = self._open_link()
        link.halts, link.on_halt, link.halt_reply = self.mail.halts, self._send_halt, self.dialect.is_halt_reply
        # The state was just read by the (re)connect: the first poll is one interval away.
        moving_interval, idle_interval = self.engine.moving_poll_interval, self.engine.idle_poll_interval
        next_poll = time.monotonic() + (moving_interval if self._hw_moving else idle_interval)
        while not stop.is_set():
            self.mail.wake.clear()  # before looking at the queue, so a wake-up set after this is never lost
            try:
                if self.mail.halts.is_set():
                    self._send_halt()
                    next_poll = time.monotonic()  # see the motor stop within one poll
                    continue
                command, link.command_mark = self.mail.next_command()  # a halt from now on interrupts it
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
                    interval = moving_interval if self._hw_moving else idle_interval
                    # A failed poll is retried at once: the failure count, not the interval, bounds the wait.
                    next_poll = now + interval if ok else time.monotonic()
                    continue
            except PORT_ERRORS as exc:
                raise _LinkLost(f"serial port error: {describe_port_error(exc)}", SERIAL_PORT_ERROR) from exc
            except ProtocolError as exc:  # too many bad polls, or a command the controller did not take
                raise _LinkLost(str(exc)) from exc
            self.mail.wake.wait(max(0.0, next_poll - now))

    # Commands -----------------------------------------------------------------------------------------------
    def _send_halt(self) -> None:
        """Write the pending halt now: from the serve loop, or from inside a wait for a reply (the link)."""
        if not self.mail.halts.take():
            return
        link = self._open_link()
        requested = self.mail.halt_requested_at
        if not self._hw_moving and not self.dialect.quirks.halt_when_idle:
            log.info("%s: halt while the controller is idle: not sent (this firmware would keep it armed)",
                     self.label)
            self.mail.publish(moving=False)
            return
        try:
            out_of_band = link.write_halt(self.dialect.halt_frame(), answers=self.dialect.quirks.halt_answers)
        except PORT_ERRORS:
            self.mail.halts.request(count=False)  # still wanted: sent first thing after the reconnect
            raise
        self.mail.halt_sent_at = now = time.monotonic()
        self.mail.stats.halt_sent(now - (requested or now), out_of_band=out_of_band)
        self._halted, self._stall_position = True, None
        self._hw_moving = True  # keep polling "moving" until the motor reports stopped
        log.info("%s: halt sent%s", self.label, " while a reply was on its way" if out_of_band else "")

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
            link.pause(self.engine.moving_poll_interval)
            reading = self.dialect.poll(link, True, self.mail.status.position)
            if reading is not None and self._apply(reading, publish_moving=False) is False:
                return not link.interrupted
            if time.monotonic() > deadline:
                log.warning("%s: the motor did not report stopped %.0f s after a halt; moving anyway", self.label,
                            RETARGET_STOP_TIMEOUT)
                return True
        return False

    def _do_sync(self, link: SerialLink, position: int) -> None:
        reported = self.dialect.sync(link, position)
        if reported is not None:
            if reported != position and not self._hw_moving:
                log.warning("%s: synced to %d but the controller reports %d", self.label, position, reported)
            self.mail.publish(position=reported)

    # Polls --------------------------------------------------------------------------------------------------
    def _poll(self, link: SerialLink) -> bool:
        reading = self.dialect.poll(link, self._hw_moving, self.mail.status.position)
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
                            "motor as stopped", self.label, reading.position)
                moving = False
        if moving is not None:
            self._hw_moving = moving
            if publish_moving:
                changes["moving"] = moving
        if reading.temperature is not None:
            changes["temperature"] = reading.temperature
        self.mail.publish(**changes)
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
                log.debug("%s: closing %s: %s", self.label, self.port, exc)

    def _open_and_initialise(self, stop: threading.Event) -> None:
        """Open the port, handshake and read the state into the snapshot. Raises DriverError or Cancelled."""
        self._close_port()
        engine = self.engine
        port = open_serial(self.port, baud=engine.baud, read_timeout=engine.read_timeout,
                           factory=engine.serial_factory)
        self._link = link = SerialLink(port, self.dialect.framer(), engine.read_timeout,
                                       command_name=self.dialect.command_name, stats=self.mail.stats, stop=stop,
                                       max_failures=MAX_FAILED_POLLS, label=self.label)
        try:
            wait_out_boot(self.dialect, link)
            self.dialect.handshake(link, engine.handshake_timeout)
            state = self.dialect.initialise(link)
        except BaseException as exc:
            self._close_port()
            if isinstance(exc, NoController):
                raise DriverError(f"No reply from {self.title} controller on {self.port} after "
                                  f"{engine.handshake_timeout:.1f} s (is it powered, and is the baud rate "
                                  f"{engine.baud}?)", DEVICE_NOT_RESPONDING) from exc
            if isinstance(exc, ProtocolError):
                raise DriverError(f"The {self.title} controller on {self.port} answered the handshake but then "
                                  f"gave no valid reply: {exc}", DEVICE_NOT_RESPONDING) from exc
            if isinstance(exc, PORT_ERRORS):
                raise DriverError(f"Serial port {self.port} failed: {describe_port_error(exc)}",
                                  SERIAL_PORT_ERROR) from exc
            raise
        assert state.position is not None and state.moving is not None, "initialise() must read both"
        self._hw_moving = state.moving
        self.mail.publish(connected=True, position=state.position, moving=state.moving,
                      temperature=state.temperature, fault=None)

    def _lose_link(self, detail: str, number: int) -> None:
        self._close_port()
        self._hw_moving = False
        self.mail.stats.fault()
        message = f"Lost the {self.title} controller on {self.port}: {detail}; reconnecting automatically"
        dropped = self.mail.fault(message, number)
        log.error("%s: %s%s", self.label, message, f" ({dropped} queued command(s) dropped)" if dropped else "")

    def _reconnect(self, stop: threading.Event) -> None:
        delay = INITIAL_BACKOFF
        while not stop.wait(delay):
            try:
                self._open_and_initialise(stop)
            except DriverError as exc:
                delay = min(delay * 2, self.engine.reconnect_max_backoff)
                log.info("%s: reconnect failed (next try in %.1f s): %s", self.label, delay, exc)
                self.mail.publish(moving=False, fault=f"{exc.message} (connection lost; reconnecting automatically)",
                              fault_number=exc.number)
                continue
            self.mail.stats.reconnect()
            log.info("%s: reconnected on %s at position %d", self.label, self.port, self.mail.status.position)
            return
