"""Numba kernels of the SOR family: the solvers over CSR arrays and the policies' inner loops.

Solvers (``x`` is updated in place and is the initial guess; each returns ``(iterations,
relative residual ||b - Ax|| / ||b||, flag)``, flag 1 converged, 0 the cap reached, -1 a
breakdown, with ``iterations = -1`` then):

* :func:`sor_solve`: Successive Over-Relaxation, one forward sweep per iteration
  ``x_i += ω (b_i - Σ_j a_ij x_j) / a_ii`` (ω = 1: Gauss–Seidel), then the residual of the new x
  from the sweep's own sums and a pass over the strict upper part only.
* :func:`ssor_pcg`: conjugate gradients preconditioned by SSOR,
  ``M = (D + ωL) D⁻¹ (D + ωL)ᵀ / (ω(2 - ω))`` (A symmetric; the preconditioner of the authors'
  heat-equation experiment, MATLAB ``pcg`` with those factors).
* :func:`cg`: plain conjugate gradients (the baseline a user picks for an SPD system).

Every solver stops at the first iteration whose residual satisfies ``||r|| <= tol·||b||`` (the
criterion of scipy's ``cg`` with ``rtol``, and of the authors' runs with ``x0 = 0``), or at
``maxiter`` (then ``iterations == maxiter`` and the relative residual tells that it did not
converged). A CSR matrix here is ``(indptr, indices, data)``, columns sorted within each row,
every diagonal entry present and non-zero, ``diag`` its diagonal (:mod:`.systems` checks all).

Policies: :func:`tsallis_probs` (the 1/2-Tsallis-INF weights with their normaliser),
:func:`tsallis_learn`, :func:`chebyshev` (features), :func:`igw_choose` (inverse-gap weighting
over per-arm predictions, the draw keyed by (seed, event key)) and :func:`ridge_learn` (per-arm
least squares kept as an inverse Gram matrix, Sherman–Morrison).
"""

from __future__ import annotations

import numpy as np

from .._numba import jit
from .._random import draw_uniform

STREAM_CHOOSE = 0  # the stream of the arm draw in learners._random


# -- solvers ----------------------------------------------------------------------------------------
@jit
def _norm(v):
    s = 0.0
    for i in range(v.shape[0]):
        s += v[i] * v[i]
    return np.sqrt(s)


@jit
def _residual(indptr, indices, data, b, x, r):
    """r = b - A x; returns ||r||."""
    s = 0.0
    for i in range(b.shape[0]):
        acc = b[i]
        for k in range(indptr[i], indptr[i + 1]):
            acc -= data[k] * x[indices[k]]
        r[i] = acc
        s += acc * acc
    return np.sqrt(s)


@jit
def _matvec(indptr, indices, data, x, out):
    for i in range(x.shape[0]):
        acc = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            acc += data[k] * x[indices[k]]
        out[i] = acc


@jit
def sor_solve(indptr, indices, data, diag, b, x, omega, tol, maxiter):
    """SOR from the initial guess ``x`` (updated in place): (iterations, relative residual, flag:
    1 converged, 0 the cap reached, -1 diverged)."""
    n = b.shape[0]
    bnorm = _norm(b)
    if bnorm == 0.0:
        x[:] = 0.0
        return 0, 0.0, 1
    r = np.empty(n)
    delta = np.empty(n)
    scaled = np.empty(n)  # ω / a_ii
    for i in range(n):
        scaled[i] = omega / diag[i]
    upper = _split(indptr, indices)[1]  # where each row's strict upper part starts
    target = tol * bnorm
    rn = _residual(indptr, indices, data, b, x, r)
    if rn <= target:
        return 0, rn / bnorm, 1
    keep = 1.0 - omega
    for it in range(1, maxiter + 1):
        # The sweep: acc_i = b_i - Σ_j a_ij x_j with x_j already new for j < i.
        for i in range(n):
            acc = b[i]
            for k in range(indptr[i], indptr[i + 1]):
                acc -= data[k] * x[indices[k]]
            d = scaled[i] * acc
            x[i] += d
            delta[i] = d
            r[i] = keep * acc
        # The residual of the new x without a second full pass: r_i = (1 - ω) acc_i - Σ_{j>i} a_ij δ_j
        # (a_ii δ_i = ω acc_i; only the strict upper part changed after row i was swept).
        s = 0.0
        for i in range(n):
            acc = r[i]
            for k in range(upper[i], indptr[i + 1]):
                acc -= data[k] * delta[indices[k]]
            s += acc * acc
        rn = np.sqrt(s)
        if not np.isfinite(rn):
            return -1, rn, -1
        if rn <= target:
            return it, rn / bnorm, 1
    return maxiter, rn / bnorm, 0


