"""LeRobot v3 writer: round trip through lerobot's own reader, resume, crash safety, bad files, training.

Episodes are synthetic but shaped like the recorder's: smooth joint curves, a camera with a moving
square, a taxel grid, a vision-based tactile image, command source and intervention labels.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lerobot.datasets.lerobot_dataset")
pytest.importorskip("pandas")  # lerobot[dataset]

from twinloop.datasets import lerobot_v3  # noqa: E402
from twinloop.datasets.episode import SOURCE_CODES, EpisodeBuffer, EpisodeMeta, StagedEpisode  # noqa: E402
from twinloop.datasets.lerobot_v3 import (  # noqa: E402
    LeRobotWriter,
    open_dataset,
    read_episode_metadata,
    verify_dataset,
)

FPS = 30
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
CAM_HW = (72, 96)
GEL_HW = (48, 64)
TAXELS = (4, 5)
REPO = "local/twinloop_test"


def camera_image(t: int, episode: int) -> np.ndarray:
    h, w = CAM_HW
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 60 + 40 * episode)], -1).astype(np.uint8)
    x = 4 + (t * 2 + 7 * episode) % (w - 20)
    image[h // 3 : h // 3 + 14, x : x + 14] = (230, 40, 40)
    return image


def gel_image(t: int) -> np.ndarray:
    h, w = GEL_HW
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (2 * (4 + t / 4) ** 2))
    return np.stack([120 + 100 * blob, 120 + 60 * blob, 140 - 40 * blob], -1).astype(np.uint8)


def stage_episode(
    staging: Path, index: int, length: int = 30, task: str = "pick up the cube"
) -> StagedEpisode:
    meta = EpisodeMeta(
        index=index,
        fps=FPS,
        task=task,
        robot="so101_sim",
        joint_names=JOINTS,
        operator="alice",
        seed=100 + index,
        calibration_files=["calibration/front_intrinsics.yaml", "calibration/twin_alignment.yaml"],
        started_at=f"2026-11-22T10:{index:02d}:00Z",
    )
    buffer = EpisodeBuffer(staging / f"episode_{index:06d}", meta)
    phase = np.linspace(0, np.pi, len(JOINTS))
    for t in range(length):
        q = (0.4 * np.sin(2 * np.pi * 0.5 * t / FPS + phase + index)).astype(np.float32)
        teleop = 10 <= t < 16
        buffer.append(
            {
                "timestamp": t / FPS,
                "observation.state": q,
                "observation.velocity": (0.4 * np.pi * np.cos(2 * np.pi * 0.5 * t / FPS + phase)).astype(
                    np.float32
                ),
                "action": q + np.float32(0.01),
                "observation.images.front": camera_image(t, index),
                "observation.tactile.pad": np.full(TAXELS, t / length, np.float32)
                + np.arange(np.prod(TAXELS), dtype=np.float32).reshape(TAXELS) / 100,
                "observation.tactile.gel": gel_image(t),
                "command_source": np.int8(SOURCE_CODES["teleop" if teleop else "policy"]),
                "intervention": np.bool_(teleop),
            }
        )
    return buffer.finish(success=index % 2 == 0, interventions=1, quality={"front": {"drops": 0}})


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module", autouse=True)
def private_datasets_cache(tmp_path_factory):
    """lerobot's reader caches every parquet file it loads under ~/.cache: keep the test runs' there."""
    import datasets.config

    previous = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = tmp_path_factory.mktemp("hf_datasets_cache")
    yield
    datasets.config.HF_DATASETS_CACHE = previous


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> list[StagedEpisode]:
    staging = tmp_path_factory.mktemp("staging")
    tasks = ["pick up the cube", "place the cube in the bin", "pick up the cube"]
    return [stage_episode(staging, i, length=30 + 5 * i, task=tasks[i]) for i in range(3)]


@pytest.fixture(scope="module")
def two_episodes(tmp_path_factory, staged) -> Path:
    """A dataset with the first two staged episodes, built once (tests copy it before changing it)."""
    root = tmp_path_factory.mktemp("lerobot") / "ds"
    with LeRobotWriter(root, REPO, FPS, features_from=staged[0]) as writer:
        assert writer.commit(staged[0]) == 0
        assert writer.commit(staged[1]) == 1
    return root


def copy_of(root: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ds"
    shutil.copytree(root, target)
    return target


def assert_episodes_equal(dataset, staged: list[StagedEpisode]) -> dict[str, list[float]]:
    """Every frame read back by lerobot equals the staged one (images within codec tolerance)."""
    assert dataset.num_episodes == len(staged)
    assert len(dataset) == sum(len(e) for e in staged)
    psnrs: dict[str, list[float]] = {}
    index = 0
    for number, episode in enumerate(staged):
        for t in range(len(episode)):
            item = dataset[index]
            index += 1
            assert int(item["episode_index"]) == number and int(item["frame_index"]) == t
            assert abs(float(item["timestamp"]) - t / FPS) < 1e-4
            assert item["task"] == episode.meta.task
            for key in ("observation.state", "observation.velocity", "action", "observation.tactile.pad"):
                np.testing.assert_array_equal(item[key].numpy(), np.asarray(episode.column(key)[t]))
            assert int(item["command_source"]) == int(episode.column("command_source")[t])
            assert bool(item["intervention"]) == bool(episode.column("intervention")[t])
            for key in ("observation.images.front", "observation.tactile.gel"):
                got = (item[key].permute(1, 2, 0).numpy() * 255).round()
                psnrs.setdefault(key, []).append(psnr(got, np.asarray(episode.column(key)[t])))
    return psnrs


def test_roundtrip_through_lerobot_reader(two_episodes, staged):
    assert verify_dataset(two_episodes) == {"episodes": 2, "frames": 65}
    dataset = open_dataset(two_episodes, REPO)
    # lerobot's default encoder (AV1, CRF 30, yuv420p) on tiny synthetic frames: the sharp red square loses
    # chroma at its edges on some frames (640x480 camera frames measured 42-44 dB).
    for key, values in assert_episodes_equal(dataset, staged[:2]).items():
        print(
            f"{key}: PSNR over {len(values)} frames min {min(values):.1f} dB, mean {np.mean(values):.1f} dB"
        )
        assert min(values) > 25 and np.mean(values) > 33

    features = dataset.meta.features
    assert features["observation.state"]["names"] == JOINTS and features["action"]["names"] == JOINTS
    assert features["observation.images.front"]["dtype"] == "video"
    assert features["observation.tactile.gel"]["dtype"] == "video"
    assert features["observation.tactile.pad"]["dtype"] == "float32"
    assert tuple(features["observation.tactile.pad"]["shape"]) == TAXELS
    assert features["command_source"]["dtype"] == "int8" and features["intervention"]["dtype"] == "bool"
    assert dataset.meta.robot_type == "so101_sim"
    assert list(dataset.meta.tasks.index) == ["pick up the cube", "place the cube in the bin"]

    records = read_episode_metadata(two_episodes)
    assert [r["episode_index"] for r in records] == [0, 1]
    for record, episode in zip(records, staged[:2], strict=True):
        assert record["length"] == len(episode) and record["staged_index"] == episode.meta.index
        assert record["success"] == episode.meta.success and record["operator"] == "alice"
        assert record["interventions"] == 1 and record["robot"] == "so101_sim"
        assert record["calibration_files"] == episode.meta.calibration_files
        assert record["task"] == episode.meta.task and record["quality"] == {"front": {"drops": 0}}
    assert not (two_episodes / lerobot_v3.TXN_DIR).exists() and not (two_episodes / "images").exists()


def test_resume_appends_only_new_files(two_episodes, staged, tmp_path):
    root = copy_of(two_episodes, tmp_path)
    with pytest.raises(ValueError, match="use --resume"):
        LeRobotWriter(root, REPO, FPS)
    before = snapshot(root)
    with LeRobotWriter(root, REPO, FPS, resume=True) as writer:
        assert writer.last_recovery is None and writer.num_episodes == 2
        assert writer.commit(staged[2]) == 2
        assert writer.commit(staged[2]) == 2  # the same staged episode again (crash before staging cleanup)
        assert writer.num_episodes == 3
    after = snapshot(root)
    changed = sorted(k for k in before if after.get(k) != before[k])
    added = sorted(set(after) - set(before))
    # lerobot never rewrites an earlier episode's files: only the small metadata files change.
    assert set(changed) <= {"meta/info.json", "meta/stats.json", "meta/tasks.parquet", lerobot_v3.SIDECAR}
    assert added == [
        "data/chunk-000/file-002.parquet",
        "meta/episodes/chunk-000/file-002.parquet",
        "videos/observation.images.front/chunk-000/file-002.mp4",
        "videos/observation.tactile.gel/chunk-000/file-002.mp4",
    ]
    assert_episodes_equal(open_dataset(root, REPO), staged)


def test_bad_writer_arguments_are_one_line_errors(two_episodes, staged, tmp_path):
    root = copy_of(two_episodes, tmp_path)
    cases = []
    with pytest.raises(ValueError) as err:
        LeRobotWriter(root, REPO, 15, resume=True)
    cases.append(err)
    with LeRobotWriter(root, REPO, FPS, resume=True) as writer:
        with pytest.raises(ValueError) as err:
            LeRobotWriter(root, REPO, FPS, resume=True)  # a second writer
        cases.append(err)
        other = EpisodeBuffer(
            tmp_path / "odd", EpisodeMeta(index=9, fps=FPS, task="x", robot="r", joint_names=["a"])
        )
        other.append({"timestamp": 0.0, "observation.state": np.zeros(1, np.float32)})
        with pytest.raises(ValueError, match="features differ") as err:
            writer.commit(other.finish())
        cases.append(err)
        assert writer.num_episodes == 2
    with pytest.raises(ValueError, match="no dataset to resume") as err:
        LeRobotWriter(tmp_path / "missing", REPO, FPS, resume=True)
    cases.append(err)
    assert not (tmp_path / "missing").exists()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a LeRobot v3 dataset") as err:
        LeRobotWriter(tmp_path / "junk", REPO, FPS, resume=True)
    cases.append(err)
    for case in cases:
        assert "\n" not in str(case.value)
    assert verify_dataset(root)["episodes"] == 2


STAGES_BEFORE = ["intent", "opened", "frames", "saved", "finalized"]
STAGES_AFTER = ["journal", "sidecar", "move0", "move3", "move6", "published"]


class SimulatedCrash(BaseException):
    """Not an Exception: the writer's error handling does not see it, as with a kill."""


