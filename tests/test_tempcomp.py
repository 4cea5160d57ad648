"""Temperature compensation through the HTTP API, with the temperature scripted by the test: the simulator's
through its SimulatorSetTemperature action, the Moonlite emulator's firmware under ``emu.lock`` (its probe reads in
0.5 deg C steps, and the driver reads it about once a second, only while idle).

The formula: target = P_ref + round(coefficient * (T_avg - T_ref)), taken from the reference, so rounding never
accumulates. Waits are for conditions, with generous time-outs; nothing asserts on speed.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any, Callable

import pytest

from alpaca_focuser.config import FocuserConfig
from alpaca_focuser.drivers.simulator import SimulatorDriver
from alpaca_focuser.errors import NotImplementedAscomError
from alpaca_focuser.focuser.device import FocuserDevice
from alpaca_focuser.focuser.tempcomp import round_half_away
from alpaca_focuser.state import StateStore
from focusing_rig import BACKENDS, Rig, make_rig, wait_for  # noqa: F401  (make_rig is a fixture)

MakeRig = Callable[..., Rig]
P0 = 5000


def poll_delay(rig: Rig) -> float:
    """How long a new temperature takes to reach the driver's snapshot (the Moonlite driver polls ~1/s)."""
    return 1.5 if rig.emu else 0.0


def settle_average(rig: Rig, celsius: float, timeout: float = 20.0) -> None:
    """Wait until the averaged temperature is exactly ``celsius`` (the whole window holds it)."""
    wait_for(lambda: rig.averaged_is(celsius), timeout=timeout)


def start_compensating(rig: Rig, position: int = P0, celsius: float = 10.0) -> None:
    """Move to ``position`` at ``celsius``, let the average settle there, switch TempComp on and wait until the
    reference is taken (the next idle tick)."""
    assert rig.http.put("move", Position=position) is None
    assert rig.wait_stopped() == position
    settle_average(rig, celsius)
    rig.http.put("tempcomp", TempComp="true")  # takes the reference at once


def wait_quiet(rig: Rig, quiet_for: float, timeout: float = 60.0) -> None:
    """Wait until no correction has been made and nothing has moved for ``quiet_for`` seconds."""
    deadline = time.monotonic() + timeout
    last = (rig.device.temp_comp_corrections, rig.position(), rig.moving())
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = (rig.device.temp_comp_corrections, rig.position(), rig.moving())
        if now != last or now[2]:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_for:
            return
    raise AssertionError("compensation never came to rest")


def formula(reference: int, coefficient: float, delta: float) -> float:
    return reference + coefficient * delta


# --- following a ramp ----------------------------------------------------------------------------------------------

RAMPS: dict[str, dict[str, Any]] = {
    # many small changes; a coefficient that is not a whole number so most corrections round
    "simulator": {"coefficient": -7.3, "threshold": 0.1, "window": 1.0, "step": 0.05, "interval": 0.1,
                  "backlash": 0},
    # the emulator's probe reads 0.5 deg C steps; corrections go out, against a final approach "in": two legs each
    "moonlite": {"coefficient": -12.0, "threshold": 0.25, "window": 2.0, "step": 0.1, "interval": 0.3,
                 "backlash": 40},
}


