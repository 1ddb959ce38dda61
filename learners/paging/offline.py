"""Offline evaluation: Belady's optimum and the exact one-bit predictions it implies."""

from __future__ import annotations

import numpy as np

from . import _kernels as K
from ._table import EMPTY, new_table


def belady(keys: np.ndarray, capacity: int) -> dict[str, np.ndarray | int]:
    """Belady's furthest-in-future replay of ``keys`` with ``capacity`` unit frames.

    Returns ``misses`` (cold misses included), per request ``hit`` and ``evicted`` (``EMPTY`` where
    none), ``next_use`` (position of the key's next request, ``n + i`` if none) and the exact
    **discard bits**: 1 iff Belady evicts the page before its next request, or it is never
    requested again (the bit of "Paging with Succinct Predictions" relative to this OPT).

    >>> r = belady(np.array([1, 2, 3, 1, 2, 3]), 2)
    >>> r["misses"], r["discard_bit"].tolist()
    (4, [0, 1, 0, 1, 1, 1])
    """
    keys = np.ascontiguousarray(np.asarray(keys, dtype=np.int64))
    n = keys.shape[0]
    tk, tv = new_table(n)
    nu = K.next_use(keys, tk, tv)
    tk, tv = new_table(capacity + 1)
    hit = np.empty(n, dtype=np.int8)
    ev = np.empty(n, dtype=np.int64)
    misses = K.belady_run(keys, nu, capacity, tk, tv, hit, ev)
    has_next = nu < n
    bit = np.ones(n, dtype=np.int8)
    bit[has_next] = (hit[nu[has_next]] == 0).astype(np.int8)
    return {"misses": int(misses), "hit": hit, "evicted": ev, "next_use": nu, "discard_bit": bit,
            "empty": EMPTY}


def phase_bits(keys: np.ndarray, capacity: int) -> dict[str, np.ndarray]:
    """Marker phases of ``keys`` and the exact **phase bits** (the second setup of "Paging with
    Succinct Predictions", as reconstructed in ../shared/research/paging.md): bit = 1 iff the page
    is requested neither later in the current phase nor in the next one ("not needed next phase",
    i.e. safe to evict).

    >>> r = phase_bits(np.array([1, 2, 1, 3, 4, 1, 2]), 2)
    >>> r["phase"].tolist(), r["phase_bit"].tolist()
    ([0, 0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 1, 1, 1])
    """
    keys = np.ascontiguousarray(np.asarray(keys, dtype=np.int64))
    n = keys.shape[0]
    tk, tv = new_table(max(capacity, n))
    phase = K.phase_ids(keys, capacity, tk, tv)
    tk, tv = new_table(n)
    nu = K.next_use(keys, tk, tv)
    has_next = nu < n
    nxt_phase = np.where(has_next, phase[np.minimum(nu, n - 1)], np.iinfo(np.int64).max)
    bit = (nxt_phase > phase + 1).astype(np.int8)
    return {"phase": phase, "phase_bit": bit}


def reuse_distances(keys: np.ndarray) -> np.ndarray:
    """For each request, the distinct keys requested strictly between it and its key's next
    request (its LRU stack distance then), -1 when it is not requested again. An LRU cache of k
    pages hits the next request iff the distance is below k.

    >>> reuse_distances(np.array([1, 2, 3, 1, 2, 2])).tolist()
    [2, 2, -1, -1, 0, -1]
    """
    keys = np.ascontiguousarray(np.asarray(keys, dtype=np.int64))
    tk, tv = new_table(keys.shape[0])
    return K.reuse_distance_run(keys, K.next_use(keys, tk, tv))
