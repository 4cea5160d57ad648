"""myFocuserPro2 controllers (Robert Brown's firmware: Arduino Nano, and ESP32 builds with a serial mode): the
myFocuserPro2 dialect on the serial engine.

The codec is in myfp2_protocol.py and the protocol note, with its sources, in docs/protocols/myfp2.md; the port,
the thread, the queue, Halt, faults and reconnects are the engine's (serial_engine.py). What is left here:

* Connecting retries ``:03#`` through the board's DTR reboot (a Nano's bootloader ignores input for 1-2 s; an
  ESP32 prints its boot banner first, which the framer drops as noise), then reads the board name, MaxStep, the
  controller's own settings, whether a temperature probe was found, moving and the position.
* MaxStep is the firmware's and it clamps moves to it silently: the configured ``max_step`` must not exceed it.
  If it does, connecting fails with a message naming both numbers, unless ``set_controller_max_step`` asks to write
  ``max_step`` into the controller (done on every connect, read back).
* Configured settings (reverse, backlash in and out, step mode, temperature compensation) are applied on every
  (re)connect: the firmware writes its EEPROM only after a quiet period, so a reset may have lost them (and the
  Nano never saves temperature compensation). Each is read first, written only when it differs and read back,
  which also paces the Nano's four-command queue. Settings not configured are left as the controller has them.
* Polls: ``:00#`` and ``:01#`` while moving, ``:00#`` again once stopped; idle, ``:00#`` (``:01#`` as well when
  it changed by itself: the firmware's own temperature compensation, push buttons) and ``:06#`` only when a probe
  was found: without one the firmware answers a constant 20 C, which is no temperature.
* When a move ends, and after a sync, ``:48#`` writes the position to EEPROM at once: the board reboots whenever
  the port opens and would come back at the position it saved up to 10 s (Nano) or 60 s (ESP32) before, with the
  motor elsewhere. The firmware writes once per move anyway; this only writes it sooner.
* Moves send ``:05#`` and read the target back with ``:39#``: a move is ignored while the motor moves (the engine
  halts and waits for the stop first, ``retarget_needs_halt``) and by a Nano whose motor supply is off.
* Halt is ``:27#``. The ESP firmware only raises a flag that its stepping loop reads, so a halt that arrives when
  the motor is not stepping stays armed and stops the next move after one step. The engine never halts an idle
  controller (``halt_when_idle = False``: ConformU does halt while idle); a halt that may have arrived just after
  the motor stopped (it ended at its target) makes the next move checked, and sent again once if it ends a step
  from its start without a halt of ours.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, TypeVar, Unpack

from alpaca_focuser.config import FocuserConfig
from alpaca_focuser.drivers import myfp2_protocol as mp
from alpaca_focuser.drivers.dialect import INIT_TRIES, Dialect, Features, LinkSettings, Quirks, Reading
from alpaca_focuser.drivers.protocol import DRAIN_TIME, Cancelled, Framer, NoController, ProtocolError
from alpaca_focuser.drivers.serial_engine import EngineOptions, SerialEngine
from alpaca_focuser.drivers.serial_link import SerialLink
from alpaca_focuser.errors import DriverError

log = logging.getLogger(__name__)

T = TypeVar("T")

HANDSHAKE_TRY = 0.3  # seconds per :03# while the board boots: a reply takes milliseconds once it listens
ARMED_HALT_STEPS = 2  # a move a stale ESP halt stopped ends this close to where it started
MOVE_START_GRACE = 0.5  # s: "stopped" where it started, this soon after :05#, is a move the loop has not begun
NO_PROBE_READING = -127.0  # DallasTemperature's "disconnected", which some builds pass on


@dataclass(frozen=True)
class MyFP2Options:
    """What the configuration asks of the controller. ``None`` leaves the controller's own setting alone."""

    max_step: int | None = None  # the server's MaxStep: must not exceed the firmware's (None: not checked)
    set_max_step: bool = False  # write max_step into the firmware as its MaxStep
    reverse: bool | None = None
    backlash_in: int | None = None  # steps, 0..255; 0 turns it off
    backlash_out: int | None = None
    step_mode: int | None = None
    temp_comp: bool | None = None
    server_backlash: int = 0  # the server's own backlash compensation, for the "both compensate" warning
    server_reverse: bool = False


