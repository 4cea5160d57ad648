"""PegasusDriver through a real pty against the project's Pegasus emulator (its own parser, independent of the
driver): the reboot on open, each firmware variant (set commands acknowledged or not, ``\\r\\n``), moves, halt,
retarget, sync, temperature and no probe, DC-motor mode, settings, unplug and recovery, garbage on the line, and a
Halt written while a chunked reply is on its way (issue 11).

Timing assertions are loose on purpose (a loaded machine); what the wire carried, in which order, is what they
check."""

from __future__ import annotations

import logging
import statistics
import threading
import time
from typing import Any, Callable, Iterator

import pytest

from alpaca_focuser.drivers.pegasus import PegasusDriver
from alpaca_focuser.emulator.pty_link import PtyLink
from alpaca_focuser.errors import DEVICE_NOT_RESPONDING, SERIAL_PORT_ERROR, DriverError
from conftest import positions_seen, started_until_teardown, wait_for

#: Each firmware variant, whether it acknowledges set commands, and its version string.
VARIANTS = [("recent", True, "3.3"), ("old", False, "2.6"), ("2.8", True, "2.8"), ("reset", False, "2.0")]
CHUNKED = {"split_pause": 0.015, "line_baud": 19200}  # a USB adapter's latency timer, at the DMFC's line speed


@pytest.fixture
def make_driver() -> Iterator[Callable[..., PegasusDriver]]:
    """Connected PegasusDrivers on an emulator (``connect=False`` to connect in the test); closed at teardown."""
    def start(emu: PtyLink, connect: bool = True, **kwargs: Any) -> PegasusDriver:
        kwargs.setdefault("reconnect_max_backoff", 1.0)
        driver = PegasusDriver(emu.device_path, name="test", **kwargs)
        if connect:
            driver.connect()
        return driver

    yield from started_until_teardown(start, PegasusDriver.close)


def set_commands(emu: PtyLink) -> list[str]:
    return [c for c in emu.firmware.commands if c not in ("#", "A", "B")]


# --- connecting ---------------------------------------------------------------------------------------------------
def test_connect_through_the_reboot_of_an_old_dmfc(make_pegasus: Any, make_driver: Any) -> None:
    emu = make_pegasus(variant="reset", position=4321, temperature=-3.25)
    start = time.monotonic()
    driver = make_driver(emu)
    took = time.monotonic() - start
    assert 2.0 <= took < 4.5  # the 2 s boot, waited out in silence after one early '#'
    assert emu.firmware.boot_ignored_bytes == 2  # that one '#\n' reached the booting board, nothing more
    status = driver.status()
    assert (status.connected, status.position, status.moving, status.temperature) == (True, 4321, False, -3.25)
    caps = driver.capabilities()
    assert caps.has_temperature and caps.max_position == 2**31 - 1
    assert caps.description == f"Pegasus Astro DMFC on {emu.device_path}, firmware 2.0"
    assert emu.firmware.commands[:2] == ["#", "A"] and driver.model == "DMFCN"
    driver.connect()  # idempotent
    assert emu.open_count == 1 and [t.name for t in threading.enumerate()].count("pegasus-test") == 1


def test_connect_at_once_when_the_board_does_not_reboot(make_pegasus: Any, make_driver: Any) -> None:
    emu = make_pegasus(profile="focuscube", position=77)
    start = time.monotonic()
    driver = make_driver(emu)
    assert time.monotonic() - start < 1.8  # no 2 s boot wait: the first '#' was answered
    assert driver.capabilities().description == f"Pegasus Astro FocusCube 2 on {emu.device_path}, firmware 3.3"
    assert driver.status().position == 77 and driver.baud == 19200
    assert emu.firmware.commands == ["#", "A"]  # queries only: nothing set that the config did not ask for


def test_connect_to_a_silent_port_names_the_baud_rate(make_pegasus: Any, make_driver: Any) -> None:
    emu = make_pegasus()
    emu.silent = True
    driver = make_driver(emu, connect=False)
    start = time.monotonic()
    with pytest.raises(DriverError) as err:
        driver.connect()
    assert time.monotonic() - start < 5.5
    assert err.value.number == DEVICE_NOT_RESPONDING
    assert err.value.message == (f"No reply from Pegasus Astro controller on {emu.device_path} after 4.0 s "
                                 "(is it powered, and is the baud rate 19200?)")
    assert emu.firmware.commands.count("#") >= 3  # one early try, then retries after the quiet boot window


