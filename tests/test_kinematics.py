"""Forward and inverse kinematics of the SO-101 model against the twin's own simulation state."""

from __future__ import annotations

import numpy as np
import pytest

from twinloop.sim.kinematics import ArmKinematics
from twinloop.sim.robots import get_robot, home_array
from twinloop.sim.twin import Twin


@pytest.fixture(scope="module")
def kin() -> ArmKinematics:
    return ArmKinematics(get_robot("so101"))


@pytest.fixture(scope="module")
def twin():
    twin = Twin()
    yield twin
    twin.close()


def _random_configs(kin: ArmKinematics, rng: np.random.Generator, count: int, margin: float = 0.0):
    span = kin.upper - kin.lower
    return kin.lower + rng.uniform(margin, 1.0 - margin, (count, len(span))) * span


def _workspace_targets(kin: ArmKinematics, count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(q, FK(q)) pairs with the tool in front of the robot, above the table, in a sensible reach band."""
    rng = np.random.default_rng(seed)
    home = home_array(kin.robot)
    found = []
    while len(found) < count:
        q = _random_configs(kin, rng, 1, margin=0.2)[0]
        q[~kin.arm_mask] = home[~kin.arm_mask]
        p = kin.forward(q)
        reach = np.linalg.norm(p[:2])
        if p[0] > 0.05 and 0.02 < p[2] < 0.3 and 0.1 < reach < 0.35:
            found.append((q, p))
    return found


def test_joint_limits_match_the_twin(kin, twin):
    np.testing.assert_array_equal(kin.lower, twin.limits.lower)
    np.testing.assert_array_equal(kin.upper, twin.limits.upper)
    assert kin.arm_mask.tolist() == [True] * 5 + [False]


def test_forward_kinematics_equals_the_twin_site(kin, twin):
    import mujoco  # after twinloop.sim, which selects the headless GL backend

    rng = np.random.default_rng(7)
    adr = [twin.model.joint(name).qposadr[0] for name in twin.joint_names]
    site = twin.data.site(twin.robot.ee_site)
    previous = None
    for q in _random_configs(kin, rng, 25):
        twin.data.qpos[adr] = q
        mujoco.mj_kinematics(twin.model, twin.data)
        fk = kin.forward(q)
        np.testing.assert_allclose(fk, site.xpos, atol=1e-9)
        if previous is not None:
            assert np.linalg.norm(fk - previous) > 1e-3  # the configurations really move the tool
        previous = fk
    twin.reset(0)


def test_forward_kinematics_of_home_is_above_the_table(kin):
    tool = kin.forward(home_array(kin.robot))
    assert 0.15 < tool[2] < 0.25 and tool[0] > 0.1  # "holds the tool ~19 cm above the table"


def test_ik_reaches_reachable_targets_within_limits(kin):
    home = home_array(kin.robot)
    for _q_true, target in _workspace_targets(kin, 40, seed=3):
        q, residual = kin.solve_ik(target, home, rest=home)
        assert residual < 2e-3, (target, residual)
        # the reported residual is the distance of the returned configuration, not of an earlier iterate
        assert np.linalg.norm(kin.forward(q) - target) == pytest.approx(residual, abs=1e-9)
        assert np.all(q >= kin.lower) and np.all(q <= kin.upper)
        assert q[~kin.arm_mask] == pytest.approx(home[~kin.arm_mask])  # the gripper is not an IK joint


def test_ik_clamps_an_out_of_range_initial_guess(kin):
    home = home_array(kin.robot)
    target = kin.forward(home)
    wild = home + np.array([5.0, -5.0, 5.0, -5.0, 5.0, 0.0])
    q, residual = kin.solve_ik(target, wild, rest=home)
    assert np.all(q >= kin.lower) and np.all(q <= kin.upper)
    assert residual < 2e-3


def test_ik_reports_an_unreachable_target_honestly(kin):
    home = home_array(kin.robot)
    target = np.array([2.0, 0.0, 0.1])
    q, residual = kin.solve_ik(target, home, rest=home)
    actual = float(np.linalg.norm(kin.forward(q) - target))
    assert residual > 1.0  # the arm reaches ~0.45 m; 2 m is far out of reach
    assert residual == pytest.approx(actual, abs=1e-9)
    assert np.all(q >= kin.lower) and np.all(q <= kin.upper)
    assert np.all(np.isfinite(q))


def test_ik_does_not_touch_the_simulation(kin, twin):
    twin.reset(4)
    before = twin.data.qpos.copy()
    kin.solve_ik(np.array([0.2, 0.05, 0.1]), home_array(kin.robot))
    np.testing.assert_array_equal(twin.data.qpos, before)
