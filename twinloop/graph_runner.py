"""Run a graph spec as node processes: what `ros2 launch` does, for machines without ros2 launch.

Each node runs as `python -m <package>.<executable> --ros-args ...` with the same arguments launch_ros
would give it. Output lines are prefixed with the node name. The graph stops on Ctrl-C or SIGTERM, or
when a required node exits; the exit status is then that node's (non-zero if it died).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from twinloop.graph_spec import GraphSpec, NodeSpec, params_yaml, ros_args, ros_environment

_COLORS = ["36", "33", "35", "32", "34", "31", "96", "93"]


@dataclass
class RunningNode:
    spec: NodeSpec
    process: subprocess.Popen
    reader: threading.Thread


def node_command(node: NodeSpec, params_file: Path, python: str = sys.executable) -> list[str]:
    # -P: don't put the working directory on sys.path. Run from the repo root, `python -m` would
    # otherwise make the top-level folders importable as `datasets`, `sim`, ... (shadowing Hugging
    # Face `datasets`, which lerobot imports); ros2 launch's console scripts don't do that either.
    return [python, "-P", "-m", node.module, *ros_args(node, params_file)]


class GraphRunner:
    """Starts, supervises and stops the processes of one graph."""

    def __init__(
        self,
        spec: GraphSpec,
        env: dict[str, str] | None = None,
        out: TextIO | None = None,
        color: bool | None = None,
    ) -> None:
        self.spec = spec
        self.env = ros_environment(env)
        self.out = out if out is not None else sys.stdout
        self.color = self.out.isatty() if color is None else color
        self.nodes: list[RunningNode] = []
        self._tmp = tempfile.TemporaryDirectory(prefix=f"twinloop-{spec.name}-")
        self._print_lock = threading.Lock()
        self._stop = threading.Event()

    def _emit(self, prefix: str, line: str) -> None:
        with self._print_lock:
            self.out.write(f"{prefix} {line}" if line.endswith("\n") else f"{prefix} {line}\n")
            self.out.flush()

    def _pump(self, prefix: str, stream) -> None:
        for line in iter(stream.readline, ""):
            self._emit(prefix, line)
        stream.close()

    def start(self) -> None:
        width = max(len(n.name) for n in self.spec.nodes)
        for i, node in enumerate(self.spec.nodes):
            params_file = Path(self._tmp.name) / f"{node.name}.params.yaml"
            params_file.write_text(params_yaml(node))
            proc = subprocess.Popen(
                node_command(node, params_file),
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                bufsize=1,
                start_new_session=True,  # Ctrl-C reaches the runner only; it stops nodes in order
            )
            label = f"[{node.name:<{width}}]"
            if self.color:
                label = f"\033[{_COLORS[i % len(_COLORS)]}m{label}\033[0m"
            reader = threading.Thread(target=self._pump, args=(label, proc.stdout), daemon=True)
            reader.start()
            self.nodes.append(RunningNode(node, proc, reader))

    def wait(self, timeout: float | None = None, poll: float = 0.1) -> int:
        """Block until a required node exits, a stop is requested, or timeout; return the exit status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        reported: set[str] = set()
        while not self._stop.is_set():
            for running in self.nodes:
                code = running.process.poll()
                if code is None or running.spec.name in reported:
                    continue
                reported.add(running.spec.name)
                running.reader.join(timeout=2.0)
                if running.spec.required:
                    verdict = "finished" if code == 0 else f"died (exit {code})"
                    self._emit("[twinloop]", f"required node '{running.spec.name}' {verdict}; stopping graph")
                    return code
                self._emit("[twinloop]", f"node '{running.spec.name}' exited with {code}")
            if deadline is not None and time.monotonic() > deadline:
                return 124
            time.sleep(poll)
        return 130

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        """SIGINT every node (rclpy shuts down cleanly), wait up to each node's `stop_timeout`, then SIGTERM,
        then SIGKILL the stragglers."""
        alive = [n for n in self.nodes if n.process.poll() is None]
        for running in alive:
            with contextlib.suppress(ProcessLookupError):
                running.process.send_signal(signal.SIGINT)
        start = time.monotonic()
        for running in alive:
            deadline = start + running.spec.stop_timeout
            with contextlib.suppress(subprocess.TimeoutExpired):
                running.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        for sig in (signal.SIGTERM, signal.SIGKILL):
            alive = [n for n in self.nodes if n.process.poll() is None]
            if not alive:
                break
            for running in alive:
                self._emit("[twinloop]", f"node '{running.spec.name}' did not stop in time: {sig.name}")
                with contextlib.suppress(ProcessLookupError):
                    running.process.send_signal(sig)
            deadline = time.monotonic() + 2.0
            for running in alive:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    running.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        for running in self.nodes:
            running.reader.join(timeout=1.0)
        self._tmp.cleanup()

    def __enter__(self) -> GraphRunner:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def run_graph(spec: GraphSpec, timeout: float | None = None) -> int:
    """Run a graph in the foreground until a required node exits, Ctrl-C, SIGTERM or timeout."""
    runner = GraphRunner(spec)
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def _on_signal(signum, _frame) -> None:
        runner._emit("[twinloop]", f"{signal.Signals(signum).name}: stopping graph")
        runner.request_stop()

    for sig in previous:
        signal.signal(sig, _on_signal)
    try:
        runner.start()
        return runner.wait(timeout=timeout)
    finally:
        runner.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
