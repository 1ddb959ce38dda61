"""The bandit learner's settings (lam, min_prob, max_explore, gamma_scale, gamma_exponent and the
policies' own) away from their defaults, checked round by round against tests/naive.py's plain
NaiveBandit: every probability, score, decision, γ and the whole learned state."""

from __future__ import annotations

import numpy as np
import numpy.testing as npt
import pytest

from learners.bandit import BanditLearner

from . import naive

D, DA = 4, 2
POOL = [f"acq-{i}" for i in range(7)]

# Each case sets lam and the exploration schedule off their defaults; "bounds" cases rely on the floor
# or the cap changing probabilities (checked below), some with only one of the two set.
CASES = {
    "squarecb-floor-only": dict(policy="squarecb", lam=0.25, gamma_scale=3.0, gamma_exponent=0.7, min_prob=0.04),
    "squarecb-cap-only": dict(policy="squarecb", lam=4.0, gamma_scale=50.0, gamma_exponent=0.3, max_explore=0.15),
    "squarecb-both-evicting": dict(policy="squarecb", lam=0.05, gamma_scale=0.5, gamma_exponent=1.2, min_prob=0.02,
                                   max_explore=0.3, max_actions=4),
    "squarecb-steep-gamma": dict(policy="squarecb", lam=7.0, gamma_scale=40.0, gamma_exponent=0.9, min_prob=0.01,
                                 max_explore=0.6),
    "fastcb-floor": dict(policy="fastcb", lam=2.5, gamma_scale=20.0, gamma_exponent=0.4, min_prob=0.03),
    "shared-cap": dict(policy="squarecb", oracle="ridge-shared", n_action_features=DA, lam=0.3, gamma_scale=2.0,
                       gamma_exponent=0.8, max_explore=0.2),
    "shared-floor-evicting": dict(policy="squarecb", oracle="ridge-shared", n_action_features=DA, lam=6.0,
                                  gamma_scale=15.0, gamma_exponent=0.6, min_prob=0.05, max_actions=5),
    "linucb-floor": dict(policy="linucb", lam=0.2, alpha=0.5, min_prob=0.05),
    "lints-cap": dict(policy="lints", lam=3.0, ts_scale=0.8, ts_samples=16, max_explore=0.25),
    "epsgreedy-both": dict(policy="epsilon-greedy", lam=0.5, epsilon=0.2, min_prob=0.1, max_explore=0.3),
    "neural-squarecb": dict(policy="squarecb", oracle="neural", hidden=8, lr=0.1, perturbation=0.05,
                            gamma_scale=5.0, gamma_exponent=0.6, min_prob=0.03),
    "neural-fastcb-kl": dict(policy="fastcb", oracle="neural", kl_loss=True, hidden=6, lr=0.2, perturbation=0.02,
                             gamma_scale=8.0, gamma_exponent=0.5, max_explore=0.2),
}


def assert_state_equal(learner, ref, where):
    got, want = learner.snapshot(), ref.state()
    assert sorted(got) == sorted(want), where
    for k in want:
        if want[k].dtype.kind in "iU":
            npt.assert_array_equal(got[k], want[k], err_msg=f"{where}: {k}")
        else:
            npt.assert_allclose(got[k], want[k], rtol=1e-9, atol=1e-10, err_msg=f"{where}: {k}")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", sorted(CASES))
