"""The myFocuserPro2 firmware model driven with a fake clock: replies, moves, move-while-moving, halt (Nano and the
ESP32's armed halt), sync, MaxStep, no probe, temperature, EEPROM quiet period, boot (banner, volatile state),
the firmware's line parser (serialEvent, toInt), and a cross-check of the project's codec against it on bytes."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from alpaca_focuser.drivers import myfp2_protocol as mp
from alpaca_focuser.emulator.framing import LINE_LIMIT
from alpaca_focuser.emulator.myfp2_firmware import BOOT_DELAYS, PROFILES, MyFP2Firmware
from fake_clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, profile: str = "nano", **kwargs: object) -> MyFP2Firmware:
    kwargs.setdefault("steps_per_second", 100.0)
    return MyFP2Firmware(profile, clock=clock, **kwargs)  # type: ignore[arg-type]


def ask(fw: MyFP2Firmware, frame: bytes) -> bytes:
    """One command, its whole reply (b"" for silent commands)."""
    return fw.feed(frame)


def reboot(fw: MyFP2Firmware, clock: FakeClock) -> bytes:
    """A port open: the DTR reset, then wait until the board listens again."""
    banner = fw.boot()
    clock.advance(fw.boot_delay)
    return banner


# --- replies ------------------------------------------------------------------------------------------------------
def test_nano_answers_every_query_in_the_firmware_format(clock: FakeClock) -> None:
    fw = MyFP2Firmware("nano", clock=clock, temperature=12.3)
    expected = {
        b":00#": b"P5000#", b":01#": b"I0#", b":02#": b"EOK#", b":03#": b"F338#",
        b":04#": b"FULN2003_M_MT_F\r\n338#", b":06#": b"Z12.25#", b":08#": b"M10000#", b":10#": b"Y10000#",
        b":11#": b"O0#", b":13#": b"R0#", b":24#": b"10#", b":25#": b"A1#", b":26#": b"B20#", b":29#": b"S1#",
        b":39#": b"N5000#", b":43#": b"C2#", b":55#": b"05000#", b":72#": b"30#", b":74#": b"40#", b":76#": b"50#",
        b":78#": b"60#", b":80#": b"70#", b":83#": b"c1#", b":87#": b"k0#", b":89#": b"91#",
    }
    for request, reply in expected.items():
        assert ask(fw, request) == reply, request
    assert fw.rejected_commands == []


def test_esp32_profile_differs_where_the_firmware_does(clock: FakeClock) -> None:
    fw = MyFP2Firmware("esp32", clock=clock, temperature=-3.3)
    assert fw.baud == 115200 and fw.boot_delay == BOOT_DELAYS["esp32"]
    assert ask(fw, b":06#") == b"Z-3.250#"  # %.3f
    assert ask(fw, b":08#") == b"M80000#"
    assert ask(fw, b":04#") == b"FPRO2ESP32DRV8825\r\n330#"
    nano = MyFP2Firmware(clock=clock)
    assert nano.baud == 9600 and nano.profile.name == "nano"


def test_replies_are_cut_at_the_firmware_buffer_size(clock: FakeClock) -> None:
    fw = make(clock)
    fw.profile = dataclasses.replace(fw.profile, board_name="ULN2003_M_MT_F_BT_IR_RE_BT")
    reply = ask(fw, b":04#")
    assert reply == b"FULN2003_M_MT_F_BT_IR_RE_BT\r\n33" and len(reply) == 31  # the '#' is lost, as on the board


def test_set_commands_never_reply(clock: FakeClock) -> None:
    fw = make(clock)
    for frame in (b":0500#", b":0712000#", b":121#", b":140#", b":151#", b":2230#", b":231#", b":27#", b":302#",
                  b":31100#", b":48#", b":7150#", b":731#", b":751#", b":7710#", b":7920#", b":881#", b":16#"):
        assert ask(fw, frame) == b"", frame
    assert fw.rejected_commands == []


# --- motion -------------------------------------------------------------------------------------------------------
def test_a_move_runs_in_time_and_finishes(clock: FakeClock) -> None:
    fw = make(clock, position=1000)
    ask(fw, b":051500#")
    assert ask(fw, b":01#") == b"I1#"
    assert ask(fw, b":39#") == b"N1500#"
    clock.advance(2.0)
    assert ask(fw, b":00#") == b"P1200#"
    clock.advance(3.0)
    assert ask(fw, b":00#") == b"P1500#"
    assert ask(fw, b":01#") == b"I0#"


def test_speed_follows_step_delay_motor_speed_and_step_mode(clock: FakeClock) -> None:
    fw = MyFP2Firmware("nano", clock=clock)
    assert fw.speed == pytest.approx(200.0)  # 5000 us between steps at fast speed
    ask(fw, b":150#")
    assert fw.speed == pytest.approx(200.0 / 3)  # slow triples the delay
    ask(fw, b":151#")
    assert fw.speed == pytest.approx(100.0)
    ask(fw, b":152#:302#")
    assert fw.speed == pytest.approx(400.0)  # half steps come twice as fast
    ask(fw, b":568000#")
    assert ask(fw, b":55#") == b"08000#"


def test_a_move_is_ignored_while_moving(clock: FakeClock) -> None:
    fw = make(clock, position=0)
    ask(fw, b":051000#")
    clock.advance(1.0)
    ask(fw, b":052000#")  # the firmware drops it without a word
    assert ask(fw, b":39#") == b"N1000#"
    clock.advance(20.0)
    assert ask(fw, b":00#") == b"P1000#"
    assert fw.command_counts["05"] == 2 and fw.rejected_commands == []


def test_a_move_beyond_max_step_is_clamped_not_refused(clock: FakeClock) -> None:
    fw = make(clock, position=9900)
    ask(fw, b":0550000#")
    assert ask(fw, b":39#") == b"N10000#"
    clock.advance(5.0)
    assert ask(fw, b":00#") == b"P10000#"


def test_relative_move_and_home(clock: FakeClock) -> None:
    fw = make(clock, position=500)
    ask(fw, b":64-200#")
    clock.advance(5.0)
    assert fw.position == 300
    ask(fw, b":28#")
    clock.advance(5.0)
    assert fw.position == 0


def test_backlash_steps_come_first_and_do_not_change_the_position(clock: FakeClock) -> None:
    fw = make(clock, position=1000)
    ask(fw, b":751#:7950#")  # 50 steps when the direction turns outward (the last move was inward)
    ask(fw, b":051100#")
    clock.advance(0.4)
    assert fw.position == 1000 and fw.moving  # still taking up the slack
    clock.advance(0.6)
    assert fw.position == 1050
    clock.advance(0.6)
    assert fw.position == 1100 and not fw.moving
    ask(fw, b":051200#")  # same direction: no backlash
    clock.advance(0.5)
    assert fw.position == 1150


def test_delay_after_move_keeps_is_moving_set(clock: FakeClock) -> None:
    fw = make(clock, position=0)
    ask(fw, b":71200#")
    ask(fw, b":05100#")
    clock.advance(1.1)
    assert ask(fw, b":00#:01#") == b"P100#I1#"
    clock.advance(0.15)
    assert ask(fw, b":01#") == b"I0#"


def test_moves_are_ignored_without_motor_power(clock: FakeClock) -> None:
    fw = make(clock, position=100)
    fw.stepper_power = False
    ask(fw, b":05900#")
    assert ask(fw, b":01#:89#") == b"I0#90#"
    assert fw.position == 100


# --- halt -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["nano", "esp32"])
def test_halt_while_moving_stops_where_the_motor_is(clock: FakeClock, profile: str) -> None:
    fw = make(clock, profile, position=0)
    ask(fw, b":051000#")
    clock.advance(3.0)
    ask(fw, b":27#")
    assert ask(fw, b":00#:01#:39#") == b"P300#I0#N300#"
    clock.advance(10.0)
    assert fw.position == 300 and not fw.halt_armed


def test_nano_halt_while_idle_is_harmless(clock: FakeClock) -> None:
    fw = make(clock, position=0)
    ask(fw, b":27#")
    ask(fw, b":05500#")
    clock.advance(6.0)
    assert ask(fw, b":00#") == b"P500#"


def test_esp32_halt_while_idle_stays_armed_and_stops_the_next_move(clock: FakeClock) -> None:
    fw = make(clock, "esp32", position=0)
    ask(fw, b":27#")  # ConformU does this; the ESP loop only checks halt_alert while stepping
    assert fw.halt_armed
    ask(fw, b":050#")  # a move to where it already is never reaches State_Moving: still armed
    assert fw.halt_armed
    ask(fw, b":05500#")
    clock.advance(6.0)
    assert ask(fw, b":00#:01#") == b"P1#I0#"  # stopped on its first step
    assert not fw.halt_armed
    ask(fw, b":05500#")
    clock.advance(6.0)
    assert ask(fw, b":00#") == b"P500#"


def test_esp32_halt_during_the_delay_after_move_arms_the_next_move(clock: FakeClock) -> None:
    fw = make(clock, "esp32", position=0)
    ask(fw, b":71200#:05100#")
    clock.advance(1.05)  # all steps done, still in State_DelayAfterMove
    assert ask(fw, b":01#") == b"I1#"
    ask(fw, b":27#")
    assert fw.halt_armed
    clock.advance(1.0)
    ask(fw, b":05900#")
    clock.advance(10.0)
    assert fw.position == 101


def test_retarget_is_halt_wait_move(clock: FakeClock) -> None:
    for profile in ("nano", "esp32"):
        fw = make(clock, profile, position=0)
        ask(fw, b":051000#")
        clock.advance(2.0)
        ask(fw, b":27#")
        while ask(fw, b":01#") != b"I0#":
            clock.advance(0.05)
        ask(fw, b":05100#")
        clock.advance(2.0)
        assert fw.position == 100, profile


# --- sync and MaxStep -------------------------------------------------------------------------------------------
def test_sync_sets_the_counter_not_the_motor(clock: FakeClock) -> None:
    fw = make(clock, position=1000)
    ask(fw, b":312500#")
    assert ask(fw, b":00#:39#") == b"P2500#N2500#"
    assert fw.physical_position == 1000
    ask(fw, b":3199999#")  # clamped to MaxStep
    assert fw.position == 10000


def test_sync_is_ignored_while_moving(clock: FakeClock) -> None:
    fw = make(clock, position=0)
    ask(fw, b":05500#")
    clock.advance(1.0)
    ask(fw, b":319000#:141#")  # sync and reverse are both ignored while moving
    clock.advance(10.0)
    assert ask(fw, b":00#:13#") == b"P500#R0#"


def test_max_step_is_kept_by_the_firmware_within_its_limits(clock: FakeClock) -> None:
    fw = make(clock, position=3000)
    ask(fw, b":0760000#")
    assert ask(fw, b":08#") == b"M60000#"
    ask(fw, b":07500#")
    assert ask(fw, b":08#") == b"M3000#"  # never below the current position
    fw.set_position(0)
    ask(fw, b":07500#")
    assert ask(fw, b":08#") == b"M1024#"  # FOCUSERLOWERLIMIT
    ask(fw, b":079999999#")
    assert ask(fw, b":08#") == b"M400000#"  # the Nano's FOCUSERUPPERLIMIT
    esp = make(clock, "esp32")
    ask(esp, b":079999999#")
    assert ask(esp, b":08#") == b"M500000#"


# --- temperature --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile, reply", [("nano", b"Z20.00#"), ("esp32", b"Z20.000#")])
def test_without_a_probe_the_temperature_is_a_constant_20(clock: FakeClock, profile: str, reply: bytes) -> None:
    fw = make(clock, profile, probe=False, temperature=-8.0)
    assert ask(fw, b":06#:83#:25#") == reply + b"c0#A0#"
    fw.temperature = 30.0
    clock.advance(5.0)
    assert ask(fw, b":06#") == reply
    ask(fw, b":231#")  # compensation cannot be switched on without a probe
    assert ask(fw, b":24#") == b"10#"


def test_a_probe_plugged_in_later_is_found_only_at_boot(clock: FakeClock) -> None:
    fw = make(clock, probe=False, temperature=5.0)
    fw.probe_connected = True
    assert ask(fw, b":83#:06#") == b"c0#Z20.00#"
    reboot(fw, clock)
    assert ask(fw, b":83#:06#") == b"c1#Z5.00#"


def test_temperature_is_driven_by_the_test_in_probe_resolution_steps(clock: FakeClock) -> None:
    fw = make(clock, temperature=10.0)
    fw.temperature = 11.13
    assert ask(fw, b":06#") == b"Z11.25#"  # 0.25 C steps
    fw.temperature_source = lambda elapsed: 2.0 - elapsed / 10.0
    clock.advance(30.0)
    assert ask(fw, b":06#") == b"Z-1.00#"
    assert mp.parse_temperature(ask(fw, b":06#")) == -1.0


def test_nano_keeps_the_last_valid_reading_and_reads_only_while_idle(clock: FakeClock) -> None:
    fw = make(clock, temperature=15.0, position=0)
    fw.temperature = 85.0  # the DS18B20 power-on value, outside read_temp()'s -40..80 window
    assert ask(fw, b":06#") == b"Z15.00#"
    fw.temperature = 16.0
    ask(fw, b":051000#")
    fw.temperature = 17.0
    clock.advance(1.0)
    assert ask(fw, b":06#") == b"Z16.00#"  # frozen while moving
    esp = make(clock, "esp32", temperature=15.0, position=0)
    ask(esp, b":051000#")
    esp.temperature = 17.0
    clock.advance(1.0)
    assert ask(esp, b":06#") == b"Z17.000#"  # the ESP loop reads on every pass


@pytest.mark.parametrize("direction, expected", [(0, 1950), (1, 2050)])
def test_firmware_temperature_compensation_moves_without_a_command(clock: FakeClock, direction: int,
                                                                   expected: int) -> None:
    fw = make(clock, position=2000, temperature=10.0)
    ask(fw, b":2250#:88%d#:231#" % direction)
    ask(fw, b":24#")  # takes the reference temperature
    fw.temperature = 9.5
    clock.advance(2.0)
    assert ask(fw, b":01#") == b"I0#"  # less than 1 C: nothing
    fw.temperature = 8.75
    clock.advance(2.0)
    ask(fw, b":00#")  # the firmware reacts on its own
    clock.advance(2.0)
    assert ask(fw, b":00#") == b"P%d#" % expected


# --- EEPROM and boot ----------------------------------------------------------------------------------------------
def test_boot_returns_what_the_board_prints(clock: FakeClock) -> None:
    assert make(clock).boot() == b""
    banner = make(clock, "esp32").boot()
    assert banner.startswith(b"ets Jun  8 2016") and banner.endswith(b"\r\n")
    assert b"#" not in banner and b":" in banner
    assert set(BOOT_DELAYS) == set(PROFILES)
    assert 1.0 <= BOOT_DELAYS["nano"] <= 2.0


@pytest.mark.parametrize("profile", ["nano", "esp32"])
def test_the_board_is_deaf_while_it_boots(clock: FakeClock, profile: str) -> None:
    fw = make(clock, profile)
    fw.boot()
    assert fw.booting
    assert ask(fw, b":03#") == b"" and fw.boot_ignored_bytes == 4
    clock.advance(fw.boot_delay - 0.05)
    assert ask(fw, b":03#") == b""  # retried too early: still lost
    clock.advance(0.1)
    assert not fw.booting
    assert ask(fw, b":03#") in (b"F338#", b"F330#")
    assert fw.commands == ["03"] and fw.boot_ignored_bytes == 8


def test_a_board_without_auto_reset_ignores_the_port_open(clock: FakeClock) -> None:
    fw = make(clock, "esp32", resets_on_open=False, position=0)
    ask(fw, b":27#:141#")  # an armed halt and an unsaved setting
    assert fw.boot() == b"" and not fw.booting and fw.boots == 0
    assert ask(fw, b":13#") == b"R1#" and fw.halt_armed


def test_boot_drops_a_partial_frame_and_a_move_in_progress(clock: FakeClock) -> None:
    fw = make(clock, position=1000)
    ask(fw, b":48#")
    ask(fw, b":052000#")
    clock.advance(3.0)
    fw.feed(b":05")
    reboot(fw, clock)
    assert ask(fw, b"99#:00#:01#") == b"P1000#I0#"  # the line is new: '99#' is command 99 (none); back at the saved
    # position
    assert fw.physical_position == 1300  # the motor stopped where the reset caught it
    assert fw.boots == 1


def test_nano_loses_settings_and_position_reset_within_the_quiet_period(clock: FakeClock) -> None:
    fw = make(clock, position=0)
    clock.advance(60.0)
    ask(fw, b":05200#")
    clock.advance(2.0)  # the move ended at +2 s; the EEPROM write waits 10 s more
    ask(fw, b":141#:7740#")
    clock.advance(5.0)
    reboot(fw, clock)
    assert ask(fw, b":00#:13#:78#") == b"P0#R0#60#"


def test_nano_saves_ten_seconds_after_the_last_move(clock: FakeClock) -> None:
    fw = make(clock, position=0)
    ask(fw, b":05200#:141#:7740#")  # reverse is ignored while moving, backlash steps are not
    clock.advance(2.0 + 9.5)
    fw.update()
    assert fw.saved_position == 0
    clock.advance(1.0)
    fw.update()
    assert fw.saved_position == 200 and fw.saved_settings.backlash_in_steps == 40
    reboot(fw, clock)
    assert ask(fw, b":00#:13#:78#") == b"P200#R0#640#"


def test_nano_saves_a_late_setting_at_once_but_never_temperature_compensation(clock: FakeClock) -> None:
    fw = make(clock)
    clock.advance(100.0)  # long after the last write: the quiet period has already passed
    ask(fw, b":141#:231#")
    ask(fw, b":00#")
    assert fw.saves == 1 and fw.saved_settings.reverse
    reboot(fw, clock)
    assert ask(fw, b":13#:24#") == b"R1#10#"  # tempcompstate lives in RAM only


def test_save_command_writes_at_once(clock: FakeClock) -> None:
    fw = make(clock, "esp32", position=0)
    ask(fw, b":05300#")
    clock.advance(4.0)
    ask(fw, b":48#:731#")
    reboot(fw, clock)
    assert ask(fw, b":00#:74#") == b"P300#40#"  # the setting after :48# was not saved yet


def test_esp32_saves_sixty_seconds_after_the_last_change(clock: FakeClock) -> None:
    fw = make(clock, "esp32", position=0)
    ask(fw, b":05300#")
    clock.advance(3.0)
    ask(fw, b":231#")
    clock.advance(50.0)
    ask(fw, b":141#")  # restarts the quiet period
    clock.advance(50.0)
    fw.update()
    assert fw.saved_position == 0
    clock.advance(15.0)
    fw.update()
    assert fw.saved_position == 300
    reboot(fw, clock)
    assert ask(fw, b":00#:13#:24#") == b"P300#R1#11#"  # the ESP saves compensation on/off too


def test_boot_clears_an_armed_halt(clock: FakeClock) -> None:
    fw = make(clock, "esp32", position=0)
    ask(fw, b":27#")
    reboot(fw, clock)
    assert not fw.halt_armed
    ask(fw, b":05100#")
    clock.advance(2.0)
    assert fw.position == 100


# --- the firmware's parser: serialEvent keeps its line, toInt() reads the rest ------------------------------------
@pytest.mark.parametrize(("frame", "target"), [(b":05abc#", 0), (b":05-5#", 0), (b":05 10#", 10), (b":051.5#", 1),
                                               (b":5#", 0), (b":0512345678#", 10000), (b":05200\r\n#", 200)])
def test_a_garbled_move_goes_where_to_int_reads_it(clock: FakeClock, frame: bytes, target: int) -> None:
    """serialcomms.h case 5: ``WorkString.toInt()``, then clamped to 0..MaxStep; no digits read as 0."""
    fw = make(clock, position=100)
    assert ask(fw, frame) == b""
    assert fw.rejected_commands == [frame[1:-1].decode()]  # not what a driver should send ...
    assert fw.target == target and fw.moving  # ... but the motor runs all the same


@pytest.mark.parametrize(("profile", "frames", "reply"), [
    ("nano", b":1210#:11#", b"O1#"),  # the first character only (INDI's old ":12%02d#" set the wrong value)
    ("nano", b":121#:1201#:11#", b"O0#"),
    ("nano", b":12x#:11#", b"O72#"),  # 'x' - '0', kept as a byte
    ("nano", b":14#:13#", b"R208#"),  # past the end of the String: 0 - '0'
    ("esp32", b":14#:13#", b"R243#"),  # the ESP reads the '#' it put back on the line
])
def test_on_off_settings_keep_the_byte_of_their_first_character(clock: FakeClock, profile: str, frames: bytes,
                                                                reply: bytes) -> None:
    assert ask(make(clock, profile), frames) == reply


@pytest.mark.parametrize("frame", [b":00x#", b":0#", b":#", b":ab#", b":GV#", b"#", b":00\r\n#"])
def test_a_command_number_that_is_not_two_digits_reads_as_zero_and_queries_ignore_arguments(
        clock: FakeClock, frame: bytes) -> None:
    """``substring(0, 2).toInt()``: Moonlite's ``:GV#`` and a bare ``#`` on an empty line ask the position."""
    fw = make(clock, position=100)
    assert ask(fw, frame) == b"P100#"