# --- each firmware variant ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant, acknowledges, version", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_move_halt_and_sync_on_every_firmware_variant(make_pegasus: Any, make_driver: Any, variant: str,
                                                      acknowledges: bool, version: str) -> None:
    emu = make_pegasus(variant=variant, position=1000, steps_per_second=1000.0)
    driver = make_driver(emu)
    assert driver.firmware_version == version and driver.acknowledges_set_commands is None
    driver.move_to(1800)
    assert driver.status().moving  # the instant move_to returns
    wait_for(lambda: not driver.status().moving, 3.0, "the move to end")
    assert driver.status().position == 1800 == emu.firmware.position
    assert driver.acknowledges_set_commands is acknowledges  # learnt from that first M

    driver.move_to(9000)
    wait_for(lambda: driver.status().position > 2000, 2.0, "the motor to start")
    driver.halt()
    wait_for(lambda: not driver.status().moving, 1.0, "the halt to be seen")
    assert not emu.firmware.moving and 2000 < driver.status().position == emu.firmware.position < 9000
    driver.sync(500)
    assert driver.status().position == 500
    wait_for(lambda: emu.firmware.position == 500, 2.0, "the sync at the controller")
    time.sleep(0.3)
    assert driver.status().position == 500

    stats = driver.link_stats()
    assert set_commands(emu) == ["M:1800", "M:9000", "H", "W:500"]
    assert stats.failed_polls == 0 and not stats.bad_replies and stats.faults == 0
    # What was waited for in vain: the first M of a firmware that never acknowledges one, and the early # that a
    # rebooting board does not hear.
    assert dict(stats.timeouts) == ({} if acknowledges else {"M": 1}) | ({"#": 1} if variant == "reset" else {})
    assert stats.halt_replies == (1 if acknowledges else 0)  # the halt's own '0', consumed
    assert (stats.replies.get("M", 0), stats.replies.get("W", 0)) == ((2, 1) if acknowledges else (0, 0))  # echoes


def test_a_consumed_halt_answer_does_not_hold_up_the_next_poll(make_pegasus: Any, make_driver: Any) -> None:
    emu = make_pegasus(position=0, steps_per_second=500.0)
    driver = make_driver(emu, read_timeout=2.0)
    driver.move_to(100)
    wait_for(lambda: not driver.status().moving, 3.0, "the first move")  # the firmware's acknowledgements learnt
    driver.move_to(5000)
    wait_for(lambda: emu.firmware.position > 200, 2.0, "motion")
    driver.halt()
    halt_at = wait_for(lambda: emu.arrivals("H"), 1.0, "H")[0]
    next_poll = wait_for(lambda: [t for t, c in emu.command_log if c == "A" and t > halt_at], 1.5, "the next A")[0]
    assert next_poll - halt_at < 1.0  # not the 2 s read timeout: the '0' was taken as soon as it came
    assert driver.link_stats().halt_replies == 1 and not driver.link_stats().timeouts


def test_retarget_is_halt_wait_then_move(make_pegasus: Any, make_driver: Any) -> None:
    emu = make_pegasus(position=2000, steps_per_second=1000.0)
    driver = make_driver(emu)
    driver.move_to(6000)
    wait_for(lambda: driver.status().position > 2300, 2.0, "the motor to start")
    driver.move_to(1500)
    assert driver.status().moving
    wait_for(lambda: not driver.status().moving, 5.0, "the retargeted move to end")
    assert driver.status().position == 1500 == emu.firmware.position
    commands = set_commands(emu)
    assert commands == ["M:6000", "H", "M:1500"]  # halted, and M:1500 only once the motor had stopped
    assert emu.firmware.command_counts["A"] >= 3


