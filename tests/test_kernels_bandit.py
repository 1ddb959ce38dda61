"""Every bandit and ridge kernel against its slow reference in tests/naive.py."""

from __future__ import annotations

import numpy as np
import numpy.testing as npt
import pytest

from learners import _random
from learners.bandit import _kernels as BK
from learners.linear import _kernels as LK

from . import naive


def random_csr(rng, n, kmax=5):
    sizes = rng.integers(1, kmax + 1, size=n)
    indptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return indptr


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_draws_match_reference(seed):
    rng = np.random.default_rng(seed)
    for key in [0, 1, 2**64 - 1, *rng.integers(0, 2**63, 20).tolist()]:
        for stream in (0, 1, 7, 2_000_005):
            assert _random.draw_uniform(seed, np.uint64(key), stream) == naive.draw_uniform(seed, key, stream)
            npt.assert_allclose(_random.draw_normal(seed, np.uint64(key), stream),
                                naive.draw_normal(seed, key, stream), rtol=1e-12)


def test_uniform_draws_are_uniform():
    u = np.array([_random.draw_uniform(5, np.uint64(k), 0) for k in range(20000)])
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01
    z = np.array([_random.draw_normal(5, np.uint64(k), 3) for k in range(20000)])
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1.0) < 0.03


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("d", [1, 3, 12])
@pytest.mark.parametrize("density", [1.0, 0.25])
def test_sherman_morrison_equals_batch_ridge(seed, d, density):
    rng = np.random.default_rng(seed)
    n, k, lam = 60, 3, 0.7
    X = rng.normal(size=(n, d)) * (rng.random(size=(n, d)) < density)  # hashed contexts are sparse
    y = rng.normal(size=n)
    slots = rng.integers(0, k, size=n)
    A_inv = np.stack([np.eye(d) / lam] * k)
    theta = np.zeros((k, d))
    LK.ridge_update_rows(A_inv, theta, X, slots, y)
    for s in range(k):
        ref_A, ref_t = naive.ridge(X[slots == s], y[slots == s], lam)
        npt.assert_allclose(A_inv[s], ref_A, atol=1e-9)
        npt.assert_allclose(theta[s], ref_t, atol=1e-9)
    out = np.empty(n)
    LK.ridge_predict_rows(theta, X, slots, out)
    npt.assert_allclose(out, np.einsum("ij,ij->i", X, theta[slots]))


@pytest.mark.parametrize("seed", [0, 1])
def test_sherman_morrison_keeps_the_inverse_exactly_symmetric(seed):
    # The kernel sums A⁻¹x from rows of A⁻¹, which equals the column sum only while A⁻¹ is
    # symmetric: its v vᵀ update must keep that bit for bit, over many rows.
    rng = np.random.default_rng(seed)
    n, d, k = 2000, 64, 4
    X = rng.normal(size=(n, d)) * (rng.random(size=(n, d)) < 0.15) * 10.0
    A_inv = np.stack([np.eye(d)] * k)
    theta = np.zeros((k, d))
    LK.ridge_update_rows(A_inv, theta, X, rng.integers(0, k, size=n), rng.normal(size=n))
    for s in range(k):
        assert np.array_equal(A_inv[s], A_inv[s].T)
        assert np.linalg.eigvalsh(A_inv[s]).min() > 0


def test_ridge_edge_cases():
    # Zero rows change nothing; an empty batch is a no-op.
    A_inv = np.eye(2)[None] / 2.0
    theta = np.zeros((1, 2))
    LK.ridge_update_rows(A_inv, theta, np.zeros((3, 2)), np.zeros(3, np.int64), np.ones(3))
    npt.assert_allclose(A_inv[0], np.eye(2) / 2.0)
    npt.assert_allclose(theta, 0.0)
    LK.ridge_update_rows(A_inv, theta, np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros(0))


