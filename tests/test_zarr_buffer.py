"""The zarr replay buffer: round trip, diffusion_policy-style plain reading, resume, and crash safety with a
real kill -9 at each step of the commit protocol."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from twinloop.datasets.episode import EpisodeBuffer, EpisodeMeta, StagedEpisode
from twinloop.datasets.zarr_buffer import ZarrReplayBuffer, array_layout

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
LENGTHS = (40, 57, 33)


def stage_episode(staging: Path, index: int, length: int, size: tuple[int, int] = (48, 64)) -> StagedEpisode:
    """A synthetic episode: smooth joint curves and a square moving across a small image."""
    meta = EpisodeMeta(
        index=index, fps=30.0, task="pick the cube", robot="so101", joint_names=JOINTS, seed=index
    )
    buffer = EpisodeBuffer(staging / f"episode_{index:06d}", meta)
    t = np.arange(length) / 30.0
    phase = np.linspace(0.0, np.pi, len(JOINTS))
    for i in range(length):
        state = 0.5 * np.sin(2 * np.pi * 0.5 * t[i] + phase + index)
        image = np.zeros((*size, 3), np.uint8)
        x = (3 * i + 7 * index) % (size[1] - 8)
        image[10:18, x : x + 8] = (255, (80 + index * 40) % 256, 20)
        buffer.append(
            {
                "timestamp": t[i],
                "observation.state": state.astype(np.float32),
                "action": (state + 0.01).astype(np.float32),
                "observation.images.front": image,
                "command_source": np.int8(1 + i % 2),
                "intervention": i % 2 == 1,
            }
        )
    return buffer.finish(success=index % 2 == 0)


def staged_columns(episode: StagedEpisode) -> dict[str, np.ndarray]:
    return {key: episode.column(key)[:] for key in episode.keys}


@pytest.fixture
def episodes(tmp_path: Path) -> list[StagedEpisode]:
    return [stage_episode(tmp_path / "staging", i, n) for i, n in enumerate(LENGTHS)]


def assert_episode_equal(buffer: ZarrReplayBuffer, i: int, episode: StagedEpisode) -> None:
    got = buffer.get_episode(i)
    want = staged_columns(episode)
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert buffer.meta(i) == episode.meta


def test_commit_reopen_and_plain_zarr_reading(tmp_path: Path, episodes: list[StagedEpisode]) -> None:
    path = tmp_path / "buffer.zarr"
    with ZarrReplayBuffer.create(path) as buffer:
        assert [buffer.commit(e) for e in episodes] == [0, 1, 2]

    buffer = ZarrReplayBuffer.open(path, mode="r")
    assert buffer.recovery_report is None
    assert buffer.n_episodes == 3
    np.testing.assert_array_equal(buffer.episode_ends, np.cumsum(LENGTHS))
    assert buffer.episode_slice(1) == slice(40, 97)
    for i, episode in enumerate(episodes):
        assert_episode_equal(buffer, i, episode)
    assert buffer.meta(-1).success is True and buffer.meta(1).success is False

    # What a diffusion_policy-style sampler does: plain zarr, no twinloop.
    root = zarr.open(str(path), mode="r")
    ends = root["meta/episode_ends"][:]
    assert ends.dtype == np.int64 and list(ends) == list(np.cumsum(LENGTHS))
    actions = root["data/action"][:]
    np.testing.assert_array_equal(actions, np.concatenate([e.column("action")[:] for e in episodes]))
    images = root["data/observation.images.front"]
    assert images.shape == (sum(LENGTHS), 48, 64, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(
        images[ends[0] : ends[1]], episodes[1].column("observation.images.front")[:]
    )
    assert json.loads(str(root["meta/episode_meta"][2]))["index"] == 2

    # Chunking and codecs as documented.
    assert images.chunks == (16, 48, 64, 3)
    assert type(images.compressors[0]).__name__ == "ZstdCodec"
    assert root["data/observation.state"].chunks[0] == 4096
    assert type(root["data/observation.state"].compressors[0]).__name__ == "BloscCodec"


def test_layout_one_camera_frame_per_chunk() -> None:
    rows, codecs = array_layout((480, 640, 3), np.dtype(np.uint8))
    assert rows == 1 and type(codecs[0]).__name__ == "ZstdCodec"
    assert array_layout((96, 96, 3), np.dtype(np.uint8))[0] == 16
    assert array_layout((32, 32), np.dtype(np.float32))[0] == 16
    rows, codecs = array_layout((6,), np.dtype(np.float32))
    assert rows == 4096 and type(codecs[0]).__name__ == "BloscCodec"


def test_resume_appends_and_commit_is_idempotent(tmp_path: Path, episodes: list[StagedEpisode]) -> None:
    path = tmp_path / "buffer.zarr"
    with ZarrReplayBuffer.create(path) as buffer:
        buffer.commit(episodes[0])
        buffer.commit(episodes[1])
    with ZarrReplayBuffer.open(path) as buffer:  # --resume
        assert buffer.n_episodes == 2
        assert buffer.commit(episodes[1]) == 1  # committed already: a no-op
        assert buffer.n_rows == 97
        assert buffer.commit(episodes[2]) == 2
        with pytest.raises(ValueError, match="gap"):
            buffer.commit(stage_episode(tmp_path / "more", 5, 10))
        other = stage_episode(tmp_path / "other", 0, 12)
        with pytest.raises(ValueError, match="exists already"):
            buffer.commit(other)
    buffer = ZarrReplayBuffer.open(path, mode="r")
    np.testing.assert_array_equal(buffer.episode_ends, np.cumsum(LENGTHS))
    for i, episode in enumerate(episodes):
        assert_episode_equal(buffer, i, episode)
    with pytest.raises(ValueError, match="read-only"):
        buffer.commit(episodes[2])
    with pytest.raises(ValueError, match="exists already"):
        ZarrReplayBuffer.create(path)


def test_mismatched_columns_are_rejected_before_writing(
    tmp_path: Path, episodes: list[StagedEpisode]
) -> None:
    path = tmp_path / "buffer.zarr"
    with ZarrReplayBuffer.create(path) as buffer:
        buffer.commit(episodes[0])
        bigger = stage_episode(tmp_path / "big", 1, 10, size=(60, 80))
        with pytest.raises(ValueError, match=r"observation\.images\.front rows are \(60, 80, 3\)"):
            buffer.commit(bigger)
        assert buffer.n_rows == 40
    assert ZarrReplayBuffer.open(path).recovery_report is None


def test_one_writer_at_a_time(tmp_path: Path, episodes: list[StagedEpisode]) -> None:
    path = tmp_path / "buffer.zarr"
    writer = ZarrReplayBuffer.create(path)
    with pytest.raises(ValueError, match="another process"):
        ZarrReplayBuffer.open(path, mode="a")
    ZarrReplayBuffer.open(path, mode="r")  # readers are welcome
    writer.close()
    ZarrReplayBuffer.open(path, mode="a").close()


CHILD = """
import sys, time
from twinloop.datasets import zarr_buffer
from twinloop.datasets.episode import StagedEpisode
stop_at, path, staged = sys.argv[1:4]

