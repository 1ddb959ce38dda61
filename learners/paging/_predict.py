"""Numba kernel of the learned one-bit discard predictor: an online logistic model of "safe to evict".

Causal by construction: the output for request t depends only on requests 0..t. Per key it keeps
a bounded history (a hash table of ``cap`` slots; when full, the slot of the oldest remembered key
is reused): last request time, request count, the two previous inter-arrival gaps, and the request
whose label is still pending.

Features of a request: log2-buckets (16 each) of its recency r (the gap that this request closes),
of the two gaps before it, measured in sixteenths of the horizon, and of the key's request count;
a first request has all buckets 0. The model is a logistic regression over one-hot indicators of
eight tables: each bucket alone, and the crosses r x gap1, r x count, gap1 x gap2, r x gap1 x count
(at most 4096 cells each), trained by AdaGrad on the labels as they are revealed (learning rate 0.1,
L2 1e-4). It outputs the probability that the request's label is 1; the caller thresholds it into
the bit (and the published precision/recall are those of the bit ``p > 0.5``).

Label of request t of key p (known in hindsight): 1 ("safe to evict") iff p is not requested again
within the horizon, ``reach`` x k keys' worth of requests (through the running ratio of requests
to keys seen so far: one setting for every trace). It is revealed at p's next request, or once the
horizon has passed without one (a queue of pending requests in time order).

State arrays: ``ht``/``hv`` key → slot table; ``hist[slot]`` = (key, last request time, count,
gap1, gap2, time of the pending request or -1, its packed buckets, its bit at 0.5), one row per
slot so that a request touches one cache line; pending queue ``qt``/``qs`` (time, slot) as a ring; ``w``/``g2sum``
(8 x 4096 weights and AdaGrad sums), ``wb`` (bias, its AdaGrad sum); ``conf`` (true/false
negatives/positives); ``pm`` counters [time, keys remembered so far, queue head, queue size].
"""

from __future__ import annotations

import math

import numpy as np

from .._numba import jit
from ._table import EMPTY, ht_del, ht_get, ht_put

N_TABLES, TABLE = 8, 4096
LEARNING_RATE, L2 = 0.1, 1e-4


@jit
def _bucket(x, top):
    b = 0
    while x > 1 and b < top:
        x >>= 1
        b += 1
    return b


@jit
def _cell(f, q):
    """Cell of table q for the packed buckets f = ((r*16 + g1)*16 + g2)*16 + count."""
    c = f & 15
    g2 = (f >> 4) & 15
    g1 = (f >> 8) & 15
    r = f >> 12
    if q == 0:
        return r
    if q == 1:
        return g1
    if q == 2:
        return g2
    if q == 3:
        return c
    if q == 4:
        return r * 16 + g1
    if q == 5:
        return r * 16 + c
    if q == 6:
        return g1 * 16 + g2
    return (r * 16 + g1) * 16 + c


@jit
def _prob(f, w, wb):
    z = wb[0]
    for q in range(N_TABLES):
        z += w[q, _cell(f, q)]
    return 1.0 / (1.0 + math.exp(-z))


H_KEY, H_LAST, H_COUNT, H_GAP1, H_GAP2, H_PEND_T, H_PEND_F, H_PEND_BIT = range(8)


@jit
def _reveal(s, label, hist, w, g2sum, wb, conf):
    f = hist[s, H_PEND_F]
    g = _prob(f, w, wb) - label
    wb[1] += g * g
    wb[0] -= LEARNING_RATE * g / math.sqrt(wb[1])
    for q in range(N_TABLES):
        c = _cell(f, q)
        gq = g + L2 * w[q, c]
        g2sum[q, c] += gq * gq
        w[q, c] -= LEARNING_RATE * gq / math.sqrt(g2sum[q, c])
    conf[2 * hist[s, H_PEND_BIT] + label] += 1  # [tn, fn, fp, tp]
    hist[s, H_PEND_T] = -1


