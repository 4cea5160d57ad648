"""MyFP2Driver through a real pty against the project's myFocuserPro2 emulator (its own parser, independent of the
driver), on both boards it models: the Arduino Nano (release 338) and an ESP32 serial build.

Tests that are not about the board's reboot on port open build the emulator with ``resets_on_open=False``, which
saves its 1-1.6 s deaf window per connect. Timing assertions are loose (a loaded machine); the order of events on
the wire is what they check.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from alpaca_focuser.config import FocuserConfig
from alpaca_focuser.drivers import myfp2_protocol as mp
from alpaca_focuser.drivers.myfp2 import MyFP2Driver, MyFP2Options
from alpaca_focuser.emulator.pty_link import PtyLink
from alpaca_focuser.errors import DEVICE_NOT_RESPONDING, SERIAL_PORT_ERROR, DriverError
from conftest import seconds_until, send_malformed_frames, wait_for
from test_serial_engine import halt_during_replies

SET_COMMANDS = {f"{command:02d}" for command in mp.SILENT_COMMANDS}  # 05 moves, 27 halts, the rest set things
QUICK = {"resets_on_open": False}  # no DTR reboot: for tests that are not about it
CHUNKED = {"split_pause": 0.015, "line_baud": 9600}  # a USB adapter's latency timer, at 9600-baud line timing
#: Noise a myFocuserPro2 line may carry, besides the Moonlite-shaped junk of conftest.MALFORMED_FRAMES.
MYFP2_JUNK = (b"P12a#", b"P-5#", b"P99999999#", b"I2#", b"PP#", b"\xff\x00#", b"rst:0x1 (POWERON_RESET)\r\n")


class PositionSampler:
    """``with PositionSampler(driver) as seen``: every position the driver reports, sampled each 2 ms."""

    def __init__(self, driver: MyFP2Driver) -> None:
        self.driver, self.done = driver, threading.Event()
        self.seen: list[int] = []
        self.thread = threading.Thread(target=self._sample, name="test-sampler", daemon=True)

    def _sample(self) -> None:
        while not self.done.is_set():
            self.seen.append(self.driver.status().position)
            time.sleep(0.002)

    def __enter__(self) -> list[int]:
        self.thread.start()
        return self.seen

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


@pytest.fixture
def make_driver() -> Iterator[Callable[..., MyFP2Driver]]:
    drivers: list[MyFP2Driver] = []

    def make(emu_or_path: PtyLink | str, connect: bool = True, **kwargs: Any) -> MyFP2Driver:
        if isinstance(emu_or_path, PtyLink):
            kwargs.setdefault("baud", emu_or_path.firmware.baud)  # type: ignore[attr-defined]
        path = emu_or_path if isinstance(emu_or_path, str) else emu_or_path.device_path
        kwargs.setdefault("reconnect_max_backoff", 1.0)
        driver = MyFP2Driver(path, name="test", **kwargs)
        drivers.append(driver)
        if connect:
            driver.connect()
        return driver

    yield make
    for driver in drivers:
        driver.close()


def commands(emu: PtyLink) -> list[str]:
    return list(emu.firmware.commands)


# --- connecting -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["nano", "esp32"])
def test_connect_through_the_boot(make_myfp2_emu: Any, make_driver: Any, profile: str) -> None:
    emu = make_myfp2_emu(profile=profile, position=4321, temperature=-3.3)
    fw = emu.firmware
    start = time.monotonic()
    driver = make_driver(emu)
    took = time.monotonic() - start
    print(f"handshake through the {profile} boot ({fw.boot_delay:.1f} s deaf): {took:.2f} s")
    assert fw.boot_delay * 0.9 < took < fw.boot_delay + 1.5
    assert fw.boots == 1 and fw.boot_ignored_bytes > 0  # the :03# retries really were dropped while it booted
    status = driver.status()
    assert (status.connected, status.position, status.moving, status.fault) == (True, 4321, False, None)
    assert status.temperature == -3.25  # the probe's 0.25 C steps
    caps = driver.capabilities()
    assert caps.max_position == fw.settings.max_step  # the firmware's own MaxStep: 10000 (Nano), 80000 (ESP32)
    assert caps.has_temperature
    assert caps.description == (f"myFocuserPro2 {fw.profile.board_name}, firmware {fw.profile.firmware_version} "
                                f"on {emu.device_path}")
    assert not SET_COMMANDS & {c[:2] for c in commands(emu)}  # nothing configured: the controller's settings stay
    if profile == "esp32":
        assert driver.link_stats().noise > 0  # the boot banner, dropped
    driver.connect()  # idempotent: no second handshake
    assert fw.boots == 1 and [t.name for t in threading.enumerate()].count("myfp2-test") == 1


def test_wrong_baud_rate_is_named(make_myfp2_emu: Any, make_driver: Any) -> None:
    emu = make_myfp2_emu(profile="esp32")  # 115200 baud
    driver = make_driver(emu, connect=False, baud=None, handshake_timeout=1.5)  # None: the default, 9600
    with pytest.raises(DriverError) as err:
        driver.connect()
    assert err.value.number == DEVICE_NOT_RESPONDING
    assert err.value.message == (f"No reply from myFocuserPro2 controller on {emu.device_path} after 1.5 s "
                                 "(is it powered, and is the baud rate 9600?)")
    assert emu.wrong_baud_bytes > 0 and not driver.status().connected


# --- moves, halt, sync --------------------------------------------------------------------------------------------
def test_move_exact_and_the_position_saved_at_once(make_myfp2_emu: Any, make_driver: Any) -> None:
    emu = make_myfp2_emu(position=100, steps_per_second=2000.0, **QUICK)
    driver = make_driver(emu)
    driver.move_to(1600)
    assert driver.status().moving  # the instant move_to returns
    wait_for(lambda: not driver.status().moving, 3.0, "the move to end")
    assert driver.status().position == 1600 == emu.firmware.position
    wait_for(lambda: "48" in commands(emu), 3.0, "the save")
    cmds = commands(emu)
    i = cmds.index("051600")
    assert cmds[i + 1] == "39"  # the target read back
    # saved once stopped (idle polls may follow it), exactly once, and no halt
    assert cmds.count("48") == 1 and cmds.index("48") > i + 1 and "27" not in cmds
    emu.firmware.update()
    assert emu.firmware.saved_position == 1600  # in EEPROM now, not 10 s later


@pytest.mark.parametrize("profile", ["nano", "esp32"])
def test_halt_mid_move(make_myfp2_emu: Any, make_driver: Any, profile: str) -> None:
    emu = make_myfp2_emu(profile=profile, position=1000, steps_per_second=500.0, **QUICK)
    fw = emu.firmware
    driver = make_driver(emu)
    driver.move_to(5000)
    wait_for(lambda: driver.status().position > 1100, 2.0, "the motor to start")
    driver.halt()
    wait_for(lambda: not driver.status().moving, 2.0, "the halt")
    assert driver.halt_sent_at is not None and driver.halt_requested_at is not None
    assert driver.halt_sent_at - driver.halt_requested_at < 0.05
    assert not fw.moving and not fw.halt_armed  # the halt was used up by the move it stopped
    assert 1100 < driver.status().position == fw.position < 5000
    time.sleep(0.3)
    assert driver.status().position == fw.position  # it really stayed there
    driver.move_to(800)  # and the next move runs in full
    wait_for(lambda: not driver.status().moving, 4.0, "the next move")
    assert driver.status().position == 800 == fw.position


@pytest.mark.parametrize("profile", ["nano", "esp32"])
def test_retarget_is_halt_wait_then_move(make_myfp2_emu: Any, make_driver: Any, profile: str) -> None:
    emu = make_myfp2_emu(profile=profile, position=2000, steps_per_second=1000.0, **QUICK)
    driver = make_driver(emu)
    driver.move_to(6000)
    wait_for(lambda: driver.status().position > 2200, 2.0, "the motor to start")
    driver.move_to(1500)  # the firmware would ignore :051500# while it moves
    moving = []
    while driver.status().moving:
        moving.append(True)
        time.sleep(0.005)
        assert len(moving) < 2000, "the retarget did not end"
    assert driver.status().position == 1500 == emu.firmware.position
    cmds = commands(emu)
    halt, move = cmds.index("27"), cmds.index("051500")
    assert cmds.index("056000") < halt < move
    assert "01" in cmds[halt:move]  # waited for the controller to report the stop
    assert len(moving) > 10  # IsMoving stayed true from the retarget through the halt to the end


def test_esp32_halt_while_idle_is_never_sent_and_the_next_move_completes(make_myfp2_emu: Any,
                                                                          make_driver: Any) -> None:
    """ConformU's sequence: Halt while idle, then Move. The ESP firmware would keep a halt received while idle
    and stop the next move on its first step."""
    emu = make_myfp2_emu(profile="esp32", position=100, steps_per_second=2000.0, **QUICK)
    driver = make_driver(emu)
    driver.halt()
    time.sleep(0.3)
    assert "27" not in commands(emu) and not emu.firmware.halt_armed and not driver.status().moving
    driver.move_to(3000)
    wait_for(lambda: not driver.status().moving, 4.0, "the move to end")
    assert driver.status().position == 3000 == emu.firmware.position
    stats = driver.link_stats()
    assert (stats.halts_requested, stats.halts_sent) == (1, 0)


def test_esp32_halt_arriving_after_the_last_step_does_not_cut_the_next_move(
        make_myfp2_emu: Any, make_driver: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A Halt while the firmware waits out its delay after a move: the motor has stopped but still reports moving,
    so the halt goes out, and the ESP firmware keeps it for the next move. That move must still complete."""
    emu = make_myfp2_emu(profile="esp32", position=1000, steps_per_second=2000.0, **QUICK)
    fw = emu.firmware
    with emu.lock:
        fw.settings.delay_after_move_ms = 300
    driver = make_driver(emu)
    driver.move_to(1200)
    wait_for(lambda: fw.position == 1200, 2.0, "the last step")
    assert fw.moving  # in the delay after the move
    driver.halt()
    wait_for(lambda: "27" in commands(emu), 1.0, "the halt on the wire")
    wait_for(lambda: not driver.status().moving, 2.0, "the end of the move")
    assert fw.halt_armed and driver.status().position == 1200  # the situation the driver must survive
    with caplog.at_level(logging.WARNING, logger="alpaca_focuser.drivers.myfp2"):
        driver.move_to(3000)
        wait_for(lambda: not driver.status().moving, 5.0, "the move to end")
    assert driver.status().position == 3000 == fw.position
    assert commands(emu).count("053000") == 2 and not fw.halt_armed
    assert "without a halt" in caplog.text


