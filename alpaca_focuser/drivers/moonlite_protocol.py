"""The Moonlite focuser serial protocol: a pure codec, and the handshake and state read as queries on a link.

A request is ``:`` + command + optional payload + ``#`` with numbers in upper-case hex (``:SN1A2B#``). Replies
are bare (``1A2B#``, ``01#``) and set/action commands get none at all. The codec works on bytes so it is
tested without a port; ``handshake`` and ``read_state`` talk through a ``SerialLink`` (serial_link.py), which
takes any object with pyserial's ``read``/``write``/``in_waiting``/``reset_input_buffer`` (a test fake will do).
``MoonliteLink`` wraps both for a plain port (probing, tests). Starts no threads. The Moonlite dialect on the
serial engine (polls, moves, quirks) is in moonlite.py.

Validation is deliberately strict on shape (exact length, hex digits only, ``#`` terminated) because a serial
line at 9600 baud delivers noise, reboot chatter and late replies, and a misparsed reply would become a wrong
position. It is lenient on case only: some clones answer ``1a2b#`` and that cannot be confused with anything.
"""

from __future__ import annotations

import logging
import string
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

# The shared protocol exceptions and port shapes, re-exported: callers and tests import them from here.
from alpaca_focuser.drivers.protocol import (DRAIN_TIME, Cancelled, NoController, ProtocolError,  # noqa: F401
                                             ReadablePort, ReplyTimeout, SerialPort, TerminatedFramer)
from alpaca_focuser.drivers.serial_link import SerialLink

log = logging.getLogger(__name__)

T = TypeVar("T")

TERMINATOR = b"#"
MAX_POSITION = 0xFFFF
#: Step-delay codes of ``SD``/``GD`` as integers (sent as hex 02, 04, 08, 10, 20): fastest to slowest.
STEP_DELAY_CODES: tuple[int, ...] = (2, 4, 8, 16, 32)
#: The longest valid reply is ``XXXX#``; a little slack so a clone's odd reply is reported, not truncated.
MAX_REPLY_LENGTH = 16
# Replies that may take longer than read_timeout: some clones read the DS18B20 on GT itself (~750 ms) instead
# of on C. GT is only polled while idle, so waiting for it delays nothing that matters.
SLOW_REPLIES = {"GT": 1.2}  # by command name

_HEX = frozenset(string.hexdigits)  # both cases: lenient on case, strict on characters

# Commands (the part between ``:`` and the payload).
GET_POSITION = "GP"
GET_TARGET = "GN"
GET_MOVING = "GI"
GET_TEMPERATURE = "GT"
GET_VERSION = "GV"
GET_STEP_DELAY = "GD"
GET_HALF_STEP = "GH"
GET_TEMP_COEFFICIENT = "GC"
START_CONVERSION = "C"
START_MOVE = "FG"
HALT = "FQ"


@dataclass(frozen=True)
class ControllerState:
    """What a controller reports right after the handshake."""

    version: str
    position: int
    moving: bool
    temperature: float | None  # None: no valid GT reply (the firmware has no temperature support)
    step_delay: int | None  # None: a clone that does not answer GD
    half_step: bool | None  # None: a clone that does not answer GH


# --- encoders -------------------------------------------------------------------------------------------------
def encode_command(cmd: str, payload: str = "") -> bytes:
    """``encode_command("GP")`` -> ``b":GP#"``. ``payload`` is already formatted (upper-case hex)."""
    text = cmd + payload
    # ':' and '#' inside a frame would desynchronise the controller's parser, so refuse them outright.
    if not cmd or not text.isascii() or ":" in text or "#" in text or not text.isprintable():
        raise ValueError(f"invalid Moonlite command {text!r}")
    return b":" + text.encode("ascii") + TERMINATOR


def _hex16(value: int, what: str) -> str:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_POSITION:
        raise ValueError(f"{what} must be an integer in 0..{MAX_POSITION}, got {value!r}")
    return f"{value:04X}"


def encode_set_position(position: int) -> bytes:
    """``SP``: declare the current position (sync) without moving. ``0x1A2B`` -> ``b":SP1A2B#"``."""
    return encode_command("SP", _hex16(position, "position"))


def encode_set_target(target: int) -> bytes:
    """``SN``: set the target of the next ``FG``."""
    return encode_command("SN", _hex16(target, "target"))


def encode_step_delay(code: int) -> bytes:
    """``SD``: step delay code 2, 4, 8, 16 or 32 (sent as hex ``02``..``20``), fastest to slowest."""
    if code not in STEP_DELAY_CODES or isinstance(code, bool):
        raise ValueError(f"step delay code must be one of {STEP_DELAY_CODES}, got {code!r}")
    return encode_command("SD", f"{code:02X}")


def encode_half_step(half: bool) -> bytes:
    """``SH`` (half step) or ``SF`` (full step)."""
    return encode_command("SH" if half else "SF")


