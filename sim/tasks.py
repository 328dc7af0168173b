"""Tasks: objects added to the scene, seeded randomization, and a success predicate.

The success predicate reads privileged sim state and is published on `sim/success` for evaluation only;
policies never see it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np

CUBE_HALF = 0.015  # m; a 3 cm cube fits the SO-101 gripper


@dataclass(frozen=True)
class ReachCube:
    """Bring the gripper's tool point to just above a red cube placed at random on the table."""

    name: str = "reach_cube"
    instruction: str = "reach the red cube"
    time_limit: float = 8.0  # s per episode (the evaluator's default episode_time_limit)
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


_PAD_BIT = 2  # contype/conaffinity of the SO-101 jaw pads in so101_new_calib.xml

# Cube colours for language variants: name -> rgba. Saturated so a colour threshold separates them.
CUBE_COLOURS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.10, 0.10, 1.0),
    "green": (0.10, 0.65, 0.20, 1.0),
    "blue": (0.10, 0.25, 0.85, 1.0),
}


@dataclass
class PickLiftCube:
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
    half: float = 0.0175  # m: a 35 mm cube; the pads are parallel 40 mm apart at gripper = 0.46 rad (MJCF)
    mass: float = 0.03  # kg (a 35 mm cube of PLA at ~1.2 g/cm^3 with infill)
    friction: tuple[float, float, float] = (1.2, 0.01, 0.0002)  # sliding, torsional, rolling
    lift: float = 0.05  # m above the start height for success
    hold_distance: float = 0.06  # m: the cube centre must stay this close to the tool point
    x_range: tuple[float, float] = (0.15, 0.25)
    y_range: tuple[float, float] = (-0.12, 0.12)
    min_separation: float = 0.075  # m between cube centres: the open jaw fits between two cubes
    _start_z: float = field(default=0.0, repr=False)

    @property
    def target_body(self) -> str:
        return f"cube_{self.target}"

    def build(self, spec: mujoco.MjSpec) -> None:
        for i, colour in enumerate(self.colours):
            body = spec.worldbody.add_body(name=f"cube_{colour}", pos=[0.2, 0.08 * (i - 1), self.half])
            body.add_freejoint(name=f"cube_{colour}")
            body.add_geom(
                name=f"cube_{colour}",
                type=mujoco.mjtGeom.mjGEOM_BOX,
                size=[self.half] * 3,
                rgba=list(CUBE_COLOURS[colour]),
                mass=self.mass,
                friction=list(self.friction),
                condim=4,
                contype=_PAD_BIT,
                conaffinity=_PAD_BIT,
            )
            # the table uses bit 0, which the cube leaves out (see the class docstring): an explicit pair
            spec.add_pair(
                name=f"table_cube_{colour}",
                geomname1="table",
                geomname2=f"cube_{colour}",
                condim=4,
                friction=[
                    self.friction[0],
                    self.friction[0],
                    self.friction[1],
                    self.friction[2],
                    self.friction[2],
                ],
            )

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        self.target = str(self.colours[rng.integers(len(self.colours))])
        self.instruction = f"pick up the {self.target} cube"
        placed: list[np.ndarray] = []
        for colour in self.colours:
            for _ in range(1000):  # rejection sampling; three cubes fit easily in the area
                xy = np.array([rng.uniform(*self.x_range), rng.uniform(*self.y_range)])
                if all(np.linalg.norm(xy - other) >= self.min_separation for other in placed):
                    break
            placed.append(xy)
            yaw = rng.uniform(-np.pi / 4, np.pi / 4)
            adr = model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"cube_{colour}")]
            data.qpos[adr : adr + 3] = [xy[0], xy[1], self.half]
            data.qpos[adr + 3 : adr + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        self._start_z = self.half

    def goal(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        """The lowest point the target cube's centre must reach (above where it is now) for success."""
        x, y, _ = data.body(self.target_body).xpos
        return np.array([x, y, self._start_z + self.lift])

    def held(self, model: mujoco.MjModel, data: mujoco.MjData, ee_site: str) -> bool:
        """The target cube touches two different robot bodies (both jaws) and is near the tool point."""
        cube = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, self.target_body)
        if np.linalg.norm(data.body(cube).xpos - data.site(ee_site).xpos) > self.hold_distance:
            return False
        touching: set[int] = set()
        for contact in data.contact[: data.ncon]:
            bodies = model.geom_bodyid[[contact.geom1, contact.geom2]]
            if cube in bodies:
                other = int(bodies[0] if bodies[1] == cube else bodies[1])
                if other != 0 and not model.body(other).name.startswith("cube_"):
                    touching.add(other)
        return len(touching) >= 2

    def success(self, model: mujoco.MjModel, data: mujoco.MjData, ee_site: str) -> bool:
        lifted = data.body(self.target_body).xpos[2] >= self._start_z + self.lift
        return bool(lifted and self.held(model, data, ee_site))


_TASKS = {"reach_cube": ReachCube, "pick_lift_cube": PickLiftCube}


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str):
    try:
        return _TASKS[name]()
    except KeyError:
        raise ValueError(f"unknown task '{name}' (known: {', '.join(task_names())})") from None
