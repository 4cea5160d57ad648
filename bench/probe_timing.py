"""Benchmark: how long probing a port and a ``driver = "auto"`` connect take, per emulated controller.

    .venv/bin/python bench/probe_timing.py [--repeat 3]

Every protocol and board the emulator has, answering at once and resetting whenever the port opens: Moonlite (2 s
boot on the link), myFocuserPro2 Nano and ESP32 (the firmware's own 1.6 s / 1.0 s boot, the ESP32's banner; or a
board without auto-reset), Pegasus DMFC with recent firmware, firmware 2.8 (``\\r\\n``), old firmware (no echoes),
an old DMFC that reboots on open (2 s), and a FocusCube 2. For each: the whole probe, the try that answered (the
dialect's handshake through the boot), and an ``auto`` connect (the probe, then the chosen driver's own connect,
which reopens the port and so waits out the boot once more). Then a silent pty (every dialect's whole window runs
out), and ``auto``'s worst connects, compared with the device's CONNECT_TIMEOUT: the first choice gone (its own
handshake window runs out first) and then nothing answering, or an ESP32 myFocuserPro2, the last one tried, in
its place. No network at all; one repeat takes about five minutes.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from alpaca_focuser.config import parse_config
from alpaca_focuser.drivers.auto import AutoDriver
from alpaca_focuser.drivers.probe import REOPEN_PAUSE, ProbeResult, candidates, probe_port
from alpaca_focuser.drivers.registry import SERIAL_DRIVER_CLASSES, serial_driver_class
from alpaca_focuser.emulator.cli import PROTOCOLS
from alpaca_focuser.emulator.pty_link import PtyLink, silent_pty
from alpaca_focuser.errors import DriverError
from alpaca_focuser.focuser.device import CONNECT_TIMEOUT

MOONLITE_BOOT = 2.0  # the Moonlite dialect's boot_time: an Arduino's bootloader after a DTR reset
#: (protocol, profile, board, firmware options, link boot delay). The myFocuserPro2 and old-DMFC firmwares model
#: their own reset on open; Moonlite's is the link's.
CASES: list[tuple[str, str, str, dict[str, Any], float]] = [
    ("moonlite", "moonlite", "answers at once", {}, 0.0),
    ("moonlite", "moonlite", "resets on open", {}, MOONLITE_BOOT),
    ("myfp2", "nano", "no auto-reset", {"resets_on_open": False}, 0.0),
    ("myfp2", "nano", "resets on open", {}, 0.0),
    ("myfp2", "esp32", "no auto-reset", {"resets_on_open": False}, 0.0),
    ("myfp2", "esp32", "resets on open", {}, 0.0),
    ("pegasus", "dmfc", "recent firmware", {"variant": "recent"}, 0.0),
    ("pegasus", "dmfc", "firmware 2.8", {"variant": "2.8"}, 0.0),
    ("pegasus", "dmfc", "old firmware", {"variant": "old"}, 0.0),
    ("pegasus", "dmfc", "resets on open", {"variant": "reset"}, 0.0),
    ("pegasus", "focuscube", "recent firmware", {"variant": "recent"}, 0.0),
]


def emulate(protocol: str, profile: str, options: dict[str, Any], boot_delay: float, link: str) -> PtyLink:
    firmware = PROTOCOLS[protocol].load()(profile=profile, steps_per_second=5000.0, temperature=10.0, **options)
    return PtyLink(firmware, link, boot_delay, name=protocol).start()


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.monotonic()
    value = run()
    return time.monotonic() - started, value


def attempts(result: ProbeResult) -> str:
    return "; ".join(f"{a.driver}@{a.baud} {a.seconds:.2f}" + ("*" if a.answered else "") for a in result.attempts)


def auto_driver(link: str) -> AutoDriver:
    cfg = parse_config({"focuser": [{"driver": "auto", "port": link, "max_step": 8000, "max_increment": 8000}]},
                       "<bench>").focusers[0]
    return AutoDriver(cfg)


def auto_connect(link: str) -> float:
    driver = auto_driver(link)
    try:
        seconds, _ = timed(driver.connect)
    finally:
        driver.close()
    return seconds


def first_choice_gone(link: str, replacement: tuple[str, str] | None) -> tuple[float, str]:
    """``auto`` connected to a myFocuserPro2 Nano (the longest handshake window), disconnected; the controller is
    then gone and the port silent (``replacement`` None) or an emulated ``(protocol, profile)`` answers there.
    Returns how long the next connect took and how it ended."""
    driver = auto_driver(link)
    try:
        emu = emulate("myfp2", "nano", {}, 0.0, link)
        try:
            driver.connect()
            driver.disconnect()
        finally:
            emu.stop()
        time.sleep(REOPEN_PAUSE)
        if replacement is None:
            with silent_pty(link):
                seconds, outcome = timed(lambda: _connect(driver))
        else:
            emu = emulate(*replacement, {}, 0.0, link)
            try:
                seconds, outcome = timed(lambda: _connect(driver))
            finally:
                emu.stop()
    finally:
        driver.close()
    return seconds, outcome


def _connect(driver: AutoDriver) -> str:
    try:
        driver.connect()
    except DriverError as exc:
        return f"failed: {exc.message[:60]}..."
    found = driver.last_probe.found if driver.last_probe is not None else None
    return f"connected to {driver.chosen} at {found.baud if found is not None else '?'} baud"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (the median is printed)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    windows = {name: serial_driver_class(name).DIALECT.link_settings.handshake_timeout
               for name in SERIAL_DRIVER_CLASSES}
    print(f"Probing order: {', '.join(f'{name} at {baud}' for name, baud in candidates())} baud; handshake "
          f"windows {', '.join(f'{name} {seconds:g} s' for name, seconds in windows.items())}")
    print(f"Figures in seconds, median of {args.repeat} run(s); '*' marks the try that answered. A shared, loaded "
          "machine adds noise.\n")
    print(f"{'controller':18} {'board':16} {'probe':>6} {'answer':>7} {'auto':>6}   tries")
    with tempfile.TemporaryDirectory(prefix="probe-bench") as folder:
        link = str(Path(folder) / "tty")
        for protocol, profile, board, options, boot_delay in CASES:
            name = f"{protocol}/{profile}"
            if protocol not in SERIAL_DRIVER_CLASSES:
                print(f"{name:18} (no {protocol} driver in the registry: not probed)")
                continue
            probes, answers, connects, last = [], [], [], None
            for _ in range(args.repeat):
                emu = emulate(protocol, profile, options, boot_delay, link)
                try:
                    seconds, last = timed(lambda: probe_port(link))
                    probes.append(seconds)
                    assert last is not None and last.found is not None and last.found.driver == protocol, last
                    answers.append(last.found.seconds)
                    time.sleep(REOPEN_PAUSE)  # the emulator notices a close only if it lasts a moment
                    connects.append(auto_connect(link))
                finally:
                    emu.stop()
            print(f"{name:18} {board:16} {statistics.median(probes):6.2f} {statistics.median(answers):7.2f} "
                  f"{statistics.median(connects):6.2f}   {attempts(last)}")
        with silent_pty(link):
            seconds, result = timed(lambda: probe_port(link))
        print(f"\n{'silent port':18} {'-':16} {seconds:6.2f} {'-':>7} {'-':>6}   {attempts(result)}")

        print(f"\n'auto' connect when its first choice (a myFocuserPro2 Nano) is gone; the device waits "
              f"{CONNECT_TIMEOUT:g} s (CONNECT_TIMEOUT):")
        for label, replacement in (("nothing answers", None), ("an ESP32 myFP2 now", ("myfp2", "esp32"))):
            runs = [first_choice_gone(link, replacement) for _ in range(args.repeat)]
            seconds = statistics.median(s for s, _ in runs)
            print(f"  {label:20} {seconds:6.2f} s, {CONNECT_TIMEOUT - seconds:5.2f} s to spare ({runs[-1][1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
