"""Scripted experts in the offline closed loop: Twin + TrajectoryExecutor + expert, as the twin node runs."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from twinloop.sim.experts import expert_names, get_expert, run_episode
from twinloop.sim.tasks import BIN_COLOURS, CUBE_COLOURS, PickLiftCube, get_task, task_names
from twinloop.sim.twin import Twin, TwinConfig

SEEDS = range(40)


@pytest.fixture(scope="module")
def pick_twin():
    twin = Twin(TwinConfig(task="pick_lift_cube"))
    yield twin
    twin.close()


@pytest.fixture(scope="module")
def place_twin():
    twin = Twin(TwinConfig(task="place_cube_in_bin"))
    yield twin
    twin.close()


@pytest.fixture(scope="module")
def reach_twin():
    twin = Twin(TwinConfig(task="reach_cube"))
    yield twin
    twin.close()


def _run(twin: Twin, seed: int, **kwargs):
    expert = get_expert(twin.task.name, twin.robot, np.random.default_rng(seed))
    return run_episode(twin, expert, seed, **kwargs)


def test_every_task_has_an_expert_and_a_time_limit():
    assert set(task_names()) <= set(expert_names())
    assert get_task("reach_cube").time_limit == 8.0  # the evaluator's default
    assert get_task("pick_lift_cube").time_limit > 0
    assert get_task("place_cube_in_bin").time_limit > 0
    with pytest.raises(ValueError, match="no expert"):
        get_expert("juggle", Twin().robot, np.random.default_rng(0))


def test_pick_task_language_variants(pick_twin):
    seen = set()
    for seed in range(12):
        pick_twin.reset(seed)
        task = pick_twin.task
        assert task.instruction == f"pick up the {task.target} cube"
        seen.add(task.target)
        cubes = np.array([pick_twin.data.body(f"cube_{c}").xpos for c in task.colours])
        np.testing.assert_allclose(cubes[:, 2], task.half)  # all resting on the table
        gaps = np.linalg.norm(cubes[:, None, :2] - cubes[None, :, :2], axis=-1)
        assert np.all(gaps[~np.eye(len(cubes), dtype=bool)] >= task.min_separation - 1e-9)
        assert not pick_twin.success()  # never at reset
    assert seen == {"red", "green", "blue"}


def test_pads_collide_with_the_cube(pick_twin):
    """The jaw pads (contype/conaffinity 2 in the MJCF) and the cubes must share a collision bit."""
    model = pick_twin.model
    for pad in ("fixed_jaw_pad", "moving_jaw_pad"):
        p = model.geom(pad).id
        for colour in PickLiftCube().colours:
            c = model.geom(f"cube_{colour}").id
            assert (model.geom_contype[p] & model.geom_conaffinity[c]) or (
                model.geom_contype[c] & model.geom_conaffinity[p]
            )


def test_pick_expert_success_rate(pick_twin):
    results = [_run(pick_twin, seed) for seed in SEEDS]
    rate = np.mean([r.success for r in results])
    failed = [r.seed for r in results if not r.success]
    assert rate >= 0.95, f"pick_lift_cube expert: {rate:.0%} over {len(results)} seeds, failed {failed}"
    assert all(r.duration_s <= pick_twin.task.time_limit for r in results)


def test_reach_expert_success_rate(reach_twin):
    results = [_run(reach_twin, seed) for seed in SEEDS]
    rate = np.mean([r.success for r in results])
    assert rate >= 0.95, f"reach_cube expert: {rate:.0%}, failed {[r.seed for r in results if not r.success]}"


@pytest.mark.parametrize("task", ["pick_lift_cube", "reach_cube", "place_cube_in_bin"])
def test_same_seed_same_trajectory_different_seeds_differ(task, pick_twin, reach_twin, place_twin):
    twin = {"pick_lift_cube": pick_twin, "reach_cube": reach_twin, "place_cube_in_bin": place_twin}[task]
    a = _run(twin, 3, time_limit=2.5, stop_on_success=False).joint_positions
    b = _run(twin, 3, time_limit=2.5, stop_on_success=False).joint_positions
    c = _run(twin, 4, time_limit=2.5, stop_on_success=False).joint_positions
    # equal up to float rounding: the second run starts at a later sim time (a reset never rewinds /clock)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
    assert a.shape == c.shape
    assert np.abs(a - c).max() > 0.05


def test_same_cube_different_expert_rng_gives_different_demonstrations(pick_twin):
    """Multimodal demonstrations: the expert's own rng varies the motion even for one scene."""
    runs = []
    for expert_seed in (0, 1):
        expert = get_expert("pick_lift_cube", pick_twin.robot, np.random.default_rng(expert_seed))
        result = run_episode(pick_twin, expert, seed=5, stop_on_success=False, time_limit=3.0)
        runs.append(result.joint_positions)
    assert np.abs(runs[0] - runs[1]).max() > 0.05


def test_pushing_the_cube_along_the_table_is_no_success(pick_twin):
    pick_twin.reset(2)
    task, model, data = pick_twin.task, pick_twin.model, pick_twin.data
    adr = model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, task.target_body)]
    vadr = model.jnt_dofadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, task.target_body)]
    home = pick_twin.joint_state()[0]
    for _ in range(100):  # slide the cube 10 cm along the table
        data.qvel[vadr : vadr + 3] = [0.1, 0.0, 0.0]
        pick_twin.step(home)
        assert not pick_twin.success()
    assert data.qpos[adr + 2] == pytest.approx(task.half, abs=2e-3)
    # a cube that is merely lifted (thrown up, not held) is no success either
    data.qvel[vadr : vadr + 3] = [0.0, 0.0, 1.5]
    heights = []
    for _ in range(20):
        pick_twin.step(home)
        heights.append(data.body(task.target_body).xpos[2])
        assert not pick_twin.success()
    assert max(heights) > task.half + task.lift


