"""Teleop devices fed real bytes (a pty for the keyboard, fifos for js_event structs and hidraw reports),
and Cartesian teleop's IK on the robots' MuJoCo models."""

from __future__ import annotations

import contextlib
import os
import select
import struct
import termios
import time

import numpy as np
import pytest

from twinloop.hardware.cartesian_teleop import CartesianTeleop, Workspace, default_workspace
from twinloop.hardware.teleop_devices import (
    EVENT_DISCARD,
    EVENT_GRIPPER_TOGGLE,
    EVENT_NEXT,
    EVENT_QUIT,
    JS_EVENT_AXIS,
    JS_EVENT_BUTTON,
    JS_EVENT_INIT,
    GamepadReader,
    KeyboardReader,
    SpaceMouseReader,
    TeleopCommand,
    TeleopDeviceError,
    apply_deadzone,
    find_spacemouse,
    js_event,
)
from twinloop.sim.kinematics import ArmKinematics
from twinloop.sim.robots import get_robot, home_array


def wait_readable(fd: int, timeout: float = 2.0) -> None:
    """A pty hands written bytes over through a kernel work queue: wait until they are there."""
    ready, _, _ = select.select([fd], [], [], timeout)
    assert ready, "no bytes arrived"
    time.sleep(0.02)  # and the rest of a multi-byte write


# ------------------------------------------------------------------------------------------------------
# keyboard over a real pty
# ------------------------------------------------------------------------------------------------------
@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    yield master, slave
    for fd in (master, slave):
        with contextlib.suppress(OSError):
            os.close(fd)


def type_keys(master: int, reader: KeyboardReader, keys: bytes, now: float) -> TeleopCommand:
    os.write(master, keys)
    wait_readable(reader.fd)
    return reader.poll(now=now)


def test_keyboard_pty_cbreak_mode_and_restore(pty_pair):
    master, slave = pty_pair
    before = termios.tcgetattr(slave)
    assert before[3] & termios.ICANON and before[3] & termios.ECHO
    reader = KeyboardReader(os.ttyname(slave))
    lflag = termios.tcgetattr(slave)[3]
    assert not lflag & termios.ICANON, "still line-buffered"
    assert not lflag & termios.ECHO, "keys would echo"
    assert lflag & termios.ISIG, "Ctrl-C must still interrupt"
    # no line buffering: one key arrives without Enter
    command = type_keys(master, reader, b"e", now=0.0)
    assert command.engaged
    reader.close()
    assert termios.tcgetattr(slave) == before, "terminal settings not restored"
    reader.close()  # idempotent


