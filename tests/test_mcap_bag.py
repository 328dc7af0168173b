"""Raw MCAP bags per episode: round trip of CDR bytes (rosbags' and rclpy's), atomic publish, crash
leftovers after a real kill -9, and one-line errors for damaged bags."""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from twinloop.datasets.episode import EpisodeMeta
from twinloop.datasets.mcap_bag import (
    McapEpisodeWriter,
    bag_meta,
    episode_paths,
    jazzy_typestore,
    read_bag,
)

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
T0 = 1_700_000_000_000_000_000


def sample_messages(n: int, size: tuple[int, int] = (48, 64)) -> list[tuple[str, str, object, int]]:
    """(topic, msgtype, message, t_ns) on four contract topics, 10 ms apart, as rosbags objects."""
    ts = jazzy_typestore()
    types = ts.types
    Time, Duration, Header = (
        types["builtin_interfaces/msg/Time"],
        types["builtin_interfaces/msg/Duration"],
        types["std_msgs/msg/Header"],
    )
    out = []
    for i in range(n):
        t_ns = T0 + i * 10_000_000
        header = Header(stamp=Time(sec=t_ns // 10**9, nanosec=t_ns % 10**9), frame_id="base_link")
        q = 0.5 * np.sin(i / 10 + np.arange(len(JOINTS)))
        state = types["sensor_msgs/msg/JointState"](
            header=header, name=JOINTS, position=q, velocity=np.cos(q), effort=np.zeros(0)
        )
        out.append(("joint_states", "sensor_msgs/msg/JointState", state, t_ns))
        if i % 3 == 0:
            pixels = np.zeros((*size, 3), np.uint8)
            pixels[10:18, i % (size[1] - 8) : i % (size[1] - 8) + 8] = (255, 64, 0)
            image = types["sensor_msgs/msg/Image"](
                header=header,
                height=size[0],
                width=size[1],
                encoding="rgb8",
                is_bigendian=0,
                step=size[1] * 3,
                data=pixels.reshape(-1),
            )
            out.append(("front/image_raw", "sensor_msgs/msg/Image", image, t_ns + 1))
        if i % 5 == 0:
            Point = types["trajectory_msgs/msg/JointTrajectoryPoint"]
            points = [
                Point(
                    positions=q + k * 0.01,
                    velocities=np.zeros(0),
                    accelerations=np.zeros(0),
                    effort=np.zeros(0),
                    time_from_start=Duration(sec=0, nanosec=k * 33_000_000),
                )
                for k in range(4)
            ]
            chunk = types["trajectory_msgs/msg/JointTrajectory"](
                header=header, joint_names=JOINTS, points=points
            )
            out.append(("policy/joint_trajectory", "trajectory_msgs/msg/JointTrajectory", chunk, t_ns + 2))
        if i % 7 == 0:
            source = types["std_msgs/msg/String"](data=["policy", "teleop", "hold"][i % 3])
            out.append(("command_mux/source", "std_msgs/msg/String", source, t_ns + 3))
    return out


def cdr(message: object, msgtype: str) -> bytes:
    return bytes(jazzy_typestore().serialize_cdr(message, msgtype))


def assert_same(a: object, b: object, where: str = "msg") -> None:
    """Field-by-field equality of message objects (numpy arrays inside)."""
    if dataclasses.is_dataclass(a):
        assert type(a).__name__ == type(b).__name__, where
        for field in dataclasses.fields(a):
            assert_same(getattr(a, field.name), getattr(b, field.name), f"{where}.{field.name}")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{k}]")
    else:
        assert a == b, where


def meta(index: int) -> EpisodeMeta:
    return EpisodeMeta(
        index=index, fps=30.0, task="pick the cube", robot="so101", joint_names=JOINTS, success=True
    )


def record(writer: McapEpisodeWriter, index: int, messages: list) -> Path:
    episode = writer.begin(index)
    for topic, msgtype, message, t_ns in messages:
        episode.write(topic, msgtype, cdr(message, msgtype), t_ns)
    return episode.commit(meta(index))


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "zstd"])
def test_write_commit_read_back(tmp_path: Path, compress: bool) -> None:
    writer = McapEpisodeWriter(tmp_path / "bags", compress=compress)
    messages = sample_messages(60)
    path = record(writer, 0, messages)
    assert path == tmp_path / "bags" / "episode_000000"
    assert sorted(p.name for p in path.iterdir()) == ["episode_000000.mcap", "metadata.yaml"]
    assert [p.name for p in (tmp_path / "bags").iterdir()] == ["episode_000000"]  # no .partial left
    assert episode_paths(tmp_path / "bags") == [path] and writer.next_index() == 1
    assert bag_meta(path) == meta(0)

    got = list(read_bag(path))
    assert len(got) == len(messages)
    for (topic, msgtype, t_ns, message), (want_topic, want_type, want, want_t) in zip(
        got, messages, strict=True
    ):
        assert (topic, msgtype, t_ns) == (want_topic, want_type, want_t)
        assert_same(message, want, topic)
    topics = {topic for topic, *_ in got}
    assert topics == {"joint_states", "front/image_raw", "policy/joint_trajectory", "command_mux/source"}

    with pytest.raises(ValueError, match="recorded already"):
        writer.begin(0)


