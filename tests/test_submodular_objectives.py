"""The submodular family's objective kernels and lazy greedy against plain references: marginal
gains, monotonicity and submodularity on random sets, encodings, and greedy's choices."""

from __future__ import annotations

import numpy as np
import pytest

from learners.base import InvalidInput
from learners.submodular import _objectives as K
from learners.submodular._greedy import lazy_greedy
from learners.submodular.objectives import FacilityLocation, FeatureBased, PythonObjective, WeightedCoverage
from learners.submodular.reference import RowOracle, brute_force, greedy


def instance(kind: str, n: int, seed: int):
    """An objective and n items' stored rows (rows, idx, cnt) and their dense rows."""
    rng = np.random.default_rng(seed)
    if kind == "fl-rbf":
        obj = FacilityLocation(rng.normal(size=(30, 4)), weights=rng.uniform(0.5, 2, 30))
        x = rng.normal(size=(n, 4))
    elif kind == "fl-cosine":
        obj = FacilityLocation(rng.normal(size=(25, 3)), similarity="cosine")
        x = rng.normal(size=(n, 3))
        x[0] = 0.0  # a zero vector: similarity 0
    elif kind.startswith("fb-"):
        obj = FeatureBased(6, phi=kind[3:], weights=rng.uniform(0.1, 1, 6))
        x = rng.exponential(size=(n, 6)) * (rng.random((n, 6)) < 0.6)
    else:
        obj = WeightedCoverage(40, max_nnz=6, weights=rng.uniform(0, 3, 40))
        nnz = rng.integers(0, 7, n)
        off = np.concatenate([[0], np.cumsum(nnz)])
        ind = np.concatenate([rng.choice(40, size=z, replace=False) for z in nnz])
        x = (off, ind, rng.uniform(0, 1, off[-1]))
    rows, idx, cnt = obj.encode(x)
    return obj, rows, idx, cnt, obj.dense(rows, idx, cnt)


KINDS = ["fl-rbf", "fl-cosine", "fb-sqrt", "fb-log1p", "fb-saturate", "coverage"]


@pytest.mark.parametrize("kind", KINDS)
def test_gains_and_additions_equal_the_plain_objective(kind):
    rng = np.random.default_rng(1)
    obj, rows, idx, cnt, dense = instance(kind, 40, seed=2)
    for _ in range(60):
        s = list(rng.choice(40, size=int(rng.integers(0, 8)), replace=False))
        c = np.zeros(obj.m)
        K.state_of(obj.form, obj.sparse, rows, idx, cnt, np.array(s, dtype=np.int64), len(s), c)
        base = obj.value_of([dense[i] for i in s])
        assert K.value(obj.form, obj.phik, obj.w, c) == pytest.approx(base, rel=1e-12, abs=1e-12)
        for e in rng.choice(40, size=5):
            g = K.gain(obj.form, obj.phik, obj.sparse, obj.w, rows, idx, cnt, int(e), c)
            assert g == pytest.approx(obj.value_of([dense[i] for i in [*s, e]]) - base, rel=1e-9, abs=1e-12)
            assert g >= 0.0  # monotone


@pytest.mark.parametrize("kind", KINDS)
def test_the_objectives_are_submodular_on_random_nested_sets(kind):
    rng = np.random.default_rng(3)
    obj, rows, idx, cnt, dense = instance(kind, 30, seed=4)
    f = RowOracle(obj, dense)
    for _ in range(200):
        big = list(rng.choice(30, size=int(rng.integers(1, 10)), replace=False))
        small = big[:int(rng.integers(0, len(big)))]
        e = int(rng.integers(30))
        assert f.gain(small, e) >= f.gain(big, e) - 1e-9


def test_similarity_rows_against_their_formulas():
    rng = np.random.default_rng(5)
    ref, x = rng.normal(size=(7, 3)), rng.normal(size=(4, 3))
    rows, _, _ = FacilityLocation(ref, gamma=0.7).encode(x)
    want = np.exp(-0.7 * ((x[:, None, :] - ref[None, :, :]) ** 2).sum(axis=2))
    np.testing.assert_allclose(rows, want, rtol=1e-6)  # (the reference set is held in float32)
    rows, _, _ = FacilityLocation(ref, similarity="cosine").encode(x)
    cos = (x @ ref.T) / np.linalg.norm(x, axis=1)[:, None] / np.linalg.norm(ref, axis=1)[None, :]
    np.testing.assert_allclose(rows, np.maximum(cos, 0), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [1, 3, 10])
