"""Numba kernels of the hashed sparse linear oracle: one weight table shared by every action.

A context is a sparse row of hashed features (CSR: ``xptr``, ``xidx``, ``xval``; indices in
``[0, 2**bits)``). The model's value of an action with offset ``o`` on a row is Σᵢ w[(i + o) mod 2**bits]·xᵢ
plus a constant feature per action: the offset (a hash of the action id) crosses every feature with
the action, as Vowpal Wabbit's cbify offsets each action's copy of the context. One table serves
all actions, and a score costs the row's non-zeros.

``W`` is a ``(3, 2**bits)`` table: the weights, the adaptive sums G (Σ of squared gradients,
importance weighted) and the normalisers s (the largest |x| seen), one plane each: a decision reads
K·nnz weights and nothing else, from a plane a third of the table's size (an update, nnz features,
touches three planes). ``acc`` holds the two global sums of normalized learning: T = Σ importance
weights and N = Σ importance-weighted Σᵢ xᵢ²/sᵢ².

The update is NAG, the normalized adaptive gradient of Ross, Mineiro and Langford (2013), with the
importance-invariant step of Karampatziakis and Langford (2011) for squared loss, which is what
Vowpal Wabbit's default ``--adaptive --normalized --invariant`` update does; the constants and the
order of operations are our reconstruction from the papers, not a copy of VW's ``gd.cc``:

- before the prediction: a feature whose |x| exceeds its s rescales its weight by s²/x², then s = |x|;
- N += ω Σ xᵢ²/sᵢ², T += ω (ω the importance weight, 1/p in SquareCB);
- g = ŷ − y; Gᵢ += ω g² xᵢ²; the per-feature rate is rᵢ = 1/(sᵢ √Gᵢ);
- with η_t = η √(T/N) and u = Σ xᵢ² rᵢ, the prediction moves toward y by the fraction
  1 − exp(−η_t ω u), never past it whatever ω: wᵢ += (y − ŷ)(1 − exp(−η_t ω u))/u · xᵢ rᵢ.
"""

from __future__ import annotations

import numpy as np

from .._numba import jit

CONSTANT = 11650396  # index of the constant feature before the action cross (VW's constant hash)
W_WEIGHT, W_ADAPT, W_NORM = 0, 1, 2


@jit
def crossed(i, off, mask):
    """The table row of feature ``i`` for the action with offset ``off``."""
    return (i + off) & mask


@jit
def row_value(W, xidx, xval, lo, hi, s, mask, constant):
    """Σ w[h(i, s)]·xᵢ over the row's features ``lo:hi`` (plus the constant feature)."""
    v = W[W_WEIGHT, crossed(CONSTANT, s, mask)] if constant else 0.0
    for q in range(lo, hi):
        v += W[W_WEIGHT, crossed(xidx[q], s, mask)] * xval[q]
    return v


@jit
def hashed_scores(xptr, xidx, xval, indptr, offs, W, mask, constant, out):
    """Predicted rewards of each event's available actions, whose offsets are ``offs[indptr[i]:indptr[i+1]]``."""
    for i in range(xptr.shape[0] - 1):
        lo, hi = xptr[i], xptr[i + 1]
        for p in range(indptr[i], indptr[i + 1]):
            out[p] = row_value(W, xidx, xval, lo, hi, offs[p], mask, constant)


@jit
def _normalize(W, j, ax):
    """A larger |x| than the feature's normaliser shrinks its weight by s²/x² and becomes s."""
    s = W[W_NORM, j]
    if ax > s:
        if s > 0.0:
            W[W_WEIGHT, j] *= (s * s) / (ax * ax)
        W[W_NORM, j] = ax


@jit
def _feature_step(W, j, x, omega, g, acc):
    """Adaptive sum and N sum of one feature (normalizer already updated); returns xᵢ² rᵢ (0 for x = 0)."""
    if x == 0.0:
        return 0.0
    s = W[W_NORM, j]  # >= |x|: the rescaling pass ran first
    acc[1] += omega * (x * x) / (s * s)
    G = W[W_ADAPT, j] + omega * g * g * x * x
    W[W_ADAPT, j] = G
    if G <= 0.0:
        return 0.0
    return x * x / (s * np.sqrt(G))


@jit
def hashed_update(xptr, xidx, xval, offs, y, omega, W, acc, mask, eta, constant):
    """Learns rows in order: row ``i`` (its features ``xptr[i]:xptr[i+1]``) → ``y[i]`` for the action
    with offset ``offs[i]``, importance weight ``omega[i]`` (the module docstring gives the step)."""
    for i in range(xptr.shape[0] - 1):
        lo, hi = xptr[i], xptr[i + 1]
        s = offs[i]
        w_i = omega[i]
        # Rescale first (the prediction of the step is made with the normalized weights).
        for q in range(lo, hi):
            _normalize(W, crossed(xidx[q], s, mask), abs(xval[q]))
        c = crossed(CONSTANT, s, mask)
        if constant:
            _normalize(W, c, 1.0)
        pred = row_value(W, xidx, xval, lo, hi, s, mask, constant)
        g = pred - y[i]
        acc[0] += w_i
        u = 0.0
        for q in range(lo, hi):
            u += _feature_step(W, crossed(xidx[q], s, mask), xval[q], w_i, g, acc)
        if constant:
            u += _feature_step(W, c, 1.0, w_i, g, acc)
        if u <= 0.0 or g == 0.0 or acc[1] <= 0.0:
            continue
        eta_t = eta * np.sqrt(acc[0] / acc[1])
        step = -g * (1.0 - np.exp(-eta_t * w_i * u)) / u
        for q in range(lo, hi):
            x = xval[q]
            if x != 0.0:
                j = crossed(xidx[q], s, mask)
                W[W_WEIGHT, j] += step * x / (W[W_NORM, j] * np.sqrt(W[W_ADAPT, j]))
        if constant:
            W[W_WEIGHT, c] += step / (W[W_NORM, c] * np.sqrt(W[W_ADAPT, c]))
