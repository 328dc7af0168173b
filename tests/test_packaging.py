"""Packaging: the ament_python package is colcon-ready, the launch file reads the same specs, and the
`twinloop` distribution maps the top-level folders into `twinloop.*` without a top-level `datasets`."""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.util
import os
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import setuptools

from twinloop.graph_spec import load_spec, ros_environment

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "ros_ws" / "src" / "twinloop_ros"
LAUNCH_FILE = PKG / "launch" / "twinloop.launch.py"
LIBRARY_DIRS = ["policies", "datasets", "sim", "hardware", "calibration", "twinloop"]


# --- package.xml, setup.py, setup.cfg, resource marker ---------------------------------------------


def test_package_xml():
    root = ET.parse(PKG / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "twinloop_ros"
    for tag in ("version", "description", "maintainer", "license"):
        assert (root.findtext(tag) or "").strip(), f"package.xml has no <{tag}>"
    assert root.findtext("export/build_type") == "ament_python"
    exec_depends = {e.text.strip() for e in root.iter("exec_depend")}
    needed = {
        "rclpy",
        "sensor_msgs",
        "trajectory_msgs",
        "std_msgs",
        "std_srvs",
        "diagnostic_msgs",
        "rosgraph_msgs",
        "launch",
        "launch_ros",
    }
    assert needed <= exec_depends, f"missing exec_depend: {sorted(needed - exec_depends)}"


@pytest.fixture(scope="module")
def setup_kwargs():
    """Run setup.py as colcon would (cwd = package folder) with setuptools.setup capturing its kwargs."""
    captured: dict = {}
    mp = pytest.MonkeyPatch()
    mp.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    mp.chdir(PKG)
    try:
        exec(compile((PKG / "setup.py").read_text(), str(PKG / "setup.py"), "exec"), {"__name__": "__main__"})
    finally:
        mp.undo()
    assert captured, "setup.py did not call setuptools.setup"
    return captured


def console_scripts(kwargs: dict) -> dict[str, str]:
    scripts = {}
    for entry in kwargs["entry_points"]["console_scripts"]:
        name, target = (part.strip() for part in entry.split("=", 1))
        scripts[name] = target
    return scripts


def test_setup_metadata(setup_kwargs):
    assert setup_kwargs["name"] == "twinloop_ros"
    assert "twinloop_ros" in setup_kwargs["packages"]
    version = ET.parse(PKG / "package.xml").getroot().findtext("version")
    assert setup_kwargs["version"] == version, "setup.py and package.xml versions differ"


def test_console_scripts_follow_the_module_convention(setup_kwargs):
    scripts = console_scripts(setup_kwargs)
    assert {"twin_node", "policy_server", "command_mux", "evaluator"} <= set(scripts)
    for name, target in scripts.items():
        assert target == f"twinloop_ros.{name}:main", f"{name} -> {target}"
        module = importlib.import_module(f"twinloop_ros.{name}")
        assert callable(getattr(module, "main", None)), f"twinloop_ros.{name} has no main()"


def test_every_spec_executable_is_installed(setup_kwargs):
    scripts = console_scripts(setup_kwargs)
    for path in sorted((PKG / "config").glob("*.yaml")):
        for node in load_spec(path).nodes:
            if node.package == "twinloop_ros":
                assert node.executable in scripts, f"{path.name}: {node.executable} is not a console script"


def test_data_files_install_launch_config_and_markers(setup_kwargs):
    installed: dict[str, set[str]] = {}
    for dest, files in setup_kwargs["data_files"]:
        installed.setdefault(dest, set()).update(files)
        for f in files:
            assert (PKG / f).is_file(), f"data_files lists a missing file: {f}"
    assert "resource/twinloop_ros" in installed["share/ament_index/resource_index/packages"]
    assert "package.xml" in installed["share/twinloop_ros"]
    launch = {str(p.relative_to(PKG)) for p in (PKG / "launch").glob("*.launch.py")}
    assert launch and launch <= installed["share/twinloop_ros/launch"]
    config = {str(p.relative_to(PKG)) for p in (PKG / "config").iterdir() if p.suffix in (".yaml", ".xml")}
    assert {"config/sim_pick.yaml", "config/fastdds_profile.xml"} <= config
    assert config <= installed["share/twinloop_ros/config"]


def test_resource_marker_exists():
    assert (PKG / "resource" / "twinloop_ros").is_file()
    assert (PKG / "twinloop_ros" / "__init__.py").is_file()


def test_setup_cfg_installs_scripts_where_ros2_run_finds_them():
    cfg = configparser.ConfigParser()
    assert cfg.read(PKG / "setup.cfg")
    assert cfg.get("develop", "script_dir") == "$base/lib/twinloop_ros"
    assert cfg.get("install", "install_scripts") == "$base/lib/twinloop_ros"


# --- the launch file --------------------------------------------------------------------------------


def imported_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in a launch file"
            names.add(node.module)
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in (
            "__import__",
            "importlib.import_module",
        ):
            raise AssertionError(f"dynamic import in the launch file: {ast.unparse(node)}")
    return names


def test_launch_file_imports_only_launch_modules():
    allowed_exact = {"launch", "launch_ros", "yaml", "os"}
    allowed_prefixes = ("launch.", "launch_ros.", "ament_index_python.")
    modules = imported_modules(ast.parse(LAUNCH_FILE.read_text()))
    assert "launch" in modules or any(m.startswith("launch.") for m in modules)
    bad = {m for m in modules if m not in allowed_exact and not m.startswith(allowed_prefixes)}
    assert not bad, f"launch file imports {sorted(bad)}"


class _Recorder:
    """Stand-in for a launch / launch_ros class: records its arguments."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


@pytest.fixture
def launch_module(monkeypatch):
    """Load the launch file against stand-ins for launch, launch_ros and ament_index_python, with the
    source tree as the package's share folder. (launch/launch_ros are not on PyPI.)"""
    graph = {"value": "sim_pick"}

    class LaunchConfiguration:
        def __init__(self, name: str) -> None:
            assert name == "graph"

        def perform(self, context) -> str:
            return graph["value"]

    def share(package: str) -> str:
        assert package == "twinloop_ros"
        return str(PKG)

    modules = {
        "launch": {"LaunchDescription": _Recorder},
        "launch.actions": {
            n: type(n, (_Recorder,), {})
            for n in ("DeclareLaunchArgument", "OpaqueFunction", "SetEnvironmentVariable", "Shutdown")
        },
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
        "launch_ros": {},
        "launch_ros.actions": {"Node": type("Node", (_Recorder,), {})},
        "ament_index_python": {},
        "ament_index_python.packages": {"get_package_share_directory": share},
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("twinloop_launch_under_test", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.graph = graph
    return module


def launch_nodes(launch_module, graph: str) -> dict[str, dict]:
    launch_module.graph["value"] = graph
    description = launch_module.generate_launch_description()
    (actions,) = description.args
    [opaque] = [a for a in actions if type(a).__name__ == "OpaqueFunction"]
    nodes = opaque.kwargs["function"](context=None)
    return {n.kwargs["name"]: n.kwargs for n in nodes}


def test_launch_file_reads_the_same_spec(launch_module, tmp_path):
    spec_file = tmp_path / "cell.yaml"
    spec_file.write_text(
        "namespace: robot\n"
        "parameters: {use_sim_time: true, rate: 1.0}\n"
        "nodes:\n"
        "  - {name: twin, package: twinloop_ros, executable: twin_node, required: true,\n"
        "     parameters: {rate: 50.0}, remappings: {joint_states: arm/joint_states}}\n"
        "  - {name: mux, package: twinloop_ros, executable: command_mux, namespace: other}\n"
    )
    for graph in ("sim_pick", str(spec_file)):
        expected = load_spec(graph)
        nodes = launch_nodes(launch_module, graph)
        assert list(nodes) == [n.name for n in expected.nodes]
        for node in expected.nodes:
            got = nodes[node.name]
            assert (got["package"], got["executable"]) == (node.package, node.executable)
            assert got["namespace"] == node.namespace
            assert got["parameters"] == [node.parameters], node.name
            assert dict(got["remappings"]) == node.remappings
            assert (got.get("on_exit") is not None) == node.required, node.name


def test_launch_file_sets_the_same_environment(launch_module):
    launch_module.graph["value"] = "sim_pick"
    (actions,) = launch_module.generate_launch_description().args
    env_vars = dict(a.args for a in actions if type(a).__name__ == "SetEnvironmentVariable")
    runner_env = ros_environment({})
    assert (
        Path(env_vars["FASTRTPS_DEFAULT_PROFILES_FILE"]).resolve()
        == Path(runner_env["FASTRTPS_DEFAULT_PROFILES_FILE"]).resolve()
    )
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        assert env_vars[name] == runner_env[name], name


# --- the twinloop distribution ------------------------------------------------------------------------


def test_no_top_level_datasets_package(tmp_path):
    """`import datasets` must fail or be Hugging Face's, never the repo's `datasets/` folder.
    Run from a neutral directory: that is how installed code and console scripts see sys.path."""
    code = "import importlib.util as u; s = u.find_spec('datasets'); print(s.origin if s else 'NONE')"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    origin = result.stdout.strip()
    # Hugging Face's (in the venv, which may live inside the repo) is fine; the repo's own folder is not
    assert origin == "NONE" or not Path(origin).resolve().is_relative_to(REPO / "datasets"), origin


@pytest.mark.parametrize("folder", ["policies", "datasets", "sim", "hardware", "calibration"])
def test_top_level_folders_map_into_twinloop(folder):
    module = importlib.import_module(f"twinloop.{folder}")
    assert Path(module.__file__).resolve() == (REPO / folder / "__init__.py").resolve()


def rclpy_imports(path: Path, root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        found += [f"{path.relative_to(root)}:{node.lineno}" for n in names if n.split(".")[0] == "rclpy"]
    return found


def test_library_code_never_imports_rclpy():
    files = [p for d in LIBRARY_DIRS for p in (REPO / d).rglob("*.py")]
    assert len(files) > len(LIBRARY_DIRS)
    offenders = [hit for path in files for hit in rclpy_imports(path)]
    assert not offenders, f"library code imports rclpy: {offenders}"


def test_rclpy_scan_catches_imports(tmp_path):
    """The scan above can fail: it sees plain, dotted and function-level imports."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nimport rclpy\ndef f():\n    import rclpy.node\n    from rclpy.qos import Q\n"
    )
    assert rclpy_imports(sample, tmp_path) == ["sample.py:2", "sample.py:4", "sample.py:5"]
