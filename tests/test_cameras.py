"""Twin cameras beyond the fixed front one: a wrist camera mounted on the gripper, true extrinsics from
the simulation state (`Twin.camera_pose`), and intrinsics for any image size."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from test_twin import _hull_centroid

from twinloop.sim.robots import home_array
from twinloop.sim.scene import CameraConfig, wrist_camera
from twinloop.sim.tasks import CUBE_HALF
from twinloop.sim.twin import Twin, TwinConfig

WIDE = CameraConfig(
    name="wide", width=200, height=80, fovy=50.0, pos=(0.4, 0.3, 0.35), target=(0.2, 0.0, 0.0)
)


@pytest.fixture(scope="module")
def twin():
    twin = Twin(TwinConfig(cameras=(CameraConfig(), wrist_camera("so101"), WIDE)))
    yield twin
    twin.close()


def _red_mask(image: np.ndarray) -> np.ndarray:
    rgb = image.astype(int)
    return (rgb[..., 0] > 25) & (rgb[..., 0] > 2.5 * np.maximum(rgb[..., 1], rgb[..., 2]))


def _cube_corners(twin: Twin) -> np.ndarray:
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    body = twin.data.body("cube")
    return body.xpos + (CUBE_HALF * signs) @ body.xmat.reshape(3, 3).T


def _place_cube(twin: Twin, position: np.ndarray, yaw: float) -> None:
    """Put the cube's free joint at `position` (in the air is fine: nothing is stepped) and recompute."""
    joint = twin.model.body("cube").jntadr[0]
    adr = twin.model.jnt_qposadr[joint]
    twin.data.qpos[adr : adr + 3] = position
    twin.data.qpos[adr + 3 : adr + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
    mujoco.mj_forward(twin.model, twin.data)


def _projection_error(twin: Twin, camera: str) -> float:
    """Distance (px) between the projected cube hull's centroid and the red pixels' centroid."""
    K = twin.intrinsics(camera)  # noqa: N806
    position, rotation = twin.camera_pose(camera)
    in_cam = (_cube_corners(twin) - position) @ rotation
    assert np.all(in_cam[:, 2] > 0)
    uv = (in_cam @ K.T)[:, :2] / in_cam[:, 2:]
    centroid, area = _hull_centroid(uv)
    rows, cols = np.nonzero(_red_mask(twin.render(camera)))
    assert len(rows) == pytest.approx(area, rel=0.12), "the cube is occluded or mis-scaled"
    return float(np.hypot(cols.mean() - centroid[0], rows.mean() - centroid[1]))


def test_camera_pose_of_a_fixed_camera_matches_its_config(twin):
    for cam in (CameraConfig(), WIDE):
        position, rotation = twin.camera_pose(cam.name)
        np.testing.assert_allclose(position, cam.pos, atol=1e-9)
        np.testing.assert_allclose(rotation, cam.opencv_rotation(), atol=1e-9)


def test_wrist_camera_moves_with_the_arm(twin):
    twin.reset(0)
    front_before = twin.camera_pose("front")
    position, rotation = twin.camera_pose("wrist")
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-9)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    target = np.clip(
        home_array(twin.robot) + [0.4, -0.2, 0.2, 0.3, 0.5, 0.0], twin.limits.lower, twin.limits.upper
    )
    for _ in range(50):
        twin.step(target)
    moved_position, moved_rotation = twin.camera_pose("wrist")
    assert np.linalg.norm(moved_position - position) > 0.03
    assert np.degrees(np.arccos(np.clip((np.trace(rotation.T @ moved_rotation) - 1) / 2, -1, 1))) > 10
    # it stays rigidly attached to the gripper body
    gripper = twin.data.body("gripper")
    offset = (moved_position - gripper.xpos) @ gripper.xmat.reshape(3, 3)
    np.testing.assert_allclose(offset, wrist_camera("so101").pos, atol=1e-9)
    # the fixed camera did not move
    np.testing.assert_allclose(twin.camera_pose("front")[0], front_before[0])
    np.testing.assert_allclose(twin.camera_pose("front")[1], front_before[1])


def test_wrist_camera_sees_the_jaws_and_an_object_between_them(twin):
    twin.reset(0)
    position, rotation = twin.camera_pose("wrist")
    jaws = [twin.data.geom(name).xpos for name in ("fixed_jaw_pad", "moving_jaw_pad")]
    K = twin.intrinsics("wrist")  # noqa: N806
    cam = twin.camera("wrist")
    for point in jaws:
        p = (point - position) @ rotation
        u, v = (K @ p)[:2] / p[2]
        assert p[2] > 0 and 0 <= u < cam.width and 0 <= v < cam.height, "jaw tip out of view"


def test_wrist_projection_matches_the_render(twin):
    """As test_twin.test_camera_geometry_matches_the_render, for the mounted camera at several arm poses,
    with the cube held up in its view at 8-14 cm, and extrinsics taken from `Twin.camera_pose`."""
    errors = []
    for pose in range(6):
        twin.reset(pose)
        rng = np.random.default_rng(pose)
        target = np.clip(
            home_array(twin.robot) + rng.uniform(-0.25, 0.25, 6), twin.limits.lower, twin.limits.upper
        )
        for _ in range(30):
            twin.step(target)
        position, rotation = twin.camera_pose("wrist")
        in_cam = np.array([rng.uniform(-0.015, 0.015), rng.uniform(-0.02, 0.0), rng.uniform(0.08, 0.14)])
        _place_cube(twin, position + rotation @ in_cam, yaw=rng.uniform(0, np.pi))
        errors.append(_projection_error(twin, "wrist"))
    # a cube ~40 px wide at 8 cm: single frames within ~1 px (jaw edges can nick the silhouette)
    assert max(errors) < 1.5 and np.mean(errors) < 0.5, errors


def test_non_square_intrinsics(twin):
    K = twin.intrinsics("wide")  # noqa: N806
    focal = 0.5 * 80 / np.tan(np.deg2rad(50.0) / 2)  # fovy is vertical: focal from the height
    np.testing.assert_allclose(K, [[focal, 0, 99.5], [0, focal, 39.5], [0, 0, 1]])
    assert twin.render("wide").shape == (80, 200, 3)
    assert twin.render("wrist").shape == (120, 160, 3)
    twin.reset(3)
    assert _projection_error(twin, "wide") < 1.0


def test_camera_config_errors():
    with pytest.raises(ValueError, match="no body 'nope'"):
        Twin(TwinConfig(cameras=(CameraConfig(name="w", body="nope", pos=(0, 0, 0), target=(0, 0, -1)),)))
    with pytest.raises(ValueError, match="unique"):
        Twin(TwinConfig(cameras=(CameraConfig(), CameraConfig())))
    with pytest.raises(ValueError, match="no default wrist camera"):
        wrist_camera("nope")
    with pytest.raises(ValueError, match="coincide"):
        CameraConfig(pos=(0, 0, 0), target=(0, 0, 0))


def test_quat_orientation_equals_the_look_at_one():
    cam = wrist_camera("so101")
    by_quat = CameraConfig(name="q", body=cam.body, pos=cam.pos, quat=tuple(cam.quaternion()))
    np.testing.assert_allclose(by_quat.rotation(), cam.rotation(), atol=1e-12)
