"""Numba kernel of the learned one-bit discard predictor: an online logistic model of "Belady
would not keep this page until its next request", trained on Belady's decisions recomputed in
hindsight.

Causal by construction: the output for request t depends only on requests 0..t.

**Labels (OPTgen).** Hawkeye's OPTgen (Jain & Lin, "Back to the Future: Leveraging Belady's
Algorithm for Improved Cache Replacement", ISCA 2016) decides, when a key is requested again,
whether the optimal offline policy would have kept it since its previous request: keeping it over
the open interval (t', t) of the two requests is possible iff fewer than ``cap_units`` units are
already kept over every time slot of that interval (an occupancy vector over the last ``W``
requests); if so the interval is kept (label 0, "keep") and its slots' occupancy grows by the
key's size, else the label is 1 ("safe to evict"). A request not repeated within ``W`` requests is
labelled 1 when the window passes it; ``W`` is ``WINDOW`` x k requests, at most the ring's slots
less ``BLOCK`` (the ring: the smallest power of two that holds both, at most ``MAX_WINDOW``; slots
are cleared ``BLOCK`` at a time ahead of use). Taking intervals in the order they close and
keeping each one that fits is optimal interval scheduling, so with a window covering the whole
stream the kept intervals are exactly Belady's hits in page mode (``cap_units = k - 1``: the
requested page takes the k-th frame; a test checks the count). In the byte mode the units are
bytes and ``cap_units`` the byte capacity (an approximation: the requested object's own bytes are
not reserved). The occupancy vector is a segment tree (range add, range max) over a ring of a
power-of-two number of slots, so a label costs O(log W).

**Features** of a request, from the key's own history and the request stream only (never from a
shadow cache's state): log2-buckets (16 each) of its recency r (the gap this request closes) and
of the gap before it, measured in sixteenths of k, of the key's request count, and the key's
OPTgen counter (0-7: up at each "keep" label of the key, down at each "safe" one, 3 for a new
key; Hawkeye keeps such a counter per load instruction, here per key). A first request has
recency and gap bucket 0. The model is a logistic regression over one-hot indicators of seven
tables: r, gap, count, r x gap, r x count, r x gap x count, counter x r (at most 4096 cells
each), trained by AdaGrad on the labels as they are revealed (learning rate 0.05, L2 1e-4). A
"keep" label whose interval found its slots at most half full (Belady keeps it whatever the
others do) weighs ``EASY_WEIGHT`` = 0.3 in the loss, every other label 1: the model's capacity
goes to the contested decisions near the eviction boundary, where a wrong bit costs a miss
(eddy's own weighting; measured on the 8 shared cases, FtP over the bits recovers 18.8% of the
LRU→OPT gap against 15.8% unweighted, and 18.0-18.8% for weights 0.2-0.5). It
outputs the probability that the label is 1; the caller thresholds it into the bit (the
published precision/recall are those of the bit ``p > 0.5`` against the labels).

It also returns the *horizon* ``reach`` x k keys' worth of requests (k x the running ratio of
requests to keys seen so far), which the FtP shadows use to bound their trust in "keep" bits.

State arrays: ``ht``/``hv`` key → slot table; ``hist[slot]`` = (key, last request time, count,
gap, time of the pending request or -1, its packed features, its bit at 0.5, OPTgen counter,
size of the pending request), one row per slot so that a request touches one cache line (when the
table is full, the slot of the oldest remembered key is reused); pending queue ``qt``/``qs``
(time, slot) as a ring; ``w``/``g2sum`` (7 x 4096 weights and AdaGrad sums), ``wb`` (bias, its
AdaGrad sum); ``conf`` (true/false negatives/positives); ``pm`` counters [time, keys remembered
so far, queue head, queue size]; ``occ``/``lazy`` the occupancy tree (2 x slots each).
"""

from __future__ import annotations

import math

import numpy as np

