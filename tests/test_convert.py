"""`twinloop convert`: round trips between zarr, LeRobot v3 and MCAP on a small recording made without ROS,
the recorder's resampling rules on a hand-made bag, and one-line errors through the CLI.

The recording is staged like the recorder's (EpisodeBuffer rows: joint curves, a camera with structure,
two taxel grids, command source and intervention labels) and committed to zarr and LeRobot by the
project's own writers. Lossless paths must be exact; through LeRobot's video the images are compared by
PSNR (printed).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from twinloop.datasets.convert import convert, detect
from twinloop.datasets.episode import SOURCE_CODES, EpisodeBuffer, EpisodeMeta, StagedEpisode
from twinloop.datasets.mcap_bag import McapEpisodeWriter, bag_meta, episode_paths, jazzy_typestore, read_bag
from twinloop.datasets.zarr_buffer import ZarrReplayBuffer

REPO = Path(__file__).resolve().parent.parent
FPS = 10
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
CAM_HW = (96, 128)
TAXELS = {"fixed_jaw": (8, 6), "moving_jaw": (4, 4)}
MIN_PSNR_DB = 30.0
POLICY, TELEOP, HOLD = SOURCE_CODES["policy"], SOURCE_CODES["teleop"], SOURCE_CODES["hold"]
# Per episode, per frame: who commanded the arm, and whether it was an intervention (teleop while the
# policy ran). Consistent with the recorder's labelling rule, which MCAP -> staged applies again.
SOURCES = (
    [POLICY] * 5 + [TELEOP] * 5 + [POLICY] * 4,  # a policy, one takeover, the policy again
    [HOLD] * 2 + [TELEOP] * 7,  # plain teleoperation, no policy
)
INTERVENTIONS = ([False] * 5 + [True] * 5 + [False] * 4, [False] * 9)
# What the recorder stored about its ticks; episode 1 also its first tick's stamp (bags then use that clock).
TICKS = ({"written": 14, "incomplete": 0}, {"written": 9, "incomplete": 2, "first_tick_ns": 7_300_000_000})


def camera_image(t: int, episode: int) -> np.ndarray:
    """Smooth shading, a sinusoidal texture and a moving block: structure a video codec has to keep."""
    h, w = CAM_HW
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    red = 40 + 150 * xx / w
    green = 128 + 40 * np.sin(xx / 8 + t / 3) * np.cos(yy / 9)
    blue = 60 + 40 * episode + 100 * yy / h
    image = np.stack([red, green, blue], -1)
    x = 4 + (3 * t + 11 * episode) % (w - 20)
    image[h // 3 : h // 3 + 12, x : x + 12] = (200, 80, 60)
    return np.clip(image, 0, 255).astype(np.uint8)


def taxels(name: str, t: int, episode: int) -> np.ndarray:
    h, w = TAXELS[name]
    yy, xx = np.mgrid[0:h, 0:w]
    centre = (t / 3 + episode) % w
    grid = np.exp(-((xx - centre) ** 2 + (yy - h / 2) ** 2) / 3.0) * (0.1 + 0.05 * t)
    return (grid + np.float32(1e-7) * (xx + 3 * yy)).astype(np.float32)  # values with every bit in use


def stage_episode(staging: Path, index: int) -> StagedEpisode:
    sources, interventions = SOURCES[index], INTERVENTIONS[index]
    meta = EpisodeMeta(
        index=index,
        fps=FPS,
        task=["pick up the cube", "push the cube"][index],
        robot="so101",
        joint_names=JOINTS,
        operator="tester",
        seed=100 + index,
        calibration_files=["calibration/front.yaml"],
        quality={
            "joints": {"received": 99, "dropped": 0},
            "ticks": TICKS[index],
        },
        started_at=f"2026-11-22T08:0{index}:00.000001",
    )
    buffer = EpisodeBuffer(staging / f"episode_{index:06d}", meta)
    phase = np.linspace(0.0, np.pi, len(JOINTS))
    for i, (source, intervention) in enumerate(zip(sources, interventions, strict=True)):
        state = (0.5 * np.sin(0.7 * i / FPS * 2 * np.pi + phase + index)).astype(np.float32)
        row = {
            "timestamp": np.float64(i / FPS),
            "observation.state": state,
            "observation.velocity": np.cos(state).astype(np.float32),
            "observation.effort": (0.01 * np.arange(len(JOINTS)) + i).astype(np.float32),
            "action": (state + np.float32(0.0123)).astype(np.float32),
            "observation.images.front": camera_image(i, index),
            "command_source": np.int8(source),
            "intervention": np.bool_(intervention),
        }
        for name in TAXELS:
            row[f"observation.tactile.{name}"] = taxels(name, i, index)
        buffer.append(row)
    return buffer.finish(success=index == 0, interventions=int(index == 0))


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """A `twinloop record`-style folder with replay.zarr (lerobot/ is added by `lerobot_recording`)."""
    out = tmp_path_factory.mktemp("convert") / "rec"
    staging = out.parent / "staging"
    with ZarrReplayBuffer.create(out / "replay.zarr") as buffer:
        for index in range(len(SOURCES)):
            buffer.commit(stage_episode(staging, index))
    return out


@pytest.fixture(scope="module")
def lerobot_recording(recording: Path) -> Path:
    pytest.importorskip("lerobot.datasets.lerobot_dataset")
    from twinloop.datasets.lerobot_v3 import LeRobotWriter

    staging = recording.parent / "staging_lerobot"
    episodes = [stage_episode(staging, index) for index in range(len(SOURCES))]
    with LeRobotWriter(recording / "lerobot", "twinloop/recording", FPS) as writer:
        for episode in episodes:
            writer.commit(episode)
    return recording


def zarr_episodes(path: Path) -> list[tuple[EpisodeMeta, dict[str, np.ndarray]]]:
    buffer = ZarrReplayBuffer.open(path, mode="r")
    return [(buffer.meta(i), buffer.get_episode(i)) for i in range(buffer.n_episodes)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def assert_same_episodes(got_path: Path, want_path: Path, capsys, lossy_images: str = "") -> None:
    """Equal metadata, keys, dtypes and frame counts; values exact, images exact or by PSNR (printed)."""
    got, want = zarr_episodes(got_path), zarr_episodes(want_path)
    assert len(got) == len(want)
    for i, ((got_meta, got_data), (want_meta, want_data)) in enumerate(zip(got, want, strict=True)):
        assert got_meta == want_meta
        assert sorted(got_data) == sorted(want_data)
        for key, want_column in want_data.items():
            column = got_data[key]
            assert column.dtype == want_column.dtype and column.shape == want_column.shape, key
            if key.startswith("observation.images.") and lossy_images:
                value = psnr(column, want_column)
                with capsys.disabled():
                    print(f"\n  PSNR {lossy_images}, episode {i}, {key}: {value:.1f} dB")
                assert value >= MIN_PSNR_DB, (key, value)
            else:
                np.testing.assert_array_equal(column, want_column, err_msg=key)


def test_zarr_to_mcap_to_zarr_is_lossless(recording: Path, tmp_path: Path) -> None:
    bags = tmp_path / "bags"
    result = convert(recording, bags, "mcap", progress=False)  # a recording folder: its replay.zarr
    assert result.source.format == "zarr" and result.episodes == 2 and result.frames == 23
    paths = episode_paths(bags)
    assert [p.name for p in paths] == ["episode_000000", "episode_000001"]

    counts: dict[str, int] = {}
    sources, encodings = [], {}
    for topic, msgtype, t_ns, msg in read_bag(paths[0]):
        counts[topic] = counts.get(topic, 0) + 1
        if msgtype == "sensor_msgs/msg/Image":
            encodings[topic] = (msg.encoding, msg.height, msg.width)
        if topic == "/command_mux/source":
            sources.append((t_ns, msg.data))
        if topic == "/joint_states":
            assert list(msg.name) == JOINTS and len(msg.velocity) == len(msg.effort) == len(JOINTS)
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == t_ns
    stamps = [t_ns for topic, _, t_ns, _ in read_bag(paths[1]) if topic == "/joint_states"]
    assert stamps[0] == TICKS[1]["first_tick_ns"] and stamps[-1] - stamps[0] == 800_000_000  # its own clock
    assert counts["/joint_states"] == counts["/front/image_raw"] == 14
    assert counts["/arm_controller/joint_trajectory"] == 14
    assert counts["/policy/joint_trajectory"] == 14  # policy and intervention frames: the policy runs
    assert encodings == {
        "/front/image_raw": ("rgb8", *CAM_HW),
        "/tactile/fixed_jaw/image": ("32FC1", 8, 6),
        "/tactile/moving_jaw/image": ("32FC1", 4, 4),
    }
    assert sources == [(0, "policy"), (500_000_000, "teleop"), (1_000_000_000, "policy")]
    assert bag_meta(paths[1]) == ZarrReplayBuffer.open(recording / "replay.zarr", "r").meta(1)

    back = tmp_path / "back.zarr"
    convert(bags, back, "zarr", progress=False)
    assert_same_episodes(back, recording / "replay.zarr", capsys=None)


def test_zarr_to_lerobot_to_zarr(recording: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("lerobot.datasets.lerobot_dataset")
    from twinloop.datasets.lerobot_v3 import read_episode_metadata, verify_dataset

    root = tmp_path / "lerobot"
    convert(recording / "replay.zarr", root, "lerobot", progress=False)
    assert verify_dataset(root) == {"episodes": 2, "frames": 23}
    records = read_episode_metadata(root)
    assert [r["task"] for r in records] == ["pick up the cube", "push the cube"]
    assert [(r["success"], r["interventions"], r["seed"]) for r in records] == [
        (True, 1, 100),
        (False, 0, 101),
    ]

    back = tmp_path / "back.zarr"
    convert(root, back, "zarr", progress=False)
    assert_same_episodes(back, recording / "replay.zarr", capsys, lossy_images="zarr->lerobot->zarr")


def test_lerobot_to_mcap_to_lerobot(lerobot_recording: Path, tmp_path: Path, capsys) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from twinloop.datasets.lerobot_v3 import read_episode_metadata

    original = lerobot_recording / "lerobot"
    bags, again = tmp_path / "bags", tmp_path / "lerobot"
    convert(lerobot_recording, bags, "mcap", source_format="lerobot", progress=False)
    convert(bags, again, "lerobot", progress=False)

    strip = ("episode_index", "length")
    assert [{k: v for k, v in r.items() if k not in strip} for r in read_episode_metadata(again)] == [
        {k: v for k, v in r.items() if k not in strip} for r in read_episode_metadata(original)
    ]
    want = LeRobotDataset("twinloop/recording", root=original, return_uint8=True)
    got = LeRobotDataset("twinloop/recording", root=again, return_uint8=True)
    assert got.meta.features == want.meta.features
    assert [e["length"] for e in got.meta.episodes] == [e["length"] for e in want.meta.episodes] == [14, 9]
    columns = [k for k, ft in want.meta.features.items() if ft["dtype"] != "video"]
    want_table, got_table = want.hf_dataset.with_format("numpy"), got.hf_dataset.with_format("numpy")
    for key in columns:
        np.testing.assert_array_equal(got_table[key], want_table[key], err_msg=key)
    raw = zarr_episodes(lerobot_recording / "replay.zarr")
    frames = np.concatenate([data["observation.images.front"] for _, data in raw])
    decoded = np.stack([got[i]["observation.images.front"].permute(1, 2, 0).numpy() for i in range(len(got))])
    once = np.stack([want[i]["observation.images.front"].permute(1, 2, 0).numpy() for i in range(len(want))])
    for label, images in (("lerobot (encoded once)", once), ("lerobot->mcap->lerobot", decoded)):
        value = psnr(images, frames)
        with capsys.disabled():
            print(f"\n  PSNR {label}, observation.images.front: {value:.1f} dB")
        assert value >= MIN_PSNR_DB


# -- the recorder's sampling rules, on a bag recorded by hand (no twinloop metadata) ------------------


LOST_FRAMES = (5, 6)  # camera frames missing from the hand-made bag
BASE_NS = 1_700_000_000_000_000_000  # its wall-clock stamps: float seconds could not hold them exactly


def write_graph_bag(root: Path, meta: EpisodeMeta | None = None) -> Path:
    """A bag as `ros2 bag record` of a live graph would hold it: joint states at 100 Hz, a camera at 10 Hz
    stamped 20 ms before the ticks with two frames lost, two-point command chunks, latched topics; with
    `meta`, as the recorder writes it."""
    types = jazzy_typestore().types
    Time, Duration, Header = (
        types["builtin_interfaces/msg/Time"],
        types["builtin_interfaces/msg/Duration"],
        types["std_msgs/msg/Header"],
    )
    base = BASE_NS

    def header(ns: int) -> object:
        return Header(stamp=Time(sec=(base + ns) // 10**9, nanosec=(base + ns) % 10**9), frame_id="")

    messages = [
        ("/robot/command_mux/source", "std_msgs/msg/String", types["std_msgs/msg/String"](data="teleop"), 0),
        ("/robot/policy/instruction", "std_msgs/msg/String", types["std_msgs/msg/String"](data="stack"), 0),
    ]
    for k in range(0, 160):  # joint states every 10 ms from t = 0.005 s
        ns = 5_000_000 + k * 10_000_000
        q = np.full(3, k * 0.01)
        msg = types["sensor_msgs/msg/JointState"](
            header=header(ns), name=["a", "b", "c"], position=q, velocity=np.zeros(0), effort=np.zeros(0)
        )
        messages.append(("/robot/joint_states", "sensor_msgs/msg/JointState", msg, ns + 1_000_000))
    for k in range(1, 16):  # camera frames stamped 20 ms before each tick 0.1 k; frames 5 and 6 are lost
        if k in LOST_FRAMES:
            continue
        ns = k * 100_000_000 - 20_000_000
        pixels = np.full((4, 6, 3), k, np.uint8)
        msg = types["sensor_msgs/msg/Image"](
            header=header(ns),
            height=4,
            width=6,
            encoding="rgb8",
            is_bigendian=0,
            step=18,
            data=pixels.ravel(),
        )
        messages.append(("/robot/front/image_raw", "sensor_msgs/msg/Image", msg, ns + 3_000_000))
    for k in range(0, 4):  # command chunks every 0.4 s, two points 0.4 s apart, joint order c, a, b
        ns = 50_000_000 + k * 400_000_000
        points = [
            types["trajectory_msgs/msg/JointTrajectoryPoint"](
                positions=np.array([10.0 * k + j, 20.0 * k + j, 30.0 * k + j]),
                velocities=np.zeros(0),
                accelerations=np.zeros(0),
                effort=np.zeros(0),
                time_from_start=Duration(sec=0, nanosec=400_000_000 * j),
            )
            for j in (0, 1)
        ]
        msg = types["trajectory_msgs/msg/JointTrajectory"](
            header=header(ns), joint_names=["c", "a", "b"], points=points
        )
        messages.append(
            ("/robot/arm_controller/joint_trajectory", "trajectory_msgs/msg/JointTrajectory", msg, ns)
        )
    broken = types["trajectory_msgs/msg/JointTrajectory"](  # 2 positions for 3 joints: skipped
        header=header(300_000_000),
        joint_names=["c", "a", "b"],
        points=[
            types["trajectory_msgs/msg/JointTrajectoryPoint"](
                positions=np.zeros(2),
                velocities=np.zeros(0),
                accelerations=np.zeros(0),
                effort=np.zeros(0),
                time_from_start=Duration(sec=0, nanosec=0),
            )
        ],
    )
    messages.append(
        ("/robot/arm_controller/joint_trajectory", "trajectory_msgs/msg/JointTrajectory", broken, 300_000_000)
    )
    policy = types["trajectory_msgs/msg/JointTrajectory"](
        header=header(600_000_000), joint_names=["a"], points=[]
    )
    messages.append(
        ("/robot/policy/joint_trajectory", "trajectory_msgs/msg/JointTrajectory", policy, 600_000_000)
    )
    messages.append(
        ("/robot/sim/success", "std_msgs/msg/Bool", types["std_msgs/msg/Bool"](data=True), 1_200_000_000)
    )

    writer = McapEpisodeWriter(root)
    bag = writer.begin(0)
    serialize = writer.typestore.serialize_cdr
    for topic, msgtype, msg, received in sorted(messages, key=lambda m: m[3]):
        bag.write(topic, msgtype, serialize(msg, msgtype), base + received)
    return bag.commit(meta)  # without EpisodeMeta the converter rebuilds it


def test_mcap_is_resampled_with_the_recorders_rules(tmp_path: Path) -> None:
    bag = write_graph_bag(tmp_path / "bags")
    with pytest.raises(ValueError, match="pass --fps"):
        convert(bag, tmp_path / "no_fps.zarr", "zarr", progress=False)
    lines: list[str] = []
    convert(bag, tmp_path / "out.zarr", "zarr", fps=FPS, progress=False, log=lines.append)
    assert lines == [
        f"warning: skipped malformed message: {bag}: /robot/arm_controller/joint_trajectory: "
        "point 0 has 2 positions for 3 joints"
    ]
    [(meta, data)] = zarr_episodes(tmp_path / "out.zarr")

    # ticks start at the latest first stamp (the camera's, 0.08 s) and run while every stream has data
    ticks = 0.08 + np.arange(15) / FPS
    kept = [k for k in range(15) if k != 5]  # tick 5's newest frame (4) is 2 frames old: no camera frame
    assert len(data["timestamp"]) == len(kept) == meta.quality["ticks"]["written"]
    assert meta.quality["ticks"]["incomplete"] == 1
    np.testing.assert_array_equal(data["timestamp"], np.arange(len(kept)) / FPS)
    t = ticks[kept]
    newest = np.floor((t - 0.005) / 0.01 + 1e-6)  # the newest joint state at or before the tick
    np.testing.assert_array_equal(data["observation.state"][:, 0], (newest * 0.01).astype(np.float32))
    frame = [k if k + 1 in LOST_FRAMES else k + 1 for k in kept]  # tick 4: frame 4 again (1 frame old)
    np.testing.assert_array_equal(data["observation.images.front"][:, 0, 0, 0], frame)
    chunk = np.floor((t - 0.05) / 0.4 + 1e-6)  # the newest chunk, interpolated at the tick
    alpha = (t - 0.05 - 0.4 * chunk) / 0.4
    expected_a = 20.0 * chunk + alpha  # joint a is the chunk's second column; joint_states order a, b, c
    np.testing.assert_allclose(data["action"][:, 0], expected_a.astype(np.float32), rtol=0, atol=1e-5)
    assert set(data["command_source"]) == {SOURCE_CODES["teleop"]}
    # teleop while a policy chunk is less than 1 s old (the one at 0.6 s): an intervention
    np.testing.assert_array_equal(data["intervention"], (t >= 0.6) & (t < 1.6))
    assert (meta.task, meta.success, meta.interventions, meta.joint_names) == (
        "stack",
        True,
        1,
        ["a", "b", "c"],
    )
    assert "observation.velocity" not in data  # the arm reported none


def test_mcap_is_resampled_on_the_recorders_own_ticks(tmp_path: Path) -> None:
    """With the first tick's stamp in the metadata, the recorder's grid is used, not the messages'."""
    ticks = {"written": 9, "incomplete": 1, "first_tick_ns": BASE_NS + 100_000_000}
    meta = EpisodeMeta(
        index=3, fps=FPS, task="stack", robot="so101", joint_names=["a", "b", "c"], quality={"ticks": ticks}
    )
    bag = write_graph_bag(tmp_path / "bags", meta)
    convert(bag, tmp_path / "out.zarr", "zarr", progress=False, log=lambda _: None)
    [(got_meta, data)] = zarr_episodes(tmp_path / "out.zarr")
    assert got_meta == dataclasses.replace(meta, index=0)
    t = 0.1 + np.array([0, 1, 2, 3, 4, 6, 7, 8, 9]) / FPS  # 10 ticks from 0.1 s; at 0.6 s no camera frame
    newest = np.floor((t - 0.005) / 0.01 + 1e-6)
    np.testing.assert_array_equal(data["observation.state"][:, 0], (newest * 0.01).astype(np.float32))
    np.testing.assert_array_equal(data["observation.images.front"][:, 0, 0, 0], [1, 2, 3, 4, 4, 7, 8, 9, 10])


