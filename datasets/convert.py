"""Converting recordings between the three formats: LeRobot v3, the zarr replay buffer and MCAP bags.

Every conversion runs episode by episode through a staged episode (`twinloop.datasets.episode`): the
source's episode is read into an `EpisodeBuffer`, and the target's writer commits the `StagedEpisode`,
exactly as the recorder does. So a converted dataset is laid out as a recorded one, with the same
column names, dtypes and per-episode metadata (task, success, joint names, seed, interventions,
quality...).

Per direction:
- zarr -> staged: the episode's rows, read in blocks (nothing else to do: the same columns).
- LeRobot -> staged: non-video columns from the dataset's parquet (through lerobot's `LeRobotDataset`),
  videos decoded with lerobot's `decode_video_frames` at the frames' timestamps (uint8, as encoded:
  lossy, see PSNR in the tests), `timestamp` as i / fps, metadata from our sidecar
  (`meta/twinloop_episodes.jsonl`) or, for datasets we did not write, from lerobot's own metadata.
- staged -> MCAP: the contract topics, synthesized as rosbag2 messages (rosbags' CDR serializer), one
  bag per episode, stamped with the episode timestamps (t = 0 at the first frame, as the twin's sim time,
  or the recorder's first tick when its metadata has it):
  `/joint_states` (JointState: position, velocity, effort), `/<cam>/image_raw` (Image rgb8),
  `/tactile/<name>/image` (Image 32FC1 for taxel grids, rgb8 for vision-based sensors),
  `/arm_controller/joint_trajectory` (one point, the action, due one frame after the stamp),
  `/command_mux/source` (String, whenever the source changes) and, while a policy runs (source `policy`,
  or an intervention), `/policy/joint_trajectory` (the recorder labels interventions from it). The
  EpisodeMeta JSON goes into metadata.yaml's custom_data, as the recorder stores it. Columns that no
  contract topic carries are refused (convert those datasets to zarr or LeRobot).
- MCAP -> staged: the bag's messages resampled onto the fixed-rate timeline with the recorder's rules
  (`twinloop.datasets.timeline`): per stream the newest message stamped at or before the tick within its
  maximum skew (joint states 50 ms, cameras and tactile 1.5 frames), a tick missing joint states or an
  image is skipped, the action is the newest `arm_controller` chunk interpolated at the tick (the joint
  positions before the first one), the source is the newest `command_mux/source` message, an
  intervention is the source `teleop` with a `policy/joint_trajectory` message less than 1 s old; a
  malformed message is skipped (and reported), as the recorder does. Ticks start once every required
  stream has a message (the latest first stamp) and run while every required stream has a message at or
  after them, so they can differ from the recorder's at the episode's edges (the bag also holds what
  arrived just before the start and after the stop). `command_mux/source` and `policy/instruction` are
  latched, published on change: a bag without them keeps the values of the previous bag converted.
  Works for bags recorded by twinloop (namespaced topics too) and for plain `ros2 bag record` bags of the
  contract topics (then `--fps` is needed, and the metadata is rebuilt from the bag: task from
  `policy/instruction`, success from `sim/success`).

The output is built in a hidden folder next to the destination and renamed into place at the end, so a
failed or interrupted conversion leaves no half-written dataset. Bad input (missing folder, not a
recording, corrupt or truncated files) raises a one-line ValueError naming the file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from twinloop.datasets.episode import SOURCE_CODES, EpisodeBuffer, EpisodeMeta, StagedEpisode
from twinloop.datasets.timeline import Timeline

FORMATS = ("lerobot", "zarr", "mcap")
RECORDING_LAYOUT = {"zarr": "replay.zarr", "lerobot": "lerobot", "mcap": "mcap"}  # `twinloop record`
SOURCE_PREFERENCE = ("zarr", "lerobot", "mcap")  # lossless and frame-exact first
DEFAULT_REPO_ID = "twinloop/recording"
BLOCK = 32  # rows read per block: memory stays O(block), not O(episode)

# The recorder's sampling rules (ros_ws/src/twinloop_ros/twinloop_ros/recorder.py defaults).
JOINT_MAX_SKEW_S = 0.05
CAMERA_MAX_SKEW_FRAMES = 1.5
POLICY_ACTIVE_S = 1.0  # a policy chunk this recent means a policy is running (intervention labels)
LOW_RATE_HISTORY_S = 1e9  # keep every message of the sparse streams (source, policy, commands)

JOINT_COLUMNS = ("observation.state", "observation.velocity", "observation.effort")
FIXED_COLUMNS = {"timestamp", "action", "command_source", "intervention", *JOINT_COLUMNS}
IMAGE_PREFIX = "observation.images."
TACTILE_PREFIX = "observation.tactile."
SOURCE_NAMES = {code: name for name, code in SOURCE_CODES.items()}

JOINT_STATE = "sensor_msgs/msg/JointState"
IMAGE = "sensor_msgs/msg/Image"
TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
STRING = "std_msgs/msg/String"
BOOL = "std_msgs/msg/Bool"

Log = Callable[[str], None]


@dataclasses.dataclass
class Source:
    """What `detect` found: one format's data at `path` (of the recording folder `recording`, if any)."""

    format: str
    path: Path
    recording: Path | None = None


@dataclasses.dataclass
class ConvertResult:
    source: Source
    target: str
    output: Path
    episodes: int
    frames: int
    seconds: float


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# -- finding the source ---------------------------------------------------------------------------------


