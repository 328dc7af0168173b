"""Hardware-side logic shared by the twin and real drivers: the trajectory executor (no rclpy here)."""
