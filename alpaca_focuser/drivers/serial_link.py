"""Request/reply transactions on one open serial port, with a Halt that never waits.

A ``SerialLink`` is used by one owner thread. ``send`` writes a command that has no reply, ``query`` writes one
and returns its parsed reply; both first flush the input, so a late or unsolicited reply is never read as the
answer to a new command. ``poll`` is the tolerant query of a poll cycle: a bad reply is dropped and counted, and
only ``max_failures`` in a row count as a failed link. ``query(..., matches=)`` skips (and counts) well-formed
frames that answer something else; ``send(..., answer=)`` writes a command whose acknowledgement (recent Pegasus
firmware echoes set commands) is consumed when it comes and never taken for the next command's reply.

Halt (issue 11): another thread asks for a halt through a ``HaltSignal``, whose file descriptor the link waits on
together with the port's (``select()``). The owner thread therefore wakes the moment a halt is asked for, also
while it waits for the reply to an earlier command, and calls ``on_halt`` (the engine), which writes the halt
frame at once with ``write_halt``. The serial line is full duplex and the firmwares buffer input while they
transmit, so the reply in flight still arrives; it is still matched to the command that asked for it because
nothing is flushed while a reply is awaited, and whatever the halt answers itself (``halt_reply`` recognises it;
nothing for Moonlite and myFocuserPro2, a line on recent Pegasus firmware) is consumed, never taken for a reply.
Before the next command, an acknowledgement still due is waited for (at most one read timeout) and then the input
is flushed as usual.

Serial errors (SerialException, OSError, termios.error) propagate untouched: they mean the port failed. Bad or
missing replies raise ProtocolError/ReplyTimeout: the caller decides how often to retry.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import weakref
from collections import deque
from typing import Callable, TypeVar

from alpaca_focuser.drivers.link_stats import LinkStats
from alpaca_focuser.drivers.protocol import (DRAIN_TIME, Cancelled, Framer, ProtocolError, ReplyTimeout, SerialPort,
                                             show_frame)

log = logging.getLogger(__name__)

T = TypeVar("T")

PAUSE_SLICE = 0.05  # a pause re-checks the stop event this often (a halt wakes it at once)


class TooManyFailures(ProtocolError):
    """``max_failures`` polls in a row got no valid reply: the controller is silent or talking nonsense."""


class HaltSignal:
    """Halt requests from any thread, as a flag, a count and a file descriptor the owner's ``select()`` watches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self.requests = 0  # halts asked for so far: a command remembers it to see whether a halt came since
        if hasattr(os, "eventfd"):
            self._read_fd = self._write_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - not Linux
            self._read_fd, self._write_fd = os.pipe()
            os.set_blocking(self._read_fd, False)
            os.set_blocking(self._write_fd, False)
        self._finalizer = weakref.finalize(self, _close_fds, {self._read_fd, self._write_fd})

    def fileno(self) -> int:
        return self._read_fd

    def request(self, *, count: bool = True) -> None:
        """Ask for a halt. ``count=False`` re-arms one that could not be written (it is the same request)."""
        with self._lock:
            self.requests += count
            if self._set:
                return
            self._set = True
        try:
            if hasattr(os, "eventfd_write"):
                os.eventfd_write(self._write_fd, 1)
            else:  # pragma: no cover - not Linux
                os.write(self._write_fd, b"\x01")
        except BlockingIOError:  # pragma: no cover - already readable, which is all that matters
            pass

    def is_set(self) -> bool:
        return self._set

    def take(self) -> bool:
        """Clear the signal; True if it was set. Only the owner thread calls this."""
        with self._lock:
            was_set, self._set = self._set, False
        if was_set:
            try:
                os.read(self._read_fd, 64)
            except BlockingIOError:  # pragma: no cover - set() lost the race to write; the flag is what counts
                pass
        return was_set

    def close(self) -> None:
        self._finalizer()


def _close_fds(fds: set[int]) -> None:
    for fd in fds:
        os.close(fd)


def _fileno(port: SerialPort) -> int | None:
    try:
        fd = port.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


