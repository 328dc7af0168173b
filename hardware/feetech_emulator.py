"""A byte-level emulator of Feetech STS3215 serial bus servos, served on a pseudo-terminal (no rclpy).

Why: the SO-101 arms are STS3215 servos on a half-duplex TTL bus behind a USB-serial adapter. No motor can
run here, so this module stands in for the bus, not for the driver: it speaks Feetech's SCServo protocol 1.0
byte for byte on a pty, and lerobot's own, unmodified `FeetechMotorsBus` (over `scservo_sdk` and pyserial)
opens the pty's slave path as if it were `/dev/ttyACM0`.

What is emulated (the subset lerobot 0.6 uses, plus REG_WRITE/ACTION):
- Packets `FF FF ID LEN INSTR PARAMS.. CHK` and status packets `FF FF ID LEN ERR PARAMS.. CHK`, with
  CHK = ~(ID + LEN + INSTR/ERR + sum(PARAMS)) & 0xFF. A packet with a bad checksum gets no reply (it is
  counted in `stats`); a frame left incomplete for `FRAME_TIMEOUT_S` is discarded, like a servo's UART.
- PING 0x01, READ 0x02, WRITE 0x03, REG_WRITE 0x04, ACTION 0x05, SYNC_READ 0x82, SYNC_WRITE 0x83. Broadcast
  ID 0xFE: every servo answers a broadcast PING (in ID order), none answers anything else sent to 0xFE.
  Response_Status_Level 0 suppresses the status packet of WRITE/REG_WRITE/ACTION (PING and READ still
  answer). Unknown instructions and malformed parameters get no reply. Return_Delay_Time (2 us units) is
  honoured before a reply.
- The STS/SMS control table at lerobot's addresses (`CONTROL_TABLE`; the tests check it against
  `lerobot.motors.feetech.tables`): EEPROM 0-39, RAM 40-79, factory 80-86, in a 256-byte memory image
  (unmapped bytes read 0, read-only bytes ignore writes), little-endian, sign-magnitude where the servo
  uses it (Homing_Offset bit 11, Goal/Present position and speed bit 15, Present_Load bit 10).
  Model number 777 (STS3215), firmware 3.10.
- Baud rate: each servo listens only at the rate its Baud_Rate register selects, and the emulator reads
  the rate the host has set on the pty (TCGETS2), so lerobot's baud-rate probing (`scan_port`,
  `setup_motor`) finds a servo only at its rate. A new ID or baud rate takes effect after the status
  packet of the WRITE that sets it (which carries the old ID, as `scservo_sdk` expects).
- Position servo: Present_Position = Actual_Position - Homing_Offset, wrapped to 0..4095 while Phase bit 4
  (angle feedback mode) is clear. With torque enabled in mode 0 the position moves toward Goal_Position
  (clamped to Min/Max_Position_Limit unless both are 0, the multi-turn setting) at `max_speed` ticks/s, or
  Goal_Velocity when that is smaller and non-zero, with Acceleration (x100 ticks/s^2, 0 = unlimited).
  Mode 1 (wheel) turns at Goal_Velocity. With torque disabled the shaft stays where it is put:
  `set_present_position` / `set_actual_position` play the human hand moving a leader arm, and
  Goal_Position reads back the present position (so enabling torque holds the pose instead of jumping).
- EEPROM writes take effect at once and survive `power_cycle()` only if made while Lock (55) was 0.
- Faults: `corrupt_next_requests(n)` flips a bit in the next n host transmissions (the servos ignore them),
  `corrupt_next_replies(n)` flips a bit of the next n status packets, `set_online(id, False)` unplugs a
  servo, `set_error(id, bits)` puts error bits (voltage 1, angle sensor 2, overheat 4, current 8,
  overload 32) into its status packets.
Time: in real-time mode (default) the motion integrates wall time lazily, whenever the bus is used or
inspected, so no thread spins between packets; with `realtime=False` it moves only on `advance(dt)`.

Run standalone: `python -m twinloop.hardware.feetech_emulator --ids 1-6 --link /tmp/so101_leader` prints
the pty path and serves until Ctrl-C (see docs/hardware_emulators.md).
"""

from __future__ import annotations

