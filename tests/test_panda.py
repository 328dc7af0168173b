"""The 7-DoF Franka Panda model (sim/assets/panda.xml) against Franka's published kinematics and limits."""

from __future__ import annotations

import numpy as np
import pytest

from twinloop.sim.experts import get_expert, run_episode
from twinloop.sim.kinematics import ArmKinematics
from twinloop.sim.robots import PANDA_VELOCITY_LIMITS, get_robot, home_array, velocity_array
from twinloop.sim.scene import CameraConfig
from twinloop.sim.tasks import task_names
from twinloop.sim.twin import Twin, TwinConfig

ARM = tuple(f"panda_joint{i}" for i in range(1, 8))
# FCI docs, "Robot and interface specifications": Panda joint limits (rad)
LIMITS = [
    (-2.8973, 2.8973),
    (-1.7628, 1.7628),
    (-2.8973, 2.8973),
    (-3.0718, -0.0698),
    (-2.8973, 2.8973),
    (-0.0175, 3.7525),
    (-2.8973, 2.8973),
]
# same page: modified (Craig) DH parameters (a, d, alpha) per joint, then the flange
DH = [
    (0.0, 0.333, 0.0),
    (0.0, 0.0, -np.pi / 2),
    (0.0, 0.316, np.pi / 2),
    (0.0825, 0.0, np.pi / 2),
    (-0.0825, 0.384, -np.pi / 2),
    (0.0, 0.0, np.pi / 2),
    (0.088, 0.0, np.pi / 2),
]
FLANGE_D = 0.107
TCP_OFFSET = 0.1034  # flange to fingertip centre (franka_description panda_hand_tcp), hand yawed -pi/4
HOME = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)
SIDE = CameraConfig(name="side", width=320, height=240, fovy=50.0, pos=(1.3, -0.9, 0.9), target=(0.3, 0, 0.3))


