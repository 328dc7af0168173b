"""Process entry helpers shared by every node: init, spin, and a clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node


def _shutdown(node: Node, executor: MultiThreadedExecutor) -> None:
    close = getattr(node, "close", None)  # nodes with worker threads stop them before destruction
    if close is not None:
        close()
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()


def spin_node(make_node: Callable[[], Node], args: list[str] | None = None) -> int:
    """Run a callback-driven node until shutdown. Returns the process exit status."""
    rclpy.init(args=sys.argv if args is None else args)
    node = make_node()
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    try:
        with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
            executor.spin()
    finally:
        _shutdown(node, executor)
    return 0


def run_with_loop(
    make_node: Callable[[], Node], loop: Callable[[Node], int], args: list[str] | None = None
) -> int:
    """Spin callbacks in a background thread while `loop(node)` runs in the main thread.

    For nodes whose main work is a loop of their own (the twin's physics, the evaluator's episodes).
    """
    rclpy.init(args=sys.argv if args is None else args)
    node = make_node()
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    spinner = threading.Thread(target=_spin_quietly, args=(executor,), daemon=True)
    spinner.start()
    code = 0
    try:
        code = loop(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        code = 0
    finally:
        _shutdown(node, executor)
    return code


def _spin_quietly(executor: MultiThreadedExecutor) -> None:
    with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
        executor.spin()
