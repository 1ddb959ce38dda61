"""OPE estimates against the true value of a target policy, on real labelled data.

River's bundled ImageSegments (UCI image segmentation, 2,310 rows, 7 classes) becomes a 7-armed
bandit: reward 1 when the action is the true class. A uniform-random logger (propensity 1/7) logs
one action per row; the target policy's true value is computed exactly from the labels.
"""

from __future__ import annotations

import numpy as np
import pytest
from river import datasets

from learners.bandit.ope import OffPolicyEstimate


def test_ips_snips_dr_recover_the_true_value():
    rows = list(datasets.ImageSegments())
    classes = sorted({y for _, y in rows})
    keys = sorted(rows[0][0])
    X = np.array([[x[k] for k in keys] for x, _ in rows], dtype=float)
    X = (X - X.mean(0)) / (X.std(0) + 1e-9)
    X = np.hstack([X, np.ones((len(X), 1))])
    y = np.array([classes.index(c) for _, c in rows])
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(y))
    train, test = perm[:800], perm[800:]
    # Target policy: softmax over a ridge one-vs-rest model fitted on a held-out part.
    Y = np.eye(len(classes))[y[train]]
    W = np.linalg.solve(X[train].T @ X[train] + np.eye(X.shape[1]), X[train].T @ Y)
    logits = 4.0 * X[test] @ W
    pi = np.exp(logits - logits.max(1, keepdims=True))
    pi /= pi.sum(1, keepdims=True)
    truth = pi[np.arange(len(test)), y[test]].mean()
    rhat = np.clip(X[test] @ W, 0, 1)  # a (biased) reward model for DR
    K = len(classes)
    estimates = []
    for rep in range(20):
        r2 = np.random.default_rng(100 + rep)
        a = r2.integers(0, K, size=len(test))
        reward = (a == y[test]).astype(float)
        est = OffPolicyEstimate()
        idx = np.arange(len(test))
        est.update(w=pi[idx, a] * K, reward=reward, dm=(pi * rhat).sum(1), rhat=rhat[idx, a])
        v = est.values()
        se = est.ips_stderr()
        assert abs(v["ips"] - truth) < 4 * se
        estimates.append([v["ips"], v["snips"], v["dr"]])
    mean = np.mean(estimates, axis=0)
    assert 0.5 < truth < 0.95
    np.testing.assert_allclose(mean, truth, atol=0.02)
    # DR has the lowest spread of the three here (its reward model is informative).
    spread = np.std(estimates, axis=0)
    assert spread[2] < spread[0]


def test_update_one_equals_update_and_the_estimators_by_hand():
    """The daemon feeds one decision at a time (``update_one``): the same sums as ``update``, and the
    estimates written out from their definitions, with weights far from uniform."""
    rng = np.random.default_rng(7)
    n = 200
    w = rng.choice([0.0, 0.25, 1.0, 3.5, 8.0], size=n) * rng.uniform(0.5, 1.5, size=n)
    reward = rng.uniform(-1.0, 2.0, size=n)
    dm = rng.uniform(0.0, 1.0, size=n)
    rhat = rng.uniform(0.0, 1.0, size=n)
    batch, one = OffPolicyEstimate(), OffPolicyEstimate()
    batch.update(w=w, reward=reward, dm=dm, rhat=rhat)
    for a, b, c, d in zip(w.tolist(), reward.tolist(), dm.tolist(), rhat.tolist(), strict=True):
        one.update_one(a, b, c, d)
    np.testing.assert_allclose(one.to_array(), batch.to_array(), rtol=1e-12)
    assert one.n == batch.n == n
    ips = float(np.mean(w * reward))
    snips = float(np.sum(w * reward) / np.sum(w))
    dr = float(np.mean(dm + w * (reward - rhat)))
    assert abs(snips - ips) > 0.05  # the weights do not sum to n: SNIPS and IPS differ here
    for est in (one, batch):
        v = est.values()
        assert v["ips"] == pytest.approx(ips, rel=1e-12)
        assert v["snips"] == pytest.approx(snips, rel=1e-12)
        assert v["dr"] == pytest.approx(dr, rel=1e-12)
        se = np.sqrt((np.mean((w * reward) ** 2) - ips**2) / n)
        assert est.ips_stderr() == pytest.approx(se, rel=1e-9)


def test_update_one_by_hand_on_three_decisions():
    est = OffPolicyEstimate()
    est.update_one(2.0, 1.0, 0.5, 0.25)  # w, reward, Σ_b π(b|x) r̂(x,b), r̂(x,a)
    est.update_one(0.5, 0.0, 0.25, 0.5)
    est.update_one(4.0, 0.5, 0.75, 0.5)
    v = est.values()
    assert v["ips"] == pytest.approx((2.0 + 0.0 + 2.0) / 3, rel=1e-15)
    assert v["snips"] == pytest.approx(4.0 / 6.5, rel=1e-15)
    assert v["dr"] == pytest.approx(((0.5 + 1.5) + (0.25 - 0.25) + (0.75 + 0.0)) / 3, rel=1e-15)
