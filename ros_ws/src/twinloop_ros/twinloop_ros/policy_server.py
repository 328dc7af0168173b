"""Policy server node: observations in, action chunks out on `policy/joint_trajectory`.

Inference is triggered by camera frames at the policy's rate and runs on a worker thread, off the ROS
executor. The observation for a frame stamped t uses the newest joint state stamped at or before t; an
observation older than `max_obs_age` is refused (diagnostic instead of a chunk). Each chunk is stamped
with its observation time, so the executor skips what is already late.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from twinloop.hardware.executor import TrajectoryChunk
from twinloop.policies.base import CameraModel, Observation, make_policy
from twinloop.sim.scene import CameraConfig
from twinloop_ros import qos
from twinloop_ros.conversions import (
    chunk_to_trajectory,
    image_to_numpy,
    intrinsics_from_camera_info,
    joint_state_to_numpy,
    stamp_to_seconds,
)
from twinloop_ros.node_main import spin_node


class PolicyServer(Node):
    def __init__(self) -> None:
        super().__init__("policy_server")
        p = self.declare_parameter
        self.policy_name = p("policy", "scripted_reach").value
        try:
            policy_kwargs = json.loads(p("policy_args", "{}").value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"parameter policy_args is not a JSON object: {exc}") from None
        if not isinstance(policy_kwargs, dict):
            raise ValueError("parameter policy_args must be a JSON object, e.g. '{\"hover\": 0.05}'")
        # the robot the policy commands; the twin and arm drivers take the same parameter
        policy_kwargs.setdefault("robot", p("robot", "so101").value)
        self.camera_name = p("camera_name", "front").value
        # Camera extrinsics (world-from-camera), given as a position and a look-at target. The twin takes
        # the same two values from the graph spec; on hardware they come from hand-eye calibration.
        extrinsics = CameraConfig(
            name=self.camera_name,
            pos=tuple(p("camera_pos", [0.55, 0.0, 0.45]).value),
            target=tuple(p("camera_target", [0.2, 0.0, 0.0]).value),
        )
        self._camera_rotation = extrinsics.opencv_rotation()
        self._camera_position = np.asarray(extrinsics.pos, float)
        self.rate = float(p("rate", 10.0).value)
        self.max_obs_age = float(p("max_obs_age", 0.5).value)
        self.state_wait = float(p("state_wait", 0.2).value)
        self.policy = make_policy(self.policy_name, **policy_kwargs)

        self._joint_states: deque[tuple[float, tuple[str, ...], np.ndarray]] = deque(maxlen=200)
        self._state_lock = threading.Condition()
        self._K: np.ndarray | None = None
        self._next_due = -np.inf
        self._requests: queue.Queue[tuple[float, np.ndarray]] = queue.Queue(maxsize=1)
        self._latencies: deque[float] = deque(maxlen=200)
        self.stale_refusals = 0
        self.chunks = 0

        self.pub_chunk = self.create_publisher(JointTrajectory, "policy/joint_trajectory", qos.COMMANDS)
        self.pub_diag = self.create_publisher(DiagnosticArray, "policy/diagnostics", qos.DIAGNOSTICS)
        self.create_subscription(JointState, "joint_states", self._on_joint_state, qos.JOINT_STATES)
        self.create_subscription(Image, f"{self.camera_name}/image_raw", self._on_image, qos.SENSOR_DATA)
        self.create_subscription(
            CameraInfo, f"{self.camera_name}/camera_info", self._on_camera_info, qos.LATCHED
        )
        self.create_service(Trigger, "policy/reset", self._on_reset)
        self._closing = threading.Event()
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"policy '{self.policy_name}' ready; camera={self.camera_name} rate={self.rate:g}Hz"
        )

    # -- inputs ------------------------------------------------------------------------------------
    def _on_joint_state(self, msg: JointState) -> None:
        try:
            names, position, _, _ = joint_state_to_numpy(msg)
        except ValueError as exc:
            self.get_logger().error(f"ignored joint_states: {exc}")
            return
        with self._state_lock:
            self._joint_states.append((stamp_to_seconds(msg.header.stamp), names, position))
            self._state_lock.notify_all()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self._K = intrinsics_from_camera_info(msg)[2]
        except ValueError as exc:
            self.get_logger().error(f"ignored camera_info: {exc}")

    def _on_image(self, msg: Image) -> None:
        stamp = stamp_to_seconds(msg.header.stamp)
        if stamp + 1e-6 < self._next_due:
            return
        try:
            image = image_to_numpy(msg, copy=True)
        except ValueError as exc:
            self.get_logger().error(f"ignored image: {exc}")
            return
        self._next_due = stamp + 1.0 / self.rate
        # keep only the newest request: a slow policy skips frames rather than lagging behind
        with contextlib.suppress(queue.Empty):
            self._requests.get_nowait()
        self._requests.put_nowait((stamp, image))

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.policy.reset()
        self._next_due = -np.inf
        response.success, response.message = True, "policy reset"
        return response

    # -- inference ---------------------------------------------------------------------------------
    def _state_at(self, stamp: float) -> tuple[float, tuple[str, ...], np.ndarray] | None:
        """The newest joint state stamped at or before `stamp`, waiting briefly for it to arrive."""
        deadline = time.monotonic() + self.state_wait
        with self._state_lock:
            while not (self._joint_states and self._joint_states[-1][0] >= stamp):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._state_lock.wait(timeout=remaining)
            candidates = [s for s in self._joint_states if s[0] <= stamp]
        return candidates[-1] if candidates else None

    def _work(self) -> None:
        """Inference thread: one observation at a time, never blocking the ROS executor."""
        while not self._closing.is_set():
            try:
                stamp, image = self._requests.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                self._infer(stamp, image)
            except Exception as exc:  # noqa: BLE001 - the server must outlive a bad observation
                if not self.context.ok():
                    return  # the signal handler shut the context down mid-publish: a normal exit
                self.get_logger().error(f"inference step failed: {type(exc).__name__}: {exc}")

    def _infer(self, stamp: float, image: np.ndarray) -> None:
        state = self._state_at(stamp)
        now = self.get_clock().now().nanoseconds * 1e-9
        age = now - stamp
        if state is None or self._K is None or age > self.max_obs_age:
            self.stale_refusals += 1
            why = "no joint state" if state is None else "no camera_info" if self._K is None else "stale"
            self._publish_diagnostics(DiagnosticStatus.WARN, f"refused observation: {why}", age=age)
            if self.stale_refusals in (1, 10, 100) or self.stale_refusals % 1000 == 0:
                self.get_logger().warning(
                    f"refused observation at t={stamp:.3f}: {why} (age {age * 1e3:.0f} ms; "
                    f"{self.stale_refusals} refusals so far)"
                )
            return
        obs = Observation(
            stamp=stamp,
            joint_names=state[1],
            state=state[2],
            images={self.camera_name: image},
            cameras={self.camera_name: CameraModel(self._K, self._camera_rotation, self._camera_position)},
        )
        started = time.perf_counter()
        try:
            actions = self.policy.predict_chunk(obs)
        except Exception as exc:  # noqa: BLE001 - a policy bug must not kill the server; the mux holds
            self.get_logger().error(f"policy failed: {type(exc).__name__}: {exc}")
            return
        latency = time.perf_counter() - started
        self._latencies.append(latency)
        cfg = self.policy.config
        chunk = TrajectoryChunk(cfg.joint_names, stamp, np.arange(len(actions)) * cfg.dt, actions)
        self.pub_chunk.publish(chunk_to_trajectory(chunk))
        self.chunks += 1
        self._publish_diagnostics(DiagnosticStatus.OK, "ok", age=age)

    def close(self) -> None:
        """Stop the inference thread before the node is destroyed."""
        self._closing.set()
        self._worker.join(timeout=5.0)

    def _publish_diagnostics(self, level: bytes, message: str, age: float) -> None:
        lat = np.asarray(self._latencies) * 1e3 if self._latencies else np.zeros(1)
        values = {
            "latency_p50_ms": f"{np.percentile(lat, 50):.2f}",
            "latency_p99_ms": f"{np.percentile(lat, 99):.2f}",
            "observation_age_ms": f"{age * 1e3:.1f}",
            "chunks": str(self.chunks),
            "stale_refusals": str(self.stale_refusals),
        }
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_name()}: {self.policy_name}",
            message=message,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(msg)


def main(args: list[str] | None = None) -> int:
    return spin_node(PolicyServer, args)


if __name__ == "__main__":
    raise SystemExit(main())
