"""Finger tactile plates in the twin (MuJoCo `tactile` sensor): zero when open, taxels where the cube is."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from twinloop.sim.robots import get_robot, home_array
from twinloop.sim.tasks import CUBE_HALF
from twinloop.sim.twin import Twin, TwinConfig

OPEN, CLOSED = 0.7, -0.17  # gripper joint, rad (pads parallel and 40 mm apart at 0.46)


@pytest.fixture
def twin():
    twin = Twin(TwinConfig(task="reach_cube", cameras=()))
    twin.model.opt.gravity[:] = 0.0  # the cube floats between the jaws; no arm sag either
    # The MJCF's pads are inert (bit 1) and reach_cube's cube uses bit 0: let them touch, as
    # lerobot-env-so101's `jaw_pads` option does (the jaw hulls alone squeeze a cube out of the grip).
    for pad in twin.robot.tactile:
        twin.model.geom(pad.pad_geom).contype |= 1
        twin.model.geom(pad.pad_geom).conaffinity |= 1
    yield twin
    twin.close()


def _targets(twin: Twin, gripper: float) -> np.ndarray:
    """Home pose for the arm joints, `gripper` for the gripper."""
    q = home_array(twin.robot)
    q[twin.joint_names.index("gripper")] = gripper
    return q


def _pose_arm(twin: Twin, gripper: float) -> np.ndarray:
    q = _targets(twin, gripper)
    twin.data.qpos[twin._qpos_adr] = q
    twin.data.ctrl[twin._act_ids] = q
    twin.data.qvel[:] = 0.0
    mujoco.mj_forward(twin.model, twin.data)
    return q


def _place_cube(twin: Twin, pos: np.ndarray, mat: np.ndarray) -> None:
    adr = twin.model.jnt_qposadr[mujoco.mj_name2id(twin.model, mujoco.mjtObj.mjOBJ_JOINT, "cube")]
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, mat.flatten())
    twin.data.qpos[adr : adr + 3] = pos
    twin.data.qpos[adr + 3 : adr + 7] = quat
    twin.data.qvel[:] = 0.0
    mujoco.mj_forward(twin.model, twin.data)


def _in_cube_frame(twin: Twin, points: np.ndarray) -> np.ndarray:
    cube = twin.data.body("cube")
    return (points - cube.xpos) @ cube.xmat.reshape(3, 3)


def _check_image(twin: Twin, name: str) -> np.ndarray:
    image = twin.tactile(name)
    pad = next(p for p in twin.robot.tactile if p.name == name)
    assert image.shape == pad.shape and image.dtype == np.float32
    assert np.all(np.isfinite(image)) and np.all(image >= 0.0)
    return image


def test_robot_declares_both_fingers(twin):
    assert twin.tactile_names == ("fixed_jaw", "moving_jaw")
    assert [p.name for p in get_robot("so101").tactile] == list(twin.tactile_names)
    for name in twin.tactile_names:
        assert twin.tactile(name).shape == (8, 6)
        assert twin.tactile_taxels(name).shape == (8, 6, 3)
    with pytest.raises(ValueError, match="no tactile sensor"):
        twin.tactile("thumb")


def test_open_gripper_reads_zero(twin):
    q = _pose_arm(twin, OPEN)
    for name in twin.tactile_names:
        assert not np.any(_check_image(twin, name))
    for _ in range(50):  # moving, still touching nothing
        twin.step(q)
    for name in twin.tactile_names:
        assert not np.any(_check_image(twin, name))


@pytest.mark.parametrize("name", ["fixed_jaw", "moving_jaw"])
def test_cube_pressed_on_the_tip_half_lights_the_tip_rows(twin, name):
    """Static placement: the cube's edge on the plate's middle, 1 mm deep into the pad."""
    _pose_arm(twin, OPEN)
    pad = next(p for p in twin.robot.tactile if p.name == name)
    geom = twin.data.geom(pad.pad_geom)
    mat = geom.xmat.reshape(3, 3)
    normal, tip = mat @ np.asarray(pad.normal), mat @ np.asarray(pad.length_axis)
    axis = int(np.argmax(np.abs(pad.normal)))
    face = geom.xpos + normal * twin.model.geom(pad.pad_geom).size[axis]
    depth = 0.001
    _place_cube(twin, face + normal * (CUBE_HALF - depth) + tip * CUBE_HALF, mat)

    image = _check_image(twin, name)
    rows = pad.shape[0]
    assert not np.any(image[: rows // 2]), "rows grow towards the fingertip; the base half is not touched"
    tip_half = image[rows // 2 :]
    assert np.all(tip_half > 0.0)
    # shallow contact: the reading is about the penetration depth in metres
    assert np.all((tip_half > 0.8 * depth) & (tip_half < 1.3 * depth))
    other = next(n for n in twin.tactile_names if n != name)
    assert not np.any(_check_image(twin, other))


def test_closing_on_a_cube_reads_on_both_fingers_where_the_cube_is(twin):
    _pose_arm(twin, OPEN)
    fixed, moving = twin.data.geom("fixed_jaw_pad"), twin.data.geom("moving_jaw_pad")
    _place_cube(twin, (fixed.xpos + moving.xpos) / 2.0, fixed.xmat.reshape(3, 3))
    for name in twin.tactile_names:
        assert not np.any(twin.tactile(name)), "the cube starts clear of both pads"

    closed = _targets(twin, CLOSED)
    for _ in range(100):  # 1 s: the jaws close and squeeze
        twin.step(closed)
    gripper = twin.joint_state()[0][twin.joint_names.index("gripper")]
    assert gripper > 0.1, "the cube keeps the jaws apart"

    for name in twin.tactile_names:
        image = _check_image(twin, name)
        assert np.count_nonzero(image) >= 6, f"{name}: too few taxels touched"
        local = _in_cube_frame(twin, twin.tactile_taxels(name))
        outside = np.abs(local).max(axis=-1) - CUBE_HALF  # > 0: taxel outside the cube
        assert np.all(outside[image > 0] < 1e-4), f"{name}: pressure on a taxel that is not in the cube"
        assert not np.any(image[outside > 1e-3]), f"{name}: taxels clear of the cube must read zero"

    # reopening releases: the images return to zero
    for _ in range(100):
        twin.step(_targets(twin, OPEN))
    for name in twin.tactile_names:
        assert not np.any(twin.tactile(name))
