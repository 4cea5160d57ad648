"""Any of the project's emulated controllers on a pty, for tests that cover every protocol (probe, auto).

Parametrise over ``PROFILES`` (every protocol and profile the emulator has: ``emulate --protocol/--profile``) and
call ``need_driver(protocol)`` first: a protocol whose driver is not in the registry yet is skipped, not failed.
``only_queries`` checks a firmware's command log against each protocol's own list of queries, written here from
the protocol notes (docs/protocols/), independently of the drivers.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from alpaca_focuser.drivers.registry import SERIAL_DRIVER_CLASSES
from alpaca_focuser.emulator.cli import PROTOCOLS
from alpaca_focuser.emulator.pty_link import PtyLink
from conftest import started_until_teardown

#: (protocol, profile) for every profile of every emulated protocol; the first profile is the default.
PROFILES = [(name, profile) for name, spec in PROTOCOLS.items() for profile in spec.profiles]
DEFAULT_PROFILES = [(name, spec.profiles[0]) for name, spec in PROTOCOLS.items()]
#: Firmwares that model their own reset on open (myFocuserPro2: 1-1.6 s) get this instead, to keep tests short.
FIRMWARE_BOOT = 0.3

#: The firmware version each emulated firmware reports, read from the emulator (what a handshake must find).
FIRMWARE_VERSION = {
    "moonlite": lambda fw: fw.version,
    "myfp2": lambda fw: fw.profile.firmware_version,
    "pegasus": lambda fw: fw.variant.version,
}


def need_driver(protocol: str) -> None:
    """Skip the test while ``protocol`` has no driver in drivers/registry.py."""
    if protocol not in SERIAL_DRIVER_CLASSES:
        pytest.skip(f"no {protocol!r} driver in drivers/registry.py yet: covered once its registry line lands")


def start_emulator(protocol: str, profile: str, link: str, *, boot_delay: float = 0.0,
                   steps_per_second: float = 5000.0, **options: Any) -> PtyLink:
    """The ``protocol`` firmware (``profile``) on a pty linked at ``link``. ``boot_delay``: the link ignores input
    for this long after every open (a board that resets on DTR). ``options`` go to the firmware."""
    firmware = PROTOCOLS[protocol].load()(profile=profile, steps_per_second=steps_per_second, temperature=10.0,
                                          **options)
    board = getattr(firmware, "profile", None)
    if dataclasses.is_dataclass(board) and not isinstance(board, type) and hasattr(board, "boot_delay"):
        firmware.profile = dataclasses.replace(board, boot_delay=FIRMWARE_BOOT)
    return PtyLink(firmware, link, boot_delay, name=protocol).start()


def emulators(folder: Path) -> Iterator[Callable[..., PtyLink]]:
    """The body of an ``emulator`` fixture (``yield from`` it): ``start(protocol, profile, **options)`` is
    ``start_emulator`` with a link in ``folder``; each emulator started is stopped at teardown."""
    numbers = itertools.count()

    def start(protocol: str, profile: str, **options: Any) -> PtyLink:
        return start_emulator(protocol, profile, str(folder / f"tty{protocol}{next(numbers)}"), **options)

    yield from started_until_teardown(start, PtyLink.stop)


# --- what the probe may send ----------------------------------------------------------------------------------
MOONLITE_QUERIES = {"GP", "GN", "GI", "GT", "GV", "GD", "GH", "GC", "GB"}
MOONLITE_ACTIONS = {"SP", "SN", "FG", "FQ", "SD", "SH", "SF", "SC", "+", "-"}
# Command numbers that only answer (docs/protocols/myfp2.md); every other number moves, sets or saves.
MYFP2_QUERIES = {0, 1, 2, 3, 4, 6, 8, 10, 11, 13, 24, 25, 26, 29, 39, 43, 55, 72, 74, 76, 78, 80, 83, 87, 89}
PEGASUS_QUERIES = {"#", "A", "V", "T", "P", "I", "B", "X"}
PEGASUS_ACTION_LETTERS = set("MGWSCNLERH")


def arduino_to_int(text: str) -> int:
    """Arduino ``String.toInt()`` (atol): leading whitespace, a sign, digits; anything else reads as 0."""
    match = re.match(r"\s*([+-]?\d+)", text)
    return int(match.group(1)) if match else 0


def harmful(protocol: str, command: str, rejected: bool) -> bool:
    """Whether the real firmware could move or change something on ``command``. The emulators are stricter
    than the firmwares: a frame they reject is judged by what the real parser would make of it."""
    if protocol == "moonlite":
        name = command[:1] if command[:1] in "C+-" else command[:2]
        return name not in MOONLITE_QUERIES if not rejected else name in MOONLITE_ACTIONS
    if protocol == "myfp2":
        if rejected:  # the Nano reads the number with toInt(): "GV" is command 0, a position query
            return arduino_to_int(command[:2]) not in MYFP2_QUERIES
        return int(command[:2]) not in MYFP2_QUERIES or command[2:] != ""
    if protocol == "pegasus":
        return command[:1] in PEGASUS_ACTION_LETTERS if rejected else command not in PEGASUS_QUERIES
    raise AssertionError(f"no query list for {protocol}")


def only_queries(protocol: str, emu: PtyLink, since: int = 0) -> list[str]:
    """Every command the firmware received (from the ``since``-th on), after checking that none could move or
    change anything."""
    firmware = emu.firmware
    rejected = list(getattr(firmware, "rejected_commands", []))
    commands = [command for _, command in emu.command_log[since:]]
    bad = [c for c in commands if harmful(protocol, c, c in rejected)]
    assert not bad, f"{protocol} firmware was sent more than queries: {bad} (all: {commands})"
    return commands
