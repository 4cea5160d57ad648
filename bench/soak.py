"""Soak test: a night's worth of focusing in minutes, against the Moonlite emulator, checking the position is
never lost.

    .venv/bin/python bench/soak.py [--minutes 10] [--seed 1]

A real server on 127.0.0.1 (ephemeral port, discovery off) drives the pty emulator with the Moonlite driver.
Each cycle picks at random: a move that runs to completion, a move halted part-way, a retarget mid-move, or a
USB unplug mid-move followed by a replug. After every cycle the server's Position must equal the emulator's
(the truth) once both are at rest. Prints counts, failures and the time to recover from each unplug.
Bounded in time; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from alpaca_focuser.app import FocuserServer
from alpaca_focuser.config import parse_config
from alpaca_focuser.emulator.pty_link import MoonliteEmulator

# The keep-alive Alpaca HTTP client is shared with the tests: it lives in tests/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from alpaca_http import AlpacaHttp  # noqa: E402

MAX_STEP = 20000


def wait_idle(client: AlpacaHttp, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.call("GET", "ismoving")
        if body["ErrorNumber"] == 0 and body["Value"] is False:
            return int(client.value("position"))
        time.sleep(0.05)
    raise RuntimeError("the focuser did not come to rest")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rng = random.Random(args.seed)
    counts: dict[str, int] = {}
    failures: list[str] = []
    recoveries: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        link = Path(tmp) / "ttyFOCUSER"
        emu = MoonliteEmulator(link_path=str(link), steps_per_second=2000, position=10000).start()
        config = parse_config({"server": {"bind": "127.0.0.1", "port": 0, "state_dir": tmp},
                               "discovery": {"enabled": False},
                               "focuser": [{"name": "soak", "driver": "moonlite", "port": str(link),
                                            "max_step": MAX_STEP}]}, "<soak>")
        server = FocuserServer(config)
        server.start()
        client = AlpacaHttp("127.0.0.1", server.port, client_id=3)
        try:
            client.call("PUT", "connected", Connected="true")
            end = time.monotonic() + args.minutes * 60
            while time.monotonic() < end:
                kind = rng.choices(["complete", "halt", "retarget", "unplug"], [5, 3, 2, 1])[0]
                counts[kind] = counts.get(kind, 0) + 1
                target = rng.randrange(0, MAX_STEP + 1)
                client.call("PUT", "move", Position=target)
                if kind == "halt":
                    time.sleep(rng.uniform(0.05, 1.0))
                    client.call("PUT", "halt")
                elif kind == "retarget":
                    time.sleep(rng.uniform(0.05, 1.0))
                    target = rng.randrange(0, MAX_STEP + 1)
                    client.call("PUT", "move", Position=target)
                elif kind == "unplug":
                    time.sleep(rng.uniform(0.05, 0.5))
                    emu.unplug()
                    time.sleep(rng.uniform(0.5, 2.0))
                    emu.replug()
                    started = time.monotonic()
                    while client.call("GET", "position")["ErrorNumber"] != 0:
                        if time.monotonic() - started > 30:
                            raise RuntimeError("no recovery within 30 s of the replug")
                        time.sleep(0.05)
                    recoveries.append(time.monotonic() - started)
                position = wait_idle(client)
                truth = emu.firmware.position
                if position != truth or emu.firmware.moving:
                    failures.append(f"cycle {sum(counts.values())} ({kind}): server {position}, emulator {truth}")
                if kind == "complete" and position != target:
                    failures.append(f"cycle {sum(counts.values())}: completed at {position}, target {target}")
        finally:
            server.stop()
            emu.stop()
    total = sum(counts.values())
    print(f"soak {args.minutes:g} min: {total} cycles {counts}; position mismatches: {len(failures)}")
    if recoveries:
        print(f"unplug recovery after replug: median {statistics.median(recoveries):.2f} s, "
              f"worst {max(recoveries):.2f} s over {len(recoveries)} unplugs")
    for line in failures[:20]:
        print("  " + line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
