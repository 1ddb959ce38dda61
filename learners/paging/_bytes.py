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
from ._kernels import M_HAND, M_SIZE, M_T, _alloc, _push_head, _release, _unlink
from ._table import ht_del, ht_get, ht_put

M_BYTES, M_SBYTES = 6, 7


@jit(inline="always")
def _drop(s, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize, evk, evpos):
    """Evicts frame s: logs its key, releases it, returns nothing."""
    evk[evpos[0]] = fkey[s]
    evpos[0] += 1
    meta[M_BYTES] -= fsize[s]
    _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
    _release(fkey, free, meta, tkeys, tvals, s)


@jit
def queue_bytes_run(policy, keys, ops, sizes, cap, k, tkeys, tvals, fkey, free, prv, nxt, lst, lhead, ltail, lcnt,
                    bit, meta, fsize, hit, nev, evk, evpos):
    """LRU (policy 0), FIFO (1) and SIEVE (2) in bytes (see :func:`._kernels.queue_run`)."""
    for i in range(keys.shape[0]):
        key = keys[i]
        meta[M_T] += 1
        nev[i] = 0
        s = ht_get(tkeys, tvals, key)
        if ops[i] == 1:
            hit[i] = -1
            if s >= 0:
                if meta[M_HAND] == s:
                    meta[M_HAND] = prv[s]
                meta[M_BYTES] -= fsize[s]
                _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
                _release(fkey, free, meta, tkeys, tvals, s)
            continue
        if s >= 0:
            hit[i] = 1
            if policy == 0:
                _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
                _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 0)
            elif policy == 2:
                bit[s] = 1
            continue
        hit[i] = 0
        sz = sizes[i]
        if sz > cap:
            continue
        while meta[M_SIZE] >= k or meta[M_BYTES] + sz > cap:
            if policy == 2:
                h = meta[M_HAND]
                if h < 0:
                    h = ltail[0]
                while bit[h] == 1:
                    bit[h] = 0
                    h = prv[h]
                    if h < 0:
                        h = ltail[0]
                v = h
                meta[M_HAND] = prv[v]
            else:
                v = ltail[0]
            _drop(v, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize, evk, evpos)
            nev[i] += 1
        s = _alloc(fkey, free, meta, tkeys, tvals, key)
        bit[s] = 0
        fsize[s] = sz
        meta[M_BYTES] += sz
        _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 0)


@jit
def _ghost_add_bytes(gtk, gtv, ring, gsize, gmeta, key, size, cap):
    """Adds a key of ``size`` bytes to the ghost FIFO, dropping the oldest while the ghost would
    weigh more than ``cap`` bytes (or its ring is full). ``gmeta`` = [head, count, bytes]."""
    n = ring.shape[0]
    while gmeta[1] > 0 and (gmeta[1] == n or gmeta[2] + size > cap):
        old = ring[gmeta[0]]
        if ht_get(gtk, gtv, old) == gmeta[0]:
            ht_del(gtk, gtv, old)
        gmeta[2] -= gsize[gmeta[0]]
        gmeta[0] = (gmeta[0] + 1) % n
        gmeta[1] -= 1
    pos = (gmeta[0] + gmeta[1]) % n
    ring[pos] = key
    gsize[pos] = size
    ht_put(gtk, gtv, key, pos)
    gmeta[1] += 1
    gmeta[2] += size


