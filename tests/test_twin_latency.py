"""Injected latency in the twin (`injected_latency`, seconds of sim time), over a real ROS graph.

The graph is the twin node alone, in lockstep with no cameras; a small commander process (written below,
run inside the graph's network namespace) plays the command mux: at every frame it answers with a chunk
stamped at that frame, holding the start pose, and from STEP_AT on it commands a step of the
shoulder_pan joint (no gravity load on it, so it stays put to ~1e-8 rad while held). It records
`joint_states` and prints them; the response time is measured from them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.ros

TICK = 0.01  # the twin's control period (100 Hz)
STEP_AT = 1.0  # sim time of the step command
DELTA = 0.2  # rad, shoulder_pan step
MOVED = 1e-4  # rad: "the arm has started to respond"

COMMANDER = r"""
import json, sys, time
import rclpy
from builtin_interfaces.msg import Duration
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

step_at, delta, until, rate, chunk_s = (float(a) for a in sys.argv[1:6])
rclpy.init()
node = rclpy.create_node("latency_commander")
pub = node.create_publisher(JointTrajectory, "arm_controller/joint_trajectory", QoSProfile(depth=10))
samples, hold, answered = [], None, set()

def on_state(msg):
    global hold
    t = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    position = list(msg.position)
    samples.append((t, position))
    if hold is None:
        hold = position
    frame = round(t * rate)
    if abs(t * rate - frame) > 1e-4 or frame in answered:
        return
    answered.add(frame)  # one chunk per frame, stamped exactly at it (the lockstep answer)
    target = list(hold)
    if t >= step_at - 1e-6:
        target[0] += delta
    cmd = JointTrajectory(joint_names=list(msg.name))
    cmd.header.stamp = msg.header.stamp
    cmd.points = [
        JointTrajectoryPoint(positions=target, time_from_start=Duration(sec=0)),
        JointTrajectoryPoint(positions=target, time_from_start=Duration(nanosec=int(chunk_s * 1e9))),
    ]
    pub.publish(cmd)

node.create_subscription(JointState, "joint_states", on_state,
                         QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
# A fresh participant now and then discovers none of the graph (tests/conftest.py): give up early and
# let the test start a new commander; the twin does not start its clock before one is connected.
deadline = time.monotonic() + 15
while node.count_publishers("/joint_states") == 0:
    rclpy.spin_once(node, timeout_sec=0.1)
    if time.monotonic() > deadline:
        sys.exit(3)
deadline = time.monotonic() + 60
while (not samples or samples[-1][0] < until) and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
print(json.dumps({"samples": samples}), flush=True)
node.destroy_node()
rclpy.try_shutdown()
"""


def twin_only_spec(tmp_path: Path, latency: float | int) -> Path:
    path = tmp_path / f"twin_latency_{latency:g}.yaml"
    twin = {
        "name": "twin",
        "package": "twinloop_ros",
        "executable": "twin_node",
        "required": True,
        "parameters": {
            "mode": "lockstep",
            "robot": "so101",
            "task": "reach_cube",
            "cameras": [],
            "camera_rate": 10.0,
            "injected_latency": latency,
            "lockstep_timeout": 10.0,
        },
    }
    path.write_text(yaml.safe_dump({"name": "twin_latency", "nodes": [twin]}))
    return path


def run_step(ros_graph, tmp_path: Path, latency: float, chunk_s: float = 0.5, until: float = 2.0):
    """Run the twin with `latency`, command the step; return (graph, times, shoulder_pan positions)."""
    commander = tmp_path / "commander.py"
    commander.write_text(COMMANDER)
    graph = ros_graph(twin_only_spec(tmp_path, latency))
    argv = [sys.executable, str(commander), str(STEP_AT), str(DELTA), str(until), "10", str(chunk_s)]
    for _ in range(3):
        result = graph.run(argv, timeout=90)
        if result.returncode != 3:  # 3: this commander process discovered nothing; try a fresh one
            break
    samples = json.loads(result.stdout.strip().splitlines()[-1])["samples"] if result.stdout.strip() else []
    assert result.returncode == 0 and samples, (
        f"{result.stdout[-2000:]}\n{result.stderr}\n--- graph log ---\n{graph.log}"
    )
    times = np.array([t for t, _ in samples])
    pan = np.array([p[0] for _, p in samples])
    assert np.all(np.diff(times) > 0) and times[-1] >= until, "joint_states missing or out of order"
    assert np.allclose(np.diff(times), TICK, atol=1e-6), "a joint_states sample was lost"
    return graph, times, pan


def response_delay(times: np.ndarray, pan: np.ndarray) -> float:
    """Sim seconds from the step chunk's stamp to the first joint_states sample that has moved."""
    at_step = int(np.argmin(np.abs(times - STEP_AT)))
    moved = np.nonzero(np.abs(pan[at_step:] - pan[at_step]) > MOVED)[0]
    assert moved.size, "the arm never responded to the step"
    return float(times[at_step + moved[0]] - times[at_step])


def test_injected_latency_delays_the_response_by_exactly_that_much_sim_time(ros_graph, tmp_path):
    graph0, times0, pan0 = run_step(ros_graph, tmp_path, 0.0)
    graph0.stop()
    graph3, times3, pan3 = run_step(ros_graph, tmp_path, 0.3)
    graph3.stop()
    delay0 = response_delay(times0, pan0)
    delay3 = response_delay(times3, pan3)
    # no latency: the setpoint changes on the next tick and the joint has moved the tick after
    assert TICK - 1e-6 <= delay0 <= 2 * TICK + 1e-6, delay0
    # 0.3 s: the chunk takes effect 0.3 s of sim time after its stamp, no sooner, no later
    assert delay3 >= 0.3
    assert delay3 == pytest.approx(delay0 + 0.3, abs=1e-6), (delay0, delay3)
    # and the motion is the same motion, shifted: deterministic in sim time
    start0 = int(np.argmin(np.abs(times0 - STEP_AT)))
    start3 = int(np.argmin(np.abs(times3 - (STEP_AT + 0.3))))
    n = 50  # 0.5 s of the response
    assert np.abs(pan3[start3 : start3 + n] - pan0[start0 : start0 + n]).max() < 1e-5
    assert np.abs(pan0[start0 + n] - pan0[start0]) > 0.5 * DELTA  # it did move
    assert "injected_latency=0.3s" in graph3.log
    assert "Traceback" not in graph0.log + graph3.log


def test_chunks_that_expire_while_held_back_are_dropped(ros_graph, tmp_path):
    """Latency longer than the chunk: every chunk's last point has passed when it is due; the arm holds."""
    graph, times, pan = run_step(ros_graph, tmp_path, 0.6, chunk_s=0.5, until=2.0)
    assert np.abs(pan - pan[0]).max() < MOVED
    graph.wait_for_log("expired before it took effect")
    assert graph.stop() == 130
    assert "Traceback" not in graph.log


def test_measured_latency_is_refused_until_chunks_carry_it(ros_graph, tmp_path):
    graph = ros_graph(twin_only_spec(tmp_path, -1))  # a YAML integer: taken as seconds too
    code = graph.wait(timeout=90)
    assert code == 2, graph.log
    errors = [line for line in graph.log.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("[twin] error: parameter injected_latency -1 (measured)")
    assert "Traceback" not in graph.log
