"""twinloop: robot learning on ROS 2 with a MuJoCo digital twin."""

__version__ = "0.1.0"
