"""Numba kernels of the cache shadows: the policies over batches of requests, pages or sized objects.

State of a cache of ``k`` frames (all plain arrays, updated in place):

* ``tkeys``/``tvals``: the key → frame hash table (:mod:`._table`);
* ``fkey[k]``: the key in each frame (``EMPTY`` when free), ``free[k]`` a stack of free frames;
* ``prv``/``nxt``/``lst``: doubly linked lists threaded through the frames, several lists at
  once (``lhead``/``ltail``/``lcnt`` per list). Heads are the most recent end, tails the oldest;
* ``bit[k]``: a per-frame flag (SIEVE's visited bit, a prediction bit);
* ``meta``: counters (see the ``M_*`` indices).

Requests: ``keys[i]`` with ``ops[i]`` 0 = access, 1 = delete (invalidate). Outputs per request:
``hit[i]`` (1 hit, 0 miss; a delete -2 when it removed a cached key, else -1, which
:class:`~learners.paging.cache.PagingCache` reports as -1 both: the race needs to know what a
shadow held, :func:`._robust.learned_follow`) and ``evicted[i]`` (the key evicted on that miss, or
``EMPTY``). Misses include cold misses, as libCacheSim counts them.

**Byte-capacity mode.** LRU/FIFO/SIEVE, S3-FIFO, FtP and the follow-the-leader real cache also
run on objects of different sizes in a cache of ``cap`` bytes, in the same kernels: the frames
(at most k objects) plus ``fsize`` (each frame's object size) and two counters in ``meta``,
bytes held (``M_BYTES``) and bytes held by S3-FIFO's small queue (``M_SBYTES``); ``sizes`` per
request. A miss evicts until the object fits; an object larger than the whole cache is not
admitted (a miss that evicts nothing, as in libCacheSim). A request may therefore evict several
objects: the outputs are then ``nev[i]`` (evictions at request i) and the evicted keys in order,
appended to ``evk`` at ``evpos[0]``, instead of ``evicted``. An object keeps the size it was
admitted with (a hit with another size does not resize it). The unit-size case passes None for
``sizes``, ``fsize``, ``nev``, ``evk`` and ``evpos`` (and the sized case None for ``evicted``):
Numba compiles each case apart and prunes the branches of a None argument, so the page mode pays
nothing for sizes (measured A/B against the earlier separate twins: equal within noise; a runtime
flag instead cost 20-35%). ARC, Marker and the discard-in-phases policies have no byte mode.
"""

from __future__ import annotations

import numpy as np

from .._numba import jit
from .._random import draw_uniform
from ._table import EMPTY, ht_del, ht_get, ht_put

# meta indices
M_SIZE, M_NFREE, M_HAND, M_T, M_PHASE, M_NUNM = 0, 1, 2, 3, 4, 5
M_BYTES, M_SBYTES = 6, 7  # the byte mode's bytes held, and held by S3-FIFO's small queue
N_META = 8


# -- linked lists over frames -----------------------------------------------------------------------
@jit(inline="always")
def _unlink(prv, nxt, lst, lhead, ltail, lcnt, s):
    L = lst[s]
    p, n = prv[s], nxt[s]
    if p >= 0:
        nxt[p] = n
    else:
        lhead[L] = n
    if n >= 0:
        prv[n] = p
    else:
        ltail[L] = p
    lcnt[L] -= 1
    prv[s] = -1
    nxt[s] = -1
    lst[s] = -1


@jit(inline="always")
def _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, L):
    h = lhead[L]
    prv[s] = -1
    nxt[s] = h
    if h >= 0:
        prv[h] = s
    else:
        ltail[L] = s
    lhead[L] = s
    lst[s] = L
    lcnt[L] += 1


@jit(inline="always")
def _take(fkey, free, meta, key):
    """A free frame for ``key`` (no table update)."""
    meta[M_NFREE] -= 1
    s = free[meta[M_NFREE]]
    fkey[s] = key
    meta[M_SIZE] += 1
    return s


@jit(inline="always")
def _give(fkey, free, meta, s):
    """Frees frame ``s`` (no table update)."""
    fkey[s] = EMPTY
    free[meta[M_NFREE]] = s
    meta[M_NFREE] += 1
    meta[M_SIZE] -= 1


@jit(inline="always")
def _alloc(fkey, free, meta, tkeys, tvals, key):
    s = _take(fkey, free, meta, key)
    ht_put(tkeys, tvals, key, s)
    return s


@jit(inline="always")
def _release(fkey, free, meta, tkeys, tvals, s):
    ht_del(tkeys, tvals, fkey[s])
    _give(fkey, free, meta, s)


# -- LRU, FIFO, SIEVE ---------------------------------------------------------------------------------
@jit(inline="always")
def _evict(v, i, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize, evicted, nev,
           evk, evpos):
    """Evicts frame v at request i: its key goes to ``evicted[i]`` (unit sizes: one eviction per
    miss) or, sized (``fsize`` not None), is appended to ``evk`` (counted in ``nev[i]``, its bytes
    leave ``M_BYTES``)."""
    if evk is not None:
        evk[evpos[0]] = fkey[v]
        evpos[0] += 1
        nev[i] += 1
    if fsize is not None:
        meta[M_BYTES] -= fsize[v]
    if evicted is not None:
        evicted[i] = fkey[v]
    _unlink(prv, nxt, lst, lhead, ltail, lcnt, v)
    _release(fkey, free, meta, tkeys, tvals, v)


