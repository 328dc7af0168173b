"""Test harness: run a graph spec as real processes in an isolated network namespace.

Each graph gets its own `unshare -n` network namespace with only loopback up, plus a unique
ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, so no DDS traffic leaves the machine and
parallel graphs never meet. Test-side probes (tests/support/ros_probe.py) run inside the same namespace
through `nsenter`. Where namespaces are impossible (not root), graphs fall back to the localhost
discovery range and a unique domain id. Everything is torn down at the end of the test, pass or fail.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from twinloop.graph_spec import ros_environment

# Headless rendering for every test, whatever imports mujoco first (twinloop.sim sets it too).
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYTHONSAFEPATH", "1")  # children started from the repo root: no `datasets/` shadowing

REPO = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).resolve().parent / "support" / "ros_probe.py"


def _netns_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True)
    return probe.returncode == 0


NETNS = _netns_available()


class RunningGraph:
    """One `twinloop launch` process tree, optionally inside its own network namespace."""

    def __init__(
        self,
        spec: str | Path | None,
        overrides: list[str],
        log_dir: Path,
        timeout: float | None,
        cli: list[str] | None = None,
    ) -> None:
        self.domain_id = random.Random(os.getpid() * 1000 + time.time_ns()).randrange(1, 200)
        self.env = ros_environment()  # the same DDS profile as the nodes, so probes discover like them
        self.env.update(
            ROS_DOMAIN_ID=str(self.domain_id),
            ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
            ROS_LOG_DIR=str(log_dir / "ros_logs"),
            MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"),
            HF_HUB_OFFLINE="1",
            PYTHONUNBUFFERED="1",
        )
        if cli is None:  # `twinloop launch SPEC`; `cli` runs any other twinloop command the same way
            cli = ["launch", str(spec)]
            for item in overrides:
                cli += ["--set", item]
            if timeout is not None:
                cli += ["--timeout", str(timeout)]
        cmd = [sys.executable, "-m", "twinloop.cli", *cli]
        if NETNS:
            quoted = " ".join(_shell_quote(c) for c in cmd)
            cmd = ["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {quoted}"]
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in iter(self.process.stdout.readline, ""):
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def run(self, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run a command inside the graph's network namespace with the graph's ROS environment."""
        if NETNS:
            argv = ["nsenter", f"--net=/proc/{self.process.pid}/ns/net", "--", *argv]
        return subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=timeout + 30, cwd=REPO
        )

    def probe(self, *args: str, timeout: float = 60.0, attempts: int = 3) -> subprocess.CompletedProcess:
        """Run the probe; a probe process that discovers nothing is replaced by a fresh one.

        Seen here about once in ten runs: a new probe participant in the namespace discovers none of the
        graph's participants (while they keep talking to each other); a new process finds them at once.
        Every attempt checks the same thing, so the test still fails if the topics never appear.
        """
        result = None
        for _ in range(attempts):
            per_try = timeout / attempts
            result = self.run([sys.executable, str(PROBE), *args, "--timeout", str(per_try)], timeout=per_try)
            if result.returncode == 0:
                return result
        assert result is not None
        return result

    def wait_for_topics(self, *topics: str, timeout: float = 90.0) -> None:
        result = self.probe("wait", *topics, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(
                f"topics not up: {result.stdout} {result.stderr}\n--- graph log ---\n{self.log}"
            )

    def echo(self, topic: str, msg_type: str, count: int = 1, timeout: float = 60.0) -> list[dict]:
        result = self.probe("echo", topic, msg_type, "--count", str(count), timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(
                f"no {topic}: {result.stdout} {result.stderr}\n--- graph log ---\n{self.log}"
            )
        return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]

    def wait_for_log(self, text: str, timeout: float = 20.0) -> None:
        """Block until a line containing `text` has come out of the graph (logs travel through pipes)."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in list(self.lines)):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no log line with {text!r} within {timeout} s\n--- graph log ---\n{self.log}"
                )
            time.sleep(0.05)

    def wait(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"graph still running after {timeout} s\n--- graph log ---\n{self.log}"
            ) from None
        self._reader.join(timeout=5)
        return code

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # the runner stops its nodes in order
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._reader.join(timeout=5)
        return self.process.returncode


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


@pytest.fixture
def ros_graph(tmp_path):
    """Factory: `graph = ros_graph("sim_pick", ["evaluator.episodes=3"])`, or any twinloop command with
    `ros_graph(cli=["sim", "--expert"])`; all graphs stop at teardown."""
    graphs: list[RunningGraph] = []

    def start(
        spec: str | Path | None = None,
        overrides: list[str] | None = None,
        timeout: float | None = None,
        cli: list[str] | None = None,
    ) -> RunningGraph:
        graph = RunningGraph(spec, overrides or [], tmp_path, timeout, cli)
        graphs.append(graph)
        return graph

    yield start
    for graph in graphs:
        graph.stop()
    leftovers = node_processes({g.domain_id for g in graphs})
    assert not leftovers, f"node processes left running: {leftovers}"


def domain_processes(domain_ids: set[int]) -> list[tuple[int, list[bytes]]]:
    """(pid, argv) of the live processes whose environment has one of these ROS_DOMAIN_IDs: the
    processes of the tests' graphs (nodes and whatever they started, e.g. ffmpeg)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(f"ROS_DOMAIN_ID={d}".encode() in env for d in domain_ids):
            found.append((int(proc.name), args))
    return found


def node_processes(domain_ids: set[int]) -> list[str]:
    """Node processes (python -m twinloop_ros.*) of the given ROS domains that are still alive."""
    return [
        b" ".join(args).decode(errors="replace")
        for _, args in domain_processes(domain_ids)
        if b"--ros-args" in args and any(a.startswith(b"twinloop_ros.") for a in args)
    ]
