"""Stable hashing of event ids and feature names (no Python ``hash``: it is salted per process)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np


def event_key(event_id: str) -> int:
    """A 64-bit key for an event id, stable across processes and machines.

    >>> event_key("tx-1") == event_key("tx-1")
    True
    """
    digest = hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def event_keys(event_ids) -> np.ndarray:
    """:func:`event_key` over a sequence, as a uint64 array.

    >>> int(event_keys(["tx-1", "tx-2"])[1]) == event_key("tx-2")
    True
    """
    b2 = hashlib.blake2b
    raw = b"".join([b2(e.encode("utf-8"), digest_size=8).digest() for e in event_ids])
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


class FeatureHasher:
    """Hashes name→value features into a fixed dimension (signed hashing trick).

    Unseen names need no restart. Index and sign of each name are cached in a bounded map of
    ``cache_size`` entries that drops the oldest cached name when full; ``evictions`` counts what
    the cap pushed out (the hash is recomputed on the next sight, so an eviction costs time, never
    correctness).

    >>> h = FeatureHasher(8)
    >>> v = h.transform({"amount": 2.0, "country=NL": 1.0})
    >>> v.shape, float(abs(v).sum())
    ((8,), 3.0)
    """

    def __init__(self, n_features: int, cache_size: int = 100_000):
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        self.n_features = n_features
        self.cache_size = cache_size
        self._cache: dict[str, tuple[int, float]] = {}
        self.evictions = 0

    def _slot(self, name: str) -> tuple[int, float]:
        hit = self._cache.get(name)
        if hit is not None:
            return hit
        h = int.from_bytes(hashlib.blake2b(str(name).encode("utf-8"), digest_size=8).digest(), "little")
        slot = (h % self.n_features, 1.0 if (h >> 63) == 0 else -1.0)
        self._cache[name] = slot
        if len(self._cache) > self.cache_size:
            del self._cache[next(iter(self._cache))]
            self.evictions += 1
        return slot

    def sparse(self, features: Mapping[str, float]) -> tuple[list[int], list[float]]:
        """Columns and signed values of the hashed features (collisions are summed later).

        Raises ``TypeError`` naming the feature whose value is not a number (booleans are not
        numbers here) and ``OverflowError`` for an integer too large for a float.

        >>> FeatureHasher(4).sparse({"a": 1, "b": 2.5})[1] in ([1.0, 2.5], [1.0, -2.5], [-1.0, 2.5], [-1.0, -2.5])
        True
        """
        cache = self._cache
        cols: list[int] = []
        vals: list[float] = []
        for name, value in features.items():
            t = type(value)
            if t is int:
                value = float(value)
            elif t is not float:
                raise TypeError(name)
            hit = cache.get(name)
            if hit is None:
                hit = self._slot(name)
            cols.append(hit[0])
            vals.append(hit[1] * value)
        return cols, vals

    def transform_into(self, features: Mapping[str, float], out: np.ndarray) -> None:
        """Adds the hashed features to ``out`` (a zeroed row of length ``n_features``)."""
        for name, value in features.items():
            i, s = self._slot(name)
            out[i] += s * value

    def transform(self, features: Mapping[str, float]) -> np.ndarray:
        out = np.zeros(self.n_features)
        self.transform_into(features, out)
        return out

    def __len__(self) -> int:
        return len(self._cache)
