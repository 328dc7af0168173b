"""`twinloop convert SRC DST --to lerobot|zarr|mcap`: a recording in another of the three formats.

SRC is a `twinloop record` folder (it picks replay.zarr, then lerobot/, then mcap/, unless --from says)
or one format's own path: a zarr replay buffer, a LeRobot v3 root, a folder of MCAP episode bags or a
single bag. DST is the new dataset itself (a zarr folder, a LeRobot root, a folder of episode bags); it
must not exist or be empty, and appears only once every episode is converted. See
`twinloop.datasets.convert` for what each direction does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("lerobot", "zarr", "mcap")

EXAMPLES = """\
examples:
  twinloop convert outputs/pick_demos outputs/pick_bags --to mcap        # replay.zarr -> MCAP bags
  twinloop convert outputs/pick_demos/mcap outputs/pick_zarr --to zarr   # bags resampled at their fps
  twinloop convert bags/ demos_lerobot --to lerobot --fps 30             # ros2 bag record output
  twinloop convert some_lerobot_root buffer.zarr --to zarr --repo-id me/demos
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "convert",
        help="convert a recording between LeRobot v3, zarr and MCAP",
        description=__doc__.split("\n\n")[1],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", type=Path, metavar="SRC", help="a recording folder or one format's path")
    parser.add_argument("dst", type=Path, metavar="DST", help="the new dataset (must not exist, or be empty)")
    parser.add_argument("--to", required=True, choices=FORMATS, help="target format")
    parser.add_argument(
        "--from",
        dest="source_format",
        choices=FORMATS,
        help="source format inside a recording folder (default: zarr, then lerobot, then mcap)",
    )
    parser.add_argument(
        "--fps",
        type=float,
        help="rate to resample MCAP bags at (default: the rate stored with each bag; "
        "required for bags not recorded by twinloop); other sources keep their rate",
    )
    parser.add_argument(
        "--repo-id",
        default="twinloop/recording",
        help="repo_id of a LeRobot output (default: twinloop/recording)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from twinloop.datasets.convert import convert, summary

    result = convert(
        args.src,
        args.dst,
        args.to,
        source_format=args.source_format,
        fps=args.fps,
        repo_id=args.repo_id,
        progress=not args.no_progress,
        log=lambda text: print(f"[twinloop] {text}", flush=True),
    )
    print(f"[twinloop] {summary(result)}", flush=True)
    return 0
