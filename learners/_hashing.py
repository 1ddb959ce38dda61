"""Stable hashing of event ids and feature names (no Python ``hash``: it is salted per process)."""

from __future__ import annotations

import hashlib
import itertools
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from . import _crosses as CX
from ._blake2b import blake2b_8

NUMBER_TYPES = frozenset((float, int))  # (a bool's type is bool: not a number here)
LITTLE_ENDIAN = sys.byteorder == "little"


def event_key(event_id: str) -> int:
    """A 64-bit key for an event id, stable across processes and machines.

    >>> event_key("tx-1") == event_key("tx-1")
    True
    """
    digest = hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def event_keys(event_ids) -> np.ndarray:
    """:func:`event_key` over a sequence, as a uint64 array (one kernel call: :mod:`._blake2b`).

    >>> int(event_keys(["tx-1", "tx-2"])[1]) == event_key("tx-2")
    True
    """
    ids = list(event_ids)
    n = len(ids)
    if n <= 16 or not LITTLE_ENDIAN:  # a few ids: hashlib's calls cost less than the kernel's set-up
        # (and the kernel reads message words through a little-endian view)
        b2 = hashlib.blake2b
        raw = b"".join([b2(e.encode("utf-8"), digest_size=8).digest() for e in ids])
        return np.frombuffer(raw, dtype="<u8").astype(np.uint64)
    joined = "".join(ids)
    if joined.isascii():  # one byte per character: no encoding per id
        blob = joined.encode("ascii")
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=n)
    else:
        enc = [e.encode("utf-8") for e in ids]
        blob = b"".join(enc)
        lens = np.fromiter(map(len, enc), dtype=np.int64, count=n)
    out = np.empty(n, dtype=np.uint64)
    blake2b_8(np.frombuffer(blob, dtype=np.uint8), np.cumsum(lens), out)
    return out


