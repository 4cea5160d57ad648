"""Benchmark: every serial driver's connect, unplug and replug times against its emulator, per board.

    .venv/bin/python bench/link_times.py [--runs 5]

For each board the emulators model (Moonlite with and without the Arduino's 2 s reboot on open, myFocuserPro2
Nano and ESP32, Pegasus DMFC on each firmware generation, FocusCube 2), on a pty, through the driver as the
server builds it from a ``[[focuser]]`` table:

* connect: ``connect()`` until connected, through the board's boot when it resets on open;
* unplug seen: the pty closed during a move, then while idle -> the driver's status shows the fault;
* back after replug: the pty back (after an idle unplug) -> the fault cleared, with the position the controller
  reports (checked).

Median and worst over ``--runs``, in milliseconds. Everything is local (a pty); the run takes a few minutes.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from alpaca_focuser.config import parse_config
from alpaca_focuser.drivers import create_driver
from alpaca_focuser.emulator.myfp2_firmware import MyFP2Firmware
from alpaca_focuser.emulator.pegasus_firmware import PegasusFirmware
from alpaca_focuser.emulator.pty_link import MoonliteEmulator, PtyLink

SPEED = 400.0  # steps/s: a move to FAR takes long enough to unplug during it
NEAR, FAR = 1000, 5000


@dataclass(frozen=True)
class Board:
    name: str
    emulator: Callable[[str], PtyLink]
    table: dict[str, Any]


BOARDS = (
    Board("moonlite", lambda link: MoonliteEmulator(link, steps_per_second=SPEED, position=NEAR),
          {"driver": "moonlite"}),
    Board("moonlite, 2 s reboot on open", lambda link: MoonliteEmulator(link, boot_delay=2.0, steps_per_second=SPEED,
                                                                        position=NEAR), {"driver": "moonlite"}),
    Board("myfp2 nano", lambda link: PtyLink(MyFP2Firmware("nano", position=NEAR, steps_per_second=SPEED), link,
                                             name="myfp2"), {"driver": "myfp2"}),
    Board("myfp2 esp32", lambda link: PtyLink(MyFP2Firmware("esp32", position=NEAR, steps_per_second=SPEED), link,
                                              name="myfp2"), {"driver": "myfp2", "baud": 115200}),
    *(Board(f"pegasus dmfc {variant}",
            lambda link, variant=variant: PtyLink(PegasusFirmware("dmfc", variant, position=NEAR,
                                                                  steps_per_second=SPEED), link, name="pegasus"),
            {"driver": "pegasus"}) for variant in ("recent", "2.8", "old", "reset")),
    Board("pegasus focuscube", lambda link: PtyLink(PegasusFirmware("focuscube", position=NEAR,
                                                                    steps_per_second=SPEED), link, name="pegasus"),
          {"driver": "pegasus"}),
)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.001)
    return time.monotonic() - start


def one_run(tmp: Path, board: Board) -> tuple[float, float, float, float]:
    with board.emulator(str(tmp / "tty")) as emu:
        table = {"name": "bench", "port": emu.device_path, "max_step": 10000, "max_increment": 10000,
                 **board.table}
        driver = create_driver(parse_config({"focuser": [table]}, "<bench>").focusers[0])
        start = time.monotonic()
        driver.connect()
        connect = time.monotonic() - start
        try:
            driver.move_to(FAR)
            wait_for(lambda: driver.status().position > NEAR + 50, 5.0, "motion")
            emu.unplug()
            moving = wait_for(lambda: driver.status().fault is not None, 10.0, "the fault while moving")
            emu.replug()
            wait_for(lambda: driver.status().fault is None, 20.0, "the recovery after the moving unplug")
            wait_for(lambda: not driver.status().moving, 30.0, "the end of the move")
            emu.unplug()
            idle = wait_for(lambda: driver.status().fault is not None, 10.0, "the fault while idle")
            emu.replug()
            back = wait_for(lambda: driver.status().fault is None, 20.0, "the recovery")
            firmware: Any = emu.firmware
            wait_for(lambda: driver.status().position == firmware.position, 5.0,
                     f"the controller's position ({firmware.position}), the driver has {driver.status().position}")
        finally:
            driver.close()
    return connect, moving, idle, back


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.0f}{max(values) * 1000:7.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per board (default 5)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    print(f"Serial drivers on their emulators, {args.runs} runs each; milliseconds: median, worst")
    print(f"{'board':<30}{'connect':>15}{'unplug seen, moving':>21}{'... idle':>15}{'back after replug':>19}")
    with tempfile.TemporaryDirectory() as tmp:
        for board in BOARDS:
            runs = [one_run(Path(tmp), board) for _ in range(args.runs)]
            print(f"{board.name:<30}" + "".join(f"{ms([run[i] for run in runs]):>{w}}"
                                                for i, w in enumerate((15, 21, 15, 19))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