import argparse
import array
import contextlib
import errno
import fcntl
import functools
import logging
import math
import os
import select
import signal
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# --- protocol constants (SCServo protocol 1.0, the one lerobot calls protocol_version 0) -------------------
HEADER = b"\xff\xff"
BROADCAST_ID = 0xFE
MAX_ID = 0xFC
INST_PING = 0x01
INST_READ = 0x02
INST_WRITE = 0x03
INST_REG_WRITE = 0x04
INST_ACTION = 0x05
INST_SYNC_READ = 0x82
INST_SYNC_WRITE = 0x83
INSTRUCTION_NAMES = {
    INST_PING: "PING",
    INST_READ: "READ",
    INST_WRITE: "WRITE",
    INST_REG_WRITE: "REG_WRITE",
    INST_ACTION: "ACTION",
    INST_SYNC_READ: "SYNC_READ",
    INST_SYNC_WRITE: "SYNC_WRITE",
}
# status error bits (scservo_sdk protocol_packet_handler)
ERRBIT_VOLTAGE = 0x01
ERRBIT_ANGLE = 0x02
ERRBIT_OVERHEAT = 0x04
ERRBIT_OVERELE = 0x08
ERRBIT_OVERLOAD = 0x20

STS3215_MODEL_NUMBER = 777
RESOLUTION = 4096  # ticks per turn
MEMORY_SIZE = 256
EEPROM_END = 40  # addresses below are EEPROM; 40..79 RAM; 80.. factory (persisted like EEPROM)
FACTORY_START = 80
FRAME_TIMEOUT_S = 0.02  # an incomplete frame older than this is dropped
# Baud_Rate register value -> bits/s (STS/SMS series; lerobot STS_SMS_SERIES_BAUDRATE_TABLE)
BAUD_RATES = {
    0: 1_000_000,
    1: 500_000,
    2: 250_000,
    3: 128_000,
    4: 115_200,
    5: 57_600,
    6: 38_400,
    7: 19_200,
}
BAUD_CODES = {rate: code for code, rate in BAUD_RATES.items()}


def checksum(body: bytes | bytearray | Sequence[int]) -> int:
    """Feetech checksum of ID, LEN, INSTR/ERR and the parameters (the header and CHK excluded)."""
    return ~sum(body) & 0xFF


def encode_sign_magnitude(value: int, sign_bit: int) -> int:
    magnitude = min(abs(int(value)), (1 << sign_bit) - 1)
    return ((1 << sign_bit) if value < 0 else 0) | magnitude


def decode_sign_magnitude(raw: int, sign_bit: int) -> int:
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if (raw >> sign_bit) & 1 else magnitude


@dataclass(frozen=True)
class Packet:
    """One instruction packet (host -> servos) or status packet (servo -> host, `code` = error byte)."""

    id: int
    code: int  # instruction, or the error byte of a status packet
    params: bytes = b""

    def encode(self) -> bytes:
        if len(self.params) > 251:
            raise ValueError(f"packet parameters too long ({len(self.params)} bytes, at most 251)")
        body = bytes([self.id & 0xFF, len(self.params) + 2, self.code & 0xFF]) + bytes(self.params)
        return HEADER + body + bytes([checksum(body)])


def instruction_packet(servo_id: int, instruction: int, params: Iterable[int] = ()) -> bytes:
    return Packet(servo_id, instruction, bytes(params)).encode()


def status_packet(servo_id: int, error: int = 0, params: Iterable[int] = ()) -> bytes:
    return Packet(servo_id, error, bytes(params)).encode()


class PacketParser:
    """Splits a byte stream into checksum-valid packets, resynchronising on the FF FF header.

    Garbage between packets is skipped, a packet with a bad checksum is dropped (its header is skipped and
    the search resumes inside it, so a corrupted length byte cannot swallow the next packet), and a frame
    that stays incomplete for longer than `frame_timeout` seconds is discarded at the next `feed`.
    """

    def __init__(self, frame_timeout: float = FRAME_TIMEOUT_S) -> None:
        self.frame_timeout = frame_timeout
        self._buf = bytearray()
        self._last_rx: float | None = None
        self.bad_checksum = 0
        self.discarded_bytes = 0

    def feed(self, data: bytes, now: float | None = None) -> list[Packet]:
        now = time.monotonic() if now is None else now
        if self._buf and self._last_rx is not None and now - self._last_rx > self.frame_timeout:
            self.discarded_bytes += len(self._buf)
            self._buf.clear()
        self._last_rx = now
        self._buf += data
        packets: list[Packet] = []
        buf = self._buf
        while True:
            start = buf.find(HEADER)
            if start < 0:
                keep = 1 if buf[-1:] == b"\xff" else 0
                self.discarded_bytes += len(buf) - keep
                del buf[: len(buf) - keep]
                break
            if start:
                self.discarded_bytes += start
                del buf[:start]
            if len(buf) < 4:
                break
            if buf[2] == 0xFF:  # FF FF FF ..: the header starts one byte later
                self.discarded_bytes += 1
                del buf[0]
                continue
            length = buf[3]
            if length < 2:
                self.discarded_bytes += 2
                del buf[:2]
                continue
            total = length + 4
            if len(buf) < total:
                break
            frame = bytes(buf[:total])
            if checksum(frame[2:-1]) != frame[-1]:
                self.bad_checksum += 1
                self.discarded_bytes += 2
                del buf[:2]
                continue
            del buf[:total]
            packets.append(Packet(frame[2], frame[4], frame[5:-1]))
        return packets


