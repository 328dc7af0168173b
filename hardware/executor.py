"""The trajectory executor: one implementation, used by the twin and by every arm driver.

It turns action chunks (joint trajectories stamped with the time of their first point) into one joint
position setpoint per control tick. Why it is shared: sim and hardware must execute a chunk identically,
or sim evaluation says nothing about the robot.

Rules (ARCHITECTURE.md, "Control timing"):
- points already in the past are skipped: a chunk stamped at observation time t and arriving late is
  entered at `now`, not at its first point (latency compensation);
- a newly accepted chunk is cross-faded in over `crossfade_s` from the trajectory that was running;
- setpoints are clamped to joint position limits and rate-limited to joint velocity limits;
- with no valid command newer than `command_timeout`, the executor holds the last setpoint;
- NaN/inf, wrong joint names, non-increasing times or a chunk entirely in the past are rejected with a
  reason and never executed.
Details the rules leave open, decided here:
- before its first point a chunk commands its first point, after its last point its last point (until the
  timeout, which runs from the chunk's acceptance, so a chunk longer than `command_timeout` is cut there);
- a single-point chunk is a "go to" command: it is accepted even when its one point is in the past (it is the
  target, not a skipped point) and it counts no late point;
- a chunk arriving mid-crossfade fades in from the blend that was running, and one arriving while holding
  (or after the timeout) fades in from the held setpoint;
- the first tick after `reset` (and any tick with a non-increasing time) moves nothing: dt = 0.
Time is whatever clock the caller uses (wall time on robots, sim time in the twin), in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np


@dataclass(frozen=True)
class JointLimits:
    lower: np.ndarray  # rad (or m for prismatic joints)
    upper: np.ndarray
    velocity: np.ndarray  # per second; inf where unlimited

    def __post_init__(self) -> None:
        if not (len(self.lower) == len(self.upper) == len(self.velocity)):
            raise ValueError("joint limit arrays differ in length")
        if np.any(np.asarray(self.lower) > np.asarray(self.upper)):
            raise ValueError("a lower joint limit exceeds its upper limit")


@dataclass(frozen=True)
class TrajectoryChunk:
    """One action chunk: positions[i] is due at stamp + time_from_start[i] (seconds)."""

    joint_names: tuple[str, ...]
    stamp: float
    time_from_start: np.ndarray  # (N,)
    positions: np.ndarray  # (N, J)

    @property
    def times(self) -> np.ndarray:
        return self.stamp + self.time_from_start


@dataclass
class ExecutorStats:
    accepted: int = 0
    rejected: int = 0
    late_points_skipped: int = 0
    holds: int = 0
    clamped_ticks: int = 0
    last_rejection: str = ""
    reasons: dict[str, int] = field(default_factory=dict)


def interpolate(chunk: TrajectoryChunk, now: float) -> np.ndarray:
    """Piecewise-linear position at `now`; before the first point -> first point, after the last -> last."""
    times = chunk.times
    if now <= times[0]:
        return chunk.positions[0].copy()
    if now >= times[-1]:
        return chunk.positions[-1].copy()
    i = int(np.searchsorted(times, now, side="right")) - 1
    alpha = (now - times[i]) / (times[i + 1] - times[i])
    return (1.0 - alpha) * chunk.positions[i] + alpha * chunk.positions[i + 1]


def _blend(
    active: TrajectoryChunk,
    previous: Callable[[float], np.ndarray] | None,
    fade_from: np.ndarray | None,
    fade_start: float,
    crossfade_s: float,
    now: float,
) -> np.ndarray:
    """`active` at `now`, cross-faded in from `previous` (a running trajectory) or else `fade_from`."""
    target = interpolate(active, now)
    # clamped to [0, 1]: a tick stamped before the chunk's acceptance must not extrapolate the fade
    fade = min(max((now - fade_start) / crossfade_s, 0.0), 1.0) if crossfade_s > 0 else 1.0
    if fade < 1.0:
        start = previous(now) if previous is not None else fade_from
        if start is not None:
            target = (1.0 - fade) * start + fade * target
    return target


class TrajectoryExecutor:
    """Interpolates the active chunk at the control rate; see the module docstring for the rules."""

    def __init__(
        self,
        joint_names: list[str] | tuple[str, ...],
        limits: JointLimits,
        command_timeout: float = 0.5,
        crossfade_s: float = 0.1,
    ) -> None:
        self.joint_names = tuple(joint_names)
        if len(self.joint_names) != len(limits.lower):
            raise ValueError("joint_names and limits differ in length")
        self.limits = limits
        self.command_timeout = float(command_timeout)
        self.crossfade_s = float(crossfade_s)
        self.stats = ExecutorStats()
        self._active: TrajectoryChunk | None = None
        # what was running when the active chunk arrived (itself possibly a crossfade), None if holding
        self._previous: Callable[[float], np.ndarray] | None = None
        self._fade_start = -np.inf
        self._fade_from: np.ndarray | None = None
        self._last_valid = -np.inf
        self._setpoint: np.ndarray | None = None
        self._last_tick: float | None = None
        self._holding = True

    # -- state -------------------------------------------------------------------------------------
    def reset(self, position: np.ndarray) -> None:
        """Forget all commands and hold `position` (e.g. the measured joint positions at start-up)."""
        self._active = self._previous = None
        self._setpoint = np.clip(np.asarray(position, float), self.limits.lower, self.limits.upper)
        self._last_valid = -np.inf
        self._last_tick = None
        self._holding = True

    @property
    def holding(self) -> bool:
        return self._holding

    @property
    def setpoint(self) -> np.ndarray | None:
        return None if self._setpoint is None else self._setpoint.copy()

    # -- commands ----------------------------------------------------------------------------------
    def _reject(self, reason: str) -> tuple[bool, str]:
        self.stats.rejected += 1
        self.stats.last_rejection = reason
        key = reason.split(":", 1)[0]
        self.stats.reasons[key] = self.stats.reasons.get(key, 0) + 1
        return False, reason

    def submit(self, chunk: TrajectoryChunk, now: float) -> tuple[bool, str]:
        """Validate and activate a chunk. Returns (accepted, reason); rejected chunks change nothing."""
        names = tuple(chunk.joint_names)
        if set(names) != set(self.joint_names) or len(names) != len(self.joint_names):
            missing = sorted(set(self.joint_names) - set(names))
            extra = sorted(set(names) - set(self.joint_names))
            return self._reject(f"joint names: missing {missing}, unknown {extra}")
        positions = np.asarray(chunk.positions, dtype=float)
        tfs = np.asarray(chunk.time_from_start, dtype=float)
        if (
            tfs.ndim != 1
            or positions.ndim != 2
            or positions.shape[0] == 0
            or positions.shape != (len(tfs), len(names))
        ):
            return self._reject(
                f"shape: positions {positions.shape} vs time_from_start {tfs.shape} x {len(names)} joints"
            )
        if not (np.all(np.isfinite(positions)) and np.all(np.isfinite(tfs)) and np.isfinite(chunk.stamp)):
            return self._reject("non-finite: NaN or inf in the trajectory")
        if np.any(tfs < 0) or np.any(np.diff(tfs) <= 0):
            return self._reject("time_from_start: must be >= 0 and strictly increasing")
        if chunk.stamp + tfs[-1] < now and len(tfs) > 1:
            return self._reject(f"late: last point {now - chunk.stamp - tfs[-1]:.3f} s in the past")
        order = [names.index(n) for n in self.joint_names]
        ordered = TrajectoryChunk(self.joint_names, float(chunk.stamp), tfs, positions[:, order])
        if len(tfs) > 1:  # a single point is a "go to" target, never skipped
            self.stats.late_points_skipped += int(np.sum(ordered.times < now))
        timed_out = now - self._last_valid > self.command_timeout  # a hold step() has not applied yet
        if self._holding or self._active is None or timed_out:
            self._previous = None  # fade in from the held setpoint
        elif self.crossfade_s <= 0 or now - self._fade_start >= self.crossfade_s:
            self._previous = partial(interpolate, self._active)
        else:  # mid-crossfade: fade in from the blend that is running, not from its target chunk
            self._previous = partial(
                _blend, self._active, self._previous, self._fade_from, self._fade_start, self.crossfade_s
            )
        self._active = ordered
        self._fade_start = now
        self._fade_from = self._setpoint.copy() if self._setpoint is not None else None
        self._last_valid = now
        self._holding = False
        self.stats.accepted += 1
        return True, "accepted"

    # -- control tick ------------------------------------------------------------------------------
    def step(self, now: float) -> np.ndarray:
        """The joint position setpoint for this control tick."""
        if self._setpoint is None:
            raise RuntimeError("TrajectoryExecutor.reset(position) must be called before step()")
        dt = 0.0 if self._last_tick is None else max(0.0, now - self._last_tick)
        self._last_tick = now
        if self._active is None or now - self._last_valid > self.command_timeout:
            if not self._holding:
                self.stats.holds += 1
                self._holding = True
                self._active = self._previous = None
            return self._setpoint.copy()

        fade_from = self._fade_from if self._fade_from is not None else self._setpoint
        target = _blend(self._active, self._previous, fade_from, self._fade_start, self.crossfade_s, now)

        clamped = np.clip(target, self.limits.lower, self.limits.upper)
        velocity = np.asarray(self.limits.velocity, dtype=float)
        unlimited = np.isinf(velocity)
        # inf * 0 would be NaN (and a RuntimeWarning) on a dt = 0 tick: compute finite limits only
        max_step = np.where(unlimited, np.inf, np.where(unlimited, 0.0, velocity) * dt)
        clamped = np.clip(clamped, self._setpoint - max_step, self._setpoint + max_step)
        if not np.allclose(clamped, target):
            self.stats.clamped_ticks += 1
        self._setpoint = clamped
        return clamped.copy()
