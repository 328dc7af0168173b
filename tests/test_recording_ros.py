"""Recording over the real ROS graph: the twin's scripted operator, the recorder node, three formats.

`twinloop record` runs the `sim_record` graph (twin in lockstep with its expert on teleop, command mux,
recorder, evaluator) as processes in an isolated network namespace.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from twinloop.datasets.mcap_bag import episode_paths, read_bag

pytestmark = pytest.mark.ros

EPISODES = 10


def _record(ros_graph, out: Path, episodes: int, *extra: str):
    return ros_graph(
        cli=["record", "--out", str(out), "--episodes", str(episodes), "--task", "pick_lift_cube", *extra]
    )


def _lerobot(out: Path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset("twinloop/recording", root=out / "lerobot")


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Ten recorded expert episodes (made once for the module's tests)."""
    from conftest import RunningGraph  # the fixture's class: one graph outside a test function

    out = tmp_path_factory.mktemp("rec") / "demos"
    cli = ["record", "--out", str(out), "--episodes", str(EPISODES), "--task", "pick_lift_cube"]
    graph = RunningGraph(None, [], out.parent, None, cli=cli)
    try:
        code = graph.wait(timeout=900)
    finally:
        graph.stop()
    assert code == 0, graph.log
    assert "Traceback" not in graph.log
    return out, graph.log


def test_ten_episodes_in_all_three_formats(recording):
    out, log = recording
    dataset = _lerobot(out)
    assert dataset.meta.total_episodes == EPISODES
    ends = zarr.open_group(str(out / "replay.zarr"), mode="r")["meta/episode_ends"][:]
    assert len(ends) == EPISODES
    lengths = np.diff(np.concatenate([[0], ends]))
    lerobot_lengths = [int(e["length"]) for e in dataset.meta.episodes]
    assert lerobot_lengths == lengths.tolist()
    assert all(n > 20 for n in lengths)  # 2-12 s at 10 fps
    bags = episode_paths(out / "mcap")
    assert len(bags) == EPISODES

    root = zarr.open_group(str(out / "replay.zarr"), mode="r")
    state = root["data/observation.state"][:]
    action = root["data/action"][:]
    assert state.shape == (ends[-1], 6) and action.shape == (ends[-1], 6)
    lerobot_state = np.stack([np.asarray(dataset[i]["observation.state"]) for i in range(0, ends[-1], 7)])
    np.testing.assert_allclose(lerobot_state, state[::7], atol=1e-6)
    front = root["data/observation.images.front"]
    assert front.shape[1:] == (240, 320, 3) and front.dtype == np.uint8
    assert root["data/observation.tactile.fixed_jaw"].shape[1:] == (8, 6)
    # the scripted operator drove the arm: the recorded source is teleop, and the expert mostly succeeded
    assert (
        set(np.unique(root["data/command_source"][:])) <= {0, 2}
        and (root["data/command_source"][:] == 2).any()
    )
    assert "episode 9 saved" in log


def test_the_bag_holds_every_topic_and_the_samples_match_it(recording):
    out, _ = recording
    bag = episode_paths(out / "mcap")[0]
    topics: dict[str, int] = {}
    joints = []
    for topic, _msgtype, t_ns, msg in read_bag(bag):
        topics[topic] = topics.get(topic, 0) + 1
        if topic.endswith("/joint_states"):
            joints.append((t_ns, np.array(msg.position)))
    for name in (
        "joint_states",
        "front/image_raw",
        "wrist/image_raw",
        "tactile/fixed_jaw/image",
        "arm_controller/joint_trajectory",
    ):
        assert topics.get(f"/{name}", 0) > 0, topics
    # joint states at 100 Hz against 10 fps samples: ~10 messages per recorded frame
    ends = zarr.open_group(str(out / "replay.zarr"), mode="r")["meta/episode_ends"][:]
    assert topics["/joint_states"] >= 9 * ends[0]
    # each recorded state is one of the bag's joint_states messages (newest at or before the tick)
    state = zarr.open_group(str(out / "replay.zarr"), mode="r")["data/observation.state"][: ends[0]]
    bag_positions = np.stack([p for _, p in joints]).astype(np.float32)
    for row in state[:: max(1, len(state) // 10)]:
        assert np.abs(bag_positions - row).max(axis=1).min() < 1e-6


def test_a_lerobot_policy_trains_on_the_recording(recording):
    """lerobot's own diffusion policy, its own dataset class and its own dataloader, a few steps on CPU."""
    import torch
    from lerobot.configs.types import FeatureType
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.utils.feature_utils import dataset_to_policy_features

    out, _ = recording
    meta = _lerobot(out).meta
    features = dataset_to_policy_features(meta.features)
    inputs = {k: f for k, f in features.items() if k in ("observation.state", "observation.images.front")}
    outputs = {k: f for k, f in features.items() if f.type is FeatureType.ACTION}
    cfg = DiffusionConfig(
        input_features=inputs,
        output_features=outputs,
        pretrained_backbone_weights=None,
        down_dims=(32, 64, 128),
        crop_shape=(224, 304),
        n_obs_steps=2,
        horizon=8,
        n_action_steps=4,
    )
    fps = meta.fps
    delta = {
        "observation.state": [i / fps for i in cfg.observation_delta_indices],
        "observation.images.front": [i / fps for i in cfg.observation_delta_indices],
        "action": [i / fps for i in cfg.action_delta_indices],
    }
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    dataset = LeRobotDataset("twinloop/recording", root=out / "lerobot", delta_timestamps=delta)
    policy = DiffusionPolicy(cfg, dataset_stats=dataset.meta.stats)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True, num_workers=0)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-4)
    losses = []
    for step, batch in enumerate(loader):
        loss, _ = policy.forward(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step == 2:
            break
    assert len(losses) == 3 and all(np.isfinite(losses)), losses


def _recorder_pid(domain_id: int) -> int | None:
    from conftest import domain_processes

    pids = [pid for pid, args in domain_processes({domain_id}) if b"twinloop_ros.recorder" in args]
    return pids[0] if pids else None


def test_kill_9_loses_at_most_the_episode_in_progress(ros_graph, tmp_path):
    out = tmp_path / "demos"
    graph = _record(ros_graph, out, 50)
    graph.wait_for_log("episode 1 saved", timeout=300)
    graph.wait_for_log("episode 2 started", timeout=60)
    time.sleep(0.5)  # mid-episode 2
    pid = _recorder_pid(graph.domain_id)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    graph.wait(timeout=60)  # the required recorder died: the graph stops

    # a new recorder on the same folder repairs it and appends
    again = _record(ros_graph, out, 1, "--resume", "--seed", "60")
    assert again.wait(timeout=300) == 0, again.log
    assert "recovered:" in again.log
    dataset = _lerobot(out)
    ends = zarr.open_group(str(out / "replay.zarr"), mode="r")["meta/episode_ends"][:]
    bags = episode_paths(out / "mcap")
    # episodes 0 and 1 survived, episode 2 was lost or recovered whole, and the new one was appended
    n = dataset.meta.total_episodes
    assert n in (3, 4) and len(ends) == n and len(bags) == n, (n, len(ends), len(bags))
    assert not list((out / ".staging").glob("episode_*"))
    for i in range(n):
        assert len(list(read_bag(bags[i]))) > 0
