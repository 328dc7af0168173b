"""Smoke tests of `twinloop bench`: the benchmarks run with tiny sizes and write the documented schema.

No timing is asserted anywhere (speed targets live in the bench output, never in tests).
"""

from __future__ import annotations

import json

import pytest

from twinloop.benchmarks import image_transport, memcpy, run, twin_node_speed, twin_speed
from twinloop.benchmarks.common import ENTRY_KEYS


def _check_entries(entries: list[dict]) -> None:
    run.check_schema(entries)
    for e in entries:
        assert tuple(e)[:5] == ENTRY_KEYS
        if e["ratio"] is not None:
            assert e["baseline"] is not None


def test_memcpy_and_twin_write_json_and_markdown(tmp_path):
    entries = memcpy.bench_memcpy(repeats=20) + twin_speed.bench_twin(seconds=0.02, render_seconds=0.02)
    run.resolve_ratios(entries)
    json_path, md_path = run.write_outputs(entries, tmp_path / "out")
    loaded = json.loads(json_path.read_text())
    _check_entries(loaded)
    names = {e["name"] for e in loaded}
    assert {
        "memcpy.640x480_rgb8.p50_ms",
        "twin.step.physics_steps_per_s",
        "twin.bare_mj_step.steps_per_s",
    } <= names
    assert set(names) <= set(run.all_names())  # the runner's name list is what the benchmarks produce
    by_name = {e["name"]: e for e in loaded}
    step = by_name["twin.step.physics_steps_per_s"]
    assert step["baseline"] == "twin.bare_mj_step.steps_per_s" and step["value"] > 0 and step["ratio"] > 0
    assert [name for name, _ in twin_speed.names()] == [e["name"] for e in loaded[2:]]
    # the default render quality is compared with the MJCF's full meshes
    fast = by_name["twin.two_cameras_128x128_at_10hz.real_time_factor"]
    assert fast["baseline"] == "twin.two_cameras_128x128_at_10hz.full.real_time_factor" and fast["ratio"] > 0
    assert by_name["twin.control_tick.physics_steps_per_s"]["value"] > 0
    md = md_path.read_text()
    assert "| name | value | unit | baseline | ratio |" in md
    assert all(name in md for name in names)


def test_main_only_filters_and_rejects_unknown_prefix(tmp_path, capsys):
    assert run.main(["memcpy.640x480_rgb8.p50"], str(tmp_path)) == 0
    loaded = json.loads((tmp_path / "bench.json").read_text())
    assert [e["name"] for e in loaded] == ["memcpy.640x480_rgb8.p50_ms"]
    assert "memcpy.640x480_rgb8.p50_ms" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no benchmark matches"):
        run.main(["no_such_bench"], str(tmp_path))


def test_ratios_need_a_measured_nonzero_baseline():
    entries = [
        {"name": "a", "value": 2.0, "unit": "ms", "baseline": None, "ratio": None},
        {"name": "b", "value": 3.0, "unit": "ms", "baseline": "a", "ratio": None},
        {"name": "c", "value": 3.0, "unit": "ms", "baseline": "not_run", "ratio": None},
        {"name": "z", "value": 0.0, "unit": "%", "baseline": None, "ratio": None},
        {"name": "d", "value": 5.0, "unit": "%", "baseline": "z", "ratio": None},
    ]
    run.resolve_ratios(entries)
    assert [(e["baseline"], e["ratio"]) for e in entries] == [
        (None, None),
        ("a", 1.5),
        (None, None),
        (None, None),
        ("z", None),
    ]


def test_transport_summary_counts_losses_and_duplicates():
    config = image_transport.CaseConfig("default", "best_effort", count=10)
    result = {
        "sub": {"frames": [[0, 1.0], [1, 2.0], [1, 9.0], [4, 3.0]], "bad_size": 0},
        "pub": {"publish_p50_ms": 0.1},
        "netns": True,
    }
    entries = {e["name"]: e for e in image_transport.summarize(config, result)}
    base = "image_transport.default.best_effort"
    assert entries[f"{base}.lost_pct"]["value"] == pytest.approx(70.0)
    assert entries[f"{base}.p50_ms"]["value"] == pytest.approx(2.0)
    assert entries[f"{base}.p50_ms"]["baseline"] == "image_transport.profile.best_effort.p50_ms"
    assert "1 duplicates" in entries[f"{base}.p50_ms"]["notes"]
    nothing = {"sub": {"frames": [], "bad_size": 0}, "pub": {"publish_p50_ms": 0.1}, "netns": True}
    values = [e["value"] for e in image_transport.summarize(config, nothing)]
    assert values == [None, None, 100.0]