def test_unknown_commands_are_logged_without_a_reply(clock: FakeClock) -> None:
    fw = make(clock)
    assert ask(fw, b":99#:00#") == b"P5000#"
    assert fw.rejected_commands == ["99"]
    assert fw.commands == ["99", "00"] and fw.command_counts["00"] == 1


@pytest.mark.parametrize("profile", ["nano", "esp32"])
def test_a_bare_hash_runs_again_what_the_line_still_holds(clock: FakeClock, profile: str) -> None:
    """'#' queues the line and keeps it: the last command runs again, a move included."""
    fw = make(clock, profile, position=1000)
    ask(fw, b":64500#")  # a relative move: 500 steps out
    clock.advance(10.0)
    assert fw.position == 1500 and fw.line == "64500"
    assert ask(fw, b"#\n") == b""  # Pegasus's identify query: the same move once more
    clock.advance(10.0)
    assert fw.position == 2000 and fw.commands == ["64500", "64500"]
    assert fw.line == ("64500" if profile == "esp32" else "64500\n")  # the Nano keeps the line feed too
    assert ask(fw, b"A\n#\n") == b""  # the line now holds "64500\nA\n" (Nano): toInt() still reads 500
    clock.advance(10.0)
    assert fw.position == 2500
    assert ask(fw, b":03#") == b"F%s#" % fw.profile.firmware_version.encode() and fw.line == "03"
    assert ask(fw, b"#") == b"F%s#" % fw.profile.firmware_version.encode()  # a query left there is harmless


