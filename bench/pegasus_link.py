"""Benchmark: the Pegasus driver's connect, unplug and replug times against the emulator, per firmware variant.

    .venv/bin/python bench/pegasus_link.py [--runs 5]

For each profile (DMFC, FocusCube 2) and firmware variant (recent, old, 2.8, reset: an old DMFC that reboots on
open and ignores input for 2 s), on a pty:

* handshake: ``connect()`` until connected (the reset variant includes its 2 s boot);
* unplug detection: the emulator's pty closed during a move -> the driver's status shows the fault;
* recovery: the pty back -> the fault cleared, the position read back from the firmware.

Median and worst over ``--runs``. Everything is local (a pty); the run takes about a minute.
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

from alpaca_focuser.drivers.pegasus import PegasusDriver
from alpaca_focuser.emulator.pegasus_firmware import VARIANTS, PegasusFirmware
from alpaca_focuser.emulator.pty_link import PtyLink


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.001)
    return time.monotonic() - start


def one_run(tmp: Path, profile: str, variant: str) -> tuple[float, float, float]:
    with PtyLink(PegasusFirmware(profile, variant, position=1000, steps_per_second=500.0), str(tmp / "tty"),
                 name="pegasus") as emu:
        driver = PegasusDriver(emu.device_path, name="bench", reconnect_max_backoff=1.0)
        start = time.monotonic()
        driver.connect()
        handshake = time.monotonic() - start
        try:
            driver.move_to(5000)
            wait_for(lambda: driver.status().position > 1050, 3.0, "motion")
            emu.unplug()
            detected = wait_for(lambda: driver.status().fault is not None, 5.0, "the fault")
            emu.replug()
            recovered = wait_for(lambda: driver.status().fault is None, 10.0, "the recovery")
            if driver.status().position != emu.firmware.position and not emu.firmware.moving:
                raise AssertionError("recovered at the wrong position")
        finally:
            driver.close()
    return handshake, detected, recovered


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:9.0f}{max(values) * 1000:7.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per profile and variant (default 5)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    print(f"Pegasus driver on the emulator, {args.runs} runs each; milliseconds: median, worst")
    print(f"{'profile':<11}{'firmware':<10}{'handshake':>16}{'unplug seen':>16}{'replug -> ok':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        for profile in ("dmfc", "focuscube"):
            for variant in VARIANTS:
                runs = [one_run(Path(tmp), profile, variant) for _ in range(args.runs)]
                columns = [ms([run[i] for run in runs]) for i in range(3)]
                print(f"{profile:<11}{variant:<10}{columns[0]}{columns[1]}{columns[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
