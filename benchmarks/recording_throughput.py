"""Recording throughput: three 640x480 cameras at 30 Hz plus joint states at 100 Hz, 60 s of twin time.

Runs `twinloop record` on the twin (lockstep, scripted operator) for one fixed-length episode with a third
camera added, all three formats, then reads what was written: frames per camera against the expected
60 s x 30 fps (target: zero drops), incomplete ticks, the camera and joint rates the recorder measured,
and the encoder's real-time factor (episode duration / commit time, from the commit worker's log line).
In lockstep the twin waits for nobody but the commander, so a recorder that cannot keep up shows as
dropped or duplicated frames, never as a slower simulation.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twinloop.benchmarks.common import entry, progress

NAME = "recording"
SECONDS = 60.0
FPS = 30.0
CAMERAS = ("front", "wrist", "side")
WIDTH, HEIGHT = 640, 480


def names() -> list[tuple[str, str]]:
    return [
        (f"{NAME}.frames_expected", "frames"),
        (f"{NAME}.frames_written", "frames"),
        (f"{NAME}.frames_dropped", "frames"),
        (f"{NAME}.incomplete_ticks", "ticks"),
        (f"{NAME}.camera_rate_min_hz", "Hz"),
        (f"{NAME}.joint_rate_hz", "Hz"),
        (f"{NAME}.twin_rtf", "x"),
        (f"{NAME}.lerobot_encode_rtf", "x"),
        (f"{NAME}.zarr_write_rtf", "x"),
    ]


def _record_command(out: Path) -> list[str]:
    sets = [
        f"twin.cameras=[{','.join(CAMERAS)}]",
        f"recorder.cameras=[{','.join(CAMERAS)}]",
        "twin.max_speed=0.0",  # as fast as the graph goes
        "twin.side.pos=[0.55,0.35,0.35]",  # a second fixed view from the side
        "evaluator.full_episodes=true",
        f"evaluator.episode_time_limit={SECONDS}",
    ]
    for cam in CAMERAS:
        sets += [f"twin.{cam}.width={WIDTH}", f"twin.{cam}.height={HEIGHT}"]
    cmd = [sys.executable, "-m", "twinloop.cli", "record", "--out", str(out), "--episodes", "1"]
    cmd += ["--fps", f"{FPS:g}", "--task", "pick_lift_cube"]
    for item in sets:
        cmd += ["--set", item]
    return cmd


def bench_recording() -> list[dict]:
    from twinloop.datasets.zarr_buffer import ZarrReplayBuffer

    with tempfile.TemporaryDirectory(prefix="twinloop-bench-rec-") as tmp:
        out = Path(tmp) / "rec"
        cmd = _record_command(out)
        progress(f"recording: {len(CAMERAS)} cameras {WIDTH}x{HEIGHT} @ {FPS:g} Hz, {SECONDS:g} s twin time")
        env = dict(os.environ, PYTHONSAFEPATH="1", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
        env.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        wall = time.perf_counter() - started
        log = done.stdout + done.stderr
        if done.returncode != 0:
            raise RuntimeError(f"twinloop record exited {done.returncode}: {log.strip().splitlines()[-1:]}")
        buffer = ZarrReplayBuffer.open(out / "replay.zarr", mode="r")
        if buffer.n_episodes != 1:
            raise RuntimeError(f"expected 1 recorded episode, found {buffer.n_episodes}")
        meta = buffer.meta(0)
        written = buffer.episode_length(0)
        quality = meta.quality
        cam_rates = [quality[f"observation.images.{c}"]["rate_hz"] or 0.0 for c in CAMERAS]
        dropped = sum(int(quality[f"observation.images.{c}"].get("dropped", 0)) for c in CAMERAS)
        joint_rate = quality["joints"]["rate_hz"]
        incomplete = quality["ticks"]["incomplete"]
        # the ticks between recorder/start_episode (a moment after the twin's reset) and stop_episode
        expected = quality["ticks"]["expected"]
    commit = re.search(r"committed \(\d+ frames\): (.*)", log)
    rtf = dict.fromkeys(("lerobot", "zarr"))
    if commit:
        for fmt, value in re.findall(r"(\w+) [\d.]+ s \(([\d.]+)x real time\)", commit.group(1)):
            rtf[fmt] = float(value)
    stamps = {
        what: float(m.group(1))
        for what in ("started", "saved")
        if (m := re.search(rf"\[(\d+\.\d+)\] \[recorder\]: episode 0 {what}", log))
    }
    recording_s = stamps["saved"] - stamps["started"] if len(stamps) == 2 else None
    twin_rtf = SECONDS / recording_s if recording_s else None
    note = f"episode recorded in {recording_s or 0:.0f} s wall; whole run {wall:.0f} s (start-up, commits)"
    return [
        entry(
            f"{NAME}.frames_expected", expected, "frames", notes=f"start to stop of a {SECONDS:g} s episode"
        ),
        entry(f"{NAME}.frames_written", written, "frames", f"{NAME}.frames_expected", notes="per camera"),
        entry(f"{NAME}.frames_dropped", dropped, "frames", notes="target 0; summed over the cameras"),
        entry(f"{NAME}.incomplete_ticks", incomplete, "ticks", notes="ticks missing a stream: not written"),
        entry(f"{NAME}.camera_rate_min_hz", min(cam_rates), "Hz", notes=f"target {FPS:g}"),
        entry(f"{NAME}.joint_rate_hz", joint_rate, "Hz", notes="target 100"),
        entry(f"{NAME}.twin_rtf", twin_rtf, "x", notes=note),
        entry(f"{NAME}.lerobot_encode_rtf", rtf["lerobot"], "x", notes="episode s / LeRobot commit s"),
        entry(f"{NAME}.zarr_write_rtf", rtf["zarr"], "x", notes="episode s / zarr commit s"),
    ]
