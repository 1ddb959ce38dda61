"""The SOR family's kernels and learners against slow, obvious references, and the paper's claims
checked empirically (Tsallis-INF's regret sublinear; ChebCB approaching the per-instance best)."""

from __future__ import annotations

import math

import numpy as np
import numpy.testing as npt
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import learners
from learners.sor import _kernels as K
from learners.sor.learner import AUTHORS_GRID, RelaxationTuner
from learners.sor.systems import SystemRejected, check_system, golden_omega, poisson, solve, young_omega


def random_spd(n: int, rng: np.random.Generator, density: float = 0.3) -> sp.csr_matrix:
    """A sparse symmetric, strictly diagonally dominant matrix (so SPD, and SOR converges)."""
    M = sp.random(n, n, density=density, random_state=np.random.RandomState(int(rng.integers(1 << 30))))
    M = (M + M.T) * 0.5
    M.data = -np.abs(M.data)
    d = np.asarray(abs(M).sum(axis=1)).ravel() + rng.uniform(0.1, 1.0, n)
    return sp.csr_matrix(M + sp.diags(d))


def system_of(A: sp.csr_matrix, b: np.ndarray):
    A = sp.csr_matrix(A)
    A.sort_indices()
    return check_system(A.indptr, A.indices, A.data, b, n=A.shape[1])


# -- solvers ----------------------------------------------------------------------------------------
def sor_reference(A: np.ndarray, b: np.ndarray, omega: float, tol: float, maxiter: int):
    """SOR by the textbook: x_i ← (1-ω) x_i + ω (b_i - Σ_{j≠i} a_ij x_j) / a_ii, row by row."""
    n = len(b)
    x = np.zeros(n)
    bn = math.sqrt(sum(v * v for v in b))
    for it in range(1, maxiter + 1):
        for i in range(n):
            s = sum(A[i, j] * x[j] for j in range(n) if j != i)
            x[i] = (1 - omega) * x[i] + omega * (b[i] - s) / A[i, i]
        r = b - A @ x
        if math.sqrt(float(r @ r)) <= tol * bn:
            return it, x
    return maxiter, x


@pytest.mark.parametrize("seed", range(4))
def test_sor_kernel_equals_the_textbook_iteration(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 14))
    A = random_spd(n, rng)
    b = rng.normal(size=n)
    for omega in (0.7, 1.0, 1.3, 1.7):
        ref_it, ref_x = sor_reference(A.toarray(), b, omega, 1e-9, 5000)
        r = solve(system_of(A, b), "sor", omega, tol=1e-9, maxiter=5000)
        assert r.converged and r.iterations == ref_it
        npt.assert_allclose(r.x, ref_x, rtol=1e-9, atol=1e-12)


def scipy_iterations(A, b, tol, M=None, x0=None):
    count = [0]
    x, info = spla.cg(A, b, x0=x0, rtol=tol, atol=0.0, maxiter=10_000, M=M,
                      callback=lambda xk: count.__setitem__(0, count[0] + 1))
    assert info == 0
    return count[0], x


def ssor_operator(A: sp.csr_matrix, omega: float) -> spla.LinearOperator:
    """M⁻¹ for M = (D + ωL) D⁻¹ (D + ωL)ᵀ / (ω(2-ω)), by two sparse triangular solves (scipy)."""
    D = sp.diags(A.diagonal())
    lower = sp.csr_matrix(D + omega * sp.tril(A, -1))
    upper = sp.csr_matrix(lower.T)

    def apply(r):
        y = spla.spsolve_triangular(lower, omega * (2 - omega) * r, lower=True)
        return spla.spsolve_triangular(upper, D @ y, lower=False)

    return spla.LinearOperator(A.shape, matvec=apply)