@pytest.mark.parametrize("seed", [0, 1])
def test_disjoint_and_shared_scores(seed):
    rng = np.random.default_rng(seed)
    n, d, da, k = 20, 4, 2, 5
    X = rng.normal(size=(n, d))
    indptr = random_csr(rng, n)
    nnz = indptr[-1]
    slots = rng.integers(0, k, size=nnz)
    theta = rng.normal(size=(k, d))
    M = rng.normal(size=(k, d, d))
    A_inv = np.einsum("kij,klj->kil", M, M) + np.eye(d)
    s, w = np.empty(nnz), np.empty(nnz)
    LK.disjoint_scores(X, indptr, slots, theta, A_inv, True, s, w)
    for i, (lo, hi) in enumerate(naive.events(indptr)):
        for p in range(lo, hi):
            npt.assert_allclose(s[p], X[i] @ theta[slots[p]])
            npt.assert_allclose(w[p], np.sqrt(X[i] @ A_inv[slots[p]] @ X[i]))
    AF = rng.normal(size=(nnz, da))
    D = d * (da + 1)
    th = rng.normal(size=D)
    Mi = rng.normal(size=(D, D))
    Ai = Mi @ Mi.T + np.eye(D)
    LK.shared_scores(X, indptr, AF, th, Ai, True, s, w)
    for i, (lo, hi) in enumerate(naive.events(indptr)):
        for p in range(lo, hi):
            phi = np.outer(X[i], np.concatenate([[1.0], AF[p]])).ravel()
            npt.assert_allclose(s[p], phi @ th)
            npt.assert_allclose(w[p], np.sqrt(phi @ Ai @ phi))
    # The shared update equals batch ridge over φ.
    A2, t2 = np.eye(D) / 0.5, np.zeros(D)
    y = rng.normal(size=n)
    AFn = rng.normal(size=(n, da))
    LK.shared_update_rows(A2, t2, X, AFn, y)
    Phi = np.stack([np.outer(X[i], np.concatenate([[1.0], AFn[i]])).ravel() for i in range(n)])
    ref_A, ref_t = naive.ridge(Phi, y, 0.5)
    npt.assert_allclose(A2, ref_A, atol=1e-8)
    npt.assert_allclose(t2, ref_t, atol=1e-8)


def scores_with_ties(rng, nnz):
    s = rng.uniform(0, 1, size=nnz)
    s[rng.random(nnz) < 0.3] = 0.5  # ties
    return s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pmfs_match_reference(seed):
    rng = np.random.default_rng(seed)
    n = 40
    indptr = random_csr(rng, n, kmax=6)
    nnz = indptr[-1]
    s = scores_with_ties(rng, nnz)
    s[: indptr[1]] = 1.0  # a sure reward (FastCB's c_b = 0 case)
    w = rng.uniform(0, 1, size=nnz)
    keys = rng.integers(0, 2**63, size=n).astype(np.uint64)
    out = np.empty(nnz)
    for gamma in (0.0, 3.0, 1000.0):
        BK.igw_pmf(s, indptr, gamma, out)
        npt.assert_allclose(out, naive.igw(s, indptr, gamma), atol=1e-12)
        BK.fastcb_pmf(s, indptr, gamma, out)
        npt.assert_allclose(out, naive.fastcb(s, indptr, gamma), atol=1e-12)
    BK.epsgreedy_pmf(s, indptr, 0.1, out)
    npt.assert_allclose(out, naive.epsgreedy(s, indptr, 0.1))
    BK.ucb_pmf(s, w, indptr, 0.0, out)  # alpha 0 keeps the ties
    npt.assert_allclose(out, naive.ucb(s, w, indptr, 0.0))
    BK.ucb_pmf(s, w, indptr, 2.0, out)
    npt.assert_allclose(out, naive.ucb(s, w, indptr, 2.0))
    BK.ts_pmf(s, w, indptr, 0.7, 11, keys, 16, out)
    npt.assert_allclose(out, naive.ts(s, w, indptr, 0.7, 11, keys, 16))
    # Every pmf is a distribution.
    for fn in (lambda: BK.igw_pmf(s, indptr, 5.0, out), lambda: BK.fastcb_pmf(s, indptr, 5.0, out)):
        fn()
        assert (out >= -1e-12).all()
        npt.assert_allclose(np.add.reduceat(out, indptr[:-1]), 1.0)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("floor,cap", [(0.0, 1.0), (0.02, 1.0), (0.0, 0.1), (0.05, 0.1), (0.3, 0.2)])
