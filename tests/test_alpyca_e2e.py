"""End to end: a real server (waitress on 127.0.0.1) driven by the real Alpaca client library, alpyca.

The suite is driver-agnostic. ``focuser_under_test`` is parametrised over *backends*: a backend knows how to turn
a few generic settings (name, max_step, max_increment, temp_comp_available, ...) into a ``[[focuser]]`` table for
its driver, starting whatever that driver needs (the Moonlite backend will start an emulator on a pty). Tests
read limits such as MaxStep and MaxIncrement from the device rather than assuming them, and keep every move
at or below ~3000 steps so that a slow (500 steps/s) emulated focuser still finishes quickly.

To add a backend: write a ``Backend`` whose ``table()`` returns the ``[[focuser]]`` table for the generic
settings (registering any cleanup on the ``ExitStack``) and add it to ``BACKENDS``.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alpaca.exceptions import (
    ActionNotImplementedException,
    InvalidValueException,
    NotConnectedException,
    NotImplementedException,
)
from alpaca.focuser import Focuser

from alpaca_focuser.app import FocuserServer
from alpaca_focuser.emulator.pty_link import MoonliteEmulator
from conftest import wait_until

# ------------------------------------------------------------------------------------------------------------------
# Backends
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """How to build focuser tables for one driver.

    ``table(stack, settings)`` returns one ``[[focuser]]`` table; ``settings`` holds generic keys (``name``,
    ``max_step``, ``max_increment``, ``temp_comp_available``, ``step_size``) which every backend must honour.
    Resources (emulators) are registered on ``stack`` and released after the test. Each call makes an
    independent focuser (its own emulator), and it must start at position 0 (or within a few hundred steps),
    because no test moves more than MAX_MOVE steps at once.
    """

    id: str
    table: Callable[[contextlib.ExitStack, dict[str, Any]], dict[str, Any]]
    steps_per_second: float  # rough motor speed, for time-outs
    has_temperature: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _simulator_table(stack: contextlib.ExitStack, settings: dict[str, Any]) -> dict[str, Any]:
    return {"driver": "simulator", "speed": 4000, **settings}


def _moonlite_table(stack: contextlib.ExitStack, settings: dict[str, Any]) -> dict[str, Any]:
    """A Moonlite controller emulated on a real pty (its own parser, independent of the driver), reached
    through the real MoonliteDriver and pyserial."""
    link = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "ttyFOCUSER"
    emulator = MoonliteEmulator(link_path=str(link), steps_per_second=2000).start()
    stack.callback(emulator.stop)
    return {"driver": "moonlite", "port": str(link), **settings}


BACKENDS: list[Backend] = [
    Backend("simulator", _simulator_table, steps_per_second=4000),
    Backend("moonlite", _moonlite_table, steps_per_second=2000),
]

BASE_SETTINGS: dict[str, Any] = {"name": "E2E focuser", "step_size": 4.5}
MAX_MOVE = 3000  # steps: 6 s on a 500 steps/s emulated focuser


@dataclass
class Harness:
    """What a backend needs to build more servers within one test."""

    backend: Backend
    server_factory: Callable[..., FocuserServer]
    stack: contextlib.ExitStack
    servers: list[FocuserServer] = field(default_factory=list)

    def make_server(self, *settings: dict[str, Any]) -> FocuserServer:
        """A server with one focuser per ``settings`` dict (merged over BASE_SETTINGS; names made unique)."""
        tables = []
        for index, extra in enumerate(settings or ({},)):
            merged = {**BASE_SETTINGS, "name": f"{BASE_SETTINGS['name']} {index}", **extra}
            tables.append(self.backend.table(self.stack, merged))
        server = self.server_factory(*tables)
        self.servers.append(server)
        return server

    @staticmethod
    def client(server: FocuserServer, device_number: int = 0) -> Focuser:
        return Focuser(address=f"127.0.0.1:{server.port}", device_number=device_number)

    def move_timeout(self, steps: int) -> float:
        return 5.0 + 3.0 * abs(steps) / self.backend.steps_per_second


@pytest.fixture(params=BACKENDS, ids=lambda b: b.id)
def focuser_under_test(request: pytest.FixtureRequest, server_factory: Callable[..., FocuserServer]
                       ) -> Iterator[tuple[Focuser, FocuserServer, dict[str, Any]]]:
    """(alpyca Focuser for device 0, the running server, extra).

    ``extra``: ``backend`` (id), ``harness`` (to build more servers: ``extra["harness"].make_server({...})``),
    ``name`` (the configured name), ``has_temperature`` and the backend's own ``extra`` entries. The client is
    NOT connected yet.
    """
    backend: Backend = request.param
    with contextlib.ExitStack() as stack:
        harness = Harness(backend, server_factory, stack)
        server = harness.make_server({})
        extra = {"backend": backend.id, "harness": harness, "name": f"{BASE_SETTINGS['name']} 0",
                 "has_temperature": backend.has_temperature, **backend.extra}
        yield harness.client(server), server, extra
        # Stop the servers (idempotent; server_factory would do it later) before the stack releases the
        # backend's resources, so a driver never sees its port vanish under it.
        for srv in harness.servers:
            srv.stop()


# ------------------------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------------------------


def connect(f: Focuser, timeout: float = 20.0) -> None:
    f.Connect()
    wait_until(lambda: not f.Connecting, timeout=timeout)
    assert f.Connected is True


def wait_stopped(f: Focuser, timeout: float) -> int:
    wait_until(lambda: not f.IsMoving, timeout=timeout, interval=0.02)
    return f.Position


def move_and_wait(f: Focuser, harness: Harness, target: int) -> int:
    start = f.Position
    f.Move(target)
    return wait_stopped(f, harness.move_timeout(target - start))


def short_target(f: Focuser, wanted: int) -> int:
    """``wanted`` limited to what this focuser allows from where it is (MaxStep, MaxIncrement) and to MAX_MOVE."""
    here = f.Position
    reach = min(f.MaxIncrement, MAX_MOVE)
    lo, hi = max(0, here - reach), min(f.MaxStep, here + reach)
    return min(max(wanted, lo), hi)


# ------------------------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------------------------


def test_connect_is_asynchronous_and_completes(focuser_under_test) -> None:
    f, _, _ = focuser_under_test
    assert f.Connected is False
    with pytest.raises(NotConnectedException):
        _ = f.Position
    f.Connect()
    # Connect() returns before the hardware is open: Connecting is true first (the simulator takes 0.1 s,
    # a Moonlite handshake longer), then false with Connected true.
    assert f.Connecting is True
    wait_until(lambda: not f.Connecting, timeout=20)
    assert f.Connected is True
    assert isinstance(f.Position, int)


def test_every_property_reads_with_the_right_type(focuser_under_test) -> None:
    f, _, extra = focuser_under_test
    # Members that work without a connection
    assert f.Name == extra["name"]
    description = f.Description
    assert isinstance(description, str) and 0 < len(description) <= 64
    driver_info = f.DriverInfo  # alpyca splits the string at commas into a list
    assert isinstance(driver_info, list) and driver_info and all(isinstance(p, str) for p in driver_info)
    assert re.fullmatch(r"\d+\.\d+", f.DriverVersion)
    assert f.InterfaceVersion == 4
    actions = f.SupportedActions
    assert isinstance(actions, list) and all(isinstance(a, str) for a in actions)
    assert f.Connecting is False

    connect(f)
    assert f.Absolute is True
    assert f.IsMoving is False
    max_step, max_increment = f.MaxStep, f.MaxIncrement
    assert isinstance(max_step, int) and max_step > 0
    assert isinstance(max_increment, int) and 0 < max_increment <= max_step
    position = f.Position
    assert isinstance(position, int) and 0 <= position <= max_step
    step_size = f.StepSize
    assert isinstance(step_size, float) and step_size == pytest.approx(4.5)
    assert f.TempCompAvailable is extra["has_temperature"]  # temp_comp_available unset: the sensor decides
    assert f.TempComp is False
    if extra["has_temperature"]:
        temperature = f.Temperature
        assert isinstance(temperature, float) and -60.0 <= temperature <= 80.0
    else:
        with pytest.raises(NotImplementedException):
            _ = f.Temperature
    state = f.DeviceState
    assert isinstance(state, list) and state
    assert f.Connecting is False


def test_move_reaches_the_target_exactly(focuser_under_test) -> None:
    f, _, extra = focuser_under_test
    harness = extra["harness"]
    connect(f)
    start = f.Position
    target = short_target(f, start + 1500)
    assert target != start
    assert move_and_wait(f, harness, target) == target
    assert f.IsMoving is False
    # and back down
    back = short_target(f, target - 700)
    assert move_and_wait(f, harness, back) == back
    # the position stays put when idle
    time.sleep(0.2)
    assert f.Position == back


def test_is_moving_is_true_as_soon_as_move_returns(focuser_under_test) -> None:
    f, _, extra = focuser_under_test
    connect(f)
    target = short_target(f, f.Position + 1200)
    f.Move(target)
    assert f.IsMoving is True  # the very first read after Move returns
    assert wait_stopped(f, extra["harness"].move_timeout(1200)) == target


def test_move_below_zero_stops_at_zero(focuser_under_test) -> None:
    f, _, extra = focuser_under_test
    harness = extra["harness"]
    connect(f)
    up = short_target(f, 500)
    assert up > 0
    assert move_and_wait(f, harness, up) == up
    assert move_and_wait(f, harness, -50) == 0
    assert f.Position == 0


def test_move_beyond_max_step_stops_at_max_step(focuser_under_test) -> None:
    _, _, extra = focuser_under_test
    harness: Harness = extra["harness"]
    f = harness.client(harness.make_server({"max_step": 2000}))
    connect(f)
    max_step = f.MaxStep
    assert max_step == 2000
    assert move_and_wait(f, harness, max_step + 500) == max_step
    assert f.Position == max_step
    assert f.IsMoving is False


def test_halt_stops_mid_move_and_the_position_stays(focuser_under_test) -> None:
    f, _, extra = focuser_under_test
    harness = extra["harness"]
    connect(f)
    start = f.Position
    target = short_target(f, start + 3000)
    assert target - start >= 1000, "need room for a long move"
    f.Move(target)
    wait_until(lambda: f.Position > start + 50, timeout=harness.move_timeout(100))
    f.Halt()
    stopped = wait_stopped(f, timeout=5)
    assert start < stopped < target
    time.sleep(0.3)
    assert f.IsMoving is False
    assert f.Position == stopped


def test_max_increment_violation_is_invalid_value(focuser_under_test) -> None:
    _, _, extra = focuser_under_test
    harness: Harness = extra["harness"]
    f = harness.client(harness.make_server({"max_step": 5000, "max_increment": 1000}))
    connect(f)
    start, max_increment = f.Position, f.MaxIncrement
    assert max_increment == 1000
    with pytest.raises(InvalidValueException):
        f.Move(start + max_increment + 1)
    assert f.IsMoving is False
    assert f.Position == start
    # exactly MaxIncrement is allowed
    assert move_and_wait(f, harness, start + max_increment) == start + max_increment


def test_temp_comp_not_available_refuses_true(focuser_under_test) -> None:
    _, _, extra = focuser_under_test
    harness: Harness = extra["harness"]
    f = harness.client(harness.make_server({"temp_comp_available": False}))
    connect(f)
    assert f.TempCompAvailable is False
    with pytest.raises(NotImplementedException):
        f.TempComp = True
    assert f.TempComp is False


def test_temp_comp_available_accepts_it_and_moves_still_work(focuser_under_test) -> None:
    _, _, extra = focuser_under_test
    harness: Harness = extra["harness"]
    f = harness.client(harness.make_server({"temp_comp_available": True}))
    connect(f)
    assert f.TempCompAvailable is True
    assert f.TempComp is False
    f.TempComp = True
    assert f.TempComp is True
    # IFocuserV3 and later: Move is allowed while TempComp is true
    target = short_target(f, f.Position + 300)
    assert move_and_wait(f, harness, target) == target
    f.TempComp = False
    assert f.TempComp is False


def test_device_state_contents_and_types(focuser_under_test) -> None:
    f, _, extra = focuser_under_test
    harness = extra["harness"]
    connect(f)
    target = short_target(f, f.Position + 400)
    assert move_and_wait(f, harness, target) == target

    before = datetime.now(timezone.utc)
    state = f.DeviceState
    after = datetime.now(timezone.utc)
    values = {item["Name"]: item["Value"] for item in state}
    assert len(values) == len(state), "duplicate names in DeviceState"
    expected = {"IsMoving", "Position", "TimeStamp"} | ({"Temperature"} if extra["has_temperature"] else set())
    assert set(values) == expected
    assert values["IsMoving"] is False
    assert type(values["Position"]) is int and values["Position"] == target
    if extra["has_temperature"]:
        assert type(values["Temperature"]) is float
    stamp = values["TimeStamp"]
    assert isinstance(stamp, str) and stamp.endswith("Z")
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= parsed <= after + timedelta(seconds=1)

    # while moving
    f.Move(short_target(f, target + 800))
    moving = {item["Name"]: item["Value"] for item in f.DeviceState}
    assert moving["IsMoving"] is True
    wait_stopped(f, harness.move_timeout(800))


def test_disconnect_is_asynchronous_then_members_need_a_connection(focuser_under_test) -> None:
    f, _, _ = focuser_under_test
    connect(f)
    f.Disconnect()
    wait_until(lambda: not f.Connecting, timeout=20)
    assert f.Connected is False
    with pytest.raises(NotConnectedException):
        _ = f.Position
    with pytest.raises(NotConnectedException):
        f.Move(10)
    # still readable without a connection
    assert f.InterfaceVersion == 4
    # and it connects again
    connect(f)
    assert isinstance(f.Position, int)


def test_two_focusers_move_at_the_same_time(focuser_under_test) -> None:
    _, _, extra = focuser_under_test
    harness: Harness = extra["harness"]
    server = harness.make_server({}, {})
    a, b = harness.client(server, 0), harness.client(server, 1)
    assert a.Name != b.Name
    connect(a)
    connect(b)
    ta, tb = short_target(a, a.Position + 1500), short_target(b, b.Position + 900)
    a.Move(ta)
    b.Move(tb)
    assert a.IsMoving is True and b.IsMoving is True  # both in motion at once
    done: dict[str, int] = {}
    errors: list[BaseException] = []

    def watch(key: str, f: Focuser) -> None:
        try:
            # a fresh client per thread: requests.Session is not meant to be shared across threads
            done[key] = wait_stopped(f, harness.move_timeout(1500))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=watch, args=("a", harness.client(server, 0))),
               threading.Thread(target=watch, args=("b", harness.client(server, 1)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert done == {"a": ta, "b": tb}


def test_sync_position_action(focuser_under_test) -> None:
    f, _, extra = focuser_under_test
    connect(f)
    assert "SyncPosition" in f.SupportedActions
    here = f.Position
    new = here + 250 if here + 250 <= f.MaxStep else here - 250
    assert f.Action("SyncPosition", str(new)) == str(new)
    assert f.Position == new
    assert f.IsMoving is False  # declared, not moved
    with pytest.raises(InvalidValueException):
        f.Action("SyncPosition", str(f.MaxStep + 1))
    with pytest.raises(ActionNotImplementedException):
        f.Action("NoSuchAction", "")
    assert f.Position == new
    # moves count from the synced position
    target = short_target(f, new + 300)
    assert move_and_wait(f, extra["harness"], target) == target
