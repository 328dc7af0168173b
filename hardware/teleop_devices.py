"""Teleoperation input devices: keyboard (a terminal), gamepad (Linux joystick API), 3Dconnexion SpaceMouse
(Linux hidraw). Each reader turns raw input into a `TeleopCommand`: a Cartesian twist in the robot's base
frame (x forward, y left, z up), a gripper velocity, the engage state and edge-triggered events.

Readers are polled, never block, and never import rclpy: `reader.poll()` reads every byte that has arrived
(non-blocking fd) and returns the command that holds now. Each takes a path or an already open file
descriptor (a pty, a fifo, a socket), so tests feed them real bytes; the real device paths are defaults.

Keyboard (`KeyboardReader`, a plain terminal: no X server, no evdev). The terminal is put in cbreak mode
(no line buffering, no echo; Ctrl-C still interrupts) and restored on `close()`. A terminal reports key
presses, never releases: a movement key drives its axis for `hold_time` s after each press (long enough to
bridge the terminal's auto-repeat delay, ~0.25-0.66 s), and once the key auto-repeats, for `repeat_hold` s
after each repeat, so the arm stops within ~0.1 s of letting go. Pressing the opposite key stops that axis.

    w / s      +x / -x   (forward / back)          u / o     roll  + / -  (about x)
    a / d      +y / -y   (left / right)            i / k     pitch + / -  (about y; also Up / Down)
    r / f      +z / -z   (up / down)               j / l     yaw   + / -  (about z; also Left / Right)
    space      gripper toggle (open <-> closed)    , / .     gripper close / open (held)
    e          engage toggle (the arm moves only while engaged)
    n          next episode (save the one in progress, start the next)
    x          discard the episode in progress     q         quit (save the episode in progress)
    Upper-case letters act like lower-case ones; Ctrl-C (raw terminals only) is quit.

Gamepad (`GamepadReader`, `/dev/input/jsN`): 8-byte `struct js_event` {u32 time ms; s16 value; u8 type;
u8 number}, type JS_EVENT_BUTTON 1 / JS_EVENT_AXIS 2, | JS_EVENT_INIT 0x80 for the initial state sent on
open. Default layout (`GamepadMapping`) is the Linux xpad driver's (Xbox-style pads): left stick x/y,
right stick up/down z and left/right yaw, d-pad roll/pitch, triggers close (LT) / open (RT) the gripper,
LB is the dead-man button (engaged only while held), A toggles the gripper, Start = next episode,
Back = discard, Guide = quit. Sticks have a dead zone (fraction of full scale).

SpaceMouse (`SpaceMouseReader`, `/dev/hidrawN`; by default the first 3Dconnexion device found in
/sys/class/hidraw): HID input reports, one per read: report 1 = translation x, y, z (little-endian int16),
report 2 = rotation rx, ry, rz; newer devices send all six axes in report 1 (12 bytes); report 3 = buttons
bitmask. Axes are scaled by `full_scale` (~350 counts at full deflection) with a dead zone. Device axes
(x right, y toward the user, z down) map to the base frame as seen by an operator standing behind the
robot: push away = +x, push left = +y, lift = +z. Button 0 (left) toggles the gripper, button 1 (right)
toggles engage.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import termios
import time
import tty
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "DEVICES",
    "EVENT_DISCARD",
    "EVENT_GRIPPER_TOGGLE",
    "EVENT_NEXT",
    "EVENT_QUIT",
    "JS_EVENT_AXIS",
    "JS_EVENT_BUTTON",
    "JS_EVENT_INIT",
    "KEY_MAP_HELP",
    "GamepadMapping",
    "GamepadReader",
    "KeyboardReader",
    "SpaceMouseReader",
    "TeleopCommand",
    "TeleopDevice",
    "TeleopDeviceError",
    "apply_deadzone",
    "find_spacemouse",
    "js_event",
    "open_device",
]

EVENT_NEXT = "next"  # save the episode in progress (if any) and start the next
EVENT_DISCARD = "discard"  # drop the episode in progress
EVENT_QUIT = "quit"  # save the episode in progress and stop teleoperating
EVENT_GRIPPER_TOGGLE = "gripper_toggle"  # open a closed gripper, close an open one

JS_EVENT_BUTTON = 0x01
JS_EVENT_AXIS = 0x02
JS_EVENT_INIT = 0x80
_JS_EVENT = struct.Struct("<IhBB")  # struct js_event, linux/joystick.h
_AXIS_MAX = 32767.0


class TeleopDeviceError(ValueError):
    """A device that cannot be opened or used; the message is one line meant for the user."""


@dataclass(frozen=True)
class TeleopCommand:
    """What the operator asks for right now (base frame: x forward, y left, z up)."""

    linear: np.ndarray = field(default_factory=lambda: np.zeros(3))  # m/s
    angular: np.ndarray = field(default_factory=lambda: np.zeros(3))  # rad/s, about the base axes
    gripper: float = 0.0  # gripper velocity, fraction of its full stroke per second; + opens, - closes
    engaged: bool = False  # the arm follows only while engaged (toggle or dead-man, per device)
    events: tuple[str, ...] = ()  # EVENT_* that happened since the previous poll, in order
    buttons: frozenset[int] = frozenset()  # raw buttons held (gamepad / SpaceMouse), for diagnostics

    @property
    def moving(self) -> bool:
        return bool(np.any(self.linear) or np.any(self.angular) or self.gripper)


def apply_deadzone(value: float, deadzone: float) -> float:
    """A value in [-1, 1] with |value| < deadzone set to 0 and the rest rescaled to start at 0."""
    value = float(np.clip(value, -1.0, 1.0))
    if abs(value) <= deadzone:
        return 0.0
    return float(np.sign(value) * (abs(value) - deadzone) / (1.0 - deadzone))


def open_device(path: str | os.PathLike[str], what: str, write: bool = False) -> int:
    """A non-blocking fd for `path`; TeleopDeviceError with a one-line reason if it cannot be opened."""
    flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_NONBLOCK | os.O_NOCTTY
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        raise TeleopDeviceError(f"{what}: {path} does not exist (is the device plugged in?)") from None
    except PermissionError:
        raise TeleopDeviceError(
            f"{what}: no permission to read {path} (add a udev rule or join the group that owns it)"
        ) from None
    except OSError as exc:
        raise TeleopDeviceError(f"{what}: cannot open {path}: {exc.strerror}") from None


class TeleopDevice:
    """Base class: owns (or borrows) a non-blocking fd; `poll()` -> TeleopCommand; `close()` releases it."""

    name = "device"

    def __init__(self, source: str | os.PathLike[str] | int, write: bool = False) -> None:
        if isinstance(source, int):
            self.fd, self._owns_fd, self.path = source, False, f"fd {source}"
            os.set_blocking(self.fd, False)
        else:
            self.path = str(source)
            self.fd, self._owns_fd = open_device(self.path, self.name, write), True
        self._events: list[str] = []
        self.closed = False

    def fileno(self) -> int:
        return self.fd

    def _read_available(self, size: int = 4096) -> list[bytes]:
        """Every read() that returns data now (one chunk per read: hidraw gives one report per read)."""
        chunks = []
        while True:
            try:
                data = os.read(self.fd, size)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EIO:  # a pty whose other side closed, an unplugged device
                    break
                raise
            if not data:  # EOF: a fifo without writer, a closed socket
                break
            chunks.append(data)
        return chunks

    def _take_events(self) -> tuple[str, ...]:
        events, self._events = tuple(self._events), []
        return events

    def poll(self, now: float | None = None) -> TeleopCommand:
        raise NotImplementedError

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._owns_fd:
            with contextlib.suppress(OSError):
                os.close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


# ------------------------------------------------------------------------------------------------------
# keyboard
# ------------------------------------------------------------------------------------------------------
# key -> (kind, axis, sign): kind "lin" / "ang" twist axes, "grip" gripper velocity
_MOTION_KEYS: dict[str, tuple[str, int, float]] = {
    "w": ("lin", 0, 1.0),
    "s": ("lin", 0, -1.0),
    "a": ("lin", 1, 1.0),
    "d": ("lin", 1, -1.0),
    "r": ("lin", 2, 1.0),
    "f": ("lin", 2, -1.0),
    "u": ("ang", 0, 1.0),
    "o": ("ang", 0, -1.0),
    "i": ("ang", 1, 1.0),
    "k": ("ang", 1, -1.0),
    "j": ("ang", 2, 1.0),
    "l": ("ang", 2, -1.0),
    ",": ("grip", 0, -1.0),
    ".": ("grip", 0, 1.0),
    "UP": ("ang", 1, 1.0),
    "DOWN": ("ang", 1, -1.0),
    "LEFT": ("ang", 2, 1.0),
    "RIGHT": ("ang", 2, -1.0),
}
_EVENT_KEYS = {
    "n": EVENT_NEXT,
    "x": EVENT_DISCARD,
    "q": EVENT_QUIT,
    " ": EVENT_GRIPPER_TOGGLE,
    "\x03": EVENT_QUIT,
}
# ESC [ X (normal cursor mode) and ESC O X (application cursor mode) arrow keys
_ARROWS = {"A": "UP", "B": "DOWN", "C": "RIGHT", "D": "LEFT"}
KEY_MAP_HELP = (
    "keys: e engage | w/s x  a/d y  r/f z | u/o roll  i/k pitch  j/l yaw (arrows too) | "
    "space gripper toggle  ,/. close/open | n next episode  x discard  q quit"
)


class KeyboardReader(TeleopDevice):
    """Keys from a terminal (tty or pty) in cbreak mode; see the module docstring for the key map.

    `source`: a terminal path (default: the controlling terminal `/dev/tty`) or an open fd. Terminal
    settings are saved on open and restored by `close()`. A non-terminal fd (a pipe, a fifo) is read as is.
    """

    name = "keyboard"

    def __init__(
        self,
        source: str | os.PathLike[str] | int = "/dev/tty",
        linear_speed: float = 0.05,
        angular_speed: float = 0.5,
        gripper_speed: float = 0.5,
        hold_time: float = 0.6,
        repeat_hold: float = 0.12,
        engaged: bool = False,
    ) -> None:
        super().__init__(source, write=True)
        self.linear_speed = float(linear_speed)
        self.angular_speed = float(angular_speed)
        self.gripper_speed = float(gripper_speed)
        self.hold_time = float(hold_time)
        self.repeat_hold = float(repeat_hold)
        self.engaged = bool(engaged)
        # key -> (time it stops driving its axis, seen auto-repeating)
        self._held: dict[str, tuple[float, bool]] = {}
        self._pending = ""  # an escape sequence split across reads
        self._saved_attrs = None
        if os.isatty(self.fd):
            try:
                self._saved_attrs = termios.tcgetattr(self.fd)
                tty.setcbreak(self.fd, termios.TCSANOW)  # ICANON and ECHO off; ISIG kept: Ctrl-C works
            except termios.error as exc:
                super().close()
                raise TeleopDeviceError(f"keyboard: cannot set terminal mode on {self.path}: {exc}") from None

    def close(self) -> None:
        if not self.closed and self._saved_attrs is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved_attrs)
        super().close()

    def _keys(self, text: str) -> Iterable[str]:
        text = self._pending + text
        self._pending = ""
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "\x1b":
                if i + 1 >= len(text) or (text[i + 1] in "[O" and i + 2 >= len(text)):
                    self._pending = text[i:]  # the rest of the sequence comes with the next read
                    return
                if text[i + 1] in "[O":
                    # CSI: parameters/intermediates, then one final byte in 0x40-0x7e
                    j = i + 2
                    while j < len(text) and not ("\x40" <= text[j] <= "\x7e"):
                        j += 1
                    if j >= len(text):
                        self._pending = text[i:]
                        return
                    if j == i + 2 and text[j] in _ARROWS:
                        yield _ARROWS[text[j]]
                    i = j + 1  # other sequences (function keys, Home, ...) are ignored
                    continue
                i += 1  # a lone ESC: ignored
                continue
            yield ch.lower() if len(ch) == 1 and ch.isalpha() else ch
            i += 1

    def feed(self, data: bytes, now: float | None = None) -> None:
        """Process raw terminal bytes (what `poll` does with what it reads)."""
        now = time.monotonic() if now is None else now
        for key in self._keys(data.decode("latin-1")):
            if key == "e":
                self.engaged = not self.engaged
                self._held.clear()
            elif key in _EVENT_KEYS:
                self._events.append(_EVENT_KEYS[key])
            elif key in _MOTION_KEYS:
                kind, axis, sign = _MOTION_KEYS[key]
                for other, (k, a, s) in _MOTION_KEYS.items():  # the opposite key stops that axis
                    if (k, a) == (kind, axis) and s != sign:
                        self._held.pop(other, None)
                until, repeating = self._held.get(key, (-np.inf, False))
                repeating = repeating or until >= now  # pressed again while still driving: auto-repeat
                self._held[key] = (now + (self.repeat_hold if repeating else self.hold_time), repeating)

    def poll(self, now: float | None = None) -> TeleopCommand:
        now = time.monotonic() if now is None else now
        for chunk in self._read_available():
            self.feed(chunk, now)
        linear, angular, gripper = np.zeros(3), np.zeros(3), 0.0
        for key, (until, _) in list(self._held.items()):
            if until < now:
                del self._held[key]
                continue
            kind, axis, sign = _MOTION_KEYS[key]
            if kind == "lin":
                linear[axis] += sign * self.linear_speed
            elif kind == "ang":
                angular[axis] += sign * self.angular_speed
            else:
                gripper += sign * self.gripper_speed
        return TeleopCommand(linear, angular, gripper, self.engaged, self._take_events())


# ------------------------------------------------------------------------------------------------------
# gamepad: Linux joystick API
# ------------------------------------------------------------------------------------------------------
def js_event(value: int, number: int, kind: int, time_ms: int = 0) -> bytes:
    """One `struct js_event` as the kernel writes it (for tests and simulators)."""
    return _JS_EVENT.pack(time_ms & 0xFFFFFFFF, int(value), kind, number)


@dataclass(frozen=True)
class GamepadMapping:
    """Axis and button numbers (Linux xpad layout by default) and the sign of each twist axis.

    Each twist entry is (axis number, sign): stick up reads negative on Linux, hence the minus signs.
    """

    linear: tuple[tuple[int, float], ...] = ((1, -1.0), (0, -1.0), (4, -1.0))  # x, y, z
    angular: tuple[tuple[int, float], ...] = ((6, 1.0), (7, -1.0), (3, -1.0))  # roll, pitch, yaw
    gripper_close_axis: int = 2  # LT: -32767 released .. +32767 pressed; -1: none
    gripper_open_axis: int = 5  # RT
    deadman_button: int = 4  # LB
    gripper_toggle_button: int = 0  # A
    next_button: int = 7  # Start
    discard_button: int = 6  # Back
    quit_button: int = 8  # Guide


class GamepadReader(TeleopDevice):
    """A joystick-API gamepad (`/dev/input/jsN`, or any file/fifo/fd carrying js_event structs)."""

    name = "gamepad"

    def __init__(
        self,
        source: str | os.PathLike[str] | int = "/dev/input/js0",
        linear_speed: float = 0.1,
        angular_speed: float = 0.8,
        gripper_speed: float = 1.0,
        deadzone: float = 0.15,
        mapping: GamepadMapping | None = None,
    ) -> None:
        super().__init__(source)
        self.linear_speed = float(linear_speed)
        self.angular_speed = float(angular_speed)
        self.gripper_speed = float(gripper_speed)
        self.deadzone = float(deadzone)
        self.mapping = mapping or GamepadMapping()
        self.axes: dict[int, float] = {}  # axis number -> value in [-1, 1]
        self.buttons: dict[int, bool] = {}
        self._partial = b""
        self._button_events = {
            self.mapping.gripper_toggle_button: EVENT_GRIPPER_TOGGLE,
            self.mapping.next_button: EVENT_NEXT,
            self.mapping.discard_button: EVENT_DISCARD,
            self.mapping.quit_button: EVENT_QUIT,
        }

    def feed(self, data: bytes) -> None:
        data = self._partial + data
        whole = len(data) - len(data) % _JS_EVENT.size
        self._partial = data[whole:]
        for _time_ms, value, kind, number in _JS_EVENT.iter_unpack(data[:whole]):
            initial = bool(kind & JS_EVENT_INIT)
            kind &= ~JS_EVENT_INIT
            if kind == JS_EVENT_AXIS:
                self.axes[number] = max(-1.0, value / _AXIS_MAX)
            elif kind == JS_EVENT_BUTTON:
                pressed = bool(value)
                # an edge: a press that is not the initial state reported on open
                if pressed and not initial and not self.buttons.get(number, False):
                    event = self._button_events.get(number)
                    if event is not None:
                        self._events.append(event)
                self.buttons[number] = pressed

    def _trigger(self, axis: int) -> float:
        """0 (released; also before the driver reported it, or no such axis: -1) .. 1 (fully pressed)."""
        if axis < 0:
            return 0.0
        raw = self.axes.get(axis, -1.0)
        return apply_deadzone((raw + 1.0) / 2.0, self.deadzone)

    def poll(self, now: float | None = None) -> TeleopCommand:
        for chunk in self._read_available():
            self.feed(chunk)
        m = self.mapping
        stick = [apply_deadzone(self.axes.get(a, 0.0), self.deadzone) * s for a, s in m.linear]
        turn = [apply_deadzone(self.axes.get(a, 0.0), self.deadzone) * s for a, s in m.angular]
        gripper = (
            self._trigger(m.gripper_open_axis) - self._trigger(m.gripper_close_axis)
        ) * self.gripper_speed
        return TeleopCommand(
            linear=np.array(stick) * self.linear_speed,
            angular=np.array(turn) * self.angular_speed,
            gripper=float(gripper),
            engaged=self.buttons.get(m.deadman_button, False),
            events=self._take_events(),
            buttons=frozenset(b for b, down in self.buttons.items() if down),
        )


# ------------------------------------------------------------------------------------------------------
# SpaceMouse: Linux hidraw
# ------------------------------------------------------------------------------------------------------
# 3Dconnexion USB ids: vendor 0x256f (all current devices); older ones under Logitech's 0x046d
_3DCONNEXION_VENDOR = 0x256F
_LOGITECH_VENDOR = 0x046D
_LOGITECH_3DX_PRODUCTS = range(0xC603, 0xC640)  # SpaceMouse Plus/Classic, SpaceNavigator, SpacePilot, ...


def find_spacemouse(sysfs: str | os.PathLike[str] = "/sys/class/hidraw") -> Path | None:
    """`/dev/hidrawN` of the first 3Dconnexion device (by the HID_ID in its uevent), or None."""
    root = Path(sysfs)
    if not root.is_dir():
        return None
    for entry in sorted(root.iterdir(), key=lambda p: (len(p.name), p.name)):
        try:
            uevent = (entry / "device" / "uevent").read_text()
        except OSError:
            continue
        for line in uevent.splitlines():
            if not line.startswith("HID_ID="):
                continue
            try:  # HID_ID=0003:0000256F:0000C635 (bus:vendor:product)
                _bus, vendor, product = (int(part, 16) for part in line.split("=", 1)[1].split(":"))
            except ValueError:
                continue
            if vendor == _3DCONNEXION_VENDOR or (
                vendor == _LOGITECH_VENDOR and product in _LOGITECH_3DX_PRODUCTS
            ):
                return Path("/dev") / entry.name
    return None


class SpaceMouseReader(TeleopDevice):
    """A 3Dconnexion SpaceMouse through hidraw (or any fd delivering its HID input reports).

    `source` None: the first 3Dconnexion hidraw device (TeleopDeviceError if there is none). hidraw
    delivers exactly one report per read(), which tells the report 1 layouts apart (7 or 13 bytes). A read
    holding several reports (a fifo or pty in tests) is split by the known sizes: report 1 as the layout
    seen before (6 bytes until a 13-byte read showed the 6-axis layout), report 2 six bytes, report 3 the
    rest.
    """

    name = "spacemouse"

    def __init__(
        self,
        source: str | os.PathLike[str] | int | None = None,
        linear_speed: float = 0.1,
        angular_speed: float = 0.8,
        deadzone: float = 0.1,
        full_scale: float = 350.0,
        # device axis (0..2) and sign per base-frame axis: push away (-y) = +x, push left (-x) = +y,
        # lift (-z) = +z; tilting follows the same axes (roll about x, pitch about y, twist = yaw)
        linear_axes: tuple[tuple[int, float], ...] = ((1, -1.0), (0, -1.0), (2, -1.0)),
        angular_axes: tuple[tuple[int, float], ...] = ((1, -1.0), (0, -1.0), (2, -1.0)),
        gripper_button: int = 0,
        engage_button: int = 1,
    ) -> None:
        if source is None:
            found = find_spacemouse()
            if found is None:
                raise TeleopDeviceError(
                    "spacemouse: no 3Dconnexion device in /sys/class/hidraw; plug one in or set device_path"
                )
            source = found
        super().__init__(source)
        self.linear_speed = float(linear_speed)
        self.angular_speed = float(angular_speed)
        self.deadzone = float(deadzone)
        self.full_scale = float(full_scale)
        self.linear_axes = linear_axes
        self.angular_axes = angular_axes
        self.gripper_button = int(gripper_button)
        self.engage_button = int(engage_button)
        self.translation = np.zeros(3)  # raw counts, device axes
        self.rotation = np.zeros(3)
        self.button_mask = 0
        self.engaged = False
        self.six_axis_report: bool | None = None  # report 1 carries all six axes (newer devices)

    def feed(self, report: bytes) -> None:
        """One read()'s worth: one HID report (report id first), or several back to back."""
        i = 0
        while i < len(report):
            rid, rest = report[i], report[i + 1 :]
            if rid == 1:
                # 12 bytes: all six axes; a longer read splits as the device's earlier reads did
                six = len(rest) == 12 or (len(rest) > 12 and bool(self.six_axis_report))
                n = 12 if six else 6
                if len(rest) < n:
                    return  # truncated: ignored
                values = struct.unpack_from(f"<{n // 2}h", rest)
                self.translation = np.array(values[:3], float)
                if six:
                    self.rotation = np.array(values[3:6], float)
                    self.six_axis_report = True
                elif self.six_axis_report is None:
                    self.six_axis_report = False
            elif rid == 2:
                n = 6
                if len(rest) < 6:
                    return
                self.rotation = np.array(struct.unpack_from("<3h", rest), float)
            elif rid == 3:
                n = len(rest)  # the bitmask fills the rest of the report (its size depends on the model)
                mask = int.from_bytes(rest, "little")
                pressed = mask & ~self.button_mask
                if pressed >> self.gripper_button & 1:
                    self._events.append(EVENT_GRIPPER_TOGGLE)
                if pressed >> self.engage_button & 1:
                    self.engaged = not self.engaged
                self.button_mask = mask
            else:
                return  # an unknown report (battery level on wireless models, ...): ignored
            i += 1 + n

    def _scaled(self, raw: np.ndarray, axes: tuple[tuple[int, float], ...]) -> np.ndarray:
        return np.array([apply_deadzone(raw[a] / self.full_scale, self.deadzone) * s for a, s in axes])

    def poll(self, now: float | None = None) -> TeleopCommand:
        for report in self._read_available(64):
            self.feed(report)
        return TeleopCommand(
            linear=self._scaled(self.translation, self.linear_axes) * self.linear_speed,
            angular=self._scaled(self.rotation, self.angular_axes) * self.angular_speed,
            gripper=0.0,
            engaged=self.engaged,
            events=self._take_events(),
            buttons=frozenset(b for b in range(self.button_mask.bit_length()) if self.button_mask >> b & 1),
        )


DEVICES = {"keyboard": KeyboardReader, "gamepad": GamepadReader, "spacemouse": SpaceMouseReader}
