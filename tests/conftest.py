"""Shared fixtures: real servers on loopback, Falcon test clients, Moonlite emulators on ptys, config builders.

Every server here listens on 127.0.0.1 with an ephemeral port; nothing talks to any other address.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import falcon.testing
import pytest

from alpaca_focuser.app import FocuserServer, build_devices, create_app
from alpaca_focuser.config import Config, parse_config
from alpaca_focuser.emulator.myfp2_firmware import MyFP2Firmware
from alpaca_focuser.emulator.pegasus_firmware import PegasusFirmware
from alpaca_focuser.emulator.pty_link import MoonliteEmulator, PtyLink
from alpaca_focuser.state import StateStore

REPO = Path(__file__).resolve().parent.parent
SPEC_DIR = REPO.parent / "shared" / "spec"

T = TypeVar("T")

# Malformed frames only: a well-formed "1234#" arriving in place of a GP reply is indistinguishable from the real
# one on the Moonlite protocol, so it is not a fair test of the driver.
MALFORMED_FRAMES = (b"12G4#", b"\x00\x00#", b"123#", b"\xff\xfe\x00", b"12345#", b"Z?!", b"0#", b"#")


def make_config(tmp_path: Path, *focusers: dict[str, Any], discovery: bool = False,
                server: dict[str, Any] | None = None) -> Config:
    """A validated Config with the given [[focuser]] tables (default: one fast simulator)."""
    tables = list(focusers) or [{"name": "Simulated focuser", "speed": 20000, "step_size": 4.5}]
    data = {
        "server": {"bind": "127.0.0.1", "port": 0, "state_dir": str(tmp_path / "state"), **(server or {})},
        "discovery": {"enabled": discovery, "port": 0},
        "focuser": tables,
    }
    return parse_config(data, "<test>")


@pytest.fixture
def config_factory(tmp_path: Path) -> Callable[..., Config]:
    def factory(*focusers: dict[str, Any], **kwargs: Any) -> Config:
        return make_config(tmp_path, *focusers, **kwargs)

    return factory


@pytest.fixture
def app_factory(tmp_path: Path) -> Iterator[Callable[..., falcon.testing.TestClient]]:
    """Falcon test clients over the real app, devices and drivers (no network)."""
    made: list[Any] = []

    def factory(*focusers: dict[str, Any]) -> falcon.testing.TestClient:
        config = make_config(tmp_path, *focusers)
        devices = build_devices(config, StateStore(config.resolved_state_dir()))
        made.append(devices)
        client = falcon.testing.TestClient(create_app(config, devices))
        client.devices = devices  # type: ignore[attr-defined]
        return client

    yield factory
    for devices in made:
        for device in devices.values():
            device.shutdown()


@pytest.fixture
def client(app_factory: Callable[..., falcon.testing.TestClient]) -> falcon.testing.TestClient:
    return app_factory()


def started_until_teardown(start: Callable[..., T], stop: Callable[[T], None]) -> Iterator[Callable[..., T]]:
    """The body of a factory fixture (``yield from`` it): yields a factory that calls ``start`` and keeps what it
    returns; at teardown, ``stop`` on each of those, in the order started."""
    started: list[T] = []

    def factory(*args: Any, **kwargs: Any) -> T:
        thing = start(*args, **kwargs)
        started.append(thing)
        return thing

    yield factory
    for thing in started:
        stop(thing)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., FocuserServer]]:
    """Real servers: waitress on 127.0.0.1, ephemeral port. ``server.port`` is the bound port."""
    def start(*focusers: dict[str, Any], **kwargs: Any) -> FocuserServer:
        # No IPv6 multicast joins in tests: a join sends an MLD report out of real interfaces.
        server = FocuserServer(make_config(tmp_path, *focusers, **kwargs), multicast_interfaces=())
        server.start()
        return server

    yield from started_until_teardown(start, FocuserServer.stop)


@pytest.fixture
def server(server_factory: Callable[..., FocuserServer]) -> FocuserServer:
    return server_factory()


@pytest.fixture
def make_emu(tmp_path: Path) -> Iterator[Callable[..., MoonliteEmulator]]:
    """Moonlite emulators (keyword arguments as MoonliteEmulator's) on a pty behind a symlink in tmp_path. Request
    this fixture before ``server_factory`` so the servers stop first and no driver sees its port vanish during
    teardown."""
    numbers = itertools.count()

    def start(**kwargs: Any) -> MoonliteEmulator:
        return MoonliteEmulator(link_path=str(tmp_path / f"ttyFOCUSER{next(numbers)}"), **kwargs).start()

    yield from started_until_teardown(start, MoonliteEmulator.stop)


@pytest.fixture
def make_pegasus(tmp_path: Path) -> Iterator[Callable[..., PtyLink]]:
    """Pegasus emulators on a pty behind a symlink in tmp_path: ``split_pause``, ``line_baud`` and ``reply_delay``
    go to the link, every other keyword argument to PegasusFirmware (profile, variant, position, ...). Request it
    before ``server_factory``, as ``make_emu``."""
    numbers = itertools.count()

    def start(*, split_pause: float | None = None, line_baud: float | None = None, reply_delay: float = 0.0,
              **firmware: Any) -> PtyLink:
        return PtyLink(PegasusFirmware(**firmware), str(tmp_path / f"ttyPEGASUS{next(numbers)}"), name="pegasus",
                       split_pause=split_pause, line_baud=line_baud, reply_delay=reply_delay).start()

    yield from started_until_teardown(start, PtyLink.stop)


@pytest.fixture
def make_myfp2_emu(tmp_path: Path) -> Iterator[Callable[..., PtyLink]]:
    """myFocuserPro2 emulators on a pty behind a symlink in tmp_path: keyword arguments are MyFP2Firmware's
    (profile, position, probe, ...) plus the link's pacing (reply_delay, split_pause, line_baud). Request this
    fixture before ``server_factory``, as ``make_emu``."""
    numbers = itertools.count()

    def start(**kwargs: Any) -> PtyLink:
        pacing = {key: kwargs.pop(key) for key in ("reply_delay", "split_pause", "line_baud") if key in kwargs}
        return PtyLink(MyFP2Firmware(**kwargs), str(tmp_path / f"ttyMYFP2{next(numbers)}"), name="myfp2",
                       **pacing).start()

    yield from started_until_teardown(start, PtyLink.stop)


@contextlib.contextmanager
def positions_seen(read: Callable[[], int]) -> Iterator[list[int]]:
    """Every position ``read()`` gives, sampled every 2 ms by a thread while the block runs."""
    seen: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            seen.append(read())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, name="test-sampler", daemon=True)
    sampler.start()
    try:
        yield seen
    finally:
        done.set()
        sampler.join()


def send_malformed_frames(emu: MoonliteEmulator) -> None:
    """Noise on the serial line: each of MALFORMED_FRAMES, 70 ms apart."""
    for junk in MALFORMED_FRAMES:
        emu.send_garbage(junk)
        time.sleep(0.07)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll until predicate() is truthy; fail the test with a clear message on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.002) -> Any:
    """Poll ``predicate`` until it is truthy and return its value; after ``timeout`` fail the test, naming ``what``.
    (The driver tests poll at this finer interval: they time halts and faults.)"""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return value


def seconds_until(predicate: Callable[[], Any], timeout: float, what: str) -> float:
    """How long ``predicate`` took to hold, polled and failed as by ``wait_for``."""
    start = time.monotonic()
    wait_for(predicate, timeout, what)
    return time.monotonic() - start
