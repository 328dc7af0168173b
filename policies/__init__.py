"""Policy library: the policy interface, registry and policies (no rclpy here)."""