def _is_zarr(path: Path) -> bool:
    return (path / "zarr.json").exists() and ((path / "data").is_dir() or (path / "meta").is_dir())


def _is_lerobot(path: Path) -> bool:
    return (path / "meta" / "info.json").exists()


_BAG_DIR = re.compile(r"^episode_\d{6,}$")


def _is_bag(path: Path) -> bool:
    return (path / "metadata.yaml").exists() or any(path.glob("*.mcap"))


def _is_mcap_root(path: Path) -> bool:
    return any(p.is_dir() and _BAG_DIR.match(p.name) for p in path.iterdir())


def _format_of(path: Path) -> str | None:
    """The format of a single-format path, or None."""
    if _is_zarr(path):
        return "zarr"
    if _is_lerobot(path):
        return "lerobot"
    if _is_bag(path) or _is_mcap_root(path):
        return "mcap"
    return None


def detect(
    path: str | Path,
    source_format: str | None = None,
    target: str | None = None,
    resample: bool = False,
) -> Source:
    """The data to convert at `path`: a `twinloop record` folder (replay.zarr, lerobot/, mcap/), or one
    format's own path (a zarr replay buffer, a LeRobot root, an MCAP bag folder or a folder of bags).

    In a recording folder holding several formats, `source_format` picks one; otherwise the first of
    zarr, lerobot, mcap that is not `target` (lossless and frame-exact first), or with `resample` (a
    new rate asked for) the MCAP bags, the only source that is resampled."""
    path = Path(path).expanduser()
    if source_format is not None and source_format not in FORMATS:
        raise ValueError(f"unknown source format {source_format!r} (choose from {', '.join(FORMATS)})")
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if not path.is_dir():
        raise ValueError(
            f"{path}: not a recording folder, zarr replay buffer, LeRobot dataset or MCAP bag folder"
        )
    own = _format_of(path)
    if own is not None:
        if source_format is not None and source_format != own:
            raise ValueError(f"{path}: holds {own} data, not {source_format}")
        return Source(own, path)
    present = {
        fmt: path / name
        for fmt, name in RECORDING_LAYOUT.items()
        if (path / name).is_dir() and _format_of(path / name) == fmt
    }
    if not present:
        raise ValueError(
            f"{path}: not a recording (no replay.zarr, lerobot/ or mcap/ inside) and not a zarr replay "
            "buffer, LeRobot dataset or MCAP bag folder"
        )
    if source_format is not None:
        if source_format not in present:
            raise ValueError(f"{path}: no {source_format} data in this recording (has {', '.join(present)})")
        return Source(source_format, present[source_format], path)
    preference = ("mcap", *SOURCE_PREFERENCE) if resample else SOURCE_PREFERENCE
    for fmt in preference:
        if fmt in present and fmt != target:
            return Source(fmt, present[fmt], path)
    raise ValueError(f"{path}: holds only {target} data already")


# -- the public entry point -----------------------------------------------------------------------------


def convert(
    src: str | Path,
    dst: str | Path,
    to: str,
    *,
    source_format: str | None = None,
    fps: float | None = None,
    repo_id: str = DEFAULT_REPO_ID,
    progress: bool = True,
    log: Log = print,
) -> ConvertResult:
    """Convert the recording at `src` into a new `to` dataset at `dst` (a zarr replay buffer folder, a
    LeRobot root, or a folder of MCAP episode bags). `dst` must not exist, or be an empty folder.
    `fps`: the rate MCAP bags are resampled at (default: the rate stored with each bag); other sources
    are not resampled and must already be at `fps`."""
    from tqdm import tqdm

    started = time.monotonic()
    if to not in FORMATS:
        raise ValueError(f"unknown target format {to!r} (choose from {', '.join(FORMATS)})")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps:g}")
    source = detect(src, source_format, to, resample=fps is not None)
    if source.format == to:
        raise ValueError(f"{source.path}: is {to} already")
    dst = Path(dst).expanduser()
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ValueError(f"{dst}: exists and is not empty (pick a new output folder)")
    if dst.resolve().is_relative_to(source.path.resolve()):
        raise ValueError(f"{dst}: inside the source {source.path}")
    if source.recording is not None:
        log(f"converting {source.format} data {source.path} (of the recording {source.recording})")

    dst.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{dst.name}.converting-", dir=dst.parent))
    reader: _Reader | None = None
    writer: _Writer | None = None
    try:
        reader = _open_reader(source, fps, scratch, log)
        if len(reader) == 0:
            raise ValueError(f"{source.path}: no episodes to convert")
        out = scratch / "out"
        writer = _open_writer(to, out, repo_id)
        frames = 0
        first_fps: float | None = None
        with tqdm(
            total=len(reader), desc=f"{source.format} -> {to}", unit="episode", disable=not progress
        ) as bar:
            for i in range(len(reader)):
                staged = reader.stage(i, scratch / "staging" / f"episode_{i:06d}", index=i)
                if first_fps is None:
                    first_fps = staged.meta.fps
                elif staged.meta.fps != first_fps and to == "lerobot":
                    hint = "; pass --fps" if source.format == "mcap" else ""
                    raise ValueError(
                        f"{reader.name(i)}: recorded at {staged.meta.fps:g} fps, episode 0 at "
                        f"{first_fps:g} (a LeRobot dataset has one rate{hint})"
                    )
                try:
                    writer.commit(staged)
                except ValueError as err:  # the writer names the staged copy: name the source too
                    message = _one_line(err)
                    raise ValueError(f"{reader.name(i)}: {message}") from None
                staged.delete()
                frames += len(staged)
                bar.set_postfix(frames=frames)
                bar.update()
        writer.close()
        reader.close()
        if dst.exists():
            dst.rmdir()  # empty (checked above)
        os.rename(out, dst)
    finally:
        if writer is not None:
            writer.close()
        if reader is not None:
            reader.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return ConvertResult(source, to, dst, len(reader), frames, time.monotonic() - started)


