"""Numba kernel of declared feature crosses: a run's hashed features and their crosses, row by row.

A crossed feature's hash is made from its parts' 64-bit name hashes, never from a joined name
string (as Vowpal Wabbit's ``-q`` combines its parts' hashes): H = h₁, then H ← mix64(H·P ⊕ hⱼ)
for each further part, with P the 64-bit FNV prime and mix64 the SplitMix64 finaliser. Its column
is H mod n_features and its sign the top bit, as for a plain feature; its value is the product of
its parts' values. ``tests/naive.py`` writes the same plainly.
"""

from __future__ import annotations

import numpy as np

from ._numba import jit
from ._random import mix64

PRIME = np.uint64(0x100000001B3)


@jit
def _terms(lo, hi, fids, raws, vals, fields, arity, c, cur_h, cur_v, nxt_h, nxt_v):
    """The terms of cross ``c`` in one row: their hashes and values in ``cur_h``/``cur_v``; returns
    their count (0 when a part's field is absent from the row)."""
    m = 0
    for i in range(lo, hi):
        if fids[i] == fields[c, 0]:
            cur_h[m] = raws[i]
            cur_v[m] = vals[i]
            m += 1
    for j in range(1, arity[c]):
        f = fields[c, j]
        k = 0
        for t in range(m):
            for i in range(lo, hi):
                if fids[i] == f:
                    nxt_h[k] = mix64((cur_h[t] * PRIME) ^ raws[i])
                    nxt_v[k] = cur_v[t] * vals[i]
                    k += 1
        for t in range(k):
            cur_h[t] = nxt_h[t]
            cur_v[t] = nxt_v[t]
        m = k
    return m


@jit
def cross_rows(ptr, codes, vals, fids, raws, drop, fields, arity, n_features):
    """Columns, signed values and per-row counts of a run's features with their crosses.

    Row ``r`` holds features ``ptr[r]:ptr[r+1]``: signed column ``codes`` (col, or ~col for sign −1),
    raw ``vals``, field ids ``fids`` (−1 for a field in no cross) and 64-bit name hashes ``raws``.
    Each row's output is its features not ``drop``-ped (``cross_only`` fields), in order, then each
    cross's terms (cross ``c`` has parts ``fields[c, :arity[c]]``).
    """
    n = ptr.shape[0] - 1
    lens = np.zeros(n, dtype=np.int64)
    most = 1
    for r in range(n):  # counts first: the output's size, and the scratch a row's terms need
        lo, hi = ptr[r], ptr[r + 1]
        k = 0
        for i in range(lo, hi):
            if not drop[i]:
                k += 1
        for c in range(fields.shape[0]):
            t = 1
            for j in range(arity[c]):
                q = 0
                for i in range(lo, hi):
                    if fids[i] == fields[c, j]:
                        q += 1
                t *= q
                if t > most:
                    most = t
            k += t
        lens[r] = k
    total = 0
    for r in range(n):
        total += lens[r]
    cols = np.empty(total, dtype=np.int64)
    out = np.empty(total, dtype=np.float64)
    cur_h = np.empty(most, dtype=np.uint64)
    nxt_h = np.empty(most, dtype=np.uint64)
    cur_v = np.empty(most)
    nxt_v = np.empty(most)
    w = 0
    nf = np.uint64(n_features)
    for r in range(n):
        lo, hi = ptr[r], ptr[r + 1]
        for i in range(lo, hi):
            if not drop[i]:
                code = codes[i]
                if code >= 0:
                    cols[w] = code
                    out[w] = vals[i]
                else:
                    cols[w] = ~code
                    out[w] = -vals[i]
                w += 1
        for c in range(fields.shape[0]):
            m = _terms(lo, hi, fids, raws, vals, fields, arity, c, cur_h, cur_v, nxt_h, nxt_v)
            for t in range(m):
                h = cur_h[t]
                cols[w] = np.int64(h % nf)
                out[w] = -cur_v[t] if (h >> np.uint64(63)) != np.uint64(0) else cur_v[t]
                w += 1
    return cols, out, lens
