"""Commit staged episodes into a LeRobotDataset v3, one atomic append per episode.

The dataset is written by lerobot's own API (`LeRobotDataset.create` / `resume`, `add_frame`,
`save_episode`, `finalize`), so its layout, video encoding and statistics are exactly lerobot's.
What this module adds is crash safety: a `kill -9` at any instant, including inside a commit,
leaves every earlier episode readable, and the interrupted episode is either completed (rolled
forward) or discarded when the writer next opens the dataset.

Why lerobot alone is not crash-safe: a writer session keeps the current data parquet file and the
episodes parquet file open with `pyarrow.ParquetWriter` (no footer until `finalize()`: a killed
process leaves them unreadable, taking every episode of the session with them), buffers episode
metadata in memory, bumps `meta/info.json` before the episodes parquet exists, and appends each new
episode's video to the current mp4 by rewriting the whole file.

Measured per-episode behaviour of lerobot 0.6.1 when each episode is its own `resume` + `finalize`
session: it only ever *creates* new files, one per kind - `data/chunk-C/file-F.parquet`,
`meta/episodes/chunk-C/file-F.parquet` and `videos/<camera>/chunk-C/file-F.mp4` at the file index
after the last episode's - and *rewrites* three small files: `meta/info.json`, `meta/stats.json`
and (for a new task string) `meta/tasks.parquet`. Temporary PNG frames (`images/`) and encoder
folders (`tmp*`) appear under the root while it works. Earlier files are never modified.
To resume, lerobot reads only `info.json`, `stats.json`, `tasks.parquet` and the last row of the
episodes metadata.

Commit protocol (shadow root + write-ahead journal, all inside `<root>/.twinloop_txn/`):
1. `intent.json`; then a shadow dataset root `shadow/` holding copies of `info.json`,
   `stats.json`, `tasks.parquet` and the newest episodes parquet file (small: O(features + tasks +
   one metadata file), never the data or the videos).
2. lerobot runs on the shadow (`LeRobotDataset.resume(root=shadow)`, or `create` for a new
   dataset): frames, video encoding, `save_episode`, `finalize`. Its temporaries stay in the
   shadow, and so does the `datasets` cache it builds while loading the metadata (so nothing
   accumulates in ~/.cache per commit). The real dataset has not been touched.
3. The new files are checked against the new episode's metadata row and fsynced, and `publish.json`
   is written atomically (tmp + fsync + rename): the list of renames shadow -> root (new data /
   video / episodes files first, then `stats.json`, `tasks.parquet`, and `info.json` last) and the
   sidecar line. Writing it is the commit point.
4. Publish: the sidecar append (truncate to the size recorded in the journal, then append:
   idempotent), the renames (same file system, each atomic), fsync of the touched folders, then the
   transaction folder is deleted, its journal last.
Recovery (`recover()`, run automatically when a writer opens): with `publish.json` present the
publish step is replayed (each rename is skipped when already done), which rolls the episode
forward; without it the transaction folder is deleted, which discards the episode (the dataset was
never touched). Both are idempotent, so a crash during recovery is recovered the same way.
An exclusive `flock` on the root folder keeps a second writer out (released by the kernel on
`kill -9`).

Costs per commit are O(episode): the episode's own files plus copies of the three small metadata
files and one episodes parquet file; no data or video file of an earlier episode is read or
copied. (Measured: `resume` + `finalize` per episode on the real root instead costs O(dataset) -
lerobot loads every episodes file through `datasets`: 4.5 s per commit at 400 episodes, and a new
~/.cache entry each time, 143 MB by then; through the shadow, 150 ms at 20 and at 300 episodes.)
The price is one data/episodes/video file per episode (lerobot's `chunks_size` puts
1000 files in a chunk folder); lerobot's aggregation (`lerobot-edit-dataset --operation.type merge`)
can write a packed copy offline.

Per-episode metadata that LeRobot v3 has no column for (success, operator, interventions, robot,
seed, calibration files, quality, start time, the staged episode index) goes to a sidecar,
`meta/twinloop_episodes.jsonl`, one JSON object per episode keyed by `episode_index`, appended as
part of the same commit. The task string is LeRobot's own per-frame `task`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from twinloop.datasets.episode import EpisodeMeta, StagedEpisode, write_atomic

TXN_DIR = ".twinloop_txn"
INTENT = "intent.json"
JOURNAL = "publish.json"
SIDECAR = "meta/twinloop_episodes.jsonl"
INFO = "meta/info.json"
STATS = "meta/stats.json"
TASKS = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CODEBASE_VERSION = "v3.0"
TIMESTAMP_TOLERANCE_S = 1e-4  # lerobot's default tolerance_s: it recomputes timestamps as i / fps
READ_BLOCK = 32  # staged rows read per block (a second at 30 fps): memory stays O(block), not O(episode)
# Columns that lerobot adds itself (it derives `timestamp` from frame_index / fps).
LEROBOT_OWN = {"timestamp", "frame_index", "episode_index", "index", "task_index"}
STATE_LIKE = {"observation.state", "observation.velocity", "observation.effort", "action"}


def _checkpoint(stage: str) -> None:
    """Called at each step of a commit with the step's name: tests replace it to crash a commit there."""


