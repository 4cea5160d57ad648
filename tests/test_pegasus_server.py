"""Pegasus end to end: emulator on a real pty -> PegasusDriver -> FocuserServer (waitress on 127.0.0.1) -> the real
alpyca client and a plain HTTP client. tests/test_pegasus_driver.py covers the driver alone."""

from __future__ import annotations

import time
from typing import Any

import pytest
from alpaca.exceptions import DriverException, NotImplementedException
from alpaca.focuser import Focuser

from alpaca_focuser.app import FocuserServer
from alpaca_focuser.config import ConfigError, parse_config
from alpaca_focuser.emulator.pty_link import PtyLink
from alpaca_focuser.errors import SERIAL_PORT_ERROR
from alpaca_http import AlpacaHttp
from conftest import wait_until

# make_pegasus (conftest.py) comes before server_factory in every test's arguments, so the servers stop first.


def pegasus_table(emu: PtyLink, **extra: Any) -> dict[str, Any]:
    return {"name": "DMFC", "driver": "pegasus", "port": str(emu.link_path), "max_step": 100000,
            "step_size": 2.0, **extra}


def alpyca(server: FocuserServer, device_number: int = 0) -> Focuser:
    return Focuser(f"127.0.0.1:{server.port}", device_number)


def wait_stopped(f: Focuser, timeout: float = 10.0) -> int:
    wait_until(lambda: not f.IsMoving, timeout=timeout)
    return f.Position


def driver_error(read: Any) -> DriverException | None:
    try:
        read()
    except DriverException as exc:
        return exc
    return None


def test_move_halt_retarget_sync_and_temperature(make_pegasus: Any, server_factory: Any) -> None:
    emu = make_pegasus(position=5000, steps_per_second=2000.0, temperature=12.5)
    server = server_factory(pegasus_table(emu))
    f = alpyca(server)
    f.Connected = True
    assert f.Description.startswith("Pegasus Astro DMFC on ") and f.Position == 5000
    assert f.Temperature == 12.5 and f.MaxStep == 100000

    f.Move(7000)
    assert f.IsMoving is True
    assert wait_stopped(f) == 7000 == emu.firmware.position

    with emu.lock:
        emu.firmware.steps_per_second = 500.0
    f.Move(20000)
    wait_until(lambda: f.Position > 7200, timeout=3.0)
    f.Halt()
    wait_until(lambda: not f.IsMoving, timeout=2.0, interval=0.005)
    position = f.Position
    assert not emu.firmware.moving and 7200 < position == emu.firmware.position < 20000
    time.sleep(0.3)
    assert f.Position == position

    with emu.lock:
        emu.firmware.steps_per_second = 1000.0
    f.Move(position + 3000)
    wait_until(lambda: f.Position > position + 200, timeout=3.0)
    f.Move(position - 500)  # retarget while moving
    assert f.IsMoving is True
    assert wait_stopped(f) == position - 500 == emu.firmware.position

    assert f.Action("SyncPosition", "30000") == "30000"
    assert f.Position == 30000
    wait_until(lambda: emu.firmware.position == 30000, timeout=2.0)


def test_no_probe_means_no_temperature(make_pegasus: Any, server_factory: Any) -> None:
    emu = make_pegasus(profile="focuscube", temperature=None)
    server = server_factory(pegasus_table(emu, name="FocusCube"))
    f = alpyca(server)
    f.Connected = True
    assert "FocusCube 2" in f.Description
    with pytest.raises(NotImplementedException):
        _ = f.Temperature
    assert {item["Name"] for item in f.DeviceState} == {"IsMoving", "Position", "TimeStamp"}


def test_unplug_faults_only_that_device_and_replug_recovers(make_pegasus: Any, server_factory: Any) -> None:
    emu = make_pegasus(position=12345, steps_per_second=1000.0)
    server = server_factory(pegasus_table(emu), {"name": "Sim", "driver": "simulator", "speed": 20000})
    f, sim = alpyca(server, 0), alpyca(server, 1)
    f.Connected = True
    sim.Connected = True
    f.Move(14345)
    wait_until(lambda: f.Position > 12500, timeout=3.0)
    unplugged = time.monotonic()
    emu.unplug()  # the controller stays powered and finishes its move on its own
    err = wait_until(lambda: driver_error(lambda: f.Position), timeout=2.0)
    print(f"unplug seen over HTTP after {(time.monotonic() - unplugged) * 1000:.0f} ms")
    assert err.number == SERIAL_PORT_ERROR and str(emu.link_path) in err.message, err
    assert wait_stopped(sim, 5.0) == sim.Position  # the other device neither notices nor waits
    sim.Move(sim.Position + 1000)
    assert sim.IsMoving is True
    emu.replug()
    replugged = time.monotonic()
    wait_until(lambda: driver_error(lambda: f.Position) is None, timeout=10.0)
    print(f"recovered {(time.monotonic() - replugged) * 1000:.0f} ms after the replug")
    assert wait_stopped(f) == emu.firmware.position == 14345  # read back from the firmware, never zeroed
    f.Move(13000)
    assert wait_stopped(f) == 13000 == emu.firmware.position


def test_dc_mode_error_reaches_the_client(make_pegasus: Any, server_factory: Any) -> None:
    emu = make_pegasus()
    emu.firmware.stepper = False
    server = server_factory(pegasus_table(emu))
    client = AlpacaHttp("127.0.0.1", server.port, client_id=3)
    try:
        reply = client.call("PUT", "connected", {"Connected": "true"})
    finally:
        client.close()
    assert reply["ErrorNumber"] >= 0x500 and "DC-motor mode" in reply["ErrorMessage"], reply
    assert "switch_to_stepper" in reply["ErrorMessage"]
    assert alpyca(server).Connected is False and set(emu.firmware.commands) <= {"#", "A"}


@pytest.mark.parametrize("extra, key, words", [
    ({"speed": 50}, "speed", ["100..1000", "got 50"]),
    ({"controller_backlash": -1}, "controller_backlash", ["between"]),
    ({"half_step": True}, "half_step", ['"moonlite"']),
    ({"led": "off"}, "led", ["true or false"]),
])
def test_pegasus_config_mistakes(extra: dict[str, Any], key: str, words: list[str]) -> None:
    table = {"name": "P", "driver": "pegasus", "port": "/dev/ttyUSB0", **extra}
    with pytest.raises(ConfigError) as err:
        parse_config({"focuser": [table]}, "p.toml")
    assert err.value.key == key and all(word in str(err.value) for word in words), str(err.value)
    with pytest.raises(ConfigError, match='only applies to driver = "pegasus"'):
        parse_config({"focuser": [{"name": "S", "switch_to_stepper": True}]}, "s.toml")
    good = parse_config({"focuser": [{"name": "P", "driver": "pegasus", "port": "/dev/ttyUSB0", "speed": 600,
                                      "controller_backlash": 0, "controller_reverse": False, "led": True}]}, "g.toml")
    assert good.focusers[0].baud is None and good.focusers[0].speed == 600
