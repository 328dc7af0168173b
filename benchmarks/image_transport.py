"""ROS 2 image transport: a 640x480 rgb8 camera stream between two processes, isolated from the network.

Process layout of one case (all started by this module, all cleaned up by it):

    bench runner (run_case)
      unshare -n sh -c 'ip link set lo up && exec python -m twinloop.benchmarks.image_transport pair ...'
        pair: starts the two ROS processes below inside the fresh network namespace and waits for them
          sub: subscribes, timestamps every frame on arrival, writes a JSON result line to its stdout file
          pub: waits until the subscriber is matched, settles, publishes COUNT frames at RATE Hz

Latency of a frame = time.time() when the subscriber's Python callback starts minus header.stamp (taken
with time.time() just before the message is built and published); both clocks are the same machine's.
The frame's sequence number travels in header.frame_id, so losses and duplicates are counted exactly.
Every process writes its stdout/stderr to files in a temporary folder (no pipes to fill up); results are
one line starting with RESULT_MARKER.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from twinloop.benchmarks.common import entry, percentile, progress

PREFIX = "image_transport"
TOPIC = "bench/image_raw"
WIDTH, HEIGHT, ENCODING = 640, 480, "rgb8"
RESULT_MARKER = "TWINLOOP_BENCH_RESULT "
# glibc malloc settings that stop the allocator from returning (and later re-faulting) the ~1 MB buffers
# each frame needs on both sides; fixed values also switch off glibc's dynamic mmap threshold.
MALLOC_TUNED = {"MALLOC_MMAP_THRESHOLD_": "134217728", "MALLOC_TRIM_THRESHOLD_": "134217728"}


@dataclass(frozen=True)
class Transport:
    description: str
    use_profile: bool  # FASTRTPS_DEFAULT_PROFILES_FILE = the project's profile (else Fast DDS defaults)
    extra_env: tuple[tuple[str, str], ...] = ()


TRANSPORTS = {
    "profile": Transport("project Fast DDS profile", True),
    "default": Transport("Fast DDS defaults", False),
    "profile_malloc_tuned": Transport(
        "project Fast DDS profile + " + " ".join(f"{k}={v}" for k, v in MALLOC_TUNED.items()),
        True,
        tuple(MALLOC_TUNED.items()),
    ),
}
# reliability name in the entry -> (twinloop_ros.qos profile, description)
RELIABILITIES = {
    "best_effort": ("SENSOR_DATA", "SENSOR_DATA (best effort, keep last 5)"),
    "reliable": ("COMMANDS", "COMMANDS (reliable, keep last 10)"),
}
# Environment that changes Fast DDS's transports; cleared so "default" really means Fast DDS defaults.
_DDS_ENV = (
    "FASTRTPS_DEFAULT_PROFILES_FILE",
    "FASTDDS_DEFAULT_PROFILES_FILE",
    "FASTDDS_BUILTIN_TRANSPORTS",
    "RMW_FASTRTPS_USE_QOS_FROM_XML",
    "RMW_FASTRTPS_PUBLICATION_MODE",
    "ROS_LOCALHOST_ONLY",
    "ROS_STATIC_PEERS",
    "ROS_DISABLE_LOANED_MESSAGES",
)


class BenchError(RuntimeError):
    """A benchmark could not produce a measurement (the message says why)."""


@dataclass(frozen=True)
class CaseConfig:
    transport: str  # a key of TRANSPORTS
    reliability: str  # "best_effort" | "reliable"
    count: int = 300
    rate: float = 30.0
    discovery_timeout: float = 20.0  # s for the publisher to see the subscriber
    settle: float = 1.0  # s between matching and the first frame

    @property
    def name(self) -> str:
        return f"{PREFIX}.{self.transport}.{self.reliability}"

    def check(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {tuple(TRANSPORTS)}, got {self.transport!r}")
        if self.reliability not in RELIABILITIES:
            raise ValueError(f"reliability must be one of {tuple(RELIABILITIES)}, got {self.reliability!r}")
        if self.count < 1 or self.rate <= 0:
            raise ValueError(f"count must be >= 1 and rate > 0, got {self.count}, {self.rate}")

    @property
    def timeout(self) -> float:
        """Wall-clock limit for the whole case (process start, discovery, streaming, shutdown)."""
        return self.count / self.rate + self.discovery_timeout + self.settle + 40.0


def case_names(transport: str, reliability: str) -> list[str]:
    base = f"{PREFIX}.{transport}.{reliability}"
    return [f"{base}.p50_ms", f"{base}.p99_ms", f"{base}.lost_pct"]


def _baseline(transport: str, reliability: str, metric: str) -> str | None:
    """What each entry is compared with (see README.md)."""
    if transport != "profile":  # default: the gain of the project's profile; others: their change to it
        return f"{PREFIX}.profile.{reliability}.{metric}"
    if reliability == "reliable":  # the cost of reliability under the project's profile
        return f"{PREFIX}.profile.best_effort.{metric}"
    if metric in ("p50_ms", "p99_ms"):  # the floor: one memcpy of the same frame
        return f"memcpy.640x480_rgb8.{metric}"
    return None


# ----------------------------------------------------------------------------------------------------
# bench-runner side
# ----------------------------------------------------------------------------------------------------
def case_environment(transport: str, domain_id: int, log_dir: Path) -> dict[str, str]:
    """The environment of the ROS processes of one case."""
    from twinloop.graph_spec import ros_environment

    env = dict(os.environ)
    for key in _DDS_ENV + tuple(MALLOC_TUNED):
        env.pop(key, None)
    if TRANSPORTS[transport].use_profile:
        # the project's profile; the malloc settings only where the case names them (extra_env)
        env = ros_environment(env, malloc_tuning=False)
        profile = Path(env["FASTRTPS_DEFAULT_PROFILES_FILE"])
        if not profile.is_file():
            raise BenchError(f"the project's Fast DDS profile is missing: {profile}")
    else:
        env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
        env["PYTHONUNBUFFERED"] = "1"
    env.update(TRANSPORTS[transport].extra_env)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_LOG_DIR"] = str(log_dir)
    return env


@cache
def netns_available() -> tuple[bool, str]:
    """Whether `unshare -n` with a loopback works here (root, or user namespaces), and why not."""
    try:
        proc = subprocess.run(
            ["unshare", "-n", "sh", "-c", "ip link set lo up"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    if proc.returncode != 0:
        return False, (proc.stderr.strip() or f"exit status {proc.returncode}").splitlines()[-1]
    return True, ""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    return None


def run_isolated(
    inner: list[str], env: dict, workdir: Path, stem: str, label: str, timeout: float, use_netns: bool
) -> dict[str, Any]:
    """Run `inner` (a process group that prints one JSON result line) in its own network namespace when
    it can, with stdout/stderr in `workdir/<stem>.out|err`; a clear BenchError when it fails or hangs."""
    if use_netns:
        cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', *inner]
    else:
        progress(f"  warning: no network namespace ({netns_available()[1]}); isolated by LOCALHOST + domain")
        cmd = inner
    out_path, err_path = workdir / f"{stem}.out", workdir / f"{stem}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True,
        )  # fmt: skip
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc, group=True)
            raise BenchError(
                f"{label}: no result within {timeout:.0f} s; last output:\n" + (_tail(err_path) or "(none)")
            ) from None
        except BaseException:
            _stop(proc, group=True)
            raise
    result = _read_result(out_path)
    if proc.returncode != 0 or result is None:
        raise BenchError(
            f"{label}: benchmark processes failed (exit status {proc.returncode}):\n"
            f"{_tail(err_path) or _tail(out_path) or '(no output)'}"
        )
    return result


def _stop(proc: subprocess.Popen, group: bool) -> None:
    """Terminate a process we started (and, with `group`, the session it leads), then kill it."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_case(config: CaseConfig) -> dict[str, Any]:
    """Run one publisher/subscriber pair and return the raw results ({"pub": ..., "sub": ..., ...})."""
    config.check()
    use_netns, why_not = netns_available()
    with tempfile.TemporaryDirectory(prefix="twinloop-bench-") as tmp:
        workdir = Path(tmp)  # also the cwd: no stray DEFAULT_FASTRTPS_PROFILES.xml gets picked up
        domain_id = random.SystemRandom().randint(1, 100)
        env = case_environment(config.transport, domain_id, workdir / "ros_log")
        args = {**config.__dict__, "workdir": str(workdir)}
        inner = [sys.executable, "-m", "twinloop.benchmarks.image_transport", "pair", json.dumps(args)]
        result = run_isolated(inner, env, workdir, "pair", config.name, config.timeout, use_netns)
    result["netns"] = use_netns
    result["domain_id"] = domain_id
    return result


