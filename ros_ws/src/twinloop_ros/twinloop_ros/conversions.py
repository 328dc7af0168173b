"""Message <-> numpy conversions shared by every twinloop node.

Why one module: the twin, the drivers, the policy server and the recorder must agree byte for byte on how an
Image, a JointState or a JointTrajectory maps to arrays, or sim and hardware drift apart. These are pure
functions: no node, no ``rclpy.init()``, so they are unit-tested without a ROS graph.

Conventions (decided here, relied on elsewhere):
- Time: ``builtin_interfaces/Time`` <-> float seconds, rounded to the nearest nanosecond. Conversions from a
  message to float are correctly rounded (integer division), so sim time and durations round-trip exactly;
  wall-clock epoch stamps (~1.7e9 s) cannot hold nanoseconds in a float64 (spacing ~240 ns) and round-trip
  to within ~120 ns. Use :func:`stamp_to_nanoseconds` where exactness matters (keys, ordering).
- Images keep the channel order of their encoding: ``bgr8`` decodes to B, G, R and ``rgb8`` to R, G, B. No
  silent colour conversion; callers that need RGB from a BGR camera convert explicitly (``arr[..., ::-1]``).
- Single-channel encodings decode to (H, W), multi-channel ones to (H, W, C). Decoded arrays are always
  C-contiguous and native-endian. A packed, native-endian message decodes zero-copy (a writable view of
  ``msg.data``, like cv_bridge); row padding or big-endian data force a copy; ``copy=True`` always copies.
- Encoded images are little-endian (``is_bigendian = 0``) with ``step = width * channels * itemsize``.
- Malformed input raises ``ValueError`` with a one-line message, never a bare numpy error.
"""

from __future__ import annotations

import array as pyarray
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from twinloop.calibration.pinhole import intrinsics_from_fovy
from twinloop.hardware.executor import TrajectoryChunk

__all__ = [
    "SUPPORTED_ENCODINGS",
    "camera_info_from_fovy",
    "camera_info_from_intrinsics",
    "chunk_to_trajectory",
    "duration_to_seconds",
    "encoding_info",
    "image_to_numpy",
    "intrinsics_from_camera_info",
    "joint_state_to_numpy",
    "numpy_to_image",
    "numpy_to_joint_state",
    "seconds_to_duration",
    "seconds_to_stamp",
    "stamp_to_nanoseconds",
    "stamp_to_seconds",
    "trajectory_to_chunk",
]

_NS_PER_S = 1_000_000_000
_INT32_MAX = 2**31 - 1
_UINT32_MAX = 2**32 - 1

StampLike = Time | float | int | None


# ---------------------------------------------------------------------------------------------------------
# time
# ---------------------------------------------------------------------------------------------------------
def stamp_to_nanoseconds(stamp: Any) -> int:
    """Exact integer nanoseconds of a Time/Duration message (or an ``rclpy.time.Time``)."""
    if hasattr(stamp, "nanoseconds"):  # rclpy.time.Time / rclpy.duration.Duration
        return int(stamp.nanoseconds)
    return int(stamp.sec) * _NS_PER_S + int(stamp.nanosec)


def stamp_to_seconds(stamp: Any) -> float:
    """Seconds as a float, correctly rounded.

    Python's int/int true division is correctly rounded, so ``sec + nanosec * 1e-9`` style drift (two
    roundings) cannot happen: 1234 s + 1 ns gives the float nearest to 1234.000000001.
    """
    return stamp_to_nanoseconds(stamp) / _NS_PER_S


