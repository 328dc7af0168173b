"""Sampling streams onto the recording timeline, and the quality figures it keeps."""

from __future__ import annotations

import numpy as np
import pytest

from twinloop.datasets.timeline import Timeline


def test_newest_message_at_or_before_each_tick():
    line = Timeline(fps=10)
    line.add_stream("cam", max_skew=0.15)
    for k in range(20):
        line.add("cam", 0.1 * k + 0.03, k)  # frames 30 ms after each tick
    values, missing = line.sample(0.5)
    assert values["cam"] == 4 and not missing  # stamped 0.43: the newest at or before 0.5
    values, _ = line.sample(0.53)
    assert values["cam"] == 5  # exactly at the tick counts


def test_a_stale_stream_is_a_drop_and_a_repeated_frame_a_duplicate():
    line = Timeline(fps=10)
    line.add_stream("cam", max_skew=0.25)
    line.add_stream("joints", max_skew=0.05)
    line.add("cam", 0.0, "a")
    line.add("joints", 0.09, "j")
    values, missing = line.sample(0.1)
    assert values == {"cam": "a", "joints": "j"} and not missing
    values, missing = line.sample(0.2)  # no new camera frame: still within 0.25 s -> duplicate
    assert values.get("cam") == "a" and missing == ["joints"]  # joints 110 ms old: dropped
    _, missing = line.sample(0.3)  # camera 300 ms old: dropped too
    assert set(missing) == {"cam", "joints"}
    q = line.quality(duration=0.3)
    assert (q["cam"]["duplicated"], q["cam"]["dropped"]) == (1, 1)
    assert q["joints"]["dropped"] == 2


def test_optional_streams_never_block_a_tick_and_out_of_order_messages_are_counted():
    line = Timeline(fps=30)
    line.add_stream("joints", max_skew=0.05)
    line.add_stream("command", max_skew=10.0, required=False)
    line.add("joints", 1.0, 1)
    line.add("joints", 0.99, 0)  # older than one already received: ignored
    values, missing = line.sample(1.0)
    assert values == {"joints": 1} and not missing
    assert line.quality(1.0)["joints"]["out_of_order"] == 1


def test_ready_once_every_required_stream_has_passed_the_tick():
    line = Timeline(fps=10)
    line.add_stream("cam", max_skew=0.15)
    line.add_stream("joints", max_skew=0.05)
    line.add_stream("command", max_skew=10.0, required=False)
    line.add("cam", 0.0, 0)
    line.add("joints", 0.12, 0)
    assert not line.ready(0.1)  # the camera frame for 0.1 may still come
    line.add("cam", 0.1, 1)
    assert line.ready(0.1) and not line.ready(0.2)


def test_rate_skew_and_drift_figures():
    line = Timeline(fps=10)
    line.add_stream("cam", max_skew=1.0)
    for k in range(50):  # messages arrive as the ticks are taken, as in the recorder
        line.add("cam", k / 10, 2 * k)  # 20 Hz, stamps exactly on time
        line.add("cam", k / 10 + 0.05, 2 * k + 1)
        line.sample(k / 10 + 0.01 * k / 50)  # ticks drifting 0.2 ms per tick away from the stamps
    q = line.quality(duration=5.0)["cam"]
    assert q["rate_hz"] == pytest.approx(20.0)
    assert q["skew_max_ms"] == pytest.approx(9.8, abs=0.1)
    assert q["skew_drift"] == pytest.approx(0.002, rel=0.1)  # s of skew per s of episode


def test_bad_rate_is_refused():
    with pytest.raises(ValueError, match="fps"):
        Timeline(fps=0)
    assert np.isfinite(Timeline(fps=30).fps)
