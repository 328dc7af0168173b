"""The Feetech STS3215 bus emulator: its packet codec against scservo_sdk's bytes, raw bytes on its pty, and
lerobot's own, unmodified FeetechMotorsBus / SO101Follower driving it (handshake, sync reads, goal positions,
configure, calibration, baud-rate probing, corrupted packets)."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time

import pytest
import scservo_sdk as scs
from lerobot.motors import Motor, MotorCalibration, MotorNormMode
from lerobot.motors.encoding_utils import decode_sign_magnitude, encode_sign_magnitude
from lerobot.motors.feetech import FeetechMotorsBus
from lerobot.motors.feetech import tables as lerobot_tables

from twinloop.hardware import feetech_emulator as fe

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


@pytest.fixture(autouse=True)
def fast_gil_handoff():
    # The emulator thread and lerobot's busy-waiting reader share this process's GIL, and lerobot gives a
    # servo ~50 ms to answer: hand the GIL over every 0.5 ms (default 5 ms) so a loaded CI machine does not
    # turn scheduling delays into missed replies.
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    yield
    sys.setswitchinterval(old)


def so101_motors(norm: MotorNormMode = MotorNormMode.DEGREES) -> dict[str, Motor]:
    return {
        name: Motor(i + 1, "sts3215", MotorNormMode.RANGE_0_100 if name == "gripper" else norm)
        for i, name in enumerate(JOINTS)
    }


# A loaded machine can delay the emulator thread past the ~50 ms lerobot gives a servo to answer. lerobot
# then fails that call, and the late reply stays in the port's input buffer, where the next call may take it
# for its own (exactly what a slow servo does to lerobot on a real bus). So the tests poll for the state
# they expect, retry lerobot calls that fail on a timeout, and drop late bytes before a step that expects
# one exact outcome.
def resync(bus: FeetechMotorsBus) -> None:
    """Let late replies arrive, then drop them (the host side's input buffer only)."""
    time.sleep(0.05)
    bus.port_handler.ser.reset_input_buffer()


# What a missed or late reply makes lerobot raise: ConnectionError (no/corrupt status packet), RuntimeError
# (a motor it did not hear reported as missing), IndexError (scservo_sdk's ping reading the model number
# out of a late PING status packet, which has no data).
MISSED_REPLY = (ConnectionError, RuntimeError, IndexError)


def retry(call, bus: FeetechMotorsBus, attempts: int = 5):
    """A lerobot call, repeated when a missed reply failed it."""
    for attempt in range(attempts):
        try:
            return call()
        except MISSED_REPLY:
            if attempt == attempts - 1:
                raise
            resync(bus)


def connect(bus: FeetechMotorsBus, attempts: int = 5) -> None:
    """bus.connect() (handshake: ping + firmware read of every motor), retried on a transient timeout
    (a missed ping makes lerobot's handshake raise RuntimeError "motor check failed")."""
    for attempt in range(attempts):
        try:
            bus.connect()
            return
        except MISSED_REPLY:
            if bus.is_connected:
                bus.port_handler.closePort()
            if attempt == attempts - 1:
                raise


def wait_for(predicate, bus: FeetechMotorsBus | None = None, timeout: float = 10.0):
    """Poll until predicate() is truthy; its last value. A failed bus call counts as "not yet": lerobot's
    ConnectionError, or the IndexError scservo_sdk's ping raises when a late PING status (no data) answers
    its model-number read. With `bus`, late bytes are dropped between polls: a late reply otherwise
    shifts every later transaction by one reply, for good."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (ConnectionError, IndexError):
            value = None
        if value or time.monotonic() > deadline:
            return value
        if bus is not None:
            resync(bus)
        else:
            time.sleep(0.02)


def poll_equal(read, expected, bus: FeetechMotorsBus, timeout: float = 10.0):
    """Poll read() until it returns `expected`; returns the last value read (for the assertion message)."""
    last = []

    def check():
        last[:] = [read()]
        return last[0] == expected

    wait_for(check, bus, timeout)
    return last[0] if last else None


def expect_fault(bus: FeetechMotorsBus, arm, call, exc: type[Exception], match: str, attempts: int = 3):
    """Arm an emulator fault, make one lerobot call, and expect it to fail with `exc` matching `match`.

    A different failure that is a plain timeout (the emulator answered late) is retried."""
    for _ in range(attempts):
        resync(bus)
        arm()
        try:
            call()
        except Exception as e:
            if isinstance(e, exc) and re.search(match, str(e)):
                return
            if not isinstance(e, ConnectionError) or "There is no status packet" not in str(e):
                raise
        else:
            pytest.fail(f"{call} did not raise {exc.__name__}")
    pytest.fail(f"{call} never failed with {match!r}")


class RawClient:
    """The host side of the bus, byte by byte (what pyserial does, minus the library)."""

    def __init__(self, port: str) -> None:
        self.fd = os.open(port, os.O_RDWR | os.O_NOCTTY)

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def receive(self, n: int, timeout: float = 2.0) -> bytes:
        out = b""
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                break
            out += os.read(self.fd, n - len(out))
        return out

    def silent(self, packet: bytes) -> bool:
        """Send `packet`, then a PING to servo 1: True if the PING's status is the very next thing to arrive
        (the servos process packets in order, so `packet` got no reply and has been executed)."""
        self.send(packet)
        self.send(fe.instruction_packet(1, fe.INST_PING))
        return self.receive(6) == fe.status_packet(1, 0)

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def emu():
    with fe.FeetechBusEmulator(ids=range(1, 7)) as emulator:
        yield emulator


@pytest.fixture
def bus(emu):
    b = FeetechMotorsBus(port=emu.port, motors=so101_motors())
    connect(b)
    yield b
    if b.is_connected:
        b.port_handler.closePort()


# --- codec ---
def test_control_table_matches_lerobot():
    table = lerobot_tables.STS_SMS_SERIES_CONTROL_TABLE
    ours = {r.name: (r.address, r.size) for r in fe.CONTROL_TABLE}
    assert ours == table
    assert lerobot_tables.MODEL_NUMBER_TABLE["sts3215"] == fe.STS3215_MODEL_NUMBER
    assert fe.BAUD_CODES == lerobot_tables.STS_SMS_SERIES_BAUDRATE_TABLE
    signed = {r.name: r.sign_bit for r in fe.CONTROL_TABLE if r.sign_bit is not None}
    lerobot_signed = {
        k: v for k, v in lerobot_tables.STS_SMS_SERIES_ENCODINGS_TABLE.items() if k in table
    }  # (Goal_Speed / Present_Speed are aliases absent from the control table)
    assert signed == lerobot_signed
    for value, bit in [(0, 15), (4095, 15), (-4095, 15), (2047, 11), (-1, 11), (-300, 10)]:
        assert fe.encode_sign_magnitude(value, bit) == encode_sign_magnitude(value, bit)
        assert fe.decode_sign_magnitude(encode_sign_magnitude(value, bit), bit) == value
        assert decode_sign_magnitude(fe.encode_sign_magnitude(value, bit), bit) == value


class _CapturePort:
    """A stand-in for scservo_sdk's PortHandler that records what the SDK transmits."""

    def __init__(self, rx: bytes = b"") -> None:
        self.is_using = False
        self.sent: list[bytes] = []
        self.rx = bytearray(rx)

    def clearPort(self):  # noqa: N802 - the SDK's names
        pass

    def writePort(self, packet):  # noqa: N802
        self.sent.append(bytes(packet))
        return len(packet)

    def readPort(self, length):  # noqa: N802
        out = bytes(self.rx[:length])
        del self.rx[:length]
        return out

    def setPacketTimeout(self, n):  # noqa: N802
        pass

    def isPacketTimeout(self):  # noqa: N802
        return True


def test_packet_codec_matches_scservo_sdk_bytes():
    assert fe.instruction_packet(1, fe.INST_PING) == bytes.fromhex("ff ff 01 02 01 fb")
    assert fe.status_packet(1, 0) == bytes.fromhex("ff ff 01 02 00 fc")
    # READ Present_Position (56, 2 bytes) of id 1: checksum ~(1+4+2+56+2) & 0xFF
    assert fe.instruction_packet(1, fe.INST_READ, [56, 2]) == bytes.fromhex("ff ff 01 04 02 38 02 be")
    assert fe.checksum([1, 4, 2, 56, 2]) == 0xBE

    ph = scs.PacketHandler(0)
    port = _CapturePort()
    for send in (
        lambda: ph.txPacket(port, [0, 0, 7, 2, fe.INST_PING, 0]),
        lambda: ph.readTx(port, 3, 56, 2),
        lambda: ph.writeTxOnly(port, 2, 42, 2, [0x34, 0x12]),
        lambda: ph.regWriteTxOnly(port, 5, 40, 1, [1]),
        lambda: ph.syncReadTx(port, 56, 2, [1, 2, 3], 3),
        lambda: ph.syncWriteTxOnly(port, 42, 2, [1, 0x00, 0x08, 2, 0xFF, 0x0F], 6),
    ):
        assert send() == scs.COMM_SUCCESS
        port.is_using = False  # (a transmit that expects a reply keeps the port until the reply is read)
    assert port.sent == [
        fe.instruction_packet(7, fe.INST_PING),
        fe.instruction_packet(3, fe.INST_READ, [56, 2]),
        fe.instruction_packet(2, fe.INST_WRITE, [42, 0x34, 0x12]),
        fe.instruction_packet(5, fe.INST_REG_WRITE, [40, 1]),
        fe.instruction_packet(fe.BROADCAST_ID, fe.INST_SYNC_READ, [56, 2, 1, 2, 3]),
        fe.instruction_packet(fe.BROADCAST_ID, fe.INST_SYNC_WRITE, [42, 2, 1, 0x00, 0x08, 2, 0xFF, 0x0F]),
    ]
    # ...and the SDK accepts our status packets, and rejects one with a flipped checksum
    reply = fe.status_packet(3, 0, [0x00, 0x08])
    data, result, error = ph.readRx(_CapturePort(reply), 3, 2)
    assert (result, error, data) == (scs.COMM_SUCCESS, 0, [0x00, 0x08])
    _, result, _ = ph.readRx(_CapturePort(reply[:-1] + bytes([reply[-1] ^ 1])), 3, 2)
    assert result == scs.COMM_RX_CORRUPT


def test_parser_resyncs_drops_bad_checksums_and_stale_frames():
    parser = fe.PacketParser(frame_timeout=0.02)
    ping = fe.instruction_packet(1, fe.INST_PING)
    read = fe.instruction_packet(2, fe.INST_READ, [56, 2])
    bad = bytearray(fe.instruction_packet(3, fe.INST_WRITE, [40, 1]))
    bad[-1] ^= 0xFF
    stream = b"\x00\x13\xff" + ping + bytes(bad) + b"\xff" + read
    packets = parser.feed(stream, now=0.0)
    assert [(p.id, p.code, p.params) for p in packets] == [(1, 1, b""), (2, 2, bytes([56, 2]))]
    assert parser.bad_checksum == 1
    # split anywhere: same packets
    parser = fe.PacketParser()
    got = []
    for i in range(len(stream)):
        got += parser.feed(stream[i : i + 1], now=0.0)
    assert [(p.id, p.code) for p in got] == [(1, 1), (2, 2)]
    # a frame left incomplete is dropped once it is older than the frame timeout
    parser = fe.PacketParser(frame_timeout=0.02)
    assert parser.feed(read[:5], now=0.0) == []
    assert parser.feed(ping, now=1.0) == [fe.Packet(1, fe.INST_PING, b"")]


# --- emulated motor, no bus ---
def test_servo_motion_limits_offsets_and_eeprom_persistence():
    emu = fe.FeetechBusEmulator(ids=[1], max_speed=1000.0, realtime=False)
    s = emu.servo(1)
    s.set_present_position(1000)
    assert s.get("Goal_Position") == 1000  # torque off: the goal follows the shaft
    s.write_bytes(40, bytes([1]))  # torque on: holds
    emu.advance(0.5)
    assert s.present_position == 1000
    s.write_bytes(42, (1500).to_bytes(2, "little"))
    emu.advance(0.1)
    assert s.present_position == 1100 and s.get("Moving") == 1 and s.get("Present_Velocity") == 1000
    emu.advance(1.0)
    assert s.present_position == 1500 and s.get("Moving") == 0
    # goal beyond Max_Position_Limit: stops at the limit
    s.write_bytes(11, (1600).to_bytes(2, "little"))
    s.write_bytes(42, (3000).to_bytes(2, "little"))
    emu.advance(2.0)
    assert s.present_position == 1600
    # Goal_Velocity caps the speed; Acceleration ramps it (x100 ticks/s^2)
    s.write_bytes(11, (4095).to_bytes(2, "little"))
    s.write_bytes(46, (200).to_bytes(2, "little"))
    s.write_bytes(42, (1700).to_bytes(2, "little"))
    emu.advance(0.1)
    assert s.present_position == 1620
    emu.advance(1.0)
    assert s.present_position == 1700
    s.write_bytes(46, (0).to_bytes(2, "little"))
    s.write_bytes(41, bytes([10]))  # 1000 ticks/s^2
    s.write_bytes(42, (2700).to_bytes(2, "little"))
    emu.advance(0.1)
    assert abs(s.present_position - 1705) <= 1  # 1/2 a t^2 = 5 ticks
    emu.advance(5.0)
    assert s.present_position == 2700 and s.velocity == 0.0
    # Homing_Offset: Present = Actual - offset (sign-magnitude, bit 11), wrapped to 0..4095
    s.write_bytes(40, bytes([0]))
    s.set_actual_position(100)
    s.write_bytes(31, fe.encode_sign_magnitude(-200, 11).to_bytes(2, "little"))
    assert s.homing_offset == -200 and s.present_position == 300
    s.write_bytes(31, (500).to_bytes(2, "little"))
    assert s.present_position == 4096 - 400
    s.set("Phase", 0x1C)  # angle feedback mode 1: no wrap, sign-magnitude
    assert s.present_position == -400 and s.get("Present_Position") == -400
    # torque off: a hand can move it anywhere, the motor does not push back
    s.set("Phase", 0x0C)
    s.set_present_position(3333)
    emu.advance(1.0)
    assert s.present_position == 3333
    # EEPROM written while locked (Lock = 1 at power-on) is lost at power-off; unlocked writes persist
    s.write_bytes(21, bytes([16]))  # P_Coefficient, locked
    s.write_bytes(55, bytes([0]))
    s.write_bytes(23, bytes([5]))  # I_Coefficient, unlocked
    s.write_bytes(40, bytes([1]))
    emu.power_cycle()
    assert s.get("P_Coefficient") == 32 and s.get("I_Coefficient") == 5
    assert s.get("Torque_Enable") == 0 and s.get("Lock") == 1
    # the Homing_Offset (500) was written locked, too: the shaft did not move, the reading did
    assert s.homing_offset == 0 and s.present_position == 3333 + 500


# --- raw bytes on the pty ---
def test_raw_bytes_on_the_pty(emu):
    host = RawClient(emu.port)
    try:
        host.send(fe.instruction_packet(3, fe.INST_PING))
        assert host.receive(6) == fe.status_packet(3, 0)
        host.send(fe.instruction_packet(3, fe.INST_READ, [3, 2]))  # model number
        assert host.receive(8) == fe.status_packet(3, 0, (777).to_bytes(2, "little"))
        # a bad checksum gets no reply at all; the next good packet is answered
        bad = bytearray(fe.instruction_packet(3, fe.INST_READ, [56, 2]))
        bad[-1] ^= 0x40
        assert host.silent(bytes(bad))
        assert emu.stats["bad_checksum"] == 1 and emu.stats["rx_packets"] == 3
        emu.servo(2).set_present_position(1234)
        host.send(fe.instruction_packet(2, fe.INST_READ, [56, 2]))
        assert host.receive(8) == fe.status_packet(2, 0, (1234).to_bytes(2, "little"))
        # broadcast PING: every servo answers, in ID order
        host.send(fe.instruction_packet(fe.BROADCAST_ID, fe.INST_PING))
        assert host.receive(36) == b"".join(fe.status_packet(i, 0) for i in range(1, 7))
        # WRITE is acknowledged; to the broadcast ID it is executed silently
        host.send(fe.instruction_packet(4, fe.INST_WRITE, [21, 20]))
        assert host.receive(6) == fe.status_packet(4, 0)
        assert host.silent(fe.instruction_packet(fe.BROADCAST_ID, fe.INST_WRITE, [23, 3]))
        assert [emu.servo(i).get("I_Coefficient") for i in range(1, 7)] == [3] * 6
        assert emu.servo(4).get("P_Coefficient") == 20
        # read-only bytes ignore writes (still acknowledged)
        host.send(fe.instruction_packet(4, fe.INST_WRITE, [3, 0, 0]))
        assert host.receive(6) == fe.status_packet(4, 0)
        assert emu.servo(4).get("Model_Number") == 777
        # Response_Status_Level 0: writes are silent, reads still answer
        host.send(fe.instruction_packet(5, fe.INST_WRITE, [8, 0]))
        assert host.receive(6) == fe.status_packet(5, 0)
        assert host.silent(fe.instruction_packet(5, fe.INST_WRITE, [22, 7]))
        host.send(fe.instruction_packet(5, fe.INST_READ, [22, 1]))
        assert host.receive(7) == fe.status_packet(5, 0, [7])
        # SYNC_READ: one status packet per listed id, in the listed order; absent ids stay silent
        emu.set_present_positions({1: 100, 3: 300, 6: 600})
        host.send(fe.instruction_packet(fe.BROADCAST_ID, fe.INST_SYNC_READ, [56, 2, 6, 1, 42, 3]))
        expected = b"".join(
            fe.status_packet(i, 0, (p).to_bytes(2, "little")) for i, p in [(6, 600), (1, 100), (3, 300)]
        )
        assert host.receive(len(expected)) == expected
        assert host.silent(b"")  # and nothing for the absent id 42
        # SYNC_WRITE: no reply; each listed servo takes its own data
        assert host.silent(fe.instruction_packet(fe.BROADCAST_ID, fe.INST_SYNC_WRITE, [41, 1, 1, 11, 2, 22]))
        assert (emu.servo(1).get("Acceleration"), emu.servo(2).get("Acceleration")) == (11, 22)
        # REG_WRITE waits for ACTION
        host.send(fe.instruction_packet(6, fe.INST_REG_WRITE, [41, 99]))
        assert host.receive(6) == fe.status_packet(6, 0)
        assert emu.servo(6).get("Acceleration") == 0
        assert host.silent(fe.instruction_packet(fe.BROADCAST_ID, fe.INST_ACTION))
        assert emu.servo(6).get("Acceleration") == 99
        # error bits travel in every status packet; an unknown instruction gets no reply
        emu.set_error(2, fe.ERRBIT_OVERLOAD | fe.ERRBIT_OVERHEAT)
        host.send(fe.instruction_packet(2, fe.INST_PING))
        assert host.receive(6) == fe.status_packet(2, 0x24)
        assert host.silent(fe.instruction_packet(2, 0x0A))
    finally:
        host.close()


# --- lerobot's FeetechMotorsBus ---
def test_lerobot_bus_handshake_ping_sync_read_configure_and_calibration(emu, bus):
    # connect() already pinged all six motors and compared their firmware versions
    assert retry(lambda: bus.ping("elbow_flex", raise_on_error=True), bus) == 777
    everyone = dict.fromkeys(range(1, 7), 777)
    assert poll_equal(lambda: bus.broadcast_ping(), everyone, bus) == everyone
    hand = {1: 1000, 2: 1500, 3: 2000, 4: 2500, 5: 3000, 6: 3500}
    emu.set_present_positions(hand)
    expected = {name: hand[i + 1] for i, name in enumerate(JOINTS)}
    read_raw = lambda: bus.sync_read("Present_Position", normalize=False, num_retry=2)  # noqa: E731
    assert poll_equal(read_raw, expected, bus) == expected
    assert poll_equal(lambda: bus.read("Model_Number", "gripper", normalize=False), 777, bus) == 777
    # configure_motors: Return_Delay_Time, Maximum_Acceleration, Acceleration, and Phase bit 4 cleared
    emu.servo(3).set("Phase", 0x1C)
    retry(bus.configure_motors, bus)
    for i in range(1, 7):
        s = emu.servo(i)
        configured = (s.get("Return_Delay_Time"), s.get("Maximum_Acceleration"), s.get("Acceleration"))
        assert configured == (0, 254, 254)
        assert s.get("Phase") & 0x10 == 0
    # calibration registers: write, read back, is_calibrated
    calibration = {
        name: MotorCalibration(
            id=i + 1, drive_mode=0, homing_offset=-300 + 100 * i, range_min=500, range_max=3500
        )
        for i, name in enumerate(JOINTS)
    }
    retry(bus.disable_torque, bus)
    retry(lambda: bus.write_calibration(calibration), bus)
    assert poll_equal(bus.read_calibration, calibration, bus) == calibration
    assert wait_for(lambda: bus.is_calibrated, bus)
    assert emu.servo(1).homing_offset == -300 and emu.servo(6).get("Max_Position_Limit") == 3500
    # and set_half_turn_homings (lerobot's calibration step) centres every motor at 2047
    homings = retry(bus.set_half_turn_homings, bus)
    assert set(homings) == set(JOINTS)
    assert set(emu.present_positions().values()) == {2047}


def test_lerobot_goal_positions_are_reached(emu, bus):
    emu.set_present_positions(dict.fromkeys(range(1, 7), 2048))
    retry(lambda: bus.write("Max_Position_Limit", "gripper", 3000, normalize=False), bus)
    retry(bus.enable_torque, bus)
    assert all(emu.servo(i).torque_enabled and emu.servo(i).get("Lock") == 1 for i in range(1, 7))
    goals = {
        "shoulder_pan": 1200,
        "shoulder_lift": 2900,
        "elbow_flex": 2048,
        "wrist_flex": 500,
        "wrist_roll": 4000,
        "gripper": 3900,
    }
    bus.sync_write("Goal_Position", goals, normalize=False)
    expected = {**goals, "gripper": 3000}  # clamped to its Max_Position_Limit
    read_raw = lambda: bus.sync_read("Present_Position", normalize=False, num_retry=2)  # noqa: E731
    assert poll_equal(read_raw, expected, bus) == expected
    assert emu.present_positions() == dict(zip(range(1, 7), expected.values(), strict=True))
    still = dict.fromkeys(JOINTS, 0)
    assert poll_equal(lambda: bus.sync_read("Moving", normalize=False, num_retry=2), still, bus) == still
    # torque off: the arm stays where the hand puts it, and Goal_Position follows it
    retry(bus.disable_torque, bus)
    emu.servo(1).set_present_position(3210)
    read_pan = lambda: bus.read("Present_Position", "shoulder_pan", normalize=False)  # noqa: E731
    assert poll_equal(read_pan, 3210, bus) == 3210
    assert poll_equal(lambda: bus.read("Goal_Position", "shoulder_pan", normalize=False), 3210, bus) == 3210


def test_lerobot_reports_corrupted_and_missing_packets(emu, bus):
    before = emu.stats["bad_checksum"]
    read_wrist = lambda: bus.read("Present_Position", "wrist_flex", normalize=False)  # noqa: E731
    # a bit flips on the wire to the servo: it stays silent, and lerobot times out
    expect_fault(bus, lambda: emu.corrupt_next_requests(1), read_wrist, ConnectionError, "no status packet")
    assert emu.stats["bad_checksum"] > before
    # a bit flips on the way back: scservo_sdk's checksum check fails
    expect_fault(
        bus, lambda: emu.corrupt_next_replies(1), read_wrist, ConnectionError, "Incorrect status packet"
    )
    resync(bus)
    emu.corrupt_next_replies(1)  # lerobot's own retry (num_retry) recovers from it
    read_retrying = lambda: bus.sync_read("Present_Position", normalize=False, num_retry=2)  # noqa: E731
    assert wait_for(lambda: read_retrying()["wrist_flex"] == 2048, bus)
    # an error bit in the status packet
    emu.set_error(3, fe.ERRBIT_OVERLOAD)
    read_elbow = lambda: bus.read("Present_Position", "elbow_flex", normalize=False)  # noqa: E731
    expect_fault(bus, lambda: None, read_elbow, RuntimeError, "Overload error")
    emu.set_error(3, 0)
    # an unplugged servo: no answer to ping, and a sync read that includes it fails
    emu.set_online(4, False)
    resync(bus)
    assert bus.ping("wrist_flex") is None
    read_all = lambda: bus.sync_read("Present_Position", normalize=False)  # noqa: E731
    expect_fault(bus, lambda: None, read_all, ConnectionError, "no status packet")
    emu.set_online(4, True)
    assert poll_equal(lambda: bus.ping("wrist_flex"), 777, bus) == 777


def test_lerobot_setup_motor_probes_the_baud_rate():
    # a new motor: factory id 1 at 500 kbaud; lerobot finds it by scanning rates (1 Mbaud first: silence)
    with fe.FeetechBusEmulator(ids=[1], eeprom={1: {"Baud_Rate": 1}}) as emu:
        bus = FeetechMotorsBus(
            port=emu.port, motors={"gripper": Motor(6, "sts3215", MotorNormMode.RANGE_0_100)}
        )
        try:
            # broadcast-ping at each rate until one answers, then write ID and Baud_Rate
            retry(lambda: bus.setup_motor("gripper"), bus)
            assert bus.get_baudrate() == 1_000_000
            assert poll_equal(lambda: bus.ping("gripper"), 777, bus) == 777
            s = emu.servo(6)
            assert s.baudrate == 1_000_000 and emu.stats["baud_mismatch"] >= 1
            emu.power_cycle()  # written unlocked (lerobot disables torque and Lock first): persisted
            assert emu.servo(6).baudrate == 1_000_000
        finally:
            bus.port_handler.closePort()


def test_lerobot_so101_follower_configures_and_moves(emu, tmp_path):
    from lerobot.robots.so_follower import SO101Follower, SO101FollowerConfig

    calibration = {
        name: {
            "id": i + 1,
            "drive_mode": 0,
            "homing_offset": 40 * i - 100,
            "range_min": 800 + 10 * i,
            "range_max": 3300 - 10 * i,
        }
        for i, name in enumerate(JOINTS)
    }
    (tmp_path / "follower.json").write_text(json.dumps(calibration, indent=4))
    for i, name in enumerate(JOINTS):  # the motors already hold that calibration
        s = emu.servo(i + 1)
        s.set("Homing_Offset", calibration[name]["homing_offset"])
        s.set("Min_Position_Limit", calibration[name]["range_min"])
        s.set("Max_Position_Limit", calibration[name]["range_max"])
        s.set_present_position(2048)
    robot = SO101Follower(SO101FollowerConfig(port=emu.port, id="follower", calibration_dir=tmp_path))
    for attempt in range(5):
        try:
            robot.connect(calibrate=False)  # handshake, then configure() (torque off, gains, torque on)
            break
        except MISSED_REPLY:
            if robot.bus.is_connected:
                robot.bus.port_handler.closePort()
            if attempt == 4:
                raise
    try:
        assert wait_for(lambda: robot.is_calibrated, robot.bus)
        for i in range(1, 7):  # configure(): position-loop gains, gripper protection, torque back on
            s = emu.servo(i)
            assert (s.get("P_Coefficient"), s.get("I_Coefficient"), s.get("D_Coefficient")) == (16, 0, 32)
            assert s.get("Operating_Mode") == 0 and s.torque_enabled
        g = emu.servo(6)
        assert (g.get("Max_Torque_Limit"), g.get("Protection_Current"), g.get("Overload_Torque")) == (
            500,
            250,
            25,
        )
        action = {
            "shoulder_pan.pos": 30.0,
            "shoulder_lift.pos": -45.0,
            "elbow_flex.pos": 60.0,
            "wrist_flex.pos": -20.0,
            "wrist_roll.pos": 90.0,
            "gripper.pos": 75.0,
        }
        robot.send_action(action)  # degrees (gripper 0-100) -> ticks through the calibration
        tick_deg = 360 / 4095

        def close_enough():
            obs = robot.get_observation()
            body_ok = all(abs(obs[k] - v) <= tick_deg for k, v in action.items() if k != "gripper.pos")
            return obs if body_ok and abs(obs["gripper.pos"] - 75.0) <= 0.1 else None

        assert wait_for(close_enough, robot.bus), emu.present_positions()
    finally:
        robot.disconnect()
    assert not any(emu.servo(i).torque_enabled for i in range(1, 7))  # disable_torque_on_disconnect


# --- standalone ---
def test_command_line_serves_a_pty_and_a_stable_link(tmp_path):
    link = tmp_path / "so101_leader"
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "twinloop.hardware.feetech_emulator", "--ids", "1-2,5", "--link", str(link)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/") and os.path.realpath(link) == port
        host = RawClient(str(link))
        try:
            host.send(fe.instruction_packet(fe.BROADCAST_ID, fe.INST_PING))
            assert host.receive(18) == b"".join(fe.status_packet(i, 0) for i in (1, 2, 5))
        finally:
            host.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert not link.exists()
    bad = subprocess.run(
        [sys.executable, "-m", "twinloop.hardware.feetech_emulator", "--baudrate", "12345"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: baudrate 12345")
