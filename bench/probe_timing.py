"""Benchmark: how long probing a port takes, per emulated controller, with each dialect's own handshake window.

    .venv/bin/python bench/probe_timing.py [--repeat 3]

For every protocol and profile the emulator has: ``probe_port`` on a board that answers at once, and on one that
resets whenever the port opens and ignores input while it boots (Moonlite: 2 s on the link; myFocuserPro2: its
firmware's own 1.6 s Nano / 1.0 s ESP32 boot, with the ESP32 banner; Pegasus: the old-DMFC "reset" variant, 2 s),
so every try of the probe reboots it. Then ``driver = "auto"`` connecting (the probe, then the chosen driver's own
connect, which reopens the port and so waits out the boot once more), and a silent pty, where every dialect's
whole window runs out. Protocols whose driver is not in drivers/registry.py yet are listed as not probed. No
network at all; the run takes about a minute per repeat.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import tty
from pathlib import Path
from typing import Any, Callable

from alpaca_focuser.config import parse_config
from alpaca_focuser.drivers.auto import AutoDriver
from alpaca_focuser.drivers.probe import REOPEN_PAUSE, ProbeResult, candidates, probe_port
from alpaca_focuser.drivers.registry import SERIAL_DRIVER_CLASSES
from alpaca_focuser.emulator.cli import PROTOCOLS
from alpaca_focuser.emulator.pty_link import PtyLink

MOONLITE_BOOT = 2.0  # the Moonlite dialect's boot_time: an Arduino's bootloader after a DTR reset
#: Per protocol: (firmware options, link boot delay) for a board that answers at once, and for one that resets.
BOARDS: dict[str, dict[str, tuple[dict[str, Any], float]]] = {
    "moonlite": {"no boot": ({}, 0.0), "resets on open": ({}, MOONLITE_BOOT)},
    "myfp2": {"no boot": ({"resets_on_open": False}, 0.0), "resets on open": ({}, 0.0)},
    "pegasus": {"no boot": ({"variant": "recent"}, 0.0), "resets on open": ({"variant": "reset"}, 0.0)},
}


def emulate(protocol: str, profile: str, board: str, link: str) -> PtyLink:
    options, boot_delay = BOARDS[protocol][board]
    firmware = PROTOCOLS[protocol].load()(profile=profile, steps_per_second=5000.0, temperature=10.0, **options)
    return PtyLink(firmware, link, boot_delay, name=protocol).start()


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.monotonic()
    value = run()
    return time.monotonic() - started, value


def attempts(result: ProbeResult) -> str:
    return "; ".join(f"{a.driver} {a.seconds:.2f}" + ("*" if a.answered else "") for a in result.attempts)


def auto_connect(link: str) -> float:
    cfg = parse_config({"focuser": [{"driver": "auto", "port": link, "max_step": 8000, "max_increment": 8000}]},
                       "<bench>").focusers[0]
    driver = AutoDriver(cfg)
    try:
        seconds, _ = timed(driver.connect)
    finally:
        driver.close()
    return seconds


def silent(link: str) -> ProbeResult:
    master, slave = os.openpty()
    tty.setraw(slave)
    os.symlink(os.ttyname(slave), link)
    os.close(slave)
    try:
        return probe_port(link)
    finally:
        os.unlink(link)
        os.close(master)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (the median is printed)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"Probing order: {', '.join(f'{name} {baud}' for name, baud in candidates())} (baud)")
    print("Figures in seconds, median of", args.repeat, "run(s); * marks the try that answered. A shared, "
          "loaded machine adds noise.\n")
    print(f"{'controller':24} {'board':15} {'probe':>6} {'auto connect':>13}   tries")
    with tempfile.TemporaryDirectory(prefix="probe-bench") as folder:
        link = str(Path(folder) / "tty")
        for protocol, spec in PROTOCOLS.items():
            for profile in spec.profiles:
                name = f"{protocol}/{profile}"
                if protocol not in SERIAL_DRIVER_CLASSES:
                    print(f"{name:24} (no {protocol} driver in the registry yet: not probed)")
                    continue
                for board in BOARDS[protocol]:
                    probes, connects, last = [], [], None
                    for _ in range(args.repeat):
                        emu = emulate(protocol, profile, board, link)
                        try:
                            seconds, last = timed(lambda: probe_port(link))
                            probes.append(seconds)
                            time.sleep(REOPEN_PAUSE)  # the emulator notices a close only if it lasts a moment
                            connects.append(auto_connect(link))
                        finally:
                            emu.stop()
                    assert last is not None and last.found is not None and last.found.driver == protocol, last
                    print(f"{name:24} {board:15} {statistics.median(probes):6.2f} {statistics.median(connects):13.2f}"
                          f"   {attempts(last)}")
        seconds, result = timed(lambda: silent(link))
        print(f"\n{'silent port':24} {'-':15} {seconds:6.2f} {'-':>13}   {attempts(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
