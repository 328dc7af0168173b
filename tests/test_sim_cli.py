"""`twinloop sim`: help, one-line errors, the graph it builds, the preview layout, and real runs.

Real runs start the command inside its own network namespace through the `ros_graph` fixture
(`ros_graph(cli=["sim", ...])`), which also checks that no node process is left behind; these tests also
check for a leftover ffmpeg (the twin node's preview encoder).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from twinloop.cli import build_parser
from twinloop.preview import tile_frames, tile_layout
from twinloop.sim_command import build_sim_spec

REPO = Path(__file__).resolve().parent.parent
ERROR_PREFIX = "twinloop sim: error:"
TILED = (640, 240)  # front 320x240 + wrist 160x120 scaled to 320x240


def twinloop(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, ROS_DOMAIN_ID=str(random.randrange(1, 200)), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST"
    )
    return subprocess.run(
        [sys.executable, "-m", "twinloop.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def probe_video(path: Path) -> tuple[int, int, int]:
    """(width, height, decoded frames) of an mp4, by ffprobe; (0, 0, 0) if it cannot be read (yet)."""
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height,nb_read_frames",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    streams = json.loads(result.stdout or "{}").get("streams") if result.returncode == 0 else None
    if not streams:
        return 0, 0, 0
    s = streams[0]
    return int(s["width"]), int(s["height"]), int(s.get("nb_read_frames", 0))


def ffmpeg_processes(domain_id: int) -> list[int]:
    """ffmpeg processes started by a node of this ROS domain (the preview encoder inherits its env)."""
    from conftest import domain_processes

    return [pid for pid, args in domain_processes({domain_id}) if args and args[0].endswith(b"ffmpeg")]


def sim_args(*argv: str):
    return build_parser().parse_args(["sim", *argv])


# --- help and bad input (no processes) ------------------------------------------------------------


def test_help():
    top = twinloop("--help")
    assert top.returncode == 0 and "sim" in top.stdout, top.stderr
    result = twinloop("sim", "--help")
    assert result.returncode == 0, result.stderr
    for flag in (
        "--robot",
        "--task",
        "--mode",
        "--seed",
        "--expert",
        "--cameras",
        "--perturb",
        "--preview",
        "--no-preview",
        "--duration",
        "--episodes",
        "--set",
    ):
        assert flag in result.stdout, flag
    assert "outputs/sim/preview.mp4" in result.stdout  # the documented default


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--robot", "ur5"], "unknown robot 'ur5' (known: panda, so101)"),
        (["--task", "juggle"], "unknown task 'juggle'"),
        (["--perturb", "gravity"], "unknown perturbation 'gravity'"),
        (["--episodes", "2"], "--episodes needs --expert"),
        (["--expert", "--episodes", "0"], "--episodes must be >= 1"),
        (["--duration", "0"], "--duration must be > 0"),
        (["--cameras", ""], "--preview needs at least one camera"),
        (["--cameras", "front,front"], "duplicate camera(s) front"),
        (["--set", "ghost.rate=3"], "no node 'ghost'"),
        (["--set", "twin_rate=3"], "NODE.PARAM=VALUE"),
    ],
)
def test_bad_input_is_a_one_line_error(argv, needle):
    result = twinloop("sim", *argv)
    lines = result.stderr.splitlines()
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), result.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert "[twinloop] sim:" not in result.stdout  # nothing was started


# --- the graph the flags build ------------------------------------------------------------------------


def test_default_graph_is_the_twin_in_realtime_with_a_preview_and_the_mux():
    spec = build_sim_spec(sim_args())
    nodes = {n.name: n for n in spec.nodes}
    assert list(nodes) == ["twin", "command_mux"] and all(n.required for n in spec.nodes)
    twin = nodes["twin"].parameters
    assert (twin["mode"], twin["robot"], twin["task"], twin["seed"]) == ("realtime", "so101", "reach_cube", 0)
    assert twin["expert"] is False and twin["cameras"] == ["front", "wrist"]
    assert twin["preview_path"] == str((Path.cwd() / "outputs/sim/preview.mp4").resolve())
    assert "perturb" not in twin  # the twin's own default
    assert twin["use_sim_time"] is False and nodes["command_mux"].parameters["use_sim_time"] is True


def test_flags_set_the_twin_and_add_the_evaluator(tmp_path):
    args = sim_args(
        "--robot",
        "panda",
        "--task",
        "pick_lift_cube",
        "--mode",
        "lockstep",
        "--seed",
        "7",
        "--expert",
        "--cameras",
        "front",
        "--perturb",
        "lighting",
        "--perturb",
        "blackout=0.5",
        "--preview",
        str(tmp_path / "p.mp4"),
        "--episodes",
        "3",
        "--set",
        "twin.camera_rate=5",
        "--set",
        "evaluator.output_dir=/tmp/x",
    )
    nodes = {n.name: n for n in build_sim_spec(args).nodes}
    assert list(nodes) == ["twin", "command_mux", "evaluator"]
    twin = nodes["twin"].parameters
    assert (twin["robot"], twin["task"], twin["mode"], twin["seed"]) == (
        "panda",
        "pick_lift_cube",
        "lockstep",
        7,
    )
    assert twin["expert"] is True and twin["cameras"] == ["front"]
    assert twin["perturb"] == ["lighting", "blackout=0.5"]
    assert twin["preview_path"] == str(tmp_path / "p.mp4") and twin["camera_rate"] == 5.0
    assert isinstance(twin["camera_rate"], float)  # `=5` for a double parameter: ROS would refuse an int
    evaluator = nodes["evaluator"]
    assert evaluator.required and evaluator.module == "twinloop_ros.evaluator"
    ev = evaluator.parameters
    assert (ev["episodes"], ev["seed"], ev["task"], ev["robot"], ev["policy"]) == (
        3,
        7,
        "pick_lift_cube",
        "panda",
        "expert",
    )
    assert ev["reset_policy"] is False and ev["video_episodes"] == 0 and ev["use_sim_time"] is True
    assert ev["output_dir"] == "/tmp/x"


def test_no_preview_and_no_cameras():
    twin = build_sim_spec(sim_args("--no-preview", "--cameras", "")).nodes[0].parameters
    assert twin["preview_path"] == "" and twin["cameras"] == []


# --- the preview layout -------------------------------------------------------------------------------


def test_tiles_are_side_by_side_at_the_tallest_height_and_even():
    layout = tile_layout([(320, 240), (160, 120)])
    assert (layout.width, layout.height) == TILED
    front = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    wrist = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    tiled = tile_frames(layout, [front, wrist])
    assert tiled.shape == (240, 640, 3) and tiled.dtype == np.uint8
    assert np.array_equal(tiled[:, :320], front)
    assert np.array_equal(tiled[:, 320:], np.repeat(np.repeat(wrist, 2, axis=0), 2, axis=1))  # 2x nearest
    odd = tile_layout([(161, 121)])
    assert (odd.width, odd.height) == (162, 122)  # padded for yuv420p
    assert tile_frames(odd, [np.full((121, 161, 3), 9, np.uint8)])[121].sum() == 0  # black padding
    with pytest.raises(ValueError, match="at least one camera"):
        tile_layout([])


# --- real runs ----------------------------------------------------------------------------------------


def assert_clean_exit(graph, code: int, expected: int) -> None:
    assert code == expected, graph.log
    assert "Traceback" not in graph.log, graph.log
    deadline = time.monotonic() + 10
    while ffmpeg_processes(graph.domain_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not ffmpeg_processes(graph.domain_id), "the preview's ffmpeg is still running"


@pytest.mark.ros
def test_expert_episode_in_lockstep_writes_a_complete_preview(ros_graph, tmp_path):
    preview = tmp_path / "preview.mp4"
    out = tmp_path / "eval"
    graph = ros_graph(
        cli=[
            "sim",
            "--expert",
            "--task",
            "pick_lift_cube",
            "--mode",
            "lockstep",
            "--episodes",
            "1",
            "--preview",
            str(preview),
            "--set",
            f"evaluator.output_dir={out}",
        ]
    )
    assert_clean_exit(graph, graph.wait(timeout=240), 0)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["task"], summary["policy"], summary["episodes"], summary["successes"]) == (
        "pick_lift_cube",
        "expert",
        1,
        1,
    )
    width, height, frames = probe_video(preview)
    assert (width, height) == TILED
    # lockstep never drops a frame: one per camera frame (10 Hz) for at least the episode
    assert frames >= 10 * summary["per_episode"][0]["duration_s"], frames
    assert f"preview: {frames} frames (640x240) in {preview}" in graph.log
    assert "[command_mux]: source: teleop" in graph.log


@pytest.mark.ros
def test_preview_plays_while_it_grows_and_ctrl_c_finishes_it(ros_graph, tmp_path):
    """Realtime (the default), the twin holding: the file is readable mid-run; SIGINT ends it cleanly."""
    preview = tmp_path / "live.mp4"
    graph = ros_graph(cli=["sim", "--preview", str(preview)])
    deadline = time.monotonic() + 120
    growing = 0
    while growing < 20 and time.monotonic() < deadline:  # two one-second fragments at 10 Hz
        assert graph.process.poll() is None, graph.log
        time.sleep(1.0)
        growing = probe_video(preview)[2] if preview.exists() else 0
    assert growing >= 20, f"preview not readable while running ({growing} frames)\n{graph.log}"
    graph.process.send_signal(signal.SIGINT)
    assert_clean_exit(graph, graph.wait(timeout=60), 130)
    width, height, frames = probe_video(preview)
    assert (width, height) == TILED and frames >= growing
    assert "SIGINT: stopping graph" in graph.log


@pytest.mark.ros
def test_duration_stops_cleanly_with_exit_0(ros_graph, tmp_path):
    preview = tmp_path / "short.mp4"
    graph = ros_graph(
        cli=["sim", "--expert", "--cameras", "front", "--duration", "12", "--preview", str(preview)]
    )
    assert_clean_exit(graph, graph.wait(timeout=120), 0)
    width, height, frames = probe_video(preview)
    assert (width, height) == (320, 240) and frames > 0
    assert "[command_mux]: source: teleop" in graph.log  # the expert drove the arm in realtime mode
