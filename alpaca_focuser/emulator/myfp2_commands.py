"""The myFocuserPro2 firmware's command switch: one handler per two-digit command number.

Each handler gets the firmware, the argument text after the two digits, and the current time; it returns the
reply (``letter`` + value + ``#``) or None, as set commands never reply. Arguments are parsed strictly (plain
decimal digits, one digit for on/off settings, nothing after a query); anything else raises Malformed and the
firmware records the frame as rejected. The reply letters, clamps and "ignored while moving" rules follow
``serialcomms.h`` of myFP2 338 and the ESP firmwares' serial command handlers (``docs/protocols/myfp2.md``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from alpaca_focuser.emulator.myfp2_firmware import MyFP2Firmware

FOCUSER_LOWER_LIMIT = 1024  # MaxStep is never set below this
STEP_DELAY_RANGE = (800, 12000)  # microseconds, ``:56#`` (the Nano's clamp)

_UINT = re.compile(r"[0-9]{1,7}")
_SINT = re.compile(r"-?[0-9]{1,7}")

Handler = Callable[["MyFP2Firmware", str, float], "str | None"]


class Malformed(Exception):
    """The strict parser refuses the argument."""


def _none(arg: str) -> None:
    if arg:
        raise Malformed


def _uint(arg: str) -> int:
    if not _UINT.fullmatch(arg):
        raise Malformed
    return int(arg)


def _bit(arg: str) -> bool:
    if arg not in ("0", "1"):
        raise Malformed
    return arg == "1"


def _byte(arg: str) -> int:
    return _uint(arg) & 0xFF  # the firmware keeps a byte


def _no_argument(value: bool) -> Callable[[str], bool]:
    def parse(arg: str) -> bool:
        _none(arg)
        return value
    return parse


# --- handler factories --------------------------------------------------------------------------------------------
def _get(letter: str, value: Callable[["MyFP2Firmware", float], int]) -> Handler:
    """A query: ``letter`` + the value as a decimal integer (booleans as 0/1) + ``#``."""
    def handler(fw: "MyFP2Firmware", arg: str, now: float) -> str:
        _none(arg)
        return f"{letter}{int(value(fw, now))}#"
    return handler


def _text(reply: Callable[["MyFP2Firmware"], str]) -> Handler:
    def handler(fw: "MyFP2Firmware", arg: str, now: float) -> str:
        _none(arg)
        return reply(fw)
    return handler


def _set(field: str, parse: Callable[[str], object]) -> Handler:
    """A setting stored as parsed; every setting marks the EEPROM copy stale (``writenow = 1``)."""
    def handler(fw: "MyFP2Firmware", arg: str, now: float) -> None:
        setattr(fw.settings, field, parse(arg))
        fw.mark_changed(now)
    return handler


# --- commands with rules of their own -----------------------------------------------------------------------------
def _accepts_move(fw: "MyFP2Firmware", now: float) -> bool:
    """Moves are ignored while moving (and, on the Nano, without 12 V): a retarget is halt, wait, move."""
    return not fw.moving_at(now) and fw.stepper_power