def test_bytes_outside_a_frame_stay_in_the_line_until_a_colon(clock: FakeClock) -> None:
    fw = make(clock)
    assert ask(fw, b"junk\r\n:0:00#xx:01#") == b"P5000#I0#"  # ':' empties the line, noise before it is gone
    assert ask(fw, b"3#") == b"I0#"  # after a frame, bytes join its line: "013" is still command 1
    assert ask(fw, b":" + b"1" * 40 + b"#:00#") == b"O0#P5000#"  # no length limit short of the heap: command 11
    assert [fw.feed(bytes([b])) for b in b":08#"] == [b"", b"", b"", b"M10000#"]


def test_a_line_that_never_meets_a_colon_starts_over_when_memory_runs_out(clock: FakeClock) -> None:
    fw = make(clock)
    fw.feed(b"\xff" * LINE_LIMIT + b"!08")  # the String's allocation fails: emptied, and the "!" lost with it
    assert fw.line == "08" and ask(fw, b"#") == b"M10000#"


def test_line_endings_inside_a_frame(clock: FakeClock) -> None:
    assert ask(make(clock, "esp32"), b":0\r\n0#") == b"P5000#"  # the ESP parser skips them
    nano = make(clock)
    assert ask(nano, b":0\r\n0#") == b"P5000#"  # the Nano keeps them: "0\r\n0" is toInt() 0, get position
    assert ask(nano, b":0\r\n5#") == b"P5000#" and not nano.moving  # not a move: command 0, not 5
    assert nano.rejected_commands == ["0\r\n0", "0\r\n5"]


