"""Scene assembly with MjSpec: robot + table + task objects + cameras, headless-render friendly.

Why MjSpec rather than XML text: robots come from package files with their own mesh folders; MjSpec
loads them in place and lets tasks and cameras be added programmatically.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from twinloop.sim.robots import RobotSpec


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
    return spec


def disable_shadows(model: mujoco.MjModel) -> None:
    model.light_castshadow[:] = 0
    model.vis.quality.offsamples = 0