@pytest.mark.parametrize("stage", STAGES_BEFORE + STAGES_AFTER)
def test_crash_at_each_commit_step_then_recover(two_episodes, staged, tmp_path, monkeypatch, stage):
    root = copy_of(two_episodes, tmp_path)

    def crash(at: str) -> None:
        if at == stage:
            raise SimulatedCrash(at)

    monkeypatch.setattr(lerobot_v3, "_checkpoint", crash)
    writer = LeRobotWriter(root, REPO, FPS, resume=True)
    with pytest.raises(SimulatedCrash):
        writer.commit(staged[2])
    writer.close()  # the kernel does this for a killed process
    monkeypatch.undo()

    with LeRobotWriter(root, REPO, FPS, resume=True) as writer:
        rolled_forward = stage in STAGES_AFTER
        if stage == "published":  # crashed after the last step: nothing left to do
            assert writer.last_recovery is None
        else:
            assert writer.last_recovery.startswith("rolled forward" if rolled_forward else "discarded")
        expected = staged if rolled_forward else staged[:2]
        assert writer.num_episodes == len(expected)
        assert verify_dataset(root)["episodes"] == len(expected)
        assert len(read_episode_metadata(root)) == len(expected)
        if stage in ("finalized", "move3"):  # spot-check every frame on one side of the commit point
            assert_episodes_equal(open_dataset(root, REPO), expected)
        else:
            assert open_dataset(root, REPO).num_episodes == len(expected)
        # The next commit goes on from there, and the staged episode is never doubled.
        assert writer.commit(staged[2]) == 2
    assert verify_dataset(root)["episodes"] == 3


