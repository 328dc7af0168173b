"""Process entry helpers shared by every node: init, spin, and a clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

import rclpy
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node


def _shutdown(node: Node, executor: Executor, spinner: threading.Thread | None = None) -> None:
    close = getattr(node, "close", None)  # nodes with worker threads stop them before destruction
    if close is not None:
        close()
    executor.shutdown(timeout_sec=5.0)
    if spinner is not None:
        spinner.join(timeout=5.0)  # a spin thread still inside rcl at exit aborts the process
    node.destroy_node()
    rclpy.try_shutdown()


def _construct(make_node: Callable[[], Node]) -> Node | int:
    """Build the node; bad configuration ends the process with a one-line error, not a traceback."""
    try:
        return make_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        rclpy.try_shutdown()
        return 0
    except (ValueError, FileNotFoundError, InvalidParameterTypeException) as exc:
        # InvalidParameterTypeException: e.g. `camera_rate:=15` (an integer) for a double parameter
        print(f"error: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 2


def _start(
    make_node: Callable[[], Node], args: list[str] | None, threads: int = 1
) -> tuple[Node, Executor] | int:
    """rclpy.init, build the node (or an exit status) and an executor holding it."""
    rclpy.init(args=sys.argv if args is None else args)
    node = _construct(make_node)
    if isinstance(node, int):
        return node
    executor = SingleThreadedExecutor() if threads == 1 else MultiThreadedExecutor(num_threads=threads)
    executor.add_node(node)
    return node, executor


def spin_node(make_node: Callable[[], Node], args: list[str] | None = None, threads: int = 1) -> int:
    """Run a callback-driven node until shutdown. Returns the process exit status. `threads` > 1: callbacks
    of different callback groups run concurrently (a service that waits for the node's own timer)."""
    run = _start(make_node, args, threads)
    if isinstance(run, int):
        return run
    node, executor = run
    try:
        _spin_quietly(executor, node)
    finally:
        _shutdown(node, executor)
    return 0


# rclpy raises this from Subscription.take_message when it cannot build the Python message (seen under
# heavy load and at shutdown, cf. ros/joint_state_publisher#117); one lost message must not end the node
_UNTAKEABLE = "Unable to convert call argument"


def run_with_loop(
    make_node: Callable[[], Node], loop: Callable[[Node], int], args: list[str] | None = None
) -> int:
    """Spin callbacks in a background thread while `loop(node)` runs in the main thread.

    For nodes whose main work is a loop of their own (the twin's physics, the evaluator's episodes).
    """
    run = _start(make_node, args)
    if isinstance(run, int):
        return run
    node, executor = run
    spinner = threading.Thread(target=_spin_quietly, args=(executor, node), daemon=True)
    spinner.start()
    code = 0
    try:
        code = loop(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        code = 0
    except Exception:
        if node.context.ok():
            raise
        code = 0  # a publish or wait interrupted by the signal handler's shutdown: a normal exit
    finally:
        _shutdown(node, executor, spinner)
    return code


def _spin_quietly(executor: Executor, node: Node) -> None:
    """Spin until shutdown; a message rclpy cannot take is dropped with a warning, not fatal."""
    while True:
        try:
            executor.spin()
            return
        except (KeyboardInterrupt, ExternalShutdownException):
            return
        except Exception as exc:
            # a wait interrupted by the signal handler's shutdown raises RCLError from rcl_wait; that is
            # a normal exit, anything else while the context is still valid is a real error
            if not executor.context.ok():
                return
            if not (isinstance(exc, RuntimeError) and _UNTAKEABLE in str(exc)):
                raise
            node.get_logger().warning(f"dropped one incoming message rclpy could not take: {exc}")
