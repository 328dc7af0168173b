"""`twinloop sim`: run the MuJoCo twin as a ROS graph, with a live mp4 preview.

The graph is the shipped `sim` spec (config/sim.yaml: the twin node and the command mux, the same nodes a
robot graph uses), with the twin's parameters set from the flags. With `--expert` the twin's scripted expert
drives the arm through `teleop/joint_trajectory` and the mux; without it the twin holds and any external
node commands it over the contract topics. `--episodes N` adds the evaluator (as in the `sim_expert` spec,
video off): it resets the twin N times with seeds SEED.. and reports the success rate, then the graph stops.
`--duration S` stops the graph cleanly after S wall seconds (exit 0 unless --episodes were still running).

Preview (on by default, `outputs/sim/preview.mp4`): the twin node itself tiles every camera frame it renders
side by side and streams it to ffmpeg as fragmented mp4 (`twinloop.preview`), so the file plays while it
grows; on Ctrl-C the node finishes the file before it exits.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

from twinloop.graph_spec import GraphSpec, NodeSpec, SpecError, apply_overrides, load_spec, parse_override

SPEC = "sim"
DEFAULT_PREVIEW = "outputs/sim/preview.mp4"
MODES = ("realtime", "lockstep")

EXAMPLES = """\
examples:
  twinloop sim                                    # SO-101 holding still; preview in outputs/sim/preview.mp4
  twinloop sim --expert --task pick_lift_cube     # the scripted expert picks up the named cube
  twinloop sim --expert --task place_cube_in_bin --mode lockstep --episodes 5 --no-preview
  twinloop sim --expert --perturb lighting --perturb blackout=0.5 --seed 3
  twinloop sim --robot panda --cameras front --duration 30
  twinloop sim --set twin.injected_latency=0.2 --set twin.camera_rate=15

Without --expert the twin holds its arm; command it from other nodes on policy/joint_trajectory or
teleop/joint_trajectory (through the command mux), like the real arm. Watch the preview while it grows,
e.g. `ffplay outputs/sim/preview.mp4` or `mpv outputs/sim/preview.mp4`.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "sim",
        help="run the MuJoCo twin (as a ROS graph) with a live mp4 preview",
        description=(
            "Run the twin node and the command mux as ROS processes (the nodes a robot graph uses) and\n"
            "stream the twin's camera frames, tiled side by side, to an mp4 that plays while it grows.\n"
            "Stop with Ctrl-C: the nodes stop in order and the preview file is finished cleanly."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--robot", default="so101", help="robot model: so101 (default) or panda")
    parser.add_argument(
        "--task",
        default="reach_cube",
        metavar="NAME",
        help="task (default: reach_cube; also pick_lift_cube, place_cube_in_bin)",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="realtime",
        help="realtime (default): sim time follows the wall clock; lockstep: the twin waits for a "
        "command at every camera frame (deterministic, as in evaluation)",
    )
    parser.add_argument("--seed", type=int, default=0, help="episode seed (with --episodes: the first one)")
    parser.add_argument(
        "--expert",
        action="store_true",
        help="the task's scripted expert drives the arm (on teleop/joint_trajectory, through the mux)",
    )
    parser.add_argument(
        "--cameras",
        default="front,wrist",
        metavar="NAMES",
        help="comma-separated cameras to render and publish (default: front,wrist; '' for none)",
    )
    parser.add_argument(
        "--perturb",
        action="append",
        metavar="NAME[=LEVEL]",
        help="a robustness perturbation, level in [0, 1] (repeatable; see twinloop.sim.perturbations)",
    )
    preview = parser.add_mutually_exclusive_group()
    preview.add_argument(
        "--preview",
        default=DEFAULT_PREVIEW,
        metavar="PATH.mp4",
        help=f"write the live preview here (default: {DEFAULT_PREVIEW}; overwritten)",
    )
    preview.add_argument("--no-preview", dest="preview", action="store_const", const="", help="no preview")
    parser.add_argument(
        "--duration", type=float, metavar="S", help="stop cleanly after S wall seconds (default: Ctrl-C)"
    )
    parser.add_argument(
        "--episodes",
        type=int,
        metavar="N",
        help="with --expert: run N expert episodes (seeds SEED..SEED+N-1), report the success rate, stop",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="NODE.PARAM=VALUE",
        help="override any node parameter, e.g. twin.camera_rate=15 (repeatable; applied last)",
    )
    parser.set_defaults(func=run)
    return parser


def _camera_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if "/" in name or "." in name or "=" in name:
            raise ValueError(f"--cameras: invalid camera name '{name}'")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"--cameras: duplicate camera(s) {', '.join(duplicates)}")
    return names


