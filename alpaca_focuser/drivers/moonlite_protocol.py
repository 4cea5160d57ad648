"""The Moonlite focuser serial protocol: a pure codec, a framer, and one transaction on a port.

A request is ``:`` + command + optional payload + ``#`` with numbers in upper-case hex (``:SN1A2B#``). Replies
are bare (``1A2B#``, ``01#``) and set/action commands get none at all. The codec works on bytes so it is
tested without a port; the only I/O is ``read_reply`` and ``MoonliteLink``, which take any object with
pyserial's ``read``/``write``/``in_waiting``/``reset_input_buffer`` (a test fake will do). Starts no threads.

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
from typing import Callable, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

TERMINATOR = b"#"
MAX_POSITION = 0xFFFF
#: Step-delay codes of ``SD``/``GD`` as integers (sent as hex 02, 04, 08, 10, 20): fastest to slowest.
STEP_DELAY_CODES: tuple[int, ...] = (2, 4, 8, 16, 32)
#: The longest valid reply is ``XXXX#``; a little slack so a clone's odd reply is reported, not truncated.
MAX_REPLY_LENGTH = 16
#: After a bad reply, a pause so a late one lands before the next command's flush.
DRAIN_TIME = 0.05
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


class ProtocolError(ValueError):
    """A reply that is malformed, partial or not what the command asks for. Never parse it."""


class ReplyTimeout(ProtocolError):
    """No complete reply before the deadline (the controller is silent, rebooting or too slow)."""


class NoController(ReplyTimeout):
    """The handshake got no valid ``GV`` reply: nothing (sensible) is listening on the port."""


class Cancelled(Exception):
    """The owner asked to stop while a handshake or state read was in progress."""


@dataclass(frozen=True)
class ControllerState:
    """What a controller reports right after the handshake."""

    version: str
    position: int
    moving: bool
    temperature: float | None  # None: no valid GT reply (the firmware has no temperature support)
    step_delay: int | None  # None: a clone that does not answer GD
    half_step: bool | None  # None: a clone that does not answer GH


class ReadablePort(Protocol):
    """What ``read_reply`` needs from a pyserial ``Serial`` opened with a finite ``timeout``."""

    def read(self, size: int = 1) -> bytes: ...

    @property
    def in_waiting(self) -> int: ...


class SerialPort(ReadablePort, Protocol):
    """What ``MoonliteLink`` needs from a pyserial ``Serial``."""

    def write(self, data: bytes) -> int | None: ...

    def reset_input_buffer(self) -> None: ...

    def close(self) -> None: ...


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
    """Read one ``#``-terminated reply from ``port`` within ``timeout`` seconds and return it (with the ``#``).

    Reads what is waiting in one call (a loaded Pi must not need one wake-up per byte). Bytes after the first
    ``#`` are dropped: the caller flushes before every command anyway. The deadline is only enforced while
    nothing is waiting, so a reply that has fully arrived is never discarded because this thread was slow to
    run; ``max_length`` bounds a trickle of noise. A blocking ``read`` waits at most the port's own timeout,
    so the deadline can overrun by one port timeout. Raises ReplyTimeout, or ProtocolError for an overlong
    frame. Serial errors (SerialException, OSError) propagate: the port failed, not the reply.
    """
    deadline = time.monotonic() + timeout
    reader = ReplyReader(max_length)
    while True:
        chunk = port.read(port.in_waiting or 1)
        if chunk:
            frames = reader.feed(chunk)
            if frames:
                return frames[0]
        if time.monotonic() >= deadline and not port.in_waiting:
            if reader.buffer:
                raise ReplyTimeout(f"partial reply {bytes(reader.buffer)!r} after {timeout:.2f} s")
            raise ReplyTimeout(f"no reply within {timeout:.2f} s")


# --- transactions -------------------------------------------------------------------------------------------------
class MoonliteLink:
    """Request/reply transactions on one open port. Not thread-safe: one owner thread uses it.

    Serial errors (SerialException, OSError, termios.error) propagate untouched: they mean the port failed.
    Bad or missing replies raise ProtocolError/ReplyTimeout: the caller decides how often to retry.
    """

    def __init__(self, port: SerialPort, read_timeout: float) -> None:
        self.port = port
        self.read_timeout = read_timeout
        self.transactions = 0  # commands written to the line

    def send(self, frame: bytes) -> None:
        # Flush first: a late or unsolicited reply must never be read as the answer to this command.
        self.port.reset_input_buffer()
        self.port.write(frame)  # pyserial writes it all or raises on write_timeout
        self.transactions += 1

    def query(self, cmd: str, parser: Callable[[bytes], T], timeout: float | None = None) -> T:
        """Send ``:cmd#`` and return the parsed reply."""
        if timeout is None:
            timeout = max(self.read_timeout, SLOW_REPLIES.get(cmd, 0.0))
        self.send(encode_command(cmd))
        return parser(read_reply(self.port, timeout))

    def query_retry(self, cmd: str, parser: Callable[[bytes], T], tries: int, stop: threading.Event) -> T:
        """``query`` up to ``tries`` times; the last ProtocolError propagates. Raises Cancelled on ``stop``."""
        for attempt in range(tries):
            if stop.is_set():
                raise Cancelled()
            try:
                return self.query(cmd, parser)
            except ProtocolError:
                if attempt == tries - 1:
                    raise
                stop.wait(DRAIN_TIME)  # let a late reply land, so the next flush catches it
        raise ValueError("tries must be at least 1")

    def query_optional(self, cmd: str, parser: Callable[[bytes], T], stop: threading.Event) -> T | None:
        """A query some clones do not answer: None instead of an error."""
        try:
            return self.query_retry(cmd, parser, 2, stop)
        except ProtocolError as exc:
            log.info("no valid reply to :%s# (%s); ignoring", cmd, exc)
            return None

    def handshake(self, timeout: float, stop: threading.Event) -> str:
        """The firmware version, retrying ``GV`` for ``timeout`` s: most Arduino controllers reboot when the
        port opens (DTR) and ignore commands for 1-2 s. The last read of the window asks ``GP`` instead, for the
        few clones that never implemented ``GV``. Raises NoController, or Cancelled on ``stop``."""
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            last_try = remaining <= self.read_timeout + DRAIN_TIME
            try:
                if last_try:
                    self.query(GET_POSITION, parse_position, max(0.2, remaining))
                    log.warning("the controller does not answer :GV# but answers :GP#; carrying on without a "
                                "firmware version")
                    version = "unknown"
                else:
                    version = self.query(GET_VERSION, parse_version, self.read_timeout)
            except ProtocolError as exc:
                log.debug("handshake: %s", exc)
                if last_try:
                    raise NoController(f"no valid reply to :GV# within {timeout:.1f} s ({exc})") from exc
                stop.wait(DRAIN_TIME)  # garbage comes back at once: do not spin
                continue
            stop.wait(DRAIN_TIME)
            self.port.reset_input_buffer()  # boot chatter and duplicate replies to the retried GV
            return version
        raise Cancelled()

    def initialise(self, stop: threading.Event, handshake_timeout: float, *, speed_code: int | None = None,
                   half_step: bool | None = None, tries: int = 3) -> ControllerState:
        """Handshake, apply the configured settings, and read the controller's whole state.

        Raises NoController (no handshake), ProtocolError (answered GV, then nonsense), Cancelled (``stop``).
        """
        version = self.handshake(handshake_timeout, stop)
        if speed_code is not None:
            self.send(encode_step_delay(speed_code))
        if half_step is not None:
            self.send(encode_half_step(half_step))
        step_delay = self.query_optional(GET_STEP_DELAY, parse_step_delay, stop)
        half = self.query_optional(GET_HALF_STEP, parse_half_step, stop)
        if speed_code is not None and step_delay != speed_code:  # most clones ignore SD: worth a line in the log
            log.warning("step delay %s requested, the controller reports %s", speed_code, step_delay)
        if half_step is not None and half != half_step:
            log.warning("half step %s requested, the controller reports %s", half_step, half)
        self.send(encode_command(START_CONVERSION))
        temperature = self.query_optional(GET_TEMPERATURE, parse_temperature, stop)
        moving = self.query_retry(GET_MOVING, parse_moving, tries, stop)
        position = self.query_retry(GET_POSITION, parse_position, tries, stop)  # after GI: a move may just end
        return ControllerState(version=version, position=position, moving=moving, temperature=temperature,
                               step_delay=step_delay, half_step=half)