def test_keyboard_key_map_holds_and_auto_repeat(pty_pair):
    master, slave = pty_pair
    with KeyboardReader(os.ttyname(slave), linear_speed=0.1, angular_speed=0.5, hold_time=0.5) as reader:
        assert not reader.poll(now=0.0).engaged
        assert type_keys(master, reader, b"e", 0.0).engaged

        # one press drives its axis for hold_time
        command = type_keys(master, reader, b"w", 1.0)
        np.testing.assert_allclose(command.linear, [0.1, 0.0, 0.0])
        np.testing.assert_allclose(reader.poll(now=1.45).linear, [0.1, 0.0, 0.0])
        np.testing.assert_allclose(reader.poll(now=1.55).linear, 0.0)

        # auto-repeat: a second press while still driving -> released within repeat_hold of the last one
        type_keys(master, reader, b"a", 2.0)
        command = type_keys(master, reader, b"a", 2.4)
        np.testing.assert_allclose(command.linear, [0.0, 0.1, 0.0])
        np.testing.assert_allclose(reader.poll(now=2.5).linear, [0.0, 0.1, 0.0])
        np.testing.assert_allclose(reader.poll(now=2.55).linear, 0.0)

        # every axis, upper case too, and the opposite key stops that axis
        expected = {
            b"s": ([-0.1, 0, 0], [0, 0, 0]),
            b"D": ([0, -0.1, 0], [0, 0, 0]),
            b"r": ([0, 0, 0.1], [0, 0, 0]),
            b"f": ([0, 0, -0.1], [0, 0, 0]),
            b"u": ([0, 0, 0], [0.5, 0, 0]),
            b"o": ([0, 0, 0], [-0.5, 0, 0]),
            b"i": ([0, 0, 0], [0, 0.5, 0]),
            b"k": ([0, 0, 0], [0, -0.5, 0]),
            b"j": ([0, 0, 0], [0, 0, 0.5]),
            b"l": ([0, 0, 0], [0, 0, -0.5]),
            b"\x1b[A": ([0, 0, 0], [0, 0.5, 0]),  # arrows: up/down pitch, left/right yaw
            b"\x1b[B": ([0, 0, 0], [0, -0.5, 0]),
            b"\x1bOD": ([0, 0, 0], [0, 0, 0.5]),  # application cursor mode
            b"\x1b[C": ([0, 0, 0], [0, 0, -0.5]),
        }
        t = 10.0
        for key, (linear, angular) in expected.items():
            command = type_keys(master, reader, key, t)
            np.testing.assert_allclose(command.linear, linear, err_msg=str(key))
            np.testing.assert_allclose(command.angular, angular, err_msg=str(key))
            t += 1.0
        command = type_keys(master, reader, b"wr", t)
        np.testing.assert_allclose(command.linear, [0.1, 0.0, 0.1])
        command = type_keys(master, reader, b"s", t + 0.1)
        np.testing.assert_allclose(command.linear, [-0.1, 0.0, 0.1])

        # an escape sequence split across two reads
        os.write(master, b"\x1b[")
        wait_readable(reader.fd)
        assert not np.any(reader.poll(now=20.0).angular)
        command = type_keys(master, reader, b"D", 20.0)
        np.testing.assert_allclose(command.angular, [0.0, 0.0, 0.5])

        # gripper velocity (held), toggle and episode events, in order, each reported once
        command = type_keys(master, reader, b".", 30.0)
        assert command.gripper > 0
        command = type_keys(master, reader, b",", 31.0)
        assert command.gripper < 0
        command = type_keys(master, reader, b" nxq", 32.0)
        assert command.events == (EVENT_GRIPPER_TOGGLE, EVENT_NEXT, EVENT_DISCARD, EVENT_QUIT)
        assert reader.poll(now=32.0).events == ()

        # disengaging drops every held key
        type_keys(master, reader, b"w", 40.0)
        command = type_keys(master, reader, b"e", 40.0)
        assert not command.engaged and not command.moving


def test_keyboard_from_a_pipe_fd_is_read_as_is():
    read_fd, write_fd = os.pipe()
    try:
        reader = KeyboardReader(read_fd, linear_speed=0.2)
        os.write(write_fd, b"ew")
        command = reader.poll(now=0.0)
        assert command.engaged
        np.testing.assert_allclose(command.linear, [0.2, 0.0, 0.0])
        reader.close()
        os.fstat(read_fd)  # a borrowed fd stays open
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_missing_device_is_a_one_line_error(tmp_path):
    for cls in (KeyboardReader, GamepadReader, SpaceMouseReader):
        with pytest.raises(TeleopDeviceError, match="does not exist") as info:
            cls(tmp_path / "nothing")
        assert "\n" not in str(info.value)
    if os.geteuid() != 0:  # root reads any file
        path = tmp_path / "locked"
        path.write_bytes(b"")
        path.chmod(0)
        with pytest.raises(TeleopDeviceError, match="no permission"):
            GamepadReader(path)


# ------------------------------------------------------------------------------------------------------
# gamepad: js_event structs over a fifo
# ------------------------------------------------------------------------------------------------------
@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "device"
    os.mkfifo(path)
    return path


def open_writer(path) -> int:
    return os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # the reader end is already open


def test_js_event_layout_matches_linux_joystick_h():
    raw = js_event(-32767, 3, JS_EVENT_AXIS | JS_EVENT_INIT, time_ms=123456)
    assert len(raw) == 8
    assert struct.unpack("<IhBB", raw) == (123456, -32767, 0x82, 3)


