"""Pegasus Astro DMFC and FocusCube 2 (and the other ``OK_`` boards on the same command set) on the serial engine.

The codec is pegasus_protocol.py (docs/protocols/pegasus.md gives the sources); the port, the thread, the queue,
Halt, faults and reconnects are serial_engine.py's. What is left here is what the engine cannot know about Pegasus:

* Connecting sends ``#``. If nothing answers, the board is an old DMFC rebooting on the port's DTR: it is left
  in silence for its 2 s boot (an Arduino bootloader misreads what it hears), then ``#`` is retried until the
  handshake window ends. A line that is not ``OK_...`` (``ERR:``, junk) comes from a board that is awake but whose
  input line held something before our ``#``: what ``probe`` sent in other protocols before, on a board that does
  not reset when the port opens. ``#`` is sent again at once. ``A`` then gives the firmware version and the state.
* Only ``A`` is polled: it is self-describing, where a halt's ``0`` could pass for a ``P`` or ``I`` reply. Every wait
  for a reply skips lines that answer another command (``is_foreign_reply``: a late echo, a halt's ``0``).
* Set commands: older firmware acknowledges only ``N``/``L``/``E``/``R``; firmware from about 2020 echoes every set
  command and answers ``H`` with ``0``. Which kind this board is, is learnt from the first ``M``/``W``/``C``/``S`` of
  each connection (the echo comes within milliseconds, or never): from then on every echo is read and checked
  (``M:1200`` echoed as ``M:1300`` is sent again), or none is waited for, and a halt's own answer is consumed
  (``quirks.halt_answers``). Guessing from the version number instead would need a table no source gives.
* A retarget is halt, wait for the stop, then move: no source says that ``M`` is obeyed while the motor runs.
* DC-motor mode is refused at connect, or switched to stepper when ``switch_to_stepper`` is set. A DC motor has no
  position: the firmware's counter stands still and ``G:n`` only runs the motor for n steps' time, so after a Halt
  nobody knows where it is, and its "steps" change with load and temperature. That is no base for autofocus, so it
  is not offered as a relative focuser either.
* Reverse, backlash, LED and speed are written only when configured and different from what the board reports.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Callable, Unpack

from alpaca_focuser.config import FocuserConfig
from alpaca_focuser.drivers import pegasus_protocol as pp
from alpaca_focuser.drivers.dialect import INIT_TRIES, Dialect, Features, LinkSettings, Quirks, Reading
from alpaca_focuser.drivers.protocol import (DRAIN_TIME, Cancelled, Framer, NoController, ProtocolError,
                                             ReplyTimeout, show_frame)
from alpaca_focuser.drivers.serial_engine import EngineOptions, SerialEngine
from alpaca_focuser.drivers.serial_link import SerialLink
from alpaca_focuser.errors import DriverError

log = logging.getLogger(__name__)

EARLY_PROBE = 0.3  # the first ``#`` after the port opens: a board that is not rebooting answers in milliseconds
SET_TRIES = 3  # a set command whose echo says the board took something else is sent again, this often in all
STATUS = pp.encode(pp.STATUS)
HANDSHAKE = pp.encode(pp.HANDSHAKE)


class Refused(ProtocolError):
    """The board answered ``ERR:``: it does not support this command (or value)."""


def _not_foreign(frame: bytes) -> Callable[[bytes], bool]:
    return lambda line: not pp.is_foreign_reply(frame, line)


def _acknowledgement(frame: bytes) -> Callable[[bytes], bytes]:
    """A parser for a set command's answer: the expected echo, else Refused or ProtocolError."""
    def parse(line: bytes) -> bytes:
        if pp.is_error_reply(line):
            raise Refused(f"{show_frame(frame)} refused ({line!r})")
        if not pp.reply_matches(frame, line):
            raise ProtocolError(f"{show_frame(frame)} acknowledged as {line!r}")
        return line
    return parse