@pytest.mark.parametrize("seed", range(4))
def test_cg_and_ssor_pcg_kernels_take_scipys_iterations(seed):
    rng = np.random.default_rng(10 + seed)
    n = int(rng.integers(20, 60))
    A = random_spd(n, rng, density=0.15)
    b = rng.normal(size=n)
    x0 = rng.normal(size=n) * 0.1
    s = system_of(A, b)
    it, x = scipy_iterations(A, b, 1e-8, x0=x0)
    r = solve(s, "cg", tol=1e-8, x0=x0)
    assert r.converged and abs(r.iterations - it) <= 1  # (rounding may move the last step by one)
    npt.assert_allclose(A @ r.x, b, atol=1e-7 * np.linalg.norm(b))
    for omega in (1.0, 1.4, 1.8):
        it, x = scipy_iterations(A, b, 1e-8, M=ssor_operator(A, omega))
        r = solve(s, "ssor-pcg", omega, tol=1e-8)
        assert r.converged and abs(r.iterations - it) <= 1
        npt.assert_allclose(r.x, x, atol=1e-6 * np.linalg.norm(x))


def test_poisson_solvers_and_iteration_cap():
    s = poisson(12, 0.05)
    sor1 = solve(s, "sor", 1.0)
    best = solve(s, "sor", young_omega(s))
    assert sor1.converged and best.converged and best.iterations < sor1.iterations / 3
    capped = solve(s, "sor", 1.0, maxiter=10)
    assert not capped.converged and capped.iterations == 10 and capped.residual > 1e-8
    warm = solve(s, "ssor-pcg", 1.5, x0=solve(s, "ssor-pcg", 1.5).x)
    assert warm.converged and warm.iterations == 0


@pytest.mark.parametrize("m", [4, 7, 10])
def test_young_omega_matches_the_dense_eigen_solve_and_the_best_omega(m):
    s = poisson(m, 0.0)
    rho = math.cos(math.pi / (m + 1))  # the 5-point Laplacian's Jacobi radius
    npt.assert_allclose(young_omega(s), 2 / (1 + math.sin(math.pi / (m + 1))), rtol=1e-10)
    A = s.dense()
    J = np.eye(len(A)) - A / np.diag(A)[:, None]
    npt.assert_allclose(max(abs(np.linalg.eigvals(J))), rho, rtol=1e-10)
    fine = np.linspace(1.0, 1.99, 100)
    its = [solve(s, "sor", w, tol=1e-10).iterations for w in fine]
    # Young's ω is optimal for the asymptotic rate: on a small grid its count is near the best.
    assert solve(s, "sor", young_omega(s), tol=1e-10).iterations <= 1.15 * min(its) + 2


def test_golden_section_finds_the_minimum_of_a_unimodal_cost():
    w, c = golden_omega(lambda w: (w - 1.63) ** 2, 1.0, 1.95, evaluations=20)
    assert abs(w - 1.63) < 1e-3 and c < 1e-6


@pytest.mark.parametrize("args,reason", [
    (([0, 1, 2], [0, 1], [1.0, 1.0], [1.0]), "not_square"),
    (([0, 1, 2], [0, 2], [1.0, 1.0], [1.0, 1.0]), "not_square"),
    (([0, 1, 2], [0, 1], [1.0, float("nan")], [1.0, 1.0]), "non_finite"),
    (([0, 1, 2], [0, 1], [1.0, 1.0], [1.0, float("inf")]), "non_finite"),
    (([0, 1, 2], [0, 0], [1.0, 1.0], [1.0, 1.0]), "singular_diagonal"),
    (([0, 2, 3], [0, 0, 1], [1.0, 1.0, 1.0], [1.0, 1.0]), "bad_structure"),
    (([0, 3, 2], [0, 1, 1], [1.0, 1.0, 1.0], [1.0, 1.0]), "bad_structure"),
    (([0, 1, 2], ["a", 1], [1.0, 1.0], [1.0, 1.0]), "bad_structure"),
])
def test_bad_systems_are_refused_with_their_reason(args, reason):
    with pytest.raises(SystemRejected) as e:
        check_system(*args)
    assert e.value.reason == reason