# --- control table ---
@dataclass(frozen=True)
class Register:
    name: str
    address: int
    size: int
    default: int = 0
    writable: bool = True
    sign_bit: int | None = None  # sign-magnitude encoding


# Names, addresses and sizes as in lerobot.motors.feetech.tables.STS_SMS_SERIES_CONTROL_TABLE; defaults are
# STS3215 factory values where known (position limits, PID, protection settings), plausible values otherwise.
CONTROL_TABLE: tuple[Register, ...] = (
    # EEPROM
    Register("Firmware_Major_Version", 0, 1, 3, writable=False),
    Register("Firmware_Minor_Version", 1, 1, 10, writable=False),
    Register("Model_Number", 3, 2, STS3215_MODEL_NUMBER, writable=False),
    Register("ID", 5, 1, 1),
    Register("Baud_Rate", 6, 1, 0),
    Register("Return_Delay_Time", 7, 1, 0),
    Register("Response_Status_Level", 8, 1, 1),
    Register("Min_Position_Limit", 9, 2, 0),
    Register("Max_Position_Limit", 11, 2, 4095),
    Register("Max_Temperature_Limit", 13, 1, 70),
    Register("Max_Voltage_Limit", 14, 1, 140),
    Register("Min_Voltage_Limit", 15, 1, 40),
    Register("Max_Torque_Limit", 16, 2, 1000),
    Register("Phase", 18, 1, 0x0C),
    Register("Unloading_Condition", 19, 1, 44),
    Register("LED_Alarm_Condition", 20, 1, 47),
    Register("P_Coefficient", 21, 1, 32),
    Register("D_Coefficient", 22, 1, 32),
    Register("I_Coefficient", 23, 1, 0),
    Register("Minimum_Startup_Force", 24, 2, 16),
    Register("CW_Dead_Zone", 26, 1, 1),
    Register("CCW_Dead_Zone", 27, 1, 1),
    Register("Protection_Current", 28, 2, 500),
    Register("Angular_Resolution", 30, 1, 1),
    Register("Homing_Offset", 31, 2, 0, sign_bit=11),
    Register("Operating_Mode", 33, 1, 0),
    Register("Protective_Torque", 34, 1, 20),
    Register("Protection_Time", 35, 1, 200),
    Register("Overload_Torque", 36, 1, 80),
    Register("Velocity_closed_loop_P_proportional_coefficient", 37, 1, 10),
    Register("Over_Current_Protection_Time", 38, 1, 200),
    Register("Velocity_closed_loop_I_integral_coefficient", 39, 1, 200),
    # RAM
    Register("Torque_Enable", 40, 1, 0),
    Register("Acceleration", 41, 1, 0),
    Register("Goal_Position", 42, 2, 0, sign_bit=15),
    Register("Goal_Time", 44, 2, 0),
    Register("Goal_Velocity", 46, 2, 0, sign_bit=15),
    Register("Torque_Limit", 48, 2, 1000),
    Register("Lock", 55, 1, 1),
    Register("Present_Position", 56, 2, 0, writable=False, sign_bit=15),
    Register("Present_Velocity", 58, 2, 0, writable=False, sign_bit=15),
    Register("Present_Load", 60, 2, 0, writable=False, sign_bit=10),
    Register("Present_Voltage", 62, 1, 74, writable=False),
    Register("Present_Temperature", 63, 1, 30, writable=False),
    Register("Status", 65, 1, 0, writable=False),
    Register("Moving", 66, 1, 0, writable=False),
    Register("Present_Current", 69, 2, 0, writable=False),
    Register("Goal_Position_2", 71, 2, 0, writable=False),
    # factory
    Register("Moving_Velocity", 80, 1, 2),
    Register("Moving_Velocity_Threshold", 80, 1, 2),  # lerobot's second name for address 80
    Register("DTs", 81, 1, 1),
    Register("Velocity_Unit_factor", 82, 1, 1),
    Register("Hts", 83, 1, 0),
    Register("Maximum_Velocity_Limit", 84, 1, 254),
    Register("Maximum_Acceleration", 85, 1, 254),
    Register("Acceleration_Multiplier ", 86, 1, 0),  # sic: lerobot's key has the trailing space
)
REGISTERS = {r.name: r for r in CONTROL_TABLE}
READ_ONLY = frozenset(
    addr for r in CONTROL_TABLE if not r.writable for addr in range(r.address, r.address + r.size)
)
_R = REGISTERS