@pytest.mark.parametrize("stage", ["saved", "move1"])
def test_crash_in_the_first_commit_of_a_new_dataset(staged, tmp_path, monkeypatch, stage):
    """Before its commit point the first episode leaves no dataset at all (the folder may be reused
    without --resume); after it, the dataset exists with that episode."""
    root = tmp_path / "ds"

    def crash(at: str) -> None:
        if at == stage:
            raise SimulatedCrash(at)

    monkeypatch.setattr(lerobot_v3, "_checkpoint", crash)
    writer = LeRobotWriter(root, REPO, FPS)
    with pytest.raises(SimulatedCrash):
        writer.commit(staged[0])
    writer.close()
    monkeypatch.undo()
    if stage == "saved":
        with LeRobotWriter(root, REPO, FPS) as writer:
            assert writer.last_recovery.startswith("discarded episode 0") and writer.num_episodes == 0
            assert writer.commit(staged[0]) == 0
    else:
        with pytest.raises(ValueError, match="use --resume"):
            LeRobotWriter(root, REPO, FPS)  # its recovery rolled the episode forward
        with LeRobotWriter(root, REPO, FPS, resume=True) as writer:
            assert writer.last_recovery is None and writer.num_episodes == 1
    assert open_dataset(root, REPO).num_episodes == 1