# (Each helper tests the argument it writes or reads: Numba prunes the branches of a None argument,
# so the unit-size case compiles without the size work.)
@jit(inline="always")
def _begin(i, evicted, nev):
    """Request i's eviction outputs start empty."""
    if nev is not None:
        nev[i] = 0
    if evicted is not None:
        evicted[i] = EMPTY


@jit(inline="always")
def _remove(s, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize):
    """A delete: frame s (and its bytes) leaves the cache."""
    if fsize is not None:
        meta[M_BYTES] -= fsize[s]
    _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
    _release(fkey, free, meta, tkeys, tvals, s)


@jit(inline="always")
def _size(i, sizes, fsize, limit):
    """Request i's size (1 for unit pages), or -1 when it exceeds ``limit`` and is not admitted."""
    sz = 1
    if fsize is not None:
        sz = sizes[i]
        if sz > limit:
            sz = -1
    return sz


@jit(inline="always")
def _full(meta, k, fsize, sz, cap):
    """Whether a miss of ``sz`` units must still evict: k frames held, or (sized) too few bytes free."""
    return meta[M_SIZE] >= k or (fsize is not None and meta[M_BYTES] + sz > cap)


@jit(inline="always")
def _hold(s, sz, fsize, meta):
    """Frame s now holds an object of ``sz`` bytes (sized objects only)."""
    if fsize is not None:
        fsize[s] = sz
        meta[M_BYTES] += sz


@jit(refcounts=False)
def queue_run(policy, keys, ops, sizes, cap, k, tkeys, tvals, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, bit,
              meta, fsize, hit, evicted, nev, evk, evpos):
    """LRU (policy 0), FIFO (1) and SIEVE (2) over one list, unit-size pages or sized objects.

    SIEVE (Zhang et al., NSDI'24): one FIFO queue and a visited bit; the hand sweeps from the
    oldest towards the newest, clearing visited bits, and evicts the first unvisited frame;
    survivors stay where they are.

    Unit sizes (``fsize`` None, as ``sizes``, ``nev``, ``evk`` and ``evpos``: Numba compiles that
    case apart, its size branches pruned): at most ``k`` pages, a miss evicts at most one, its key in
    ``evicted[i]`` (``EMPTY`` if none). Sized (``fsize`` each frame's object size, ``sizes`` per
    request, the module's byte-capacity mode): at most ``k`` objects and ``cap`` bytes, a miss evicts until the
    object fits (an object over ``cap`` is not admitted), the evicted keys appended to ``evk``
    (``nev[i]`` of them at request i); ``evicted`` is then None.
    """
    for i in range(keys.shape[0]):
        key = keys[i]
        meta[M_T] += 1
        _begin(i, evicted, nev)
        s = ht_get(tkeys, tvals, key)
        if ops[i] == 1:  # delete
            hit[i] = -1 if s < 0 else -2
            if s >= 0:
                if meta[M_HAND] == s:
                    meta[M_HAND] = prv[s]
                _remove(s, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize)
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
        sz = _size(i, sizes, fsize, cap)
        if sz < 0:
            continue
        while _full(meta, k, fsize, sz, cap):
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
            _evict(v, i, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize, evicted,
                   nev, evk, evpos)
        s = _alloc(fkey, free, meta, tkeys, tvals, key)
        bit[s] = 0
        _hold(s, sz, fsize, meta)
        _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 0)


# -- S3-FIFO ------------------------------------------------------------------------------------------
# The ghost FIFO of keys (shared with the byte mode): a ring of 2·G slots for at
# most G keys, each slot's object size in ``gsize`` (1 in page mode), ``gmeta`` = [head, span,
# live, has_evicted, bytes] (the oldest slot, the slots from it to the newest, the live keys among
# them, whether the cache has evicted yet, the live keys' bytes). A key leaving the ghost on a ghost
# hit frees its place at once (its slot is marked EMPTY and skipped); when the span reaches the
# ring, the live keys are packed to its start, at most once every G additions.
G_HEAD, G_SPAN, G_LIVE, G_EVICTED, G_BYTES = 0, 1, 2, 3, 4
N_GMETA = 5


@jit(refcounts=False)
def _ghost_pop(gtk, gtv, ring, gsize, gmeta):
    """Drops the oldest live key of the ghost."""
    R = ring.shape[0]
    while gmeta[G_SPAN] > 0:
        pos = gmeta[G_HEAD]
        key = ring[pos]
        ring[pos] = EMPTY
        gmeta[G_HEAD] = (pos + 1) % R
        gmeta[G_SPAN] -= 1
        if key != EMPTY:
            ht_del(gtk, gtv, key)
            gmeta[G_LIVE] -= 1
            gmeta[G_BYTES] -= gsize[pos]
            return


@jit(inline="always")
def _reverse(a, lo, hi):
    """Reverses a[lo:hi] in place."""
    hi -= 1
    while lo < hi:
        a[lo], a[hi] = a[hi], a[lo]
        lo += 1
        hi -= 1


@jit(refcounts=False)
def _ghost_pack(gtk, gtv, ring, gsize, gmeta):
    """Moves the live keys, in order, to the start of the ring, in place (the ring is rotated so that
    its oldest slot comes first, then its live keys are slid down)."""
    R, head = ring.shape[0], gmeta[G_HEAD]
    if head:
        for a in (ring, gsize):
            _reverse(a, 0, head)
            _reverse(a, head, R)
            _reverse(a, 0, R)
    m = 0
    for j in range(gmeta[G_SPAN]):
        key = ring[j]
        if key != EMPTY:
            ring[m] = key
            gsize[m] = gsize[j]
            ht_put(gtk, gtv, key, m)
            m += 1
    for j in range(m, R):
        ring[j] = EMPTY
    gmeta[G_HEAD], gmeta[G_SPAN] = 0, m


