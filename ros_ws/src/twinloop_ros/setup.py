"""ament_python build of twinloop_ros for `colcon build` on a ROS 2 Jazzy machine.

Executables follow one convention, checked by tests/test_packaging.py: executable `X` is module
`twinloop_ros.X` with a `main()` — that is how `twinloop launch` runs the same nodes without colcon.
"""

from glob import glob

from setuptools import setup

package_name = "twinloop_ros"
executables = [
    "twin_node",
    "policy_server",
    "command_mux",
    "evaluator",
    "recorder",
    "teleop_node",
    "leader_arm_node",
]

setup(
    name=package_name,
    version="0.1.0",
    packages=[package_name],
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="twinloop developers",
    maintainer_email="dev@twinloop.invalid",
    description="twinloop's ROS 2 nodes and launch files",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"{name} = {package_name}.{name}:main" for name in executables]},
)
