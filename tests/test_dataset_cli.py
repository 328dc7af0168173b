"""`twinloop dataset info|plot|frame|video` on a small recording (zarr, written by the project's buffer), and
one-line errors naming the file for corrupt or truncated inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_zarr_buffer import stage_episode

from twinloop.datasets.zarr_buffer import ZarrReplayBuffer

LENGTHS = (20, 14)


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    out = tmp_path / "rec"
    buffer = ZarrReplayBuffer.create(out / "replay.zarr")
    for i, n in enumerate(LENGTHS):
        buffer.commit(stage_episode(tmp_path / "staging", i, n))
    buffer.close()
    return out


def twinloop(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONSAFEPATH="1")
    return subprocess.run(
        [sys.executable, "-m", "twinloop.cli", "dataset", *args], capture_output=True, text=True, env=env
    )


def test_info_plot_frame_and_video(recording: Path, tmp_path: Path):
    info = twinloop("info", str(recording))
    assert info.returncode == 0, info.stderr
    assert f"2 episodes, {sum(LENGTHS)} frames" in info.stdout
    assert "episode 1: 14 frames at 30 fps" in info.stdout

    plot = tmp_path / "plot.png"
    assert twinloop("plot", str(recording), "--episode", "1", "--out", str(plot)).returncode == 0
    assert cv2.imread(str(plot)).shape[0] > 200

    frame = tmp_path / "frame.png"
    assert (
        twinloop("frame", str(recording), "--episode", "1", "--index", "5", "--out", str(frame)).returncode
        == 0
    )
    stored = ZarrReplayBuffer.open(recording / "replay.zarr", mode="r").get_episode(1)[
        "observation.images.front"
    ][5]
    np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(str(frame)), cv2.COLOR_BGR2RGB), stored)

    video = tmp_path / "episode.mp4"
    assert twinloop("video", str(recording), "--episode", "0", "--out", str(video)).returncode == 0
    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == LENGTHS[0]


def _one_line_error(result: subprocess.CompletedProcess, names: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "error:" in lines[0] and names in lines[0], result.stderr


def test_bad_input_is_a_one_line_error_naming_the_file(recording: Path, tmp_path: Path):
    _one_line_error(twinloop("plot", str(recording), "--episode", "7"), "--episode 7")
    _one_line_error(twinloop("frame", str(recording), "--index", "99"), "--index 99")
    _one_line_error(twinloop("info", str(tmp_path / "nowhere")), "nowhere")

    (recording / "lerobot" / "meta").mkdir(parents=True)
    info_json = recording / "lerobot" / "meta" / "info.json"
    info_json.write_text('{"total_episodes": 2')  # truncated
    _one_line_error(twinloop("info", str(recording)), str(info_json))
    info_json.write_text(json.dumps({"total_episodes": 2}))

    chunk = next((recording / "replay.zarr" / "data" / "observation.state").glob("c*"))
    chunk = next(chunk.rglob("*")) if chunk.is_dir() else chunk
    chunk.write_bytes(chunk.read_bytes()[:10])  # truncated chunk
    _one_line_error(twinloop("plot", str(recording)), "observation.state")

    (recording / "replay.zarr" / "zarr.json").write_text("{not json")
    _one_line_error(twinloop("info", str(recording)), str(recording / "replay.zarr" / "zarr.json"))