@jit(refcounts=False)
def ghost_add(gtk, gtv, ring, gsize, gmeta, key, size, cap_bytes):
    """Adds a key of ``size`` to the ghost FIFO (at most ``ring.shape[0] // 2`` keys weighing at
    most ``cap_bytes``), dropping the oldest while it would not fit; a key heavier than the whole
    ghost is not added (libCacheSim's FIFO does not admit it)."""
    cap = ring.shape[0] // 2
    if cap == 0 or size > cap_bytes:
        return
    while gmeta[G_LIVE] > 0 and (gmeta[G_LIVE] >= cap or gmeta[G_BYTES] + size > cap_bytes):
        _ghost_pop(gtk, gtv, ring, gsize, gmeta)
    if gmeta[G_SPAN] == ring.shape[0]:
        _ghost_pack(gtk, gtv, ring, gsize, gmeta)
    pos = (gmeta[G_HEAD] + gmeta[G_SPAN]) % ring.shape[0]
    ring[pos] = key
    gsize[pos] = size
    ht_put(gtk, gtv, key, pos)
    gmeta[G_SPAN] += 1
    gmeta[G_LIVE] += 1
    gmeta[G_BYTES] += size


@jit(inline="always")
def ghost_take(gtk, gtv, ring, gsize, gmeta, key):
    """Removes ``key`` from the ghost; whether it was there."""
    pos = ht_get(gtk, gtv, key)
    if pos < 0:
        return False
    ring[pos] = EMPTY
    ht_del(gtk, gtv, key)
    gmeta[G_LIVE] -= 1
    gmeta[G_BYTES] -= gsize[pos]
    R = ring.shape[0]
    while gmeta[G_SPAN] > 0 and ring[gmeta[G_HEAD]] == EMPTY:  # dead slots at the head are let go
        gmeta[G_HEAD] = (gmeta[G_HEAD] + 1) % R
        gmeta[G_SPAN] -= 1
    return True


@jit(refcounts=False)
def s3fifo_run(keys, ops, sizes, cap, k, small_k, tkeys, tvals, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, bit,
               meta, fsize, gtk, gtv, ring, gsize, gmeta, lbits, lbit, hit, evicted, nev, evk, evpos):
    """S3-FIFO (Yang et al., SOSP'23) as libCacheSim's ``S3FIFO.c`` runs it: a small FIFO S
    (list 0, ``small_k`` frames), a main FIFO M (list 1, the other ``k - small_k``) and a ghost
    FIFO G of keys evicted from S (``ring.shape[0] // 2`` of them, 90% of k by default). ``bit``
    is the access count (capped at 3: only "at least 2" and min(count, 3) are ever read). A miss
    whose key is in G leaves G and enters M; before the first eviction a miss enters M once S
    holds ``small_k`` pages; every other miss enters S. An eviction takes from M when M holds more
    than its share or S is empty, else from S: S's oldest page moves to M (count reset) when it was
    accessed at least twice, else leaves for G (S is walked until one page leaves); M's oldest
    page is reinserted with min(count, 3) − 1 while its count is positive, else leaves. A delete
    removes its key from the cache or from G.

    libCacheSim caches nothing at all below 20 pages (its S of ⌊0.1·k⌋ ≤ 1 page refuses pages of
    size 1); here S has at least one frame, so tiny caches differ (``tests/test_libcachesim.py``
    compares request by request from 20 pages up).

    Sized objects (the size arguments as in :func:`queue_run`; ``small_k`` then unused), as
    libCacheSim weighs them: S holds a tenth of the ``cap`` bytes (``M_SBYTES``), M the rest, the
    ghost ⌊0.9·cap⌋ bytes of keys (and at most ``ring.shape[0] // 2`` keys); M is evicted from
    while it holds more than its bytes. An object heavier than S is not admitted (libCacheSim's
    ``can_insert``); one exactly as heavy as S is admitted here (libCacheSim refuses it after its
    evictions), which keeps unit sizes equal to the page mode.

    With learned bits (``lbits`` per request, 1 "safe to evict"; ``lbit`` each frame's latest bit;
    both None for plain S3-FIFO) the bit vetoes promotion: S's oldest page moves to M only when
    it was accessed twice and its latest bit is 0 (eddy's own combination, a shadow of
    ``learned-discard``: a page that the predictor expects Belady to evict is not given M's room).
    """
    g = ring.shape[0] // 2
    small, main, gcap = small_k, k - small_k, g
    if fsize is not None:
        small = max(1, cap // 10)
        main = cap - small
        gcap = (cap * 9) // 10
    for i in range(keys.shape[0]):
        key = keys[i]
        meta[M_T] += 1
        _begin(i, evicted, nev)
        s = ht_get(tkeys, tvals, key)
        if ops[i] == 1:
            hit[i] = -1 if s < 0 else -2
            if s >= 0:
                if fsize is not None:
                    if lst[s] == 0:
                        meta[M_SBYTES] -= fsize[s]
                _remove(s, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize)
            else:
                ghost_take(gtk, gtv, ring, gsize, gmeta, key)
            continue
        if s >= 0:
            hit[i] = 1
            if bit[s] < 3:
                bit[s] += 1
            if lbits is not None:
                lbit[s] = lbits[i]
            continue
        hit[i] = 0
        ghost_hit = ghost_take(gtk, gtv, ring, gsize, gmeta, key)
        sz = _size(i, sizes, fsize, small)
        if sz < 0:
            continue
        while _full(meta, k, fsize, sz, cap):
            gmeta[G_EVICTED] = 1
            m_used = lcnt[1]
            if fsize is not None:
                m_used = meta[M_BYTES] - meta[M_SBYTES]
            if m_used > main or lcnt[0] == 0:
                while True:  # M: reinsert while the count is positive
                    t = ltail[1]
                    if bit[t] > 0:
                        bit[t] -= 1
                        _unlink(prv, nxt, lst, lhead, ltail, lcnt, t)
                        _push_head(prv, nxt, lst, lhead, ltail, lcnt, t, 1)
                    else:
                        _evict(t, i, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize, evicted,
                               nev, evk, evpos)
                        break
            else:
                while lcnt[0] > 0:  # S: promote the twice-accessed, until one page leaves
                    t = ltail[0]
                    t_size = 1
                    if fsize is not None:
                        t_size = fsize[t]
                        meta[M_SBYTES] -= t_size
                    veto = False
                    if lbits is not None:
                        veto = lbit[t] == 1
                    if bit[t] > 1 and not veto:
                        bit[t] = 0
                        _unlink(prv, nxt, lst, lhead, ltail, lcnt, t)
                        _push_head(prv, nxt, lst, lhead, ltail, lcnt, t, 1)
                    else:
                        ghost_add(gtk, gtv, ring, gsize, gmeta, fkey[t], t_size, gcap)
                        _evict(t, i, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize, evicted,
                               nev, evk, evpos)
                        break
        s = _alloc(fkey, free, meta, tkeys, tvals, key)
        bit[s] = 0
        if lbits is not None:
            lbit[s] = lbits[i]
        _hold(s, sz, fsize, meta)
        s_used = lcnt[0]
        if fsize is not None:
            s_used = meta[M_SBYTES]
        if ghost_hit or (gmeta[G_EVICTED] == 0 and s_used >= small):
            _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 1)
        else:
            if fsize is not None:
                meta[M_SBYTES] += sz
            _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 0)


