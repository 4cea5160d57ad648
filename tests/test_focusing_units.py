"""The pure parts of the focusing features, on exact inputs: backlash legs, the frame mapping, the averaging window,
the compensation rule over many corrections, and the Theil-Sen fit. The behaviour through the server is in
test_backlash.py, test_tempcomp.py and test_learning.py."""

from __future__ import annotations

import random

import pytest

from alpaca_focuser.focuser.learning import MIN_SPAN_C, Learner, r_squared, theil_sen
from alpaca_focuser.focuser.moves import Frame, plan_legs
from alpaca_focuser.focuser.tempcomp import TempCompensation, TemperatureWindow, round_half_away


@pytest.mark.parametrize("current,target,steps,approach,legs", [
    (1000, 2000, 100, "out", [2000]),  # with the approach: direct
    (2000, 1000, 100, "out", [900, 1000]),  # against it: overshoot and come back
    (1000, 2000, 100, "in", [2100, 2000]),
    (2000, 1000, 100, "in", [1000]),
    (2000, 50, 100, "out", [0, 50]),  # clamped overshoot: a shorter second leg
    (2000, 0, 100, "out", [0]),  # on the limit: nothing to come back from
    (100, 4950, 100, "in", [5000, 4950]),
    (100, 5000, 100, "in", [5000]),
    (1000, 1000, 100, "out", [1000]),  # no travel, no legs
    (2000, 1000, 0, "out", [1000]),  # off
])
def test_backlash_legs(current: int, target: int, steps: int, approach: str, legs: list[int]) -> None:
    assert plan_legs(current, target, steps, approach, 0, 5000) == legs


def test_frame_is_a_mirror_and_its_own_inverse() -> None:
    frame = Frame(10000, reverse=True)
    assert frame.to_motor(0) == 10000 and frame.to_motor(10000) == 0 and frame.to_motor(2500) == 7500
    assert all(frame.to_client(frame.to_motor(p)) == p for p in range(0, 10001, 500))
    assert Frame(10000, reverse=False).to_motor(2500) == 2500


def test_round_half_away_from_zero() -> None:
    assert [round_half_away(x) for x in (0.5, 1.5, 2.5, -0.5, -2.5, 2.49, -2.51)] == [1, 2, 3, -1, -3, 2, -3]


def test_window_averages_over_time_and_forgets_old_samples() -> None:
    window = TemperatureWindow()
    assert TemperatureWindow.sample_period(120) == 1.0 and TemperatureWindow.sample_period(1) == 0.1
    assert window.average(0.0, 10) is None
    for i in range(100):  # 10 s of 10.0 at 0.1 s, one 11.0 reading offered 0.05 s after a sample is not kept
        window.offer(i * 0.5, 10.0, 10.0)
        window.offer(i * 0.5 + 0.05, 99.0, 10.0)
    assert window.average(49.5, 10.0) == 10.0
    window.offer(50.0, 12.0, 10.0)
    assert window.average(50.0, 10.0) == pytest.approx((19 * 10.0 + 12.0) / 20)
    assert window.average(70.0, 10.0) is None  # everything is older than the window


def test_compensation_never_accumulates_rounding_over_many_corrections() -> None:
    comp = TempCompensation("test", enabled=True)
    frame = Frame(100000, reverse=False)
    rng = random.Random(7)
    coefficient, threshold = -7.3, 0.05
    position, temperature = 50000, 10.0
    assert comp.evaluate(temperature, position, frame, coefficient, threshold) is None  # takes the reference
    corrections = 0
    for _ in range(2000):  # a random walk of small changes, mostly cooling
        temperature += rng.uniform(-0.03, 0.02)
        correction = comp.evaluate(temperature, position, frame, coefficient, threshold)
        if correction is not None:
            position = correction.target
            corrections += 1
            assert abs(position - (50000 + coefficient * (temperature - 10.0))) <= 0.5 + 1e-9
    assert corrections > 50
    # and within |coefficient| x threshold (+ rounding) of the formula at the final temperature
    assert abs(position - (50000 + coefficient * (temperature - 10.0))) <= abs(coefficient) * threshold + 0.5


def test_compensation_is_clamped_and_follows_reverse() -> None:
    comp = TempCompensation("test", enabled=True)
    frame = Frame(1000, reverse=True)
    comp.evaluate(10.0, 990, frame, -100, 0.5)
    correction = comp.evaluate(5.0, 990, frame, -100, 0.5)  # +500 steps, clamped to MaxStep
    assert correction is not None and correction.target == 1000 and correction.steps == 10


def test_theil_sen_ignores_an_outlier_where_least_squares_would_not() -> None:
    xs = [10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0]
    ys = [5000 - 12 * (x - 10) for x in xs]
    ys[3] += 400  # one autofocus run gone wrong
    slope, intercept = theil_sen(xs, ys) or (0.0, 0.0)
    assert slope == pytest.approx(-12.0)
    assert intercept == pytest.approx(5120.0)
    assert r_squared(xs, ys, slope, intercept) < 0.9  # the outlier shows in r²
    assert theil_sen([5.0, 5.0], [1.0, 2.0]) is None
    assert r_squared([1.0, 2.0], [3.0, 3.0], 0.0, 3.0) == 1.0


def test_learner_needs_three_points_over_the_span(caplog: pytest.LogCaptureFixture) -> None:
    frame = Frame(20000, reverse=False)
    learner = Learner("test", [{"temperature": 10.0, "position": 5000}, {"bad": 1}, "junk",
                               {"temperature": 9.0, "position": 5012, "time": 0}])
    assert "ignored 2 malformed" in caplog.text
    assert learner.report(frame) == {"coefficient": None, "points": 2, "span_c": 1.0, "r2": None}
    learner.client_move_ended(100.0, 10.0 - MIN_SPAN_C, 5018)
    assert not learner.due(100.5, 1.0, frame)  # not idle long enough
    learner.client_move_ended(101.0, 10.0 - MIN_SPAN_C, 5018)  # another client move: the clock restarts
    assert not learner.due(101.5, 1.0, frame)
    assert learner.due(102.0, 1.0, frame)
    assert not learner.due(103.0, 1.0, frame)  # recorded once
    report = learner.report(frame)
    assert report["points"] == 3 and report["span_c"] == 1.5 and report["coefficient"] == -12.0
    learner.client_move_ended(200.0, 5.0, 9000)
    learner.cancel()
    assert not learner.due(300.0, 1.0, frame)
    assert learner.clear() == 3 and learner.pairs() == []
