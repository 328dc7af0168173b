"""Twin node: the MuJoCo twin on the same topics as the hardware drivers.

Publishes `joint_states`, `<camera>/image_raw` and `<camera>/camera_info` for every camera named in the
`cameras` parameter (each configured by `<camera>.width/.height/.fovy/.pos/.target/.body`, all rendered
at `camera_rate`), `tactile/<name>/image` (32FC1),
`sim/success` and `/clock`; with `expert: true` its scripted expert publishes on
`teleop/joint_trajectory` like an operator; executes `arm_controller/joint_trajectory` through the
shared TrajectoryExecutor; serves `sim/reset` (seed from the `seed` parameter).

Two clocks:
- realtime: sim time is pinned to wall time; stamps and /clock are wall time (like a real robot);
- lockstep: the twin publishes `/clock` and, at every camera frame, waits until a command stamped at or
  after that frame has arrived (or `lockstep_timeout` wall seconds pass). Evaluation is then
  deterministic and independent of machine speed. Followers (`lockstep_followers`: topics of
  rosgraph_msgs/Clock on which a consumer such as the recorder publishes how far it has read) hold the
  twin back too: it waits at a frame until each follower that has reported is within `follower_max_lag`
  sim seconds of it, so a loaded consumer slows the simulation instead of losing messages.

Injected latency (`injected_latency`, seconds of sim time, default 0): a chunk stamped t that arrives is
held back and handed to the executor only once sim time reaches t + injected_latency. Meanwhile the twin
keeps stepping on the previous chunk (or holds), as a real arm does while a slow model thinks, and the
executor then skips the points that are already in the past. In lockstep the arrival itself still answers
the frame. A chunk is checked on arrival exactly as the executor would check it (a rejected chunk is no
answer); one whose last point has passed by the time it is due is dropped and counted. The special value
-1 ("measured": each chunk's own measured inference time) is refused for now: chunks carry no measured
latency yet (the policy server reports latency only in aggregate on `policy/diagnostics`).

The twin starts in the episode of its `seed` parameter (with `expert: true` the expert acts from the
start); `sim/reset` starts the next one at the start of the loop's next tick, and every episode begins with
a camera frame, so lockstep episodes repeat exactly whenever the reset request arrives.

With `preview_path` set, every camera frame set is also tiled side by side into a live mp4
(twinloop.preview), finished cleanly on shutdown.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import itertools
import threading
import time

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from twinloop.hardware.executor import TrajectoryChunk, TrajectoryExecutor
from twinloop.preview import PreviewWriter
from twinloop.sim.experts import expert_chunk, get_expert
from twinloop.sim.scene import WRIST_CAMERAS, CameraConfig, front_camera, wrist_camera
from twinloop.sim.twin import Twin, TwinConfig
from twinloop_ros import qos
from twinloop_ros.conversions import (
    camera_info_from_intrinsics,
    chunk_to_trajectory,
    numpy_to_image,
    numpy_to_joint_state,
    seconds_to_stamp,
    stamp_to_seconds,
    trajectory_to_chunk,
)
from twinloop_ros.node_main import run_with_loop

# Stamps travel as integer nanoseconds while sim time accumulates float steps: compare with a tolerance.
_STAMP_TOLERANCE = 1e-6


class TwinNode(Node):
    def __init__(self) -> None:
        super().__init__("twin")
        p = self.declare_parameter
        self.mode = p("mode", "lockstep").value
        if self.mode not in ("lockstep", "realtime"):
            raise ValueError(f"parameter mode must be 'lockstep' or 'realtime', got '{self.mode}'")
        p("seed", 0)
        robot = p("robot", "so101").value
        # an empty list in a parameter file arrives untyped (None): no cameras
        names = p("cameras", ["front"]).value or []
        cameras = tuple(self._declare_camera(name, robot) for name in names)
        self.camera_rate = float(p("camera_rate", 10.0).value)
        self.lockstep_timeout = float(p("lockstep_timeout", 2.0).value)
        # lockstep: at most this many sim seconds per wall second (0 = as fast as the commander answers),
        # for subscribers that must see every message, e.g. a recorder; pacing never changes the result
        self.max_speed = float(p("max_speed", 0.0).value)
        if self.max_speed < 0:
            raise ValueError(f"parameter max_speed must be >= 0 (0: unlimited), got {self.max_speed:g}")
        followers = [t for t in p("lockstep_followers", [""]).value or [] if t]
        self.follower_max_lag = float(p("follower_max_lag", 0.3).value)
        self.success_rate = float(p("success_rate", 10.0).value)
        self.tactile_rate = float(p("tactile_rate", 50.0).value)
        # The scripted expert (privileged sim state) acts as a teleoperator: it publishes a chunk on
        # teleop/joint_trajectory at every camera frame; the command mux forwards it like any operator.
        self.expert_enabled = bool(p("expert", False).value)
        self.expert = None
        self.twin = Twin(
            TwinConfig(
                robot=robot,
                task=p("task", "reach_cube").value,
                cameras=cameras,
                control_rate=float(p("control_rate", 100.0).value),
                # [""]: a string-array default (an empty list would have no type)
                perturbations=tuple(k for k in p("perturb", [""]).value or () if k),
            )
        )
        self.cameras = cameras
        self.injected_latency = self._declare_latency()
        command_timeout = float(p("command_timeout", 0.5).value)
        self.executor_ = TrajectoryExecutor(self.twin.joint_names, self.twin.limits, command_timeout)
        # checks delayed chunks on arrival with the executor's own rules, without executing them
        self._checker = TrajectoryExecutor(self.twin.joint_names, self.twin.limits, command_timeout)
        self._delayed: list[tuple[float, int, TrajectoryChunk]] = []  # heap of (due time, arrival, chunk)
        self._arrivals = itertools.count()
        self.expired_chunks = 0

        self._lock = threading.Lock()
        self._command_arrived = threading.Condition(self._lock)
        self._latest_command_stamp = -np.inf
        # sim/reset while the loop runs: the loop resets at the start of its next tick (see _on_reset)
        self._reset_request: int | None = None
        self._reset_done = threading.Condition(self._lock)
        self._loop_running = False
        self._clock_offset = time.time() - self.twin.time if self.mode == "realtime" else 0.0
        self._start_episode(int(self.get_parameter("seed").value))

        self.pub_joints = self.create_publisher(JointState, "joint_states", qos.JOINT_STATES)
        self.pub_images = {
            cam.name: self.create_publisher(Image, f"{cam.name}/image_raw", qos.SENSOR_DATA)
            for cam in cameras
        }
        self.pub_infos = {
            cam.name: self.create_publisher(CameraInfo, f"{cam.name}/camera_info", qos.LATCHED)
            for cam in cameras
        }
        self.pub_success = self.create_publisher(Bool, "sim/success", qos.EVENTS)
        self.pub_teleop = (
            self.create_publisher(JointTrajectory, "teleop/joint_trajectory", qos.COMMANDS)
            if self.expert_enabled
            else None
        )
        self.pub_tactile = {
            name: self.create_publisher(Image, f"tactile/{name}/image", qos.SENSOR_DATA)
            for name in self.twin.tactile_names
        }
        # /clock in both modes (pinned to wall time in realtime mode), so one spec with use_sim_time: true
        # works whichever mode the twin runs in
        self.pub_clock = self.create_publisher(Clock, "/clock", qos.CLOCK)
        self.create_subscription(
            JointTrajectory, "arm_controller/joint_trajectory", self._on_command, qos.COMMANDS
        )
        self.create_service(Trigger, "sim/reset", self._on_reset)
        self._follower_progress: dict[str, float] = {}  # topic -> sim time it has read up to
        for topic in followers:
            self.create_subscription(Clock, topic, self._follower_handler(topic), qos.CLOCK)
        self._camera_info_K = {cam.name: self.twin.intrinsics(cam.name) for cam in cameras}
        self.preview = self._open_preview(p("preview_path", "").value)
        described = ", ".join(
            f"{cam.name} {cam.width}x{cam.height}" + (f" on {cam.body}" if cam.body else "")
            for cam in cameras
        )
        self.get_logger().info(
            f"twin ready: robot={self.twin.robot.name} task={self.twin.task.name} mode={self.mode} "
            f"cameras=[{described}]@{self.camera_rate:g}Hz "
            f"control={1.0 / self.twin.control_period:g}Hz"
            + (f" injected_latency={self.injected_latency:g}s" if self.injected_latency else "")
            + (f" preview={self.preview.path}" if self.preview else "")
        )

    def _declare_latency(self) -> float:
        # dynamic typing: `injected_latency: 1` or `-1` (YAML integers) are meant as seconds too
        raw = self.declare_parameter("injected_latency", 0.0, ParameterDescriptor(dynamic_typing=True)).value
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ValueError(f"parameter injected_latency must be a number of seconds, got {raw!r}")
        value = float(raw)
        if value == -1.0:
            raise ValueError(
                "parameter injected_latency -1 (measured) needs chunks that carry their measured inference "
                "time, and none do yet (the policy server reports latency only on policy/diagnostics); "
                "give a fixed latency in seconds of sim time"
            )
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"parameter injected_latency must be >= 0 seconds of sim time, got {value}")
        return value

    def _open_preview(self, path: str) -> PreviewWriter | None:
        if not path:
            return None
        if not self.cameras:
            raise ValueError("parameter preview_path: a preview needs at least one camera (cameras is empty)")
        return PreviewWriter(path, [(cam.width, cam.height) for cam in self.cameras], self.camera_rate)

    def _declare_camera(self, name: str, robot: str) -> CameraConfig:
        """One camera from the parameters `<name>.width/.height/.fovy/.pos/.target/.body`.

        Defaults: `front` is the fixed front camera, `wrist` the robot's wrist camera (scene.WRIST_CAMERAS),
        any other name starts from the front camera's pose. `body` "" means fixed in the world.
        """
        if not name or "/" in name or "." in name:
            raise ValueError(f"parameter cameras: invalid camera name '{name}'")
        base = wrist_camera(robot) if name == "wrist" and robot in WRIST_CAMERAS else front_camera(robot)
        if name == "wrist" and robot not in WRIST_CAMERAS:
            self.get_logger().warning(
                f"no default wrist camera for robot '{robot}': set wrist.body/.pos/.target, "
                "else it sits at the front camera's pose"
            )
        p = self.declare_parameter
        return CameraConfig(
            name=name,
            width=int(p(f"{name}.width", base.width).value),
            height=int(p(f"{name}.height", base.height).value),
            fovy=float(p(f"{name}.fovy", base.fovy).value),
            pos=tuple(float(v) for v in p(f"{name}.pos", list(base.pos)).value),
            target=tuple(float(v) for v in p(f"{name}.target", list(base.target)).value),
            body=p(f"{name}.body", base.body or "").value or None,
            up=base.up,
        )

    def close(self) -> None:
        """Finish the preview file, then release the renderer's GL context before the interpreter tears
        modules down."""
        preview, self.preview = getattr(self, "preview", None), None
        if preview is not None:
            try:
                preview.close()
                message = f"preview: {preview.frames_written} frames ({preview.size[0]}x{preview.size[1]})"
                if preview.frames_dropped:
                    message += f", {preview.frames_dropped} dropped (encoder behind)"
                print(f"{message} in {preview.path}", flush=True)
            except RuntimeError as exc:
                print(f"preview: {exc}", flush=True)
        self.twin.close()

    # -- time --------------------------------------------------------------------------------------
    def now(self) -> float:
        """The graph's time: sim time in lockstep, wall time (sim pinned to it) in realtime mode."""
        return self.twin.time + self._clock_offset

    # -- callbacks ---------------------------------------------------------------------------------
    def _on_command(self, msg: JointTrajectory) -> None:
        try:
            chunk = trajectory_to_chunk(msg)
        except ValueError as exc:
            self.executor_.stats.rejected += 1
            self.get_logger().error(f"rejected trajectory: {exc}")
            return
        with self._lock:
            if chunk.stamp < self._episode_start - _STAMP_TOLERANCE:
                return  # computed for a previous episode
            now = self.now()
            delayed = self.injected_latency > 0
            # with an injected latency: the executor's own check now, execution once the chunk is due
            accepted, reason = (self._checker if delayed else self.executor_).submit(chunk, now)
            if not accepted:
                if delayed:
                    self.executor_.stats.rejected += 1
                self.get_logger().error(f"rejected trajectory: {reason}")
                return  # a rejected chunk does not count as an answer in lockstep
            if delayed:
                due = chunk.stamp + self.injected_latency
                heapq.heappush(self._delayed, (due, next(self._arrivals), chunk))
                self._release_delayed(now)  # already due (a real delay beyond the injected one): in order
            self._latest_command_stamp = max(self._latest_command_stamp, chunk.stamp)
            self._command_arrived.notify_all()

    def _release_delayed(self, now: float) -> None:
        """Hand the executor every held-back chunk that is due (called under the lock, before a tick)."""
        while self._delayed and self._delayed[0][0] <= now + _STAMP_TOLERANCE:
            _, _, chunk = heapq.heappop(self._delayed)
            accepted, reason = self.executor_.submit(chunk, now)
            if not accepted:  # its last point passed while it was held back: too slow to matter
                self.expired_chunks += 1
                if self.expired_chunks in (1, 10, 100) or self.expired_chunks % 1000 == 0:
                    self.get_logger().warning(
                        f"injected latency {self.injected_latency:g} s: chunk stamped {chunk.stamp:.3f} "
                        f"expired before it took effect ({reason}; {self.expired_chunks} so far)"
                    )

    def _start_episode(self, seed: int) -> None:
        """Reset the scene with `seed`, forget commands, and (with the expert) start its demonstration."""
        self.twin.reset(seed)
        self.executor_.reset(self.twin.joint_state()[0])
        self._delayed.clear()  # chunks held back for the previous episode
        if self.expert_enabled:  # seeded by the episode: same seed, same demonstration
            self.expert = get_expert(self.twin.task.name, self.twin.robot, np.random.default_rng(seed))
            self.expert.reset(self.twin)
        self._episode_start = self.now()

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Start the next episode. While the loop runs, the reset happens at the start of its next tick, so
        an episode always begins on a tick with a camera frame, whenever the request arrives (deterministic
        in lockstep), and no frame of the old episode carries the new episode's start time (a chunk stamped
        before that start is the old episode's and is dropped)."""
        import rclpy

        seed = int(self.get_parameter("seed").value)
        with self._lock:
            done = False
            if self._loop_running:
                self._reset_request = seed
                self._command_arrived.notify_all()  # ends a lockstep wait: the reset is the answer
                while self._reset_request is not None and self._loop_running and rclpy.ok():
                    self._reset_done.wait(timeout=0.1)
                done = self._reset_request is None
            if not done:  # the loop is not running (yet, or any more): reset here
                self._reset_request = None
                self._start_episode(seed)
        self.pub_success.publish(Bool(data=False))
        response.success = True
        response.message = (
            f"seed={seed} t0={self._episode_start:.6f} instruction={self.twin.task.instruction}"
        )
        self.get_logger().info(f"reset: {response.message}")
        return response

    # -- publishing --------------------------------------------------------------------------------
    def _publish_joint_state(self, stamp: float) -> None:
        pos, vel, effort = self.twin.joint_state()
        self.pub_joints.publish(numpy_to_joint_state(self.twin.joint_names, pos, vel, effort, stamp=stamp))

    def _publish_cameras(self, stamp: float) -> list[np.ndarray]:
        images = []
        for cam in self.cameras:
            frame_id = f"{cam.name}_optical_frame"
            image = self.twin.render(cam.name)
            images.append(image)
            # camera_info first, so a consumer that sees the image already has the matching intrinsics
            self.pub_infos[cam.name].publish(
                camera_info_from_intrinsics(
                    cam.width, cam.height, self._camera_info_K[cam.name], stamp=stamp, frame_id=frame_id
                )
            )
            self.pub_images[cam.name].publish(numpy_to_image(image, "rgb8", stamp=stamp, frame_id=frame_id))
        return images

    def _write_preview(self, images: list[np.ndarray]) -> None:
        # lockstep: every frame goes into the video; realtime: never stall the physics (drops are counted)
        preview = self.preview
        if preview.write(images, block=self.mode == "lockstep") or preview.error is None:
            return
        self.preview = None  # ffmpeg died (disk full, killed): the twin runs on without a preview
        with contextlib.suppress(RuntimeError):
            preview.close(timeout=2.0)
        self.get_logger().error(f"preview stopped: {preview.error}")

    def _publish_tactile(self, stamp: float) -> None:
        for name, pub in self.pub_tactile.items():
            image = self.twin.tactile(name)  # H x W float32 taxel penetration (m)
            pub.publish(numpy_to_image(image, "32FC1", stamp=stamp, frame_id=f"tactile_{name}"))

    def _publish_clock(self) -> None:
        self.pub_clock.publish(Clock(clock=seconds_to_stamp(self.now())))

    # -- main loop ---------------------------------------------------------------------------------
    def _wait_for_peers(self, timeout: float = 30.0) -> None:
        """Lockstep: do not start the clock before a commander is connected, plus (with cameras) an image
        consumer, or with the expert, a subscriber to its teleop chunks (the mux that relays them)."""
        command_topic = self.resolve_topic_name("arm_controller/joint_trajectory")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.expert_enabled:
                inputs = self.pub_teleop.get_subscription_count() > 0
            else:
                inputs = not self.pub_images or any(
                    pub.get_subscription_count() > 0 for pub in self.pub_images.values()
                )
            if inputs and self.count_publishers(command_topic) > 0:
                time.sleep(0.5)  # let the remaining endpoints of the graph match too
                return
            time.sleep(0.05)
        self.get_logger().warning(
            f"lockstep: no commander/camera consumer after {timeout:.0f} s; starting anyway"
        )

    def run(self) -> int:
        import rclpy

        if self.mode == "lockstep":
            self._wait_for_peers()
        camera_period = 1.0 / self.camera_rate
        success_period = 1.0 / self.success_rate
        tactile_period = 1.0 / self.tactile_rate
        eps = 1e-9
        waited_out = 0
        episode = None  # the episode whose frame schedule runs: every episode starts with a camera frame
        pace: tuple[float, float] | None = None  # (sim, wall) time where max_speed pacing started
        with self._lock:
            self._loop_running = True
        try:
            while rclpy.ok():
                with self._lock:
                    if self._reset_request is not None:
                        self._start_episode(self._reset_request)
                        self._reset_request = None
                        self._reset_done.notify_all()
                    now = self.now()
                    if episode != self._episode_start:
                        episode = self._episode_start
                        next_camera = next_success = next_tactile = now
                    self._publish_clock()
                    self._publish_joint_state(now)
                    camera_due = now + eps >= next_camera
                    if camera_due:
                        images = self._publish_cameras(now)
                        if self.preview is not None:
                            self._write_preview(images)
                        if self.expert is not None:
                            # stamped on the graph's clock (wall time in realtime mode), like any operator
                            chunk = dataclasses.replace(expert_chunk(self.twin, self.expert), stamp=now)
                            self.pub_teleop.publish(chunk_to_trajectory(chunk))
                        next_camera = max(next_camera + camera_period, now)
                    if now + eps >= next_tactile:
                        self._publish_tactile(now)
                        next_tactile = max(next_tactile + tactile_period, now)
                    if now + eps >= next_success:
                        self.pub_success.publish(Bool(data=self.twin.success()))
                        next_success = now + success_period
                    if camera_due and self.mode == "lockstep":
                        waited_out += not self._wait_for_command(now, waited_out)
                        if self._follower_progress:
                            self._wait_for_followers(now)
                    if self._delayed:
                        self._release_delayed(now)
                    self.twin.step(self.executor_.step(now))
                if self.mode == "realtime":
                    delay = self.now() - time.time()
                    if delay > 0:
                        time.sleep(delay)
                elif self.max_speed > 0:
                    if pace is None or self.now() < pace[0]:  # (re)start pacing (also after a reset)
                        pace = (self.now(), time.monotonic())
                    delay = pace[1] + (self.now() - pace[0]) / self.max_speed - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
        finally:
            with self._lock:
                self._loop_running = False
                self._reset_done.notify_all()
        return 0

    def _follower_handler(self, topic: str):
        def handle(msg: Clock) -> None:
            with self._lock:
                self._follower_progress[topic] = stamp_to_seconds(msg.clock)
                self._command_arrived.notify_all()

        return handle

    def _wait_for_followers(self, now: float) -> None:
        """Lockstep (under the lock): wait until every follower that has reported is within
        `follower_max_lag` of `now`, a reset request, or `lockstep_timeout` (then step on, warned)."""
        import rclpy

        def behind() -> list[str]:
            lag = now - self.follower_max_lag - _STAMP_TOLERANCE
            return [t for t, progress in self._follower_progress.items() if progress < lag]

        deadline = time.monotonic() + self.lockstep_timeout
        while behind() and self._reset_request is None and time.monotonic() < deadline and rclpy.ok():
            self._command_arrived.wait(timeout=0.05)
        late = behind()
        if late and self._reset_request is None:
            self.get_logger().warning(
                f"lockstep: follower(s) {late} more than {self.follower_max_lag:g} s behind t={now:.3f} "
                f"after {self.lockstep_timeout} s; stepping on",
                throttle_duration_sec=5.0,
            )

    def _wait_for_command(self, now: float, waited_out: int) -> bool:
        """Lockstep barrier (under the lock): wait for a command stamped at or after the frame at `now`, a
        reset request, or `lockstep_timeout`. False if it timed out (then the executor holds)."""
        import rclpy

        deadline = time.monotonic() + self.lockstep_timeout
        while (
            self._latest_command_stamp < now - _STAMP_TOLERANCE
            and self._reset_request is None
            and time.monotonic() < deadline
            and rclpy.ok()
        ):
            self._command_arrived.wait(timeout=0.05)
        if self._latest_command_stamp >= now - _STAMP_TOLERANCE or self._reset_request is not None:
            return True
        if waited_out + 1 in (1, 10, 100) or (waited_out + 1) % 1000 == 0:
            self.get_logger().warning(
                f"lockstep: no command for t={now:.3f} within {self.lockstep_timeout} s "
                f"({waited_out + 1} times); stepping on (the executor holds)"
            )
        return False


def main(args: list[str] | None = None) -> int:
    return run_with_loop(TwinNode, lambda node: node.run(), args)


if __name__ == "__main__":
    raise SystemExit(main())
