"""The emulated Pegasus DMFC / FocusCube 2 firmware, driven with a fake clock: moves, halt, sync, reverse,
backlash, each firmware variant's answers, the reboot on open, -127 without a probe, DC motor mode."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from fake_clock import FakeClock

from alpaca_focuser.emulator import pegasus_firmware as pf
from alpaca_focuser.emulator.pegasus_firmware import PegasusFirmware


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, profile: str = "dmfc", variant: str = "recent", **kwargs: object) -> PegasusFirmware:
    return PegasusFirmware(profile, variant, clock=clock, **kwargs)  # type: ignore[arg-type]


def ask(firmware: PegasusFirmware, line: str) -> list[str]:
    """Send one request line; the reply lines without their line end."""
    return [reply.decode().rstrip("\r\n") for reply in firmware.feed_replies(line.encode() + b"\n")]


def status(firmware: PegasusFirmware) -> list[str]:
    (line,) = ask(firmware, "A")
    return line.split(":")


# --- identity and status --------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile, model", [("dmfc", "OK_DMFCN"), ("focuscube", "OK_FC")])
def test_handshake_and_status_line(clock: FakeClock, profile: str, model: str) -> None:
    firmware = make(clock, profile, position=1234, temperature=21.5, backlash=25)
    assert ask(firmware, "#") == [model]
    assert ask(firmware, "A") == [f"{model}:3.3:1:21.50:1234:0:1:0:0:25"]
    assert ask(firmware, "V") == ["3.3"]
    assert ask(firmware, "P") == ["1234"] and ask(firmware, "I") == ["0"] and ask(firmware, "T") == ["21.50"]


def test_no_probe_reports_minus_127(clock: FakeClock) -> None:
    firmware = make(clock, temperature=None)
    assert status(firmware)[3] == "-127.00" and ask(firmware, "T") == ["-127.00"]
    firmware.temperature = 3.25
    assert ask(firmware, "T") == ["3.25"]


def test_temperature_driven_by_a_test(clock: FakeClock) -> None:
    firmware = make(clock)
    firmware.temperature_source = lambda elapsed: None if elapsed > 10 else 5.0 - elapsed
    clock.advance(2)
    assert ask(firmware, "T") == ["3.00"]
    clock.advance(20)
    assert ask(firmware, "T") == ["-127.00"]  # the probe unplugged


@pytest.mark.parametrize("bad", [dict(profile="moonlite"), dict(variant="9.9"), dict(steps_per_second=0)])
def test_constructor_validates(clock: FakeClock, bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PegasusFirmware(clock=clock, **bad)  # type: ignore[arg-type]


# --- motion ---------------------------------------------------------------------------------------------------
def test_move_runs_at_the_set_speed_and_ends_exactly(clock: FakeClock) -> None:
    firmware = make(clock, speed=400)
    assert ask(firmware, "M:1000") == ["M:1000"]
    assert firmware.moving and firmware.target == 1000
    clock.advance(1.0)
    assert status(firmware)[4:6] == ["400", "1"]
    clock.advance(2.0)
    assert status(firmware)[4:6] == ["1000", "0"]
    assert ask(firmware, "I") == ["0"]


def test_speed_change_during_a_move_applies_from_then_on(clock: FakeClock) -> None:
    firmware = make(clock, speed=100)
    ask(firmware, "M:1000")
    clock.advance(1.0)
    assert ask(firmware, "S:200") == ["S:200"]
    clock.advance(1.0)
    assert firmware.position == 300
    assert ask(firmware, "B") == ["B:200"]


def test_a_test_changing_the_motor_speed_never_rewrites_past_motion(clock: FakeClock) -> None:
    firmware = make(clock, position=5000, steps_per_second=2000.0)
    ask(firmware, "M:7000")
    clock.advance(2.0)  # finished after 1 s; nothing has asked since
    firmware.steps_per_second = 500.0
    assert status(firmware)[4:6] == ["7000", "0"]  # still where the faster motor stopped
    ask(firmware, "M:8000")
    clock.advance(1.0)
    firmware.steps_per_second = 250.0  # mid-move: from here on at the new speed
    clock.advance(1.0)
    assert status(firmware)[4:6] == ["7750", "1"]
    with pytest.raises(ValueError):
        firmware.steps_per_second = 0


def test_move_down_and_retarget_while_moving(clock: FakeClock) -> None:
    firmware = make(clock, position=1000, steps_per_second=100)
    ask(firmware, "M:0")
    clock.advance(2.0)
    assert firmware.position == 800
    ask(firmware, "M:900")  # reverse mid-move
    clock.advance(0.5)
    assert firmware.position == 850 and firmware.moving
    clock.advance(10)
    assert (firmware.position, firmware.moving) == (900, False)


def test_halt_stops_where_it_is(clock: FakeClock) -> None:
    firmware = make(clock, steps_per_second=100)
    ask(firmware, "M:1000")
    clock.advance(1.234)
    assert ask(firmware, "H") == ["0"]
    assert (firmware.position, firmware.moving, firmware.target) == (123, False, 123)
    clock.advance(5)
    assert status(firmware)[4:6] == ["123", "0"]
    assert ask(firmware, "H") == ["0"]  # a halt while idle is harmless


def test_sync_sets_the_counter_and_stops(clock: FakeClock) -> None:
    firmware = make(clock, steps_per_second=100)
    ask(firmware, "M:1000")
    clock.advance(1)
    assert ask(firmware, "W:5000") == ["W:5000"]
    clock.advance(1)
    assert (firmware.position, firmware.moving) == (5000, False)
    firmware.set_position(42)  # the test hook does the same
    assert status(firmware)[4] == "42"


def test_relative_move(clock: FakeClock) -> None:
    firmware = make(clock, position=100, steps_per_second=100)
    assert ask(firmware, "G:-50") == ["G:-50"]
    clock.advance(1)
    assert (firmware.position, firmware.moving, firmware.target) == (50, False, 50)


def test_reverse_flag_leaves_the_counter(clock: FakeClock) -> None:
    firmware = make(clock, position=300, steps_per_second=100)
    assert ask(firmware, "N:1") == ["N:1"]
    ask(firmware, "M:400")
    clock.advance(2)
    assert status(firmware)[4] == "400" and status(firmware)[7] == "1"
    assert ask(firmware, "N:0") == ["N:0"] and status(firmware)[7] == "0"


def test_backlash_is_taken_up_on_reversal_without_counting(clock: FakeClock) -> None:
    firmware = make(clock, position=500, steps_per_second=100)
    assert ask(firmware, "C:50") == ["C:50"] and status(firmware)[9] == "50"
    ask(firmware, "M:600")  # first move: no previous direction, no take-up
    clock.advance(1)
    assert (firmware.position, firmware.moving) == (600, False)
    ask(firmware, "M:700")  # same direction: none
    clock.advance(1)
    assert (firmware.position, firmware.moving) == (700, False)
    ask(firmware, "M:600")  # reversal: 50 uncounted steps first
    clock.advance(0.4)
    assert (firmware.position, firmware.moving) == (700, True)
    clock.advance(0.6)
    assert (firmware.position, firmware.moving) == (650, True)
    clock.advance(0.5)
    assert (firmware.position, firmware.moving) == (600, False)


# --- firmware variants ----------------------------------------------------------------------------------------
SET_COMMANDS = ["M:10", "G:5", "W:3", "S:300", "C:0", "H"]


@pytest.mark.parametrize("variant", ["recent", "2.8"])
def test_recent_firmware_answers_every_set_command(clock: FakeClock, variant: str) -> None:
    firmware = make(clock, variant=variant)
    answers = [ask(firmware, line) for line in SET_COMMANDS]
    assert answers == [["M:10"], ["G:5"], ["W:3"], ["S:300"], ["C:0"], ["0"]]


@pytest.mark.parametrize("variant", ["old", "reset"])
def test_old_firmware_answers_only_some(clock: FakeClock, variant: str) -> None:
    firmware = make(clock, variant=variant, steps_per_second=1000)
    assert [ask(firmware, line) for line in SET_COMMANDS] == [[]] * len(SET_COMMANDS)
    assert ask(firmware, "N:1") == ["N:1"] and ask(firmware, "L:1") == ["L:0"] and ask(firmware, "E:1") == ["E:1"]
    assert ask(firmware, "R:1") == ["1"]
    assert (firmware.position, firmware.backlash, firmware.speed) == (3, 0, 300)  # silent, but obeyed


def test_firmware_2_8_ends_lines_with_crlf(clock: FakeClock) -> None:
    firmware = make(clock, variant="2.8")
    assert firmware.feed(b"#\nA\nH\n") == b"OK_DMFCN\r\nOK_DMFCN:2.8:1:20.00:0:0:1:0:0:0\r\n0\r\n"
    assert make(clock, variant="recent").feed(b"#\n") == b"OK_DMFCN\n"


def test_led_and_knob(clock: FakeClock) -> None:
    firmware = make(clock)
    assert ask(firmware, "L:1") == ["L:0"] and status(firmware)[6] == "0"
    assert ask(firmware, "L:2") == ["L:1"] and ask(firmware, "L") == ["L:1"]
    assert ask(firmware, "E:1") == ["E:1"] and status(firmware)[8] == "1" and not firmware.knob_enabled
    assert ask(firmware, "E:0") == ["E:0"] and firmware.knob_enabled


def test_reset_variant_reboots_on_open_and_ignores_input(clock: FakeClock) -> None:
    firmware = make(clock, variant="reset", steps_per_second=100)
    assert firmware.boot_delay == pf.BOOT_DELAY_S == pf.BOOT_DELAYS["reset"] == 2.0
    ask(firmware, "M:1000")
    clock.advance(1)
    firmware.feed(b"M:5")  # a partial line in the buffer when the port opens
    assert firmware.boot() == b""
    assert firmware.booting and firmware.boots == 1 and not firmware.moving and firmware.position == 100
    assert ask(firmware, "#") == [] and firmware.boot_ignored_bytes == 2
    clock.advance(1.9)
    assert ask(firmware, "#") == []
    clock.advance(0.2)
    assert ask(firmware, "#") == ["OK_DMFCN"]
    assert firmware.position == 100  # the partial "M:5" was dropped by the reboot


@pytest.mark.parametrize("variant", ["recent", "old", "2.8"])
def test_other_variants_do_not_reboot(clock: FakeClock, variant: str) -> None:
    firmware = make(clock, variant=variant)
    assert firmware.boot_delay == 0.0 and firmware.boot() == b"" and not firmware.booting
    assert ask(firmware, "#") == ["OK_DMFCN"]


# --- DC motor mode --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["R:2", "R:0"])
def test_dc_mode_has_no_absolute_position(clock: FakeClock, command: str) -> None:
    firmware = make(clock, position=700, steps_per_second=100)
    assert ask(firmware, command) == ["0"] and ask(firmware, "R") == ["0"]
    assert status(firmware)[2] == "0"
    ask(firmware, "M:900")
    assert not firmware.moving and firmware.position == 700  # M does nothing
    ask(firmware, "G:100")  # G runs the motor for 100 steps' time, uncounted
    clock.advance(0.5)
    assert status(firmware)[4:6] == ["700", "1"]
    clock.advance(1)
    assert status(firmware)[4:6] == ["700", "0"]
    assert ask(firmware, "R:1") == ["1"] and status(firmware)[2] == "1"
    ask(firmware, "M:750")
    clock.advance(1)
    assert firmware.position == 750


def test_focuscube_has_a_stepper_only(clock: FakeClock) -> None:
    firmware = make(clock, "focuscube")
    assert ask(firmware, "R:2") == ["ERR:"] and ask(firmware, "R") == ["1"]
    assert status(firmware)[2] == "1" and firmware.rejected_commands == ["R:2"]


# --- request parsing ------------------------------------------------------------------------------------------
def test_split_requests_crlf_and_indi_trailing_d(clock: FakeClock) -> None:
    firmware = make(clock, steps_per_second=1000)
    assert firmware.feed_replies(b"M:1") == [] and firmware.feed_replies(b"20d\r") == []
    assert firmware.feed_replies(b"\n") == [b"M:120\n"]  # INDI sends "M:%ud"; the number is what counts
    assert ask(firmware, "W:7d") == ["W:7"]


@pytest.mark.parametrize("line", ["xyz", "m:10", "M", "M:", "M:-1", "A:1", "H:1", "N:2", "L:0", "S:0", "M:1x",
                                  "N:1d", "Q", "M:10 ", "M:99999999999"])
def test_malformed_requests_are_rejected(clock: FakeClock, line: str) -> None:
    recent, old = make(clock), make(clock, variant="old")
    assert ask(recent, line) == ["ERR:"] and ask(old, line) == []
    assert recent.rejected_commands == [line] and not recent.moving and recent.position == 0


def test_overlong_request_is_dropped_to_the_next_newline(clock: FakeClock) -> None:
    firmware = make(clock)
    assert firmware.feed_replies(b"9" * 100) == []
    assert firmware.feed_replies(b"M:5\n#\n") == [b"OK_DMFCN\n"]  # the tail "…M:5" is not a command
    assert not firmware.moving


def test_command_log(clock: FakeClock) -> None:
    firmware = make(clock)
    firmware.feed(b"#\nA\nA\nM:10\nbad\n\n")
    assert firmware.commands == ["#", "A", "A", "M:10", "bad"]
    assert firmware.command_counts == {"#": 1, "A": 2, "M": 1, "?": 1}
    assert firmware.rejected_commands == ["bad"]


def test_the_emulator_imports_nothing_from_the_drivers() -> None:
    """Independent on purpose: a bug in the codec must not hide behind the same bug in the emulator."""
    source = Path(pf.__file__).read_text()
    imported = [node.module or "" for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import)
                 for alias in node.names]
    assert not [name for name in imported if name.startswith("alpaca_focuser")]
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, alpaca_focuser.emulator.pegasus_firmware; "
                               "print(sorted(m for m in sys.modules if m.startswith('alpaca_focuser.drivers')))"],
        capture_output=True, text=True, check=True, timeout=60)
    assert loaded.stdout.strip() == "[]"


def test_emulate_picks_the_firmware_variant(tmp_path: Path) -> None:
    import argparse
    import signal

    import serial
    from test_emulator import emulate_process

    from alpaca_focuser.emulator import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert parser.parse_args(["--link", "x", "--variant", "old", "--protocol", "pegasus"]).variant == "old"
    for bad in (["--variant", "old"], ["--protocol", "pegasus", "--variant", "9.9"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["--link", "x", *bad])
    link = tmp_path / "ttyPegasus"
    with emulate_process("--link", str(link), "--protocol", "pegasus", "--variant", "2.8", "--position", "77") as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip().endswith("(profile dmfc, firmware 2.8)")
        with serial.Serial(str(link), 19200, timeout=1.0) as port:
            port.write(b"#\nA\n")
            assert port.read_until(b"\n") == b"OK_DMFCN\r\n"
            assert port.read_until(b"\n").split(b":")[4] == b"77"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