@jit
def _split(indptr, indices):
    """Per row, where its diagonal entry and its strict upper part start (columns sorted)."""
    n = indptr.shape[0] - 1
    dpos = np.empty(n, dtype=np.int64)
    upper = np.empty(n, dtype=np.int64)
    for i in range(n):
        k = indptr[i]
        while k < indptr[i + 1] and indices[k] < i:
            k += 1
        dpos[i] = k
        while k < indptr[i + 1] and indices[k] <= i:
            k += 1
        upper[i] = k
    return dpos, upper


@jit
def ssor_apply(indptr, indices, data, diag, omega, r, z, dpos, upper):
    """z = M⁻¹ r for the SSOR preconditioner of a symmetric A (a forward, then a backward sweep);
    ``dpos``, ``upper``: from :func:`_split`."""
    n = r.shape[0]
    c = omega * (2.0 - omega)
    for i in range(n):  # (D + ωL) y = c r
        acc = c * r[i]
        for k in range(indptr[i], dpos[i]):
            acc -= omega * data[k] * z[indices[k]]
        z[i] = acc / diag[i]
    for i in range(n - 1, -1, -1):  # (D + ωLᵀ) z = D y; for symmetric A, Lᵀ is the strict upper part
        acc = 0.0
        for k in range(upper[i], indptr[i + 1]):
            acc += data[k] * z[indices[k]]
        z[i] -= omega * acc / diag[i]


@jit
def _pcg(indptr, indices, data, diag, b, x, omega, tol, maxiter, precondition):
    n = b.shape[0]
    bnorm = _norm(b)
    if bnorm == 0.0:
        x[:] = 0.0
        return 0, 0.0, 1
    dpos, upper = _split(indptr, indices)
    r = np.empty(n)
    z = np.empty(n)
    q = np.empty(n)
    target = tol * bnorm
    rn = _residual(indptr, indices, data, b, x, r)
    if rn <= target:
        return 0, rn / bnorm, 1
    if precondition:
        ssor_apply(indptr, indices, data, diag, omega, r, z, dpos, upper)
    else:
        z[:] = r
    p = z.copy()
    rz = 0.0
    for i in range(n):
        rz += r[i] * z[i]
    for it in range(1, maxiter + 1):
        _matvec(indptr, indices, data, p, q)
        pq = 0.0
        for i in range(n):
            pq += p[i] * q[i]
        if not (pq > 0.0) or not (rz > 0.0):  # A (or M) is not positive definite on this direction
            return -1, rn / bnorm, -1
        alpha = rz / pq
        s = 0.0
        for i in range(n):
            x[i] += alpha * p[i]
            r[i] -= alpha * q[i]
            s += r[i] * r[i]
        rn = np.sqrt(s)
        if rn <= target:
            return it, rn / bnorm, 1
        if precondition:
            ssor_apply(indptr, indices, data, diag, omega, r, z, dpos, upper)
        else:
            z[:] = r
        rz_new = 0.0
        for i in range(n):
            rz_new += r[i] * z[i]
        beta = rz_new / rz
        rz = rz_new
        for i in range(n):
            p[i] = z[i] + beta * p[i]
    return maxiter, rn / bnorm, 0