# -- ARC ----------------------------------------------------------------------------------------------
@jit(inline="always")
def _arc_replace(in_b2, p, tkeys, tvals, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta,
                 gkey, gfree, gprv, gnxt, glst, ghead, gtail, gcnt, gmeta):
    """ARC's REPLACE: evicts the LRU page of T1 (to ghost B1) or of T2 (to ghost B2); returns its key.
    One table maps a key to its cache frame (< k) or to k + its ghost frame: a page becoming a ghost
    only changes its value."""
    if lcnt[0] >= 1 and ((in_b2 and lcnt[0] == p) or lcnt[0] > p):
        v = ltail[0]
        L = 0
    else:
        v = ltail[1] if lcnt[1] > 0 else ltail[0]
        L = 1 if lcnt[1] > 0 else 0
    key = fkey[v]
    _unlink(prv, nxt, lst, lhead, ltail, lcnt, v)
    _give(fkey, free, meta, v)
    g = _take(gkey, gfree, gmeta, key)
    ht_put(tkeys, tvals, key, fkey.shape[0] + g)
    _push_head(gprv, gnxt, glst, ghead, gtail, gcnt, g, L)
    return key


@jit(inline="always")
def _ghost_drop_lru(L, tkeys, tvals, gkey, gfree, gprv, gnxt, glst, ghead, gtail, gcnt, gmeta):
    g = gtail[L]
    _unlink(gprv, gnxt, glst, ghead, gtail, gcnt, g)
    ht_del(tkeys, tvals, gkey[g])
    _give(gkey, gfree, gmeta, g)