def test_oversize_non_symmetric_and_indefinite_systems_are_refused():
    with pytest.raises(SystemRejected, match="oversize"):
        check_system([0, 1, 2], [0, 1], [1.0, 1.0], [1.0, 1.0], max_n=1)
    s = check_system([0, 2, 3], [0, 1, 1], [2.0, 1.0, 2.0], [1.0, 1.0])
    assert solve(s, "sor", 1.0).converged
    with pytest.raises(SystemRejected, match="not_symmetric"):
        solve(s, "ssor-pcg", 1.5)
    indefinite = check_system([0, 2, 4], [0, 1, 0, 1], [1.0, 3.0, 3.0, 1.0], [1.0, 0.0])
    with pytest.raises(SystemRejected, match="not_spd"):
        solve(indefinite, "cg")
    negative = check_system([0, 1, 2], [0, 1], [-1.0, 1.0], [1.0, 1.0])
    with pytest.raises(SystemRejected, match="not_spd"):
        solve(negative, "ssor-pcg", 1.2)


# -- policies against plain references --------------------------------------------------------------
def tsallis_reference(loss: np.ndarray, eta: float) -> np.ndarray:
    """The 1/2-Tsallis-INF weights by bisection on the normaliser (slow, obviously right)."""
    lo, hi = loss.min() - 2 * math.sqrt(len(loss)) / eta, loss.min() - 2 / eta
    for _ in range(200):
        x = (lo + hi) / 2
        s = sum(4 / (eta * (v - x)) ** 2 for v in loss)
        lo, hi = (x, hi) if s < 1 else (lo, x)
    p = np.array([4 / (eta * (v - (lo + hi) / 2)) ** 2 for v in loss])
    return p / p.sum()


def test_tsallis_weights_of_huge_losses_keep_their_gaps():
    loss = np.array([1e17, 1e17 + 3e15, 2e17])
    out = np.empty(3)
    K.tsallis_probs(loss, 0.01, out)
    npt.assert_allclose(out, tsallis_reference(loss - loss.min(), 0.01), rtol=1e-8)
    assert out[0] > out[1] > out[2] >= 0


@pytest.mark.parametrize("seed", range(5))
def test_tsallis_normaliser_equals_the_bisection_reference(seed):
    rng = np.random.default_rng(seed)
    for k in (1, 2, 5, 20):
        loss = rng.exponential(rng.uniform(0.1, 50), size=k) * rng.integers(0, 2, size=k)
        for eta in (2.0, 0.3, 0.01):
            out = np.empty(k)
            K.tsallis_probs(loss, eta, out)
            npt.assert_allclose(out, tsallis_reference(loss, eta), rtol=1e-8, atol=1e-12)


class TsallisReference:
    """The authors' TsallisINF.m, in Python, round by round (bisection for the normaliser)."""

    def __init__(self, k: int):
        self.K = np.zeros(k)
        self.losses: list[float] = []

    def probs(self) -> np.ndarray:
        t = len(self.losses) + 1
        scale = max(1.0, np.mean(self.losses) - 1) if self.losses else 1.0
        return tsallis_reference(self.K / scale, 2 / math.sqrt(t))

    def update(self, arm: int, p: float, loss: float) -> None:
        self.losses.append(loss)
        self.K[arm] += (loss - 1) / p


