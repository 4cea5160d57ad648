"""Configuration: the shipped file, the defaults, and one clear message per kind of mistake."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from alpaca_focuser import cli
from alpaca_focuser.config import Config, ConfigError, FocuserConfig, describe, load_config, parse_config

SHIPPED = Path(__file__).resolve().parent.parent / "config.toml"

GOOD_FOCUSER = '[[focuser]]\nname = "A"\n'
MOONLITE = '[[focuser]]\nname = "M"\ndriver = "moonlite"\nport = "/dev/ttyUSB0"\n'
MYFP2 = '[[focuser]]\nname = "F"\ndriver = "myfp2"\nport = "/dev/ttyUSB1"\nmax_step = 10000\n'


def write(tmp_path: Path, text: str, name: str = "bad.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message, "one line, for journalctl"
    assert str(path) in message
    return message


# --- the shipped file and the defaults -----------------------------------------------------------------------------

def test_shipped_config_loads() -> None:
    config = load_config(SHIPPED)
    assert config.source == str(SHIPPED)
    assert config.server.bind == "0.0.0.0" and config.server.port == 11111 and config.server.threads == 8
    assert config.server.location == "Backyard observatory"
    assert config.discovery.enabled is True and config.discovery.port == 32227 and config.discovery.ipv6 is True
    assert len(config.focusers) == 1
    f = config.focusers[0]
    assert (f.name, f.driver, f.max_step, f.max_increment, f.step_size, f.speed, f.absolute) == \
        ("Simulated focuser", "simulator", 50000, 50000, 4.5, 2000, True)


def test_check_config_prints_the_effective_config(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "st"))
    assert cli.main(["check-config", str(SHIPPED)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    printed = tomllib.loads(out)
    assert str(SHIPPED) in out.splitlines()[0]
    assert printed["server"]["port"] == 11111
    assert printed["server"]["state_dir"] == str(tmp_path / "st")
    assert printed["discovery"]["enabled"] is True
    assert printed["focuser"][0]["name"] == "Simulated focuser"
    assert printed["focuser"][0]["max_step"] == 50000
    assert printed["focuser"][0]["step_size"] == 4.5
    # what it prints is itself a valid config meaning the same
    printed["server"]["state_dir"] = str(tmp_path / "st")
    assert parse_config(printed, "again").focusers == load_config(SHIPPED).focusers


def test_describe_round_trips(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 1234\nstate_dir = "/x"\n[[focuser]]\nname = "A"\nabsolute = false\n'
                           'max_step = 900\n[[focuser]]\nname = "B"\ntemp_comp_available = true\n', "good.toml")
    config = load_config(path)
    again = parse_config(tomllib.loads(describe(config)), str(path))
    assert again == config


def test_defaults_without_a_file() -> None:
    config = Config()
    assert len(config.focusers) == 1
    f = config.focusers[0]
    assert f.driver == "simulator" and f.absolute is True and f.max_step > 0 and f.speed
    assert config.server.port == 11111
    assert config.source == "<built-in defaults>"


def test_cli_uses_defaults_when_there_is_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = cli.load_effective_config(None, bind="127.0.0.1", port=0)
    assert config.focusers == Config().focusers
    assert (config.server.bind, config.server.port) == ("127.0.0.1", 0)


def test_empty_file_means_defaults_with_one_focuser(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "", "empty.toml"))
    assert len(config.focusers) == 1 and config.focusers[0].driver == "simulator"
    assert config.server.port == 11111


def test_minimal_moonlite_and_simulator_tables(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD_FOCUSER + MOONLITE, "ok.toml"))
    sim, moon = config.focusers
    assert sim.speed == 2000 and sim.max_increment == sim.max_step
    assert moon.port == "/dev/ttyUSB0" and moon.speed is None and moon.baud is None  # the driver's default
    assert isinstance(moon, FocuserConfig)


def test_myfp2_table(tmp_path: Path) -> None:
    extra = ("set_controller_max_step = true\ncontroller_reverse = false\ncontroller_backlash_in = 0\n"
             "controller_backlash_out = 25\ncontroller_temp_comp = false\nstep_mode = 2\nbaud = 115200\n")
    plain, full = load_config(write(tmp_path, MYFP2 + MYFP2.replace('"F"', '"G"').replace("USB1", "USB2") + extra,
                                    "f.toml")).focusers
    assert plain.baud is None and plain.set_controller_max_step is None and plain.step_mode is None
    assert (full.baud, full.set_controller_max_step, full.controller_reverse, full.controller_backlash_in,
            full.controller_backlash_out, full.controller_temp_comp, full.step_mode) == (115200, True, False, 0, 25,
                                                                                    False, 2)


def test_focuser_name_defaults_differ(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[[focuser]]\n[[focuser]]\n", "two.toml"))
    assert len({f.name for f in config.focusers}) == 2


@pytest.mark.parametrize("bind", ["127.0.0.1", "::", "::1", "0.0.0.0", "localhost"])
def test_bind_accepts_ip_addresses(tmp_path: Path, bind: str) -> None:
    assert load_config(write(tmp_path, f'[server]\nbind = "{bind}"\n', "b.toml")).server.bind == bind


# --- each kind of mistake: one line naming the file and the key ------------------------------------------------------

def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 11111\nlocation = \"unterminated\n")
    message = error_of(path)
    assert "line 3" in message
    assert "TOML" in message


def test_toml_syntax_error_unclosed_table(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "[server\nport = 1\n"))
    assert "line 1" in message


@pytest.mark.parametrize("text,key,words", [
    ('[server]\nport = "abc"\n', "port", ["an integer", "got \"abc\""]),
    ("[server]\nport = 1.5\n", "port", ["integer"]),
    ("[server]\nport = true\n", "port", ["integer"]),
    ("[server]\nport = 70000\n", "port", ["65535", "70000"]),
    ("[server]\nport = -1\n", "port", ["between"]),
    ("[server]\nthreads = 0\n", "threads", ["between"]),
    ("[server]\nbind = 127\n", "bind", ["string"]),
    ('[server]\nbind = "my-pi.local"\n', "bind", ["IP address", "my-pi.local"]),
    ('[server]\nbind = "300.1.1.1"\n', "bind", ["IP address"]),
    ('[server]\nstate_dir = ""\n', "state_dir", ["empty"]),
    ('[server]\nlocaton = "x"\n', "locaton", ["unknown key"]),
    ('[discovery]\nenabled = "yes"\n', "enabled", ["true or false", "got \"yes\""]),
    ("[discovery]\nport = 99999\n", "port", ["65535"]),
    ("[discovery]\nipv4 = true\n", "ipv4", ["unknown key"]),
    ("[[focuser]]\nmax_step = 0\n", "max_step", ["between", "0"]),
    ("[[focuser]]\nmax_step = 3000000000\n", "max_step", ["between"]),
    ('[[focuser]]\nmax_step = "50000"\n', "max_step", ["integer"]),
    ("[[focuser]]\nmax_stpe = 5000\n", "max_stpe", ["unknown key"]),
    ("[[focuser]]\nmax_step = 1000\nmax_increment = 2000\n", "max_increment", ["max_step", "1000", "2000"]),
    ("[[focuser]]\nmax_increment = 0\n", "max_increment", ["between"]),
    ('[[focuser]]\ndriver = "foo"\n', "driver", ["simulator", "moonlite", "'foo'"]),
    ('[[focuser]]\nname = ""\n', "name", ["empty"]),
    ("[[focuser]]\nstep_size = 0\n", "step_size", ["greater than"]),
    ("[[focuser]]\nstep_size = -4.5\n", "step_size", ["greater than"]),
    ("[[focuser]]\nspeed = 0\n", "speed", ["between"]),
    ('[[focuser]]\nabsolute = "false"\n', "absolute", ["true or false", "got \"false\""]),
    ("[[focuser]]\ntemperature = 100\n", "temperature", ["60"]),
    ('[[focuser]]\nport = "/dev/ttyUSB0"\n', "port", ["moonlite"]),
    ("[[focuser]]\nhalf_step = true\n", "half_step", ["moonlite"]),
    ('[[focuser]]\nname = "M"\ndriver = "moonlite"\n', "port", ["required", "moonlite"]),
    (MOONLITE + "max_step = 70000\n", "max_step", ["65535", "70000", "16-bit"]),
    (MOONLITE + "speed = 3\n", "speed", ["2", "32", "got 3"]),
    (MOONLITE + "baud = 100\n", "baud", ["between"]),
    (MOONLITE + "read_timeout = 0\n", "read_timeout", ["0.05"]),
    (MYFP2 + "step_mode = 3\n", "step_mode", ["1, 2, 4", "256", "got 3"]),
    (MYFP2 + "controller_backlash_in = 300\n", "controller_backlash_in", ["between 0 and 255"]),
    (MYFP2.replace("10000", "3000000"), "max_step", ["2000000", "myfp2"]),
    (MYFP2 + "speed = 2\n", "speed", ["does not apply", "myfp2"]),
    (MYFP2 + "half_step = true\n", "half_step", ["does not apply"]),
    (MOONLITE + "set_controller_max_step = true\n", "set_controller_max_step", ["only applies", "myfp2"]),
    ("[[focuser]]\ncontroller_reverse = true\n", "controller_reverse", ["only applies", "myfp2"]),
    ('[[focuser]]\nname = "F"\ndriver = "myfp2"\n', "port", ["required", "myfp2"]),
    ('[[focuser]]\nname = "A"\n[[focuser]]\nname = "A"\n', "name", ["'A'", "already used"]),
    (MOONLITE + '[[focuser]]\nname = "N"\ndriver = "moonlite"\nport = "/dev/ttyUSB0"\n', "port",
     ["/dev/ttyUSB0", "two focusers"]),
    ('[focuser]\nname = "A"\n', "focuser", ["array", "[[focuser]]"]),
    ("focuser = 3\n", "focuser", ["array"]),
    ("focuser = []\n", "focuser", ["at least one"]),
    ("focuser = [1]\n", "focuser #0", ["table"]),
    ("[telescope]\nport = 1\n", "telescope", ["unknown section"]),
    ("server = 5\n", "server", ["table"]),
    ('[[focuser]]\nname = "A"\n[[focuser]]\nname = "B"\nmax_stpe = 1\n', "max_stpe", ["focuser #1", "unknown key"]),
    # focusing features
    ("[[focuser]]\nbacklash_steps = -1\n", "backlash_steps", ["between 0 and 10000", "-1"]),
    ("[[focuser]]\nbacklash_steps = 20000\n", "backlash_steps", ["between 0 and 10000"]),
    ("[[focuser]]\nmax_step = 500\nbacklash_steps = 600\n", "backlash_steps", ["max_step (500)", "600"]),
    ("[[focuser]]\nbacklash_steps = 12.5\n", "backlash_steps", ["integer"]),
    ('[[focuser]]\nbacklash_direction = "up"\n', "backlash_direction", ['"out"', '"in"', "'up'"]),
    ('[[focuser]]\nbacklash_direction = "OUT"\n', "backlash_direction", ["'OUT'"]),
    ('[[focuser]]\nreverse = "yes"\n', "reverse", ["true or false"]),
    ("[[focuser]]\nsettle_ms = -5\n", "settle_ms", ["between 0 and 60000"]),
    ("[[focuser]]\nsettle_ms = 0.5\n", "settle_ms", ["integer"]),
    ('[[focuser]]\ntemp_comp_available = "auto"\n', "temp_comp_available", ["true or false"]),
    ("[[focuser]]\ntemp_comp_coefficient = 20000\n", "temp_comp_coefficient", ["-10000", "10000", "20000"]),
    ('[[focuser]]\ntemp_comp_coefficient = "-12"\n', "temp_comp_coefficient", ["number"]),
    ("[[focuser]]\ntemp_comp_threshold = 0\n", "temp_comp_threshold", ["at least 0.05"]),
    ("[[focuser]]\ntemp_comp_threshold = 11\n", "temp_comp_threshold", ["at most 10"]),
    ("[[focuser]]\ntemp_comp_window_s = 0.5\n", "temp_comp_window_s", ["at least 1"]),
    ("[[focuser]]\ntemp_comp_window_s = 7200\n", "temp_comp_window_s", ["at most 3600"]),
    ("[[focuser]]\ntemp_comp_learn_idle_s = 0\n", "temp_comp_learn_idle_s", ["at least 1"]),
    ("[[focuser]]\ntemp_comp_learn_idle_s = 100000\n", "temp_comp_learn_idle_s", ["at most 86400"]),
])
def test_each_mistake_has_a_clear_message(tmp_path: Path, text: str, key: str, words: list[str]) -> None:
    message = error_of(write(tmp_path, text))
    assert key in message, message
    for word in words:
        assert word.lower() in message.lower(), (word, message)


def test_unknown_key_names_the_focuser_table(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, GOOD_FOCUSER + "max_stpe = 5000\n"))
    assert "[focuser #0] max_stpe" in message


def test_missing_file(tmp_path: Path) -> None:
    message = error_of(tmp_path / "nope.toml")
    assert "cannot read" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[server]\nlocation = "Sternwarte Köln"\n'.encode("latin-1"))
    assert "UTF-8" in error_of(path)


def test_port_override_is_checked(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_FOCUSER, "ok.toml")
    with pytest.raises(ConfigError, match="--port"):
        cli.load_effective_config(str(path), port=70000)
    config = cli.load_effective_config(str(path), bind="::1", port=4242)
    assert (config.server.bind, config.server.port) == ("::1", 4242)


def test_state_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = load_config(write(tmp_path, f'[server]\nstate_dir = "{tmp_path / "s"}"\n', "s.toml"))
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/a:/var/lib/b")
    assert explicit.resolved_state_dir() == tmp_path / "s"
    assert Config().resolved_state_dir() == Path("/var/lib/a")
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert Config().resolved_state_dir() == tmp_path / "xdg" / "alpaca-focuser"


def test_every_focuser_key_is_described_and_every_described_key_is_accepted(tmp_path: Path) -> None:
    """The settings page renders FOCUSER_KEYS: a key the loader accepts but the table misses would be
    unconfigurable from the page, and a described key the loader rejects would make the page fail on save."""
    from dataclasses import fields

    from alpaca_focuser.config_keys import FOCUSER_KEYS

    described = {k.key for k in FOCUSER_KEYS}
    assert described == {f.name for f in fields(FocuserConfig)}
    for info in FOCUSER_KEYS:
        assert info.kind in ("text", "int", "number", "bool", "choice"), info
        assert info.applies in ("live", "reconnect", "restart"), info


def test_config_errors_name_their_table_and_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"focuser": [{"name": "A"}, {"name": "B", "max_step": 0}]}, "x.toml")
    assert (info.value.table, info.value.key) == ("focuser #1", "max_step")
    with pytest.raises(ConfigError) as info:
        parse_config({"focuser": [{"name": "A"}, {"name": "A"}]}, "x.toml")
    assert (info.value.table, info.value.key) == ("focuser #1", "name")


def test_the_config_knows_every_serial_driver_the_registry_builds() -> None:
    from alpaca_focuser.config_keys import DRIVERS, SERIAL_DRIVERS
    from alpaca_focuser.drivers.registry import SERIAL_DRIVER_CLASSES, serial_driver_class

    assert set(SERIAL_DRIVERS) == set(SERIAL_DRIVER_CLASSES)
    assert set(SERIAL_DRIVERS) <= set(DRIVERS)
    for name in SERIAL_DRIVERS:
        cls = serial_driver_class(name)
        assert cls.DIALECT.name == name and callable(cls.from_config)


def test_focusing_keys_load_with_their_defaults_and_values(tmp_path: Path) -> None:
    default = load_config(write(tmp_path, GOOD_FOCUSER, "d.toml")).focusers[0]
    assert (default.backlash_steps, default.backlash_direction, default.reverse, default.settle_ms) == \
        (0, "out", False, 0)
    assert default.temp_comp_available is None  # unset: the driver's sensor decides
    assert (default.temp_comp_coefficient, default.temp_comp_threshold, default.temp_comp_window_s,
            default.temp_comp_learn_idle_s) == (0.0, 0.5, 120.0, 600.0)
    text = GOOD_FOCUSER + ('backlash_steps = 120\nbacklash_direction = "in"\nreverse = true\nsettle_ms = 750\n'
                           "temp_comp_available = false\ntemp_comp_coefficient = -12\ntemp_comp_threshold = 0.25\n"
                           "temp_comp_window_s = 60\ntemp_comp_learn_idle_s = 900\n")
    f = load_config(write(tmp_path, text, "f.toml")).focusers[0]
    assert (f.backlash_steps, f.backlash_direction, f.reverse, f.settle_ms, f.temp_comp_available) == \
        (120, "in", True, 750, False)
    assert (f.temp_comp_coefficient, f.temp_comp_threshold, f.temp_comp_window_s, f.temp_comp_learn_idle_s) == \
        (-12.0, 0.25, 60.0, 900.0)


def test_every_focuser_key_is_documented_in_the_shipped_config_and_the_readme() -> None:
    from dataclasses import fields

    shipped = SHIPPED.read_text(encoding="utf-8")
    readme = (SHIPPED.parent / "README.md").read_text(encoding="utf-8")
    for f in fields(FocuserConfig):
        assert f"{f.name} =" in shipped, f"{f.name} is not in config.toml"
        assert f"`{f.name}`" in readme, f"{f.name} is not in the README's key table"