# -- readers: one format -> staged episodes ---------------------------------------------------------------


class _Reader:
    def __len__(self) -> int:
        raise NotImplementedError

    def name(self, i: int) -> str:
        """Where episode i comes from, for messages."""
        raise NotImplementedError

    def stage(self, i: int, folder: Path, index: int) -> StagedEpisode:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _open_reader(source: Source, fps: float | None, scratch: Path, log: Log) -> _Reader:
    if source.format == "zarr":
        return _ZarrReader(source.path, fps)
    if source.format == "lerobot":
        return _LeRobotReader(source.path, fps, scratch)
    return _McapReader(source.path, fps, log)


def _need_lerobot() -> None:
    import importlib.util

    if importlib.util.find_spec("lerobot") is None:
        raise ValueError("LeRobot datasets need lerobot: pip install 'twinloop[ml]'")


def _check_fps(where: str, recorded: float, fps: float | None) -> None:
    if fps is not None and float(fps) != float(recorded):
        raise ValueError(
            f"{where}: recorded at {recorded:g} fps; only MCAP bags are resampled (to --fps {fps:g})"
        )


def _stage_rows(
    folder: Path,
    meta: EpisodeMeta,
    rows: Iterator[dict[str, Any]],
    where: str,
    final_meta: Callable[[int], EpisodeMeta] | None = None,
) -> StagedEpisode:
    """Stage an episode from its rows (`final_meta(frames)`, when given, is the metadata it is finished
    with); an error names `where`, the source episode."""
    buffer = EpisodeBuffer(folder, meta)
    try:
        for row in rows:
            buffer.append(row)
        if buffer.length == 0:
            raise ValueError("no frames")
        updates = dataclasses.asdict(final_meta(buffer.length)) if final_meta is not None else {}
        return buffer.finish(**updates)
    except ValueError as err:
        buffer.discard()
        message = _one_line(err)
        raise ValueError(message if where in message else f"{where}: {message}") from None
    except BaseException:
        buffer.discard()
        raise


class _ZarrReader(_Reader):
    def __init__(self, path: Path, fps: float | None) -> None:
        import zarr

        from twinloop.datasets.zarr_buffer import ZarrReplayBuffer

        self.path = path
        self.fps = fps
        self.buffer = ZarrReplayBuffer.open(path, mode="r")
        root = zarr.open_group(str(path), mode="r")
        self.arrays = {key: root[f"data/{key}"] for key in self.buffer.keys}

    def __len__(self) -> int:
        return self.buffer.n_episodes

    def name(self, i: int) -> str:
        return f"{self.path} episode {i}"

    def stage(self, i: int, folder: Path, index: int) -> StagedEpisode:
        meta = self.buffer.meta(i)
        _check_fps(self.name(i), meta.fps, self.fps)
        meta.index = index
        return _stage_rows(folder, meta, self._rows(i, meta.fps), self.name(i))

    def _rows(self, i: int, fps: float) -> Iterator[dict[str, Any]]:
        rows = self.buffer.episode_slice(i)
        for start in range(rows.start, rows.stop, BLOCK):
            stop = min(rows.stop, start + BLOCK)
            block = {}
            for key, array in self.arrays.items():
                try:
                    block[key] = np.asarray(array[start:stop])
                except Exception as err:  # codec/store errors have no common base class
                    raise ValueError(
                        f"{self.path / 'data' / key}: unreadable rows {start}-{stop - 1} ({_one_line(err)})"
                    ) from None
            if "timestamp" not in block:  # plain diffusion_policy buffers: the tick times
                block["timestamp"] = (np.arange(start, stop) - rows.start) / fps
            for j in range(stop - start):
                yield {key: column[j] for key, column in block.items()}


