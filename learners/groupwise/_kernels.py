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
* the adaptive prior (``ADAPTIVE``, see :func:`_weights`), ``adapt`` (5×G; 5×0 under a fixed
  prior): ``adapt[0, g]``, ``adapt[1, g]`` the uniform track's R and C (``R``, ``C`` are then the
  anchor track's), ``adapt[2, g]`` and ``adapt[3, g]`` the cumulative losses of the anchor and the
  uniform track on group g's rows, ``adapt[4, g]`` AdaHedge's cumulative mixability gap Δ_g;
* bookkeeping per group: ``n[g]`` rows, ``bsum[g]`` (Σ y x), ``yy[g]`` (Σ y²), with ``P`` (ridge)
  or ``gram`` (logistic: Σ x xᵀ) the sufficient statistics of the best fixed linear model in
  hindsight on the group's rows (see :func:`hindsight_loss`), and the cumulative
  squared losses of the mixture rule (``loss[g, 0]``) and of the randomized rule (``loss[g, 1]``,
  its expected loss Σ p_h l_h, as the paper scores it).

The adaptive prior is eddy's own design (see :func:`_weights`), after de Rooij, van Erven,
Grünwald and Koolen, "Follow the Leader If You Can, Hedge If You Must" (JMLR 2014) for AdaHedge.

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
MIXTURE, RANDOMIZED = 0, 1
UNIFORM, ANCHOR, ADAPTIVE = 0, 1, 2
TIE = 1e-12  # the adaptive prior: two tracks' round losses this close (relatively) are one loss


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
def _track(R, C, gidx, lo, hi, p, anchor):
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
def hedge_weight(la, lu, gap):
    """AdaHedge's weight of the first of two experts with cumulative losses ``la`` and ``lu`` and
    cumulative mixability gap ``gap``: 1/(1 + exp(η(la − lu))) with η = ln 2 / gap; with gap = 0
    (η = ∞) follow the leader, ½ at a tie."""
    if gap <= 0.0:
        if la < lu:
            return 1.0
        if lu < la:
            return 0.0
        return 0.5
    z = math.log(2.0) / gap * (la - lu)
    if z > 0.0:
        e = math.exp(-z)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(z))


@jit
def hedge_gap(la, lu, gap, a, ea, eu):
    """AdaHedge's mixability gap δ = h − m ≥ 0 of one round with weight ``a`` of the first expert
    (:func:`hedge_weight` of ``la``, ``lu``, ``gap``) and round losses ``ea``, ``eu``: h = a·ea +
    (1 − a)·eu, and the mix loss m = −(1/η) ln Σ_k w_k exp(−η e_k), which at η = ∞ is
    min(la + ea, lu + eu) − min(la, lu)."""
    h = a * ea + (1.0 - a) * eu
    lo = min(la, lu)
    if gap <= 0.0:
        return max(h - (min(la + ea, lu + eu) - lo), 0.0)
    eta = math.log(2.0) / gap
    e0 = min(ea, eu)
    w = a * math.exp(-eta * (ea - e0)) + (1.0 - a) * math.exp(-eta * (eu - e0))  # one of them is exp(0)
    if w > 0.0:
        mix = e0 - math.log(w) / eta
    else:  # both terms underflow (a weight below ~1e-308): from the log-weights instead
        x1, x2 = -eta * (la - lo + ea), -eta * (lu - lo + eu)
        y1, y2 = -eta * (la - lo), -eta * (lu - lo)
        t1, t2 = max(x1, x2), max(y1, y2)
        after = t1 + math.log(math.exp(x1 - t1) + math.exp(x2 - t1))
        before = t2 + math.log(math.exp(y1 - t2) + math.exp(y2 - t2))
        mix = -(after - before) / eta
    return max(h - mix, 0.0)


@jit
def _weights(prior, R, C, adapt, gidx, lo, hi, p, pa, pu, ag):
    """The combination's weights p[0:m] over the awake groups gidx[lo:hi] (m = hi − lo); returns
    α, the weight of the anchor track (1 under ``ANCHOR``, 0 under ``UNIFORM``).

    ``ADAPTIVE`` (eddy's own design): two AdaNormalHedge tracks over the same experts, one with
    the anchor prior (``R``, ``C``: weights ``pa``) and one with the uniform prior (``adapt[0]``,
    ``adapt[1]``: weights ``pu``), and p = α·pa + (1 − α)·pu. Every group g learns its own weight
    α_g of the anchor track by AdaHedge (de Rooij, van Erven, Grünwald, Koolen, JMLR 2014) over two
    experts, the two tracks, on its own rows (losses ``adapt[2, g]``, ``adapt[3, g]``, mixability
    gap ``adapt[4, g]``): scale-free and parameter-free (no loss range to know: the weights do not
    change when every loss is rescaled), and AdaHedge's worst-case bound puts the regret of α_g
    against the better track on the group's rows at order √(S·L*·ln 2) + S (S the largest
    difference of the two tracks' losses on a row, L* the better track's cumulative loss). A row
    takes α = max_g α_g over its awake groups (each α_g into ``ag[0:m]``): it leaves the anchor
    prior only as far as every group it belongs to has found the uniform prior better on that
    group's own rows. (The bound is each group's own weight's; the max over a row's groups has
    none of its own: it is the choice that favours the anchor, the prior that keeps the
    groupwise floor on small data, wherever a row's groups disagree.)"""
    m = hi - lo
    if prior != ADAPTIVE:
        _track(R, C, gidx, lo, hi, p, prior == ANCHOR)
        return 1.0 if prior == ANCHOR else 0.0
    _track(R, C, gidx, lo, hi, pa, True)
    _track(adapt[0], adapt[1], gidx, lo, hi, pu, False)
    a = 0.0
    for q in range(m):
        g = gidx[lo + q]
        ag[q] = hedge_weight(adapt[2, g], adapt[3, g], adapt[4, g])
        a = max(a, ag[q])
    for q in range(m):
        p[q] = a * pa[q] + (1.0 - a) * pu[q]
    return a


