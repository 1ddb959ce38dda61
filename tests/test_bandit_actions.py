"""Actions that come and go (acquirers in payment routing): slots, eviction, reset."""

from __future__ import annotations

import numpy as np
import pytest

import learners
from learners.base import InvalidInput


def batch(ids_per_event, d=3, seed=0):
    rng = np.random.default_rng(seed)
    n = len(ids_per_event)
    return {"event_key": np.arange(1, n + 1, dtype=np.uint64), "X": rng.normal(size=(n, d)),
            "action_indptr": np.concatenate([[0], np.cumsum([len(a) for a in ids_per_event])]).astype(np.int64),
            "action_ids": [a for ids in ids_per_event for a in ids]}


def learn(lrn, actions, d=3, seed=1):
    rng = np.random.default_rng(seed)
    n = len(actions)
    lrn.learn({"event_key": np.arange(1, n + 1, dtype=np.uint64), "X": rng.normal(size=(n, d)),
               "action": actions, "reward": rng.random(n), "prob": np.full(n, 0.5)})


def test_a_new_action_evicts_the_least_recently_used_one_not_one_in_the_same_batch():
    lrn = learners.create("squarecb", n_features=3, max_actions=2, seed=0)
    learn(lrn, ["a", "b", "a"])
    learn(lrn, ["b"])  # now 'a' is the least recently used
    theta_b = lrn.snapshot()["theta"][lrn._table.slot["b"]].copy()
    # 'a' was used longest ago, but this batch offers it: 'c' must evict 'b' instead.
    out = lrn.process(batch([["a", "c"]]))
    assert sorted(lrn._table.slot) == ["a", "c"] and lrn.metrics()["action_evictions"] == 1
    assert out["probs"].shape == (2,) and np.isclose(out["probs"].sum(), 1.0)
    # The new action starts from a fresh model; 'b' coming back starts fresh too.
    assert np.allclose(lrn.snapshot()["theta"][lrn._table.slot["c"]], 0.0)
    learn(lrn, ["c"])
    lrn.process(batch([["b"]]))
    assert not np.allclose(theta_b, 0.0)
    assert np.allclose(lrn.snapshot()["theta"][lrn._table.slot["b"]], 0.0)


def test_more_distinct_actions_than_slots_in_one_batch_is_rejected():
    lrn = learners.create("squarecb", n_features=3, max_actions=2, seed=0)
    with pytest.raises(InvalidInput, match="max_actions"):
        lrn.process(batch([["a", "b"], ["c"]]))