def test_a_moving_flag_raised_late_does_not_end_the_move(make_myfp2_emu: Any, make_driver: Any) -> None:
    """ESP firmware: :05# only sets the target and the main loop raises the moving flag on a later pass, so the
    first :01# after a move may still say 0, with the motor where it was (here: still taking up backlash)."""
    emu = make_myfp2_emu(profile="esp32", position=1000, steps_per_second=200.0, **QUICK)
    with emu.lock:
        emu.firmware.settings.backlash_out_enabled, emu.firmware.settings.backlash_out_steps = True, 40  # 0.2 s
    answer = emu.firmware.feed_replies
    faked: list[bytes] = []

    def flag_raised_late(data: bytes) -> list[bytes]:
        replies = answer(data)
        if data.startswith(b":01") and not faked and any(c.startswith("05") for c in emu.firmware.commands):
            faked.append(replies[0])
            return [b"I0#"]
        return replies

    emu.firmware.feed_replies = flag_raised_late  # type: ignore[method-assign]
    driver = make_driver(emu)
    driver.move_to(1100)
    wait_for(lambda: faked, 2.0, "the first moving query")
    time.sleep(0.05)
    assert driver.status().moving and emu.firmware.position == 1000  # not taken for the end of the move
    wait_for(lambda: not driver.status().moving, 3.0, "the move to end")
    assert driver.status().position == 1100 == emu.firmware.position


