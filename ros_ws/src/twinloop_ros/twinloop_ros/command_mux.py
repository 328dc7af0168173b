"""Command mux: forwards policy or teleop chunks to `arm_controller/joint_trajectory`.

Priority rule: teleop overrides the policy while it is engaged (a teleop chunk newer than
`teleop_timeout`), then hands back to the policy. The active source is published (latched) on
`command_mux/source` as `policy`, `teleop` or `hold`, so recordings label interventions.
"""

from __future__ import annotations

from rclpy.node import Node
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from twinloop_ros import qos
from twinloop_ros.node_main import spin_node


class CommandMux(Node):
    def __init__(self) -> None:
        super().__init__("command_mux")
        self.teleop_timeout = float(self.declare_parameter("teleop_timeout", 0.5).value)
        self.hold_timeout = float(self.declare_parameter("hold_timeout", 1.0).value)
        self.pub = self.create_publisher(JointTrajectory, "arm_controller/joint_trajectory", qos.COMMANDS)
        self.pub_source = self.create_publisher(String, "command_mux/source", qos.LATCHED)
        self.create_subscription(JointTrajectory, "policy/joint_trajectory", self._on_policy, qos.COMMANDS)
        self.create_subscription(JointTrajectory, "teleop/joint_trajectory", self._on_teleop, qos.COMMANDS)
        self._last_teleop = None
        self._last_forward = None
        self.source = ""
        self._set_source("hold")
        self.create_timer(0.05, self._check_hold)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _set_source(self, source: str) -> None:
        if source != self.source:
            self.source = source
            self.pub_source.publish(String(data=source))
            self.get_logger().info(f"source: {source}")

    def _on_teleop(self, msg: JointTrajectory) -> None:
        self._last_teleop = self._last_forward = self._now()
        self._set_source("teleop")
        self.pub.publish(msg)

    def _on_policy(self, msg: JointTrajectory) -> None:
        now = self._now()
        if self._last_teleop is not None and now - self._last_teleop < self.teleop_timeout:
            return  # the operator has the arm
        self._last_forward = now
        self._set_source("policy")
        self.pub.publish(msg)

    def _check_hold(self) -> None:
        if self._last_forward is None or self._now() - self._last_forward > self.hold_timeout:
            self._set_source("hold")


def main(args: list[str] | None = None) -> int:
    return spin_node(CommandMux, args)


if __name__ == "__main__":
    raise SystemExit(main())