from .._numba import jit
from ._table import EMPTY, ht_del, ht_get, ht_put

N_TABLES, TABLE = 7, 4096
LEARNING_RATE, L2 = 0.05, 1e-4
EASY_WEIGHT = 0.3  # an uncontested "keep" label's weight (see the module docstring)
WINDOW, MAX_WINDOW = 16, 1 << 20  # OPTgen's window: WINDOW x k requests, at most MAX_WINDOW
BLOCK = 64  # occupancy slots cleared at once, ahead of time

H_KEY, H_LAST, H_COUNT, H_GAP, H_PEND_T, H_PEND_F, H_PEND_BIT, H_OPT, H_PEND_SIZE = range(9)
N_HIST = 9


@jit(refcounts=False)
def _bucket(x, top):
    b = 0
    while x > 1 and b < top:
        x >>= 1
        b += 1
    return b


@jit(refcounts=False)
def _cell(f, q):
    """Cell of table q for the packed features f = ((r*16 + gap)*16 + count)*8 + counter."""
    o = f & 7
    c = (f >> 3) & 15
    g = (f >> 7) & 15
    r = f >> 11
    if q == 0:
        return r
    if q == 1:
        return g
    if q == 2:
        return c
    if q == 3:
        return r * 16 + g
    if q == 4:
        return r * 16 + c
    if q == 5:
        return (r * 16 + g) * 16 + c
    return o * 16 + r


@jit(refcounts=False)
def _prob(f, w, wb):
    z = wb[0]
    for q in range(N_TABLES):
        z += w[q, _cell(f, q)]
    return 1.0 / (1.0 + math.exp(-z))


# -- the occupancy tree: range add and range max over slots [l, r), lazy adds on inner nodes ----------
@jit(inline="always")
def _apply(occ, lazy, p, v, m):
    occ[p] += v
    if p < m:
        lazy[p] += v


@jit(refcounts=False)
def _build(occ, lazy, p):
    while p > 1:
        p >>= 1
        a, b = occ[2 * p], occ[2 * p + 1]
        occ[p] = (a if a > b else b) + lazy[p]


@jit(refcounts=False)
def _height(m):
    h = 0
    while (1 << h) < m:
        h += 1
    return h


@jit(refcounts=False)
def _push(occ, lazy, p, m, h):
    """Pushes the lazy adds of leaf p's ancestors (from the root, the tree's height ``h``) down."""
    s = h
    while s > 0:
        i = p >> s
        if lazy[i] != 0:
            _apply(occ, lazy, 2 * i, lazy[i], m)
            _apply(occ, lazy, 2 * i + 1, lazy[i], m)
            lazy[i] = 0
        s -= 1


@jit(refcounts=False)
def _range_add(occ, lazy, l, r, v):
    m = occ.shape[0] // 2
    l += m
    r += m
    l0, r0 = l, r
    while l < r:
        if l & 1:
            _apply(occ, lazy, l, v, m)
            l += 1
        if r & 1:
            r -= 1
            _apply(occ, lazy, r, v, m)
        l >>= 1
        r >>= 1
    _build(occ, lazy, l0)
    _build(occ, lazy, r0 - 1)


@jit(refcounts=False)
def _range_max(occ, lazy, l, r, h):
    m = occ.shape[0] // 2
    l += m
    r += m
    _push(occ, lazy, l, m, h)
    _push(occ, lazy, r - 1, m, h)
    res = occ[l]
    while l < r:
        if l & 1:
            res = max(res, occ[l])
            l += 1
        if r & 1:
            r -= 1
            res = max(res, occ[r])
        l >>= 1
        r >>= 1
    return res