class _LeRobotReader(_Reader):
    def __init__(self, root: Path, fps: float | None, scratch: Path) -> None:
        from twinloop.datasets.lerobot_v3 import (
            LEROBOT_OWN,
            _datasets_cache,
            read_episode_metadata,
            verify_dataset,
        )

        _need_lerobot()
        self.root = root
        verify_dataset(root)  # every file checked: a damaged dataset is a one-line error naming the file
        self.records = {int(r["episode_index"]): r for r in read_episode_metadata(root)}
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        try:
            with _datasets_cache(scratch / "hf_cache"):  # HF datasets' arrow cache: ours, deleted after
                self.dataset = LeRobotDataset(DEFAULT_REPO_ID, root=root, download_videos=False)
        except Exception as err:
            raise ValueError(f"{root}: cannot load the LeRobot dataset ({_one_line(err)})") from None
        self.meta = self.dataset.meta
        self.fps = float(self.meta.fps)
        _check_fps(str(root), self.fps, fps)
        self.table = self.dataset.hf_dataset.with_format("numpy")
        features = self.meta.features
        self.video_keys = [k for k, ft in features.items() if ft["dtype"] == "video"]
        self.columns = {
            k: ft for k, ft in features.items() if k not in LEROBOT_OWN and ft["dtype"] != "video"
        }
        self.episodes = [self.meta.episodes[i] for i in range(self.meta.total_episodes)]

    def __len__(self) -> int:
        return len(self.episodes)

    def name(self, i: int) -> str:
        return f"{self.root} episode {i}"

    def _meta(self, i: int, index: int) -> EpisodeMeta:
        names = {f.name for f in dataclasses.fields(EpisodeMeta)}
        record = self.records.get(i)
        if record is not None:
            kwargs = {k: v for k, v in record.items() if k in names}
            kwargs.update(index=index, fps=self.fps)
            try:
                return EpisodeMeta(**kwargs)
            except TypeError as err:
                raise ValueError(
                    f"{self.root / 'meta/twinloop_episodes.jsonl'}: episode {i} ({_one_line(err)})"
                ) from None
        tasks = list(self.episodes[i].get("tasks") or [""])
        joints = (self.meta.features.get("observation.state") or {}).get("names") or []
        if isinstance(joints, dict):  # older lerobot layouts: {"motors": [...]}
            joints = next(iter(joints.values()), [])
        return EpisodeMeta(
            index=index,
            fps=self.fps,
            task=str(tasks[0]),
            robot=str(self.meta.robot_type or ""),
            joint_names=[str(n) for n in joints],
        )

    def stage(self, i: int, folder: Path, index: int) -> StagedEpisode:
        return _stage_rows(folder, self._meta(i, index), self._rows(i), self.name(i))

    def _rows(self, i: int) -> Iterator[dict[str, Any]]:
        episode = self.episodes[i]
        first, last = int(episode["dataset_from_index"]), int(episode["dataset_to_index"])
        for start in range(first, last, BLOCK):
            stop = min(last, start + BLOCK)
            try:
                table = self.table[start:stop]
            except Exception as err:
                raise ValueError(
                    f"{self.root / 'data'}: unreadable rows {start}-{stop - 1} ({_one_line(err)})"
                ) from None
            if np.any(np.asarray(table["episode_index"]) != i):
                raise ValueError(f"{self.root / 'data'}: rows {start}-{stop - 1} are not all of episode {i}")
            block: dict[str, np.ndarray] = {
                # float64 i / fps, as the recorder writes it (lerobot's own column is float32)
                "timestamp": (np.arange(start, stop) - first) / self.fps
            }
            for key, ft in self.columns.items():
                values = table[key]
                if ft["dtype"] == "image":
                    block[key] = np.stack([np.asarray(v) for v in values])
                else:
                    block[key] = np.asarray(values, dtype=np.dtype(ft["dtype"]))
            for key in self.video_keys:
                block[key] = self._frames(i, key, np.asarray(table["timestamp"], dtype=np.float64))
            for j in range(stop - start):
                yield {key: column[j] for key, column in block.items()}

    def _frames(self, i: int, key: str, stamps: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) frames of one camera at the frames' timestamps, decoded by lerobot."""
        from lerobot.datasets.video_utils import decode_video_frames

        episode = self.episodes[i]
        path = self.root / self.meta.get_video_file_path(i, key)
        shifted = [float(episode[f"videos/{key}/from_timestamp"]) + float(t) for t in stamps]
        try:
            frames = decode_video_frames(path, shifted, 1e-4, None, return_uint8=True)
        except Exception as err:
            raise ValueError(f"{path}: cannot decode frames of episode {i} ({_one_line(err)})") from None
        return frames.permute(0, 2, 3, 1).contiguous().numpy()


class _McapReader(_Reader):
    def __init__(self, path: Path, fps: float | None, log: Log) -> None:
        from twinloop.datasets.mcap_bag import bag_meta, episode_paths, read_bag

        self.path = path
        self.fps = fps
        self.log = log
        self.bags = [path] if _is_bag(path) else episode_paths(path)
        if not self.bags:
            raise ValueError(f"{path}: no finished MCAP episode bags (episode_NNNNNN/metadata.yaml)")
        self.metas = [bag_meta(bag) for bag in self.bags]  # parses each metadata.yaml: damage named here
        for bag in self.bags:  # opens each bag (its MCAP summary): a truncated one fails before any work
            read_bag(bag).close()
        self.latched: dict[str, str] = {}  # latched topics' last values, carried from bag to bag
        for bag, meta in zip(self.bags, self.metas, strict=True):
            if meta is None and fps is None:
                raise ValueError(f"{bag}: no twinloop episode metadata, so no recording rate: pass --fps")

    def __len__(self) -> int:
        return len(self.bags)

    def name(self, i: int) -> str:
        return str(self.bags[i])

    def stage(self, i: int, folder: Path, index: int) -> StagedEpisode:
        stored = self.metas[i]
        fps = float(self.fps if self.fps is not None else stored.fps)
        resampler = _Resampler(self.bags[i], fps, self.latched, _recorded_window(stored, fps))

        def final_meta(frames: int) -> EpisodeMeta:
            if stored is None:  # a bag recorded without twinloop: rebuilt from its messages
                return resampler.meta(index, frames)
            meta = dataclasses.replace(stored, index=index, fps=fps)
            meta.joint_names = meta.joint_names or list(resampler.joint_names)
            return meta

        start = EpisodeMeta(index=index, fps=fps, task="", robot="", joint_names=[])
        staged = _stage_rows(folder, start, resampler.rows(), self.name(i), final_meta)
        self.latched = resampler.latched
        if resampler.skipped:
            more = f" (and {len(resampler.skipped) - 1} more)" if len(resampler.skipped) > 1 else ""
            self.log(f"warning: skipped malformed message: {resampler.skipped[0]}{more}")
        return staged