def test_sync_sets_the_counter_not_the_motor(make_myfp2_emu: Any, make_driver: Any) -> None:
    emu = make_myfp2_emu(position=5000, **QUICK)
    fw = emu.firmware
    driver = make_driver(emu)
    driver.sync(7000)
    assert driver.status().position == 7000  # the snapshot shows the sync at once
    wait_for(lambda: "48" in commands(emu), 2.0, "the sync and its save")
    cmds = commands(emu)
    assert cmds[cmds.index("317000"):][:3] == ["317000", "00", "48"]  # synced, read back, saved
    fw.update()
    assert fw.position == 7000 == fw.saved_position and fw.physical_position == 5000
    assert driver.status().position == 7000


def test_temperature_probe_and_no_probe(make_myfp2_emu: Any, make_driver: Any) -> None:
    bare = make_myfp2_emu(probe=False, **QUICK)
    driver = make_driver(bare, idle_poll_interval=0.2)
    assert not driver.capabilities().has_temperature and driver.status().temperature is None
    time.sleep(0.5)  # idle polls
    assert bare.firmware.command_counts["00"] >= 2 and bare.firmware.command_counts["06"] == 0  # 20 C is no reading
    assert bare.firmware.reported_temperature == mp.NO_PROBE_TEMPERATURE

    emu = make_myfp2_emu(temperature=12.3, **QUICK)
    driver = make_driver(emu, idle_poll_interval=0.2)
    assert driver.capabilities().has_temperature and driver.status().temperature == 12.25
    emu.firmware.temperature = 4.1
    wait_for(lambda: driver.status().temperature == 4.0, 3.0, "the new reading")
    answer = emu.firmware.feed_replies

    def disconnected_probe(data: bytes) -> list[bytes]:
        return [b"Z-127.00#" if reply.startswith(b"Z") else reply for reply in answer(data)]

    emu.firmware.feed_replies = disconnected_probe  # type: ignore[method-assign]  # some builds report -127
    polls = emu.firmware.command_counts["06"]
    wait_for(lambda: emu.firmware.command_counts["06"] >= polls + 2, 3.0, "two more readings")
    assert driver.status().temperature == 4.0 and driver.failed_polls == 0  # -127 is no reading: the last stands
    driver.disconnect()
    driver.connect()  # a probe that reads -127 at connect: no temperature at all
    assert not driver.capabilities().has_temperature and driver.status().temperature is None


