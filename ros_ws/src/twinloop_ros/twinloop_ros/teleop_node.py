"""Teleop node: a keyboard, gamepad or SpaceMouse drives the arm in Cartesian space.

Every `1/rate` s (node clock: sim time with use_sim_time) it polls the device (twinloop.hardware
.teleop_devices), integrates the twist into an end-effector target and solves IK on the robot's MuJoCo
model (twinloop.hardware.cartesian_teleop), and, only while engaged, publishes a short chunk on
`teleop/joint_trajectory` stamped now: the previous target at 0, the new one at 1/rate, and the new one
again at `chunk_hold` s. The arm moves smoothly without ever running ahead of the operator, and a chunk
that arrives late (a loaded machine, a slow network) is still executed (entered at its arrival, going
straight to the new target) instead of being rejected as entirely in the past. The command mux gives it
priority while it publishes. On engage the target re-syncs to the arm (see `sync_tolerance`), so
engaging never jumps.

Episode keys (keyboard n/x/q, gamepad Start/Back/Guide) call the recorder's std_srvs/Trigger services
when they exist: next = `recorder/stop_episode` (if one is being recorded) then `recorder/start_episode`;
discard = `recorder/discard_episode`; quit = `recorder/stop_episode`, then the node exits (status 0; a
graph spec that marks it `required` then stops the graph).

Parameters:
- `device` keyboard|gamepad|spacemouse; `device_path` ("" = the device's default: the terminal the graph
  was started from, /dev/input/js0, the first 3Dconnexion hidraw device); `robot`; `rate` (Hz, 30);
- `linear_speed` (m/s at full deflection, or per key), `angular_speed` (rad/s), `gripper_speed` (stroke
  fraction/s): 0 = the device's default; `deadzone` (fraction of full deflection);
- `workspace_min` / `workspace_max`: the box (base frame x, y, z in m) the tool stays in, default the
  robot's (twinloop.hardware.cartesian_teleop); `max_joint_speed` (rad/s, 0 = half the robot's limits);
- `engaged` (start engaged; keyboard e / SpaceMouse right button toggle it); `deadman_button` (gamepad);
  `hold_time` / `repeat_hold` (keyboard, see teleop_devices);
- `chunk_hold` (s, default 0.5): how long each chunk holds its target, i.e. the latency it tolerates;
- `sync_tolerance` (rad): engaging starts from the arm's last command on `arm_controller/joint_trajectory`
  when the measured joints are this close to it, else from the measured joints (a position-controlled
  arm sags below its setpoint under gravity; starting from the measured pose would drop it every engage).
Bad parameters or a device that cannot be opened end the node with a one-line error and exit status 2.

Run it in the terminal you type in, or give that terminal: `twinloop launch sim_teleop` finds the
terminal it was started from; elsewhere set `device_path:=$(tty)`.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from twinloop.hardware.cartesian_teleop import CartesianTeleop, Workspace, default_workspace
from twinloop.hardware.executor import TrajectoryChunk, interpolate
from twinloop.hardware.teleop_devices import (
    EVENT_DISCARD,
    EVENT_NEXT,
    EVENT_QUIT,
    KEY_MAP_HELP,
    GamepadMapping,
    GamepadReader,
    KeyboardReader,
    SpaceMouseReader,
    TeleopDevice,
    TeleopDeviceError,
)
from twinloop.sim.robots import get_robot
from twinloop_ros import qos
from twinloop_ros.conversions import chunk_to_trajectory, joint_state_to_numpy, trajectory_to_chunk
from twinloop_ros.node_main import run_with_loop

DEVICES = ("keyboard", "gamepad", "spacemouse")
# per device: linear m/s, angular rad/s, gripper stroke fraction/s, dead zone
_DEVICE_DEFAULTS = {
    "keyboard": (0.05, 0.5, 0.5, 0.0),
    "gamepad": (0.1, 0.8, 1.0, 0.15),
    "spacemouse": (0.1, 0.8, 0.5, 0.1),
}
_QUIT_WAIT_S = 40.0  # wall s that quit waits for the recorder to close the episode in progress


def find_terminal() -> str:
    """The terminal to read keys from: the controlling terminal, else the one an ancestor process reads
    (`twinloop launch` starts nodes in their own session, without a controlling terminal)."""
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
        return "/dev/tty"
    except OSError:
        pass
    pid = os.getppid()
    for _ in range(8):
        if pid <= 1:
            break
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/0")
            if re.fullmatch(r"/dev/pts/\d+|/dev/tty\d+", target):  # a terminal, never a serial port
                return target
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])  # field 4: ppid (after the command name)
        except (OSError, ValueError, IndexError):
            break
    raise TeleopDeviceError(
        "keyboard: no terminal to read keys from (no controlling terminal, none up the process tree); "
        "set device_path to one, e.g. the output of `tty` in the terminal you type in"
    )


class TeleopNode(Node):
    def __init__(self) -> None:
        super().__init__("teleop")
        p = self.declare_parameter
        self.device_name = p("device", "keyboard").value
        if self.device_name not in DEVICES:
            raise ValueError(
                f"parameter device must be one of {', '.join(DEVICES)}, got '{self.device_name}'"
            )
        linear, angular, gripper, deadzone = _DEVICE_DEFAULTS[self.device_name]
        path = p("device_path", "").value
        self.robot = get_robot(p("robot", "so101").value)
        self.rate = float(p("rate", 30.0).value)
        if not (np.isfinite(self.rate) and 0 < self.rate <= 1000):
            raise ValueError(f"parameter rate must be in (0, 1000] Hz, got {self.rate:g}")
        speeds = {}
        for name, default in (
            ("linear_speed", linear),
            ("angular_speed", angular),
            ("gripper_speed", gripper),
        ):
            value = float(p(name, 0.0).value)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"parameter {name} must be >= 0 (0: the device's default), got {value:g}")
            speeds[name] = value or default
        deadzone = float(p("deadzone", deadzone).value)
        if not 0 <= deadzone < 1:
            raise ValueError(f"parameter deadzone must be in [0, 1), got {deadzone:g}")
        workspace = self._workspace()
        max_joint_speed = float(p("max_joint_speed", 0.0).value)
        if not np.isfinite(max_joint_speed) or max_joint_speed < 0:
            raise ValueError(
                "parameter max_joint_speed must be >= 0 rad/s (0: half the robot's limits), "
                f"got {max_joint_speed:g}"
            )
        engaged = bool(p("engaged", False).value)
        deadman = int(p("deadman_button", GamepadMapping().deadman_button).value)
        hold_time = float(p("hold_time", 0.6).value)
        repeat_hold = float(p("repeat_hold", 0.12).value)
        # rad: on engage, start from the arm's last command when the measured joints are this close to it
        self.sync_tolerance = float(p("sync_tolerance", 0.1).value)
        self.chunk_hold = float(p("chunk_hold", 0.5).value)
        if not np.isfinite(self.chunk_hold) or self.chunk_hold <= 0:
            raise ValueError(f"parameter chunk_hold must be > 0 s, got {self.chunk_hold:g}")

        self.cartesian = CartesianTeleop(
            self.robot, workspace=workspace, max_joint_speed=max_joint_speed or None
        )
        self.device = self._open_device(path, speeds, deadzone, engaged, deadman, hold_time, repeat_hold)

        self.joint_names = tuple(self.robot.joint_names)
        self._measured: np.ndarray | None = None
        self._arm_command: TrajectoryChunk | None = None
        self._missing_logged = False
        self._engaged = False
        self._last_tick: float | None = None
        self._previous_q: np.ndarray | None = None
        self.published = 0
        self._episode_busy = False
        self._quit = threading.Event()
        self._quit_requested_at: float | None = None

        self.pub = self.create_publisher(JointTrajectory, "teleop/joint_trajectory", qos.COMMANDS)
        self.create_subscription(JointState, "joint_states", self._on_joint_states, qos.JOINT_STATES)
        self.create_subscription(
            JointTrajectory, "arm_controller/joint_trajectory", self._on_arm_command, qos.COMMANDS
        )
        self.clients_ = {
            name: self.create_client(Trigger, f"recorder/{name}_episode")
            for name in ("start", "stop", "discard")
        }
        self.create_timer(1.0 / self.rate, self._tick)
        box = self.cartesian.workspace
        self.get_logger().info(
            f"teleop ready: device={self.device_name} ({self.device.path}) robot={self.robot.name} "
            f"rate={self.rate:g}Hz linear={speeds['linear_speed']:g}m/s "
            f"angular={speeds['angular_speed']:g}rad/s "
            f"workspace={list(box.lower)}..{list(box.upper)}"
        )
        if self.device_name == "keyboard":
            self.get_logger().info(KEY_MAP_HELP)

    # -- configuration -----------------------------------------------------------------------------
    def _workspace(self) -> Workspace:
        """`workspace_min` / `workspace_max` (x, y, z in m, base frame); defaults: the robot's box."""
        default = default_workspace(self.robot)
        bounds = []
        for name, value in (("workspace_min", default.lower), ("workspace_max", default.upper)):
            # dynamic typing: [0, -0.3, 0] (YAML integers) is meant as metres too
            raw = self.declare_parameter(name, list(value), ParameterDescriptor(dynamic_typing=True)).value
            try:
                vec = [float(v) for v in raw if not isinstance(v, bool | str)]
            except TypeError:
                vec = []
            if isinstance(raw, str) or len(vec) != 3 or len(vec) != len(raw):
                raise ValueError(f"parameter {name} needs 3 numbers (x, y, z in m), got {raw!r}")
            bounds.append(tuple(vec))
        try:
            return Workspace(*bounds)
        except ValueError as exc:
            raise ValueError(f"parameters workspace_min/workspace_max: {exc}") from None

    def _open_device(self, path, speeds, deadzone, engaged, deadman, hold_time, repeat_hold) -> TeleopDevice:
        lin, ang, grip = speeds["linear_speed"], speeds["angular_speed"], speeds["gripper_speed"]
        if self.device_name == "keyboard":
            return KeyboardReader(
                path or find_terminal(),
                lin,
                ang,
                grip,
                hold_time=hold_time,
                repeat_hold=repeat_hold,
                engaged=engaged,
            )
        if self.device_name == "gamepad":
            mapping = GamepadMapping(deadman_button=deadman)
            return GamepadReader(path or "/dev/input/js0", lin, ang, grip, deadzone=deadzone, mapping=mapping)
        device = SpaceMouseReader(path or None, lin, ang, deadzone=deadzone)
        device.engaged = engaged
        return device

    def close(self) -> None:
        device = getattr(self, "device", None)
        if device is not None:
            device.close()  # the terminal gets its settings back

    # -- inputs ------------------------------------------------------------------------------------
    def _on_joint_states(self, msg: JointState) -> None:
        try:
            names, position, _, _ = joint_state_to_numpy(msg)
        except ValueError as exc:
            self.get_logger().error(f"ignored joint_states: {exc}")
            return
        index = {n: i for i, n in enumerate(names)}
        missing = [n for n in self.joint_names if n not in index]
        if missing:
            if not self._missing_logged:
                self._missing_logged = True
                self.get_logger().error(
                    f"joint_states lacks {missing} of robot {self.robot.name}: not moving"
                )
            return
        self._measured = position[[index[n] for n in self.joint_names]]

    def _on_arm_command(self, msg: JointTrajectory) -> None:
        with contextlib.suppress(ValueError):  # malformed: the arm's executor rejects it anyway
            chunk = trajectory_to_chunk(msg)
            if set(self.joint_names) <= set(chunk.joint_names):
                self._arm_command = chunk

    def _sync_point(self, now: float) -> np.ndarray:
        """Where engaging starts: the setpoint the arm holds (its last command, at `now`) when the measured
        joints agree with it within `sync_tolerance`, else the measured joints. The measured pose of a
        position-controlled arm sags under gravity below its setpoint; starting from it would drop the arm
        by that sag at every engage."""
        measured = self._measured
        chunk = self._arm_command
        if chunk is None:
            return measured
        setpoint = interpolate(chunk, now)[[chunk.joint_names.index(n) for n in self.joint_names]]
        if np.all(np.isfinite(setpoint)) and np.max(np.abs(setpoint - measured)) <= self.sync_tolerance:
            return setpoint
        return measured

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- the control step --------------------------------------------------------------------------
    def _tick(self) -> None:
        now = self._now()
        try:
            command = self.device.poll()
        except OSError as exc:
            self.get_logger().error(f"{self.device_name} failed: {exc}; stopping")
            self._request_quit()
            return
        for event in command.events:
            self._on_event(event)
        if command.engaged and not self._engaged:
            if self._measured is None:
                self.get_logger().warning(
                    "engaged, but no joint_states yet: waiting", throttle_duration_sec=2.0
                )
                return
            self.cartesian.reset(self._sync_point(now))
            self._previous_q = self.cartesian.q.copy()
            self._last_tick = now
            self._engaged = True
            self.get_logger().info("engaged: the arm follows the device")
        elif not command.engaged and self._engaged:
            self._engaged = False
            self.get_logger().info("disengaged: holding")
        if not self._engaged:
            return
        dt = min(max(now - (self._last_tick if self._last_tick is not None else now), 0.0), 3.0 / self.rate)
        self._last_tick = now
        q = self.cartesian.step(command, dt)
        previous = self._previous_q if self._previous_q is not None else q
        self._previous_q = q
        chunk = TrajectoryChunk(
            joint_names=self.joint_names,
            stamp=now,
            time_from_start=np.array([0.0, 1.0 / self.rate, max(self.chunk_hold, 2.0 / self.rate)]),
            positions=np.stack([previous, q, q]),
        )
        self.pub.publish(chunk_to_trajectory(chunk))
        self.published += 1

    # -- episodes ----------------------------------------------------------------------------------
    def _on_event(self, event: str) -> None:
        if event == EVENT_QUIT:
            if self._quit_requested_at is None:
                self._quit_requested_at = time.monotonic()
            self.get_logger().info("quit: closing the episode in progress (if any), then exiting")
            self._call_chain(["stop"], then=self._request_quit, quiet_failures={"stop"})
        elif event == EVENT_NEXT:
            self._call_chain(["stop", "start"], quiet_failures={"stop"})
        elif event == EVENT_DISCARD:
            self._call_chain(["discard"])

    def _call_chain(self, names: list[str], then=None, quiet_failures: frozenset | set = frozenset()) -> None:
        """Call recorder services one after the other (async: never blocks the executor), then `then`."""
        if self._episode_busy:
            self.get_logger().warning("an episode request is still running: key ignored")
            return
        unavailable = [n for n in names if not self.clients_[n].service_is_ready()]
        if unavailable:
            if then is None:
                self.get_logger().warning(
                    f"no recorder (recorder/{unavailable[0]}_episode is not available): episode key ignored"
                )
            else:
                then()
            return
        self._episode_busy = True
        pending = list(names)

        def call_next(_future=None) -> None:
            if _future is not None:
                name = done_name[0]
                try:
                    response = _future.result()
                except Exception as exc:  # noqa: BLE001 - a failed call is logged, the chain goes on
                    self.get_logger().error(f"recorder/{name}_episode failed: {exc}")
                else:
                    if response.success:
                        self.get_logger().info(f"recorder/{name}_episode: {response.message}")
                    elif name not in quiet_failures:
                        self.get_logger().warning(f"recorder/{name}_episode refused: {response.message}")
            if not pending:
                self._episode_busy = False
                if then is not None:
                    then()
                return
            done_name[0] = pending.pop(0)
            self.clients_[done_name[0]].call_async(Trigger.Request()).add_done_callback(call_next)

        done_name = [""]
        call_next()

    def _request_quit(self) -> None:
        self._quit.set()

    def wait_until_quit(self) -> int:
        """The main thread: wait for quit (key, device failure) or shutdown (Ctrl-C, SIGTERM)."""
        while self.context.ok():
            requested = self._quit_requested_at
            if self._quit.wait(timeout=0.1) or (
                requested is not None and time.monotonic() - requested > _QUIT_WAIT_S
            ):
                self.get_logger().info(f"teleop finished ({self.published} chunks published)")
                return 0
        return 0


def main(args: list[str] | None = None) -> int:
    return run_with_loop(TeleopNode, lambda node: node.wait_until_quit(), args)


if __name__ == "__main__":
    raise SystemExit(main())
