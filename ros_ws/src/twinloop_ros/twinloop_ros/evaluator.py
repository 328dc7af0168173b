"""Evaluator node: resets the twin with a seed per episode, waits for `sim/success` or the time limit,
and reports the success rate with a 95% Wilson interval (stdout line + summary.json). Exits when done,
so a graph that marks it required stops with it.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from twinloop.sim.evaluation import EpisodeRecord, result_line, summarize, write_summary, write_video
from twinloop.sim.tasks import get_task
from twinloop_ros import qos
from twinloop_ros.conversions import image_to_numpy, stamp_to_seconds
from twinloop_ros.node_main import run_with_loop

# Success messages published before the reset took effect may still be in flight; ignore any that
# arrive within this much graph time after the reset answered.
_SUCCESS_GRACE_S = 0.1


class Evaluator(Node):
    def __init__(self) -> None:
        super().__init__("evaluator")
        p = self.declare_parameter
        self.episodes = int(p("episodes", 10).value)
        self.seed = int(p("seed", 0).value)
        self.twin_node = p("twin_node", "twin").value
        self.reset_policy_each_episode = bool(p("reset_policy", True).value)  # false: no policy server
        # true: a recorder records every episode (recorder/start_episode after the reset, stop at its end)
        self.record = bool(p("record", False).value)
        self.service_timeout = float(p("service_timeout", 60.0).value)
        out = p("output_dir", "").value or f"outputs/eval/{datetime.now():%Y%m%d-%H%M%S}"
        self.output_dir = Path(out)
        self.labels = {
            "task": p("task", "reach_cube").value,
            "robot": p("robot", "so101").value,
            "policy": p("policy", "scripted_reach").value,
        }
        # 0 (the default): the task's own episode time limit
        limit = float(p("episode_time_limit", 0.0).value)
        self.time_limit = limit if limit > 0 else get_task(self.labels["task"]).time_limit
        # true: every episode lasts the whole time limit (fixed-length recordings, throughput benchmarks)
        self.full_episodes = bool(p("full_episodes", False).value)
        self.video_episodes = int(p("video_episodes", 1).value)
        self.video_fps = float(p("video_fps", 10.0).value)
        self.video_tail_s = float(p("video_tail_s", 1.0).value)
        camera = p("video_camera", "front").value
        # joints_<episode>.csv per episode: every joint_states message from the reset on (stamp relative to
        # the episode start), to compare runs (lockstep is deterministic per seed) or plot them
        self.record_joints = bool(p("record_joints", False).value)
        self._joint_rows: list | None = None  # collecting while not None
        self._joint_names: list[str] = []
        self._success_at: float | None = None
        self._frames: list | None = None  # collecting while not None
        self._lock = threading.Lock()
        self.create_subscription(Bool, "sim/success", self._on_success, qos.EVENTS)
        if self.video_episodes > 0:
            self.create_subscription(Image, f"{camera}/image_raw", self._on_image, qos.SENSOR_DATA)
        if self.record_joints:
            self.create_subscription(JointState, "joint_states", self._on_joint_state, qos.JOINT_STATES)
        self.reset_sim = self.create_client(Trigger, "sim/reset")
        self.reset_policy = self.create_client(Trigger, "policy/reset")
        self.recorder_start = self.create_client(Trigger, "recorder/start_episode")
        self.recorder_stop = self.create_client(Trigger, "recorder/stop_episode")
        # the episode's language instruction (from the twin's reset), for VLA policies and the recorder
        self.pub_instruction = self.create_publisher(String, "policy/instruction", qos.LATCHED)
        ns = self.get_namespace().rstrip("/")
        self.twin_params = AsyncParameterClient(self, f"{ns}/{self.twin_node}")

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_success(self, msg: Bool) -> None:
        if msg.data:
            with self._lock:
                if self._success_at is None:
                    self._success_at = self.now()

    def _on_image(self, msg: Image) -> None:
        with self._lock:
            if self._frames is None:
                return
            try:
                self._frames.append((stamp_to_seconds(msg.header.stamp), image_to_numpy(msg, copy=True)))
            except ValueError as exc:
                self.get_logger().error(f"video frame skipped: {exc}")

    def _on_joint_state(self, msg: JointState) -> None:
        with self._lock:
            if self._joint_rows is None:
                return
            self._joint_names = list(msg.name)
            self._joint_rows.append((stamp_to_seconds(msg.header.stamp), *msg.position))

    def _save_joints(self, index: int, t0: float) -> None:
        with self._lock:
            rows, self._joint_rows = self._joint_rows or [], None
        rows = sorted(r for r in rows if r[0] >= t0 - 1e-9)
        path = self.output_dir / f"joints_{index:03d}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [",".join(["t", *self._joint_names])]
        lines += [",".join([f"{r[0] - t0:.6f}", *(repr(float(v)) for v in r[1:])]) for r in rows]
        path.write_text("\n".join(lines) + "\n")
        self.joint_traces.append(str(path))

    def _save_video(self, index: int, t0: float) -> None:
        with self._lock:
            frames, self._frames = self._frames or [], None
        frames = [f for stamp, f in sorted(frames, key=lambda x: x[0]) if stamp >= t0]
        if not frames:
            self.get_logger().warning(f"episode {index}: no camera frames received; no video")
            return
        try:
            path = write_video(frames, self.output_dir / f"episode_{index:03d}.mp4", self.video_fps)
            self.videos.append(str(path))
        except (OSError, RuntimeError, ValueError) as exc:
            self.get_logger().error(f"video of episode {index} not written: {exc}")

    def _sleep_until(self, t: float) -> None:
        while rclpy.ok() and self.now() < t:
            time.sleep(0.002)

    def _call(self, client, request, what: str, timeout: float = 30.0):
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline or not rclpy.ok():
                raise RuntimeError(f"{what}: no answer within {timeout:.0f} s")
            time.sleep(0.005)
        return future.result()

    def run(self) -> int:
        log = self.get_logger()
        needed = [(self.reset_sim, "sim/reset")]
        if self.reset_policy_each_episode:
            needed.append((self.reset_policy, "policy/reset"))
        if self.record:
            needed += [
                (self.recorder_start, "recorder/start_episode"),
                (self.recorder_stop, "recorder/stop_episode"),
            ]
        for client, what in needed:
            if not client.wait_for_service(timeout_sec=self.service_timeout):
                log.error(
                    f"service {what} not available after {self.service_timeout:.0f} s; is the graph up?"
                )
                return 1
        if not self.twin_params.wait_for_services(timeout_sec=self.service_timeout):
            log.error(f"parameter services of node '{self.twin_node}' not available")
            return 1
        records: list[EpisodeRecord] = []
        self.videos: list[str] = []
        self.joint_traces: list[str] = []
        try:
            for index in range(self.episodes):
                record_video = index < self.video_episodes
                records.append(self._episode(index, self.seed + index, record_video))
                r = records[-1]
                log.info(
                    f"episode {index + 1}/{self.episodes} seed={r.seed}: "
                    f"{'success' if r.success else 'failure'} after {r.duration_s:.2f} s"
                )
        except RuntimeError as exc:
            log.error(str(exc))
            return 1
        extra = {"joint_traces": self.joint_traces} if self.record_joints else {}
        summary = summarize(
            records, **self.labels, seed=self.seed, time_limit_s=self.time_limit, videos=self.videos, **extra
        )
        path = write_summary(summary, self.output_dir)
        print(result_line(summary), flush=True)
        print(f"outputs: {path}" + "".join(f", {v}" for v in self.videos), flush=True)
        return 0

    def _episode(self, index: int, seed: int, record_video: bool) -> EpisodeRecord:
        with self._lock:
            self._frames = [] if record_video else None
            self._joint_rows = [] if self.record_joints else None
        record = self._run_episode(index, seed)
        if self.record:
            stopped = self._call(self.recorder_stop, Trigger.Request(), "recorder/stop_episode")
            if not stopped.success:
                raise RuntimeError(f"recorder/stop_episode failed: {stopped.message}")
        if record_video:
            self._save_video(index, self._t0)
        if self.record_joints:
            self._save_joints(index, self._t0)
        return record

    def _run_episode(self, index: int, seed: int) -> EpisodeRecord:
        future = self.twin_params.set_parameters([Parameter("seed", value=seed)])
        deadline = time.monotonic() + 30.0
        while not future.done():
            if time.monotonic() > deadline or not rclpy.ok():
                raise RuntimeError(f"setting {self.twin_node}.seed timed out")
            time.sleep(0.005)
        result = self._call(self.reset_sim, Trigger.Request(), "sim/reset")
        if not result.success:
            raise RuntimeError(f"sim/reset failed: {result.message}")
        if self.reset_policy_each_episode:
            self._call(self.reset_policy, Trigger.Request(), "policy/reset")
        t0 = self._t0 = float(result.message.split("t0=")[1].split()[0])
        instruction = result.message.split("instruction=", 1)[1] if "instruction=" in result.message else ""
        self.pub_instruction.publish(String(data=instruction))
        if self.record:
            started = self._call(self.recorder_start, Trigger.Request(), "recorder/start_episode")
            if not started.success:
                raise RuntimeError(f"recorder/start_episode failed: {started.message}")
        with self._lock:
            self._success_at = None
        while rclpy.ok():
            now = self.now()
            with self._lock:
                success_at = self._success_at
                if success_at is not None and success_at < t0 + _SUCCESS_GRACE_S:
                    self._success_at = success_at = None
            if success_at is not None and self.full_episodes:
                if now - t0 >= self.time_limit:
                    return EpisodeRecord(index, seed, True, success_at - t0)
            elif success_at is not None:
                with self._lock:
                    recording = self._frames is not None
                if recording:  # let the video show a moment after success
                    self._sleep_until(success_at + self.video_tail_s)
                return EpisodeRecord(index, seed, True, success_at - t0)
            if now - t0 >= self.time_limit:
                return EpisodeRecord(index, seed, False, self.time_limit)
            time.sleep(0.002)
        raise RuntimeError("shut down during an episode")


def main(args: list[str] | None = None) -> int:
    return run_with_loop(Evaluator, lambda node: node.run(), args)


if __name__ == "__main__":
    raise SystemExit(main())