def test_learner_equals_plain_reference_round_by_round(case, seed):
    params = {"n_features": D, "actions": tuple(POOL[:3]), "seed": 11 + seed, **CASES[case]}
    learner = BanditLearner(**params)
    ref = naive.NaiveBandit(**params)
    shared = params.get("oracle") == "ridge-shared"
    evicting = "max_actions" in params
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(len(POOL), D))
    afeat = rng.normal(size=(len(POOL), DA))
    pending = []  # (key, x, action id) decided but not yet learned: rewards arrive late
    for r in range(14):
        m = int(rng.integers(1, 7))
        X = rng.normal(size=(m, D)) * (rng.random(size=(m, D)) < 0.8)
        keys = rng.integers(0, 2**63, size=m, dtype=np.int64).astype(np.uint64)
        offered = POOL[: min(3 + r // 2, len(POOL))]  # actions come over time
        if r % 4 == 3 and not shared and not evicting:
            sets, batch = None, {"event_key": keys, "X": X}  # the configured actions
            AF = None
        else:
            if evicting:  # at most max_actions distinct actions in one batch
                offered = sorted(rng.choice(offered, size=min(len(offered), params["max_actions"]), replace=False))
            sets = [sorted(rng.choice(offered, size=int(rng.integers(1, min(5, len(offered)) + 1)), replace=False))
                    for _ in range(m)]
            flat = [a for s in sets for a in s]
            AF = afeat[[POOL.index(a) for a in flat]]
            batch = {"event_key": keys, "X": X,
                     "action_indptr": np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64),
                     "action_ids": np.array(flat, dtype=object), "action_features": AF}
        where = f"{case} seed {seed} round {r}"
        want = ref.process(keys, X, sets, AF)
        got = learner.process(batch)
        npt.assert_array_equal(got["indptr"], want["indptr"], err_msg=where)
        npt.assert_allclose(got["scores"], want["scores"], rtol=1e-9, atol=1e-10, err_msg=f"{where}: scores")
        npt.assert_allclose(got["probs"], want["probs"], rtol=1e-9, atol=1e-12, err_msg=f"{where}: probs")
        npt.assert_array_equal(got["chosen"], want["chosen"], err_msg=f"{where}: chosen")
        assert list(got["chosen_action"]) == want["chosen_action"], where
        npt.assert_allclose(got["prob"], want["prob"], rtol=1e-9, atol=1e-12, err_msg=f"{where}: prob")
        npt.assert_array_equal(got["explored"], want["explored"], err_msg=f"{where}: explored")
        assert learner.metrics()["gamma"] == pytest.approx(ref.gamma, rel=1e-12, abs=0.0), where
        assert_state_equal(learner, ref, f"{where} after process")
        pending += list(zip(keys, X, want["chosen_action"], strict=True))
        # Learn a seeded part of what is pending, oldest first, in one batch (some rewards wait).
        take = int(rng.integers(0, len(pending) + 1)) if r < 13 else len(pending)
        while len({a for _, _, a in pending[:take]}) > params.get("max_actions", 256):
            take -= 1
        done, pending = pending[:take], pending[take:]
        if not done:
            continue
        lk = np.array([k for k, _, _ in done], dtype=np.uint64)
        lX = np.array([x for _, x, _ in done])
        acts = [a for _, _, a in done]
        idx = [POOL.index(a) for a in acts]
        reward = np.clip(1.0 / (1.0 + np.exp(-np.einsum("ij,ij->i", lX, truth[idx]))) + rng.normal(0, 0.05, len(done)),
                         0.0, 1.0)
        lAF = afeat[idx]
        learner.learn({"event_key": lk, "X": lX, "action": np.array(acts, dtype=object), "reward": reward,
                       "prob": np.full(len(done), 0.5), "action_features": lAF})
        ref.learn(lk, lX, acts, reward, lAF)
        assert_state_equal(learner, ref, f"{where} after learn")
        assert learner.metrics()["learned_events"] == ref.t
    # The settings under test were exercised: the floor or cap changed some events' probabilities.
    if params.get("min_prob", 0.0) > 0 or params.get("max_explore", 1.0) < 1:
        assert ref.bounds_changed > 0
    if evicting:
        assert learner.metrics()["action_evictions"] > 0


@pytest.mark.parametrize("scale,exponent", [(10.0, 0.5), (4.0, 0.5), (0.3, 2.0), (25.0, 0.25), (2.0, 1.5)])
def test_gamma_is_scale_times_t_to_the_exponent(scale, exponent):
    """γ after t learned events is gamma_scale·t^gamma_exponent (not (gamma_scale·t)^gamma_exponent), and
    SquareCB's probabilities use it: p = 1/(K + γ·gap) off the best action."""
    lrn = BanditLearner(n_features=1, actions=("a", "b"), gamma_scale=scale, gamma_exponent=exponent, seed=0)
    assert lrn.metrics()["gamma"] == 0.0
    one = {"X": np.ones((1, 1)), "event_key": np.array([5], np.uint64)}
    t = 0
    for step in (1, 2, 6, 27, 64):
        lrn.learn({"event_key": np.arange(step, dtype=np.uint64), "X": np.ones((step, 1)),
                   "action": np.array(["a"] * step, dtype=object), "reward": np.ones(step)})
        t += step
        gamma = scale * t**exponent
        assert gamma != pytest.approx((scale * t) ** exponent, rel=1e-6)  # the two readings differ here
        assert lrn.metrics()["gamma"] == pytest.approx(gamma, rel=1e-12)
        # Action a learned reward 1 at x = 1 from t rows: score t/(t + lam); b is unlearned: score 0.
        out = lrn.process(one)
        gap = t / (t + 1.0)
        npt.assert_allclose(out["scores"], [gap, 0.0], rtol=1e-12)
        npt.assert_allclose(out["probs"], [1.0 - 1.0 / (2 + gamma * gap), 1.0 / (2 + gamma * gap)], rtol=1e-12)


@pytest.mark.parametrize("lam", [0.1, 0.5, 4.0])
def test_ridge_models_start_from_identity_over_lambda(lam):
    """A_inv starts at I/λ: for configured actions, for actions added later, for an evicted action's
    reused slot and for the shared model; one learned row then gives θ = y·x/(λ + |x|²)."""
    d = 3
    lrn = BanditLearner(n_features=d, actions=("a",), max_actions=2, lam=lam, seed=0)
    ev = {"event_key": np.array([1], np.uint64), "X": np.ones((1, d)),
          "action_indptr": np.array([0, 2], np.int64), "action_ids": np.array(["a", "b"], dtype=object)}
    lrn.process(ev)
    npt.assert_allclose(lrn.snapshot()["A_inv"], np.stack([np.eye(d) / lam] * 2), rtol=1e-15)
    x = np.array([[1.0, -2.0, 0.5]])
    lrn.learn({"event_key": np.array([2], np.uint64), "X": x, "action": np.array(["b"], dtype=object),
               "reward": np.array([3.0])})
    ref_A, ref_theta = naive.ridge(x, np.array([3.0]), lam)
    npt.assert_allclose(lrn.snapshot()["theta"][1], 3.0 * x[0] / (lam + x[0] @ x[0]), rtol=1e-12)
    npt.assert_allclose(lrn.snapshot()["A_inv"][1], ref_A, rtol=1e-12)
    # 'c' evicts 'a' (offered longest ago); its slot starts again from I/λ and θ = 0.
    lrn.learn({"event_key": np.array([3], np.uint64), "X": x, "action": np.array(["a"], dtype=object),
               "reward": np.array([1.0])})
    lrn.learn({"event_key": np.array([4], np.uint64), "X": x, "action": np.array(["b"], dtype=object),
               "reward": np.array([1.0])})
    lrn.process({**ev, "action_ids": np.array(["b", "c"], dtype=object)})
    slot = lrn._table.slot["c"]
    assert lrn.metrics()["action_evictions"] == 1 and slot == 0
    npt.assert_allclose(lrn.snapshot()["A_inv"][slot], np.eye(d) / lam, rtol=1e-15)
    npt.assert_allclose(lrn.snapshot()["theta"][slot], 0.0)
    shared = BanditLearner(n_features=d, oracle="ridge-shared", n_action_features=1, lam=lam, seed=0)
    npt.assert_allclose(shared.snapshot()["A_inv"], np.eye(2 * d) / lam, rtol=1e-15)


@pytest.mark.parametrize("min_prob,max_explore", [(0.2, 1.0), (0.0, 0.1), (0.2, 0.3)])
def test_floor_and_cap_each_apply_alone(min_prob, max_explore):
    """The floor applies without a cap and the cap without a floor: SquareCB with a large γ after
    learning puts almost nothing off the best action, so a floor of 0.2 lifts the others; before
    learning it is uniform over 4 actions (0.75 off the best), so a cap of 0.1 or 0.3 binds."""
    lrn = BanditLearner(n_features=1, actions=("a", "b", "c", "d"), gamma_scale=1e4, min_prob=min_prob,
                        max_explore=max_explore, seed=0)
    one = {"X": np.ones((1, 1)), "event_key": np.array([5], np.uint64)}
    s0 = np.zeros(4)
    out = lrn.process(one)
    npt.assert_allclose(out["probs"], naive.bounds(np.full(4, 0.25), s0, np.array([0, 4]), min_prob, max_explore),
                        rtol=1e-12)
    if max_explore < 0.75:
        assert out["probs"][0] == pytest.approx(1.0 - max_explore)
    lrn.learn({**one, "action": np.array(["a"], dtype=object), "reward": np.ones(1)})
    out = lrn.process(one)
    raw = naive.igw(out["scores"], np.array([0, 4]), lrn.gamma)
    assert raw[1:].max() < 0.01  # without bounds: almost everything on 'a'
    npt.assert_allclose(out["probs"], naive.bounds(raw, out["scores"], np.array([0, 4]), min_prob, max_explore),
                        rtol=1e-12)
    if min_prob > 0:
        npt.assert_allclose(out["probs"][1:], min(min_prob, max_explore / 3), rtol=1e-12)