class PegasusDialect(Dialect):
    name = "pegasus"
    title = "Pegasus Astro"
    features = Features(max_position=pp.MAX_POSITION, temperature=None, backlash=True, reverse=True)
    link_settings = LinkSettings(default_baud=pp.BAUD, resets_on_open=True, boot_time=2.0, quiet_boot=False,
                                 handshake_timeout=4.0, moving_poll_interval=0.1, idle_poll_interval=1.0)
    quirks = Quirks(halt_when_idle=True, halt_answers=False, retarget_needs_halt=True)

    def __init__(self, *, speed: int | None = None, backlash: int | None = None, reverse: bool | None = None,
                 led: bool | None = None, switch_to_stepper: bool = False, server_backlash: int = 0,
                 server_reverse: bool = False) -> None:
        if speed is not None:
            pp.encode_speed(speed)  # ValueError when out of range
        if backlash is not None:
            pp.encode_backlash(backlash)
        super().__init__()
        self.speed, self.backlash, self.reverse, self.led = speed, backlash, reverse, led
        self.switch_to_stepper = switch_to_stepper
        self.server_backlash, self.server_reverse = server_backlash, server_reverse
        self.model_code: str | None = None  # the code after OK_, e.g. "DMFCN" (``model`` is its name, "DMFC")
        self.status: pp.PegasusStatus | None = None  # the last status line read
        self.acks: bool | None = None  # the board echoes M/W/C/S and answers H (None: not learnt yet)
        self._target: int | None = None  # the move in progress, to check where it ended (None after a halt)

    def framer(self) -> Framer:
        return pp.LineFramer()

    def command_name(self, frame: bytes) -> str:
        return show_frame(frame).partition(":")[0]

    # --- connecting ---------------------------------------------------------------------------------------------
    def handshake(self, link: SerialLink, timeout: float) -> str:
        self.acks, self.quirks = None, type(self).quirks  # learnt again on every connection
        deadline = time.monotonic() + timeout
        rebooting = False
        while True:
            if link.stop.is_set():
                raise Cancelled()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoController(f"no valid reply to # within {timeout:.1f} s")
            try:
                self.model_code = link.query(HANDSHAKE, pp.parse_model,
                                             min(link.read_timeout if rebooting else EARLY_PROBE, remaining),
                                             matches=_not_foreign(HANDSHAKE))
                break
            except ReplyTimeout as exc:
                log.debug("%s: handshake: %s", link.label, exc)
                if not rebooting:  # an old DMFC reboots on open: say nothing until it has booted
                    rebooting = True
                    link.pause(max(0.0, min(self.link_settings.boot_time, remaining - link.read_timeout)))
                    link.flush()
                else:
                    link.pause(DRAIN_TIME)
            except ProtocolError as exc:  # awake, but our '#' ended a line that held something else: ask again
                log.debug("%s: handshake: %s; asking again", link.label, exc)
                link.pause(DRAIN_TIME)
                link.flush()
        self.model = pp.model_name(self.model_code)
        self.status = self._read_status(link)
        self.firmware = self.status.firmware
        return self.firmware

    def initialise(self, link: SerialLink) -> Reading:
        status = self.status or self._read_status(link)
        if status.motor == pp.MotorType.DC:
            status = self._leave_dc_mode(link)
        if self._apply_settings(link, status):
            status = self._read_status(link)
            self._check_settings(link, status)
        if status.backlash and self.server_backlash:
            log.warning("%s: both the controller (%d steps) and the server (backlash_steps = %d) compensate "
                        "backlash; set one of them to 0", link.label, status.backlash, self.server_backlash)
        if status.reverse and self.server_reverse:
            log.warning("%s: both the controller and the server reverse the motor: they cancel out", link.label)
        self.status, self.has_temperature = status, status.temperature is not None
        return Reading(position=status.position, moving=status.moving, temperature=status.temperature)

    def _read_status(self, link: SerialLink) -> pp.PegasusStatus:
        return link.query_retry(STATUS, pp.parse_status, INIT_TRIES, matches=_not_foreign(STATUS))

    def _leave_dc_mode(self, link: SerialLink) -> pp.PegasusStatus:
        board = self.model or "DMFC"
        if not self.switch_to_stepper:
            raise DriverError(f"{link.label}: the {board} is in DC-motor mode, which has no position, so it cannot "
                              "be an absolute focuser. Switch it to stepper mode (Pegasus Unity: Motor Type = "
                              "Stepper), or set switch_to_stepper = true in this focuser's table if a stepper motor "
                              "is attached")
        self._set(link, pp.encode_motor_mode(pp.MotorType.STEPPER))
        status = self._read_status(link)
        if status.motor == pp.MotorType.DC:
            raise DriverError(f"{link.label}: the {board} stays in DC-motor mode after R:1")
        log.warning("%s: switched the %s from DC-motor to stepper mode (switch_to_stepper)", link.label, board)
        return status

    def _apply_settings(self, link: SerialLink, status: pp.PegasusStatus) -> bool:
        """Write the configured settings the board does not already have; True if anything was written."""
        frames = []
        if self.reverse is not None and self.reverse != status.reverse:
            frames.append(pp.encode_reverse(self.reverse))
        if self.backlash is not None and self.backlash != status.backlash:
            frames.append(pp.encode_backlash(self.backlash))
        if self.led is not None and self.led != status.led:
            frames.append(pp.encode_led(self.led))
        if self.speed is not None:
            current = link.query_optional(pp.encode(pp.GET_SPEED), pp.parse_speed)
            if current != self.speed:
                frames.append(pp.encode_speed(self.speed))
        for frame in frames:
            try:
                self._set(link, frame)
            except ProtocolError as exc:  # a board may refuse one (Scops OAG: N and C); the status line tells
                log.warning("%s: %s", link.label, exc)
        return bool(frames)

    def _check_settings(self, link: SerialLink, status: pp.PegasusStatus) -> None:
        for key, wanted, actual in (("controller_reverse", self.reverse, status.reverse),
                                    ("controller_backlash", self.backlash, status.backlash),
                                    ("led", self.led, status.led)):
            if wanted is not None and wanted != actual:
                log.warning("%s: %s = %s was asked for, the controller reports %s", link.label, key, wanted, actual)

    # --- set commands and their acknowledgements -------------------------------------------------------------
    def _set(self, link: SerialLink, frame: bytes) -> None:
        """Write a set command and read its acknowledgement if the firmware sends one (learnt on first use)."""
        command, _ = pp.split_frame(frame)
        always = command in pp.ANSWERED_BY_ALL_FIRMWARE
        if not always and self.acks is False:
            link.send(frame)
            return
        learning = not always and self.acks is None
        try:
            link.query(frame, _acknowledgement(frame), matches=_not_foreign(frame))
        except ReplyTimeout:
            if not learning:
                raise
            self._learn(link, False)
            return
        except ProtocolError:
            if learning:  # a refusal or a wrong echo is an answer all the same
                self._learn(link, True)
            raise
        if learning:
            self._learn(link, True)

    def _learn(self, link: SerialLink, answers: bool) -> None:
        self.acks = answers
        self.quirks = replace(type(self).quirks, halt_answers=answers)
        log.info("%s: firmware %s %s", link.label, self.firmware,
                 "acknowledges every set command and halt" if answers else
                 "does not acknowledge M, W, C, S or H: not waiting for it")

    def _set_verified(self, link: SerialLink, frame: bytes, *, interruptible: bool = True) -> bool:
        """``_set``, sent again when the echo says the board took another value or never came; False if a halt
        came first (``interruptible``: a move must not start after a halt; a sync is no motion)."""
        last: ProtocolError | None = None
        for _ in range(SET_TRIES):
            if interruptible and link.interrupted:
                return False
            try:
                self._set(link, frame)
                return True
            except Refused:
                raise
            except ProtocolError as exc:
                last = exc
                log.warning("%s: %s; sending it again", link.label, exc)
                link.drain()
        raise ProtocolError(f"the controller did not take {show_frame(frame)} ({last})")

    # --- serving --------------------------------------------------------------------------------------------------
    def poll(self, link: SerialLink, moving: bool, last_position: int) -> Reading | None:
        status = link.poll(STATUS, pp.parse_status, matches=_not_foreign(STATUS))
        if status is None:
            return None
        if status.motor == pp.MotorType.DC:
            raise ProtocolError("the controller switched to DC-motor mode")  # the reconnect says what to do
        if status.temperature is None and self.status is not None and self.status.temperature is not None:
            log.warning("%s: the temperature probe no longer answers (-127)", link.label)
        if self._target is not None and not status.moving:
            if status.position != self._target:
                log.warning("%s: the move to %d ended at %d", link.label, self._target, status.position)
            self._target = None
        self.status = status
        return Reading(position=status.position, moving=status.moving, temperature=status.temperature)

    def move(self, link: SerialLink, target: int) -> bool:
        if not self._set_verified(link, pp.encode_move(target)):
            return False
        self._target = target
        return True

    def halt_frame(self) -> bytes:
        self._target = None  # the engine writes it now: wherever the motor stops is right
        return pp.encode_halt()

    def is_halt_reply(self, frame: bytes) -> bool:
        return pp.is_halt_reply(frame)

    def sync(self, link: SerialLink, position: int) -> int | None:
        self._set_verified(link, pp.encode_sync(position), interruptible=False)
        status = link.poll(STATUS, pp.parse_status, matches=_not_foreign(STATUS))
        return None if status is None else status.position

    def description(self, port: str) -> str:
        board = self.model or "focuser"
        return f"Pegasus Astro {board} on {port}, firmware {self.firmware or 'unknown'}"


