"""Numba kernels of the robust policies: several shadow caches replayed side by side, the real cache
following whichever has faulted least (follow-the-leader with a doubling margin).

Requests go in stretches that end where the switching rule is checked next (an absolute request
position kept in the state, so the outcome does not depend on how a stream is cut into batches):
each shadow replays the stretch with its own kernel, the real cache replays it after the leader
(:func:`._kernels.follow_run`), and the switching rule (:func:`._kernels.leader_after`) runs at the
stretch's end and sets the next one's length from the cache size and the leader's fault rate
(about k of its faults per stretch, between 64 and ``most`` requests). Its docstring states and
proves the bound: the real cache faults at most as often as the best shadow plus, per switch,
k + the margin + the most faults of the leader in one stretch (and one margin and stretch more).
The learned policy goes in chunks of requests: the predictor's bits, then the shadows over them,
then the real cache following the leader stretch by stretch; with two threads the predictor works
on the next chunk while the shadows and the real cache replay this one (the kernels release the
GIL).

Shadows of ``robust-discard``: FtP over the given bits, LRU. Shadows of ``learned-discard``: LRU,
ARC, S3-FIFO, FtP over the learned bit ``p > 0.3`` with a grace of a quarter of the predicted
horizon (:func:`._kernels.ftp_discard_run`), and S3-FIFO with the same bit vetoing promotion: a
page leaving S3-FIFO's small queue moves to the main one only when it was accessed twice and its
latest bit does not say "safe" (:func:`._kernels.s3fifo_run`; eddy's own combination). S3-FIFO
leads at first (in both modes): until the predictor has learned, the real cache is an S3-FIFO
cache (``robust-discard``: LRU). The race is what makes the learned policy robust (never much worse than
LRU, whatever the bits) and lets the classical shadows carry the traces where the bits are weak;
the benchmark reports each shadow's misses, so the learned shadows' share is visible.
"""

from __future__ import annotations

import numpy as np

from .._numba import jit
from . import _kernels as K
from ._predict import predict_step

BIG_GRACE = np.int64(1) << 62
LEARNED_SHADOWS = ("lru", "arc", "s3fifo", "ftp-0.3-quarter", "s3fifo-learned")
LEARNED_SHADOWS_BYTES = ("lru", "s3fifo", "ftp-0.3-quarter", "ftp-0.5")  # byte-capacity mode: no ARC, and FtP
# over the bit p > 0.5 without grace where the unit-size mode races the learned S3-FIFO
ROBUST_SHADOWS = ("ftp", "lru")


@jit(refcounts=False)
def _count_faults(hits, faults, m):
    for e in range(hits.shape[0]):
        for j in range(m):
            if hits[e, j] == 0:
                faults[e] += 1


@jit(refcounts=False)
def robust_run(keys, ops, bits, most, margin, fa, fa_time, fb, real, cm, faults, hits, evs, grace, hit, evicted):
    """``robust-discard``: FtP over ``bits`` (shadow ``fa``) against LRU (``fb``); stretches of at
    most ``most`` requests (the scratch arrays' length)."""
    n = keys.shape[0]
    k = real[2].shape[0]
    meta = real[11]
    i = 0
    while i < n:
        b = min(n, i + cm[K.CM_NEXT] - meta[K.M_T])
        m = b - i
        ks, os = keys[i:b], ops[i:b]
        K.ftp_discard_run(ks, os, None, k, bits[i:b], grace[:m], k, fa[0], fa[1], fa[2], fa[3], fa[4], fa[5], fa[6],
                          fa[7], fa[8], fa[9], fa[10], fa[11], None, fa_time, hits[0, :m], evs[0, :m], None, None, None)
        K.queue_run(0, ks, os, None, k, k, fb[0], fb[1], fb[2], fb[3], fb[4], fb[5], fb[6], fb[7], fb[8], fb[9],
                    fb[10], fb[11], None, hits[1, :m], evs[1, :m], None, None, None)
        _count_faults(hits, faults, m)
        K.follow_run(ks, os, None, 0, evs[cm[0], :m], None, None, real[0], real[1], real[2], real[3], real[4], real[5],
                     real[6], real[7], real[8], real[9], real[10], real[11], None, hit[i:b], evicted[i:b], None, None,
                     None)
        if meta[K.M_T] == cm[K.CM_NEXT] and K.leader_after(faults, cm, margin, k, most, meta[K.M_T]):
            lead = fa if cm[0] == 0 else fb
            K.resort(lead[0], lead[1], real[0], real[1], real[2], real[3], real[4], real[5], real[6], real[7],
                     real[8], real[9], real[10], real[11])
        i = b