def test_twin_node_summaries_follow_the_declared_names():
    window = [100.0, 105.0]
    cpu = [[100.0, 1.0], [105.0, 4.0]]
    lockstep = twin_node_speed.NodeCase("lockstep", seconds=5.0, camera_rate=10.0, cameras=())
    probe = {"window": window, "rtf": 30.0, "sim_seconds": 150.0, "wall_seconds": 5.0, "ticks": 15000}
    (row,) = twin_node_speed.summarize(lockstep, {"probe": probe, "twin_cpu": cpu, "netns": True})
    assert [row["name"]] == [n for n, _ in twin_node_speed.lockstep_names()]
    assert row["value"] == pytest.approx(30.0 / 0.002) and row["baseline"] == "twin.bare_mj_step.steps_per_s"
    assert "0.60 cores" in row["notes"]

    realtime = twin_node_speed.NodeCase("realtime", seconds=5.0)
    rates = {"front": {"frames": 150, "bad": 0, "hz": 30.0, "latency_p50_ms": 9.0, "latency_p99_ms": 20.0}}
    probe = {"window": window, "rtf": 0.99, "wall_seconds": 5.0, "lag_s": 0.01, "rates": rates}
    rows = twin_node_speed.summarize(realtime, {"probe": probe, "twin_cpu": [], "netns": False})
    assert [r["name"] for r in rows] == [n for n, _ in twin_node_speed.realtime_names()]
    assert [r["value"] for r in rows] == [30.0, None, 0.99]  # no wrist frames: no rate
    _check_entries(rows)
    with pytest.raises(ValueError, match="mode"):
        twin_node_speed.NodeCase("fast").check()


@pytest.mark.ros
def test_twin_node_benchmarks_run_end_to_end():
    (row,) = twin_node_speed.bench_lockstep(seconds=1.0)
    assert row["value"] > 0, row
    rows = twin_node_speed.bench_realtime(seconds=1.0, width=64, height=48, camera_rate=10.0)
    _check_entries(rows)
    assert all(r["value"] > 0 for r in rows), rows


def test_bad_transport_config_is_rejected():
    with pytest.raises(ValueError, match="transport"):
        image_transport.CaseConfig("carrier_pigeon", "best_effort").check()


@pytest.mark.ros
def test_image_transport_pair_runs_end_to_end():
    entries = image_transport.bench_image_transport("profile", "best_effort", count=10)
    _check_entries(entries)
    lost = entries[2]
    assert lost["name"] == "image_transport.profile.best_effort.lost_pct"
    assert 0.0 <= lost["value"] <= 100.0


def test_a_failing_benchmark_is_reported_and_sets_the_exit_status(tmp_path, monkeypatch):
    def broken() -> list[dict]:
        raise image_transport.BenchError("subscriber not discovered")

    monkeypatch.setattr(run, "_cases", lambda: [run.Case(("broken.x_ms",), ("ms",), broken)])
    assert run.main(None, str(tmp_path)) == 1
    (row,) = json.loads((tmp_path / "bench.json").read_text())
    assert row["name"] == "broken.x_ms" and row["value"] is None and "not discovered" in row["error"]
    assert "ERROR: subscriber not discovered" in (tmp_path / "bench.md").read_text()


def test_lerobot_encode_benchmark_runs_on_a_short_episode(monkeypatch):
    """The real pipeline (twin renders -> staged episode -> LeRobot commits), shrunk to a few frames."""
    from twinloop.benchmarks import lerobot_encode

    monkeypatch.setattr(lerobot_encode, "SECONDS", 0.2)
    monkeypatch.setattr(lerobot_encode, "WIDTH", 64)
    monkeypatch.setattr(lerobot_encode, "HEIGHT", 48)
    rows = lerobot_encode.bench_lerobot_encode()
    assert [r["name"] for r in rows] == [name for name, _ in lerobot_encode.names()]
    assert all(r["value"] > 0 for r in rows)
