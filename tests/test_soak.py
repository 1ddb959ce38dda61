"""The soak of benchmarks/soak.py for two minutes (issue 16; the benchmark runs 30): the daemon as
its own process under 2,000 events/s with rewards keeps its memory flat once its capped buffers
are full, its lag flat, and no error counter rises."""

from __future__ import annotations

import pytest

from .test_chaos import benchmark


@pytest.mark.slow
@pytest.mark.kafka
@pytest.mark.timeout(600)
def test_two_minutes_at_2000_events_per_second_with_rewards(tmp_path):
    # caps small enough to be full within the first minute (the benchmark keeps the defaults)
    row = benchmark("soak").run(str(tmp_path), duration_s=120.0, rate=2000.0, window_from_s=60.0, sample_s=5.0,
                        overrides={"dedup_cap": 20_000, "join_buffer_cap": 20_000}, log=lambda *_: None)
    assert row["samples"] >= 10, row
    assert row["decisions_per_s"] >= 0.9 * row["events_per_s_sent"] >= 0.9 * 1800, row
    assert row["rss_growth_pct"] <= 10.0, row
    assert row["lag_max"] < 2 * 2000 and row["backlog_max"] < 2 * 2000, row  # under two seconds behind
    assert all(v == 0 for v in row["error_counters_increase"].values()), row
    # both caps hold per input partition (six here)
    assert row["dedup_start_end"][1] <= 6 * 20_000 and row["join_buffer_start_end"][1] <= 6 * 20_000, row
