"""Shared fixtures: real servers on loopback, Falcon test clients, and config builders.

Every server here listens on 127.0.0.1 with an ephemeral port; nothing talks to any other address.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import falcon.testing
import pytest

from alpaca_focuser.app import FocuserServer, build_devices, create_app
from alpaca_focuser.config import Config, parse_config
from alpaca_focuser.state import StateStore

REPO = Path(__file__).resolve().parent.parent
SPEC_DIR = REPO.parent / "shared" / "spec"


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


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., FocuserServer]]:
    """Real servers: waitress on 127.0.0.1, ephemeral port. ``server.port`` is the bound port."""
    servers: list[FocuserServer] = []

    def factory(*focusers: dict[str, Any], **kwargs: Any) -> FocuserServer:
        # No IPv6 multicast joins in tests: a join sends an MLD report out of real interfaces.
        server = FocuserServer(make_config(tmp_path, *focusers, **kwargs), multicast_interfaces=())
        server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def server(server_factory: Callable[..., FocuserServer]) -> FocuserServer:
    return server_factory()


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
