"""Speed of the MuJoCo twin: physics through Twin.step next to a bare mj_step loop, RTF, render fps."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from twinloop.benchmarks.common import entry, progress

PREFIX = "twin"


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


def bench_twin(seconds: float = 2.0, render_seconds: float = 2.0) -> list[dict]:
    """Physics steps/s through `Twin.step` and through a bare `mj_step` loop, the RTF, and render fps.

    `seconds` is the wall time spent on each physics loop, `render_seconds` the time spent rendering.
    Both loops run on the twin's own model and data, the arm holding its home pose.
    """
    if seconds <= 0 or render_seconds <= 0:
        raise ValueError("bench_twin: seconds and render_seconds must be > 0")
    os.environ.setdefault("MUJOCO_GL", "egl")  # as twin.py does; must precede the first mujoco import
    from twinloop.sim.twin import Twin  # noqa: I001  (import order matters: MUJOCO_GL first)

    import mujoco

    progress("twin: building Twin() (default config)")
    twin = Twin()
    try:
        targets, _, _ = twin.joint_state()
        substeps = twin.substeps
        desc = f"{twin.config.robot}/{twin.config.task}, timestep {twin.model.opt.timestep * 1e3:g} ms"

        def twin_step() -> None:
            twin.step(targets)

        for _ in range(50):  # warm-up: caches, contacts settled
            twin_step()

        progress(f"twin.step: Twin.step ({substeps} physics steps per call) for {seconds:g} s")
        sim_t0 = twin.time
        calls, elapsed = _timed_loop(twin_step, seconds, batch=100)
        sim_elapsed = twin.time - sim_t0
        twin_rate = calls * substeps / elapsed
        rtf = sim_elapsed / elapsed

        model, data = twin.model, twin.data

        def bare_step() -> None:
            mujoco.mj_step(model, data)

        progress(f"twin.bare_mj_step: mujoco.mj_step(model, data) loop for {seconds:g} s")
        bare_calls, bare_elapsed = _timed_loop(bare_step, seconds, batch=500)
        bare_rate = bare_calls / bare_elapsed

        cam = twin.camera("front")
        progress(f"twin.render: twin.render('front') {cam.width}x{cam.height} for {render_seconds:g} s")
        render_error = None
        try:
            for _ in range(2):  # the first call creates the GL context and uploads the model
                twin.render("front")
            frames, render_elapsed = _timed_loop(lambda: twin.render("front"), render_seconds, batch=1)
            fps = frames / render_elapsed
            render_notes = f"{frames} frames in {render_elapsed:.2f} s, MUJOCO_GL={os.environ['MUJOCO_GL']}"
        except Exception as exc:  # no GL here: keep the physics numbers, report the render as failed
            fps, render_notes = None, None
            render_error = f"render failed (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): {exc}"
            progress(f"  FAILED twin.render: {render_error}")
    finally:
        twin.close()

    cams_entry = _rtf_with_cameras(seconds)
    bare_name = f"{PREFIX}.bare_mj_step.steps_per_s"
    return [
        entry(
            f"{PREFIX}.step.physics_steps_per_s",
            twin_rate,
            "steps/s",
            baseline=bare_name,
            notes=f"Twin.step x{calls} = {calls * substeps} physics steps in {elapsed:.2f} s; {desc}",
        ),
        entry(
            bare_name,
            bare_rate,
            "steps/s",
            notes=f"one mujoco.mj_step per Python call, {bare_calls} steps in {bare_elapsed:.2f} s",
        ),
        entry(
            f"{PREFIX}.step.real_time_factor",
            rtf,
            "x",
            notes=f"sim seconds per wall second through Twin.step ({sim_elapsed:.1f} s sim)",
        ),
        entry(
            f"{PREFIX}.render.front_{cam.width}x{cam.height}.fps",
            fps,
            "fps",
            notes=render_notes,
            error=render_error,
        ),
        cams_entry,
    ]


def _rtf_with_cameras(seconds: float, size: int = 128, rate: float = 10.0) -> dict:
    """Real-time factor of physics plus two size x size cameras (front, wrist) rendered at `rate` Hz."""
    from twinloop.sim.scene import CameraConfig, wrist_camera
    from twinloop.sim.twin import Twin, TwinConfig

    cameras = (CameraConfig(width=size, height=size), wrist_camera("so101", width=size, height=size))
    twin = Twin(TwinConfig(cameras=cameras))
    name = f"{PREFIX}.two_cameras_{size}x{size}_at_{rate:g}hz.real_time_factor"
    progress(f"{name}: Twin.step with front + wrist rendered every {1 / rate:g} s sim, for {seconds:g} s")
    try:
        targets = twin.joint_state()[0]
        for cam in cameras:  # GL context and model upload outside the timing
            twin.render(cam.name)
        ticks_per_frame = max(1, round(1.0 / (rate * twin.control_period)))
        tick = 0

        def body() -> None:
            nonlocal tick
            if tick % ticks_per_frame == 0:
                for cam in cameras:
                    twin.render(cam.name)
            twin.step(targets)
            tick += 1

        sim_t0 = twin.time
        calls, elapsed = _timed_loop(body, seconds, batch=ticks_per_frame)
        rtf = (twin.time - sim_t0) / elapsed
    finally:
        twin.close()
    return entry(
        name,
        rtf,
        "x",
        notes=f"{calls // ticks_per_frame} frames per camera in {elapsed:.2f} s; issue 3 target >= 3x",
    )
