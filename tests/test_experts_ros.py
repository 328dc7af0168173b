"""Every scripted expert over the real ROS graph in lockstep, on both robots.

The `sim_expert` graph spec runs as separate processes (twin with its expert publishing on
teleop/joint_trajectory, command mux, evaluator) over Fast DDS in an isolated network namespace. Cameras
are off (`twin.cameras=[]`): rendering is not under test here and would cost ~20 ms per frame.
"""

from __future__ import annotations

import json

import pytest

from twinloop.sim.tasks import task_names

pytestmark = pytest.mark.ros

EPISODES = 50
BAR = 0.95  # the bar: >= 95% of at least 50 seeds per task and robot


def _expert_graph(ros_graph, out, robot: str, task: str, episodes: int, seed: int = 0, extra=()):
    return ros_graph(
        "sim_expert",
        [
            f"twin.robot={robot}",
            f"twin.task={task}",
            "twin.cameras=[]",
            f"evaluator.robot={robot}",
            f"evaluator.task={task}",
            f"evaluator.episodes={episodes}",
            f"evaluator.seed={seed}",
            "evaluator.video_episodes=0",
            f"evaluator.output_dir={out}",
            *extra,
        ],
    )


@pytest.mark.parametrize("robot", ["so101", "panda"])
@pytest.mark.parametrize("task", task_names())
def test_expert_success_over_ros(ros_graph, tmp_path, robot, task):
    out = tmp_path / "eval"
    graph = _expert_graph(ros_graph, out, robot, task, EPISODES)
    assert graph.wait(timeout=900) == 0, graph.log
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["robot"], summary["task"], summary["policy"]) == (robot, task, "expert")
    assert [e["seed"] for e in summary["per_episode"]] == list(range(EPISODES))
    failed = [e["seed"] for e in summary["per_episode"] if not e["success"]]
    assert summary["success_rate"] >= BAR, f"{robot} {task}: {summary['success_rate']:.0%}, failed {failed}"
    assert "Traceback" not in graph.log