class MyFP2Dialect(Dialect):
    name = "myfp2"
    title = "myFocuserPro2"
    features = Features(max_position=mp.MAX_POSITION, temperature=None, backlash=True, reverse=True)
    link_settings = LinkSettings(default_baud=mp.DEFAULT_BAUD, other_bauds=(mp.ESP32_BAUD,), resets_on_open=True,
                                 boot_time=2.0, handshake_timeout=4.0, moving_poll_interval=0.1,
                                 idle_poll_interval=1.0)
    quirks = Quirks(halt_when_idle=False, halt_answers=False, retarget_needs_halt=True)

    def __init__(self, options: MyFP2Options | None = None) -> None:
        super().__init__()
        self.options = options or MyFP2Options()
        self.board: str | None = None  # from :04#, when it answers in full
        self.firmware_max_step: int | None = None
        self.firmware_settings: dict[str, bool | int | None] = {}  # as read at the last connect (None: no reply)
        self._last_position: int | None = None
        self._move_target: int | None = None  # our move under way (None: none, or it has ended)
        self._move_start: int | None = None
        self._move_sent_at = 0.0
        self._halt_written = False  # a halt went out since the current move began
        self._halt_may_be_armed = False  # ESP: it may have arrived after the motor stopped, armed for the next
        self._check_move = False  # this move may meet such a halt
        self._probe_lost = False  # the probe read -127 last time

    def framer(self) -> Framer:
        return mp.ReplyFramer()

    def command_name(self, frame: bytes) -> str:
        try:
            return f"{mp.split_frame(frame)[0]:02d}"
        except ValueError:
            return super().command_name(frame)

    # --- connecting -----------------------------------------------------------------------------------------
    def handshake(self, link: SerialLink, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while not link.stop.is_set():
            remaining = deadline - time.monotonic()
            try:
                version = link.query(mp.encode_query(mp.GET_FIRMWARE_VERSION), mp.parse_firmware_version,
                                     max(0.1, min(HANDSHAKE_TRY, remaining)),
                                     matches=mp.answers(mp.GET_FIRMWARE_VERSION))
            except ProtocolError as exc:
                if time.monotonic() >= deadline:
                    raise NoController(f"no valid reply to :03# within {timeout:.1f} s ({exc})") from exc
                link.pause(DRAIN_TIME)  # garbage comes back at once: do not spin
                continue
            link.pause(DRAIN_TIME)
            link.flush()  # replies to the retried :03# still on their way
            self.firmware = version
            return version
        raise Cancelled()

    def initialise(self, link: SerialLink) -> Reading:
        self.board = self._board_name(link)
        self._check_max_step(link)
        self._apply_settings(link)
        probe = _optional(link, mp.GET_PROBE_PRESENT)
        if probe is None:  # firmware without :83#: compensation is available only with a probe
            probe = _optional(link, mp.GET_TEMP_COMP_AVAILABLE)
        temperature = None
        if probe:
            temperature = link.query_retry(mp.encode_query(mp.GET_TEMPERATURE), mp.parse_temperature, INIT_TRIES,
                                           matches=mp.answers(mp.GET_TEMPERATURE))
            if temperature <= NO_PROBE_READING:
                log.warning("%s: a probe was found at boot but reads %.0f: no temperature", link.label, temperature)
                temperature = None
        self.has_temperature = temperature is not None
        moving = link.query_retry(mp.encode_query(mp.GET_MOVING), mp.parse_moving, INIT_TRIES,
                                  matches=mp.answers(mp.GET_MOVING))
        position = link.query_retry(mp.encode_query(mp.GET_POSITION), mp.parse_position, INIT_TRIES,
                                    matches=mp.answers(mp.GET_POSITION))  # after :01#: a move may just end
        self._compare_with_before(link, position)
        self._last_position = position
        log.info("%s: board %s, MaxStep %d, %s", link.label, self.board or "unknown", self.firmware_max_step,
                 "temperature probe found" if self.has_temperature else "no temperature probe")
        return Reading(position=position, moving=moving, temperature=temperature)

    def _board_name(self, link: SerialLink) -> str | None:
        # One try: with a long board name the firmware's 32-byte buffer cuts off the reply's '#'.
        try:
            board, _ = link.query(mp.encode_query(mp.GET_FIRMWARE_NAME), mp.parse_firmware_name,
                                  matches=mp.answers(mp.GET_FIRMWARE_NAME))
            return board
        except ProtocolError as exc:
            log.info("%s: no board name from :04# (%s)", link.label, exc)
            return None

    def _check_max_step(self, link: SerialLink) -> None:
        """The firmware clamps every move to its MaxStep without a word, so the server's must not be larger."""
        wanted, opts = self.options.max_step, self.options
        firmware = link.query_retry(mp.encode_query(mp.GET_MAX_STEP), mp.parse_max_step, INIT_TRIES,
                                    matches=mp.answers(mp.GET_MAX_STEP))
        if opts.set_max_step and wanted is not None and firmware != max(wanted, mp.MIN_MAX_STEP):
            link.send(mp.encode_set_max_step(min(max(wanted, mp.MIN_MAX_STEP), mp.MAX_POSITION)))
            before, firmware = firmware, link.query_retry(mp.encode_query(mp.GET_MAX_STEP), mp.parse_max_step,
                                                          INIT_TRIES, matches=mp.answers(mp.GET_MAX_STEP))
            log.info("%s: MaxStep %d written (set_controller_max_step); the controller had %d and now reports %d",
                     link.label, wanted, before, firmware)
        if wanted is not None and wanted > firmware:
            fix = (f"the controller keeps {firmware} (its firmware allows no more): lower max_step to {firmware}"
                   if opts.set_max_step else
                   f"lower max_step to {firmware}, or set set_controller_max_step = true to write {wanted} into the "
                   "controller")
            raise DriverError(f"max_step {wanted} is above the myFocuserPro2 controller's own MaxStep {firmware}, "
                              f"which limits every move: {fix}")
        self.firmware_max_step = firmware
        self.features = replace(self.features, max_position=firmware)

    def _apply_settings(self, link: SerialLink) -> None:
        """Configured settings onto the controller (each read, written if different, read back); then the
        whole set read for the log and for the warnings about compensating twice."""
        o = self.options
        wanted: list[tuple[int, bool | int, bytes]] = []  # (query, value, frame that sets it)
        if o.reverse is not None:
            wanted.append((mp.GET_REVERSE, o.reverse, mp.encode_setting(mp.SET_REVERSE, o.reverse)))
        for steps, get_on, set_on, get_steps, set_steps in (
                (o.backlash_in, mp.GET_BACKLASH_IN_ENABLED, mp.SET_BACKLASH_IN_ENABLED, mp.GET_BACKLASH_IN_STEPS,
                 mp.SET_BACKLASH_IN_STEPS),
                (o.backlash_out, mp.GET_BACKLASH_OUT_ENABLED, mp.SET_BACKLASH_OUT_ENABLED,
                 mp.GET_BACKLASH_OUT_STEPS, mp.SET_BACKLASH_OUT_STEPS)):
            if steps is not None:
                if steps:
                    wanted.append((get_steps, steps, mp.encode_setting(set_steps, steps)))
                wanted.append((get_on, steps > 0, mp.encode_setting(set_on, steps > 0)))
        if o.step_mode is not None:
            wanted.append((mp.GET_STEP_MODE, o.step_mode, mp.encode_step_mode(o.step_mode)))
        if o.temp_comp is not None:
            wanted.append((mp.GET_TEMP_COMPENSATION, o.temp_comp,
                           mp.encode_setting(mp.SET_TEMP_COMPENSATION, o.temp_comp)))
        for command, value, frame in wanted:
            if _optional(link, command) == value:
                continue
            link.send(frame)
            now = _optional(link, command)
            if now != value:  # ignored (temperature compensation without a probe), or clamped (step mode)
                log.warning("%s: asked the controller for %s %s; it reports %s", link.label, _SETTING_NAMES[command],
                            value, now)
            else:
                log.info("%s: %s set to %s", link.label, _SETTING_NAMES[command], value)
        self.firmware_settings = s = {name: _optional(link, command) for command, name in _SETTING_NAMES.items()}
        log.info("%s: controller settings: %s", link.label, ", ".join(f"{k} {v}" for k, v in s.items()))
        firmware_backlash = [f"{way} {s[f'backlash {way} steps']}" for way in ("in", "out")
                             if s[f"backlash {way}"] and s[f"backlash {way} steps"]]
        if firmware_backlash and o.server_backlash:
            log.warning("%s: backlash is compensated twice: by the controller (%s steps) and by the server "
                        "(backlash_steps = %d); set controller_backlash_in/out = 0 or backlash_steps = 0", link.label,
                        " and ".join(firmware_backlash), o.server_backlash)
        if s["reverse"] and o.server_reverse:
            log.warning("%s: the direction is reversed twice, by the controller and by the server (reverse = "
                        "true): the two cancel out", link.label)
        if s["temperature compensation"]:
            log.warning("%s: the controller's own temperature compensation is on: it moves the focuser by itself "
                        "when the temperature changes", link.label)

    def _compare_with_before(self, link: SerialLink, position: int) -> None:
        """After a reconnect: say when the controller's position may not be where the focuser is."""
        target, self._move_target = self._move_target, None
        if target is not None and position != target:
            log.warning("%s: the connection was lost during a move to %d (last seen at %s) and the controller now "
                        "reports %d. A controller restarts when its port opens, and then reports the position it "
                        "last saved, wherever the focuser is: move it to a known position, or sync it.", link.label,
                        target, self._last_position, position)
        elif self._last_position is not None and position != self._last_position:
            log.warning("%s: the controller reports position %d; it was %d before the connection was lost. Using "
                        "the controller's.", link.label, position, self._last_position)

    # --- polls ----------------------------------------------------------------------------------------------
    def poll(self, link: SerialLink, moving: bool, last_position: int) -> Reading | None:
        last = last_position if self._last_position is None else self._last_position
        reading = self._poll_moving(link, last) if moving else self._poll_idle(link, last)
        if reading is not None and reading.position is not None:
            self._last_position = reading.position
        return reading

    def _poll_moving(self, link: SerialLink, last_position: int) -> Reading | None:
        position = self._position(link, last_position, True)
        moving = None if position is None else _poll(link, mp.GET_MOVING, mp.parse_moving)
        if moving is False and position is not None:
            # The move may have ended between :00# and :01#: the final position is the one read after :01#.
            position = self._position(link, position, True)
            if position is not None:
                moving = self._not_started(position) or self._move_ended(link, position)
        if position is None or moving is None:
            return None
        return Reading(position=position, moving=moving)

    def _poll_idle(self, link: SerialLink, last_position: int) -> Reading | None:
        position = self._position(link, last_position, False)
        if position is None:
            return None
        moving = None
        if position != last_position:
            # Something moved it (the firmware's temperature compensation, push buttons): follow it as a move.
            moving = _poll(link, mp.GET_MOVING, mp.parse_moving)
            if moving is None:
                return None
        temperature = self._temperature(link) if self.has_temperature else None
        return Reading(position=position, moving=moving, temperature=temperature)

    def _position(self, link: SerialLink, last: int, moving: bool) -> int | None:
        """``:00#``, read a second time when the first is not what the motion allows (idle: unchanged; our move:
        between the last position and the target). Replies vary in length and carry no checksum, so a reply
        whose tail was lost into line noise ending in '#' still parses ("P14" + "0#"): one such reply must never
        become the position. Two unexpected readings in a row mean the motor really is there (push buttons)."""
        position = _poll(link, mp.GET_POSITION, mp.parse_position)
        target = self._move_target
        if moving and target is not None:
            expected = position is not None and min(last, target) <= position <= max(last, target)
        else:
            expected = position == last
        if position is None or expected:
            return position
        again = _poll(link, mp.GET_POSITION, mp.parse_position)
        if again is not None and again != position:
            log.info("%s: position read as %d, then %d: the first taken for line noise", link.label, position, again)
        return again

    def _temperature(self, link: SerialLink) -> float | None:
        """The probe's reading; None for none, and for -127, the probe library's "disconnected" (the previous
        reading then stands, as the Nano firmware itself keeps it)."""
        value = _poll(link, mp.GET_TEMPERATURE, mp.parse_temperature)
        if value is not None and value <= NO_PROBE_READING:
            if not self._probe_lost:
                log.warning("%s: the temperature probe reads %.0f (disconnected?)", link.label, value)
            self._probe_lost = True
            return None
        self._probe_lost = False
        return value

    def _not_started(self, position: int) -> bool:
        """Our move reads as stopped where it started, just after it was sent: the ESP firmware's :05# only sets
        the target, and its loop raises the moving flag on a later pass. Not the end of the move (yet)."""
        return (self._move_target is not None and position == self._move_start != self._move_target
                and not self._halt_written and time.monotonic() - self._move_sent_at < MOVE_START_GRACE)

    def _move_ended(self, link: SerialLink, position: int) -> bool:
        """The motor reports stopped at ``position``: save it, unless a stale ESP halt cut our move short, which
        is sent again (once). Returns whether the motor moves again."""
        target, start = self._move_target, self._move_start
        check, self._check_move, self._move_target = self._check_move, False, None
        if self._halt_written:
            self._halt_written = False
            # Ended at its target in spite of the halt: the halt came after the last step and an ESP keeps it.
            self._halt_may_be_armed = target is not None and position == target
        elif (check and target is not None and start is not None and position != target
              and abs(position - start) <= ARMED_HALT_STEPS and not link.interrupted):
            log.warning("%s: the move to %d stopped at %d, a step from its start, without a halt: the controller "
                        "had kept an earlier halt (ESP firmware). Moving again.", link.label, target, position)
            link.send(mp.encode_move(target))
            self._move_target, self._move_start, self._move_sent_at = target, position, time.monotonic()
            return True
        link.send(mp.encode_save_settings())  # the position into EEPROM now: the next port open reboots the board
        return False

    # --- commands -------------------------------------------------------------------------------------------
    def move(self, link: SerialLink, target: int) -> bool:
        if link.interrupted:
            return False  # a Halt arrived before the move started: do not start it
        self._check_move, self._halt_may_be_armed = self._halt_may_be_armed, False
        self._move_target, self._move_start, self._halt_written = target, self._last_position, False
        link.send(mp.encode_move(target))
        self._move_sent_at = time.monotonic()
        if not self._check_move:  # (a stale halt may already have changed the target)
            reported = _poll(link, mp.GET_TARGET, mp.parse_target)
            if reported is not None and reported != target and not self._halt_written:
                log.warning("%s: the controller did not take the move to %d (its target reads %d): it ignores moves "
                            "while moving, and a Nano ignores them while its motor supply is off", link.label,
                            target, reported)
        return True

    def halt_frame(self) -> bytes:
        self._halt_written = True  # the engine calls this each time it writes a halt
        return mp.encode_halt()

    def sync(self, link: SerialLink, position: int) -> int | None:
        link.send(mp.encode_sync(position))
        reported = _poll(link, mp.GET_POSITION, mp.parse_position)
        if reported is not None:
            self._last_position = reported
            if reported == position:
                link.send(mp.encode_save_settings())
        return reported

    def description(self, port: str) -> str:
        # Board and firmware first: the Alpaca Description is cut at 64 characters, and by-id paths are long.
        parts = ["myFocuserPro2" + (f" {self.board}" if self.board else "")]
        if self.firmware:
            parts.append(f"firmware {self.firmware}")
        return ", ".join(parts) + f" on {port}"


#: The settings read at connect, by their query, with the names the log uses.
_SETTING_NAMES: dict[int, str] = {
    mp.GET_REVERSE: "reverse", mp.GET_BACKLASH_IN_ENABLED: "backlash in", mp.GET_BACKLASH_IN_STEPS:
    "backlash in steps", mp.GET_BACKLASH_OUT_ENABLED: "backlash out", mp.GET_BACKLASH_OUT_STEPS: "backlash out steps",
    mp.GET_STEP_MODE: "step mode", mp.GET_TEMP_COMPENSATION: "temperature compensation",
}


def _poll(link: SerialLink, command: int, parser: Callable[[bytes], T]) -> T | None:
    return link.poll(mp.encode_query(command), parser, matches=mp.answers(command))


def _optional(link: SerialLink, command: int) -> Any:
    """A query whose reply some builds get wrong (the ESP8266 330 answers :76# with '4'): None then."""
    try:
        return link.query_retry(mp.encode_query(command), mp.PARSERS[command], 2, matches=mp.answers(command))
    except ProtocolError as exc:
        log.info("%s: no valid reply to :%02d# (%s); ignoring", link.label, command, exc)
        return None


class MyFP2Driver(SerialEngine):
    """``driver = "myfp2"``: the serial engine speaking the myFocuserPro2 dialect (settings as in config.py)."""

    DIALECT = MyFP2Dialect

    @classmethod
    def from_config(cls, cfg: FocuserConfig) -> MyFP2Driver:
        assert cfg.port is not None  # guaranteed by config validation
        options = MyFP2Options(
            max_step=cfg.max_step, set_max_step=bool(cfg.set_controller_max_step), reverse=cfg.controller_reverse,
            backlash_in=cfg.controller_backlash_in, backlash_out=cfg.controller_backlash_out, step_mode=cfg.step_mode,
            temp_comp=cfg.controller_temp_comp, server_backlash=cfg.backlash_steps, server_reverse=cfg.reverse)
        return cls(cfg.port, baud=cfg.baud, read_timeout=cfg.read_timeout, name=cfg.name, options=options)

    def __init__(self, port: str, *, options: MyFP2Options | None = None, **engine: Unpack[EngineOptions]) -> None:
        """``engine``: SerialEngine's settings (baud, read_timeout, poll intervals, ...); unset ones take the
        dialect's defaults (9600 baud)."""
        self.myfp2 = MyFP2Dialect(options)
        super().__init__(port, self.myfp2, **engine)