# -- MCAP -> rows: the recorder's sampling, offline ------------------------------------------------------


def _recorded_window(meta: EpisodeMeta | None, fps: float) -> tuple[int, int | None] | None:
    """The recorder's own tick grid, when its metadata has it: `quality["ticks"]["first_tick_ns"]` (the
    first tick's time on the bag's stamp clock), with `written + incomplete` ticks at the recorded rate.
    A bag alone cannot tell it: it also holds messages from just before the start and after the stop."""
    ticks = (meta.quality.get("ticks") if meta is not None else None) or {}
    first = ticks.get("first_tick_ns") if isinstance(ticks, dict) else None
    if not isinstance(first, int) or isinstance(first, bool):
        return None
    count = ticks.get("written", 0) + ticks.get("incomplete", 0)
    same_rate = float(meta.fps) == float(fps) and isinstance(count, int) and count > 0
    return first, count if same_rate else None


_TOPIC_RULES = (  # (pattern on the topic name, message type, stream name template)
    (re.compile(r"(?:^|/)joint_states$"), JOINT_STATE, "joints"),
    (re.compile(r"(?:^|/)tactile/([^/]+)/image$"), IMAGE, TACTILE_PREFIX + "{}"),
    (re.compile(r"(?:^|/)([^/]+)/image_raw$"), IMAGE, IMAGE_PREFIX + "{}"),
    (re.compile(r"(?:^|/)arm_controller/joint_trajectory$"), TRAJECTORY, "command"),
    (re.compile(r"(?:^|/)policy/joint_trajectory$"), TRAJECTORY, "policy"),
    (re.compile(r"(?:^|/)command_mux/source$"), STRING, "source"),
    (re.compile(r"(?:^|/)policy/instruction$"), STRING, "instruction"),
    (re.compile(r"(?:^|/)sim/success$"), BOOL, "success"),
)


def _stream_of(topic: str, msgtype: str) -> str | None:
    for pattern, wanted, template in _TOPIC_RULES:
        match = pattern.search(topic)
        if match and msgtype == wanted:
            return template.format(*match.groups())
    return None


def _bag_topics(bag: Path) -> dict[str, str]:
    """{topic: message type} from a finished bag's metadata.yaml (checked by `bag_meta` before)."""
    import yaml

    path = bag / "metadata.yaml"
    try:
        info = yaml.safe_load(path.read_text())["rosbag2_bagfile_information"]
        entries = info.get("topics_with_message_count") or []
        return {str(e["topic_metadata"]["name"]): str(e["topic_metadata"]["type"]) for e in entries}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: corrupt rosbag2 metadata ({_one_line(err)})") from None


