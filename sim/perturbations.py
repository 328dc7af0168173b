"""Named, seedable perturbations of the twin for robustness evaluation.

A perturbation is a knob NAME with a LEVEL in [0, 1] (`"NAME"` means level 1, `"NAME=0.5"` half of it;
level 0 has no effect at all). The twin takes them as `TwinConfig.perturbations` (the twin node's `perturb`
parameter) and calls four hooks: `build` on the MjSpec before compiling (textures, materials, distractor
bodies must exist at compile time), `reset` after the task has randomized an episode, and `image` /
`tactile` on every camera frame and taxel image it hands out.

Seeding: every knob draws from its own stream `[seed, 0x5EED, crc32(name), ...]`, never from the task's
`default_rng(seed)`, so enabling a knob leaves the task's randomization (object poses, target colour) and
every other knob's draws unchanged. Per-frame draws (blackout, tactile noise) are keyed by the frame index
as well, so they are reproducible for a seed and frame without replaying the stream.

Knobs and units (the names are the API; `KNOBS` holds the one-line descriptions):
- `lighting`: every light's direction (tilt <= 40 deg x level), position (<= 0.3 m x level sideways),
  diffuse intensity (x 1 +- 0.6 level) and colour (per channel x 1 +- 0.25 level), and the headlight's
  ambient/diffuse (x 1 +- 0.5 level, tinted likewise).
- `textures`: the table gets a checker or noise texture with probability = level and a colour blended
  from its own towards a random one by level; task objects keep their named colour family (hue +-0.03 x
  level of the colour wheel, saturation and value x 1 -0.2/+0.1 level). Rendering only: no physics change.
- `camera_jitter`: every camera moves up to 0.02 m x level (uniform in a ball) and turns up to
  3 deg x level about a random axis, relative to its mount, re-drawn at each reset. Intrinsics (and so
  camera_info) stay valid; the extrinsics (`Twin.camera_pose`) move.
- `distractors`: round(3 x level) of three prebuilt free bodies (sphere, cylinder, brick; never a cube,
  so "the red cube" stays unambiguous) in random colours, placed on the table clear of the task's objects.
- `occlusion`: per episode and camera, one flat-colour rectangle covering [0.1, 0.3] x level of the image.
- `blackout`: each camera frame is all black with probability 0.5 x level.
- `tactile_noise`: sigma = 0.5 mm x level (in `Twin.tactile`'s metres of penetration): a per-episode
  offset per taxel N(0, (sigma/2)^2) plus per-reading N(0, sigma^2), the sum clipped at 0.
- `tactile_dropout`: per episode, round(0.3 x level x taxels) dead taxels per sensor that read 0.
"""

from __future__ import annotations

import colorsys
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import mujoco
import numpy as np

from twinloop.sim.tasks import OBJECT_BIT  # the graspable objects' collision bit (see PickLiftCube)

SEED_STREAM = 0x5EED  # second seed word: the perturbation streams never coincide with the task's
DISTRACTOR_PREFIX = "distractor_"
TABLE = "table"  # the table geom of scene.build_spec


@dataclass(frozen=True)
class Perturbation:
    """One parsed knob: registry name and level in [0, 1]."""

    name: str
    level: float = 1.0

    def __str__(self) -> str:
        return f"{self.name}={self.level:g}"


def _key(text: str) -> int:
    return zlib.crc32(text.encode())


