"""The MuJoCo twin without ROS: joints, limits, seeded resets, position tracking and camera geometry."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from support.geometry import hull_centroid

from twinloop.sim.robots import get_robot, home_array
from twinloop.sim.scene import CameraConfig
from twinloop.sim.tasks import CUBE_HALF, ReachCube
from twinloop.sim.twin import Twin, TwinConfig

SO101_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
SIDE = CameraConfig(name="side", width=160, height=120, fovy=60.0, pos=(0.3, -0.45, 0.3), target=(0.21, 0, 0))


@pytest.fixture(scope="module")
def twin():
    twin = Twin(TwinConfig(cameras=(CameraConfig(), SIDE)))
    yield twin
    twin.close()


def _cube_xyz(twin: Twin) -> np.ndarray:
    return twin.data.body("cube").xpos.copy()


def test_joint_names_match_lerobot_so101(twin):
    assert twin.joint_names == SO101_JOINTS
    assert get_robot("so101").joint_names == SO101_JOINTS
    assert len(twin.joint_state()[0]) == 6


def test_limits_come_from_the_mjcf(twin):
    root = ET.parse(get_robot("so101").mjcf).getroot()
    assert root.find("compiler").get("angle") == "radian"
    ranges = {
        j.get("name"): [float(x) for x in j.get("range").split()]
        for j in root.iter("joint")
        if j.get("range")
    }
    expected = np.array([ranges[name] for name in SO101_JOINTS])
    np.testing.assert_allclose(twin.limits.lower, expected[:, 0], atol=1e-12)
    np.testing.assert_allclose(twin.limits.upper, expected[:, 1], atol=1e-12)
    assert np.all(twin.limits.velocity == get_robot("so101").max_velocity)
    home = home_array(twin.robot)
    assert np.all(home > twin.limits.lower) and np.all(home < twin.limits.upper)


def test_reset_is_deterministic(twin):
    twin.reset(11)
    qpos_a, image_a = twin.data.qpos.copy(), twin.render("front")
    for _ in range(20):  # disturb everything in between
        twin.step(home_array(twin.robot) + 0.3)
    twin.reset(12)
    twin.reset(11)
    np.testing.assert_array_equal(twin.data.qpos, qpos_a)
    assert not np.any(twin.data.qvel)
    np.testing.assert_array_equal(twin.render("front"), image_a)
    np.testing.assert_array_equal(twin.joint_state()[0], home_array(twin.robot))
    assert twin.episode_seed == 11


def test_different_seeds_place_the_cube_differently_within_the_task_ranges(twin):
    task = ReachCube()
    positions = []
    for seed in range(8):
        twin.reset(seed)
        positions.append(_cube_xyz(twin))
    positions = np.array(positions)
    assert np.all((positions[:, 0] >= task.x_range[0]) & (positions[:, 0] <= task.x_range[1]))
    assert np.all((positions[:, 1] >= task.y_range[0]) & (positions[:, 1] <= task.y_range[1]))
    np.testing.assert_allclose(positions[:, 2], CUBE_HALF)  # resting on the table
    gaps = np.linalg.norm(positions[:, None, :2] - positions[None, :, :2], axis=-1)
    assert np.all(gaps[~np.eye(len(positions), dtype=bool)] > 1e-4)  # all distinct


def test_sim_time_keeps_increasing_across_resets(twin):
    start = twin.time
    times = []
    for seed in range(3):
        twin.reset(seed)
        assert twin.time >= (times[-1] if times else start)  # a reset never rewinds /clock
        for _ in range(5):
            twin.step(home_array(twin.robot))
        times.append(twin.time)
    assert np.all(np.diff([start, *times]) > 0)
    assert times[-1] - start == pytest.approx(15 * twin.control_period)
    assert twin.control_period == pytest.approx(0.01)  # 100 Hz control, 5 physics steps each


def test_step_tracks_position_targets(twin):
    rng = np.random.default_rng(5)
    home = home_array(twin.robot)
    ticks = round(1.0 / twin.control_period)
    for seed in range(3):
        twin.reset(seed)
        offset = rng.uniform(0.15, 0.3, 6) * rng.choice([-1.0, 1.0], 6)
        target = np.clip(home + offset, twin.limits.lower, twin.limits.upper)
        for _ in range(ticks):
            twin.step(target)
        q, qd, effort = twin.joint_state()
        # the STS3215 position servo (kp 17.8) sags ~0.02 rad under gravity; 0.04 rad is ~2.3 degrees
        np.testing.assert_allclose(q, target, atol=0.04)
        assert np.all(np.abs(q - home) > 0.1)  # it really moved
        assert np.abs(qd).max() < 0.05  # and settled
        assert np.all(np.isfinite(effort))


@pytest.mark.parametrize("camera", ["front", "side"])
def test_camera_geometry_matches_the_render(twin, camera):
    """Project the cube with K and the CameraConfig pose and compare with the red pixels of the render.

    Why this check is exact: the image of a convex polyhedron under a pinhole is the convex hull of its
    projected corners, and the renderer fills every pixel whose centre lies inside it. So the centroid of
    the cube's pixels (in pixel-centre coordinates, the convention of K) equals the hull's area centroid up
    to rasterization noise (a small fraction of a pixel), and the pixel count equals the hull's area.
    Projecting just the cube's 3-D centre is not exact (perspective moves it off the silhouette's
    centroid), and a strict colour threshold would drop the dimly lit side faces; the mask here only asks
    for a red hue.
    """
    cam = twin.camera(camera)
    K = twin.intrinsics(camera)  # noqa: N806
    R, C = cam.opencv_rotation(), np.asarray(cam.pos)  # noqa: N806
    assert K[0, 2] == (cam.width - 1) / 2 and K[1, 2] == (cam.height - 1) / 2 and K[0, 0] == K[1, 1]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    errors = []
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    for seed in range(5):
        twin.reset(seed)
        body = twin.data.body("cube")
        corners = body.xpos + (CUBE_HALF * signs) @ body.xmat.reshape(3, 3).T
        in_cam = (corners - C) @ R  # camera-frame coordinates, z forward
        assert np.all(in_cam[:, 2] > 0)
        uv = (in_cam @ K.T)[:, :2] / in_cam[:, 2:]
        centroid, area = hull_centroid(uv)

        image = twin.render(camera)
        rgb = image.astype(int)
        red = (rgb[..., 0] > 25) & (rgb[..., 0] > 2.5 * np.maximum(rgb[..., 1], rgb[..., 2]))
        rows, cols = np.nonzero(red)
        assert len(rows) == pytest.approx(area, rel=0.12), "the cube is occluded or mis-scaled"
        error = np.hypot(cols.mean() - centroid[0], rows.mean() - centroid[1])
        assert error < 1.0, (camera, seed, error)
        errors.append(error)
    # on average well under a pixel: a half-pixel convention slip (cx = W/2) would show up here
    assert np.mean(errors) < 0.4, errors


def test_render_shape_and_dtype(twin):
    for cam in twin.config.cameras:
        image = twin.render(cam.name)
        assert image.shape == (cam.height, cam.width, 3) and image.dtype == np.uint8
        assert image.std() > 5  # a real scene, not a blank buffer
    assert twin.render("side").shape == (120, 160, 3)
    assert twin.render("front").shape == (240, 320, 3)


def test_success_needs_the_tool_at_the_goal(twin):
    twin.reset(0)
    assert not twin.success()  # home is ~19 cm up, far from the hover point


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (TwinConfig(robot="nope"), r"unknown robot 'nope' \(known: .*so101"),
        (TwinConfig(task="nope"), r"unknown task 'nope' \(known: .*reach_cube"),
    ],
)
def test_unknown_robot_or_task_is_a_readable_error(config, message):
    with pytest.raises(ValueError, match=message):
        Twin(config)


def test_unknown_camera_is_a_readable_error(twin):
    for call in (twin.render, twin.intrinsics, twin.camera):
        with pytest.raises(ValueError, match=r"no camera 'nope' \(have: \['front', 'side'\]\)"):
            call("nope")