@jit(refcounts=False)
def _clear_block(occ, lazy, a, h):
    """Zeroes the ``BLOCK`` slots from a (a multiple of ``BLOCK``): they held times that have left
    the window. The block is one subtree: its ancestors' lazy adds go down first, then it is
    cleared and its ancestors rebuilt."""
    m = occ.shape[0] // 2
    root = (m + a) // BLOCK
    d = 0
    while (1 << d) < BLOCK:
        d += 1
    _push(occ, lazy, root, m, h - d)
    lo, width = root, 1
    while lo < 2 * m:
        occ[lo:lo + width] = 0
        if lo < m:
            lazy[lo:lo + width] = 0
        lo *= 2
        width *= 2
    _build(occ, lazy, root)


@jit(refcounts=False)
def keep_fits(occ, lazy, a, b, size, cap_units):
    """OPTgen: can ``size`` more units be kept over times a..b-1 (absolute, b - a below the ring's
    slots)? If so they are added. Returns (whether they fit, the most units already kept over
    those times: 0 for none)."""
    if b <= a:
        return True, 0
    m = occ.shape[0] // 2
    h = _height(m)
    la, lb = a & (m - 1), b & (m - 1)
    if la < lb:
        top = _range_max(occ, lazy, la, lb, h)
        if top + size > cap_units:
            return False, top
        _range_add(occ, lazy, la, lb, size)
        return True, top
    top = _range_max(occ, lazy, la, m, h)
    if lb > 0:
        top = max(top, _range_max(occ, lazy, 0, lb, h))
    if top + size > cap_units:
        return False, top
    _range_add(occ, lazy, la, m, size)
    if lb > 0:
        _range_add(occ, lazy, 0, lb, size)
    return True, top


def tree_slots(k: int) -> int:
    """Slots of the occupancy ring for a cache of k frames: the smallest power of two above
    ``WINDOW`` x k, at most ``MAX_WINDOW`` ."""
    m = 2 * BLOCK
    while m < WINDOW * int(k) + BLOCK and m < MAX_WINDOW:
        m *= 2
    return m


@jit(refcounts=False)
def _reveal(s, label, hist, w, g2sum, wb, conf, weight=1.0):
    f = hist[s, H_PEND_F]
    g = (_prob(f, w, wb) - label) * weight
    wb[1] += g * g
    wb[0] -= LEARNING_RATE * g / math.sqrt(wb[1])
    for q in range(N_TABLES):
        c = _cell(f, q)
        gq = g + L2 * w[q, c]
        g2sum[q, c] += gq * gq
        w[q, c] -= LEARNING_RATE * gq / math.sqrt(g2sum[q, c])
    conf[2 * hist[s, H_PEND_BIT] + label] += 1  # [tn, fn, fp, tp]
    hist[s, H_PEND_T] = -1
    o = hist[s, H_OPT]
    hist[s, H_OPT] = max(o - 1, 0) if label == 1 else min(o + 1, 7)


