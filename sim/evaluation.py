"""Evaluation bookkeeping: episode records, success statistics with Wilson intervals, summary files.

Why Wilson: with the few dozen episodes a CI run affords, the normal approximation gives intervals that
leave [0, 1] and are far too narrow near 0% or 100%.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class EpisodeRecord:
    index: int
    seed: int
    success: bool
    duration_s: float  # sim seconds until success, or the time limit


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default)."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"successes={successes} outside [0, n={n}]")
    if n == 0:
        return (0.0, 1.0)  # no episodes: nothing is known
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at 0/n and n/n the bound is exactly 0 (resp. 1); rounding would leave 5e-17 and exclude the estimate
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def summarize(episodes: list[EpisodeRecord], **context: object) -> dict:
    n = len(episodes)
    k = sum(e.success for e in episodes)
    low, high = wilson_interval(k, n)
    return {
        **context,
        "episodes": n,
        "successes": k,
        "success_rate": k / n if n else 0.0,
        "ci95": [low, high],
        "mean_episode_s": sum(e.duration_s for e in episodes) / n if n else 0.0,
        "per_episode": [asdict(e) for e in episodes],
    }


def result_line(summary: dict) -> str:
    low, high = summary["ci95"]
    return (
        f"RESULT task={summary.get('task')} robot={summary.get('robot')} policy={summary.get('policy')}: "
        f"success {summary['successes']}/{summary['episodes']} = {summary['success_rate']:.0%} "
        f"(95% CI {low:.0%}-{high:.0%}), mean episode {summary['mean_episode_s']:.2f} s"
    )


def write_summary(summary: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def ffmpeg_rgb_input(ffmpeg: str, width: int, height: int, fps: float) -> list[str]:
    """The start of an ffmpeg command reading raw rgb24 frames of one size from stdin."""
    size = f"{width}x{height}"
    return [
        ffmpeg,
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        size,
        "-r",
        f"{fps:g}",
        "-i",
        "-",
    ]


def write_video(frames: list, path: Path, fps: float) -> Path:
    """Encode RGB frames (HxWx3 uint8) as H.264 mp4 with the system ffmpeg (browser-playable)."""
    import shutil
    import subprocess

    if not frames:
        raise ValueError("no frames to encode")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FileNotFoundError("ffmpeg not found; install it (make install does: apt-get install ffmpeg)")
    height, width = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.mp4")
    cmd = [
        *ffmpeg_rgb_input(ffmpeg, width, height, fps),
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-crf",
        "23",
        "-movflags",
        "+faststart",
        str(tmp),
    ]
    proc = subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {proc.stderr.decode(errors='replace').strip()[-300:]}")
    tmp.replace(path)
    return path
