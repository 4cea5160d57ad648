"""Probing a port (drivers/probe.py, `alpaca-focuser probe`, `ports --probe`) against every emulated controller.

Each test runs the probe through a real pty against the project's emulators (independent of the drivers) and
checks, on each firmware's own command log, that probing sent nothing but queries. Handshake windows and boot
delays are kept short (WINDOW, BOOT) so that the suite stays quick; bench/probe_timing.py measures the real ones.
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import serial

from alpaca_focuser.drivers import moonlite_protocol as mp
from alpaca_focuser.drivers import probe
from alpaca_focuser.drivers.dialect import LinkSettings
from alpaca_focuser.drivers.moonlite import MoonliteDialect, MoonliteDriver
from alpaca_focuser.drivers.ports import PortInfo, format_ports
from alpaca_focuser.drivers.registry import SERIAL_DRIVER_CLASSES
from alpaca_focuser.emulator.pty_link import PtyLink, silent_pty
from alpaca_focuser.errors import SERIAL_PORT_ERROR
from conftest import REPO
from emulated import DEFAULT_PROFILES, FIRMWARE_VERSION, PROFILES, emulators, harmful, need_driver, only_queries

#: Unsolicited noise that no protocol's reply grammar accepts. (A well-formed reply, such as Moonlite's "123#",
#: arriving just after a query is indistinguishable from the answer on any of these protocols.)
NOISE = (b"12G?#", b"\x00\x00#", b"\xff\xfe\x00", b"Z?!", b"#", b"1.2.?\r\n", b"\xfe\xff\r\n\x00\n",
         b"OK_?#\n", b"F3 8#", bytes(range(0x80, 0x100)))
WINDOW = 1.5  # each handshake's window here: > BOOT + a lost first query + one read timeout
BOOT = 0.3  # boot delay of a board that resets on open, in these tests
#: The order the probe must keep (see probe.py): only the registered ones are checked.
SAFE_ORDER = ("myfp2", "pegasus", "moonlite")


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Callable[..., PtyLink]]:
    """``emulator(protocol, profile, **options)``: a started emulator linked in tmp_path (see emulated.py)."""
    yield from emulators(tmp_path)


class Opens:
    """A serial factory that counts the opens."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, **options: Any) -> serial.Serial:
        self.count += 1
        return serial.Serial(**options)


@contextlib.contextmanager
def registry_as(entries: dict[str, str]) -> Iterator[None]:
    """The registry holding exactly ``entries`` (in that order) for the block; the modules share the dict."""
    saved = dict(SERIAL_DRIVER_CLASSES)
    SERIAL_DRIVER_CLASSES.clear()
    SERIAL_DRIVER_CLASSES.update(entries)
    try:
        yield
    finally:
        SERIAL_DRIVER_CLASSES.clear()
        SERIAL_DRIVER_CLASSES.update(saved)


def registered_in_order() -> list[str]:
    return [name for name in SERIAL_DRIVER_CLASSES if name in SAFE_ORDER]


# --- order --------------------------------------------------------------------------------------------------------
def test_the_registry_lists_the_dialects_in_the_safe_probing_order() -> None:
    names = registered_in_order()
    assert names == [n for n in SAFE_ORDER if n in names], (
        f"drivers/registry.py lists {names}: probing must try {' before '.join(SAFE_ORDER)} (see probe.py)")
    assert [name for name, _ in probe.candidates()][:len(SERIAL_DRIVER_CLASSES)] == list(SERIAL_DRIVER_CLASSES)


class _LineDialect(MoonliteDialect):
    link_settings = LinkSettings(default_baud=19200)


class _TwoSpeedDialect(MoonliteDialect):
    link_settings = LinkSettings(default_baud=9600, other_bauds=(115200, 9600))


class LineDriver(MoonliteDriver):
    DIALECT = _LineDialect


class TwoSpeedDriver(MoonliteDriver):
    DIALECT = _TwoSpeedDialect


def test_candidates_are_each_default_baud_then_the_other_bauds_or_one_baud_for_all() -> None:
    with registry_as({"a": "test_probe:LineDriver", "b": "test_probe:TwoSpeedDriver",
                      "moonlite": "alpaca_focuser.drivers.moonlite:MoonliteDriver"}):
        assert probe.candidates() == [("a", 19200), ("b", 9600), ("moonlite", 9600), ("b", 115200)]
        assert probe.candidates(baud=4800) == [("a", 4800), ("b", 4800), ("moonlite", 4800)]