# --- configuration ------------------------------------------------------------------------------------------------
def test_max_step_must_not_exceed_the_firmwares(make_myfp2_emu: Any, make_driver: Any) -> None:
    emu = make_myfp2_emu(**QUICK)  # Nano: MaxStep 10000, at most 400000
    fw = emu.firmware
    too_far = make_driver(emu, connect=False, options=MyFP2Options(max_step=50000))
    with pytest.raises(DriverError) as err:
        too_far.connect()
    assert err.value.message == ("max_step 50000 is above the myFocuserPro2 controller's own MaxStep 10000, which "
                                 "limits every move: lower max_step to 10000, or set set_controller_max_step = true "
                                 "to write 50000 into the controller")
    assert not too_far.status().connected and "07" not in fw.command_counts
    wait_for(lambda: not emu.client_open, 2.0, "the port to be closed")

    within = make_driver(emu, options=MyFP2Options(max_step=3000))
    assert within.capabilities().max_position == 10000 and fw.settings.max_step == 10000  # left alone
    within.close()

    written = make_driver(emu, options=MyFP2Options(max_step=50000, set_max_step=True))
    assert written.capabilities().max_position == 50000 == fw.settings.max_step
    written.close()

    beyond = make_driver(emu, connect=False, options=MyFP2Options(max_step=600000, set_max_step=True))
    with pytest.raises(DriverError) as err:
        beyond.connect()
    assert "600000" in err.value.message and "keeps 400000" in err.value.message


