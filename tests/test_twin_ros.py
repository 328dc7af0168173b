"""The twin's sensors as another process sees them over DDS: camera_info against the rendered image, and
the taxel images while the scripted expert grasps."""

from __future__ import annotations

import numpy as np
import pytest
from support.geometry import hull_centroid

from twinloop.sim.scene import front_camera
from twinloop.sim.tasks import CUBE_HALF
from twinloop.sim.twin import Twin, TwinConfig

pytestmark = pytest.mark.ros


def test_camera_info_projects_the_cube_onto_its_pixels(ros_graph, tmp_path):
    """K from /front/camera_info, the camera's pose and the cube's pose (seed 0) project the cube onto
    the red pixels of /front/image_raw within 1 px (centroid of the silhouette: see test_twin.py)."""
    graph = ros_graph(
        cli=["sim", "--task", "reach_cube", "--cameras", "front", "--no-preview", "--seed", "0"]
    )
    info = graph.echo("front/camera_info", "sensor_msgs/CameraInfo")[0]
    saved = tmp_path / "front.npz"
    result = graph.probe("save-image", "front/image_raw", str(saved))
    assert result.returncode == 0, result.stdout + result.stderr + graph.log
    image = np.load(saved)["image"]
    K = np.array(info["k"]).reshape(3, 3)  # noqa: N806

    # the same scene offline: the twin node starts in the episode of its seed, arm at home (holding)
    cam = front_camera("so101")
    twin = Twin(TwinConfig(task="reach_cube", cameras=(cam,)))
    try:
        twin.reset(0)
        body = twin.data.body("cube")
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
        corners = body.xpos + (CUBE_HALF * signs) @ body.xmat.reshape(3, 3).T
        position, rotation = twin.camera_pose("front")
    finally:
        twin.close()
    in_cam = (corners - position) @ rotation
    uv = (in_cam @ K.T)[:, :2] / in_cam[:, 2:]
    rgb = image.astype(int)
    red = (rgb[..., 0] > 25) & (rgb[..., 0] > 2.5 * np.maximum(rgb[..., 1], rgb[..., 2]))
    rows, cols = np.nonzero(red)
    assert len(rows) > 50, "no cube in the image"
    error = float(np.hypot(*(np.array([cols.mean(), rows.mean()]) - hull_centroid(uv)[0])))
    assert error < 1.0, f"camera_info projection is {error:.2f} px off the rendered cube"
    assert graph.stop() == 130


def test_taxels_read_zero_open_and_nonzero_while_grasping(ros_graph):
    """Both fingers' 32FC1 images over DDS during expert picks: all zero while the gripper is open and
    away from objects, non-zero while it holds a cube."""
    graph = ros_graph(
        "sim_expert",
        ["twin.mode=realtime", "twin.cameras=[]", "evaluator.episodes=1000", "evaluator.video_episodes=0"],
    )
    readings = {}
    for finger in ("fixed_jaw", "moving_jaw"):
        messages = graph.echo(f"tactile/{finger}/image", "sensor_msgs/Image", count=400, timeout=120)
        assert all((m["encoding"], m["height"], m["width"]) == ("32FC1", 8, 6) for m in messages)
        readings[finger] = [m["max"] for m in messages]
    for finger, maxima in readings.items():
        assert min(maxima) == 0.0, f"{finger} never reads zero"
        assert max(maxima) > 1e-4, f"{finger} never feels the cube: max {max(maxima)} m"
    assert graph.stop() == 130
