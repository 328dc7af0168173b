"""The digital twin: a MuJoCo scene that is stepped under position control and rendered headlessly.

This class knows nothing about ROS; the twin node publishes its state on the contract topics. The arm is
driven by the shared TrajectoryExecutor exactly like a real arm driver, so sim and hardware execute
chunks identically.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np

from twinloop.calibration.pinhole import intrinsics_from_fovy
from twinloop.hardware.executor import JointLimits
from twinloop.sim.perturbations import Perturbations
from twinloop.sim.robots import RobotSpec, TactilePad, get_robot, home_array, velocity_array
from twinloop.sim.scene import CameraConfig, build_spec, disable_shadows, tactile_object_name, taxel_grid
from twinloop.sim.tasks import get_task


@dataclass(frozen=True)
class TwinConfig:
    robot: str = "so101"
    task: str = "reach_cube"
    cameras: tuple[CameraConfig, ...] = field(default_factory=lambda: (CameraConfig(),))
    timestep: float = 0.002  # s, physics
    control_rate: float = 100.0  # Hz, executor ticks (and joint_states rate)
    # named, seeded robustness knobs, "NAME" or "NAME=LEVEL" (see twinloop.sim.perturbations)
    perturbations: tuple[str, ...] = ()
    # "fast": cameras draw simplified copies of the robot's visual meshes (same physics, several times
    # faster on the CPU renderer); "full": the MJCF's meshes as they are (scene.RENDER_QUALITIES)
    render_quality: str = "fast"


class Twin:
    def __init__(self, config: TwinConfig | None = None) -> None:
        self.config = config or TwinConfig()
        self.robot: RobotSpec = get_robot(self.config.robot)
        self.task = get_task(self.config.task, self.robot)
        spec = build_spec(self.robot, self.config.cameras, self.config.render_quality)
        self.task.build(spec)
        # ValueError on a bad spec
        self.perturbations = Perturbations(self.config.perturbations, self.robot.workspace_shift)
        self.perturbations.build(spec)
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
            velocity=velocity_array(self.robot),
        )
        self.substeps = max(1, round(1.0 / (self.config.control_rate * self.config.timestep)))
        self._tactile = {pad.name: _TactileReader(self.model, pad) for pad in self.robot.tactile}
        self.tactile_names: tuple[str, ...] = tuple(self._tactile)
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}  # (height, width): one per size
        self.episode_seed: int | None = None
        self.ticks = 0  # control periods since the last reset: the frame index of the perturbations
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
        # after the task, on their own seed streams: enabling one never changes the task's draws
        self.perturbations.reset(self.model, self.data, seed)
        mujoco.mj_forward(self.model, self.data)
        self.episode_seed = seed
        self.ticks = 0

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
        self.task.after_step(self.model, self.data)
        self.ticks += 1

    def joint_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions, velocities and actuator efforts in robot joint order."""
        return (
            self.data.qpos[self._qpos_adr].copy(),
            self.data.qvel[self._dof_adr].copy(),
            self.data.actuator_force[self._act_ids].copy(),
        )

    # -- touch -------------------------------------------------------------------------------------
    def tactile(self, name: str) -> np.ndarray:
        """Taxel image (rows, cols) float32 of finger plate `name`: normal pressure per taxel.

        Units: MuJoCo's `tactile` pressure channel, a penetration measure in metres: 0 without contact,
        the depth the touching object reaches into the pad at that taxel for shallow contact (about 1.1x
        the depth at 1 mm, growing faster when deeper). Rows run from the finger base to the tip (see
        TactilePad). Like every MuJoCo sensor it is computed inside mj_step/mj_forward, so after `step` it
        describes the state at the start of the last physics substep (2 ms old at most). The tactile
        perturbations, if configured, apply on top.
        """
        return self.perturbations.tactile(name, self.ticks, self._reader(name).image(self.data))

    def tactile_taxels(self, name: str) -> np.ndarray:
        """World positions (rows, cols, 3) of the taxels of plate `name`, in the layout of `tactile`."""
        return self._reader(name).positions(self.data)

    def _reader(self, name: str) -> _TactileReader:
        try:
            return self._tactile[name]
        except KeyError:
            raise ValueError(f"no tactile sensor '{name}' (have: {list(self._tactile)})") from None

    def success(self) -> bool:
        return self.task.success(self.model, self.data, self.robot.ee_site)

    # -- cameras -----------------------------------------------------------------------------------
    def camera(self, name: str) -> CameraConfig:
        for cam in self.config.cameras:
            if cam.name == name:
                return cam
        raise ValueError(f"no camera '{name}' (have: {[c.name for c in self.config.cameras]})")

    def render(self, name: str) -> np.ndarray:
        """An HxWx3 uint8 RGB image from camera `name` (after the image perturbations, if any)."""
        cam = self.camera(name)
        # cameras of one size share a renderer: one GL context and one copy of the meshes uploaded
        renderer = self._renderers.get((cam.height, cam.width))
        if renderer is None:
            renderer = mujoco.Renderer(self.model, cam.height, cam.width)
            # off: a reflective material would cost a second scene pass per frame; no light casts shadows
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
            self._renderers[(cam.height, cam.width)] = renderer
        renderer.update_scene(self.data, camera=name)
        return self.perturbations.image(name, self.ticks, renderer.render())

    def camera_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Current world position and world-from-camera rotation (OpenCV optical convention: z forward,
        y down) of camera `name`, read from the simulation state (`cam_xpos`/`cam_xmat`, valid after
        `step`/`reset`), so a camera mounted on the arm reports its true current extrinsics.

        A world point X is at `(X - position) @ rotation` in the camera frame.
        """
        self.camera(name)  # readable error for an unknown name
        cam_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, name)
        rotation = self.data.cam_xmat[cam_id].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])
        return self.data.cam_xpos[cam_id].copy(), rotation

    def intrinsics(self, name: str) -> np.ndarray:
        """Pinhole K of a MuJoCo camera (square pixels, principal point ((W-1)/2, (H-1)/2))."""
        cam = self.camera(name)
        fovy = self.model.cam_fovy[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, name)]
        return intrinsics_from_fovy(cam.width, cam.height, fovy)

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()


class _TactileReader:
    """Maps one `tactile` sensor's per-vertex readings onto its (rows, cols) taxel image.

    The mesh compiler may re-centre and rotate the plate mesh (it compensates in the geom's pose), so the
    vertex order is matched to the taxel grid once, from the compiled geometry, rather than assumed.
    """

    def __init__(self, model: mujoco.MjModel, pad: TactilePad) -> None:
        name = tactile_object_name(pad)
        sensor = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SENSOR, name)
        self.geom = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)
        mesh = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_MESH, name)
        pad_geom = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, pad.pad_geom)
        if min(sensor, self.geom, mesh, pad_geom) < 0:
            raise ValueError(f"tactile pad '{pad.name}' is not in the model (build it with scene.build_spec)")
        self.shape = pad.shape
        nvert = int(model.mesh_vertnum[mesh])
        if nvert != pad.shape[0] * pad.shape[1] or model.sensor_dim[sensor] != 3 * nvert:
            raise ValueError(f"tactile pad '{pad.name}': {nvert} mesh vertices for a {pad.shape} grid")
        self.adr = int(model.sensor_adr[sensor])  # channel 0 (pressure) = the first nvert values
        adr = model.mesh_vertadr[mesh]
        self.verts = model.mesh_vert[adr : adr + nvert].astype(float)  # in the plate geom's frame

        # vertices -> pad frame (plate and pad share a body), then nearest taxel of the designed grid
        in_body = self.verts @ _quat_mat(model.geom_quat[self.geom]).T + model.geom_pos[self.geom]
        pad_mat = _quat_mat(model.geom_quat[pad_geom])
        in_pad = (in_body - model.geom_pos[pad_geom]) @ pad_mat
        axis = int(np.argmax(np.abs(pad.normal)))
        grid = taxel_grid(pad) + np.asarray(pad.normal) * model.geom_size[pad_geom][axis]
        dist = np.linalg.norm(grid.reshape(-1, 1, 3) - in_pad[None], axis=2)  # (taxel, vertex)
        self.order = np.argmin(dist, axis=1)
        if len(set(self.order.tolist())) != nvert or dist[np.arange(nvert), self.order].max() > 1e-5:
            raise ValueError(f"tactile pad '{pad.name}': plate mesh does not lie on the pad face")

    def image(self, data: mujoco.MjData) -> np.ndarray:
        pressure = data.sensordata[self.adr : self.adr + len(self.order)]
        return pressure[self.order].reshape(self.shape).astype(np.float32)

    def positions(self, data: mujoco.MjData) -> np.ndarray:
        mat = data.geom_xmat[self.geom].reshape(3, 3)
        world = self.verts[self.order] @ mat.T + data.geom_xpos[self.geom]
        return world.reshape(*self.shape, 3)


def _quat_mat(quat: np.ndarray) -> np.ndarray:
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, np.asarray(quat, float))
    return mat.reshape(3, 3)
