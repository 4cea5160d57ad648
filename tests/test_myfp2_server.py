"""myFocuserPro2 end to end: emulator on a real pty -> MyFP2Driver -> FocuserServer (waitress) -> alpyca.

tests/test_myfp2_driver.py covers the driver alone; these go through the whole server and a real Alpaca client.
Everything listens on 127.0.0.1 only. make_myfp2_emu (conftest.py) comes before server_factory in every test's
arguments, so the servers stop first.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from alpaca.exceptions import DriverException, NotImplementedException
from alpaca.focuser import Focuser

from alpaca_focuser.app import FocuserServer
from alpaca_focuser.emulator.pty_link import PtyLink
from conftest import wait_until


def myfp2_table(emu: PtyLink, **extra: Any) -> dict[str, Any]:
    return {"name": "myFP2", "driver": "myfp2", "port": str(emu.link_path), "max_step": 10000,
            "max_increment": 10000, "step_size": 4.5, **extra}


def alpyca(server: FocuserServer) -> Focuser:
    return Focuser(f"127.0.0.1:{server.port}", 0)


def wait_stopped(f: Focuser, timeout: float = 10.0) -> int:
    wait_until(lambda: not f.IsMoving, timeout=timeout)
    return f.Position


def test_nano_over_http(make_myfp2_emu: Any, server_factory: Any) -> None:
    emu = make_myfp2_emu(position=4000, steps_per_second=1000.0, temperature=7.6)
    fw = emu.firmware
    server = server_factory(myfp2_table(emu))
    f = alpyca(server)
    start = time.monotonic()
    f.Connected = True  # synchronous: returns once the handshake got through the board's reboot
    assert 1.5 < time.monotonic() - start < 6.0
    assert f.Connected and f.Position == 4000 and f.IsMoving is False and f.Temperature == 7.5
    assert f.Description == f"myFocuserPro2 ULN2003_M_MT_F, firmware 338 on {emu.link_path}"[:64]

    f.Move(4800)
    assert f.IsMoving is True  # the instant Move returns
    assert wait_stopped(f) == 4800 == fw.position

    f.Move(9000)
    wait_until(lambda: f.Position > 5000, timeout=3.0)
    f.Halt()
    stopped = wait_stopped(f, timeout=3.0)
    assert 5000 < stopped == fw.position < 9000 and not fw.moving

    f.Move(9000)
    wait_until(lambda: f.Position > stopped + 200, timeout=3.0)
    f.Move(6000)  # retarget while moving: halt, wait for the stop, move
    assert f.IsMoving is True
    assert wait_stopped(f) == 6000 == fw.position
    assert f.Action("SyncPosition", "6500") == "6500"
    wait_until(lambda: fw.position == 6500, timeout=2.0)
    names = {item["Name"] for item in f.DeviceState}
    assert names == {"IsMoving", "Position", "Temperature", "TimeStamp"}


def test_esp32_without_probe_conformu_halt_while_idle(make_myfp2_emu: Any, server_factory: Any) -> None:
    emu = make_myfp2_emu(profile="esp32", position=200, steps_per_second=2000.0, probe=False)
    server = server_factory(myfp2_table(emu, baud=115200, max_step=20000))
    f = alpyca(server)
    f.Connected = True
    with pytest.raises(NotImplementedException):
        _ = f.Temperature  # the firmware's constant 20 C is no temperature
    assert {item["Name"] for item in f.DeviceState} == {"IsMoving", "Position", "TimeStamp"}
    f.Halt()  # ConformU halts an idle focuser: it must not stop the next move
    time.sleep(0.3)
    f.Move(2500)
    assert wait_stopped(f) == 2500 == emu.firmware.position
    assert "27" not in emu.firmware.command_counts


def test_max_step_above_the_controllers_is_refused_then_written_when_asked(make_myfp2_emu: Any,
                                                                        server_factory: Any) -> None:
    emu = make_myfp2_emu(resets_on_open=False, steps_per_second=5000.0)  # MaxStep 10000
    server = server_factory(myfp2_table(emu, max_step=50000, max_increment=50000))
    f = alpyca(server)
    with pytest.raises(DriverException) as err:
        f.Connected = True
    assert "max_step 50000 is above the myFocuserPro2 controller's own MaxStep 10000" in str(err.value)
    assert f.Connected is False and emu.firmware.settings.max_step == 10000
    assert f.Name == "myFP2"  # the server carries on

    server.stop()
    written = server_factory(myfp2_table(emu, max_step=50000, max_increment=50000, set_controller_max_step=True))
    g = alpyca(written)
    g.Connected = True
    assert g.MaxStep == 50000 == emu.firmware.settings.max_step
    g.Move(12000)  # beyond the controller's old limit
    assert wait_stopped(g) == 12000 == emu.firmware.position


def test_a_max_step_beyond_the_controllers_is_refused_from_the_settings_page(make_myfp2_emu: Any,
                                                                           server_factory: Any) -> None:
    """MaxStep is a live setting, but the controller keeps its own limit: a running server refuses to raise it
    beyond that (Move would otherwise clamp to positions the motor cannot reach) and changes nothing."""
    import requests

    emu = make_myfp2_emu(resets_on_open=False, steps_per_second=5000.0)  # MaxStep 10000
    server = server_factory(myfp2_table(emu, max_step=8000, max_increment=8000))
    f = alpyca(server)
    f.Connected = True
    url = f"http://127.0.0.1:{server.port}/setup/v1/focuser/0/settings"
    refused = requests.post(url, json={"max_step": "20000"}, timeout=10)
    assert refused.status_code == 422 and refused.json()["key"] == "max_step", refused.text
    assert "max_step 20000 is beyond what the connected controller can reach (10000)" in refused.json()["error"]
    assert f.MaxStep == 8000 and server.settings.saved.focusers[0].max_step == 8000
    allowed = requests.post(url, json={"max_step": "10000"}, timeout=10)
    assert allowed.status_code == 200 and f.MaxStep == 10000
