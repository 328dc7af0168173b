"""The project's QoS profiles, in one place, so every publisher and subscriber of a topic agree.

Matching rules that shaped these choices (DDS request/offer): a RELIABLE publisher matches both RELIABLE and
BEST_EFFORT subscribers, a BEST_EFFORT publisher matches only BEST_EFFORT ones; a TRANSIENT_LOCAL publisher
matches both durabilities, a TRANSIENT_LOCAL subscriber needs a TRANSIENT_LOCAL publisher. Incompatible
pairs do not connect at all (no error unless an incompatible-QoS event handler is installed).

Topic -> profile (ARCHITECTURE.md topic contract):
    <cam>/image_raw, tactile/<name>/image, wrench   SENSOR_DATA
    <cam>/camera_info                                LATCHED (published with every frame)
    joint_states                                     JOINT_STATES
    policy|teleop|arm_controller/joint_trajectory    COMMANDS
    command_mux/source, policy/instruction           LATCHED
    policy/diagnostics                               DIAGNOSTICS
    sim/success                                      EVENTS
    /clock                                           CLOCK

The profiles are shared objects: never mutate one in place; ``copy.copy(SENSOR_DATA)`` and change the copy.
"""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

__all__ = ["CLOCK", "COMMANDS", "DIAGNOSTICS", "EVENTS", "JOINT_STATES", "LATCHED", "SENSOR_DATA"]

# Cameras, tactile and F/T: rclpy's own qos_profile_sensor_data (BEST_EFFORT, KEEP_LAST 5, VOLATILE), the
# profile ROS 2 camera drivers and image_pipeline use, so third-party nodes connect either way. A late or
# retransmitted frame is worth less than the next one, and a slow subscriber must never throttle the
# driver. Caveat (NOTES.md): with Fast DDS's default transports a 640x480 rgb8 stream at 30 Hz lost 74% of
# frames best effort; the Fast DDS XML profile that every launch path sets (16 MB shared-memory segment,
# 4 MB UDP buffers) measured 0 loss, so keep that profile in place rather than switching to RELIABLE.
# Depth 5 covers a subscriber that stalls for ~150 ms at 30 Hz. A subscriber that asks for RELIABLE (some
# tools do by default) does not connect to these publishers: set it to best effort.
SENSOR_DATA: QoSProfile = QoSProfile(
    history=qos_profile_sensor_data.history,
    depth=qos_profile_sensor_data.depth,
    reliability=qos_profile_sensor_data.reliability,
    durability=qos_profile_sensor_data.durability,
)

# joint_states at >= 100 Hz: small messages, so RELIABLE is cheap, and a RELIABLE publisher reaches both
# kinds of subscriber (robot_state_publisher subscribes with SensorDataQoS, i.e. BEST_EFFORT; ros2_control's
# joint_state_broadcaster publishes with the RELIABLE system default). The recorder needs every sample, and
# Python subscribers stall for tens of ms (GC, video encoding), so the depth is 50 (0.5 s at 100 Hz, ~10 kB)
# instead of the usual 10. VOLATILE: a stale state is never useful to a late joiner.
JOINT_STATES: QoSProfile = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=50,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

# Trajectories (action chunks) to the command mux and to ros2_control's joint_trajectory_controller, which
# subscribes RELIABLE / KEEP_LAST 10 (SystemDefaultsQoS): a lost chunk means the arm holds or runs an older
# chunk. VOLATILE on purpose: a restarted driver must never receive and execute an old command.
COMMANDS: QoSProfile = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

# State that a late joiner needs immediately: command_mux/source (the recorder labels interventions from
# it), policy/instruction, and camera_info. Only the latest value matters, hence depth 1. Published this way,
# camera_info still reaches BEST_EFFORT/VOLATILE subscribers (image_pipeline style), and a subscriber using
# LATCHED gets the intrinsics as soon as it connects. Subscribers using LATCHED will not connect to a
# third-party driver that publishes camera_info BEST_EFFORT: use SENSOR_DATA for those.
LATCHED: QoSProfile = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

# DiagnosticArray at a few Hz: the ROS default (RELIABLE, KEEP_LAST 10) that diagnostics publishers and
# monitors commonly use, so standard tools see it; VOLATILE because an old status misleads a late joiner.
DIAGNOSTICS: QoSProfile = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

# Rare events that must not be lost (sim/success): the ROS default profile, spelled out.
EVENTS: QoSProfile = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

# /clock from the twin in lockstep mode. rclpy's and rclcpp's time sources subscribe BEST_EFFORT with
# depth 1 (only the newest time matters); publishing RELIABLE still matches them and also matches
# RELIABLE subscribers such as a recorder.
CLOCK: QoSProfile = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
