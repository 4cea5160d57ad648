"""Benchmark: how long a full 0..MaxStep move takes on the default simulated focuser, through alpyca.

    .venv/bin/python bench/full_move.py            # the shipped config.toml's focuser (50000 steps at 2000/s)

Starts a real server on 127.0.0.1 (ephemeral port, discovery off, state in a temp dir) and prints the figures.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from alpaca.focuser import Focuser

from alpaca_focuser.app import FocuserServer
from alpaca_focuser.config import load_config

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    config = load_config(REPO / "config.toml")
    with tempfile.TemporaryDirectory() as state:
        config = replace(config, server=replace(config.server, bind="127.0.0.1", port=0, state_dir=state),
                         discovery=replace(config.discovery, enabled=False))
        server = FocuserServer(config)
        server.start()
        try:
            f = Focuser(f"127.0.0.1:{server.port}", 0)
            f.Connected = True
            if f.Position != 0:
                f.Move(0)
                while f.IsMoving:
                    time.sleep(0.05)
            max_step = f.MaxStep
            polls = 0
            start = time.monotonic()
            f.Move(max_step)
            returned = time.monotonic() - start
            while f.IsMoving:
                polls += 1
                time.sleep(0.05)
            elapsed = time.monotonic() - start
            print(f"full move 0 -> {max_step}: {elapsed:.2f} s (Move returned in {returned * 1000:.1f} ms, "
                  f"{polls} IsMoving polls), final Position {f.Position}")
            return 0 if f.Position == max_step else 1
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