def test_discard_and_unknown_type(tmp_path: Path) -> None:
    writer = McapEpisodeWriter(tmp_path)
    with writer.begin(0) as episode:
        hello = jazzy_typestore().types["std_msgs/msg/String"](data="hello")
        episode.write("chatter", "std_msgs/msg/String", cdr(hello, "std_msgs/msg/String"), 1)
        with pytest.raises(ValueError, match="cannot record type 'foo_msgs/msg/Bar'"):
            episode.write("foo", "foo_msgs/msg/Bar", b"\x00\x01\x00\x00", 2)
    assert list(tmp_path.iterdir()) == []  # leaving the block without commit discards
    episode = writer.begin(0)
    episode.discard()
    assert list(tmp_path.iterdir()) == []


CHILD = """
import sys, time
sys.path.insert(0, sys.argv[2])
from test_mcap_bag import cdr, sample_messages, record
from twinloop.datasets.mcap_bag import McapEpisodeWriter

writer = McapEpisodeWriter(sys.argv[1])
record(writer, 0, sample_messages(30))
episode = writer.begin(1)
for topic, msgtype, message, t_ns in sample_messages(60, size=(240, 320)):  # ~4.6 MB: chunks hit the disk
    episode.write(topic, msgtype, cdr(message, msgtype), t_ns)
print("WRITING", flush=True)
time.sleep(60)
"""


def test_kill_9_mid_episode_leaves_only_a_partial(tmp_path: Path) -> None:
    root = tmp_path / "bags"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([child.stdout], [], [], 60)
        line = child.stdout.readline() if ready else ""
        assert line.startswith("WRITING"), f"{line!r} {child.stderr.read()}"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()

    partial = root / ".episode_000001.partial"
    mcap = partial / "episode_000001" / "episode_000001.mcap"
    assert mcap.stat().st_size > 1_000_000  # the episode was well under way
    with pytest.raises(ValueError, match="no metadata.yaml"):
        read_bag(partial / "episode_000001")
    assert len(list(read_bag(root / "episode_000000"))) == len(sample_messages(30))

    writer = McapEpisodeWriter(root)
    with pytest.raises(ValueError, match="recover"):
        writer.begin(1)
    report = writer.recover(complete={1})  # even if the recorder kept episode 1: this bag is unfinished
    assert (
        report is not None and "\n" not in report and "removed unfinished .episode_000001.partial" in report
    )
    assert sorted(p.name for p in root.iterdir()) == ["episode_000000"]
    assert writer.recover() is None
    assert len(list(read_bag(root / "episode_000000"))) == len(sample_messages(30))
    assert writer.next_index() == 1
    record(writer, 1, sample_messages(5))


