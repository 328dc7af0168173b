"""The policy interface every policy implements, and the registry the policy server loads them from.

Modelled on LeRobot's split (a config dataclass + a model with `reset` / `select_action`) and openpi's
thin client: the server hands a policy one `Observation` and gets back one action chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class CameraModel:
    """Pinhole intrinsics and the world-from-camera pose in the OpenCV convention (z forward, y down)."""

    K: np.ndarray  # 3x3
    rotation: np.ndarray  # 3x3, world-from-camera
    position: np.ndarray  # (3,), camera centre in the world (robot base) frame


@dataclass
class Observation:
    stamp: float  # time of the newest message used (seconds, the graph's clock)
    joint_names: tuple[str, ...]
    state: np.ndarray  # joint positions, in joint_names order
    images: dict[str, np.ndarray] = field(default_factory=dict)  # camera name -> HxWx3 uint8 RGB
    cameras: dict[str, CameraModel] = field(default_factory=dict)
    instruction: str = ""


@dataclass(frozen=True)
class PolicyConfig:
    """What every policy shares: its output joints and the chunk layout."""

    joint_names: tuple[str, ...]
    horizon: int = 16  # points per chunk
    dt: float = 0.1  # s between chunk points


class Policy(Protocol):
    config: PolicyConfig

    def reset(self) -> None:
        """Forget episode state (history, warm starts)."""

    def predict_chunk(self, obs: Observation) -> np.ndarray:
        """An action chunk of shape (horizon, len(joint_names)); point i is due at obs.stamp + i * dt."""


_REGISTRY: dict[str, Callable[..., Policy]] = {}


def register_policy(name: str) -> Callable[[Callable[..., Policy]], Callable[..., Policy]]:
    def wrap(factory: Callable[..., Policy]) -> Callable[..., Policy]:
        _REGISTRY[name] = factory
        return factory

    return wrap


def policy_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def make_policy(name: str, **kwargs: Any) -> Policy:
    """Build a registered policy by name; unknown names give a one-line ValueError."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown policy '{name}' (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name](**kwargs)


def _load_builtin() -> None:
    from twinloop.policies import scripted_reach  # noqa: F401  (registers itself)
