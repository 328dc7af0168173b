"""Test-only stand-in for a ROS node (no rclpy): reports what it was started with, sleeps until SIGINT.

Run by the graph runner as `python -m support.fake_sleeper --ros-args ...` (PYTHONPATH=tests). It prints
one `FAKE_NODE {json}` line (pid, argv after the module, the parsed params file, where `datasets`
would import from), touches the `ready_file` parameter if given, and exits 0 on SIGINT/SIGTERM.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path

import yaml


def ros_argv() -> list[str]:
    return sys.argv[1:]


def node_name(argv: list[str]) -> str:
    for i, arg in enumerate(argv[:-1]):
        if arg == "-r" and argv[i + 1].startswith("__node:="):
            return argv[i + 1].split(":=", 1)[1]
    return "?"


def load_params(argv: list[str]) -> dict:
    """The node's `ros__parameters` from the --params-file, looked up the way rcl does (`/**/name`)."""
    if "--params-file" not in argv:
        return {}
    data = yaml.safe_load(Path(argv[argv.index("--params-file") + 1]).read_text())
    return data.get(f"/**/{node_name(argv)}", {}).get("ros__parameters", {})


def report(argv: list[str], params: dict) -> None:
    spec = importlib.util.find_spec("datasets")
    info = {
        "pid": os.getpid(),
        "name": node_name(argv),
        "argv": argv,
        "params_file_text": Path(argv[argv.index("--params-file") + 1]).read_text()
        if "--params-file" in argv
        else None,
        "params": params,
        "datasets_origin": None if spec is None else spec.origin,
    }
    print("FAKE_NODE " + json.dumps(info), flush=True)


def main() -> int:
    stop = {"signal": None}

    def on_signal(signum, _frame) -> None:
        stop["signal"] = signal.Signals(signum).name

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    argv = ros_argv()
    params = load_params(argv)
    report(argv, params)
    if params.get("ready_file"):
        Path(params["ready_file"]).touch()
    deadline = time.monotonic() + 120.0  # safety net: never outlive a broken test
    while stop["signal"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"sleeper stopped by {stop['signal']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
