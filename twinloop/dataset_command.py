"""`twinloop dataset info|plot|video DIR`: look at a recording made by `twinloop record`.

Reads the zarr replay buffer (`DIR/replay.zarr`, the fastest of the three formats to read); `info` also
counts what the LeRobot dataset and the MCAP bags hold, so a format that fell behind shows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from twinloop.datasets.episode import SOURCE_CODES


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("dataset", help="inspect a recording: info, plot (PNG), video (mp4)")
    actions = parser.add_subparsers(dest="action", required=True)
    info = actions.add_parser("info", help="episodes, frames, keys, success and recording quality")
    info.add_argument("path", type=Path, help="a `twinloop record` output folder")
    plot = actions.add_parser("plot", help="joint positions and actions of one episode as a PNG")
    plot.add_argument("path", type=Path)
    plot.add_argument("--episode", type=int, default=0)
    plot.add_argument("--out", type=Path, help="PNG path (default: DIR/episode_<N>.png)")
    video = actions.add_parser("video", help="one episode's camera frames, side by side, as an mp4")
    video.add_argument("path", type=Path)
    video.add_argument("--episode", type=int, default=0)
    video.add_argument("--out", type=Path, help="mp4 path (default: DIR/episode_<N>.mp4)")
    frame = actions.add_parser("frame", help="one frame of every camera, side by side, as a PNG")
    frame.add_argument("path", type=Path)
    frame.add_argument("--episode", type=int, default=0)
    frame.add_argument("--index", type=int, default=0, help="frame index in the episode (default 0)")
    frame.add_argument("--out", type=Path, help="PNG path (default: DIR/episode_<N>_frame_<K>.png)")
    parser.set_defaults(func=run)
    return parser


def _buffer(path: Path):
    from twinloop.datasets.zarr_buffer import ZarrReplayBuffer

    zarr_path = path / "replay.zarr"
    if not zarr_path.exists():
        raise ValueError(f"{path}: no replay.zarr (record with the zarr format, or point at a recording)")
    return ZarrReplayBuffer.open(zarr_path, mode="r")


def _episode_index(buffer, episode: int) -> int:
    if not 0 <= episode < buffer.n_episodes:
        raise ValueError(f"--episode {episode}: the recording has episodes 0..{buffer.n_episodes - 1}")
    return episode


def run(args: argparse.Namespace) -> int:
    path = Path(args.path).expanduser()
    buffer = _buffer(path)
    actions = {"info": _info, "plot": _plot, "video": _video, "frame": _frame}
    return actions[args.action](args, path, buffer)


def _info(args, path: Path, buffer) -> int:
    from twinloop.datasets.mcap_bag import episode_paths

    print(f"{path}: {buffer.n_episodes} episodes, {buffer.n_rows} frames")
    first = buffer.get_episode(0) if buffer.n_episodes else {}
    for key in buffer.keys:
        column = first.get(key)
        shape = "" if column is None else f" {tuple(column.shape[1:])} {column.dtype}"
        print(f"  {key}{shape}")
    bags = episode_paths(path / "mcap") if (path / "mcap").exists() else []
    lerobot = path / "lerobot" / "meta" / "info.json"
    counts = f"zarr {buffer.n_episodes}, mcap {len(bags)}"
    if lerobot.is_file():
        import json

        try:
            total = json.loads(lerobot.read_text()).get("total_episodes")
        except (ValueError, AttributeError) as exc:
            raise ValueError(f"{lerobot}: corrupt or truncated LeRobot metadata ({exc})") from None
        counts += f", lerobot {total}"
    print(f"  episodes per format: {counts}")
    for i in range(buffer.n_episodes):
        meta = buffer.meta(i)
        ticks = meta.quality.get("ticks", {})
        drops = {k: v["dropped"] for k, v in meta.quality.items() if isinstance(v, dict) and v.get("dropped")}
        print(
            f"  episode {i}: {buffer.episode_length(i)} frames at {meta.fps:g} fps, success={meta.success}, "
            f"interventions={meta.interventions}, task={meta.task!r}, "
            f"incomplete ticks={ticks.get('incomplete', 0)}" + (f", drops {drops}" if drops else "")
        )
    return 0


def _plot(args, path: Path, buffer) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    i = _episode_index(buffer, args.episode)
    data = buffer.get_episode(i, keys=["timestamp", "observation.state", "action", "command_source"])
    meta = buffer.meta(i)
    t, state, action = data["timestamp"], data["observation.state"], data["action"]
    names = meta.joint_names or [f"joint {j}" for j in range(state.shape[1])]
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.4 * len(names)), sharex=True)
    for j, ax in enumerate(np.atleast_1d(axes)):
        ax.plot(t, state[:, j], label="state")
        ax.plot(t, action[:, j], "--", label="action")
        ax.set_ylabel(names[j], fontsize=8)
        teleop = data["command_source"] == SOURCE_CODES["teleop"]
        ax.fill_between(t, 0, 1, where=teleop, transform=ax.get_xaxis_transform(), alpha=0.08, color="C2")
    np.atleast_1d(axes)[0].legend(fontsize=8, loc="upper right")
    np.atleast_1d(axes)[-1].set_xlabel("time (s); shaded: operator in control")
    fig.suptitle(f"episode {i}: {meta.task} (success={meta.success})", fontsize=10)
    fig.tight_layout()
    out = args.out or path / f"episode_{i:03d}.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    print(f"wrote {out}")
    return 0


def _camera_frames(path: Path, buffer, i: int, rows: slice | None = None) -> tuple[list[str], list]:
    """The cameras of episode i tiled side by side, one RGB image per frame."""
    from twinloop.preview import tile_frames, tile_layout

    cameras = [k for k in buffer.keys if k.startswith("observation.images.")]
    if not cameras:
        raise ValueError(f"{path}: the recording has no camera images")
    data = buffer.get_episode(i, keys=cameras)
    layout = tile_layout([(data[k].shape[2], data[k].shape[1]) for k in cameras])  # (width, height)
    indices = range(buffer.episode_length(i))[rows or slice(None)]
    return cameras, [tile_frames(layout, [data[k][n] for k in cameras]) for n in indices]


def _frame(args, path: Path, buffer) -> int:
    import cv2

    i = _episode_index(buffer, args.episode)
    length = buffer.episode_length(i)
    if not 0 <= args.index < length:
        raise ValueError(f"--index {args.index}: episode {i} has frames 0..{length - 1}")
    cameras, frames = _camera_frames(path, buffer, i, slice(args.index, args.index + 1))
    out = args.out or path / f"episode_{i:03d}_frame_{args.index:04d}.png"
    cv2.imwrite(str(out), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))
    print(f"wrote {out} ({', '.join(c.split('.')[-1] for c in cameras)})")
    return 0


def _video(args, path: Path, buffer) -> int:
    from twinloop.sim.evaluation import write_video

    i = _episode_index(buffer, args.episode)
    cameras, frames = _camera_frames(path, buffer, i)
    out = args.out or path / f"episode_{i:03d}.mp4"
    write_video(frames, Path(out), buffer.meta(i).fps)
    print(f"wrote {out} ({len(frames)} frames: {', '.join(c.split('.')[-1] for c in cameras)})")
    return 0