# --- every emulated controller ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("protocol", "profile"), PROFILES)
def test_probe_finds_each_emulated_controller_with_queries_only(emulator: Any, protocol: str, profile: str) -> None:
    """Every emulated firmware, registered or not: each registered dialect's queries reach it, none of them
    moves or sets anything, none but its own dialect claims it."""
    emu = emulator(protocol, profile)
    opened = Opens()
    result = probe.probe_port(emu.device_path, timeout=WINDOW, serial_factory=opened)
    found = result.found
    only_queries(protocol, emu)
    assert opened.count == len(result.attempts)  # each try opened the port anew (and closed it)
    if protocol not in SERIAL_DRIVER_CLASSES:
        assert found is None, f"the {protocol} emulator was taken for {result.summary()}"
        need_driver(protocol)  # skips: what is left needs its driver
    assert found is not None, result.summary()
    assert (found.driver, found.firmware) == (protocol, FIRMWARE_VERSION[protocol](emu.firmware))
    assert result.summary() == probe.controller_summary(protocol, found.model, found.firmware)
    tries = [(a.driver, a.baud) for a in result.attempts]
    assert tries == probe.candidates()[:len(tries)]  # in the safe order, stopping at the first answer
    assert found.baud == getattr(emu.firmware, "baud", found.baud)  # at the board's own speed (ESP32: 115200)
    assert all(a.problem == "no answer" for a in result.attempts[:-1])


@pytest.mark.parametrize(("protocol", "profile"), DEFAULT_PROFILES)
def test_probe_waits_out_the_boot_of_a_board_that_resets_on_every_open(emulator: Any, protocol: str,
                                                                       profile: str) -> None:
    need_driver(protocol)
    emu = emulator(protocol, profile, boot_delay=BOOT)
    result = probe.probe_port(emu.device_path, timeout=WINDOW)
    assert result.found is not None and result.found.driver == protocol, result.summary()
    assert emu.open_count >= min(2, len(result.attempts))  # it saw the reopens (a loaded machine may miss one)
    assert emu.boot_ignored_bytes > 0  # queries really went unheard while it booted, and were retried
    assert result.found.seconds > BOOT
    only_queries(protocol, emu)


def test_probe_of_a_silent_port_says_what_was_tried(tmp_path: Path) -> None:
    with silent_pty(str(tmp_path / "ttySilent")) as path:
        started = time.monotonic()
        result = probe.probe_port(path, timeout=0.6)
        took = time.monotonic() - started
    assert result.found is None and result.port_error is None
    assert [(a.driver, a.baud) for a in result.attempts] == probe.candidates()
    assert all(a.problem == "no answer" and a.seconds >= 0.6 for a in result.attempts)
    assert took >= len(result.attempts) * 0.6
    tried = ", ".join(f"{name} at {baud} baud" for name, baud in probe.candidates())
    assert result.summary() == f"nothing answered (tried {tried})"


def test_probe_takes_no_garbage_for_a_controller(emulator: Any) -> None:
    """A line that answers every query with nonsense, and shouts more in between: nothing is identified."""
    emu = emulator("moonlite", "moonlite")
    emu.corrupt_replies = True
    noise = threading.Event()

    def shout() -> None:
        for junk in itertools.cycle(NOISE):
            if noise.wait(0.03):
                return
            emu.send_garbage(junk)

    shouter = threading.Thread(target=shout, daemon=True)
    shouter.start()
    try:
        result = probe.probe_port(emu.device_path, timeout=1.0)
    finally:
        noise.set()
        shouter.join()
    assert result.found is None and len(result.attempts) == len(probe.candidates()), result.summary()
    only_queries("moonlite", emu)


@pytest.mark.parametrize(("protocol", "profile"), DEFAULT_PROFILES)
def test_a_dialect_takes_its_own_controller_garbling_every_reply_for_nothing(emulator: Any, protocol: str,
                                                                            profile: str) -> None:
    need_driver(protocol)
    emu = emulator(protocol, profile)
    emu.corrupt_replies = True
    baud = probe.candidates()[list(SERIAL_DRIVER_CLASSES).index(protocol)][1]
    result = probe.probe_port(emu.device_path, timeout=1.0, order=[(protocol, baud)])
    assert result.found is None and result.attempts[0].problem == "no answer"
    only_queries(protocol, emu)


def test_the_query_lists_catch_what_could_move_or_set() -> None:
    """The judge of the tests above, on known commands (emulated.py)."""
    assert not harmful("moonlite", "GV", False) and harmful("moonlite", "SN0001", False)
    assert harmful("moonlite", "FG", False) and not harmful("moonlite", "03", True) and harmful("moonlite", "SN1", True)
    assert not harmful("myfp2", "03", False) and harmful("myfp2", "05100", False) and harmful("myfp2", "0012", False)
    assert not harmful("myfp2", "GV", True) and harmful("myfp2", "05x", True)  # a real Nano: 0 and 5 (a move)
    assert not harmful("pegasus", "#", False) and harmful("pegasus", "M:100", False)
    assert not harmful("pegasus", ":GV#:GV#", True) and harmful("pegasus", "M:1x", True)


# --- the port itself ------------------------------------------------------------------------------------------------
def test_a_missing_or_busy_port_is_a_port_error_not_a_silent_controller(emulator: Any, tmp_path: Path) -> None:
    missing = probe.probe_port(str(tmp_path / "ttyNothing"))
    assert missing.port_error is not None and missing.port_error.number == SERIAL_PORT_ERROR
    assert missing.attempts == () and "No such file" in missing.summary()
    emu = emulator("moonlite", "moonlite")
    with serial.Serial(emu.device_path, exclusive=True):  # a running server holds it
        busy = probe.probe_port(emu.device_path)
    assert busy.port_error is not None and "in use by another program" in busy.summary()
    assert emu.firmware.commands == []


