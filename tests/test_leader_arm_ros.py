"""The leader arm node over ROS: lerobot's SO-101 leader on the Feetech bus emulator (a separate process on a
pty, servos moved as by a hand) drives `teleop/joint_trajectory`; a missing port is a one-line error."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from twinloop.hardware.leader_arm import SO101_JOINTS, twin_joint_limits, write_calibration_file

pytestmark = pytest.mark.ros

CALIBRATION = {  # as lerobot-calibrate records it; ranges are what the hand swept
    name: {"id": i + 1, "drive_mode": 0, "homing_offset": 0, "range_min": 1000, "range_max": 3100}
    for i, name in enumerate(SO101_JOINTS)
}


def _spec(tmp_path, port: str, calibration_dir) -> str:
    node = {
        "name": "leader_arm",
        "package": "twinloop_ros",
        "executable": "leader_arm_node",
        "required": True,
        "parameters": {"port": port, "calibration_dir": str(calibration_dir), "rate": 20.0},
    }
    spec = tmp_path / "leader.yaml"
    spec.write_text(yaml.safe_dump({"name": "leader_test", "nodes": [node]}))
    return str(spec)


def test_a_hand_moved_leader_arm_publishes_teleop_chunks(ros_graph, tmp_path):
    link = tmp_path / "leader_bus"
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "twinloop.hardware.feetech_emulator",
            "--link",
            str(link),
            "--hand-motion",
            "400",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert emulator.stdout.readline().strip()  # the pty path: the emulator is serving
        calibration_dir = tmp_path / "calibration"
        write_calibration_file(calibration_dir / "so101_leader.json", CALIBRATION)
        graph = ros_graph(_spec(tmp_path, str(link), calibration_dir))
        graph.wait_for_log("leader arm ready", timeout=90)
        echo = graph.probe(
            "echo", "teleop/joint_trajectory", "trajectory_msgs/msg/JointTrajectory", "--count", "40"
        )
        assert echo.returncode == 0, echo.stdout + echo.stderr + graph.log
        chunks = [json.loads(line) for line in echo.stdout.splitlines()]
        assert all(c["joint_names"] == list(SO101_JOINTS) and c["points"] == 3 for c in chunks)
        targets = np.array([c["positions"][1] for c in chunks])
        lower, upper = twin_joint_limits()
        assert np.all(targets >= lower - 1e-9) and np.all(targets <= upper + 1e-9)
        # the "hand" sweeps every servo +-400 ticks (+-35 degrees) at 0.2 Hz: 2 s of chunks see it move
        assert (np.ptp(targets[:, :5], axis=0) > np.radians(5)).all(), np.ptp(targets, axis=0)
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


def test_a_missing_port_is_a_one_line_error(ros_graph, tmp_path):
    graph = ros_graph(_spec(tmp_path, str(tmp_path / "no_such_port"), tmp_path))
    assert graph.wait(timeout=120) == 2, graph.log
    assert "Traceback" not in graph.log
    assert "error: leader arm on" in graph.log and "no_such_port" in graph.log, graph.log
