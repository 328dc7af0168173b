"""Commits staged episodes to LeRobot v3 and zarr in a child process.

Encoding an episode's videos and compressing its images takes seconds of CPU. Done on a thread of the
recorder, it held the GIL long enough for the recorder's subscriptions to fall behind (seen: 32 of 44
ticks of the next episode incomplete). A child process at lower priority keeps the recorder sampling
on time while the previous episode is written.

Protocol (JSON lines, no pickles): the parent writes `{"commit": "<staged folder>"}` or `{"close": true}`
on the child's stdin; the child answers each request, and once at start-up, with
`{"counts": {"lerobot": n, "zarr": n}, "log": [...], "error": "..." | null, "index": i | null}`.
At start-up the child repairs both formats and commits every complete staged episode they lack.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twinloop.datasets.episode import StagedEpisode, staged_episodes

COMMITTED_FORMATS = ("lerobot", "zarr")  # MCAP bags are written by the recorder as messages arrive


class Committer:
    """The formats of one output folder, opened (and repaired) in this process."""

    def __init__(
        self,
        out: Path,
        fps: float,
        formats: Sequence[str],
        repo_id: str,
        video_preset: int | None = None,
        parallel_encoding: bool = False,
    ) -> None:
        """`video_preset`: the SVT-AV1 preset of LeRobot's videos (None: lerobot's default; higher is
        faster and larger). `parallel_encoding`: one encoder process per camera (off: on 2 cores it was
        0.69x the speed of one after another, `make bench` lerobot_encode.*; SVT-AV1 is threaded)."""
        self.out = Path(out)
        self.video_preset = video_preset
        self.parallel_encoding = parallel_encoding
        self.fps = fps
        self.formats = [f for f in COMMITTED_FORMATS if f in formats]
        self.repo_id = repo_id
        self.log: list[str] = []
        self._lerobot = None  # created with the first episode's features unless it exists
        self._zarr = None
        if "zarr" in self.formats:
            from twinloop.datasets.zarr_buffer import ZarrReplayBuffer

            path = self.out / "replay.zarr"
            self._zarr = (
                ZarrReplayBuffer.open(path, mode="a") if path.exists() else ZarrReplayBuffer.create(path)
            )
            self._report(self._zarr.recover())
        if "lerobot" in self.formats and (self.out / "lerobot").exists():
            self._lerobot = self._open_lerobot(None, resume=True)

    def _open_lerobot(self, first: StagedEpisode | None, resume: bool):
        from twinloop.datasets.lerobot_v3 import LeRobotWriter

        encoder = None
        if self.video_preset is not None:
            from lerobot.configs import RGBEncoderConfig

            encoder = RGBEncoderConfig(preset=self.video_preset)
        writer = LeRobotWriter(
            self.out / "lerobot",
            self.repo_id,
            self.fps,
            features_from=first,
            resume=resume,
            rgb_encoder=encoder,
            parallel_encoding=self.parallel_encoding,
        )
        self._report(writer.recover())
        return writer

    def _report(self, message: str | None) -> None:
        if message:
            self.log.append(f"recovered: {message}")

    def counts(self) -> dict[str, int]:
        counts = {}
        if "lerobot" in self.formats:
            counts["lerobot"] = self._lerobot.num_episodes if self._lerobot is not None else 0
        if self._zarr is not None:
            counts["zarr"] = self._zarr.n_episodes
        return counts

    def commit(self, staged: StagedEpisode) -> None:
        """Append the episode to each format that lacks it, then delete its staging folder."""
        seconds = {}
        if "lerobot" in self.formats:
            start = time.perf_counter()
            if self._lerobot is None:
                self._lerobot = self._open_lerobot(staged, resume=False)
            self._lerobot.commit(staged)  # a no-op for an episode it already holds (crash re-offer)
            seconds["lerobot"] = time.perf_counter() - start
        if self._zarr is not None and self._zarr.n_episodes == staged.meta.index:
            start = time.perf_counter()
            self._zarr.commit(staged)
            seconds["zarr"] = time.perf_counter() - start
        staged.delete()
        # commit time against the episode's duration: > 1 keeps up with recording (`make bench`)
        duration = staged.length / staged.meta.fps
        timing = ", ".join(
            f"{k} {v:.2f} s ({duration / max(v, 1e-9):.1f}x real time)" for k, v in seconds.items()
        )
        self.log.append(f"episode {staged.meta.index} committed ({staged.length} frames): {timing}")

    def commit_staged(self, staging: Path) -> None:
        """Crash recovery: commit complete staged episodes in order (partial ones are the parent's)."""
        complete, _ = staged_episodes(staging)
        for episode in complete:
            self.log.append(f"recovered: committed staged episode {episode.meta.index}")
            self.commit(episode)

    def close(self) -> None:
        if self._lerobot is not None:
            self._lerobot.close()
        if self._zarr is not None:
            self._zarr.close()


_protocol = sys.stdout  # main() moves it off fd 1, so that a library's print cannot corrupt it


def _answer(committer: Committer | None, error: str | None = None, index: int | None = None) -> None:
    reply = {
        "counts": committer.counts() if committer else {},
        "log": committer.log if committer else [],
        "error": error,
        "index": index,
    }
    if committer:
        committer.log = []
    _protocol.write(json.dumps(reply) + "\n")
    _protocol.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="twinloop episode commit worker (started by the recorder)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--fps", type=float, required=True)
    parser.add_argument("--formats", default="lerobot,zarr")
    parser.add_argument("--repo-id", default="twinloop/recording")
    parser.add_argument("--video-preset", type=int, help="SVT-AV1 preset of LeRobot videos")
    parser.add_argument("--parallel-encoding", action="store_true", help="one encoder process per camera")
    args = parser.parse_args(argv)
    _die_with_parent()
    use_forkserver()
    global _protocol
    _protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything printed goes to stderr, the recorder's log
    try:
        committer = Committer(
            args.out,
            args.fps,
            args.formats.split(","),
            args.repo_id,
            video_preset=args.video_preset,
            parallel_encoding=args.parallel_encoding,
        )
        committer.commit_staged(args.out / ".staging")
    except Exception as exc:  # reported to the recorder, which refuses to start
        _answer(None, error=_one_line(exc))
        return 1
    _answer(committer)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("close"):
            break
        folder = Path(request["commit"])
        try:
            staged = StagedEpisode(folder)
            committer.commit(staged)
            _answer(committer, index=staged.meta.index)
        except Exception as exc:  # the staging folder stays: the next start commits it again
            _answer(committer, error=f"{folder.name}: {_one_line(exc)} (kept in {folder})")
    committer.close()
    return 0