class _Resampler:
    """One bag's messages onto ticks at `fps` (see the module docstring for the rules)."""

    def __init__(
        self,
        bag: Path,
        fps: float,
        latched: dict[str, str] | None = None,
        window: tuple[int, int | None] | None = None,
    ) -> None:
        """`latched`: the last `source` and `instruction` of the previous episode's bag. Both topics are
        latched and published on change, so the bag of a later episode may not hold them at all (the
        recorder samples the value it got before); they hold from the start of the bag.
        `window`: (stamp of the first tick in ns, number of ticks or None), where the recorder stored
        its tick grid (see `_recorded_window`); otherwise the grid is found from the messages."""
        self.bag = bag
        self.fps = fps
        self.window = window
        self.timeline = Timeline(fps)
        self.topics: dict[str, str] = {}  # topic -> stream
        for topic, msgtype in _bag_topics(bag).items():
            stream = _stream_of(topic, msgtype)
            if stream is None:
                continue
            if stream in self.topics.values():
                other = next(t for t, s in self.topics.items() if s == stream)
                raise ValueError(f"{bag}: both {other} and {topic} would be {stream} (one robot per bag)")
            self.topics[topic] = stream
        streams = set(self.topics.values())
        if "joints" not in streams:
            raise ValueError(f"{bag}: no joint_states topic (sensor_msgs/msg/JointState)")
        self.timeline.add_stream("joints", JOINT_MAX_SKEW_S)
        for stream in sorted(s for s in streams if s.startswith(("observation.",))):
            self.timeline.add_stream(stream, CAMERA_MAX_SKEW_FRAMES / fps)
        for stream, skew in (("command", 3600.0), ("source", float("inf")), ("policy", POLICY_ACTIVE_S)):
            self.timeline.add_stream(stream, skew, required=False, history=LOW_RATE_HISTORY_S)
        self.latched = dict(latched or {})
        if "source" in self.latched:
            self.timeline.add("source", -np.inf, self.latched["source"])
        self.joint_names: list[str] = []
        self.instruction = self.latched.get("instruction", "")
        self.success: bool | None = None
        self.interventions = 0
        self.incomplete = 0
        self.skipped: list[str] = []  # malformed messages (one line each)

    def rows(self) -> Iterator[dict[str, Any]]:
        from twinloop.datasets.mcap_bag import read_bag

        base: int | None = None
        t0: float | None = None  # tick k is at t0 + k / fps
        k = 0
        first_tick_ns, n_ticks = self.window or (None, None)
        first_stamps: dict[str, float] = {}
        required = self.timeline.required
        written = 0
        was_intervening = False
        for topic, _msgtype, t_ns, msg in read_bag(self.bag):
            stream = self.topics.get(topic)
            if stream is None:
                continue
            if base is None:
                base = t_ns
                if first_tick_ns is not None:
                    t0 = (first_tick_ns - base) / 1e9
            received = (t_ns - base) / 1e9
            # every message logged up to `received` is in: ticks before it that are ready can be taken
            while (
                t0 is not None
                and (n_ticks is None or k < n_ticks)
                and (t := t0 + k / self.fps) < received - 1e-9
                and self.timeline.ready(t)
            ):
                row, was_intervening = self._tick(t, written, was_intervening)
                if row is not None:
                    written += 1
                    yield row
                k += 1
            header = getattr(msg, "header", None)
            stamp = received if header is None else (_ns(header.stamp) - base) / 1e9
            try:
                self._add(stream, stamp, msg, topic)
            except ValueError as err:  # as the recorder does: the message is skipped, and said so
                self.skipped.append(_one_line(err))
                continue
            if stream in required and stream not in first_stamps:
                first_stamps[stream] = stamp
                if t0 is None and set(first_stamps) == required:
                    t0 = max(first_stamps.values())  # the first tick with every stream present
        # the bag's end: ticks while every stream has data, or the recorder's remaining ticks
        while t0 is not None and (
            k < n_ticks if n_ticks is not None else self.timeline.ready(t0 + k / self.fps)
        ):
            t = t0 + k / self.fps
            row, was_intervening = self._tick(t, written, was_intervening)
            if row is not None:
                written += 1
                yield row
            k += 1
        if written == 0:
            missing = sorted(required - set(first_stamps))
            raise ValueError(
                "no complete frame"
                + (f" (no messages for {', '.join(missing)})" if missing else " (streams never overlap)")
            )

    def _add(self, stream: str, stamp: float, msg: Any, topic: str) -> None:
        where = f"{self.bag}: {topic}"
        if stream == "joints":
            names = [str(n) for n in msg.name]
            position = np.asarray(msg.position, dtype=np.float64)
            velocity = np.asarray(msg.velocity, dtype=np.float64)
            effort = np.asarray(msg.effort, dtype=np.float64)
            if len(position) != len(names) or {len(velocity), len(effort)} - {0, len(names)}:
                raise ValueError(
                    f"{where}: JointState with {len(names)} names, {len(position)} positions, "
                    f"{len(velocity)} velocities and {len(effort)} efforts"
                )
            self.joint_names = names
            self.timeline.add(stream, stamp, (names, position, velocity, effort))
        elif stream.startswith("observation."):
            self.timeline.add(stream, stamp, _image_array(msg, where))
        elif stream == "command":
            self.timeline.add(stream, stamp, _chunk(msg, stamp, where))
        elif stream == "policy":  # only its time matters: a policy is running
            self.timeline.add(stream, stamp, True)
        elif stream == "source":
            self.timeline.add(stream, stamp, str(msg.data))
            self.latched["source"] = str(msg.data)
        elif stream == "instruction":
            self.instruction = self.latched["instruction"] = str(msg.data)
        elif stream == "success":
            self.success = bool(msg.data) or bool(self.success)

    def _tick(self, t: float, written: int, was_intervening: bool) -> tuple[dict[str, Any] | None, bool]:
        """The recorder's row at tick `t` (Recorder._take_tick), None for an incomplete tick."""
        from twinloop.hardware.executor import interpolate

        values, missing = self.timeline.sample(t)
        if missing:
            self.incomplete += 1
            return None, was_intervening
        names, position, velocity, effort = values["joints"]
        chunk = values.get("command")
        action = position if chunk is None else _in_order(interpolate(chunk, t), chunk.joint_names, names)
        source = values.get("source", "hold")
        intervening = source == "teleop" and "policy" in values
        if intervening and not was_intervening:
            self.interventions += 1
        row = {
            "timestamp": np.float64(written / self.fps),
            "observation.state": position.astype(np.float32),
            "action": np.asarray(action, np.float32),
            "command_source": np.int8(SOURCE_CODES.get(source, 0)),
            "intervention": np.bool_(intervening),
        }
        if len(velocity):
            row["observation.velocity"] = velocity.astype(np.float32)
        if len(effort):
            row["observation.effort"] = effort.astype(np.float32)
        for key, value in values.items():
            if key.startswith("observation."):
                row[key] = value
        return row, intervening

    def meta(self, index: int, frames: int) -> EpisodeMeta:
        """Metadata rebuilt from the bag, for bags recorded without twinloop's."""
        quality: dict[str, Any] = {  # the recorded streams (source and policy are bookkeeping)
            name: stream.quality.summary(frames / self.fps)
            for name, stream in self.timeline.streams.items()
            if name not in ("source", "policy")
        }
        quality["ticks"] = {"written": frames, "incomplete": self.incomplete}
        return EpisodeMeta(
            index=index,
            fps=self.fps,
            task=self.instruction,
            robot="",
            joint_names=list(self.joint_names),
            success=self.success,
            interventions=self.interventions,
            quality=quality,
        )


