"""MuJoCo digital twin: scenes, robots, tasks, kinematics and rendering (no rclpy here)."""

import os

# Headless rendering on any machine (EGL works on the CPU via Mesa llvmpipe). Must be set before mujoco
# is first imported in the process, which is why it lives in the package's __init__.
os.environ.setdefault("MUJOCO_GL", "egl")
