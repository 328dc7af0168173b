"""The contact-rich task: pick a fragile, slippery cube without crushing it (touch decides the grip)."""

from __future__ import annotations

import numpy as np
import pytest

from twinloop.sim.experts import PickFragileExpert, PickLiftExpert, run_episode
from twinloop.sim.tasks import CRUSHED_RGBA, CUBE_COLOURS
from twinloop.sim.twin import Twin, TwinConfig

ROBOTS = ["so101", "panda"]


@pytest.fixture(scope="module", params=ROBOTS)
def twin(request):
    twin = Twin(TwinConfig(robot=request.param, task="pick_fragile_cube", cameras=()))
    yield twin
    twin.close()


def test_language_variants_and_a_slippery_cube(twin):
    targets = set()
    for seed in range(12):
        twin.reset(seed)
        task = twin.task
        assert task.instruction == f"gently pick up the {task.target} cube"
        targets.add(task.target)
        assert twin.model.geom(task.target_body).friction[0] == pytest.approx(0.5)
        assert not task.crushed and task.peak_force == 0.0
    assert targets == set(CUBE_COLOURS)


@pytest.mark.parametrize("seed", range(6))
def test_touch_guided_expert_lifts_without_crushing(twin, seed):
    result = run_episode(twin, PickFragileExpert(twin.robot, np.random.default_rng(seed)), seed)
    task = twin.task
    assert result.success, f"{twin.robot.name} seed {seed}: peak {task.peak_force:.1f} N"
    assert not task.crushed
    # it really squeezed (the cube is lifted by friction), but stayed well under the break force
    assert 0.5 < task.peak_force < task.break_force
    assert all(twin.tactile(name).max() > 0 for name in twin.tactile_names)


@pytest.mark.parametrize("seed", range(3))
def test_a_force_blind_grasp_crushes_the_cube(twin, seed):
    """The pick task's expert closes fully: the same motion, no touch, and the cube breaks."""
    result = run_episode(twin, PickLiftExpert(twin.robot, np.random.default_rng(seed)), seed)
    task = twin.task
    assert task.crushed and not result.success
    assert task.peak_force > task.break_force
    np.testing.assert_allclose(twin.model.geom(task.target_body).rgba, CRUSHED_RGBA)
    twin.reset(seed)  # a new episode brings a whole cube
    assert not twin.task.crushed
    np.testing.assert_allclose(twin.model.geom(task.target_body).rgba, CUBE_COLOURS[twin.task.target])


def test_crushed_cube_is_no_success_even_when_lifted(twin):
    seed = 0
    twin.reset(seed)
    expert = PickFragileExpert(twin.robot, np.random.default_rng(seed))
    result = run_episode(twin, expert, seed)
    assert result.success and twin.success()
    twin.task.crushed = True  # as if one squeeze had been too hard earlier in the episode
    assert not twin.success()
