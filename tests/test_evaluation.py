"""Evaluation bookkeeping: Wilson intervals, summaries, the RESULT line and the summary file."""

from __future__ import annotations

import json

import pytest

from twinloop.sim.evaluation import EpisodeRecord, result_line, summarize, wilson_interval


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [
        (10, 10, (0.7225, 1.0)),
        (0, 10, (0.0, 0.2775)),
        (5, 10, (0.2366, 0.7634)),
        (1, 1, (0.2065, 1.0)),
        (45, 50, (0.7864, 0.9565)),
    ],
)
def test_wilson_interval_known_values(successes, n, expected):
    low, high = wilson_interval(successes, n)
    assert (round(low, 4), round(high, 4)) == expected


def test_wilson_interval_is_symmetric_and_contains_the_estimate():
    for n in (1, 7, 30, 200):
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0
            mirror = wilson_interval(n - k, n)
            assert mirror == pytest.approx((1.0 - high, 1.0 - low), abs=1e-12)


def test_wilson_interval_narrows_with_more_episodes_and_wider_z():
    assert wilson_interval(50, 100)[1] - wilson_interval(50, 100)[0] < 0.5 * (
        wilson_interval(5, 10)[1] - wilson_interval(5, 10)[0]
    )
    low95, high95 = wilson_interval(5, 10)
    low99, high99 = wilson_interval(5, 10, z=2.5758)
    assert low99 < low95 and high99 > high95


def test_wilson_interval_without_episodes_knows_nothing():
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("successes", "n"), [(11, 10), (-1, 10), (1, 0), (0, -1)])
def test_wilson_interval_rejects_invalid_counts(successes, n):
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(successes, n)


def _episodes() -> list[EpisodeRecord]:
    return [
        EpisodeRecord(index=0, seed=0, success=True, duration_s=1.0),
        EpisodeRecord(index=1, seed=1, success=False, duration_s=8.0),
        EpisodeRecord(index=2, seed=2, success=True, duration_s=2.5),
        EpisodeRecord(index=3, seed=3, success=True, duration_s=0.5),
    ]


def test_summarize_fields():
    summary = summarize(_episodes(), task="reach_cube", robot="so101", policy="scripted_reach")
    assert summary["task"] == "reach_cube" and summary["robot"] == "so101"
    assert summary["policy"] == "scripted_reach"
    assert summary["episodes"] == 4
    assert summary["successes"] == 3
    assert summary["success_rate"] == pytest.approx(0.75)
    assert summary["ci95"] == pytest.approx(list(wilson_interval(3, 4)))
    assert summary["mean_episode_s"] == pytest.approx(3.0)
    assert summary["per_episode"][1] == {"index": 1, "seed": 1, "success": False, "duration_s": 8.0}
    assert [e["seed"] for e in summary["per_episode"]] == [0, 1, 2, 3]


def test_summarize_without_episodes():
    summary = summarize([])
    assert (summary["episodes"], summary["successes"], summary["success_rate"]) == (0, 0, 0.0)
    assert summary["ci95"] == [0.0, 1.0]
    assert summary["mean_episode_s"] == 0.0 and summary["per_episode"] == []


def test_write_summary_writes_json_atomically(tmp_path):
    from twinloop.sim.evaluation import write_summary

    summary = summarize(_episodes(), task="reach_cube")
    out = tmp_path / "nested" / "eval"
    path = write_summary(summary, out)
    assert path == out / "summary.json"
    assert json.loads(path.read_text()) == summary
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]  # no .tmp left behind

    # overwriting replaces the file as a whole
    smaller = summarize(_episodes()[:1])
    write_summary(smaller, out)
    assert json.loads(path.read_text()) == smaller
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]

    # a summary that cannot be written leaves the previous file intact
    with pytest.raises(TypeError):
        write_summary({**smaller, "bad": object()}, out)
    assert json.loads(path.read_text()) == smaller


def test_result_line_contains_the_numbers():
    summary = summarize(_episodes(), task="reach_cube", robot="so101", policy="scripted_reach")
    line = result_line(summary)
    low, high = summary["ci95"]
    assert line.startswith("RESULT task=reach_cube robot=so101 policy=scripted_reach")
    assert "3/4" in line and "75%" in line
    assert f"{low:.0%}-{high:.0%}" in line
    assert "3.00 s" in line
    assert "\n" not in line
