"""Sampling asynchronous topics onto a fixed-rate timeline, with the quality figures a recording needs.

Every stream (a camera, joint_states, a taxel array, the command chunks) keeps a short buffer of
(stamp, value). Tick t takes, per stream, the newest message stamped at or before t; a stream whose newest
such message is older than its `max_skew` has no value for the tick (a dropped frame), and one whose
message was already used for the previous tick is a duplicate (the stream runs slower than the timeline).
The figures are kept per stream: achieved rate, drops, duplicates, skew (t - stamp) and its drift over
the episode (a clock running away), so a recording is never silently degraded.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class StreamQuality:
    """Per-stream figures over one episode (see module docstring)."""

    received: int = 0
    used: int = 0
    dropped: int = 0  # ticks without a message within max_skew
    duplicated: int = 0  # ticks that reused the previous tick's message
    out_of_order: int = 0  # messages stamped before one already received (ignored)
    skews: list[float] = field(default_factory=list, repr=False)
    first_stamp: float | None = None
    last_stamp: float | None = None

    def summary(self, duration: float) -> dict[str, float | int | None]:
        skews = np.asarray(self.skews)
        span = (self.last_stamp - self.first_stamp) if self.received > 1 else 0.0
        drift = None
        if len(skews) >= 10:  # slope of skew over the episode (s per s): a drifting stamp clock
            drift = float(np.polyfit(np.arange(len(skews)), skews, 1)[0] * len(skews) / max(duration, 1e-9))
        return {
            "received": self.received,
            "rate_hz": (self.received - 1) / span if span > 0 else None,
            "dropped": self.dropped,
            "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
            "skew_mean_ms": float(skews.mean() * 1e3) if len(skews) else None,
            "skew_max_ms": float(skews.max() * 1e3) if len(skews) else None,
            "skew_drift": drift,
        }


class Stream:
    """A short time-ordered buffer of one topic's (stamp, value)."""

    def __init__(self, name: str, max_skew: float, history: float = 2.0) -> None:
        self.name = name
        self.max_skew = max_skew
        self.history = history  # s of messages kept behind the newest
        self._stamps: deque[float] = deque()
        self._values: deque[Any] = deque()
        self.quality = StreamQuality()
        self._last_used: float | None = None

    @property
    def newest_stamp(self) -> float | None:
        return self._stamps[-1] if self._stamps else None

    def add(self, stamp: float, value: Any) -> None:
        q = self.quality
        if self._stamps and stamp <= self._stamps[-1]:
            q.out_of_order += 1
            return
        self._stamps.append(stamp)
        self._values.append(value)
        q.received += 1
        q.first_stamp = stamp if q.first_stamp is None else q.first_stamp
        q.last_stamp = stamp
        while len(self._stamps) > 2 and self._stamps[0] < stamp - self.history:
            self._stamps.popleft()
            self._values.popleft()

    def at(self, t: float) -> tuple[float, Any] | None:
        """The newest message stamped at or before `t` and within `max_skew` of it, counting quality."""
        i = bisect_right(self._stamps, t + 1e-9) - 1
        q = self.quality
        if i < 0 or t - self._stamps[i] > self.max_skew:
            q.dropped += 1
            return None
        stamp = self._stamps[i]
        q.used += 1
        q.skews.append(t - stamp)
        if self._last_used == stamp:
            q.duplicated += 1
        self._last_used = stamp
        return stamp, self._values[i]

    def reset_quality(self) -> None:
        self.quality = StreamQuality()
        self._last_used = None


class Timeline:
    """Named streams sampled together at `fps`; a tick is complete when every required stream has a value."""

    def __init__(self, fps: float) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = fps
        self.streams: dict[str, Stream] = {}
        self.required: set[str] = set()

    def add_stream(self, name: str, max_skew: float, required: bool = True, history: float = 2.0) -> Stream:
        stream = self.streams[name] = Stream(name, max_skew, history)
        if required:
            self.required.add(name)
        return stream

    def add(self, name: str, stamp: float, value: Any) -> None:
        self.streams[name].add(stamp, value)

    def ready(self, t: float) -> bool:
        """Every required stream has a message stamped at or after `t`: nothing stamped before `t` can
        still arrive (streams are in order), so tick `t` can be taken without waiting longer."""
        return all(
            (last := self.streams[name].quality.last_stamp) is not None and last >= t - 1e-9
            for name in self.required
        )

    def received_until(self) -> float | None:
        """The stamp up to which every required stream has delivered (the oldest of their newest
        stamps); None until each has delivered once. A lockstep twin paces itself on it."""
        newest = [self.streams[name].newest_stamp for name in self.required]
        return None if not newest or None in newest else min(newest)

    def sample(self, t: float) -> tuple[dict[str, Any], list[str]]:
        """({stream: value} of the newest messages at tick `t`, [required streams that had none])."""
        values: dict[str, Any] = {}
        missing = []
        for name, stream in self.streams.items():
            got = stream.at(t)
            if got is None:
                if name in self.required:
                    missing.append(name)
            else:
                values[name] = got[1]
        return values, missing

    def reset_quality(self) -> None:
        for stream in self.streams.values():
            stream.reset_quality()

    def quality(self, duration: float) -> dict[str, dict]:
        return {name: s.quality.summary(duration) for name, s in self.streams.items()}