def encode_temp_coefficient(coefficient: int) -> bytes:
    """``SC``: firmware temperature coefficient, a signed byte (two's complement)."""
    if not isinstance(coefficient, int) or isinstance(coefficient, bool) or not -128 <= coefficient <= 127:
        raise ValueError(f"temperature coefficient must be an integer in -128..127, got {coefficient!r}")
    return encode_command("SC", f"{coefficient & 0xFF:02X}")


def encode_temp_compensation(on: bool) -> bytes:
    """``+`` / ``-``: firmware temperature compensation on / off (most clones ignore it)."""
    return encode_command("+" if on else "-")


# --- decoders -------------------------------------------------------------------------------------------------
def _body(reply: bytes, lengths: tuple[int, ...], what: str) -> str:
    """The reply without its ``#``, checked for length and for hex digits only."""
    if not isinstance(reply, (bytes, bytearray)):
        raise ProtocolError(f"{what}: reply must be bytes, got {type(reply).__name__}")
    if not reply.endswith(TERMINATOR):
        raise ProtocolError(f"{what}: reply {bytes(reply)!r} is not terminated by '#'")
    body = bytes(reply[:-1])
    if len(body) not in lengths:
        raise ProtocolError(f"{what}: reply {bytes(reply)!r} has {len(body)} characters, expected "
                            f"{' or '.join(map(str, lengths))}")
    text = body.decode("latin-1")
    if not all(c in _HEX for c in text):
        raise ProtocolError(f"{what}: reply {bytes(reply)!r} is not hexadecimal")
    return text


def parse_position(reply: bytes) -> int:
    """``GP``/``GN``: exactly 4 hex digits + ``#`` -> 0..65535."""
    return int(_body(reply, (4,), "position"), 16)


def parse_moving(reply: bytes) -> bool:
    """``GI``: ``01#``/``00#``, or ``1#``/``0#`` from clones."""
    text = _body(reply, (1, 2), "moving")
    value = int(text, 16)
    if value not in (0, 1):
        raise ProtocolError(f"moving: reply {bytes(reply)!r} is neither 0 nor 1")
    return value == 1


def parse_temperature(reply: bytes) -> float:
    """``GT``: signed 16-bit two's complement in half degrees C (``FFFE#`` -> -1.0). Some Arduino clones print
    the value without zero padding (``28#`` = 20.0 C); those 1-3 digit replies are read as unsigned."""
    text = _body(reply, (1, 2, 3, 4), "temperature")
    raw = int(text, 16)
    if len(text) == 4 and raw >= 0x8000:
        raw -= 0x10000
    return raw / 2.0


def parse_version(reply: bytes) -> str:
    """``GV``: the firmware version then ``#`` (``10#`` -> ``"10"``). Moonlite sends two characters; clones send
    one to six (``1#``, ``3.2#``), and the version is only shown to users, so any of those lengths is accepted."""
    if not isinstance(reply, (bytes, bytearray)) or not reply.endswith(TERMINATOR) or not 2 <= len(reply) <= 7:
        raise ProtocolError(f"version: reply {reply!r} is not one to six characters and '#'")
    text = bytes(reply[:-1]).decode("latin-1")
    # Alphanumerics and '.' only: a rebooting Arduino emits noise and a bootloader banner, never a version.
    if not all(c.isascii() and (c.isalnum() or c == ".") for c in text):
        raise ProtocolError(f"version: reply {bytes(reply)!r} has unexpected characters")
    return text


def parse_half_step(reply: bytes) -> bool:
    """``GH``: ``FF#`` half step, ``00#`` full step."""
    value = int(_body(reply, (2,), "half step"), 16)
    if value not in (0x00, 0xFF, 0x01):  # 01 from a few clones that answer like GI
        raise ProtocolError(f"half step: reply {bytes(reply)!r} is neither FF nor 00")
    return value != 0


def parse_step_delay(reply: bytes) -> int:
    """``GD``: two hex digits -> the code as an integer (``20#`` -> 32). Any value is accepted: clones differ."""
    return int(_body(reply, (2,), "step delay"), 16)


def parse_temp_coefficient(reply: bytes) -> int:
    """``GC``: a signed byte, two hex digits."""
    value = int(_body(reply, (2,), "temperature coefficient"), 16)
    return value - 0x100 if value >= 0x80 else value


# --- framing ------------------------------------------------------------------------------------------------------
class ReplyReader(TerminatedFramer):
    """Splits a byte stream into ``#``-terminated frames (each kept with its ``#``); noise longer than
    ``max_length`` without a ``#`` is dropped and reported (see ``TerminatedFramer``)."""

    def __init__(self, max_length: int = MAX_REPLY_LENGTH) -> None:
        super().__init__(TERMINATOR, max_length)


def command_name(frame: bytes) -> str:
    """The command a request frame carries: ``:SN1A2B#`` -> ``SN``, ``:C#`` -> ``C``."""
    body = frame[1:-1].decode("latin-1")
    return body[:1] if body[:1] in ("C", "+", "-") else body[:2]