@pytest.mark.parametrize("policy,bins", [("tsallis-inf", 1), ("tsallis-inf-cb", 4)])
def test_tsallis_learners_follow_the_reference_round_by_round(policy, bins):
    rng = np.random.default_rng(7)
    grid = np.array(AUTHORS_GRID)
    t = RelaxationTuner(policy=policy, bins=bins, seed=5, context_range=(0.0, 2.0))
    refs = [TsallisReference(len(grid)) for _ in range(bins)]
    for i in range(300):
        c = rng.uniform(0.0, 2.0)
        out = t.process({"event_key": np.array([i], dtype=np.uint64), "context": np.array([c])})
        b = min(bins - 1, int(c / 2.0 * bins))
        p = refs[b].probs()
        a = int(out["arm"][0])
        npt.assert_allclose(out["prob"][0], p[a], rtol=1e-7)
        cost = 80 + 300 * (grid[a] - 1.6) ** 2 + rng.uniform(0, 10)
        t.learn({"arm": out["arm"], "prob": out["prob"], "cost": np.array([cost]), "context": np.array([c])})
        refs[b].update(a, float(out["prob"][0]), cost)


def test_the_draws_follow_the_probabilities():
    t = RelaxationTuner(policy="tsallis-inf", seed=2)
    t.learn({"arm": np.arange(20), "prob": np.full(20, 0.05), "cost": 50.0 + 10 * np.arange(20.0)})
    n = 40_000
    out = t.process({"event_key": np.arange(n, dtype=np.uint64)})
    scale = max(1.0, (50.0 + 10 * np.arange(20.0)).mean() - 1)
    expect = tsallis_reference((np.arange(20.0) * 10 + 49) / 0.05 / scale, 2 / math.sqrt(21))
    npt.assert_allclose(out["prob"], expect[out["arm"]], rtol=1e-8)
    freq = np.bincount(out["arm"], minlength=20) / n
    assert np.all(np.abs(freq - expect) <= 4 * np.sqrt(expect * (1 - expect) / n) + 1e-9)


def cheb(c, lo, hi, m):
    u = 2 * (c - lo) / (hi - lo) - 1
    return np.polynomial.chebyshev.chebvander(np.array([u]), m - 1)[0]


@pytest.mark.parametrize("target", ["log", "cost"])
def test_chebcb_fits_and_weights_follow_the_reference_round_by_round(target):
    """Per arm the ridge fit equals a batch solve on the arm's whole history; the decision's
    distribution is inverse-gap weighting over those fits with the documented γ_t."""
    rng = np.random.default_rng(11)
    lo, hi, m, lam = -1.0, 3.0, 6, 1e-3
    grid = np.array(AUTHORS_GRID)
    t = RelaxationTuner(policy="chebcb", context_range=(lo, hi), degree=m, lam=lam, seed=9, target=target)

    def y_of(cost):
        return math.log1p(cost) if target == "log" else cost

    hist: dict[int, list[tuple[np.ndarray, float]]] = {a: [] for a in range(len(grid))}
    costs: list[float] = []
    sq = 0.0
    for i in range(250):
        c = rng.uniform(lo, hi)
        out = t.process({"event_key": np.array([i], dtype=np.uint64), "context": np.array([c])})
        theta = np.zeros((len(grid), m))
        for a, rows in hist.items():
            if rows:
                F = np.array([f for f, _ in rows])
                y = np.array([v for _, v in rows])
                theta[a] = np.linalg.solve(lam * np.eye(m) + F.T @ F, F.T @ y)
        scale = max(1.0, np.mean(costs)) if costs and target == "cost" else 1.0
        pred = theta @ cheb(c, lo, hi, m) / scale
        tt = len(costs) + 1
        gamma = 2 * tt * math.sqrt(len(grid) / (sq / tt + 2.0))
        best = int(np.argmin(pred))
        p = 1 / (len(grid) + gamma * (pred - pred[best]))
        p[best] = 0
        p[best] = 1 - p.sum()
        a = int(out["arm"][0])
        npt.assert_allclose(out["prob"][0], p[a], rtol=1e-6, atol=1e-12)
        cost = 60 + 500 * (grid[a] - (1.2 + 0.15 * c)) ** 2 + rng.uniform(0, 4)
        if hist[a]:
            sq += ((theta[a] @ cheb(c, lo, hi, m) - y_of(cost)) / scale) ** 2
        t.learn({"arm": out["arm"], "prob": out["prob"], "cost": np.array([cost]), "context": np.array([c])})
        hist[a].append((cheb(c, lo, hi, m), y_of(cost)))
        costs.append(y_of(cost))
    npt.assert_allclose(t.gamma(), 2 * 251 * math.sqrt(20 / (sq / 251 + 2.0)), rtol=1e-9)