def _craig(a: float, d: float, alpha: float, theta: float) -> np.ndarray:
    """RotX(alpha) TransX(a) RotZ(theta) TransZ(d), written out independently of the MJCF."""
    ca, sa, ct, st = np.cos(alpha), np.sin(alpha), np.cos(theta), np.sin(theta)
    return np.array(
        [
            [ct, -st, 0.0, a],
            [st * ca, ct * ca, -sa, -d * sa],
            [st * sa, ct * sa, ca, d * ca],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def _dh_tcp(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flange 4x4, TCP 4x4) in the base frame from the DH table."""
    t = np.eye(4)
    for (a, d, alpha), theta in zip(DH, q, strict=True):
        t = t @ _craig(a, d, alpha, theta)
    flange = t @ _craig(0.0, FLANGE_D, 0.0, 0.0)
    tcp = flange @ _craig(0.0, TCP_OFFSET, 0.0, -np.pi / 4)
    return flange, tcp


@pytest.fixture(scope="module")
def kin() -> ArmKinematics:
    return ArmKinematics(get_robot("panda"))


@pytest.fixture(scope="module")
def twin():
    twin = Twin(TwinConfig(robot="panda", task="reach_cube", cameras=(CameraConfig(), SIDE)))
    yield twin
    twin.close()


def test_joint_names_limits_and_home(kin):
    robot = kin.robot
    assert robot.joint_names == (*ARM, "panda_finger_joint1")
    assert robot.arm_joints == ARM and robot.gripper_joint == "panda_finger_joint1"
    np.testing.assert_allclose(np.column_stack([kin.lower, kin.upper])[:7], LIMITS, atol=1e-12)
    assert (kin.lower[7], kin.upper[7]) == (0.0, 0.04)
    assert home_array(robot)[:7] == pytest.approx(HOME)
    assert kin.arm_mask.tolist() == [True] * 7 + [False]
    assert robot.max_velocity == 2.175
    np.testing.assert_array_equal(velocity_array(robot)[:7], PANDA_VELOCITY_LIMITS)
    np.testing.assert_array_equal(velocity_array(get_robot("so101")), np.full(6, 3.0))  # unchanged


def test_forward_kinematics_matches_the_dh_table(kin):
    flange_site = kin.model.site("flange").id
    rng = np.random.default_rng(0)
    configs = [np.array(HOME)] + [
        kin.lower[:7] + rng.uniform(0, 1, 7) * (kin.upper - kin.lower)[:7] for _ in range(20)
    ]
    for q7 in configs:
        q = np.append(q7, 0.04)
        tcp = kin.forward(q)
        flange, expected = _dh_tcp(q7)
        np.testing.assert_allclose(kin.data.site_xpos[flange_site], flange[:3, 3], atol=1e-3)
        np.testing.assert_allclose(tcp, expected[:3, 3], atol=1e-3)
        np.testing.assert_allclose(kin.data.site_xmat[kin.site_id].reshape(3, 3), expected[:3, :3], atol=1e-3)
    # the ready pose: flange 0.307 m ahead and 0.590 m up, tool pointing straight down
    flange, tcp = _dh_tcp(np.array(HOME))
    assert flange[:3, 3] == pytest.approx([0.307, 0.0, 0.590], abs=1e-3)
    assert tcp[:3, 2] == pytest.approx([0.0, 0.0, -1.0], abs=1e-3)


def test_ik_reaches_random_reachable_targets(kin):
    home = home_array(kin.robot)
    rng = np.random.default_rng(3)
    done = 0
    while done < 30:
        q_true = home.copy()
        q_true[:7] = kin.lower[:7] + rng.uniform(0.15, 0.85, 7) * (kin.upper - kin.lower)[:7]
        target = kin.forward(q_true)
        if not (0.05 < target[2] < 0.8 and 0.25 < np.linalg.norm(target[:2]) < 0.75):
            continue
        q, residual = kin.solve_ik(target, home, rest=home, iterations=300)
        assert residual < 2e-3, (target, residual)
        assert np.all(q >= kin.lower) and np.all(q <= kin.upper)
        assert q[7] == home[7]
        done += 1


def test_ik_keeps_the_tool_pointing_down(kin):
    home = home_array(kin.robot)
    down = np.array([0.0, 0.0, -1.0])
    rng = np.random.default_rng(5)
    for _ in range(30):
        target = np.array([rng.uniform(0.3, 0.6), rng.uniform(-0.3, 0.3), rng.uniform(0.05, 0.5)])
        q, residual = kin.solve_ik(target, home, rest=home, axis=down)
        assert residual < 2e-3
        assert kin.axis_error(q, down) < 0.02
        np.testing.assert_allclose(kin.forward(q), target, atol=2e-3)
    # without the objective the result is the plain position solution (SO-101 behaviour unchanged)
    q_plain, _ = kin.solve_ik(np.array([0.45, 0.2, 0.2]), home, rest=home)
    q_none, _ = kin.solve_ik(np.array([0.45, 0.2, 0.2]), home, rest=home, axis=None)
    np.testing.assert_array_equal(q_plain, q_none)


def test_home_pose_holds_under_gravity(twin):
    twin.reset(0)
    home = home_array(twin.robot)
    worst = 0.0
    for _ in range(round(1.0 / twin.control_period)):
        twin.step(home)
        worst = max(worst, float(np.abs(twin.joint_state()[0][:7] - home[:7]).max()))
    assert worst < 0.02


def test_gripper_opens_and_closes(twin):
    twin.reset(0)
    target = home_array(twin.robot)
    fingers = ("panda_finger_joint1", "panda_finger_joint2")
    for width, expected in ((0.0, 0.0), (0.04, 0.04), (0.02, 0.02)):
        target[7] = width
        for _ in range(40):
            twin.step(target)
        for name in fingers:
            assert twin.data.joint(name).qpos[0] == pytest.approx(expected, abs=1e-3)
    assert all(not twin.tactile(name).any() for name in twin.tactile_names)  # nothing between the pads


def test_twin_renders_the_robot(twin):
    twin.reset(0)
    image = twin.render("side")
    assert image.shape == (240, 320, 3) and image.std() > 10
    # the robot is in view: hiding its geoms changes the picture
    robot_geoms = [
        g
        for g in range(twin.model.ngeom)
        if twin.model.geom_bodyid[g] != 0 and twin.model.geom(g).name != "cube"
    ]
    rgba = twin.model.geom_rgba[robot_geoms].copy()
    twin.model.geom_rgba[robot_geoms, 3] = 0.0
    try:
        empty = twin.render("side")
    finally:
        twin.model.geom_rgba[robot_geoms] = rgba
    assert np.abs(image.astype(int) - empty.astype(int)).sum(axis=2).astype(bool).mean() > 0.05


@pytest.mark.parametrize("task", task_names())
def test_every_expert_works_on_the_panda(task):
    """Offline smoke check on a few seeds; tests/test_experts_ros.py holds the 50-seed bar over ROS."""
    twin = Twin(TwinConfig(robot="panda", task=task, cameras=()))
    try:
        for seed in range(3):
            expert = get_expert(task, twin.robot, np.random.default_rng(seed))
            assert run_episode(twin, expert, seed).success, f"{task} seed {seed}"
    finally:
        twin.close()


def test_tasks_move_to_the_panda_workspace():
    """The tasks' layouts are written for the SO-101; the Panda works the same layout 25 cm farther out."""
    for task in ("reach_cube", "pick_lift_cube"):
        so101 = Twin(TwinConfig(robot="so101", task=task, cameras=()))
        panda = Twin(TwinConfig(robot="panda", task=task, cameras=()))
        try:
            for seed in range(5):
                so101.reset(seed)
                panda.reset(seed)
                body = "cube" if task == "reach_cube" else so101.task.target_body
                shift = panda.data.body(body).xpos - so101.data.body(body).xpos
                np.testing.assert_allclose(shift, [0.25, 0.0, 0.0], atol=1e-9)
        finally:
            so101.close()
            panda.close()


def test_pads_grasp_and_lift_a_cube_with_touch():
    """The pads (collision bit 1, like the SO-101's) hold the pick task's cube; the taxels feel it."""
    twin = Twin(TwinConfig(robot="panda", task="pick_lift_cube", cameras=()))
    try:
        twin.reset(0)
        kin = ArmKinematics(twin.robot)
        home = home_array(twin.robot)
        task = twin.task
        for i, name in enumerate(task.distractor_bodies):  # out of the way
            adr = twin.model.joint(name).qposadr[0]
            twin.data.qpos[adr : adr + 3] = [0.1, 0.5 - i, task.half]
        adr = twin.model.joint(task.target_body).qposadr[0]
        twin.data.qpos[adr : adr + 7] = [0.45, 0.0, task.half, 1.0, 0.0, 0.0, 0.0]

        def move(z: float, width: float, ticks: int) -> None:
            q, residual = kin.solve_ik(
                np.array([0.45, 0.0, z]), twin.joint_state()[0], rest=home, axis=[0, 0, -1], iterations=300
            )
            assert residual < 2e-3
            q[7] = width
            for _ in range(ticks):
                twin.step(q)

        move(0.15, 0.04, 100)
        assert all(not twin.tactile(n).any() for n in twin.tactile_names)
        move(task.half, 0.04, 100)
        move(task.half, 0.0, 80)
        assert 0.01 < twin.joint_state()[0][7] < task.half  # stopped by the cube
        assert len(task.touching_robot(twin.model, twin.data)) == 2
        assert all(twin.tactile(n).max() > 1e-4 for n in twin.tactile_names)
        move(0.15, 0.0, 100)
        assert twin.data.body(task.target_body).xpos[2] > 0.1
        assert twin.success()
    finally:
        twin.close()
