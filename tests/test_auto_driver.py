"""``driver = "auto"``: config, probing at connect, reconnects, and end to end through the HTTP API.

Real ptys and the project's emulators (tests/emulated.py), a real waitress server on 127.0.0.1 for the HTTP
tests. Emulators are requested before ``server_factory`` so the servers stop first.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from alpaca_focuser.config import ConfigError, parse_config
from alpaca_focuser.config_keys import DRIVERS, FOCUSER_KEYS, KEYS_BY_NAME
from alpaca_focuser.drivers import create_driver, probe
from alpaca_focuser.drivers.auto import AutoDriver
from alpaca_focuser.drivers.registry import SERIAL_DRIVER_CLASSES, serial_driver_class
from alpaca_focuser.emulator.pty_link import PtyLink, silent_pty
from alpaca_focuser.errors import DEVICE_NOT_RESPONDING, SERIAL_PORT_ERROR, DriverError
from alpaca_focuser.focuser.device import CONNECT_TIMEOUT
from alpaca_http import AlpacaHttp
from conftest import REPO, make_config, started_until_teardown, wait_until
from emulated import DEFAULT_PROFILES, FIRMWARE_VERSION, need_driver, only_queries, start_emulator

WINDOW = 1.5  # each handshake's window while probing (see test_probe.py)
AUTO_CONNECT_SPARE = 4.0  # seconds auto's worst connect must leave of the device's CONNECT_TIMEOUT
TABLE = {"name": "Auto", "driver": "auto", "max_step": 8000, "max_increment": 8000}


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for pty links: Description is cut at 64 characters and must still show the firmware."""
    path = Path(tempfile.mkdtemp(prefix="af", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def emulator(short_dir: Path) -> Iterator[Callable[..., PtyLink]]:
    numbers = itertools.count()

    def start(protocol: str, profile: str, link: str | None = None, **options: Any) -> PtyLink:
        return start_emulator(protocol, profile, link or str(short_dir / f"t{next(numbers)}"), **options)

    yield from started_until_teardown(start, PtyLink.stop)


@pytest.fixture
def make_auto(tmp_path: Path) -> Iterator[Callable[..., AutoDriver]]:
    """``make_auto(port, **table)``: an AutoDriver for a validated [[focuser]] table, closed at teardown."""
    def start(port: str, **table: Any) -> AutoDriver:
        cfg = make_config(tmp_path, {**TABLE, "port": port, **table}).focusers[0]
        driver = create_driver(cfg)
        assert isinstance(driver, AutoDriver)
        driver.probe_timeout = WINDOW
        return driver

    yield from started_until_teardown(start, AutoDriver.close)


# --- config -----------------------------------------------------------------------------------------------------
def auto_table(**keys: Any) -> Any:
    return parse_config({"focuser": [{"driver": "auto", **keys}]}, "c.toml").focusers[0]


def test_auto_config_needs_a_port_and_takes_baud_only_when_set() -> None:
    assert "auto" in DRIVERS and "auto" in KEYS_BY_NAME["port"].drivers and "auto" in KEYS_BY_NAME["baud"].drivers
    assert auto_table(port="/dev/ttyUSB0").baud is None  # each controller at its own speed
    assert auto_table(port="/dev/ttyUSB0", baud=115200).baud == 115200  # only this speed
    assert auto_table(port="/dev/ttyUSB0", max_step=200000).max_step == 200000  # checked against the controller
    with pytest.raises(ConfigError, match=r'c.toml: \[focuser #0\] port: is required for driver = "auto"') as info:
        auto_table()
    assert info.value.key == "port"


@pytest.mark.parametrize("key", [k.key for k in FOCUSER_KEYS if k.drivers and "auto" not in k.drivers])
def test_auto_config_refuses_a_key_that_means_something_else_to_each_controller(key: str) -> None:
    value = {"bool": True, "number": 5.0}.get(KEYS_BY_NAME[key].kind, 2)  # valid for the key, wrong for auto
    with pytest.raises(ConfigError, match=rf'\[focuser #0\] {key}: does not apply to driver = "auto"') as info:
        auto_table(port="/dev/ttyUSB0", **{key: value})
    assert info.value.key == key and "alpaca-focuser probe /dev/ttyUSB0" in str(info.value)


def test_the_shipped_config_documents_an_auto_table_that_loads() -> None:
    text = (REPO / "config.toml").read_text(encoding="utf-8")
    start = text.index('# name = "Whatever is plugged in"') - len("# [[focuser]]\n")
    block = text[start:text.index("\n\n", start)]
    table = "\n".join(line[2:] for line in block.splitlines())
    cfg = parse_config(tomllib.loads(table), "config.toml").focusers[0]
    assert (cfg.driver, cfg.baud, cfg.max_step) == ("auto", None, 10000)  # each controller at its own speed


# --- probing at connect -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("protocol", "profile"), DEFAULT_PROFILES)
def test_auto_connects_to_what_answers_and_describes_it(emulator: Any, make_auto: Any, protocol: str,
                                                        profile: str) -> None:
    need_driver(protocol)
    emu = emulator(protocol, profile)
    driver = make_auto(emu.device_path)
    assert driver.capabilities().description == f"Focuser on {emu.device_path} (controller detected at connect)"
    driver.connect()
    assert driver.chosen == protocol and driver.probes == 1 and driver.status().connected
    description = driver.capabilities().description
    assert emu.device_path in description and FIRMWARE_VERSION[protocol](emu.firmware) in description
    assert driver.last_probe is not None and driver.last_probe.found.baud == driver.inner.baud  # type: ignore
    driver.connect()  # idempotent
    assert driver.probes == 1


def test_auto_probes_on_the_worker_thread_and_close_cancels_it(make_auto: Any, short_dir: Path) -> None:
    with silent_pty(str(short_dir / "quiet")) as path:
        driver = make_auto(path)
        driver.probe_timeout = 10.0
        failure: list[BaseException] = []
        worker = threading.Thread(target=lambda: _connect(driver, failure), name="motion-test")
        worker.start()
        time.sleep(0.3)
        started = time.monotonic()
        driver.close()  # shutdown: the probe stops at once instead of trying every dialect for 10 s
        worker.join(5.0)
        assert not worker.is_alive() and time.monotonic() - started < 2.0
    assert isinstance(failure[0], DriverError) and "cancelled" in failure[0].message


def test_auto_close_while_the_chosen_driver_connects_lets_the_port_go(emulator: Any, make_auto: Any) -> None:
    emu = emulator("moonlite", "moonlite", boot_delay=0.8)  # each open reboots: the chosen driver's connect waits
    driver = make_auto(emu.device_path)
    failure: list[BaseException] = []
    worker = threading.Thread(target=lambda: _connect(driver, failure), name="motion-test")
    worker.start()
    wait_until(lambda: driver.last_probe is not None, timeout=10)  # the probe found it; the driver connects now
    driver.close()
    worker.join(10.0)
    assert not worker.is_alive() and isinstance(failure[0], DriverError) and "cancelled" in failure[0].message
    assert driver.inner is None and not any(t.name == "moonlite-Auto" for t in threading.enumerate())
    wait_until(lambda: not emu.client_open, timeout=5)


def _connect(driver: AutoDriver, failure: list[BaseException]) -> None:
    try:
        driver.connect()
    except BaseException as exc:
        failure.append(exc)


def test_auto_connect_errors_say_what_was_tried(make_auto: Any, short_dir: Path) -> None:
    with pytest.raises(DriverError) as missing:
        make_auto(str(short_dir / "none")).connect()
    assert missing.value.number == SERIAL_PORT_ERROR and "No such file" in missing.value.message
    with silent_pty(str(short_dir / "quiet")) as path:
        with pytest.raises(DriverError) as silent:
            make_auto(path).connect()
    assert silent.value.number == DEVICE_NOT_RESPONDING
    tried = ", ".join(f"{name} at {baud} baud" for name, baud in probe.candidates())
    assert silent.value.message.startswith(f"No focuser controller answered on {path} (tried {tried}; ")


def test_auto_worst_connect_fits_in_the_device_s_connect_timeout() -> None:
    """The worst ``auto`` connect: the first choice's handshake window runs out, then every dialect's window while
    probing a port where nothing answers (bench/probe_timing.py measures it: 19.4 s). It must leave the device's
    CONNECT_TIMEOUT room for the serial opens and a loaded machine, or a Connected=true request gives up while the
    connect is still under way. A new dialect, another speed or a longer window counts against this."""
    windows = {name: serial_driver_class(name).DIALECT.link_settings.handshake_timeout
               for name in SERIAL_DRIVER_CLASSES}
    tries = probe.candidates()
    worst = max(windows.values()) + sum(windows[name] for name, _ in tries) + len(tries) * probe.REOPEN_PAUSE
    assert worst + AUTO_CONNECT_SPARE <= CONNECT_TIMEOUT, (
        f"auto's worst connect is {worst:.1f} s: less than {AUTO_CONNECT_SPARE} s short of CONNECT_TIMEOUT")


def test_auto_refuses_a_max_step_beyond_the_controller_found(emulator: Any, make_auto: Any) -> None:
    emu = emulator("moonlite", "moonlite")
    driver = make_auto(emu.device_path, max_step=100000, max_increment=100000)
    with pytest.raises(DriverError, match=r"max_step = 100000 is beyond what the moonlite controller found on .* "
                                          r"can reach \(0..65535\): set max_step to 65535 or less"):
        driver.connect()
    assert not driver.status().connected
    wait_until(lambda: not emu.client_open, timeout=5)  # the port was let go


# --- reconnects -----------------------------------------------------------------------------------------------------
def test_auto_unplug_recovers_on_the_same_controller_without_probing_again(emulator: Any, make_auto: Any) -> None:
    emu = emulator("moonlite", "moonlite", position=1234)
    driver = make_auto(emu.device_path)
    driver.connect()
    emu.unplug()
    wait_until(lambda: driver.status().fault is not None, timeout=5)
    emu.firmware.set_position(2345)  # moved by hand while unplugged
    emu.replug()
    wait_until(lambda: driver.status().fault is None, timeout=10)
    assert driver.status().position == 2345 and driver.probes == 1 and driver.chosen == "moonlite"


def test_auto_reconnect_tries_the_first_choice_then_probes_again(emulator: Any, make_auto: Any,
                                                                short_dir: Path) -> None:
    link = str(short_dir / "swap")
    first = emulator("moonlite", "moonlite", link)
    driver = make_auto(link)
    driver.connect()
    handshakes = first.firmware.command_counts
    assert handshakes["GV"] == 2  # the probe's handshake, then the chosen driver's
    driver.disconnect()
    driver.connect()  # the same controller: its own handshake, no probe
    assert driver.probes == 1 and handshakes["GV"] == 3
    driver.disconnect()
    first.stop()
    with silent_pty(link):  # something that does not answer is plugged in instead
        with pytest.raises(DriverError, match="No focuser controller answered"):
            driver.connect()
    assert driver.probes == 2
    again = emulator("moonlite", "clone", link)
    driver.connect()  # the first choice answers again: no probe
    assert driver.probes == 2 and driver.status().connected and again.firmware.command_counts["GV"] == 1


@pytest.mark.parametrize(("protocol", "profile"), [p for p in DEFAULT_PROFILES if p[0] != "moonlite"])
def test_auto_reconnect_finds_a_different_controller_on_the_port(emulator: Any, make_auto: Any, short_dir: Path,
                                                                 protocol: str, profile: str) -> None:
    need_driver(protocol)
    link = str(short_dir / "swap")
    first = emulator("moonlite", "moonlite", link)
    driver = make_auto(link)
    driver.connect()
    driver.disconnect()
    first.stop()
    other = emulator(protocol, profile, link)
    driver.connect()
    assert driver.chosen == protocol and driver.probes == 2
    only_queries(protocol, other)  # neither Moonlite's first-choice handshake nor the probe set anything


# --- end to end through the HTTP API ------------------------------------------------------------------------------
@pytest.mark.parametrize(("protocol", "profile"), DEFAULT_PROFILES)
def test_auto_end_to_end_connect_describe_move(emulator: Any, server_factory: Any, protocol: str,
                                               profile: str) -> None:
    need_driver(protocol)
    emu = emulator(protocol, profile)
    with emu.lock:
        emu.firmware.set_position(3000)
    server = server_factory({**TABLE, "port": emu.device_path})
    device = server.devices[0]
    device.driver.probe_timeout = WINDOW  # type: ignore[attr-defined]
    with AlpacaHttp("127.0.0.1", server.port) as http:
        before = http.value("description")
        assert before == f"Focuser on {emu.device_path} (controller detected at connect)"
        http.put("connected", Connected="true")  # the probe ran on the device's worker, not on this request
        assert http.value("connected") is True
        description = http.value("description")
        assert description == device.driver.inner.capabilities().description[:64]  # type: ignore[attr-defined]
        assert emu.device_path in description and FIRMWARE_VERSION[protocol](emu.firmware) in description
        assert http.value("position") == 3000
        http.put("move", Position=1200)
        wait_until(lambda: not http.value("ismoving"), timeout=10)
        assert http.value("position") == 1200 == emu.firmware.position
        assert http.value("maxstep") == 8000
    assert device.driver.chosen == protocol  # type: ignore[attr-defined]


def test_auto_description_for_moonlite_names_the_firmware(emulator: Any, server_factory: Any) -> None:
    emu = emulator("moonlite", "moonlite")
    server = server_factory({**TABLE, "port": emu.device_path})
    with AlpacaHttp("127.0.0.1", server.port) as http:
        http.put("connected", Connected="true")
        assert http.value("description") == f"Moonlite-compatible focuser on {emu.device_path}, firmware 10"
    assert os.path.islink(emu.device_path)
