"""Tasks: objects added to the scene, seeded randomization, and a success predicate.

The success predicate reads privileged sim state and is published on `sim/success` for evaluation only;
policies never see it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np

from twinloop.sim.robots import RobotSpec

CUBE_HALF = 0.015  # m; a 3 cm cube fits the SO-101 gripper


@dataclass
class ReachCube:
    """Bring the gripper's tool point to just above a red cube placed at random on the table."""

    name: str = "reach_cube"
    instruction: str = "reach the red cube"
    time_limit: float = 8.0  # s per episode (the evaluator's default episode_time_limit)
    hover: float = 0.04  # m above the cube centre where the tool point should be
    tolerance: float = 0.02  # m
    x_range: tuple[float, float] = (0.16, 0.26)
    y_range: tuple[float, float] = (-0.10, 0.10)
    workspace_shift: float = 0.0  # m along x, set per robot by get_task

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
        x = rng.uniform(*self.x_range) + self.workspace_shift
        data.qpos[adr : adr + 3] = [x, rng.uniform(*self.y_range), CUBE_HALF]
        data.qpos[adr + 3 : adr + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]

    def goal(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        return data.body("cube").xpos + np.array([0.0, 0.0, self.hover])

    def after_step(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Called after every control tick (the fragile task watches forces here)."""

    def success(self, model: mujoco.MjModel, data: mujoco.MjData, ee_site: str) -> bool:
        return bool(np.linalg.norm(data.site(ee_site).xpos - self.goal(model, data)) < self.tolerance)


# contype/conaffinity of graspable objects: the bit of the SO-101's jaw pads in so101_new_calib.xml (and of
# the Panda's pads in sim/assets/panda.xml); see PickLiftCube for why objects use it alone
OBJECT_BIT = 2

# Cube colours for language variants: name -> rgba. Saturated so a colour threshold separates them.
CUBE_COLOURS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.10, 0.10, 1.0),
    "green": (0.10, 0.65, 0.20, 1.0),
    "blue": (0.10, 0.25, 0.85, 1.0),
}


def is_robot_body(model: mujoco.MjModel, body: int) -> bool:
    """A body of the arm: its tree hangs off the world by a fixed base (no free joint) and is not a mocap
    body. Task objects and distractors are free or mocap bodies; the table is the world body itself."""
    root = int(model.body_rootid[body])
    if root == 0 or model.body_mocapid[root] >= 0:
        return False
    first = model.body_jntadr[root]
    return not (model.body_jntnum[root] > 0 and model.jnt_type[first] == mujoco.mjtJoint.mjJNT_FREE)


def _joint_qpos(model: mujoco.MjModel, joint: str) -> int:
    return int(model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint)])


def _yaw_quat(yaw: float) -> list[float]:
    return [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]


@dataclass
class _GraspableCubes:
    """Shared by the cube tasks: cube bodies that collide with the robots' pads, and the held test.

    Subclasses set `target_body` (the cube the instruction names) and `distractor_bodies`. The held test
    counts robot bodies only (`is_robot_body`), so a distractor leaning on the cube is no jaw.
    """

    half: float = 0.0175  # m: a 35 mm cube; the pads are parallel 40 mm apart at gripper = 0.46 rad (MJCF)
    mass: float = 0.03  # kg (a 35 mm cube of PLA at ~1.2 g/cm^3 with infill)
    friction: tuple[float, float, float] = (1.2, 0.01, 0.0002)  # sliding, torsional, rolling
    hold_distance: float = 0.06  # m: a held cube's centre stays this close to the tool point
    workspace_shift: float = 0.0  # m along x added to every x range, set per robot by get_task

    @property
    def target_body(self) -> str:
        raise NotImplementedError

    @property
    def distractor_bodies(self) -> tuple[str, ...]:
        raise NotImplementedError

    def after_step(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Called after every control tick (the fragile task watches forces here)."""

    def _add_cube(self, spec: mujoco.MjSpec, name: str, rgba, pos) -> None:
        """A free cube on the pads' collision bit (see PickLiftCube), touching the table via a pair."""
        body = spec.worldbody.add_body(name=name, pos=list(pos))
        body.add_freejoint(name=name)
        body.add_geom(
            name=name,
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[self.half] * 3,
            rgba=list(rgba),
            mass=self.mass,
            friction=list(self.friction),
            condim=4,
            contype=OBJECT_BIT,
            conaffinity=OBJECT_BIT,
        )
        # the table uses bit 0, which the cube leaves out: an explicit pair
        slide, torsion, roll = self.friction
        spec.add_pair(
            name=f"table_{name}",
            geomname1="table",
            geomname2=name,
            condim=4,
            friction=[slide, slide, torsion, roll, roll],
        )

    def _place_cube(self, model, data, name: str, xy: np.ndarray, yaw: float) -> None:
        adr = _joint_qpos(model, name)
        data.qpos[adr : adr + 3] = [xy[0], xy[1], self.half]
        data.qpos[adr + 3 : adr + 7] = _yaw_quat(yaw)

    def touching_robot(self, model: mujoco.MjModel, data: mujoco.MjData) -> set[int]:
        """Ids of the robot bodies in contact with the target cube."""
        cube = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, self.target_body)
        touching: set[int] = set()
        for contact in data.contact[: data.ncon]:
            bodies = model.geom_bodyid[[contact.geom1, contact.geom2]]
            if cube in bodies:
                other = int(bodies[0] if bodies[1] == cube else bodies[1])
                if is_robot_body(model, other):
                    touching.add(other)
        return touching

    def held(self, model: mujoco.MjModel, data: mujoco.MjData, ee_site: str) -> bool:
        """The target cube touches two different robot bodies (both jaws) and is near the tool point."""
        cube = data.body(self.target_body).xpos
        if np.linalg.norm(cube - data.site(ee_site).xpos) > self.hold_distance:
            return False
        return len(self.touching_robot(model, data)) >= 2


@dataclass
class PickLiftCube(_GraspableCubes):
    """Pick up the cube of the instructed colour and lift it; the other cubes are distractors.

    Every cube is a free body `cube_<colour>`. The seed picks the target colour (the instruction names it)
    and places all cubes at random, non-overlapping poses in the arm's reachable area. Mutable: `target`
    and `instruction` change at each reset (read them after `Twin.reset`).

    Contacts: the SO-101's fingertip pads (`fixed_jaw_pad`, `moving_jaw_pad`) have contype = conaffinity
    = 2 in the MJCF (bit 1; its comment: inert until an environment enables them), while the table and
    the arm's collision meshes use bit 0. MuJoCo collides those meshes as convex hulls, and the moving
    jaw's hull slants inward above the fingertip (at gripper = 0.46 rad its inner side is 6-11 mm inside
    the pad face from 24 mm above the tip up), so a cube that touched the hulls was wedged out of the
    grip as soon as it was lifted. The cubes therefore use bit 1 only: they touch the pads and each
    other, and the table through explicit contact pairs; the arm's link hulls pass through them.
    condim 4 adds torsional friction, so a cube held at two contact patches does not spin.
    """

    name: str = "pick_lift_cube"
    instruction: str = "pick up the red cube"
    time_limit: float = 12.0  # s per episode; the scripted expert needs ~4-6 s
    target: str = "red"
    colours: tuple[str, ...] = ("red", "green", "blue")
    lift: float = 0.05  # m above the start height for success
    x_range: tuple[float, float] = (0.15, 0.25)
    y_range: tuple[float, float] = (-0.12, 0.12)
    min_separation: float = 0.075  # m between cube centres: the open jaw fits between two cubes
    _start_z: float = field(default=0.0, repr=False)

    @property
    def target_body(self) -> str:
        return f"cube_{self.target}"

    @property
    def distractor_bodies(self) -> tuple[str, ...]:
        return tuple(f"cube_{c}" for c in self.colours if c != self.target)

    def build(self, spec: mujoco.MjSpec) -> None:
        for i, colour in enumerate(self.colours):
            self._add_cube(spec, f"cube_{colour}", CUBE_COLOURS[colour], [0.2, 0.08 * (i - 1), self.half])

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        self.target = str(self.colours[rng.integers(len(self.colours))])
        self.instruction = f"pick up the {self.target} cube"
        placed: list[np.ndarray] = []
        for colour in self.colours:
            for _ in range(1000):  # rejection sampling; three cubes fit easily in the area
                xy = np.array([rng.uniform(*self.x_range) + self.workspace_shift, rng.uniform(*self.y_range)])
                if all(np.linalg.norm(xy - other) >= self.min_separation for other in placed):
                    break
            placed.append(xy)
            self._place_cube(model, data, f"cube_{colour}", xy, rng.uniform(-np.pi / 4, np.pi / 4))
        self._start_z = self.half

    def goal(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        """The lowest point the target cube's centre must reach (above where it is now) for success."""
        x, y, _ = data.body(self.target_body).xpos
        return np.array([x, y, self._start_z + self.lift])

    def success(self, model: mujoco.MjModel, data: mujoco.MjData, ee_site: str) -> bool:
        lifted = data.body(self.target_body).xpos[2] >= self._start_z + self.lift
        return bool(lifted and self.held(model, data, ee_site))


# Bin colours: disjoint from the cube colours, so "the <colour> bin" and "the <colour> cube" never clash.
BIN_COLOURS: dict[str, tuple[float, float, float, float]] = {
    "yellow": (0.90, 0.78, 0.10, 1.0),
    "white": (0.92, 0.92, 0.90, 1.0),
    "purple": (0.50, 0.20, 0.65, 1.0),
}


@dataclass
class PlaceCubeInBin(_GraspableCubes):
    """Put the cube of the instructed colour into the open bin; a second cube is a distractor.

    Bodies: the target cube `cube`, the distractor `cube_distractor` (free bodies, the pick cube's size,
    mass, friction and collision design: see PickLiftCube) and a mocap body `bin`: a floor and four low
    walls. At each reset the seed draws the two cube colours, the bin colour (the instruction names the
    cube and the bin: "put the red cube in the yellow bin"; both are recoloured in `model.geom_rgba`) and
    the bin pose (position and yaw, written to `data.mocap_pos/quat`), then places the cubes clear of the
    bin and of each other.

    Contacts: the bin's geoms use the pads' bit 1 (contype = conaffinity = 2), like the cubes, so cubes
    land on its floor and stop at its walls, and the pads touch it too; the arm's link hulls (bit 0) and
    the table (bit 0) pass through it, so the bin can never trip the arm. It is a mocap body: it does not
    move when touched.

    Success: the target cube's centre is inside the bin's inner footprint (in the bin's frame) and below
    the wall top, it touches no robot body (released, not held) and it is at rest (speed below
    `rest_speed`), so a cube falling through the bin's volume does not count yet.
    """

    name: str = "place_cube_in_bin"
    instruction: str = "put the red cube in the yellow bin"
    time_limit: float = 16.0  # s per episode; the scripted expert needs ~7-10 s
    target: str = "red"
    distractor: str = "green"
    bin_colour: str = "yellow"
    inner_half: float = 0.045  # m: a 9 x 9 cm inner floor, 2.75 cm of play around a centred 35 mm cube
    wall_height: float = 0.03  # m above the table: below the pads' lowest point when a cube is carried
    wall_thickness: float = 0.004  # m
    floor_thickness: float = 0.004  # m
    rest_speed: float = 0.05  # m/s
    bin_x_range: tuple[float, float] = (0.17, 0.22)  # the tool reaches these ~8 cm up (tests/test_experts)
    bin_y_range: tuple[float, float] = (-0.13, 0.13)
    bin_yaw: float = np.pi / 6  # rad, +- around axis-aligned
    x_range: tuple[float, float] = (0.13, 0.26)  # cubes
    y_range: tuple[float, float] = (-0.16, 0.16)
    max_reach: float = 0.27  # m from the base axis (+ workspace_shift): the SO-101 pick failed from 0.28
    bin_clearance: float = 0.045  # m from a cube centre to the bin's outer walls: room for the open jaw
    min_separation: float = 0.075  # m between cube centres, as in PickLiftCube

    @property
    def target_body(self) -> str:
        return "cube"

    @property
    def distractor_bodies(self) -> tuple[str, ...]:
        return ("cube_distractor",)

    @property
    def outer_half(self) -> float:
        return self.inner_half + self.wall_thickness

    def build(self, spec: mujoco.MjSpec) -> None:
        self._add_cube(spec, "cube", CUBE_COLOURS[self.target], [0.2, -0.1, self.half])
        self._add_cube(spec, "cube_distractor", CUBE_COLOURS[self.distractor], [0.25, -0.1, self.half])
        body = spec.worldbody.add_body(name="bin", pos=[0.2, 0.1, 0.0], mocap=True)
        rgba = list(BIN_COLOURS[self.bin_colour])
        outer, wall_half = self.outer_half, self.wall_thickness / 2
        boxes = {  # name: (half sizes, centre) in the bin frame; z = 0 on the table
            "floor": ([outer, outer, self.floor_thickness / 2], [0.0, 0.0, self.floor_thickness / 2]),
            "wall_px": (
                [wall_half, outer, self.wall_height / 2],
                [outer - wall_half, 0.0, self.wall_height / 2],
            ),
            "wall_nx": (
                [wall_half, outer, self.wall_height / 2],
                [wall_half - outer, 0.0, self.wall_height / 2],
            ),
            "wall_py": (
                [outer, wall_half, self.wall_height / 2],
                [0.0, outer - wall_half, self.wall_height / 2],
            ),
            "wall_ny": (
                [outer, wall_half, self.wall_height / 2],
                [0.0, wall_half - outer, self.wall_height / 2],
            ),
        }
        for part, (size, pos) in boxes.items():
            body.add_geom(
                name=f"bin_{part}",
                type=mujoco.mjtGeom.mjGEOM_BOX,
                size=size,
                pos=pos,
                rgba=rgba,
                contype=OBJECT_BIT,
                conaffinity=OBJECT_BIT,
                condim=4,
                friction=list(self.friction),
            )

    def bin_pose(self, data: mujoco.MjData) -> tuple[np.ndarray, float]:
        """(centre on the table (3,), yaw) of the bin."""
        w, _, _, z = data.body("bin").xquat
        return data.body("bin").xpos.copy(), float(2.0 * np.arctan2(z, w))

    def in_bin_frame(self, data: mujoco.MjData, point: np.ndarray) -> np.ndarray:
        centre, yaw = self.bin_pose(data)
        c, s = np.cos(yaw), np.sin(yaw)
        d = np.asarray(point, float) - centre
        return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1], d[2]])

    def distance_to_bin(self, data: mujoco.MjData, xy: np.ndarray) -> float:
        """Horizontal distance from `xy` to the bin's outer rectangle (0 inside it)."""
        local = self.in_bin_frame(data, np.array([xy[0], xy[1], 0.0]))[:2]
        return float(np.linalg.norm(np.maximum(np.abs(local) - self.outer_half, 0.0)))

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        cubes = list(CUBE_COLOURS)
        self.target, self.distractor = (str(c) for c in rng.choice(cubes, size=2, replace=False))
        self.bin_colour = str(list(BIN_COLOURS)[rng.integers(len(BIN_COLOURS))])
        self.instruction = f"put the {self.target} cube in the {self.bin_colour} bin"
        model.geom("cube").rgba[:] = CUBE_COLOURS[self.target]
        model.geom("cube_distractor").rgba[:] = CUBE_COLOURS[self.distractor]
        for part in ("floor", "wall_px", "wall_nx", "wall_py", "wall_ny"):
            model.geom(f"bin_{part}").rgba[:] = BIN_COLOURS[self.bin_colour]

        mocap = model.body("bin").mocapid[0]
        yaw = rng.uniform(-self.bin_yaw, self.bin_yaw)
        bin_x = rng.uniform(*self.bin_x_range) + self.workspace_shift
        data.mocap_pos[mocap] = [bin_x, rng.uniform(*self.bin_y_range), 0.0]
        data.mocap_quat[mocap] = _yaw_quat(yaw)
        mujoco.mj_kinematics(model, data)  # the bin's pose, for distance_to_bin
        placed: list[np.ndarray] = []
        for body in ("cube", "cube_distractor"):
            for _ in range(1000):  # rejection sampling; the area left beside the bin fits two cubes
                xy = np.array([rng.uniform(*self.x_range) + self.workspace_shift, rng.uniform(*self.y_range)])
                if (
                    np.linalg.norm(xy - [self.workspace_shift, 0.0]) <= self.max_reach
                    and self.distance_to_bin(data, xy) >= self.bin_clearance
                    and all(np.linalg.norm(xy - other) >= self.min_separation for other in placed)
                ):
                    break
            placed.append(xy)
            self._place_cube(model, data, body, xy, rng.uniform(-np.pi / 4, np.pi / 4))

    def inside(self, data: mujoco.MjData) -> bool:
        """The target cube's centre is within the inner footprint and below the wall top."""
        local = self.in_bin_frame(data, data.body(self.target_body).xpos)
        return bool(np.all(np.abs(local[:2]) <= self.inner_half) and local[2] < self.wall_height)

    def goal(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        """Where the target cube's centre rests when placed in the middle of the bin."""
        centre, _ = self.bin_pose(data)
        return centre + np.array([0.0, 0.0, self.floor_thickness + self.half])

    def success(self, model: mujoco.MjModel, data: mujoco.MjData, ee_site: str) -> bool:
        if not self.inside(data):
            return False
        body = model.body(self.target_body)
        speed = np.linalg.norm(data.qvel[model.jnt_dofadr[body.jntadr[0]] :][:3])
        return bool(speed < self.rest_speed and not self.touching_robot(model, data))


# the colour a crushed cube turns: a policy sees at once that it squeezed too hard
CRUSHED_RGBA = (0.25, 0.22, 0.20, 1.0)


@dataclass
class PickFragileCube(PickLiftCube):
    """The contact-rich task: pick up the instructed cube without crushing it.

    The cubes are thin-walled and slippery (friction 0.5, like glazed ceramic or smooth plastic on the
    pads, against 1.2 for the pick task's cubes): the grip needs some force to lift them, but a jaw
    pressing harder than `break_force` crushes the target for the rest of the episode (it turns dark and
    success is impossible). Closing a gripper fully presses ~43 N (SO-101) or ~14 N (Panda), so a
    force-blind grasp fails; the taxels on the fingers are what tells a policy when to stop closing.

    The squeeze is measured after every control tick (`after_step`): the sum of the normal contact forces
    from each robot body on the target, and the largest of those (one jaw's push). 6 N is about what a
    thin plastic cup or a ripe strawberry tolerates; two jaws with friction 0.5 hold the 30 g cube from
    0.3 N up.
    """

    name: str = "pick_fragile_cube"
    instruction: str = "gently pick up the red cube"
    time_limit: float = 14.0  # s; the touch-guided expert needs ~5-8 s
    friction: tuple[float, float, float] = (0.5, 0.01, 0.0002)
    break_force: float = 6.0  # N from one jaw
    crushed: bool = field(default=False, repr=False)
    peak_force: float = field(default=0.0, repr=False)  # N, the largest squeeze this episode

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        super().reset(model, data, rng)
        self.instruction = f"gently pick up the {self.target} cube"
        self.crushed, self.peak_force = False, 0.0
        for colour in self.colours:
            model.geom(f"cube_{colour}").rgba[:] = CUBE_COLOURS[colour]

    def squeeze(self, model: mujoco.MjModel, data: mujoco.MjData) -> float:
        """The largest total normal force (N) that one robot body applies to the target cube."""
        cube = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, self.target_body)
        per_body: dict[int, float] = {}
        wrench = np.zeros(6)
        for i in range(data.ncon):
            contact = data.contact[i]
            bodies = model.geom_bodyid[[contact.geom1, contact.geom2]]
            if cube not in bodies:
                continue
            other = int(bodies[0] if bodies[1] == cube else bodies[1])
            if not is_robot_body(model, other):
                continue
            mujoco.mj_contactForce(model, data, i, wrench)
            per_body[other] = per_body.get(other, 0.0) + float(wrench[0])  # normal component
        return max(per_body.values(), default=0.0)

    def after_step(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        force = self.squeeze(model, data)
        self.peak_force = max(self.peak_force, force)
        if force > self.break_force and not self.crushed:
            self.crushed = True
            model.geom(self.target_body).rgba[:] = CRUSHED_RGBA

    def success(self, model: mujoco.MjModel, data: mujoco.MjData, ee_site: str) -> bool:
        return not self.crushed and super().success(model, data, ee_site)


_TASKS = {
    "reach_cube": ReachCube,
    "pick_lift_cube": PickLiftCube,
    "place_cube_in_bin": PlaceCubeInBin,
    "pick_fragile_cube": PickFragileCube,
}


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str, robot: RobotSpec | None = None):
    """A fresh task; with `robot`, its object layout is moved to that arm's workspace."""
    try:
        task = _TASKS[name]()
    except KeyError:
        raise ValueError(f"unknown task '{name}' (known: {', '.join(task_names())})") from None
    if robot is not None:
        task.workspace_shift = robot.workspace_shift
    return task