class _SettingDialect(MoonliteDialect):
    """A handshake that breaks the rule: it syncs before asking the version."""

    def handshake(self, link: Any, timeout: float) -> str:
        link.send(mp.encode_set_position(1234))
        return super().handshake(link, timeout)


class SettingDriver(MoonliteDriver):
    DIALECT = _SettingDialect


def test_a_handshake_that_sends_more_than_queries_is_refused_before_it_reaches_the_wire(emulator: Any) -> None:
    emu = emulator("moonlite", "moonlite")
    with registry_as({"rogue": "test_probe:SettingDriver", "moonlite": SERIAL_DRIVER_CLASSES["moonlite"]}):
        result = probe.probe_port(emu.device_path, timeout=WINDOW)
    rogue = result.attempts[0]
    assert rogue.driver == "rogue" and not rogue.answered and rogue.problem.startswith("refused: the handshake "
                                                                                        "tried to send :SP04D2#")
    assert result.found is not None and result.found.driver == "moonlite"
    assert emu.firmware.position == 0 and only_queries("moonlite", emu) == ["GV"]


def test_stopping_cancels_a_probe_at_once(tmp_path: Path) -> None:
    stop = threading.Event()
    with silent_pty(str(tmp_path / "ttySilent")) as path:
        threading.Timer(0.3, stop.set).start()
        started = time.monotonic()
        with pytest.raises(probe.Cancelled):
            probe.probe_port(path, timeout=10.0, stop=stop)
        assert time.monotonic() - started < 2.0


# --- the command line -------------------------------------------------------------------------------------------
def cli(*args: str, code: str | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``alpaca-focuser ARGS`` (or python ``code``) as a real process from the repository."""
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "alpaca_focuser", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_probe_command_exit_status_and_output(emulator: Any, tmp_path: Path) -> None:
    emu = emulator("moonlite", "moonlite")
    found = cli("probe", emu.device_path, "--timeout", "0.6")  # no boot delay: a short window will do
    assert found.returncode == 0, found.stderr
    assert f"{emu.device_path}: moonlite (firmware 10)" in found.stdout
    assert "  moonlite at 9600 baud: answered in" in found.stdout
    assert f'driver = "moonlite" (or "auto"), port = "{emu.device_path}"' in found.stdout
    with silent_pty(str(tmp_path / "ttySilent")) as path:
        nothing = cli("probe", path, "--timeout", "0.6")
    assert nothing.returncode == 1, nothing.stderr
    assert f"{path}: nothing answered (tried " in nothing.stdout and "moonlite at 9600 baud" in nothing.stdout
    bad = cli("probe", str(tmp_path / "ttyNone"))
    assert bad.returncode == 2 and "Cannot open serial port" in bad.stderr and bad.stdout.count("\n") == 1
    assert cli("probe", emu.device_path, "--timeout", "0").returncode == 2  # argparse refuses it
    only_queries("moonlite", emu)


def test_format_ports_shows_what_probing_found() -> None:
    usb = PortInfo("/dev/ttyUSB0", ("/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0",), 0x1A86, 0x7523,
                   "USB Serial", None, "QinHeng")
    uart = PortInfo("/dev/ttyS0", (), None, None, "", None, None)
    text = format_ports([usb, uart], {"/dev/ttyUSB0": "moonlite (firmware 10)"})
    lines = text.splitlines()
    assert lines[2] == '    port = "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0"'
    assert lines[3] == "    probe: moonlite (firmware 10)" and lines[5] == "    probe: not probed"
    assert "probe:" not in format_ports([usb, uart])


def test_ports_probe_as_a_real_process(emulator: Any) -> None:
    """The port listing is the system's (pyserial reads sysfs, where a pty never appears): the child process
    lists the emulator's pty as a USB adapter, plus a built-in UART, and runs the real command."""
    emu = emulator("moonlite", "moonlite")
    code = ("import sys\n"
            "from serial.tools import list_ports\n"
            "from serial.tools.list_ports_common import ListPortInfo\n"
            f"usb = ListPortInfo({emu.device_path!r}, skip_link_detection=True)\n"
            "usb.vid, usb.pid, usb.description, usb.manufacturer = 0x1A86, 0x7523, 'USB Serial', 'QinHeng'\n"
            "uart = ListPortInfo('/dev/ttyS7', skip_link_detection=True)\n"
            "list_ports.comports = lambda *args, **kwargs: [uart, usb]\n"
            "from alpaca_focuser.cli import main\n"
            "sys.exit(main(['ports', '--probe', '--timeout', '0.6']))\n")
    done = cli(code=code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(emu.device_path))
    assert "1a86:7523" in lines[at] and lines[at + 1] == "    probe: moonlite (firmware 10)"
    assert "    probe: not probed: not a USB adapter (often a console or Bluetooth); `alpaca-focuser probe " \
           "/dev/ttyS7` tries it" in lines
    assert "Probing 1 USB serial port(s)" in done.stderr
    only_queries("moonlite", emu)
