"""Recorder back-ends (LeRobotDataset v3, zarr, MCAP) and converters (no rclpy here)."""