def test_bounds_and_sampling_match_reference(seed, floor, cap):
    rng = np.random.default_rng(seed)
    n = 50
    indptr = random_csr(rng, n, kmax=6)
    nnz = indptr[-1]
    s = scores_with_ties(rng, nnz)
    p = np.empty(nnz)
    BK.igw_pmf(s, indptr, 4.0, p)
    ref = naive.bounds(p, s, indptr, floor, cap)
    BK.apply_bounds(p, s, indptr, floor, cap)
    npt.assert_allclose(p, ref, atol=1e-12)
    npt.assert_allclose(np.add.reduceat(p, indptr[:-1]), 1.0)
    keys = rng.integers(0, 2**63, size=n).astype(np.uint64)
    chosen, prob, explored = np.empty(n, np.int64), np.empty(n), np.empty(n, np.bool_)
    BK.sample_actions(p, s, indptr, 9, keys, chosen, prob, explored)
    rc, rp, re = naive.sample(p, s, indptr, 9, keys)
    npt.assert_array_equal(chosen, rc)
    npt.assert_allclose(prob, rp)
    npt.assert_array_equal(explored, re)


def test_sampling_frequencies_follow_the_pmf():
    indptr = np.array([0, 3], np.int64)
    p = np.array([0.2, 0.5, 0.3])
    s = np.array([0.0, 1.0, 0.5])
    counts = np.zeros(3)
    chosen, prob, explored = np.empty(1, np.int64), np.empty(1), np.empty(1, np.bool_)
    for k in range(20000):
        BK.sample_actions(p, s, indptr, 1, np.array([k], np.uint64), chosen, prob, explored)
        counts[chosen[0]] += 1
    npt.assert_allclose(counts / counts.sum(), p, atol=0.015)


def test_sampling_never_picks_zero_probability():
    indptr = np.array([0, 3], np.int64)
    p = np.array([0.0, 1.0, 0.0])
    s = np.zeros(3)
    chosen, prob, explored = np.empty(1, np.int64), np.empty(1), np.empty(1, np.bool_)
    for k in range(500):
        BK.sample_actions(p, s, indptr, 1, np.array([k], np.uint64), chosen, prob, explored)
        assert chosen[0] == 1 and prob[0] == 1.0