def test_gamepad_over_fifo(fifo):
    with GamepadReader(fifo, linear_speed=0.1, angular_speed=1.0, gripper_speed=1.0, deadzone=0.1) as pad:
        writer = open_writer(fifo)
        try:
            # the initial state the driver sends on open: triggers released, Start already held
            init = [js_event(0, b, JS_EVENT_BUTTON | JS_EVENT_INIT) for b in range(11)]
            init += [js_event(-32767, a, JS_EVENT_AXIS | JS_EVENT_INIT) for a in (2, 5)]
            init += [js_event(0, a, JS_EVENT_AXIS | JS_EVENT_INIT) for a in (0, 1, 3, 4, 6, 7)]
            init += [js_event(1, 7, JS_EVENT_BUTTON | JS_EVENT_INIT)]
            os.write(writer, b"".join(init))
            command = pad.poll()
            assert not command.engaged and not command.moving
            assert command.events == (), "initial state is not a press"
            assert command.buttons == {7}

            # left stick fully up (= -32767 on Linux) -> +x; a stick inside the dead zone -> 0
            os.write(writer, js_event(-32767, 1, JS_EVENT_AXIS) + js_event(2000, 0, JS_EVENT_AXIS))
            np.testing.assert_allclose(pad.poll().linear, [0.1, 0.0, 0.0])
            # half right -> -y scaled past the dead zone; right stick down -> -z; right stick left -> +yaw
            os.write(writer, js_event(16384, 0, JS_EVENT_AXIS) + js_event(32767, 4, JS_EVENT_AXIS))
            os.write(writer, js_event(-32767, 3, JS_EVENT_AXIS) + js_event(32767, 6, JS_EVENT_AXIS))
            command = pad.poll()
            y = -apply_deadzone(16384 / 32767, 0.1) * 0.1
            np.testing.assert_allclose(command.linear, [0.1, y, -0.1])
            np.testing.assert_allclose(command.angular, [1.0, 0.0, 1.0])
            # triggers: RT opens, LT closes
            os.write(writer, js_event(32767, 5, JS_EVENT_AXIS))
            assert pad.poll().gripper == pytest.approx(1.0)
            os.write(writer, js_event(32767, 2, JS_EVENT_AXIS))
            assert pad.poll().gripper == pytest.approx(0.0)

            # dead-man: engaged only while LB is held
            os.write(writer, js_event(1, 4, JS_EVENT_BUTTON))
            assert pad.poll().engaged
            os.write(writer, js_event(0, 4, JS_EVENT_BUTTON))
            assert not pad.poll().engaged

            # buttons give one event per press: A toggles the gripper, Start next, Back discard, Guide quit
            os.write(writer, js_event(0, 7, JS_EVENT_BUTTON))  # Start released (it was held at open)
            presses = b"".join(js_event(v, b, JS_EVENT_BUTTON) for b in (0, 7, 6, 8) for v in (1, 0))
            os.write(writer, presses + js_event(1, 7, JS_EVENT_BUTTON))
            command = pad.poll()
            assert command.events == (EVENT_GRIPPER_TOGGLE, EVENT_NEXT, EVENT_DISCARD, EVENT_QUIT, EVENT_NEXT)
            os.write(writer, js_event(1, 7, JS_EVENT_BUTTON))  # a repeated "pressed" is no new press
            assert pad.poll().events == ()

            # a struct split across reads
            raw = js_event(1, 4, JS_EVENT_BUTTON)
            os.write(writer, raw[:3])
            assert not pad.poll().engaged
            os.write(writer, raw[3:])
            assert pad.poll().engaged
        finally:
            os.close(writer)
        assert pad.poll().engaged, "writer gone (EOF): the last state holds"


# ------------------------------------------------------------------------------------------------------
# SpaceMouse: hidraw reports over a fifo
# ------------------------------------------------------------------------------------------------------
def report(report_id: int, *values: int) -> bytes:
    return bytes([report_id]) + struct.pack(f"<{len(values)}h", *values)