@jit
def ssor_pcg(indptr, indices, data, diag, b, x, omega, tol, maxiter):
    """SSOR-preconditioned CG from ``x`` (in place): (iterations, relative residual, flag: 1
    converged, 0 the cap reached, -1 a breakdown: A or the preconditioner not positive definite)."""
    return _pcg(indptr, indices, data, diag, b, x, omega, tol, maxiter, True)


@jit
def cg(indptr, indices, data, diag, b, x, tol, maxiter):
    """Plain CG from ``x`` (in place): (iterations, relative residual, flag as :func:`ssor_pcg`)."""
    return _pcg(indptr, indices, data, diag, b, x, 1.0, tol, maxiter, False)


# -- policies ---------------------------------------------------------------------------------------
@jit
def tsallis_probs(loss, eta, out):
    """The 1/2-Tsallis-INF distribution over arms for importance-weighted losses ``loss`` (already
    divided by the loss scale): ``p_i = 4 / (η (L_i - x))²`` with the normaliser ``x < min L``
    chosen so that Σ p = 1 (Newton's method inside a bracket that holds the root)."""
    k = loss.shape[0]
    loss = loss - loss.min()  # (the weights do not change with a common shift; large losses keep their gaps)
    hi = -2.0 / eta  # Σ p >= 1 here (the smallest term alone is 1)
    lo = -2.0 * np.sqrt(k) / eta  # Σ p <= 1 here (every term is at most 1/k)
    x = lo
    for _ in range(100):
        s = 0.0
        ds = 0.0
        for i in range(k):
            g = 1.0 / (eta * (loss[i] - x))
            s += 4.0 * g * g
            ds += 8.0 * eta * g * g * g
        f = s - 1.0
        if abs(f) < 1e-12:
            break
        if f > 0.0:
            hi = x
        else:
            lo = x
        nx = x - f / ds
        if not (lo < nx < hi):
            nx = 0.5 * (lo + hi)
        x = nx
    total = 0.0
    for i in range(k):
        g = 1.0 / (eta * (loss[i] - x))
        out[i] = 4.0 * g * g
        total += out[i]
    for i in range(k):
        out[i] /= total


@jit
def draw_arm(p, seed, key):
    """An arm drawn from ``p``, keyed by (seed, event key)."""
    u = draw_uniform(seed, key, STREAM_CHOOSE)
    acc = 0.0
    k = p.shape[0]
    for i in range(k):
        acc += p[i]
        if u < acc:
            return i
    for i in range(k - 1, -1, -1):  # rounding: the last arm with mass
        if p[i] > 0.0:
            return i
    return k - 1


@jit
def context_bins(contexts, lo, hi, nb, bins):
    """Each context's bin of [lo, hi] cut in ``nb``; returns the first row outside the range (or
    not finite), -1 if none."""
    for e in range(contexts.shape[0]):
        c = contexts[e]
        if not (lo <= c <= hi):  # (NaN fails both)
            return e
        bins[e] = min(nb - 1, int((c - lo) / (hi - lo) * nb))
    return -1


@jit
def tsallis_decide(loss, scale, rounds, bins, keys, seed, arm, prob, greedy):
    """Per event: the arm drawn from its bin's Tsallis-INF distribution (η = 2/√t, t = the bin's
    learned rounds + 1), its probability, and whether it is the bin's least-loss arm. ``loss``:
    bins×arms importance-weighted losses, ``scale``: per bin; ``bins``: per event."""
    nb, k = loss.shape
    probs = np.empty((nb, k))
    best = np.full(nb, -1)
    for e in range(keys.shape[0]):
        b = bins[e]
        if best[b] < 0:
            eta = 2.0 / np.sqrt(rounds[b] + 1.0)
            tsallis_probs(loss[b] / scale[b], eta, probs[b])
            best[b] = np.argmin(loss[b])
        a = draw_arm(probs[b], seed, keys[e])
        arm[e] = a
        prob[e] = probs[b, a]
        greedy[e] = a == best[b]