@pytest.mark.parametrize("kl", [False, True])
@pytest.mark.parametrize("sigma", [0.0, 0.1])
def test_mlp_matches_reference(kl, sigma):
    rng = np.random.default_rng(4)
    n, d, H, k = 12, 5, 7, 4
    X = rng.normal(size=(n, d))
    W1, b1 = rng.normal(size=(H, d)), rng.normal(size=H) * 0.1
    W2, b2 = rng.normal(size=(k, H)), rng.normal(size=k) * 0.1
    indptr = random_csr(rng, n, kmax=4)
    slots = rng.integers(0, k, size=indptr[-1])
    keys = rng.integers(0, 2**63, size=n).astype(np.uint64)
    out = np.empty(indptr[-1])
    BK.mlp_scores(X, indptr, slots, W1, b1, W2, b2, kl, sigma, 3, keys, out)
    npt.assert_allclose(out, naive.mlp_scores(X, indptr, slots, W1, b1, W2, b2, kl, sigma, 3, keys), rtol=1e-10)
    y = rng.uniform(size=n)
    cs = rng.integers(0, k, size=n)
    ref = naive.mlp_update(X, cs, y, keys, W1, b1, W2, b2, kl, sigma, 0.05, 3)
    BK.mlp_update(X, cs, y, keys, W1, b1, W2, b2, kl, sigma, 0.05, 3)
    for a, b in zip((W1, b1, W2, b2), ref, strict=True):
        npt.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_blake2b_kernel_equals_hashlib(seed):
    import hashlib

    from learners._blake2b import blake2b_8
    from learners._hashing import event_key, event_keys

    rng = np.random.default_rng(seed)
    lengths = [0, 1, 7, 8, 127, 128, 129, 255, 256, 257, 1000] + rng.integers(0, 400, size=200).tolist()
    msgs = [rng.integers(0, 256, size=n).astype(np.uint8).tobytes() for n in lengths]
    out = np.empty(len(msgs), dtype=np.uint64)
    blake2b_8(np.frombuffer(b"".join(msgs), dtype=np.uint8), np.cumsum([len(m) for m in msgs]), out)
    assert out.tolist() == [int.from_bytes(hashlib.blake2b(m, digest_size=8).digest(), "little") for m in msgs]
    ids = ["tx-1", "", "ünï\u2028", "x" * 300, "\x00", "€" * 50] + [f"e{i}" for i in range(50)]
    assert event_keys(ids).tolist() == [event_key(e) for e in ids]
    assert event_keys([f"a{i}" for i in range(5)]).tolist() == [event_key(f"a{i}") for i in range(5)]  # ASCII
    assert event_keys([]).shape == (0,)


def _hashed_case(rng, n, bits, dup):
    """Random sparse rows (some empty, some with explicit zeros or repeated indices) and offsets."""
    mask = (1 << bits) - 1
    sizes = rng.integers(0, 6, size=n)
    ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    idx = rng.integers(0, 1 << bits, size=ptr[-1]).astype(np.int64)
    if dup:  # collisions inside a row and across actions
        idx[::3] = idx[0] if len(idx) else 0
    val = rng.normal(size=ptr[-1]) * rng.choice([0.01, 1.0, 50.0], size=ptr[-1])
    val[rng.random(ptr[-1]) < 0.1] = 0.0
    offs = (rng.integers(0, 1 << 62, size=n) & mask).astype(np.int64)
    return mask, ptr, idx, val, offs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bits", [3, 12])
@pytest.mark.parametrize("constant", [True, False])
@pytest.mark.parametrize("dup", [False, True])
def test_hashed_update_and_scores_match_reference(seed, bits, constant, dup):
    from learners.bandit import _sparse as SK

    rng = np.random.default_rng(seed)
    n = 80
    mask, ptr, idx, val, offs = _hashed_case(rng, n, bits, dup)
    y = rng.random(n)
    omega = 1.0 / rng.choice([1.0, 0.5, 0.01, 1e-4], size=n)  # importance weights up to 10^4
    W = np.zeros((3, mask + 1))
    acc = np.zeros(2)
    # Two calls (state carries over between micro-batches).
    half = n // 2
    for lo, hi in ((0, half), (half, n)):
        p = ptr[lo:hi + 1] - ptr[lo]
        sl = slice(ptr[lo], ptr[hi])
        SK.hashed_update(p, idx[sl], val[sl], offs[lo:hi], y[lo:hi], omega[lo:hi], W, acc, mask, 0.5, constant)
    table: dict = {}
    racc = [0.0, 0.0]
    for i in range(n):
        feats = list(zip(idx[ptr[i]:ptr[i + 1]].tolist(), val[ptr[i]:ptr[i + 1]].tolist(), strict=True))
        naive.hashed_learn(table, racc, feats, int(offs[i]), y[i], omega[i], mask, 0.5, constant)
    ref = np.zeros_like(W)
    for j, cell in table.items():
        ref[:, j] = cell
    npt.assert_allclose(W, ref, rtol=1e-9, atol=1e-12)
    npt.assert_allclose(acc, racc, rtol=1e-12)
    # Scores: every event against three action offsets.
    indptr = np.arange(0, 3 * n + 1, 3, dtype=np.int64)
    aoffs = (rng.integers(0, 1 << 62, size=3 * n) & mask).astype(np.int64)
    out = np.empty(3 * n)
    SK.hashed_scores(ptr, idx, val, indptr, aoffs, W, mask, constant, out)
    for i in range(n):
        feats = list(zip(idx[ptr[i]:ptr[i + 1]].tolist(), val[ptr[i]:ptr[i + 1]].tolist(), strict=True))
        for p in range(3 * i, 3 * i + 3):
            npt.assert_allclose(out[p], naive.hashed_row_value(table, feats, int(aoffs[p]), mask, constant),
                                rtol=1e-9, atol=1e-12)