@jit
def predict_rows(base, prior, X, gptr, gidx, theta, R, C, adapt, seed, keys, mix, rand, expert):
    """Both prediction rules for every row: ``mix[i]`` = Σ_g p_g ŷ_g over the awake groups, and
    ``rand[i]`` = ŷ_g of the group ``expert[i]`` drawn with probability p_g (the draw is a
    function of (seed, event key), so a replay draws the same); p from :func:`_weights`."""
    G = R.shape[0]
    p = np.empty(G)
    pa = np.empty(G)
    pu = np.empty(G)
    ag = np.empty(G)
    for i in range(X.shape[0]):
        lo, hi = gptr[i], gptr[i + 1]
        _weights(prior, R, C, adapt, gidx, lo, hi, p, pa, pu, ag)
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
def accrue(prior, rule, R, C, adapt, awake, p, pa, pu, ag, yh, yi):
    """Credits one labelled row to the AdaNormalHedge state of its awake groups ``awake`` (the
    weights p, pa, pu, ag as :func:`_weights` gave them before the row, the experts' predictions
    ``yh``, the label ``yi``); returns (l̂, mixture loss) with l̂ = Σ p_g l_g. With
    l_g = (ŷ_g − y)², every awake g accrues r = l̂ − l_g (R += r, C += |r|), on the one track
    of a fixed prior; under ``ADAPTIVE`` on both tracks (each with its own l̂), and every awake
    group's AdaHedge adds the row's loss of each track, (Σ pa_g ŷ_g − y)² and (Σ pu_g ŷ_g − y)²
    for the ``MIXTURE`` rule, or the tracks' l̂ for ``RANDOMIZED``, and its mixability gap. Two
    tracks whose predictions (mixture) or expected losses (randomized) agree to a relative
    :data:`TIE` get one loss: AdaHedge is scale-free, so rounding noise would otherwise count as
    evidence (while every expert still predicts the same, for one)."""
    m = awake.shape[0]
    mix = 0.0
    lhat = 0.0
    for q in range(m):
        mix += p[q] * yh[q]
        lhat += p[q] * (yh[q] - yi) ** 2
    lmix = (mix - yi) ** 2
    if prior != ADAPTIVE:
        for q in range(m):
            g = awake[q]
            r = lhat - (yh[q] - yi) ** 2
            R[g] += r
            C[g] += abs(r)
        return lhat, lmix
    ma = 0.0
    mu = 0.0
    la = 0.0
    lu = 0.0
    for q in range(m):
        e = (yh[q] - yi) ** 2
        ma += pa[q] * yh[q]
        mu += pu[q] * yh[q]
        la += pa[q] * e
        lu += pu[q] * e
    if rule == MIXTURE:
        ea, eu = (ma - yi) ** 2, (mu - yi) ** 2
        tie = abs(ma - mu) <= TIE * max(abs(ma), abs(mu))
    else:
        ea, eu = la, lu
        tie = abs(la - lu) <= TIE * max(la, lu)
    if tie:  # the tracks agree up to rounding (as while every expert predicts the same): no evidence
        eu = ea
    for q in range(m):
        g = awake[q]
        e = (yh[q] - yi) ** 2
        r = la - e
        R[g] += r
        C[g] += abs(r)
        r = lu - e
        adapt[0, g] += r
        adapt[1, g] += abs(r)
        adapt[4, g] += hedge_gap(adapt[2, g], adapt[3, g], adapt[4, g], ag[q], ea, eu)
        adapt[2, g] += ea
        adapt[3, g] += eu
    return lhat, lmix


@jit
def learn_rows(base, prior, rule, X, gptr, gidx, y, P, theta, gsum, gram, R, C, adapt, n, bsum, yy, loss, lr):
    """Learns labelled rows in order. For each row: the awake experts' predictions and the weights
    (as they are before this row, :func:`_weights`), the AdaNormalHedge credit (:func:`accrue`),
    and every awake expert learns the row (ridge: Sherman–Morrison; logistic: an AdaGrad step on
    the log loss, and the group's Σ x xᵀ in ``gram`` for the hindsight comparator, which ridge
    reads off P instead)."""
    G = R.shape[0]
    d = X.shape[1]
    p = np.empty(G)
    pa = np.empty(G)
    pu = np.empty(G)
    ag = np.empty(G)
    yh = np.empty(G)
    work = np.empty(2 * d)
    for i in range(X.shape[0]):
        lo, hi = gptr[i], gptr[i + 1]
        m = hi - lo
        _weights(prior, R, C, adapt, gidx, lo, hi, p, pa, pu, ag)
        x = X[i]
        yi = y[i]
        for q in range(m):
            yh[q] = expert_predict(base, theta, gidx[lo + q], x)
        lhat, lmix = accrue(prior, rule, R, C, adapt, gidx[lo:hi], p, pa, pu, ag, yh, yi)
        for q in range(m):
            g = gidx[lo + q]
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
