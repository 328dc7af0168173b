"""Cartesian teleoperation: a TeleopCommand (twist) per control step -> joint position targets.

Each step integrates the twist into a target end-effector pose (position and orientation of the robot's
`ee_site`, base frame), solves IK on the robot's own MuJoCo model (`ArmKinematics`, warm-started at the
previous solution), and returns joint targets clamped to the joint limits and a maximum joint speed (the
arm's step is scaled down as a whole, so the tool stays on its path). The gripper's target integrates the
command's gripper velocity or jumps open/closed on a toggle event; the joint follows at its speed limit.

Rules, decided here:
- Not engaged: hold. Nothing is integrated (gripper toggles included) and the last targets are returned
  unchanged. `reset(q)` (the node calls it at every engage, with the arm's current setpoint or measured
  joints) re-syncs the targets to q, so engaging never jumps.
- Workspace box: the target position may not leave the box; a target that is outside (the arm was moved
  there by something else) may move back in but never farther out. The box never pulls the arm.
- No wind-up: the target may lead the pose actually reached (after IK, joint limits and the joint speed
  limit) by at most `max_lag` metres and `max_angle_lag` radians; pushing into a limit or a singularity
  therefore stops there instead of accumulating an offset that would later jump.
- Orientation: two axis goals (the site's x and z axes onto the target frame's) with weight
  `orientation_weight` metres per radian. An arm with fewer than 6 joints (the 5-DoF SO-101) cannot reach
  every orientation, so its target orientation is re-synced to the one reached after every step (rotations
  that the arm can make are made; the rest is dropped instead of dragging the position off), and its
  orientation weight is smaller so position wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twinloop.hardware.teleop_devices import EVENT_GRIPPER_TOGGLE, TeleopCommand
from twinloop.sim.kinematics import ArmKinematics, AxisGoal
from twinloop.sim.robots import RobotSpec, velocity_array

__all__ = ["CartesianTeleop", "Workspace", "default_workspace", "rotation_matrix"]


@dataclass(frozen=True)
class Workspace:
    """An axis-aligned box (base frame, metres) that the end-effector target stays inside."""

    lower: tuple[float, float, float]
    upper: tuple[float, float, float]

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.lower, float), np.asarray(self.upper, float)
        if lo.shape != (3,) or hi.shape != (3,):
            raise ValueError(
                f"workspace bounds need 3 values each (x, y, z), got {self.lower} / {self.upper}"
            )
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))) or np.any(lo >= hi):
            raise ValueError(
                f"workspace lower bound must be below upper on every axis: {self.lower} / {self.upper}"
            )

    def contains(self, point: np.ndarray, tol: float = 1e-9) -> bool:
        p = np.asarray(point, float)
        return bool(np.all(p >= np.asarray(self.lower) - tol) and np.all(p <= np.asarray(self.upper) + tol))

    def limit_motion(self, old: np.ndarray, new: np.ndarray) -> np.ndarray:
        """`new` clamped to the box, except that a coordinate already outside may stay where it was."""
        lo = np.minimum(np.asarray(self.lower, float), old)
        hi = np.maximum(np.asarray(self.upper, float), old)
        return np.clip(new, lo, hi)


# The tasks' objects lie 13-26 cm ahead of the SO-101 base (plus the robot's workspace_shift) on the table
# at z = 0; the boxes keep the tool point above the table and inside the comfortable reach.
_WORKSPACES = {
    "so101": Workspace((0.08, -0.30, 0.005), (0.38, 0.30, 0.35)),
    "panda": Workspace((0.25, -0.45, 0.005), (0.80, 0.45, 0.85)),
}


def default_workspace(robot: RobotSpec) -> Workspace:
    try:
        return _WORKSPACES[robot.name]
    except KeyError:
        raise ValueError(f"no default teleop workspace for robot '{robot.name}': give one") from None


def rotation_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues: the rotation by |rotvec| radians about rotvec."""
    v = np.asarray(rotvec, float)
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * kx @ kx


def _rotvec(r: np.ndarray) -> np.ndarray:
    """Inverse of rotation_matrix (angle in [0, pi])."""
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    angle = float(np.arccos(cos))
    if angle < 1e-9:
        return np.zeros(3)
    if np.pi - angle < 1e-6:  # near pi: the axis from the symmetric part
        axis = np.sqrt(np.maximum((np.diag(r) + 1.0) / 2.0, 0.0))
        i = int(np.argmax(axis))
        axis = r[:, i] + np.eye(3)[i]
        return angle * axis / np.linalg.norm(axis)
    w = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    return angle * w / (2.0 * np.sin(angle))