def test_hashed_update_never_overshoots_with_huge_importance_weights():
    """The invariant step moves the prediction toward the label, never past it, whatever 1/p."""
    from learners.bandit import _sparse as SK

    mask = 1023
    W = np.zeros((3, 1024))
    acc = np.zeros(2)
    ptr, idx, val, off = np.array([0, 3]), np.array([5, 77, 300]), np.array([1.0, -2.0, 0.3]), np.array([9])
    for y, omega in ((1.0, 1e6), (0.0, 1e9), (0.7, 1.0), (0.7, 1e12)):
        before = np.empty(1)
        SK.hashed_scores(ptr, idx, val, np.array([0, 1]), off, W, mask, True, before)
        SK.hashed_update(ptr, idx, val, off, np.array([y]), np.array([omega]), W, acc, mask, 0.5, True)
        after = np.empty(1)
        SK.hashed_scores(ptr, idx, val, np.array([0, 1]), off, W, mask, True, after)
        assert min(before[0], y) - 1e-9 <= after[0] <= max(before[0], y) + 1e-9
        assert np.isfinite(W).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_grouped_ridge_update_equals_row_by_row_bit_for_bit(seed):
    """The parallel update over actions' models gives exactly the single-thread result."""
    rng = np.random.default_rng(seed)
    n, d, k = 300, 9, 5
    X = rng.normal(size=(n, d)) * (rng.random(size=(n, d)) < 0.4)
    y = rng.random(n)
    slots = rng.integers(0, k, size=n)
    A1, t1 = np.stack([np.eye(d)] * k), np.zeros((k, d))
    A2, t2 = A1.copy(), t1.copy()
    LK.ridge_update_rows(A1, t1, X, slots, y)
    order, starts = LK.slot_groups(slots)
    assert len(starts) == k + 1 and (np.diff(slots[order]) >= 0).all()
    LK.ridge_update_groups(A2, t2, X, slots, y, order, starts, np.array([3, 0], dtype=np.int64))
    LK.ridge_update_groups(A2, t2, X, slots, y, order, starts, np.array([4, 1, 2], dtype=np.int64))
    np.testing.assert_array_equal(A1, A2)
    np.testing.assert_array_equal(t1, t2)


def test_two_learning_threads_give_the_one_thread_result_bit_for_bit():
    from learners.bandit import BanditLearner

    rng = np.random.default_rng(5)
    acts = tuple(f"a{i}" for i in range(6))
    one, two = (BanditLearner(n_features=7, actions=acts, seed=2, threads=t) for t in (1, 2))
    for _ in range(5):
        X = rng.normal(size=(300, 7))
        fb = {"event_key": np.arange(300, dtype=np.uint64), "X": X, "action": rng.choice(acts, 300).astype(object),
              "reward": rng.random(300)}
        one.learn(fb)
        two.learn(fb)
    for key, v in one.snapshot().items():
        np.testing.assert_array_equal(v, two.snapshot()[key], err_msg=key)
