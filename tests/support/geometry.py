"""Geometry shared by the camera tests."""

from __future__ import annotations

import numpy as np


def hull_centroid(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Area centroid and area of the convex hull of 2-D points (monotone chain + shoelace)."""
    pts = sorted(map(tuple, points))

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    poly = np.array(lower[:-1] + upper[:-1])
    x, y = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    c = x * y1 - x1 * y
    area = c.sum() / 2
    return np.array([((x + x1) * c).sum(), ((y + y1) * c).sum()]) / (6 * area), abs(area)
