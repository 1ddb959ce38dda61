"""Numba kernels of the byte-capacity mode: objects of different sizes in a cache of ``cap`` bytes.

The frames of :mod:`._kernels` (at most k objects) plus ``fsize`` (each frame's object size) and
two counters in ``meta``: bytes held (``M_BYTES``) and bytes held by S3-FIFO's small queue
(``M_SBYTES``). A miss evicts until the object fits; an object larger than the whole cache is not
admitted (a miss that evicts nothing, as in libCacheSim). A request may therefore evict several
objects: outputs are ``hit[i]``, ``nev[i]`` (evictions at request i) and the evicted keys in order,
appended to ``evk`` at ``evpos[0]``. An object keeps the size it was admitted with (a hit with
another size does not resize it).

Separate from the unit-size kernels on purpose: those are the hot path of the common case, tuned
for one eviction per miss; these share their list and table helpers.
"""

from __future__ import annotations

from .._numba import jit
from ._kernels import (
    G_EVICTED,
    M_BYTES,
    M_SBYTES,
    M_SIZE,
    M_T,
    _alloc,
    _push_head,
    _release,
    _unlink,
    ghost_add,
    ghost_take,
)
from ._table import ht_get


@jit(inline="always")
def _drop(s, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize, evk, evpos):
    """Evicts frame s: logs its key, releases it, returns nothing."""
    evk[evpos[0]] = fkey[s]
    evpos[0] += 1
    meta[M_BYTES] -= fsize[s]
    _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
    _release(fkey, free, meta, tkeys, tvals, s)


@jit
def s3fifo_bytes_run(keys, ops, sizes, cap, k, tkeys, tvals, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, bit, meta,
                     fsize, gtk, gtv, ring, gsize, gmeta, hit, nev, evk, evpos):
    """S3-FIFO in bytes: :func:`._kernels.s3fifo_run` with sizes, as libCacheSim's ``S3FIFO.c``
    weighs them. S holds a tenth of the bytes, M the rest, the ghost ⌊0.9·cap⌋ bytes of keys (and
    at most ``ring.shape[0] // 2`` keys); M is evicted from while it holds more than its bytes.
    An object heavier than S is not admitted (libCacheSim's ``can_insert``); one exactly as heavy
    as S is admitted here (libCacheSim refuses it after its evictions), which keeps unit sizes
    equal to the page mode."""
    small = max(1, cap // 10)
    main = cap - small
    gcap = (cap * 9) // 10
    for i in range(keys.shape[0]):
        key = keys[i]
        meta[M_T] += 1
        nev[i] = 0
        s = ht_get(tkeys, tvals, key)
        if ops[i] == 1:
            hit[i] = -1
            if s >= 0:
                meta[M_BYTES] -= fsize[s]
                if lst[s] == 0:
                    meta[M_SBYTES] -= fsize[s]
                _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
                _release(fkey, free, meta, tkeys, tvals, s)
            else:
                ghost_take(gtk, gtv, ring, gsize, gmeta, key)
            continue
        if s >= 0:
            hit[i] = 1
            if bit[s] < 3:
                bit[s] += 1
            continue
        hit[i] = 0
        ghost_hit = ghost_take(gtk, gtv, ring, gsize, gmeta, key)
        sz = sizes[i]
        if sz > small:
            continue
        while meta[M_SIZE] >= k or meta[M_BYTES] + sz > cap:
            gmeta[G_EVICTED] = 1
            if meta[M_BYTES] - meta[M_SBYTES] > main or lcnt[0] == 0:
                while True:  # M: reinsert while the count is positive
                    t = ltail[1]
                    if bit[t] > 0:
                        bit[t] -= 1
                        _unlink(prv, nxt, lst, lhead, ltail, lcnt, t)
                        _push_head(prv, nxt, lst, lhead, ltail, lcnt, t, 1)
                    else:
                        _drop(t, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize, evk, evpos)
                        nev[i] += 1
                        break
            else:
                while lcnt[0] > 0:  # S: promote the twice-accessed, until one object leaves
                    t = ltail[0]
                    meta[M_SBYTES] -= fsize[t]
                    if bit[t] > 1:
                        bit[t] = 0
                        _unlink(prv, nxt, lst, lhead, ltail, lcnt, t)
                        _push_head(prv, nxt, lst, lhead, ltail, lcnt, t, 1)
                    else:
                        ghost_add(gtk, gtv, ring, gsize, gmeta, fkey[t], fsize[t], gcap)
                        _drop(t, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize, evk, evpos)
                        nev[i] += 1
                        break
        s = _alloc(fkey, free, meta, tkeys, tvals, key)
        bit[s] = 0
        fsize[s] = sz
        meta[M_BYTES] += sz
        if ghost_hit or (gmeta[G_EVICTED] == 0 and meta[M_SBYTES] >= small):
            _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 1)
        else:
            meta[M_SBYTES] += sz
            _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 0)