def test_spacemouse_reports_over_fifo(fifo):
    with SpaceMouseReader(fifo, linear_speed=0.1, angular_speed=1.0, deadzone=0.1, full_scale=350) as mouse:
        writer = open_writer(fifo)
        try:
            assert not mouse.poll().moving
            # old layout: report 1 translation (6 bytes), report 2 rotation (6 bytes), one read each
            os.write(writer, report(1, 0, -350, 0))  # push away from the user: +x
            np.testing.assert_allclose(mouse.poll().linear, [0.1, 0.0, 0.0])
            assert mouse.six_axis_report is False
            os.write(writer, report(1, -175, 20, -350))  # left half way, lift; y inside the dead zone
            command = mouse.poll()
            np.testing.assert_allclose(command.linear, [0.0, apply_deadzone(0.5, 0.1) * 0.1, 0.1])
            os.write(writer, report(2, 0, 0, 350))  # twist
            np.testing.assert_allclose(mouse.poll().angular, [0.0, 0.0, -1.0])
            # buttons: left toggles the gripper, right toggles engage; one event per press
            os.write(writer, bytes([3, 0b01, 0]))
            command = mouse.poll()
            assert command.events == (EVENT_GRIPPER_TOGGLE,) and not command.engaged
            os.write(writer, bytes([3, 0b11, 0]))
            command = mouse.poll()
            assert command.engaged and command.events == () and command.buttons == {0, 1}
            os.write(writer, bytes([3, 0, 0]))  # hidraw: one report per read, so poll in between
            assert mouse.poll().buttons == set()
            os.write(writer, report(1, 0, 0, 0) + report(2, 0, 0, 0))  # two reports in one read
            command = mouse.poll()
            assert command.engaged and not command.moving

            # newer layout: all six axes in report 1 (12 bytes)
            os.write(writer, report(1, 350, 0, 0, 0, 350, 0))
            command = mouse.poll()
            np.testing.assert_allclose(command.linear, [0.0, -0.1, 0.0])
            np.testing.assert_allclose(command.angular, [-1.0, 0.0, 0.0])
            assert mouse.six_axis_report is True
            os.write(writer, bytes([0x17, 80]))  # an unknown report (battery): ignored
            np.testing.assert_allclose(mouse.poll().linear, [0.0, -0.1, 0.0])
        finally:
            os.close(writer)


def test_find_spacemouse_by_usb_id(tmp_path):
    assert find_spacemouse(tmp_path / "absent") is None
    for name, hid_id in (
        ("hidraw0", "0003:0000046D:0000C52B"),  # a Logitech receiver, not a 3Dconnexion device
        ("hidraw1", "0003:0000256F:0000C635"),  # SpaceMouse Compact
        ("hidraw10", "0003:0000046D:0000C626"),  # SpaceNavigator (Logitech id)
    ):
        (tmp_path / name / "device").mkdir(parents=True)
        (tmp_path / name / "device" / "uevent").write_text(f"DRIVER=hid-generic\nHID_ID={hid_id}\n")
    assert str(find_spacemouse(tmp_path)) == "/dev/hidraw1"
    (tmp_path / "hidraw1" / "device" / "uevent").write_text("HID_ID=0003:0000046D:0000C52B\n")
    assert str(find_spacemouse(tmp_path)) == "/dev/hidraw10"


# ------------------------------------------------------------------------------------------------------
# Cartesian teleop: twist -> IK on the robot's MuJoCo model
# ------------------------------------------------------------------------------------------------------
RATE = 30.0


def drive(teleop: CartesianTeleop, command: TeleopCommand, seconds: float) -> list[np.ndarray]:
    return [teleop.step(command, 1.0 / RATE) for _ in range(round(seconds * RATE))]


def twist(linear=(0, 0, 0), angular=(0, 0, 0), engaged=True, **kw) -> TeleopCommand:
    return TeleopCommand(np.array(linear, float), np.array(angular, float), engaged=engaged, **kw)


@pytest.mark.parametrize("robot_name", ["so101", "panda"])
def test_x_twist_moves_the_end_effector_along_x(robot_name):
    robot = get_robot(robot_name)
    kin = ArmKinematics(robot)
    teleop = CartesianTeleop(robot)
    q0 = home_array(robot)
    teleop.reset(q0)
    start = kin.forward(q0)
    box = default_workspace(robot)
    speed = 0.05
    trajectory = drive(teleop, twist(linear=(speed, 0, 0)), 1.0)
    end = kin.forward(trajectory[-1])
    moved = end - start
    # 1 s at 5 cm/s: 5 cm along +x (within 10%), nearly nothing across
    assert moved[0] == pytest.approx(speed * 1.0, rel=0.1), moved
    assert np.all(np.abs(moved[1:]) < 0.003), moved
    previous = q0
    for q in trajectory:
        assert np.all(q >= kin.lower - 1e-9) and np.all(q <= kin.upper + 1e-9)
        assert box.contains(kin.forward(q), tol=1e-3)
        assert np.all(np.abs(q - previous) <= teleop.max_joint_speed / RATE + 1e-9)
        previous = q