def _locked(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    return wrapper


class EmulatedServo:
    """One STS3215: a 256-byte memory image plus the shaft's motion state.

    Thread-safe: every public method holds `lock` (the bus's lock when the servo belongs to a bus)."""

    def __init__(
        self,
        servo_id: int,
        *,
        max_speed: float = 3000.0,
        position: float = 2048.0,
        eeprom: dict[str, int] | None = None,
        lock: threading.RLock | None = None,
    ) -> None:
        self.lock = lock if lock is not None else threading.RLock()
        if not 0 <= servo_id <= MAX_ID:
            raise ValueError(f"servo id {servo_id} outside 0..{MAX_ID}")
        self.max_speed = float(max_speed)  # ticks/s, the motor's no-load speed
        self.actual = float(position)  # shaft angle in encoder ticks (unwrapped), before Homing_Offset
        self.velocity = 0.0  # ticks/s
        self.error_bits = 0
        self.online = True
        self.pending: tuple[int, bytes] | None = None  # REG_WRITE buffer
        self.mem = bytearray(MEMORY_SIZE)
        for reg in CONTROL_TABLE:
            self._store(reg, reg.default)
        self._store(_R["ID"], servo_id)
        for name, value in (eeprom or {}).items():
            self._store(REGISTERS[name], value)
        self.persisted = bytes(self.mem)  # what EEPROM holds across a power cycle
        self.refresh()

    # -- raw register access ----------------------------------------------------------------------------
    def _store(self, reg: Register, value: int) -> None:
        raw = encode_sign_magnitude(value, reg.sign_bit) if reg.sign_bit is not None else int(value)
        self.mem[reg.address : reg.address + reg.size] = (raw & ((1 << (8 * reg.size)) - 1)).to_bytes(
            reg.size, "little"
        )

    @_locked
    def get(self, name: str) -> int:
        """A register's decoded value (sign-magnitude applied)."""
        reg = REGISTERS[name]
        raw = int.from_bytes(self.mem[reg.address : reg.address + reg.size], "little")
        return decode_sign_magnitude(raw, reg.sign_bit) if reg.sign_bit is not None else raw

    @_locked
    def set(self, name: str, value: int) -> None:
        """Set a register directly, as if configured before power-on (bypasses the bus and Lock; read-only
        registers included; an EEPROM register keeps the value across `power_cycle`)."""
        reg = REGISTERS[name]
        self._store(reg, value)
        if reg.address < EEPROM_END or reg.address >= FACTORY_START:
            end = reg.address + reg.size
            self.persisted = (
                self.persisted[: reg.address] + bytes(self.mem[reg.address : end]) + self.persisted[end:]
            )
        self.refresh()

    @property
    def id(self) -> int:
        return self.mem[_R["ID"].address]

    @property
    def baudrate(self) -> int:
        return BAUD_RATES.get(self.mem[_R["Baud_Rate"].address], -1)

    @property
    def torque_enabled(self) -> bool:
        return self.mem[_R["Torque_Enable"].address] != 0

    @_locked
    def read_bytes(self, address: int, length: int) -> bytes:
        self.refresh()
        return bytes(self.mem[address : address + length])

    @_locked
    def write_bytes(self, address: int, data: bytes) -> None:
        """A WRITE/SYNC_WRITE/ACTION from the bus: read-only bytes are skipped; side effects applied."""
        was_enabled = self.torque_enabled
        self.refresh()  # Goal_Position mirrors the present position while torque is off
        locked = self.mem[_R["Lock"].address] != 0
        persisted = bytearray(self.persisted)
        for i, byte in enumerate(data):
            addr = address + i
            if addr >= MEMORY_SIZE or addr in READ_ONLY:
                continue
            self.mem[addr] = byte
            if not locked and (addr < EEPROM_END or addr >= FACTORY_START):
                persisted[addr] = byte
        self.persisted = bytes(persisted)
        if self.torque_enabled and not was_enabled:
            self.velocity = 0.0
        self.refresh()

    @_locked
    def power_cycle(self) -> None:
        """Power off and on: EEPROM as persisted (unlocked writes only), RAM to defaults, shaft unchanged."""
        self.mem[:EEPROM_END] = self.persisted[:EEPROM_END]
        self.mem[FACTORY_START:] = self.persisted[FACTORY_START:]
        for reg in CONTROL_TABLE:
            if EEPROM_END <= reg.address < FACTORY_START:
                self._store(reg, reg.default)
        self.velocity = 0.0
        self.pending = None
        self.refresh()

    # -- positions --------------------------------------------------------------------------------------
    @property
    @_locked
    def homing_offset(self) -> int:
        return self.get("Homing_Offset")

    def _wraps(self) -> bool:
        return not (self.mem[_R["Phase"].address] & 0x10)

    def _present_float(self) -> float:
        p = self.actual - self.homing_offset
        return p % RESOLUTION if self._wraps() else p

    @property
    @_locked
    def present_position(self) -> int:
        """Present_Position as lerobot decodes it (ticks, after Homing_Offset)."""
        p = round(self.actual - self.homing_offset)
        return p % RESOLUTION if self._wraps() else p

    @_locked
    def set_present_position(self, ticks: float) -> None:
        """Put the shaft where Present_Position reads `ticks` (a hand moving a torque-off leader arm)."""
        self.actual = float(ticks) + self.homing_offset
        self.velocity = 0.0
        self.refresh()

    @_locked
    def set_actual_position(self, ticks: float) -> None:
        """Put the shaft at raw encoder angle `ticks` (before Homing_Offset)."""
        self.actual = float(ticks)
        self.velocity = 0.0
        self.refresh()

    def _limits(self) -> tuple[float, float] | None:
        lo, hi = self.get("Min_Position_Limit"), self.get("Max_Position_Limit")
        if lo == 0 and hi == 0:
            return None  # multi-turn setting: no position limits
        return float(min(lo, hi)), float(max(lo, hi))

    @_locked
    def goal_target(self) -> float:
        goal = float(self.get("Goal_Position"))
        limits = self._limits()
        return goal if limits is None else min(max(goal, limits[0]), limits[1])

    # -- motion -----------------------------------------------------------------------------------------
    @_locked
    def step(self, dt: float) -> None:
        """Advance the shaft by dt seconds (torque on: toward the goal; torque off: it stays put)."""
        if dt <= 0.0:
            return
        if not self.torque_enabled or not self.online:
            self.velocity = 0.0
            return
        mode = self.get("Operating_Mode")
        goal_speed = abs(self.get("Goal_Velocity"))
        if mode == 1:  # wheel mode: constant speed, signed by Goal_Velocity
            self.velocity = math.copysign(min(goal_speed, self.max_speed), self.get("Goal_Velocity"))
            self.actual += self.velocity * dt
            return
        if mode != 0:  # PWM and step modes are not emulated: the shaft holds
            self.velocity = 0.0
            return
        vmax = min(goal_speed, self.max_speed) if goal_speed > 0 else self.max_speed
        accel = self.get("Acceleration") * 100.0  # ticks/s^2; 0 = unlimited
        target = self.goal_target()
        if self._wraps():  # the present position lives in 0..4095: so does a reachable goal
            target = min(max(target, 0.0), RESOLUTION - 1.0)
        if accel == 0.0:
            err = target - self._present_float()
            move = max(-vmax * dt, min(vmax * dt, err))
            self.actual += move
            self.velocity = 0.0 if move == err else math.copysign(vmax, err)
            return
        n_sub = min(500, max(1, math.ceil(dt / 0.002)))
        h = dt / n_sub
        for _ in range(n_sub):
            err = target - self._present_float()
            # fastest speed from which the servo can still stop at the target, capped by vmax
            v_des = math.copysign(min(vmax, math.sqrt(2.0 * accel * abs(err))), err)
            v = self.velocity + max(-accel * h, min(accel * h, v_des - self.velocity))
            move = v * h
            if move * err >= 0.0 and abs(move) >= abs(err):  # arrives within this sub-step
                self.actual += err
                self.velocity = 0.0
                return
            self.actual += move
            self.velocity = v

    @_locked
    def refresh(self) -> None:
        """Write the live state into the RAM image (done before every read)."""
        present = self.present_position
        self._store(_R["Present_Position"], present)
        self._store(_R["Present_Velocity"], round(self.velocity))
        self._store(_R["Moving"], 1 if abs(self.velocity) > 0.5 else 0)
        self._store(_R["Status"], self.error_bits)
        if not self.torque_enabled:
            self._store(_R["Goal_Position"], present)


def _parse_ids(text: str) -> list[int]:
    """'1-6' or '1,2,5-6' -> [1, 2, 5, 6]."""
    ids: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                a, b = part.split("-", 1)
                ids.extend(range(int(a), int(b) + 1))
            else:
                ids.append(int(part))
    except ValueError:
        raise ValueError(f"bad servo ids '{text}' (use e.g. 1-6 or 1,2,5)") from None
    if not ids:
        raise ValueError(f"no servo ids in '{text}'")
    return ids


# --- pty baud rate (Linux termios2) ---
_TCGETS2 = 0x802C542A
_TCSETS2 = 0x402C542B
_CBAUD = 0o010017
_BOTHER = 0o010000


def _get_baudrate(fd: int) -> int | None:
    """The baud rate the host configured on the pty (None where it cannot be read)."""
    buf = array.array("i", [0] * 64)
    try:
        fcntl.ioctl(fd, _TCGETS2, buf)
        return int(buf[10])
    except OSError:
        pass
    try:
        speed = termios.tcgetattr(fd)[5]
    except termios.error:
        return None
    for name in dir(termios):
        if name.startswith("B") and name[1:].isdigit() and getattr(termios, name) == speed:
            return int(name[1:])
    return None


def _set_baudrate(fd: int, baudrate: int) -> None:
    buf = array.array("i", [0] * 64)
    try:
        fcntl.ioctl(fd, _TCGETS2, buf)
        buf[2] = (buf[2] & ~_CBAUD) | _BOTHER
        buf[9] = buf[10] = baudrate
        fcntl.ioctl(fd, _TCSETS2, buf)
    except OSError:
        logger.debug("cannot set the pty baud rate (no termios2); baud-rate emulation off")


class FeetechBusEmulator:
    """N emulated STS3215 servos on one bus, served on a pty from a background thread.

    >>> with FeetechBusEmulator(ids=range(1, 7)) as emu:   # doctest: +SKIP
    ...     bus = FeetechMotorsBus(port=emu.port, motors=...)  # lerobot, unmodified
    ...     emu.servo(1).set_present_position(1000)

    `port` is the pty slave path (e.g. /dev/pts/3); `link` optionally names a symlink to it that lives as
    long as the emulator. All public methods are thread-safe.
    """

    def __init__(
        self,
        ids: Iterable[int] = range(1, 7),
        *,
        baudrate: int = 1_000_000,
        max_speed: float = 3000.0,
        positions: dict[int, float] | None = None,
        eeprom: dict[int, dict[str, int]] | None = None,
        realtime: bool = True,
        link: str | os.PathLike | None = None,
    ) -> None:
        if baudrate not in BAUD_CODES:
            raise ValueError(f"baudrate {baudrate} is not an STS3215 rate ({sorted(BAUD_CODES)})")
        ids = list(ids)
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate servo ids in {ids}")
        positions = positions or {}
        eeprom = eeprom or {}
        self._lock = threading.RLock()
        self.servos: list[EmulatedServo] = []
        for i in ids:
            regs = {"Baud_Rate": BAUD_CODES[baudrate], **eeprom.get(i, {})}
            self.servos.append(
                EmulatedServo(
                    i, max_speed=max_speed, position=positions.get(i, 2048.0), eeprom=regs, lock=self._lock
                )
            )
        self.baudrate = baudrate  # the rate the pty starts at (what a raw client sees before configuring)
        self.realtime = realtime
        self.link = Path(link) if link is not None else None
        self.port: str | None = None
        self.stats = {
            "rx_packets": 0,
            "tx_packets": 0,
            "bad_checksum": 0,
            "baud_mismatch": 0,
            "unknown_instruction": 0,
            "malformed": 0,
        }
        self._parser = PacketParser()
        self._last_update = time.monotonic()
        self._corrupt_requests = 0
        self._corrupt_replies = 0
        self._master: int | None = None
        self._slave: int | None = None
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> FeetechBusEmulator:
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # until the host configures it: no echo, no line editing
        _set_baudrate(self._slave, self.baudrate)
        self.port = os.ttyname(self._slave)
        if self.link is not None:
            if self.link.is_symlink():
                self.link.unlink()
            self.link.symlink_to(self.port)
        self._wake_r, self._wake_w = os.pipe()
        self._stop.clear()
        self._last_update = time.monotonic()
        self._thread = threading.Thread(target=self._serve, name="feetech-emulator", daemon=True)
        self._thread.start()
        logger.info("Feetech bus emulator: %d servo(s) on %s", len(self.servos), self.port)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join(timeout=5.0)
        self._thread = None
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = self._wake_r = self._wake_w = None
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()

    def __enter__(self) -> FeetechBusEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- inspection and the "hand" ------------------------------------------------------------------
    def servo(self, servo_id: int) -> EmulatedServo:
        """The servo that currently has `servo_id` (its ID register can change over the bus)."""
        with self._lock:
            self._update()
            for s in self.servos:
                if s.id == servo_id:
                    return s
        raise KeyError(f"no servo with id {servo_id} on the bus")

    def present_positions(self) -> dict[int, int]:
        with self._lock:
            self._update()
            return {s.id: s.present_position for s in self.servos}

    def set_present_positions(self, positions: dict[int, float]) -> None:
        with self._lock:
            self._update()
            for servo_id, ticks in positions.items():
                self.servo(servo_id).set_present_position(ticks)

    def advance(self, dt: float) -> None:
        """Move the servos by dt seconds of motion (the only clock when realtime=False)."""
        with self._lock:
            for s in self.servos:
                s.step(dt)
                s.refresh()

    def set_online(self, servo_id: int, online: bool) -> None:
        with self._lock:
            self.servo(servo_id).online = online

    def set_error(self, servo_id: int, bits: int) -> None:
        with self._lock:
            s = self.servo(servo_id)
            s.error_bits = bits & 0x7F
            s.refresh()

    def corrupt_next_requests(self, n: int = 1) -> None:
        """Flip the last bit of each of the next n host transmissions: the servos see a bad checksum."""
        with self._lock:
            self._corrupt_requests += n

    def corrupt_next_replies(self, n: int = 1) -> None:
        """Flip one bit in each of the next n status packets: the host sees a bad checksum."""
        with self._lock:
            self._corrupt_replies += n

    def power_cycle(self) -> None:
        with self._lock:
            self._update()
            for s in self.servos:
                s.power_cycle()

    def _update(self) -> None:
        if not self.realtime:
            return
        now = time.monotonic()
        dt = now - self._last_update
        self._last_update = now
        for s in self.servos:
            s.step(dt)
            s.refresh()

    # -- protocol ---------------------------------------------------------------------------------------
    def process(self, data: bytes, host_baudrate: int | None = None) -> bytes:
        """Feed bytes from the host; return the bytes the servos answer (what `_serve` writes back).

        `host_baudrate` None means "whatever rate the servos use" (no baud-rate check).
        """
        with self._lock:
            self._update()
            if self._corrupt_requests and data:
                self._corrupt_requests -= 1
                data = data[:-1] + bytes([data[-1] ^ 0x01])
            before = self._parser.bad_checksum
            packets = self._parser.feed(data)
            self.stats["bad_checksum"] += self._parser.bad_checksum - before
            out = bytearray()
            for packet in packets:
                self.stats["rx_packets"] += 1
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug("rx %s", _describe(packet))
                for reply in self._handle(packet, host_baudrate):
                    if self._corrupt_replies:
                        self._corrupt_replies -= 1
                        reply = reply[:-1] + bytes([reply[-1] ^ 0x01])
                    self.stats["tx_packets"] += 1
                    out += reply
            return bytes(out)

    def _listening(self, host_baudrate: int | None) -> list[EmulatedServo]:
        servos = [s for s in self.servos if s.online]
        if host_baudrate is None:
            return servos
        hearing = [s for s in servos if s.baudrate == host_baudrate]
        if len(hearing) < len(servos):
            self.stats["baud_mismatch"] += 1
        return hearing

    def _handle(self, packet: Packet, host_baudrate: int | None) -> list[bytes]:
        servos = self._listening(host_baudrate)
        instr, params, pid = packet.code, packet.params, packet.id
        if instr not in INSTRUCTION_NAMES:
            self.stats["unknown_instruction"] += 1
            return []
        broadcast = pid == BROADCAST_ID
        targets = sorted(
            (s for s in servos if broadcast or s.id == pid), key=lambda s: s.id
        )  # broadcast PING answers come in ID order

        def reply(servo: EmulatedServo, data: bytes = b"", reply_id: int | None = None) -> bytes:
            delay = servo.get("Return_Delay_Time") * 2e-6
            if delay:
                time.sleep(delay)
            return status_packet(servo.id if reply_id is None else reply_id, servo.error_bits, data)

        def acknowledges(servo: EmulatedServo) -> bool:
            return not broadcast and servo.get("Response_Status_Level") >= 1

        if instr == INST_PING:
            if params:
                self.stats["malformed"] += 1
                return []
            return [reply(s) for s in targets]
        if instr == INST_READ:
            if broadcast or len(params) != 2 or params[1] == 0 or params[0] + params[1] > MEMORY_SIZE:
                self.stats["malformed"] += 1
                return []
            return [reply(s, s.read_bytes(params[0], params[1])) for s in targets]
        if instr in (INST_WRITE, INST_REG_WRITE):
            if len(params) < 2:
                self.stats["malformed"] += 1
                return []
            out = []
            for s in targets:
                old_id, ack = s.id, acknowledges(s)  # as configured when the packet arrived
                if instr == INST_WRITE:
                    s.write_bytes(params[0], bytes(params[1:]))
                else:
                    s.pending = (params[0], bytes(params[1:]))
                if ack:
                    out.append(reply(s, reply_id=old_id))
            return out
        if instr == INST_ACTION:
            out = []
            for s in targets:
                old_id, ack = s.id, acknowledges(s)
                if s.pending is not None:
                    s.write_bytes(*s.pending)
                    s.pending = None
                if ack:
                    out.append(reply(s, reply_id=old_id))
            return out
        if instr == INST_SYNC_READ:
            if not broadcast or len(params) < 3 or params[1] == 0 or params[0] + params[1] > MEMORY_SIZE:
                self.stats["malformed"] += 1
                return []
            address, length = params[0], params[1]
            out = []
            for servo_id in params[2:]:
                for s in servos:
                    if s.id == servo_id:
                        out.append(reply(s, s.read_bytes(address, length)))
            return out
        # INST_SYNC_WRITE
        if not broadcast or len(params) < 2 or params[1] == 0 or (len(params) - 2) % (params[1] + 1):
            self.stats["malformed"] += 1
            return []
        address, length = params[0], params[1]
        for k in range(2, len(params), length + 1):
            servo_id, data = params[k], bytes(params[k + 1 : k + 1 + length])
            for s in servos:
                if s.id == servo_id:
                    s.write_bytes(address, data)
        return []

    # -- pty server -----------------------------------------------------------------------------------
    def _serve(self) -> None:
        master, wake = self._master, self._wake_r
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([master, wake], [], [], 0.5)
            except InterruptedError:
                continue
            if wake in ready or self._stop.is_set():
                break
            if master not in ready:
                continue
            try:
                data = os.read(master, 4096)
            except OSError as e:
                if e.errno == errno.EIO:  # no slave open (cannot happen while we hold one); wait
                    time.sleep(0.01)
                    continue
                raise
            if not data:
                continue
            out = self.process(data, _get_baudrate(master))
            if out:
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug("tx %s", out.hex(" "))
                try:
                    os.write(master, out)
                except OSError as e:
                    logger.warning("emulator write failed: %s", e)


def _describe(packet: Packet) -> str:
    name = INSTRUCTION_NAMES.get(packet.code, f"0x{packet.code:02x}")
    return f"id={packet.id} {name} {packet.params.hex(' ')}"


# --- command line ---
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m twinloop.hardware.feetech_emulator",
        description="Emulate Feetech STS3215 servos (SO-100/SO-101 arm) on a pseudo-terminal.",
    )
    parser.add_argument("--ids", default="1-6", help="servo ids, e.g. 1-6 or 1,2,5 (default 1-6)")
    parser.add_argument("--baudrate", type=int, default=1_000_000, help="servo baud rate (default 1000000)")
    parser.add_argument("--link", default=None, help="also expose the pty as this symlink path")
    parser.add_argument("--max-speed", type=float, default=3000.0, help="ticks/s with torque on")
    parser.add_argument("--position", type=float, default=2048.0, help="initial present position, ticks")
    parser.add_argument(
        "--hand-motion",
        type=float,
        default=0.0,
        metavar="TICKS",
        help="move torque-off servos in a slow sine of this amplitude (a hand on a leader arm)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every packet")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        ids = _parse_ids(args.ids)
        emu = FeetechBusEmulator(
            ids,
            baudrate=args.baudrate,
            max_speed=args.max_speed,
            positions=dict.fromkeys(ids, args.position),
            link=args.link,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # SIGTERM (a supervisor stopping us) unwinds like Ctrl-C: the symlink is removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with emu:
        print(emu.port, flush=True)
        if emu.link is not None:
            print(f"linked as {emu.link}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            while True:
                time.sleep(0.02)
                if args.hand_motion:
                    t = time.monotonic() - t0
                    with emu._lock:
                        for k, s in enumerate(emu.servos):
                            if not s.torque_enabled:
                                phase = 2 * math.pi * (0.2 * t + k / max(1, len(emu.servos)))
                                s.set_present_position(args.position + args.hand_motion * math.sin(phase))
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
