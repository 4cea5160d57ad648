"""Saving settings: each live key reaches the running focuser, the others wait and say so, a refused change leaves
the file and the focuser as they were, and device numbers never move."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from alpaca_focuser import cli
from alpaca_focuser.app import build_devices
from alpaca_focuser.config import Config, load_config
from alpaca_focuser.errors import InvalidValueError
from alpaca_focuser.focuser.device import FocuserDevice
from alpaca_focuser.settings import Settings, SettingsRejected
from alpaca_focuser.state import StateStore
from conftest import wait_until

BASE = """# my observatory
[server]
state_dir = "{state}"   # keep state here

[[focuser]]               # the main scope
name = "Main"
speed = 20000             # fast for tests
max_step = 40000
"""


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., tuple[Settings, dict[int, FocuserDevice], Path]]]:
    made: list[dict[int, FocuserDevice]] = []

    def factory(extra: str = "") -> tuple[Settings, dict[int, FocuserDevice], Path]:
        path = tmp_path / "config.toml"
        path.write_text(BASE.format(state=tmp_path / "state") + extra, encoding="utf-8")
        config = load_config(path)
        devices = build_devices(config, StateStore(config.resolved_state_dir()))
        made.append(devices)
        return Settings(config, devices), devices, path

    yield factory
    for devices in made:
        for device in devices.values():
            device.shutdown()


def connect(device: FocuserDevice) -> None:
    device.set_connected(True)


LIVE_CASES: list[tuple[str, Any, Callable[[FocuserDevice], Any], Any]] = [
    ("name", "Renamed", lambda d: d.name(), "Renamed"),
    ("description", "Refractor focuser", lambda d: d.description(), "Refractor focuser"),
    ("max_step", "30000", lambda d: (d.max_step(), d.engine.max_step), (30000, 30000)),
    ("max_increment", "500", lambda d: (d.max_increment(), d.engine.max_increment), (500, 500)),
    ("step_size", "3.8", lambda d: d.step_size(), 3.8),
    ("absolute", False, lambda d: (d.absolute(), d.engine.absolute), (False, False)),
    ("temp_comp_available", True, lambda d: d.temp_comp_available(), True),
]


@pytest.mark.parametrize("key, value, read, expected", LIVE_CASES, ids=[c[0] for c in LIVE_CASES])
def test_each_live_key_reaches_the_running_focuser(make: Any, key: str, value: Any,
                                                   read: Callable[[FocuserDevice], Any], expected: Any) -> None:
    settings, devices, path = make()
    result = settings.save_focuser(0, {key: value})
    # max_step also moves max_increment, which follows it when left out of the file
    assert result.changed == ([key, "max_increment"] if key == "max_step" else [key])
    assert result.applied == result.changed
    assert result.restart == [] and result.reconnect == []
    assert read(devices[0]) == expected
    assert getattr(load_config(path).focusers[0], key) == getattr(devices[0].cfg, key)
    assert "# the main scope" in path.read_text() and "# fast for tests" in path.read_text()


def test_new_limits_govern_the_next_move(make: Any) -> None:
    settings, devices, _ = make()
    device = devices[0]
    connect(device)
    settings.save_focuser(0, {"max_step": "1000"})
    device.move(5000)  # clamped to the new MaxStep
    wait_until(lambda: not device.is_moving(), timeout=5)
    assert device.position() == 1000
    settings.save_focuser(0, {"max_increment": "300"})
    with pytest.raises(InvalidValueError):
        device.move(0)
    device.move(700)
    wait_until(lambda: not device.is_moving(), timeout=5)
    assert device.position() == 700


def test_keys_the_driver_was_built_from_wait_for_the_next_connect_or_start_and_say_so(make: Any) -> None:
    settings, devices, path = make()
    connect(devices[0])
    result = settings.save_focuser(0, {"speed": "100", "temperature": "3.5", "name": "Both"})
    assert result.applied == ["name"]
    assert result.reconnect == ["speed"] and result.restart == ["temperature"]
    assert "Takes effect when the focuser reconnects (Disconnect, then Connect): speed" in result.message()
    assert "Takes effect when the server restarts: temperature" in result.message()
    assert devices[0].cfg.speed == 20000 and devices[0].cfg.temperature == 10.0
    assert settings.pending(0) == {"speed": "reconnect", "temperature": "restart"}
    assert load_config(path).focusers[0].speed == 100
    # a later save of something else still reports what is waiting
    later = settings.save_focuser(0, {"step_size": "2"})
    assert (later.reconnect, later.restart) == (["speed"], ["temperature"])
    # Disconnect and Connect: the driver is rebuilt from the saved speed; the position is kept
    devices[0].move(400)
    wait_until(lambda: not devices[0].is_moving(), timeout=5)
    devices[0].set_connected(False)
    devices[0].set_connected(True)
    assert devices[0].cfg.speed == 100 and devices[0].cfg.temperature == 10.0
    assert "100 steps/s" in devices[0].driver.capabilities().description
    assert devices[0].position() == 400
    assert settings.pending(0) == {"temperature": "restart"}


def test_an_invalid_value_changes_nothing_and_names_the_field(make: Any) -> None:
    settings, devices, path = make()
    before = path.read_bytes()
    with pytest.raises(SettingsRejected) as info:
        settings.save_focuser(0, {"name": "Fine", "max_increment": "50000"})
    assert info.value.status == 422 and info.value.key == "max_increment"
    assert "must not exceed max_step (40000), got 50000" in info.value.message
    assert path.read_bytes() == before
    assert devices[0].name() == "Main"


def test_unsafe_keys_are_refused_while_moving_and_the_file_is_restored(make: Any) -> None:
    settings, devices, path = make()
    device = devices[0]
    connect(device)
    before = path.read_bytes()
    device.move(39000)  # about 2 s at 20000 steps/s
    assert device.is_moving()
    with pytest.raises(SettingsRejected) as info:
        settings.save_focuser(0, {"max_step": "39500", "name": "Moving"})
    assert info.value.status == 409 and info.value.key == "max_step"
    assert "while the focuser is moving" in info.value.message
    assert path.read_bytes() == before
    assert device.name() == "Main" and device.max_step() == 40000
    # a safe key is fine while moving
    assert settings.save_focuser(0, {"name": "Moving"}).applied == ["name"]
    device.halt()


def test_changing_the_driver_drops_keys_the_new_driver_does_not_take(make: Any) -> None:
    settings, _, path = make('\n[[focuser]]\nname = "Serial"\ndriver = "moonlite"\nport = "/dev/ttyUSB9"\n'
                             'half_step = true\n')
    result = settings.save_focuser(1, {"driver": "simulator"})
    assert sorted(result.dropped) == ["half_step", "port"]
    assert "driver" in result.restart and result.applied == []
    assert load_config(path).focusers[1].driver == "simulator"


def test_removing_a_focuser_keeps_the_numbers_of_the_others(make: Any, tmp_path: Path) -> None:
    settings, devices, path = make('\n[[focuser]]\nname = "Second"\n\n[[focuser]]\nname = "Third"\n')
    result = settings.save_focuser(1, {"enabled": False})
    assert result.restart == ["enabled"]
    assert devices[1].name() == "Second", "still served until the next start"
    # at the next start: focuser 1 is not served, "Third" is still number 2, state keyed by number
    config = load_config(path)
    again = build_devices(config, StateStore(config.resolved_state_dir()))
    try:
        assert sorted(again) == [0, 2] and again[2].name() == "Third"
        assert again[2].unique_id == devices[2].unique_id
    finally:
        for device in again.values():
            device.shutdown()
    with pytest.raises(SettingsRejected) as info:
        settings.save_focuser(0, {"enabled": False})
        settings.save_focuser(2, {"enabled": False})
    assert "at least one focuser must be enabled" in info.value.message


def test_adding_a_focuser_appends_it_for_the_next_start(make: Any) -> None:
    settings, devices, path = make()
    result = settings.add_focuser({"driver": "moonlite", "name": "New", "port": "/dev/serial/by-id/usb-x"})
    assert result.device == 1 and 1 not in devices
    assert [f.name for f in load_config(path).focusers] == ["Main", "New"]
    with pytest.raises(SettingsRejected) as info:
        settings.add_focuser({"driver": "moonlite", "name": "Other", "port": ""})
    assert info.value.key == "port" and "must not be empty" in info.value.message
    with pytest.raises(SettingsRejected) as info:
        settings.add_focuser({"driver": "simulator", "name": "Main"})
    assert info.value.key == "name" and "already used" in info.value.message


def test_built_in_defaults_save_to_the_state_directory_which_the_next_start_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config.toml here
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    config = cli.load_effective_config(None)
    assert config.path is None
    devices = build_devices(config, StateStore(config.resolved_state_dir()))
    try:
        result = Settings(config, devices).save_focuser(0, {"max_step": "12000"})
    finally:
        for device in devices.values():
            device.shutdown()
    created = tmp_path / "xdg" / "alpaca-focuser" / "config.toml"
    assert result.created and result.path == str(created)
    again = cli.load_effective_config(None)
    assert again.path == str(created)
    assert again.focusers[0].max_step == 12000 and again.focusers[0].name == Config().focusers[0].name
    # ./config.toml still comes first
    (tmp_path / "config.toml").write_text('[[focuser]]\nname = "Here"\n')
    assert cli.load_effective_config(None).focusers[0].name == "Here"


def test_settings_writer_persists_what_the_focuser_applied_itself(make: Any) -> None:
    settings, devices, path = make()
    settings.write_keys(0, {"step_size": 7.5})
    assert load_config(path).focusers[0].step_size == 7.5
    with pytest.raises(SettingsRejected):
        settings.write_keys(0, {"no_such_key": 1})
    assert load_config(path).focusers[0].step_size == 7.5


def test_a_hand_edit_made_while_running_is_kept(make: Any) -> None:
    settings, _, path = make()
    path.write_text(path.read_text() + "# edited by hand\n")
    time.sleep(0.01)
    settings.save_focuser(0, {"name": "After"})
    assert path.read_text().endswith("# edited by hand\n")