def _split_seconds(t: float, what: str) -> tuple[int, int]:
    """(sec, nanosec) with 0 <= nanosec < 1e9, nanosec the nearest nanosecond to the float's exact value.

    ``t - floor(t)`` is exact in binary floating point, so only the fraction is scaled: splitting first
    avoids the precision loss of ``round(t * 1e9)`` for large t (1e18 ns does not fit a float's 53 bits).
    """
    try:
        t = float(t)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of seconds, got {t!r}") from None
    if not math.isfinite(t):
        raise ValueError(f"{what} must be finite, got {t}")
    sec = math.floor(t)
    nanosec = round((t - sec) * _NS_PER_S)
    if nanosec >= _NS_PER_S:  # the fraction rounded up to a whole second
        sec += 1
        nanosec -= _NS_PER_S
    if not -_INT32_MAX - 1 <= sec <= _INT32_MAX:
        raise ValueError(f"{what} {t} s does not fit the int32 seconds of builtin_interfaces")
    return int(sec), int(nanosec)


def seconds_to_stamp(t: float) -> Time:
    """A ``builtin_interfaces/Time`` for ``t`` seconds (nearest nanosecond); negative times are rejected."""
    if isinstance(t, bool):
        raise ValueError(f"stamp must be a number of seconds, got {t!r}")
    sec, nanosec = _split_seconds(t, "stamp")
    if sec < 0:
        raise ValueError(f"stamp must be >= 0 seconds, got {t}")
    return Time(sec=sec, nanosec=nanosec)


def duration_to_seconds(duration: Any) -> float:
    """Seconds of a ``builtin_interfaces/Duration`` (negative durations keep ROS's sec + nanosec meaning)."""
    return stamp_to_seconds(duration)


def seconds_to_duration(t: float) -> Duration:
    """A ``builtin_interfaces/Duration``; negative values get sec < 0 and 0 <= nanosec < 1e9 (ROS rule)."""
    sec, nanosec = _split_seconds(t, "duration")
    return Duration(sec=sec, nanosec=nanosec)


def _to_time(stamp: Any) -> Time:
    """Normalise the ``stamp=`` argument: None -> zero ("unset"), seconds, Time message or rclpy Time.

    A fresh Time is always returned so two messages never share (and later mutate) one stamp object.
    """
    if stamp is None:
        return Time()
    if isinstance(stamp, Time):
        return Time(sec=stamp.sec, nanosec=stamp.nanosec)
    if hasattr(stamp, "to_msg") and hasattr(stamp, "nanoseconds"):  # rclpy.time.Time
        msg = stamp.to_msg()
        return Time(sec=msg.sec, nanosec=msg.nanosec)
    if isinstance(stamp, int | float | np.integer | np.floating) and not isinstance(stamp, bool):
        return seconds_to_stamp(float(stamp))
    raise ValueError(f"stamp must be None, seconds or a builtin_interfaces Time, got {type(stamp).__name__}")


def _header(stamp: Any, frame_id: str) -> Header:
    if not isinstance(frame_id, str):
        raise ValueError(f"frame_id must be a str, got {type(frame_id).__name__}")
    return Header(stamp=_to_time(stamp), frame_id=frame_id)


# ---------------------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------------------
# encoding -> (numpy dtype, channels), after sensor_msgs/image_encodings.hpp
_FIXED_ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "rgb16": ("u2", 3),
    "bgr16": ("u2", 3),
    "rgba16": ("u2", 4),
    "bgra16": ("u2", 4),
    "mono8": ("u1", 1),
    "mono16": ("u2", 1),
    # raw Bayer mosaics are one channel; demosaicing is the consumer's job
    **{f"bayer_{p}8": ("u1", 1) for p in ("rggb", "bggr", "gbrg", "grbg")},
    **{f"bayer_{p}16": ("u2", 1) for p in ("rggb", "bggr", "gbrg", "grbg")},
    # packed YUV 4:2:2 is two bytes per pixel (what cv_bridge calls CV_8UC2)
    "yuv422": ("u1", 2),
    "yuv422_yuy2": ("u1", 2),
}
_GENERIC_ENCODING = re.compile(r"^(8U|8S|16U|16S|32S|32F|64F)C([1-9][0-9]{0,2})$")
_GENERIC_DTYPES = {"8U": "u1", "8S": "i1", "16U": "u2", "16S": "i2", "32S": "i4", "32F": "f4", "64F": "f8"}
_MAX_CHANNELS = 512  # OpenCV's CV_CN_MAX; the generic "<depth>C<n>" encodings allow any n up to it

