"""Leader arm node: an SO-101 leader arm (lerobot's teleoperator on the Feetech bus) drives the follower.

Every `1/rate` s (node clock) it reads the leader's joints through `twinloop.hardware.leader_arm.LeaderArm`
(lerobot's `SO101Leader`, its calibration file from lerobot's calibration flow) and publishes them on
`teleop/joint_trajectory` as a short chunk, like every teleop source: [previous target at 0, target at
1/rate, target held at `chunk_hold`]. The command mux gives it priority over a policy while it publishes
and hands back after its timeout once it stops (set `publish: false`, or unplug the arm).

Parameters: `port` (serial device of the leader's bus), `arm_id` (lerobot's calibration id, default
`so101_leader`), `calibration_dir` ("" = lerobot's default folder), `rate` (Hz, 30), `chunk_hold` (s, 0.5),
`use_degrees` (true, lerobot's body-joint mode). A port that cannot be opened or a missing calibration
ends the node with a one-line error and exit status 2.
"""

from __future__ import annotations

import numpy as np
from rclpy.node import Node
from trajectory_msgs.msg import JointTrajectory

from twinloop.hardware.executor import TrajectoryChunk
from twinloop_ros import qos
from twinloop_ros.conversions import chunk_to_trajectory
from twinloop_ros.node_main import spin_node


class LeaderArmNode(Node):
    def __init__(self) -> None:
        super().__init__("leader_arm")
        p = self.declare_parameter
        port = p("port", "").value
        if not port:
            raise ValueError("parameter port: the leader arm's serial device, e.g. port:=/dev/ttyACM0")
        self.rate = float(p("rate", 30.0).value)
        if not self.rate > 0:
            raise ValueError(f"parameter rate must be > 0, got {self.rate:g}")
        self.chunk_hold = float(p("chunk_hold", 0.5).value)
        calibration_dir = p("calibration_dir", "").value or None
        from twinloop.hardware.leader_arm import SO101_JOINTS, LeaderArm

        arm_id = p("arm_id", "so101_leader").value
        use_degrees = bool(p("use_degrees", True).value)
        try:
            self.arm = LeaderArm(port, id=arm_id, calibration_dir=calibration_dir, use_degrees=use_degrees)
            self.arm.connect()
        except Exception as exc:  # lerobot raises ConnectionError, RuntimeError, FileNotFoundError...
            raise ValueError(f"leader arm on {port}: {str(exc).strip().splitlines()[0]}") from None
        self.joint_names = list(SO101_JOINTS)
        self._previous: np.ndarray | None = None
        self.read_errors = 0
        self.pub = self.create_publisher(JointTrajectory, "teleop/joint_trajectory", qos.COMMANDS)
        self.create_timer(1.0 / self.rate, self._on_timer)
        self.get_logger().info(f"leader arm ready on {port} at {self.rate:g} Hz")

    def _on_timer(self) -> None:
        try:
            q = self.arm.read_joint_targets()
        except Exception as exc:  # a missed reply on the bus: skip this period, keep the last target
            self.read_errors += 1
            if self.read_errors in (1, 10, 100) or self.read_errors % 1000 == 0:
                self.get_logger().warning(f"leader arm read failed ({self.read_errors} times): {exc}")
            return
        previous = q if self._previous is None else self._previous
        self._previous = q
        now = self.get_clock().now().nanoseconds * 1e-9
        chunk = TrajectoryChunk(
            joint_names=self.joint_names,
            stamp=now,
            time_from_start=np.array([0.0, 1.0 / self.rate, max(self.chunk_hold, 2.0 / self.rate)]),
            positions=np.stack([previous, q, q]),
        )
        self.pub.publish(chunk_to_trajectory(chunk))

    def close(self) -> None:
        arm = getattr(self, "arm", None)
        if arm is not None and arm.is_connected:
            arm.disconnect()


def main(args: list[str] | None = None) -> int:
    return spin_node(LeaderArmNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
