"""The Moonlite firmware model behind a real pseudo-terminal, with fault injection.

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
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import select
import threading
import time
import tty
from types import TracebackType
from typing import Callable

from alpaca_focuser.emulator.firmware import MoonliteFirmware

logger = logging.getLogger("alpaca_focuser.emulator")

#: Poll timeout; bounds the latency of motion, fault injection and stop().
POLL_INTERVAL_S = 0.01
#: Pause between the two halves of a reply when ``split_replies`` is set.
SPLIT_PAUSE_S = 0.02
_GARBAGE = b"Z?!\x00"


class MoonliteEmulator:
    """Serve a :class:`MoonliteFirmware` on a pty, optionally symlinked to ``link_path``.

    Thread safety: the emulator thread holds :attr:`lock` while it feeds the
    firmware.  Reading single firmware properties from a test is fine without
    it (they never mutate state); hold ``emu.lock`` to read several fields
    consistently or to change firmware state while running.
    """

    def __init__(
        self,
        link_path: str | None = None,
        profile: str = "moonlite",
        boot_delay: float = 0.0,
        steps_per_second: float | None = None,
        temperature: float = 10.0,
        position: int = 0,
    ) -> None:
        self.link_path = link_path
        self.boot_delay = boot_delay
        self.firmware = MoonliteFirmware(
            profile=profile, steps_per_second=steps_per_second, temperature=temperature, position=position
        )
        self.lock = threading.Lock()
        # Fault injection knobs, read by the thread on every reply.
        self.reply_delay: float = 0.0
        self.split_replies: bool = False
        self.silent: bool = False
        self.corrupt_replies: bool = False
        # Observability for tests.
        self.open_count = 0  #: client opens detected so far
        self.boot_ignored_bytes = 0  #: input bytes discarded while "booting"
        self.boot_ignored_commands = 0  #: '#' terminators among them
        self.client_open = False

        self._master: int | None = None
        self._slave_name: str | None = None
        self._boot_until = 0.0
        self._poller: select.poll | None = None
        self._requests: queue.Queue[tuple[Callable[[], None], threading.Event]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- lifecycle
    def start(self) -> "MoonliteEmulator":
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        self._open_pty()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="moonlite-emulator", daemon=True)
        self._thread.start()
        logger.info("Moonlite emulator on %s (link %s)", self._slave_name, self.link_path)
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

    def __enter__(self) -> "MoonliteEmulator":
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
        """One poll of the master.  Returns True if the caller should sleep."""
        if self._master is None or self._poller is None:
            return True  # unplugged
        events = self._poller.poll(POLL_INTERVAL_S * 1000)
        mask = 0
        for _, ev in events:
            mask |= ev
        if mask & select.POLLHUP:
            if self.client_open:
                logger.info("client closed %s", self._slave_name)
                self.client_open = False
            if mask & select.POLLIN:
                self._read()  # whatever the client wrote before closing
            return True  # POLLHUP is level-triggered: sleep instead of spinning
        if not self.client_open:
            self.client_open = True
            self.open_count += 1
            self._boot_until = time.monotonic() + self.boot_delay
            with self.lock:
                self.firmware.reset_input()  # a reboot empties the receive buffer
            logger.info("client opened %s (boot delay %.2fs)", self._slave_name, self.boot_delay)
        if mask & select.POLLIN:
            data = self._read()
            if data:
                self._handle_input(data)
        return False

    def _read(self) -> bytes:
        assert self._master is not None
        try:
            return os.read(self._master, 1024)
        except OSError as e:
            if e.errno not in (errno.EIO, errno.EAGAIN):
                raise
            return b""

    def _handle_input(self, data: bytes) -> None:
        if time.monotonic() < self._boot_until:
            self.boot_ignored_bytes += len(data)
            self.boot_ignored_commands += data.count(b"#")
            logger.debug("booting, ignored %r", data)
            return
        with self.lock:
            replies = self.firmware.feed_replies(data)
        if self.silent:
            if replies:
                logger.debug("silent: dropping %d replies", len(replies))
            return
        for reply in replies:
            if self.reply_delay > 0:
                time.sleep(self.reply_delay)
            if self.corrupt_replies:
                reply = (_GARBAGE * len(reply))[: len(reply) - 1] + b"#"
            logger.debug("reply %r", reply)
            if self.split_replies and len(reply) > 1:
                half = len(reply) // 2
                self._write(reply[:half])
                time.sleep(SPLIT_PAUSE_S)
                self._write(reply[half:])
            else:
                self._write(reply)

    def _write(self, data: bytes) -> None:
        if self._master is None:
            logger.warning("unplugged: dropping %r", data)
            return
        try:
            written = os.write(self._master, data)
        except OSError as e:
            logger.warning("write to pty failed (%s): dropping %r", e, data)
            return
        if written < len(data):
            logger.warning("pty buffer full: dropped %r", data[written:])