@jit(refcounts=False)
def predict_step(key, size, k, cap_units, reach, ht, hv, hist, qt, qs, w, g2sum, wb, conf, pm, occ, lazy):
    """One request (of ``size`` units): learns from the labels it reveals, then returns
    (P(safe), horizon)."""
    t = pm[0]
    pm[0] += 1
    m = occ.shape[0] // 2
    win = min(WINDOW * k, m - BLOCK)  # OPTgen's window
    horizon = int(reach * k * max(1.0, t / max(pm[1], 1)))
    cap = hist.shape[0]
    qcap = qt.shape[0]
    # Requests that waited a whole window without a repeat: label 1.
    while pm[3] > 0 and qt[pm[2]] + win < t:
        s = qs[pm[2]]
        if hist[s, H_PEND_T] == qt[pm[2]]:
            _reveal(s, 1, hist, w, g2sum, wb, conf)
        pm[2] = (pm[2] + 1) % qcap
        pm[3] -= 1
    if t % BLOCK == 0:  # the next BLOCK slots' previous times have left the window
        _clear_block(occ, lazy, t & (m - 1), _height(m))
    s = ht_get(ht, hv, key)
    scale = max(k // 16, 1)
    if s >= 0:
        r = t - hist[s, H_LAST]
        tp = hist[s, H_PEND_T]
        if tp >= 0:
            keep, top = keep_fits(occ, lazy, tp + 1, t, hist[s, H_PEND_SIZE], cap_units)
            _reveal(s, 0 if keep else 1, hist, w, g2sum, wb, conf, 1.0 if 2 * top >= cap_units else EASY_WEIGHT)
        g = hist[s, H_GAP]
        bg = 0 if g < 0 else 1 + _bucket(g // scale, 14)
        hist[s, H_COUNT] += 1
        f = (((1 + _bucket(r // scale, 14)) * 16 + bg) * 16 + 1 + _bucket(hist[s, H_COUNT], 14)) * 8 + hist[s, H_OPT]
        hist[s, H_GAP] = r
    else:
        s = pm[1] % cap
        if hist[s, H_KEY] != EMPTY:  # forget the oldest remembered key
            ht_del(ht, hv, hist[s, H_KEY])
        pm[1] += 1
        hist[s, H_KEY] = key
        ht_put(ht, hv, key, s)
        hist[s, H_COUNT] = 1
        hist[s, H_GAP] = -1
        hist[s, H_OPT] = 3
        f = 1 * 8 + 3  # r = gap = 0, count bucket 1 (one request), counter 3
    hist[s, H_LAST] = t
    p = _prob(f, w, wb)
    hist[s, H_PEND_T] = t
    hist[s, H_PEND_F] = f
    hist[s, H_PEND_BIT] = 1 if p > 0.5 else 0
    hist[s, H_PEND_SIZE] = size
    if pm[3] == qcap:  # a full queue drops its oldest entry (its label then waits for a repeat)
        pm[2] = (pm[2] + 1) % qcap
        pm[3] -= 1
    qt[(pm[2] + pm[3]) % qcap] = t
    qs[(pm[2] + pm[3]) % qcap] = s
    pm[3] += 1
    return p, horizon


@jit(refcounts=False)
def predict_run(keys, ops, sizes, k, cap_units, reach, ht, hv, hist, qt, qs, w, g2sum, wb, conf, pm, occ, lazy,
                prob, horizon):
    """Runs :func:`predict_step` over requests (a delete, ``ops[i] == 1``, is not a request: 0, 0);
    ``sizes`` per request, or one entry for every request."""
    one = sizes.shape[0] == 1
    for i in range(keys.shape[0]):
        if ops[i] == 1:
            prob[i], horizon[i] = 0.0, 0
        else:
            prob[i], horizon[i] = predict_step(keys[i], sizes[0] if one else sizes[i], k, cap_units, reach, ht, hv,
                                               hist, qt, qs, w, g2sum, wb, conf, pm, occ, lazy)


def new_state(history_cap: int, queue_cap: int, k: int) -> dict[str, np.ndarray]:
    """Fresh predictor state (plain arrays) for a cache of k frames."""
    from ._table import new_table

    ht, hv = new_table(history_cap)
    i64 = np.int64
    hist = np.full((history_cap, N_HIST), -1, dtype=i64)
    hist[:, H_KEY] = EMPTY
    m = tree_slots(k)
    return {"ht": ht, "hv": hv, "hist": hist, "qt": np.zeros(queue_cap, i64), "qs": np.zeros(queue_cap, i64),
            "w": np.zeros((N_TABLES, TABLE)), "g2sum": np.full((N_TABLES, TABLE), 1e-6), "wb": np.array([0.0, 1e-6]),
            "conf": np.zeros(4, i64), "pm": np.zeros(4, i64), "occ": np.zeros(2 * m, i64),
            "lazy": np.zeros(2 * m, i64)}


ORDER = ("ht", "hv", "hist", "qt", "qs", "w", "g2sum", "wb", "conf", "pm", "occ", "lazy")