class _Knob:
    """Base class: every hook is a no-op; a knob overrides the ones it needs."""

    name: ClassVar[str]
    doc: ClassVar[str]

    def __init__(self, level: float) -> None:
        self.level = level
        self.seed = 0
        self.workspace_shift = 0.0  # m along x: the robot's task area (RobotSpec.workspace_shift)

    def rng(self, *keys: int | str) -> np.random.Generator:
        """This knob's stream for the current episode, optionally sub-keyed (camera name, frame index)."""
        words = [k if isinstance(k, int) else _key(k) for k in keys]
        return np.random.default_rng([self.seed, SEED_STREAM, _key(self.name), *words])

    def build(self, spec: mujoco.MjSpec) -> None:
        pass

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        pass

    def image(self, camera: str, frame: int, image: np.ndarray) -> np.ndarray:
        return image

    def tactile(self, name: str, frame: int, image: np.ndarray) -> np.ndarray:
        return image


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _rotate(vec: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation of `vec` about unit `axis` by `angle` rad."""
    return (
        vec * math.cos(angle)
        + np.cross(axis, vec) * math.sin(angle)
        + axis * (axis @ vec) * (1.0 - math.cos(angle))
    )


class Lighting(_Knob):
    name = "lighting"
    doc = (
        "lights tilt <= 40 deg, shift <= 0.3 m, diffuse x(1 +- 0.6), colour x(1 +- 0.25) per channel, "
        "headlight x(1 +- 0.5); all times level"
    )

    def __init__(self, level: float) -> None:
        super().__init__(level)
        self._base: dict[str, np.ndarray] | None = None

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        if self._base is None:
            self._base = {
                "dir": model.light_dir.copy(),
                "pos": model.light_pos.copy(),
                "diffuse": model.light_diffuse.copy(),
                "ambient": model.vis.headlight.ambient.copy(),
                "head_diffuse": model.vis.headlight.diffuse.copy(),
            }
        base, level, rng = self._base, self.level, self.rng()
        for i in range(model.nlight):
            direction = base["dir"][i] / np.linalg.norm(base["dir"][i])
            axis = np.cross(direction, _unit(rng))
            axis /= np.linalg.norm(axis)
            model.light_dir[i] = _rotate(direction, axis, math.radians(rng.uniform(0, 40.0 * level)))
            model.light_pos[i] = base["pos"][i] + [*rng.uniform(-0.3 * level, 0.3 * level, 2), 0.0]
            scale = rng.uniform(1 - 0.6 * level, 1 + 0.6 * level) * self._tint(rng)
            model.light_diffuse[i] = np.clip(base["diffuse"][i] * scale, 0.0, 1.0)
        head = model.vis.headlight
        head.ambient[:] = np.clip(
            base["ambient"] * rng.uniform(1 - 0.5 * level, 1 + 0.5 * level) * self._tint(rng), 0.0, 1.0
        )
        head.diffuse[:] = np.clip(base["head_diffuse"] * rng.uniform(1 - 0.5 * level, 1 + 0.5 * level), 0, 1)

    def _tint(self, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(1 - 0.25 * self.level, 1 + 0.25 * self.level, 3)


def task_object_bodies(model: mujoco.MjModel) -> list[int]:
    """The task's objects: free or mocap bodies hanging off the world (the robot's base is fixed), minus
    the distractors this module adds."""
    bodies = []
    for body in range(1, model.nbody):
        if model.body_parentid[body] != 0 or model.body(body).name.startswith(DISTRACTOR_PREFIX):
            continue
        jnt = model.body_jntadr[body]
        free = model.body_jntnum[body] == 1 and model.jnt_type[jnt] == mujoco.mjtJoint.mjJNT_FREE
        if free or model.body_mocapid[body] >= 0:
            bodies.append(body)
    return bodies


class Textures(_Knob):
    name = "textures"
    doc = (
        "table: checker/noise texture with probability level, colour blended to random by level; objects "
        "keep their colour family (hue +-0.03, saturation/value x(1 -0.2/+0.1), times level)"
    )
    _TEXTURED = ("perturb_checker", "perturb_noise")

    def __init__(self, level: float) -> None:
        super().__init__(level)
        self._table_rgba: np.ndarray | None = None
        self._table_mat = -1
        self._written: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # geom -> (base, what we wrote)

    def build(self, spec: mujoco.MjSpec) -> None:
        table = spec.geom(TABLE)
        if table is None or not table.material:
            raise ValueError("perturbation 'textures': the scene has no 'table' geom with a material")
        common = {"type": mujoco.mjtTexture.mjTEXTURE_2D, "width": 64, "height": 64}
        spec.add_texture(
            name="perturb_checker",
            builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
            rgb1=[1.0, 1.0, 1.0],
            rgb2=[0.55, 0.55, 0.55],
            **common,
        )
        spec.add_texture(
            name="perturb_noise",
            builtin=mujoco.mjtBuiltin.mjBUILTIN_FLAT,
            rgb1=[0.9, 0.9, 0.9],
            mark=mujoco.mjtMark.mjMARK_RANDOM,
            random=0.35,
            markrgb=[0.45, 0.45, 0.45],
            **common,
        )
        for name, repeat in zip(self._TEXTURED, (8.0, 16.0), strict=True):  # 12.5 cm and 6 cm tiles
            material = spec.add_material(name=name, texrepeat=[repeat, repeat], texuniform=True)
            material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = name

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        rng, level = self.rng(), self.level
        table = model.geom(TABLE).id
        if self._table_rgba is None:
            self._table_mat = int(model.geom_matid[table])
            self._table_rgba = model.mat_rgba[self._table_mat].copy()
        textured = rng.random() < level
        material = self._table_mat
        if textured:
            material = model.material(self._TEXTURED[rng.integers(len(self._TEXTURED))]).id
        model.geom_matid[table] = material
        colour = np.append(rng.uniform(0.15, 0.95, 3), 1.0)
        model.mat_rgba[self._table_mat] = self._table_rgba
        model.mat_rgba[material] = (1 - level) * self._table_rgba + level * colour

        for body in task_object_bodies(model):
            for geom in range(model.body_geomadr[body], model.body_geomadr[body] + model.body_geomnum[body]):
                self._jitter(model, geom, rng)

    def _jitter(self, model: mujoco.MjModel, geom: int, rng: np.random.Generator) -> None:
        """Brightness/hue jitter that keeps a named colour (red, green, ...) in its family.

        The base is the colour the task set: the compiled one, unless the task re-coloured the geom at this
        reset (it then differs from what this knob wrote last time)."""
        current = model.geom_rgba[geom].copy()
        base, written = self._written.get(geom, (current, current))
        if not np.array_equal(current, written):
            base = current
        h, s, v = colorsys.rgb_to_hsv(*base[:3])
        level = self.level
        h = (h + rng.uniform(-0.03, 0.03) * level) % 1.0
        s = min(1.0, s * rng.uniform(1 - 0.2 * level, 1 + 0.1 * level))
        v = min(1.0, v * rng.uniform(1 - 0.2 * level, 1 + 0.1 * level))
        model.geom_rgba[geom, :3] = colorsys.hsv_to_rgb(h, s, v)
        self._written[geom] = (base, model.geom_rgba[geom].copy())


class CameraJitter(_Knob):
    name = "camera_jitter"
    doc = "every camera moves <= 0.02 m and turns <= 3 deg (times level) relative to its mount, per reset"
    MAX_SHIFT = 0.02  # m at level 1
    MAX_TURN = 3.0  # degrees at level 1

    def __init__(self, level: float) -> None:
        super().__init__(level)
        self._base: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        if self._base is None:
            self._base = (model.cam_pos.copy(), model.cam_quat.copy())
        rng = self.rng()
        for cam in range(model.ncam):
            radius = self.MAX_SHIFT * self.level * rng.random() ** (1 / 3)  # uniform in the ball
            model.cam_pos[cam] = self._base[0][cam] + radius * _unit(rng)
            turn = np.zeros(4)
            angle = math.radians(self.MAX_TURN * self.level * rng.random())
            mujoco.mju_axisAngle2Quat(turn, _unit(rng), angle)
            quat = np.zeros(4)
            mujoco.mju_mulQuat(quat, self._base[1][cam], turn)  # about the camera's own axes
            model.cam_quat[cam] = quat


@dataclass(frozen=True)
class _Shape:
    geom: mujoco.mjtGeom
    size: tuple[float, float, float]
    rest_z: float  # m: centre height when resting on the table
    footprint: float  # m: radius of a circle that covers its outline on the table


class Distractors(_Knob):
    name = "distractors"
    doc = "round(3 x level) non-cube objects (sphere, cylinder, brick) in random colours on the table"
    SHAPES: ClassVar[tuple[_Shape, ...]] = (
        _Shape(mujoco.mjtGeom.mjGEOM_SPHERE, (0.016, 0.0, 0.0), 0.016, 0.016),
        _Shape(mujoco.mjtGeom.mjGEOM_CYLINDER, (0.014, 0.022, 0.0), 0.022, 0.014),
        _Shape(mujoco.mjtGeom.mjGEOM_BOX, (0.03, 0.012, 0.012), 0.012, math.hypot(0.03, 0.012)),
    )
    MASS = 0.03  # kg, like the task cubes
    FRICTION = (1.2, 0.01, 0.0002)  # sliding, torsional, rolling: the task cubes'
    X_RANGE = (0.10, 0.32)  # m: on the table in front of the robot, overlapping the task area
    Y_RANGE = (-0.20, 0.20)
    MIN_RADIUS = 0.12  # m from the robot's base axis
    CLEARANCE = 0.01  # m between footprints at reset
    PARK = (-2.0, 0.0, 0.5)  # m: unused distractors float here, hidden and collision-free

    def build(self, spec: mujoco.MjSpec) -> None:
        """Always three bodies, so the model does not depend on the level; unused ones stay parked."""
        slide, torsion, roll = self.FRICTION
        for i, shape in enumerate(self.SHAPES):
            name = f"{DISTRACTOR_PREFIX}{i}"
            pos = [self.PARK[0], self.PARK[1] + 0.2 * i, self.PARK[2]]
            body = spec.worldbody.add_body(name=name, pos=pos, gravcomp=1.0)  # parked: no gravity
            body.add_freejoint(name=name)
            body.add_geom(
                name=name,
                type=shape.geom,
                size=list(shape.size),
                mass=self.MASS,
                friction=list(self.FRICTION),
                condim=4,
                contype=0,
                conaffinity=0,
                rgba=[0.5, 0.5, 0.5, 0.0],  # alpha 0: not rendered while parked
            )
            # the table is on bit 0, the objects on the pads' bit: an explicit pair, as for the task cubes
            spec.add_pair(
                name=f"table_{name}",
                geomname1=TABLE,
                geomname2=name,
                condim=4,
                friction=[slide, slide, torsion, roll, roll],
            )

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        rng = self.rng()
        mujoco.mj_kinematics(model, data)  # the task's objects where the task just put them
        taken = [(data.xpos[b][:2].copy(), _footprint(model, b)) for b in task_object_bodies(model)]
        active = set(rng.choice(len(self.SHAPES), size=round(3 * self.level), replace=False).tolist())
        for i, shape in enumerate(self.SHAPES):
            body = model.body(f"{DISTRACTOR_PREFIX}{i}")
            geom = model.geom(f"{DISTRACTOR_PREFIX}{i}")
            qpos = model.jnt_qposadr[body.jntadr[0]]
            xy = self._place(rng, shape.footprint, taken) if i in active else None
            if xy is None:  # parked (mj_resetData already put it at its parking pose)
                model.body_gravcomp[body.id], geom.contype[0], geom.conaffinity[0], geom.rgba[3] = 1, 0, 0, 0
                continue
            taken.append((xy, shape.footprint))
            yaw = rng.uniform(-math.pi, math.pi)
            data.qpos[qpos : qpos + 7] = [*xy, shape.rest_z, math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
            model.body_gravcomp[body.id], geom.contype[0], geom.conaffinity[0] = 0.0, OBJECT_BIT, OBJECT_BIT
            colour = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.35, 0.95))
            geom.rgba[:] = [*colour, 1.0]

    def _place(
        self, rng: np.random.Generator, footprint: float, taken: list[tuple[np.ndarray, float]]
    ) -> np.ndarray | None:
        for _ in range(200):  # rejection sampling; None (stay parked) if the table is too full
            xy = np.array([rng.uniform(*self.X_RANGE) + self.workspace_shift, rng.uniform(*self.Y_RANGE)])
            if np.linalg.norm(xy) >= self.MIN_RADIUS and all(
                np.linalg.norm(xy - other) >= footprint + radius + self.CLEARANCE for other, radius in taken
            ):
                return xy
        return None


def _footprint(model: mujoco.MjModel, body: int) -> float:
    """Radius about the body's origin of a circle covering all its geoms (bounding spheres: generous)."""
    geoms = range(model.body_geomadr[body], model.body_geomadr[body] + model.body_geomnum[body])
    return max((np.linalg.norm(model.geom_pos[g][:2]) + model.geom_rbound[g] for g in geoms), default=0.0)