def summarize(config: CaseConfig, result: dict[str, Any]) -> list[dict]:
    """The bench.json entries of one case from its raw results."""
    sub, pub = result["sub"], result["pub"]
    by_seq: dict[int, float] = {}
    duplicates = 0
    for seq, latency_ms in sub["frames"]:
        if seq in by_seq:
            duplicates += 1
        else:
            by_seq[seq] = latency_ms
    received = sum(1 for seq in by_seq if 0 <= seq < config.count)
    latencies = list(by_seq.values())
    lost_pct = 100.0 * (config.count - received) / config.count
    qos_desc = RELIABILITIES[config.reliability][1]
    transport_desc = TRANSPORTS[config.transport].description
    notes = (
        f"{received}/{config.count} frames at {config.rate:g} Hz, {transport_desc}, QoS {qos_desc}, "
        f"{'netns' if result['netns'] else 'no netns'}; publish() p50 {pub['publish_p50_ms']:.2f} ms"
    )
    if duplicates:
        notes += f"; {duplicates} duplicates"
    if sub.get("bad_size"):
        notes += f"; {sub['bad_size']} frames with a wrong payload size"
    if not latencies:
        notes += "; no frame arrived, so no latency"
    t, r = config.transport, config.reliability
    return [
        entry(
            f"{config.name}.p50_ms", percentile(latencies, 50), "ms", _baseline(t, r, "p50_ms"), notes=notes
        ),
        entry(
            f"{config.name}.p99_ms", percentile(latencies, 99), "ms", _baseline(t, r, "p99_ms"), notes=notes
        ),
        entry(f"{config.name}.lost_pct", lost_pct, "%", _baseline(t, r, "lost_pct"), notes=notes),
    ]


