"""Cache shadows: a cache's state replayed request by request, saying hit or miss and what to evict.

Unit-size pages, ``capacity`` frames. Keys are int64 (a caller with string keys maps them first,
e.g. with :func:`learners._hashing.event_keys`); the smallest int64 is reserved.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..base import Batch, InvalidInput, Learner
from . import _kernels as K
from . import _predict as PR
from ._table import EMPTY, new_table

POLICIES = ("lru", "fifo", "sieve", "s3fifo", "arc", "marker", "ftp-discard", "marker-discard", "robust-discard",
            "learned-discard")
_QUEUE = {"lru": 0, "fifo": 1, "sieve": 2}
_FRAME = ("tkeys", "tvals", "fkey", "free", "prv", "nxt", "lst", "lhead", "ltail", "lcnt", "bit", "meta")
_STATE = (*_FRAME, "unm", "upos")
_EXTRA = ("unm", "upos", "gtk", "gtv", "ring", "gmeta")


def _frames(k: int) -> dict[str, np.ndarray]:
    """The arrays of one cache of k frames (see :mod:`._kernels`)."""
    tkeys, tvals = new_table(k)
    meta = np.zeros(K.N_META, dtype=np.int64)
    meta[K.M_NFREE] = k
    meta[K.M_HAND] = -1
    return {"tkeys": tkeys, "tvals": tvals, "fkey": np.full(k, EMPTY, dtype=np.int64),
            "free": np.arange(k - 1, -1, -1, dtype=np.int64), "prv": np.full(k, -1, dtype=np.int64),
            "nxt": np.full(k, -1, dtype=np.int64), "lst": np.full(k, -1, dtype=np.int64),
            "lhead": np.full(3, -1, dtype=np.int64), "ltail": np.full(3, -1, dtype=np.int64),
            "lcnt": np.zeros(3, dtype=np.int64), "bit": np.zeros(k, dtype=np.int64), "meta": meta}


class PagingCache(Learner):
    """A cache shadow under one eviction policy.

    Parameters
    ----------
    policy
        ``lru``, ``fifo``, ``sieve`` (Zhang et al., NSDI'24), ``s3fifo`` (Yang et al., SOSP'23),
        ``arc`` (Megiddo & Modha, FAST'03), ``marker`` (randomized Marker, Fiat
        et al. 1991; draws seeded by ``seed`` and the request's position) or ``ftp-discard``
        (follow one-bit discard predictions given with each request, column ``bit``) or
        ``marker-discard`` (the same bits inside Marker's phases: robust whatever the bits) or
        ``robust-discard`` (follow the bits while they do better than LRU, else LRU: within k
        faults per switch of the better of the two, the switching margin starting at k/16 and
        doubling at each switch), or ``learned-discard``: ``robust-discard`` fed by a learned
        one-bit predictor (:mod:`._predict`) that sees the request stream only.
    history_cap
        ``learned-discard``: keys whose history the predictor remembers (the oldest is forgotten).
    reach
        ``learned-discard``: a request's label is 1 ("safe to evict") when its key is not requested
        again within ``reach`` x capacity keys' worth of requests.
        Both after "Paging with Succinct Predictions", Antoniadis et al., ICML 2023, whose rules
        are reconstructed from its abstract: see ``learners/paging/__init__.py``.
    capacity
        Frames (unit-size pages).
    seed
        Seed of the randomized policies.

    Examples
    --------
    >>> c = PagingCache("lru", capacity=2)
    >>> out = c.process({"key": np.array([1, 2, 1, 3, 2])})
    >>> out["hit"].tolist(), out["evicted"][out["evicts"]].tolist()
    ([0, 0, 1, 0, 0], [2, 1])
    """

    family = "paging"

    def __init__(self, policy: str = "lru", capacity: int = 1024, seed: int = 0, history_cap: int = 200_000,
                 reach: float = 4.0):
        self.policy = policy
        self.capacity = capacity
        self.seed = seed
        self.history_cap = history_cap
        self.reach = reach
        if policy not in POLICIES:
            raise ValueError(f"policy {policy!r} is not allowed; allowed: {', '.join(POLICIES)}")
        if not isinstance(capacity, int | np.integer) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        k = int(capacity)
        self._fr = _frames(k)  # the real cache
        # robust-discard: the two shadows it arbitrates (predictions, LRU) and its counters
        robust = policy in ("robust-discard", "learned-discard")
        self._sub = {f"{who}/{name}": arr for who in ("pred", "lru") for name, arr in _frames(k).items()} \
            if robust else {}
        if history_cap < 1 or reach <= 0:
            raise ValueError(f"history_cap must be >= 1 and reach > 0, got {history_cap!r}, {reach!r}")
        self._pr = PR.new_state(history_cap, max(1024, 2 * history_cap)) if policy == "learned-discard" else {}
        self._cm = np.zeros(5, dtype=np.int64)
        # s3fifo: the ghost FIFO of keys (as many as the main queue's frames)
        self._small = max(1, k // 10)
        g = max(1, k - self._small) if policy == "s3fifo" else 1
        self._gtk, self._gtv = new_table(g)
        self._ring = np.zeros(g, dtype=np.int64)
        self._gmeta = np.zeros(2, dtype=np.int64)
        # arc: the ghost lists B1/B2 (keys only) and the adaptive target size of T1
        self._gfr = _frames(k if policy == "arc" else 1)
        self._pf = np.zeros(1)
        self._unm = np.zeros(k, dtype=np.int64)
        self._upos = np.full(k, -1, dtype=np.int64)
        self._hits = 0
        self._misses = 0

    # -- the protocol -----------------------------------------------------------------------------
    def process(self, batch: Batch) -> dict[str, np.ndarray]:
        """Replays requests: ``key`` (int64); optional ``op`` (0 access, 1 delete); ``bit`` for
        ``ftp-discard``. Returns ``hit`` (1, 0, or -1 for a delete), ``evicts`` (a page was evicted)
        and ``evicted`` (its key; 0 where ``evicts`` is false)."""
        keys, ops = self._check(batch)
        n = keys.shape[0]
        hit = np.empty(n, dtype=np.int8)
        ev = np.empty(n, dtype=np.int64)
        st = tuple(self._fr[name] for name in _FRAME)
        k = self.capacity
        if self.policy in _QUEUE:
            K.queue_run(_QUEUE[self.policy], keys, ops, k, *st, hit, ev)
        elif self.policy == "s3fifo":
            K.s3fifo_run(keys, ops, k, self._small, *st, self._gtk, self._gtv, self._ring, self._gmeta, hit, ev)
        elif self.policy == "arc":
            K.arc_run(keys, ops, k, *st, *(self._gfr[name] for name in _FRAME if name not in ("bit",)), self._pf,
                      hit, ev)
        elif self.policy == "marker":
            K.marker_run(self.seed, keys, ops, k, *st, self._unm, self._upos, hit, ev)
        elif self.policy == "ftp-discard":
            K.ftp_discard_run(keys, ops, self._bits(batch, n), k, *st, hit, ev)
        elif self.policy == "marker-discard":
            K.marker_discard_run(keys, ops, self._bits(batch, n), k, *st, hit, ev)
        else:
            if self.policy == "learned-discard":
                bits = np.empty(n, dtype=np.int64)
                PR.predict_run(keys, k, float(self.reach), *(self._pr[name] for name in PR.ORDER), bits)
            else:
                bits = self._bits(batch, n)
            sa = tuple(self._sub[f"pred/{name}"] for name in _FRAME)
            sb = tuple(self._sub[f"lru/{name}"] for name in _FRAME)
            K.combine_run(keys, ops, bits, max(1, self.capacity // 16), sa, sb, st, self._cm, hit, ev)
        evicts = ev != EMPTY
        ev[~evicts] = 0
        self._hits += int((hit == 1).sum())
        self._misses += int((hit == 0).sum())
        return {"hit": hit, "evicts": evicts, "evicted": ev}

    def learn(self, batch: Batch) -> None:
        """Classical policies and oracle-bit policies learn nothing (accepted for the protocol)."""

    def snapshot(self) -> dict[str, np.ndarray]:
        out = {name: arr.copy() for name, arr in self._fr.items()}
        out.update({name: getattr(self, f"_{name}").copy() for name in _EXTRA})
        out.update({f"ghost/{name}": arr.copy() for name, arr in self._gfr.items()})
        out["arc_target"] = self._pf.copy()
        out.update({f"sub/{name}": arr.copy() for name, arr in self._sub.items()})
        out["combiner"] = self._cm.copy()
        out.update({f"predictor/{name}": arr.copy() for name, arr in self._pr.items()})
        out["counts"] = np.array([self._hits, self._misses], dtype=np.int64)
        return out

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        fr = {}
        for name in (*_FRAME, *_EXTRA):
            cur = self._fr[name] if name in self._fr else getattr(self, f"_{name}")
            arr = np.array(state[name], dtype=np.int64)
            if arr.shape != cur.shape:
                raise InvalidInput(f"snapshot array {name!r} has shape {arr.shape}, expected {cur.shape} "
                                   "(another capacity?)")
            fr[name] = arr
        self._unm, self._upos = fr.pop("unm"), fr.pop("upos")
        self._gtk, self._gtv, self._ring, self._gmeta = fr.pop("gtk"), fr.pop("gtv"), fr.pop("ring"), fr.pop("gmeta")
        self._fr = fr
        gfr = {}
        for name, cur in self._gfr.items():
            arr = np.array(state[f"ghost/{name}"], dtype=np.int64)
            if arr.shape != cur.shape:
                raise InvalidInput(f"snapshot array 'ghost/{name}' has shape {arr.shape}, expected {cur.shape}")
            gfr[name] = arr
        self._gfr = gfr
        self._pf = np.array(state["arc_target"], dtype=np.float64).reshape(1)
        for name, cur in self._sub.items():
            arr = np.array(state[f"sub/{name}"], dtype=np.int64)
            if arr.shape != cur.shape:
                raise InvalidInput(f"snapshot array 'sub/{name}' has shape {arr.shape}, expected {cur.shape}")
            self._sub[name] = arr
        self._cm = np.array(state["combiner"], dtype=np.int64)
        for name, cur in list(self._pr.items()):
            arr = np.array(state[f"predictor/{name}"], dtype=np.int64)
            if arr.shape != cur.shape:
                raise InvalidInput(f"snapshot array 'predictor/{name}' has shape {arr.shape}, expected {cur.shape}")
            self._pr[name] = arr
        self._hits, self._misses = (int(v) for v in state["counts"])

    def metrics(self) -> dict[str, float]:
        total = self._hits + self._misses
        return {"requests": float(total), "hits": float(self._hits), "misses": float(self._misses),
                "hit_ratio": self._hits / total if total else 0.0, "size": float(self._fr["meta"][K.M_SIZE]),
                "capacity": float(self.capacity), "phase": float(self._fr["meta"][K.M_PHASE]),
                "following_lru": float(self._cm[0]), "switches": float(self._cm[3]),
                "switch_margin": float(self._cm[4]), **self._predictor_metrics()}

    def _predictor_metrics(self) -> dict[str, float]:
        if not self._pr:
            return {}
        tn, fn, fp, tp = (int(v) for v in self._pr["conf"])
        return {"bit_precision": tp / (tp + fp) if tp + fp else 0.0, "bit_recall": tp / (tp + fn) if tp + fn else 0.0,
                "bit_labels": float(tn + fn + fp + tp)}

    def contents(self) -> np.ndarray:
        """The cached keys (in no particular order)."""
        fkey = self._fr["fkey"]
        return fkey[fkey != EMPTY].copy()

    # -- input checks -----------------------------------------------------------------------------
    @staticmethod
    def _check(batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        if "key" not in batch:
            raise InvalidInput("batch lacks the column 'key'")
        keys = np.asarray(batch["key"])
        if keys.ndim != 1 or not np.issubdtype(keys.dtype, np.integer):
            raise InvalidInput(f"key must be a 1-d integer array, got {keys.dtype} with shape {keys.shape}")
        keys = keys.astype(np.int64)
        if (keys == EMPTY).any():
            raise InvalidInput("key -2**63 is reserved", rows=np.flatnonzero(keys == EMPTY))
        if "op" in batch:
            ops = np.asarray(batch["op"]).astype(np.int64)
            if ops.shape != keys.shape or ((ops != 0) & (ops != 1)).any():
                raise InvalidInput("op must be 0 (access) or 1 (delete), one per key")
        else:
            ops = np.zeros(keys.shape[0], dtype=np.int64)
        return np.ascontiguousarray(keys), np.ascontiguousarray(ops)

    @staticmethod
    def _bits(batch: Batch, n: int) -> np.ndarray:
        if "bit" not in batch:
            raise InvalidInput("this policy needs the column 'bit' (one prediction per request)")
        bits = np.asarray(batch["bit"])
        if bits.shape != (n,):
            raise InvalidInput(f"bit must have shape ({n},), got {bits.shape}")
        return np.ascontiguousarray(bits.astype(np.int64) != 0).astype(np.int64)

    # -- conformance ------------------------------------------------------------------------------
    @classmethod
    def conformance_params(cls, **preset: Any) -> dict[str, Any]:
        return {**preset, "capacity": 8, "seed": 3, "history_cap": 64}

    @classmethod
    def _conformance_stream(cls, seed: int, n_events: int = 64) -> Iterator[tuple[str, Batch]]:
        rng = np.random.default_rng(seed)
        for _ in range(max(1, n_events // 16)):
            n = 16
            keys = rng.zipf(1.3, size=n).astype(np.int64) % 40
            ops = (rng.random(n) < 0.05).astype(np.int64)
            yield "process", {"key": keys, "op": ops, "bit": (rng.random(n) < 0.5).astype(np.int64)}

    @classmethod
    def _bad_batches(cls) -> Iterator[tuple[str, Batch]]:
        yield "process", {"kee": np.arange(3)}
        yield "process", {"key": np.array([0.5, 1.5])}
        yield "process", {"key": np.array([EMPTY])}
        yield "process", {"key": np.arange(3), "op": np.array([0, 2, 0])}
