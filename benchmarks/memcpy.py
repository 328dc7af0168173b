"""The floor for moving one camera frame: a plain memory copy of a 640x480 rgb8 frame."""

from __future__ import annotations

import time

import numpy as np

from twinloop.benchmarks.common import entry, percentile, progress

FRAME_SHAPE = (480, 640, 3)
NAME = "memcpy.640x480_rgb8"


def bench_memcpy(repeats: int = 2000) -> list[dict]:
    """p50/p99 of `np.copyto` of one 921,600-byte frame into a preallocated frame.

    The source and destination stay the same, so this is the cache-warm best case: the number a
    zero-overhead transport between two processes could at best approach (one copy into shared memory).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    progress(f"{NAME}: {repeats} copies of a {FRAME_SHAPE} uint8 frame")
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, size=FRAME_SHAPE, dtype=np.uint8)
    dst = np.empty_like(src)
    for _ in range(min(50, repeats)):  # fault in the destination pages, warm the caches
        np.copyto(dst, src)
    samples = np.empty(repeats)
    clock = time.perf_counter_ns
    for i in range(repeats):
        t0 = clock()
        np.copyto(dst, src)
        samples[i] = clock() - t0
    samples_ms = samples / 1e6
    notes = f"np.copyto of {src.nbytes} bytes, cache-warm, {repeats} repeats"
    return [
        entry(f"{NAME}.p50_ms", percentile(samples_ms, 50), "ms", notes=notes),
        entry(f"{NAME}.p99_ms", percentile(samples_ms, 99), "ms", notes=notes),
    ]