class CartesianTeleop:
    """Integrates twists into an end-effector target and solves IK each control step (see module doc)."""

    def __init__(
        self,
        robot: RobotSpec,
        workspace: Workspace | None = None,
        max_joint_speed: float | np.ndarray | None = None,
        speed_fraction: float = 0.5,
        max_lag: float = 0.02,
        max_angle_lag: float = 0.2,
        orientation_weight: float | None = None,
        ik_iterations: int = 15,
        kinematics: ArmKinematics | None = None,
    ) -> None:
        self.robot = robot
        self.kin = kinematics if kinematics is not None else ArmKinematics(robot)
        self.workspace = workspace if workspace is not None else default_workspace(robot)
        n = len(robot.joint_names)
        if max_joint_speed is None:  # a fraction of the robot's joint velocity limits
            speed = velocity_array(robot) * float(speed_fraction)
        else:
            speed = np.broadcast_to(np.asarray(max_joint_speed, float), (n,)).copy()
        if np.any(~np.isfinite(speed)) or np.any(speed <= 0):
            raise ValueError(f"max joint speed must be positive, got {speed.tolist()}")
        self.max_joint_speed = speed
        self.max_lag = float(max_lag)
        self.max_angle_lag = float(max_angle_lag)
        self.full_orientation = len(robot.arm_joints) >= 6
        if orientation_weight is None:
            orientation_weight = 0.3 if self.full_orientation else 0.05
        self.orientation_weight = float(orientation_weight)
        self.ik_iterations = int(ik_iterations)
        self.gripper_index = (
            robot.joint_names.index(robot.gripper_joint) if robot.gripper_joint is not None else None
        )
        self.q = np.clip(np.array(robot.home, float), self.kin.lower, self.kin.upper)
        self.target_position = np.zeros(3)
        self.target_rotation = np.eye(3)
        self.gripper_target: float | None = None
        self.last_ik_error = 0.0
        self.reset(self.q)

    # -- state ------------------------------------------------------------------------------------
    def pose(self, q: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(position, rotation matrix) of the end-effector site at q (default: the current targets)."""
        position = self.kin.forward(self.q if q is None else np.asarray(q, float))
        return position, self.kin.data.site_xmat[self.kin.site_id].reshape(3, 3).copy()

    @property
    def position(self) -> np.ndarray:
        return self.pose()[0]

    def reset(self, q: np.ndarray) -> None:
        """Re-sync to measured joints `q` (robot joint order): targets become the pose there."""
        q = np.asarray(q, float)
        if q.shape != (len(self.robot.joint_names),) or not np.all(np.isfinite(q)):
            raise ValueError(f"reset needs {len(self.robot.joint_names)} finite joint positions, got {q}")
        self.q = np.clip(q, self.kin.lower, self.kin.upper)
        self.target_position, self.target_rotation = self.pose()
        self.gripper_target = None if self.gripper_index is None else float(self.q[self.gripper_index])

    # -- one control step -------------------------------------------------------------------------
    def step(self, command: TeleopCommand, dt: float) -> np.ndarray:
        """Joint position targets after `dt` seconds of `command` (hold when not engaged)."""
        if not command.engaged or dt <= 0:
            return self.q.copy()
        linear = np.nan_to_num(np.asarray(command.linear, float))
        angular = np.nan_to_num(np.asarray(command.angular, float))

        position, rotation = self.pose()
        target = self.workspace.limit_motion(self.target_position, self.target_position + linear * dt)
        target_rot = rotation_matrix(angular * dt) @ self.target_rotation
        # no wind-up: the target leads the reached pose by at most max_lag / max_angle_lag
        lead = target - position
        if np.linalg.norm(lead) > self.max_lag:
            target = position + lead * (self.max_lag / np.linalg.norm(lead))
        turn = _rotvec(target_rot @ rotation.T)
        if np.linalg.norm(turn) > self.max_angle_lag:
            target_rot = rotation_matrix(turn * (self.max_angle_lag / np.linalg.norm(turn))) @ rotation

        q = self.q.copy()
        if np.any(linear) or np.any(angular) or not np.allclose(target, position, atol=1e-4):
            w = self.orientation_weight
            goals = [AxisGoal(0, target_rot[:, 0], w), AxisGoal(2, target_rot[:, 2], w)]
            q, _ = self.kin.solve_ik(
                target,
                self.q,
                iterations=self.ik_iterations,
                tolerance=1e-4,
                axes=goals,
                axis_tolerance=1e-3,
                rest_gain=0.0,
                step_tolerance=1e-5,  # an orientation the arm cannot reach: stop at the compromise
            )
        if self.gripper_index is not None:
            q[self.gripper_index] = self._gripper(command, dt)
        # joint speed limit: the arm's step is scaled as a whole (clipping joints one by one would bend
        # the path, e.g. past the workspace box); the gripper is limited on its own
        step = q - self.q
        limit = self.max_joint_speed * dt
        arm = self.kin.arm_mask
        scale = float(np.min(limit[arm] / np.maximum(np.abs(step[arm]), 1e-12), initial=1.0))
        step[arm] *= min(1.0, scale)
        step[~arm] = np.clip(step[~arm], -limit[~arm], limit[~arm])
        self.q = np.clip(self.q + step, self.kin.lower, self.kin.upper)

        reached, reached_rot = self.pose()
        self.last_ik_error = float(np.linalg.norm(target - reached))
        self.target_position = target
        self.target_rotation = target_rot if self.full_orientation else reached_rot
        return self.q.copy()

    def _gripper(self, command: TeleopCommand, dt: float) -> float:
        """The gripper target: a toggle jumps it to closed/open, the velocity moves it; the joint then
        follows at the joint speed limit."""
        i = self.gripper_index
        lo, hi = float(self.kin.lower[i]), float(self.kin.upper[i])
        value = float(self.q[i]) if self.gripper_target is None else self.gripper_target
        for event in command.events:
            if event == EVENT_GRIPPER_TOGGLE:  # open a closed gripper, close an open one
                value = lo if value > (lo + hi) / 2.0 else hi
        value += float(np.nan_to_num(command.gripper)) * (hi - lo) * dt
        self.gripper_target = float(np.clip(value, lo, hi))
        return self.gripper_target
