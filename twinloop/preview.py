"""Live preview video: camera frames tiled side by side and streamed to an mp4 that plays while it grows.

The twin node (`preview_path` parameter, `twinloop sim --preview`) hands every rendered camera frame set to
a :class:`PreviewWriter`. Layout (no text): the cameras in their configured order, left to right, each
scaled (nearest neighbour) to the tallest camera's height; width and height are padded with black to even
numbers because H.264 in yuv420p needs them. Frames go to the system ffmpeg as raw rgb24 at the camera rate
and are encoded as fragmented mp4 (`-movflags frag_keyframe+empty_moov`, one keyframe per second), so a
player or ffprobe can read the file while it is being written. :meth:`PreviewWriter.close` ends the stream
cleanly (ffmpeg then writes its last fragment), which the twin node does on shutdown (SIGINT).

Frames are encoded on a writer thread behind a bounded queue, so a slow encoder never stalls the caller
unless it asks to block (the twin blocks in lockstep mode, where every frame must be in the video, and
drops frames in realtime mode, where the physics must keep wall-clock pace; drops are counted).
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twinloop.sim.evaluation import ffmpeg_rgb_input

_STOP = object()


@dataclass(frozen=True)
class TileLayout:
    """Where each camera lands in the tiled frame: the output size and per-camera column spans."""

    width: int
    height: int
    # per camera: (x0, scaled width, source row indices, source column indices)
    cells: tuple[tuple[int, int, np.ndarray, np.ndarray], ...]


def tile_layout(sizes: Sequence[tuple[int, int]]) -> TileLayout:
    """Layout for cameras of `(width, height)` sizes: side by side, scaled to the tallest one's height."""
    if not sizes:
        raise ValueError("a preview needs at least one camera")
    for w, h in sizes:
        if w <= 0 or h <= 0:
            raise ValueError(f"camera size must be positive, got {w}x{h}")
    height = max(h for _, h in sizes)
    cells = []
    x0 = 0
    for w, h in sizes:
        scaled_w = max(1, round(w * height / h))
        # nearest neighbour: output pixel centre -> source pixel
        rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.intp), h - 1)
        cols = np.minimum(((np.arange(scaled_w) + 0.5) * w / scaled_w).astype(np.intp), w - 1)
        cells.append((x0, scaled_w, rows, cols))
        x0 += scaled_w
    return TileLayout(width=x0 + x0 % 2, height=height + height % 2, cells=tuple(cells))


def tile_frames(layout: TileLayout, frames: Sequence[np.ndarray]) -> np.ndarray:
    """One (layout.height, layout.width, 3) uint8 frame from the cameras' HxWx3 uint8 frames."""
    if len(frames) != len(layout.cells):
        raise ValueError(f"expected {len(layout.cells)} camera frames, got {len(frames)}")
    out = np.zeros((layout.height, layout.width, 3), dtype=np.uint8)
    for (x0, scaled_w, rows, cols), frame in zip(layout.cells, frames, strict=True):
        out[: len(rows), x0 : x0 + scaled_w] = frame[rows[:, None], cols[None, :], :3]
    return out


def ffmpeg_command(ffmpeg: str, path: Path, width: int, height: int, fps: float) -> list[str]:
    """Raw rgb24 on stdin -> H.264 fragmented mp4 that is readable while it grows."""
    return [
        *ffmpeg_rgb_input(ffmpeg, width, height, fps),
        "-an",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",  # no frame lookahead: each fragment is written as soon as its second is encoded
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(max(1, round(fps))),  # a keyframe, hence a fragment, every second
        "-movflags",
        "frag_keyframe+empty_moov",
        "-flush_packets",
        "1",
        "-f",
        "mp4",
        str(path),
    ]


class PreviewWriter:
    """Streams tiled camera frames to `path` through ffmpeg; see the module docstring."""

    def __init__(
        self, path: str | Path, sizes: Sequence[tuple[int, int]], fps: float, queue_frames: int = 20
    ) -> None:
        if fps <= 0:
            raise ValueError(f"preview frame rate must be > 0, got {fps}")
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise FileNotFoundError("ffmpeg not found; install it (make install: apt-get install ffmpeg)")
        self.path = Path(path)
        self.layout = tile_layout(sizes)
        self.fps = float(fps)
        self.frames_written = 0
        self.frames_dropped = 0
        self.error: str | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as ffmpeg; closed in close()
        self._process = subprocess.Popen(
            ffmpeg_command(ffmpeg, self.path, self.layout.width, self.layout.height, self.fps),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            start_new_session=True,  # a Ctrl-C meant for the caller must not cut the stream short
        )
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_frames))
        self._thread = threading.Thread(target=self._work, name="preview-writer", daemon=True)
        self._thread.start()
        self._closed = False

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the video."""
        return self.layout.width, self.layout.height

    def write(self, frames: Sequence[np.ndarray], block: bool = True) -> bool:
        """Queue one set of camera frames (in layout order). False if dropped or the writer has failed.

        The arrays must not be modified afterwards (the twin's renders are fresh arrays each time).
        """
        if self._closed or self.error is not None:
            return False
        try:
            self._queue.put(tuple(frames), block=block)
        except queue.Full:
            self.frames_dropped += 1
            return False
        return True

    def _work(self) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self.error is not None:
                continue  # drain; the stream is dead
            try:
                stdin.write(tile_frames(self.layout, item).tobytes())
                self.frames_written += 1
            except (BrokenPipeError, OSError, ValueError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                self.error = f"ffmpeg stopped taking frames ({reason}){self._ffmpeg_stderr()}"

    def _ffmpeg_stderr(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace").strip()
            if text:
                return ": " + text.splitlines()[-1][-300:]
        return ""

    def close(self, timeout: float = 10.0) -> None:
        """Finish the stream: flush queued frames, end ffmpeg's input and wait for it to write the file.

        Raises RuntimeError if ffmpeg failed (the frames written so far stay playable).
        """
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout=timeout)
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            self._process.stdin.close()
        try:
            code = self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
            self.error = self.error or f"ffmpeg did not finish within {timeout:g} s; killed"
        if code != 0 and self.error is None:
            self.error = f"ffmpeg exited with {code}{self._ffmpeg_stderr()}"
        self._stderr.close()
        if self.error is not None:
            raise RuntimeError(self.error)

    def __enter__(self) -> PreviewWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
