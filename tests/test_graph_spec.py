"""Graph specs (twinloop/graph_spec.py): parsing, validation errors, --ros-args, params files, DDS env.

No processes are started here; tests/test_launch_cli.py runs real ones.
"""

from __future__ import annotations

import ast
import importlib.util
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from twinloop.graph_spec import (
    NodeSpec,
    SpecError,
    config_dir,
    dds_profile_path,
    load_spec,
    params_yaml,
    parse_spec,
    resolve_spec_path,
    ros_args,
    ros_environment,
)

REPO = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = REPO / "ros_ws" / "src" / "twinloop_ros" / "config"

VALID = """
name: cell
namespace: robot
parameters:
  use_sim_time: true
  rate: 10.0
nodes:
  - name: twin
    package: twinloop_ros
    executable: twin_node
    required: true
    parameters:
      rate: 50.0
      camera_pos: [0.5, 0.0, 0.4]
      camera_name: front
    remappings:
      joint_states: twin/joint_states
  - name: policy_server
    package: twinloop_ros
    executable: policy_server
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def spec_error(tmp_path: Path, text: str) -> str:
    """Load `text` as a spec file; it must fail with a one-line SpecError. Returns the message."""
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text))
    message = str(info.value)
    assert message and "\n" not in message, repr(message)
    return message


def node_yaml(**overrides) -> str:
    node = {"name": "a", "package": "pkg", "executable": "exe", **overrides}
    node = {k: v for k, v in node.items() if v is not None}
    return yaml.safe_dump({"nodes": [node]})


# --- a valid spec ---------------------------------------------------------------------------------


def test_valid_spec_parses(tmp_path):
    spec = load_spec(write(tmp_path, VALID))
    assert spec.name == "cell"
    assert [n.name for n in spec.nodes] == ["twin", "policy_server"]
    twin, policy = spec.nodes
    assert twin.namespace == policy.namespace == "robot"
    assert twin.required is True and policy.required is False
    assert twin.module == "twinloop_ros.twin_node"
    # common parameters are merged under the node's own: the node's value wins
    assert twin.parameters == {
        "use_sim_time": True,
        "rate": 50.0,
        "camera_pos": [0.5, 0.0, 0.4],
        "camera_name": "front",
    }
    assert policy.parameters == {"use_sim_time": True, "rate": 10.0}
    assert twin.remappings == {"joint_states": "twin/joint_states"}
    assert policy.remappings == {}


def test_spec_name_defaults_to_file_stem_and_node_namespace_overrides(tmp_path):
    text = yaml.safe_dump(
        {
            "namespace": "robot",
            "nodes": [
                {"name": "a", "package": "p", "executable": "e", "namespace": "other"},
                {"name": "b", "package": "p", "executable": "e"},
            ],
        }
    )
    spec = load_spec(write(tmp_path, text, "my_cell.yaml"))
    assert spec.name == "my_cell"
    assert [n.namespace for n in spec.nodes] == ["other", "robot"]


def test_resolve_spec_path_by_name_and_by_path(tmp_path):
    assert resolve_spec_path("sim_pick") == config_dir() / "sim_pick.yaml"
    path = write(tmp_path, VALID, "x.yml")
    assert resolve_spec_path(path) == path
    assert resolve_spec_path(str(path)) == path


# --- malformed specs: one-line SpecError naming the problem ---------------------------------------


def test_file_not_found(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match="not found") as info:
        load_spec(missing)
    assert str(missing) in str(info.value)


def test_unknown_spec_name_lists_known_specs():
    with pytest.raises(SpecError) as info:
        load_spec("no_such_graph")
    message = str(info.value)
    assert "\n" not in message
    assert "no_such_graph" in message
    assert "sim_pick" in message  # the known specs are listed


def test_malformed_yaml_names_the_line(tmp_path):
    message = spec_error(tmp_path, "nodes:\n  - name: a\n    package: [unclosed\n  executable: x\n")
    assert "malformed YAML" in message
    assert "line 4" in message


def test_not_a_mapping(tmp_path):
    assert "mapping" in spec_error(tmp_path, "- just\n- a list\n")
    assert "mapping" in spec_error(tmp_path, "")  # an empty file is not a spec either


def test_missing_nodes(tmp_path):
    assert "'nodes'" in spec_error(tmp_path, "name: x\n")


def test_empty_nodes(tmp_path):
    assert "'nodes' must be a non-empty list" in spec_error(tmp_path, "nodes: []\n")


def test_unknown_top_level_key(tmp_path):
    message = spec_error(tmp_path, "nodez: []\nnodes: [{name: a, package: p, executable: e}]\n")
    assert "unknown key" in message and "nodez" in message


def test_unknown_node_key(tmp_path):
    message = spec_error(tmp_path, node_yaml(paramaters={"x": 1}))
    assert "nodes[0]" in message and "unknown key" in message and "paramaters" in message


@pytest.mark.parametrize("key", ["package", "executable", "name"])
def test_missing_required_node_field(tmp_path, key):
    message = spec_error(tmp_path, node_yaml(**{key: None}))
    assert f"'{key}' is required" in message and "nodes[0]" in message


def test_non_string_node_field(tmp_path):
    assert "'executable' is required and must be a string" in spec_error(tmp_path, node_yaml(executable=5))


def test_duplicate_node_names(tmp_path):
    text = yaml.safe_dump(
        {
            "nodes": [
                {"name": "a", "package": "p", "executable": "e"},
                {"name": "a", "package": "p", "executable": "f"},
            ]
        }
    )
    message = spec_error(tmp_path, text)
    assert "duplicate" in message and "'a'" in message


def test_nested_dict_parameter(tmp_path):
    message = spec_error(tmp_path, node_yaml(parameters={"camera": {"width": 640}}))
    assert "'camera'" in message and "mapping" in message


def test_nested_dict_in_common_parameters(tmp_path):
    text = "parameters: {limits: {v: 1}}\nnodes: [{name: a, package: p, executable: e}]\n"
    assert "'limits'" in spec_error(tmp_path, text)


@pytest.mark.parametrize("values", [[1, "two"], [1, 2.5], [True, 1]])
def test_mixed_type_list_parameter(tmp_path, values):
    message = spec_error(tmp_path, node_yaml(parameters={"xs": values}))
    assert "'xs'" in message and "mixes types" in message


def test_parameters_not_a_mapping(tmp_path):
    assert "'parameters' must be a mapping" in spec_error(tmp_path, node_yaml(parameters=[1, 2]))


def test_non_string_remap_target(tmp_path):
    message = spec_error(tmp_path, node_yaml(remappings={"joint_states": 5}))
    assert "'remappings'" in message


def test_node_not_a_mapping(tmp_path):
    assert "nodes[0] must be a mapping" in spec_error(tmp_path, "nodes: [twin]\n")


def test_parse_spec_rejects_non_mapping_directly():
    with pytest.raises(SpecError):
        parse_spec(["nodes"], Path("x.yaml"))


# --- the node command line and its params file ----------------------------------------------------


def test_ros_args_match_launch_ros():
    node = NodeSpec(
        name="twin",
        package="twinloop_ros",
        executable="twin_node",
        namespace="robot",
        remappings={"a": "b", "joint_states": "/arm/joint_states"},
    )
    params = Path("/tmp/twin.params.yaml")
    assert ros_args(node, params) == [
        "--ros-args",
        "-r",
        "__node:=twin",
        "-r",
        "__ns:=/robot",
        "--params-file",
        str(params),
        "-r",
        "a:=b",
        "-r",
        "joint_states:=/arm/joint_states",
    ]


def test_ros_args_without_namespace_has_no_ns_remap():
    node = NodeSpec(name="mux", package="p", executable="e")
    args = ros_args(node, Path("f.yaml"))
    assert args == ["--ros-args", "-r", "__node:=mux", "--params-file", "f.yaml"]


def test_ros_args_normalises_namespace_slashes():
    node = NodeSpec(name="n", package="p", executable="e", namespace="/robot/")
    assert "__ns:=/robot" in ros_args(node, Path("f"))


def test_params_yaml_round_trips():
    parameters = {
        "use_sim_time": True,
        "rate": 10.0,
        "seed": 0,
        "camera_name": "front",
        "camera_pos": [0.55, 0.0, 0.45],
        "joints": ["a", "b"],
    }
    node = NodeSpec(name="twin", package="p", executable="e", parameters=parameters)
    data = yaml.safe_load(params_yaml(node))
    assert data == {"/**/twin": {"ros__parameters": parameters}}
    # types survive (rcl types parameters from the YAML scalar: 10.0 is a double, 0 an integer)
    loaded = data["/**/twin"]["ros__parameters"]
    assert isinstance(loaded["rate"], float) and isinstance(loaded["seed"], int)
    assert loaded["use_sim_time"] is True


def test_params_yaml_with_no_parameters_is_still_valid():
    node = NodeSpec(name="mux", package="p", executable="e")
    assert yaml.safe_load(params_yaml(node)) == {"/**/mux": {"ros__parameters": {}}}


# --- the DDS transport profile --------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(elem: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in elem.iter() if _local(e.tag) == name]


def _text(elem: ET.Element, name: str) -> str | None:
    found = _children(elem, name)
    return found[0].text.strip() if found and found[0].text else None


def test_ros_environment_sets_the_project_dds_profile():
    env = ros_environment({"PATH": "/usr/bin"})
    assert env["PATH"] == "/usr/bin"
    assert env["PYTHONUNBUFFERED"] == "1"
    profile = Path(env["FASTRTPS_DEFAULT_PROFILES_FILE"])
    assert profile.is_file()
    assert profile == dds_profile_path()
    assert profile.resolve() == (SHIPPED_CONFIG / "fastdds_profile.xml").resolve()


def test_ros_environment_keeps_an_explicit_profile():
    env = ros_environment({"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/mine.xml"})
    assert env["FASTRTPS_DEFAULT_PROFILES_FILE"] == "/etc/mine.xml"


def test_dds_profile_is_valid_and_tuned():
    root = ET.parse(ros_environment({})["FASTRTPS_DEFAULT_PROFILES_FILE"]).getroot()
    descriptors = {_text(d, "transport_id"): d for d in _children(root, "transport_descriptor")}
    by_type = {_text(d, "type"): (tid, d) for tid, d in descriptors.items()}
    assert {"SHM", "UDPv4"} <= set(by_type)

    shm_id, shm = by_type["SHM"]
    assert int(_text(shm, "segment_size")) == 16 * 1024 * 1024
    udp_id, udp = by_type["UDPv4"]
    assert int(_text(udp, "sendBufferSize")) == 4 * 1024 * 1024
    assert int(_text(udp, "receiveBufferSize")) == 4 * 1024 * 1024

    participants = _children(root, "participant")
    assert participants, "no participant profile"
    participant = participants[0]
    assert participant.get("is_default_profile") == "true"
    assert _text(participant, "useBuiltinTransports") == "false"
    used = [e.text.strip() for e in _children(participant, "transport_id")]
    assert shm_id in used and udp_id in used


# --- the shipped graph ----------------------------------------------------------------------------


def test_shipped_sim_pick_loads():
    spec = load_spec("sim_pick")
    assert spec.path.resolve() == (SHIPPED_CONFIG / "sim_pick.yaml").resolve()
    nodes = {n.name: n for n in spec.nodes}
    assert set(nodes) == {"twin", "policy_server", "command_mux", "evaluator"}
    assert all(n.required for n in spec.nodes)
    # the twin owns the clock; the others run on it (common parameter merged under node parameters)
    assert nodes["twin"].parameters["use_sim_time"] is False
    assert all(
        nodes[n].parameters["use_sim_time"] is True for n in ("policy_server", "command_mux", "evaluator")
    )


@pytest.mark.parametrize("node", load_spec("sim_pick").nodes, ids=lambda n: n.name)
def test_shipped_executables_are_modules_with_main(node):
    found = importlib.util.find_spec(node.module)
    assert found is not None and found.origin, f"{node.module} is not importable"
    tree = ast.parse(Path(found.origin).read_text())
    functions = {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert "main" in functions, f"{node.module} has no top-level main()"
    runs_main = any(
        isinstance(stmt, ast.If) and "__main__" in ast.unparse(stmt.test) and "main()" in ast.unparse(stmt)
        for stmt in tree.body
    )
    assert runs_main, f"{node.module} does not call main() under `python -m`"


def test_every_shipped_spec_is_valid():
    specs = sorted(SHIPPED_CONFIG.glob("*.yaml"))
    assert specs
    for path in specs:
        assert load_spec(path).nodes