def hook(step):
    if step == stop_at:
        print("PAUSED", step, flush=True)
        time.sleep(60)

zarr_buffer.crash_hook = hook
buffer = zarr_buffer.ZarrReplayBuffer.open(path, mode="a")
buffer.commit(StagedEpisode(staged))
print("DONE", flush=True)
"""


def kill_during_commit(path: Path, staged: StagedEpisode, stop_at: str) -> None:
    """Commit `staged` in a child process and kill -9 it when the commit reaches `stop_at`."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, stop_at, str(path), str(staged.folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([child.stdout], [], [], 60)
        line = child.stdout.readline() if ready else ""
        assert line.startswith("PAUSED"), f"child did not reach {stop_at}: {line!r} {child.stderr.read()}"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL


@pytest.mark.parametrize(
    ("stop_at", "kept"),
    [
        ("data:action", 2),  # one data array grew, the others not yet
        ("meta", 2),  # every data array and the metadata written, episode_ends not yet
        ("record", 2),  # commit record written, episode_ends not yet grown
        ("published", 3),  # episode_ends grew (the commit point), its new value not yet written
    ],
)
def test_kill_9_mid_commit(tmp_path: Path, episodes: list[StagedEpisode], stop_at: str, kept: int) -> None:
    path = tmp_path / "buffer.zarr"
    with ZarrReplayBuffer.create(path) as buffer:
        buffer.commit(episodes[0])
        buffer.commit(episodes[1])
    kill_during_commit(path, episodes[2], stop_at)

    # A reader sees only committed episodes and changes nothing.
    reader = ZarrReplayBuffer.open(path, mode="r")
    assert reader.n_episodes == kept
    assert "open with mode='a'" in reader.recovery_report
    assert_episode_equal(reader, 1, episodes[1])

    # The next writer repairs (the kernel dropped the killed writer's lock).
    buffer = ZarrReplayBuffer.open(path, mode="a")
    report = buffer.recovery_report
    assert report is not None and "\n" not in report and str(path) in report
    assert buffer.n_episodes == kept
    root = zarr.open(str(path), mode="r")
    assert {root[f"data/{key}"].shape[0] for key in buffer.keys} == {buffer.n_rows}
    assert root["meta/episode_ends"].shape == (kept,) and root["meta/episode_meta"].shape == (kept,)
    assert list(root["meta/episode_ends"][:]) == list(np.cumsum(LENGTHS)[:kept])
    assert not [p for p in path.rglob("*.partial")]
    for i in range(kept):
        assert_episode_equal(buffer, i, episodes[i])
    assert buffer.recover() is None

    # The recorder commits the staged episode again on restart: appended, or a no-op if it was kept.
    assert buffer.commit(episodes[2]) == 2
    buffer.close()
    buffer = ZarrReplayBuffer.open(path, mode="r")
    assert buffer.recovery_report is None
    for i, episode in enumerate(episodes):
        assert_episode_equal(buffer, i, episode)


