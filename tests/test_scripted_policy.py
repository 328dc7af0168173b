"""The scripted vision-based reach policy: blob finding, back-projection, chunks, an offline closed loop."""

from __future__ import annotations

import numpy as np
import pytest

from twinloop.hardware.executor import TrajectoryChunk, TrajectoryExecutor
from twinloop.policies.base import CameraModel, Observation, make_policy, policy_names
from twinloop.policies.scripted_reach import ScriptedReachPolicy, find_red_blob, pixel_to_plane
from twinloop.sim.scene import CameraConfig
from twinloop.sim.twin import Twin

GREY = (128, 128, 125)


@pytest.fixture(scope="module")
def twin():
    twin = Twin()
    yield twin
    twin.close()


@pytest.fixture(scope="module")
def policy() -> ScriptedReachPolicy:
    return make_policy("scripted_reach")


def _camera_model(cam: CameraConfig, K: np.ndarray) -> CameraModel:  # noqa: N803
    return CameraModel(K=K, rotation=cam.opencv_rotation(), position=np.asarray(cam.pos, float))


def _observe(twin: Twin, image: np.ndarray | None = None) -> Observation:
    cam = twin.config.cameras[0]
    return Observation(
        stamp=twin.time,
        joint_names=twin.joint_names,
        state=twin.joint_state()[0],
        images={cam.name: twin.render(cam.name) if image is None else image},
        cameras={cam.name: _camera_model(cam, twin.intrinsics(cam.name))},
    )


# ------------------------------------------------------------------------------------------------------
# find_red_blob / pixel_to_plane
# ------------------------------------------------------------------------------------------------------
def test_find_red_blob_centroid_is_exact():
    image = np.full((60, 80, 3), GREY, np.uint8)
    image[10:20, 30:45] = (220, 20, 25)  # rows 10..19, cols 30..44
    image[40:50, 5:15] = (230, 220, 30)  # yellow (the arm's colour) is not red
    image[45:55, 60:70] = (240, 240, 240)  # nor is white
    assert find_red_blob(image) == (37.0, 14.5)


def test_find_red_blob_without_red_is_none():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (48, 64, 1), dtype=np.uint8).repeat(3, axis=2)
    assert find_red_blob(grey) is None
    assert find_red_blob(np.zeros((48, 64, 3), np.uint8)) is None
    speck = np.full((48, 64, 3), GREY, np.uint8)
    speck[5:8, 5:8] = (220, 20, 20)  # 9 pixels: below min_pixels, treated as noise
    assert find_red_blob(speck) is None
    speck[5:9, 5:9] = (220, 20, 20)  # 16 pixels: a blob
    assert find_red_blob(speck) == (6.5, 6.5)


def test_pixel_to_plane_inverts_a_projection():
    rng = np.random.default_rng(42)
    K = np.array([[410.0, 0.0, 319.5], [0.0, 410.0, 239.5], [0.0, 0.0, 1.0]])  # noqa: N806
    for _ in range(50):
        cam = CameraConfig(
            pos=tuple(rng.uniform([0.3, -0.3, 0.3], [0.7, 0.3, 0.8])),
            target=tuple(rng.uniform([0.0, -0.2, 0.0], [0.3, 0.2, 0.1])),
        )
        model = _camera_model(cam, K)
        height = rng.uniform(0.0, 0.1)
        point = np.array([*rng.uniform([0.05, -0.2], [0.35, 0.2]), height])
        x = model.rotation.T @ (point - model.position)
        assert x[2] > 0
        u, v = (K @ x)[:2] / x[2]
        back = pixel_to_plane(u, v, model, height)
        assert back is not None
        np.testing.assert_allclose(back, point, atol=1e-9, rtol=0)


def test_pixel_to_plane_rejects_rays_that_miss_the_plane():
    K = np.array([[300.0, 0.0, 159.5], [0.0, 300.0, 119.5], [0.0, 0.0, 1.0]])  # noqa: N806
    down = _camera_model(CameraConfig(pos=(0.5, 0.0, 0.5), target=(0.2, 0.0, 0.0)), K)
    assert pixel_to_plane(159.5, 119.5, down, height=0.0) is not None
    assert pixel_to_plane(159.5, 119.5, down, height=1.0) is None  # the plane is behind the camera
    level = _camera_model(CameraConfig(pos=(0.0, 0.0, 0.5), target=(1.0, 0.0, 0.5)), K)
    assert pixel_to_plane(159.5, 0.0, level, height=0.0) is None  # above the horizon: the ray goes up
    assert pixel_to_plane(159.5, 119.5, level, height=0.0) is None  # parallel to the plane
    hit = pixel_to_plane(159.5, 239.0, level, height=0.0)  # below the horizon: hits the floor ahead
    assert hit is not None and hit[0] > 0 and hit[2] == pytest.approx(0.0)


