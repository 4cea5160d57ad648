"""Which focuser controller answers on a serial port: every registered dialect's handshake, queries only.

Shared by ``alpaca-focuser probe PORT``, ``alpaca-focuser ports --probe`` and ``driver = "auto"`` (auto.py). The
probe owns the port only while a handshake runs and closes it after each try, so nothing else is held open.

Order. Dialects are tried in the registry's order (registry.py), each at its own default baud; then, in the same
order, at the other speeds their firmwares use (``LinkSettings.other_bauds``: an ESP32 myFocuserPro2 at 115200
is rarer than a Nano at 9600). The registry lists myFocuserPro2, then Pegasus, then Moonlite, because of what
each protocol's queries do to the other controllers (read from their firmware sources):

* myFocuserPro2 first. Its parser keeps the last command in its line buffer after the ``#`` (it clears the line
  only on ``:``) and runs whatever the line holds at every ``#``: a bare ``#`` (Pegasus's identify query) would
  run the previous session's last command again, a move if that was one. Boards that reset when the port opens
  start with an empty line, but a Pro Micro (native USB) or a board with auto-reset disabled does not, and over
  native USB the baud rate protects nothing. Probed first, its own handshake leaves a query in that line.
  Its frames are harmless elsewhere: Moonlite firmware ignores unknown commands, and a Pegasus gets a line that
  starts with ``:`` (no command) once its own probe sends a newline; the Pegasus handshake takes the ``ERR:`` (or
  junk) that answers it for a board that is awake and asks again at once.
* Pegasus before Moonlite. Its queries (``#``, ``A``) are letters and newlines: a Moonlite firmware runs only
  known two-letter commands, which cannot be made of them.
* Moonlite last. A myFocuserPro2 reads Moonlite's ``:GV#`` as command ``toInt("GV")`` = 0 and answers its
  position (``P5000#``), which Moonlite's version parser takes for firmware "P5000": tried earlier, a
  myFocuserPro2 would be driven as a Moonlite.

tests/test_probe_order.py shows both myFocuserPro2 hazards on its emulator (whose serial input follows the
firmware's ``serialEvent``: emulator/framing.py) in the wrong order, and their absence in this one.

Each try opens the port anew at the dialect's baud. A board that resets when the port opens (DTR) reboots on
every open, so each try waits out its boot: in silence where the dialect says so (``wait_out_boot``), else by
retrying its first query through the boot window, which the handshake does. The handshake's link refuses a
``send`` outside a query: a dialect whose handshake tried to set something would fail the probe loudly instead
of changing a controller that is maybe not even its own.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

import serial

from alpaca_focuser.drivers.dialect import Dialect, wait_out_boot
from alpaca_focuser.drivers.ports import PORT_ERRORS, describe_port_error, open_serial
from alpaca_focuser.drivers.protocol import Cancelled, ProtocolError, show_frame
from alpaca_focuser.drivers.registry import SERIAL_DRIVER_CLASSES, serial_driver_class
from alpaca_focuser.drivers.serial_link import SerialLink
from alpaca_focuser.errors import SERIAL_PORT_ERROR, DriverError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Between closing the port after one try and opening it for the next: DTR stays low long enough for the
#: board's auto-reset circuit to fire again on the next open (its RC constant is ~1 ms), and the USB adapter
#: settles.
REOPEN_PAUSE = 0.1
DEFAULT_READ_TIMEOUT = 0.5


class NotAQuery(ProtocolError):
    """A handshake tried to write a command that expects no reply: probing writes queries only."""


@dataclass(frozen=True)
class Attempt:
    """One handshake try: a dialect at a baud, and what came of it."""

    driver: str  # the config name (``driver = "..."``)
    baud: int
    seconds: float
    firmware: str | None = None  # set when it answered
    model: str | None = None
    problem: str = ""  # why it did not answer

    @property
    def answered(self) -> bool:
        return self.firmware is not None

    def describe(self) -> str:
        """``moonlite at 9600 baud: answered in 2.05 s`` / ``...: no answer (...) after 3.00 s``."""
        head = f"{self.driver} at {self.baud} baud"
        if self.answered:
            return f"{head}: answered in {self.seconds:.2f} s"
        return f"{head}: {self.problem or 'no answer'} after {self.seconds:.2f} s"


@dataclass(frozen=True)
class ProbeResult:
    """What probing one port found. ``found`` is the attempt that answered (None: nothing did);
    ``port_error`` is set when the port itself could not be used (missing, in use, no permission, vanished)."""

    port: str
    attempts: tuple[Attempt, ...]
    port_error: DriverError | None = None

    @property
    def found(self) -> Attempt | None:
        return next((a for a in self.attempts if a.answered), None)

    @property
    def tried(self) -> str:
        """``pegasus at 19200 baud, myfp2 at 9600 baud, moonlite at 9600 baud``."""
        return ", ".join(f"{a.driver} at {a.baud} baud" for a in self.attempts) or "nothing"

    def summary(self) -> str:
        """One line: ``pegasus (DMFC, firmware 2.8)``, or what went wrong and what was tried."""
        found = self.found
        if found is not None:
            return controller_summary(found.driver, found.model, found.firmware)
        if self.port_error is not None:
            return self.port_error.message
        return f"nothing answered (tried {self.tried})"


def controller_summary(driver: str, model: str | None, firmware: str | None) -> str:
    """``pegasus (DMFC, firmware 2.8)``, ``myfp2 (firmware 338)``."""
    details = [d for d in (model, f"firmware {firmware or 'unknown'}") if d]
    return f"{driver} ({', '.join(details)})"


def candidates(baud: int | None = None) -> list[tuple[str, int]]:
    """(driver name, baud) in probing order: every registered dialect at its default baud, then at its other
    bauds. ``baud`` restricts the probe to that one speed (a config's ``baud`` with ``driver = "auto"``)."""
    dialects = [(name, serial_driver_class(name).DIALECT.link_settings) for name in SERIAL_DRIVER_CLASSES]
    if baud is not None:
        return [(name, baud) for name, _ in dialects]
    first = [(name, settings.default_baud) for name, settings in dialects]
    others = [(name, b) for name, settings in dialects for b in settings.other_bauds if b != settings.default_baud]
    return first + others


class _QueriesOnly(SerialLink):
    """A link whose only writes are queries: ``send`` is refused unless ``query`` is sending. Once ``stop`` is
    set, the next query raises Cancelled, whether or not the dialect's handshake looks at ``stop`` itself."""

    _querying = False

    def query(self, frame: bytes, parser: Callable[[bytes], T], timeout: float | None = None, *,
              matches: Callable[[bytes], bool] | None = None) -> T:
        self._querying = True
        try:
            return super().query(frame, parser, timeout, matches=matches)
        finally:
            self._querying = False

    def send(self, frame: bytes, *, answer: Callable[[bytes], bool] | None = None) -> None:
        if self.stop.is_set():
            raise Cancelled()
        if not self._querying:
            raise NotAQuery(f"the handshake tried to send {show_frame(frame)}, which is not a query; probing "
                            f"sends queries only")
        super().send(frame)

    def write_halt(self, frame: bytes, *, answers: bool) -> bool:
        raise NotAQuery("the handshake tried to send a halt; probing sends queries only")


def try_dialect(port: str, driver: str, baud: int, *, timeout: float | None = None,
                read_timeout: float = DEFAULT_READ_TIMEOUT, stop: threading.Event | None = None,
                serial_factory: Callable[..., serial.Serial] = serial.Serial) -> Attempt:
    """Open ``port`` at ``baud``, run ``driver``'s handshake (for ``timeout`` s, default the dialect's own window,
    which covers its boot) and close the port. Raises DriverError (SERIAL_PORT_ERROR) when the port cannot be
    opened or fails meanwhile, Cancelled when ``stop`` is set."""
    dialect: Dialect = serial_driver_class(driver).DIALECT()
    window = dialect.link_settings.handshake_timeout if timeout is None else timeout
    started = time.monotonic()
    handle = open_serial(port, baud=baud, read_timeout=read_timeout, factory=serial_factory)
    try:
        link = _QueriesOnly(handle, dialect.framer(), read_timeout, command_name=dialect.command_name,
                            stop=stop, label=f"probe {driver} {port}")
        wait_out_boot(dialect, link)
        firmware = dialect.handshake(link, window)
    except NotAQuery as exc:
        log.error("probe: the %s dialect broke the probing rule: %s", driver, exc)
        return Attempt(driver, baud, time.monotonic() - started, problem=f"refused: {exc}")
    except ProtocolError as exc:  # NoController, or nonsense the dialect could not take for an answer
        log.debug("probe %s: %s at %d baud: %s", port, driver, baud, exc)
        return Attempt(driver, baud, time.monotonic() - started, problem="no answer")
    except PORT_ERRORS as exc:
        raise DriverError(f"Serial port {port} failed while probing: {describe_port_error(exc)}",
                          SERIAL_PORT_ERROR) from exc
    finally:
        try:
            handle.close()
        except Exception as exc:  # a vanished device can fail to close; it is gone either way
            log.debug("probe: closing %s: %s", port, exc)
    return Attempt(driver, baud, time.monotonic() - started, firmware=firmware, model=dialect.model)


def probe_port(port: str, *, baud: int | None = None, timeout: float | None = None,
               read_timeout: float = DEFAULT_READ_TIMEOUT, stop: threading.Event | None = None,
               on_attempt: Callable[[Attempt], None] | None = None, order: Iterable[tuple[str, int]] | None = None,
               serial_factory: Callable[..., serial.Serial] = serial.Serial) -> ProbeResult:
    """Try the dialects in ``order`` (default ``candidates(baud)``) on ``port`` until one answers. Never raises
    for the port (``ProbeResult.port_error``); raises Cancelled when ``stop`` is set. ``on_attempt`` sees each
    try as it ends (progress for the command line)."""
    attempts: list[Attempt] = []
    pause = stop if stop is not None else threading.Event()
    for i, (driver, speed) in enumerate(candidates(baud) if order is None else order):
        if (i and pause.wait(REOPEN_PAUSE)) or pause.is_set():
            raise Cancelled()
        try:
            attempt = try_dialect(port, driver, speed, timeout=timeout, read_timeout=read_timeout, stop=stop,
                                  serial_factory=serial_factory)
        except DriverError as exc:
            return ProbeResult(port, tuple(attempts), port_error=exc)
        attempts.append(attempt)
        log.debug("probe %s: %s", port, attempt.describe())
        if on_attempt is not None:
            on_attempt(attempt)
        if attempt.answered:
            break
    return ProbeResult(port, tuple(attempts))


def probe_ports(ports: list[str], **options: object) -> Iterator[ProbeResult]:
    """Probe several ports at once (one thread each: each port is its own line), in the order given."""
    results: dict[str, ProbeResult] = {}

    def run(port: str) -> None:
        try:
            results[port] = probe_port(port, **options)  # type: ignore[arg-type]
        except Exception as exc:  # a bug probing one port must not hide the others
            log.exception("probing %s failed", port)
            results[port] = ProbeResult(port, (), port_error=DriverError(f"probing failed: {exc!r}"))

    threads = [threading.Thread(target=run, args=(port,), name=f"probe-{port}", daemon=True) for port in ports]
    for thread in threads:
        thread.start()
    for port, thread in zip(ports, threads):
        thread.join()
        yield results[port]


# --- alpaca-focuser probe PORT -----------------------------------------------------------------------------------
def positive_seconds(text: str) -> float:
    """argparse type of ``--timeout``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def _baud(text: str) -> int:
    if not text.isdigit() or not 300 <= int(text) <= 1_000_000:  # config.py's range for ``baud``
        raise argparse.ArgumentTypeError(f"must be a whole number between 300 and 1000000, got {text}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("port", help="the serial port, e.g. /dev/ttyUSB0 or a /dev/serial/by-id/... path")
    parser.add_argument("--timeout", type=positive_seconds, default=None, metavar="S",
                        help="how long each controller's handshake keeps trying (default: each protocol's own "
                             "window, which covers the boot of a board that resets when the port opens)")
    parser.add_argument("--baud", type=_baud, default=None, metavar="N",
                        help="try every protocol at this speed only (default: each at its own)")


def run(args: argparse.Namespace) -> int:
    """Exit status 0: a controller answered; 1: nothing answered; 2: the port cannot be used."""
    print(f"Probing {args.port} with queries only ({', '.join(SERIAL_DRIVER_CLASSES)}; a board that resets "
          "when the port opens is given its boot time on each try)...", flush=True)
    result = probe_port(args.port, baud=args.baud, timeout=args.timeout,
                        on_attempt=lambda attempt: print(f"  {attempt.describe()}", flush=True))
    if result.port_error is not None:
        print(f"alpaca-focuser probe: {result.port_error.message}", file=sys.stderr)
        return 2
    found = result.found
    print(f"{args.port}: {result.summary()}")
    if found is None:
        print("Is the controller powered and plugged into this port? Its speed may also differ from the usual "
              "one: try --baud.")
        return 1
    print(f'In config.toml: driver = "{found.driver}" (or "auto"), port = "{args.port}"'
          + (f", baud = {found.baud}" if found.baud != serial_driver_class(found.driver).DIALECT.link_settings
             .default_baud else ""))
    return 0