def bench_image_transport(
    transport: str, reliability: str, count: int = 300, rate: float = 30.0
) -> list[dict]:
    config = CaseConfig(transport=transport, reliability=reliability, count=count, rate=rate)
    config.check()
    progress(
        f"{config.name}: {count} frames {WIDTH}x{HEIGHT} {ENCODING} at {rate:g} Hz between two processes, "
        f"{TRANSPORTS[transport].description}, "
        f"QoS {RELIABILITIES[reliability][1]} (~{count / rate + 5:.0f} s)"
    )
    result = run_case(config)
    entries = summarize(config, result)
    progress(
        "  -> p50 {} ms, p99 {} ms, lost {:.1f}%".format(
            *(f"{e['value']:.2f}" if e["value"] is not None else "n/a" for e in entries[:2]),
            entries[2]["value"],
        )
    )
    return entries


# ----------------------------------------------------------------------------------------------------
# processes inside the namespace
# ----------------------------------------------------------------------------------------------------
def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(RESULT_MARKER + json.dumps(payload) + "\n")
    sys.stdout.flush()


def _qos(reliability: str):
    from twinloop_ros import qos

    return getattr(qos, RELIABILITIES[reliability][0])


def _role_pair(cfg: dict[str, Any]) -> int:
    workdir = Path(cfg["workdir"])
    files: dict[str, tuple[Path, Path]] = {}
    procs: dict[str, subprocess.Popen] = {}

    def spawn(role: str, stdin) -> subprocess.Popen:
        out, err = workdir / f"{role}.out", workdir / f"{role}.err"
        files[role] = (out, err)
        with open(out, "wb") as fout, open(err, "wb") as ferr:
            return subprocess.Popen(
                [sys.executable, "-m", "twinloop.benchmarks.image_transport", role, json.dumps(cfg)],
                cwd=workdir, stdin=stdin, stdout=fout, stderr=ferr,
            )  # fmt: skip

    def failure(role: str, what: str) -> int:
        out, err = files[role]
        detail = _tail(err) or _tail(out) or "(no output)"
        print(f"{role}: {what}\n{detail}", file=sys.stderr, flush=True)
        return 1

    stream_s = cfg["count"] / cfg["rate"]
    try:
        procs["sub"] = spawn("sub", subprocess.PIPE)
        procs["pub"] = spawn("pub", subprocess.DEVNULL)
        pub, sub = procs["pub"], procs["sub"]
        try:
            pub.wait(timeout=stream_s + cfg["discovery_timeout"] + cfg["settle"] + 20.0)
        except subprocess.TimeoutExpired:
            return failure("pub", "publisher did not finish in time")
        if pub.returncode != 0:
            return failure("pub", f"publisher exited with status {pub.returncode}")
        try:  # the subscriber exits by itself once every frame arrived
            sub.wait(timeout=1.5)
        except subprocess.TimeoutExpired:
            sub.stdin.close()  # EOF on its stdin: stop waiting for frames that were lost
            try:
                sub.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                return failure("sub", "subscriber did not stop after the stream ended")
        if sub.returncode != 0:
            return failure("sub", f"subscriber exited with status {sub.returncode}")
        pub_result, sub_result = _read_result(files["pub"][0]), _read_result(files["sub"][0])
        if pub_result is None or sub_result is None:
            return failure("sub" if sub_result is None else "pub", "no result line")
        _emit({"pub": pub_result, "sub": sub_result})
        return 0
    finally:
        for proc in procs.values():
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
            _stop(proc, group=False)


