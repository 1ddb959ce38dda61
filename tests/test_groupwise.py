"""Groupwise regret: kernels against the obvious references, the hindsight comparator, group rules,
river compatibility, and the paper's claim (lower regret than one ridge on every group) on data
with group structure."""

from __future__ import annotations

import numpy as np
import pytest

import learners
from learners.groupwise import GroupwiseRegressor
from learners.groupwise import _kernels as K
from learners.groupwise.rules import RuleError, parse
from learners.linear.ridge import OnlineRidge

from . import naive


def data(seed, n=400, d=5, groups=4):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[:, 0] = 1.0
    G = (rng.random((n, groups)) < 0.35).astype(np.int64)
    y = X @ rng.normal(size=d) + G @ rng.normal(size=groups) * 2 + 0.3 * rng.normal(size=n)
    return X, G, y


def row_by_row(m, X, G, y, keys):
    """Each row predicted (both rules), then learned: the two predictions per row."""
    mix, rand = [], []
    for i in range(len(y)):
        out = m.process({"X": X[i:i + 1], "G": G[i:i + 1], "event_key": keys[i:i + 1]})
        mix.append(out["prediction_mixture"][0])
        rand.append(out["prediction_randomized"][0])
        m.learn({"X": X[i:i + 1], "G": G[i:i + 1], "y": y[i:i + 1]})
    return mix, rand


@pytest.mark.parametrize("R", [-5.0, -1.0, -0.5, 0.0, 0.3, 1.0, 2.5, 40.0])
@pytest.mark.parametrize("C", [0.0, 1.0, 7.5, 300.0])
def test_adanormalhedge_weight_matches_the_formula(R, C):
    w = naive.anh_weight(R, C)
    lw = K.anh_log_weight(R, C)
    if w == 0:
        assert lw == -np.inf
    else:
        assert np.isclose(np.exp(lw), w, rtol=1e-12)


