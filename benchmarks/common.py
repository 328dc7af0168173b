"""Shared pieces of the benchmarks: the result entry, percentiles, progress output."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

# Every entry of bench.json has these keys (extra context keys such as "notes" may follow).
ENTRY_KEYS = ("name", "value", "unit", "baseline", "ratio")


def entry(name: str, value: float | None, unit: str, baseline: str | None = None, **extra: Any) -> dict:
    """One result row. `ratio` (value / baseline's value) is filled in by the runner once all rows exist."""
    row: dict[str, Any] = {
        "name": name,
        "value": None if value is None else float(value),
        "unit": unit,
        "baseline": baseline,
        "ratio": None,
    }
    row.update({k: v for k, v in extra.items() if v is not None})
    return row


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float | None:
    """The q-th percentile (linear interpolation), or None for an empty sample."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return None
    return float(np.percentile(arr, q))


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stdout, flush=True)