class SerialLink:
    """Transactions on one open port. Not thread-safe: one owner thread uses it (``HaltSignal`` is the only
    thing other threads touch)."""

    def __init__(self, port: SerialPort, framer: Framer, read_timeout: float, *,
                 command_name: Callable[[bytes], str] = show_frame, stats: LinkStats | None = None,
                 stop: threading.Event | None = None, max_failures: int = 3, label: str = "serial") -> None:
        self.port, self.framer, self.read_timeout = port, framer, read_timeout
        self.command_name, self.label, self.max_failures = command_name, label, max_failures
        self.stats = stats if stats is not None else LinkStats()
        self.stop = stop if stop is not None else threading.Event()
        self.transactions = 0  # frames written to the line
        self.failures = 0  # consecutive failed polls
        self.halts: HaltSignal | None = None  # set by the engine while it serves
        self.on_halt: Callable[[], None] | None = None  # called (owner thread) when a halt is signalled
        self.halt_reply: Callable[[bytes], bool] = lambda frame: False  # recognises a halt's own reply
        self.command_mark = 0  # ``halts.requests`` when the current command began (see ``interrupted``)
        # Acknowledgements still to come: (command, recogniser, is a halt's, when sent).
        self._due: deque[tuple[str, Callable[[bytes], bool], bool, float]] = deque()
        self._frames: deque[bytes] = deque()
        if getattr(framer, "on_noise", False) is None:  # a framer that reports noise instead of raising
            framer.on_noise = lambda junk: self.stats.noise_dropped()  # type: ignore[attr-defined]
        self._fd = _fileno(port)
        self._awaiting = False  # a reply is on its way: nothing may be flushed

    # --- what dialects use ------------------------------------------------------------------------------------
    @property
    def interrupted(self) -> bool:
        """A halt was asked for since the current command began: a move sequence must not start the motor."""
        return self.halts is not None and self.halts.requests != self.command_mark

    def send(self, frame: bytes, *, answer: Callable[[bytes], bool] | None = None) -> None:
        """Write a command (after settling acknowledgements still due and flushing the input). ``answer``
        recognises its acknowledgement, if it has one: consumed when it comes, never taken for another reply."""
        self._settle()
        self._write(frame)
        if answer is not None:
            self._due.append((self.command_name(frame), answer, False, time.monotonic()))

    def query(self, frame: bytes, parser: Callable[[bytes], T], timeout: float | None = None, *,
              matches: Callable[[bytes], bool] | None = None) -> T:
        """Write ``frame`` and return its parsed reply. ``matches``: frames it refuses answer something else
        and are skipped. Raises ReplyTimeout or ProtocolError (counted)."""
        name = self.command_name(frame)
        self.send(frame)
        started = time.monotonic()
        try:
            value = parser(self.read_frame(self.read_timeout if timeout is None else timeout, matches))
        except ReplyTimeout:
            self.stats.timeout(name)
            raise
        except ProtocolError:
            self.stats.bad_reply(name)
            raise
        self.stats.reply_received(name, time.monotonic() - started)
        return value

    def query_retry(self, frame: bytes, parser: Callable[[bytes], T], tries: int,
                    timeout: float | None = None, *, matches: Callable[[bytes], bool] | None = None) -> T:
        """``query`` up to ``tries`` times; the last ProtocolError propagates. Raises Cancelled on ``stop``."""
        for attempt in range(tries):
            if self.stop.is_set():
                raise Cancelled()
            try:
                return self.query(frame, parser, timeout, matches=matches)
            except ProtocolError:
                if attempt == tries - 1:
                    raise
                self.drain()
        raise ValueError("tries must be at least 1")

    def query_optional(self, frame: bytes, parser: Callable[[bytes], T], timeout: float | None = None) -> T | None:
        """A query some firmwares do not answer: None instead of an error (two tries)."""
        try:
            return self.query_retry(frame, parser, 2, timeout)
        except ProtocolError as exc:
            log.info("%s: no valid reply to %s (%s); ignoring", self.label, show_frame(frame), exc)
            return None

    def poll(self, frame: bytes, parser: Callable[[bytes], T], timeout: float | None = None, *,
             matches: Callable[[bytes], bool] | None = None) -> T | None:
        """One polled query (``matches`` as for ``query``). A bad reply is dropped with a warning and counted, and
        None returned; the ``max_failures``-th in a row raises TooManyFailures. None at once while a halt waits to
        be written: a poll cycle must not hold it up."""
        if self.halts is not None and self.halts.is_set():
            return None
        try:
            value = self.query(frame, parser, timeout, matches=matches)
        except ProtocolError as exc:
            self.failures += 1
            self.stats.poll_failed()
            log.warning("%s: discarded reply to %s (%s) [%d/%d]", self.label, show_frame(frame), exc,
                        self.failures, self.max_failures)
            if self.failures >= self.max_failures:
                raise TooManyFailures(f"no valid reply to {show_frame(frame)} {self.max_failures} times in a row "
                                      f"({exc})") from exc
            self.drain()
            return None
        self.failures = 0
        return value

    def pause(self, seconds: float) -> None:
        """Wait, still writing a halt the moment it is asked for; returns early when ``stop`` is set."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            self._service_halt()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self.halts is None:
                self.stop.wait(remaining)
            else:
                select.select([self.halts], [], [], min(remaining, PAUSE_SLICE))

    def drain(self) -> None:
        """After a bad reply: let a late one land, so the next command's flush catches it."""
        self.pause(DRAIN_TIME)

    def flush(self) -> None:
        """Forget everything received so far (boot chatter, duplicate replies to retried queries)."""
        self.port.reset_input_buffer()
        self.framer.reset()
        self._frames.clear()

    # --- what the engine uses ---------------------------------------------------------------------------------
    def write_halt(self, frame: bytes, *, answers: bool) -> bool:
        """Write a halt frame now. Returns True if it went out of band (while a reply was awaited: nothing is
        flushed then). ``answers``: the halt has a reply of its own, to be consumed when it comes."""
        out_of_band = self._awaiting
        if not out_of_band:
            self._settle()
        self._write(frame)
        if answers:
            self._due.append((self.command_name(frame), self.halt_reply, True, time.monotonic()))
        return out_of_band

    def read_frame(self, timeout: float, matches: Callable[[bytes], bool] | None = None) -> bytes:
        """The next frame that is no acknowledgement and that ``matches`` accepts, within ``timeout`` s. The
        deadline is only enforced while nothing is waiting, so a reply that has fully arrived is never discarded
        because this thread was slow to run. Raises ReplyTimeout, or ProtocolError for noise the framer rejects."""
        deadline = time.monotonic() + timeout
        self._awaiting = True
        try:
            while True:
                frame = self._next_buffered()
                if frame is not None:
                    if matches is None or matches(frame):
                        return frame
                    self.stats.stray_frame()
                    log.debug("%s: skipping %r, which answers something else", self.label, frame)
                    continue
                if not self._receive(deadline):
                    partial = bytes(self.framer.buffer)
                    if partial:
                        raise ReplyTimeout(f"partial reply {partial!r} after {timeout:.2f} s")
                    raise ReplyTimeout(f"no reply within {timeout:.2f} s")
        finally:
            self._awaiting = False

    # --- internals --------------------------------------------------------------------------------------------
    def _write(self, frame: bytes) -> None:
        self.port.write(frame)  # pyserial writes it all or raises on write_timeout
        self.transactions += 1
        self.stats.command_sent(self.command_name(frame))

    def _settle(self) -> None:
        """Before a new command: wait for acknowledgements still due (so none can land after the flush and be
        read as the new command's reply), then flush."""
        deadline = time.monotonic() + self.read_timeout
        while self._due:
            frame = self._next_buffered()
            if frame is not None:
                log.debug("%s: discarding %r while waiting for an acknowledgement", self.label, frame)
            elif not self._receive(deadline):
                for name, _, _, _ in self._due:
                    log.debug("%s: %s was not acknowledged", self.label, name)
                    self.stats.timeout(name)
                self._due.clear()
        self.flush()

    def _next_buffered(self) -> bytes | None:
        """The next received frame, consuming the acknowledgements that are due."""
        while self._frames:
            frame = self._frames.popleft()
            due = next((entry for entry in self._due if entry[1](frame)), None)
            if due is None:
                return frame
            self._due.remove(due)
            name, _, is_halt, sent = due
            if is_halt:
                self.stats.halt_reply()
            else:
                self.stats.reply_received(name, time.monotonic() - sent)
        return None

    def _service_halt(self) -> None:
        if self.on_halt is not None and self.halts is not None and self.halts.is_set():
            self.on_halt()

    def _receive(self, deadline: float) -> bool:
        """Read what arrives into the frame queue; False at the deadline with nothing waiting. A halt asked for
        meanwhile is written at once (``select`` wakes on the halt signal's descriptor)."""
        while True:
            self._service_halt()
            waiting = self.port.in_waiting
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not waiting:
                return False
            if self._fd is not None and not waiting:
                watched = [self._fd] if self.halts is None else [self._fd, self.halts.fileno()]
                ready, _, _ = select.select(watched, [], [], max(0.0, remaining))
                if self._fd not in ready:
                    continue  # a halt, or the deadline: the loop handles both
            chunk = self.port.read(self.port.in_waiting or 1)  # a blocking read waits at most the port timeout
            if chunk:
                self._frames.extend(self.framer.feed(chunk))
                return True
