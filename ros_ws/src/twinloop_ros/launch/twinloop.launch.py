"""Launch a twinloop graph spec with ros2 launch:

    ros2 launch twinloop_ros twinloop.launch.py graph:=sim_pick
    ros2 launch twinloop_ros twinloop.launch.py graph:=/path/to/my_cell.yaml

Reads the same YAML spec as `twinloop launch` (config/<graph>.yaml): nodes, namespace, parameters,
remappings, and `required` (its exit shuts the launch down). Sets the project's Fast DDS transport
profile. Imports only launch, launch_ros, ament_index_python and yaml.
"""

import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _spec_path(graph: str, config_dir: str) -> str:
    if graph.endswith((".yaml", ".yml")):
        return graph
    return os.path.join(config_dir, graph + ".yaml")


def _nodes(context):
    config_dir = os.path.join(get_package_share_directory("twinloop_ros"), "config")
    path = _spec_path(LaunchConfiguration("graph").perform(context), config_dir)
    with open(path) as f:
        spec = yaml.safe_load(f)
    common = spec.get("parameters") or {}
    namespace = spec.get("namespace") or ""
    actions = []
    for node in spec["nodes"]:
        actions.append(
            Node(
                package=node["package"],
                executable=node["executable"],
                name=node["name"],
                namespace=node.get("namespace", namespace) or "",
                parameters=[{**common, **(node.get("parameters") or {})}],
                remappings=list((node.get("remappings") or {}).items()),
                output="screen",
                emulate_tty=True,
                # Ctrl-C -> SIGTERM escalation (launch's default is 5 s, like twinloop's runner)
                sigterm_timeout=str(node.get("stop_timeout", 5)),
                on_exit=Shutdown(reason=f"required node {node['name']} exited")
                if node.get("required")
                else None,
            )
        )
    return actions


def generate_launch_description():
    profile = os.path.join(get_package_share_directory("twinloop_ros"), "config", "fastdds_profile.xml")
    return LaunchDescription(
        [
            DeclareLaunchArgument("graph", default_value="sim_pick", description="spec name or path"),
            SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", profile),
            SetEnvironmentVariable("MUJOCO_GL", os.environ.get("MUJOCO_GL", "egl")),
            # same as twinloop.graph_spec.ros_environment(): keep image buffers in the heap (make bench)
            SetEnvironmentVariable("MALLOC_MMAP_THRESHOLD_", "134217728"),
            SetEnvironmentVariable("MALLOC_TRIM_THRESHOLD_", "134217728"),
            OpaqueFunction(function=_nodes),
        ]
    )
