"""Shared by the focusing tests: one focuser on the simulator or on the Moonlite emulator, reached over HTTP.

A ``Rig`` is a real server (waitress on 127.0.0.1) with one focuser, an ``AlpacaHttp`` client for fast polling, an
alpyca ``Focuser`` for the main paths, and what the test needs to script the world: the temperature (the
simulator's through its Action, the emulator's firmware under ``emu.lock``) and, on the emulator, the commands that
reached the wire. Import the ``make_rig`` fixture into a test module to use it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from alpaca.focuser import Focuser

from alpaca_focuser.app import FocuserServer
from alpaca_focuser.emulator.pty_link import MoonliteEmulator
from alpaca_focuser.focuser.device import FocuserDevice
from alpaca_focuser.state import StateStore
from alpaca_http import AlpacaHttp
from conftest import wait_until

BACKENDS = ("simulator", "moonlite")
MOTION_COMMANDS = ("SN", "SP", "FQ")


@dataclass
class Rig:
    kind: str
    table: dict[str, Any]
    server: FocuserServer
    emu: MoonliteEmulator | None
    start_server: Callable[..., FocuserServer]
    http: AlpacaHttp = field(init=False)

    def __post_init__(self) -> None:
        self.http = AlpacaHttp("127.0.0.1", self.server.port)

    # --- the server --------------------------------------------------------------------------------------------
    @property
    def device(self) -> FocuserDevice:
        return self.server.devices[0]

    def alpyca(self) -> Focuser:
        return Focuser(f"127.0.0.1:{self.server.port}", 0)

    def connect(self) -> None:
        self.http.put("connected", Connected="true")

    def restart(self, **changes: Any) -> None:
        """Stop the server and start another with the same state directory (and emulator), the table changed."""
        self.http.close()
        self.server.stop()
        self.table = {**self.table, **changes}
        self.server = self.start_server(self.table)
        self.http = AlpacaHttp("127.0.0.1", self.server.port)

    # --- reading it ------------------------------------------------------------------------------------------
    def position(self) -> int:
        return int(self.http.value("position"))

    def moving(self) -> bool:
        return bool(self.http.value("ismoving"))

    def wait_stopped(self, timeout: float = 20.0) -> int:
        wait_until(lambda: not self.moving(), timeout=timeout)
        return self.position()

    def action(self, name: str, parameters: str = "") -> Any:
        return self.http.put("action", Action=name, Parameters=parameters)

    def motor_position(self) -> int:
        """Where the motor really is: the emulator's firmware, or the simulator driver's own model."""
        if self.emu is not None:
            return self.emu.firmware.position
        return self.device.driver.status().position

    def motor_moving(self) -> bool:
        if self.emu is not None:
            return self.emu.firmware.moving
        return self.device.driver.status().moving

    # --- scripting the world -------------------------------------------------------------------------------------
    def set_temperature(self, celsius: float) -> None:
        if self.emu is None:
            self.action("SimulatorSetTemperature", str(celsius))
        else:
            with self.emu.lock:
                self.emu.firmware.temperature_drift = False
                self.emu.firmware.base_temperature = celsius

    def set_speed(self, steps_per_second: float) -> None:
        """Only the emulator's speed can change on a running test."""
        assert self.emu is not None
        with self.emu.lock:
            self.emu.firmware.steps_per_second = steps_per_second

    def wire_mark(self) -> int:
        return len(self.emu.firmware.commands) if self.emu is not None else 0

    def wire(self, since: int = 0) -> list[str]:
        """Motion commands (SN, SP, FQ) the emulator received since ``wire_mark()``, e.g. ``["SN07D0", "FQ"]``."""
        assert self.emu is not None
        with self.emu.lock:
            commands = list(self.emu.firmware.commands[since:])
        return [c for c in commands if c.startswith(MOTION_COMMANDS)]

    def wire_targets(self, since: int = 0) -> list[int]:
        """The SN targets (motor frame) sent since ``since``, collapsing repeats (a driver may resend one)."""
        targets: list[int] = []
        for command in self.wire(since):
            if command.startswith("SN"):
                value = int(command[2:], 16)
                if not targets or targets[-1] != value:
                    targets.append(value)
        return targets

    def averaged(self) -> float | None:
        return self.device.averaged_temperature()

    def averaged_is(self, celsius: float) -> bool:
        """Whether the whole averaging window holds ``celsius``."""
        average = self.averaged()
        return average is not None and abs(average - celsius) < 1e-9


@pytest.fixture
def make_rig(make_emu: Any, server_factory: Any, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """``make_rig(kind, speed=..., temperature=10.0, position=0, **table)``: a Rig on the simulator or the
    emulator, the temperature fixed (no drift, no noise), the motor at ``position`` (motor frame), connected
    unless ``connect=False``."""
    rigs: list[Rig] = []

    def make(kind: str, *, speed: float = 5000.0, temperature: float = 10.0, position: int = 0,
             connect: bool = True, **settings: Any) -> Rig:
        base: dict[str, Any] = {"name": "Focusing test", "max_step": 20000, **settings}
        emu = None
        if kind == "simulator":
            table = {**base, "driver": "simulator", "speed": int(speed), "temperature": temperature}
            StateStore(tmp_path / "state").save_position(0, position)  # the simulator starts where it was saved
        else:
            emu = make_emu(steps_per_second=speed, temperature=temperature, position=position)
            with emu.lock:
                emu.firmware.temperature_drift = False
            table = {**base, "driver": "moonlite", "port": str(emu.link_path)}
        rig = Rig(kind, table, server_factory(table), emu, server_factory)
        rigs.append(rig)
        if kind == "simulator":
            rig.set_temperature(temperature)
        if connect:
            rig.connect()
        return rig

    yield make
    for rig in rigs:
        rig.http.close()
        rig.server.stop()  # before the emulator goes, so no driver sees its port vanish


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    return wait_until(predicate, timeout=timeout, interval=interval)


def sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))


def state_file(rig: Rig) -> Path:
    return rig.server.store.path