def _garble(file: Path) -> None:
    file.write_bytes(file.read_bytes()[:25])


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda p: _garble(p / "zarr.json"), "zarr.json"),
        (lambda p: _garble(p / "meta/episode_ends/zarr.json"), "meta/episode_ends/zarr.json"),
        (lambda p: _garble(p / "data/action/zarr.json"), "data/action/zarr.json"),
        (
            lambda p: (p / "meta/episode_ends/zarr.json").write_text(
                '{"zarr_format": 3, "node_type": "array"}'
            ),
            "meta/episode_ends",
        ),
        (lambda p: (p / "meta/episode_meta/zarr.json").unlink(), "meta/episode_meta/zarr.json"),
    ],
    ids=["root", "episode_ends", "data-array", "bad-schema", "missing"],
)
def test_corrupt_metadata_is_one_line_error_naming_the_file(
    tmp_path: Path, episodes: list[StagedEpisode], damage, named: str
) -> None:
    path = tmp_path / "buffer.zarr"
    with ZarrReplayBuffer.create(path) as buffer:
        buffer.commit(episodes[0])
    damage(path)
    for mode in ("r", "a"):
        with pytest.raises(ValueError) as info:
            ZarrReplayBuffer.open(path, mode=mode)
        message = str(info.value)
        assert "\n" not in message and named in message and str(path) in message, message


def test_not_a_buffer_and_corrupt_chunk(tmp_path: Path, episodes: list[StagedEpisode]) -> None:
    with pytest.raises(ValueError, match="not a folder"):
        ZarrReplayBuffer.open(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(ValueError, match="not a replay buffer"):
        ZarrReplayBuffer.open(tmp_path / "plain.zarr", mode="r")

    path = tmp_path / "buffer.zarr"
    with ZarrReplayBuffer.create(path) as buffer:
        buffer.commit(episodes[0])
    chunk = path / "data/observation.images.front/c.0.0.0.0"
    chunk.write_bytes(chunk.read_bytes()[:40])
    buffer = ZarrReplayBuffer.open(path, mode="r")
    np.testing.assert_array_equal(
        buffer.get_episode(0, ["action"])["action"], episodes[0].column("action")[:]
    )
    with pytest.raises(ValueError) as info:
        buffer.get_episode(0)
    assert "\n" not in str(info.value) and "data/observation.images.front" in str(info.value)
