"""The ``alpaca-focuser emulate`` subcommand: a Moonlite emulator on a pty.

Useful for running the real server (Moonlite driver) on a desk without the
hardware: ``alpaca-focuser emulate --link /tmp/ttyMoonlite`` and point the
server's serial port at ``/tmp/ttyMoonlite``.  The main CLI wires
:func:`add_arguments` and :func:`run` into its sub-parser.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from alpaca_focuser.emulator.firmware import MAX_POSITION, PROFILES
from alpaca_focuser.emulator.pty_link import MoonliteEmulator


def _position(text: str) -> int:
    value = int(text, 0)
    if not 0 <= value <= MAX_POSITION:
        raise argparse.ArgumentTypeError(f"position must be 0..{MAX_POSITION}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``emulate`` options to ``parser``."""
    parser.add_argument("--link", required=True, metavar="PATH",
                        help="symlink to create pointing at the pty slave (e.g. /tmp/ttyMoonlite)")
    parser.add_argument("--profile", choices=PROFILES, default="moonlite",
                        help="moonlite (GI answers 01#/00#) or clone (1#/0#); default moonlite")
    parser.add_argument("--boot-delay", type=_non_negative, default=0.0, metavar="SECONDS",
                        help="ignore input for this long after each port open, like an Arduino "
                             "rebooting on DTR (default 0)")
    parser.add_argument("--steps-per-second", type=_positive, default=None, metavar="N",
                        help="fixed motor speed (default: derived from the step-delay code)")
    parser.add_argument("--temperature", type=float, default=10.0, metavar="C",
                        help="starting probe temperature in Celsius (default 10.0)")
    parser.add_argument("--position", type=_position, default=0, metavar="N",
                        help="starting position in steps (default 0)")


def run(args: argparse.Namespace) -> int:
    """Run the emulator until SIGINT/SIGTERM, then clean up (removes the link)."""
    emulator = MoonliteEmulator(
        link_path=args.link,
        profile=args.profile,
        boot_delay=args.boot_delay,
        steps_per_second=args.steps_per_second,
        temperature=args.temperature,
        position=args.position,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        emulator.start()
        print(f"Moonlite emulator on {emulator.slave_name}, linked at {args.link} "
              f"(profile {args.profile})", flush=True)
        while not stop.wait(0.5):  # short waits keep the main thread responsive to signals
            pass
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
