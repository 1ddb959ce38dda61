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


def assert_same_snapshot(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k, strict=True)


def test_a_rejected_batch_leaves_table_and_models_unchanged():
    # Strict actions: an unknown id after known ones must not mark the known ones as used.
    lrn = learners.create("squarecb", n_features=3, actions=("a", "b"), strict_actions=True, seed=0)
    learn(lrn, ["a", "b"])
    before = lrn.snapshot()
    with pytest.raises(InvalidInput, match="unknown action id 'z'"):
        lrn.process(batch([["a", "b"], ["z"]]))
    with pytest.raises(InvalidInput, match="unknown action id 'z'"):
        learn(lrn, ["b", "z"])
    assert_same_snapshot(before, lrn.snapshot())
    # Too many new ids for the slots: none of them is added, nothing is evicted.
    lrn = learners.create("squarecb", n_features=3, max_actions=3, seed=0)
    learn(lrn, ["a", "b"])
    before = lrn.snapshot()
    with pytest.raises(InvalidInput, match="max_actions"):
        lrn.process(batch([["c", "d"], ["a", "e"]]))
    with pytest.raises(InvalidInput, match="max_actions"):
        learn(lrn, ["c", "d", "e", "f"])
    assert_same_snapshot(before, lrn.snapshot())
    lrn.process(batch([["c", "d"], ["a"]]))  # two new ids fit: one free slot, 'b' evicted
    assert sorted(lrn._table.slot) == ["a", "c", "d"] and lrn.metrics()["action_evictions"] == 1
    # The shared oracle without action features: new ids are not added first.
    lrn = learners.create("squarecb-shared", n_features=3, n_action_features=2, seed=0)
    before = lrn.snapshot()
    with pytest.raises(InvalidInput, match="action_features"):
        lrn.process(batch([["a", "b"]]))
    with pytest.raises(InvalidInput, match="action_features"):
        lrn.process({**batch([["a", "b"]]), "action_features": np.zeros((3, 2))})
    assert_same_snapshot(before, lrn.snapshot())
