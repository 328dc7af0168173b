"""The `twinloop` command line. Subcommands register here as their issues land."""

from __future__ import annotations

import argparse
import sys

from twinloop import __version__, convert_command, dataset_command, record_command, sim_command
from twinloop.graph_spec import SpecError, apply_overrides, config_dir, load_spec, parse_override


def _cmd_launch(args: argparse.Namespace) -> int:
    from twinloop.graph_runner import run_graph

    spec = load_spec(args.spec)
    overrides = dict(parse_override(o) for o in args.set or [])
    if overrides:
        spec = apply_overrides(spec, overrides)
    print(
        f"[twinloop] graph '{spec.name}' from {spec.path}: {', '.join(n.name for n in spec.nodes)}",
        flush=True,
    )
    return run_graph(spec, timeout=args.timeout)


def _cmd_bench(args: argparse.Namespace) -> int:
    from twinloop.benchmarks.run import main as bench_main

    return bench_main(args.only, args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twinloop",
        description="Robot learning on ROS 2: MuJoCo twin, policy server, recorder and evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"twinloop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    launch = sub.add_parser(
        "launch",
        help="run a graph spec (the nodes of `ros2 launch twinloop_ros twinloop.launch.py graph:=SPEC`)",
        description=(
            "Start every node of a graph spec as its own process with the same --ros-args as ros2 launch, "
            "prefix their logs, and stop them all on Ctrl-C or when a required node exits "
            f"(exit status: that node's). Specs live in {config_dir()}."
        ),
    )
    launch.add_argument("spec", help="spec name (e.g. sim_pick) or path to a .yaml graph spec")
    launch.add_argument(
        "--set", action="append", metavar="NODE.PARAM=VALUE", help="override a node parameter (repeatable)"
    )
    launch.add_argument("--timeout", type=float, default=None, help="stop the graph after this many seconds")
    launch.set_defaults(func=_cmd_launch)

    sim_command.add_parser(sub)
    record_command.add_parser(sub)
    dataset_command.add_parser(sub)
    convert_command.add_parser(sub)

    bench = sub.add_parser("bench", help="run the benchmarks (JSON + table under benchmarks/out)")
    bench.add_argument("--only", action="append", help="run only benchmarks whose name starts with this")
    bench.add_argument("--out", default="benchmarks/out", help="output folder (default: benchmarks/out)")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (SpecError, FileNotFoundError, ValueError) as exc:
        print(f"twinloop {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