@pytest.mark.parametrize("kind", BACKENDS)
def test_compensation_follows_a_temperature_ramp_within_one_step(make_rig: MakeRig, kind: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ramp = RAMPS[kind]
    coefficient, threshold = ramp["coefficient"], ramp["threshold"]
    rig = make_rig(kind, speed=5000, temp_comp_coefficient=coefficient, temp_comp_threshold=threshold,
                   temp_comp_window_s=ramp["window"], backlash_steps=ramp["backlash"], backlash_direction="in")
    f = rig.alpyca()
    assert f.TempCompAvailable is True
    f.Move(P0)
    wait_for(lambda: not f.IsMoving)
    settle_average(rig, 10.0)
    mark = rig.wire_mark()
    f.TempComp = True
    assert f.TempComp is True

    changes = 0
    temperature = 10.0
    while temperature > 7.0 + 1e-9:
        temperature = round(temperature - ramp["step"], 3)
        rig.set_temperature(temperature)
        changes += 1
        time.sleep(ramp["interval"])
    settle_average(rig, 7.0)
    wait_quiet(rig, quiet_for=ramp["window"] + 1.5)

    events = rig.device.temp_comp_events()
    corrections = rig.device.temp_comp_corrections
    final = f.Position
    assert corrections == len(events) >= 5
    for event in events:
        assert set(event) == {"time", "temperature", "delta_c", "steps", "target"}
        assert event["delta_c"] == pytest.approx(event["temperature"] - 10.0)
        # every correction is computed from the reference: within half a step of the formula, however many
        assert abs(event["target"] - formula(P0, coefficient, event["delta_c"])) <= 0.5 + 1e-9, event
    assert final == events[-1]["target"] == rig.motor_position()
    assert sum(e["steps"] for e in events) == final - P0
    ideal = formula(P0, coefficient, 7.0 - 10.0)
    error = final - ideal
    print(f"\n{kind}: ramp 10.0 -> 7.0 °C in {changes} changes of {ramp['step']} °C every {ramp['interval']} s, "
          f"coefficient {coefficient}, threshold {threshold} °C, window {ramp['window']} s: {corrections} "
          f"corrections, final position {final}, formula at 7.0 °C {ideal:.1f} (error {error:+.1f} steps), "
          f"formula at the last correction's {events[-1]['temperature']:.3f} °C: "
          f"{formula(P0, coefficient, events[-1]['delta_c']):.1f}")
    # the last correction was made within the threshold of 7.0, so the position is within |c| * threshold (+ the
    # rounding) of the formula at the final temperature
    assert abs(error) <= abs(coefficient) * threshold + 0.5 + 1e-9
    logged = [r.getMessage() for r in caplog.records if "temperature compensation: averaged" in r.getMessage()]
    assert len(logged) == corrections
    if rig.emu:
        targets = rig.wire_targets(mark)
        assert len(targets) == 2 * corrections  # each outward correction: overshoot, then back in
        for (overshoot, target), event in zip(zip(targets[::2], targets[1::2]), events):
            assert (overshoot, target) == (event["target"] + 40, event["target"])


# --- the threshold and the averaging ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", BACKENDS)
def test_nothing_moves_below_the_threshold(make_rig: MakeRig, kind: str) -> None:
    # the emulator reads 0.5 deg C steps, so its threshold sits between one step and two
    small, large, threshold = (10.4, 10.6, 0.5) if kind == "simulator" else (10.5, 11.0, 0.75)
    window = 1.0 if kind == "simulator" else 2.0
    rig = make_rig(kind, temp_comp_coefficient=-12, temp_comp_threshold=threshold, temp_comp_window_s=window)
    start_compensating(rig)
    mark = rig.wire_mark()

    rig.set_temperature(small)
    time.sleep(poll_delay(rig))
    settle_average(rig, small)
    time.sleep(1.0)
    assert rig.device.temp_comp_corrections == 0
    assert rig.position() == P0 and not rig.moving()
    if rig.emu:
        assert rig.wire(mark) == []

    rig.set_temperature(large)  # over the threshold: one correction, as the average crosses it
    wait_for(lambda: rig.device.temp_comp_corrections == 1, timeout=15)
    wait_quiet(rig, quiet_for=window + 1.5)
    (event,) = rig.device.temp_comp_events()
    assert threshold - 1e-6 <= event["delta_c"] <= large - 10.0 + 1e-9
    expected = P0 + math.floor(-12 * event["delta_c"] + 0.5)
    assert rig.position() == event["target"] == expected
    if rig.emu:
        assert rig.wire_targets(mark) == [expected]


@pytest.mark.parametrize("kind", BACKENDS)
def test_averaging_smooths_a_one_sample_spike(make_rig: MakeRig, kind: str) -> None:
    # The Moonlite driver reads the probe about once a second and a reading latched by C shows in the next GT, so
    # even the shortest spike there lasts ~2 s; its window is longer for the same margin.
    window, threshold = (3.0, 0.5) if kind == "simulator" else (8.0, 0.75)
    rig = make_rig(kind, temp_comp_coefficient=-12, temp_comp_threshold=threshold, temp_comp_window_s=window)
    start_compensating(rig)
    time.sleep(window + 0.5)  # a full window of 10.0 °C samples

    rig.set_temperature(11.0)  # +1 deg C, for as short a time as the sampling allows
    wait_for(lambda: (rig.averaged() or 10.0) > 10.0 + 1e-9, timeout=10, interval=0.005)
    rig.set_temperature(10.0)
    highest = 10.0
    deadline = time.monotonic() + window + 2 + poll_delay(rig)
    while time.monotonic() < deadline:
        highest = max(highest, rig.averaged() or 10.0)
        time.sleep(0.05)
    print(f"\n{kind}: a +1 °C spike moved the {window:g} s average by at most {highest - 10.0:.3f} °C "
          f"(threshold {threshold:g})")
    assert 10.0 < highest < 10.0 + threshold
    assert rig.device.temp_comp_corrections == 0
    assert rig.position() == P0


# --- client moves ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", BACKENDS)
def test_no_correction_during_a_client_move_and_the_move_takes_a_new_reference(make_rig: MakeRig,
                                                                               kind: str) -> None:
    window = 1.0 if kind == "simulator" else 2.0
    rig = make_rig(kind, speed=1000, temp_comp_coefficient=-12, temp_comp_threshold=0.5, temp_comp_window_s=window)
    start_compensating(rig, position=2000)
    mark = rig.wire_mark()

    rig.http.put("move", Position=5000)  # 3 s
    time.sleep(0.3)
    rig.set_temperature(8.0)  # -2 deg C: 24 steps from the old reference, while the client moves
    while rig.moving():
        assert rig.device.temp_comp_corrections == 0
        time.sleep(0.02)
    assert rig.position() == 5000
    if rig.emu:
        assert rig.wire_targets(mark) == [5000]  # the client's move only

    settle_average(rig, 8.0)
    wait_quiet(rig, quiet_for=window + 1.5)
    # The reference is the client's 5000, not 2000 (which would put the focuser back near 2024). The simulator
    # reads the temperature during the move, so its reference is already 8.0 deg C and nothing moves; the Moonlite
    # driver reads the probe only while idle, so its reference is the 10.0 of before the move and one correction
    # follows right after it.
    for event in rig.device.temp_comp_events():
        assert event["target"] == 5000 + math.floor(-12 * event["delta_c"] + 0.5)
    if kind == "simulator":
        assert rig.device.temp_comp_corrections == 0 and rig.position() == 5000
    else:
        assert rig.position() in (5000, 5024)

    rig.set_temperature(7.0)
    before = rig.device.temp_comp_corrections
    wait_for(lambda: rig.device.temp_comp_corrections > before, timeout=15)
    wait_quiet(rig, quiet_for=window + 1.5)
    last = rig.device.temp_comp_events()[-1]
    reference_temperature = last["temperature"] - last["delta_c"]
    assert rig.position() == last["target"] == 5000 + math.floor(-12 * last["delta_c"] + 0.5)
    if kind == "simulator":
        assert reference_temperature == pytest.approx(8.0) and rig.position() == 5012
    else:
        assert reference_temperature == pytest.approx(8.0) or reference_temperature == pytest.approx(10.0)


def test_halt_pauses_compensation_until_tempcomp_is_set_again(make_rig: MakeRig) -> None:
    rig = make_rig("simulator", temp_comp_coefficient=-10, temp_comp_threshold=0.5, temp_comp_window_s=1.0)
    start_compensating(rig)
    rig.http.put("halt")
    rig.set_temperature(9.0)
    settle_average(rig, 9.0)
    time.sleep(1.0)
    assert rig.device.temp_comp_corrections == 0 and rig.position() == P0
    assert rig.http.value("tempcomp") is True  # still on, only paused

    rig.http.put("tempcomp", TempComp="true")  # resumes, from a new reference: here, at 9.0
    rig.set_temperature(8.0)
    wait_for(lambda: rig.device.temp_comp_corrections >= 1, timeout=10)
    wait_quiet(rig, quiet_for=2.5)
    first = rig.device.temp_comp_events()[0]
    assert first["temperature"] - first["delta_c"] == pytest.approx(9.0)  # the reference taken at 9.0
    assert_within_threshold_of_formula(rig, reference=P0, celsius=9.0, coefficient=-10, threshold=0.5)


def assert_within_threshold_of_formula(rig: Rig, *, reference: int, celsius: float, coefficient: float,
                                       threshold: float) -> None:
    """Quiet after a step from ``celsius`` to the average now: the focuser stands where the formula put it at
    the last correction, and the average has moved less than the threshold since (the window's average passes
    through the values between, so the last correction may fire anywhere within the threshold of the end)."""
    last = rig.device.temp_comp_events()[-1]
    assert rig.position() == reference + round_half_away(coefficient * (last["temperature"] - celsius))
    average = rig.averaged()
    assert average is not None and abs(average - last["temperature"]) < threshold


@pytest.mark.parametrize("kind", BACKENDS)
def test_tempcomp_survives_a_restart_and_keeps_compensating(make_rig: MakeRig, kind: str) -> None:
    window = 1.0 if kind == "simulator" else 2.0
    rig = make_rig(kind, temp_comp_coefficient=-12, temp_comp_threshold=0.5, temp_comp_window_s=window)
    f = rig.alpyca()
    f.Move(P0)
    wait_for(lambda: not f.IsMoving)
    f.TempComp = True
    assert json.loads(rig.server.store.path.read_text())["focusers"]["0"]["temp_comp"] is True

    rig.restart()
    if kind == "simulator":
        rig.set_temperature(10.0)
    rig.connect()
    f = rig.alpyca()
    assert f.TempComp is True
    assert f.Position == P0
    settle_average(rig, 10.0)  # the reference is taken at connect, once there is an average
    rig.set_temperature(9.0)
    wait_for(lambda: rig.device.temp_comp_corrections >= 1, timeout=15)
    settle_average(rig, 9.0)
    wait_quiet(rig, quiet_for=window + 1.5)
    # from the reference taken at connect (P0 at 10.0 °C); the last correction fired where the average crossed a
    # threshold, so it is within 12 * 0.5 steps of the full 12
    last = rig.device.temp_comp_events()[-1]
    assert last["temperature"] - last["delta_c"] == pytest.approx(10.0)
    assert rig.position() == last["target"] == P0 + math.floor(-12 * last["delta_c"] + 0.5)
    assert P0 + 6 <= rig.position() <= P0 + 12

    f.TempComp = False
    rig.restart()
    rig.connect()
    assert rig.alpyca().TempComp is False


def test_tempcomp_without_a_sensor_answers_as_before(tmp_path: Any) -> None:
    store = StateStore(tmp_path)
    auto = FocuserDevice(0, FocuserConfig(), SimulatorDriver(has_temperature=False, connect_delay=0), store)
    forced = FocuserDevice(1, FocuserConfig(temp_comp_available=True),
                           SimulatorDriver(has_temperature=False, connect_delay=0), store)
    try:
        for device in (auto, forced):
            device.set_connected(True)
        assert auto.temp_comp_available() is False
        with pytest.raises(NotImplementedAscomError):
            auto.set_temp_comp(True)
        auto.set_temp_comp(False)
        assert auto.temp_comp() is False
        assert forced.temp_comp_available() is True  # the config says so: the flag is kept, nothing can move
        forced.set_temp_comp(True)
        assert forced.temp_comp() is True
        time.sleep(0.3)
        assert forced.temp_comp_corrections == 0 and forced.averaged_temperature() is None
    finally:
        auto.shutdown()
        forced.shutdown()