def test_a_wrong_echo_is_sent_again(make_pegasus: Any, make_driver: Any) -> None:
    """The board took another target than the one sent (a byte lost on the way): its echo says so, and the
    move is sent again; the focuser ends where it was asked to go."""
    emu = make_pegasus(position=100, steps_per_second=2000.0)
    answer = emu.firmware.feed_replies
    corrupted = []

    def lose_a_digit_once(data: bytes) -> list[bytes]:
        if data == b"M:1234\n" and not corrupted:
            corrupted.append(data)
            return answer(b"M:124\n")
        return answer(data)

    emu.firmware.feed_replies = lose_a_digit_once  # type: ignore[method-assign]
    driver = make_driver(emu)
    driver.move_to(1234)
    wait_for(lambda: not driver.status().moving, 3.0, "the move to end")
    assert driver.status().position == 1234 == emu.firmware.position
    assert set_commands(emu) == ["M:124", "M:1234"]
    assert driver.status().fault is None


# --- temperature, DC mode, settings ---------------------------------------------------------------------------------
def test_temperature_and_a_missing_probe(make_pegasus: Any, make_driver: Any,
                                         caplog: pytest.LogCaptureFixture) -> None:
    emu = make_pegasus(temperature=-3.25)
    driver = make_driver(emu, idle_poll_interval=0.1)
    assert driver.has_temperature and driver.status().temperature == -3.25
    emu.firmware.temperature = 4.5
    wait_for(lambda: driver.status().temperature == 4.5, 2.0, "the new temperature")
    caplog.set_level(logging.WARNING, logger="alpaca_focuser")
    emu.firmware.temperature = None  # the probe unplugged: -127
    wait_for(lambda: any("probe" in r.getMessage() for r in caplog.records), 2.0, "a warning")
    time.sleep(0.3)
    assert driver.status().temperature == 4.5  # -127 is never shown as a temperature

    no_probe = make_pegasus(temperature=None)
    driver = make_driver(no_probe)
    assert not driver.has_temperature and driver.status().temperature is None
    assert not driver.capabilities().has_temperature


def test_dc_motor_mode_is_refused_with_a_clear_error(make_pegasus: Any, make_driver: Any) -> None:
    emu = make_pegasus(position=300)
    emu.firmware.stepper = False  # the DMFC was switched to a DC motor (Pegasus Unity, or INDI)
    driver = make_driver(emu, connect=False)
    with pytest.raises(DriverError) as err:
        driver.connect()
    assert "DC-motor mode" in err.value.message and "Stepper" in err.value.message
    assert "switch_to_stepper = true" in err.value.message
    assert not driver.status().connected and set(emu.firmware.commands) <= {"#", "A"}  # nothing written

    switching = make_driver(emu, switch_to_stepper=True)
    assert emu.firmware.stepper and switching.status().position == 300
    assert set_commands(emu) == ["R:1"]
    switching.move_to(400)
    wait_for(lambda: not switching.status().moving, 3.0, "a move in stepper mode")
    assert emu.firmware.position == 400


def test_settings_are_written_only_when_configured_and_different(make_pegasus: Any, make_driver: Any,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="alpaca_focuser")
    emu = make_pegasus(variant="old", backlash=0)
    driver = make_driver(emu, reverse=True, backlash=40, led=False, speed=600, server_backlash=25)
    fw = emu.firmware
    assert (fw.reverse, fw.backlash, fw.led, fw.speed) == (True, 40, False, 600)
    assert set_commands(emu) == ["N:1", "C:40", "L:1", "S:600"]
    assert any("both the controller (40 steps) and the server (backlash_steps = 25)" in r.getMessage()
               for r in caplog.records)
    assert driver.acknowledges_set_commands is False  # learnt from C, which the old firmware does not echo
    driver.disconnect()
    driver.connect()  # the board has them now: nothing is written again
    assert set_commands(emu) == ["N:1", "C:40", "L:1", "S:600"] and emu.open_count == 2


