"""Twin cameras beyond the fixed front one: a wrist camera mounted on the gripper, true extrinsics from
the simulation state (`Twin.camera_pose`), and intrinsics for any image size."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from support.geometry import hull_centroid

from twinloop.sim import scene
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
    centroid, area = hull_centroid(uv)
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


# -- rendering speed: render_quality ------------------------------------------------------------------
def _drawn_triangles(model: mujoco.MjModel) -> int:
    """Triangles of the mesh geoms a camera draws by default (geom groups 0-2)."""
    drawn = (model.geom_group < 3) & (model.geom_type == mujoco.mjtGeom.mjGEOM_MESH)
    return int(model.mesh_facenum[model.geom_dataid[drawn]].sum())


def test_fast_render_quality_changes_the_pictures_not_the_physics():
    cams = (CameraConfig(width=160, height=120), wrist_camera("so101"))
    twins = {
        q: Twin(TwinConfig(task="pick_lift_cube", cameras=cams, render_quality=q)) for q in ("fast", "full")
    }
    try:
        fast, full = twins["fast"], twins["full"]
        assert _drawn_triangles(fast.model) < 0.2 * _drawn_triangles(full.model)
        # collision geoms keep their meshes; masses and inertias are the MJCF's
        np.testing.assert_array_equal(fast.model.body_mass, full.model.body_mass)
        np.testing.assert_array_equal(fast.model.body_inertia, full.model.body_inertia)
        rng = np.random.default_rng(0)
        for twin in (fast, full):
            twin.reset(2)
        for step in range(60):
            target = np.clip(
                home_array(fast.robot) + rng.uniform(-0.3, 0.3, 6), fast.limits.lower, fast.limits.upper
            )
            for twin in (fast, full):
                twin.step(target)
            if step % 20 == 19:
                np.testing.assert_array_equal(fast.data.qpos, full.data.qpos)  # bit-identical
                for cam in cams:
                    a, b = (t.render(cam.name).astype(int) for t in (fast, full))
                    assert np.abs(a - b).mean() < 1.0, cam.name  # out of 255, over the whole image
                    assert (np.abs(a - b).max(axis=-1) > 48).mean() < 0.01, cam.name
    finally:
        for twin in twins.values():
            twin.close()


def test_cameras_of_one_size_share_a_renderer_and_get_their_own_images(twin):
    other = CameraConfig(name="front2", pos=(0.2, 0.5, 0.4))
    shared = Twin(TwinConfig(cameras=(CameraConfig(), other)))
    try:
        a, b = shared.render("front"), shared.render("front2")
        assert len(shared._renderers) == 1
        assert a.shape == b.shape == (240, 320, 3) and not np.array_equal(a, b)
        np.testing.assert_array_equal(shared.render("front"), a)
    finally:
        shared.close()
    with pytest.raises(ValueError, match="render_quality"):
        Twin(TwinConfig(render_quality="ultra"))


def test_cluster_mesh_keeps_a_box_exact():
    """A finely tessellated box decimated on a coarse grid keeps its 8 corners, its faces flat and its
    outward winding (quadric placement), with far fewer triangles."""
    n = 12  # vertices per box edge
    grid = np.linspace(-1.0, 1.0, n)
    verts, faces = [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            base = len(verts)
            u, v = np.meshgrid(grid, grid, indexing="ij")
            pts = np.zeros((n * n, 3))
            pts[:, axis] = sign
            pts[:, (axis + 1) % 3], pts[:, (axis + 2) % 3] = u.ravel(), v.ravel()
            verts += pts.tolist()
            for i in range(n - 1):
                for j in range(n - 1):
                    a = base + i * n + j
                    quad = [(a, a + n, a + n + 1), (a, a + n + 1, a + 1)]
                    faces += quad if sign > 0 else [t[::-1] for t in quad]
    verts, faces = np.asarray(verts), np.asarray(faces)
    merged, inverse = np.unique(verts.round(9), axis=0, return_inverse=True)
    faces = inverse.ravel()[faces]
    new_verts, new_faces = scene.cluster_mesh(merged, faces, cell=0.7)
    assert len(new_faces) < 0.2 * len(faces)
    assert np.abs(new_verts).max() <= 1.0 + 1e-9
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    assert np.min(np.linalg.norm(new_verts[:, None] - corners[None], axis=2), axis=0).max() < 1e-6
    # every vertex still lies on the box surface: max |coordinate| is 1
    np.testing.assert_allclose(np.abs(new_verts).max(axis=1), 1.0, atol=1e-6)
    # outward winding: the normal of each triangle points away from the centre
    tri = new_verts[new_faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert np.all(np.einsum("ij,ij->i", normals, tri.mean(axis=1)) > 0)


def test_read_stl_binary_and_ascii_agree(tmp_path):
    tris = np.array([[[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[1, 0, 0], [1, 1, 0], [0, 1, 0]]], np.float32)
    records = np.zeros(2, scene._STL_RECORD)
    records["verts"] = tris
    binary = tmp_path / "two.stl"
    binary.write_bytes(
        b"solid looks like ascii but is binary".ljust(80) + np.uint32(2).tobytes() + records.tobytes()
    )
    lines = ["solid two"]
    for t in tris:
        lines += [
            "facet normal 0 0 1",
            "outer loop",
            *(f"vertex {x} {y} {z}" for x, y, z in t),
            "endloop",
            "endfacet",
        ]
    ascii_file = tmp_path / "two_ascii.stl"
    ascii_file.write_text("\n".join([*lines, "endsolid two"]))
    for path in (binary, ascii_file):
        verts, faces = scene.read_stl(path)
        assert verts.shape == (4, 3) and faces.shape == (2, 3)
        np.testing.assert_array_equal(verts[faces], tris)
    (tmp_path / "bad.stl").write_text("solid nothing here")
    with pytest.raises(ValueError, match="not an STL"):
        scene.read_stl(tmp_path / "bad.stl")