@jit
def tsallis_learn(loss, total, rounds, scale, bins, arms, probs, costs):
    """Learns rows in order: the bin's running mean cost sets its scale (mean - 1, at least 1: the
    authors' normalisation), and ``(cost - 1) / p`` is added to the played arm's loss."""
    for e in range(arms.shape[0]):
        b = bins[e]
        rounds[b] += 1.0
        total[b] += costs[e]
        scale[b] = max(1.0, total[b] / rounds[b] - 1.0)
        loss[b, arms[e]] += (costs[e] - 1.0) / probs[e]


@jit
def chebyshev(u, out):
    """T_0..T_{m-1} at ``u`` in [-1, 1] (``out`` of length m)."""
    m = out.shape[0]
    out[0] = 1.0
    if m > 1:
        out[1] = u
    for j in range(2, m):
        out[j] = 2.0 * u * out[j - 1] - out[j - 2]


@jit
def igw_choose(pred, gamma, seed, key, p):
    """Inverse-gap weighting over per-arm predicted costs (already divided by the cost scale): the
    lowest-cost arm i* gets what the others leave, arm i ≠ i* gets ``1 / (K + γ (ŷ_i - ŷ*))``.
    Returns the drawn arm and i*; ``p`` holds the distribution."""
    k = pred.shape[0]
    best = 0
    for i in range(1, k):
        if pred[i] < pred[best]:
            best = i
    rest = 0.0
    for i in range(k):
        if i != best:
            p[i] = 1.0 / (k + gamma * (pred[i] - pred[best]))
            rest += p[i]
    p[best] = 1.0 - rest
    return draw_arm(p, seed, key), best


@jit
def chebcb_decide(theta, contexts, lo, hi, gamma, scale, keys, seed, arm, prob, greedy):
    """Per event: Chebyshev features of its context on [lo, hi], the per-arm predicted costs
    θ_a·f, and the inverse-gap-weighted draw (``greedy[e]``: it drew the lowest predicted cost)."""
    k, m = theta.shape
    f = np.empty(m)
    pred = np.empty(k)
    p = np.empty(k)
    for e in range(keys.shape[0]):
        u = 2.0 * (contexts[e] - lo) / (hi - lo) - 1.0
        chebyshev(min(1.0, max(-1.0, u)), f)
        for a in range(k):
            s = 0.0
            for j in range(m):
                s += theta[a, j] * f[j]
            pred[a] = s / scale
        a, best = igw_choose(pred, gamma, seed, keys[e], p)
        arm[e] = a
        prob[e] = p[a]
        greedy[e] = a == best


@jit
def ridge_learn(P, bvec, theta, counts, stats, contexts, lo, hi, arms, costs, normalise):
    """Learns rows (targets ``costs``) in order, per played arm: the prediction error before the
    update (with ``normalise``, divided by the mean target so far, at least 1) is squared into
    ``stats[2]``; the arm's inverse Gram matrix ``P`` (ridge: it starts at I/λ), ``b = Σ y·f`` and
    ``θ = P b`` are updated (Sherman–Morrison). ``stats[0]``, ``stats[1]``: the sum of targets and
    the rows learned."""
    m = theta.shape[1]
    f = np.empty(m)
    pf = np.empty(m)
    for e in range(arms.shape[0]):
        a = arms[e]
        c = costs[e]
        u = 2.0 * (contexts[e] - lo) / (hi - lo) - 1.0
        chebyshev(min(1.0, max(-1.0, u)), f)
        if counts[a] > 0:
            pred = 0.0
            for j in range(m):
                pred += theta[a, j] * f[j]
            err = (pred - c) / max(1.0, stats[0] / stats[1]) if normalise else pred - c
            stats[2] += err * err
        stats[0] += c
        stats[1] += 1.0
        denom = 1.0
        for i in range(m):
            acc = 0.0
            for j in range(m):
                acc += P[a, i, j] * f[j]
            pf[i] = acc
            denom += f[i] * acc
        for i in range(m):
            for j in range(m):
                P[a, i, j] -= pf[i] * pf[j] / denom
        for j in range(m):
            bvec[a, j] += c * f[j]
        for i in range(m):
            acc = 0.0
            for j in range(m):
                acc += P[a, i, j] * bvec[a, j]
            theta[a, i] = acc
        counts[a] += 1
