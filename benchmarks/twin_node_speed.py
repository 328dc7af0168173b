"""The twin node over real ROS 2: lockstep throughput without cameras, and real-time mode with cameras.

Process layout of one case (all started by this module, all cleaned up by it), isolated from the network
like image_transport: a fresh network namespace (`unshare -n`, loopback up),
`ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`, a random `ROS_DOMAIN_ID`, and the environment `twinloop launch`
gives its nodes (the project's Fast DDS profile, malloc tuning):

    bench runner (run_case)
      unshare -n sh -c 'ip link set lo up && exec python -m twinloop.benchmarks.twin_node_speed group ...'
        group: starts the two processes below, samples the twin's CPU time, stops the twin with SIGINT
          twin: python -m twinloop_ros.twin_node --ros-args ... (the command line twinloop launch uses)
          probe: `commander` (lockstep) or `cameras` (realtime), writes one RESULT_MARKER line

- lockstep, `cameras: []`: the twin waits at every camera period (camera_rate 10 Hz = every 10 control
  ticks) for a command stamped at or after that time. The commander answers each of those /clock ticks
  at once with a hold-position chunk (2 points), like a policy that takes no time. Throughput = sim time
  advanced on /clock per wall second, in physics steps (timestep 2 ms).
- realtime, two cameras (front + wrist): the subscriber counts the images of each camera that arrive
  (complete, rgb8) per wall second and reads the real-time factor off /clock (sim time pinned to wall
  time: 1.0 means the twin keeps up).
Both measure over `seconds` after a warm-up that starts once the first message (tick or image) arrived.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from twinloop.benchmarks.common import entry, percentile, progress
from twinloop.benchmarks.image_transport import (
    _DDS_ENV,
    RESULT_MARKER,
    _read_result,
    _stop,
    _tail,
    netns_available,
    run_isolated,
)

PREFIX = "twin_node"
TIMESTEP = 0.002  # s, TwinConfig's default (the twin node does not change it)
BARE = "twin.bare_mj_step.steps_per_s"


@dataclass(frozen=True)
class NodeCase:
    mode: str  # "lockstep" (no cameras, a commander) | "realtime" (cameras, a subscriber)
    seconds: float = 5.0  # measured window
    warmup: float = 1.0  # s after the first tick/image before the window opens
    width: int = 640
    height: int = 480
    camera_rate: float = 30.0  # Hz; lockstep: the barrier rate (the twin node's camera_rate)
    cameras: tuple[str, ...] = ("front", "wrist")
    robot: str = "so101"
    start_timeout: float = 90.0  # s for the twin to come up and the first message to arrive

    @property
    def label(self) -> str:
        if self.mode == "lockstep":
            return f"{PREFIX}.lockstep_no_cameras"
        return f"{PREFIX}.realtime_{self.width}x{self.height}_at_{self.camera_rate:g}hz"

    def check(self) -> None:
        if self.mode not in ("lockstep", "realtime"):
            raise ValueError(f"mode must be 'lockstep' or 'realtime', got {self.mode!r}")
        if self.seconds <= 0 or self.warmup < 0 or self.camera_rate <= 0:
            raise ValueError("seconds and camera_rate must be > 0, warmup >= 0")
        if self.mode == "realtime" and not self.cameras:
            raise ValueError("realtime case: name at least one camera")

    @property
    def timeout(self) -> float:
        return self.start_timeout + self.warmup + self.seconds + 40.0

    def twin_parameters(self) -> dict[str, Any]:
        if self.mode == "lockstep":
            return {"mode": "lockstep", "robot": self.robot, "cameras": [], "camera_rate": self.camera_rate}
        params: dict[str, Any] = {
            "mode": "realtime",
            "robot": self.robot,
            "cameras": list(self.cameras),
            "camera_rate": self.camera_rate,
        }
        for cam in self.cameras:
            params[cam] = {"width": self.width, "height": self.height}
        return params


def lockstep_names() -> list[tuple[str, str]]:
    return [(f"{NodeCase('lockstep').label}.physics_steps_per_s", "steps/s")]


def realtime_names(case: NodeCase | None = None) -> list[tuple[str, str]]:
    case = case or NodeCase("realtime")
    return [(f"{case.label}.{cam}_hz", "Hz") for cam in case.cameras] + [
        (f"{case.label}.real_time_factor", "x")
    ]


# ----------------------------------------------------------------------------------------------------
# bench-runner side
# ----------------------------------------------------------------------------------------------------
def bench_lockstep(seconds: float = 5.0) -> list[dict]:
    case = NodeCase("lockstep", seconds=seconds, camera_rate=10.0, cameras=())
    progress(
        f"{case.label}: twin node (lockstep, cameras: []) + a commander answering every 0.1 s sim tick, "
        f"{seconds:g} s measured"
    )
    return summarize(case, run_case(case))


def bench_realtime(
    seconds: float = 10.0, width: int = 640, height: int = 480, camera_rate: float = 30.0
) -> list[dict]:
    case = NodeCase("realtime", seconds=seconds, width=width, height=height, camera_rate=camera_rate)
    progress(
        f"{case.label}: twin node (realtime, front + wrist {width}x{height} at {camera_rate:g} Hz) + an "
        f"image subscriber, {seconds:g} s measured"
    )
    return summarize(case, run_case(case))


def node_environment(domain_id: int, log_dir: Path) -> dict[str, str]:
    """What `twinloop launch` gives its nodes, confined to this machine and one random domain."""
    from twinloop.graph_spec import ros_environment

    env = dict(os.environ)
    for key in _DDS_ENV:
        env.pop(key, None)
    env = ros_environment(env)
    env.update(
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=str(domain_id),
        ROS_LOG_DIR=str(log_dir),
        HF_HUB_OFFLINE="1",
    )
    return env


def run_case(case: NodeCase) -> dict[str, Any]:
    """Run one twin + probe group and return its raw results ({"probe": ..., "twin_cpu": ..., ...})."""
    case.check()
    use_netns, why_not = netns_available()
    with tempfile.TemporaryDirectory(prefix="twinloop-bench-twin-") as tmp:
        workdir = Path(tmp)
        domain_id = random.SystemRandom().randint(1, 100)
        env = node_environment(domain_id, workdir / "ros_log")
        cfg = {**asdict(case), "workdir": str(workdir)}
        inner = [sys.executable, "-m", "twinloop.benchmarks.twin_node_speed", "group", json.dumps(cfg)]
        result = run_isolated(inner, env, workdir, "group", case.label, case.timeout, use_netns)
    result["netns"] = use_netns
    return result


def _cpu_share(samples: list[list[float]], start: float, end: float) -> float | None:
    """Cores the twin process used between wall times `start` and `end` (from (wall, cpu s) samples)."""
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def summarize(case: NodeCase, result: dict[str, Any]) -> list[dict]:
    """The bench.json entries of one case from its raw results."""
    probe = result["probe"]
    cpu = _cpu_share(result.get("twin_cpu", []), *probe.get("window", (0.0, 0.0)))
    where = "netns" if result.get("netns") else "no netns"
    cpu_note = f"twin node process {cpu:.2f} cores" if cpu is not None else "twin node CPU n/a"
    if case.mode == "lockstep":
        rtf = probe.get("rtf")
        steps = None if rtf is None else rtf / TIMESTEP
        notes = (
            f"{probe.get('sim_seconds', 0):.1f} s sim in {probe.get('wall_seconds', 0):.1f} s "
            f"(RTF {rtf or 0:.1f}), {probe.get('ticks', 0)} /clock ticks, {probe.get('answers', 0)} "
            f"barriers answered ({probe.get('late_answers', 0)} only after a stall); {cpu_note}; {where}; "
            "ratio = this / bare mj_step, issue 3 target: bare / this <= 1.3"
        )
        ((name, unit),) = lockstep_names()
        return [entry(name, steps, unit, baseline=BARE, notes=notes)]
    rates = probe.get("rates", {})
    rtf = probe.get("rtf")
    common = (
        f"{probe.get('wall_seconds', 0):.1f} s window, realtime mode, {case.width}x{case.height} rgb8 "
        f"at {case.camera_rate:g} Hz per camera; {cpu_note}; {where}"
    )
    out = []
    for (name, unit), cam in zip(realtime_names(case)[:-1], case.cameras, strict=True):
        stats = rates.get(cam, {})
        notes = (
            f"{stats.get('frames', 0)} complete frames (target {case.camera_rate:g} Hz), "
            f"{stats.get('bad', 0)} malformed; stamp-to-arrival p50 "
            f"{stats.get('latency_p50_ms') or float('nan'):.1f} ms, p99 "
            f"{stats.get('latency_p99_ms') or float('nan'):.1f} ms; {common}"
        )
        out.append(entry(name, stats.get("hz"), unit, notes=notes))
    name, unit = realtime_names(case)[-1]
    lag = probe.get("lag_s")
    notes = (
        f"{rtf if rtf is not None else float('nan'):.4f} sim seconds on /clock per wall second (1.0 = "
        "keeping up; target 1.0x); wall - sim at the end "
        f"{lag if lag is not None else float('nan'):.3f} s; {common}"
    )
    out.append(entry(name, rtf, unit, notes=notes))
    return out


# ----------------------------------------------------------------------------------------------------
# processes inside the namespace
# ----------------------------------------------------------------------------------------------------
def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(RESULT_MARKER + json.dumps(payload) + "\n")
    sys.stdout.flush()


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _role_group(cfg: dict[str, Any]) -> int:
    from twinloop.graph_spec import NodeSpec, params_yaml, ros_args

    case = NodeCase(**{k: tuple(v) if k == "cameras" else v for k, v in cfg.items() if k != "workdir"})
    workdir = Path(cfg["workdir"])
    node = NodeSpec(
        name="twin", package="twinloop_ros", executable="twin_node", parameters=case.twin_parameters()
    )
    params = workdir / "twin.params.yaml"
    params.write_text(params_yaml(node))
    files = {role: (workdir / f"{role}.out", workdir / f"{role}.err") for role in ("twin", "probe")}
    commands = {
        "twin": [sys.executable, "-m", node.module, *ros_args(node, params)],
        "probe": [sys.executable, "-m", "twinloop.benchmarks.twin_node_speed", "probe", json.dumps(cfg)],
    }
    procs: dict[str, subprocess.Popen] = {}

    def failure(role: str, what: str) -> int:
        out, err = files[role]
        print(f"{role}: {what}\n{_tail(err) or _tail(out) or '(no output)'}", file=sys.stderr, flush=True)
        return 1

    try:
        for role in ("twin", "probe"):
            out, err = files[role]
            with open(out, "wb") as fout, open(err, "wb") as ferr:
                procs[role] = subprocess.Popen(
                    commands[role], cwd=workdir, stdin=subprocess.DEVNULL, stdout=fout, stderr=ferr
                )
        twin, probe = procs["twin"], procs["probe"]
        cpu: list[list[float]] = []
        deadline = time.monotonic() + case.timeout - 20.0
        while probe.poll() is None:
            if twin.poll() is not None:
                return failure("twin", f"twin node exited early with status {twin.returncode}")
            if time.monotonic() > deadline:
                return failure("probe", "probe did not finish in time")
            seconds = _cpu_seconds(twin.pid)
            if seconds is not None:
                cpu.append([time.time(), seconds])
            time.sleep(0.1)
        if probe.returncode != 0:
            return failure("probe", f"probe exited with status {probe.returncode}")
        result = _read_result(files["probe"][0])
        if result is None:
            return failure("probe", "no result line")
        _emit({"probe": result, "twin_cpu": cpu})
        return 0
    finally:
        for role in ("probe", "twin"):
            if role in procs and procs[role].poll() is None:
                procs[role].send_signal(2)  # SIGINT: the node shuts down cleanly
                try:
                    procs[role].wait(timeout=10.0)
                except subprocess.TimeoutExpired:
                    _stop(procs[role], group=False)


def _window(first: float, case: NodeCase) -> tuple[float, float]:
    return first + case.warmup, first + case.warmup + case.seconds


def _clock_rate(clock: list[tuple[float, float]], start: float, end: float) -> dict[str, Any]:
    """Sim seconds per wall second over the (wall, sim) samples inside [start, end]."""
    inside = [c for c in clock if start <= c[0] <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return {"rtf": None, "sim_seconds": 0.0, "wall_seconds": 0.0, "ticks": len(inside)}
    sim = inside[-1][1] - inside[0][1]
    wall = inside[-1][0] - inside[0][0]
    return {"rtf": sim / wall, "sim_seconds": sim, "wall_seconds": wall, "ticks": len(inside)}


def _role_probe(cfg: dict[str, Any]) -> int:
    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image
    from trajectory_msgs.msg import JointTrajectory

    from twinloop.hardware.executor import TrajectoryChunk
    from twinloop.sim.robots import get_robot, home_array
    from twinloop_ros import qos
    from twinloop_ros.conversions import chunk_to_trajectory, stamp_to_seconds

    case = NodeCase(**{k: tuple(v) if k == "cameras" else v for k, v in cfg.items() if k != "workdir"})
    robot = get_robot(case.robot)
    hold = np.stack([home_array(robot)] * 2)
    period = 1.0 / case.camera_rate
    clock: list[tuple[float, float]] = []  # (wall time.time(), sim seconds)
    frames: dict[str, list[tuple[float, float, bool]]] = {c: [] for c in case.cameras}
    state = {"next_due": -np.inf, "answered": -np.inf, "answers": 0, "late": 0}
    expected = case.width * case.height * 3

    rclpy.init()
    try:
        node = rclpy.create_node("bench_twin_probe")
        commands = node.create_publisher(JointTrajectory, "arm_controller/joint_trajectory", qos.COMMANDS)

        def answer(t: float) -> None:
            chunk = TrajectoryChunk(robot.joint_names, t, np.array([0.0, 0.5]), hold)
            commands.publish(chunk_to_trajectory(chunk))
            state["answered"] = t
            state["answers"] += 1

        def on_clock(msg: Clock) -> None:
            t = stamp_to_seconds(msg.clock)
            clock.append((time.time(), t))
            # the twin's barriers: every camera period of sim time from its first tick (twin_node.run)
            if case.mode == "lockstep" and t + 1e-6 >= state["next_due"]:
                answer(t)
                state["next_due"] = t + period

        def on_stall() -> None:
            # a barrier this commander did not predict: the clock stopped, so answer its last tick
            stalled = case.mode == "lockstep" and clock and time.time() - clock[-1][0] > 0.1
            if stalled and state["answered"] < clock[-1][1]:
                answer(clock[-1][1])
                state["late"] += 1

        node.create_subscription(Clock, "/clock", on_clock, qos.CLOCK)
        node.create_timer(0.02, on_stall)
        for cam in case.cameras:

            def on_image(msg: Image, cam: str = cam) -> None:
                now = time.time()
                stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                ok = len(msg.data) == expected and msg.encoding == "rgb8"
                frames[cam].append((now, (now - stamp) * 1e3, ok))

            node.create_subscription(Image, f"{cam}/image_raw", on_image, qos.SENSOR_DATA)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        start_deadline = time.time() + case.start_timeout
        first = None
        while True:
            executor.spin_once(timeout_sec=0.01)
            now = time.time()
            if first is None:
                ready = all(frames.values()) if case.mode == "realtime" else bool(clock)
                if ready:
                    first = now
                elif now > start_deadline:
                    print(f"nothing arrived within {case.start_timeout:g} s", file=sys.stderr, flush=True)
                    return 3
            elif now > _window(first, case)[1]:
                break
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown()

    start, end = _window(first, case)
    result: dict[str, Any] = {"window": [start, end], **_clock_rate(clock, start, end)}
    result["answers"], result["late_answers"] = state["answers"], state["late"]
    if clock:
        result["lag_s"] = clock[-1][0] - clock[-1][1] if case.mode == "realtime" else None
    rates = {}
    for cam, got in frames.items():
        inside = [f for f in got if start <= f[0] <= end]
        good = [f for f in inside if f[2]]
        latencies = [f[1] for f in good]
        rates[cam] = {
            "frames": len(good),
            "bad": len(inside) - len(good),
            "hz": len(good) / case.seconds,
            "latency_p50_ms": percentile(latencies, 50),
            "latency_p99_ms": percentile(latencies, 99),
        }
    result["rates"] = rates
    _emit(result)
    return 0


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="internal: processes of the twin node benchmarks")
    parser.add_argument("role", choices=("group", "probe"))
    parser.add_argument("config", help="JSON object (NodeCase fields plus workdir)")
    args = parser.parse_args(argv)
    cfg = json.loads(args.config)
    return {"group": _role_group, "probe": _role_probe}[args.role](cfg)


if __name__ == "__main__":
    sys.exit(_main())