def test_crash_during_recovery_is_recovered(two_episodes, staged, tmp_path, monkeypatch):
    root = copy_of(two_episodes, tmp_path)
    seen = []

    def crash(at: str) -> None:
        seen.append(at)
        if (at == "move2" and seen.count("move2") == 1) or (at == "move5" and seen.count("move2") == 2):
            raise SimulatedCrash(at)

    monkeypatch.setattr(lerobot_v3, "_checkpoint", crash)
    writer = LeRobotWriter(root, REPO, FPS, resume=True)
    with pytest.raises(SimulatedCrash):
        writer.commit(staged[2])
    writer.close()
    with pytest.raises(SimulatedCrash):
        LeRobotWriter(root, REPO, FPS, resume=True)  # the recovery itself crashes half way
    monkeypatch.undo()
    with LeRobotWriter(root, REPO, FPS, resume=True) as writer:
        assert writer.last_recovery.startswith("rolled forward episode 2")
    assert_episodes_equal(open_dataset(root, REPO), staged)


def run_writer_and_kill(
    root: Path, episodes: list[StagedEpisode], kill_at: str = "", after_s: float = 0.0
) -> int:
    """Commit `episodes` in a forked child (lerobot already imported: no interpreter start-up per run)
    and SIGKILL it, by itself at a commit step ("<commit number>:<step>") or from here after `after_s`.
    Returns how many commits the child reported complete."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read)
            done = 0

            def checkpoint(stage: str) -> None:
                if f"{done}:{stage}" == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

            lerobot_v3._checkpoint = checkpoint
            writer = LeRobotWriter(root, REPO, FPS, resume=root.exists())
            for episode in episodes:
                writer.commit(episode)
                done += 1
                os.write(write, b"c")
        finally:
            os._exit(0)
    os.close(write)
    if after_s:
        time.sleep(after_s)
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60  # a child stuck after fork() fails the test instead of hanging it
    while not (waited := os.waitpid(pid, os.WNOHANG))[0]:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked writer hung")
        time.sleep(0.02)
    status = waited[1]
    reported = b""
    while chunk := os.read(read, 64):
        reported += chunk
    os.close(read)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    return len(reported)


FORK_OK = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")


@FORK_OK
@pytest.mark.parametrize(("kill_at", "survivors"), [("1:frames", 1), ("1:move4", 2)])
def test_kill_9_at_a_commit_step(staged, tmp_path, kill_at, survivors):
    """A real SIGKILL of the writing process: inside lerobot (frames added, not yet encoded), and half way
    through publishing. The next writer recovers, and exactly the committed episodes read back."""
    root = tmp_path / "ds"
    run_writer_and_kill(root, staged, kill_at=kill_at)
    assert (root / lerobot_v3.TXN_DIR).exists()
    with pytest.raises(ValueError, match="interrupted commit"):
        verify_dataset(root)
    with LeRobotWriter(root, REPO, FPS, resume=True) as writer:
        assert writer.last_recovery is not None
        assert writer.num_episodes == survivors
    assert_episodes_equal(open_dataset(root, REPO), staged[:survivors])


@FORK_OK
@pytest.mark.parametrize("after_s", [0.5, 1.1])
def test_kill_9_at_an_arbitrary_moment(staged, tmp_path, after_s):
    """SIGKILL from outside at a moment the writer does not choose: whatever it was doing, the dataset
    recovers to a prefix of the staged episodes, at least every commit that had returned."""
    root = tmp_path / "ds"
    returned = run_writer_and_kill(root, staged, after_s=after_s)
    if not root.exists():  # killed before the writer even made the folder
        return
    with LeRobotWriter(root, REPO, FPS, resume=True) as writer:
        survivors = writer.num_episodes
        print(
            f"killed after {after_s} s: {returned} commits returned; {writer.last_recovery}; {survivors} kept"
        )
    assert returned <= survivors <= min(returned + 1, len(staged))
    if survivors:
        dataset = open_dataset(root, REPO)
        assert dataset.num_episodes == survivors and len(dataset) == sum(len(e) for e in staged[:survivors])
        last = staged[survivors - 1]
        np.testing.assert_array_equal(
            dataset[len(dataset) - 1]["observation.state"].numpy(), last.column("observation.state")[-1]
        )


@pytest.mark.parametrize(
    ("target", "damage", "check"),
    [
        ("meta/info.json", "truncate", "writer"),
        ("meta/stats.json", "garbage", "writer"),
        ("meta/episodes/chunk-000/file-001.parquet", "truncate", "writer"),
        ("meta/tasks.parquet", "truncate", "writer"),
        (lerobot_v3.SIDECAR, "garbage", "writer"),
        ("data/chunk-000/file-000.parquet", "truncate", "verify"),
        ("videos/observation.images.front/chunk-000/file-001.mp4", "truncate", "verify"),
        ("meta/episodes/chunk-000/file-000.parquet", "delete", "verify"),
    ],
)
def test_damaged_files_give_one_line_errors_naming_them(two_episodes, tmp_path, target, damage, check):
    root = copy_of(two_episodes, tmp_path)
    path = root / target
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        with open(path, "ab") as handle:
            handle.write(b"{not json\n")
    else:
        path.unlink()
    with pytest.raises(ValueError) as err:
        if check == "writer":
            LeRobotWriter(root, REPO, FPS, resume=True)
        else:
            open_dataset(root, REPO)
    message = str(err.value)
    assert "\n" not in message
    if damage == "delete":
        assert "meta/episodes" in message
    else:
        assert str(path) in message


def test_damaged_staged_episode_is_a_one_line_error_and_changes_nothing(two_episodes, staged, tmp_path):
    root = copy_of(two_episodes, tmp_path)
    folder = tmp_path / "staged"
    shutil.copytree(staged[2].folder, folder)
    chunk = folder / "data.zarr" / "observation.state" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:7])
    before = snapshot(root)
    with LeRobotWriter(root, REPO, FPS, resume=True) as writer:
        with pytest.raises(ValueError) as err:
            writer.commit(StagedEpisode(folder))
        assert writer.num_episodes == 2
    assert "\n" not in str(err.value) and "observation.state" in str(err.value)
    assert snapshot(root) == before


def test_lerobot_diffusion_policy_trains_on_written_dataset(two_episodes):
    import torch
    from lerobot.configs.types import FeatureType
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.factory import make_policy, make_pre_post_processors
    from lerobot.utils.feature_utils import dataset_to_policy_features

    torch.manual_seed(0)
    meta = open_dataset(two_episodes, REPO).meta
    features = dataset_to_policy_features(meta.features)
    config = DiffusionConfig(
        input_features={k: features[k] for k in ("observation.state", "observation.images.front")},
        output_features={k: f for k, f in features.items() if f.type is FeatureType.ACTION},
        n_obs_steps=2,
        horizon=8,
        n_action_steps=4,
        drop_n_last_frames=3,
        down_dims=(32, 64),
        diffusion_step_embed_dim=32,
        spatial_softmax_num_keypoints=8,
        pretrained_backbone_weights=None,
        use_group_norm=True,
        crop_shape=(64, 88),
        num_train_timesteps=10,
        device="cpu",
    )
    dataset = open_dataset(two_episodes, REPO, delta_timestamps=resolve_delta_timestamps(config, meta))
    policy = make_policy(config, ds_meta=dataset.meta)
    preprocess, _ = make_pre_post_processors(config, dataset_stats=dataset.meta.stats)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True, num_workers=0)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    losses = []
    for _, batch in zip(range(3), loader, strict=False):
        assert batch["observation.images.front"].shape[1:] == (2, 3, *CAM_HW)
        assert batch["action"].shape[1:] == (8, len(JOINTS))
        loss, _ = policy.forward(preprocess(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert len(losses) == 3 and all(np.isfinite(losses))