def test_settings_left_alone_by_default(make_pegasus: Any, make_driver: Any) -> None:
    emu = make_pegasus(backlash=120)
    emu.firmware.reverse, emu.firmware.led = True, False
    driver = make_driver(emu)
    driver.move_to(50)
    wait_for(lambda: not driver.status().moving, 3.0, "a move")
    fw = emu.firmware
    assert (fw.reverse, fw.backlash, fw.led, fw.speed) == (True, 120, False, 400)
    assert set_commands(emu) == ["M:50"]


# --- faults ---------------------------------------------------------------------------------------------------------
def test_unplug_mid_move_then_replug(make_pegasus: Any, make_driver: Any) -> None:
    emu = make_pegasus(position=1000, steps_per_second=1000.0)
    driver = make_driver(emu)
    driver.move_to(3000)
    wait_for(lambda: driver.status().position > 1100, 2.0, "the motor to start")
    emu.unplug()  # the controller stays powered and keeps moving
    wait_for(lambda: driver.status().fault is not None, 2.0, "the fault")
    status = driver.status()
    assert status.connected and not status.moving and status.fault_number == SERIAL_PORT_ERROR
    assert emu.device_path in (status.fault or "") and 1100 < status.position < 3000  # the last known, kept
    with pytest.raises(DriverError):
        driver.move_to(2000)
    time.sleep(0.5)
    emu.replug()
    wait_for(lambda: driver.status().fault is None, 5.0, "the automatic reconnect")
    wait_for(lambda: not driver.status().moving, 3.0, "the move to end")
    assert driver.status().position == emu.firmware.position == 3000  # from the firmware, never zero
    assert driver.reconnects == 1 and emu.open_count == 2
    driver.move_to(2500)
    wait_for(lambda: driver.status().position == 2500 and not driver.status().moving, 3.0, "the next move")


def test_silent_controller_faults_then_recovers(make_pegasus: Any, make_driver: Any) -> None:
    emu = make_pegasus(position=42)
    driver = make_driver(emu)
    emu.silent = True
    wait_for(lambda: driver.status().fault is not None, 4.0, "the fault")
    assert driver.status().fault_number == DEVICE_NOT_RESPONDING and "no valid reply" in driver.status().fault
    emu.silent = False
    wait_for(lambda: driver.status().fault is None, 8.0, "the recovery")
    assert driver.status().position == 42


#: Lines that must never become a position: other commands' answers (a late echo, a halt's 0, the handshake, a
#: refusal) and broken status lines. A well-formed status line with another position cannot be told from the
#: real one by anybody, so it is not a fair test.
NOISE = (b"M:777\n", b"0\n", b"OK_DMFCN\n", b"ERR:\n", b"W:5\r\n", b"OK_DMFCN:3.3:1:2\n", b"\xff\xfe\x00\n",
         b"12345\n", b"OK_DMFCN:3.3:x:20.00:5:0:1:0:0:0\n", b"Z" * 120 + b"\n", b"OK_DMFCN:3.3:1:20.00:55")


def test_noise_never_yields_a_wrong_position(make_pegasus: Any, make_driver: Any) -> None:
    emu = make_pegasus(position=1000, steps_per_second=1000.0)
    driver = make_driver(emu)
    with positions_seen(lambda: driver.status().position) as seen:
        driver.move_to(3000)
        wait_for(lambda: driver.status().position > 1100, 2.0, "the motor to start")
        emu.split_replies = True  # garbage may now land inside a reply, as line noise does
        for junk in NOISE:
            emu.send_garbage(junk)
            time.sleep(0.06)
        emu.split_replies = False
        emu.corrupt_replies = True  # every reply mangled for a while: a fault, then recovery
        time.sleep(0.4)
        emu.corrupt_replies = False
        wait_for(lambda: driver.status().fault is None and not driver.status().moving, 8.0, "the end of the move")
    assert driver.status().position == emu.firmware.position == 3000
    stats = driver.link_stats()
    assert stats.failed_polls > 0  # the noise was noticed ...
    assert all(1000 <= p <= 3000 for p in seen)  # ... and never reported as a position
    assert seen == sorted(seen)