def _ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _chunk(msg: Any, stamp: float, where: str) -> Any:
    """A JointTrajectory as the executor's TrajectoryChunk, its stamp on the bag's relative time."""
    from twinloop.hardware.executor import TrajectoryChunk

    names = tuple(str(n) for n in msg.joint_names)
    if not names or not msg.points:
        raise ValueError(f"{where}: JointTrajectory without joint names or points")
    positions = np.empty((len(msg.points), len(names)))
    times = np.empty(len(msg.points))
    for i, point in enumerate(msg.points):
        if len(point.positions) != len(names):
            raise ValueError(
                f"{where}: point {i} has {len(point.positions)} positions for {len(names)} joints"
            )
        positions[i] = point.positions
        times[i] = _ns(point.time_from_start) / 1e9
    return TrajectoryChunk(joint_names=names, stamp=stamp, time_from_start=times, positions=positions)


def _in_order(action: np.ndarray, chunk_names: tuple[str, ...], state_names: list[str]) -> np.ndarray:
    """The action in the joint-state order when the chunk lists the same joints in another order."""
    if list(chunk_names) == list(state_names) or sorted(chunk_names) != sorted(state_names):
        return action
    position = {name: j for j, name in enumerate(chunk_names)}
    return action[[position[name] for name in state_names]]


# -- images <-> sensor_msgs/Image (the encodings of twinloop_ros.conversions, without rclpy) -------------

_FIXED_ENCODINGS = {
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "mono8": ("u1", 1),
    "mono16": ("u2", 1),
}
_GENERIC_ENCODING = re.compile(r"^(8U|8S|16U|16S|32S|32F|64F)C([1-9][0-9]{0,2})$")
_DEPTHS = {"8U": "u1", "8S": "i1", "16U": "u2", "16S": "i2", "32S": "i4", "32F": "f4", "64F": "f8"}


def _encoding_info(encoding: str, where: str) -> tuple[np.dtype, int]:
    if encoding in _FIXED_ENCODINGS:
        code, channels = _FIXED_ENCODINGS[encoding]
        return np.dtype(code), channels
    match = _GENERIC_ENCODING.match(encoding)
    if match:
        return np.dtype(_DEPTHS[match[1]]), int(match[2])
    raise ValueError(f"{where}: unsupported image encoding {encoding!r}")


def _image_array(msg: Any, where: str) -> np.ndarray:
    """(H, W) or (H, W, C) in the encoding's channel order (as the recorder stores it), own memory."""
    dtype, channels = _encoding_info(str(msg.encoding), where)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if step < row_bytes or data.size != step * height:
        raise ValueError(
            f"{where}: malformed {msg.encoding} image ({width}x{height}, step {step}, {data.size} bytes)"
        )
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    shape = (height, width) if channels == 1 else (height, width, channels)
    pixels = data.reshape(height, step)[:, :row_bytes].copy().view(wire).reshape(shape)
    return pixels if wire.isnative else pixels.astype(dtype)


def _encoding_for(array: np.ndarray, key: str) -> str:
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3:
        return "rgb8"
    if array.dtype == np.uint8 and array.ndim == 2:
        return "mono8"
    depth = {v: k for k, v in _DEPTHS.items()}.get(array.dtype.str[1:])
    if depth is None or array.ndim not in (2, 3):
        raise ValueError(f"{key}: rows of shape {array.shape} {array.dtype} are not an image")
    return f"{depth}C{1 if array.ndim == 2 else array.shape[2]}"


# -- writers: staged episodes -> one format --------------------------------------------------------------


class _Writer:
    def commit(self, staged: StagedEpisode) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _open_writer(to: str, out: Path, repo_id: str) -> _Writer:
    if to == "zarr":
        return _ZarrWriter(out)
    if to == "lerobot":
        return _LeRobotWriter(out, repo_id)
    return _McapWriter(out)


class _ZarrWriter(_Writer):
    def __init__(self, out: Path) -> None:
        from twinloop.datasets.zarr_buffer import ZarrReplayBuffer

        self.buffer = ZarrReplayBuffer.create(out)

    def commit(self, staged: StagedEpisode) -> None:
        self.buffer.commit(staged)

    def close(self) -> None:
        self.buffer.close()


