"""The ``alpaca-focuser emulate`` subcommand: a focuser controller emulator on a pty.

Useful for running the real server on a desk without the hardware:
``alpaca-focuser emulate --link /tmp/ttyFOCUSER [--protocol moonlite|myfp2|pegasus] [--profile ...]`` and
point the server's serial port at ``/tmp/ttyFOCUSER``. The main CLI wires :func:`add_arguments` and :func:`run`
into its sub-parser.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any, Sequence

from alpaca_focuser.emulator.pty_link import PtyLink


@dataclass(frozen=True)
class EmulatedProtocol:
    """One protocol the emulator speaks. The firmware module is imported only when it is used, so a protocol
    whose module is missing does not break the others."""

    title: str  # "Moonlite emulator on ..."
    module: str
    firmware_class: str  # constructed with profile, steps_per_second, temperature, position
    profiles: tuple[str, ...]  # the first is the default
    max_position: int | None  # checked here for a clear message; None: the firmware checks it
    variants: tuple[str, ...] = ()  # firmware generations --variant may pick (passed as ``variant``); the first is
    # the default

    def load(self) -> Any:
        return getattr(importlib.import_module(self.module), self.firmware_class)


PROTOCOLS: dict[str, EmulatedProtocol] = {
    "moonlite": EmulatedProtocol("Moonlite", "alpaca_focuser.emulator.firmware", "MoonliteFirmware",
                                 ("moonlite", "clone"), 0xFFFF),
    "myfp2": EmulatedProtocol("myFocuserPro2", "alpaca_focuser.emulator.myfp2_firmware", "MyFP2Firmware",
                              ("nano", "esp32"), None),
    "pegasus": EmulatedProtocol("Pegasus Astro", "alpaca_focuser.emulator.pegasus_firmware", "PegasusFirmware",
                                ("dmfc", "focuscube"), None, ("recent", "old", "2.8", "reset")),
}


def _position(text: str) -> int:
    value = int(text, 0)
    if value < 0:
        raise argparse.ArgumentTypeError("position must be >= 0")
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


def _check_combination(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--profile and --position depend on --protocol, which may come later on the command line."""
    spec = PROTOCOLS[args.protocol]
    if args.profile is not None and args.profile not in spec.profiles:
        parser.error(f"--profile {args.profile} is not a {args.protocol} profile (choose from "
                     f"{', '.join(spec.profiles)})")
    if args.variant is not None and args.variant not in spec.variants:
        parser.error(f"--variant {args.variant} is not a {args.protocol} firmware variant" + (
            f" (choose from {', '.join(spec.variants)})" if spec.variants else f" ({args.protocol} has none)"))
    if spec.max_position is not None and args.position is not None and args.position > spec.max_position:
        parser.error(f"--position must be 0..{spec.max_position} for {args.protocol}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``emulate`` options to ``parser``."""
    parser.add_argument("--link", required=True, metavar="PATH",
                        help="symlink to create pointing at the pty slave (e.g. /tmp/ttyFOCUSER)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="moonlite",
                        help="the controller to emulate (default moonlite)")
    profiles = "; ".join(f"{name}: {', '.join(p.profiles)}" for name, p in PROTOCOLS.items())
    parser.add_argument("--profile", choices=sorted({n for p in PROTOCOLS.values() for n in p.profiles}),
                        default=None,
                        help=f"firmware variant, the first is the default ({profiles}). Moonlite's clone "
                             "answers 1#/0# for GI")
    parser.add_argument("--variant", default=None, metavar="NAME",
                        help="firmware generation, for Pegasus: recent (default; acknowledges every set command), "
                             "old (acknowledges only N, L, E, R), 2.8 (recent, lines end \\r\\n), reset (old, "
                             "reboots on open and ignores input for 2 s)")
    parser.add_argument("--boot-delay", type=_non_negative, default=0.0, metavar="SECONDS",
                        help="ignore input for this long after each port open, like an Arduino "
                             "rebooting on DTR (default 0)")
    parser.add_argument("--steps-per-second", type=_positive, default=None, metavar="N",
                        help="fixed motor speed (default: the firmware's own, e.g. from Moonlite's step delay)")
    parser.add_argument("--temperature", type=float, default=10.0, metavar="C",
                        help="starting probe temperature in Celsius (default 10.0)")
    parser.add_argument("--position", type=_position, default=None, metavar="N",
                        help="starting position in steps (default: the firmware's, 0 for Moonlite)")
    parser.add_argument("--split-pause", type=_non_negative, default=None, metavar="SECONDS",
                        help="deliver each reply in two chunks this far apart, like a USB-serial adapter's "
                             "latency timer (e.g. 0.015; default: whole replies)")
    parser.add_argument("--line-baud", type=_positive, default=None, metavar="BAUD",
                        help="each reply byte takes its time on the wire at this baud rate (e.g. 9600; "
                             "default: no line time)")
    parse_known_args = parser.parse_known_args

    def parse_and_check(args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
                        ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = parse_known_args(args, namespace)
        _check_combination(parser, parsed)
        return parsed, extras

    parser.parse_known_args = parse_and_check  # type: ignore[method-assign,assignment]  # parse_args() uses it


def run(args: argparse.Namespace) -> int:
    """Run the emulator until SIGINT/SIGTERM, then clean up (removes the link)."""
    spec = PROTOCOLS[args.protocol]
    profile = args.profile or spec.profiles[0]
    try:
        options: dict[str, Any] = {} if args.position is None else {"position": args.position}
        if args.variant is not None:
            options["variant"] = args.variant
        firmware = spec.load()(profile=profile, steps_per_second=args.steps_per_second,
                               temperature=args.temperature, **options)
    except ImportError as exc:
        print(f"The {args.protocol} emulator is not available in this build: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"Cannot start the {args.protocol} emulator: {exc}", file=sys.stderr)
        return 2
    emulator = PtyLink(firmware, args.link, args.boot_delay, name=args.protocol, split_pause=args.split_pause,
                       line_baud=args.line_baud)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        emulator.start()
        variant = f", firmware {args.variant}" if args.variant else ""
        print(f"{spec.title} emulator on {emulator.slave_name}, linked at {args.link} (profile {profile}{variant})",
              flush=True)
        while not stop.wait(0.5):  # short waits keep the main thread responsive to signals
            pass
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