class Occlusion(_Knob):
    name = "occlusion"
    doc = "one flat-colour rectangle per episode and camera covering [0.1, 0.3] x level of the image"

    def __init__(self, level: float) -> None:
        super().__init__(level)
        self._patches: dict[str, tuple[tuple[int, int], tuple[slice, slice], np.ndarray]] = {}

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        self._patches.clear()

    def box(self, camera: str, height: int, width: int) -> tuple[slice, slice, np.ndarray]:
        """(rows, cols, rgb) of this episode's patch for `camera` at that image size."""
        cached = self._patches.get(camera)
        if cached is None or cached[0] != (height, width):
            rng = self.rng(camera)
            area = rng.uniform(0.1, 0.3) * self.level * height * width
            aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))  # width / height
            h = int(np.clip(round(math.sqrt(area / aspect)), 1, height))
            w = int(np.clip(round(area / h), 1, width))
            top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
            rgb = rng.integers(0, 256, 3).astype(np.uint8)
            cached = ((height, width), (slice(top, top + h), slice(left, left + w)), rgb)
            self._patches[camera] = cached
        _, (rows, cols), rgb = cached
        return rows, cols, rgb

    def image(self, camera: str, frame: int, image: np.ndarray) -> np.ndarray:
        rows, cols, rgb = self.box(camera, image.shape[0], image.shape[1])
        image = image.copy()
        image[rows, cols] = rgb
        return image