def test_contexts_outside_the_range_and_missing_contexts_are_refused():
    t = learners.create("sor-chebcb", context_range=(0.0, 1.0))
    with pytest.raises(learners.InvalidInput, match="context_range"):
        t.process({"event_key": np.array([1], dtype=np.uint64), "context": np.array([1.5])})
    with pytest.raises(learners.InvalidInput, match="needs it"):
        t.process({"event_key": np.array([1], dtype=np.uint64)})
    with pytest.raises(ValueError, match="policy"):
        RelaxationTuner(policy="magic")
    with pytest.raises(ValueError, match=r"\(0, 2\)"):
        RelaxationTuner(omegas=(1.0, 2.5))


# -- the paper's claims, empirically ----------------------------------------------------------------
def play(t: RelaxationTuner, cost_of, contexts: np.ndarray, seed: int) -> np.ndarray:
    """Plays one event at a time (decide, then learn its cost); the cost paid per round."""
    paid = np.empty(len(contexts))
    rng = np.random.default_rng(seed)
    for i, c in enumerate(contexts):
        out = t.process({"event_key": np.array([i], dtype=np.uint64), "context": np.array([c])})
        a = int(out["arm"][0])
        paid[i] = cost_of(a, c, rng)
        t.learn({"arm": out["arm"], "prob": out["prob"], "cost": np.array([paid[i]]), "context": np.array([c])})
    return paid


def test_tsallis_inf_regret_against_the_best_fixed_omega_grows_sublinearly():
    """Stochastic costs per arm (the iteration count of a fixed system plus noise): the regret
    against the best arm's mean, averaged over seeds, grows much slower than T."""
    grid = np.array(AUTHORS_GRID)
    means = 90 + 2500 * (grid - 1.72) ** 2

    def cost(a, c, rng):
        return means[a] + rng.normal(0, 5)

    T = 4000
    regrets = []
    for seed in range(4):
        paid = play(RelaxationTuner(policy="tsallis-inf", seed=seed), cost, np.zeros(T), seed)
        regrets.append(np.cumsum(paid - means.min()))
    r = np.mean(regrets, axis=0)
    assert r[T - 1] / r[T // 4 - 1] < 4 ** 0.75  # sublinear, with margin: linear regret gives 4
    assert r[T - 1] / T < 0.25 * (means.mean() - means.min())  # well below uniform play's regret rate


def test_chebcb_approaches_the_per_instance_best():
    """Context-dependent costs with a smooth per-instance optimum ω*(c): after a warm-up, ChebCB's
    mean cost closes most of the gap from the best fixed arm to the per-instance best."""
    grid = np.array(AUTHORS_GRID)
    lo, hi = 0.0, 1.0

    def mean_cost(a, c):
        return 80 + 3000 * (grid[a] - (1.25 + 0.65 * c)) ** 2

    def cost(a, c, rng):
        return mean_cost(a, c) + rng.normal(0, 3)

    rng = np.random.default_rng(0)
    contexts = rng.beta(0.5, 1.5, 3000)
    table = np.array([[mean_cost(a, c) for a in range(len(grid))] for c in contexts])
    after = slice(len(contexts) // 5, None)
    best_fixed = table[after].mean(axis=0).min()
    instance_best = table[after].min(axis=1).mean()
    closed = []
    for seed in range(3):
        paid = play(RelaxationTuner(policy="chebcb", context_range=(lo, hi), seed=seed), cost, contexts, seed)
        closed.append((best_fixed - paid[after].mean()) / (best_fixed - instance_best))
    assert np.median(closed) >= 0.8, closed
