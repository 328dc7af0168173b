"""Graph specs: the one YAML description of a ROS 2 graph (nodes, namespace, parameters, remappings).

The same file is read by `launch/twinloop.launch.py` (for `ros2 launch` on robots) and by
`twinloop launch` (which starts the node processes itself where `ros2 launch` is absent), so a
graph is described once. This module validates a spec and turns each node into the exact
`--ros-args` command line that launch_ros would produce.

Spec format::

    name: sim_pick
    namespace: robot          # optional, default "" (all contract topics are relative)
    parameters: {...}         # optional, applied to every node (e.g. use_sim_time)
    nodes:
      - name: twin
        package: twinloop_ros
        executable: twin_node
        required: true        # optional: when it exits, the whole graph stops
        parameters: {...}
        remappings: {from: to}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SPEC_SUFFIX = ".yaml"
_ALLOWED_TOP = {"name", "namespace", "parameters", "nodes", "description"}
_ALLOWED_NODE = {
    "name",
    "package",
    "executable",
    "required",
    "parameters",
    "remappings",
    "namespace",
    "stop_timeout",
}


class SpecError(ValueError):
    """A graph spec that cannot be used; the message is one line meant for the user."""


@dataclass(frozen=True)
class NodeSpec:
    name: str
    package: str
    executable: str
    namespace: str = ""
    required: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: dict[str, str] = field(default_factory=dict)
    # s between Ctrl-C and SIGTERM when the graph stops: a recorder finishing its commits needs more
    stop_timeout: float = 5.0

    @property
    def module(self) -> str:
        """Python module that implements the executable (convention: package.executable)."""
        return f"{self.package}.{self.executable}"


@dataclass(frozen=True)
class GraphSpec:
    name: str
    path: Path
    nodes: tuple[NodeSpec, ...]


def config_dir() -> Path:
    """The twinloop_ros config folder (graph specs, DDS profile), installed or in the source tree."""
    try:  # a colcon-built workspace on a robot
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("twinloop_ros")) / "config"
        if share.is_dir():
            return share
    except Exception:  # noqa: BLE001 - ament index absent or package not built: use the source tree
        pass
    import twinloop_ros

    return Path(twinloop_ros.__file__).resolve().parent.parent / "config"


def dds_profile_path() -> Path:
    return config_dir() / "fastdds_profile.xml"


def ros_environment(base: dict[str, str] | None = None, malloc_tuning: bool = True) -> dict[str, str]:
    """Environment for node processes: the project's DDS transport profile, unbuffered logs."""
    env = dict(os.environ if base is None else base)
    env.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(dds_profile_path()))
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env.setdefault("MUJOCO_GL", "egl")  # headless rendering in the twin
    # Keep ~1 MB image buffers in the heap instead of returning them to the kernel after every frame:
    # halved 640x480 image latency (p50 3.3 -> 1.8 ms), see `make bench` entries *.profile_malloc_tuned.*
    if malloc_tuning:
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "134217728")
        env.setdefault("MALLOC_TRIM_THRESHOLD_", "134217728")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONSAFEPATH", "1")  # the repo-root `datasets/` must not shadow HF `datasets`
    return env


def resolve_spec_path(spec: str | Path) -> Path:
    """A spec is a path to a YAML file or the name of one under the config folder (`sim_pick`)."""
    candidate = Path(spec)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise SpecError(f"graph spec not found: {candidate}")
        return candidate
    named = config_dir() / f"{spec}{SPEC_SUFFIX}"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in config_dir().glob(f"*{SPEC_SUFFIX}")))
    raise SpecError(f"unknown graph spec '{spec}' (known: {known}; or give a path to a .yaml file)")


def _check_params(where: str, params: Any) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise SpecError(f"{where}: 'parameters' must be a mapping, got {type(params).__name__}")
    for key, value in params.items():
        if not isinstance(key, str):
            raise SpecError(f"{where}: parameter name {key!r} is not a string")
        if isinstance(value, dict):
            raise SpecError(f"{where}: parameter '{key}' is a mapping; use dotted names (a.b: value)")
        if isinstance(value, list) and len({type(v) for v in value}) > 1:
            raise SpecError(f"{where}: parameter '{key}' mixes types in a list; ROS needs one type")
    return dict(params)