@jit(refcounts=False)
def arc_run(keys, ops, k, tkeys, tvals, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, bit, meta,
            gkey, gfree, gprv, gnxt, glst, ghead, gtail, gcnt, gmeta, pf, hit, evicted):
    """ARC (Megiddo & Modha, FAST'03): T1/T2 (lists 0/1 of the cache frames) hold pages seen once /
    at least twice recently, B1/B2 (lists 0/1 of the ghost frames, keys only) what they evicted;
    the target size ``pf[0]`` of T1 adapts on ghost hits. Follows the paper's pseudo-code. The key
    table ``tkeys``/``tvals`` holds cached keys (value: frame < k) and ghosts (k + ghost frame)."""
    c = k
    for i in range(keys.shape[0]):
        key = keys[i]
        meta[M_T] += 1
        evicted[i] = EMPTY
        v = ht_get(tkeys, tvals, key)
        s = v if v < c else -1
        g = v - c if v >= c else -1
        if ops[i] == 1:
            hit[i] = -1 if s < 0 else -2
            if s >= 0:
                _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
                _release(fkey, free, meta, tkeys, tvals, s)
            if g >= 0:
                _unlink(gprv, gnxt, glst, ghead, gtail, gcnt, g)
                _release(gkey, gfree, gmeta, tkeys, tvals, g)
            continue
        if s >= 0:  # case I
            hit[i] = 1
            _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
            _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 1)
            continue
        hit[i] = 0
        if g >= 0:  # cases II and III: a ghost hit adapts the target
            in_b2 = glst[g] == 1
            if not in_b2:
                pf[0] = min(float(c), pf[0] + max(gcnt[1] / gcnt[0], 1.0))
            else:
                pf[0] = max(0.0, pf[0] - max(gcnt[0] / gcnt[1], 1.0))
            _unlink(gprv, gnxt, glst, ghead, gtail, gcnt, g)
            _give(gkey, gfree, gmeta, g)
            if meta[M_SIZE] >= c:
                evicted[i] = _arc_replace(in_b2, pf[0], tkeys, tvals, fkey, free, prv, nxt, lst, lhead, ltail,
                                          lcnt, meta, gkey, gfree, gprv, gnxt, glst, ghead, gtail, gcnt, gmeta)
            s = _alloc(fkey, free, meta, tkeys, tvals, key)  # overwrites the ghost's value
            _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 1)
            continue
        # case IV: a new page
        if lcnt[0] + gcnt[0] == c:
            if lcnt[0] < c:
                _ghost_drop_lru(0, tkeys, tvals, gkey, gfree, gprv, gnxt, glst, ghead, gtail, gcnt, gmeta)
                if meta[M_SIZE] >= c:
                    evicted[i] = _arc_replace(False, pf[0], tkeys, tvals, fkey, free, prv, nxt, lst, lhead,
                                              ltail, lcnt, meta, gkey, gfree, gprv, gnxt, glst, ghead, gtail, gcnt,
                                              gmeta)
            else:
                v = ltail[0]
                evicted[i] = fkey[v]
                _unlink(prv, nxt, lst, lhead, ltail, lcnt, v)
                _release(fkey, free, meta, tkeys, tvals, v)
        else:
            total = lcnt[0] + lcnt[1] + gcnt[0] + gcnt[1]
            if total >= c:
                if total == 2 * c:
                    _ghost_drop_lru(1, tkeys, tvals, gkey, gfree, gprv, gnxt, glst, ghead, gtail, gcnt, gmeta)
                if meta[M_SIZE] >= c:
                    evicted[i] = _arc_replace(False, pf[0], tkeys, tvals, fkey, free, prv, nxt, lst, lhead,
                                              ltail, lcnt, meta, gkey, gfree, gprv, gnxt, glst, ghead, gtail, gcnt,
                                              gmeta)
        s = _alloc(fkey, free, meta, tkeys, tvals, key)
        _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 0)


# -- randomized Marker --------------------------------------------------------------------------------
@jit(refcounts=False)
def _unm_remove(unm, upos, meta, s):
    j = upos[s]
    last = unm[meta[M_NUNM] - 1]
    unm[j] = last
    upos[last] = j
    meta[M_NUNM] -= 1
    upos[s] = -1


@jit(refcounts=False)
def marker_run(seed, keys, ops, k, tkeys, tvals, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, bit, meta,
               unm, upos, hit, evicted):
    """Randomized Marker (Fiat et al. 1991): phases; a requested page is marked; a fault evicts a
    uniformly random unmarked page, and starts a new phase (unmarking all) when none is left.

    The draw for request ``t`` is ``draw_uniform(seed, t, 0)``: a function of the seed and the
    request's position, so a replay or a restart from a snapshot evicts the same pages.
    ``bit`` is the mark; frames are kept in one list only to enumerate them.
    """
    for i in range(keys.shape[0]):
        key = keys[i]
        meta[M_T] += 1
        t = meta[M_T]
        evicted[i] = EMPTY
        s = ht_get(tkeys, tvals, key)
        if ops[i] == 1:
            hit[i] = -1 if s < 0 else -2
            if s >= 0:
                if bit[s] == 0:
                    _unm_remove(unm, upos, meta, s)
                _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
                _release(fkey, free, meta, tkeys, tvals, s)
            continue
        if s >= 0:
            hit[i] = 1
            if bit[s] == 0:
                _unm_remove(unm, upos, meta, s)
                bit[s] = 1
            continue
        hit[i] = 0
        if meta[M_SIZE] >= k:
            if meta[M_NUNM] == 0:  # every page marked: a new phase
                meta[M_PHASE] += 1
                f = lhead[0]
                while f >= 0:
                    bit[f] = 0
                    upos[f] = meta[M_NUNM]
                    unm[meta[M_NUNM]] = f
                    meta[M_NUNM] += 1
                    f = nxt[f]
            r = int(draw_uniform(seed, t, 0) * meta[M_NUNM])
            v = unm[r]
            _unm_remove(unm, upos, meta, v)
            evicted[i] = fkey[v]
            _unlink(prv, nxt, lst, lhead, ltail, lcnt, v)
            _release(fkey, free, meta, tkeys, tvals, v)
        s = _alloc(fkey, free, meta, tkeys, tvals, key)
        bit[s] = 1
        _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 0)