@jit(refcounts=False)
def learned_bits(keys, ops, k, reach, ps, prob, horizon, bits, grace):
    """``learned-discard``, first step of a chunk: the predictor's outputs (into ``prob`` and
    ``horizon``) and the learned shadows' inputs: the bit p > 0.3 and a grace of a quarter of the
    horizon (into ``bits``/``grace``, at least as long as the chunk)."""
    for j in range(keys.shape[0]):
        if ops[j] == 1:  # a delete is not a request: no prediction
            p, h = 0.0, 0
        else:
            p, h = predict_step(keys[j], 1, k, k - 1, reach, ps[0], ps[1], ps[2], ps[3], ps[4], ps[5], ps[6], ps[7],
                                ps[8], ps[9], ps[10], ps[11])
        prob[j] = p
        horizon[j] = h
        bits[j] = 1 if p > 0.3 else 0
        grace[j] = h // 4


@jit(refcounts=False)
def learned_shadows(keys, ops, k, f1, ftime, s3l, s3l_ghost, s3l_bit, small_k, bits, grace, hits, evs):
    """``learned-discard``: the two learned shadows over a chunk's bits (rows 3 and 4 of
    ``hits``/``evs``): FtP (``ftime``: its frames' last request times) and the learned S3-FIFO
    (``s3l_bit``: its frames' latest bits)."""
    m = keys.shape[0]
    K.ftp_discard_run(keys, ops, None, k, bits[:m], grace[:m], k, f1[0], f1[1], f1[2], f1[3], f1[4], f1[5], f1[6],
                      f1[7], f1[8], f1[9], f1[10], f1[11], None, ftime, hits[3, :m], evs[3, :m], None, None, None)
    K.s3fifo_run(keys, ops, None, k, k, small_k, s3l[0], s3l[1], s3l[2], s3l[3], s3l[4], s3l[5], s3l[6], s3l[7],
                 s3l[8], s3l[9], s3l[10], s3l[11], None, s3l_ghost[0], s3l_ghost[1], s3l_ghost[2], s3l_ghost[3],
                 s3l_ghost[4], bits[:m], s3l_bit, hits[4, :m], evs[4, :m], None, None, None)


@jit(refcounts=False)
def learned_classical(keys, ops, k, lru, arc, arc_ghost, arc_p, s3, s3_ghost, small_k, hits, evs):
    """``learned-discard``: the LRU, ARC and S3-FIFO shadows over a chunk (rows 0-2 of
    ``hits``/``evs``)."""
    m = keys.shape[0]
    K.queue_run(0, keys, ops, None, k, k, lru[0], lru[1], lru[2], lru[3], lru[4], lru[5], lru[6], lru[7], lru[8],
                lru[9], lru[10], lru[11], None, hits[0, :m], evs[0, :m], None, None, None)
    K.arc_run(keys, ops, k, arc[0], arc[1], arc[2], arc[3], arc[4], arc[5], arc[6], arc[7], arc[8], arc[9], arc[10],
              arc[11], arc_ghost[0], arc_ghost[1], arc_ghost[2], arc_ghost[3], arc_ghost[4], arc_ghost[5],
              arc_ghost[6], arc_ghost[7], arc_ghost[8], arc_p, hits[1, :m], evs[1, :m])
    K.s3fifo_run(keys, ops, None, k, k, small_k, s3[0], s3[1], s3[2], s3[3], s3[4], s3[5], s3[6], s3[7], s3[8], s3[9],
                 s3[10], s3[11], None, s3_ghost[0], s3_ghost[1], s3_ghost[2], s3_ghost[3], s3_ghost[4], None, None,
                 hits[2, :m], evs[2, :m], None, None, None)


@jit(refcounts=False)
def learned_follow(keys, ops, most, margin, lru, arc, s3, f1, s3l, real, cm, faults, hits, evs, hit, evicted, stk, stv):
    """``learned-discard``, after both halves replayed a chunk of requests (any length): the real
    cache follows its leader stretch by stretch, each stretch ending where the switching rule is
    checked next; after a switch inside the chunk the real pages are sorted by what the new
    leader held then (:func:`._kernels.resort_at`; ``stk``/``stv`` its scratch table), so a chunk
    gives the outputs the stretches would have given one by one, however the stream is cut."""
    n = keys.shape[0]
    k = real[2].shape[0]
    meta = real[11]
    i = 0
    while i < n:
        b = min(n, i + cm[K.CM_NEXT] - meta[K.M_T])  # (the next check lies ahead: b > i)
        for e in range(hits.shape[0]):
            for j in range(i, b):
                if hits[e, j] == 0:
                    faults[e] += 1
        K.follow_run(keys[i:b], ops[i:b], None, 0, evs[cm[0], i:b], None, None, real[0], real[1], real[2], real[3],
                     real[4], real[5], real[6], real[7], real[8], real[9], real[10], real[11], None, hit[i:b],
                     evicted[i:b], None, None, None)
        t = meta[K.M_T]
        if t == cm[K.CM_NEXT] and K.leader_after(faults, cm, margin, k, most, t):
            e = cm[0]
            lead = lru if e == 0 else arc if e == 1 else s3 if e == 2 else f1 if e == 3 else s3l
            K.resort_at(keys, hits, evs, e, b, n, stk, stv, lead[0], lead[1], real[0], real[1], real[2], real[3],
                        real[4], real[5], real[6], real[7], real[8], real[9], real[10], real[11])
        i = b
