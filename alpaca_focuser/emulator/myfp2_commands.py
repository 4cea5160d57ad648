"""The myFocuserPro2 firmware's command switch: one handler per command number.

Each handler gets the firmware, the argument text after the two command characters, and the current time; it
returns the reply (``letter`` + value + ``#``) or None, as set commands never reply. Arguments are read the way the
firmware reads them (``serialcomms.h`` of myFP2 338, the ESP firmware's ``comms.h``): numbers with
``String.toInt()`` (``"abc"`` is 0: ``:05abc#`` moves to 0), on/off settings from the first character only
(``WorkString[0] - '0'``, kept as the byte it gives: ``:1201#`` turns coil power off), and queries ignore any
argument. The reply letters, clamps and "ignored while moving" rules follow the same sources
(``docs/protocols/myfp2.md``).

``well_formed(line)`` is the strict grammar a careful driver keeps to (two command digits, plain decimal
arguments, one digit for on/off settings, nothing after a query); the firmware records a line that breaks it in
``rejected_commands`` for the tests, and then runs it as the real firmware would.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable

from alpaca_focuser.emulator.framing import arduino_to_int

if TYPE_CHECKING:
    from alpaca_focuser.emulator.myfp2_firmware import MyFP2Firmware

FOCUSER_LOWER_LIMIT = 1024  # MaxStep is never set below this
STEP_DELAY_RANGE = (800, 12000)  # microseconds, ``:56#`` (the Nano's clamp)

Handler = Callable[["MyFP2Firmware", str, float], "str | None"]

#: The strict form of each command's argument (commands not listed take none).
_NUMBER = re.compile(r"[0-9]{1,7}")
_SIGNED = re.compile(r"-?[0-9]{1,7}")
_DIGIT = re.compile(r"[01]")
_NONE = re.compile(r"")
_ARGUMENT_FORMS: dict[int, re.Pattern[str]] = {
    **dict.fromkeys((5, 7, 15, 22, 30, 31, 56, 71, 77, 79), _NUMBER), 64: _SIGNED,
    **dict.fromkeys((12, 14, 23, 73, 75, 88), _DIGIT),
}


def well_formed(line: str) -> bool:
    """Whether ``line`` (between ``:`` and ``#``) is a known command in its strict form."""
    name, arg = line[:2], line[2:]
    if len(name) != 2 or not (name.isascii() and name.isdigit()) or int(name) not in COMMANDS:
        return False
    return _ARGUMENT_FORMS.get(int(name), _NONE).fullmatch(arg) is not None


def first_character(fw: "MyFP2Firmware", arg: str) -> int:
    """``WorkString[0] - '0'`` as the byte the firmware stores. Past the end of the String the Nano reads 0; the
    ESP reads the ``#`` it put back on the line (``receiveString[3]``)."""
    first = arg[:1] or ("#" if fw.profile.ignores_line_endings else "\0")
    return (ord(first) - ord("0")) & 0xFF


def _byte(arg: str) -> int:
    return arduino_to_int(arg) & 0xFF  # the firmware keeps a byte


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


# --- handler factories --------------------------------------------------------------------------------------------
def _get(letter: str, value: Callable[["MyFP2Firmware", float], int]) -> Handler:
    """A query: ``letter`` + the value as a decimal integer (booleans as 0/1) + ``#``."""
    def handler(fw: "MyFP2Firmware", arg: str, now: float) -> str:
        return f"{letter}{int(value(fw, now))}#"
    return handler


def _text(reply: Callable[["MyFP2Firmware"], str]) -> Handler:
    def handler(fw: "MyFP2Firmware", arg: str, now: float) -> str:
        return reply(fw)
    return handler


def _set(field: str, read: Callable[["MyFP2Firmware", str], object]) -> Handler:
    """A setting stored as read; every setting marks the EEPROM copy stale (``writenow = 1``)."""
    def handler(fw: "MyFP2Firmware", arg: str, now: float) -> None:
        setattr(fw.settings, field, read(fw, arg))
        fw.mark_changed(now)
    return handler


def _constant(value: object) -> Callable[["MyFP2Firmware", str], object]:
    return lambda fw, arg: value


# --- commands with rules of their own -----------------------------------------------------------------------------
def _accepts_move(fw: "MyFP2Firmware", now: float) -> bool:
    """Moves are ignored while moving (and, on the Nano, without 12 V): a retarget is halt, wait, move."""
    return not fw.moving_at(now) and fw.stepper_power


def _move(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    if _accepts_move(fw, now):
        fw.mark_changed(now)
        fw.start_move(_clamp(arduino_to_int(arg), 0, fw.settings.max_step), now)  # clamped, not refused


def _move_relative(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    if _accepts_move(fw, now):
        fw.start_move(_clamp(fw.position_at(now) + arduino_to_int(arg), 0, fw.settings.max_step), now)


def _home(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    if _accepts_move(fw, now):
        fw.start_move(0, now)


def _halt(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    fw.halt(now)


def _temperature(fw: "MyFP2Firmware", arg: str, now: float) -> str:
    return f"Z{fw.reported_temperature:.{fw.profile.temperature_decimals}f}#"


def _set_max_step(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    value = min(arduino_to_int(arg), fw.profile.max_step_limit)
    fw.settings.max_step = max(value, fw.position_at(now), FOCUSER_LOWER_LIMIT)  # never below the position
    fw.mark_changed(now)


def _set_reverse(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    value = first_character(fw, arg)
    if not fw.moving_at(now):
        fw.settings.reverse = value
        fw.mark_changed(now)


def _set_temp_coefficient(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    value = arduino_to_int(arg)
    fw.settings.temp_coefficient = value & 0xFF if fw.profile.byte_temp_coefficient else _clamp(value, 0, 1000)
    fw.mark_changed(now)


def _set_temp_compensation(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    value = first_character(fw, arg)
    if fw.probe_found:  # ignored without a probe
        fw.settings.temp_compensation = value
        fw.mark_changed(now)


def _set_step_mode(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    value = arduino_to_int(arg)
    fw.settings.step_mode = 1 if value <= 1 else min(value, fw.profile.max_step_mode)
    fw.mark_changed(now)


def _sync(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    value = _clamp(arduino_to_int(arg), 0, fw.settings.max_step)
    if not fw.moving_at(now):
        fw.sync(value, now)


def _save_now(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    if not fw.moving_at(now):
        fw.save(now)


def _set_step_delay(fw: "MyFP2Firmware", arg: str, now: float) -> None:
    fw.settings.step_delay_us = _clamp(arduino_to_int(arg), *STEP_DELAY_RANGE)
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
    12: _set("coil_power", first_character),
    13: _get("R", lambda fw, now: fw.settings.reverse),
    14: _set_reverse,
    15: _set("motor_speed", lambda fw, arg: arduino_to_int(arg) & 3),
    16: _set("celsius", _constant(True)),
    17: _set("celsius", _constant(False)),
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
    71: _set("delay_after_move_ms", lambda fw, arg: _byte(arg)),
    72: _get("3", lambda fw, now: fw.settings.delay_after_move_ms),
    73: _set("backlash_in_enabled", first_character),
    74: _get("4", lambda fw, now: fw.settings.backlash_in_enabled),
    75: _set("backlash_out_enabled", first_character),
    76: _get("5", lambda fw, now: fw.settings.backlash_out_enabled),
    77: _set("backlash_in_steps", lambda fw, arg: _byte(arg)),
    78: _get("6", lambda fw, now: fw.settings.backlash_in_steps),
    79: _set("backlash_out_steps", lambda fw, arg: _byte(arg)),
    80: _get("7", lambda fw, now: fw.settings.backlash_out_steps),
    83: _get("c", lambda fw, now: fw.probe_found),
    87: _get("k", lambda fw, now: fw.settings.tc_direction),
    88: _set("tc_direction", first_character),
    89: _get("9", lambda fw, now: fw.stepper_power),
}