def test_lines_answering_other_commands_are_skipped(make_pegasus: Any, make_driver: Any) -> None:
    """Late echoes, a halt's 0, the handshake's answer arriving just before a status line: each is skipped, none
    is read as the status, and no poll fails."""
    emu = make_pegasus(position=1000, steps_per_second=1000.0, variant="old")
    answer = emu.firmware.feed_replies
    strays = [b"M:777\n", b"0\n", b"OK_DMFCN\n", b"W:5\r\n", b"H:1\n"]

    def late_lines_first(data: bytes) -> list[bytes]:
        replies = answer(data)
        if data == b"A\n" and emu.firmware.moving:
            return [strays[emu.firmware.command_counts["A"] % len(strays)], *replies]
        return replies

    emu.firmware.feed_replies = late_lines_first  # type: ignore[method-assign]
    driver = make_driver(emu)
    driver.move_to(2000)
    wait_for(lambda: not driver.status().moving, 3.0, "the move to end")
    assert driver.status().position == 2000 == emu.firmware.position
    stats = driver.link_stats()
    assert stats.stray >= 5 and stats.failed_polls == 0 and not stats.bad_replies


# --- Halt while a reply is on its way (issue 11) -------------------------------------------------------------------
def halts_during_replies(emu: PtyLink, driver: PegasusDriver, halts: int) -> tuple[list[float], int]:
    """Halts, each the moment an ``A`` reached the emulator (its reply then on its way in two chunks): the times
    from ``halt()`` to ``H`` at the emulator, and how many arrived before that reply had been written in full.
    Moves alternate towards 9000 and 1000 from about 5000, so every halt lands mid-move."""
    latencies, before_reply_end = [], 0
    for i in range(halts):
        driver.move_to(9000 if i % 2 == 0 else 1000)
        time.sleep(0.15)
        seen = len(emu.command_log)
        polled = wait_for(lambda: next((t for t, c in emu.command_log[seen:] if c == "A"), None), 2.0, "an A")
        halts_seen = len(emu.arrivals("H"))
        asked = time.monotonic()
        driver.halt()
        arrived = wait_for(lambda: emu.arrivals("H")[halts_seen:], 2.0, "H at the emulator")[0]
        latencies.append(arrived - asked)
        reply_end = wait_for(lambda: next((t for t, data in list(emu.output_log)
                                           if t >= polled and data.endswith(b"\n")), None), 2.0, "the reply")
        before_reply_end += arrived < reply_end
        wait_for(lambda: not driver.status().moving, 3.0, "the halt to be seen")
        assert not emu.firmware.moving
        assert driver.status().position == emu.firmware.position  # stopped where the controller says
    return latencies, before_reply_end


@pytest.mark.parametrize("variant", ["recent", "old"])
def test_halt_is_written_while_a_chunked_reply_is_in_flight(make_pegasus: Any, make_driver: Any,
                                                            variant: str) -> None:
    emu = make_pegasus(variant=variant, position=5000, steps_per_second=300.0, **CHUNKED)
    driver = make_driver(emu, read_timeout=1.0)  # a loaded machine must not turn a slow reply into a failed poll
    with positions_seen(lambda: driver.status().position) as seen:
        latencies, before_reply_end = halts_during_replies(emu, driver, 8)
    stats = driver.link_stats()
    print(f"{variant}: halt() -> H at the emulator with chunked replies: median "
          f"{statistics.median(latencies) * 1000:.2f} ms, worst {max(latencies) * 1000:.2f} ms; "
          f"{before_reply_end}/8 before the reply in flight ended")
    assert before_reply_end >= 6 and stats.halts_out_of_band >= 6  # written during the reply, not after it
    assert statistics.median(latencies) < 0.010
    # The reply in flight was still read as the answer to its A.
    assert not stats.bad_replies and stats.failed_polls == 0 and stats.faults == 0
    assert driver.status().fault is None
    if variant == "recent":  # each halt's own '0', consumed (at the latest by the next poll)
        wait_for(lambda: driver.link_stats().halt_replies == stats.halts_sent, 3.0, "every halt's answer")
    else:
        assert stats.halt_replies == 0
    assert dict(stats.timeouts) == ({} if variant == "recent" else {"M": 1})
    assert all(1000 <= p <= 9000 for p in seen)  # never a position from the wrong reply (each halt within ~100 steps)