class PegasusDriver(SerialEngine):
    """``driver = "pegasus"``: the serial engine speaking the Pegasus dialect (settings as in config.py)."""

    DIALECT = PegasusDialect

    @classmethod
    def from_config(cls, cfg: FocuserConfig) -> PegasusDriver:
        assert cfg.port is not None  # guaranteed by config validation
        # backlash_steps and reverse are the server's own (focuser layer), read only to warn about doing it twice.
        return cls(cfg.port, baud=cfg.baud, read_timeout=cfg.read_timeout, name=cfg.name, speed=cfg.speed,
                   backlash=cfg.controller_backlash, reverse=cfg.controller_reverse, led=cfg.led,
                   switch_to_stepper=bool(cfg.switch_to_stepper), server_backlash=cfg.backlash_steps,
                   server_reverse=cfg.reverse)

    def __init__(self, port: str, *, speed: int | None = None, backlash: int | None = None,
                 reverse: bool | None = None, led: bool | None = None, switch_to_stepper: bool = False,
                 server_backlash: int = 0, server_reverse: bool = False, **engine: Unpack[EngineOptions]) -> None:
        self.pegasus = PegasusDialect(speed=speed, backlash=backlash, reverse=reverse, led=led,
                                      switch_to_stepper=switch_to_stepper, server_backlash=server_backlash,
                                      server_reverse=server_reverse)
        super().__init__(port, self.pegasus, **engine)

    @property
    def model(self) -> str | None:
        """The board's model code from the handshake (``DMFCN``, ``FC``, ...)."""
        return self.pegasus.model_code

    @property
    def acknowledges_set_commands(self) -> bool | None:
        """Whether this board's firmware echoes M/W/C/S and answers H (None: no such command sent yet)."""
        return self.pegasus.acks
