"""Tests for the Moonlite firmware emulator: the state machine on bytes with a
fake clock, then the pty link end to end with pyserial."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import serial

from alpaca_focuser.emulator import MoonliteEmulator, MoonliteFirmware
from alpaca_focuser.emulator import cli


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, **kwargs: object) -> MoonliteFirmware:
    kwargs.setdefault("temperature_drift", False)
    return MoonliteFirmware(clock=clock, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------- firmware
def test_gp_gn_encoding_extremes(clock: FakeClock) -> None:
    fw = make(clock)
    assert fw.feed(b":GP#") == b"0000#"
    assert fw.feed(b":GN#") == b"0000#"
    fw.feed(b":SPFFFF#")
    assert fw.feed(b":GP#") == b"FFFF#"
    assert fw.feed(b":GN#") == b"FFFF#"
    assert make(clock, position=0x1A2B).feed(b":GP#") == b"1A2B#"


def test_set_commands_are_silent(clock: FakeClock) -> None:
    fw = make(clock)
    for cmd in (b":SP0010#", b":SN0020#", b":FQ#", b":C#", b":SD04#", b":SH#", b":SF#",
                b":SC05#", b":+#", b":-#"):
        assert fw.feed(cmd) == b"", cmd


def test_move_to_target_over_time(clock: FakeClock) -> None:
    fw = make(clock, steps_per_second=100.0)
    assert fw.feed(b":SN03E8#") == b""  # 1000
    assert fw.feed(b":GN#") == b"03E8#"
    assert fw.feed(b":GI#") == b"00#"  # SN alone does not move
    fw.feed(b":FG#")
    assert fw.feed(b":GI#") == b"01#"
    clock.advance(2.5)
    assert fw.feed(b":GP#") == b"00FA#"  # 250 steps
    assert fw.moving and fw.position == 250
    clock.advance(100)
    assert fw.feed(b":GP#:GI#") == b"03E8#00#"
    assert not fw.moving and fw.position == 1000


def test_move_downwards(clock: FakeClock) -> None:
    fw = make(clock, steps_per_second=10.0, position=100)
    fw.feed(b":SN0000#:FG#")
    clock.advance(3)
    assert fw.position == 70
    clock.advance(60)
    assert fw.feed(b":GP#:GI#") == b"0000#00#"


def test_fq_freezes_mid_move(clock: FakeClock) -> None:
    fw = make(clock, steps_per_second=100.0)
    fw.feed(b":SN1000#:FG#")  # 4096
    clock.advance(1.0)
    fw.feed(b":FQ#")
    assert fw.feed(b":GI#:GP#") == b"00#0064#"
    clock.advance(10)
    assert fw.feed(b":GP#") == b"0064#"
    assert not fw.moving


def test_sp_syncs_without_moving(clock: FakeClock) -> None:
    fw = make(clock, steps_per_second=100.0)
    fw.feed(b":SP1A2B#")
    assert fw.feed(b":GP#:GI#") == b"1A2B#00#"
    clock.advance(5)
    assert fw.position == 0x1A2B


def test_sn_while_moving_retargets(clock: FakeClock) -> None:
    fw = make(clock, steps_per_second=100.0)
    fw.feed(b":SN1000#:FG#")
    clock.advance(1.0)
    fw.feed(b":SN0032#")  # 50: already passed, turn back
    clock.advance(0.2)
    assert fw.position == 80
    clock.advance(10)
    assert fw.position == 50 and not fw.moving


def test_speed_from_step_delay_and_half_step(clock: FakeClock) -> None:
    fw = make(clock)
    assert fw.feed(b":GD#") == b"02#"
    fw.feed(b":SN2000#:FG#")
    clock.advance(1)
    assert fw.position == 500  # code 02
    fw.feed(b":FQ#:SD20#")
    assert fw.feed(b":GD#") == b"20#"
    start = fw.position
    fw.feed(b":SN2000#:FG#")
    clock.advance(1)
    assert fw.position - start == 32  # code 20
    fw.feed(b":SH#")  # mid-move change takes effect from now
    assert fw.feed(b":GH#") == b"FF#"
    clock.advance(1)
    assert fw.position - start == 32 + 64
    fw.feed(b":SF#")
    assert fw.feed(b":GH#") == b"00#"
    for code, rate in ((b"04", 250), (b"08", 125), (b"10", 63)):
        fw.feed(b":SD" + code + b"#")
        assert fw.speed == rate


def test_gi_clone_profile(clock: FakeClock) -> None:
    fw = make(clock, profile="clone", steps_per_second=10.0)
    assert fw.feed(b":GI#") == b"0#"
    fw.feed(b":SN0100#:FG#")
    assert fw.feed(b":GI#") == b"1#"


@pytest.mark.parametrize("celsius,reply", [(-1.0, b"FFFE#"), (25.0, b"0032#"), (0.0, b"0000#"),
                                           (-0.5, b"FFFF#"), (10.0, b"0014#")])
def test_gt_encoding(clock: FakeClock, celsius: float, reply: bytes) -> None:
    fw = make(clock, temperature=celsius)
    fw.feed(b":C#")
    assert fw.feed(b":GT#") == reply


def test_temperature_drift_is_slow_and_quantised(clock: FakeClock) -> None:
    fw = MoonliteFirmware(clock=clock, temperature=-1.0)  # drift on (the default)
    fw.feed(b":C#")
    assert fw.feed(b":GT#") == b"FFFE#"  # noise never moves a grid value at t=0
    values = []
    for _ in range(20):
        clock.advance(60)
        fw.feed(b":C#")
        values.append(fw.reported_temperature_c)
        assert abs(fw.temperature_c - -1.0) < 0.7
    assert all(v * 2 == int(v * 2) for v in values)
    assert any(v != -1.0 for v in values)  # it does drift
    assert all(abs(a - b) <= 0.5 for a, b in zip(values, values[1:]))


def test_gt_reports_last_conversion(clock: FakeClock) -> None:
    fw = make(clock, temperature=5.0)
    fw.feed(b":C#")
    fw.base_temperature = 7.0
    assert fw.feed(b":GT#") == b"000A#"  # still the latched 5.0
    fw.feed(b":C#")
    assert fw.feed(b":GT#") == b"000E#"


def test_version_backlight_coefficient(clock: FakeClock) -> None:
    fw = make(clock)
    assert fw.feed(b":GV#") == b"10#"
    assert fw.feed(b":GB#") == b"00#"
    assert fw.feed(b":GC#") == b"00#"
    fw.feed(b":SCFE#")
    assert fw.temp_coefficient == -2
    assert fw.feed(b":GC#") == b"FE#"
    fw.feed(b":+#")
    assert fw.temp_compensation
    fw.feed(b":-#")
    assert not fw.temp_compensation


def test_split_frames_across_feeds(clock: FakeClock) -> None:
    fw = make(clock, position=0x1234)
    assert fw.feed(b":G") == b""
    assert fw.feed(b"P") == b""
    assert fw.feed(b"#:S") == b"1234#"
    assert fw.feed(b"P00") == b""
    assert fw.feed(b"42#") == b""
    assert fw.position == 0x42


def test_garbage_before_colon_and_restart(clock: FakeClock) -> None:
    fw = make(clock)
    assert fw.feed(b"\x00\xffjunk##GP#:GP#") == b"0000#"
    assert fw.feed(b":GN:GP#") == b"0000#"  # ':' restarts the frame
    assert fw.commands == ["GP", "GP"]


def test_overlong_frame_discarded(clock: FakeClock) -> None:
    fw = make(clock)
    assert fw.feed(b":" + b"X" * 40 + b"#GP#") == b""
    assert fw.commands == []
    assert fw.feed(b":GP#") == b"0000#"


def test_several_commands_in_one_feed(clock: FakeClock) -> None:
    fw = make(clock, steps_per_second=100.0)
    assert fw.feed(b":GP#:GN#:SN1000#:GN#:GI#:GV#") == b"0000#0000#1000#00#10#"
    assert fw.commands == ["GP", "GN", "SN1000", "GN", "GI", "GV"]
    assert fw.command_counts["GN"] == 2 and fw.command_counts["SN"] == 1


def test_unknown_and_malformed_get_no_reply(clock: FakeClock) -> None:
    fw = make(clock)
    assert fw.feed(b":XY#:gp#:SN12#:SNzzzz#:SN1a2b#:GP1#") == b""
    assert fw.rejected_commands == ["XY", "gp", "SN12", "SNzzzz", "SN1a2b", "GP1"]
    assert fw.target == 0


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        MoonliteFirmware(profile="bogus")
    with pytest.raises(ValueError):
        MoonliteFirmware(position=70000)


# --------------------------------------------------------------- pty link
@pytest.fixture
def emu(tmp_path: Path) -> Iterator[MoonliteEmulator]:
    with MoonliteEmulator(link_path=str(tmp_path / "ttyMoonlite"), position=0x0123) as e:
        yield e


def ask(port: serial.Serial, command: bytes) -> bytes:
    port.write(command)
    return bytes(port.read_until(b"#"))


def test_pty_gp_round_trip(emu: MoonliteEmulator) -> None:
    assert os.path.realpath(emu.device_path).startswith("/dev/pts/")
    with serial.Serial(emu.device_path, 9600, timeout=1) as port:
        assert ask(port, b":GP#") == b"0123#"
        port.write(b":SN0200#:FG#")
        assert ask(port, b":GN#") == b"0200#"
        assert ask(port, b":GV#") == b"10#"
    assert emu.firmware.commands[:1] == ["GP"]


def test_pty_without_link() -> None:
    with MoonliteEmulator() as e:
        assert e.device_path.startswith("/dev/pts/")
        with serial.Serial(e.device_path, 9600, timeout=1) as port:
            assert ask(port, b":GI#") == b"00#"


def test_pty_replaces_stale_link_and_cleans_up(tmp_path: Path) -> None:
    link = tmp_path / "ttyX"
    link.symlink_to("/dev/pts/nonexistent")
    e = MoonliteEmulator(link_path=str(link)).start()
    assert os.readlink(link) == e.slave_name
    e.stop()
    e.stop()  # idempotent
    assert not os.path.lexists(link)


def test_pty_boot_delay(tmp_path: Path) -> None:
    with MoonliteEmulator(link_path=str(tmp_path / "tty"), boot_delay=0.5) as e:
        with serial.Serial(e.device_path, 9600, timeout=0.2) as port:
            opened = time.monotonic()
            assert ask(port, b":GP#") == b""  # rebooting: ignored
            while time.monotonic() - opened < 0.6:
                time.sleep(0.05)
            assert ask(port, b":GP#") == b"0000#"
        assert e.boot_ignored_commands == 1
        assert e.firmware.commands == ["GP"]
        # Closing and reopening reboots again.
        time.sleep(0.05)
        with serial.Serial(e.device_path, 9600, timeout=0.2) as port:
            assert ask(port, b":GP#") == b""
        assert e.open_count == 2


def test_pty_unplug_and_replug(emu: MoonliteEmulator) -> None:
    port = serial.Serial(emu.device_path, 9600, timeout=0.5)
    try:
        assert ask(port, b":SP0777#:GP#") == b"0777#"
        emu.unplug()
        assert not os.path.lexists(emu.device_path)
        with pytest.raises((serial.SerialException, OSError)):
            port.write(b":GP#")
            port.read_until(b"#")
    finally:
        port.close()
    emu.replug()
    with serial.Serial(emu.device_path, 9600, timeout=1) as port:
        assert ask(port, b":GP#") == b"0777#"


def test_pty_split_replies_arrive_whole(emu: MoonliteEmulator) -> None:
    emu.split_replies = True
    with serial.Serial(emu.device_path, 9600, timeout=1) as port:
        assert ask(port, b":GP#") == b"0123#"
        assert ask(port, b":GI#") == b"00#"


def test_pty_silent_times_out(emu: MoonliteEmulator) -> None:
    emu.silent = True
    with serial.Serial(emu.device_path, 9600, timeout=0.3) as port:
        assert ask(port, b":GP#") == b""
        deadline = time.monotonic() + 1
        while emu.firmware.command_counts["GP"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert emu.firmware.command_counts["GP"] == 1
        emu.silent = False
        assert ask(port, b":GP#") == b"0123#"


def test_pty_corrupt_delay_and_garbage(emu: MoonliteEmulator) -> None:
    with serial.Serial(emu.device_path, 9600, timeout=1) as port:
        emu.corrupt_replies = True
        reply = ask(port, b":GP#")
        assert len(reply) == 5 and reply.endswith(b"#") and reply != b"0123#"
        emu.corrupt_replies = False
        emu.reply_delay = 0.2
        started = time.monotonic()
        assert ask(port, b":GP#") == b"0123#"
        assert time.monotonic() - started >= 0.2
        emu.reply_delay = 0.0
        emu.send_garbage(b"\x00noise#")
        assert port.read_until(b"#") == b"\x00noise#"


def test_pty_motion_in_real_time(tmp_path: Path) -> None:
    with MoonliteEmulator(steps_per_second=1000.0) as e:
        with serial.Serial(e.device_path, 9600, timeout=1) as port:
            port.write(b":SN0064#:FG#")  # 100 steps: 0.1 s
            assert ask(port, b":GI#") == b"01#"
            time.sleep(0.2)
            assert ask(port, b":GI#") == b"00#"
            assert ask(port, b":GP#") == b"0064#"


def test_cli_arguments_and_validation() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--link", "/tmp/x", "--profile", "clone", "--position", "500"])
    assert (args.link, args.profile, args.boot_delay, args.steps_per_second, args.temperature,
            args.position) == ("/tmp/x", "clone", 0.0, None, 10.0, 500)
    with pytest.raises(SystemExit):
        parser.parse_args(["--link", "/tmp/x", "--position", "70000"])
    with pytest.raises(SystemExit):
        parser.parse_args([])


@contextlib.contextmanager
def emulate_process(*args: str) -> Iterator[subprocess.Popen[str]]:
    """``alpaca-focuser emulate ARGS`` in a child process (stdout piped); killed if the test leaves it running."""
    code = ("import argparse, sys\n"
            "from alpaca_focuser.emulator import cli\n"
            "p = argparse.ArgumentParser(); cli.add_arguments(p)\n"
            "sys.exit(cli.run(p.parse_args(sys.argv[1:])))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_run_until_sigterm(tmp_path: Path) -> None:
    link = tmp_path / "ttyCli"
    with emulate_process("--link", str(link), "--position", "42") as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("Moonlite emulator on /dev/pts/")
        assert line.endswith(f", linked at {link} (profile moonlite)")
        with serial.Serial(str(link), 9600, timeout=1) as port:
            assert ask(port, b":GP#") == b"002A#"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    assert not os.path.lexists(link)


# --------------------------------------------------------------- link pacing, logs and boot
def test_pty_chunked_replies_do_not_hold_up_input(tmp_path: Path) -> None:
    with MoonliteEmulator(link_path=str(tmp_path / "tty"), split_pause=0.3) as e:
        with serial.Serial(e.device_path, 9600, timeout=1) as port:
            port.write(b":GP#")
            time.sleep(0.01)
            sent_gv = time.monotonic()
            port.write(b":GV#")  # while GP's reply is being paced out
            assert port.read_until(b"#") == b"0000#" and port.read_until(b"#") == b"10#"
        (gp_at, gp), (gv_at, gv) = e.command_log
        assert (gp, gv) == ("GP", "GV")
        assert gv_at - sent_gv < 0.15  # read when it came, not after the 300 ms pause
        (t1, c1), (t2, c2), (t3, c3), (t4, c4) = e.output_log
        assert (c1 + c2, c3 + c4) == (b"0000#", b"10#")
        assert t2 - gp_at >= 0.3 and t4 - gv_at >= 0.3  # each reply in two chunks, the second 300 ms late
        assert t1 < t2 <= t3 < t4  # and never ahead of the reply before it


def test_pty_line_timing(tmp_path: Path) -> None:
    with MoonliteEmulator(link_path=str(tmp_path / "tty"), line_baud=9600, position=0x1234) as e:
        with serial.Serial(e.device_path, 9600, timeout=1) as port:
            assert ask(port, b":GP#") == b"1234#"
        [(arrived, command)] = e.command_log
        assert command == "GP"
        writes = e.output_log
        assert b"".join(data for _, data in writes) == b"1234#" and len(writes) == 5  # byte by byte
        assert writes[-1][0] - arrived >= 5 * 10 / 9600  # ~1.04 ms per byte at 9600 8N1


def test_pty_command_log_timestamps_arrival(emu: MoonliteEmulator) -> None:
    with serial.Serial(emu.device_path, 9600, timeout=1) as port:
        before = time.monotonic()
        port.write(b":SN0200#:FG#")
        deadline = time.monotonic() + 5
        while len(emu.command_log) < 2 and time.monotonic() < deadline:  # a loaded machine may read late
            time.sleep(0.005)
        time.sleep(0.05)
        second_write = time.monotonic()
        assert ask(port, b":FQ#:GI#") == b"00#"
    assert [c for _, c in emu.command_log] == ["SN0200", "FG", "FQ", "GI"]
    assert all(before <= t < before + 5.0 for t, _ in emu.command_log)
    # each command is stamped when it arrived, not when the link got round to it: FG before the second write,
    # FQ after it, at least the 50 ms pause apart
    assert emu.command_log[1][0] < second_write <= emu.command_log[2][0]
    assert emu.arrivals("FQ") == [emu.command_log[2][0]] and emu.command_log[2][0] >= emu.command_log[1][0] + 0.04


class BannerFirmware(MoonliteFirmware):
    """A board that prints a banner when it resets (like an ESP32) and loses its position."""

    def boot(self) -> bytes:
        super().boot()
        self.set_position(0)
        return b"ets Jun  8 2016 00:22:57\r\n"


def test_pty_boot_hook_runs_on_every_open(tmp_path: Path) -> None:
    from alpaca_focuser.emulator import PtyLink

    firmware = BannerFirmware(position=500)
    with PtyLink(firmware, str(tmp_path / "tty"), name="esp") as e:
        for _ in range(2):
            with serial.Serial(e.device_path, 115200, timeout=1) as port:
                assert port.read_until(b"\n") == b"ets Jun  8 2016 00:22:57\r\n"
                assert ask(port, b":GP#") == b"0000#"
                port.write(b":SP0100#")
                time.sleep(0.05)
            time.sleep(0.05)
        assert e.open_count == 2


def test_firmware_position_and_temperature_are_settable(clock: FakeClock) -> None:
    fw = make(clock, steps_per_second=100.0)
    fw.feed(b":SN1000#:FG#")
    clock.advance(1.0)
    fw.set_position(0x0777)  # stops the move there
    assert not fw.moving and fw.feed(b":GP#:GN#") == b"0777#0777#"
    fw.temperature = -4.5
    fw.feed(b":C#")
    assert fw.temperature == -4.5 and fw.feed(b":GT#") == b"FFF7#"
    with pytest.raises(ValueError):
        fw.set_position(70000)


def test_cli_protocol_table(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--link", "/tmp/x", "--profile", "nano", "--protocol", "myfp2"])  # any order
    assert (args.protocol, args.profile) == ("myfp2", "nano")
    assert parser.parse_args(["--link", "/tmp/x"]).protocol == "moonlite"
    for bad in (["--protocol", "myfp2", "--profile", "clone"], ["--profile", "esp32"], ["--protocol", "hal9000"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["--link", "/tmp/x", *bad])
    # A firmware module that is missing makes only its own protocol unavailable.
    monkeypatch.setitem(cli.PROTOCOLS, "myfp2", cli.EmulatedProtocol("myFocuserPro2", "alpaca_focuser.emulator.nope",
                                                                      "Nope", ("nano",), None))
    assert cli.run(parser.parse_args(["--link", "/tmp/x", "--protocol", "myfp2"])) == 2
    assert "The myfp2 emulator is not available" in capsys.readouterr().err
    assert cli.PROTOCOLS["moonlite"].load() is MoonliteFirmware


@pytest.mark.parametrize("protocol, profile, request_, reply_end", [
    ("myfp2", "nano", b":03#", b"#"), ("pegasus", "focuscube", b"#\n", b"\n")])
def test_cli_other_protocols(tmp_path: Path, protocol: str, profile: str, request_: bytes, reply_end: bytes) -> None:
    link = tmp_path / "ttyCli"
    with emulate_process("--link", str(link), "--protocol", protocol, "--profile", profile) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip().endswith(f", linked at {link} (profile {profile})")
        with serial.Serial(str(link), 9600, timeout=0.3) as port:
            reply = b""
            for _ in range(20):  # through the board's boot, if it reboots on open
                port.write(request_)
                reply = port.read_until(reply_end)
                if reply:
                    break
        assert reply in (b"F338#", b"OK_FC\n")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