# -- predictions: follow the discard bits -------------------------------------------------------------
@jit(refcounts=False)
def ftp_discard_run(keys, ops, sizes, cap, bits, grace, k, tkeys, tvals, fkey, free, prv, nxt, lst, lhead, ltail, lcnt,
                    bit, meta, fsize, ltime, hit, evicted, nev, evk, evpos):
    """Follow-the-prediction with discard bits (reconstructed, see :mod:`learners.paging`).

    Every page keeps the bit of its latest request; a fault evicts the least recently used page
    whose bit says "safe to evict" (list 1), and the least recently used page otherwise (list 0).
    With exact bits (1 iff Belady evicts the page before its next request, or it is never
    requested again) it faults exactly when Belady does.

    ``grace[i]`` (requests) softens the trust in "keep" bits for learned predictions: at a fault
    at request i, the least recently used kept page is evicted instead when it was last requested
    more than ``grace[i]`` requests before the least recently used safe page (a "keep" that has
    waited that long was probably wrong). A grace of at least the stream length is plain FtP;
    ``ltime`` holds each frame's last request time.

    Unit sizes or sized objects as in :func:`queue_run` (a sized miss evicts by the same rule
    until the object fits).
    """
    for i in range(keys.shape[0]):
        key = keys[i]
        meta[M_T] += 1
        _begin(i, evicted, nev)
        s = ht_get(tkeys, tvals, key)
        if ops[i] == 1:
            hit[i] = -1 if s < 0 else -2
            if s >= 0:
                _remove(s, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize)
            continue
        if s >= 0:
            hit[i] = 1
            _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
        else:
            hit[i] = 0
            sz = _size(i, sizes, fsize, cap)
            if sz < 0:
                continue
            while _full(meta, k, fsize, sz, cap):
                kt, st = ltail[0], ltail[1]
                v = st if st >= 0 and (kt < 0 or ltime[kt] + grace[i] >= ltime[st]) else kt
                _evict(v, i, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize, evicted, nev,
                       evk, evpos)
            s = _alloc(fkey, free, meta, tkeys, tvals, key)
            _hold(s, sz, fsize, meta)
        b = 1 if bits[i] else 0
        bit[s] = b
        ltime[s] = meta[M_T]
        _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, b)


@jit(refcounts=False)
def marker_discard_run(keys, ops, bits, k, tkeys, tvals, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, bit, meta,
                       hit, evicted):
    """The robust marking variant with one-bit predictions (reconstructed, see :mod:`learners.paging`).

    Marker's phases (a requested page is marked; when no unmarked page is left at a fault, a new
    phase unmarks all). A fault evicts an unmarked page: the least recently used one whose bit
    says "safe to evict" (list 1), else the least recently used unmarked one (list 0). Marked pages
    are list 2. Being a marking algorithm it faults at most k times per phase whatever the bits
    (k-competitive); with exact bits it avoids evicting pages needed again in the phase.
    """
    for i in range(keys.shape[0]):
        key = keys[i]
        meta[M_T] += 1
        evicted[i] = EMPTY
        s = ht_get(tkeys, tvals, key)
        if ops[i] == 1:
            hit[i] = -1 if s < 0 else -2
            if s >= 0:
                _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
                _release(fkey, free, meta, tkeys, tvals, s)
            continue
        if s >= 0:
            hit[i] = 1
            _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
        else:
            hit[i] = 0
            if meta[M_SIZE] >= k:
                if lcnt[0] + lcnt[1] == 0:  # every page marked: a new phase, LRU order kept
                    meta[M_PHASE] += 1
                    f = ltail[2]
                    while f >= 0:
                        p = prv[f]
                        _unlink(prv, nxt, lst, lhead, ltail, lcnt, f)
                        _push_head(prv, nxt, lst, lhead, ltail, lcnt, f, bit[f])
                        f = p
                v = ltail[1] if lcnt[1] > 0 else ltail[0]
                evicted[i] = fkey[v]
                _unlink(prv, nxt, lst, lhead, ltail, lcnt, v)
                _release(fkey, free, meta, tkeys, tvals, v)
            s = _alloc(fkey, free, meta, tkeys, tvals, key)
        bit[s] = 1 if bits[i] else 0
        _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 2)


# -- following the leader among shadows --------------------------------------------------------------
@jit(refcounts=False)
def follow_run(keys, ops, sizes, cap, lead_ev, lead_nev, lead_evk, tkeys, tvals, fkey, free, prv, nxt, lst, lhead,
               ltail, lcnt, bit, meta, fsize, hit, evicted, nev, evk, evpos):
    """The real cache of a follow-the-leader combiner, over requests that the leading shadow has
    already replayed: unit sizes, ``lead_ev[i]`` the key it evicted at request i or ``EMPTY``
    (``lead_nev``/``lead_evk`` None); sized objects, ``lead_nev[i]`` keys evicted at request i,
    in order in ``lead_evk`` (``lead_ev`` None; the size arguments as in :func:`queue_run`).

    List 1 holds the real pages that the leader also holds, list 0 the others. When the leader
    drops a page, the real cache moves it to list 0; on a fault the real cache evicts from list 0
    first, least recently used first (a page exists there while the real cache is full: the leader
    holds the requested page and the real cache does not), until it fits, so after a switch it
    converges to the leader's contents within k faults, and faults no more often than the leader
    otherwise.
    """
    k = fkey.shape[0]
    p = 0
    for i in range(keys.shape[0]):
        key = keys[i]
        meta[M_T] += 1
        _begin(i, evicted, nev)
        if lead_ev is not None:
            q = lead_ev[i]
            if q != EMPTY:
                _unheld(q, tkeys, tvals, prv, nxt, lst, lhead, ltail, lcnt)
        if lead_nev is not None:
            for j in range(lead_nev[i]):
                _unheld(lead_evk[p + j], tkeys, tvals, prv, nxt, lst, lhead, ltail, lcnt)
            p += lead_nev[i]
        s = ht_get(tkeys, tvals, key)
        if ops[i] == 1:
            hit[i] = -1 if s < 0 else -2
            if s >= 0:
                _remove(s, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize)
            continue
        if s >= 0:
            hit[i] = 1
            _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
        else:
            hit[i] = 0
            sz = _size(i, sizes, fsize, cap)
            if sz < 0:
                continue
            while _full(meta, k, fsize, sz, cap):
                v = ltail[0] if lcnt[0] > 0 else ltail[1]
                _evict(v, i, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, meta, tkeys, tvals, fsize, evicted, nev,
                       evk, evpos)
            s = _alloc(fkey, free, meta, tkeys, tvals, key)
            _hold(s, sz, fsize, meta)
        _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 1)  # the leader holds it now


