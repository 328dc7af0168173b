"""Round-trip and malformed-input tests for twinloop_ros.conversions (and the QoS table).

No ROS graph: nothing here calls rclpy.init(). CDR round trips use rclpy.serialization, which needs no
context, so the messages are also checked to survive the wire.
"""

from __future__ import annotations

import array
import math
import os

import numpy as np
import pytest
from builtin_interfaces.msg import Duration, Time
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from twinloop.hardware.executor import TrajectoryChunk
from twinloop_ros import conversions as cv
from twinloop_ros import qos

RNG = np.random.default_rng(1234)


def _wire(msg):
    """The message after a CDR serialize/deserialize round trip (what a subscriber receives)."""
    return deserialize_message(serialize_message(msg), type(msg))


def _random_image(shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return RNG.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def _hand_built_image(rows: list[bytes], height, width, encoding, step, bigendian=0) -> Image:
    msg = Image()
    msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian = height, width, encoding, step, bigendian
    msg.data = array.array("B", b"".join(rows))
    return msg


# ------------------------------------------------------------------------------------------------------
# time
# ------------------------------------------------------------------------------------------------------
def test_stamp_exact_nanoseconds():
    stamp = cv.seconds_to_stamp(1234.000000001)
    assert (stamp.sec, stamp.nanosec) == (1234, 1)
    assert cv.stamp_to_seconds(Time(sec=1234, nanosec=1)) == 1234.000000001
    assert cv.stamp_to_nanoseconds(Time(sec=1234, nanosec=1)) == 1_234_000_000_001
    assert cv.seconds_to_stamp(0.0) == Time(sec=0, nanosec=0)
    assert cv.seconds_to_stamp(12.5) == Time(sec=12, nanosec=500_000_000)
    # a fraction that rounds up to a whole second carries into sec
    assert cv.seconds_to_stamp(6.9999999999) == Time(sec=7, nanosec=0)


def test_stamp_round_trip_is_exact_for_sim_times():
    for ns in RNG.integers(0, 10**15, size=2000):  # up to ~11.6 days of sim time, any nanosecond
        stamp = Time(sec=int(ns // 10**9), nanosec=int(ns % 10**9))
        assert cv.seconds_to_stamp(cv.stamp_to_seconds(stamp)) == stamp


def test_stamp_epoch_times_round_trip_within_float_resolution():
    stamp = Time(sec=1_763_000_000, nanosec=123_456_789)
    back = cv.seconds_to_stamp(cv.stamp_to_seconds(stamp))
    assert back.sec == stamp.sec
    assert abs(back.nanosec - stamp.nanosec) <= 120  # float64 spacing at 1.7e9 s is ~238 ns


@pytest.mark.parametrize("bad", [-1e-9, -5.0, math.nan, math.inf, 2.0**31, "soon", True])
def test_seconds_to_stamp_rejects(bad):
    with pytest.raises(ValueError, match="stamp"):
        cv.seconds_to_stamp(bad)


def test_durations_allow_negative_values_with_ros_convention():
    assert cv.seconds_to_duration(-0.5) == Duration(sec=-1, nanosec=500_000_000)
    assert cv.duration_to_seconds(Duration(sec=-1, nanosec=500_000_000)) == -0.5
    assert cv.seconds_to_duration(1.000000001) == Duration(sec=1, nanosec=1)


def test_stamp_argument_forms():
    import rclpy.time

    frame = np.zeros((2, 2), np.uint8)
    assert cv.numpy_to_image(frame, "mono8").header.stamp == Time()
    assert cv.numpy_to_image(frame, "mono8", stamp=3.25).header.stamp == Time(sec=3, nanosec=250_000_000)
    given = Time(sec=7, nanosec=9)
    msg = cv.numpy_to_image(frame, "mono8", stamp=given)
    assert msg.header.stamp == given and msg.header.stamp is not given  # copied, never shared
    ros_time = rclpy.time.Time(seconds=5, nanoseconds=42)
    assert cv.numpy_to_image(frame, "mono8", stamp=ros_time).header.stamp == Time(sec=5, nanosec=42)
    with pytest.raises(ValueError, match="stamp"):
        cv.numpy_to_image(frame, "mono8", stamp="now")


# ------------------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("encoding", "shape", "dtype"),
    [
        ("rgb8", (48, 64, 3), np.uint8),
        ("bgr8", (48, 64, 3), np.uint8),
        ("rgba8", (48, 64, 4), np.uint8),
        ("mono8", (48, 64), np.uint8),
        ("mono16", (48, 64), np.uint16),
        ("16UC1", (48, 64), np.uint16),
        ("32FC1", (48, 64), np.float32),
        ("64FC1", (48, 64), np.float64),
        ("32FC3", (5, 7, 3), np.float32),
        ("16SC2", (5, 7, 2), np.int16),
    ],
)
def test_image_round_trip(encoding, shape, dtype):
    original = _random_image(shape, dtype)
    msg = cv.numpy_to_image(original, encoding, stamp=1.5, frame_id="cam_optical")
    itemsize = np.dtype(dtype).itemsize
    channels = 1 if len(shape) == 2 else shape[2]
    assert (msg.height, msg.width, msg.encoding) == (shape[0], shape[1], encoding)
    assert msg.step == shape[1] * channels * itemsize
    assert msg.is_bigendian == 0
    assert msg.header.frame_id == "cam_optical"
    for received in (msg, _wire(msg)):
        decoded = cv.image_to_numpy(received)
        assert decoded.dtype == np.dtype(dtype)
        assert decoded.shape == shape
        np.testing.assert_array_equal(decoded, original)


def test_image_640x480_rgb8_round_trip_is_exact_and_zero_copy_on_decode():
    frame = _random_image((480, 640, 3), np.uint8)
    msg = cv.numpy_to_image(frame, "rgb8")
    assert len(msg.data) == 480 * 640 * 3
    decoded = cv.image_to_numpy(msg)
    np.testing.assert_array_equal(decoded, frame)
    assert np.shares_memory(decoded, np.frombuffer(msg.data, np.uint8))  # view of msg.data
    assert not np.shares_memory(decoded, frame)  # the message owns its bytes
    owned = cv.image_to_numpy(msg, copy=True)
    assert not np.shares_memory(owned, np.frombuffer(msg.data, np.uint8))
    np.testing.assert_array_equal(owned, frame)


def test_single_channel_accepts_trailing_axis_of_one():
    depth = _random_image((4, 6, 1), np.float32)
    np.testing.assert_array_equal(cv.image_to_numpy(cv.numpy_to_image(depth, "32FC1")), depth[:, :, 0])


def test_non_contiguous_input_is_encoded_in_logical_order():
    frame = _random_image((6, 8, 3), np.uint8)
    flipped = frame[::-1, :, :]  # e.g. an OpenGL render flipped to image order without a copy
    np.testing.assert_array_equal(cv.image_to_numpy(cv.numpy_to_image(flipped, "rgb8")), flipped)


def test_big_endian_input_array_is_encoded_little_endian():
    values = _random_image((3, 4), np.float32)
    msg = cv.numpy_to_image(values.astype(">f4"), "32FC1")
    assert msg.is_bigendian == 0
    assert bytes(msg.data) == values.astype("<f4").tobytes()


def test_padded_rgb8_rows_decode_correctly():
    height, width = 4, 5
    pixels = _random_image((height, width, 3), np.uint8)
    step = width * 3 + 7  # odd stride: 7 garbage bytes after every row
    rows = [pixels[r].tobytes() + bytes(RNG.integers(0, 256, 7, dtype=np.uint8)) for r in range(height)]
    msg = _hand_built_image(rows, height, width, "rgb8", step)
    decoded = cv.image_to_numpy(msg)
    np.testing.assert_array_equal(decoded, pixels)
    assert decoded.flags.c_contiguous
    np.testing.assert_array_equal(cv.image_to_numpy(_wire(msg)), pixels)


@pytest.mark.parametrize(("encoding", "dtype"), [("mono16", "<u2"), ("32FC1", "<f4"), ("64FC1", "<f8")])
def test_padded_rows_with_step_not_a_multiple_of_itemsize(encoding, dtype):
    height, width, pad = 3, 4, 3  # rows start at unaligned offsets
    values = _random_image((height, width), np.dtype(dtype).newbyteorder("="))
    step = width * np.dtype(dtype).itemsize + pad
    rows = [values[r].astype(dtype).tobytes() + b"\xab" * pad for r in range(height)]
    decoded = cv.image_to_numpy(_hand_built_image(rows, height, width, encoding, step))
    np.testing.assert_array_equal(decoded, values)
    assert decoded.flags.c_contiguous and decoded.flags.aligned


def test_bgr8_keeps_stored_channel_order():
    blue, green, red = 200, 100, 10
    msg = _hand_built_image([bytes([blue, green, red]) * 2], 1, 2, "bgr8", 6)
    decoded = cv.image_to_numpy(msg)
    assert decoded.shape == (1, 2, 3)
    assert decoded[0, 0].tolist() == [blue, green, red]  # channels as stored: B, G, R (no conversion)


@pytest.mark.parametrize(("encoding", "dtype"), [("32FC1", np.float32), ("mono16", np.uint16)])
def test_big_endian_message_decodes(encoding, dtype):
    values = _random_image((3, 5), dtype)
    big = values.astype(np.dtype(dtype).newbyteorder(">"))
    step = 5 * big.itemsize
    msg = _hand_built_image([big.tobytes()], 3, 5, encoding, step, bigendian=1)
    decoded = cv.image_to_numpy(msg)
    assert decoded.dtype == np.dtype(dtype) and decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, values)
    # the same bytes read as little-endian would be wrong: the flag matters
    msg.is_bigendian = 0
    assert not np.array_equal(cv.image_to_numpy(msg), values)


def test_big_endian_padded_message_decodes():
    values = np.arange(6, dtype=np.float32).reshape(2, 3) + 0.5
    rows = [values[r].astype(">f4").tobytes() + b"\x00\xff" for r in range(2)]
    msg = _hand_built_image(rows, 2, 3, "32FC1", 14, bigendian=1)
    np.testing.assert_array_equal(cv.image_to_numpy(msg), values)


def test_empty_image():
    msg = cv.numpy_to_image(np.zeros((0, 4, 3), np.uint8), "rgb8")
    assert cv.image_to_numpy(msg).shape == (0, 4, 3)


def _assert_one_line_value_error(fn, *args, match: str):
    with pytest.raises(ValueError, match=match) as info:
        fn(*args)
    assert "\n" not in str(info.value)


def test_malformed_images_raise_readable_errors():
    good = cv.numpy_to_image(_random_image((4, 5, 3), np.uint8), "rgb8")

    short = _wire(good)
    short.data = short.data[:-1]
    _assert_one_line_value_error(cv.image_to_numpy, short, match=r"data has 59 bytes, expected step\*height")

    long = _wire(good)
    long.data = long.data + array.array("B", b"\x00")
    _assert_one_line_value_error(cv.image_to_numpy, long, match="data has 61 bytes")

    unknown = _wire(good)
    unknown.encoding = "hsv8"
    _assert_one_line_value_error(cv.image_to_numpy, unknown, match="unsupported image encoding 'hsv8'")

    narrow = _wire(good)
    narrow.step = 14
    _assert_one_line_value_error(cv.image_to_numpy, narrow, match="step 14 < one rgb8 row")

    empty_encoding = _wire(good)
    empty_encoding.encoding = ""
    _assert_one_line_value_error(cv.image_to_numpy, empty_encoding, match="unsupported image encoding ''")


def test_numpy_to_image_validates_dtype_and_shape():
    _assert_one_line_value_error(
        cv.numpy_to_image, np.zeros((4, 5, 3), np.float32), "rgb8", match="rgb8 needs uint8 data, got float32"
    )
    _assert_one_line_value_error(
        cv.numpy_to_image, np.zeros((4, 5)), "32FC1", match="32FC1 needs float32 data, got float64"
    )
    _assert_one_line_value_error(
        cv.numpy_to_image, np.zeros((4, 5), np.uint8), "rgb8", match=r"rgb8 needs an \(H, W, 3\) array"
    )
    _assert_one_line_value_error(
        cv.numpy_to_image, np.zeros((4, 5, 4), np.uint8), "rgb8", match=r"got shape \(4, 5, 4\)"
    )
    _assert_one_line_value_error(
        cv.numpy_to_image, np.zeros((4, 5, 2), np.float32), "32FC1", match=r"32FC1 needs an \(H, W\) array"
    )
    _assert_one_line_value_error(
        cv.numpy_to_image, np.zeros((4, 5), np.uint8), "jpeg", match="unsupported image encoding 'jpeg'"
    )


def test_encoding_table():
    assert cv.encoding_info("rgb8") == (np.dtype(np.uint8), 3)
    assert cv.encoding_info("mono16") == (np.dtype(np.uint16), 1)
    assert cv.encoding_info("32FC1") == (np.dtype(np.float32), 1)
    assert cv.encoding_info("64FC10") == (np.dtype(np.float64), 10)
    assert cv.encoding_info("bayer_rggb8") == (np.dtype(np.uint8), 1)
    for bad in ("32FC0", "32UC1", "RGB8", "8UC513"):
        with pytest.raises(ValueError, match="unsupported image encoding"):
            cv.encoding_info(bad)


# ------------------------------------------------------------------------------------------------------
# joint states
# ------------------------------------------------------------------------------------------------------
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


def test_joint_state_round_trip():
    pos, vel, eff = (RNG.standard_normal(6) for _ in range(3))
    msg = cv.numpy_to_joint_state(JOINTS, pos, vel, eff, stamp=10.000000002)
    assert msg.header.stamp == Time(sec=10, nanosec=2)
    for received in (msg, _wire(msg)):
        names, p, v, e = cv.joint_state_to_numpy(received)
        assert names == JOINTS
        for got, want in ((p, pos), (v, vel), (e, eff)):
            assert got.dtype == np.float64
            np.testing.assert_array_equal(got, want)


def test_joint_state_without_velocity_and_effort():
    msg = cv.numpy_to_joint_state(list(JOINTS), np.arange(6.0))
    assert len(msg.velocity) == 0 and len(msg.effort) == 0
    names, p, v, e = cv.joint_state_to_numpy(_wire(msg))
    assert names == JOINTS and p.tolist() == list(range(6)) and v.shape == (0,) and e.shape == (0,)


def test_joint_state_validation():
    with pytest.raises(ValueError, match="position has 5 values, expected 6"):
        cv.numpy_to_joint_state(JOINTS, np.zeros(5))
    with pytest.raises(ValueError, match=r"velocity has 2 values, expected 6 \(or 0\)"):
        cv.numpy_to_joint_state(JOINTS, np.zeros(6), velocity=[1.0, 2.0])
    with pytest.raises(ValueError, match="duplicates: a"):
        cv.numpy_to_joint_state(["a", "b", "a"], np.zeros(3))
    with pytest.raises(ValueError, match="sequence of joint names"):
        cv.numpy_to_joint_state("elbow", np.zeros(5))
    with pytest.raises(ValueError, match="one-dimensional"):
        cv.numpy_to_joint_state(JOINTS, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="numeric"):
        cv.numpy_to_joint_state(["a"], ["x"])

    bad = JointState()
    bad.name = list(JOINTS)
    bad.position = [0.0] * 6
    bad.effort = [0.0] * 3
    with pytest.raises(ValueError, match="JointState effort has 3 values"):
        cv.joint_state_to_numpy(bad)
    bad.effort = []
    bad.position = []
    with pytest.raises(ValueError, match="JointState position has 0 values, expected 6"):
        cv.joint_state_to_numpy(bad)


# ------------------------------------------------------------------------------------------------------
# trajectories
# ------------------------------------------------------------------------------------------------------
def _trajectory(times: list[Duration], n_joints: int = 3) -> JointTrajectory:
    msg = JointTrajectory()
    msg.header.stamp = Time(sec=100, nanosec=250_000_001)
    msg.joint_names = [f"j{i}" for i in range(n_joints)]
    for k, t in enumerate(times):
        point = JointTrajectoryPoint()
        point.positions = [0.1 * k + i for i in range(n_joints)]
        point.time_from_start = t
        msg.points.append(point)
    return msg


def test_trajectory_round_trip_with_nanoseconds():
    times = [Duration(sec=0, nanosec=0), Duration(sec=0, nanosec=33_333_333), Duration(sec=1, nanosec=1)]
    msg = _trajectory(times)
    chunk = cv.trajectory_to_chunk(_wire(msg))
    assert isinstance(chunk, TrajectoryChunk)
    assert chunk.joint_names == ("j0", "j1", "j2")
    assert chunk.stamp == 100.250000001
    np.testing.assert_array_equal(chunk.time_from_start, [0.0, 0.033333333, 1.000000001])
    assert chunk.positions.shape == (3, 3)
    np.testing.assert_allclose(chunk.positions[1], [0.1, 1.1, 2.1])

    back = _wire(cv.chunk_to_trajectory(chunk, frame_id="base"))
    assert back.header.stamp == msg.header.stamp
    assert back.header.frame_id == "base"
    assert back.joint_names == msg.joint_names
    for got, want in zip(back.points, msg.points, strict=True):
        assert got.time_from_start == want.time_from_start  # exact to the nanosecond
        assert list(got.positions) == list(want.positions)
        assert len(got.velocities) == 0


def test_chunk_to_trajectory_from_executor_chunk():
    chunk = TrajectoryChunk(
        joint_names=JOINTS,
        stamp=12.0,
        time_from_start=np.arange(16) / 30.0,
        positions=RNG.standard_normal((16, 6)),
    )
    again = cv.trajectory_to_chunk(cv.chunk_to_trajectory(chunk))
    assert again.joint_names == chunk.joint_names and again.stamp == chunk.stamp
    np.testing.assert_array_equal(again.positions, chunk.positions)
    np.testing.assert_allclose(again.time_from_start, chunk.time_from_start, rtol=0, atol=0.6e-9)


def test_trajectory_validation():
    with pytest.raises(ValueError, match="no points"):
        cv.trajectory_to_chunk(_trajectory([]))
    ragged = _trajectory([Duration(sec=0), Duration(sec=1)])
    ragged.points[1].positions = [0.0, 1.0]
    with pytest.raises(ValueError, match="point 1 has 2 positions for 3 joint_names"):
        cv.trajectory_to_chunk(ragged)
    nameless = _trajectory([Duration(sec=0)], n_joints=0)
    with pytest.raises(ValueError, match="no joint_names"):
        cv.trajectory_to_chunk(nameless)
    bad = TrajectoryChunk(("a", "b"), 1.0, np.zeros(2), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"positions must be \(N, 2\)"):
        cv.chunk_to_trajectory(bad)
    with pytest.raises(ValueError, match="stamp must be >= 0"):
        cv.chunk_to_trajectory(TrajectoryChunk(("a",), -1.0, np.zeros(1), np.zeros((1, 1))))


# ------------------------------------------------------------------------------------------------------
# camera info
# ------------------------------------------------------------------------------------------------------
def test_camera_info_round_trip():
    K = np.array([[600.5, 0.0, 319.25], [0.0, 601.0, 241.75], [0.0, 0.0, 1.0]])  # noqa: N806
    D = np.array([0.1, -0.05, 0.001, 0.002, 0.0])  # noqa: N806
    msg = cv.camera_info_from_intrinsics(640, 480, K, D, stamp=2.0, frame_id="wrist_cam_optical")
    assert msg.distortion_model == "plumb_bob"
    np.testing.assert_array_equal(np.asarray(msg.r).reshape(3, 3), np.eye(3))
    np.testing.assert_array_equal(np.asarray(msg.p).reshape(3, 4), np.hstack([K, np.zeros((3, 1))]))
    width, height, K2, D2 = cv.intrinsics_from_camera_info(_wire(msg))  # noqa: N806
    assert (width, height) == (640, 480)
    np.testing.assert_array_equal(K2, K)
    np.testing.assert_array_equal(D2, D)


def test_camera_info_defaults_and_validation():
    K = [[500.0, 0.0, 10.0], [0.0, 500.0, 8.0], [0.0, 0.0, 1.0]]  # noqa: N806
    assert list(cv.camera_info_from_intrinsics(20, 16, K).d) == [0.0] * 5
    assert len(cv.camera_info_from_intrinsics(20, 16, K, distortion_model="equidistant").d) == 4
    with pytest.raises(ValueError, match="3x3"):
        cv.camera_info_from_intrinsics(20, 16, np.eye(4))
    with pytest.raises(ValueError, match="pinhole camera matrix"):
        cv.camera_info_from_intrinsics(20, 16, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="positive integers"):
        cv.camera_info_from_intrinsics(0, 16, K)
    with pytest.raises(ValueError, match="uncalibrated"):
        cv.intrinsics_from_camera_info(CameraInfo())


@pytest.mark.parametrize(("width", "height", "fovy"), [(640, 480, 45.0), (96, 96, 60.0), (1280, 720, 90.0)])
def test_camera_info_from_fovy(width, height, fovy):
    _, _, K, D = cv.intrinsics_from_camera_info(cv.camera_info_from_fovy(width, height, fovy))  # noqa: N806
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # the vertical field of view spans the full image height, pixel edge to pixel edge
    assert math.degrees(2 * math.atan((height / 2) / fy)) == pytest.approx(fovy, rel=1e-12)
    assert fx == fy  # MuJoCo pixels are square
    assert (cx, cy) == ((width - 1) / 2, (height - 1) / 2)  # image centre in pixel-centre coordinates
    # a ray at the top edge of the frustum lands on the top edge of row 0 (v = -0.5)
    assert cy - fy * math.tan(math.radians(fovy) / 2) == pytest.approx(-0.5)
    assert not np.any(D)
    with pytest.raises(ValueError, match="fovy"):
        cv.camera_info_from_fovy(width, height, 180.0)


def test_camera_info_from_fovy_matches_a_mujoco_render():
    """A sphere on the optical axis renders centred on (cx, cy); an off-axis one lands where K projects."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless; read when mujoco is first imported
    mujoco = pytest.importorskip("mujoco")
    width, height, fovy = 160, 120, 45.0
    K = cv.intrinsics_from_camera_info(cv.camera_info_from_fovy(width, height, fovy))[2]  # noqa: N806
    for x, y in ((0.0, 0.0), (0.2, 0.1), (-0.25, -0.15)):
        xml = f"""<mujoco><visual><quality offsamples="0"/>
          <headlight ambient="1 1 1" diffuse="0 0 0" specular="0 0 0"/></visual>
          <worldbody><camera name="c" pos="0 0 0" xyaxes="1 0 0 0 1 0" fovy="{fovy}"/>
          <geom type="sphere" size="0.06" pos="{x} {y} -1" rgba="1 1 1 1"/></worldbody></mujoco>"""
        model = mujoco.MjModel.from_xml_string(xml)
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)
        try:
            renderer = mujoco.Renderer(model, height, width)
        except Exception as exc:  # no GL backend on this machine
            pytest.skip(f"MuJoCo cannot render here: {exc}")
        with renderer:
            renderer.update_scene(data, "c")
            pixels = renderer.render()
        rows, cols = np.nonzero(pixels[..., 0] > 128)
        # MuJoCo cameras look down -z with +y up; image rows grow downwards
        u = K[0, 2] + K[0, 0] * x / 1.0
        v = K[1, 2] - K[1, 1] * y / 1.0
        assert cols.mean() == pytest.approx(u, abs=0.2)  # the W/2 convention would be 0.5 px off
        assert rows.mean() == pytest.approx(v, abs=0.2)


# ------------------------------------------------------------------------------------------------------
# QoS
# ------------------------------------------------------------------------------------------------------
def test_qos_profiles():
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy, qos_profile_sensor_data

    assert qos_profile_sensor_data == qos.SENSOR_DATA
    assert qos.SENSOR_DATA is not qos_profile_sensor_data
    assert qos.COMMANDS.reliability == ReliabilityPolicy.RELIABLE
    assert qos.COMMANDS.durability == DurabilityPolicy.VOLATILE  # never replay an old command
    assert qos.LATCHED.durability == DurabilityPolicy.TRANSIENT_LOCAL and qos.LATCHED.depth == 1
    assert qos.JOINT_STATES.reliability == ReliabilityPolicy.RELIABLE
    assert qos.DIAGNOSTICS.reliability == ReliabilityPolicy.RELIABLE