def _check_names(robot: str, task: str, perturb: list[str], expert: bool) -> None:
    """Bad robot, task, perturbation or expert: a one-line error before any process starts (the twin node
    would report the same through the registries below)."""
    from twinloop.sim.experts import expert_names
    from twinloop.sim.perturbations import Perturbations
    from twinloop.sim.robots import get_robot
    from twinloop.sim.tasks import get_task

    get_task(task, get_robot(robot))
    if perturb:
        Perturbations(tuple(perturb))
    if expert and task not in expert_names():
        raise ValueError(f"--expert: no expert for task '{task}' (have: {', '.join(expert_names())})")


def build_sim_spec(args: argparse.Namespace) -> GraphSpec:
    """The `sim` graph for the parsed flags; ValueError/SpecError with a one-line reason on bad input."""
    if args.duration is not None and not args.duration > 0:
        raise ValueError(f"--duration must be > 0 seconds, got {args.duration:g}")
    if args.episodes is not None:
        if args.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
        if not args.expert:
            raise ValueError("--episodes needs --expert (to evaluate a policy: `twinloop launch sim_pick`)")
    perturb = [p.strip() for p in args.perturb or [] if p.strip()]
    _check_names(args.robot, args.task, perturb, args.expert)
    cameras = _camera_names(args.cameras)
    preview = ""
    if args.preview:
        if not cameras:
            raise ValueError("--preview needs at least one camera (--cameras is empty); or pass --no-preview")
        if shutil.which("ffmpeg") is None:
            raise FileNotFoundError("--preview needs ffmpeg (apt-get install ffmpeg), or pass --no-preview")
        preview = str(Path(args.preview).expanduser().resolve())
    overrides = dict(parse_override(o) for o in args.set or [])

    spec = load_spec(SPEC)
    twin = {
        "mode": args.mode,
        "robot": args.robot,
        "task": args.task,
        "seed": args.seed,
        "expert": bool(args.expert),
        "cameras": cameras,
        "preview_path": preview,
    }
    if perturb:
        twin["perturb"] = perturb
    nodes = [
        dataclasses.replace(node, parameters={**node.parameters, **twin}) if node.name == "twin" else node
        for node in spec.nodes
    ]
    if "twin" not in {n.name for n in nodes}:
        raise SpecError(f"{spec.path}: the sim graph has no node 'twin'")
    if args.episodes is not None:
        nodes.append(
            NodeSpec(
                name="evaluator",
                package="twinloop_ros",
                executable="evaluator",
                required=True,
                parameters={
                    "use_sim_time": True,
                    "episodes": args.episodes,
                    "seed": args.seed,
                    "task": args.task,
                    "robot": args.robot,
                    "policy": "expert",
                    "reset_policy": False,  # no policy server in this graph
                    "video_episodes": 0,  # the preview is the video
                },
            )
        )
    spec = dataclasses.replace(spec, nodes=tuple(nodes))
    return apply_overrides(spec, overrides) if overrides else spec


def run(args: argparse.Namespace) -> int:
    from twinloop.graph_runner import run_graph

    spec = build_sim_spec(args)
    twin = next(n for n in spec.nodes if n.name == "twin").parameters
    preview = twin.get("preview_path") or ""
    print(
        f"[twinloop] sim: robot={twin['robot']} task={twin['task']} mode={twin['mode']} seed={twin['seed']} "
        f"expert={'on' if twin['expert'] else 'off'} cameras={','.join(twin['cameras']) or '-'}"
        + (f" perturb={','.join(twin['perturb'])}" if twin.get("perturb") else "")
        + f"; nodes: {', '.join(n.name for n in spec.nodes)}",
        flush=True,
    )
    if preview:
        print(f"[twinloop] preview (playable while it grows): {preview}", flush=True)
    code = run_graph(spec, timeout=args.duration)
    if code == 124 and args.episodes is None:
        code = 0  # --duration reached: the planned end of the run
    if preview and Path(preview).is_file():
        print(f"[twinloop] preview: {preview}", flush=True)
    return code