# -- the command line: happy path and one-line errors -------------------------------------------------


def run_cli(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONSAFEPATH": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "twinloop.cli", "convert", *map(str, args), "--no-progress"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, names: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("twinloop convert: error: "), result.stderr
    assert names in lines[0], lines[0]


def test_cli_converts_and_refuses_an_existing_output(recording: Path, tmp_path: Path) -> None:
    out = tmp_path / "bags"
    result = run_cli(recording, out, "--to", "mcap")
    assert result.returncode == 0, result.stderr
    assert "converted 2 episode(s), 23 frames, from zarr" in result.stdout
    assert len(episode_paths(out)) == 2 and detect(out).format == "mcap"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch left behind
    assert_one_line_error(run_cli(recording, out, "--to", "zarr"), f"{out}: exists and is not empty")


def test_cli_one_line_errors(recording: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.zarr"  # a copy of the replay buffer with corrupt metadata
    subprocess.run(["cp", "-r", str(recording / "replay.zarr"), str(broken)], check=True)
    ends = broken / "meta" / "episode_ends" / "zarr.json"
    ends.write_text(ends.read_text()[:40])
    assert_one_line_error(run_cli(broken, tmp_path / "a", "--to", "mcap"), str(ends))

    bags = tmp_path / "bags"
    convert(recording, bags, "mcap", progress=False)
    mcap = bags / "episode_000001" / "episode_000001.mcap"
    with open(mcap, "r+b") as handle:
        handle.truncate(mcap.stat().st_size // 2)
    assert_one_line_error(run_cli(bags, tmp_path / "b", "--to", "zarr"), str(mcap))

    plain = tmp_path / "notes"
    plain.mkdir()
    (plain / "readme.txt").write_text("not a recording")
    assert_one_line_error(run_cli(plain, tmp_path / "c", "--to", "zarr"), f"{plain}: not a recording")
    assert_one_line_error(run_cli(tmp_path / "missing", tmp_path / "d", "--to", "zarr"), "missing: no such")
    assert not (tmp_path / "b").exists()  # a failed conversion leaves no output
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
