"""A recording session: one output folder, up to three formats, episodes committed atomically in order.

    <out>/lerobot/          LeRobotDataset v3 (twinloop.datasets.lerobot_v3)
    <out>/replay.zarr       zarr replay buffer, diffusion_policy layout (twinloop.datasets.zarr_buffer)
    <out>/mcap/episode_N/   raw rosbag2 MCAP of every topic (twinloop.datasets.mcap_bag)
    <out>/.staging/         episodes in flight (twinloop.datasets.episode)

An episode is sampled into a staging buffer while it runs (and its raw messages stream into a partial
MCAP bag). Stopping it marks the staging complete and renames the bag into place; a worker process
(`commit_worker`) then commits it to LeRobot and zarr, in episode order, and deletes the staging
folder. Opening a session repairs what a crash left: each format rolls back a half-written commit,
complete staged episodes are committed to the formats that lack them, incomplete ones are discarded.
So a `kill -9` loses at most the episode in progress. No ROS here: the recorder node feeds this class.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twinloop.datasets.commit_worker import COMMITTED_FORMATS, CommitWorker
from twinloop.datasets.episode import DELETED_PREFIX, EpisodeBuffer, EpisodeMeta, staged_episodes

FORMATS = ("lerobot", "zarr", "mcap")


class RecordingSession:
    def __init__(
        self,
        out: Path,
        fps: float,
        formats: Sequence[str] = FORMATS,
        resume: bool = False,
        repo_id: str = "twinloop/recording",
        log: Callable[[str], None] = print,
        video_preset: int | None = None,
    ) -> None:
        unknown = sorted(set(formats) - set(FORMATS))
        if unknown or not formats:
            raise ValueError(f"formats: unknown {unknown} (choose from {', '.join(FORMATS)})")
        self.out = Path(out)
        self.fps = fps
        self.formats = tuple(f for f in FORMATS if f in formats)
        self.log = log
        self.staging = self.out / ".staging"
        existing = self.out.is_dir() and any(p.name != ".staging" for p in self.out.iterdir())
        if existing and not resume:
            raise ValueError(
                f"{self.out} already holds a recording: pass resume to append, or another folder"
            )
        self.out.mkdir(parents=True, exist_ok=True)
        self._mcap = None
        if "mcap" in self.formats:
            from twinloop.datasets.mcap_bag import McapEpisodeWriter

            self._mcap = McapEpisodeWriter(self.out / "mcap")
            # a finished bag of an episode whose staging completed is kept; other leftovers are deleted
            complete, _ = staged_episodes(self.staging)
            self._report(self._mcap.recover(complete=[e.meta.index for e in complete]))
        _, partial = staged_episodes(self.staging)
        for folder in partial:
            self.log(f"recovered: discarded {folder.name}, unfinished (the recorder stopped mid-episode)")
            shutil.rmtree(folder, ignore_errors=True)
        for folder in self.staging.glob(f"{DELETED_PREFIX}*"):  # committed; its deletion was cut short
            shutil.rmtree(folder, ignore_errors=True)
        self._committer = None
        committed = [f for f in self.formats if f in COMMITTED_FORMATS]
        if committed:  # repairs the formats and commits complete staged episodes before answering
            self._committer = CommitWorker(self.out, fps, committed, repo_id, log, video_preset=video_preset)
        self._episode: EpisodeBuffer | None = None
        self._bag = None

    def _report(self, message: str | None) -> None:
        if message:
            self.log(f"recovered: {message}")

    @property
    def errors(self) -> list[str]:
        return self._committer.errors if self._committer is not None else []

    def committed(self) -> dict[str, int]:
        """Episodes each format holds (LeRobot and zarr as of the last answered commit)."""
        counts = dict(self._committer.counts) if self._committer is not None else {}
        if self._mcap is not None:
            counts["mcap"] = len(self._mcap.episode_paths())
        return counts

    def next_index(self) -> int:
        complete, _ = staged_episodes(self.staging)
        staged = [e.meta.index + 1 for e in complete]
        return max([0, *self.committed().values(), *staged])

    # -- episodes ----------------------------------------------------------------------------------
    def begin(self, meta: EpisodeMeta) -> None:
        if self._episode is not None:
            raise ValueError("an episode is already being recorded")
        meta.index = self.next_index()
        self._episode = EpisodeBuffer(self.staging / f"episode_{meta.index:06d}", meta)
        self._bag = self._mcap.begin(meta.index) if self._mcap is not None else None

    @property
    def recording(self) -> bool:
        return self._episode is not None

    @property
    def episode(self) -> EpisodeBuffer | None:
        return self._episode

    def append(self, row: dict[str, Any]) -> None:
        if self._episode is not None:
            self._episode.append(row)

    def write_raw(self, topic: str, msgtype: str, cdr: bytes, t_ns: int) -> None:
        """A raw message for the MCAP bag of the episode in progress."""
        if self._bag is not None:
            self._bag.write(topic, msgtype, cdr, t_ns)

    def end(self, **meta_updates: Any) -> int:
        """Finish the episode: staged (complete), bag renamed into place, LeRobot/zarr commits sent."""
        episode, self._episode = self._episode, None
        if episode is None:
            raise ValueError("no episode is being recorded")
        if episode.length == 0:
            episode.discard()
            if self._bag is not None:
                self._bag.discard()
            raise ValueError("the episode has no complete frame (are all topics publishing?)")
        for key, value in meta_updates.items():
            setattr(episode.meta, key, value)
        if self._bag is not None:  # finished in its partial folder first: recover() keeps it from here on
            self._bag.close(episode.meta)
        staged = episode.finish()  # the episode's commit point
        if self._bag is not None:
            self._bag.commit(staged.meta)
            self._bag = None
        if self._committer is not None:
            self._committer.commit(staged.folder)
        else:
            staged.delete()
        return staged.meta.index

    def discard(self) -> None:
        episode, self._episode = self._episode, None
        if episode is not None:
            episode.discard()
        if self._bag is not None:
            self._bag.discard()
            self._bag = None

    def flush(self) -> None:
        """Block until every finished episode is committed."""
        if self._committer is not None:
            self._committer.flush()

    def close(self) -> None:
        """Finish the sent commits (an episode in progress is discarded) and stop the commit worker."""
        self.discard()
        if self._committer is not None:
            self._committer.close()
