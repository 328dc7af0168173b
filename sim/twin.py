"""The digital twin: a MuJoCo scene that is stepped under position control and rendered headlessly.

This class knows nothing about ROS; the twin node publishes its state on the contract topics. The arm is
driven by the shared TrajectoryExecutor exactly like a real arm driver, so sim and hardware execute
chunks identically.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np

from twinloop.hardware.executor import JointLimits
from twinloop.sim.robots import RobotSpec, get_robot, home_array
from twinloop.sim.scene import CameraConfig, build_spec, disable_shadows
from twinloop.sim.tasks import get_task


@dataclass(frozen=True)
class TwinConfig:
    robot: str = "so101"
    task: str = "reach_cube"
    cameras: tuple[CameraConfig, ...] = field(default_factory=lambda: (CameraConfig(),))
    timestep: float = 0.002  # s, physics
    control_rate: float = 100.0  # Hz, executor ticks (and joint_states rate)


class Twin:
    def __init__(self, config: TwinConfig | None = None) -> None:
        self.config = config or TwinConfig()
        self.robot: RobotSpec = get_robot(self.config.robot)
        self.task = get_task(self.config.task)
        spec = build_spec(self.robot, self.config.cameras)
        self.task.build(spec)
        spec.option.timestep = self.config.timestep
        self.model = spec.compile()
        disable_shadows(self.model)
        self.data = mujoco.MjData(self.model)
        self.joint_names = self.robot.joint_names
        ids = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in self.joint_names]
        self._qpos_adr = self.model.jnt_qposadr[ids]
        self._dof_adr = self.model.jnt_dofadr[ids]
        act_ids = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_ACTUATOR, n) for n in self.joint_names]
        if min(act_ids) < 0:
            raise ValueError(f"{self.robot.name}: every joint needs a position actuator of the same name")
        self._act_ids = np.asarray(act_ids)
        self.limits = JointLimits(
            lower=self.model.jnt_range[ids, 0].copy(),
            upper=self.model.jnt_range[ids, 1].copy(),
            velocity=np.full(len(ids), self.robot.max_velocity),
        )
        self.substeps = max(1, round(1.0 / (self.config.control_rate * self.config.timestep)))
        self._renderers: dict[str, mujoco.Renderer] = {}
        self.episode_seed: int | None = None
        self.reset(seed=0)

    # -- episode -----------------------------------------------------------------------------------
    def reset(self, seed: int) -> None:
        """Home the arm and re-randomize the task with `seed`. Sim time keeps running (it is /clock)."""
        time_now = self.data.time
        mujoco.mj_resetData(self.model, self.data)
        self.data.time = time_now
        home = home_array(self.robot)
        self.data.qpos[self._qpos_adr] = home
        self.data.ctrl[self._act_ids] = home
        self.task.reset(self.model, self.data, np.random.default_rng(seed))
        mujoco.mj_forward(self.model, self.data)
        self.episode_seed = seed

    # -- physics -----------------------------------------------------------------------------------
    @property
    def time(self) -> float:
        return float(self.data.time)

    @property
    def control_period(self) -> float:
        return self.substeps * self.model.opt.timestep

    def step(self, targets: np.ndarray) -> None:
        """Apply joint position targets for one control period."""
        self.data.ctrl[self._act_ids] = targets
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)

    def joint_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions, velocities and actuator efforts in robot joint order."""
        return (
            self.data.qpos[self._qpos_adr].copy(),
            self.data.qvel[self._dof_adr].copy(),
            self.data.actuator_force[self._act_ids].copy(),
        )

    def success(self) -> bool:
        return self.task.success(self.model, self.data, self.robot.ee_site)

    # -- cameras -----------------------------------------------------------------------------------
    def camera(self, name: str) -> CameraConfig:
        for cam in self.config.cameras:
            if cam.name == name:
                return cam
        raise ValueError(f"no camera '{name}' (have: {[c.name for c in self.config.cameras]})")

    def render(self, name: str) -> np.ndarray:
        """An HxWx3 uint8 RGB image from camera `name`."""
        cam = self.camera(name)
        renderer = self._renderers.get(name)
        if renderer is None:
            renderer = self._renderers[name] = mujoco.Renderer(self.model, cam.height, cam.width)
        renderer.update_scene(self.data, camera=name)
        return renderer.render()

    def intrinsics(self, name: str) -> np.ndarray:
        """Pinhole K of a MuJoCo camera: square pixels, optical axis through the image centre.

        In ROS/OpenCV pixel-centre coordinates the centre is ((W-1)/2, (H-1)/2); checked against renders
        in tests/test_conversions.py.
        """
        cam = self.camera(name)
        fovy = self.model.cam_fovy[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, name)]
        focal = 0.5 * cam.height / np.tan(np.deg2rad(fovy) / 2.0)
        return np.array(
            [[focal, 0.0, (cam.width - 1) / 2.0], [0.0, focal, (cam.height - 1) / 2.0], [0.0, 0.0, 1.0]]
        )

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
