"""An int64 → int64 hash table in plain arrays, for Numba kernels (and for checkpoints).

Open addressing with linear probing over a power-of-two number of buckets and backward-shift
deletion (no tombstones, so probe chains never degrade). ``tkeys[b] == EMPTY`` marks a free
bucket; ``EMPTY`` (the smallest int64) is therefore not a valid key. The arrays are the whole
state: a snapshot copies them and nothing else.
"""

from __future__ import annotations

import numpy as np

from .._numba import jit
from .._random import mix64

EMPTY = np.iinfo(np.int64).min


def new_table(capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """Buckets for at least ``capacity`` keys at a load factor of at most one half."""
    n = 8
    while n < 2 * max(capacity, 1):
        n *= 2
    return np.full(n, EMPTY, dtype=np.int64), np.full(n, -1, dtype=np.int64)


@jit(inline="always")
def _home(tkeys, key):
    return np.int64(mix64(np.uint64(key)) & np.uint64(tkeys.shape[0] - 1))


@jit(inline="always")
def ht_get(tkeys, tvals, key):
    """The value stored for ``key``, or -1."""
    mask = tkeys.shape[0] - 1
    b = _home(tkeys, key)
    while True:
        k = tkeys[b]
        if k == key:
            return tvals[b]
        if k == EMPTY:
            return -1
        b = (b + 1) & mask


@jit(inline="always")
def ht_put(tkeys, tvals, key, val):
    """Stores ``key → val`` (replacing a previous value)."""
    mask = tkeys.shape[0] - 1
    b = _home(tkeys, key)
    while tkeys[b] != EMPTY and tkeys[b] != key:
        b = (b + 1) & mask
    tkeys[b] = key
    tvals[b] = val


@jit(inline="always")
def ht_del(tkeys, tvals, key):
    """Removes ``key`` if present (backward-shift deletion); returns its value or -1."""
    mask = tkeys.shape[0] - 1
    b = _home(tkeys, key)
    while tkeys[b] != key:
        if tkeys[b] == EMPTY:
            return -1
        b = (b + 1) & mask
    val = tvals[b]
    # Shift later members of the probe chain back into the hole when their home allows it.
    hole = b
    j = (b + 1) & mask
    while tkeys[j] != EMPTY:
        h = _home(tkeys, tkeys[j])
        # The entry at j may fill the hole if its home is not cyclically within (hole, j].
        if (j > hole and (h <= hole or h > j)) or (j < hole and (h <= hole and h > j)):
            tkeys[hole] = tkeys[j]
            tvals[hole] = tvals[j]
            hole = j
        j = (j + 1) & mask
    tkeys[hole] = EMPTY
    tvals[hole] = -1
    return val
