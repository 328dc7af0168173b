"""Speed of the MuJoCo twin in-process: physics through Twin.step and through the twin node's control tick
next to a bare mj_step loop, RTF with cameras, render fps (each render figure for the default
`render_quality` "fast" next to "full", the MJCF's own meshes)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from twinloop.benchmarks.common import entry, progress

PREFIX = "twin"
BARE = f"{PREFIX}.bare_mj_step.steps_per_s"
ROUNDS = 6  # side-by-side rounds of every timed group (see _interleaved)
# (width, height, rate, what the value means) of the two-camera (front + wrist) real-time-factor entries
CAMERA_CASES = (
    (128, 128, 10.0, "issue 3 target >= 3x"),
    (640, 480, 30.0, "> 1: real time is within reach in-process (over ROS: twin_node.realtime_*)"),
)


def names() -> tuple[tuple[str, str], ...]:
    """(name, unit) of every entry bench_twin produces, in order."""
    out = [
        (f"{PREFIX}.step.physics_steps_per_s", "steps/s"),
        (BARE, "steps/s"),
        (f"{PREFIX}.step.real_time_factor", "x"),
        (f"{PREFIX}.control_tick.physics_steps_per_s", "steps/s"),
        (f"{PREFIX}.render.front_320x240.fps", "fps"),
        (f"{PREFIX}.render.front_320x240.full.fps", "fps"),
    ]
    for width, height, rate, _ in CAMERA_CASES:
        out.append((_cameras_name(width, height, rate, "fast"), "x"))
        out.append((_cameras_name(width, height, rate, "full"), "x"))
    return tuple(out)


def _cameras_name(width: int, height: int, rate: float, quality: str) -> str:
    middle = "" if quality == "fast" else f".{quality}"
    return f"{PREFIX}.two_cameras_{width}x{height}_at_{rate:g}hz{middle}.real_time_factor"


def _timed_loop(body: Callable[[], None], seconds: float, batch: int) -> tuple[int, float]:
    """Run `body` in batches until at least `seconds` of wall time passed; (calls, elapsed seconds)."""
    calls = 0
    t0 = time.perf_counter()
    while True:
        for _ in range(batch):
            body()
        calls += batch
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return calls, elapsed


def _interleaved(
    loops: dict[str, tuple[Callable[[], None], int]], seconds: float, rounds: int = ROUNDS
) -> dict[str, tuple[int, float]]:
    """Time several loops side by side: `rounds` rounds, each running every loop for seconds/rounds in
    turn (the order alternating), so load from other processes on this shared machine hits all of them
    alike. `loops`: name -> (body, batch). Returns name -> (calls, elapsed seconds) summed over rounds."""
    totals = {name: (0, 0.0) for name in loops}
    names_in_order = list(loops)
    for r in range(rounds):
        for name in names_in_order if r % 2 == 0 else names_in_order[::-1]:
            body, batch = loops[name]
            calls, elapsed = _timed_loop(body, seconds / rounds, batch)
            totals[name] = (totals[name][0] + calls, totals[name][1] + elapsed)
    return totals


def bench_twin(seconds: float = 2.0, render_seconds: float = 2.0) -> list[dict]:
    """Physics steps/s through `Twin.step`, through the twin node's control tick and through a bare
    `mj_step` loop, the RTF, render fps, and the RTF with two cameras; every group timed side by side.

    `seconds` is the wall time spent on each physics loop, `render_seconds` on each render loop. The
    physics loops run on one twin's own model and data, the arm holding its home pose.
    """
    if seconds <= 0 or render_seconds <= 0:
        raise ValueError("bench_twin: seconds and render_seconds must be > 0")
    os.environ.setdefault("MUJOCO_GL", "egl")  # as twin.py does; must precede the first mujoco import
    from twinloop.sim.twin import Twin, TwinConfig  # noqa: I001  (import order matters: MUJOCO_GL first)

    import mujoco

    progress("twin: building Twin() (default config)")
    twin = Twin()
    try:
        targets, _, _ = twin.joint_state()
        substeps = twin.substeps
        desc = f"{twin.config.robot}/{twin.config.task}, timestep {twin.model.opt.timestep * 1e3:g} ms"
        model, data = twin.model, twin.data

        def twin_step() -> None:
            twin.step(targets)

        def bare_step() -> None:
            mujoco.mj_step(model, data)

        tick, tick_batch, tick_notes = _control_tick(twin)
        for _ in range(50):  # warm-up: caches, contacts settled
            twin_step()
            tick()
        progress(
            f"twin.step, twin.bare_mj_step, twin.control_tick: Twin.step ({substeps} physics steps per "
            f"call), mujoco.mj_step(model, data), the twin node's control tick; {seconds:g} s each, "
            "side by side"
        )
        timed = _interleaved(
            {"step": (twin_step, 100), "bare": (bare_step, 500), "tick": (tick, tick_batch)}, seconds
        )
        (calls, elapsed), (bare_calls, bare_elapsed), (ticks, tick_elapsed) = (
            timed[k] for k in ("step", "bare", "tick")
        )
        twin_rate = calls * substeps / elapsed
        rtf = calls * twin.control_period / elapsed
        bare_rate = bare_calls / bare_elapsed
        tick_rate = ticks * substeps / tick_elapsed

        full = Twin(TwinConfig(render_quality="full"))
        try:
            render_entries = _render_fps({"fast": twin, "full": full}, render_seconds)
        finally:
            full.close()
    finally:
        twin.close()

    cams_entries = []
    for width, height, rate, target in CAMERA_CASES:
        cams_entries += _rtf_with_cameras(seconds, width, height, rate, target)
    return [
        entry(
            f"{PREFIX}.step.physics_steps_per_s",
            twin_rate,
            "steps/s",
            baseline=BARE,
            notes=f"Twin.step x{calls} = {calls * substeps} physics steps in {elapsed:.2f} s; {desc}",
        ),
        entry(
            BARE,
            bare_rate,
            "steps/s",
            notes=f"one mujoco.mj_step per Python call, {bare_calls} steps in {bare_elapsed:.2f} s",
        ),
        entry(
            f"{PREFIX}.step.real_time_factor",
            rtf,
            "x",
            notes=f"sim seconds per wall second through Twin.step ({calls * twin.control_period:.1f} s sim)",
        ),
        entry(
            f"{PREFIX}.control_tick.physics_steps_per_s",
            tick_rate,
            "steps/s",
            baseline=BARE,
            notes=(
                f"{ticks} ticks x {substeps} physics steps in {tick_elapsed:.2f} s: {tick_notes}; overhead "
                f"vs bare mj_step {bare_rate / tick_rate:.2f}x (issue 3 target <= 1.3)"
            ),
        ),
        *render_entries,
        *cams_entries,
    ]


def _control_tick(twin) -> tuple[Callable[[], None], int, str]:
    """The twin node's per-tick work without rendering and without DDS: (body, batch, description).

    Per control tick, as in twin_node.run: the /clock and joint_states messages built, the executor's
    setpoint, Twin.step; the tactile images (50 Hz) and the success check (10 Hz) at their rates; and,
    every camera period (10 Hz), a command arriving (JointTrajectory -> chunk -> executor.submit).
    """
    import numpy as np
    from rosgraph_msgs.msg import Clock

    from twinloop.hardware.executor import TrajectoryChunk, TrajectoryExecutor
    from twinloop_ros.conversions import (
        chunk_to_trajectory,
        numpy_to_image,
        numpy_to_joint_state,
        seconds_to_stamp,
        trajectory_to_chunk,
    )

    executor = TrajectoryExecutor(twin.joint_names, twin.limits, command_timeout=0.5)
    executor.reset(twin.joint_state()[0])
    hold = np.stack([twin.joint_state()[0]] * 2)
    command = chunk_to_trajectory(TrajectoryChunk(twin.joint_names, 0.0, np.array([0.0, 1.0]), hold))
    period = twin.control_period
    per_camera, per_tactile, per_success = (max(1, round(1.0 / (hz * period))) for hz in (10, 50, 10))
    tick = 0
    sink: list = []  # the messages live on like a publish would keep them until sent

    def body() -> None:
        nonlocal tick
        now = twin.time
        if tick % per_camera == 0:
            command.header.stamp = seconds_to_stamp(now)
            executor.submit(trajectory_to_chunk(command), now)
        sink.append(Clock(clock=seconds_to_stamp(now)))
        pos, vel, effort = twin.joint_state()
        sink.append(numpy_to_joint_state(twin.joint_names, pos, vel, effort, stamp=now))
        if tick % per_tactile == 0:
            for pad in twin.tactile_names:
                sink.append(numpy_to_image(twin.tactile(pad), "32FC1", stamp=now, frame_id=pad))
        if tick % per_success == 0:
            sink.append(twin.success())
        twin.step(executor.step(twin.time))
        tick += 1
        if len(sink) > 64:
            sink.clear()

    notes = (
        "Clock + JointState messages built, executor.step, Twin.step; tactile images (50 Hz), success "
        "(10 Hz), one command through trajectory_to_chunk + executor.submit per 0.1 s"
    )
    return body, per_camera, notes


def _render_fps(twins: dict, seconds: float) -> list[dict]:
    """twin.render('front') fps per render quality, side by side; the default's baseline is "full"."""
    cam = twins["fast"].camera("front")
    names = {
        "fast": f"{PREFIX}.render.front_{cam.width}x{cam.height}.fps",
        "full": f"{PREFIX}.render.front_{cam.width}x{cam.height}.full.fps",
    }
    progress(
        f"{names['fast']}, {names['full']}: twin.render('front') {cam.width}x{cam.height}, render_quality "
        f"fast and full, {seconds:g} s each, side by side"
    )
    try:
        for twin in twins.values():  # the first call creates the GL context and uploads the model
            for _ in range(2):
                twin.render("front")
        timed = _interleaved({q: ((lambda t=t: t.render("front")), 1) for q, t in twins.items()}, seconds)
    except Exception as exc:  # no GL here: keep the physics numbers, report the render as failed
        error = f"render failed (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): {exc}"
        progress(f"  FAILED twin.render: {error}")
        return [entry(name, None, "fps", error=error) for name in names.values()]
    out = []
    for quality in ("fast", "full"):
        frames, elapsed = timed[quality]
        triangles = _drawn_triangles(twins[quality].model)
        out.append(
            entry(
                names[quality],
                frames / elapsed,
                "fps",
                baseline=names["full"] if quality == "fast" else None,
                notes=(
                    f"{frames} frames in {elapsed:.2f} s, MUJOCO_GL={os.environ['MUJOCO_GL']}, "
                    f"render_quality {quality} ({triangles:,} mesh triangles drawn)"
                ),
            )
        )
    return out