def test_not_engaged_holds():
    robot = get_robot("so101")
    teleop = CartesianTeleop(robot)
    q0 = home_array(robot) + 0.05
    teleop.reset(q0)
    command = twist(linear=(0.1, 0.1, 0.1), angular=(1, 0, 0), engaged=False, gripper=1.0)
    command_toggle = twist(engaged=False, events=(EVENT_GRIPPER_TOGGLE,))
    for q in drive(teleop, command, 0.5) + drive(teleop, command_toggle, 0.1):
        np.testing.assert_array_equal(q, q0)
    # engaged with a zero twist: still holds
    for q in drive(teleop, twist(), 0.5):
        np.testing.assert_allclose(q, q0, atol=1e-9)


def test_workspace_box_stops_the_target_without_wind_up():
    robot = get_robot("so101")
    kin = ArmKinematics(robot)
    box = Workspace((0.1, -0.2, 0.05), (0.3, 0.2, 0.22))
    teleop = CartesianTeleop(robot, workspace=box)
    teleop.reset(home_array(robot))  # tool at z = 0.187
    for q in drive(teleop, twist(linear=(0, 0, 0.2)), 2.0):  # far past the top of the box
        assert kin.forward(q)[2] <= box.upper[2] + 1e-3
    top = kin.forward(teleop.q)[2]
    assert top == pytest.approx(box.upper[2], abs=2e-3)
    # reversing moves down at once: nothing accumulated beyond the box
    drive(teleop, twist(linear=(0, 0, -0.05)), 0.2)
    assert kin.forward(teleop.q)[2] < top - 0.007


def test_outside_the_box_may_only_move_back_in():
    box = Workspace((0.0, -1.0, 0.0), (1.0, 1.0, 1.0))
    old = np.array([1.2, 0.0, -0.1])  # outside in x (too far) and z (too low)
    np.testing.assert_allclose(box.limit_motion(old, old + [0.1, 0.1, -0.1]), [1.2, 0.1, -0.1])
    np.testing.assert_allclose(box.limit_motion(old, old + [-0.1, 0.0, 0.05]), [1.1, 0.0, -0.05])
    with pytest.raises(ValueError, match="below upper"):
        Workspace((0.0, 0.0, 0.0), (1.0, -1.0, 1.0))


def test_joint_limits_and_speed_hold_when_the_arm_is_pushed_out_of_reach():
    robot = get_robot("so101")
    kin = ArmKinematics(robot)
    huge = Workspace((-2.0, -2.0, -2.0), (2.0, 2.0, 2.0))
    teleop = CartesianTeleop(robot, workspace=huge)
    teleop.reset(home_array(robot))
    for q in drive(teleop, twist(linear=(0.3, 0.0, -0.3)), 3.0):  # into the table, past the reach
        assert np.all(q >= kin.lower - 1e-9) and np.all(q <= kin.upper + 1e-9)
    lag = np.linalg.norm(teleop.target_position - kin.forward(teleop.q))
    assert lag <= teleop.max_lag + 1e-9


def test_panda_rotates_about_the_commanded_axis():
    robot = get_robot("panda")
    teleop = CartesianTeleop(robot)
    teleop.reset(home_array(robot))
    position, rotation = teleop.pose()
    drive(teleop, twist(angular=(0, 0, 0.5)), 1.0)  # yaw 0.5 rad about the base z axis
    position1, rotation1 = teleop.pose()
    relative = rotation1 @ rotation.T
    angle = np.arctan2(relative[1, 0], relative[0, 0])
    assert angle == pytest.approx(0.5, abs=0.03)
    assert np.linalg.norm(position1 - position) < 0.002


def test_gripper_toggle_and_velocity():
    robot = get_robot("so101")
    kin = ArmKinematics(robot)
    teleop = CartesianTeleop(robot)
    teleop.reset(home_array(robot))  # gripper 0.3 rad: below mid-stroke, so a toggle opens it
    g = robot.joint_names.index("gripper")
    q = teleop.step(twist(events=(EVENT_GRIPPER_TOGGLE,)), 1.0 / RATE)
    assert q[g] == pytest.approx(0.3 + teleop.max_joint_speed[g] / RATE)  # rate-limited toward open
    q = drive(teleop, twist(), 2.0)[-1]
    assert q[g] == pytest.approx(kin.upper[g])
    q = drive(teleop, twist(gripper=-0.5), 0.5)[-1]  # close at a quarter stroke
    assert q[g] == pytest.approx(kin.upper[g] - 0.25 * (kin.upper[g] - kin.lower[g]), abs=0.01)