def parse_spec(data: Any, path: Path) -> GraphSpec:
    """Validate the YAML structure of a spec; raise SpecError with a one-line reason."""
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a graph spec is a mapping with a 'nodes' list")
    unknown = set(data) - _ALLOWED_TOP
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_ALLOWED_TOP)}")
    nodes_raw = data.get("nodes")
    if not isinstance(nodes_raw, list) or not nodes_raw:
        raise SpecError(f"{path}: 'nodes' must be a non-empty list")
    namespace = str(data.get("namespace") or "")
    common = _check_params(f"{path}", data.get("parameters"))
    nodes: list[NodeSpec] = []
    for i, raw in enumerate(nodes_raw):
        where = f"{path}: nodes[{i}]"
        if not isinstance(raw, dict):
            raise SpecError(f"{where} must be a mapping")
        unknown = set(raw) - _ALLOWED_NODE
        if unknown:
            raise SpecError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_ALLOWED_NODE)}")
        for key in ("name", "package", "executable"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise SpecError(f"{where}: '{key}' is required and must be a string")
        if not isinstance(raw.get("required", False), bool):
            raise SpecError(f"{where}: 'required' must be true or false")
        stop_timeout = raw.get("stop_timeout", 5.0)
        if isinstance(stop_timeout, bool) or not isinstance(stop_timeout, int | float) or stop_timeout <= 0:
            raise SpecError(f"{where}: 'stop_timeout' must be a positive number of seconds")
        remaps = raw.get("remappings") or {}
        if not isinstance(remaps, dict) or not all(isinstance(v, str) for v in remaps.values()):
            raise SpecError(f"{where}: 'remappings' must map topic names to topic names")
        params = {**common, **_check_params(where, raw.get("parameters"))}
        nodes.append(
            NodeSpec(
                name=raw["name"],
                package=raw["package"],
                executable=raw["executable"],
                namespace=str(raw.get("namespace", namespace) or ""),
                required=bool(raw.get("required", False)),
                parameters=params,
                remappings={str(k): v for k, v in remaps.items()},
                stop_timeout=float(stop_timeout),
            )
        )
    names = [n.name for n in nodes]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise SpecError(f"{path}: duplicate node name(s) {sorted(duplicates)}")
    return GraphSpec(name=str(data.get("name") or path.stem), path=path, nodes=tuple(nodes))


def load_spec(spec: str | Path) -> GraphSpec:
    path = resolve_spec_path(spec)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{path}:{where} malformed YAML ({getattr(exc, 'problem', exc)})") from None
    except OSError as exc:
        raise SpecError(f"cannot read graph spec {path}: {exc.strerror}") from None
    return parse_spec(data, path)


def ros_args(node: NodeSpec, params_file: Path) -> list[str]:
    """The `--ros-args` that launch_ros passes for the same node (name, namespace, params, remaps)."""
    args = ["--ros-args", "-r", f"__node:={node.name}"]
    if node.namespace:
        args += ["-r", f"__ns:=/{node.namespace.strip('/')}"]
    args += ["--params-file", str(params_file)]
    for src, dst in node.remappings.items():
        args += ["-r", f"{src}:={dst}"]
    return args


def params_yaml(node: NodeSpec) -> str:
    """ROS 2 params file for one node. Keyed `/**/name` so it matches inside any namespace."""
    return yaml.safe_dump({f"/**/{node.name}": {"ros__parameters": node.parameters}}, sort_keys=True)


def parse_override(text: str) -> tuple[str, str]:
    """`NODE.PARAM=VALUE` (the CLI's --set) -> ("NODE.PARAM", "VALUE")."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise SpecError(f"--set expects NODE.PARAM=VALUE, got '{text}'")
    key, value = text.split("=", 1)
    return key, value


def apply_overrides(spec: GraphSpec, overrides: dict[str, str]) -> GraphSpec:
    """A copy of `spec` with `{"NODE.PARAM": "yaml value"}` set; unknown nodes and mappings are errors."""
    import dataclasses

    nodes = []
    names = {n.name for n in spec.nodes}
    for key in overrides:
        if key.split(".", 1)[0] not in names:
            raise SpecError(
                f"--set {key}: no node '{key.split('.', 1)[0]}' in graph (nodes: {sorted(names)})"
            )
    for node in spec.nodes:
        params = dict(node.parameters)
        for key, value in overrides.items():
            node_name, param = key.split(".", 1)
            if node_name == node.name:
                parsed = yaml.safe_load(value)
                if type(params.get(param)) is float and type(parsed) is int:
                    parsed = float(parsed)  # `rate=15` for a double parameter: ROS refuses an INTEGER there
                params[param] = parsed
                if isinstance(params[param], dict):
                    raise SpecError(
                        f"--set {key}: a mapping is not a ROS parameter; quote JSON text as a string "
                        f"(--set '{key}=\"...\"') or set dotted names ({key}.name=value)"
                    )
        nodes.append(dataclasses.replace(node, parameters=params))
    return dataclasses.replace(spec, nodes=tuple(nodes))