def test_byte_settings_wrap_like_the_firmware(clock: FakeClock) -> None:
    fw = make(clock)
    ask(fw, b":77300#:153#:302#")
    assert ask(fw, b":78#:43#:29#") == b"644#C3#S2#"
    ask(fw, b":3032#")
    assert ask(fw, b":29#") == b"S2#"  # ULN2003: half step at most
    esp = make(clock, "esp32")
    ask(esp, b":3064#:22300#")
    assert ask(esp, b":29#:26#") == b"S32#B44#"  # DRV8825 up to 1/32; coefficient kept in a byte
    ask(fw, b":221500#")
    assert ask(fw, b":26#") == b"B1000#"  # the Nano clamps it


# --- codec against firmware, on bytes ---------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["nano", "esp32"])
def test_the_codec_reads_every_reply_of_the_firmware(clock: FakeClock, profile: str) -> None:
    fw = make(clock, profile, temperature=-4.6)
    framer = mp.ReplyFramer()
    for command in mp.REPLY_LETTERS:
        frames = framer.feed(fw.feed(mp.encode_query(command)))
        assert len(frames) == 1, command
        mp.parse_reply(command, frames[0])
    for command, value in ((mp.SET_REVERSE, True), (mp.SET_BACKLASH_IN_STEPS, 42), (mp.SET_MOTOR_SPEED, 1)):
        assert fw.feed(mp.encode_setting(command, value)) == b""
    fw.feed(mp.encode_move(5100) + mp.encode_sync(7) + mp.encode_set_max_step(20000))
    assert fw.rejected_commands == []
    assert mp.parse_setting(mp.GET_REVERSE, fw.feed(b":13#")) is True
    assert mp.parse_setting(mp.GET_BACKLASH_IN_STEPS, fw.feed(b":78#")) == 42
    assert mp.parse_max_step(fw.feed(b":08#")) == 20000


def test_the_emulator_imports_nothing_from_the_drivers() -> None:
    code = ("import sys, alpaca_focuser.emulator.myfp2_firmware as f; f.MyFP2Firmware(); "
            "print(sorted(m for m in sys.modules if m.startswith('alpaca_focuser.drivers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
