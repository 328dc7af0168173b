"""MuJoCo digital twin: scenes, robots, tasks, kinematics and rendering (no rclpy here)."""
