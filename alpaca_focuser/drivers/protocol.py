"""What every serial focuser protocol shares: the exceptions its codec raises, the port it talks to, and framers
that split a received byte stream into replies.

Framing is kept apart from the port in the style of pyserial's ``serial.threaded.Packetizer``: a framer only
turns bytes into frames (``feed``) and forgets a partial frame (``reset``), so it is tested on bytes and shared by
the dialects: Moonlite and myFocuserPro2 end a reply with ``#``, Pegasus with ``\\n`` or ``\\r\\n``.
"""

from __future__ import annotations

from typing import Protocol

#: After a bad reply, a pause so a late one lands before the next command's flush.
DRAIN_TIME = 0.05


class ProtocolError(ValueError):
    """A reply that is malformed, partial or not what the command asks for. Never parse it."""


class ReplyTimeout(ProtocolError):
    """No complete reply before the deadline (the controller is silent, rebooting or too slow)."""


class NoController(ReplyTimeout):
    """The handshake got no valid answer: nothing (sensible) is listening on the port."""


class Cancelled(Exception):
    """The owner asked to stop while a handshake or state read was in progress."""


class ReadablePort(Protocol):
    """What reading a reply needs from a pyserial ``Serial`` opened with a finite ``timeout``."""

    def read(self, size: int = 1) -> bytes: ...

    @property
    def in_waiting(self) -> int: ...


class SerialPort(ReadablePort, Protocol):
    """What a link needs from a pyserial ``Serial``. ``fileno()`` is optional: with it the link waits for
    replies with ``select()`` and can be woken at once (by a Halt); without it (test fakes) it polls ``read``."""

    def write(self, data: bytes) -> int | None: ...

    def reset_input_buffer(self) -> None: ...

    def close(self) -> None: ...


class Framer(Protocol):
    """Splits a byte stream into frames. ``feed`` returns the complete frames the new bytes finish (maybe none);
    noise that can never become a frame is dropped so the stream resynchronises, and either raised as a
    ProtocolError (``TerminatedFramer``) or reported through an ``on_noise(junk)`` callback attribute, which the
    link then sets to count it (the myFocuserPro2 and Pegasus framers). ``reset`` forgets a partial frame;
    ``buffer`` is the partial frame so far."""

    buffer: bytearray

    def feed(self, data: bytes) -> list[bytes]: ...

    def reset(self) -> None: ...


class TerminatedFramer:
    """Frames that end with one terminator byte sequence, e.g. ``#`` (``1A2B#``) or ``\\n``.

    ``keep_terminator`` keeps it on the frame (the Moonlite parsers check it); ``strip`` removes these trailing
    bytes as well when the terminator is dropped (``\\r`` of a ``\\r\\n`` line ending); ``skip_empty`` drops
    frames that are then empty (a blank line). Data that grows past ``max_length`` without a terminator is noise
    (reboot chatter, wrong baud rate): it is dropped and reported, so the caller counts a failed transaction
    instead of waiting for a frame forever.
    """

    def __init__(self, terminator: bytes = b"#", max_length: int = 16, *, keep_terminator: bool = True,
                 strip: bytes = b"", skip_empty: bool = False) -> None:
        if not terminator:
            raise ValueError("terminator must not be empty")
        self.terminator, self.max_length = terminator, max_length
        self.keep_terminator, self.strip, self.skip_empty = keep_terminator, strip, skip_empty
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete frames. Raises ProtocolError on an overlong frame (the buffer
        is cleared so the stream can resynchronise on the next terminator)."""
        self.buffer.extend(data)
        frames: list[bytes] = []
        size = len(self.terminator)
        while True:
            end = self.buffer.find(self.terminator)
            if end < 0:
                break
            raw = bytes(self.buffer[: end + size])
            del self.buffer[: end + size]
            if len(raw) > self.max_length:
                raise ProtocolError(f"overlong reply {raw[:self.max_length]!r}... ({len(raw)} bytes)")
            frame = raw if self.keep_terminator else raw[:-size].rstrip(self.strip)
            if frame or not self.skip_empty:
                frames.append(frame)
        if len(self.buffer) > self.max_length:
            junk = bytes(self.buffer)
            self.buffer.clear()
            raise ProtocolError(f"no {self.terminator!r} within {self.max_length} bytes: "
                                f"{junk[:self.max_length]!r}...")
        return frames

    def reset(self) -> None:
        self.buffer.clear()


class LineFramer(TerminatedFramer):
    """Text lines ending in ``\\n`` or ``\\r\\n``, returned without the line ending; blank lines are skipped."""

    def __init__(self, max_length: int = 128) -> None:
        super().__init__(b"\n", max_length, keep_terminator=False, strip=b"\r", skip_empty=True)


def show_frame(frame: bytes) -> str:
    """A frame as a log or fault message quotes it: ``:GP#``, ``A`` (line endings dropped, bytes escaped)."""
    text = frame.decode("latin-1").strip("\r\n")
    return text if text.isprintable() else repr(frame)