# ------------------------------------------------------------------------------------------------------
# the policy on rendered twin images
# ------------------------------------------------------------------------------------------------------
def test_cube_localization_error_on_renders(twin, policy):
    errors = []
    for seed in range(10):
        twin.reset(seed)
        estimate = policy.locate_cube(_observe(twin))
        assert estimate is not None, seed
        errors.append(float(np.linalg.norm(estimate - twin.data.body("cube").xpos)))
    assert max(errors) < 0.015, np.round(errors, 4)


def test_predict_chunk_shape_start_speed_and_gripper(twin, policy):
    cfg = policy.config
    for seed in (0, 3):
        twin.reset(seed)
        policy.reset()
        obs = _observe(twin)
        chunk = policy.predict_chunk(obs)
        assert chunk.shape == (cfg.horizon, 6) == (16, 6)
        np.testing.assert_array_equal(chunk[0], obs.state)
        assert np.abs(np.diff(chunk, axis=0)).max() <= cfg.max_joint_speed * cfg.dt + 1e-12
        assert np.all(chunk[:, 5] == obs.state[5])  # the gripper joint is not moved
        assert np.abs(chunk[-1] - chunk[0]).max() > 0.1  # it does head somewhere
        lower, upper = twin.limits.lower, twin.limits.upper
        assert np.all(chunk >= lower - 1e-12) and np.all(chunk <= upper + 1e-12)


def test_predict_chunk_follows_the_configured_joint_order(twin, policy):
    twin.reset(2)
    policy.reset()
    obs = _observe(twin)
    expected = policy.predict_chunk(obs)
    policy.reset()
    order = [5, 3, 0, 4, 1, 2]
    shuffled = Observation(
        stamp=obs.stamp,
        joint_names=tuple(obs.joint_names[i] for i in order),
        state=obs.state[order],
        images=obs.images,
        cameras=obs.cameras,
    )
    np.testing.assert_array_equal(policy.predict_chunk(shuffled), expected)


def test_predict_chunk_holds_still_without_a_cube(twin, policy):
    twin.reset(1)
    policy.reset()
    blank = np.full((240, 320, 3), GREY, np.uint8)
    obs = _observe(twin, image=blank)
    assert policy.locate_cube(obs) is None
    chunk = policy.predict_chunk(obs)
    assert chunk.shape == (16, 6)
    assert np.all(chunk == obs.state[None])
    no_camera = Observation(stamp=obs.stamp, joint_names=obs.joint_names, state=obs.state)
    assert np.all(policy.predict_chunk(no_camera) == obs.state[None])


def test_make_policy_unknown_name_lists_known_policies():
    assert "scripted_reach" in policy_names()
    with pytest.raises(ValueError, match=r"unknown policy 'nope' \(known: .*scripted_reach"):
        make_policy("nope")


# ------------------------------------------------------------------------------------------------------
# offline closed loop: the ROS graph's data flow without ROS
# ------------------------------------------------------------------------------------------------------
def test_closed_loop_reaches_the_cube(twin, policy):
    """Twin + TrajectoryExecutor + policy at 10 Hz, as in the graph: chunks stamped at observation time."""
    cfg = policy.config
    ticks_per_frame = round(cfg.dt / twin.control_period)
    assert ticks_per_frame == 10
    executor = TrajectoryExecutor(twin.joint_names, twin.limits)
    outcomes = {}
    for seed in range(10):
        twin.reset(seed)
        policy.reset()
        executor.reset(twin.joint_state()[0])
        start, reached_at, stayed, tick = twin.time, None, False, 0
        while twin.time - start < 8.0 - 1e-9:
            if tick % ticks_per_frame == 0:
                obs = _observe(twin)
                chunk = policy.predict_chunk(obs)
                accepted, reason = executor.submit(
                    TrajectoryChunk(twin.joint_names, obs.stamp, np.arange(len(chunk)) * cfg.dt, chunk),
                    twin.time,
                )
                assert accepted, reason
            twin.step(executor.step(twin.time))
            tick += 1
            if reached_at is None and twin.success():
                reached_at = twin.time
            if reached_at is not None and twin.time - reached_at >= 1.0:
                stayed = twin.success()  # it settles at the goal, not just passes through it
                break
        outcomes[seed] = (reached_at is not None and stayed, twin.time - start)
    assert executor.stats.rejected == 0
    successes = sum(ok for ok, _ in outcomes.values())
    assert successes >= 9, outcomes
