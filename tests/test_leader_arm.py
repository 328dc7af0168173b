"""LeaderArm: lerobot's own SO-101 leader teleoperator reads hand-moved servos on the Feetech bus emulator,
and twinloop gets joint targets in radians for the twin's SO-101 joints and limits."""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np
import pytest
from lerobot.motors import MotorCalibration

from twinloop.hardware.feetech_emulator import FeetechBusEmulator
from twinloop.hardware.leader_arm import SO101_JOINTS, LeaderArm, twin_joint_limits

TICK = 2 * math.pi / 4096  # one encoder tick, rad
# connect() retries its lerobot sequence when a reply is missed: give a loaded CI machine a few more tries
PATIENT = {"connect_attempts": 5}

# A leader arm's calibration as lerobot-calibrate would record it: homing offsets put each joint's middle
# near 2047; ranges are what the hand swept (wrist_roll: the full turn).
CALIBRATION = {
    "shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": -150, "range_min": 900, "range_max": 3200},
    "shoulder_lift": {"id": 2, "drive_mode": 0, "homing_offset": 220, "range_min": 850, "range_max": 3150},
    "elbow_flex": {"id": 3, "drive_mode": 0, "homing_offset": 75, "range_min": 1000, "range_max": 3050},
    "wrist_flex": {"id": 4, "drive_mode": 0, "homing_offset": -30, "range_min": 950, "range_max": 3100},
    "wrist_roll": {"id": 5, "drive_mode": 0, "homing_offset": 400, "range_min": 0, "range_max": 4095},
    "gripper": {"id": 6, "drive_mode": 0, "homing_offset": -500, "range_min": 2000, "range_max": 3400},
}


@pytest.fixture(autouse=True)
def fast_gil_handoff():
    # the emulator thread and lerobot's busy-waiting reader share the GIL (see test_feetech_emulator.py)
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    yield
    sys.setswitchinterval(old)


@pytest.fixture(scope="module")
def limits():
    return twin_joint_limits()


@pytest.fixture
def emu():
    with FeetechBusEmulator(ids=range(1, 7)) as emulator:  # torque off: a leader arm in a human's hand
        yield emulator


def expected_radians(present: dict[int, int], limits, range_mode: bool = False) -> np.ndarray:
    """What the twin should get for these Present_Position ticks, computed from the calibration alone."""
    lower, upper = limits
    q = np.empty(6)
    for i, joint in enumerate(SO101_JOINTS):
        cal = CALIBRATION[joint]
        lo, hi = cal["range_min"], cal["range_max"]
        ticks = present[cal["id"]]
        if joint == "gripper":
            frac = (min(max(ticks, lo), hi) - lo) / (hi - lo)
            q[i] = lower[i] + frac * (upper[i] - lower[i])
        else:
            if range_mode:  # lerobot's -100..100 mode bounds the reading to the calibrated range
                ticks = min(max(ticks, lo), hi)
            q[i] = (ticks - (lo + hi) / 2) * 2 * math.pi / 4095
    return np.clip(q, lower, upper)


def tolerance(limits) -> np.ndarray:
    """One encoder tick per joint, in radians (the gripper's tick is scaled onto the twin's range)."""
    lower, upper = limits
    tol = np.full(6, TICK)
    grip = CALIBRATION["gripper"]
    tol[5] = (upper[5] - lower[5]) / (grip["range_max"] - grip["range_min"])
    return tol


def poll_targets(arm: LeaderArm, expected: np.ndarray, tol: np.ndarray, timeout: float = 10.0) -> np.ndarray:
    """read_joint_targets() until it matches (a reply delayed past lerobot's timeout on a loaded machine
    makes one read fail or lag; the bus state converges, so poll rather than assert on the first read)."""
    deadline = time.monotonic() + timeout
    q = None
    while time.monotonic() < deadline:
        try:
            q = arm.read_joint_targets()
        except ConnectionError:
            q = None
        if q is not None and np.all(np.abs(q - expected) <= tol):
            return q
        time.sleep(0.05)
        arm.teleop.bus.port_handler.ser.reset_input_buffer()  # drop late replies (see test_feetech_emulator)
    return q