def lerobot_features(episode: StagedEpisode) -> dict[str, dict[str, Any]]:
    """LeRobot feature dict for a staged episode (see `datasets.episode` for the column names).

    Cameras, and vision-based tactile sensors ((H, W, 3) uint8), become `video` features that
    lerobot encodes; taxel grids stay (H, W) float32 arrays; joint vectors get the joint names;
    other columns keep their dtype (`command_source` int8, `intervention` bool: lerobot stores and
    returns both as they are). Floats are stored as float32, LeRobot's convention.
    """
    joints = list(episode.meta.joint_names)
    features: dict[str, dict[str, Any]] = {}
    for key in episode.keys:
        if key in LEROBOT_OWN:
            continue
        column = episode.column(key)
        shape = tuple(int(n) for n in column.shape[1:])
        dtype = np.dtype(column.dtype)
        if dtype == np.uint8 and len(shape) == 3 and shape[2] == 3:
            features[key] = {"dtype": "video", "shape": shape, "names": ["height", "width", "channels"]}
            continue
        if dtype.kind == "f":
            dtype = np.dtype(np.float32)
        elif dtype.kind not in "biu":
            raise ValueError(f"{episode.folder}: column {key} has dtype {dtype}, which LeRobot cannot store")
        names: list[str] | None = None
        if key in STATE_LIKE and shape == (len(joints),):
            names = joints
        elif key.startswith("observation.tactile.") and len(shape) == 2:
            names = ["height", "width"]
        features[key] = {"dtype": dtype.name, "shape": shape or (1,), "names": names}
    return features


