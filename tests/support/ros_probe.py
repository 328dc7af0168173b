"""A tiny rclpy client the tests run inside a graph's network namespace.

    python ros_probe.py wait TOPIC [TOPIC...] [--timeout S]     -> exit 0 once every topic has a publisher
    python ros_probe.py echo TOPIC TYPE [--count N] [--timeout S] -> one JSON line per message received
    python ros_probe.py publish-bad-trajectory TOPIC nan|unknown-joint|wrong-length
    python ros_probe.py save-image TOPIC PATH.npz [--timeout S]   -> the first sensor_msgs/Image as arrays

TYPE is `pkg/msg/Name` or `pkg/Name`. Echo prints a compact JSON summary of each message (header
stamp, and the fields the tests look at) rather than the raw message.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy


def _summary(msg) -> dict:
    out: dict = {}
    header = getattr(msg, "header", None)
    if header is not None:
        out["stamp"] = header.stamp.sec + header.stamp.nanosec * 1e-9
        out["frame_id"] = header.frame_id
    for field in ("name", "joint_names", "encoding", "width", "height", "step", "data", "clock", "k"):
        if not hasattr(msg, field):
            continue
        value = getattr(msg, field)
        if field == "data" and not isinstance(value, (bool, str)):
            out["data_len"] = len(value)
            if getattr(msg, "encoding", "") == "32FC1":  # taxel images: the largest reading too
                out["max"] = float(np.frombuffer(bytes(value), dtype="<f4").max(initial=0.0))
        elif field == "clock":
            out["clock"] = value.sec + value.nanosec * 1e-9
        elif field == "k":
            out["k"] = [float(v) for v in value]
        else:
            out[field] = value if isinstance(value, (bool, str, int, float)) else list(value)
    if hasattr(msg, "points"):
        out["points"] = len(msg.points)
        out["positions"] = [list(p.positions) for p in msg.points]
    if hasattr(msg, "position"):
        out["position"] = list(msg.position)
    return out


def _publish_bad(node, topic: str, kind: str, deadline: float) -> int:
    """Publish one malformed chunk (reliable, like a real commander) once a subscriber is matched."""
    from builtin_interfaces.msg import Duration
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    joints = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
    msg = JointTrajectory(joint_names=joints)
    msg.header.stamp = node.get_clock().now().to_msg()
    for i in range(2):
        positions = [0.1] * 6
        if kind == "nan":
            positions[1] = float("nan")
        elif kind == "wrong-length":
            positions = positions[:4]
        msg.points.append(JointTrajectoryPoint(positions=positions, time_from_start=Duration(sec=i)))
    if kind == "unknown-joint":
        msg.joint_names = joints[:5] + ["tentacle"]
    pub = node.create_publisher(JointTrajectory, topic, QoSProfile(depth=10))
    while pub.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            return 1
        time.sleep(0.05)
    time.sleep(0.5)
    pub.publish(msg)
    time.sleep(1.0)  # let reliable delivery finish before the participant goes away
    print(json.dumps({"published": kind}), flush=True)
    return 0


def _save_image(node, topic: str, path: str, deadline: float) -> int:
    """Save the first Image on `topic` as `image` (H x W x C uint8 or H x W float32) and `stamp`."""
    from sensor_msgs.msg import Image

    received: list = []
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)  # matches any camera publisher
    node.create_subscription(Image, topic, received.append, qos)
    while not received and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    if not received:
        return 1
    msg = received[0]
    if msg.encoding == "32FC1":
        image = np.frombuffer(bytes(msg.data), dtype="<f4").reshape(msg.height, msg.width)
    else:
        image = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)
        image = image[:, : msg.width * 3].reshape(msg.height, msg.width, 3)
    np.savez(path, image=image, stamp=msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
    print(json.dumps({"saved": path, "encoding": msg.encoding}), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    wait = sub.add_parser("wait")
    wait.add_argument("topics", nargs="+")
    wait.add_argument("--timeout", type=float, default=60.0)
    bad = sub.add_parser("publish-bad-trajectory")
    bad.add_argument("topic")
    bad.add_argument("kind", choices=["nan", "unknown-joint", "wrong-length"])
    bad.add_argument("--timeout", type=float, default=30.0)
    echo = sub.add_parser("echo")
    echo.add_argument("topic")
    echo.add_argument("type")
    echo.add_argument("--count", type=int, default=1)
    echo.add_argument("--timeout", type=float, default=60.0)
    save = sub.add_parser("save-image")
    save.add_argument("topic")
    save.add_argument("path")
    save.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    rclpy.init()
    node = rclpy.create_node("test_probe")
    deadline = time.monotonic() + args.timeout
    try:
        if args.cmd == "wait":
            wanted = {t if t.startswith("/") else "/" + t for t in args.topics}
            while time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.1)
                have = {n for n, _ in node.get_topic_names_and_types() if node.count_publishers(n) > 0}
                if wanted <= have:
                    print(json.dumps({"topics": sorted(have)}), flush=True)
                    return 0
            print(json.dumps({"missing": sorted(wanted - have)}), flush=True)
            return 1
        if args.cmd == "publish-bad-trajectory":
            return _publish_bad(node, args.topic, args.kind, deadline)
        if args.cmd == "save-image":
            return _save_image(node, args.topic, args.path, deadline)
        parts = args.type.split("/")
        pkg, name = parts[0], parts[-1]
        msg_type = getattr(importlib.import_module(f"{pkg}.msg"), name)
        received: list = []
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)
        node.create_subscription(msg_type, args.topic, received.append, qos)
        printed = 0
        while printed < args.count and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
            while received and printed < args.count:
                print(json.dumps(_summary(received.pop(0))), flush=True)
                printed += 1
        return 0 if printed >= args.count else 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
