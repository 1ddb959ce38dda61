"""Numba kernel of the learned one-bit discard predictor (first version: a bucketed frequency model).

Causal by construction: the bit for request t depends only on requests 0..t. Per key it keeps a
bounded history (a hash table of ``cap`` slots; when full, the slot of the oldest remembered key is
reused): last request time, request count, previous inter-arrival gap, and the request whose label
is still pending. Features of a request are log-buckets of its recency, previous gap and count;
the model holds, per bucket, how many revealed labels were 0 and 1, and predicts 1 ("safe to
evict") when the smoothed share of 1s exceeds one half.

Label of request t of key p (known in hindsight): 1 iff p is not requested again within the
horizon. It is revealed at p's next request, or once the horizon has passed without one (a queue
of pending requests in time order). The horizon is ``reach`` x k keys, in requests through the
running ratio of requests to keys seen so far (one setting for every trace).

State arrays: ``ht``/``hv`` key → slot table; per slot ``skey``, ``last``, ``count``, ``gap``,
``pend_t`` (time of the pending request, -1 if none), ``pend_b`` (its bucket), ``pend_bit`` (what
was predicted for it); pending queue ``qt``/``qs`` (time, slot) as a ring;
``model`` (n_buckets × 2 counts); ``conf`` (true/false positives/negatives); ``pm`` counters
[time, keys remembered so far, queue head, queue size].
"""

from __future__ import annotations

import numpy as np

from .._numba import jit
from ._table import EMPTY, ht_del, ht_get, ht_put

NB_R, NB_G, NB_C = 24, 25, 8  # buckets of recency, previous gap (24 = none), count
N_BUCKETS = NB_R * NB_G * NB_C


@jit
def _log_bucket(x, top):
    b = 0
    while x > 1 and b < top:
        x >>= 1
        b += 1
    return b


@jit
def _bucket(recency, gap, count):
    br = _log_bucket(recency, NB_R - 1)
    bg = NB_G - 1 if gap < 0 else _log_bucket(gap, NB_G - 2)
    bc = _log_bucket(count, NB_C - 1)
    return (br * NB_G + bg) * NB_C + bc


@jit
def _reveal(s, label, pend_t, pend_b, pend_bit, model, conf):
    model[pend_b[s], label] += 1
    conf[2 * pend_bit[s] + label] += 1  # [tn, fn, fp, tp]
    pend_t[s] = -1


@jit
def predict_step(key, k, reach, ht, hv, skey, last, count, gap, pend_t, pend_b, pend_bit, qt, qs, model,
                 conf, pm):
    """Predicts the bit of one request (and learns from the labels this request reveals)."""
    t = pm[0]
    pm[0] += 1
    horizon = int(reach * k * max(1.0, t / max(pm[1], 1)))
    cap = skey.shape[0]
    qcap = qt.shape[0]
    # Labels of requests that waited a whole horizon without a repeat: 1.
    while pm[3] > 0 and qt[pm[2]] + horizon < t:
        s = qs[pm[2]]
        if pend_t[s] == qt[pm[2]]:
            _reveal(s, 1, pend_t, pend_b, pend_bit, model, conf)
        pm[2] = (pm[2] + 1) % qcap
        pm[3] -= 1
    s = ht_get(ht, hv, key)
    if s >= 0:
        r = t - last[s]
        if pend_t[s] >= 0:
            _reveal(s, 1 if r > horizon else 0, pend_t, pend_b, pend_bit, model, conf)
        b = _bucket(r, gap[s], count[s])
        gap[s] = r
        count[s] += 1
    else:
        s = pm[1] % cap
        if skey[s] != EMPTY:  # forget the oldest remembered key
            ht_del(ht, hv, skey[s])
            pend_t[s] = -1
        pm[1] += 1
        skey[s] = key
        ht_put(ht, hv, key, s)
        count[s] = 1
        gap[s] = -1
        b = _bucket(1 << 40, -1, 0)
    last[s] = t
    n0 = model[b, 0]
    n1 = model[b, 1]
    bit = 1 if (n1 + 0.5) / (n0 + n1 + 1.0) > 0.5 else 0
    pend_t[s] = t
    pend_b[s] = b
    pend_bit[s] = bit
    if pm[3] == qcap:  # a full queue drops its oldest entry (its label then waits for a repeat)
        pm[2] = (pm[2] + 1) % qcap
        pm[3] -= 1
    qt[(pm[2] + pm[3]) % qcap] = t
    qs[(pm[2] + pm[3]) % qcap] = s
    pm[3] += 1
    return bit


@jit
def predict_run(keys, k, reach, ht, hv, skey, last, count, gap, pend_t, pend_b, pend_bit, qt, qs, model, conf, pm,
                bits):
    for i in range(keys.shape[0]):
        bits[i] = predict_step(keys[i], k, reach, ht, hv, skey, last, count, gap, pend_t, pend_b, pend_bit,
                               qt, qs, model, conf, pm)


def new_state(history_cap: int, queue_cap: int) -> dict[str, np.ndarray]:
    """Fresh predictor state (plain arrays)."""
    from ._table import new_table

    ht, hv = new_table(history_cap)
    i64 = np.int64
    return {"ht": ht, "hv": hv, "skey": np.full(history_cap, EMPTY, dtype=i64), "last": np.zeros(history_cap, i64),
            "count": np.zeros(history_cap, i64), "gap": np.full(history_cap, -1, dtype=i64),
            "pend_t": np.full(history_cap, -1, dtype=i64), "pend_b": np.zeros(history_cap, i64),
            "pend_bit": np.zeros(history_cap, i64), "qt": np.zeros(queue_cap, i64), "qs": np.zeros(queue_cap, i64),
            "model": np.zeros((N_BUCKETS, 2), i64), "conf": np.zeros(4, i64), "pm": np.zeros(4, i64)}


ORDER = ("ht", "hv", "skey", "last", "count", "gap", "pend_t", "pend_b", "pend_bit", "qt", "qs", "model", "conf", "pm")
