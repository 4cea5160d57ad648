"""Any firmware state machine (emulator/base.py) behind a real pseudo-terminal, with fault injection and
realistic line timing. ``MoonliteEmulator`` is the link serving the Moonlite firmware.

A client (the project's driver, pyserial in tests) opens the pty slave exactly
as it would open ``/dev/ttyUSB0``; the emulator thread serves the master side.

Detecting that a client opened the port (to emulate the Arduino DTR reboot):
after creating the pair the emulator closes its own slave fd.  On Linux, while
no process holds the slave open, ``poll()`` on the master reports POLLHUP (and
``read`` fails with EIO); as soon as a client opens the slave POLLHUP clears,
and it comes back when the last client closes it.  So the thread polls the
master with a short timeout and tracks the HUP edge.  (Verified on Linux; the
slave is put in raw mode before our copy is closed, and the termios settings
persist while the master stays open, so nothing is echoed or mangled even
before the client configures the port.)

Only the emulator thread touches the file descriptors.  Fault injections that
need them (``unplug``, ``replug``, ``send_garbage``) are queued to the thread
and waited for, which avoids closing an fd another thread is polling (and the
fd-number reuse races that follow).  When the thread is not running they run
inline.

Replies are scheduled, never slept on: the thread keeps reading (and
timestamping) what the host sends while a reply is being paced out, as a real
controller receives while it transmits.  Pacing knobs: ``reply_delay`` (the
reply starts late), ``split_replies`` (each reply reaches the host in two
chunks ``split_pause`` apart, what a USB-serial adapter's latency timer does)
and ``line_baud`` (each byte takes its time on the wire: ~1.04 ms at 9600 8N1).
``command_log`` holds ``(arrival time, command)`` pairs, the time being
``time.monotonic()`` when the chunk that completed the command was read;
``output_log`` holds ``(time, bytes)`` of every write to the host.

A firmware that declares its line speed (an int ``baud`` attribute, as the myFocuserPro2 one does: 9600 on a
Nano, 115200 on an ESP32) is only understood at that speed: the link reads the speed the client set on the pty
(the master sees the slave's termios) and, when it differs, drops what the client sends and garbles what the
firmware sends (high-bit bytes, never a terminator), as a UART at the wrong baud rate does.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import queue
import select
import termios
import threading
import time
import tty
from collections import deque
from contextlib import contextmanager
from types import TracebackType
from typing import Callable, Iterator, Self

from alpaca_focuser.emulator.base import Firmware
from alpaca_focuser.emulator.firmware import MoonliteFirmware

logger = logging.getLogger("alpaca_focuser.emulator")

#: Poll timeout; bounds the latency of motion, fault injection and stop().
POLL_INTERVAL_S = 0.01
#: Default pause between the two chunks of a reply when ``split_replies`` is set.
SPLIT_PAUSE_S = 0.02
#: Bits per byte on an 8N1 line (start, 8 data, stop): a byte takes 10/baud seconds.
BITS_PER_BYTE = 10
_GARBAGE = b"Z?!\x00"


class PtyLink:
    """Serve a firmware state machine on a pty, optionally symlinked to ``link_path``.

    Thread safety: the emulator thread holds :attr:`lock` while it feeds the
    firmware.  Reading single firmware properties from a test is fine without
    it (they never mutate state); hold ``emu.lock`` to read several fields
    consistently or to change firmware state while running.
    """

    def __init__(
        self,
        firmware: Firmware,
        link_path: str | None = None,
        boot_delay: float = 0.0,
        *,
        name: str = "serial",
        reply_delay: float = 0.0,
        split_pause: float | None = None,
        line_baud: float | None = None,
    ) -> None:
        self.firmware = firmware
        self.name = name
        self.link_path = link_path
        self.boot_delay = boot_delay
        self.lock = threading.Lock()
        # Pacing and fault injection knobs, read by the thread on every reply.
        self.reply_delay: float = reply_delay
        self.split_replies: bool = split_pause is not None
        self.split_pause: float = SPLIT_PAUSE_S if split_pause is None else split_pause
        self.line_baud: float | None = line_baud  #: None: replies take no time on the wire
        self.silent: bool = False
        self.corrupt_replies: bool = False
        # Observability for tests.
        self.open_count = 0  #: client opens detected so far
        self.boot_ignored_bytes = 0  #: input bytes discarded while "booting"
        self.boot_ignored_commands = 0  #: command terminators (``#`` or newline) among them
        self.wrong_baud_bytes = 0  #: input bytes discarded because the client's baud rate is not the firmware's
        self.client_open = False
        self.command_log: list[tuple[float, str]] = []  #: (monotonic arrival time, command), in order
        self.output_log: list[tuple[float, bytes]] = []  #: (monotonic time, bytes) of every write to the host

        self._out: deque[tuple[float, bytes]] = deque()  # (due time, bytes) to write, in due order
        self._last_due = 0.0
        self._line_free_at = 0.0  # when the emulated UART has sent the last scheduled byte

        self._master: int | None = None
        self._slave_name: str | None = None
        self._boot_until = 0.0
        self._poller: select.poll | None = None
        self._requests: queue.Queue[tuple[Callable[[], None], threading.Event]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- lifecycle
    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        self._open_pty()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-emulator", daemon=True)
        self._thread.start()
        logger.info("%s emulator on %s (link %s)", self.name, self._slave_name, self.link_path)
        return self

    def stop(self) -> None:
        """Stop the thread, close the pty and remove the link.  Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._close_pty()
        # Run anything queued after the thread exited so callers are not stuck.
        self._drain_requests()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def device_path(self) -> str:
        """What a client should open: the link if configured, else /dev/pts/N."""
        if self.link_path is not None:
            return self.link_path
        if self._slave_name is None:
            raise RuntimeError("emulator not started (or unplugged)")
        return self._slave_name

    @property
    def slave_name(self) -> str | None:
        """Current /dev/pts/N, or None while unplugged/stopped."""
        return self._slave_name

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def arrivals(self, command: str) -> list[float]:
        """Monotonic arrival times of every ``command`` (exact text, e.g. ``"FQ"``) so far."""
        return [t for t, c in list(self.command_log) if c == command]

    # -------------------------------------------------------- fault injection
    def unplug(self) -> None:
        """Pull the cable: close the master (client sees EIO/hangup), drop the link.

        Firmware state is kept, as if the controller stayed powered.
        """
        self._call_in_thread(self._close_pty)

    def replug(self) -> None:
        """Plug back in: a fresh pty pair, the link pointing at it, same firmware."""

        def do() -> None:
            if self._master is None:
                self._open_pty()
            else:
                logger.info("replug: already plugged in")

        self._call_in_thread(do)

    def send_garbage(self, data: bytes) -> None:
        """Write raw, unsolicited bytes to the line now."""
        self._call_in_thread(lambda: self._write(data))

    def _call_in_thread(self, fn: Callable[[], None]) -> None:
        thread = self._thread
        if thread is None or not thread.is_alive() or threading.current_thread() is thread:
            fn()
            return
        done = threading.Event()
        self._requests.put((fn, done))
        # reply_delay / split pauses can hold the thread up; wait generously.
        if not done.wait(timeout=5 + 2 * self.reply_delay):
            raise TimeoutError("emulator thread did not run the request")

    def _drain_requests(self) -> None:
        while True:
            try:
                fn, done = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            except Exception:  # keep serving; the caller will see the effect (or not)
                logger.exception("emulator request failed")
            finally:
                done.set()

    # ------------------------------------------------------------------ pty
    def _open_pty(self) -> None:
        master, slave = os.openpty()
        try:
            tty.setraw(slave)  # no echo / line discipline before the client configures it
            self._slave_name = os.ttyname(slave)
        finally:
            os.close(slave)  # so POLLHUP tells us whether a client has it open
        os.set_blocking(master, False)  # a client that never reads must not wedge us
        self._master = master
        self._poller = select.poll()
        self._poller.register(master, select.POLLIN | select.POLLHUP | select.POLLERR)
        self.client_open = False
        if self.link_path is not None:
            self._make_link(self._slave_name)

    def _close_pty(self) -> None:
        if self._master is not None:
            os.close(self._master)
            logger.info("pty %s closed (unplugged)", self._slave_name)
        self._master = None
        self._poller = None
        self.client_open = False
        self._out.clear()
        self._remove_link()
        self._slave_name = None

    def _make_link(self, target: str) -> None:
        assert self.link_path is not None
        if os.path.lexists(self.link_path) and not os.path.islink(self.link_path):
            raise FileExistsError(f"{self.link_path} exists and is not a symlink; not replacing it")
        # Atomic replace of a stale link: build a temporary one and rename over.
        tmp = f"{self.link_path}.tmp{os.getpid()}"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, self.link_path)

    def _remove_link(self) -> None:
        """Remove the link, but only if it still points at our slave."""
        if self.link_path is None or self._slave_name is None:
            return
        try:
            if os.readlink(self.link_path) == self._slave_name:
                os.unlink(self.link_path)
        except OSError:
            pass  # already gone or replaced by someone else

    # ------------------------------------------------------------ the thread
    def _run(self) -> None:
        while not self._stop.is_set():
            self._drain_requests()
            try:
                idle = self._serve_once()
            except Exception:
                logger.exception("emulator loop error")
                idle = True
            if idle:
                self._stop.wait(POLL_INTERVAL_S)

    def _serve_once(self) -> bool:
        """One poll of the master, then any output that is due.  Returns True if the caller should sleep."""
        if self._master is None or self._poller is None:
            return True  # unplugged
        timeout = POLL_INTERVAL_S
        if self._out:
            timeout = min(timeout, max(0.0, self._out[0][0] - time.monotonic()))
        events = self._poller.poll(math.ceil(timeout * 1000))
        now = time.monotonic()  # the arrival time of whatever was just received
        mask = 0
        for _, ev in events:
            mask |= ev
        if mask & select.POLLHUP:
            if self.client_open:
                logger.info("client closed %s", self._slave_name)
                self.client_open = False
                self._out.clear()  # a reply to nobody
            if mask & select.POLLIN:
                self._read()  # whatever the client wrote before closing
            return True  # POLLHUP is level-triggered: sleep instead of spinning
        if not self.client_open:
            self.client_open = True
            self.open_count += 1
            self._boot_until = now + self.boot_delay
            with self.lock:
                banner = self.firmware.boot()  # DTR reset: volatile state and the receive buffer are gone
            self._out.clear()
            self._line_free_at = self._last_due = now
            if banner:
                self._schedule(banner, now)
            logger.info("client opened %s (boot delay %.2fs)", self._slave_name, self.boot_delay)
        if mask & select.POLLIN:
            data = self._read()
            if data:
                self._handle_input(data, now)
        self._write_due(time.monotonic())
        return False

    def _read(self) -> bytes:
        assert self._master is not None
        try:
            return os.read(self._master, 1024)
        except OSError as e:
            if e.errno not in (errno.EIO, errno.EAGAIN):
                raise
            return b""

    def _handle_input(self, data: bytes, now: float) -> None:
        if now < self._boot_until:
            self.boot_ignored_bytes += len(data)
            self.boot_ignored_commands += data.count(b"#") + data.count(b"\n")
            logger.debug("booting, ignored %r", data)
            return
        if not self._baud_matches():
            self.wrong_baud_bytes += len(data)
            logger.debug("wrong baud rate, ignored %r", data)
            return
        with self.lock:
            seen = len(self.firmware.commands)
            replies = self.firmware.feed_replies(data)
            self.command_log.extend((now, command) for command in self.firmware.commands[seen:])
        if self.silent:
            if replies:
                logger.debug("silent: dropping %d replies", len(replies))
            return
        for reply in replies:
            if self.corrupt_replies:
                reply = (_GARBAGE * len(reply))[: len(reply) - 1] + reply[-1:]
            logger.debug("reply %r", reply)
            self._schedule(reply, now)

    def _schedule(self, reply: bytes, now: float) -> None:
        """Queue ``reply`` for writing: after ``reply_delay``, behind what the line is still sending, each byte
        taking its line time, and in two chunks ``split_pause`` apart when ``split_replies`` is set."""
        byte_time = BITS_PER_BYTE / self.line_baud if self.line_baud else 0.0
        start = max(now + self.reply_delay, self._line_free_at)
        self._line_free_at = done = start + len(reply) * byte_time
        if self.split_replies and len(reply) > 1:
            half = len(reply) // 2
            first_at = start + half * byte_time
            self._enqueue(first_at, reply[:half])
            self._enqueue(max(done, first_at + self.split_pause), reply[half:])
        elif byte_time:
            for i in range(len(reply)):
                self._enqueue(start + (i + 1) * byte_time, reply[i:i + 1])
        else:
            self._enqueue(start, reply)

    def _enqueue(self, due: float, data: bytes) -> None:
        self._last_due = due = max(due, self._last_due)  # never overtake bytes scheduled earlier
        self._out.append((due, data))

    def _write_due(self, now: float) -> None:
        while self._out and self._out[0][0] <= now:
            self._write(self._out.popleft()[1])

    def _baud_matches(self) -> bool:
        """Whether the client's line speed is the firmware's (always, for a firmware that declares none)."""
        wanted = getattr(self.firmware, "baud", None)
        if not isinstance(wanted, int) or self._master is None:
            return True
        try:
            speed = termios.tcgetattr(self._master)[5]  # the slave's output speed, as the client set it
        except termios.error:
            return True
        return bool(speed == getattr(termios, f"B{wanted}", speed))

    def _write(self, data: bytes) -> None:
        if self._master is None:
            logger.warning("unplugged: dropping %r", data)
            return
        if not self._baud_matches():
            data = bytes((byte ^ 0x5A) | 0x80 for byte in data)  # what a UART at another speed makes of it
        # Logged before the write, so whoever has read these bytes finds them in the log.
        self.output_log.append((time.monotonic(), data))
        try:
            written = os.write(self._master, data)
        except OSError as e:
            logger.warning("write to pty failed (%s): dropping %r", e, data)
            self.output_log.pop()
            return
        if written < len(data):
            self.output_log[-1] = (self.output_log[-1][0], data[:written])
            logger.warning("pty buffer full: dropped %r", data[written:])


class MoonliteEmulator(PtyLink):
    """A :class:`MoonliteFirmware` (``profile`` "moonlite" or "clone") served on a pty."""

    firmware: MoonliteFirmware

    def __init__(
        self,
        link_path: str | None = None,
        profile: str = "moonlite",
        boot_delay: float = 0.0,
        steps_per_second: float | None = None,
        temperature: float = 10.0,
        position: int = 0,
        *,
        reply_delay: float = 0.0,
        split_pause: float | None = None,
        line_baud: float | None = None,
    ) -> None:
        firmware = MoonliteFirmware(
            profile=profile, steps_per_second=steps_per_second, temperature=temperature, position=position
        )
        super().__init__(firmware, link_path, boot_delay, name="moonlite", reply_delay=reply_delay,
                         split_pause=split_pause, line_baud=line_baud)


@contextmanager
def silent_pty(link: str) -> Iterator[str]:
    """A pty behind the symlink ``link`` that nobody reads or answers (a powered-off or foreign device): the master
    is held open and left alone. Yields ``link``; removed on exit."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.symlink(os.ttyname(slave), link)
    os.close(slave)
    try:
        yield link
    finally:
        os.unlink(link)
        os.close(master)