def _role_sub(cfg: dict[str, Any]) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    count = int(cfg["count"])
    expected_size = WIDTH * HEIGHT * 3
    frames: list[tuple[int, float]] = []
    seqs: set[int] = set()
    bad_size = 0

    def on_image(msg: Image) -> None:
        nonlocal bad_size
        now = time.time()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        seq = int(msg.header.frame_id)
        frames.append((seq, (now - stamp) * 1e3))
        seqs.add(seq)
        if len(msg.data) != expected_size:
            bad_size += 1

    stop = threading.Event()

    def watch_stdin() -> None:
        # raw reads on fd 0 (a buffered sys.stdin reader would hold a lock at interpreter shutdown);
        # EOF means the pair process says the stream is over
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    rclpy.init()
    try:
        node = rclpy.create_node("bench_image_sub")
        node.create_subscription(Image, TOPIC, on_image, _qos(cfg["reliability"]))
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        deadline = time.monotonic() + count / cfg["rate"] + cfg["discovery_timeout"] + cfg["settle"] + 30.0
        while not stop.is_set() and len(seqs) < count and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
    _emit({"frames": frames, "bad_size": bad_size})
    return 0


def _role_pub(cfg: dict[str, Any]) -> int:
    import numpy as np
    import rclpy
    from rclpy.duration import Duration
    from sensor_msgs.msg import Image

    from twinloop_ros.conversions import numpy_to_image

    count, period = int(cfg["count"]), 1.0 / float(cfg["rate"])
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(4)]
    rclpy.init()
    try:
        node = rclpy.create_node("bench_image_pub")
        pub = node.create_publisher(Image, TOPIC, _qos(cfg["reliability"]))
        t0 = time.monotonic()
        while pub.get_subscription_count() < 1:
            if time.monotonic() - t0 > cfg["discovery_timeout"]:
                print(
                    f"no subscriber matched on {TOPIC} within {cfg['discovery_timeout']:g} s "
                    f"(ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID')})",
                    file=sys.stderr,
                )
                return 3
            time.sleep(0.02)
        discovery_s = time.monotonic() - t0
        time.sleep(cfg["settle"])  # let the reader side finish matching the writer too

        publish_s = np.empty(count)
        late = 0
        start = time.monotonic()
        for i in range(count):
            delay = start + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -period:
                late += 1
            msg = numpy_to_image(images[i % len(images)], ENCODING, stamp=time.time(), frame_id=str(i))
            t = time.perf_counter()
            pub.publish(msg)
            publish_s[i] = time.perf_counter() - t
        stream_s = time.monotonic() - start
        if cfg["reliability"] == "reliable":
            acked = pub.wait_for_all_acked(Duration(seconds=5))
        else:
            acked = None
            time.sleep(0.3)  # keep the writer alive while the last frames are in flight
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
    _emit(
        {
            "discovery_s": discovery_s,
            "stream_s": stream_s,
            "publish_p50_ms": float(np.percentile(publish_s, 50) * 1e3),
            "publish_max_ms": float(publish_s.max() * 1e3),
            "late_frames": late,
            "all_acked": acked,
        }
    )
    return 0


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="internal: processes of the image transport benchmark")
    parser.add_argument("role", choices=("pair", "pub", "sub"))
    parser.add_argument("config", help="JSON object (CaseConfig fields plus workdir)")
    args = parser.parse_args(argv)
    cfg = json.loads(args.config)
    role = {"pair": _role_pair, "pub": _role_pub, "sub": _role_sub}[args.role]
    return role(cfg)


if __name__ == "__main__":
    sys.exit(_main())
