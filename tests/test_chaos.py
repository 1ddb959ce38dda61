"""The chaos harness of benchmarks/chaos.py at a small scale (issue 16): three daemons in one group
on six partitions, keyed events with rewards, daemons killed with SIGKILL and restarted; nothing
acknowledged is lost, every duplicate is marked ``replay``, every decision and every key's learned
state equal an uninterrupted run's."""

from __future__ import annotations

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def harness():
    spec = importlib.util.spec_from_file_location("eddy_chaos_harness", os.path.join(ROOT, "benchmarks", "chaos.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.kafka
@pytest.mark.timeout(600)
def test_daemons_killed_at_random_lose_nothing_and_learn_exactly(tmp_path):
    row = harness().run(str(tmp_path), kills=3, daemons=3, partitions=6, rate=60.0, min_gap=3.0, max_gap=6.0,
                        seed=7, log=lambda *_: None)
    assert row["kills"] == 3 and row["events"] > 500 and row["keys"] > 20, row
    assert row["exit_codes"] == [0, 0, 0] and row["failed_sends"] == 0, row
    assert row["lost_events"] == 0 and row["undecided_events"] == 0, row
    assert row["unmarked_duplicates"] == 0 and row["wrong_decisions"] == 0, row
    assert row["state_differences"] == 0, row
    # a replay mark is an upper bound: at most the batch in flight of each partition a victim owned
    assert row["false_replays"] <= row["kills"] * row["partitions"] * 64, row
    if row["kills_with_partitions"]:
        assert 0 < row["rebalance_first_decision_s_median"] <= row["rebalance_first_decision_s_max"] < 120, row
