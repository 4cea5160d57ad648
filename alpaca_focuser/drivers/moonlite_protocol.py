"""The Moonlite focuser serial protocol as a pure codec: bytes in, values out, nothing else.

A request is ``:`` + command + optional payload + ``#`` with numbers in upper-case hex (``:SN1A2B#``). Replies
are bare (``1A2B#``, ``01#``) and set/action commands get none at all. Everything here works on bytes so it is
tested without a port; the only I/O is ``read_reply``, which takes any object with pyserial's ``read``.

Validation is deliberately strict on shape (exact length, hex digits only, ``#`` terminated) because a serial
line at 9600 baud delivers noise, reboot chatter and late replies, and a misparsed reply would become a wrong
position. It is lenient on case only: some clones answer ``1a2b#`` and that cannot be confused with anything.
"""

from __future__ import annotations

import logging
import string
import time
from typing import Protocol

log = logging.getLogger(__name__)

TERMINATOR = b"#"
MAX_POSITION = 0xFFFF
#: Step-delay codes of ``SD``/``GD`` as integers (sent as hex 02, 04, 08, 10, 20): fastest to slowest.
STEP_DELAY_CODES: tuple[int, ...] = (2, 4, 8, 16, 32)
#: The longest valid reply is ``XXXX#``; a little slack so a clone's odd reply is reported, not truncated.
MAX_REPLY_LENGTH = 16

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


class ProtocolError(ValueError):
    """A reply that is malformed, partial or not what the command asks for. Never parse it."""


class ReplyTimeout(ProtocolError):
    """No complete reply before the deadline (the controller is silent, rebooting or too slow)."""


class ReadablePort(Protocol):
    """What ``read_reply`` needs from a pyserial ``Serial`` opened with a finite ``timeout``."""

    def read(self, size: int = 1) -> bytes: ...


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
    """``GT``: signed 16-bit two's complement in half degrees C (``FFFE#`` -> -1.0)."""
    raw = int(_body(reply, (4,), "temperature"), 16)
    if raw >= 0x8000:
        raw -= 0x10000
    return raw / 2.0


def parse_version(reply: bytes) -> str:
    """``GV``: two printable characters then ``#`` (``10#`` -> ``"10"``)."""
    if not isinstance(reply, (bytes, bytearray)) or not reply.endswith(TERMINATOR) or len(reply) != 3:
        raise ProtocolError(f"version: reply {reply!r} is not two characters and '#'")
    text = bytes(reply[:2]).decode("latin-1")
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
class ReplyReader:
    """Splits a byte stream into ``#``-terminated frames, in the style of ``serial.threaded.Packetizer``.

    Data that grows past ``max_length`` without a ``#`` is noise (reboot chatter, wrong baud rate): it is
    dropped and reported so the caller counts a failed transaction instead of waiting for a frame forever.
    """

    def __init__(self, max_length: int = MAX_REPLY_LENGTH) -> None:
        self.max_length = max_length
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete frames (each ending in ``#``). Raises ProtocolError on an
        overlong frame (the buffer is cleared so the stream can resynchronise on the next ``#``)."""
        self.buffer.extend(data)
        frames: list[bytes] = []
        while True:
            end = self.buffer.find(TERMINATOR)
            if end < 0:
                break
            frame = bytes(self.buffer[: end + 1])
            del self.buffer[: end + 1]
            if len(frame) > self.max_length:
                raise ProtocolError(f"overlong reply {frame[:self.max_length]!r}... ({len(frame)} bytes)")
            frames.append(frame)
        if len(self.buffer) > self.max_length:
            junk = bytes(self.buffer)
            self.buffer.clear()
            raise ProtocolError(f"no '#' within {self.max_length} bytes: {junk[:self.max_length]!r}...")
        return frames

    def reset(self) -> None:
        self.buffer.clear()


def read_reply(port: ReadablePort, timeout: float, max_length: int = MAX_REPLY_LENGTH) -> bytes:
    """Read one ``#``-terminated reply from ``port`` within ``timeout`` seconds.

    Reads byte-wise up to the first ``#`` so nothing after it is consumed (the caller flushes before the next
    command anyway). Each ``read`` blocks at most the port's own timeout, so the deadline can overrun by one
    port timeout at worst. Raises ReplyTimeout, or ProtocolError for an overlong frame. Serial errors
    (SerialException, OSError) propagate: they mean the port itself failed, not the reply.
    """
    deadline = time.monotonic() + timeout
    received = bytearray()
    while True:
        chunk = port.read(1)
        if chunk:
            received += chunk
            if chunk == TERMINATOR:
                return bytes(received)
            if len(received) >= max_length:
                raise ProtocolError(f"no '#' within {max_length} bytes: {bytes(received)!r}")
        if time.monotonic() >= deadline:
            if received:
                raise ReplyTimeout(f"partial reply {bytes(received)!r} after {timeout:.2f} s")
            raise ReplyTimeout(f"no reply within {timeout:.2f} s")
