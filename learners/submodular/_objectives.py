"""Numba kernels of the built-in objectives: marginal gains and additions over one common state.

Every built-in objective is a weighted sum over ``m`` coordinates of what a set covers there. An
item is a non-negative row over those coordinates (stored in slot ``i`` of the item arrays), a set
S is its state vector ``c`` (length m), and

* ``MAX`` (facility location, weighted coverage): ``c_j = max_{s∈S} r_sj``, ``f(S) = Σ_j w_j c_j``;
* ``SUM`` (feature-based): ``c_j = Σ_{s∈S} r_sj``, ``f(S) = Σ_j w_j φ(c_j)`` with φ concave
  (``PHI_SQRT``: √x, ``PHI_LOG``: log(1+x), ``PHI_SATURATE``: x/(1+x)), zero at zero.

Rows are dense (``rows[i, j]`` for j < m) or, for sparse items (coverage over many concepts),
padded lists: ``idx[i, t]``, ``rows[i, t]`` for t < ``cnt[i]``; ``sparse`` says which. One call of
:func:`gain` is one oracle call (one marginal gain of one element), the unit every algorithm of the
family counts.
"""

from __future__ import annotations

import numpy as np

from .._numba import jit

MAX, SUM = 0, 1
PHI_SQRT, PHI_LOG, PHI_SATURATE = 0, 1, 2


@jit
def phi(kind, x):
    if kind == PHI_SQRT:
        return np.sqrt(x)
    if kind == PHI_LOG:
        return np.log1p(x)
    return x / (1.0 + x)


@jit
def gain(form, phik, sparse, w, rows, idx, cnt, i, c):
    """f(S ∪ {i}) - f(S) for the set whose state is ``c``."""
    g = 0.0
    if sparse:
        for t in range(cnt[i]):
            j = idx[i, t]
            r = rows[i, t]
            if form == MAX:
                if r > c[j]:
                    g += w[j] * (r - c[j])
            elif r > 0.0:
                g += w[j] * (phi(phik, c[j] + r) - phi(phik, c[j]))
        return g
    m = c.shape[0]
    if form == MAX:
        for j in range(m):
            d = rows[i, j] - c[j]
            if d > 0.0:
                g += w[j] * d
    else:
        for j in range(m):
            r = rows[i, j]
            if r > 0.0:
                g += w[j] * (phi(phik, c[j] + r) - phi(phik, c[j]))
    return g


@jit
def add(form, sparse, rows, idx, cnt, i, c):
    """Adds item ``i`` to the set whose state is ``c`` (in place)."""
    if sparse:
        for t in range(cnt[i]):
            j = idx[i, t]
            r = rows[i, t]
            if form == MAX:
                if r > c[j]:
                    c[j] = r
            else:
                c[j] += r
        return
    m = c.shape[0]
    if form == MAX:
        for j in range(m):
            if rows[i, j] > c[j]:
                c[j] = rows[i, j]
    else:
        for j in range(m):
            c[j] += rows[i, j]


@jit
def value(form, phik, w, c):
    """f of the set whose state is ``c``."""
    v = 0.0
    for j in range(c.shape[0]):
        v += w[j] * (c[j] if form == MAX else phi(phik, c[j]))
    return v


@jit
def state_of(form, sparse, rows, idx, cnt, members, n, c):
    """``c`` := the state of the set ``members[:n]`` (slots)."""
    c[:] = 0.0
    for t in range(n):
        add(form, sparse, rows, idx, cnt, members[t], c)


@jit
def rbf_rows(x, ref, ref_sq, gamma, out):
    """Facility location rows: ``out[e, j] = exp(-γ ||x_e - ref_j||²)`` (similarities in (0, 1])."""
    n, d = x.shape
    m = ref.shape[0]
    for e in range(n):
        xs = 0.0
        for t in range(d):
            xs += x[e, t] * x[e, t]
        for j in range(m):
            dot = 0.0
            for t in range(d):
                dot += x[e, t] * ref[j, t]
            d2 = xs + ref_sq[j] - 2.0 * dot
            out[e, j] = np.exp(-gamma * (d2 if d2 > 0.0 else 0.0))


@jit
def cosine_rows(x, ref, ref_norm, out):
    """Facility location rows: ``out[e, j] = max(0, cos(x_e, ref_j))`` (0 for a zero vector)."""
    n, d = x.shape
    m = ref.shape[0]
    for e in range(n):
        xs = 0.0
        for t in range(d):
            xs += x[e, t] * x[e, t]
        xn = np.sqrt(xs)
        for j in range(m):
            dot = 0.0
            for t in range(d):
                dot += x[e, t] * ref[j, t]
            den = xn * ref_norm[j]
            v = dot / den if den > 0.0 else 0.0
            out[e, j] = v if v > 0.0 else 0.0