@jit(inline="always")
def _unheld(q, tkeys, tvals, prv, nxt, lst, lhead, ltail, lcnt):
    """The leader dropped key q: a real page of it moves to list 0 (evicted first)."""
    s = ht_get(tkeys, tvals, q)
    if s >= 0 and lst[s] == 1:
        _unlink(prv, nxt, lst, lhead, ltail, lcnt, s)
        _push_head(prv, nxt, lst, lhead, ltail, lcnt, s, 0)


@jit(refcounts=False)
def resort(ltk, ltv, tkeys, tvals, fkey, free, prv, nxt, lst, lhead, ltail, lcnt, bit, meta):
    """After a switch: re-sorts the real pages into list 1 (held by the new leader, whose key table
    is ``ltk``/``ltv``, values < k) and list 0 (not held), keeping least-recently-used order within each."""
    for L in range(2):
        f = ltail[L]
        while f >= 0:
            p = prv[f]
            v = ht_get(ltk, ltv, fkey[f])
            want = 1 if 0 <= v < fkey.shape[0] else 0  # (ARC's table also maps its ghosts, to k and up)
            if want != L:
                _unlink(prv, nxt, lst, lhead, ltail, lcnt, f)
                _push_head(prv, nxt, lst, lhead, ltail, lcnt, f, want)
            f = p


@jit(refcounts=False)
def resort_at(keys, hits, evs, e, j, end, stk, stv, ltk, ltv, tkeys, tvals, fkey, free, prv, nxt, lst, lhead, ltail,
              lcnt, bit, meta):
    """:func:`resort` as of request j of a chunk whose requests j..end-1 the new leader (row e of
    ``hits``/``evs``, its key table ``ltk``/``ltv`` as of ``end``) has already replayed: whether it
    held a key at j is read from the key's first event after j (a hit, or an eviction, or a delete
    that removed it, hit -2: held; a miss: not held; none: as at ``end``). Unit-size pages (a
    request evicts at most one page). ``stk``/``stv``: an empty scratch table for 2 (end - j) keys,
    left empty."""
    for r in range(end - 1, j - 1, -1):  # backwards: the first event after j is written last
        h = hits[e, r]
        if h == 0:
            ht_put(stk, stv, keys[r], 0)
        elif h == 1 or h == -2:
            ht_put(stk, stv, keys[r], 1)
        if evs[e, r] != EMPTY:
            ht_put(stk, stv, evs[e, r], 1)
    c = fkey.shape[0]
    for L in range(2):
        f = ltail[L]
        while f >= 0:
            p = prv[f]
            want = ht_get(stk, stv, fkey[f])
            if want < 0:
                v = ht_get(ltk, ltv, fkey[f])
                want = 1 if 0 <= v < c else 0  # (ARC's table also maps its ghosts, to k and up)
            if want != L:
                _unlink(prv, nxt, lst, lhead, ltail, lcnt, f)
                _push_head(prv, nxt, lst, lhead, ltail, lcnt, f, want)
            f = p
    for r in range(j, end):
        ht_del(stk, stv, keys[r])
        if evs[e, r] != EMPTY:
            ht_del(stk, stv, evs[e, r])


CM_LEADER, CM_SWITCHES, CM_MARGIN, CM_NEXT, CM_DMAX, CM_FAULTS_AT, CM_T_AT = range(7)
N_CM = 7
LEAST_STRETCH = 64


@jit(refcounts=False)
def first_check(k, most):
    """Where the first check of the switching rule falls: after max(k, ``LEAST_STRETCH``) requests,
    at most ``most``."""
    return min(most, max(LEAST_STRETCH, k))