class Blackout(_Knob):
    name = "blackout"
    doc = "each camera frame is all black with probability 0.5 x level (keyed by seed, camera, frame)"

    def image(self, camera: str, frame: int, image: np.ndarray) -> np.ndarray:
        if self.rng(camera, frame).random() < 0.5 * self.level:
            return np.zeros_like(image)
        return image


class TactileNoise(_Knob):
    name = "tactile_noise"
    doc = (
        "sigma = 0.5 mm x level: per-episode taxel offset N(0, (sigma/2)^2) + per-reading N(0, sigma^2), "
        "clipped at 0"
    )
    SIGMA = 0.0005  # m of penetration (Twin.tactile's unit) at level 1

    def __init__(self, level: float) -> None:
        super().__init__(level)
        self._offsets: dict[str, np.ndarray] = {}

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        self._offsets.clear()

    def tactile(self, name: str, frame: int, image: np.ndarray) -> np.ndarray:
        sigma = self.SIGMA * self.level
        offset = self._offsets.get(name)
        if offset is None or offset.shape != image.shape:
            offset = self._offsets[name] = self.rng(name).normal(0.0, sigma / 2, image.shape)
        noise = self.rng(name, frame).normal(0.0, sigma, image.shape)
        return np.maximum(image + offset + noise, 0.0).astype(image.dtype)


