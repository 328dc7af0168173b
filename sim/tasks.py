"""Tasks: objects added to the scene, seeded randomization, and a success predicate.

The success predicate reads privileged sim state and is published on `sim/success` for evaluation only;
policies never see it.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

CUBE_HALF = 0.015  # m; a 3 cm cube fits the SO-101 gripper


@dataclass(frozen=True)
class ReachCube:
    """Bring the gripper's tool point to just above a red cube placed at random on the table."""

    name: str = "reach_cube"
    instruction: str = "reach the red cube"
    hover: float = 0.04  # m above the cube centre where the tool point should be
    tolerance: float = 0.02  # m
    x_range: tuple[float, float] = (0.16, 0.26)
    y_range: tuple[float, float] = (-0.10, 0.10)

    def build(self, spec: mujoco.MjSpec) -> None:
        body = spec.worldbody.add_body(name="cube", pos=[0.2, 0.0, CUBE_HALF])
        body.add_freejoint(name="cube")
        body.add_geom(
            name="cube",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[CUBE_HALF] * 3,
            rgba=[0.85, 0.1, 0.1, 1],
            mass=0.05,
        )

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        adr = model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "cube")]
        yaw = rng.uniform(-np.pi / 4, np.pi / 4)
        data.qpos[adr : adr + 3] = [rng.uniform(*self.x_range), rng.uniform(*self.y_range), CUBE_HALF]
        data.qpos[adr + 3 : adr + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]

    def goal(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        return data.body("cube").xpos + np.array([0.0, 0.0, self.hover])

    def success(self, model: mujoco.MjModel, data: mujoco.MjData, ee_site: str) -> bool:
        return bool(np.linalg.norm(data.site(ee_site).xpos - self.goal(model, data)) < self.tolerance)


_TASKS = {"reach_cube": ReachCube}


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str):
    try:
        return _TASKS[name]()
    except KeyError:
        raise ValueError(f"unknown task '{name}' (known: {', '.join(task_names())})") from None