SUPPORTED_ENCODINGS: tuple[str, ...] = (
    *_FIXED_ENCODINGS,
    *(f"{d}C{n}" for d in _GENERIC_DTYPES for n in (1, 2, 3, 4)),
)


def encoding_info(encoding: str) -> tuple[np.dtype, int]:
    """(native numpy dtype, channels) of a sensor_msgs/Image encoding; ValueError if unsupported."""
    if isinstance(encoding, str):
        fixed = _FIXED_ENCODINGS.get(encoding)
        if fixed is not None:
            return np.dtype(fixed[0]), fixed[1]
        m = _GENERIC_ENCODING.match(encoding)
        if m and int(m.group(2)) <= _MAX_CHANNELS:
            return np.dtype(_GENERIC_DTYPES[m.group(1)]), int(m.group(2))
    raise ValueError(
        f"unsupported image encoding {encoding!r}; supported: {', '.join(_FIXED_ENCODINGS)}, "
        "and <8U|8S|16U|16S|32S|32F|64F>C<n>"
    )


def _image_shape(height: int, width: int, channels: int) -> tuple[int, ...]:
    return (height, width) if channels == 1 else (height, width, channels)


def image_to_numpy(msg: Image, *, copy: bool = False) -> np.ndarray:
    """Decode a sensor_msgs/Image to (H, W) or (H, W, C), channels in the encoding's order.

    Handles row padding (``step`` larger than a packed row, including steps that are not a multiple of the
    element size) and big-endian data. The result is C-contiguous and native-endian; it is a zero-copy view
    of ``msg.data`` when the message is already packed and native-endian and ``copy`` is False (writable,
    like cv_bridge's: writing to it changes the message; pass ``copy=True`` to own the pixels).
    """
    dtype, channels = encoding_info(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ValueError(
            f"malformed Image: step {step} < one {msg.encoding} row of width {width} ({row_bytes} bytes)"
        )
    try:
        buf = memoryview(msg.data).cast("B")
    except TypeError:
        try:  # a plain list of ints (a hand-built message): still decodable
            buf = memoryview(bytes(msg.data))
        except (TypeError, ValueError):
            raise ValueError("malformed Image: data is not a byte buffer") from None
    expected = step * height
    if buf.nbytes != expected:
        raise ValueError(
            f"malformed Image: data has {buf.nbytes} bytes, expected step*height = {step}*{height}"
            f" = {expected}"
        )
    shape = _image_shape(height, width, channels)
    if height == 0 or width == 0:
        return np.empty(shape, dtype=dtype)

    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    raw = np.frombuffer(buf, dtype=np.uint8)
    if step == row_bytes:
        out = raw.view(wire).reshape(shape)
    else:
        # drop the padding of each row; the view may be unaligned when step % itemsize != 0
        out = raw.reshape(height, step)[:, :row_bytes].view(wire).reshape(shape)
    if not wire.isnative:
        return out.astype(dtype, order="C")  # byte-swap into a fresh, aligned, native array
    if copy or step != row_bytes:
        return np.array(out, dtype=dtype, order="C", copy=True)
    return out


def numpy_to_image(array: np.ndarray, encoding: str, stamp: StampLike = None, frame_id: str = "") -> Image:
    """Encode an array as a sensor_msgs/Image (little-endian, packed rows).

    The dtype must match the encoding exactly (no silent casting: a float image sent as ``rgb8`` is a bug
    upstream). Single-channel encodings take (H, W) or (H, W, 1); multi-channel ones take (H, W, C).
    The message is built with ``check_fields=True`` so that the frame is copied once (see below); reassign
    its ``data`` only with an ``array.array('B')``.
    """
    dtype, channels = encoding_info(encoding)
    arr = np.asarray(array)
    if arr.dtype.kind != dtype.kind or arr.dtype.itemsize != dtype.itemsize:
        raise ValueError(f"{encoding} needs {dtype.name} data, got {arr.dtype.name}")
    if channels == 1:
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim != 2:
            raise ValueError(f"{encoding} needs an (H, W) array, got shape {arr.shape}")
    elif arr.ndim != 3 or arr.shape[2] != channels:
        raise ValueError(f"{encoding} needs an (H, W, {channels}) array, got shape {arr.shape}")
    height, width = int(arr.shape[0]), int(arr.shape[1])
    step = width * channels * dtype.itemsize
    if height > _UINT32_MAX or step > _UINT32_MAX:
        raise ValueError(f"image of shape {arr.shape} is too large for sensor_msgs/Image")
    # little-endian, contiguous; no-ops (no copy) for the usual native little-endian C-ordered frame
    arr = np.ascontiguousarray(arr, dtype=dtype.newbyteorder("<"))

    # How data gets into the message, measured for a 640x480x3 uint8 frame (this dev image, Python 3.12,
    # rclpy 7.1 generated setters; the Jazzy default is ROS_PYTHON_CHECK_FIELDS unset = no field checks):
    #   msg.data = arr.tobytes()                   37 us in a publish loop; 45 ms with field checks on
    #                                              (the setter then validates every byte as a Python int)
    #   msg.data = array.array filled by frombytes 36 us in a publish loop, up to 0.85 ms in a tight loop:
    #                                              with checks off the setter always copies once more, and
    #                                              two 900 kB buffers per frame make glibc trim and re-fault
    #   the same on an Image(check_fields=True)    21 us in both: a checked setter stores an array.array
    #                                              as is, so the frame is copied exactly once
    #   msg.data = arr.ravel().tolist()            15 ms;  Image(data=...) copies twice (ctor + setter)
    # Hence the check_fields=True message below. Its setters validate later assignments too, so code that
    # reassigns `data` should assign an array.array('B') (a bytes object there costs ~45 ms).
    msg = Image(check_fields=True)
    msg.header = _header(stamp, frame_id)
    msg.height = height
    msg.width = width
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = step
    # the uint8 view keeps the buffer export valid for any dtype (numpy refuses non-native byte orders)
    data = pyarray.array("B")
    data.frombytes(arr.reshape(-1).view(np.uint8))
    msg.data = data
    return msg


# ---------------------------------------------------------------------------------------------------------
# joint states
# ---------------------------------------------------------------------------------------------------------
def _names(names: Any, what: str) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, Sequence | np.ndarray):
        raise ValueError(f"{what} must be a sequence of joint names, got {type(names).__name__}")
    out = tuple(names)
    for n in out:
        if not isinstance(n, str):
            raise ValueError(f"{what} must all be str, got {n!r}")
    if len(set(out)) != len(out):
        dupes = sorted({n for n in out if out.count(n) > 1})
        raise ValueError(f"{what} contain duplicates: {', '.join(dupes)}")
    return out


