"""Benchmark: the timing of the focusing features, on the simulator and on the Moonlite emulator.

    .venv/bin/python bench/focusing.py [--rounds 10] [--idle-seconds 30]

* the gap between backlash legs: from the motor stopping at the overshoot to the return leg starting;
* the settle overshoot: how long after ``settle_ms`` past the motor's stop IsMoving goes false;
* the idle CPU of a server whose focuser has TempComp off, then on (the worker samples the temperature and checks
  for a correction ten times a second).

Each backend runs in a real server on 127.0.0.1 (ephemeral port, discovery off, state in a temp dir); the motor's
own state is read directly from the simulator model or the emulator's firmware. Prints the figures.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from alpaca_http import AlpacaHttp  # noqa: E402

from alpaca_focuser.app import FocuserServer  # noqa: E402
from alpaca_focuser.config import parse_config  # noqa: E402
from alpaca_focuser.emulator.pty_link import MoonliteEmulator  # noqa: E402

SETTLE_MS = 500
BACKLASH = 200  # steps, plus 0..199 varying by round


def start(kind: str, state: str, **settings: Any) -> tuple[FocuserServer, MoonliteEmulator | None]:
    table: dict[str, Any] = {"name": "Bench", "max_step": 60000, **settings}
    emu = None
    if kind == "simulator":
        table.update(driver="simulator", speed=3000)
    else:
        emu = MoonliteEmulator(link_path=f"{state}/ttyBENCH", steps_per_second=3000).start()
        table.update(driver="moonlite", port=f"{state}/ttyBENCH")
    config = parse_config({"server": {"bind": "127.0.0.1", "port": 0, "state_dir": state},
                           "discovery": {"enabled": False}, "focuser": [table]}, "<bench>")
    server = FocuserServer(config, multicast_interfaces=())
    server.start()
    return server, emu


def record_legs(server: FocuserServer, emu: MoonliteEmulator | None) -> list[tuple[float, int]]:
    """(time, motor position) of every move the motor starts from now on, and when it will arrive there, taken
    where the motion really starts: the simulator's move_to, the emulator firmware's FG."""
    starts: list[tuple[float, int]] = []
    if emu is None:
        driver: Any = server.devices[0].driver
        original = driver.move_to

        def move_to(target: int) -> None:
            original(target)
            starts.append((time.monotonic(), target))

        driver.move_to = move_to
        return starts
    firmware: Any = emu.firmware
    execute = firmware._execute

    def traced(body: str) -> Any:
        reply = execute(body)
        if body == "FG":
            starts.append((time.monotonic(), firmware.target))
        return reply

    firmware._execute = traced
    return starts


def wait(predicate: Callable[[], bool], timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
    return time.monotonic()


def timings(kind: str, rounds: int) -> tuple[list[float], list[float]]:
    """Per round, an inward move of 1000 steps: (the gaps between the legs, the settle overshoots)."""
    gaps: list[float] = []
    overshoots: list[float] = []
    speed = 3000.0
    with tempfile.TemporaryDirectory() as state:
        server, emu = start(kind, state, backlash_steps=BACKLASH, settle_ms=SETTLE_MS)
        http = AlpacaHttp("127.0.0.1", server.port)
        try:
            http.put("connected", Connected="true")
            position = 1000 * rounds + 1000
            http.put("move", Position=position)
            wait(lambda: not http.value("ismoving"))
            starts = record_legs(server, emu)
            device = server.devices[0]
            for i in range(rounds):
                # a different backlash each round, so the motor's stop falls at a different point of the driver's
                # polling cycle
                backlash = BACKLASH + (i * 37) % 200
                device.apply_settings(replace(device.cfg, backlash_steps=backlash))
                starts.clear()
                http.put("move", Position=position - 1000)  # overshoot by `backlash`, then back out
                done = wait(lambda: not http.value("ismoving"))
                (t1, leg1), (t2, leg2) = starts
                assert (leg1, leg2) == (position - 1000 - backlash, position - 1000), starts
                arrived1 = t1 + (position - leg1) / speed
                arrived2 = t2 + (leg2 - leg1) / speed
                gaps.append(t2 - arrived1)
                overshoots.append(done - arrived2 - SETTLE_MS / 1000)
                position -= 1000
        finally:
            http.close()
            server.stop()
            if emu is not None:
                emu.stop()
    return gaps, overshoots


def idle_cpu(seconds: float, temp_comp: bool) -> float:
    """CPU seconds per second used by this process while a connected focuser sits idle."""
    with tempfile.TemporaryDirectory() as state:
        server, _ = start("simulator", state, temp_comp_coefficient=-12)
        http = AlpacaHttp("127.0.0.1", server.port)
        try:
            http.put("connected", Connected="true")
            http.put("tempcomp", TempComp="true" if temp_comp else "false")
            time.sleep(1.0)
            before = resource.getrusage(resource.RUSAGE_SELF)
            start_time = time.monotonic()
            time.sleep(seconds)
            after = resource.getrusage(resource.RUSAGE_SELF)
            elapsed = time.monotonic() - start_time
        finally:
            http.close()
            server.stop()
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return used / elapsed


def ms(values: list[float]) -> str:
    return (f"median {statistics.median(values) * 1000:.0f} ms, min {min(values) * 1000:.0f}, "
            f"max {max(values) * 1000:.0f} (n={len(values)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()
    for kind in ("simulator", "moonlite"):
        gaps, overshoots = timings(kind, args.rounds)
        print(f"{kind}: gap between backlash legs {ms(gaps)}")
        print(f"{kind}: IsMoving false after settle_ms = {SETTLE_MS} + {ms(overshoots)}")
    for temp_comp in (False, True):
        print(f"idle, TempComp {'on' if temp_comp else 'off'}: {idle_cpu(args.idle_seconds, temp_comp) * 100:.2f} % "
              f"of one core for the whole server process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
