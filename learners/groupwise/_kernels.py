"""Numba kernels of groupwise-regret prediction: sleeping experts (one online regressor per group)
combined by AdaNormalHedge weights, after Acharya, Arunachaleswaran, Kannan, Roth and Ziani,
"Oracle Efficient Algorithms for Groupwise Regret" (ICLR 2024; the Blum–Lykouris reduction with one
expert per group), and Luo & Schapire, "Achieving All with No Parameters: AdaNormalHedge" (COLT
2015). Reconstructed from the authors' public code as described in ../shared/research
(sor_groupwise.md, section 2.1); nothing copied.

State over G groups and d features (stacked arrays, updated in place):

* ridge experts: ``P[g]`` (d×d, (λI + Σ x xᵀ)⁻¹ over the group's rows) and ``theta[g]``; logistic
  experts: ``theta[g]`` and AdaGrad sums ``gsum[g]``;
* AdaNormalHedge: ``R[g]`` (cumulative regret of the combination against expert g, accrued only
  while g is awake) and ``C[g]`` (cumulative |regret|);
* bookkeeping per group: ``n[g]`` rows, ``bsum[g]`` (Σ y x), ``yy[g]`` (Σ y²), with ``P`` (ridge)
  or ``gram`` (logistic: Σ x xᵀ) the sufficient statistics of the best fixed linear model in
  hindsight on the group's rows (see :func:`hindsight_loss`), and the cumulative
  squared losses of the mixture rule (``loss[g, 0]``) and of the randomized rule (``loss[g, 1]``,
  its expected loss Σ p_h l_h, as the paper scores it).

Group membership comes as CSR (``gptr``, ``gidx``: the awake groups of row i are
``gidx[gptr[i]:gptr[i+1]]``).
"""

from __future__ import annotations

import math

import numpy as np

from .._numba import jit
from .._random import draw_uniform
from ..linear._kernels import sm_update

RIDGE, LOGISTIC = 0, 1


@jit
def anh_log_weight(R, C):
    """log of AdaNormalHedge's weight ½(exp([R+1]₊²/3(C+1)) − exp([R−1]₊²/3(C+1))); −inf for 0."""
    c3 = 3.0 * (C + 1.0)
    a = max(R + 1.0, 0.0) ** 2 / c3
    b = max(R - 1.0, 0.0) ** 2 / c3
    if a <= 0.0:
        return -np.inf
    return a + math.log1p(-math.exp(b - a)) - math.log(2.0)


@jit
def expert_predict(base, theta, g, x):
    s = 0.0
    for j in range(x.shape[0]):
        s += theta[g, j] * x[j]
    if base == LOGISTIC:
        return 1.0 / (1.0 + math.exp(-s))
    return s


@jit
def _weights(R, C, gidx, lo, hi, p, anchor):
    """Normalised AdaNormalHedge weights of the awake groups gidx[lo:hi] into p[0:hi-lo]
    (uniform when every weight is 0). With ``anchor``, the prior weight of the always-on group
    (index 0) equals that of the other awake groups together (AdaNormalHedge with a prior; the
    paper's code uses a uniform prior)."""
    m = hi - lo
    top = -np.inf
    for q in range(m):
        p[q] = anh_log_weight(R[gidx[lo + q]], C[gidx[lo + q]])
        if anchor and m > 1 and gidx[lo + q] == 0:
            p[q] += math.log(m - 1.0)
        if p[q] > top:
            top = p[q]
    if top == -np.inf:
        for q in range(m):
            p[q] = 1.0 / m
        return
    total = 0.0
    for q in range(m):
        p[q] = math.exp(p[q] - top)
        total += p[q]
    for q in range(m):
        p[q] /= total


@jit
def predict_rows(base, anchor, X, gptr, gidx, theta, R, C, seed, keys, mix, rand, expert):
    """Both prediction rules for every row: ``mix[i]`` = Σ_g p_g ŷ_g over the awake groups, and
    ``rand[i]`` = ŷ_g of the group ``expert[i]`` drawn with probability p_g (the draw is a
    function of (seed, event key), so a replay draws the same)."""
    p = np.empty(R.shape[0])
    for i in range(X.shape[0]):
        lo, hi = gptr[i], gptr[i + 1]
        _weights(R, C, gidx, lo, hi, p, anchor)
        u = draw_uniform(seed, keys[i], 0)
        s = 0.0
        acc = 0.0
        pick = gidx[hi - 1]
        chosen = False
        for q in range(hi - lo):
            g = gidx[lo + q]
            yg = expert_predict(base, theta, g, X[i])
            s += p[q] * yg
            acc += p[q]
            if not chosen and u < acc:
                pick = g
                chosen = True
                rand[i] = yg
        if not chosen:
            rand[i] = expert_predict(base, theta, pick, X[i])
        mix[i] = s
        expert[i] = pick


@jit
def learn_rows(base, anchor, X, gptr, gidx, y, P, theta, gsum, gram, R, C, n, bsum, yy, loss, lr):
    """Learns labelled rows in order. For each row: the awake experts' predictions and the weights
    (as they are before this row), the losses l_g = (ŷ_g − y)², the combination's expected loss
    l̂ = Σ p_g l_g; then every awake g accrues r_g = l̂ − l_g (R += r, C += |r|), and its expert
    learns the row (ridge: Sherman–Morrison; logistic: an AdaGrad step on the log loss, and the
    group's Σ x xᵀ in ``gram`` for the hindsight comparator, which ridge reads off P instead)."""
    G = R.shape[0]
    d = X.shape[1]
    p = np.empty(G)
    yh = np.empty(G)
    work = np.empty(2 * d)
    for i in range(X.shape[0]):
        lo, hi = gptr[i], gptr[i + 1]
        m = hi - lo
        _weights(R, C, gidx, lo, hi, p, anchor)
        x = X[i]
        yi = y[i]
        mix = 0.0
        lhat = 0.0
        for q in range(m):
            g = gidx[lo + q]
            yh[q] = expert_predict(base, theta, g, x)
            mix += p[q] * yh[q]
            lhat += p[q] * (yh[q] - yi) ** 2
        lmix = (mix - yi) ** 2
        for q in range(m):
            g = gidx[lo + q]
            r = lhat - (yh[q] - yi) ** 2
            R[g] += r
            C[g] += abs(r)
            n[g] += 1
            yy[g] += yi * yi
            loss[g, 0] += lmix
            loss[g, 1] += lhat
            for j in range(d):
                bsum[g, j] += yi * x[j]
            if base == RIDGE:
                sm_update(P[g], theta[g], x, yi, work)
            else:
                for a in range(d):
                    if x[a] != 0.0:
                        for b in range(d):
                            gram[g, a, b] += x[a] * x[b]
                grad = yh[q] - yi
                for j in range(d):
                    gj = grad * x[j]
                    if gj != 0.0:
                        gsum[g, j] += gj * gj
                        theta[g, j] -= lr * gj / math.sqrt(gsum[g, j])


def hindsight_loss(gram: np.ndarray, bsum: np.ndarray, yy: float) -> float:
    """min over θ of Σ (y − θ·x)² on a group's rows, from Σ x xᵀ, Σ y x and Σ y²: Σ y² − bᵀθ*
    with θ* a least-squares solution (unregularised; pseudo-inverse when singular)."""
    theta = np.linalg.lstsq(gram, bsum, rcond=None)[0]
    return float(max(yy - bsum @ theta, 0.0))