def _vector(values: Any, n: int, what: str, allow_empty: bool) -> np.ndarray:
    """A float64 (n,) copy of ``values``; ``allow_empty`` also accepts a zero-length vector."""
    try:
        vec = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numeric, got {type(values).__name__}") from None
    if vec.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {vec.shape}")
    if vec.shape[0] != n and not (allow_empty and vec.shape[0] == 0):
        allowed = f"{n} (or 0)" if allow_empty else f"{n}"
        raise ValueError(f"{what} has {vec.shape[0]} values, expected {allowed} (one per joint)")
    return vec


def _double_array(vec: np.ndarray) -> pyarray.array:
    # array.array is what the generated setters store as is when field checks are on (see numpy_to_image)
    out = pyarray.array("d")
    out.frombytes(np.ascontiguousarray(vec, dtype=np.float64).view(np.uint8))
    return out


def joint_state_to_numpy(
    msg: JointState,
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    """(names, position, velocity, effort) as float64 copies.

    Position must have one value per name (every consumer here needs it); velocity and effort may be
    empty, as the JointState definition allows.
    """
    names = _names(list(msg.name), "JointState names")
    n = len(names)
    position = _vector(msg.position, n, "JointState position", allow_empty=False)
    velocity = _vector(msg.velocity, n, "JointState velocity", allow_empty=True)
    effort = _vector(msg.effort, n, "JointState effort", allow_empty=True)
    return names, position, velocity, effort


def numpy_to_joint_state(
    names: Sequence[str],
    position: Any,
    velocity: Any = None,
    effort: Any = None,
    stamp: StampLike = None,
) -> JointState:
    """A JointState; velocity/effort None -> empty arrays. Lengths must match ``names``."""
    names_t = _names(names, "joint names")
    n = len(names_t)
    msg = JointState()
    msg.header = _header(stamp, "")
    msg.name = list(names_t)
    msg.position = _double_array(_vector(position, n, "position", allow_empty=False))
    msg.velocity = _double_array(_vector(() if velocity is None else velocity, n, "velocity", True))
    msg.effort = _double_array(_vector(() if effort is None else effort, n, "effort", True))
    return msg


# ---------------------------------------------------------------------------------------------------------
# joint trajectories (action chunks)
# ---------------------------------------------------------------------------------------------------------
def trajectory_to_chunk(msg: JointTrajectory) -> TrajectoryChunk:
    """A JointTrajectory as the executor's TrajectoryChunk (positions only).

    Only the shape is validated here; timing rules (increasing times, chunk not in the past, finite values)
    are the executor's, which rejects with a reason. Note: a zero header stamp means "start now" to
    ros2_control, but here it is taken literally as t = 0 (the executor will treat it as late).
    """
    names = _names(list(msg.joint_names), "JointTrajectory joint_names")
    if not names:
        raise ValueError("JointTrajectory has no joint_names")
    points = msg.points
    if len(points) == 0:
        raise ValueError("JointTrajectory has no points")
    n_joints = len(names)
    positions = np.empty((len(points), n_joints), dtype=np.float64)
    times = np.empty(len(points), dtype=np.float64)
    for i, point in enumerate(points):
        if len(point.positions) != n_joints:
            raise ValueError(
                f"JointTrajectory point {i} has {len(point.positions)} positions for {n_joints} joint_names"
            )
        positions[i] = point.positions
        times[i] = duration_to_seconds(point.time_from_start)
    return TrajectoryChunk(
        joint_names=names,
        stamp=stamp_to_seconds(msg.header.stamp),
        time_from_start=times,
        positions=positions,
    )


def chunk_to_trajectory(chunk: TrajectoryChunk, frame_id: str = "") -> JointTrajectory:
    """A JointTrajectory from a chunk: header.stamp = chunk.stamp, positions only (velocities left empty,
    so ros2_control's joint_trajectory_controller interpolates positions itself)."""
    names = _names(chunk.joint_names, "chunk joint_names")
    positions = np.asarray(chunk.positions, dtype=np.float64)
    times = np.asarray(chunk.time_from_start, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != len(names):
        raise ValueError(f"chunk positions must be (N, {len(names)}), got shape {positions.shape}")
    if times.shape != (positions.shape[0],):
        raise ValueError(f"chunk time_from_start must be ({positions.shape[0]},), got shape {times.shape}")
    if positions.shape[0] == 0:
        raise ValueError("chunk has no points")
    msg = JointTrajectory()
    msg.header = _header(float(chunk.stamp), frame_id)
    msg.joint_names = list(names)
    points = []
    for row, t in zip(positions, times, strict=True):
        point = JointTrajectoryPoint()
        point.positions = _double_array(row)
        point.time_from_start = seconds_to_duration(float(t))
        points.append(point)
    msg.points = points
    return msg


# ---------------------------------------------------------------------------------------------------------
# camera info
# ---------------------------------------------------------------------------------------------------------
# Coefficient counts that ROS tools (image_geometry, camera_calibration) expect for zero distortion.
_DEFAULT_D_LENGTH = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}


def _image_size(width: Any, height: Any) -> tuple[int, int]:
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError):
        raise ValueError(f"image size must be integers, got {width!r} x {height!r}") from None
    if w != width or h != height or not (0 < w <= _UINT32_MAX and 0 < h <= _UINT32_MAX):
        raise ValueError(f"image size must be positive integers, got {width!r} x {height!r}")
    return w, h