def test_settings_are_applied_on_every_connect(make_myfp2_emu: Any, make_driver: Any,
                                               caplog: pytest.LogCaptureFixture) -> None:
    emu = make_myfp2_emu(position=1000, steps_per_second=2000.0)  # reboots on every port open
    fw = emu.firmware
    options = MyFP2Options(reverse=True, backlash_in=30, backlash_out=0, step_mode=4, temp_comp=True)
    with caplog.at_level(logging.INFO, logger="alpaca_focuser.drivers.myfp2"):
        driver = make_driver(emu, options=options)
    s = fw.settings
    assert (s.reverse, s.backlash_in_enabled, s.backlash_in_steps, s.backlash_out_enabled) == (True, True, 30, False)
    assert s.temp_compensation and s.step_mode == 2  # a ULN2003 board goes no finer than half steps
    assert "asked the controller for step mode 4; it reports 2" in caplog.text
    assert s.coil_power is False and "12" not in fw.command_counts  # not configured: left alone

    driver.disconnect()
    driver.connect()  # the board rebooted and lost what it had not yet saved: applied again
    assert fw.boots == 2 and fw.settings.reverse and fw.settings.backlash_in_steps == 30
    assert commands(emu).count("141") == 2
    driver.move_to(1500)  # ends with :48#: settings and position saved
    wait_for(lambda: not driver.status().moving, 3.0, "the move")
    driver.disconnect()
    driver.connect()
    assert fw.boots == 3 and fw.settings.reverse
    cmds = commands(emu)
    assert cmds.count("141") == 2  # saved, so read back as it should be and not written again
    assert cmds.count("231") == 3  # the Nano never saves temperature compensation: written on every connect
    assert driver.status().position == 1500


def test_both_compensating_backlash_is_warned(make_myfp2_emu: Any, caplog: pytest.LogCaptureFixture,
                                              make_driver: Any) -> None:
    emu = make_myfp2_emu(**QUICK)
    cfg = FocuserConfig(name="t", driver="myfp2", port=emu.device_path, max_step=8000, controller_backlash_out=40)
    with caplog.at_level(logging.WARNING, logger="alpaca_focuser.drivers.myfp2"):
        plain = MyFP2Driver.from_config(cfg)  # no server-side backlash in this config
        plain.connect()
        plain.close()
        assert "compensated twice" not in caplog.text
        both = MyFP2Driver.from_config(replace(cfg, backlash_steps=25))  # the server's own backlash as well
        both.connect()
        both.close()
    assert ("backlash is compensated twice: by the controller (out 40 steps) and by the server (backlash_steps = 25)"
            in caplog.text)
    assert emu.firmware.settings.backlash_out_steps == 40


# --- faults ---------------------------------------------------------------------------------------------------
def test_unplug_while_idle_then_replug_keeps_the_true_position(make_myfp2_emu: Any, make_driver: Any) -> None:
    emu = make_myfp2_emu(position=1000, steps_per_second=2000.0)
    fw = emu.firmware
    driver = make_driver(emu)
    driver.move_to(3000)
    wait_for(lambda: not driver.status().moving, 3.0, "the move")
    time.sleep(0.2)
    emu.unplug()  # within the Nano's 10 s before it would save by itself
    detected = seconds_until(lambda: driver.status().fault is not None, 3.0, "the fault")
    assert driver.status().fault_number == SERIAL_PORT_ERROR and driver.status().position == 3000
    emu.replug()
    recovered = seconds_until(lambda: driver.status().fault is None, 8.0, "the reconnect")
    print(f"unplug detected after {detected:.2f} s (idle: at the next poll); recovered {recovered:.2f} s after "
          f"the replug")
    assert fw.boots == 2 and driver.reconnects == 1
    assert driver.status().position == 3000 == fw.position == fw.physical_position  # rebooted at the saved 3000


def test_unplug_mid_move_then_replug(make_myfp2_emu: Any, make_driver: Any, caplog: pytest.LogCaptureFixture) -> None:
    emu = make_myfp2_emu(profile="esp32", position=1000, steps_per_second=1000.0)
    fw = emu.firmware
    driver = make_driver(emu)
    driver.move_to(3000)
    wait_for(lambda: driver.status().position > 1100, 2.0, "the motor to start")
    emu.unplug()  # the controller stays powered and keeps moving
    detected = seconds_until(lambda: driver.status().fault is not None, 2.0, "the fault")
    status = driver.status()
    assert status.connected and not status.moving and 1100 < status.position < 3000  # the last known, kept
    assert emu.device_path in (status.fault or "")
    with pytest.raises(DriverError) as err:
        driver.move_to(2000)
    assert err.value.number == SERIAL_PORT_ERROR
    with caplog.at_level(logging.WARNING, logger="alpaca_focuser.drivers.myfp2"):
        emu.replug()
        recovered = seconds_until(lambda: driver.status().fault is None, 8.0, "the reconnect")
    print(f"unplug while moving detected after {detected:.2f} s; recovered {recovered:.2f} s after the replug")
    # The port open rebooted the board: it lost the move and reports the position it had saved before it, while
    # the motor is elsewhere. Nobody can know where: the driver reports the controller's count and says so.
    assert driver.status().position == fw.position == 1000 != fw.physical_position
    assert "the connection was lost during a move to 3000" in caplog.text
    driver.move_to(2500)  # and it works again
    wait_for(lambda: driver.status().position == 2500 and not driver.status().moving, 4.0, "the next move")