def test_hand_moved_positions_arrive_as_twin_joint_radians(emu, tmp_path, limits):
    arm = LeaderArm(emu.port, id="test_leader", calibration_dir=tmp_path, calibration=CALIBRATION, **PATIENT)
    # the calibration file is in lerobot's format, and lerobot's teleoperator loaded it
    assert json.loads((tmp_path / "test_leader.json").read_text()) == CALIBRATION
    assert arm.calibration == {name: MotorCalibration(**cal) for name, cal in CALIBRATION.items()}
    arm.connect()
    try:
        # connect(): lerobot's configure() left every motor limp in position mode with EEPROM unlocked,
        # and the file's calibration was written to the motors (they started with factory values)
        for cal in CALIBRATION.values():
            s = emu.servo(cal["id"])
            assert not s.torque_enabled and s.get("Operating_Mode") == 0 and s.get("Lock") == 0
            assert s.homing_offset == cal["homing_offset"]
            assert (s.get("Min_Position_Limit"), s.get("Max_Position_Limit")) == (
                cal["range_min"],
                cal["range_max"],
            )
        assert arm.teleop.is_calibrated
        tol = tolerance(limits)
        poses = [
            {1: 2050, 2: 2000, 3: 2025, 4: 2025, 5: 2047, 6: 2000},  # mid-range, gripper closed
            {1: 1200, 2: 3000, 3: 2900, 4: 1100, 5: 1000, 6: 3400},  # a reach, gripper open
            {1: 3111, 2: 987, 3: 1500, 4: 2999, 5: 3500, 6: 2701},  # odd ticks everywhere
            {1: 100, 2: 4000, 3: 2025, 4: 2025, 5: 4000, 6: 1500},  # beyond the twin's limits: clipped
        ]
        for pose in poses:
            emu.set_present_positions(pose)  # the human moves the arm
            expected = expected_radians(pose, limits)
            q = poll_targets(arm, expected, tol)
            assert q is not None and q.shape == (6,), pose
            np.testing.assert_allclose(q, expected, rtol=0, atol=tol.max(), err_msg=str(pose))
        lower, upper = limits
        assert q[0] == lower[0] and q[4] == upper[4] and q[5] == lower[5]  # the last pose clipped
        # the same through the raw encoder angle: Present_Position = actual - Homing_Offset
        actual = {
            cal["id"]: 2300 + 37 * i + cal["homing_offset"] for i, cal in enumerate(CALIBRATION.values())
        }
        for servo_id, ticks in actual.items():
            emu.servo(servo_id).set_actual_position(ticks)
        present = {
            i: ticks - CALIBRATION[SO101_JOINTS[i - 1]]["homing_offset"] for i, ticks in actual.items()
        }
        expected = expected_radians(present, limits)
        assert poll_targets(arm, expected, tol) == pytest.approx(expected, abs=tol.max())
        # lerobot's action itself: degrees for the body, 0..100 for the gripper
        action = arm.read_action()
        assert set(action) == {f"{j}.pos" for j in SO101_JOINTS}
        assert action["gripper.pos"] == pytest.approx(100 * (present[6] - 2000) / 1400)
    finally:
        arm.disconnect()
    assert not arm.is_connected


def test_range_m100_100_mode_and_an_existing_calibration_file(emu, tmp_path, limits):
    # first arm writes the file and the motors' calibration; the second finds both already in place
    first = LeaderArm(emu.port, id="leader", calibration_dir=tmp_path, calibration=CALIBRATION, **PATIENT)
    first.connect()
    first.disconnect()
    arm = LeaderArm(
        emu.port, id="leader", calibration_dir=tmp_path, use_degrees=False, sync_calibration=False, **PATIENT
    )
    with arm:
        pose = {1: 1111, 2: 2900, 3: 1234, 4: 3000, 5: 700, 6: 2222}
        emu.set_present_positions(pose)
        expected = expected_radians(pose, limits, range_mode=True)
        tol = tolerance(limits)
        q = poll_targets(arm, expected, tol)
        np.testing.assert_allclose(q, expected, rtol=0, atol=tol.max())
        action = arm.read_action()
        assert -100 <= action["shoulder_pan.pos"] <= 100


def test_conversion_round_trip_and_bad_input(tmp_path, limits):
    arm = LeaderArm(
        "/dev/null", id="offline", calibration_dir=tmp_path, calibration=CALIBRATION
    )  # not opened
    lower, upper = limits
    q = lower + (upper - lower) * np.linspace(0.1, 0.9, 6)
    np.testing.assert_allclose(arm.action_to_radians(arm.radians_to_action(q)), q, atol=1e-12)
    action = arm.radians_to_action(q)
    assert action["gripper.pos"] == pytest.approx(90.0)
    assert action["shoulder_pan.pos"] == pytest.approx(math.degrees(q[0]))
    ranged = LeaderArm("/dev/null", id="offline", calibration_dir=tmp_path, use_degrees=False)
    np.testing.assert_allclose(ranged.action_to_radians(ranged.radians_to_action(q)), q, atol=1e-12)
    with pytest.raises(ValueError, match="lacks 'wrist_roll.pos'"):
        arm.action_to_radians({k: v for k, v in action.items() if k != "wrist_roll.pos"})
    with pytest.raises(ValueError, match="is nan"):
        arm.action_to_radians({**action, "elbow_flex.pos": float("nan")})
    with pytest.raises(FileNotFoundError, match="lerobot-calibrate"):
        LeaderArm("/dev/null", id="never_calibrated", calibration_dir=tmp_path)
    with pytest.raises(ValueError, match="range_min must be below range_max"):
        LeaderArm(
            "/dev/null",
            id="bad",
            calibration_dir=tmp_path,
            calibration={**CALIBRATION, "gripper": {**CALIBRATION["gripper"], "range_max": 1000}},
        )


def test_mismatched_motor_calibration_is_refused_when_not_synced(emu, tmp_path):
    arm = LeaderArm(
        emu.port,
        id="strict",
        calibration_dir=tmp_path,
        calibration=CALIBRATION,
        sync_calibration=False,
        **PATIENT,
    )
    with pytest.raises(RuntimeError, match="calibration differs"):
        arm.connect()
    assert not arm.is_connected
    assert emu.servo(1).homing_offset == 0  # nothing written
