"""Exact merging of ridge bandits across replicas (learners/bandit/merge.py): deltas add up to the
model of all the rows; an average of the replicas' models does not."""

from __future__ import annotations

import numpy as np
import pytest

from learners.bandit import BanditLearner
from learners.bandit.merge import RidgeMerge
from learners.base import InvalidInput

from . import naive


def rows(seed: int, n: int, d: int, actions: list[str]):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    acts = [actions[i] for i in rng.integers(0, len(actions), n)]
    truth = {a: rng.normal(size=d) for a in actions}
    reward = np.array([X[i] @ truth[a] for i, a in enumerate(acts)]) + 0.1 * rng.normal(size=n)
    return X, acts, reward


def learn(bl: BanditLearner, X, acts, reward, AF=None) -> None:
    batch = {"event_key": np.arange(len(acts), dtype=np.uint64), "X": X, "action": acts, "reward": reward}
    if AF is not None:
        batch["action_features"] = AF
    bl.learn(batch)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_replicas_that_exchange_deltas_hold_the_model_of_all_rows(seed):
    d, lam = 5, 2.0
    actions = ["a", "b", "c", "d"]
    X, acts, reward = rows(seed, 900, d, actions)
    owner = np.random.default_rng(seed + 10).integers(0, 3, len(acts))  # each row's replica (its partition)
    # replica 0 knows two actions at first (and drops its first block's rows of the others): c and d
    # come to it through the other replicas' deltas
    reps = [BanditLearner(n_features=d, actions=("a", "b") if r == 0 else tuple(actions), lam=lam) for r in range(3)]
    merges = [RidgeMerge(r) for r in reps]
    for block in np.array_split(np.arange(len(acts)), 7):  # merge points
        for r in range(3):
            mine = block[owner[block] == r]
            if r == 0:
                mine = mine[[acts[i] in ("a", "b") for i in mine]] if block[0] == 0 else mine
            if len(mine):
                learn(reps[r], X[mine], [acts[i] for i in mine], reward[mine])
        deltas = [m.delta() for m in merges]
        for r, m in enumerate(merges):
            for q, dq in enumerate(deltas):
                if q != r:
                    m.merge(dq)
    learned = sorted({int(i) for i in range(len(acts))} - set(
        int(i) for i in np.array_split(np.arange(len(acts)), 7)[0]
        if owner[i] == 0 and acts[i] not in ("a", "b")))
    for a in actions:  # the batch ridge over every row learned, whoever learned it
        idx = [i for i in learned if acts[i] == a]
        A_inv, theta = naive.ridge(X[idx], reward[idx], lam)
        for r in reps:
            s = r._table.slot[a]
            assert np.allclose(r._theta[s], theta, rtol=1e-8, atol=1e-10)
            assert np.allclose(r._A_inv[s], A_inv, rtol=1e-8, atol=1e-12)
    assert all(r.learned_events == len(learned) for r in reps)  # (SquareCB's γ counts every replica's events)
    ev = {"event_key": np.arange(20, dtype=np.uint64), "X": X[:20], "action_indptr": np.arange(0, 81, 4),
          "action_ids": actions * 20}
    outs = [r.process(ev) for r in reps]
    for o in outs[1:]:  # the replicas now decide alike
        assert np.allclose(o["probs"], outs[0]["probs"]) and o["chosen_action"].tolist() == outs[0]["chosen_action"].tolist()


def test_averaging_the_replicas_models_is_not_the_model_of_all_rows():
    d, lam = 4, 1.0
    X, acts, reward = rows(5, 400, d, ["a"])
    X[:200] *= 3.0  # the two replicas see differently spread contexts
    fresh = [BanditLearner(n_features=d, actions=("a",), lam=lam) for _ in range(2)]
    ms = [RidgeMerge(f) for f in fresh]
    learn(fresh[0], X[:200], acts[:200], reward[:200])
    learn(fresh[1], X[200:], acts[200:], reward[200:])
    _, theta = naive.ridge(X, reward, lam)
    average = (fresh[0]._theta[0] + fresh[1]._theta[0]) / 2
    d0, d1 = ms[0].delta(), ms[1].delta()
    ms[0].merge(d1)
    ms[1].merge(d0)
    assert np.allclose(fresh[0]._theta[0], theta) and np.allclose(fresh[1]._theta[0], theta)
    assert not np.allclose(average, theta, atol=1e-3)