def test_recover_publishes_a_finished_bag_of_a_kept_episode(tmp_path: Path) -> None:
    writer = McapEpisodeWriter(tmp_path)
    for index in (0, 1):  # closed but not renamed: a crash between close() and commit()
        episode = writer.begin(index)
        for topic, msgtype, message, t_ns in sample_messages(10):
            episode.write(topic, msgtype, cdr(message, msgtype), t_ns)
        episode.close(meta(index))
    report = writer.recover(complete={0})
    assert (
        "published finished episode_000000" in report
        and "removed unfinished .episode_000001.partial" in report
    )
    assert episode_paths(tmp_path) == [tmp_path / "episode_000000"]
    assert bag_meta(tmp_path / "episode_000000") == meta(0)
    assert len(list(read_bag(tmp_path / "episode_000000"))) == len(sample_messages(10))


@pytest.mark.parametrize("cut", ["half", "footer"])
def test_truncated_mcap_is_a_one_line_error_naming_the_file(tmp_path: Path, cut: str) -> None:
    path = record(McapEpisodeWriter(tmp_path), 0, sample_messages(60))
    mcap = path / "episode_000000.mcap"
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2] if cut == "half" else data[:-5])
    with pytest.raises(ValueError) as info:
        read_bag(path)
    message = str(info.value)
    assert "\n" not in message and str(mcap) in message and "truncated" in message, message


def test_damaged_metadata_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    path = record(McapEpisodeWriter(tmp_path), 0, sample_messages(10))
    (path / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 8\n")
    with pytest.raises(ValueError) as info:
        read_bag(path)
    message = str(info.value)
    assert "\n" not in message and str(path / "metadata.yaml") in message, message
    with pytest.raises(ValueError, match="not a folder"):
        read_bag(tmp_path / "nothing")


def test_rclpy_cdr_reads_back(tmp_path: Path) -> None:
    """What rclpy serializes (Fast CDR) is stored verbatim and reads back, including a JointState without
    efforts, whose serialize_message() buffer carries trailing padding that rosbags' strict check rejects."""
    serialization = pytest.importorskip("rclpy.serialization")
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    states = []
    for i in range(5):
        state = JointState()
        state.header.stamp.sec, state.header.stamp.nanosec = 1_700_000_000 + i, 250_000_000
        state.header.frame_id = "base_link"
        state.name = JOINTS
        state.position = [0.1 * i + k for k in range(6)]
        state.velocity = [] if i % 2 else [0.5] * 6
        state.effort = [1.5] * 6 if i == 4 else []
        states.append(state)
    trajectory = JointTrajectory(joint_names=JOINTS)
    trajectory.points = [JointTrajectoryPoint(positions=[0.2 * k] * 6) for k in range(3)]
    trajectory.points[1].time_from_start.nanosec = 33_000_000
    sent = [("joint_states", "sensor_msgs/msg/JointState", s) for s in states]
    sent.append(("policy/joint_trajectory", "trajectory_msgs/msg/JointTrajectory", trajectory))
    payloads = [serialization.serialize_message(message) for *_, message in sent]

    episode = McapEpisodeWriter(tmp_path).begin(0)
    for i, ((topic, msgtype, _), payload) in enumerate(zip(sent, payloads, strict=True)):
        episode.write(topic, msgtype, payload, T0 + i)
    path = episode.commit()

    with Reader(path) as reader:  # stored byte for byte
        assert [bytes(raw) for _, _, raw in reader.messages()] == payloads
    got = list(read_bag(path))
    assert len(got) == len(sent)
    for (_, msgtype, t_ns, message), (_, _, original), i in zip(got, sent, range(len(sent)), strict=True):
        assert t_ns == T0 + i
        if msgtype == "sensor_msgs/msg/JointState":
            assert message.header.stamp.sec == original.header.stamp.sec
            assert message.header.frame_id == "base_link" and list(message.name) == JOINTS
            for field in ("position", "velocity", "effort"):
                np.testing.assert_array_equal(getattr(message, field), np.asarray(getattr(original, field)))
        else:
            assert [list(p.positions) for p in message.points] == [list(p.positions) for p in original.points]
            assert message.points[1].time_from_start.nanosec == 33_000_000
            assert list(message.points[0].velocities) == []
