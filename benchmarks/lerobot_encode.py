"""LeRobot commit speed: one staged episode (three 640x480 cameras at 30 fps, rendered by the twin while its
expert picks the cube) committed to a LeRobot v3 dataset with lerobot's default encoder settings, with the
cameras encoded in parallel (lerobot's process pool), and with SVT-AV1's fastest preset. Reported as
real-time factors (episode seconds per commit second) with lerobot's defaults as the baseline, plus each
variant's video size. A commit is more than encoding: lerobot also writes every frame as a PNG first and
computes statistics.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from twinloop.benchmarks.common import entry, progress

NAME = "lerobot_encode"
SECONDS = 10.0
FPS = 30
WIDTH, HEIGHT = 640, 480
FAST_PRESET = 13  # SVT-AV1's fastest; lerobot's default is 12
VARIANTS = {  # name: (video_preset, parallel_encoding)
    "default": (None, False),
    "parallel": (None, True),
    f"preset{FAST_PRESET}": (FAST_PRESET, False),
}


def names() -> list[tuple[str, str]]:
    rows = []
    for variant in VARIANTS:
        rows += [(f"{NAME}.{variant}.rtf", "x"), (f"{NAME}.{variant}.video_mb", "MB")]
    return rows


def _stage_episode(staging: Path):
    from twinloop.datasets.episode import EpisodeBuffer, EpisodeMeta
    from twinloop.hardware.executor import TrajectoryExecutor
    from twinloop.sim.experts import expert_chunk, get_expert
    from twinloop.sim.robots import get_robot
    from twinloop.sim.scene import front_camera, wrist_camera
    from twinloop.sim.twin import Twin, TwinConfig

    robot = get_robot("so101")
    front, wrist = front_camera("so101"), wrist_camera("so101")
    cameras = tuple(
        dataclasses.replace(base, name=name, width=WIDTH, height=HEIGHT, **extra)
        for name, base, extra in (
            ("front", front, {}),
            ("wrist", wrist, {}),
            ("side", front, {"pos": (0.55, 0.35, 0.35)}),
        )
    )
    twin = Twin(TwinConfig(robot="so101", task="pick_lift_cube", cameras=cameras))
    expert = get_expert("pick_lift_cube", robot, np.random.default_rng(1))
    twin.reset(1)
    expert.reset(twin)
    executor = TrajectoryExecutor(twin.joint_names, twin.limits)
    executor.reset(twin.joint_state()[0])
    meta = EpisodeMeta(index=0, fps=float(FPS), task="pick up the cube", robot="so101", joint_names=[])
    buffer = EpisodeBuffer(staging / "episode_000000", meta)
    ticks_per_frame = round(1.0 / (FPS * twin.control_period)) or 1
    for frame in range(int(SECONDS * FPS)):
        executor.submit(expert_chunk(twin, expert), twin.time)
        for _ in range(ticks_per_frame):
            twin.step(executor.step(twin.time))
        state = twin.joint_state()[0].astype(np.float32)
        row = {"timestamp": np.float64(frame / FPS), "observation.state": state, "action": state}
        for cam in cameras:
            row[f"observation.images.{cam.name}"] = twin.render(cam.name)
        buffer.append(row)
    twin.close()
    return buffer.finish(success=True, joint_names=list(robot.joint_names))


def bench_lerobot_encode() -> list[dict]:
    import lerobot.datasets.lerobot_dataset  # noqa: F401  (imported before timing: seconds on a cold start)

    from twinloop.datasets.commit_worker import Committer, use_forkserver
    from twinloop.datasets.episode import StagedEpisode

    use_forkserver()  # as in the recorder's commit worker
    rows = []
    with tempfile.TemporaryDirectory(prefix="twinloop-bench-enc-") as tmp:
        progress(f"lerobot encode: staging {SECONDS:g} s of three {WIDTH}x{HEIGHT} cameras at {FPS} fps")
        staged = _stage_episode(Path(tmp) / "staging")
        for variant, (preset, parallel) in VARIANTS.items():
            out = Path(tmp) / variant
            committer = Committer(out, FPS, ["lerobot"], "bench/encode", preset, parallel)
            copy = Path(tmp) / f"staged_{variant}"  # a commit deletes its staged episode
            shutil.copytree(staged.folder, copy)
            start = time.perf_counter()
            committer.commit(StagedEpisode(copy))
            seconds = time.perf_counter() - start
            committer.close()
            video_bytes = sum(p.stat().st_size for p in (out / "lerobot" / "videos").rglob("*.mp4"))
            progress(f"lerobot encode {variant}: {seconds:.1f} s, {video_bytes / 1e6:.1f} MB")
            base = None if variant == "default" else f"{NAME}.default.rtf"
            note = f"preset {preset if preset is not None else 'lerobot default'}, parallel={parallel}"
            rows.append(entry(f"{NAME}.{variant}.rtf", SECONDS / seconds, "x", base, notes=note))
            rows.append(entry(f"{NAME}.{variant}.video_mb", video_bytes / 1e6, "MB", None))
    return rows