class LeRobotWriter:
    """Appends staged episodes to a LeRobotDataset v3 at `root`, each episode atomically.

    Opening runs `recover()` first. `root` must not hold a dataset unless `resume` is true; with
    `resume` it must hold a readable v3 dataset of the same fps (and, with `features_from`, the same
    features). A new dataset is created by its first commit (its schema from `features_from` or
    from that first episode), so a crash before then leaves no half-made dataset behind.
    """

    def __init__(
        self,
        root: Path,
        repo_id: str,
        fps: float,
        features_from: StagedEpisode | None = None,
        resume: bool = False,
        rgb_encoder: Any = None,
        parallel_encoding: bool = False,
    ) -> None:
        """`rgb_encoder`: a `lerobot.configs.RGBEncoderConfig` (default: lerobot's, AV1 via PyAV; when
        resuming, the settings recorded in info.json). `parallel_encoding` encodes several cameras in a
        process pool (lerobot forks workers: keep it off inside a multi-threaded ROS process)."""
        self.root = Path(root)
        self.repo_id = repo_id
        if float(fps) != int(fps) or int(fps) <= 0:
            raise ValueError(f"LeRobot datasets need a positive integer fps, not {fps}")
        self.fps = int(fps)
        self._rgb_encoder = rgb_encoder
        self._parallel_encoding = parallel_encoding
        self._closed = False
        self._lock_fd: int | None = None
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"{self.root}: not a folder")
        if resume and not self.root.exists():
            raise ValueError(f"{self.root}: no dataset to resume (leave out --resume to create one)")
        self.root.mkdir(parents=True, exist_ok=True)
        self._info: dict[str, Any] | None = None
        self._records: list[dict[str, Any]] = []
        self._by_source: dict[str, int] = {}
        self._lock()
        try:
            self.last_recovery = self.recover()
            if (self.root / INFO).exists():
                if not resume:
                    raise ValueError(f"{self.root} holds a dataset already (use --resume to append to it)")
                self._reload()
                if self._info["fps"] != self.fps:
                    raise ValueError(f"{self.root / INFO}: dataset fps {self._info['fps']}, not {self.fps}")
            elif any(p.name != TXN_DIR for p in self.root.iterdir()):
                what = "is not a LeRobot v3 dataset (no meta/info.json)" if resume else "is not empty"
                raise ValueError(f"{self.root} {what}")
            self._features = lerobot_features(features_from) if features_from is not None else None
            if features_from is not None and self._info is not None:
                self._check_schema(self._features, str(features_from.folder))
        except BaseException:
            self.close()
            raise

    # -- public API -------------------------------------------------------------------------------

    @property
    def num_episodes(self) -> int:
        return 0 if self._info is None else int(self._info["total_episodes"])

    @property
    def num_frames(self) -> int:
        return 0 if self._info is None else int(self._info["total_frames"])

    def find(self, meta: EpisodeMeta) -> int | None:
        """Dataset index of an episode already committed from this staged episode, if any.

        The recorder deletes a staging folder only after every format has the episode, so after a
        crash it may offer the same episode again; `commit` uses this to make that a no-op. The key
        is (staged index, start time); episodes without a start time are never matched.
        """
        key = _source_key({"staged_index": meta.index, "started_at": meta.started_at})
        return self._by_source.get(key) if key else None

    def commit(self, episode: StagedEpisode) -> int:
        """Append one staged episode atomically; returns its episode index in the dataset."""
        self._check_open()
        txn = self.root / TXN_DIR
        if txn.exists():  # an earlier commit of this writer failed half way
            self.recover()
        existing = self.find(episode.meta)
        if existing is not None:
            return existing
        features = self._validate(episode)
        index = self.num_episodes
        journal: dict[str, Any] | None = None
        try:
            txn.mkdir()
            write_atomic(txn / INTENT, json.dumps({"episode_index": index, "staged": str(episode.folder)}))
            _checkpoint("intent")
            shadow = txn / "shadow"
            self._run_lerobot(episode, features, shadow, txn / "hf_cache")
            journal = self._plan(episode, index, shadow)
            write_atomic(txn / JOURNAL, json.dumps(journal))
            _fsync_dir(txn)
            _checkpoint("journal")
            self._publish(journal)
        except Exception:
            if journal is None:
                shutil.rmtree(txn, ignore_errors=True)  # nothing reached the dataset
            else:
                self.recover()  # past the commit point: finish it
            raise
        self._info = _read_json(self.root / INFO)
        record = json.loads(journal["sidecar_line"])
        self._records.append(record)
        if _source_key(record):
            self._by_source[_source_key(record)] = index
        return index

    def episode_metadata(self) -> list[dict[str, Any]]:
        """Our per-episode metadata records of this dataset (see `read_episode_metadata`)."""
        return list(self._records)

    def recover(self) -> str | None:
        """Finish or undo a commit interrupted by a crash; returns what it did in one line, or None."""
        self._check_open()
        txn = self.root / TXN_DIR
        if not txn.exists():
            return None
        journal_path = txn / JOURNAL
        if journal_path.exists():
            journal = _read_json(journal_path)
            self._publish(journal)
            self._reload()
            return f"rolled forward episode {journal['episode_index']} (interrupted after its commit point)"
        intent = txn / INTENT
        what = "a commit"
        with contextlib.suppress(OSError, ValueError, KeyError):
            what = f"episode {json.loads(intent.read_text())['episode_index']}"
        shutil.rmtree(txn)
        return f"discarded {what}, interrupted before its commit point (the dataset was not touched)"

    def close(self) -> None:
        """Release the lock. Every commit is already complete on disk, so there is nothing to flush."""
        self._closed = True
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> LeRobotWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commit steps ------------------------------------------------------------------------------

    def _validate(self, episode: StagedEpisode) -> dict[str, dict[str, Any]]:
        """Reject an episode lerobot would store wrongly, before anything is written."""
        if len(episode) == 0:
            raise ValueError(f"{episode.folder}: empty episode")
        if float(episode.meta.fps) != self.fps:
            raise ValueError(
                f"{episode.folder}: recorded at {episode.meta.fps} fps, the dataset at {self.fps}"
            )
        if "timestamp" in episode.keys:
            stamps = np.asarray(episode.column("timestamp"), dtype=np.float64)
            error = np.abs(stamps - np.arange(len(episode)) / self.fps).max()
            if error > TIMESTAMP_TOLERANCE_S:
                raise ValueError(
                    f"{episode.folder}: timestamps are {error:.2e} s off the i / fps ticks "
                    "that LeRobot derives from the frame index"
                )
        features = lerobot_features(episode)
        if self._features is not None or self._info is not None:
            self._check_schema(features, str(episode.folder))
        return features

    def _check_schema(self, features: dict[str, dict[str, Any]], source: str) -> None:
        """Same keys, dtypes, shapes and names as the dataset (lerobot needs every feature every frame)."""
        if self._info is not None:
            expected = {k: v for k, v in self._info["features"].items() if k not in LEROBOT_OWN}
        else:
            expected = self._features or {}

        def spec(ft: dict[str, Any]) -> tuple[str, tuple[int, ...], Any]:
            return ft["dtype"], tuple(ft["shape"]), ft.get("names")

        diff = sorted(k for k in set(expected) | set(features) if k not in expected or k not in features)
        diff += sorted(k for k in set(expected) & set(features) if spec(expected[k]) != spec(features[k]))
        if diff:
            raise ValueError(f"{source}: features differ from the dataset's: {', '.join(diff)}")

    def _run_lerobot(
        self, episode: StagedEpisode, features: dict[str, dict[str, Any]], shadow: Path, cache: Path
    ) -> None:
        """lerobot writes the episode into the shadow root, from a copy of the metadata it reads."""
        from datasets.utils.logging import disable_progress_bar
        from lerobot.configs import RGBEncoderConfig
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        # SVT-AV1 prints its whole configuration to stderr for every video unless told otherwise.
        os.environ.setdefault("SVT_LOG", "1")
        with _datasets_cache(cache):
            if self._info is None:
                dataset = LeRobotDataset.create(
                    self.repo_id,
                    fps=self.fps,
                    features=features,
                    root=shadow,
                    robot_type=episode.meta.robot or None,
                    use_videos=True,
                    rgb_encoder=self._rgb_encoder,
                )
            else:
                self._seed_shadow(shadow)
                encoder = self._rgb_encoder
                videos = [ft for ft in self._info["features"].values() if ft["dtype"] == "video"]
                if encoder is None and videos and videos[0].get("info"):
                    encoder = RGBEncoderConfig.from_video_info(videos[0]["info"])
                dataset = LeRobotDataset.resume(self.repo_id, root=shadow, rgb_encoder=encoder)
            disable_progress_bar()  # loading the metadata re-enabled them (lerobot's SuppressProgressBars)
            _checkpoint("opened")
            try:
                self._add_frames(dataset, episode, features)
                _checkpoint("frames")
                dataset.save_episode(parallel_encoding=self._parallel_encoding)
                _checkpoint("saved")
            finally:
                dataset.finalize()  # closes lerobot's parquet writers (the footer), even on failure
            _checkpoint("finalized")

    def _seed_shadow(self, shadow: Path) -> None:
        """Copy what lerobot reads to resume: the three small metadata files and the newest episodes file."""
        for rel in (INFO, STATS, TASKS):
            if (self.root / rel).exists():
                (shadow / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.root / rel, shadow / rel)
        if self.num_episodes > 0:
            newest = _newest_file(self.root / EPISODES_DIR, ".parquet")
            if newest is None:
                raise ValueError(
                    f"{self.root / EPISODES_DIR}: no episodes metadata, but info.json counts episodes"
                )
            target = shadow / newest.relative_to(self.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(newest, target)

    @staticmethod
    def _add_frames(dataset: Any, episode: StagedEpisode, features: dict[str, dict[str, Any]]) -> None:
        dtypes = {k: np.dtype(ft["dtype"]) for k, ft in features.items() if ft["dtype"] != "video"}
        for start in range(0, len(episode), READ_BLOCK):
            block = {k: _read_rows(episode, k, start, start + READ_BLOCK) for k in features}
            for i in range(len(next(iter(block.values())))):
                frame: dict[str, Any] = {"task": episode.meta.task}
                for key, ft in features.items():
                    value = block[key][i]
                    if key in dtypes:
                        value = np.asarray(value, dtype=dtypes[key]).reshape(ft["shape"])
                    frame[key] = value
                dataset.add_frame(frame)

    def _plan(self, episode: StagedEpisode, index: int, shadow: Path) -> dict[str, Any]:
        """The journal: what lerobot produced in the shadow, checked, fsynced, and where it goes."""
        import pyarrow.parquet as pq

        newest = _newest_file(shadow / EPISODES_DIR, ".parquet")
        if newest is None:
            raise RuntimeError(f"{shadow}: lerobot wrote no episodes metadata")
        rows = pq.read_table(newest).to_pylist()
        row = rows[-1]
        if row["episode_index"] != index or row["length"] != len(episode) or len(rows) != 1:
            raise RuntimeError(f"{newest}: unexpected episodes metadata for episode {index}: {row}")
        info = _read_json(shadow / INFO)
        new_files = [
            newest,
            shadow
            / info["data_path"].format(
                chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
            ),
        ]
        for key, ft in info["features"].items():
            if ft["dtype"] == "video":
                new_files.append(
                    shadow
                    / info["video_path"].format(
                        video_key=key,
                        chunk_index=row[f"videos/{key}/chunk_index"],
                        file_index=row[f"videos/{key}/file_index"],
                    )
                )
        small = [shadow / rel for rel in (STATS, TASKS, INFO) if (shadow / rel).exists()]
        for path in new_files + small:
            if not path.is_file():
                raise RuntimeError(f"{path}: lerobot did not write it")
            _fsync(path)
        moves = [str(p.relative_to(shadow)) for p in new_files + small]  # info.json last
        record = {"episode_index": index, "length": len(episode), **asdict(episode.meta)}
        record["staged_index"] = record.pop("index")
        sidecar = self.root / SIDECAR
        return {
            "episode_index": index,
            "moves": moves,
            "sidecar_size": sidecar.stat().st_size if sidecar.exists() else 0,
            "sidecar_line": json.dumps(record, sort_keys=True),
        }

    def _publish(self, journal: dict[str, Any]) -> None:
        """Apply a journal to the dataset; safe to repeat after a crash at any point inside it."""
        txn = self.root / TXN_DIR
        shadow = txn / "shadow"
        sidecar = self.root / SIDECAR
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        with open(sidecar, "a+b") as handle:
            handle.truncate(journal["sidecar_size"])
            handle.seek(journal["sidecar_size"])
            handle.write(journal["sidecar_line"].encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        _checkpoint("sidecar")
        touched = {sidecar.parent}
        for i, rel in enumerate(journal["moves"]):
            src, dst = shadow / rel, self.root / rel
            if src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
            elif not dst.exists():
                raise ValueError(f"{dst}: missing, and not in the interrupted commit either")
            touched.add(dst.parent)
            _checkpoint(f"move{i}")
        for folder in touched:
            _fsync_dir(folder)
        # Remove the transaction with its journal last: a crash in between must still read as "rolled
        # forward" (replaying the journal then finds every rename done), never as an interrupted commit.
        for entry in txn.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.name != JOURNAL:
                entry.unlink()
        (txn / JOURNAL).unlink()
        txn.rmdir()
        _fsync_dir(self.root)
        _checkpoint("published")

    # -- plumbing ----------------------------------------------------------------------------------

    def _reload(self) -> None:
        """Read the dataset's state from disk (after opening, or after a recovery rolled forward)."""
        self._info = _check_metadata(self.root)
        self._records = read_episode_metadata(self.root)
        if self._records and self._records[-1]["episode_index"] >= self.num_episodes:
            raise ValueError(f"{self.root / SIDECAR}: lists episodes the dataset does not have")
        self._by_source = {_source_key(r): r["episode_index"] for r in self._records if _source_key(r)}

    def _lock(self) -> None:
        fd = os.open(self.root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ValueError(f"{self.root}: another process is writing this dataset") from None
            raise
        self._lock_fd = fd

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.root}: writer is closed")


# -- reading and checking --------------------------------------------------------------------------


def read_episode_metadata(root: Path) -> list[dict[str, Any]]:
    """Our per-episode metadata (task, success, operator, interventions, robot, calibration files...)."""
    path = Path(root) / SIDECAR
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
            int(record["episode_index"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: line {number} is corrupt ({_one_line(exc)})") from None
        records.append(record)
    return records


def verify_dataset(root: Path) -> dict[str, int]:
    """Check every file of a dataset (metadata, data parquet footers, videos); one-line ValueError naming
    the first bad file. Returns {"episodes": N, "frames": F}. Reads footers and video headers only."""
    import pyarrow.parquet as pq

    root = Path(root)
    if (root / TXN_DIR).exists():
        raise ValueError(
            f"{root / TXN_DIR}: an interrupted commit; open a LeRobotWriter with resume to recover"
        )
    info = _check_metadata(root)
    rows: list[dict[str, Any]] = []
    for path in sorted((root / EPISODES_DIR).glob("*/*.parquet")):
        rows += _read_parquet(path, columns=None, non_stats=True)
    if [r["episode_index"] for r in rows] != list(range(info["total_episodes"])):
        raise ValueError(f"{root / EPISODES_DIR}: episodes do not run 0..{info['total_episodes'] - 1}")
    if sum(r["length"] for r in rows) != info["total_frames"]:
        raise ValueError(f"{root / INFO}: total_frames disagrees with the episodes metadata")
    frames_per_file: dict[str, int] = {}
    for r in rows:
        rel = info["data_path"].format(chunk_index=r["data/chunk_index"], file_index=r["data/file_index"])
        frames_per_file[rel] = frames_per_file.get(rel, 0) + r["length"]
    for rel, frames in frames_per_file.items():
        try:
            count = pq.read_metadata(root / rel).num_rows
        except (OSError, ValueError) as exc:
            raise ValueError(f"{root / rel}: unreadable parquet ({_one_line(exc)})") from None
        if count != frames:
            raise ValueError(f"{root / rel}: {count} rows, the episodes metadata says {frames}")
    orphans = {str(p.relative_to(root)) for p in (root / "data").glob("*/*.parquet")} - set(frames_per_file)
    if orphans:
        raise ValueError(
            f"{root / sorted(orphans)[0]}: not referenced by any episode (lerobot would load it)"
        )
    for key, ft in info["features"].items():
        if ft["dtype"] != "video":
            continue
        ends: dict[str, float] = {}
        for r in rows:
            rel = info["video_path"].format(
                video_key=key,
                chunk_index=r[f"videos/{key}/chunk_index"],
                file_index=r[f"videos/{key}/file_index"],
            )
            ends[rel] = max(ends.get(rel, 0.0), r[f"videos/{key}/to_timestamp"])
        for rel, end in ends.items():
            _check_video(root / rel, end, 1.0 / info["fps"])
    read_episode_metadata(root)
    return {"episodes": info["total_episodes"], "frames": info["total_frames"]}


def open_dataset(root: Path, repo_id: str = "local/twinloop", **kwargs: Any) -> Any:
    """`LeRobotDataset(repo_id, root=root, **kwargs)` after `verify_dataset`, so a damaged dataset gives a
    one-line error naming the file instead of a traceback (or a download attempt) from deep inside."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    verify_dataset(root)
    return LeRobotDataset(repo_id, root=Path(root), **kwargs)


def _check_metadata(root: Path) -> dict[str, Any]:
    """What a resume reads, checked: info.json, stats.json, tasks.parquet, the newest episodes file."""
    from lerobot.datasets.utils import DatasetInfo

    info = _read_json(root / INFO)
    try:
        DatasetInfo.from_dict(dict(info))
        version = info["codebase_version"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{root / INFO}: not LeRobot dataset info ({_one_line(exc)})") from None
    if version != CODEBASE_VERSION:
        raise ValueError(f"{root / INFO}: LeRobot dataset {version}, this writer needs {CODEBASE_VERSION}")
    if info["total_episodes"] > 0:
        _read_json(root / STATS)
        newest = _newest_file(root / EPISODES_DIR, ".parquet")
        if newest is None:
            raise ValueError(f"{root / EPISODES_DIR}: missing, but info.json counts episodes")
        last = _read_parquet(newest, columns=["episode_index"])
        if not last or last[-1]["episode_index"] != info["total_episodes"] - 1:
            raise ValueError(f"{newest}: does not end with episode {info['total_episodes'] - 1}")
    if info["total_tasks"] > 0:
        _read_parquet(root / TASKS, columns=None)
    return info


def _check_video(path: Path, end_s: float, frame_s: float) -> None:
    import av
    import av.logging

    # libav would print its own complaint ("moov atom not found") to stderr: ours is the one-line error.
    # (lerobot leaves libav's default stderr logger installed after encoding; PyAV's default is silent.)
    level = av.logging.get_level()
    av.logging.set_level(av.logging.PANIC)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.duration is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = float(container.duration or 0) / av.time_base
    except (OSError, IndexError, av.FFmpegError) as exc:
        raise ValueError(f"{path}: unreadable video ({_one_line(exc)})") from None
    finally:
        av.logging.set_level(level)
    if duration + frame_s < end_s:
        raise ValueError(f"{path}: {duration:.2f} s of video, the episodes metadata needs {end_s:.2f} s")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: corrupt or truncated JSON ({_one_line(exc)})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: not a JSON object")
    return value


def _read_parquet(path: Path, columns: list[str] | None, non_stats: bool = False) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        if non_stats:
            names = pq.read_schema(path).names
            columns = [c for c in names if not c.startswith("stats/")]
        return pq.read_table(path, columns=columns).to_pylist()
    except FileNotFoundError:
        raise ValueError(f"{path}: missing") from None
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: unreadable parquet ({_one_line(exc)})") from None


def _read_rows(episode: StagedEpisode, key: str, start: int, stop: int) -> np.ndarray:
    """Rows of a staged column; a damaged staging chunk is a one-line error naming the column."""
    try:
        return np.asarray(episode.column(key)[start:stop])
    except Exception as exc:  # zarr/codec errors have no common base class
        path = episode.folder / "data.zarr" / key
        raise ValueError(f"{path}: unreadable staged rows {start}-{stop - 1} ({_one_line(exc)})") from None


def _newest_file(folder: Path, suffix: str) -> Path | None:
    """The file with the highest (chunk, file) index: lerobot numbers files in write order.
    Lists the newest chunk folder only (at most `chunks_size` files), not the whole dataset."""

    def number(path: Path) -> int:
        digits = path.name.split("-", 1)[1].split(".", 1)[0]
        return int(digits) if digits.isdigit() else -1

    for chunk in sorted(folder.glob("chunk-*"), key=number, reverse=True):
        files = sorted(chunk.glob(f"file-*{suffix}"), key=number)
        if files:
            return files[-1]
    return None


def _source_key(record: dict[str, Any]) -> str | None:
    if not record.get("started_at"):
        return None
    return f"{record.get('staged_index')}@{record['started_at']}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextlib.contextmanager
def _datasets_cache(folder: Path) -> Iterator[None]:
    """Point Hugging Face `datasets`' cache at the transaction while lerobot loads metadata, and
    silence its per-episode progress bars (a "Map" bar per commit is noise in a recorder's log).

    Every resume loads the episodes parquet through `datasets.Dataset.from_parquet`, which writes an
    arrow copy keyed by path and mtime into ~/.cache; per commit that is litter (one entry each) and
    could even be stale for a same-path, same-mtime file. Not thread-safe against other `datasets`
    users in the process: the recorder commits from one thread.
    """
    import datasets.config
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    previous = datasets.config.HF_DATASETS_CACHE
    bars = is_progress_bar_enabled()
    datasets.config.HF_DATASETS_CACHE = Path(folder)
    disable_progress_bar()
    try:
        yield
    finally:
        datasets.config.HF_DATASETS_CACHE = previous
        if bars:
            enable_progress_bar()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        _fsync(path)
