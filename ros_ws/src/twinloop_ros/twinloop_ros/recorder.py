"""Recorder node: the contract topics on a fixed-rate timeline, written as LeRobot v3, zarr and MCAP.

Subscribes (raw CDR, so the MCAP bag gets the bytes as they travelled) to `joint_states`, every camera's
`<cam>/image_raw` and `camera_info`, every `tactile/<name>/image`, `arm_controller/joint_trajectory` (the
command actually sent to the arm: the recorded action), `policy/joint_trajectory`,
`teleop/joint_trajectory`, `command_mux/source`, `policy/instruction` and `sim/success`.

Episodes: services `recorder/start_episode`, `recorder/stop_episode`, `recorder/discard_episode`
(std_srvs/Trigger). Ticks run at `fps` on the node's clock (sim time with use_sim_time); a tick is taken
once every required stream has a message stamped at or after it (or `sample_timeout` wall seconds after
the clock passed it): per stream the newest message stamped at or before the tick within its maximum
skew (twinloop.datasets.timeline). A tick without joint states or a camera frame is not written and is
counted. `stop_episode` answers once the episode is closed and staged; a worker then commits it
(twinloop.datasets.recording: atomic per format; a crash loses at most the episode in progress).

Quality: per stream rate, drops, duplicates, skew and drift are logged at the end of each episode and
stored in its metadata; a camera below `min_camera_fraction` of the recording rate is warned about.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from twinloop.datasets.episode import SOURCE_CODES, EpisodeMeta
from twinloop.datasets.recording import FORMATS, RecordingSession
from twinloop.datasets.timeline import Timeline
from twinloop.hardware.executor import interpolate
from twinloop_ros import qos
from twinloop_ros.conversions import (
    image_to_numpy,
    joint_state_to_numpy,
    seconds_to_stamp,
    stamp_to_seconds,
    trajectory_to_chunk,
)
from twinloop_ros.node_main import spin_node

_POLICY_ACTIVE_S = 1.0  # a policy chunk this recent means a policy is running (for intervention labels)


class Recorder(Node):
    def __init__(self) -> None:
        super().__init__("recorder")
        p = self.declare_parameter
        self.fps = float(p("fps", 30.0).value)
        out = p("output", "").value or f"outputs/recordings/{datetime.now():%Y%m%d-%H%M%S}"
        formats = [f for f in p("formats", list(FORMATS)).value if f]
        self.cameras = [c for c in p("cameras", ["front", "wrist"]).value or [] if c]
        self.tactile = [t for t in p("tactile", [""]).value or [] if t]
        self.robot = p("robot", "so101").value
        self.operator = p("operator", "").value
        self.default_task = p("task", "").value
        self.calibration_files = [f for f in p("calibration_files", [""]).value or [] if f]
        # wall s a tick waits for late messages once the clock has passed it
        self.sample_timeout = float(p("sample_timeout", 0.5).value)
        self.min_camera_fraction = float(p("min_camera_fraction", 0.9).value)
        joint_skew = float(p("joint_max_skew", 0.05).value)
        camera_skew = float(p("camera_max_skew", 1.5 / self.fps).value)

        self.session = RecordingSession(
            Path(out),
            self.fps,
            formats,
            resume=bool(p("resume", False).value),
            repo_id=p("repo_id", "twinloop/recording").value,
            log=self._log,
            # SVT-AV1 preset of the LeRobot videos (-1: lerobot's default; higher encodes faster)
            video_preset=None if (preset := int(p("video_preset", -1).value)) < 0 else preset,
        )
        self.timeline = Timeline(self.fps)
        self.timeline.add_stream("joints", joint_skew)
        for cam in self.cameras:
            self.timeline.add_stream(f"observation.images.{cam}", camera_skew)
        for name in self.tactile:
            self.timeline.add_stream(f"observation.tactile.{name}", camera_skew)
        # commands hold until replaced; not required (before the first command the arm holds its state)
        self.timeline.add_stream("command", 3600.0, required=False)

        self._lock = threading.Lock()
        self._closed = threading.Condition(self._lock)
        self.stop_timeout = float(p("stop_timeout", 30.0).value)  # wall s that stop_episode waits
        self.status_period = float(p("status_period", 5.0).value)  # wall s between live quality lines; 0 off
        self._last_status = time.monotonic()
        self._joint_names: list[str] = []
        self._source = "hold"
        self._instruction = self.default_task
        self._success_seen: bool | None = None
        self._last_policy = -np.inf
        self._was_intervening = False
        self._interventions = 0
        self._next_tick: float | None = None
        self._first_tick = 0.0
        self._stop_at: float | None = None
        self._ticks_written = 0
        self._ticks_missing = 0
        self._last_closed: int | None = None
        self._due_since: float | None = None

        self._progress = -np.inf
        self._newest_raw: dict[str, tuple[str, str, bytes, int]] = {}  # topic -> (topic, type, cdr, ns)
        self.pub_progress = self.create_publisher(Clock, "recorder/progress", qos.CLOCK)
        # inputs in their own group: they keep arriving while the timer writes a block of frames
        self._inputs = MutuallyExclusiveCallbackGroup()
        self._subscribe("joint_states", JointState, qos.JOINT_STATES, self._on_joints)
        for cam in self.cameras:
            self._subscribe(f"{cam}/image_raw", Image, qos.SENSOR_DATA, self._image_handler(cam))
            self._subscribe(f"{cam}/camera_info", CameraInfo, qos.LATCHED, None)
        for name in self.tactile:
            self._subscribe(f"tactile/{name}/image", Image, qos.SENSOR_DATA, self._tactile_handler(name))
        self._subscribe("arm_controller/joint_trajectory", JointTrajectory, qos.COMMANDS, self._on_command)
        self._subscribe("policy/joint_trajectory", JointTrajectory, qos.COMMANDS, self._on_policy)
        self._subscribe("teleop/joint_trajectory", JointTrajectory, qos.COMMANDS, None)
        self._subscribe("command_mux/source", String, qos.LATCHED, self._on_source)
        self._subscribe("policy/instruction", String, qos.LATCHED, self._on_instruction)
        self._subscribe("sim/success", Bool, qos.EVENTS, self._on_success)
        # services in their own group: stop waits for the timer (default group) to close the episode
        services = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "recorder/start_episode", self._on_start, callback_group=services)
        self.create_service(Trigger, "recorder/stop_episode", self._on_stop, callback_group=services)
        self.create_service(Trigger, "recorder/discard_episode", self._on_discard, callback_group=services)
        self.create_timer(1.0 / self.fps, self._on_timer)
        counts = ", ".join(f"{k} {v}" for k, v in self.session.committed().items())
        self.get_logger().info(
            f"recorder ready: {self.session.out} ({counts or 'empty'}) at {self.fps:g} fps, "
            f"cameras={self.cameras} tactile={self.tactile}"
        )

    def _log(self, text: str) -> None:
        """Commit-worker lines; the last ones arrive while the node shuts down, after rclpy's logging."""
        if self.context.ok():
            self.get_logger().info(text)
        else:
            print(f"[INFO] [recorder]: {text}", flush=True)

    # -- subscriptions -----------------------------------------------------------------------------
    def _subscribe(self, topic: str, msg_type, profile, handler) -> None:
        msgtype = f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"
        # the publisher's profile with a deep reader queue: a recorder busy for a moment (compressing a
        # block of frames) must not lose what arrives meanwhile (seen: joint_states at 60-90 of 100 Hz)
        profile = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=max(profile.depth, 500),
            reliability=profile.reliability,
            durability=profile.durability,
        )
        resolved = self.resolve_topic_name(topic)

        def callback(raw: bytes) -> None:
            t_ns = self.get_clock().now().nanoseconds
            msg = None
            if handler is not None:
                msg = deserialize_message(raw, msg_type)
                try:
                    handler(msg, t_ns * 1e-9)
                except ValueError as exc:
                    self.get_logger().error(f"{resolved}: message skipped: {exc}")
            stamp = getattr(getattr(msg, "header", None), "stamp", None)
            entry = (resolved, msgtype, bytes(raw), t_ns if stamp is None else _ns(stamp))
            with self._lock:
                self._report_progress()
                self._newest_raw[resolved] = entry
                if self.session.recording:
                    self.session.write_raw(*entry)

        self.create_subscription(msg_type, topic, callback, profile, raw=True, callback_group=self._inputs)

    def _report_progress(self) -> None:
        """Publish how far every stream has delivered (under the lock): a lockstep twin that lists
        `recorder/progress` in `lockstep_followers` waits for it instead of outrunning the recorder."""
        until = self.timeline.received_until()
        if until is not None and until > self._progress and self.context.ok():
            self._progress = until
            self.pub_progress.publish(Clock(clock=seconds_to_stamp(until)))

    def _on_joints(self, msg: JointState, _now: float) -> None:
        names, position, velocity, effort = joint_state_to_numpy(msg)
        self._joint_names = list(names)
        with self._lock:
            self.timeline.add("joints", stamp_to_seconds(msg.header.stamp), (position, velocity, effort))

    def _image_handler(self, cam: str):
        def handle(msg: Image, _now: float) -> None:
            with self._lock:
                self.timeline.add(
                    f"observation.images.{cam}", stamp_to_seconds(msg.header.stamp), image_to_numpy(msg)
                )

        return handle

    def _tactile_handler(self, name: str):
        def handle(msg: Image, _now: float) -> None:
            with self._lock:
                key = f"observation.tactile.{name}"
                self.timeline.add(key, stamp_to_seconds(msg.header.stamp), image_to_numpy(msg))

        return handle

    def _on_command(self, msg: JointTrajectory, _now: float) -> None:
        chunk = trajectory_to_chunk(msg)
        with self._lock:
            self.timeline.add("command", chunk.stamp, chunk)

    def _on_policy(self, _msg: JointTrajectory, now: float) -> None:
        self._last_policy = now

    def _on_source(self, msg: String, _now: float) -> None:
        self._source = msg.data

    def _on_instruction(self, msg: String, _now: float) -> None:
        self._instruction = msg.data

    def _on_success(self, msg: Bool, _now: float) -> None:
        with self._lock:
            if self.session.recording:
                self._success_seen = bool(msg.data) or bool(self._success_seen)

    # -- episodes ----------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _wait_for_streams(self) -> list[str]:
        """Before the first episode: wait (lock released, inputs keep arriving) until every required
        stream has delivered once, up to `stop_timeout`. Seen under load: the graph's clock ran while the
        recorder's data subscriptions were still being discovered, and episode 0 lost 48 ticks."""
        deadline = time.monotonic() + self.stop_timeout
        while True:
            with self._lock:
                silent = [
                    n for n in sorted(self.timeline.required) if self.timeline.streams[n].newest_stamp is None
                ]
            if not silent or time.monotonic() > deadline:
                return silent
            time.sleep(0.05)

    def _on_start(self, _request, response: Trigger.Response) -> Trigger.Response:
        silent = self._wait_for_streams()
        if silent:
            response.success = False
            response.message = f"no data after {self.stop_timeout:g} s from: {', '.join(silent)}"
            self.get_logger().error(f"episode not started: {response.message}")
            return response
        with self._lock:
            if self.session.recording:
                response.success, response.message = False, "an episode is already being recorded"
                return response
            meta = EpisodeMeta(
                index=0,
                fps=self.fps,
                task=self._instruction or self.default_task,
                robot=self.robot,
                joint_names=list(self._joint_names),
                operator=self.operator,
                calibration_files=list(self.calibration_files),
                started_at=datetime.now().isoformat(timespec="microseconds"),
            )
            self.session.begin(meta)
            # the bag starts with the newest message of every topic, so that it holds what the first
            # frames were sampled from (and latched state such as camera_info and the mux's source)
            for entry in sorted(self._newest_raw.values(), key=lambda e: e[3]):
                self.session.write_raw(*entry)
            self.timeline.reset_quality()
            self._next_tick = self._first_tick = self._now()
            self._stop_at = self._due_since = None
            self._success_seen = None
            self._interventions, self._was_intervening = 0, False
            self._ticks_written = self._ticks_missing = 0
        response.success = True
        response.message = f"episode {meta.index} started at t={self._next_tick:.3f}: {meta.task!r}"
        self.get_logger().info(response.message)
        return response

    def _on_stop(self, _request, response: Trigger.Response) -> Trigger.Response:
        """Answers once the episode is closed (sampled up to now and staged); its commit runs on."""
        with self._lock:
            if not self.session.recording or self._stop_at is not None:
                response.success, response.message = False, "no episode is being recorded"
                return response
            stop_at = self._stop_at = self._now()
            deadline = time.monotonic() + self.stop_timeout
            while self.session.recording and time.monotonic() < deadline:
                self._closed.wait(timeout=0.1)
            if self.session.recording:
                response.success = False
                response.message = (
                    f"the data up to t={stop_at:.3f} did not arrive within {self.stop_timeout:g} s; "
                    "the episode closes when it does"
                )
                return response
        response.success = True
        response.message = f"episode {self._last_closed} closed at t={stop_at:.3f}"
        return response

    def _on_discard(self, _request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            recording = self.session.recording
            self.session.discard()
            self._stop_at = None
        response.success = recording
        response.message = "episode discarded" if recording else "no episode is being recorded"
        self.get_logger().info(response.message)
        return response

    # -- the timeline ------------------------------------------------------------------------------
    def _on_timer(self) -> None:
        """Take every tick whose data is in: each required stream has a message at or after the tick,
        or `sample_timeout` wall seconds passed since the clock did (then missing streams count as drops).
        Waiting on arrivals rather than on the clock keeps lockstep recordings complete at any speed."""
        with self._lock:
            now, wall = self._now(), time.monotonic()
            while self.session.recording and self._next_tick is not None:
                t = self._next_tick
                if self._stop_at is not None and t > self._stop_at + 1e-9:
                    self._close_episode()
                    return
                if now < t:
                    return
                if not self.timeline.ready(t):
                    self._due_since = wall if self._due_since is None else self._due_since
                    if wall - self._due_since < self.sample_timeout:
                        return
                self._take_tick(t)
                self._due_since = None
                self._next_tick = t + 1.0 / self.fps
            if self.session.recording and wall - self._last_status >= self.status_period > 0:
                self._last_status = wall
                self._log_status()

    def _take_tick(self, t: float) -> None:
        values, missing = self.timeline.sample(t)
        if missing:
            self._ticks_missing += 1
            return
        position, velocity, effort = values["joints"]
        chunk = values.get("command")
        action = position if chunk is None else interpolate(chunk, t)
        intervening = self._source == "teleop" and self._now() - self._last_policy < _POLICY_ACTIVE_S
        if intervening and not self._was_intervening:
            self._interventions += 1
        self._was_intervening = intervening
        row = {
            "timestamp": np.float64(self._ticks_written / self.fps),
            "observation.state": position.astype(np.float32),
            "action": np.asarray(action, np.float32),
            "command_source": np.int8(SOURCE_CODES.get(self._source, 0)),
            "intervention": np.bool_(intervening),
        }
        if len(velocity):
            row["observation.velocity"] = velocity.astype(np.float32)
        if len(effort):
            row["observation.effort"] = effort.astype(np.float32)
        for key, value in values.items():
            if key.startswith("observation."):
                row[key] = value
        self.session.append(row)
        self._ticks_written += 1

    def _close_episode(self) -> None:
        duration = self._ticks_written / self.fps
        quality = self.timeline.quality(duration)
        end = self._stop_at if self._stop_at is not None else self._next_tick or self._first_tick
        quality["ticks"] = {
            # ticks from start_episode to stop_episode: written + incomplete, unless a stream stalled
            "expected": int(np.floor((end - self._first_tick) * self.fps + 1e-6)) + 1,
            "written": self._ticks_written,
            "incomplete": self._ticks_missing,
            "first_tick_ns": round(self._first_tick * 1e9),  # the tick grid, for converters of the bag
        }
        self._warn_about(quality)
        self._stop_at = self._next_tick = None
        try:
            index = self.session.end(
                success=self._success_seen,
                interventions=self._interventions,
                quality=quality,
                joint_names=list(self._joint_names),  # known once joint_states arrived
            )
        except ValueError as exc:
            self.get_logger().error(f"episode not saved: {exc}")
            return
        self._last_closed = index
        self.get_logger().info(
            f"episode {index} saved: {self._ticks_written} frames ({duration:.2f} s), "
            f"{self._ticks_missing} incomplete ticks, success={self._success_seen}, "
            f"interventions={self._interventions}"
        )

    def _log_status(self) -> None:
        """The live view of an episode: frames so far, achieved rate and drops per stream."""
        quality = self.timeline.quality(self._ticks_written / self.fps)
        parts = []
        for name, q in quality.items():
            if name == "command" or q["rate_hz"] is None:
                continue
            short = name.rsplit(".", 1)[-1]
            parts.append(
                f"{short} {q['rate_hz']:.1f} Hz" + (f" ({q['dropped']} dropped)" if q["dropped"] else "")
            )
        self.get_logger().info(
            f"recording: {self._ticks_written} frames ({self._ticks_written / self.fps:.1f} s), "
            f"{self._ticks_missing} incomplete; " + ", ".join(parts)
        )

    def _warn_about(self, quality: dict) -> None:
        for cam in self.cameras:
            rate = quality[f"observation.images.{cam}"]["rate_hz"]
            if rate is None or rate < self.min_camera_fraction * self.fps:
                self.get_logger().warning(
                    f"camera {cam}: {0 if rate is None else rate:.1f} Hz, below "
                    f"{self.min_camera_fraction:.0%} of the {self.fps:g} fps recording "
                    "(frames duplicated or dropped)"
                )

    def close(self) -> None:
        """Close a stopping episode with what has arrived, then finish the queued commits."""
        with self._lock:
            if self.session.recording and self._stop_at is not None:
                while self._next_tick is not None and self._next_tick <= self._stop_at + 1e-9:
                    self._take_tick(self._next_tick)
                    self._next_tick += 1.0 / self.fps
                self._close_episode()
        self.session.close()


def _ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def main(args: list[str] | None = None) -> int:
    return spin_node(Recorder, args, threads=3)


if __name__ == "__main__":
    raise SystemExit(main())
