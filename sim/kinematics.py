"""Forward and inverse kinematics on the robot's own MuJoCo model.

IK is damped least squares on the end-effector site position, with a weak pull toward a rest pose so
the redundant joints stay sensible. Position-only is enough for the 5-DoF SO-101 (it cannot reach an
arbitrary orientation). Optionally (`axis=`) one axis of the site frame is also pointed along a world
direction, e.g. the 7-DoF Panda's tool z-axis straight down; without it the solver is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import mujoco
import numpy as np

from twinloop.sim.robots import RobotSpec


class AxisGoal(NamedTuple):
    """Turn the site frame's axis `site_axis` (0 x, 1 y, 2 z) onto the world `direction`."""

    site_axis: int
    direction: np.ndarray
    weight: float  # metres per radian, against the position rows


class ArmKinematics:
    """A private MjModel/MjData of the bare robot; never touches the simulation's state."""

    def __init__(self, robot: RobotSpec) -> None:
        self.robot = robot
        self.model = mujoco.MjModel.from_xml_path(str(robot.mjcf))
        self.data = mujoco.MjData(self.model)
        self.site_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, robot.ee_site)
        if self.site_id < 0:
            raise ValueError(f"{robot.name}: no site '{robot.ee_site}' in {robot.mjcf}")
        self.qpos_adr = np.array([self._joint(n, "jnt_qposadr") for n in robot.joint_names])
        self.dof_adr = np.array([self._joint(n, "jnt_dofadr") for n in robot.joint_names])
        ids = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in robot.joint_names]
        self.lower = self.model.jnt_range[ids, 0].copy()
        self.upper = self.model.jnt_range[ids, 1].copy()
        self.arm_mask = np.array([n in robot.arm_joints for n in robot.joint_names])

    def _joint(self, name: str, field: str) -> int:
        jid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, name)
        if jid < 0:
            raise ValueError(f"{self.robot.name}: no joint '{name}' in {self.robot.mjcf}")
        return int(getattr(self.model, field)[jid])

    def forward(self, q: np.ndarray) -> np.ndarray:
        """End-effector site position (base frame) for joint positions q (robot joint order)."""
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)  # cdof, needed by mj_jacSite
        return self.data.site_xpos[self.site_id].copy()

    def solve_ik(
        self,
        target: np.ndarray,
        q_init: np.ndarray,
        rest: np.ndarray | None = None,
        iterations: int = 100,
        damping: float = 1e-3,
        tolerance: float = 1e-3,
        axis: np.ndarray | None = None,
        site_axis: int = 2,
        axis_weight: float = 0.3,
        axis_tolerance: float = 1e-2,
        axes: Sequence[AxisGoal] = (),
        rest_gain: float = 0.1,
        step_tolerance: float = 0.0,
    ) -> tuple[np.ndarray, float]:
        """Joint positions that put the site at `target`; returns (q, residual distance in metres).

        Orientation goals turn axes of the site frame onto world directions: `axis` (with `site_axis`,
        `axis_weight`) is the one-goal shorthand, `axes` a list of `AxisGoal`s (e.g. a grasp: jaw axis
        across the cube, approach axis weakly down). Weights are metres per radian against position. The
        loop stops when the position is within `tolerance` and every goal within `axis_tolerance` (rad),
        or when a step is smaller than `step_tolerance`. `rest_gain` pulls the redundant joints toward
        `rest` in the null space (0 turns it off).
        """
        goals = list(axes)
        if axis is not None:
            goals.append(AxisGoal(site_axis, np.asarray(axis, float), axis_weight))
        goals = [
            AxisGoal(g.site_axis, np.asarray(g.direction, float) / np.linalg.norm(g.direction), g.weight)
            for g in goals
        ]
        q = np.clip(np.asarray(q_init, float).copy(), self.lower, self.upper)
        rest = q.copy() if rest is None else np.asarray(rest, float)
        jac = np.zeros((3, self.model.nv))
        jac_rot = np.zeros((3, self.model.nv))
        cols = self.dof_adr[self.arm_mask]
        error = np.inf
        for _ in range(iterations):
            pos = self.forward(q)
            delta = np.asarray(target, float) - pos
            error = float(np.linalg.norm(delta))
            if not goals:
                if error < tolerance:
                    break
                mujoco.mj_jacSite(self.model, self.data, jac, None, self.site_id)
                j = jac[:, cols]
            else:
                if error < tolerance and all(
                    self._angle(g.site_axis, g.direction) < axis_tolerance for g in goals
                ):
                    break
                # rotation vector that turns a site axis onto its direction; the site's angular velocity
                # w changes the axis by w x axis, so the rotational Jacobian rows drive it to this vector
                rot = self.data.site_xmat[self.site_id].reshape(3, 3)
                mujoco.mj_jacSite(self.model, self.data, jac, jac_rot, self.site_id)
                j = np.vstack([jac[:, cols], *(g.weight * jac_rot[:, cols] for g in goals)])
                delta = np.concatenate(
                    [delta, *(g.weight * np.cross(rot[:, g.site_axis], g.direction) for g in goals)]
                )
            step = j.T @ np.linalg.solve(j @ j.T + damping * np.eye(len(delta)), delta)
            if np.max(np.abs(step)) < step_tolerance:
                break
            if rest_gain:
                # null-space pull toward the rest pose keeps the elbow up and the wrist tidy
                null = np.eye(len(cols)) - np.linalg.pinv(j) @ j
                step += rest_gain * null @ (rest[self.arm_mask] - q[self.arm_mask])
            q[self.arm_mask] += np.clip(step, -0.2, 0.2)
            q = np.clip(q, self.lower, self.upper)
        else:  # out of iterations: `error` belongs to the previous iterate, not to the q returned
            error = float(np.linalg.norm(np.asarray(target, float) - self.forward(q)))
        return q, error

    def axis_error(self, q: np.ndarray, axis: np.ndarray, site_axis: int = 2) -> float:
        """Angle (rad) between the site frame's axis `site_axis` at q and the world direction `axis`."""
        self.forward(q)
        return self._angle(site_axis, np.asarray(axis, float) / np.linalg.norm(axis))

    def _angle(self, site_axis: int, direction: np.ndarray) -> float:
        current = self.data.site_xmat[self.site_id].reshape(3, 3)[:, site_axis]
        return float(np.arctan2(np.linalg.norm(np.cross(current, direction)), current @ direction))