# -- place_cube_in_bin -----------------------------------------------------------------------------------
def test_place_task_language_variants_and_layout(place_twin):
    targets, bins = set(), set()
    for seed in range(12):
        place_twin.reset(seed)
        task, model, data = place_twin.task, place_twin.model, place_twin.data
        assert task.instruction == f"put the {task.target} cube in the {task.bin_colour} bin"
        assert task.target != task.distractor
        np.testing.assert_allclose(model.geom("cube").rgba, CUBE_COLOURS[task.target])
        np.testing.assert_allclose(model.geom("bin_floor").rgba, BIN_COLOURS[task.bin_colour])
        targets.add(task.target)
        bins.add(task.bin_colour)
        cubes = np.array([data.body(b).xpos for b in ("cube", "cube_distractor")])
        np.testing.assert_allclose(cubes[:, 2], task.half)  # resting on the table
        assert np.linalg.norm(cubes[0, :2] - cubes[1, :2]) >= task.min_separation - 1e-9
        for xy in cubes[:, :2]:
            assert task.distance_to_bin(data, xy) >= task.bin_clearance - 1e-9
            assert np.linalg.norm(xy) <= task.max_reach
        assert not task.inside(data) and not place_twin.success()  # never at reset
    assert targets == set(CUBE_COLOURS) and bins == set(BIN_COLOURS)


def test_bin_collides_with_the_cubes_and_pads_but_not_the_arm_or_table(place_twin):
    model = place_twin.model

    def collide(a: int, b: int) -> bool:
        return bool(
            (model.geom_contype[a] & model.geom_conaffinity[b])
            or (model.geom_contype[b] & model.geom_conaffinity[a])
        )

    bin_body = model.body("bin").id
    bin_geoms = [g for g in range(model.ngeom) if model.geom_bodyid[g] == bin_body]
    assert len(bin_geoms) == 5  # floor and four walls
    # the arm's collision geoms: every colliding geom of the robot's tree except the two jaw pads
    robot = model.body_rootid[model.geom_bodyid] == model.body("base").id
    pads = {model.geom("fixed_jaw_pad").id, model.geom("moving_jaw_pad").id}
    arm = [g for g in np.flatnonzero(robot & (model.geom_contype > 0)) if g not in pads]
    assert len(arm) > 5
    for g in bin_geoms:
        for other in ("cube", "cube_distractor", "fixed_jaw_pad", "moving_jaw_pad"):
            assert collide(g, model.geom(other).id), other
        assert not collide(g, model.geom("table").id)
        assert not any(collide(g, a) for a in arm)  # the arm's link hulls pass through the bin


def test_place_expert_success_rate(place_twin):
    results = [_run(place_twin, seed) for seed in SEEDS]
    rate = np.mean([r.success for r in results])
    failed = [r.seed for r in results if not r.success]
    assert rate >= 0.95, f"place_cube_in_bin expert: {rate:.0%} over {len(results)} seeds, failed {failed}"
    assert all(r.duration_s <= place_twin.task.time_limit for r in results)


def test_place_success_only_once_released_inside_the_bin(place_twin, monkeypatch):
    """Over an expert episode: False while the cube is held above the bin, True only after release."""
    task, model, data = place_twin.task, place_twin.model, place_twin.data
    ee = place_twin.robot.ee_site
    trace = []
    predicate = place_twin.success

    def recording_success() -> bool:
        local = task.in_bin_frame(data, data.body("cube").xpos)
        over_bin = bool(np.all(np.abs(local[:2]) <= task.inner_half))
        trace.append(
            (predicate(), task.held(model, data, ee), over_bin, bool(task.touching_robot(model, data)))
        )
        return trace[-1][0]

    monkeypatch.setattr(place_twin, "success", recording_success)
    result = _run(place_twin, 1)
    assert result.success
    success, held, over_bin, touching = (np.array(column) for column in zip(*trace, strict=True))
    assert not success[0]
    assert np.any(held & over_bin)  # it was carried over the bin ...
    assert not np.any(success & (held | touching))  # ... and counted only once let go
    assert success[-1] and not touching[-1] and task.inside(data)


def test_a_cube_dropped_into_the_bin_counts_once_it_rests(place_twin):
    place_twin.reset(7)
    task, model, data = place_twin.task, place_twin.model, place_twin.data
    adr = model.jnt_qposadr[model.body("cube").jntadr[0]]
    data.qpos[adr : adr + 3] = task.goal(model, data) + [0.01, -0.01, 0.06]  # above the floor, inside
    home = place_twin.joint_state()[0]
    outcomes = []
    for _ in range(60):
        place_twin.step(home)
        outcomes.append(place_twin.success())
    assert not outcomes[0]  # falling through the bin's volume is not yet a success
    assert outcomes[-1] and task.inside(data)
    # beside the bin on the table: no success
    data.qpos[adr : adr + 3] = task.goal(model, data) + [0.0, task.outer_half + 0.03, -task.floor_thickness]
    for _ in range(30):
        place_twin.step(home)
    assert not place_twin.success()
