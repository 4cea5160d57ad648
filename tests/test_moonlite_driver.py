"""MoonliteDriver through a real pty against the project's Moonlite emulator (independent of the driver)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from alpaca_focuser.drivers.moonlite import MoonliteDriver
from alpaca_focuser.emulator.pty_link import MoonliteEmulator
from alpaca_focuser.errors import DEVICE_NOT_RESPONDING, SERIAL_PORT_ERROR, DriverError
from conftest import seconds_until, send_malformed_frames, wait_for

POLL = 0.1  # the driver's default moving poll interval


@pytest.fixture
def make_driver() -> Iterator[Callable[..., MoonliteDriver]]:
    drivers: list[MoonliteDriver] = []

    def make(emu_or_path: MoonliteEmulator | str, connect: bool = True, **kwargs: Any) -> MoonliteDriver:
        path = emu_or_path if isinstance(emu_or_path, str) else emu_or_path.device_path
        kwargs.setdefault("reconnect_max_backoff", 1.0)
        driver = MoonliteDriver(path, name="test", **kwargs)
        drivers.append(driver)
        if connect:
            driver.connect()
        return driver

    yield make
    for driver in drivers:
        driver.close()


def test_connect_through_boot_delay(make_emu: Any, make_driver: Any) -> None:
    emu = make_emu(boot_delay=1.5, position=4321, temperature=-3.0)
    start = time.monotonic()
    driver = make_driver(emu)
    assert 1.4 < time.monotonic() - start < 3.0
    assert emu.boot_ignored_commands >= 1  # the GV retries really were ignored while "booting"
    status = driver.status()
    assert (status.connected, status.position, status.moving, status.fault) == (True, 4321, False, None)
    assert status.temperature == -3.0
    caps = driver.capabilities()
    assert caps.max_position == 65535 and caps.has_temperature
    assert caps.description == f"Moonlite-compatible focuser on {emu.device_path}, firmware 10"
    assert driver.firmware_version == "10" and driver.half_step_enabled is False and driver.step_delay == 2
    gv = emu.firmware.command_counts["GV"]
    driver.connect()  # idempotent: no second handshake
    assert emu.firmware.command_counts["GV"] == gv and emu.open_count == 1
    assert [t.name for t in threading.enumerate()].count("moonlite-test") == 1


def test_move_to_completion(make_emu: Any, make_driver: Any) -> None:
    emu = make_emu(steps_per_second=2000.0, position=100)
    driver = make_driver(emu)
    driver.move_to(1600)
    assert driver.status().moving  # the instant move_to returns
    wait_for(lambda: not driver.status().moving, 3.0, "the move to end")
    assert driver.status().position == 1600 == emu.firmware.position
    cmds = emu.firmware.commands
    i = cmds.index("SN0640")
    assert cmds[i + 1:i + 3] == ["GN", "FG"]  # SN verified by GN before FG
    assert "FQ" not in cmds


def test_halt_mid_move(make_emu: Any, make_driver: Any) -> None:
    emu = make_emu(steps_per_second=500.0)
    driver = make_driver(emu)
    driver.move_to(5000)
    wait_for(lambda: driver.status().position > 100, 2.0, "the motor to start")
    driver.halt()
    stopped_in = seconds_until(lambda: not driver.status().moving, 2.0, "the halt")
    assert stopped_in < POLL + 0.1
    assert driver.halt_sent_at is not None and driver.halt_requested_at is not None
    assert driver.halt_sent_at - driver.halt_requested_at < 0.05
    assert not emu.firmware.moving
    assert 100 < driver.status().position == emu.firmware.position < 5000
    time.sleep(0.3)
    assert driver.status().position == emu.firmware.position  # it really stayed there


def test_retarget_while_moving(make_emu: Any, make_driver: Any) -> None:
    emu = make_emu(steps_per_second=1000.0, position=2000)
    driver = make_driver(emu)
    driver.move_to(6000)
    wait_for(lambda: driver.status().position > 2200, 2.0, "the motor to start")
    driver.move_to(1500)
    assert driver.status().moving
    wait_for(lambda: not driver.status().moving, 3.0, "the retargeted move to end")
    assert driver.status().position == 1500 == emu.firmware.position
    assert "FQ" not in emu.firmware.commands  # new SN + FG while moving, no halt in between
    assert emu.firmware.commands.count("FG") == 2


def test_clone_profile(make_emu: Any, make_driver: Any) -> None:
    emu = make_emu(profile="clone", steps_per_second=2000.0)
    driver = make_driver(emu)
    driver.move_to(777)
    assert driver.status().moving
    wait_for(lambda: not driver.status().moving, 3.0, "the move to end")
    assert driver.status().position == 777 and driver.failed_polls == 0


def test_settings_sync_and_disconnect(make_emu: Any, make_driver: Any) -> None:
    emu = make_emu(position=10)
    driver = make_driver(emu, speed_code=32, half_step=True)
    assert emu.firmware.step_delay == 0x20 and emu.firmware.half_step
    assert driver.step_delay == 32 and driver.half_step_enabled is True
    driver.sync(30000)
    assert driver.status().position == 30000  # the snapshot shows the sync at once
    wait_for(lambda: "SP7530" in emu.firmware.commands, 2.0, "the sync to reach the controller")
    wait_for(lambda: emu.firmware.position == 30000, 1.0, "the controller to apply the sync")
    assert driver.status().position == 30000
    driver.disconnect()
    assert not driver.status().connected
    wait_for(lambda: not emu.client_open, 1.0, "the port to be closed")
    driver.disconnect()  # idempotent
    with pytest.raises(DriverError):
        driver.move_to(5)
    assert "FQ" not in emu.firmware.commands  # disconnect does not halt
    driver.connect()  # and a reconnect reads the position back from the firmware
    assert driver.status().position == 30000 and emu.open_count == 2


def test_halt_then_close_still_sends_the_halt(make_emu: Any, make_driver: Any) -> None:
    emu = make_emu(steps_per_second=200.0)
    driver = make_driver(emu)
    driver.move_to(5000)
    wait_for(lambda: emu.firmware.moving, 1.0, "the motor to start")
    driver.halt()
    driver.close()  # the shutdown sequence: halt, then close at once
    assert not emu.firmware.moving and "FQ" in emu.firmware.commands
    assert not driver.status().connected


def test_unplug_mid_move_then_replug(make_emu: Any, make_driver: Any) -> None:
    emu = make_emu(steps_per_second=1000.0, position=1000)
    driver = make_driver(emu)
    driver.move_to(3000)
    wait_for(lambda: driver.status().position > 1100, 2.0, "the motor to start")
    emu.unplug()  # the controller stays powered and keeps moving
    fault_in = seconds_until(lambda: driver.status().fault is not None, 2.0, "the fault")
    status = driver.status()
    assert fault_in < 2.0 and status.connected and not status.moving
    assert emu.device_path in (status.fault or "") and 1100 < status.position < 3000  # last known, kept
    with pytest.raises(DriverError) as err:
        driver.move_to(2000)
    assert err.value.number == SERIAL_PORT_ERROR
    time.sleep(0.5)
    emu.replug()
    wait_for(lambda: driver.status().fault is None, 5.0, "the automatic reconnect")
    wait_for(lambda: not driver.status().moving, 3.0, "the move to end")
    assert driver.status().position == emu.firmware.position == 3000  # from the firmware, never zero
    assert driver.reconnects == 1 and emu.open_count == 2
    driver.move_to(2500)  # and it works again
    wait_for(lambda: driver.status().position == 2500 and not driver.status().moving, 3.0, "the next move")


def test_silent_controller_while_connected_faults_then_recovers(make_emu: Any, make_driver: Any) -> None:
    emu = make_emu(position=42)
    driver = make_driver(emu)
    emu.silent = True
    fault_in = seconds_until(lambda: driver.status().fault is not None, 3.0, "the fault")
    assert fault_in < 2.7  # up to one idle interval before the first failed poll, then 3 x read_timeout
    assert "no valid reply" in (driver.status().fault or "")
    assert driver.status().fault_number == DEVICE_NOT_RESPONDING  # the port is fine; the controller is not
    emu.silent = False
    wait_for(lambda: driver.status().fault is None, 6.0, "the recovery")
    assert driver.status().position == 42


def test_noise_never_yields_a_wrong_position(make_emu: Any, make_driver: Any) -> None:
    emu = make_emu(steps_per_second=1000.0, position=1000)
    driver = make_driver(emu)
    seen: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            seen.append(driver.status().position)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, name="test-sampler", daemon=True)
    sampler.start()
    emu.split_replies = True
    driver.move_to(3000)
    send_malformed_frames(emu)
    emu.split_replies = False
    emu.reply_delay = 0.3  # slow but within read_timeout
    time.sleep(0.6)
    emu.reply_delay = 0.0
    emu.corrupt_replies = True  # every reply mangled for a while: a fault, then recovery
    time.sleep(0.4)
    emu.corrupt_replies = False
    wait_for(lambda: driver.status().fault is None and not driver.status().moving, 8.0, "the end of the move")
    done.set()
    sampler.join()
    assert driver.status().position == emu.firmware.position == 3000
    assert driver.failed_polls > 0  # the noise was noticed ...
    assert all(1000 <= p <= 3000 for p in seen)  # ... and never reported as a position
    assert seen == sorted(seen)  # moving up: no glitch backwards either


def test_polling_rates_do_not_depend_on_clients(make_emu: Any, make_driver: Any) -> None:
    emu = make_emu(steps_per_second=300.0)
    driver = make_driver(emu)
    stop = threading.Event()
    calls = [0] * 16

    def client(i: int) -> None:
        # 16 clients polling IsMoving/Position 200 times a second each (real ones poll 1-10 times). A bare spin
        # would only measure the GIL: emulator, driver and clients share this one Python process.
        while not stop.is_set():
            driver.status()
            calls[i] += 1
            time.sleep(0.005)

    clients = [threading.Thread(target=client, args=(i,), name=f"test-client-{i}", daemon=True) for i in range(16)]
    for t in clients:
        t.start()
    try:
        counts = emu.firmware.command_counts
        before, tx = counts.copy(), driver.transactions
        time.sleep(3.0)
        idle = counts - before
        idle_tx = (driver.transactions - tx) / 3.0
        assert 2 <= idle["GP"] <= 4 and 2 <= idle["GT"] <= 4 and idle["GI"] == 0
        driver.move_to(65000)  # far: keeps moving for the whole window
        time.sleep(0.2)
        before, tx = counts.copy(), driver.transactions
        time.sleep(3.0)
        moving = counts - before
        moving_tx = (driver.transactions - tx) / 3.0
        assert moving["GP"] >= 24 and moving["GI"] >= 24  # at least ~8/s each (every 100 ms: ~10/s)
        assert moving["GP"] + moving["GI"] <= 80  # and not a busy loop
    finally:
        stop.set()
        for t in clients:
            t.join()
    assert sum(calls) > 3000
    print(f"serial transactions/s with {sum(calls) / 6.2:.0f} status() calls/s: idle {idle_tx:.1f}, "
          f"moving {moving_tx:.1f}")


def test_connect_to_missing_port(tmp_path: Path, make_driver: Any) -> None:
    path = str(tmp_path / "ttyNOPE")
    with pytest.raises(DriverError) as err:
        make_driver(path)
    assert err.value.number == SERIAL_PORT_ERROR
    assert err.value.message == f"Cannot open serial port {path}: [Errno 2] No such file or directory"


def test_connect_to_silent_controller(make_emu: Any, make_driver: Any) -> None:
    emu = make_emu()
    emu.silent = True
    driver = make_driver(emu, connect=False)
    start = time.monotonic()
    with pytest.raises(DriverError) as err:
        driver.connect()
    assert time.monotonic() - start < 3.6
    assert err.value.number == DEVICE_NOT_RESPONDING
    assert err.value.message == (f"No reply from Moonlite controller on {emu.device_path} after 3.0 s "
                                 "(is it powered, and is the baud rate 9600?)")
    assert not driver.status().connected
    wait_for(lambda: not emu.client_open, 1.0, "the port to be closed")


def test_controller_without_gv_still_connects(make_emu: Any, make_driver: Any) -> None:
    """A clone that never implemented GV but speaks the rest of the protocol: connect after the handshake
    window with the version unknown, and work normally."""
    emu = make_emu(position=321)
    answer = emu.firmware.feed_replies

    def without_gv(data: bytes) -> list[bytes]:
        replies = answer(data)
        return [] if b":GV#" in data else replies

    emu.firmware.feed_replies = without_gv  # type: ignore[method-assign]
    driver = make_driver(emu, handshake_timeout=0.6)
    assert driver.firmware_version == "unknown"
    assert driver.status().position == 321 and driver.status().fault is None
    driver.move_to(400)
    wait_for(lambda: not driver.status().moving, 3.0, "the move to end")
    assert driver.status().position == 400 == emu.firmware.position


def test_controller_whose_gi_never_clears(make_emu: Any, make_driver: Any) -> None:
    """Some Arduino clones compute GI from the last SN target, so it answers 01# forever after a halt (and at
    power-up). The driver must not report moving forever: GP standing still means the motor has stopped."""
    emu = make_emu(position=100, steps_per_second=1000.0)
    answer = emu.firmware.feed_replies

    def gi_always_moving(data: bytes) -> list[bytes]:
        replies = answer(data)
        return [b"01#"] if b":GI#" in data else replies

    emu.firmware.feed_replies = gi_always_moving  # type: ignore[method-assign]
    driver = make_driver(emu)
    wait_for(lambda: not driver.status().moving, 4.0, "the power-up 'moving' to be seen through")
    driver.move_to(600)
    took = seconds_until(lambda: not driver.status().moving, 5.0, "the move to be seen as ended")
    assert 0.5 <= took <= 3.5  # ~0.5 s of motion, then two seconds of GP standing still
    assert driver.status().position == 600 == emu.firmware.position
    driver.move_to(3000)
    wait_for(lambda: driver.status().position > 800, 2.0, "motion")
    driver.halt()
    took = seconds_until(lambda: not driver.status().moving, 3.0, "the halt to be seen")
    assert took <= 1.5  # the shorter window after a halt
    assert not emu.firmware.moving and driver.status().position == emu.firmware.position < 3000


def test_controller_that_reads_its_sensor_on_gt(make_emu: Any, make_driver: Any) -> None:
    """Some clones (arduino-motorfocus) start the DS18B20 conversion on GT itself and answer ~750 ms later.
    That is not a failure: the temperature is read, and no poll is counted as failed."""
    emu = make_emu(temperature=-3.5)
    answer = emu.firmware.feed_replies

    def slow_gt(data: bytes) -> list[bytes]:
        if b":GT#" in data:
            time.sleep(0.75)  # blocks the emulated firmware, as the real one blocks in requestTemperatures()
        return answer(data)

    emu.firmware.feed_replies = slow_gt  # type: ignore[method-assign]
    driver = make_driver(emu)
    assert driver.has_temperature and driver.status().temperature is not None
    time.sleep(3.0)  # about three idle polls, each with a slow GT
    assert emu.firmware.command_counts["GT"] >= 3
    assert driver.failed_polls == 0 and driver.status().fault is None
    assert driver.status().temperature is not None and abs(driver.status().temperature + 3.5) <= 1.0
