"""`twinloop` CLI and the graph runner, with real processes.

Runner tests use tiny stand-in nodes from tests/support (no rclpy): they run as `support.fake_*` with
PYTHONPATH=tests, exactly as the runner starts real nodes (`python -m <package>.<executable> --ros-args`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from twinloop.graph_spec import NodeSpec, ros_args

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
ERROR_PREFIX = "twinloop launch: error:"


def base_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")])),
        ROS_DOMAIN_ID=str(random.randrange(1, 200)),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_LOG_DIR=str(tmp_path / "ros_logs"),
        PYTHONUNBUFFERED="1",
    )
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    return env


def twinloop(*args: str, env: dict[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "twinloop.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.splitlines()
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(ERROR_PREFIX), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def write_spec(tmp_path: Path, nodes: list[dict], **top) -> Path:
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump({"name": "test_graph", **top, "nodes": nodes}, sort_keys=False))
    return path


def fake(name: str, kind: str, **fields) -> dict:
    return {"name": name, "package": "support", "executable": f"fake_{kind}", **fields}


def fake_reports(stdout: str) -> dict[str, dict]:
    """The `FAKE_NODE {json}` lines the stand-in nodes print, by node name."""
    reports = {}
    for line in stdout.splitlines():
        if "FAKE_NODE " in line:
            info = json.loads(line.split("FAKE_NODE ", 1)[1])
            reports[info["name"]] = info
    return reports


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --- help and bad input ---------------------------------------------------------------------------


def test_help(tmp_path):
    env = base_env(tmp_path)
    top = twinloop("--help", env=env)
    assert top.returncode == 0, top.stderr
    assert "launch" in top.stdout and "bench" in top.stdout
    launch = twinloop("launch", "--help", env=env)
    assert launch.returncode == 0, launch.stderr
    assert "SPEC" in launch.stdout.upper() and "--set" in launch.stdout and "--timeout" in launch.stdout


def test_console_script_help():
    script = Path(sys.executable).parent / "twinloop"
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    result = subprocess.run([str(script), "launch", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "spec" in result.stdout


def test_unknown_spec_name(tmp_path):
    line = assert_one_line_error(twinloop("launch", "nope", env=base_env(tmp_path)))
    assert "'nope'" in line and "sim_pick" in line


def test_missing_spec_file(tmp_path):
    line = assert_one_line_error(twinloop("launch", "/tmp/does-not-exist.yaml", env=base_env(tmp_path)))
    assert "not found" in line and "/tmp/does-not-exist.yaml" in line


def test_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("nodes:\n  - name: a\n    package: [oops\n")
    line = assert_one_line_error(twinloop("launch", str(path), env=base_env(tmp_path)))
    assert "malformed YAML" in line and "line" in line


def test_unknown_key(tmp_path):
    path = write_spec(tmp_path, [fake("a", "sleeper")], robots=2)
    line = assert_one_line_error(twinloop("launch", str(path), env=base_env(tmp_path)))
    assert "robots" in line


def test_non_utf8_spec(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"nodes: \xff\xfe\x00\n")
    assert_one_line_error(twinloop("launch", str(path), env=base_env(tmp_path)))


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("sleeper_rate=3", "NODE.PARAM=VALUE"),
        ("sleeper.rate", "NODE.PARAM=VALUE"),
        ("ghost.rate=3", "ghost"),
        ('sleeper.args={"a": 1}', "a mapping is not a ROS parameter"),
    ],
)
def test_bad_set(tmp_path, override, needle):
    path = write_spec(tmp_path, [fake("sleeper", "sleeper")])
    result = twinloop("launch", str(path), "--set", override, env=base_env(tmp_path))
    line = assert_one_line_error(result)
    assert needle in line
    assert "FAKE_NODE" not in result.stdout  # nothing was started


# --- the runner with stand-in nodes ---------------------------------------------------------------


@pytest.fixture(scope="module")
def required_crash(tmp_path_factory):
    """A graph whose required node exits 3 while a sleeper runs; with common params and --set overrides."""
    tmp_path = tmp_path_factory.mktemp("required_crash")
    ready = tmp_path / "sleeper.ready"
    spec = write_spec(
        tmp_path,
        [
            fake(
                "sleeper",
                "sleeper",
                namespace="cell",
                parameters={"rate": 5.0, "shared": 2, "joints": ["a", "b"], "ready_file": str(ready)},
                remappings={"joint_states": "arm/joint_states"},
            ),
            fake("crasher", "crasher", required=True, parameters={"wait_for": str(ready), "delay": 0.2}),
        ],
        parameters={"use_sim_time": True, "shared": 1},
    )
    result = twinloop(
        "launch",
        str(spec),
        "--set",
        "sleeper.rate=7.5",
        "--set",
        "sleeper.label=hello",
        "--timeout",
        "60",
        env=base_env(tmp_path),
    )
    return result


def test_required_node_exit_stops_the_graph_with_its_status(required_crash):
    result = required_crash
    assert result.returncode == 3, result.stdout + result.stderr
    assert "required node 'crasher' died (exit 3)" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_other_nodes_are_stopped_with_sigint(required_crash):
    reports = fake_reports(required_crash.stdout)
    assert "sleeper" in reports, required_crash.stdout
    assert not pid_alive(reports["sleeper"]["pid"]), "sleeper still running after the launcher exited"
    assert "sleeper stopped by SIGINT" in required_crash.stdout  # a graceful stop first


def test_logs_are_prefixed_with_the_node_name(required_crash):
    lines = required_crash.stdout.splitlines()
    crasher = [line for line in lines if "crasher up, about to fail" in line]
    sleeper = [line for line in lines if "sleeper stopped by" in line or "FAKE_NODE" in line]
    assert crasher and all(line.startswith("[crasher]") for line in crasher), lines
    assert sleeper and all(line.startswith("[sleeper]") for line in sleeper), lines


def test_parameters_reach_the_node_through_the_params_file(required_crash):
    info = fake_reports(required_crash.stdout)["sleeper"]
    params = info["params"]
    assert params["use_sim_time"] is True  # common parameter
    assert params["shared"] == 2  # the node's own value wins over the common one
    assert params["joints"] == ["a", "b"]
    assert params["rate"] == 7.5 and isinstance(params["rate"], float)  # --set, typed as YAML
    assert params["label"] == "hello"  # --set may add a parameter
    data = yaml.safe_load(info["params_file_text"])
    assert list(data) == ["/**/sleeper"] and "ros__parameters" in data["/**/sleeper"]


def test_node_gets_the_same_ros_args_as_launch_ros(required_crash):
    info = fake_reports(required_crash.stdout)["sleeper"]
    argv = info["argv"]
    params_file = Path(argv[argv.index("--params-file") + 1])
    node = NodeSpec(
        name="sleeper",
        package="support",
        executable="fake_sleeper",
        namespace="cell",
        remappings={"joint_states": "arm/joint_states"},
    )
    assert argv == ros_args(node, params_file)
    assert not params_file.exists(), "the runner leaves its temporary params files behind"


def test_nodes_do_not_see_the_repo_root_as_import_path(required_crash):
    """A node started from the repo root must not import the repo's `datasets/` folder as `datasets`:
    that would shadow Hugging Face `datasets` (which lerobot imports) in the node processes."""
    origin = fake_reports(required_crash.stdout)["sleeper"]["datasets_origin"]
    assert origin is None or not Path(origin).resolve().is_relative_to(REPO / "datasets"), origin


def test_non_required_crash_leaves_the_graph_running(tmp_path):
    spec = write_spec(tmp_path, [fake("sleeper", "sleeper"), fake("crasher", "crasher")])
    result = twinloop("launch", str(spec), "--timeout", "3", env=base_env(tmp_path))
    assert result.returncode == 124, result.stdout + result.stderr
    assert "node 'crasher' exited with 3" in result.stdout
    assert "sleeper stopped by SIGINT" in result.stdout  # still up until the timeout stopped it
    reports = fake_reports(result.stdout)
    assert not pid_alive(reports["sleeper"]["pid"])


def test_sigint_stops_everything_and_exits_130(tmp_path):
    ready = tmp_path / "ready"
    spec = write_spec(
        tmp_path,
        [
            fake("sleeper", "sleeper", required=True, parameters={"ready_file": str(ready)}),
            fake("other", "sleeper"),
        ],
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "twinloop.cli", "launch", str(spec), "--timeout", "60"],
        cwd=REPO,
        env=base_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            ready.exists() and sum("FAKE_NODE" in line for line in list(out)) == 2
        ):
            assert proc.poll() is None, "".join(out)
            time.sleep(0.05)
        assert ready.exists(), "".join(out)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    stdout = "".join(out)
    assert code == 130, stdout + proc.stderr.read()
    assert "SIGINT: stopping graph" in stdout
    reports = fake_reports(stdout)
    assert set(reports) == {"sleeper", "other"}
    for name, info in reports.items():
        assert f"[{name:<7}] sleeper stopped by SIGINT" in stdout
        assert not pid_alive(info["pid"]), f"{name} still running"


# --- one real node --------------------------------------------------------------------------------


def test_real_twin_with_bad_parameter_exits_2_with_one_line_error(tmp_path):
    spec = write_spec(
        tmp_path,
        [
            {
                "name": "twin",
                "package": "twinloop_ros",
                "executable": "twin_node",
                "required": True,
                "parameters": {"mode": "bogus"},
            }
        ],
    )
    result = twinloop("launch", str(spec), "--timeout", "90", env=base_env(tmp_path), timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    errors = [line for line in result.stdout.splitlines() if "error:" in line]
    assert len(errors) == 1, output
    assert errors[0].startswith("[twin] error: parameter mode must be"), output
    assert "bogus" in errors[0]