def use_forkserver() -> None:
    """Encoder processes (lerobot's parallel encoding uses the default start method) from a clean server
    process: forking this one, whose torch and zarr threads may hold locks, can deadlock the child."""
    multiprocessing.set_start_method("forkserver", force=True)
    multiprocessing.set_forkserver_preload(["lerobot.datasets.dataset_writer"])


def _die_with_parent() -> None:
    """A recorder killed with -9 takes its worker along (Linux), so that a restarted recorder can open
    the formats at once; a commit cut short this way is rolled back or finished by that restart."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        raise SystemExit(1)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class CommitWorker:
    """The parent's side: starts the child, sends episodes, collects answers on a reader thread."""

    def __init__(
        self,
        out: Path,
        fps: float,
        formats: Sequence[str],
        repo_id: str,
        log: Callable[[str], None],
        niceness: int = 10,
        video_preset: int | None = None,
    ) -> None:
        self.log = log
        self.errors: list[str] = []
        cmd = [
            sys.executable, "-m", "twinloop.datasets.commit_worker", str(out),
            "--fps", repr(float(fps)), "--formats", ",".join(formats), "--repo-id", repo_id,
        ]  # fmt: skip
        if video_preset is not None:
            cmd += ["--video-preset", str(video_preset)]
        env = dict(os.environ, PYTHONSAFEPATH="1")  # the repo-root `datasets/` must not shadow HF's
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        # below the recorder and the twin: encoding may lag, sampling must not
        nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + niceness)
        os.setpriority(os.PRIO_PROCESS, self._proc.pid, nice)
        self._cond = threading.Condition()
        self._pending = 0
        first = self._read()
        if first is None or first["error"]:
            self._proc.wait()
            raise ValueError(f"cannot open the recording in {out}: {first and first['error']}")
        self.counts: dict[str, int] = first["counts"]
        self._reader = threading.Thread(target=self._read_loop, name="commit-answers", daemon=True)
        self._reader.start()

    def _read(self) -> dict[str, Any] | None:
        line = self._proc.stdout.readline()
        if not line:
            return None
        reply = json.loads(line)
        for text in reply["log"]:
            self.log(text)
        return reply

    def _read_loop(self) -> None:
        while True:
            reply = self._read()
            with self._cond:
                if reply is None:  # the child ended: nothing pending will be answered
                    if self._pending:
                        self.errors.append(f"commit worker exited with {self._proc.wait()}")
                    self._pending = 0
                    self._cond.notify_all()
                    return
                self.counts = reply["counts"]
                if reply["error"]:
                    self.errors.append(reply["error"])
                    self.log(f"error: commit failed: {reply['error']}")
                self._pending -= 1
                self._cond.notify_all()

    def commit(self, folder: Path) -> None:
        with self._cond:
            self._pending += 1
        self._send({"commit": str(folder)})

    def _send(self, request: dict[str, Any]) -> None:
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            with self._cond:
                self.errors.append("commit worker is gone")
                self._pending = 0
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every sent episode is answered; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout=timeout)

    def close(self) -> None:
        self.flush()
        self._send({"close": True})
        if self._proc.stdin and not self._proc.stdin.closed:
            self._proc.stdin.close()
        self._proc.wait()
        self._reader.join(timeout=5.0)


if __name__ == "__main__":
    raise SystemExit(main())
