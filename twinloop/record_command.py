"""`twinloop record`: collect demonstrations into LeRobot v3, zarr and MCAP.

On the twin (the default) it runs the shipped `sim_record` graph: the twin with its scripted expert as
the operator (teleop -> command mux -> arm), the recorder, and the evaluator, which runs the episodes
(reset with seeds SEED.., success or time limit) and tells the recorder when each starts and stops. The
graph stops after the last episode, once the recorder has committed everything.

On a robot, `--spec` names a graph spec with a `recorder` node next to the drivers and the teleop source;
episodes are then started and stopped with the recorder's services (`recorder/start_episode`,
`recorder/stop_episode`, `recorder/discard_episode`).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from twinloop.graph_spec import GraphSpec, SpecError, apply_overrides, load_spec, parse_override

SPEC = "sim_record"
FORMATS = ("lerobot", "zarr", "mcap")

EXAMPLES = """\
examples:
  twinloop record --out outputs/pick_demos --episodes 20                  # SO-101, pick_lift_cube
  twinloop record --out outputs/place_demos --task place_cube_in_bin --robot panda --episodes 50
  twinloop record --out outputs/pick_demos --episodes 10 --resume         # append 10 more
  twinloop record --out outputs/bags --formats mcap,zarr --set twin.perturb='[lighting]'

Then: `twinloop dataset info outputs/pick_demos`, or load outputs/pick_demos/lerobot with lerobot's
LeRobotDataset(repo_id, root=...) and outputs/pick_demos/replay.zarr with zarr.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "record",
        help="record demonstrations (twin + scripted operator by default) to LeRobot v3, zarr and MCAP",
        description=__doc__.split("\n\n")[1],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created; see --resume)")
    parser.add_argument(
        "--episodes", type=int, default=10, metavar="N", help="episodes to record (default 10)"
    )
    parser.add_argument(
        "--task", default="pick_lift_cube", metavar="NAME", help="task (default pick_lift_cube)"
    )
    parser.add_argument("--robot", default="so101", help="robot model: so101 (default) or panda")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (default 0)")
    parser.add_argument(
        "--formats",
        default=",".join(FORMATS),
        metavar="LIST",
        help=f"comma-separated formats (default: {','.join(FORMATS)})",
    )
    parser.add_argument("--resume", action="store_true", help="append to the recording in --out")
    parser.add_argument("--fps", type=float, default=10.0, help="recording rate = camera rate (default 10)")
    parser.add_argument(
        "--spec", metavar="SPEC", help="a robot graph spec with a recorder node (see docstring)"
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="NODE.PARAM=VALUE",
        help="override any node parameter, e.g. twin.perturb='[lighting]' (repeatable; applied last)",
    )
    parser.set_defaults(func=run)
    return parser


def build_record_spec(args: argparse.Namespace) -> GraphSpec:
    """The recording graph for the parsed flags; ValueError/SpecError with a one-line reason on bad input."""
    from twinloop.sim.experts import expert_names
    from twinloop.sim.robots import get_robot
    from twinloop.sim.tasks import get_task

    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    if not args.fps > 0:
        raise ValueError(f"--fps must be > 0, got {args.fps:g}")
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"--formats: unknown {unknown or 'none given'} (choose from {', '.join(FORMATS)})")
    out = Path(args.out).expanduser().resolve()
    if out.exists() and any(p.name != ".staging" for p in out.iterdir()) and not args.resume:
        raise ValueError(
            f"--out {out} already holds a recording: add --resume to append, or pick a new folder"
        )
    overrides = dict(parse_override(o) for o in args.set or [])
    spec = load_spec(args.spec or SPEC)
    if "recorder" not in {n.name for n in spec.nodes}:
        raise SpecError(f"{spec.path}: no node named 'recorder' in this graph")
    recorder = {"output": str(out), "formats": formats, "resume": bool(args.resume), "fps": args.fps}
    if args.spec is None:  # the twin with its expert as operator
        robot = get_robot(args.robot)
        get_task(args.task, robot)
        if args.task not in expert_names():
            raise ValueError(
                f"--task: no scripted operator for '{args.task}' (have: {', '.join(expert_names())})"
            )
        tactile = [pad.name for pad in robot.tactile]
        recorder.update(robot=args.robot, tactile=tactile or [""])
        per_node = {
            "twin": {"robot": args.robot, "task": args.task, "seed": args.seed, "camera_rate": args.fps},
            "recorder": recorder,
            "evaluator": {
                "episodes": args.episodes,
                "seed": args.seed,
                "task": args.task,
                "robot": args.robot,
            },
        }
    else:
        per_node = {"recorder": recorder}
    nodes = tuple(
        dataclasses.replace(node, parameters={**node.parameters, **per_node.get(node.name, {})})
        for node in spec.nodes
    )
    spec = dataclasses.replace(spec, nodes=nodes)
    return apply_overrides(spec, overrides) if overrides else spec


def run(args: argparse.Namespace) -> int:
    from twinloop.graph_runner import run_graph

    spec = build_record_spec(args)
    recorder = next(n for n in spec.nodes if n.name == "recorder").parameters
    print(
        f"[twinloop] record: {args.episodes} episode(s) of {args.task} on {args.robot} "
        f"-> {recorder['output']} ({', '.join(recorder['formats'])}); "
        f"nodes: {', '.join(n.name for n in spec.nodes)}",
        flush=True,
    )
    code = run_graph(spec)
    print(f"[twinloop] recording in {recorder['output']}", flush=True)
    return code