def test_lazy_greedy_chooses_what_plain_greedy_chooses(kind, k):
    for seed in range(4):
        obj, rows, idx, cnt, dense = instance(kind, 35, seed=seed)
        live = np.random.default_rng(seed).permutation(35)[:30].astype(np.int64)
        out = np.empty(k, dtype=np.int64)
        c = np.zeros(obj.m)
        n, v, calls = lazy_greedy(obj.form, obj.phik, obj.sparse, obj.w, rows, idx, cnt, live, k, c, out)
        ref = RowOracle(obj, dense)
        rv, rs = greedy(ref, live.tolist(), k)
        assert out[:n].tolist() == rs and v == pytest.approx(rv, rel=1e-9)
        assert len(live) <= calls <= ref.calls  # lazy: never more calls than plain greedy


def test_greedy_reaches_its_guarantee_against_brute_force():
    for seed in range(6):
        for kind in KINDS:
            obj, rows, idx, cnt, dense = instance(kind, 12, seed=seed)
            ref = RowOracle(obj, dense)
            opt, _ = brute_force(ref, list(range(12)), 3)
            v, _ = greedy(ref, list(range(12)), 3)
            assert v >= (1 - 1 / np.e) * opt - 1e-9


def test_edge_cases_empty_sets_zero_rows_and_k_past_the_live_count():
    obj, rows, idx, cnt, dense = instance("coverage", 10, seed=7)
    out = np.empty(20, dtype=np.int64)
    c = np.zeros(obj.m)
    n, v, calls = lazy_greedy(obj.form, obj.phik, obj.sparse, obj.w, rows, idx, cnt, np.zeros(0, np.int64), 5, c, out)
    assert (n, v, calls) == (0, 0.0, 0)
    n, v, _ = lazy_greedy(obj.form, obj.phik, obj.sparse, obj.w, rows, idx, cnt, np.arange(10), 20, c, out)
    assert n <= 10 and len(set(out[:n].tolist())) == n  # only positive gains are taken
    zero = FeatureBased(3)
    r, i, z = zero.encode(np.zeros((4, 3)))
    n, v, _ = lazy_greedy(zero.form, zero.phik, zero.sparse, zero.w, r, i, z, np.arange(4), 2, np.zeros(3), out)
    assert (n, v) == (0, 0.0)


def test_bad_items_are_refused_with_their_reason():
    with pytest.raises(InvalidInput, match="negative"):
        FeatureBased(2).encode([[1.0, -0.5]])
    with pytest.raises(InvalidInput, match="finite"):
        FacilityLocation(np.eye(2)).encode([[np.nan, 1.0]])
    with pytest.raises(InvalidInput, match="n×2"):
        FacilityLocation(np.eye(2)).encode([[1.0, 2.0, 3.0]])
    cov = WeightedCoverage(5, max_nnz=2)
    with pytest.raises(InvalidInput, match="max_nnz"):
        cov.encode(([0, 3], [0, 1, 2], [1.0, 1.0, 1.0]))
    with pytest.raises(InvalidInput, match="outside"):
        cov.encode(([0, 1], [9], [1.0]))
    with pytest.raises(InvalidInput, match="twice"):
        cov.encode(([0, 2], [1, 1], [1.0, 1.0]))
    with pytest.raises(InvalidInput, match=">= 0"):
        cov.encode(([0, 1], [1], [-1.0]))
    with pytest.raises(ValueError):
        FeatureBased(3, phi="exp")


def test_a_python_objective_scores_sets_with_the_users_function():
    f = PythonObjective(lambda xs: float(len({tuple(v) for v in xs})))
    assert f.value([[1], [1], [2]]) == 2.0 and f.gain([[1]], [[2]]) == 1.0