def test_garbage_never_becomes_a_position(make_myfp2_emu: Any, make_driver: Any) -> None:
    emu = make_myfp2_emu(position=1000, steps_per_second=1000.0, **QUICK)
    driver = make_driver(emu)
    with PositionSampler(driver) as seen:
        emu.split_replies = True
        driver.move_to(3000)
        send_malformed_frames(emu)
        for junk in MYFP2_JUNK:
            emu.send_garbage(junk)
            time.sleep(0.05)
        emu.split_replies = False
        emu.reply_delay = 0.3  # slow but within read_timeout
        time.sleep(0.5)
        emu.reply_delay = 0.0
        emu.corrupt_replies = True  # every reply mangled for a while: a fault, then recovery
        time.sleep(0.4)
        emu.corrupt_replies = False
        wait_for(lambda: driver.status().fault is None and not driver.status().moving, 8.0, "the end of the move")
    assert driver.status().position == emu.firmware.position == 3000
    stats = driver.link_stats()
    assert driver.failed_polls > 0 and stats.noise + stats.stray > 0  # the noise was noticed ...
    assert all(1000 <= p <= 3000 for p in seen) and seen == sorted(seen)  # ... and never became a position


def test_nano_without_motor_power_ignores_moves(make_myfp2_emu: Any, make_driver: Any,
                                                caplog: pytest.LogCaptureFixture) -> None:
    emu = make_myfp2_emu(position=5000, **QUICK)
    driver = make_driver(emu)
    emu.firmware.stepper_power = False  # the 12 V supply is off: the Nano ignores moves
    with caplog.at_level(logging.WARNING, logger="alpaca_focuser.drivers.myfp2"):
        driver.move_to(2000)
        wait_for(lambda: not driver.status().moving, 2.0, "IsMoving false")
    assert driver.status().position == 5000 == emu.firmware.position
    assert "did not take the move to 2000 (its target reads 5000)" in caplog.text


# --- issue 11: Halt while a reply is on its way ---------------------------------------------------------------
def test_halt_is_written_while_a_reply_is_in_flight(make_myfp2_emu: Any, make_driver: Any) -> None:
    emu = make_myfp2_emu(position=1000, steps_per_second=300.0, **QUICK, **CHUNKED)
    driver = make_driver(emu)
    halts = 8
    with PositionSampler(driver) as seen:
        latencies, before_reply_end = halt_during_replies(emu, driver, halts, halt="27", polls=("00", "01"))
    stats = driver.link_stats()
    print(f"Halt -> :27# at the emulator with chunked replies: median {statistics.median(latencies) * 1000:.2f} ms, "
          f"worst {max(latencies) * 1000:.2f} ms; {before_reply_end}/{halts} before the reply in flight ended")
    assert before_reply_end >= halts - 2 and stats.halts_out_of_band >= halts - 2
    assert statistics.median(latencies) < 0.010
    # The reply in flight was still read as the answer to its own query: nothing discarded, no fault.
    assert not stats.bad_replies and not stats.timeouts and stats.failed_polls == 0 and stats.faults == 0
    assert driver.status().fault is None
    assert all(1000 <= p <= 9000 for p in seen)  # never a position from the wrong reply


def test_connect_to_missing_port(tmp_path: Path, make_driver: Any) -> None:
    path = str(tmp_path / "ttyNOPE")
    with pytest.raises(DriverError) as err:
        make_driver(path)
    assert err.value.number == SERIAL_PORT_ERROR