@jit
def s3fifo_bytes_run(keys, ops, sizes, cap, k, tkeys, tvals, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, bit, meta,
                     fsize, gtk, gtv, ring, gsize, gmeta, hit, nev, evk, evpos):
    """S3-FIFO in bytes (see :func:`._kernels.s3fifo_run`): the small queue S holds up to a tenth of
    the bytes, and the ghost FIFO as many keys as weigh the main queue's bytes (their objects'
    sizes), as libCacheSim sizes it."""
    small = max(1, cap // 10)
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
            continue
        if s >= 0:
            hit[i] = 1
            if bit[s] < 3:
                bit[s] += 1
            continue
        hit[i] = 0
        sz = sizes[i]
        if sz > cap:
            continue
        while meta[M_SIZE] >= k or meta[M_BYTES] + sz > cap:
            if meta[M_SBYTES] >= small or lcnt[1] == 0:
                t = ltail[0]
                meta[M_SBYTES] -= fsize[t]
                if bit[t] > 1:  # accessed again while in S: promoted to M
                    bit[t] = 0
                    _unlink(prv, nxt, lst, lhead, ltail, lcnt, t)
                    _push_head(prv, nxt, lst, lhead, ltail, lcnt, t, 1)
                else:
                    _ghost_add_bytes(gtk, gtv, ring, gsize, gmeta, fkey[t], fsize[t], cap - small)
                    _drop(t, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize, evk, evpos)
                    nev[i] += 1
            else:
                t = ltail[1]
                if bit[t] > 0:  # reinserted with one access less
                    bit[t] -= 1
                    _unlink(prv, nxt, lst, lhead, ltail, lcnt, t)
                    _push_head(prv, nxt, lst, lhead, ltail, lcnt, t, 1)
                else:
                    _drop(t, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize, evk, evpos)
                    nev[i] += 1
        s = _alloc(fkey, free, meta, tkeys, tvals, key)
        bit[s] = 0
        fsize[s] = sz
        meta[M_BYTES] += sz
        g = ht_get(gtk, gtv, key)
        if g >= 0:
            ht_del(gtk, gtv, key)
            _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 1)
        else:
            meta[M_SBYTES] += sz
            _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 0)


@jit
def ftp_bytes_run(keys, ops, sizes, cap, bits, grace, k, tkeys, tvals, fkey, free, prv, nxt, lst, lhead, ltail, lcnt,
                  bit, meta, fsize, ltime, hit, nev, evk, evpos):
    """Follow-the-prediction in bytes (see :func:`._kernels.ftp_discard_run`): evicts by the same
    rule until the object fits."""
    for i in range(keys.shape[0]):
        key = keys[i]
        meta[M_T] += 1
        nev[i] = 0
        s = ht_get(tkeys, tvals, key)
        if ops[i] == 1:
            hit[i] = -1
            if s >= 0:
                meta[M_BYTES] -= fsize[s]
                _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
                _release(fkey, free, meta, tkeys, tvals, s)
            continue
        b = 1 if bits[i] else 0
        if s >= 0:
            hit[i] = 1
            _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
            bit[s] = b
            ltime[s] = meta[M_T]
            _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, b)
            continue
        hit[i] = 0
        sz = sizes[i]
        if sz > cap:
            continue
        while meta[M_SIZE] >= k or meta[M_BYTES] + sz > cap:
            kt, st = ltail[0], ltail[1]
            v = st if st >= 0 and (kt < 0 or ltime[kt] + grace[i] >= ltime[st]) else kt
            _drop(v, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize, evk, evpos)
            nev[i] += 1
        s = _alloc(fkey, free, meta, tkeys, tvals, key)
        bit[s] = b
        fsize[s] = sz
        meta[M_BYTES] += sz
        ltime[s] = meta[M_T]
        _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, b)


@jit
def follow_bytes_run(keys, ops, sizes, cap, lead_nev, lead_evk, tkeys, tvals, fkey, free, prv, nxt, lst, lhead, ltail,
                     lcnt, bit, meta, fsize, hit, nev, evk, evpos):
    """The follow-the-leader real cache in bytes (see :func:`._kernels.follow_run`): the leader's
    evictions at request i are ``lead_evk`` from the running sum of ``lead_nev``; a fault evicts
    from the pages the leader does not hold first, least recently dropped first, until it fits."""
    k = fkey.shape[0]
    p = 0
    for i in range(keys.shape[0]):
        key = keys[i]
        meta[M_T] += 1
        nev[i] = 0
        for j in range(lead_nev[i]):
            q = lead_evk[p + j]
            s = ht_get(tkeys, tvals, q)
            if s >= 0 and lst[s] == 1:
                _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
                _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 0)
        p += lead_nev[i]
        s = ht_get(tkeys, tvals, key)
        if ops[i] == 1:
            hit[i] = -1
            if s >= 0:
                meta[M_BYTES] -= fsize[s]
                _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
                _release(fkey, free, meta, tkeys, tvals, s)
            continue
        if s >= 0:
            hit[i] = 1
            _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
            _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 1)
            continue
        hit[i] = 0
        sz = sizes[i]
        if sz > cap:
            continue
        while meta[M_SIZE] >= k or meta[M_BYTES] + sz > cap:
            v = ltail[0] if lcnt[0] > 0 else ltail[1]
            _drop(v, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize, evk, evpos)
            nev[i] += 1
        s = _alloc(fkey, free, meta, tkeys, tvals, key)
        fsize[s] = sz
        meta[M_BYTES] += sz
        _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 1)
