"""The hashed sparse bandit learner: its settings, importance weights, and a pipeline that feeds it
sparse rows with declared crosses (decisions, replay equality, checkpoints, bad settings)."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

import learners
from daemon import config
from daemon.checkpoint import CheckpointStore
from daemon.engine import Engine
from learners import InvalidInput
from learners._hashing import FeatureHasher
from learners.bandit.hashed import HashedBanditLearner

from .conftest import make_records, pipeline_cfg
from .feeding import feed

WIDE = {"learner": "squarecb-hashed", "n_features": 2**18, "shadow_learners": ["epsilon-greedy-hashed"],
        "crosses": [["f0", "f1"], ["f2", "bias"]]}


def row(idx, val):
    return {"x_indptr": np.array([0, len(idx)]), "x_index": np.array(idx), "x_value": np.array(val, dtype=float)}


def test_importance_weights_change_the_step_and_can_be_switched_off():
    ev = {"event_key": np.array([5], np.uint64), **row([1, 40], [1.0, 0.5])}
    fb = {**ev, "action": ["a"], "reward": np.array([1.0])}
    states = {}
    for iw, p in ((True, 1.0), (True, 0.1), (False, 0.1), (False, 1.0)):
        hb = HashedBanditLearner(n_features=64, actions=("a", "b"), importance_weights=iw)
        hb.learn({**fb, "prob": np.array([p])})
        states[iw, p] = hb.snapshot()["W"]
    assert not np.array_equal(states[True, 1.0], states[True, 0.1])  # 1/p enters the update
    np.testing.assert_array_equal(states[False, 0.1], states[False, 1.0])  # ...and only when asked
    np.testing.assert_array_equal(states[False, 1.0], states[True, 1.0])
    hb = HashedBanditLearner(n_features=64, actions=("a", "b"))
    with pytest.raises(InvalidInput, match="prob"):
        hb.learn(fb)
    HashedBanditLearner(n_features=64, actions=("a", "b"), importance_weights=False).learn(fb)


@pytest.mark.parametrize("bad", [{"n_features": 100}, {"n_features": 2**23}, {"policy": "linucb"}, {"eta": 0.0}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(InvalidInput):
        HashedBanditLearner(**{"actions": ("a",), **bad})


def test_the_table_reaches_2_to_the_22_and_costs_the_nonzeros():
    hb = HashedBanditLearner(n_features=2**22, actions=("a", "b", "c"), seed=2)
    ev = {"event_key": np.arange(1, 4, dtype=np.uint64), "x_indptr": np.array([0, 2, 3, 3]),
          "x_index": np.array([2**22 - 1, 7, 123456]), "x_value": np.array([1.0, -2.0, 0.5])}
    out = hb.process(ev)
    hb.learn({**ev, "action": out["chosen_action"], "reward": np.array([1.0, 0.0, 1.0]), "prob": out["prob"]})
    # Each learned row touched its features and its action's constant: at most 2 + 1 + 0 + 3 rows.
    assert 0 < int(np.count_nonzero(hb.snapshot()["W"][0])) <= 6


def test_squarecb_hashed_learns_a_sparse_linear_task():
    """Rewards from a hidden per-action weight on 2 of 50 one-hot features: the learner's average
    reward in the second half beats uniform choice clearly, and its propensities stay > 0."""
    rng = np.random.default_rng(4)
    acts = tuple(f"a{k}" for k in range(5))
    truth = rng.random((5, 50))
    hb = learners.create("squarecb-hashed", n_features=2**12, actions=acts, seed=1)
    total, best, n, probs = 0.0, 0.0, 0, []
    for step in range(80):
        m = 50
        cols = np.stack([rng.integers(0, 25, m), rng.integers(25, 50, m)], axis=1)
        ev = {"event_key": rng.integers(0, 2**63, m).astype(np.uint64), "x_indptr": np.arange(0, 2 * m + 1, 2),
              "x_index": cols.ravel() * 41, "x_value": np.ones(2 * m)}
        out = hb.process(ev)
        k = np.array([acts.index(a) for a in out["chosen_action"]])
        p = (truth[k, cols[:, 0]] + truth[k, cols[:, 1]]) / 2
        r = (rng.random(m) < p).astype(float)
        if step >= 40:
            total += r.sum()
            best += ((truth[:, cols[:, 0]] + truth[:, cols[:, 1]]) / 2).max(axis=0).sum()
            n += m
        probs.append(out["prob"])
        hb.learn({**ev, "action": out["chosen_action"], "reward": r, "prob": out["prob"]})
    best /= n
    uniform = truth.mean()
    assert total / n > uniform + 0.5 * (best - uniform), (total / n, uniform, best)
    assert np.concatenate(probs).min() > 0


def test_crosses_add_the_declared_products_before_hashing():
    h = FeatureHasher(2**18, crosses=[("origin", "dest"), ("origin", "hour", "weekday")], cross_only=["hour"])
    x = h.expand({"origin=JFK": 1.0, "dest=LAX": 2.0, "dest=SFO": 0.5, "hour=7": 1.0, "weekday=2": 3.0})
    assert x == {"origin=JFK": 1.0, "dest=LAX": 2.0, "dest=SFO": 0.5, "weekday=2": 3.0,
                 "origin=JFK^dest=LAX": 2.0, "origin=JFK^dest=SFO": 0.5, "origin=JFK^hour=7^weekday=2": 3.0}
    cols, vals = h.sparse({"origin=JFK": 1.0, "dest=LAX": 2.0})
    assert len(cols) == 3 and sorted(map(abs, vals)) == [1.0, 2.0, 2.0]
    with pytest.raises(TypeError):
        h.sparse({"origin=JFK": "x", "dest=LAX": 1.0})
    with pytest.raises(ValueError, match="two or more"):
        FeatureHasher(8, crosses=[("origin",)])


def core_for(**over) -> Engine:
    cfg = config.load_dict({"pipelines": [pipeline_cfg(**{**WIDE, **over})]}, env=False)
    return Engine(cfg.pipelines[0])


def decisions(outs):
    return [orjson.loads(o.value) for o in outs if o.kind == "decision"]


def test_a_hashed_pipeline_decides_learns_and_replays_identically():
    recs = make_records(400)
    ref = decisions(feed(core_for(learn_every_events=16), recs, 1))
    assert len(ref) == 400
    for b in (7, 1000):
        assert decisions(feed(core_for(learn_every_events=16), recs, b)) == ref
    assert len({round(d["prob"], 6) for d in ref}) > 10  # it learned: propensities moved off uniform


def test_a_hashed_pipeline_checkpoint_restore_continue_equals_never_stopping(tmp_path):
    recs = make_records(400)
    ref = decisions(feed(core_for(learn_every_events=64), recs, 50))
    first = core_for(learn_every_events=64)
    before = decisions(feed(first, recs[:233], 50))
    store = CheckpointStore(str(tmp_path))
    store.save(*first.snapshot())
    second = core_for(learn_every_events=64)
    second.restore(*store.latest())
    assert before + decisions(feed(second, recs[233:], 50)) == ref


def test_crosses_change_a_pipelines_decisions():
    recs = make_records(300)
    plain = decisions(feed(core_for(crosses=[], learn_every_events=8), recs, 50))
    crossed = decisions(feed(core_for(learn_every_events=8), recs, 50))
    assert [d["probs"] for d in plain] != [d["probs"] for d in crossed]


@pytest.mark.parametrize("over, match", [
    ({"shadow_learners": ["squarecb"]}, "another form"),
    ({"crosses": [["f0"]]}, "two or more"),
    ({"crosses": ["f0"]}, "two or more"),
    ({"n_features": 1000}, "power of two"),
])
def test_config_check_refuses_what_cannot_run(over, match):
    with pytest.raises(config.ConfigError, match=match):
        config.load_dict({"pipelines": [pipeline_cfg(**{**WIDE, **over})]}, env=False)


def test_bad_features_are_dead_lettered_with_their_reason():
    good = json.loads(make_records(1)[0])
    bad = {**good, "id": "bad", "features": {"f0": 1e308, "f1": 1e308}}  # their cross overflows to inf
    outs = feed(core_for(), [json.dumps(good).encode(), json.dumps(bad).encode()])
    kinds = [(o.kind, o.key) for o in outs]
    assert ("decision", b"e0") in kinds
    dead = [o for o in outs if o.kind == "dlq"]
    assert len(dead) == 1 and b"non_finite" in dead[0].value


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crossing_kernel_matches_plain_crosses(seed):
    """Random runs: fields absent, repeated (several features of one field), triple crosses,
    cross_only fields, numeric values; a run at once equals the plain reference row by row."""
    from . import naive

    rng = np.random.default_rng(seed)
    crosses = [("a", "b"), ("b", "c", "a"), ("c", "num")]
    rows = []
    for _ in range(60):
        f: dict = {}
        for field, vocab in (("a", 3), ("b", 4), ("c", 2)):
            for v in rng.choice(vocab, size=rng.integers(0, 3), replace=False):
                f[f"{field}={v}"] = float(rng.choice([1.0, 0.5, -2.0]))
        if rng.random() < 0.7:
            f["num"] = float(rng.normal())
        f["bias"] = 1.0
        rows.append(f)
    h = FeatureHasher(2**10, cache_size=7, crosses=crosses, cross_only=["c"])  # (a small cache: evictions)
    cols, vals, lens = h.sparse_many(rows)
    at = 0
    for f, m in zip(rows, lens, strict=True):
        rc, rv = naive.crossed_features(f, crosses, {"c"}, 2**10)
        assert cols[at:at + m].tolist() == rc
        np.testing.assert_allclose(vals[at:at + m], rv, rtol=1e-15)
        one_c, one_v = h.sparse(f)  # (one event alone: the same columns and values)
        assert one_c == rc
        np.testing.assert_allclose(one_v, rv, rtol=1e-15)
        at += m
    assert at == len(cols)


def test_the_sidecar_path_decides_on_a_2_to_the_22_table_without_a_dense_row():
    """/decide's path (Engine.submit) on a hashed pipeline of 2^22 weights: decisions, and a cross
    that overflows is refused with its reason (checked on the event's values, never a 2^22 row)."""
    from daemon.records import BadRecord

    core = core_for(n_features=2**22, shadow_learners=[])
    ev = {"time": 1.0, "features": {"f0": 1.0, "f1": 2.0, "f2": 0.5, "bias": 1.0}, "actions": ["a", "b", "c"]}
    out = core.submit([{**ev, "id": f"h{i}"} for i in range(5)])
    assert len(out) == 5 and all(o["action"] in ("a", "b", "c") for o in out)
    with pytest.raises(BadRecord, match="inf"):
        core.submit([{**ev, "id": "bad", "features": {"f0": 1e308, "f1": 1e308}}])
