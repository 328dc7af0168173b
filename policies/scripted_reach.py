"""A scripted, vision-based reach policy: the honest controller of the first closed loop.

It finds the red cube in the camera image by colour, back-projects the blob centroid onto the table
plane with the camera's intrinsics and pose, solves IK on the robot's MuJoCo model for a point above the
cube, and returns a velocity-limited joint-space chunk toward it (via a higher waypoint while still far).
It sees only what a learned policy would see: joint positions, an image and camera calibration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twinloop.policies.base import CameraModel, Observation, PolicyConfig, register_policy
from twinloop.sim.kinematics import ArmKinematics
from twinloop.sim.robots import get_robot


@dataclass(frozen=True)
class ScriptedReachConfig(PolicyConfig):
    robot: str = "so101"
    camera: str = "front"
    hover: float = 0.04  # m above the estimated cube centre
    approach_height: float = 0.06  # m extra height while the tool is still far away horizontally
    near: float = 0.03  # m: horizontal distance below which the tool descends
    max_joint_speed: float = 1.0  # rad/s in the chunk
    cube_half: float = 0.015  # m: the visible top face sits at 2 * cube_half


def find_red_blob(image: np.ndarray, min_pixels: int = 12) -> tuple[float, float] | None:
    """Centroid (u, v) of strongly red pixels, or None when too few are visible."""
    rgb = image.astype(np.int16)
    mask = (rgb[..., 0] > 120) & (rgb[..., 0] - rgb[..., 1] > 70) & (rgb[..., 0] - rgb[..., 2] > 70)
    vs, us = np.nonzero(mask)
    if len(us) < min_pixels:
        return None
    return float(us.mean()), float(vs.mean())


def pixel_to_plane(u: float, v: float, camera: CameraModel, height: float) -> np.ndarray | None:
    """Intersect the viewing ray through pixel (u, v) with the horizontal plane z = height."""
    ray = camera.rotation @ np.linalg.solve(camera.K, np.array([u, v, 1.0]))
    if abs(ray[2]) < 1e-9:
        return None
    scale = (height - camera.position[2]) / ray[2]
    return None if scale <= 0 else camera.position + scale * ray


class ScriptedReachPolicy:
    def __init__(self, config: ScriptedReachConfig) -> None:
        self.config = config
        self.kinematics = ArmKinematics(get_robot(config.robot))
        self._last_goal: np.ndarray | None = None

    def reset(self) -> None:
        self._last_goal = None

    def locate_cube(self, obs: Observation) -> np.ndarray | None:
        cam = self.config.camera
        if cam not in obs.images or cam not in obs.cameras:
            return None
        blob = find_red_blob(obs.images[cam])
        if blob is None:
            return None
        # the centroid mixes the top face and the visible side; aim at the face-top plane's hit, then
        # drop to the cube centre height
        top = pixel_to_plane(*blob, obs.cameras[cam], height=1.5 * self.config.cube_half)
        return None if top is None else top - np.array([0.0, 0.0, 0.5 * self.config.cube_half])

    def predict_chunk(self, obs: Observation) -> np.ndarray:
        cfg = self.config
        missing = [n for n in cfg.joint_names if n not in obs.joint_names]
        if missing:
            raise ValueError(f"observation lacks joints {missing} (policy is for robot '{cfg.robot}')")
        order = [obs.joint_names.index(n) for n in cfg.joint_names]
        q = np.asarray(obs.state, float)[order]
        cube = self.locate_cube(obs)
        if cube is not None:
            self._last_goal = cube + np.array([0.0, 0.0, cfg.hover])
        if self._last_goal is None:  # nothing seen yet: hold still
            return np.repeat(q[None], cfg.horizon, axis=0)
        goal = self._last_goal.copy()
        tool = self.kinematics.forward(q)
        if np.linalg.norm(tool[:2] - goal[:2]) > cfg.near:
            goal[2] += cfg.approach_height
        q_goal, _ = self.kinematics.solve_ik(goal, q, rest=q)
        steps = np.arange(cfg.horizon)[:, None] * cfg.dt * cfg.max_joint_speed
        return q + np.clip(q_goal - q, -steps, steps)


@register_policy("scripted_reach")
def make_scripted_reach(**kwargs) -> ScriptedReachPolicy:
    kwargs.setdefault("joint_names", get_robot(kwargs.get("robot", "so101")).joint_names)
    return ScriptedReachPolicy(ScriptedReachConfig(**kwargs))
