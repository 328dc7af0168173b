"""Unit tests of the shared trajectory executor (hardware/executor.py), one rule at a time.

Every test drives the executor with a simulated 100 Hz clock (tick k is at k / RATE seconds, no sleeping)
and checks setpoints against an independent oracle (np.interp per joint), or against a reference executor
that was driven identically except for the thing under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from twinloop.hardware.executor import JointLimits, TrajectoryChunk, TrajectoryExecutor

RATE = 100  # Hz
DT = 1.0 / RATE
EPS = 1e-9
NAMES = ("shoulder", "elbow", "wrist")
J = len(NAMES)
INF3 = np.full(J, np.inf)


def t_(k: int) -> float:
    return k / RATE


def make(
    velocity=INF3,
    lower=(-2.0, -2.0, -2.0),
    upper=(2.0, 2.0, 2.0),
    command_timeout: float = 0.5,
    crossfade_s: float = 0.1,
    start=(0.0, 0.0, 0.0),
) -> TrajectoryExecutor:
    limits = JointLimits(np.array(lower, float), np.array(upper, float), np.array(velocity, float))
    ex = TrajectoryExecutor(list(NAMES), limits, command_timeout=command_timeout, crossfade_s=crossfade_s)
    ex.reset(np.array(start, float))
    return ex


def chunk(stamp: float, tfs, positions, names=NAMES) -> TrajectoryChunk:
    return TrajectoryChunk(tuple(names), float(stamp), np.asarray(tfs, float), np.asarray(positions, float))


def oracle(c: TrajectoryChunk, now: float) -> np.ndarray:
    """Independent piecewise-linear reference (holds the end points outside the chunk)."""
    times = c.stamp + np.asarray(c.time_from_start, float)
    pos = np.asarray(c.positions, float)
    return np.array([np.interp(now, times, pos[:, j]) for j in range(pos.shape[1])])


def ramp(stamp: float, duration: float, start, end, n: int = 2) -> TrajectoryChunk:
    """A straight line from `start` to `end` over `duration`, sampled at n points."""
    s = np.linspace(0.0, 1.0, n)
    return chunk(stamp, s * duration, np.outer(1 - s, start) + np.outer(s, end))


def run(ex: TrajectoryExecutor, k0: int, k1: int, submits=None, results=None) -> dict[int, np.ndarray]:
    """Tick from k0 to k1 (exclusive); `submits[k]` (a chunk or a list) is submitted at tick k before step."""
    submits = submits or {}
    out = {}
    for k in range(k0, k1):
        todo = submits.get(k, [])
        for c in todo if isinstance(todo, list) else [todo]:
            r = ex.submit(c, t_(k))
            if results is not None:
                results.append((k, r))
        out[k] = ex.step(t_(k))
    return out


def max_jump(path: dict[int, np.ndarray]) -> np.ndarray:
    ks = sorted(path)
    return np.max(np.abs(np.diff(np.array([path[k] for k in ks]), axis=0)), axis=0)


# -- construction, reset -------------------------------------------------------------------------------
def test_limits_and_constructor_validate():
    with pytest.raises(ValueError):
        JointLimits(np.zeros(2), np.ones(3), np.ones(3))
    with pytest.raises(ValueError):
        JointLimits(np.array([1.0]), np.array([0.0]), np.array([1.0]))
    with pytest.raises(ValueError):
        TrajectoryExecutor(["a", "b"], JointLimits(np.zeros(3), np.ones(3), np.ones(3)))


def test_step_before_reset_raises():
    limits = JointLimits(-np.ones(J), np.ones(J), INF3)
    ex = TrajectoryExecutor(NAMES, limits)
    assert ex.setpoint is None and ex.holding
    with pytest.raises(RuntimeError, match="reset"):
        ex.step(0.0)
    # a chunk submitted before reset is forgotten by reset; step then works and holds the reset position
    ex.submit(chunk(0.0, [0.0, 1.0], [[0.5] * J] * 2), 0.0)
    with pytest.raises(RuntimeError):
        ex.step(0.0)
    ex.reset(np.full(J, 0.25))
    np.testing.assert_array_equal(ex.step(0.0), [0.25] * J)
    assert ex.holding


def test_reset_clamps_to_position_limits_and_holds():
    ex = make(start=(5.0, -5.0, 0.3))
    np.testing.assert_array_equal(ex.setpoint, [2.0, -2.0, 0.3])
    path = run(ex, 0, 100)
    for sp in path.values():
        np.testing.assert_array_equal(sp, [2.0, -2.0, 0.3])
    assert ex.holding and ex.stats.holds == 0


def test_setpoint_and_step_return_copies():
    ex = make()
    sp = ex.step(0.0)
    sp[:] = 9.0
    ex.setpoint[:] = 9.0
    np.testing.assert_array_equal(ex.setpoint, np.zeros(J))
    np.testing.assert_array_equal(ex.step(0.01), np.zeros(J))


def test_reset_forgets_commands_and_the_last_tick():
    ex = make(velocity=(1.0, 1.0, 1.0), crossfade_s=0.0)
    run(ex, 0, 20, {0: ramp(0.0, 1.0, [0.0] * J, [1.0] * J)})
    assert not ex.holding
    ex.reset(np.full(J, -0.5))
    assert ex.holding
    # the first tick after reset (1 s after the last one) has dt = 0: a chunk accepted there moves nothing
    assert ex.submit(chunk(t_(120), [0.0, 1.0], [[1.5] * J] * 2), t_(120))[0]
    np.testing.assert_array_equal(ex.step(t_(120)), [-0.5] * J)
    np.testing.assert_allclose(ex.step(t_(121)), [-0.5 + DT] * J, atol=EPS)
    assert ex.stats.holds == 0  # reset is not a timeout hold


# -- interpolation ------------------------------------------------------------------------------------
def test_linear_interpolation_between_points_at_the_right_times():
    ex = make(crossfade_s=0.0)
    c = chunk(
        0.0,
        [0.0, 0.1, 0.3, 0.35],
        [[0.0, 0.0, 0.0], [1.0, -1.0, 0.5], [1.0, 1.0, -0.5], [0.0, 1.5, -0.5]],
    )
    path = run(ex, 0, 36, {0: c})
    for k, sp in path.items():
        np.testing.assert_allclose(sp, oracle(c, t_(k)), atol=EPS, err_msg=f"tick {k}")
    # spot checks independent of the oracle: the points at their times, midpoints half-way
    np.testing.assert_allclose(path[5], [0.5, -0.5, 0.25], atol=EPS)
    np.testing.assert_allclose(path[10], [1.0, -1.0, 0.5], atol=EPS)
    np.testing.assert_allclose(path[20], [1.0, 0.0, 0.0], atol=EPS)
    np.testing.assert_allclose(path[30], [1.0, 1.0, -0.5], atol=EPS)
    np.testing.assert_allclose(path[35], [0.0, 1.5, -0.5], atol=EPS)
    assert ex.stats.accepted == 1 and ex.stats.late_points_skipped == 0


def test_interpolation_off_the_tick_grid():
    ex = make(crossfade_s=0.0)
    c = chunk(0.0037, [0.0, 0.0123, 0.0571, 0.2], [[0, 0, 0], [0.3, -0.2, 1], [-0.4, 0.1, 1.2], [0, 0, 0]])
    path = run(ex, 1, 30, {1: c})
    for k, sp in path.items():
        np.testing.assert_allclose(sp, oracle(c, t_(k)), atol=EPS, err_msg=f"tick {k}")


def test_after_the_last_point_holds_it_until_timeout_then_holding():
    ex = make(crossfade_s=0.0, command_timeout=0.5)
    c = ramp(0.0, 0.2, [0.0] * J, [1.0, -1.0, 0.5])
    path = run(ex, 0, 51, {0: c})
    for k in range(20, 51):
        np.testing.assert_allclose(path[k], [1.0, -1.0, 0.5], atol=EPS)
    assert not ex.holding  # t = 0.5 is not older than the timeout yet
    path = run(ex, 51, 200)
    assert ex.holding and ex.stats.holds == 1
    for sp in path.values():
        np.testing.assert_allclose(sp, [1.0, -1.0, 0.5], atol=EPS)


def test_before_the_first_point_commands_the_first_point():
    # a chunk stamped in the future is not waited for: its first point is the target at once
    ex = make(crossfade_s=0.0)
    c = chunk(0.2, [0.0, 0.1], [[0.5, 0.5, 0.5], [1.0, 1.0, 1.0]])
    path = run(ex, 0, 31, {0: c})
    for k in range(0, 21):
        np.testing.assert_allclose(path[k], [0.5] * J, atol=EPS)
    np.testing.assert_allclose(path[25], [0.75] * J, atol=EPS)
    np.testing.assert_allclose(path[30], [1.0] * J, atol=EPS)
    assert ex.stats.late_points_skipped == 0


# -- latency compensation -----------------------------------------------------------------------------
def test_late_chunk_enters_at_now_and_counts_skipped_points():
    ex = make(crossfade_s=0.0)
    run(ex, 0, 100)
    # stamped at 0.5 (observation time), arriving at 1.0: points at 0.5 and 0.75 are already past
    pos = [[0.1] * J, [0.2] * J, [0.3, -0.3, 0.6], [0.5, -0.5, 1.0]]
    c = chunk(0.5, [0.0, 0.25, 0.5, 0.75], pos)
    assert ex.submit(c, 1.0) == (True, "accepted")
    assert ex.stats.late_points_skipped == 2  # the point at exactly `now` is not skipped
    path = run(ex, 100, 126)
    np.testing.assert_allclose(path[100], pos[2], atol=EPS)  # not pos[0]: entered at now
    np.testing.assert_allclose(path[125], pos[3], atol=EPS)
    for k, sp in path.items():
        np.testing.assert_allclose(sp, oracle(c, t_(k)), atol=EPS)


def test_late_chunk_entered_between_two_points():
    ex = make(crossfade_s=0.0)
    run(ex, 0, 100)
    c = chunk(0.93, [0.0, 0.05, 0.1, 0.15], [[0.0] * J, [0.5] * J, [1.0, 0.0, -1.0], [1.0] * J])
    assert ex.submit(c, 1.0)[0]
    assert ex.stats.late_points_skipped == 2
    sp = ex.step(1.0)
    # 1.0 lies 2/5 of the way from the point at 0.98 to the point at 1.03
    np.testing.assert_allclose(sp, 0.6 * np.array([0.5] * J) + 0.4 * np.array([1.0, 0.0, -1.0]), atol=1e-6)
    assert ex.stats.accepted == 1


def test_skipped_points_accumulate_over_chunks():
    ex = make(crossfade_s=0.0)
    run(ex, 0, 50)
    ex.submit(chunk(0.4, [0.0, 0.05, 0.2], [[0.1] * J] * 3), 0.5)  # 0.4, 0.45 past
    run(ex, 50, 60)
    ex.submit(chunk(0.55, [0.0, 0.01, 0.02, 0.2], [[0.2] * J] * 4), 0.6)  # 0.55, 0.56, 0.57 past
    assert ex.stats.late_points_skipped == 5


def test_chunk_with_last_point_exactly_now_is_accepted():
    ex = make(crossfade_s=0.0)
    run(ex, 0, 100)
    ok, _ = ex.submit(chunk(0.5, [0.0, 0.5], [[0.0] * J, [0.7] * J]), 1.0)
    assert ok and ex.stats.late_points_skipped == 1
    np.testing.assert_allclose(ex.step(1.0), [0.7] * J)


# -- single point ("go to") ---------------------------------------------------------------------------
def test_single_point_go_to():
    ex = make(crossfade_s=0.1)
    goal = [0.4, -0.8, 1.2]
    path = run(ex, 0, 40, {10: chunk(t_(10), [0.0], [goal])})
    assert ex.stats.accepted == 1 and ex.stats.late_points_skipped == 0
    np.testing.assert_allclose(path[10], np.zeros(J), atol=EPS)  # fade starts at the held setpoint
    np.testing.assert_allclose(path[15], 0.5 * np.array(goal), atol=EPS)
    for k in range(20, 40):
        np.testing.assert_allclose(path[k], goal, atol=EPS)


def test_single_point_go_to_rate_limited_reaches_goal():
    ex = make(velocity=(1.0, 0.5, 2.0), crossfade_s=0.1, command_timeout=5.0)
    goal = np.array([1.0, -1.0, 1.5])
    path = run(ex, 0, 300, {0: chunk(0.0, [0.0], [goal])})
    assert np.all(max_jump(path) <= np.array([1.0, 0.5, 2.0]) * DT + EPS)
    np.testing.assert_allclose(path[299], goal, atol=EPS)
    # the slowest joint needs 2 s for 1 rad at 0.5 rad/s: not there after 1.9 s
    assert abs(path[190][1] - goal[1]) > 0.01


def test_single_point_stamped_in_the_past_is_accepted_as_go_to():
    # decided behaviour: one point is a target, not a trajectory that can be over; it is not counted as late
    ex = make(crossfade_s=0.0)
    run(ex, 0, 100)
    ok, reason = ex.submit(chunk(0.7, [0.0], [[0.3, 0.2, 0.1]]), 1.0)
    assert (ok, reason) == (True, "accepted")
    assert ex.stats.late_points_skipped == 0 and ex.stats.rejected == 0
    np.testing.assert_allclose(ex.step(1.0), [0.3, 0.2, 0.1])
    assert not ex.holding


def test_multi_point_chunk_entirely_in_the_past_is_rejected():
    ex = make()
    run(ex, 0, 100)
    ok, reason = ex.submit(chunk(0.5, [0.0, 0.25], [[0.3] * J] * 2), 1.0)
    assert not ok and reason.startswith("late")
    assert ex.stats.reasons == {"late": 1} and ex.stats.late_points_skipped == 0


# -- crossfade ----------------------------------------------------------------------------------------
def test_crossfade_from_previous_trajectory_is_continuous_then_tracks_new_exactly():
    cf = 0.1
    ex = make(crossfade_s=cf, command_timeout=2.0)
    a = ramp(0.0, 2.0, [0.0, 0.0, 0.0], [1.6, -1.6, 0.4])  # moving at (0.8, -0.8, 0.2) rad/s
    b = ramp(t_(50), 1.0, [-0.5, 0.5, 1.0], [-1.0, 1.0, 1.0])  # far from a at t=0.5
    path = run(ex, 0, 120, {0: a, 50: b})
    np.testing.assert_allclose(path[50], oracle(a, 0.5), atol=EPS)  # the first faded tick is still a
    for k in range(50, 61):
        f = (t_(k) - 0.5) / cf
        np.testing.assert_allclose(path[k], (1 - f) * oracle(a, t_(k)) + f * oracle(b, t_(k)), atol=EPS)
    for k in range(60, 120):
        np.testing.assert_allclose(path[k], oracle(b, t_(k)), atol=EPS, err_msg=f"tick {k}")
    # continuity: no tick moves more than the slopes plus the gap spread over the crossfade allow
    gap = max(np.max(np.abs(oracle(a, t_(k)) - oracle(b, t_(k)))) for k in range(50, 61))
    bound = (0.8 + 0.5) * DT + gap * DT / cf + EPS
    assert np.max(max_jump(path)) <= bound
    assert gap > 0.9  # a jump this size would have been caught


def test_without_crossfade_the_switch_is_a_jump():
    # sanity check of the continuity measure above: crossfade_s = 0 switches at once
    ex = make(crossfade_s=0.0)
    a = ramp(0.0, 2.0, [0.0] * J, [1.6, -1.6, 0.4])
    b = ramp(t_(50), 1.0, [-0.5, 0.5, 1.0], [-1.0, 1.0, 1.0])
    path = run(ex, 0, 60, {0: a, 50: b})
    np.testing.assert_allclose(path[50], oracle(b, 0.5), atol=EPS)
    assert np.max(max_jump(path)) > 0.9


def test_crossfade_respects_velocity_limit_every_tick():
    v = np.array([1.0, 2.0, 0.5])
    ex = make(velocity=v, crossfade_s=0.1, command_timeout=2.0)
    a = ramp(0.0, 1.0, [0.0] * J, [0.8, -0.8, 0.3])
    b = ramp(t_(40), 1.0, [-1.0, 1.0, -0.5], [-1.0, 1.0, 0.5])
    path = run(ex, 0, 300, {0: a, 40: b})
    assert np.all(max_jump(path) <= v * DT + EPS)
    np.testing.assert_allclose(path[299], oracle(b, t_(299)), atol=EPS)  # it catches up eventually
    assert ex.stats.clamped_ticks > 0


def test_crossfade_starts_from_frozen_setpoint_without_previous_chunk():
    q0 = np.array([0.3, -0.2, 0.9])
    ex = make(crossfade_s=0.1, start=q0)
    run(ex, 0, 100)
    b = ramp(1.0, 1.0, [-0.5, 0.5, -1.0], [0.5, 0.5, -1.0])
    path = run(ex, 100, 130, {100: b})
    for k in range(100, 111):
        f = (t_(k) - 1.0) / 0.1
        np.testing.assert_allclose(path[k], (1 - f) * q0 + f * oracle(b, t_(k)), atol=EPS)
    for k in range(110, 130):
        np.testing.assert_allclose(path[k], oracle(b, t_(k)), atol=EPS)


def test_hold_resets_crossfade_next_chunk_fades_in_from_held_setpoint():
    ex = make(crossfade_s=0.1, command_timeout=0.5)
    a = ramp(0.0, 2.0, [0.0] * J, [1.6, -1.6, 0.8])  # longer than the timeout: cut at 0.5
    path = run(ex, 0, 100, {0: a})
    held = oracle(a, 0.5)
    assert ex.holding and ex.stats.holds == 1
    for k in range(51, 100):
        np.testing.assert_allclose(path[k], held, atol=EPS)
    b = ramp(1.0, 1.0, [-0.5] * J, [-0.5] * J)
    path = run(ex, 100, 115, {100: b})
    assert not ex.holding
    for k in range(100, 111):
        f = (t_(k) - 1.0) / 0.1
        # from the held setpoint, not from where `a` would be now (oracle(a, 1.0))
        np.testing.assert_allclose(path[k], (1 - f) * held + f * np.full(J, -0.5), atol=EPS)


def test_chunk_arriving_mid_crossfade_fades_in_from_the_running_blend():
    ex = make(crossfade_s=0.1)
    a = chunk(t_(10), [0.0, 1.0], [[1.0] * J] * 2)
    b = chunk(t_(15), [0.0, 1.0], [[-1.0] * J] * 2)
    path = run(ex, 0, 40, {10: a, 15: b})
    np.testing.assert_allclose(path[14], [0.4] * J, atol=EPS)
    np.testing.assert_allclose(path[15], [0.5] * J, atol=EPS)  # the 0 -> a blend goes on, no jump to a
    # 0.2 per tick is the fade of a gap of 2 over 0.1 s; the nested blend adds at most the 0 -> a fade
    assert np.max(max_jump(path)) <= 0.2 + 0.1 + EPS
    for k in range(25, 40):
        np.testing.assert_allclose(path[k], [-1.0] * J, atol=EPS)


def test_chunks_streamed_faster_than_crossfade_stay_continuous():
    rng = np.random.default_rng(0)
    cf = 0.1
    ex = make(crossfade_s=cf, lower=(-10,) * 3, upper=(10,) * 3)
    submits = {}
    slope = 1.0  # rad/s of every chunk
    for k in range(0, 1000, 3):  # a chunk every 30 ms, and every tick for a while (deep nesting)
        offs = rng.uniform(-0.3, 0.3, J)
        submits[k] = ramp(t_(k), 0.5, offs, offs + slope * 0.5)
    for k in range(1000, 1500):
        submits[k] = ramp(t_(k), 0.5, np.zeros(J), np.full(J, 0.5))
    path = run(ex, 0, 1600, submits)
    # each chunk sits within 0.6 of the others: slope + gap spread over the fade bounds each tick
    assert np.max(max_jump(path)) <= slope * DT + 0.6 * DT / cf + slope * DT * 3
    np.testing.assert_allclose(path[1599], np.full(J, 0.5), atol=EPS)


def test_tick_stamped_before_acceptance_does_not_extrapolate_the_fade():
    ex = make(crossfade_s=0.1)
    run(ex, 0, 100)
    ex.submit(chunk(1.0, [0.0, 1.0], [[1.0] * J] * 2), 1.005)  # accepted just after the tick's clock read
    sp = ex.step(1.0)
    assert np.all(sp >= -EPS) and np.all(sp <= 1.0 + EPS)  # not moved away from the target
    np.testing.assert_allclose(sp, np.zeros(J), atol=EPS)


def test_submit_after_unnoticed_timeout_fades_from_setpoint():
    # ticks stop (e.g. a stalled loop) while a long chunk runs; the next chunk must fade in from the
    # setpoint the arm is at, not from where the timed-out chunk would be by now
    ex = make(crossfade_s=0.1, command_timeout=0.5)
    a = ramp(0.0, 2.0, [0.0] * J, [1.6, -1.6, 0.8])
    path = run(ex, 0, 31, {0: a})
    at = path[30]
    b = chunk(2.0, [0.0, 1.0], [[0.0] * J] * 2)
    assert ex.submit(b, 2.0)[0]
    np.testing.assert_allclose(ex.step(2.0), at, atol=EPS)
    np.testing.assert_allclose(ex.step(2.05), 0.5 * at, atol=EPS)


# -- limits -------------------------------------------------------------------------------------------
def test_position_limits_clamp():
    ex = make(lower=(-1.0, -0.5, 0.0), upper=(1.0, 0.5, 0.2), crossfade_s=0.0, command_timeout=2.0)
    c = chunk(0.0, [0.0, 0.5, 1.0], [[0.0, 0.0, 0.1], [3.0, -3.0, 0.1], [-3.0, 3.0, -1.0]])
    path = run(ex, 0, 101, {0: c})
    for k, sp in path.items():
        np.testing.assert_allclose(sp, np.clip(oracle(c, t_(k)), [-1, -0.5, 0], [1, 0.5, 0.2]), atol=EPS)
    np.testing.assert_array_equal(path[50], [1.0, -0.5, 0.1])
    np.testing.assert_array_equal(path[100], [-1.0, 0.5, 0.0])
    assert ex.stats.clamped_ticks > 0


def test_velocity_limit_rate_limits_every_tick_even_with_jittery_ticks():
    v = np.array([0.5, 1.0, 2.0])
    ex = make(velocity=v, crossfade_s=0.1, command_timeout=10.0)
    goal = np.array([1.5, -1.5, 1.5])
    ex.submit(chunk(0.0, [0.0, 0.1], [goal, goal]), 0.0)
    rng = np.random.default_rng(1)
    t, prev_t, prev = 0.0, None, ex.setpoint
    for _ in range(600):
        sp = ex.step(t)
        if prev_t is not None:
            assert np.all(np.abs(sp - prev) <= v * (t - prev_t) + EPS)
        prev_t, prev = t, sp
        t += rng.uniform(0.005, 0.015)
    np.testing.assert_allclose(prev, goal, atol=EPS)  # ~6 s is enough for 1.5 rad at 0.5 rad/s
    # and it is a rate limit, not a slowdown: the slow joint moves at its limit while far from the goal
    ex2 = make(velocity=v, crossfade_s=0.0, command_timeout=2.0)
    path = run(ex2, 0, 100, {0: chunk(0.0, [0.0], [goal])})
    np.testing.assert_allclose(path[50] - path[49], v * DT * np.sign(goal), atol=EPS)
    np.testing.assert_allclose(path[50], [0.25, -0.5, 1.0], atol=1e-9)  # v * 0.5 s (dt = 0 at tick 0)


def test_first_tick_after_reset_does_not_move():
    ex = make(velocity=(1.0, 1.0, 1.0), crossfade_s=0.0)
    ex.submit(chunk(0.0, [0.0], [[1.0] * J]), 0.0)
    np.testing.assert_array_equal(ex.step(0.0), np.zeros(J))
    np.testing.assert_allclose(ex.step(DT), [DT] * J, atol=EPS)


@pytest.mark.filterwarnings("error")
def test_unlimited_joint_follows_target_and_dt_zero_raises_no_warning():
    ex = make(velocity=(np.inf, 1.0, 1.0), crossfade_s=0.0)
    ex.submit(chunk(0.0, [0.0], [[1.0] * J]), 0.0)
    np.testing.assert_array_equal(ex.step(0.0), [1.0, 0.0, 0.0])  # dt = 0: only the unlimited joint moves
    np.testing.assert_allclose(ex.step(DT), [1.0, DT, DT], atol=EPS)
    assert np.all(np.isfinite(ex.setpoint))


def test_repeated_or_backwards_tick_does_not_move():
    ex = make(velocity=(1.0, 1.0, 1.0), crossfade_s=0.0)
    ex.submit(chunk(0.0, [0.0], [[1.0] * J]), 0.0)
    run(ex, 0, 10)
    sp = ex.setpoint
    np.testing.assert_array_equal(ex.step(t_(9)), sp)  # same time again
    np.testing.assert_array_equal(ex.step(t_(5)), sp)  # clock went back
    np.testing.assert_allclose(ex.step(t_(6)), sp + DT, atol=EPS)


# -- timeout / hold -----------------------------------------------------------------------------------
def test_hold_after_timeout_freezes_setpoint_and_counts():
    ex = make(crossfade_s=0.0, command_timeout=0.3)
    a = ramp(0.0, 1.0, [0.0] * J, [1.0, -1.0, 0.5])
    path = run(ex, 0, 31, {0: a})
    assert not ex.holding
    path = run(ex, 31, 200)
    assert ex.holding and ex.stats.holds == 1
    frozen = oracle(a, 0.3)
    for sp in path.values():
        np.testing.assert_allclose(sp, frozen, atol=EPS)
    # a new chunk ends the hold; a second timeout is a second hold
    path = run(ex, 200, 300, {200: chunk(2.0, [0.0], [[0.2] * J])})
    assert ex.holding and ex.stats.holds == 2
    np.testing.assert_allclose(path[299], [0.2] * J, atol=EPS)


def test_steady_stream_of_chunks_never_holds():
    ex = make(crossfade_s=0.1, command_timeout=0.5)
    submits = {k: ramp(t_(k), 1.0, [0.1] * J, [0.5] * J) for k in range(0, 600, 40)}
    holding = []
    for k in range(600):
        run(ex, k, k + 1, submits)
        holding.append(ex.holding)
    assert not any(holding) and ex.stats.holds == 0


def test_rejected_chunks_do_not_refresh_the_timeout():
    ex = make(command_timeout=0.5)
    bad = chunk(0.0, [0.0, 1.0], [[np.nan] * J, [0.0] * J])
    run(ex, 0, 100, {0: ramp(0.0, 2.0, [0.0] * J, [1.0] * J), **{k: bad for k in range(10, 100, 10)}})
    assert ex.holding and ex.stats.holds == 1 and ex.stats.rejected == 9


# -- rejection ----------------------------------------------------------------------------------------
GOOD_TFS = np.array([0.0, 0.1, 0.2])
GOOD_POS = np.array([[0.1, 0.2, 0.3], [0.2, 0.3, 0.4], [0.3, 0.4, 0.5]])


def _bad(now: float):
    nan_pos = GOOD_POS.copy()
    nan_pos[1, 2] = np.nan
    inf_pos = GOOD_POS.copy()
    inf_pos[0, 0] = -np.inf
    return {
        "nan position": (chunk(now, GOOD_TFS, nan_pos), "non-finite"),
        "inf position": (chunk(now, GOOD_TFS, inf_pos), "non-finite"),
        "nan time": (chunk(now, [0.0, np.nan, 0.2], GOOD_POS), "non-finite"),
        "inf time": (chunk(now, [0.0, 0.1, np.inf], GOOD_POS), "non-finite"),
        "nan stamp": (chunk(np.nan, GOOD_TFS, GOOD_POS), "non-finite"),
        "inf stamp": (chunk(np.inf, GOOD_TFS, GOOD_POS), "non-finite"),
        "missing joint": (chunk(now, GOOD_TFS, GOOD_POS[:, :2], names=NAMES[:2]), "joint names"),
        "unknown joint": (
            chunk(now, GOOD_TFS, np.c_[GOOD_POS, np.zeros(3)], names=(*NAMES, "gripper")),
            "joint names",
        ),
        "renamed joint": (
            chunk(now, GOOD_TFS, GOOD_POS, names=("shoulder", "elbow", "wrist_2")),
            "joint names",
        ),
        "duplicate joint": (
            chunk(now, GOOD_TFS, GOOD_POS, names=("shoulder", "shoulder", "wrist")),
            "joint names",
        ),
        "too few columns": (chunk(now, GOOD_TFS, GOOD_POS[:, :2]), "shape"),
        "too many columns": (chunk(now, GOOD_TFS, np.c_[GOOD_POS, np.zeros(3)]), "shape"),
        "1-d positions": (chunk(now, [0.0], GOOD_POS[0]), "shape"),
        "3-d positions": (chunk(now, GOOD_TFS, GOOD_POS[:, :, None]), "shape"),
        "times longer than positions": (chunk(now, [0.0, 0.1, 0.2, 0.3], GOOD_POS), "shape"),
        "empty": (chunk(now, np.zeros(0), np.zeros((0, J))), "shape"),
        "2-d times": (chunk(now, GOOD_TFS[:, None], GOOD_POS), "shape"),
        "equal times": (chunk(now, [0.0, 0.1, 0.1], GOOD_POS), "time_from_start"),
        "decreasing times": (chunk(now, [0.2, 0.1, 0.0], GOOD_POS), "time_from_start"),
        "negative time": (chunk(now, [-0.1, 0.1, 0.2], GOOD_POS), "time_from_start"),
        "entirely in the past": (chunk(now - 1.0, GOOD_TFS, GOOD_POS), "late"),
    }


@pytest.mark.parametrize("name", sorted(_bad(0.0)))
@pytest.mark.parametrize("scenario", ["tracking", "mid-crossfade", "holding"])
def test_rejected_chunk_changes_nothing(name, scenario):
    a = ramp(0.0, 2.0, [0.0] * J, [1.0, -1.0, 0.5])
    base = {} if scenario == "holding" else {0: a}
    k_bad = {"tracking": 30, "mid-crossfade": 5, "holding": 30}[scenario]
    bad, key = _bad(t_(k_bad))[name]

    ref, ex = make(velocity=(2.0, 2.0, 2.0)), make(velocity=(2.0, 2.0, 2.0))
    ref_path, ref_holding, path, holding, results = {}, [], {}, [], []
    for k in range(100):
        ref_path.update(run(ref, k, k + 1, base))
        ref_holding.append(ref.holding)
        path.update(run(ex, k, k + 1, {**base, k_bad: [*([a] if k_bad in base else []), bad]}, results))
        holding.append(ex.holding)

    ok, reason = results[-1][1]  # the bad chunk is the last one submitted
    assert not ok and reason.startswith(key), reason
    for k in range(100):
        np.testing.assert_array_equal(path[k], ref_path[k], err_msg=f"tick {k}")
    assert holding == ref_holding  # including when the timeout hold starts
    assert ex.stats.rejected == 1 and ex.stats.last_rejection == reason
    assert ex.stats.reasons == {key: 1}
    assert ex.stats.accepted == ref.stats.accepted and ex.stats.holds == ref.stats.holds
    assert ex.stats.late_points_skipped == ref.stats.late_points_skipped


def test_rejection_reasons_are_counted_by_kind():
    ex = make()
    for c, _key in _bad(0.0).values():
        ex.submit(c, 0.0)
    assert ex.stats.rejected == len(_bad(0.0)) and ex.stats.accepted == 0
    assert set(ex.stats.reasons) == {"non-finite", "joint names", "shape", "time_from_start", "late"}
    assert sum(ex.stats.reasons.values()) == ex.stats.rejected
    assert "gripper" in _bad_reason(ex, "unknown joint") and "wrist" in _bad_reason(ex, "missing joint")


def _bad_reason(ex: TrajectoryExecutor, name: str) -> str:
    return ex.submit(_bad(0.0)[name][0], 0.0)[1]


# -- joint order --------------------------------------------------------------------------------------
@pytest.mark.parametrize("perm", [(2, 1, 0), (1, 2, 0), (0, 2, 1)])
def test_joint_names_in_another_order_are_reordered(perm):
    pos = np.array([[0.0, 0.0, 0.0], [0.9, -0.3, 0.1], [0.2, 0.5, -1.1]])
    tfs = [0.0, 0.2, 0.4]
    ref, ex = (make(velocity=(1.0, 2.0, 3.0), command_timeout=2.0) for _ in range(2))
    perm = list(perm)
    shuffled = chunk(0.0, tfs, pos[:, perm], names=[NAMES[i] for i in perm])
    ref_path = run(ref, 0, 80, {0: chunk(0.0, tfs, pos)})
    path = run(ex, 0, 80, {0: shuffled})
    assert ex.stats.accepted == 1
    for k in range(80):
        np.testing.assert_array_equal(path[k], ref_path[k])
    # and not trivially so: the joints do end up at their own (distinct) targets
    np.testing.assert_allclose(path[79], pos[-1], atol=EPS)
