"""Robustness knobs of the twin (twinloop.sim.perturbations): each changes what it should and nothing else.

Small cameras (64x48) keep every render in the low milliseconds on the CPU renderer.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

from twinloop.sim.perturbations import (
    DISTRACTOR_PREFIX,
    KNOBS,
    Distractors,
    Perturbation,
    Perturbations,
    parse,
    task_object_bodies,
)
from twinloop.sim.robots import home_array
from twinloop.sim.scene import CameraConfig, wrist_camera
from twinloop.sim.tasks import BIN_COLOURS, CUBE_COLOURS
from twinloop.sim.twin import Twin, TwinConfig

FRONT = CameraConfig(width=64, height=48)
WRIST = wrist_camera("so101", width=64, height=48)
NAMES = (
    "lighting",
    "textures",
    "camera_jitter",
    "distractors",
    "occlusion",
    "blackout",
    "tactile_noise",
    "tactile_dropout",
)
# every knob that must leave the physics alone
NON_PHYSICAL = tuple(n for n in NAMES if n != "distractors")
EMPTY = mujoco.MjModel.from_xml_string("<mujoco/>")  # for hooks that never look at the model


def make_twin(*perturbations: str, task: str = "pick_lift_cube", cameras=(FRONT,)) -> Twin:
    return Twin(TwinConfig(task=task, cameras=cameras, perturbations=perturbations))


@pytest.fixture(scope="module")
def plain():
    twin = make_twin()
    yield twin
    twin.close()


def _hooks(*specs: str, seed: int = 0) -> Perturbations:
    """Perturbations reset for `seed` without a twin (for the image and tactile hooks)."""
    perturbations = Perturbations(specs)
    perturbations.reset(EMPTY, mujoco.MjData(EMPTY), seed)
    return perturbations


def _task_pose(twin: Twin) -> np.ndarray:
    """Where the task put its objects: free-joint qpos and mocap poses."""
    parts = [twin.data.mocap_pos.ravel(), twin.data.mocap_quat.ravel()]
    for body in task_object_bodies(twin.model):
        if twin.model.body_jntnum[body]:
            adr = twin.model.jnt_qposadr[twin.model.body_jntadr[body]]
            parts.append(twin.data.qpos[adr : adr + 7])
    return np.concatenate(parts)


def _run(twin: Twin, seed: int, steps: int = 60) -> np.ndarray:
    """A seeded reset and a fixed arm motion; the whole qpos trajectory."""
    twin.reset(seed)
    home = home_array(twin.robot)
    states = []
    for k in range(steps):
        twin.step(home + 0.3 * np.sin(k / 10.0))
        states.append(twin.data.qpos.copy())
    return np.array(states)


# -- parsing -------------------------------------------------------------------------------------------
def test_knob_names_are_the_api():
    assert tuple(KNOBS) == NAMES
    assert all(KNOBS[name] for name in NAMES)  # each documented


def test_parse_levels_defaults_and_canonical_order():
    assert parse(["occlusion", " lighting = 0.5"]) == [
        Perturbation("lighting", 0.5),
        Perturbation("occlusion"),
    ]
    assert parse(["blackout=0", "textures=1"]) == [
        Perturbation("textures", 1.0),
        Perturbation("blackout", 0.0),
    ]
    assert parse([]) == []
    assert str(Perturbation("lighting", 0.25)) == "lighting=0.25"


@pytest.mark.parametrize(
    "specs, needle",
    [
        (["fog"], "unknown perturbation 'fog' (known: lighting, textures,"),
        (["lighting=2"], "level must be a number in [0, 1], got '2'"),
        (["lighting=-0.1"], "got '-0.1'"),
        (["lighting=much"], "got 'much'"),
        (["lighting=nan"], "got 'nan'"),
        (["lighting="], "got ''"),
        (["lighting", "lighting=0.5"], "'lighting' is given twice"),
        ("lighting", "a list of 'NAME[=LEVEL]' strings"),
    ],
)
def test_bad_specs_are_one_line_value_errors(specs, needle):
    with pytest.raises(ValueError) as err:
        parse(specs)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_the_twin_rejects_a_bad_spec():
    with pytest.raises(ValueError, match="unknown perturbation 'fog'"):
        make_twin("fog")


# -- off means off, seeds are separate -------------------------------------------------------------------
def test_level_zero_is_identical_to_none(plain):
    off = make_twin(*(f"{name}=0" for name in NAMES), cameras=(FRONT,))
    assert not off.perturbations
    for field in ("nq", "nbody", "ngeom", "nmat", "ntex", "nlight", "npair"):
        assert getattr(off.model, field) == getattr(plain.model, field)
    for seed in (0, 4):
        np.testing.assert_array_equal(_run(off, seed, 20), _run(plain, seed, 20))
        np.testing.assert_array_equal(off.render("front"), plain.render("front"))
        for name in plain.tactile_names:
            np.testing.assert_array_equal(off.tactile(name), plain.tactile(name))
    off.close()


@pytest.mark.parametrize("task", ["pick_lift_cube", "place_cube_in_bin"])
def test_perturbations_do_not_change_the_task_randomization(task):
    base = make_twin(task=task, cameras=())
    perturbed = make_twin(*NAMES, task=task, cameras=())
    for seed in range(5):
        base.reset(seed)
        perturbed.reset(seed)
        np.testing.assert_array_equal(_task_pose(perturbed), _task_pose(base))
        assert perturbed.task.instruction == base.task.instruction


def test_visual_and_tactile_knobs_leave_the_physics_alone(plain):
    perturbed = make_twin(*NON_PHYSICAL)
    np.testing.assert_array_equal(_run(perturbed, 7), _run(plain, 7))
    perturbed.close()


def test_same_seed_same_images_and_knob_streams_are_independent():
    twin = make_twin("lighting", "textures", "camera_jitter", "distractors", "occlusion", "blackout=0.5")

    def frames(seed: int) -> list[np.ndarray]:
        twin.reset(seed)
        images = [twin.render("front")]
        for _ in range(6):
            twin.step(home_array(twin.robot))
            images.append(twin.render("front"))
        return images

    first = frames(5)
    frames(6)
    for a, b in zip(first, frames(5), strict=True):
        np.testing.assert_array_equal(a, b)
    twin.close()
    # one knob's draws do not depend on which other knobs are on
    alone, together = make_twin("lighting"), make_twin("lighting", "tactile_noise", "tactile_dropout")
    for seed in (1, 2):
        alone.reset(seed)
        together.reset(seed)
        np.testing.assert_array_equal(alone.render("front"), together.render("front"))
    alone.close()
    together.close()


# -- the knobs -----------------------------------------------------------------------------------------
def _brightness_spread(twin: Twin, seeds=range(6)) -> float:
    means = []
    for seed in seeds:
        twin.reset(seed)
        means.append(twin.render("front").mean())
    return float(np.ptp(means))


def test_lighting_changes_image_brightness_by_level(plain):
    full, weak = make_twin("lighting"), make_twin("lighting=0.2")
    spread_plain, spread_weak, spread_full = map(_brightness_spread, (plain, weak, full))
    assert spread_plain < 3.0  # only the cubes move
    assert spread_full > 30.0
    assert spread_plain < spread_weak < spread_full
    full.reset(0)
    assert not np.allclose(full.model.light_dir[0], [0, 0, -1])  # the light itself moved
    full.close()
    weak.close()


def _colour_name(rgba: np.ndarray) -> str:
    named = {**CUBE_COLOURS, **BIN_COLOURS}
    return min(named, key=lambda n: np.linalg.norm(np.asarray(named[n][:3]) - rgba[:3]))


@pytest.mark.parametrize("task", ["pick_lift_cube", "place_cube_in_bin"])
def test_textures_keep_colour_families_and_change_the_table(task):
    base = make_twin(task=task, cameras=())
    textured = make_twin("textures", task=task, cameras=())
    table = base.model.geom("table").id
    tables = set()
    for seed in range(6):
        for twin in (base, textured):
            twin.reset(seed)
        objects = [
            g for b in task_object_bodies(base.model) for g in np.flatnonzero(base.model.geom_bodyid == b)
        ]
        for geom in objects:
            before, after = base.model.geom_rgba[geom], textured.model.geom_rgba[geom]
            assert _colour_name(after) == _colour_name(before)  # "the red cube" stays red
        assert any(not np.array_equal(base.model.geom_rgba[g], textured.model.geom_rgba[g]) for g in objects)
        matid = textured.model.geom_matid[table]
        assert textured.model.material(matid).name.startswith("perturb_")  # level 1: always textured
        tables.add((int(matid), *np.round(textured.model.mat_rgba[matid], 3)))
    assert len(tables) == 6  # a different table every episode
    # jitter does not accumulate over episodes
    textured.reset(3)
    rgba = textured.model.geom_rgba.copy()
    for seed in (4, 3, 5, 3):
        textured.reset(seed)
    np.testing.assert_array_equal(textured.model.geom_rgba, rgba)


def test_camera_jitter_moves_every_camera_a_bounded_nonzero_amount(plain):
    cameras = (FRONT, WRIST)
    base = make_twin(cameras=cameras)
    jittered, half = (
        make_twin("camera_jitter", cameras=cameras),
        make_twin("camera_jitter=0.5", cameras=cameras),
    )
    for seed in range(5):
        poses = {}
        for twin in (base, jittered, half):
            twin.reset(seed)  # the arm is at home: a mounted camera's body is where it was
            poses[id(twin)] = {c.name: twin.camera_pose(c.name) for c in cameras}
        for twin, level in ((jittered, 1.0), (half, 0.5)):
            for cam in cameras:
                (p0, r0), (p1, r1) = poses[id(base)][cam.name], poses[id(twin)][cam.name]
                shift = np.linalg.norm(p1 - p0)
                turn = math.degrees(math.acos(np.clip((np.trace(r0.T @ r1) - 1) / 2, -1, 1)))
                assert 0 < shift <= 0.02 * level + 1e-9
                assert 0 < turn <= 3.0 * level + 1e-6
                np.testing.assert_array_equal(twin.intrinsics(cam.name), base.intrinsics(cam.name))
    jittered.reset(0)
    first = jittered.camera_pose("front")[0]
    jittered.reset(1)
    assert not np.allclose(jittered.camera_pose("front")[0], first)  # re-drawn at each reset
    for twin in (base, jittered, half):
        twin.close()


def _active_distractors(twin: Twin) -> list[int]:
    return [
        b
        for b in range(twin.model.nbody)
        if twin.model.body(b).name.startswith(DISTRACTOR_PREFIX)
        and twin.model.geom_rgba[twin.model.body_geomadr[b], 3] > 0
    ]


@pytest.mark.parametrize("task", ["pick_lift_cube", "place_cube_in_bin"])
def test_distractors_rest_on_the_table_clear_of_the_task_objects(task, plain):
    twin = make_twin("distractors", task=task)
    for seed in range(4):
        twin.reset(seed)
        active = _active_distractors(twin)
        assert len(active) == 3
        start = twin.data.xpos[active].copy()
        for i, shape in enumerate(Distractors.SHAPES):
            assert start[i, 2] == pytest.approx(shape.rest_z)
            assert Distractors.X_RANGE[0] <= start[i, 0] <= Distractors.X_RANGE[1]
            assert Distractors.Y_RANGE[0] <= start[i, 1] <= Distractors.Y_RANGE[1]
            for obj in task_object_bodies(twin.model):  # footprints (bounding circles) do not overlap
                geoms = np.flatnonzero(twin.model.geom_bodyid == obj)
                reach = max(
                    np.linalg.norm(twin.model.geom_pos[g][:2]) + twin.model.geom_rbound[g] for g in geoms
                )
                gap = np.linalg.norm(start[i, :2] - twin.data.xpos[obj][:2])
                assert gap >= reach + shape.footprint
        for _ in range(50):  # 0.5 s holding home
            twin.step(home_array(twin.robot))
        assert np.abs(twin.data.xpos[active] - start).max() < 1e-3
        speeds = [np.linalg.norm(twin.data.cvel[b]) for b in active]
        assert max(speeds) < 1e-3
    assert np.abs(twin.render("front").astype(int) - plain.render("front")).sum() > 0
    twin.close()


def test_distractor_count_follows_the_level_and_unused_ones_are_parked():
    twin = make_twin("distractors=0.34", cameras=())
    for seed in range(4):
        twin.reset(seed)
        active = _active_distractors(twin)
        assert len(active) == 1  # round(0.34 * 3)
        for i in range(3):
            body = twin.model.body(f"{DISTRACTOR_PREFIX}{i}")
            if body.id in active:
                continue
            geom = twin.model.geom(f"{DISTRACTOR_PREFIX}{i}")
            assert geom.contype[0] == 0 and geom.conaffinity[0] == 0 and geom.rgba[3] == 0
            assert np.linalg.norm(twin.data.xpos[body.id][:2]) > 1.5  # far off the work area
        twin.step(home_array(twin.robot))
    twin.close()


def test_occlusion_covers_the_stated_fraction_per_camera():
    cameras = (FRONT, WRIST)
    base, occluded = make_twin(cameras=cameras), make_twin("occlusion=0.5", cameras=cameras)
    for seed in range(4):
        boxes = []
        for cam in cameras:
            base.reset(seed)
            occluded.reset(seed)
            clean, image = base.render(cam.name), occluded.render(cam.name)
            rows, cols, rgb = occluded.perturbations.knob("occlusion").box(cam.name, cam.height, cam.width)
            fraction = (rows.stop - rows.start) * (cols.stop - cols.start) / (cam.height * cam.width)
            assert 0.1 * 0.5 * 0.8 <= fraction <= 0.3 * 0.5 * 1.2  # [0.1, 0.3] x level, up to rounding
            assert np.all(image[rows, cols] == rgb)
            outside = np.ones(clean.shape[:2], bool)
            outside[rows, cols] = False
            np.testing.assert_array_equal(image[outside], clean[outside])
            boxes.append((rows, cols))
            occluded.step(home_array(occluded.robot))  # the same patch all episode
            assert np.all(occluded.render(cam.name)[rows, cols] == rgb)
        assert boxes[0] != boxes[1]  # drawn per camera
    base.close()
    occluded.close()


def test_blackout_rate_and_determinism_per_frame():
    hooks = _hooks("blackout=0.6", seed=3)
    image = np.full((4, 4, 3), 200, np.uint8)
    black = np.array([not hooks.image("front", frame, image).any() for frame in range(2000)])
    assert black.mean() == pytest.approx(0.3, abs=0.04)
    again = _hooks("blackout=0.6", seed=3)
    assert all((not again.image("front", f, image).any()) == black[f] for f in (0, 17, 1999))
    other = _hooks("blackout=0.6", seed=4)
    assert [not other.image("front", f, image).any() for f in range(200)] != black[:200].tolist()
    # in the twin: the frame index is the control tick since the reset
    twin = make_twin("blackout=0.6")
    twin.reset(3)
    for frame in range(12):
        assert (not twin.render("front").any()) == black[frame]
        twin.step(home_array(twin.robot))
    twin.close()


def test_tactile_noise_statistics():
    truth = np.full((8, 6), 0.005, np.float32)  # 5 mm: far from the clip at 0
    hooks = _hooks("tactile_noise", seed=1)
    readings = np.array([hooks.tactile("fixed_jaw", f, truth) for f in range(3000)])
    assert readings.dtype == np.float32
    offset = readings.mean(axis=0) - truth
    assert np.std(readings - readings.mean(axis=0)) == pytest.approx(0.0005, rel=0.05)  # per reading
    assert 0.00012 < np.std(offset) < 0.0004  # per episode, sigma / 2 nominal
    np.testing.assert_array_equal(hooks.tactile("fixed_jaw", 7, truth), readings[7])  # keyed by frame
    zero = np.array([hooks.tactile("fixed_jaw", f, truth * 0) for f in range(200)])
    assert zero.min() == 0.0 and zero.mean() > 0.0  # clipped at 0, no negative pressure
    half = _hooks("tactile_noise=0.5", seed=1)
    spread = np.array([half.tactile("fixed_jaw", f, truth) for f in range(3000)])
    assert np.std(spread - spread.mean(axis=0)) == pytest.approx(0.00025, rel=0.05)
    reset = _hooks("tactile_noise", seed=2)
    assert not np.allclose(reset.tactile("fixed_jaw", 0, truth), readings[0])  # new episode, new offsets


def test_tactile_dropout_kills_a_fixed_fraction_per_episode():
    ones = np.ones((8, 6), np.float32)
    masks = []
    for seed in range(3):
        hooks = _hooks("tactile_dropout", "tactile_noise=0", seed=seed)
        dead = hooks.tactile("moving_jaw", 0, ones) == 0
        assert dead.sum() == round(0.3 * 48)
        for frame in (1, 50):
            np.testing.assert_array_equal(hooks.tactile("moving_jaw", frame, ones) == 0, dead)
        assert not np.array_equal(hooks.tactile("fixed_jaw", 0, ones) == 0, dead)  # per sensor
        masks.append(dead)
    assert not np.array_equal(masks[0], masks[1])
    assert (_hooks("tactile_dropout=0.5").tactile("x", 0, ones) == 0).sum() == round(0.15 * 48)


def test_the_twin_applies_the_tactile_knobs(plain):
    noisy = make_twin("tactile_noise", "tactile_dropout", cameras=())
    noisy.reset(0)
    plain.reset(0)
    for name in plain.tactile_names:
        assert not plain.tactile(name).any()  # nothing touches the open jaws
        reading = noisy.tactile(name)
        assert reading.shape == plain.tactile(name).shape and reading.dtype == np.float32
        assert reading.min() >= 0 and reading.any()
        assert (reading == 0).sum() >= round(0.3 * reading.size)
    noisy.close()