def test_the_shared_model_merges_too_and_a_delta_is_not_shipped_twice():
    d, k = 3, 2
    rng = np.random.default_rng(3)
    reps = [BanditLearner(n_features=d, oracle="ridge-shared", n_action_features=k, actions=("a", "b"), lam=1.5)
            for _ in range(2)]
    ms = [RidgeMerge(r) for r in reps]
    X, AF, y = rng.normal(size=(300, d)), rng.normal(size=(300, k)), rng.normal(size=300)
    acts = ["a"] * 300
    learn(reps[0], X[:150], acts[:150], y[:150], AF[:150])
    learn(reps[1], X[150:], acts[150:], y[150:], AF[150:])
    d0, d1 = ms[0].delta(), ms[1].delta()
    ms[0].merge(d1)
    ms[1].merge(d0)
    assert np.allclose(reps[0]._theta, reps[1]._theta) and np.allclose(reps[0]._A_inv, reps[1]._A_inv)
    Z = np.array([np.kron(X[i], np.concatenate([[1.0], AF[i]])) for i in range(300)])
    _, theta = naive.ridge(Z, y, 1.5)
    assert np.allclose(reps[0]._theta, theta, rtol=1e-8, atol=1e-10)
    again = ms[0].delta()  # nothing learned since: what was merged is not this replica's to ship
    assert int(again["dt"]) == 0 and np.abs(again["dA"]).max(initial=0) < 1e-9 and \
        np.abs(again["db"]).max(initial=0) < 1e-9  # (rounding only: the inversions)


def test_the_base_survives_a_checkpoint_and_bad_deltas_or_learners_are_refused():
    d = 3
    X, acts, reward = rows(7, 100, d, ["a", "b"])
    a = BanditLearner(n_features=d, actions=("a", "b"))
    ma = RidgeMerge(a)
    learn(a, X[:50], acts[:50], reward[:50])
    ma.delta()
    learn(a, X[50:], acts[50:], reward[50:])
    b = BanditLearner(n_features=d, actions=("a", "b"))
    b.restore(a.snapshot())
    mb = RidgeMerge(b)
    mb.restore(ma.snapshot())
    da, db_ = ma.delta(), mb.delta()
    assert da["ids"].tolist() == db_["ids"].tolist() and np.allclose(da["dA"], db_["dA"]) and int(db_["dt"]) == 50
    with pytest.raises(InvalidInput, match="dimension"):
        ma.merge({"ids": np.array(["a"]), "dA": np.zeros((1, 2, 2)), "db": np.zeros((1, 2)), "dt": np.array(1)})
    with pytest.raises(InvalidInput, match="NaN"):
        ma.merge({"ids": np.array(["a"]), "dA": np.full((1, d, d), np.nan), "db": np.zeros((1, d)),
                  "dt": np.array(1)})
    with pytest.raises(InvalidInput, match="ridge"):
        RidgeMerge(BanditLearner(n_features=d, actions=("a",), oracle="neural"))
    strict = RidgeMerge(BanditLearner(n_features=d, actions=("a",), strict_actions=True))
    with pytest.raises(InvalidInput, match="unknown action"):
        strict.merge({"ids": np.array(["zz"]), "dA": np.zeros((1, d, d)), "db": np.zeros((1, d)), "dt": np.array(0)})


def test_an_action_evicted_and_back_ships_only_what_its_new_slot_learned_and_a_refused_merge_changes_nothing():
    d = 3
    X, acts, reward = rows(9, 60, d, ["a", "b", "c"])
    bl = BanditLearner(n_features=d, max_actions=2)
    m = RidgeMerge(bl)
    learn(bl, X[:10], ["a"] * 10, reward[:10])
    m.delta()  # a's ten rows shipped
    learn(bl, X[10:20], ["b"] * 10, reward[10:20])
    learn(bl, X[20:30], ["c"] * 10, reward[20:30])  # evicts a
    learn(bl, X[30:40], ["a"] * 10, reward[30:40])  # a again, in a reset slot (evicts b)
    out = m.delta()
    got = dict(zip(out["ids"].tolist(), zip(out["dA"], out["db"], strict=True), strict=True))
    assert np.allclose(got["a"][0], X[30:40].T @ X[30:40]) and np.allclose(got["a"][1], X[30:40].T @ reward[30:40])
    strict = BanditLearner(n_features=d, actions=("a", "b"), strict_actions=True)
    ms = RidgeMerge(strict)
    before = {k: v.copy() for k, v in strict.snapshot().items()}
    bad = {"ids": np.array(["a", "zz"]), "dA": np.ones((2, d, d)), "db": np.ones((2, d)), "dt": np.array(2)}
    with pytest.raises(InvalidInput, match="unknown action"):
        ms.merge(bad)
    assert all(np.array_equal(before[k], v) for k, v in strict.snapshot().items())
