"""twinloop_ros: thin rclpy nodes over the twinloop library."""
