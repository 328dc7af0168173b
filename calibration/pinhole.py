"""Pinhole camera matrices in the ROS/OpenCV convention (integer pixel coordinates at pixel centres)."""

from __future__ import annotations

import math

import numpy as np


def intrinsics_from_fovy(width: int, height: int, fovy_deg: float) -> np.ndarray:
    """K of a camera given by its vertical field of view, as MuJoCo renders it.

    MuJoCo renders through a symmetric OpenGL frustum with square pixels, so
    fy = fx = (height / 2) / tan(fovy / 2) and the optical axis hits the middle of the viewport, i.e. pixel
    *edge* coordinate (width / 2, height / 2). ROS (like OpenCV) puts integer coordinates at pixel *centres*,
    so the principal point is cx = (width - 1) / 2, cy = (height - 1) / 2 - the same convention as
    dm_control's ``Camera.matrix``. Checked by rendering (tests/test_conversions.py, tests/test_twin.py).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    fovy = float(fovy_deg)
    if not 0.0 < fovy < 180.0:
        raise ValueError(f"fovy must be in (0, 180) degrees, got {fovy_deg}")
    f = (height / 2.0) / math.tan(math.radians(fovy) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
