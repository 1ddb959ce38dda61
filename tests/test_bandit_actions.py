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


def test_more_distinct_actions_than_slots_in_one_event_is_rejected_in_one_batch_taken_row_by_row():
    lrn = learners.create("squarecb", n_features=3, max_actions=2, seed=0)
    with pytest.raises(InvalidInput, match="max_actions"):
        lrn.process(batch([["a"], ["a", "b", "c"]]))
    assert lrn.snapshot()["tick"] == 0 and not lrn._table.slot  # rejected whole, before any change
    out = lrn.process(batch([["a", "b"], ["c"]]))  # 'c' evicts 'a', as it would in a batch of its own
    assert sorted(lrn._table.slot) == ["b", "c"] and list(out["indptr"]) == [0, 2, 3]
    assert list(out["chosen_action"][1:]) == ["c"]


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
    # One event offering more ids than slots: the batch is rejected whole, nothing is evicted.
    lrn = learners.create("squarecb", n_features=3, max_actions=3, seed=0)
    learn(lrn, ["a", "b"])
    before = lrn.snapshot()
    with pytest.raises(InvalidInput, match="max_actions"):
        lrn.process(batch([["c", "d"], ["a", "e", "f", "g"]]))
    assert_same_snapshot(before, lrn.snapshot())
    # Row by row: 'c' takes the free slot, 'd' evicts 'a' (least recently used, not offered with
    # it), then 'a' comes back and evicts 'b'.
    lrn.process(batch([["c", "d"], ["a"]]))
    assert sorted(lrn._table.slot) == ["a", "c", "d"] and lrn.metrics()["action_evictions"] == 2
    # The shared oracle without action features: new ids are not added first.
    lrn = learners.create("squarecb-shared", n_features=3, n_action_features=2, seed=0)
    before = lrn.snapshot()
    with pytest.raises(InvalidInput, match="action_features"):
        lrn.process(batch([["a", "b"]]))
    with pytest.raises(InvalidInput, match="action_features"):
        lrn.process({**batch([["a", "b"]]), "action_features": np.zeros((3, 2))})
    assert_same_snapshot(before, lrn.snapshot())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_action_table_is_the_same_however_the_rows_were_batched(seed):
    """Recency counts rows: a stream of decisions and rewards over actions that come and go (a
    full table, evictions) leaves every snapshot array, the clock and last-used ticks included,
    bit-equal whether it came in batches or one row at a time (a replay cut elsewhere equals
    live operation)."""
    rng = np.random.default_rng(seed)
    pool = [f"acq-{i}" for i in range(7)]
    steps = []
    for r in range(30):
        n = int(rng.integers(1, 6))
        if r % 3 == 2:
            steps.append(("learn", [str(rng.choice(pool[:5])) for _ in range(n)]))
        else:  # each batch within what a full table of 4 can take
            offered = list(rng.choice(pool, size=3, replace=False))
            steps.append(("process", [sorted(rng.choice(offered, size=int(rng.integers(1, 3)), replace=False))
                                      for _ in range(n)]))
    whole = learners.create("squarecb", n_features=3, max_actions=4, seed=5)
    rows = learners.create("squarecb", n_features=3, max_actions=4, seed=5)
    for i, (kind, items) in enumerate(steps):
        if kind == "learn":
            learn(whole, items, seed=i)
            full = np.random.default_rng(i)
            X, rew = full.normal(size=(len(items), 3)), full.random(len(items))
            for j, a in enumerate(items):
                rows.learn({"event_key": np.array([j + 1], dtype=np.uint64), "X": X[j:j + 1], "action": [a],
                            "reward": rew[j:j + 1], "prob": np.full(1, 0.5)})
        else:
            b = batch(items, seed=i)
            got = whole.process(b)
            for j, ids in enumerate(items):
                one = {"event_key": b["event_key"][j:j + 1], "X": b["X"][j:j + 1],
                       "action_indptr": np.array([0, len(ids)], dtype=np.int64), "action_ids": list(ids)}
                lo = b["action_indptr"][j]
                np.testing.assert_allclose(rows.process(one)["probs"], got["probs"][lo:lo + len(ids)], rtol=1e-12)
    assert whole.metrics()["action_evictions"] > 0
    assert_same_snapshot(whole.snapshot(), rows.snapshot())