def _move(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    target = _uint(arg)
    if _accepts_move(fw, now):
        fw.mark_changed(now)
        fw.start_move(min(target, fw.settings.max_step), now)  # clamped, not refused


def _move_relative(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    if not _SINT.fullmatch(arg):
        raise Malformed
    if _accepts_move(fw, now):
        fw.start_move(max(0, min(fw.position_at(now) + int(arg), fw.settings.max_step)), now)


def _home(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    _none(arg)
    if _accepts_move(fw, now):
        fw.start_move(0, now)


def _halt(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    _none(arg)
    fw.halt(now)


def _temperature(fw: "MyFP2Firmware", arg: str, now: float) -> str:
    _none(arg)
    return f"Z{fw.reported_temperature:.{fw.profile.temperature_decimals}f}#"


def _set_max_step(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    value = min(_uint(arg), fw.profile.max_step_limit)
    fw.settings.max_step = max(value, fw.position_at(now), FOCUSER_LOWER_LIMIT)  # never below the position
    fw.mark_changed(now)


def _set_reverse(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    value = _bit(arg)
    if not fw.moving_at(now):
        fw.settings.reverse = value
        fw.mark_changed(now)


def _set_temp_coefficient(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    value = _uint(arg)
    fw.settings.temp_coefficient = value & 0xFF if fw.profile.byte_temp_coefficient else min(value, 1000)
    fw.mark_changed(now)


def _set_temp_compensation(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    value = _bit(arg)
    if fw.probe_found:  # ignored without a probe
        fw.settings.temp_compensation = value
        fw.mark_changed(now)


def _set_step_mode(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    value = _uint(arg)
    fw.settings.step_mode = 1 if value <= 1 else min(value, fw.profile.max_step_mode)
    fw.mark_changed(now)


def _sync(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    value = min(_uint(arg), fw.settings.max_step)
    if not fw.moving_at(now):
        fw.sync(value, now)


def _save_now(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    _none(arg)
    if not fw.moving_at(now):
        fw.save(now)


def _set_step_delay(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    fw.settings.step_delay_us = max(STEP_DELAY_RANGE[0], min(_uint(arg), STEP_DELAY_RANGE[1]))
    fw.mark_changed(now)


def _firmware_name(fw: "MyFP2Firmware") -> str:
    return f"F{fw.profile.board_name}\r\n{fw.profile.firmware_version}#"


COMMANDS: dict[int, Handler] = {
    0: _get("P", lambda fw, now: fw.position_at(now)),
    1: _get("I", lambda fw, now: fw.moving_at(now)),
    2: _text(lambda fw: "EOK#"),
    3: _text(lambda fw: f"F{fw.profile.firmware_version}#"),
    4: _text(_firmware_name),
    5: _move,
    6: _temperature,
    7: _set_max_step,
    8: _get("M", lambda fw, now: fw.settings.max_step),
    10: _get("Y", lambda fw, now: fw.settings.max_step),
    11: _get("O", lambda fw, now: fw.settings.coil_power),
    12: _set("coil_power", _bit),
    13: _get("R", lambda fw, now: fw.settings.reverse),
    14: _set_reverse,
    15: _set("motor_speed", lambda arg: _uint(arg) & 3),
    16: _set("celsius", _no_argument(True)),
    17: _set("celsius", _no_argument(False)),
    22: _set_temp_coefficient,
    23: _set_temp_compensation,
    24: _get("1", lambda fw, now: fw.settings.temp_compensation),
    25: _get("A", lambda fw, now: fw.probe_found),
    26: _get("B", lambda fw, now: fw.settings.temp_coefficient),
    27: _halt,
    28: _home,
    29: _get("S", lambda fw, now: fw.settings.step_mode),
    30: _set_step_mode,
    31: _sync,
    39: _get("N", lambda fw, now: fw.target),
    43: _get("C", lambda fw, now: fw.settings.motor_speed),
    48: _save_now,
    55: _get("0", lambda fw, now: fw.settings.step_delay_us),
    56: _set_step_delay,
    64: _move_relative,
    71: _set("delay_after_move_ms", _byte),
    72: _get("3", lambda fw, now: fw.settings.delay_after_move_ms),
    73: _set("backlash_in_enabled", _bit),
    74: _get("4", lambda fw, now: fw.settings.backlash_in_enabled),
    75: _set("backlash_out_enabled", _bit),
    76: _get("5", lambda fw, now: fw.settings.backlash_out_enabled),
    77: _set("backlash_in_steps", _byte),
    78: _get("6", lambda fw, now: fw.settings.backlash_in_steps),
    79: _set("backlash_out_steps", _byte),
    80: _get("7", lambda fw, now: fw.settings.backlash_out_steps),
    83: _get("c", lambda fw, now: fw.probe_found),
    87: _get("k", lambda fw, now: fw.settings.tc_direction),
    88: _set("tc_direction", lambda arg: int(_bit(arg))),
    89: _get("9", lambda fw, now: fw.stepper_power),
}