def _drawn_triangles(model) -> int:
    """Triangles of the mesh geoms a camera draws (geom groups 0-2, MuJoCo's default)."""
    import mujoco

    drawn = (model.geom_group < 3) & (model.geom_type == mujoco.mjtGeom.mjGEOM_MESH)
    return int(model.mesh_facenum[model.geom_dataid[drawn]].sum())


def _rtf_with_cameras(seconds: float, width: int, height: int, rate: float, target: str) -> list[dict]:
    """Real-time factor of physics plus two cameras (front, wrist) rendered every 1/`rate` s of sim time,
    for render_quality "fast" (the default) and "full" side by side; the default's baseline is "full"."""
    from twinloop.sim.scene import CameraConfig, wrist_camera
    from twinloop.sim.twin import Twin, TwinConfig

    cameras = (
        CameraConfig(width=width, height=height),
        wrist_camera("so101", width=width, height=height),
    )
    names = {q: _cameras_name(width, height, rate, q) for q in ("fast", "full")}
    progress(
        f"{names['fast']}, {names['full']}: Twin.step with front + wrist rendered every {1 / rate:.3g} s "
        f"sim, {seconds:g} s each, side by side"
    )
    twins = {q: Twin(TwinConfig(cameras=cameras, render_quality=q)) for q in ("fast", "full")}
    try:
        loops = {}
        ticks_per_frame = max(1, round(1.0 / (rate * twins["fast"].control_period)))
        for quality, twin in twins.items():
            targets = twin.joint_state()[0]
            for cam in cameras:  # GL context and model upload outside the timing
                twin.render(cam.name)

            def body(twin=twin, targets=targets) -> None:
                for cam in cameras:
                    twin.render(cam.name)
                for _ in range(ticks_per_frame):
                    twin.step(targets)

            loops[quality] = (body, 1)
        timed = _interleaved(loops, seconds)
        period = twins["fast"].control_period
    finally:
        for twin in twins.values():
            twin.close()
    out = []
    for quality in ("fast", "full"):
        frames, elapsed = timed[quality]
        out.append(
            entry(
                names[quality],
                frames * ticks_per_frame * period / elapsed,
                "x",
                baseline=names["full"] if quality == "fast" else None,
                notes=(
                    f"render_quality {quality}: {frames} frames per camera in {elapsed:.2f} s "
                    f"({frames / elapsed:.1f} per s), one per {ticks_per_frame} control ticks; {target}"
                ),
            )
        )
    return out
