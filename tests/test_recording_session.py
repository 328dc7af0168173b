"""The recording session without ROS: episodes go through the commit worker process into LeRobot and zarr,
a session reopened with resume appends, staged episodes left by a dead recorder are committed on the next
start, and an unreadable staged episode gives a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from twinloop.datasets.episode import EpisodeMeta, StagedEpisode
from twinloop.datasets.lerobot_v3 import verify_dataset
from twinloop.datasets.recording import RecordingSession
from twinloop.datasets.zarr_buffer import ZarrReplayBuffer

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


def _record(session: RecordingSession, length: int, seed: int) -> int:
    session.begin(
        EpisodeMeta(index=0, fps=10.0, task="pick up the red cube", robot="so101", joint_names=[], seed=seed)
    )
    rng = np.random.default_rng(seed)
    for i in range(length):
        state = rng.normal(size=6).astype(np.float32)
        session.append(
            {
                "timestamp": np.float64(i / 10),
                "observation.state": state,
                "action": state + np.float32(0.1),
                "observation.images.front": rng.integers(0, 255, (24, 32, 3), dtype=np.uint8),
                "command_source": np.int8(2),
                "intervention": np.bool_(False),
            }
        )
    return session.end(success=True, joint_names=JOINTS, started_at=f"2026-01-01T00:00:{seed:02d}")


def test_episodes_reach_both_formats_through_the_worker_and_resume_appends(tmp_path: Path):
    out = tmp_path / "rec"
    logs: list[str] = []
    session = RecordingSession(out, 10.0, ("lerobot", "zarr"), log=logs.append)
    assert [_record(session, n, seed) for seed, n in enumerate((12, 9))] == [0, 1]
    session.flush()
    assert session.committed() == {"lerobot": 2, "zarr": 2} and not session.errors
    session.close()
    assert not any((out / ".staging").iterdir())  # committed episodes leave no staging behind

    with pytest.raises(ValueError, match="already holds a recording"):
        RecordingSession(out, 10.0, ("lerobot", "zarr"))
    session = RecordingSession(out, 10.0, ("lerobot", "zarr"), resume=True)
    assert _record(session, 7, seed=5) == 2
    session.close()
    assert verify_dataset(out / "lerobot")["episodes"] == 3
    buffer = ZarrReplayBuffer.open(out / "replay.zarr")
    assert [buffer.episode_length(i) for i in range(3)] == [12, 9, 7]
    info = json.loads((out / "lerobot" / "meta" / "info.json").read_text())
    assert info["features"]["observation.state"]["names"] == JOINTS


def test_a_staged_episode_left_by_a_dead_recorder_is_committed_on_the_next_start(tmp_path: Path):
    out = tmp_path / "rec"
    session = RecordingSession(out, 10.0, ("zarr",))
    _record(session, 10, seed=1)
    session.flush()
    # the commit worker dies (as with a recorder killed -9): episode 1 is staged but never committed
    session._committer._proc.kill()
    session._committer._proc.wait()
    index = _record(session, 6, seed=2)
    session.flush()
    assert session.errors
    assert index == 1 and (out / ".staging" / "episode_000001" / "complete.json").is_file()
    logs: list[str] = []
    reopened = RecordingSession(out, 10.0, ("zarr",), resume=True, log=logs.append)
    assert reopened.committed() == {"zarr": 2}
    assert any("committed staged episode 1" in line for line in logs), logs
    reopened.close()


def test_unreadable_staged_metadata_is_a_one_line_error(tmp_path: Path):
    folder = tmp_path / "episode_000000"
    (folder / "data.zarr").mkdir(parents=True)
    (folder / "complete.json").write_text("{not json")
    with pytest.raises(ValueError, match="complete.json: unreadable episode metadata") as info:
        StagedEpisode(folder)
    assert "\n" not in str(info.value)
