"""Why probing tries myFocuserPro2, then Pegasus, then Moonlite (drivers/probe.py), shown on the emulated firmwares.

The myFocuserPro2 emulator reads its serial input as the firmware's sources do (emulator/framing.py): ``:`` empties
the line, ``#`` runs whatever the line holds and keeps it, and the command number is ``toInt()`` of the first two
characters. Two hazards follow; each is triggered here in the wrong order and avoided in the registry's:

* a board that does not reset when the port opens still holds the previous session's last command, which
  Pegasus's bare ``#`` runs again (a move, here);
* Moonlite's ``:GV#`` is command 0 to it, and the position it answers passes for a Moonlite firmware version.

And a Pegasus that does not reset, probed after myFocuserPro2, finds the frames sent before it in its input line:
its handshake asks again at once and still names the board.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import serial

from alpaca_focuser.drivers import probe
from alpaca_focuser.emulator.pty_link import PtyLink
from conftest import wait_until
from emulated import FIRMWARE_VERSION, emulators, only_queries

WINDOW = 1.5  # each handshake's window, as in test_probe.py
PEGASUS_BOOT_REST = 2.0  # what the Pegasus handshake waits in silence when its first '#' gets no answer


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Callable[..., PtyLink]]:
    yield from emulators(tmp_path)


def previous_session(emu: PtyLink, frame: bytes) -> None:
    """Another program's last command before it closed the port; the board does not reset on the next open."""
    with serial.Serial(emu.device_path, emu.firmware.baud, timeout=0.5) as port:
        port.write(frame)
        port.flush()
        wait_until(lambda: emu.firmware.line == frame.decode()[1:-1] and not emu.firmware.moving, timeout=5)


@pytest.mark.parametrize("profile", ["nano", "esp32"])
def test_a_bare_hash_repeats_the_last_session_s_move_unless_myfp2_is_probed_first(emulator: Any,
                                                                                  profile: str) -> None:
    emu = emulator("myfp2", profile, resets_on_open=False, position=1000)
    fw, baud = emu.firmware, emu.firmware.baud
    previous_session(emu, b":64500#")  # "500 steps out"
    assert fw.position == 1500

    wrong = probe.probe_port(emu.device_path, order=[("pegasus", baud), ("myfp2", baud)], timeout=WINDOW)
    wait_until(lambda: not fw.moving, timeout=5)
    assert wrong.found is not None and wrong.found.driver == "myfp2"
    assert fw.position >= 2000 and fw.commands.count("64500") >= 2  # Pegasus's '#' moved the focuser again

    previous_session(emu, b":64500#")
    since, before = len(emu.command_log), fw.position
    right = probe.probe_port(emu.device_path, baud=baud, timeout=WINDOW)
    assert right.found is not None and [a.driver for a in right.attempts] == ["myfp2"]
    assert fw.position == before and not fw.moving  # nothing ran but queries ...
    assert fw.line == "03"  # ... and the line now holds one: a stray '#' later is harmless
    only_queries("myfp2", emu, since)


@pytest.mark.parametrize("profile", ["nano", "esp32"])
def test_a_myfp2_answers_moonlite_s_version_query_with_its_position_so_moonlite_goes_last(emulator: Any,
                                                                                         profile: str) -> None:
    emu = emulator("myfp2", profile, position=5000)
    fw, baud = emu.firmware, emu.firmware.baud

    wrong = probe.probe_port(emu.device_path, order=[("moonlite", baud), ("myfp2", baud)], timeout=WINDOW)
    assert "GV" in fw.commands and "GV" in fw.rejected_commands  # not a myFocuserPro2 command, yet it ran: 0
    assert wrong.found is not None and (wrong.found.driver, wrong.found.firmware) == ("moonlite", "P5000")

    right = probe.probe_port(emu.device_path, baud=baud, timeout=WINDOW)
    assert right.summary() == f"myfp2 (firmware {FIRMWARE_VERSION['myfp2'](fw)})"
    assert [a.driver for a in right.attempts] == ["myfp2"] and fw.position == 5000


@pytest.mark.parametrize(("profile", "variant", "summary"), [
    ("dmfc", "recent", "pegasus (DMFC, firmware 3.3)"),
    ("dmfc", "2.8", "pegasus (DMFC, firmware 2.8)"),
    ("focuscube", "recent", "pegasus (FocusCube 2, firmware 3.3)"),
    ("dmfc", "old", "pegasus (DMFC, firmware 2.6)"),  # answers a bad line with nothing: found after its rest
])
def test_pegasus_probed_after_myfp2_asks_again_past_what_its_line_held(emulator: Any, profile: str, variant: str,
                                                                       summary: str) -> None:
    emu = emulator("pegasus", profile, variant=variant)
    fw = emu.firmware
    result = probe.probe_port(emu.device_path, timeout=PEGASUS_BOOT_REST + 1.0)  # room for a rest in silence
    assert result.summary() == summary and [a.driver for a in result.attempts] == ["myfp2", "pegasus"]
    junk = fw.commands[0]
    assert junk.startswith(":03#") and junk.endswith("#") and fw.rejected_commands == [junk]  # myfp2's frames
    assert fw.commands[1:] == ["#", "A"]  # the '#' that ended them, then ours again: answered
    if fw.variant.answers_set_commands:  # it said ERR:, so it is awake: no rest in silence before asking again
        arrivals = [t for t, _ in emu.command_log]
        assert arrivals[1] - arrivals[0] < PEGASUS_BOOT_REST / 2
    only_queries("pegasus", emu)
