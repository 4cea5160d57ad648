"""The myFocuserPro2 serial protocol (Robert Brown's firmware family): a pure codec and a reply framer.

A request is ``:`` + two decimal digits (the command number) + an optional decimal argument + ``#``
(``:05123#`` moves to 123). A reply is one character naming the query, a value and ``#`` (``P123#``,
``I1#``, ``Z20.00#``); set and action commands never reply. The protocol note with sources is
``docs/protocols/myfp2.md``. No port I/O and no threads: bytes in, values out, tested on bytes.

Strict on shape: the reply letter must be the one the query asks for (that is how a late or stray reply is
caught), numbers must be plain decimal digits of a bounded length, and a garbled or partial reply raises
ProtocolError instead of becoming a position.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Callable

from alpaca_focuser.drivers.protocol import ProtocolError

TERMINATOR = b"#"
#: Arduino Nano builds; ESP32 builds with a serial (LOCALSERIAL) mode use ESP32_BAUD.
DEFAULT_BAUD = 9600
ESP32_BAUD = 115200
#: The documented upper bound of MaxStep (firmware clamps lower: 400000 on the Nano, 500000 on ESP32).
MAX_POSITION = 2_000_000
#: The firmware raises any smaller MaxStep to this (FOCUSERLOWERLIMIT).
MIN_MAX_STEP = 1024
#: The firmware formats every reply in a 32-byte buffer (snprintf), so no valid reply exceeds 31 bytes.
MAX_REPLY_LENGTH = 32
STEP_MODES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MOTOR_SPEED_SLOW, MOTOR_SPEED_MEDIUM, MOTOR_SPEED_FAST = 0, 1, 2
TC_DIRECTION_IN, TC_DIRECTION_OUT = 0, 1
#: What ``:06#`` answers when no probe was found at boot: a constant, not a measurement. Ask GET_PROBE_PRESENT.
NO_PROBE_TEMPERATURE = 20.0
#: Accepted temperature replies (C). -127 is the DS18B20 library's "disconnected" value, reported by some
#: builds (INDIGO treats it as no probe); anything outside is garbage.
TEMPERATURE_RANGE = (-128.0, 150.0)

# --- command numbers (the two digits after ':') ----------------------------------------------------------------
GET_POSITION, GET_MOVING, GET_STATUS, GET_FIRMWARE_VERSION, GET_FIRMWARE_NAME = 0, 1, 2, 3, 4
MOVE_TO = 5  # ignored while moving; target clamped to 0..MaxStep
GET_TEMPERATURE = 6
SET_MAX_STEP, GET_MAX_STEP, GET_MAX_INCREMENT = 7, 8, 10
GET_COIL_POWER, SET_COIL_POWER = 11, 12
GET_REVERSE, SET_REVERSE = 13, 14  # set: ignored while moving
SET_MOTOR_SPEED, GET_MOTOR_SPEED = 15, 43
SET_TEMP_COEFFICIENT, GET_TEMP_COEFFICIENT = 22, 26
SET_TEMP_COMPENSATION, GET_TEMP_COMPENSATION = 23, 24  # set: ignored without a probe
GET_TEMP_COMP_AVAILABLE = 25
HALT = 27
GET_STEP_MODE, SET_STEP_MODE = 29, 30
SYNC_POSITION = 31  # ignored while moving; clamped to 0..MaxStep
GET_TARGET = 39
SAVE_SETTINGS = 48
GET_STEP_DELAY = 55
SET_DELAY_AFTER_MOVE, GET_DELAY_AFTER_MOVE = 71, 72
SET_BACKLASH_IN_ENABLED, GET_BACKLASH_IN_ENABLED = 73, 74
SET_BACKLASH_OUT_ENABLED, GET_BACKLASH_OUT_ENABLED = 75, 76
SET_BACKLASH_IN_STEPS, GET_BACKLASH_IN_STEPS = 77, 78
SET_BACKLASH_OUT_STEPS, GET_BACKLASH_OUT_STEPS = 79, 80
GET_PROBE_PRESENT = 83
GET_TC_DIRECTION, SET_TC_DIRECTION = 87, 88

#: The first character of each query's reply. Note 03 and 04 both answer 'F'.
REPLY_LETTERS: dict[int, str] = {
    GET_POSITION: "P", GET_MOVING: "I", GET_STATUS: "E", GET_FIRMWARE_VERSION: "F", GET_FIRMWARE_NAME: "F",
    GET_TEMPERATURE: "Z", GET_MAX_STEP: "M", GET_MAX_INCREMENT: "Y", GET_COIL_POWER: "O", GET_REVERSE: "R",
    GET_TEMP_COMPENSATION: "1", GET_TEMP_COMP_AVAILABLE: "A", GET_TEMP_COEFFICIENT: "B", GET_STEP_MODE: "S",
    GET_TARGET: "N", GET_MOTOR_SPEED: "C", GET_STEP_DELAY: "0", GET_DELAY_AFTER_MOVE: "3",
    GET_BACKLASH_IN_ENABLED: "4", GET_BACKLASH_OUT_ENABLED: "5", GET_BACKLASH_IN_STEPS: "6",
    GET_BACKLASH_OUT_STEPS: "7", GET_PROBE_PRESENT: "c", GET_TC_DIRECTION: "k",
}
#: Commands the firmware never answers: wait for nothing after writing them.
SILENT_COMMANDS = frozenset({
    MOVE_TO, SET_MAX_STEP, SET_COIL_POWER, SET_REVERSE, SET_MOTOR_SPEED, SET_TEMP_COEFFICIENT,
    SET_TEMP_COMPENSATION, HALT, SET_STEP_MODE, SYNC_POSITION, SAVE_SETTINGS, SET_DELAY_AFTER_MOVE,
    SET_BACKLASH_IN_ENABLED, SET_BACKLASH_OUT_ENABLED, SET_BACKLASH_IN_STEPS, SET_BACKLASH_OUT_STEPS,
    SET_TC_DIRECTION,
})

_ARGUMENT = re.compile(r"[0-9]{1,9}")
_DIGITS = re.compile(r"[0-9]{1,7}")
_TEMPERATURE = re.compile(r"-?[0-9]{1,3}(\.[0-9]{1,4})?")
_VERSION = re.compile(r"[0-9A-Za-z._-]{1,16}")
_NAME = re.compile(r"([\x21-\x7e]{1,28})(\r\n|\n\r|\r|\n)([0-9A-Za-z._-]{1,16})")


# --- encoders -------------------------------------------------------------------------------------------------
def encode_command(command: int, argument: str = "") -> bytes:
    """``encode_command(5, "123")`` -> ``b":05123#"``. The argument is decimal digits only: the firmware reads
    it with ``String.toInt()``, which turns anything else into 0 (a garbled move goes to position 0)."""
    if not isinstance(command, int) or isinstance(command, bool) or not 0 <= command <= 99:
        raise ValueError(f"myFocuserPro2 command must be an integer in 0..99, got {command!r}")
    if not isinstance(argument, str) or (argument and not _ARGUMENT.fullmatch(argument)):
        raise ValueError(f"myFocuserPro2 argument must be 1-9 decimal digits, got {argument!r}")
    return f":{command:02d}{argument}#".encode("ascii")


def encode_query(command: int) -> bytes:
    """A query that answers (``:00#``); refuses set and action commands, which never reply."""
    if command not in REPLY_LETTERS:
        raise ValueError(f"command {command!r} is not a myFocuserPro2 query")
    return encode_command(command)


def _number(value: int, low: int, high: int, what: str) -> str:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer in {low}..{high}, got {value!r}")
    return str(value)


def _bit(on: object, what: str) -> str:
    # One digit only: the Nano firmware reads just the first character (":1201#" would mean 0).
    if not isinstance(on, bool):
        raise ValueError(f"{what} must be True or False, got {on!r}")
    return "1" if on else "0"


def encode_move(target: int) -> bytes:
    """``:05xxx#``: move to an absolute position. The firmware ignores it while moving and clamps the target
    to 0..MaxStep without saying so."""
    return encode_command(MOVE_TO, _number(target, 0, MAX_POSITION, "target"))


def encode_halt() -> bytes:
    """``:27#``: stop. On ESP firmware a halt sent while idle stays armed and stops the next move."""
    return encode_command(HALT)


def encode_sync(position: int) -> bytes:
    """``:31xxx#``: declare the current position without moving (ignored while moving, clamped to MaxStep)."""
    return encode_command(SYNC_POSITION, _number(position, 0, MAX_POSITION, "position"))


def encode_set_max_step(max_step: int) -> bytes:
    """``:07xxx#``: the firmware keeps it within its own limits and never below the current position."""
    return encode_command(SET_MAX_STEP, _number(max_step, MIN_MAX_STEP, MAX_POSITION, "max step"))


#: What each setting command accepts: ``bool`` (sent as one digit: the Nano reads only the first character, so
#: ``:1201#`` would mean 0) or an inclusive integer range. Byte-sized settings are kept within 0-255 because
#: the firmware stores ``value & 255`` (300 backlash steps would become 44).
SETTING_ARGUMENTS: dict[int, type[bool] | tuple[int, int]] = {
    SET_REVERSE: bool, SET_COIL_POWER: bool, SET_TEMP_COMPENSATION: bool,
    SET_BACKLASH_IN_ENABLED: bool, SET_BACKLASH_OUT_ENABLED: bool,
    SET_MOTOR_SPEED: (MOTOR_SPEED_SLOW, MOTOR_SPEED_FAST), SET_TEMP_COEFFICIENT: (0, 255),
    SET_TC_DIRECTION: (TC_DIRECTION_IN, TC_DIRECTION_OUT), SET_BACKLASH_IN_STEPS: (0, 255),
    SET_BACKLASH_OUT_STEPS: (0, 255), SET_DELAY_AFTER_MOVE: (0, 255),
}


def encode_setting(command: int, value: bool | int) -> bytes:
    """A setting: ``encode_setting(SET_REVERSE, True)`` -> ``b":141#"``, ``(SET_BACKLASH_IN_STEPS, 50)`` ->
    ``b":7750#"``. Settings never reply; the firmware ignores SET_REVERSE while moving and
    SET_TEMP_COMPENSATION without a probe, so read them back."""
    accepted = SETTING_ARGUMENTS.get(command)
    if accepted is None:
        raise ValueError(f"command {command!r} is not a myFocuserPro2 setting")
    what = f"setting {command:02d}"
    if isinstance(accepted, tuple):
        return encode_command(command, _number(value, accepted[0], accepted[1], what))
    return encode_command(command, _bit(value, what))


def encode_step_mode(mode: int) -> bytes:
    """``:30x#``: 1 full, 2 half, ... 256; the board clamps to what its driver chip can do (ULN2003: 1-2)."""
    if mode not in STEP_MODES or isinstance(mode, bool):
        raise ValueError(f"step mode must be one of {STEP_MODES}, got {mode!r}")
    return encode_command(SET_STEP_MODE, str(mode))


def encode_save_settings() -> bytes:
    """``:48#``: write the settings and position to EEPROM now instead of after the quiet period."""
    return encode_command(SAVE_SETTINGS)


# --- decoders -------------------------------------------------------------------------------------------------
def reply_letter(reply: bytes) -> str:
    """The character that names the query a reply answers ('' for an empty frame)."""
    return bytes(reply[:1]).decode("latin-1")


def _body(reply: bytes, letter: str, what: str) -> str:
    """The reply between its letter and ``#``, after checking the letter, the terminator and the length."""
    if not isinstance(reply, (bytes, bytearray)):
        raise ProtocolError(f"{what}: reply must be bytes, got {type(reply).__name__}")
    raw = bytes(reply)
    if len(raw) > MAX_REPLY_LENGTH:
        raise ProtocolError(f"{what}: reply {raw[:MAX_REPLY_LENGTH]!r}... is {len(raw)} bytes long")
    if not raw.endswith(TERMINATOR):
        raise ProtocolError(f"{what}: reply {raw!r} is not terminated by '#'")
    if raw[:1] != letter.encode("ascii"):
        raise ProtocolError(f"{what}: reply {raw!r} does not start with {letter!r} (a reply to another command?)")
    if len(raw) < 3:
        raise ProtocolError(f"{what}: reply {raw!r} has no value")
    return raw[1:-1].decode("latin-1")


def _integer(reply: bytes, letter: str, what: str, low: int, high: int) -> int:
    text = _body(reply, letter, what)
    if not _DIGITS.fullmatch(text):
        raise ProtocolError(f"{what}: reply {bytes(reply)!r} is not 1-7 decimal digits")
    value = int(text)
    if not low <= value <= high:
        raise ProtocolError(f"{what}: reply {bytes(reply)!r} is outside {low}..{high}")
    return value


def _flag(reply: bytes, letter: str, what: str) -> bool:
    text = _body(reply, letter, what)
    if text not in ("0", "1", "00", "01"):  # documented as "01"/"00", sent by the firmware as "1"/"0"
        raise ProtocolError(f"{what}: reply {bytes(reply)!r} is neither 0 nor 1")
    return text.endswith("1")


def parse_position(reply: bytes) -> int:
    """``:00#`` -> ``P12345#``."""
    return _integer(reply, "P", "position", 0, MAX_POSITION)


def parse_target(reply: bytes) -> int:
    """``:39#`` -> ``N12345#``: the target of the current (or last) move."""
    return _integer(reply, "N", "target", 0, MAX_POSITION)


def parse_moving(reply: bytes) -> bool:
    """``:01#`` -> ``I1#`` / ``I0#`` (``I01#`` / ``I00#`` in the command-set document)."""
    return _flag(reply, "I", "moving")


def parse_temperature(reply: bytes) -> float:
    """``:06#`` -> ``Z20.00#`` (Nano: 2 decimals; ESP serial builds: 3). Without a probe this is the constant
    NO_PROBE_TEMPERATURE: check GET_PROBE_PRESENT before showing it."""
    text = _body(reply, "Z", "temperature")
    if not _TEMPERATURE.fullmatch(text):
        raise ProtocolError(f"temperature: reply {bytes(reply)!r} is not a decimal number")
    value = float(text)
    if not (math.isfinite(value) and TEMPERATURE_RANGE[0] <= value <= TEMPERATURE_RANGE[1]):
        raise ProtocolError(f"temperature: reply {bytes(reply)!r} is outside {TEMPERATURE_RANGE}")
    return value


def parse_max_step(reply: bytes) -> int:
    """``:08#`` -> ``M10000#``."""
    return _integer(reply, "M", "max step", 0, MAX_POSITION)


def parse_max_increment(reply: bytes) -> int:
    """``:10#`` -> ``Y10000#`` (the firmware answers its MaxStep)."""
    return _integer(reply, "Y", "max increment", 0, MAX_POSITION)


def parse_firmware_version(reply: bytes) -> str:
    """``:03#`` -> ``F338#`` -> ``"338"``."""
    text = _body(reply, "F", "firmware version")
    if not _VERSION.fullmatch(text):
        raise ProtocolError(f"firmware version: reply {bytes(reply)!r} is not a version")
    return text


def parse_firmware_name(reply: bytes) -> tuple[str, str]:
    """``:04#`` -> ``F<board>\\r\\n<version>#`` -> ``(board, version)``. The only reply with a line break in it;
    with a long board name the firmware's 32-byte buffer cuts off the ``#``, so prefer GET_FIRMWARE_VERSION."""
    match = _NAME.fullmatch(_body(reply, "F", "firmware name"))
    if match is None:
        raise ProtocolError(f"firmware name: reply {bytes(reply)!r} is not <board> <line break> <version>")
    return match.group(1), match.group(3)


def parse_status(reply: bytes) -> bool:
    """``:02#`` -> ``EOK#``: True, or ProtocolError."""
    if _body(reply, "E", "status") != "OK":
        raise ProtocolError(f"status: reply {bytes(reply)!r} is not EOK#")
    return True


def parse_probe_present(reply: bytes) -> bool:
    """``:83#`` -> ``c1#`` / ``c0#``: was a temperature probe found at boot."""
    return _flag(reply, "c", "probe present")


#: Settings queries: command -> (reply letter, what, integer range, or None for an on/off flag). Several letters
#: are digits: ``:24#`` -> ``11#`` (compensation on), ``:78#`` -> ``650#`` (50 backlash steps).
SETTING_REPLIES: dict[int, tuple[str, str, tuple[int, int] | None]] = {
    GET_TEMP_COMP_AVAILABLE: ("A", "temperature compensation available", None),
    GET_TEMP_COMPENSATION: ("1", "temperature compensation", None),
    GET_TEMP_COEFFICIENT: ("B", "temperature coefficient", (0, 9999)),  # the Nano allows up to 1000
    GET_TC_DIRECTION: ("k", "temperature compensation direction", (TC_DIRECTION_IN, TC_DIRECTION_OUT)),
    GET_COIL_POWER: ("O", "coil power", None),
    GET_REVERSE: ("R", "reverse", None),
    GET_MOTOR_SPEED: ("C", "motor speed", (0, 3)),  # stored as value & 3, so 3 is possible
    GET_STEP_DELAY: ("0", "step delay", (0, 99999)),  # microseconds between steps at fast speed
    GET_DELAY_AFTER_MOVE: ("3", "delay after move", (0, 255)),
    GET_BACKLASH_IN_ENABLED: ("4", "backlash in enabled", None),
    GET_BACKLASH_OUT_ENABLED: ("5", "backlash out enabled", None),  # the ESP8266 330 build wrongly answers '4'
    GET_BACKLASH_IN_STEPS: ("6", "backlash in steps", (0, 255)),
    GET_BACKLASH_OUT_STEPS: ("7", "backlash out steps", (0, 255)),
}


def parse_setting(command: int, reply: bytes) -> bool | int:
    """The reply to a settings query: a bool for on/off settings (``O1#`` -> True), else an integer."""
    letter, what, bounds = SETTING_REPLIES[command]
    if bounds is None:
        return _flag(reply, letter, what)
    return _integer(reply, letter, what, *bounds)


def parse_step_mode(reply: bytes) -> int:
    """``:29#`` -> ``S2#``."""
    value = _integer(reply, "S", "step mode", 1, 256)
    if value not in STEP_MODES:
        raise ProtocolError(f"step mode: reply {bytes(reply)!r} is not one of {STEP_MODES}")
    return value


#: The parser for each query's reply.
PARSERS: dict[int, Callable[[bytes], object]] = {
    GET_POSITION: parse_position, GET_MOVING: parse_moving, GET_STATUS: parse_status,
    GET_FIRMWARE_VERSION: parse_firmware_version, GET_FIRMWARE_NAME: parse_firmware_name,
    GET_TEMPERATURE: parse_temperature, GET_MAX_STEP: parse_max_step, GET_MAX_INCREMENT: parse_max_increment,
    GET_STEP_MODE: parse_step_mode, GET_TARGET: parse_target, GET_PROBE_PRESENT: parse_probe_present,
    **{command: functools.partial(parse_setting, command) for command in SETTING_REPLIES},
}


def parse_reply(command: int, reply: bytes) -> object:
    """Parse the reply to query ``command`` with its own parser (ValueError for a command that never replies)."""
    parser = PARSERS.get(command)
    if parser is None:
        raise ValueError(f"command {command!r} has no reply to parse")
    return parser(reply)


# --- matching replies to requests ---------------------------------------------------------------------------------
def split_frame(frame: bytes) -> tuple[int, str]:
    """``b":05123#"`` -> ``(5, "123")``; ValueError for anything ``encode_command`` would not make."""
    match = _FRAME.fullmatch(bytes(frame)) if isinstance(frame, (bytes, bytearray)) else None
    if match is None:
        raise ValueError(f"{frame!r} is not a myFocuserPro2 request")
    return int(match.group(1)), match.group(2).decode("ascii")


def reply_matches(frame: bytes, reply: bytes) -> bool:
    """Whether ``reply`` can answer the request ``frame``: its query's parser accepts it. Always False for
    set and action commands (halt included), which never reply, so anything arriving after them is stray."""
    command, _ = split_frame(frame)
    parser = PARSERS.get(command)
    if parser is None:
        return False
    try:
        parser(reply)
    except ProtocolError:
        return False
    return True


def answers(command: int) -> Callable[[bytes], bool]:
    """A ``matches`` test for a link: True for a frame with ``command``'s reply letter, which is then parsed
    strictly; a frame with another letter answers another query (a late duplicate) and is skipped."""
    letter = REPLY_LETTERS[command]
    return lambda reply: reply_letter(reply) == letter


def identify_reply(reply: bytes) -> int | None:
    """The query a reply answers, for logging a stray one: ``P12#`` -> GET_POSITION, ``F338#`` ->
    GET_FIRMWARE_VERSION, ``FULN\\r\\n338#`` -> GET_FIRMWARE_NAME; None when no query's parser accepts it."""
    letter = reply_letter(reply)
    for command in (command for command, own in REPLY_LETTERS.items() if own == letter):
        try:
            PARSERS[command](reply)
            return command
        except ProtocolError:
            pass
    return None


_FRAME = re.compile(rb":([0-9]{2})([0-9]{0,9})#")


# --- framing ------------------------------------------------------------------------------------------------------
_CR, _LF, _HASH = 0x0D, 0x0A, 0x23


class ReplyFramer:
    """Splits the controller's byte stream into ``#``-terminated replies (the role ``LineFramer`` plays for
    Pegasus, in the style of ``serial.threaded.Packetizer``). ``feed`` returns complete replies with their ``#``.

    What the firmware sends besides replies, and what happens to it:

    - line breaks between replies: skipped;
    - the ``:04#`` reply ``F<board>\r\n<version>#``: a line break inside a frame starting with ``F`` is kept;
    - the ESP32 boot banner and any other text line: a line break inside any other frame, or a frame that grows
      to ``max_length`` without ``#``, is noise; after an overlong frame everything up to the next line break or
      ``#`` is noise too, so the tail of a long line never starts a frame;
    - a frame must start with a printable character: a NUL or 0xFF from a resetting board is noise.

    Noise is dropped and reported through ``noise_count`` (one per ``feed`` call that dropped something),
    ``last_noise`` and the optional ``on_noise`` callback; the good replies around it are still returned.
    """

    def __init__(self, max_length: int = MAX_REPLY_LENGTH, on_noise: Callable[[bytes], None] | None = None) -> None:
        self.max_length = max_length
        self.on_noise = on_noise
        self.buffer = bytearray()  # the frame in progress
        self.discarding = False  # after an overlong frame: drop up to the next line break or '#'
        self.noise_count = 0
        self.last_noise = b""

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        noise = bytearray()
        for byte in data:
            if self.discarding:
                noise.append(byte)
                self.discarding = byte not in (_CR, _LF, _HASH)
            elif byte == _HASH:
                self.buffer.append(byte)
                frames.append(bytes(self.buffer))
                self.buffer.clear()
            elif byte in (_CR, _LF):
                if self.buffer[:1] == b"F":
                    self.buffer.append(byte)
                elif self.buffer:
                    noise += self.buffer
                    noise.append(byte)
                    self.buffer.clear()
            elif not self.buffer and not 0x21 <= byte <= 0x7E:
                noise.append(byte)
            else:
                self.buffer.append(byte)
                if len(self.buffer) >= self.max_length:  # no room left for the '#'
                    noise += self.buffer
                    self.buffer.clear()
                    self.discarding = True
        if noise:
            self.noise_count += 1
            self.last_noise = bytes(noise[: 4 * self.max_length])
            if self.on_noise is not None:
                self.on_noise(self.last_noise)
        return frames

    def reset(self) -> None:
        """Forget the frame in progress (after a flush or a reconnect)."""
        self.buffer.clear()
        self.discarding = False
