"""Backlash, reverse and settle through the HTTP API, on the simulator and on the Moonlite emulator.

On the emulator the firmware's command log shows what reached the wire (each SN is one leg); on the simulator the
server's own INFO log shows the legs. Timing is asserted only where the issue sets a bound (the settle time), and
then with a margin for a loaded machine.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, Callable

import pytest
from alpaca.exceptions import InvalidValueException

from focusing_rig import BACKENDS, Rig, make_rig, wait_for  # noqa: F401  (make_rig is a fixture)

MakeRig = Callable[..., Rig]


def move_watching(rig: Rig, target: int, timeout: float = 30.0) -> list[tuple[bool, int]]:
    """Move and poll (IsMoving, Position) until IsMoving is false; the observations, in order."""
    rig.http.put("move", Position=target)
    seen: list[tuple[bool, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = {e["Name"]: e["Value"] for e in rig.http.value("devicestate")}
        seen.append((state["IsMoving"], state["Position"]))
        if not state["IsMoving"]:
            return seen
        time.sleep(0.005)
    raise AssertionError(f"still moving after {timeout} s")


def legs_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "backlash" in r.getMessage()]


# --- backlash ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", BACKENDS)
def test_backlash_ends_exactly_on_target_with_the_overshoot_only_against_the_approach(
        make_rig: MakeRig, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rig = make_rig(kind, speed=2000, backlash_steps=200, backlash_direction="out")
    f = rig.alpyca()
    assert f.Position == 0
    connected = [r.getMessage() for r in caplog.records if " connected at position " in r.getMessage()]
    assert "backlash 200 steps, final approach out, reverse off, settle off" in connected[-1]  # nothing hidden

    mark = rig.wire_mark()
    f.Move(3000)  # outward: the approach direction, one leg
    assert f.IsMoving is True
    wait_for(lambda: not f.IsMoving)
    assert f.Position == 3000 == rig.motor_position()
    if rig.emu:
        assert rig.wire_targets(mark) == [3000]

    mark = rig.wire_mark()
    seen = move_watching(rig, 2000)  # inward: overshoot to 1800, then back out to 2000
    assert all(moving for moving, _ in seen[:-1]), "IsMoving must stay true through both legs"
    assert seen[-1] == (False, 2000)
    assert min(position for _, position in seen) < 2000, "the overshoot leg was not seen"
    assert rig.position() == 2000 == rig.motor_position()
    if rig.emu:
        assert rig.wire_targets(mark) == [1800, 2000]
    assert any("backlash 200 steps, final approach out: 1800 then 2000" in m for m in legs_logged(caplog))

    mark = rig.wire_mark()
    assert move_watching(rig, 2500)[-1] == (False, 2500)  # outward again: no overshoot
    if rig.emu:
        assert rig.wire_targets(mark) == [2500]


@pytest.mark.parametrize("kind", BACKENDS)
def test_backlash_direction_in_overshoots_outward_moves(make_rig: MakeRig, kind: str) -> None:
    rig = make_rig(kind, speed=4000, backlash_steps=150, backlash_direction="in", position=1000)
    mark = rig.wire_mark()
    assert move_watching(rig, 2000)[-1] == (False, 2000)
    assert move_watching(rig, 1500)[-1] == (False, 1500)
    if rig.emu:
        assert rig.wire_targets(mark) == [2150, 2000, 1500]


@pytest.mark.parametrize("kind", BACKENDS)
def test_backlash_overshoot_is_clamped_to_the_range(make_rig: MakeRig, kind: str) -> None:
    rig = make_rig(kind, speed=5000, max_step=3000, backlash_steps=300, backlash_direction="out", position=1000)
    mark = rig.wire_mark()
    assert move_watching(rig, 100)[-1] == (False, 100)  # overshoot would be -200: clamped to 0, short second leg
    assert move_watching(rig, 0)[-1] == (False, 0)  # on the limit: nothing to come back from
    if rig.emu:
        assert rig.wire_targets(mark) == [0, 100, 0]

    rig.device.apply_settings(replace(rig.device.cfg, backlash_direction="in"))
    assert move_watching(rig, 2900)[-1] == (False, 2900)  # outward against "in": overshoot clamped to 3000
    assert move_watching(rig, 5000)[-1] == (False, 3000)  # beyond MaxStep: clamped, on the limit, one leg
    if rig.emu:
        assert rig.wire_targets(mark) == [0, 100, 0, 3000, 2900, 3000]
    assert rig.motor_position() == 3000


@pytest.mark.parametrize("kind", BACKENDS)
def test_halt_in_each_backlash_leg_stops_at_once_and_cancels_the_rest(make_rig: MakeRig, kind: str) -> None:
    rig = make_rig(kind, speed=600, backlash_steps=1000, backlash_direction="out", position=3000)
    f = rig.alpyca()

    # Halt in the first (overshoot) leg: 3000 -> 500 planned, then 1500
    mark = rig.wire_mark()
    f.Move(1500)
    wait_for(lambda: f.Position < 2700, timeout=10)
    f.Halt()
    wait_for(lambda: not f.IsMoving, timeout=2)
    stopped = f.Position
    assert 500 < stopped < 2700
    time.sleep(0.5)
    assert f.IsMoving is False and f.Position == stopped == rig.motor_position()  # no second leg
    if rig.emu:
        assert rig.wire_targets(mark) == [500]
        assert rig.wire(mark)[-1] == "FQ"

    # Halt in the second leg: from `stopped`, 1200 is inward: overshoot to 200, then back out to 1200
    mark = rig.wire_mark()
    f.Move(1200)
    wait_for(lambda: f.Position <= 260, timeout=15)  # the overshoot leg is done or nearly
    wait_for(lambda: f.Position > 400, timeout=10)  # coming back out
    assert f.IsMoving is True
    f.Halt()
    wait_for(lambda: not f.IsMoving, timeout=2)
    stopped = f.Position
    assert 400 < stopped < 1200
    time.sleep(0.5)
    assert f.IsMoving is False and f.Position == stopped == rig.motor_position()
    if rig.emu:
        assert rig.wire_targets(mark) == [200, 1200]
        assert rig.wire(mark)[-1] == "FQ"


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_move_during_a_backlash_leg_retargets_with_its_own_backlash(make_rig: MakeRig, kind: str) -> None:
    rig = make_rig(kind, speed=1000, backlash_steps=500, backlash_direction="out", position=3000)
    f = rig.alpyca()

    mark = rig.wire_mark()
    f.Move(2000)  # planned: 1500, then 2000
    wait_for(lambda: f.Position < 2700, timeout=10)
    f.Move(2800)  # outward from where it is: one leg, no overshoot
    wait_for(lambda: not f.IsMoving, timeout=15)
    assert f.Position == 2800 == rig.motor_position()
    if rig.emu:
        assert rig.wire_targets(mark) == [1500, 2800]

    mark = rig.wire_mark()
    f.Move(2300)  # planned: 1800, then 2300
    wait_for(lambda: f.Position < 2600, timeout=10)
    here = f.Position
    f.Move(2100)  # inward from `here` (between 2600 and 1800): its own overshoot to 1600, then 2100
    wait_for(lambda: not f.IsMoving, timeout=15)
    assert f.Position == 2100 == rig.motor_position()
    if rig.emu:
        targets = rig.wire_targets(mark)
        if here > 2100:
            assert targets == [1800, 1600, 2100]
        else:  # a very slow machine: already below 2100, so the retarget is outward and direct
            assert targets == [1800, 2100]


# --- reverse -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", BACKENDS)
def test_reverse_maps_positions_clamping_backlash_and_sync_in_the_client_frame(make_rig: MakeRig,
                                                                               kind: str) -> None:
    rig = make_rig(kind, speed=8000, max_step=10000, max_increment=7000, reverse=True, backlash_steps=300,
                   backlash_direction="out", position=1000)
    f = rig.alpyca()
    assert f.Position == 9000  # motor 1000

    mark = rig.wire_mark()
    seen = move_watching(rig, 8000)  # client inward: overshoot to client 7700, back out to 8000
    assert seen[-1] == (False, 8000)
    assert rig.motor_position() == 2000
    assert min(p for _, p in seen) < 8000  # the overshoot is below the target in the client's frame
    if rig.emu:
        assert rig.wire_targets(mark) == [2300, 2000]  # motor frame on the wire

    mark = rig.wire_mark()
    assert move_watching(rig, 8500)[-1] == (False, 8500)  # client outward: the approach, one leg
    assert rig.motor_position() == 1500
    assert move_watching(rig, 12000)[-1] == (False, 10000)  # clamped at client MaxStep = motor 0
    assert rig.motor_position() == 0
    with pytest.raises(InvalidValueException):
        f.Move(2000)  # 8000 steps > MaxIncrement, measured in the client's frame
    assert move_watching(rig, 3000)[-1] == (False, 3000)
    assert move_watching(rig, -500)[-1] == (False, 0)  # clamped at client 0 = motor MaxStep
    assert rig.motor_position() == 10000
    if rig.emu:
        assert rig.wire_targets(mark) == [1500, 0, 7300, 7000, 10000]

    mark = rig.wire_mark()
    assert f.Action("SyncPosition", "3000") == "3000"
    assert f.Position == 3000
    assert rig.motor_position() == 7000
    if rig.emu:
        assert rig.wire(mark) == ["SP1B58"]


def test_reverse_change_between_runs_keeps_the_motor_position(make_rig: MakeRig) -> None:
    rig = make_rig("simulator", speed=8000, max_step=10000)
    assert move_watching(rig, 2500)[-1] == (False, 2500)
    rig.restart(reverse=True)  # the state file keeps the motor's frame
    rig.connect()
    assert rig.position() == 7500 and rig.motor_position() == 2500
    rig.restart(reverse=False, max_step=12000)
    rig.connect()
    assert rig.position() == 2500


# --- settle ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", BACKENDS)
def test_settle_keeps_is_moving_true_after_the_motor_stops_and_halt_ends_it(make_rig: MakeRig, kind: str) -> None:
    settle = 1.5
    rig = make_rig(kind, speed=5000, settle_ms=int(settle * 1000))

    rig.http.put("move", Position=1000)
    wait_for(lambda: not rig.motor_moving() and rig.motor_position() == 1000, timeout=10, interval=0.002)
    motor_stopped = time.monotonic()
    while rig.moving():
        time.sleep(0.005)
        assert time.monotonic() - motor_stopped < settle + 5, "IsMoving stuck"
    settled_after = time.monotonic() - motor_stopped
    print(f"\n{kind}: settle_ms {settle * 1000:.0f}: IsMoving went false {settled_after * 1000:.0f} ms after the "
          f"motor stopped (overshoot {(settled_after - settle) * 1000:+.0f} ms)")
    assert settled_after >= settle - 0.1  # minus how late this thread may have seen the motor stop
    assert settled_after <= settle + 0.6, "IsMoving stayed true much longer than settle_ms"
    assert rig.position() == 1000

    rig.http.put("move", Position=2000)
    wait_for(lambda: not rig.motor_moving() and rig.motor_position() == 2000, timeout=10, interval=0.002)
    time.sleep(0.2)
    assert rig.moving() is True  # settling
    rig.http.put("halt")
    halted = time.monotonic()
    wait_for(lambda: not rig.moving(), timeout=1.0, interval=0.002)
    print(f"{kind}: IsMoving false {(time.monotonic() - halted) * 1000:.0f} ms after the Halt reply")
    assert rig.position() == 2000


def test_settle_comes_after_the_last_backlash_leg_only(make_rig: MakeRig) -> None:
    rig = make_rig("simulator", speed=2000, settle_ms=800, backlash_steps=400, position=3000)
    seen = move_watching(rig, 2000)
    assert seen[-1] == (False, 2000)
    assert all(m for m, _ in seen[:-1])
    at_target = [i for i, (_, p) in enumerate(seen) if p == 2000]
    assert min(p for _, p in seen) <= 1650  # the overshoot to 1600 happened
    assert len(seen) - at_target[0] > 20  # IsMoving stayed true a while at the target: the settle


def test_relative_focuser_gets_backlash_and_reverse_on_its_step_counter(make_rig: MakeRig) -> None:
    rig = make_rig("simulator", speed=4000, absolute=False, max_increment=5000, reverse=True, backlash_steps=100,
                   backlash_direction="out", position=100000)
    f = rig.alpyca()
    assert f.Absolute is False
    f.Move(1000)  # out for the client, the approach direction: one leg, the motor counts down
    wait_for(lambda: not f.IsMoving)
    assert rig.motor_position() == 99000
    f.Move(-500)  # in for the client: overshoot 100 further in (motor up to 99600), then back out
    highest = rig.motor_position()
    while f.IsMoving:
        highest = max(highest, rig.motor_position())
    assert rig.motor_position() == 99500
    assert 99500 < highest <= 99600
