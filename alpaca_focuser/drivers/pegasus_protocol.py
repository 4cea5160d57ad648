"""The Pegasus Astro DMFC / FocusCube 2 serial protocol: a pure codec and a line framer.

19200 8N1. A request is one ASCII line ending in ``\\n``: a command letter, and for set commands ``:`` and a
decimal argument (``M:1200\\n``). Replies are lines too, ending in ``\\n`` or, on DMFC firmware 2.8 and the
Scops OAG, ``\\r\\n``. ``#`` answers the model (``OK_DMFCN``), ``A`` the whole state in ten colon-separated
fields. Which set commands answer a line depends on the firmware: older ones answer only ``N``/``L``/``E``/``R``,
recent ones echo every set command and answer ``H`` with ``0``. See docs/protocols/pegasus.md for the sources.

No port I/O and no threads here. Validation is strict on shape because the protocol has no checksum: a line
that is not exactly what a command answers raises ProtocolError, and ``reply_matches`` tells the dialect whether
a line answers a given command at all, so that a late echo or a halt's ``0`` is never read as another reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Callable

from alpaca_focuser.drivers.protocol import ProtocolError

BAUD = 19200
TERMINATOR = b"\n"
#: The longest real reply is the status line (~45 characters); past this without a newline it is noise.
MAX_LINE_LENGTH = 96
MAX_POSITION = 2**31 - 1  # FocusCube 3's table gives unsigned int32 steps; stay within signed for the DMFC
SPEED_RANGE = (100, 1000)  # INDI's and INDIGO's limits for ``S``; both default to 400
MAX_BACKLASH = 9999  # INDIGO's limit (INDI: 1000); 0 means compensation off
NO_PROBE_TEMPERATURE = -127.0  # what the firmware reports without a temperature probe (INDI checks == -127)
#: Outside this a reading is not trusted as a temperature (DS18B20 range); it is reported as None.
TEMPERATURE_RANGE = (-55.0, 125.0)

# Command letters. Queries take no argument; set commands take ``:<integer>``.
HANDSHAKE = "#"
STATUS = "A"
VERSION = "V"
TEMPERATURE = "T"
POSITION = "P"
MOVING = "I"
GET_SPEED = "B"
KNOB_POSITION = "X"  # the hand knob's counter (TheSkyX X2 plugin)
MOVE = "M"
MOVE_RELATIVE = "G"
HALT = "H"
SYNC = "W"
REVERSE = "N"
BACKLASH = "C"
MOTOR_MODE = "R"
LED = "L"
SPEED = "S"
KNOB = "E"  # "encoder" in the sources: the rotary knob on the controller, E:0 enables it, E:1 disables it

#: Requests that always answer one line (``H`` takes no argument either, but answers only on recent firmware).
QUERIES = frozenset({HANDSHAKE, STATUS, VERSION, TEMPERATURE, POSITION, MOVING, GET_SPEED, KNOB_POSITION})
SET_COMMANDS = frozenset({MOVE, MOVE_RELATIVE, SYNC, REVERSE, BACKLASH, MOTOR_MODE, LED, SPEED, KNOB})
#: Set commands that answer a line on every firmware (INDIGO's driver and simulators read one for these only).
ANSWERED_BY_ALL_FIRMWARE = frozenset({REVERSE, LED, KNOB, MOTOR_MODE})
#: What firmware from about 2020 answers besides (INDI reads and discards a line after each; a Scops OAG
#: on firmware 1.2 echoes ``M:``/``W:`` and answers ``H`` with ``0``).
ANSWERED_BY_RECENT_FIRMWARE = frozenset({MOVE, MOVE_RELATIVE, SYNC, BACKLASH, SPEED, HALT})
#: What ``H`` answers on recent firmware: ``0`` (captured on a Scops OAG, firmware 1.2). ``H`` and ``H:<0|1>`` are
#: accepted too, by analogy with Pegasus's current boards (FocusCube 3, Falcon 2 answer their halt ``FH:1``), so an
#: answer in that form is consumed at once rather than waited for. A bare ``0`` looks like a ``P`` or ``I`` reply:
#: poll with ``A``.
HALT_REPLIES = frozenset({"0", "H", "H:0", "H:1"})
#: Queries whose replies are bare values, which a halt's ``0`` could be taken for.
BARE_REPLY_QUERIES = frozenset({VERSION, TEMPERATURE, POSITION, MOVING, KNOB_POSITION})

#: Model codes after ``OK_`` and what to call them.
MODEL_NAMES = {"DMFCN": "DMFC", "DMFC": "DMFC", "FC": "FocusCube 2", "SMFC": "SMFC",
               "PRDG": "Prodigy Microfocuser", "SCOPS": "Scops OAG"}

_ARGUMENT_RANGES: dict[str, tuple[int, int]] = {
    MOVE: (0, MAX_POSITION), SYNC: (0, MAX_POSITION), MOVE_RELATIVE: (-MAX_POSITION, MAX_POSITION),
    SPEED: SPEED_RANGE, BACKLASH: (0, MAX_BACKLASH), REVERSE: (0, 1), KNOB: (0, 1), LED: (1, 2),
    MOTOR_MODE: (0, 2),
}
_MODEL = re.compile(r"OK_([A-Z0-9]{1,12})")
_VERSION = re.compile(r"[0-9][0-9A-Za-z._-]{0,15}")
_INTEGER = re.compile(r"-?[0-9]{1,10}")
_DECIMAL = re.compile(r"-?[0-9]{1,4}(?:\.[0-9]{1,4})?")
_EXTRA_FIELD = re.compile(r"[0-9A-Za-z.+_-]{1,16}")
_FLAGS = {"0": False, "1": True}
STATUS_FIELDS = 10
_MAX_EXTRA_FIELDS = 6  # tolerated after the ten known ones, for a future firmware; never interpreted


class MotorType(IntEnum):
    """Field 3 of the status line. DC motors have no absolute position."""

    DC = 0
    STEPPER = 1


@dataclass(frozen=True)
class PegasusStatus:
    """The ``A`` reply: ``OK_<model>:<firmware>:<motor>:<temp>:<position>:<moving>:<led>:<reverse>:<knob>:<backlash>``."""

    model: str  # the code after OK_, e.g. "DMFCN"
    firmware: str
    motor: MotorType
    temperature: float | None  # None: no probe (-127) or a reading outside TEMPERATURE_RANGE
    position: int
    moving: bool
    led: bool
    reverse: bool
    knob_enabled: bool  # field 9 is "knob disabled": 0 = enabled
    backlash: int  # firmware backlash compensation in steps, 0 = off

    @property
    def model_name(self) -> str:
        return model_name(self.model)


# --- encoders -------------------------------------------------------------------------------------------------
def encode(command: str, argument: int | None = None) -> bytes:
    """One request line: ``encode("A")`` -> ``b"A\\n"``, ``encode("M", 1200)`` -> ``b"M:1200\\n"``.

    Raises ValueError for an unknown command, a missing or extra argument, or one out of its range.
    """
    if command in QUERIES or command == HALT:
        if argument is not None:
            raise ValueError(f"Pegasus command {command!r} takes no argument, got {argument!r}")
        return command.encode("ascii") + TERMINATOR
    if command not in SET_COMMANDS:
        raise ValueError(f"unknown Pegasus command {command!r}")
    low, high = _ARGUMENT_RANGES[command]
    if not isinstance(argument, int) or isinstance(argument, bool) or not low <= argument <= high:
        raise ValueError(f"Pegasus command {command!r} needs an integer in {low}..{high}, got {argument!r}")
    return f"{command}:{argument}".encode("ascii") + TERMINATOR


def encode_move(position: int) -> bytes:
    """``M``: move to an absolute position (stepper mode only)."""
    return encode(MOVE, position)


def encode_move_relative(steps: int) -> bytes:
    """``G``: move by a signed number of steps; the only motion a DC motor has (INDI issue #1559)."""
    return encode(MOVE_RELATIVE, steps)


def encode_halt() -> bytes:
    return encode(HALT)


def encode_sync(position: int) -> bytes:
    """``W``: declare the current position without moving."""
    return encode(SYNC, position)


def encode_reverse(reverse: bool) -> bytes:
    return encode(REVERSE, 1 if reverse else 0)


def encode_backlash(steps: int) -> bytes:
    """``C``: firmware backlash compensation in steps; 0 turns it off."""
    return encode(BACKLASH, steps)


def encode_motor_mode(motor: MotorType) -> bytes:
    """``R:1`` stepper; ``R:2`` DC as INDI's current driver sends (INDIGO and older drivers send ``R:0``)."""
    return encode(MOTOR_MODE, 1 if motor == MotorType.STEPPER else 2)


def encode_led(on: bool) -> bytes:
    """``L:2`` on, ``L:1`` off (the status line then reports 1 / 0)."""
    return encode(LED, 2 if on else 1)


def encode_speed(speed: int) -> bytes:
    """``S``: maximum motor speed, in the firmware's own units."""
    return encode(SPEED, speed)


def encode_knob(enabled: bool) -> bytes:
    """``E:0`` enables the hand knob, ``E:1`` disables it."""
    return encode(KNOB, 0 if enabled else 1)


def split_frame(frame: bytes) -> tuple[str, int | None]:
    """The inverse of ``encode``: ``b"M:1200\\n"`` -> ``("M", 1200)``. Raises ValueError for anything else."""
    text = frame.decode("ascii", "replace") if isinstance(frame, (bytes, bytearray)) else ""
    command, sep, argument = text.removesuffix("\n").partition(":")
    value = int(argument) if sep and _INTEGER.fullmatch(argument) else None
    if encode(command, value) != bytes(frame):  # validates, and refuses "M:012" or a missing newline
        raise ValueError(f"{bytes(frame)!r} is not a Pegasus request")
    return command, value


# --- decoders -------------------------------------------------------------------------------------------------
def _text(line: bytes, what: str) -> str:
    """The line without its terminator (``\\n`` or ``\\r\\n``, optional), as printable ASCII."""
    if not isinstance(line, (bytes, bytearray)):
        raise ProtocolError(f"{what}: reply must be bytes, got {type(line).__name__}")
    body = bytes(line).removesuffix(b"\n").removesuffix(b"\r")
    if not body or not body.isascii() or not body.decode("ascii").isprintable():
        raise ProtocolError(f"{what}: reply {bytes(line)!r} is empty or not printable ASCII")
    return body.decode("ascii")


def _integer(field: str, what: str, low: int = -MAX_POSITION - 1, high: int = MAX_POSITION) -> int:
    if not _INTEGER.fullmatch(field) or not low <= int(field) <= high:
        raise ProtocolError(f"{what}: {field!r} is not an integer in {low}..{high}")
    return int(field)


def _flag(field: str, what: str) -> bool:
    if field not in _FLAGS:
        raise ProtocolError(f"{what}: {field!r} is neither 0 nor 1")
    return _FLAGS[field]


def _temperature(field: str, what: str) -> float | None:
    if not _DECIMAL.fullmatch(field):
        raise ProtocolError(f"{what}: {field!r} is not a decimal number")
    value = float(field)
    if value == NO_PROBE_TEMPERATURE or not TEMPERATURE_RANGE[0] <= value <= TEMPERATURE_RANGE[1]:
        return None
    return value


def _model(field: str, what: str) -> str:
    match = _MODEL.fullmatch(field)
    if match is None:
        raise ProtocolError(f"{what}: {field!r} is not OK_ and a model code")
    return match.group(1)


def parse_model(line: bytes) -> str:
    """``#``: ``OK_DMFCN`` -> ``"DMFCN"``. Any ``OK_`` model is accepted; a status line is not."""
    return _model(_text(line, "model"), "model")


def model_name(code: str) -> str:
    """``"DMFCN"`` -> ``"DMFC"``; an unknown code is shown as it is."""
    return MODEL_NAMES.get(code, code)


def parse_status(line: bytes) -> PegasusStatus:
    """``A``: the ten-field status line (DMFC, FocusCube 2, Prodigy, Scops OAG all send the same order).

    Up to six further fields from a future firmware are tolerated and ignored; fewer than ten is refused,
    including the five-field line an old SMFC is said to send (it has no moving flag).
    """
    fields = _text(line, "status").split(":")
    if not STATUS_FIELDS <= len(fields) <= STATUS_FIELDS + _MAX_EXTRA_FIELDS:
        raise ProtocolError(f"status: {bytes(line)!r} has {len(fields)} fields, expected {STATUS_FIELDS}")
    if not all(_EXTRA_FIELD.fullmatch(extra) for extra in fields[STATUS_FIELDS:]):
        raise ProtocolError(f"status: {bytes(line)!r} has malformed extra fields")
    model, firmware, motor, temperature, position, moving, led, reverse, knob, backlash = fields[:STATUS_FIELDS]
    if not _VERSION.fullmatch(firmware):
        raise ProtocolError(f"status: firmware {firmware!r} is not a version")
    return PegasusStatus(
        model=_model(model, "status"), firmware=firmware,
        motor=MotorType(_flag(motor, "status motor type")),
        temperature=_temperature(temperature, "status temperature"),
        position=_integer(position, "status position"), moving=_flag(moving, "status moving"),
        led=_flag(led, "status LED"), reverse=_flag(reverse, "status reverse"),
        knob_enabled=not _flag(knob, "status knob"), backlash=_integer(backlash, "status backlash", 0, 99999))


def parse_version(line: bytes) -> str:
    """``V``: ``2.8`` -> ``"2.8"``."""
    text = _text(line, "version")
    if not _VERSION.fullmatch(text):
        raise ProtocolError(f"version: {bytes(line)!r} is not a version")
    return text


def parse_temperature(line: bytes) -> float | None:
    """``T``: ``21.50`` -> 21.5; ``-127.00`` (no probe) -> None."""
    return _temperature(_text(line, "temperature"), "temperature")


def parse_position(line: bytes) -> int:
    """``P`` (and ``X``): a signed decimal integer."""
    return _integer(_text(line, "position"), "position")


def parse_moving(line: bytes) -> bool:
    """``I``: ``1`` moving, ``0`` idle."""
    return _flag(_text(line, "moving"), "moving")


def parse_speed(line: bytes) -> int:
    """``B``: ``B:400`` (the INDIGO simulator prints ``B:400.00``) -> 400."""
    label, sep, value = _text(line, "speed").partition(":")
    if label != GET_SPEED or not sep or not _DECIMAL.fullmatch(value) or float(value) < 0:
        raise ProtocolError(f"speed: {bytes(line)!r} is not B:<speed>")
    return int(float(value))


def is_error_reply(line: bytes) -> bool:
    """A refusal: the Scops OAG answers ``ERR:`` to set commands it does not support."""
    return bytes(line).startswith(b"ERR")


def is_halt_reply(line: bytes) -> bool:
    """What ``H`` answers on recent firmware (``HALT_REPLIES``), with or without the line end."""
    return bytes(line).rstrip(b"\r\n") in _HALT_REPLY_BYTES


_HALT_REPLY_BYTES = frozenset(reply.encode("ascii") for reply in HALT_REPLIES)


def expected_replies(frame: bytes) -> frozenset[str]:
    """The exact lines a set command or ``H`` may answer (without terminator); empty for other queries.

    Echoes as captured and simulated: ``M:1200`` -> ``M:1200``; ``L:2`` -> ``L:1`` (the LED state, 1 = on);
    ``R:1`` -> ``1`` (the motor-type digit, INDIGO simulator) or ``R:1``; ``H`` -> ``0``.
    """
    command, value = split_frame(frame)
    if command == HALT:
        return HALT_REPLIES
    if command not in SET_COMMANDS:
        return frozenset()
    assert value is not None  # split_frame guarantees an argument for set commands
    if command == LED:
        return frozenset({f"L:{value - 1}"})
    if command == MOTOR_MODE:
        digit = "1" if value == 1 else "0"
        return frozenset({digit, str(value), f"R:{value}"})
    return frozenset({f"{command}:{value}"})


def identify_reply(line: bytes) -> str | None:
    """The command a self-describing line answers, for logging a stray one: ``#`` for ``OK_DMFCN``, ``A`` for a
    status line, the letter of an echo (``M:1200`` -> ``M``), ``B`` for ``B:400``; None for a bare number
    (``0`` may answer ``H``, ``P``, ``I`` or ``R``), ``ERR:`` or anything else."""
    try:
        text = _text(line, "reply")
    except ProtocolError:
        return None
    letter, sep, value = text.partition(":")
    if text.startswith("OK_"):
        for command, parser in ((HANDSHAKE, parse_model), (STATUS, parse_status)):
            try:
                parser(line)
                return command
            except ProtocolError:
                pass
        return None
    if letter == GET_SPEED and sep:
        return GET_SPEED if _DECIMAL.fullmatch(value) else None
    if letter in SET_COMMANDS and sep and _INTEGER.fullmatch(value):
        return letter
    return None


_QUERY_PARSERS: dict[str, Callable[[bytes], object]] = {
    HANDSHAKE: parse_model, STATUS: parse_status, VERSION: parse_version, TEMPERATURE: parse_temperature,
    POSITION: parse_position, KNOB_POSITION: parse_position, MOVING: parse_moving, GET_SPEED: parse_speed,
}


def is_foreign_reply(frame: bytes, line: bytes) -> bool:
    """Whether ``line`` is recognisably the answer to some other command than ``frame``: a late echo, a halt's
    answer, a handshake or status line that ``frame`` did not ask for. Such a line is skipped while waiting for
    ``frame``'s reply. A garbled line is not foreign: it is a bad reply to ``frame``, and counted as one. An echo of
    the same command with another value (``M:1300`` for ``M:1200``) is not foreign either: it says the controller
    took something else."""
    command, _ = split_frame(frame)
    if reply_matches(frame, line):
        return False
    other = identify_reply(line)
    if other is not None:
        return other != command
    return command not in BARE_REPLY_QUERIES and command != HALT and is_halt_reply(line)


def reply_matches(frame: bytes, line: bytes) -> bool:
    """Whether ``line`` can be the answer to the request ``frame`` (as made by ``encode``).

    Self-describing replies (``#``, ``A``, the echoes) are matched exactly, so a stray echo, a halt's ``0``
    or a late status line never passes for another command's reply. The bare replies of ``P``, ``I``, ``T``,
    ``V`` and ``X`` only match by shape and cannot be told from each other: poll with ``A``.
    """
    command, _ = split_frame(frame)
    parser = _QUERY_PARSERS.get(command)
    if parser is None:
        try:
            return _text(line, "reply") in expected_replies(frame)
        except ProtocolError:
            return False
    try:
        parser(line)
    except ProtocolError:
        return False
    return True


# --- framing ------------------------------------------------------------------------------------------------------
class LineFramer:
    """Splits a byte stream into reply lines, in the style of ``serial.threaded.LineReader``.

    ``feed`` returns complete lines without their ``\\n`` or ``\\r\\n``; empty lines are skipped. A run of
    more than ``max_length`` bytes without a newline is noise (reboot chatter, wrong baud rate): it is dropped
    up to and including the next newline, so its tail never comes out as a short, valid-looking line, and it
    is reported through ``noise_count``, ``last_noise`` and the optional ``on_noise`` callback.
    """

    def __init__(self, max_length: int = MAX_LINE_LENGTH, on_noise: Callable[[bytes], None] | None = None) -> None:
        self.max_length = max_length
        self.on_noise = on_noise
        self.buffer = bytearray()
        self.discarding = False  # inside an overlong line: drop until the next newline
        self.noise_count = 0
        self.last_noise = b""

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer.extend(data)
        lines: list[bytes] = []
        while (end := self.buffer.find(TERMINATOR)) >= 0:
            line = bytes(self.buffer[:end]).removesuffix(b"\r")
            del self.buffer[: end + 1]
            if self.discarding:
                self.discarding = False
            elif len(line) > self.max_length:
                self._noise(line)
            elif line:
                lines.append(line)
        if len(self.buffer) > self.max_length:
            if not self.discarding:
                self._noise(bytes(self.buffer))
            self.discarding = True
            self.buffer.clear()
        return lines

    def _noise(self, junk: bytes) -> None:
        self.noise_count += 1
        self.last_noise = junk[: self.max_length]
        if self.on_noise is not None:
            self.on_noise(self.last_noise)

    def reset(self) -> None:
        """Forget a partial line (after a flush or a reconnect)."""
        self.buffer.clear()
        self.discarding = False

