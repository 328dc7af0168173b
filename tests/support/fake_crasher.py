"""Test-only stand-in for a ROS node that dies: prints a line, then exits with `exit_code` (default 3).

Parameters (from the --params-file): `exit_code`, `delay` (seconds, default 0.5) and `wait_for` (a file
to wait for first, e.g. the sleeper's ready_file, so the crash happens after the other node is up).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from support.fake_sleeper import load_params, ros_argv


def main() -> int:
    params = load_params(ros_argv())
    print("crasher up, about to fail", flush=True)
    wait_for = params.get("wait_for")
    deadline = time.monotonic() + 30.0
    while wait_for and not Path(wait_for).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(float(params.get("delay", 0.5)))
    code = int(params.get("exit_code", 3))
    print(f"crasher exiting with {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