class TactileDropout(_Knob):
    name = "tactile_dropout"
    doc = "round(0.3 x level x taxels) dead taxels per sensor and episode, reading 0"

    def __init__(self, level: float) -> None:
        super().__init__(level)
        self._dead: dict[str, np.ndarray] = {}

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        self._dead.clear()

    def dead(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Boolean mask of this episode's dead taxels of sensor `name`."""
        mask = self._dead.get(name)
        if mask is None or mask.shape != shape:
            count = math.prod(shape)
            mask = np.zeros(count, bool)
            mask[self.rng(name).choice(count, size=round(0.3 * self.level * count), replace=False)] = True
            mask = self._dead[name] = mask.reshape(shape)
        return mask

    def tactile(self, name: str, frame: int, image: np.ndarray) -> np.ndarray:
        return np.where(self.dead(name, image.shape), 0.0, image).astype(image.dtype)


# Registry order is the order of application (noise before dropout, occlusion before blackout), so the
# result never depends on the order the knobs were listed in.
_KNOBS: dict[str, type[_Knob]] = {
    k.name: k
    for k in (
        Lighting,
        Textures,
        CameraJitter,
        Distractors,
        Occlusion,
        Blackout,
        TactileNoise,
        TactileDropout,
    )
}
KNOBS: dict[str, str] = {name: knob.doc for name, knob in _KNOBS.items()}


def parse(specs: Sequence[str]) -> list[Perturbation]:
    """`["lighting=0.5", "occlusion"]` -> perturbations; a one-line ValueError for anything else."""
    if isinstance(specs, str):
        raise ValueError(f"perturbations must be a list of 'NAME[=LEVEL]' strings, got the string '{specs}'")
    parsed: dict[str, Perturbation] = {}
    for text in specs:
        name, sep, level_text = str(text).partition("=")
        name = name.strip()
        if name not in _KNOBS:
            raise ValueError(f"unknown perturbation '{name}' (known: {', '.join(_KNOBS)})")
        level = 1.0
        if sep:
            try:
                level = float(level_text)
            except ValueError:
                level = math.nan
            if not 0.0 <= level <= 1.0:  # also rejects nan
                raise ValueError(
                    f"perturbation '{text}': level must be a number in [0, 1], got '{level_text.strip()}'"
                )
        if name in parsed:
            raise ValueError(f"perturbation '{name}' is given twice")
        parsed[name] = Perturbation(name, level)
    return [parsed[name] for name in _KNOBS if name in parsed]


class Perturbations:
    """The active knobs of one twin, applied in registry order. Empty: every hook is the identity."""

    def __init__(self, specs: Sequence[str] = (), workspace_shift: float = 0.0) -> None:
        self.perturbations = parse(specs)
        # level 0 is "off": such a knob builds nothing and touches nothing
        self._knobs = [_KNOBS[p.name](p.level) for p in self.perturbations if p.level > 0.0]
        for knob in self._knobs:  # the robot's task area (RobotSpec.workspace_shift), for placements
            knob.workspace_shift = workspace_shift
        self.seed: int | None = None

    def __bool__(self) -> bool:
        return bool(self._knobs)

    def knob(self, name: str) -> _Knob | None:
        """The active knob `name` (None if absent or at level 0): for tests and tools."""
        return next((k for k in self._knobs if k.name == name), None)

    def build(self, spec: mujoco.MjSpec) -> None:
        """Add what must exist before compiling (after the task has built its objects)."""
        for knob in self._knobs:
            knob.build(spec)

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, seed: int) -> None:
        """Re-draw the episode's perturbations after the task's reset (before mj_forward).

        Takes the episode seed rather than a generator: each knob derives its own stream from it, and
        per-frame draws are keyed by (seed, frame) for random access."""
        self.seed = seed
        for knob in self._knobs:
            knob.seed = seed
            knob.reset(model, data)

    def image(self, camera: str, frame: int, image: np.ndarray) -> np.ndarray:
        """Post-process camera `camera`'s HxWx3 uint8 frame number `frame` of the episode."""
        for knob in self._knobs:
            image = knob.image(camera, frame, image)
        return image

    def tactile(self, name: str, frame: int, image: np.ndarray) -> np.ndarray:
        """Post-process sensor `name`'s taxel image at frame `frame` of the episode."""
        for knob in self._knobs:
            image = knob.tactile(name, frame, image)
        return image