@jit
def predict_step(key, k, reach, ht, hv, hist, qt, qs, w, g2sum, wb, conf, pm):
    """One request: learns from the labels it reveals, then returns (P(safe), horizon)."""
    t = pm[0]
    pm[0] += 1
    horizon = int(reach * k * max(1.0, t / max(pm[1], 1)))
    cap = hist.shape[0]
    qcap = qt.shape[0]
    # Labels of requests that waited a whole horizon without a repeat: 1.
    while pm[3] > 0 and qt[pm[2]] + horizon < t:
        s = qs[pm[2]]
        if hist[s, H_PEND_T] == qt[pm[2]]:
            _reveal(s, 1, hist, w, g2sum, wb, conf)
        pm[2] = (pm[2] + 1) % qcap
        pm[3] -= 1
    s = ht_get(ht, hv, key)
    scale = max(horizon // 16, 1)
    if s >= 0:
        r = t - hist[s, H_LAST]
        if hist[s, H_PEND_T] >= 0:
            _reveal(s, 1 if r > horizon else 0, hist, w, g2sum, wb, conf)
        g1 = hist[s, H_GAP1]
        g2 = hist[s, H_GAP2]
        br = 1 + _bucket(r // scale, 14)
        b1 = 0 if g1 < 0 else 1 + _bucket(g1 // scale, 14)
        b2 = 0 if g2 < 0 else 1 + _bucket(g2 // scale, 14)
        f = ((br * 16 + b1) * 16 + b2) * 16 + 1 + _bucket(hist[s, H_COUNT], 14)
        hist[s, H_COUNT] += 1
        hist[s, H_GAP2] = g1
        hist[s, H_GAP1] = r
    else:
        s = pm[1] % cap
        if hist[s, H_KEY] != EMPTY:  # forget the oldest remembered key
            ht_del(ht, hv, hist[s, H_KEY])
        pm[1] += 1
        hist[s, H_KEY] = key
        ht_put(ht, hv, key, s)
        hist[s, H_COUNT] = 1
        hist[s, H_GAP1] = -1
        hist[s, H_GAP2] = -1
        f = 0
    hist[s, H_LAST] = t
    p = _prob(f, w, wb)
    hist[s, H_PEND_T] = t
    hist[s, H_PEND_F] = f
    hist[s, H_PEND_BIT] = 1 if p > 0.5 else 0
    if pm[3] == qcap:  # a full queue drops its oldest entry (its label then waits for a repeat)
        pm[2] = (pm[2] + 1) % qcap
        pm[3] -= 1
    qt[(pm[2] + pm[3]) % qcap] = t
    qs[(pm[2] + pm[3]) % qcap] = s
    pm[3] += 1
    return p, horizon


@jit
def predict_run(keys, ops, k, reach, ht, hv, hist, qt, qs, w, g2sum, wb, conf, pm, prob, horizon):
    """Runs :func:`predict_step` over requests (a delete, ``ops[i] == 1``, is not a request: 0, 0)."""
    for i in range(keys.shape[0]):
        if ops[i] == 1:
            prob[i], horizon[i] = 0.0, 0
        else:
            prob[i], horizon[i] = predict_step(keys[i], k, reach, ht, hv, hist, qt, qs, w, g2sum, wb, conf, pm)


def new_state(history_cap: int, queue_cap: int) -> dict[str, np.ndarray]:
    """Fresh predictor state (plain arrays)."""
    from ._table import new_table

    ht, hv = new_table(history_cap)
    i64 = np.int64
    hist = np.full((history_cap, 8), -1, dtype=i64)
    hist[:, H_KEY] = EMPTY
    return {"ht": ht, "hv": hv, "hist": hist, "qt": np.zeros(queue_cap, i64), "qs": np.zeros(queue_cap, i64),
            "w": np.zeros((N_TABLES, TABLE)), "g2sum": np.full((N_TABLES, TABLE), 1e-6), "wb": np.array([0.0, 1e-6]),
            "conf": np.zeros(4, i64), "pm": np.zeros(4, i64)}


ORDER = ("ht", "hv", "hist", "qt", "qs", "w", "g2sum", "wb", "conf", "pm")