def reply_timeout(cmd: str, read_timeout: float) -> float:
    """How long to wait for the reply to ``cmd``: GT may take the sensor's conversion time."""
    return max(read_timeout, SLOW_REPLIES.get(cmd, 0.0))


def read_reply(port: ReadablePort, timeout: float, max_length: int = MAX_REPLY_LENGTH) -> bytes:
    """Read one ``#``-terminated reply from ``port`` within ``timeout`` seconds and return it (with the ``#``).
    Bytes after it are dropped. See ``SerialLink.read_frame``."""
    return SerialLink(port, ReplyReader(max_length), timeout).read_frame(timeout)  # type: ignore[arg-type]


# --- the conversation -------------------------------------------------------------------------------------------
def query(link: SerialLink, cmd: str, parser: Callable[[bytes], T], timeout: float | None = None) -> T:
    """Send ``:cmd#`` and return the parsed reply."""
    return link.query(encode_command(cmd), parser, reply_timeout(cmd, link.read_timeout) if timeout is None
                      else timeout)


def handshake(link: SerialLink, timeout: float) -> str:
    """The firmware version, retrying ``GV`` for ``timeout`` s: most Arduino controllers reboot when the port
    opens (DTR) and ignore commands for 1-2 s. The last read of the window asks ``GP`` instead, for the few
    clones that never implemented ``GV``. Raises NoController, or Cancelled on ``link.stop``."""
    deadline = time.monotonic() + timeout
    while not link.stop.is_set():
        remaining = deadline - time.monotonic()
        last_try = remaining <= link.read_timeout + DRAIN_TIME
        try:
            if last_try:
                query(link, GET_POSITION, parse_position, max(0.2, remaining))
                log.warning("the controller does not answer :GV# but answers :GP#; carrying on without a "
                            "firmware version")
                version = "unknown"
            else:
                version = query(link, GET_VERSION, parse_version, link.read_timeout)
        except ProtocolError as exc:
            log.debug("handshake: %s", exc)
            if last_try:
                raise NoController(f"no valid reply to :GV# within {timeout:.1f} s ({exc})") from exc
            link.pause(DRAIN_TIME)  # garbage comes back at once: do not spin
            continue
        link.pause(DRAIN_TIME)
        link.flush()  # boot chatter and duplicate replies to the retried GV
        return version
    raise Cancelled()


def read_state(link: SerialLink, version: str, *, speed_code: int | None = None, half_step: bool | None = None,
               tries: int = 3) -> ControllerState:
    """After the handshake: apply the configured settings and read the controller's whole state.
    Raises ProtocolError (answered GV, then nonsense), Cancelled (``link.stop``)."""
    if speed_code is not None:
        link.send(encode_step_delay(speed_code))
    if half_step is not None:
        link.send(encode_half_step(half_step))
    step_delay = link.query_optional(encode_command(GET_STEP_DELAY), parse_step_delay)
    half = link.query_optional(encode_command(GET_HALF_STEP), parse_half_step)
    if speed_code is not None and step_delay != speed_code:  # most clones ignore SD: worth a line in the log
        log.warning("step delay %s requested, the controller reports %s", speed_code, step_delay)
    if half_step is not None and half != half_step:
        log.warning("half step %s requested, the controller reports %s", half_step, half)
    link.send(encode_command(START_CONVERSION))
    temperature = link.query_optional(encode_command(GET_TEMPERATURE), parse_temperature,
                                      reply_timeout(GET_TEMPERATURE, link.read_timeout))
    moving = link.query_retry(encode_command(GET_MOVING), parse_moving, tries)
    position = link.query_retry(encode_command(GET_POSITION), parse_position, tries)  # after GI: a move may end
    return ControllerState(version=version, position=position, moving=moving, temperature=temperature,
                           step_delay=step_delay, half_step=half)


class MoonliteLink:
    """The Moonlite conversation on a plain open port, without the engine (probing a port, tests)."""

    def __init__(self, port: SerialPort, read_timeout: float) -> None:
        self.port, self.read_timeout = port, read_timeout
        self.link = SerialLink(port, ReplyReader(), read_timeout, command_name=command_name)

    @property
    def transactions(self) -> int:
        """Commands written to the line."""
        return self.link.transactions

    def send(self, frame: bytes) -> None:
        self.link.send(frame)

    def query(self, cmd: str, parser: Callable[[bytes], T], timeout: float | None = None) -> T:
        return query(self.link, cmd, parser, timeout)

    def handshake(self, timeout: float, stop: threading.Event) -> str:
        self.link.stop = stop
        return handshake(self.link, timeout)

    def initialise(self, stop: threading.Event, handshake_timeout: float, *, speed_code: int | None = None,
                   half_step: bool | None = None, tries: int = 3) -> ControllerState:
        """Handshake, apply the configured settings, and read the controller's whole state.

        Raises NoController (no handshake), ProtocolError (answered GV, then nonsense), Cancelled (``stop``).
        """
        version = self.handshake(handshake_timeout, stop)
        return read_state(self.link, version, speed_code=speed_code, half_step=half_step, tries=tries)

