"""OnlineRidge (learners/linear) against the plain batch ridge of tests/naive.py, for several λ."""

from __future__ import annotations

import numpy as np
import numpy.testing as npt
import pytest

from learners.linear import OnlineRidge

from . import naive


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("lam", [1e-3, 0.3, 1.0, 2.5, 40.0])
def test_online_ridge_equals_batch_ridge_after_every_chunk(lam, seed):
    rng = np.random.default_rng(seed)
    d = 5
    X = rng.normal(size=(90, d)) * (rng.random(size=(90, d)) < 0.7)
    y = X @ rng.normal(size=d) + rng.normal(0, 0.3, 90)
    r = OnlineRidge(d, lam=lam)
    npt.assert_allclose(r.snapshot()["A_inv"][0], np.eye(d) / lam, rtol=1e-15)
    npt.assert_allclose(r.theta_, 0.0)
    cuts = [0, 1, 2, 7, 30, 31, 90]
    for lo, hi in zip(cuts, cuts[1:], strict=False):
        r.learn(X[lo:hi], y[lo:hi])
        A_inv, theta = naive.ridge(X[:hi], y[:hi], lam)
        npt.assert_allclose(r.theta_, theta, rtol=1e-9, atol=1e-11, err_msg=f"lam {lam} after {hi} rows")
        npt.assert_allclose(r.snapshot()["A_inv"][0], A_inv, rtol=1e-9, atol=1e-11)
        Z = rng.normal(size=(4, d))
        npt.assert_allclose(r.predict(Z), Z @ theta, rtol=1e-9, atol=1e-11)


def test_lambda_shrinks_one_row_exactly():
    """One row x → y: θ = y·x/(λ + |x|²), written out (λ = 3 gives half of λ = 1's answer here)."""
    for lam, want in ((1.0, 1.0), (3.0, 0.5), (0.5, 4.0 / 3.0)):
        r = OnlineRidge(1, lam=lam)
        r.learn(np.array([[1.0]]), np.array([2.0]))
        assert r.theta_[0] == pytest.approx(want, rel=1e-14)
        assert r.predict(np.array([[3.0]]))[0] == pytest.approx(3 * want, rel=1e-14)


def test_snapshot_restore_continues():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(20, 3)), rng.normal(size=20)
    a, b = OnlineRidge(3, lam=0.7), OnlineRidge(3, lam=0.7)
    a.learn(X[:8], y[:8])
    b.restore(a.snapshot())
    a.learn(X[8:], y[8:])
    b.learn(X[8:], y[8:])
    npt.assert_array_equal(a.theta_, b.theta_)
    npt.assert_allclose(b.theta_, naive.ridge(X, y, 0.7)[1], rtol=1e-9)


@pytest.mark.parametrize("bad", [dict(n_features=0), dict(n_features=2, lam=0.0), dict(n_features=2, lam=-1.0)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        OnlineRidge(**bad)


def test_bad_rows_are_refused_and_change_nothing():
    r = OnlineRidge(2, lam=2.0)
    r.learn(np.array([[1.0, 2.0]]), np.array([1.0]))
    before = r.snapshot()
    for X, y in ((np.array([[np.nan, 1.0]]), np.array([1.0])), (np.ones((1, 3)), np.array([1.0])),
                 (np.ones((2, 2)), np.array([1.0])), (np.ones((1, 2)), np.array([np.inf]))):
        with pytest.raises(ValueError):
            r.learn(X, y)
    after = r.snapshot()
    for k in before:
        npt.assert_array_equal(before[k], after[k])