class _LeRobotWriter(_Writer):
    def __init__(self, out: Path, repo_id: str) -> None:
        _need_lerobot()
        self.out = out
        self.repo_id = repo_id
        self.writer = None  # created with the first episode: its fps and features

    def commit(self, staged: StagedEpisode) -> None:
        if self.writer is None:
            from twinloop.datasets.lerobot_v3 import LeRobotWriter

            self.writer = LeRobotWriter(self.out, self.repo_id, staged.meta.fps, features_from=staged)
        self.writer.commit(staged)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class _McapWriter(_Writer):
    def __init__(self, out: Path) -> None:
        from twinloop.datasets.mcap_bag import McapEpisodeWriter

        self.writer = McapEpisodeWriter(out)
        self.types = self.writer.typestore.types

    def commit(self, staged: StagedEpisode) -> None:
        meta = staged.meta
        unknown = [
            k
            for k in staged.keys
            if k not in FIXED_COLUMNS and not k.startswith((IMAGE_PREFIX, TACTILE_PREFIX))
        ]
        if unknown:
            raise ValueError(
                f"episode {meta.index}: no contract topic carries column(s) {', '.join(unknown)}; "
                "convert to zarr or lerobot instead"
            )
        if "observation.state" not in staged.keys:
            raise ValueError(f"episode {meta.index}: no observation.state column (needed for joint_states)")
        bag = self.writer.begin(meta.index)
        with bag:
            for topic, msgtype, msg, t_ns in self._messages(staged):
                bag.write(topic, msgtype, self.writer.typestore.serialize_cdr(msg, msgtype), t_ns)
            bag.commit(meta)

    def _messages(self, staged: StagedEpisode) -> Iterator[tuple[str, str, Any, int]]:
        """(topic, type, message, t_ns) of the contract topics, frame by frame."""
        types = self.types
        Time, Duration, Header = (  # noqa: N806 - message classes
            types["builtin_interfaces/msg/Time"],
            types["builtin_interfaces/msg/Duration"],
            types["std_msgs/msg/Header"],
        )
        meta = staged.meta
        width = staged.column("observation.state").shape[1]
        joints = list(meta.joint_names)
        if len(joints) != width:
            joints = [f"joint_{j}" for j in range(width)]
        empty = np.zeros(0, np.float64)
        frame_ns = round(1e9 / meta.fps)
        # on the recorder's clock when it stored its first tick (so `_recorded_window` reads it back),
        # else t = 0 at the first frame, as the twin's sim time starts
        window = _recorded_window(meta, meta.fps)
        start_ns = window[0] if window is not None else 0
        step = Duration(sec=frame_ns // 1_000_000_000, nanosec=frame_ns % 1_000_000_000)
        images = [k for k in staged.keys if k.startswith((IMAGE_PREFIX, TACTILE_PREFIX))]
        previous_source: int | None = None
        for start in range(0, len(staged), BLOCK):
            stop = min(len(staged), start + BLOCK)
            block = {k: _staged_rows(staged, k, start, stop) for k in staged.keys}
            for j in range(stop - start):
                i = start + j
                t = float(block["timestamp"][j]) if "timestamp" in block else i / meta.fps
                t_ns = start_ns + round(t * 1e9)
                stamp = Time(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)
                source = int(block["command_source"][j]) if "command_source" in block else None
                if source is not None and source != previous_source:
                    if source not in SOURCE_NAMES:
                        raise ValueError(f"episode {meta.index}: unknown command_source code {source}")
                    yield "/command_mux/source", STRING, types[STRING](data=SOURCE_NAMES[source]), t_ns
                    previous_source = source
                state = {k: np.asarray(block[k][j], np.float64) for k in JOINT_COLUMNS if k in block}
                yield (
                    "/joint_states",
                    JOINT_STATE,
                    types[JOINT_STATE](
                        header=Header(stamp=stamp, frame_id=""),
                        name=joints,
                        position=state["observation.state"],
                        velocity=state.get("observation.velocity", empty),
                        effort=state.get("observation.effort", empty),
                    ),
                    t_ns,
                )
                for key in images:
                    if key.startswith(IMAGE_PREFIX):
                        name = key[len(IMAGE_PREFIX) :]
                        topic, frame_id = f"/{name}/image_raw", name
                    else:
                        name = key[len(TACTILE_PREFIX) :]
                        topic, frame_id = f"/tactile/{name}/image", f"tactile_{name}"
                    yield (
                        topic,
                        IMAGE,
                        self._image(block[key][j], key, Header(stamp=stamp, frame_id=frame_id)),
                        t_ns,
                    )
                if "action" in block:
                    trajectory = self._trajectory(
                        block["action"][j], joints, Header(stamp=stamp, frame_id=""), step
                    )
                    yield "/arm_controller/joint_trajectory", TRAJECTORY, trajectory, t_ns
                    intervention = "intervention" in block and bool(block["intervention"][j])
                    if source == SOURCE_CODES["policy"] or intervention:  # a policy is running: what
                        # the recorder labels interventions from (teleop while a policy runs)
                        yield "/policy/joint_trajectory", TRAJECTORY, trajectory, t_ns

    def _image(self, array: np.ndarray, key: str, header: Any) -> Any:
        array = np.asarray(array)
        encoding = _encoding_for(array, key)
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).reshape(-1).view(np.uint8)
        height, width = array.shape[:2]
        return self.types[IMAGE](
            header=header,
            height=height,
            width=width,
            encoding=encoding,
            is_bigendian=0,
            step=data.size // max(height, 1),
            data=data,
        )

    def _trajectory(self, action: np.ndarray, joints: list[str], header: Any, due: Any) -> Any:
        point = self.types["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=np.asarray(action, np.float64),
            velocities=np.zeros(0, np.float64),
            accelerations=np.zeros(0, np.float64),
            effort=np.zeros(0, np.float64),
            time_from_start=due,
        )
        return self.types[TRAJECTORY](header=header, joint_names=joints, points=[point])


def _staged_rows(staged: StagedEpisode, key: str, start: int, stop: int) -> np.ndarray:
    try:
        return np.asarray(staged.column(key)[start:stop])
    except Exception as err:  # zarr/codec errors have no common base class
        raise ValueError(
            f"{staged.folder / 'data.zarr' / key}: unreadable staged rows ({_one_line(err)})"
        ) from None


def summary(result: ConvertResult) -> str:
    """One line for the user."""
    return (
        f"converted {result.episodes} episode(s), {result.frames} frames, from {result.source.format} "
        f"{result.source.path} to {result.target} {result.output} in {result.seconds:.1f} s"
    )


__all__ = ["FORMATS", "ConvertResult", "Source", "convert", "detect", "summary"]