@jit(refcounts=False)
def leader_after(faults, cm, margin, k, most, t):
    """The switching rule, checked at request t = ``cm[CM_NEXT]`` (an absolute position, so that
    the outcome does not depend on how a stream is cut into batches).

    The leader changes to the shadow with the fewest faults when the leader's faults exceed those
    by the current margin (``margin`` at first, doubling at every switch, so few switches on any
    input). The next check comes after the stretch in which the leader, faulting at the rate of the
    stretch just ended, would fault about k times: k x (its length) / (the leader's faults in it),
    at least ``LEAST_STRETCH`` and at most ``most`` requests (``most`` also when it did not fault).
    So checks come often on small caches and high fault rates, seldom on large caches with few
    faults, and a leader that falls behind is noticed about k of its faults late.

    **Bound.** Let m(T) be the fewest faults of any shadow after T requests, S the switches, M the
    last margin and D the most faults the leader made in one stretch (``cm[CM_DMAX]``, or the
    unfinished last stretch's if more). Then the
    leaders' faults over their phases sum to at most m(T) + (S + 1)(M + D): at a switch the new
    leader has m faults, and at each check it kept the lead its faults were within the margin of
    the best's, which only grow, so each phase ends at most M + D above the best (a telescoping
    sum). The real cache faults at most k more than its leader in each phase after a switch (it
    evicts the pages the leader does not hold first), so it faults at most
    m(T) + (S + 1)(M + D) + S·k times (``tests/test_kernels_paging.py`` checks this).

    ``cm`` = [leader, switches, margin now, next check, D, the leader's faults at the last check,
    the last check's position]; returns True on a switch.
    """
    if cm[CM_MARGIN] == 0:
        cm[CM_MARGIN] = margin
    lead = cm[CM_LEADER]
    d = faults[lead] - cm[CM_FAULTS_AT]
    if d > cm[CM_DMAX]:
        cm[CM_DMAX] = d
    best = lead
    for e in range(faults.shape[0]):
        if faults[e] < faults[best]:
            best = e
    switched = faults[lead] > faults[best] + cm[CM_MARGIN]
    if switched:
        cm[CM_LEADER] = best
        cm[CM_SWITCHES] += 1
        cm[CM_MARGIN] *= 2
    length = t - cm[CM_T_AT]
    stretch = most if d <= 0 else min(most, max(LEAST_STRETCH, (k * length + d - 1) // d))
    cm[CM_NEXT] = t + stretch
    cm[CM_FAULTS_AT] = faults[cm[CM_LEADER]]
    cm[CM_T_AT] = t
    return switched


# -- offline optimum ----------------------------------------------------------------------------------
@jit
def next_use(keys, tkeys, tvals):
    """Position of each request's next request of the same key (n + i when there is none, so
    that pages never requested again are the furthest, most recent last)."""
    n = keys.shape[0]
    out = np.empty(n, dtype=np.int64)
    for i in range(n - 1, -1, -1):
        j = ht_get(tkeys, tvals, keys[i])
        out[i] = j if j >= 0 else n + i
        ht_put(tkeys, tvals, keys[i], i)
    return out


@jit
def reuse_distance_run(keys, nxt_use):
    """Distinct keys requested strictly between each request and its key's next request (-1 when
    there is none; ``nxt_use`` from :func:`next_use`): a Fenwick tree over positions marks each
    key's latest request, and a request's distance is the number of marks between it and its
    next request, counted when that comes."""
    n = keys.shape[0]
    tree = np.zeros(n + 1, dtype=np.int64)
    prev = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        if nxt_use[i] < n:
            prev[nxt_use[i]] = i
    out = np.full(n, -1, dtype=np.int64)
    for t in range(n):
        p = prev[t]
        if p >= 0:
            c = 0
            j = t
            while j > 0:  # marks at positions < t
                c += tree[j]
                j -= j & -j
            j = p + 1
            while j > 0:  # less those at positions <= p
                c -= tree[j]
                j -= j & -j
            out[p] = c
            j = p + 1
            while j <= n:  # p is no longer its key's latest request
                tree[j] -= 1
                j += j & -j
        j = t + 1
        while j <= n:
            tree[j] += 1
            j += j & -j
    return out


@jit
def phase_ids(keys, k, tkeys, tvals):
    """Marker phases of a request sequence: maximal blocks of requests to k distinct pages.

    ``tkeys``/``tvals`` (empty, for at least k keys) hold the current phase's pages.
    """
    n = keys.shape[0]
    out = np.empty(n, dtype=np.int64)
    phase = 0
    distinct = 0
    for i in range(n):
        key = keys[i]
        if ht_get(tkeys, tvals, key) != phase:
            if distinct == k:  # a (k+1)-th distinct page starts a new phase
                phase += 1
                distinct = 0
            ht_put(tkeys, tvals, key, phase)
            distinct += 1
        out[i] = phase
    return out


@jit
def _heap_push(hv, hk, size, v, key):
    i = size
    hv[i] = v
    hk[i] = key
    while i > 0:
        p = (i - 1) // 2
        if hv[p] >= hv[i]:
            break
        hv[p], hv[i] = hv[i], hv[p]
        hk[p], hk[i] = hk[i], hk[p]
        i = p
    return size + 1


@jit
def _heap_pop(hv, hk, size):
    size -= 1
    hv[0] = hv[size]
    hk[0] = hk[size]
    i = 0
    while True:
        a, b, m = 2 * i + 1, 2 * i + 2, i
        if a < size and hv[a] > hv[m]:
            m = a
        if b < size and hv[b] > hv[m]:
            m = b
        if m == i:
            break
        hv[m], hv[i] = hv[i], hv[m]
        hk[m], hk[i] = hk[i], hk[m]
        i = m
    return size


@jit
def belady_run(keys, nxt_use, k, tkeys, tvals, hit, evicted):
    """Belady's furthest-in-future (OPT for unit pages), with a lazy max-heap of next uses.

    ``tkeys``/``tvals`` map each cached key to its current next use. Returns the miss count.
    """
    n = keys.shape[0]
    hv = np.empty(n, dtype=np.int64)
    hk = np.empty(n, dtype=np.int64)
    size = 0
    cached = 0
    misses = 0
    for i in range(n):
        key = keys[i]
        evicted[i] = EMPTY
        if ht_get(tkeys, tvals, key) >= 0:
            hit[i] = 1
        else:
            hit[i] = 0
            misses += 1
            if cached >= k:
                while True:  # the furthest next use whose entry is current
                    v, vk = hv[0], hk[0]
                    size = _heap_pop(hv, hk, size)
                    if ht_get(tkeys, tvals, vk) == v:
                        break
                ht_del(tkeys, tvals, vk)
                evicted[i] = vk
                cached -= 1
            cached += 1
        ht_put(tkeys, tvals, key, nxt_use[i])
        size = _heap_push(hv, hk, size, nxt_use[i], key)
    return misses