def camera_info_from_intrinsics(
    width: int,
    height: int,
    K: Any,  # noqa: N803 - the conventional name of the camera matrix
    D: Any = None,  # noqa: N803
    distortion_model: str = "plumb_bob",
    stamp: StampLike = None,
    frame_id: str = "",
) -> CameraInfo:
    """A monocular CameraInfo: k = K, r = identity, p = [K | 0]; D None -> zero distortion.

    P = [K | 0] is right for an undistorted (or simulated) camera; for a real lens, calibration should
    supply the rectified P instead.
    """
    w, h = _image_size(width, height)
    try:
        k = np.array(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("K must be a numeric 3x3 matrix") from None
    if k.shape != (3, 3) or not np.all(np.isfinite(k)):
        raise ValueError(f"K must be a finite 3x3 matrix, got shape {k.shape}")
    if k[0, 0] <= 0 or k[1, 1] <= 0 or not np.array_equal(k[2], [0.0, 0.0, 1.0]) or k[1, 0] != 0:
        raise ValueError(f"K is not a pinhole camera matrix [[fx,s,cx],[0,fy,cy],[0,0,1]]: {k.tolist()}")
    if D is None:
        d = np.zeros(_DEFAULT_D_LENGTH.get(distortion_model, 0))
    else:
        try:
            d = np.array(D, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError("D must be a numeric vector of distortion coefficients") from None
        if not np.all(np.isfinite(d)):
            raise ValueError("D must be finite")
    msg = CameraInfo()
    msg.header = _header(stamp, frame_id)
    msg.width = w
    msg.height = h
    msg.distortion_model = str(distortion_model)
    msg.d = _double_array(d)
    msg.k = k.reshape(9)
    msg.r = np.eye(3).reshape(9)
    msg.p = np.hstack([k, np.zeros((3, 1))]).reshape(12)
    return msg


def intrinsics_from_camera_info(msg: CameraInfo) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(width, height, K 3x3, D) from a CameraInfo; an all-zero K (ROS's "uncalibrated") is an error."""
    k = np.array(msg.k, dtype=np.float64)
    if k.size != 9:
        raise ValueError(f"malformed CameraInfo: k has {k.size} values, expected 9")
    k = k.reshape(3, 3)
    if not np.any(k):
        raise ValueError("CameraInfo is uncalibrated (K is all zeros)")
    return int(msg.width), int(msg.height), k, np.array(msg.d, dtype=np.float64)


def camera_info_from_fovy(
    width: int, height: int, fovy_deg: float, stamp: StampLike = None, frame_id: str = ""
) -> CameraInfo:
    """The CameraInfo of a MuJoCo camera given by its vertical field of view (``cam_fovy``, degrees).

    K as `twinloop.calibration.pinhole.intrinsics_from_fovy` (principal point ((W-1)/2, (H-1)/2)).
    Cameras defined with MuJoCo's ``focal``/``principal``/``sensorsize`` attributes are not covered: build
    their K with :func:`camera_info_from_intrinsics`.
    """
    w, h = _image_size(width, height)
    k = intrinsics_from_fovy(w, h, fovy_deg)
    return camera_info_from_intrinsics(w, h, k, stamp=stamp, frame_id=frame_id)