@pytest.mark.parametrize("base", ["ridge", "logistic"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("anchor", [True, False])
def test_predict_then_learn_matches_the_reference(base, seed, anchor):
    X, G, y = data(seed)
    if base == "logistic":
        y = (y > np.median(y)).astype(float)
    keys = np.random.default_rng(seed).integers(0, 2**63, len(y)).astype(np.uint64)
    m = GroupwiseRegressor(n_features=5, groups=["g0", "g1", "g2", "g3"], lam=0.7, base=base, seed=seed,
                           anchor=anchor)
    mix, rand = row_by_row(m, X, G, y, keys)
    member = np.concatenate([np.ones((len(y), 1), dtype=bool), G.astype(bool)], axis=1)
    rmix, rrand, R, C, loss, _ = naive.groupwise(X, member, y, 0.7, base=base, seed=seed, keys=keys, anchor=anchor)
    assert np.allclose(mix, rmix, atol=1e-9) and np.allclose(rand, rrand, atol=1e-9)
    assert np.allclose(m._R, R, atol=1e-8) and np.allclose(m._C, C, atol=1e-8)
    assert np.allclose(m._loss, loss, atol=1e-8)
    # Learning the rows in one batch is the same as one by one.
    b = GroupwiseRegressor(n_features=5, groups=["g0", "g1", "g2", "g3"], lam=0.7, base=base, seed=seed,
                           anchor=anchor)
    b.learn({"X": X, "G": G, "y": y})
    for name in ("theta", "R", "C", "loss", "bsum", "yy", "n"):
        assert np.allclose(getattr(b, f"_{name}"), getattr(m, f"_{name}"), atol=1e-9), name


@pytest.mark.parametrize("base", ["ridge", "logistic"])
def test_hindsight_comparator_and_regret_match_lstsq(base):
    X, G, y = data(3, n=300)
    if base == "logistic":
        y = (y > 0).astype(float)
    m = GroupwiseRegressor(n_features=5, groups=["g0", "g1", "g2", "g3"], lam=1.0, base=base)
    m.learn({"X": X, "G": G, "y": y})
    member = np.concatenate([np.ones((len(y), 1), dtype=bool), G.astype(bool)], axis=1)
    for g, r in enumerate(m.group_report()):
        Xg, yg = X[member[:, g]], y[member[:, g]]
        theta = np.linalg.lstsq(Xg, yg, rcond=None)[0]
        best = float(((Xg @ theta - yg) ** 2).sum())
        assert r["events"] == len(yg)
        assert r["hindsight_loss"] == pytest.approx(best, rel=1e-6, abs=1e-6)
        assert r["regret"] == pytest.approx(r["loss"] - best, rel=1e-6, abs=1e-6)
    assert m.metrics()["group/g2/events"] == member[:, 3].sum()


def test_lower_regret_than_one_ridge_on_every_group_with_group_structure():
    """The paper's claim, empirically: when groups differ in their linear relationships (four
    regions with their own slopes, and an intersecting group defined by a feature), the groupwise
    mixture has lower regret than a single online ridge (which sees the group indicators as
    features too) on every group."""
    rng = np.random.default_rng(11)
    n, d, k = 6000, 4, 5
    X = np.concatenate([np.ones((n, 1)), rng.normal(size=(n, d - 1))], axis=1)
    region = rng.integers(0, 4, n)
    G = np.zeros((n, k), dtype=np.int64)
    G[np.arange(n), region] = 1
    G[:, 4] = X[:, 1] > 0.5  # intersects every region
    slopes = rng.normal(size=(4, d))
    y = (X * slopes[region]).sum(axis=1) + 0.5 * rng.normal(size=n)
    m = GroupwiseRegressor(n_features=d, groups=[f"g{j}" for j in range(k)], lam=1.0)
    single = OnlineRidge(d + k, lam=1.0)
    Z = np.concatenate([X, G], axis=1)
    sq = np.zeros(n)
    for i in range(n):
        sq[i] = (single.predict(Z[i:i + 1])[0] - y[i]) ** 2
        single.learn(Z[i:i + 1], y[i:i + 1])
    m.learn({"X": X, "G": G, "y": y})
    member = np.concatenate([np.ones((n, 1), dtype=bool), G.astype(bool)], axis=1)
    for g, r in enumerate(m.group_report()):
        base_regret = sq[member[:, g]].sum() - r["hindsight_loss"]
        assert r["regret"] < base_regret, r["group"]


def test_registered_and_validated():
    assert {"groupwise-mixture", "groupwise-randomized", "groupwise-mixture-logistic"} <= set(learners.names())
    assert learners.family_of("groupwise-mixture") == "groupwise"
    with pytest.raises(ValueError, match="rule"):
        GroupwiseRegressor(rule="best")
    with pytest.raises(ValueError, match="distinct"):
        GroupwiseRegressor(groups=["a", "a"])
    m = GroupwiseRegressor(n_features=2, groups=["always_on", "x"])
    assert m.names_ == ["always_on", "x"]
    with pytest.raises(learners.InvalidInput, match="G must be"):
        m.process({"X": np.zeros((1, 2)), "G": np.zeros((1, 1, 1))})


@pytest.mark.parametrize("text, row, expected", [
    ("age < 30", {"age": 29}, True),
    ("age < 30", {"age": 30}, False),
    ("age <= 30 and sex == 'F'", {"age": 30, "sex": "F"}, True),
    ("age >= 65 or not (income > 1e4)", {"age": 20, "income": 9000}, True),
    ('race in ["Black", "Other"]', {"race": "White"}, False),
    ("race != 'White'", {"race": "Black"}, True),
    ("smoker == true", {"smoker": True}, True),
    ("age < 30", {}, False),
    ("age < 30", {"age": "young"}, False),
    ("x.y >= -2.5", {"x.y": -2.5}, True),
])
def test_group_rules(text, row, expected):
    assert parse(text)(row) is expected


@pytest.mark.parametrize("text", ["", "age <", "age < 30 and", "(age < 3", "age in [1, 2", "__import__('os')",
                                  "age < 30 30", "age ~ 3", "age < x"])
def test_group_rules_reject_bad_text(text):
    with pytest.raises(RuleError):
        parse(text)


def test_river_progressive_validation():
    from river import evaluate, metrics

    from learners.groupwise.river_adapter import GroupwiseRiver

    rng = np.random.default_rng(2)
    rows = []
    for _ in range(800):
        age = float(rng.integers(18, 80))
        sex = "F" if rng.random() < 0.5 else "M"
        x = {"age": age / 80, "sex=F": float(sex == "F"), "noise": float(rng.normal())}
        y = 0.5 * x["age"] + (0.8 if age < 30 else 0.0) + (0.3 if sex == "F" else 0.0) + 0.05 * rng.normal()
        rows.append(({**x, "age_years": age, "sex": sex}, y))
    model = GroupwiseRiver(features=["age", "sex=F", "noise"], groups={"young": "age_years < 30", "female": "sex == 'F'"})
    mae = evaluate.progressive_val_score(rows, model, metrics.MAE())
    single = GroupwiseRiver(features=["age", "sex=F", "noise"], groups={})
    mae_single = evaluate.progressive_val_score(rows, single, metrics.MAE())
    assert mae.get() < mae_single.get() and mae.get() < 0.15
    assert model.predict_one({"age": 0.3, "sex=F": 0.0, "noise": 0.0, "age_years": 25.0, "sex": "M"}) > 0.7


class PyRidge:
    """A ridge regressor with river's interface, solved from scratch: the plugged-base check."""

    def __init__(self, d=5, lam=0.7):
        self.A = lam * np.eye(d)
        self.b = np.zeros(d)

    def predict_one(self, x):
        v = np.array([x[j] for j in range(len(self.b))])
        return float(np.linalg.solve(self.A, self.b) @ v)

    def learn_one(self, x, y):
        v = np.array([x[j] for j in range(len(self.b))])
        self.A += np.outer(v, v)
        self.b += y * v


def test_a_plugged_base_learner_runs_the_same_accounting():
    """The base learner is pluggable: river-style regressors per group through the plain-Python
    path give what the ridge kernels give when they compute the same thing."""
    X, G, y = data(4, n=250)
    keys = np.arange(250, dtype=np.uint64)
    outs = {}
    for base in ("ridge", lambda: PyRidge()):
        m = GroupwiseRegressor(n_features=5, groups=["g0", "g1", "g2", "g3"], lam=0.7, base=base, seed=1)
        preds = []
        for i in range(0, 250, 50):
            preds.append(m.process({"X": X[i:i + 50], "G": G[i:i + 50], "event_key": keys[i:i + 50]}))
            m.learn({"X": X[i:i + 50], "G": G[i:i + 50], "y": y[i:i + 50]})
        outs[callable(base)] = (preds, m.group_report())
    for a, b in zip(outs[False][0], outs[True][0], strict=True):
        for col in ("prediction_mixture", "prediction_randomized", "expert"):
            assert np.allclose(a[col], b[col], atol=1e-8), col
    for a, b in zip(outs[False][1], outs[True][1], strict=True):
        assert a["events"] == b["events"] and a["regret"] == pytest.approx(b["regret"], abs=1e-6)
    from river import linear_model

    m = GroupwiseRegressor(n_features=5, groups=["g0", "g1", "g2", "g3"], base=linear_model.LinearRegression)
    m.learn({"X": X, "G": G, "y": y})
    assert np.isfinite(m.process({"X": X[:3], "G": G[:3]})["prediction"]).all()
    with pytest.raises(NotImplementedError):
        m.snapshot()


# -- the priors ---------------------------------------------------------------------------------------
def test_adahedge_matches_the_formulas():
    """The kernels' AdaHedge (weight and mixability gap of one round) against the formulas, on
    seeded random cumulative losses, gaps (0 included: follow the leader) and round losses; the
    weights are scale-free (rescaling every loss changes nothing)."""
    rng = np.random.default_rng(5)
    for _ in range(400):
        la, lu = rng.exponential(3.0, 2)
        if rng.random() < 0.2:
            lu = la  # a tie
        gap = 0.0 if rng.random() < 0.3 else float(rng.exponential(0.5))
        ea, eu = rng.exponential(0.05, 2)
        w, delta = naive.adahedge(la, lu, gap, ea, eu)
        a = K.hedge_weight(la, lu, gap)
        assert a == pytest.approx(w, rel=1e-9, abs=1e-12)
        assert K.hedge_gap(la, lu, gap, a, ea, eu) == pytest.approx(delta, rel=1e-7, abs=1e-12)
        assert K.hedge_weight(40 * la, 40 * lu, 40 * gap) == pytest.approx(a, rel=1e-9, abs=1e-12)
    assert K.hedge_weight(1.0, 2.0, 0.0) == 1.0 and K.hedge_weight(2.0, 1.0, 0.0) == 0.0
    assert K.hedge_weight(1.0, 1.0, 0.0) == 0.5
    for la, lu, gap, ea, eu in ((10.0, 0.0, 1e-4, 0.0, 1.0), (0.0, 10.0, 1e-4, 1.0, 0.0), (3.0, 2.0, 1e-3, 0.2, 0.1)):
        a = K.hedge_weight(la, lu, gap)  # a weight that underflows, and a large η
        assert a == pytest.approx(naive.adahedge(la, lu, gap), abs=1e-300)
        assert K.hedge_gap(la, lu, gap, a, ea, eu) == pytest.approx(naive.adahedge(la, lu, gap, ea, eu)[1], abs=1e-12)


@pytest.mark.parametrize("base", ["ridge", "logistic"])
@pytest.mark.parametrize("rule", ["mixture", "randomized"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adaptive_prior_matches_the_reference(base, rule, seed):
    """The adaptive prior's kernels against the plain-Python reference (naive.groupwise_prior) on
    seeded random rows: both rules' predictions row by row, both tracks' AdaNormalHedge state, each
    group's AdaHedge state and the cumulative losses; learning in one batch is the same."""
    X, G, y = data(seed, n=300)
    if base == "logistic":
        y = (y > np.median(y)).astype(float)
    keys = np.random.default_rng(seed).integers(0, 2**63, len(y)).astype(np.uint64)
    names = ["g0", "g1", "g2", "g3"]
    m = GroupwiseRegressor(n_features=5, groups=names, lam=0.7, base=base, rule=rule, seed=seed)
    assert m.prior_ == "adaptive" and m.prior_in_use == "adaptive"
    mix, rand = row_by_row(m, X, G, y, keys)
    member = np.concatenate([np.ones((len(y), 1), dtype=bool), G.astype(bool)], axis=1)
    rmix, rrand, (R, C, Ru, Cu), hedge, loss = naive.groupwise_prior(X, member, y, 0.7, "adaptive", base=base,
                                                                    seed=seed, keys=keys, rule=rule)
    assert np.allclose(mix, rmix, atol=1e-9) and np.allclose(rand, rrand, atol=1e-9)
    assert np.allclose(m._R, R, atol=1e-8) and np.allclose(m._C, C, atol=1e-8)
    assert np.allclose(m._adapt[0], Ru, atol=1e-8) and np.allclose(m._adapt[1], Cu, atol=1e-8)
    assert np.allclose(m._adapt[2:].T, hedge, rtol=1e-7, atol=1e-10)
    assert np.allclose(m._loss, loss, atol=1e-8)
    assert (hedge[:, 2] > 0).any()  # AdaHedge left follow-the-leader somewhere: both branches ran
    weights = [r["anchor_weight"] for r in m.group_report()]
    assert np.allclose(weights, [naive.adahedge(*h) for h in hedge], atol=1e-9)
    assert m.report()["prior"] == "adaptive"
    b = GroupwiseRegressor(n_features=5, groups=names, lam=0.7, base=base, rule=rule, seed=seed)
    b.learn({"X": X, "G": G, "y": y})
    for name in ("theta", "R", "C", "adapt", "loss", "n"):
        assert np.allclose(getattr(b, f"_{name}"), getattr(m, f"_{name}"), atol=1e-9), name


@pytest.mark.parametrize("prior", ["anchor", "uniform"])
def test_the_reference_of_the_fixed_priors_is_the_earlier_one(prior):
    X, G, y = data(7, n=120)
    member = np.concatenate([np.ones((len(y), 1), dtype=bool), G.astype(bool)], axis=1)
    keys = np.arange(len(y), dtype=np.uint64)
    old = naive.groupwise(X, member, y, 0.7, keys=keys, anchor=prior == "anchor")
    new = naive.groupwise_prior(X, member, y, 0.7, prior, keys=keys)
    assert np.allclose(old[0], new[0]) and np.allclose(old[1], new[1])
    assert np.allclose(old[2], new[2][0]) and np.allclose(old[3], new[2][1]) and np.allclose(old[4], new[4])


def test_prior_settings():
    """``prior`` names the prior; the earlier ``anchor`` still works (true: anchor, false:
    uniform); both given must agree; the default is adaptive."""
    assert GroupwiseRegressor().prior_ == "adaptive"
    assert GroupwiseRegressor(anchor=True).prior_ == "anchor"
    assert GroupwiseRegressor(anchor=False).prior_ == "uniform"
    assert GroupwiseRegressor(prior="uniform", anchor=False).prior_ == "uniform"
    for p in ("anchor", "uniform", "adaptive"):
        m = GroupwiseRegressor(n_features=3, groups=["a"], prior=p)
        assert m.prior_ == p and m.clone().prior_ == p and m.get_params()["prior"] == p
        assert m.snapshot()["adapt"].shape == (5, 2 if p == "adaptive" else 0)
    with pytest.raises(ValueError, match="prior must be one of"):
        GroupwiseRegressor(prior="bayes")
    with pytest.raises(ValueError, match="means prior 'anchor'"):
        GroupwiseRegressor(prior="adaptive", anchor=True)
    with pytest.raises(ValueError, match="anchor must be true or false"):
        GroupwiseRegressor(anchor="yes")  # type: ignore[arg-type]


def _steps(seed=3, n=240):
    X, G, y = data(seed, n=n)
    keys = np.random.default_rng(seed).integers(0, 2**63, n).astype(np.uint64)
    for i in range(0, n, 24):
        sl = slice(i, i + 24)
        yield "process", {"X": X[sl], "G": G[sl], "event_key": keys[sl]}
        yield "learn", {"X": X[sl], "G": G[sl], "y": y[sl]}


def _run(m, steps):
    return [out for kind, b in steps if (out := getattr(m, kind)(b)) is not None]


@pytest.mark.parametrize("prior", ["anchor", "uniform", "adaptive"])
@pytest.mark.parametrize("rule", ["mixture", "randomized"])
def test_checkpoint_restore_continue_equals_never_stopping_under_every_prior(prior, rule):
    steps = list(_steps())
    make = lambda: GroupwiseRegressor(n_features=5, groups=["g0", "g1", "g2", "g3"], rule=rule, prior=prior)  # noqa: E731
    straight = _run(make(), steps)
    first = make()
    before = _run(first, steps[:9])
    second = make()
    second.restore({k: v.copy() for k, v in first.snapshot().items()})
    after = _run(second, steps[9:])
    for a, b in zip(before + after, straight, strict=True):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("old_prior", ["anchor", "uniform"])
def test_a_checkpoint_from_before_the_adaptive_prior_continues_as_it_was_written(old_prior):
    """A snapshot of the earlier layout (no ``adapt``, no ``prior``: one AdaNormalHedge track)
    restores: into a learner of its own prior, and, for the anchor prior (the earlier default),
    into one of the adaptive prior (the new default, which settings naming no prior now get): it
    continues exactly as the earlier release would, under the prior it was written with."""
    steps = list(_steps(seed=4))
    names = ["g0", "g1", "g2", "g3"]
    earlier = GroupwiseRegressor(n_features=5, groups=names, anchor=old_prior == "anchor")
    _run(earlier, steps[:8])
    legacy = {k: v.copy() for k, v in earlier.snapshot().items() if k not in ("adapt", "prior")}
    expected = _run(earlier, steps[8:])
    targets = [GroupwiseRegressor(n_features=5, groups=names, anchor=old_prior == "anchor")]
    if old_prior == "anchor":
        targets.append(GroupwiseRegressor(n_features=5, groups=names))
    for m in targets:
        m.restore(legacy)
        assert m.prior_in_use == old_prior
        got = _run(m, steps[8:])
        for a, b in zip(got, expected, strict=True):
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        again = m.clone()  # its own snapshot restores and says which prior it runs
        again.restore(m.snapshot())
        assert again.prior_in_use == old_prior
    if old_prior == "uniform":  # the earlier layout cannot say it ran the uniform prior: an
        m = GroupwiseRegressor(n_features=5, groups=names)  # adaptive learner takes it as the anchor's
        m.restore(legacy)
        assert m.prior_in_use == "anchor"


def test_a_snapshot_of_another_prior_is_refused():
    names = ["g0", "g1"]
    snaps = {p: GroupwiseRegressor(n_features=3, groups=names, prior=p).snapshot()
             for p in ("anchor", "uniform", "adaptive")}
    for mine in snaps:
        for other, state in snaps.items():
            m = GroupwiseRegressor(n_features=3, groups=names, prior=mine)
            if other == mine:
                m.restore(state)
                continue
            with pytest.raises(learners.InvalidInput, match="prior"):
                m.restore(state)


def test_the_adaptive_prior_follows_the_better_prior():
    """Where the groups' own models matter (regions with their own slopes: the uniform prior is
    the better) and where the global model is right (one slope for all, small noisy groups: the
    anchor is the better), the adaptive prior's loss is no worse than the worse prior's on every
    group, and nearer the better prior's than the worse one's over the groups."""
    rng = np.random.default_rng(21)
    n, d, k = 4000, 4, 6
    X = np.concatenate([np.ones((n, 1)), rng.normal(size=(n, d - 1))], axis=1)
    G = (rng.random((n, k)) < 0.3).astype(np.int64)
    slopes = rng.normal(size=(k, d))
    for case in ("own slopes", "one slope"):
        if case == "own slopes":
            y = X @ rng.normal(size=d) * 0.2 + ((G[:, :, None] * slopes[None]) * X[:, None, :]).sum(axis=(1, 2))
        else:
            y = X @ rng.normal(size=d) + 1.0 * rng.normal(size=n)
        y = (y - y.min()) / (y.max() - y.min())
        loss = {}
        for p in ("anchor", "uniform", "adaptive"):
            m = GroupwiseRegressor(n_features=d, groups=[f"g{j}" for j in range(k)], prior=p)
            m.learn({"X": X, "G": G, "y": y})
            loss[p] = np.array([r["loss"] for r in m.group_report()])
        best, worst = np.minimum(loss["anchor"], loss["uniform"]), np.maximum(loss["anchor"], loss["uniform"])
        assert (loss["adaptive"] <= worst).all(), (case, loss)
        assert (loss["adaptive"] - best).sum() < 0.5 * (worst - best).sum(), (case, loss)