class FeatureHasher:
    """Hashes name→value features into a fixed dimension (signed hashing trick).

    Unseen names need no restart. Index and sign of each name are cached in a bounded map of
    ``cache_size`` entries that drops the oldest cached name when full; ``evictions`` counts what
    the cap pushed out (the hash is recomputed on the next sight, so an eviction costs time, never
    correctness).

    Declared ``crosses`` add interaction features, as Vowpal Wabbit's ``-q`` does: a feature's
    *field* is its name up to the first ``=`` (``"origin=EWR"`` → ``origin``; a name without ``=``
    is its own field), and a cross of fields ``(a, b)`` adds, for every feature of field ``a`` and
    every feature of field ``b``, the feature ``"<name_a>^<name_b>"`` (:meth:`expand` names them)
    with the product of their values. Its column is hashed from its parts' hashes, not from that
    name (:mod:`learners._crosses`, one kernel call per run). Fields listed in ``cross_only`` feed
    crosses but are not features themselves.

    >>> h = FeatureHasher(8)
    >>> v = h.transform({"amount": 2.0, "country=NL": 1.0})
    >>> v.shape, float(abs(v).sum())
    ((8,), 3.0)
    >>> hx = FeatureHasher(8, crosses=[("origin", "hour")], cross_only=["hour"])
    >>> hx.expand({"origin=EWR": 1.0, "hour=5": 1.0, "amount": 0.5})
    {'origin=EWR': 1.0, 'amount': 0.5, 'origin=EWR^hour=5': 1.0}
    """

    def __init__(self, n_features: int, cache_size: int = 100_000,
                 crosses: Sequence[Sequence[str]] = (), cross_only: Sequence[str] = ()):
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        for c in crosses:
            if isinstance(c, str) or len(c) < 2 or not all(isinstance(f, str) and f for f in c):
                raise ValueError(f"a cross is a list of two or more field names, got {c!r}")
        self.n_features = n_features
        self.cache_size = cache_size
        self.crosses = tuple(tuple(c) for c in crosses)
        self.cross_only = frozenset(cross_only)
        fields = list(dict.fromkeys(f for c in self.crosses for f in c))
        self._field_id = {f: i for i, f in enumerate(fields)}
        self._fields = np.full((len(self.crosses), max(map(len, self.crosses), default=1)), -1, dtype=np.int64)
        for i, c in enumerate(self.crosses):
            self._fields[i, :len(c)] = [self._field_id[f] for f in c]
        self._arity = np.array([len(c) for c in self.crosses], dtype=np.int64)
        self._only = np.array([f in self.cross_only for f in fields] + [False], dtype=np.bool_)  # ([-1]: none)
        self._fid: dict[str, int] = {}  # name -> its field's id in the crosses, or -1
        self._raw: dict[str, int] = {}  # name -> its 64-bit hash, as an int64
        self._cache: dict[str, tuple[int, float]] = {}
        self._code: dict[str, int] = {}  # the same, as one signed code: col, or ~col for sign -1
        self.evictions = 0

    def expand(self, features: Mapping[str, float]) -> Mapping[str, float]:
        """The features with the declared crosses added (and ``cross_only`` fields left out);
        the map itself when nothing is declared. Values must be numbers (checked by the caller)."""
        if not self.crosses:
            return features
        by_field: dict[str, list[tuple[str, float]]] = {}
        out: dict[str, float] = {}
        drop = self.cross_only
        for name, value in features.items():
            field = name.split("=", 1)[0]
            by_field.setdefault(field, []).append((name, value))
            if field not in drop:
                out[name] = value
        for cross in self.crosses:
            terms: list[tuple[str, float]] = [("", 1.0)]
            for field in cross:
                terms = [(f"{n}^{m}" if n else m, v * w) for n, v in terms for m, w in by_field.get(field, ())]
                if not terms:
                    break
            for n, v in terms:
                out[n] = out.get(n, 0.0) + v
        return out

    def _slot(self, name: str) -> tuple[int, float]:
        hit = self._cache.get(name)
        if hit is not None:
            return hit
        h = int.from_bytes(hashlib.blake2b(str(name).encode("utf-8"), digest_size=8).digest(), "little")
        slot = (h % self.n_features, 1.0 if (h >> 63) == 0 else -1.0)
        self._cache[name] = slot
        self._code[name] = slot[0] if slot[1] > 0 else ~slot[0]
        if self.crosses:
            self._fid[name] = self._field_id.get(name.split("=", 1)[0], -1)
            self._raw[name] = h - (1 << 64) if h >> 63 else h
        if len(self._cache) > self.cache_size:
            old = next(iter(self._cache))
            del self._cache[old], self._code[old]
            self._fid.pop(old, None)
            self._raw.pop(old, None)
            self.evictions += 1
        return slot

    def _code_of(self, name: str) -> int:
        self._slot(name)  # (cached by it: the newest name is never the one a full cache drops)
        return self._code[name]

    def sparse_many(self, features: Sequence[Mapping[str, float]],
                    checked: bool = False) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """:meth:`sparse` over many maps at once: all columns, all signed values, and each map's
        count of them. The loops run in C (``map``, ``numpy.fromiter``), which makes this several
        times cheaper per feature than :meth:`sparse` row by row.

        Raises ``TypeError`` if any value is not a number (not looked for when the caller says
        the values were ``checked``: ints and floats only) and ``OverflowError`` for an integer
        too large for a float, naming neither: call :meth:`sparse` row by row to find the row.

        >>> h = FeatureHasher(4)
        >>> cols, vals, lens = h.sparse_many([{"a": 1, "b": 2.5}, {"b": 0.5}])
        >>> lens, [h.sparse({"a": 1, "b": 2.5}), h.sparse({"b": 0.5})] == [
        ...     (cols[:2].tolist(), vals[:2].tolist()), (cols[2:].tolist(), vals[2:].tolist())]
        ([2, 1], True)
        """
        chain = itertools.chain.from_iterable
        lens = list(map(len, features))
        total = sum(lens)
        if not checked and not set(map(type, chain([f.values() for f in features]))) <= NUMBER_TYPES:
            raise TypeError("a value is not a number")  # (a bool's type is bool)
        try:
            codes = np.fromiter(map(self._code.__getitem__, chain(features)), np.int64, total)
        except KeyError:  # new names: hashed and cached one by one
            codes = np.fromiter(map(self._code_of, chain(features)), np.int64, total)
        values = np.fromiter(chain([f.values() for f in features]), np.float64, total)
        if self.crosses:
            return self._crossed(features, codes, values, lens)
        neg = codes < 0
        np.negative(values, out=values, where=neg)
        return np.where(neg, ~codes, codes), values, lens

    def _fid_of(self, name: str) -> int:
        self._slot(name)
        return self._fid[name]

    def _raw_of(self, name: str) -> int:
        self._slot(name)
        return self._raw[name]

    def _crossed(self, features: Sequence[Mapping[str, float]], codes: np.ndarray, values: np.ndarray,
                 lens: list[int]) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """The features (less ``cross_only`` fields) and their declared crosses, row by row."""
        chain = itertools.chain.from_iterable
        total = len(codes)
        try:
            fids = np.fromiter(map(self._fid.__getitem__, chain(features)), np.int64, total)
            raws = np.fromiter(map(self._raw.__getitem__, chain(features)), np.int64, total)
        except KeyError:  # (evicted meanwhile by the cache's cap)
            fids = np.fromiter(map(self._fid_of, chain(features)), np.int64, total)
            raws = np.fromiter(map(self._raw_of, chain(features)), np.int64, total)
        ptr = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=ptr[1:])
        cols, vals, out_lens = CX.cross_rows(ptr, codes, values, fids, raws.view(np.uint64),
                                             self._only[fids], self._fields, self._arity, self.n_features)
        return cols, vals, out_lens.tolist()

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
        if self.crosses:
            for name, value in features.items():
                if type(value) is not float and type(value) is not int:
                    raise TypeError(name)
            c, v, _ = self.sparse_many([features], checked=True)
            return c.tolist(), v.tolist()
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
        """Adds the hashed features (and their crosses) to ``out`` (a zeroed row of length ``n_features``)."""
        if self.crosses:
            cols, vals = self.sparse(features)
            np.add.at(out, cols, vals)
            return
        for name, value in features.items():
            i, s = self._slot(name)
            out[i] += s * value

    def transform(self, features: Mapping[str, float]) -> np.ndarray:
        out = np.zeros(self.n_features)
        self.transform_into(features, out)
        return out

    def __len__(self) -> int:
        return len(self._cache)
