"""OPE estimates against the true value of a target policy, on real labelled data.

River's bundled ImageSegments (UCI image segmentation, 2,310 rows, 7 classes) becomes a 7-armed
bandit: reward 1 when the action is the true class. A uniform-random logger (propensity 1/7) logs
one action per row; the target policy's true value is computed exactly from the labels.
"""

from __future__ import annotations

import numpy as np
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
