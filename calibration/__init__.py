"""Calibration: camera intrinsics, hand-eye, twin alignment (no rclpy here)."""
