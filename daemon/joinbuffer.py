"""Decisions waiting for their reward, keyed by event id, expiring on event time.

A reward that arrives within ``wait_s`` (event time) of its decision is joined; after that the
entry expires and the configured default reward is learned (Personalizer's semantics). The buffer
is capped: when full, the entry that would expire first is expired early (and counted). Entries are
kept in insertion order, and since every entry waits the same ``wait_s`` and event time only moves
forward (a watermark), insertion order is expiry order.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

import numpy as np

from .checkpoint import pack_strings, unpack_strings


def rows_matrix(rows: list, d: int) -> np.ndarray:
    """Contexts as one n×d matrix, from items holding a dense ``x`` or hashed ``cols``/``vals``."""
    n = len(rows)
    X: np.ndarray
    sparse = [i for i, e in enumerate(rows) if e.cols is not None]
    if not sparse:
        X = np.zeros((n, d))
    else:
        items = rows if len(sparse) == n else [rows[i] for i in sparse]
        lens = [len(e.cols) for e in items]
        total = sum(lens)
        chain = itertools.chain.from_iterable
        cols = np.fromiter(chain([e.cols for e in items]), np.int64, count=total)
        vals = np.fromiter(chain([e.vals for e in items]), np.float64, count=total)
        flat = np.repeat(np.asarray(sparse, dtype=np.int64) * d, lens) + cols
        X = np.bincount(flat, weights=vals, minlength=n * d).reshape(n, d)
    if len(sparse) < n:
        for i, e in enumerate(rows):
            if e.cols is None:
                X[i] = e.x
    return X


class Pending:
    """One event from decoding to its reward: the decoded fields, then the decision's once decided.

    Decoded: ``id``, ``time``, the context (dense ``x``, or hashed ``cols``/``vals``), the offered
    ``actions`` with their features ``afs``, ``replay``, the source record ``rec`` and ``eff``, the
    event time at arrival. Decided: ``key`` (the event key), ``action``, ``af`` (its features),
    ``prob``, ``deadline``, ``version`` and ``ope`` (per target policy π(a|x), Σ_b π(b|x) r̂(x,b)
    and r̂(x,a), flat). One object per event keeps the per-event cost of the loop low.
    """

    __slots__ = ("id", "time", "x", "cols", "vals", "actions", "afs", "replay", "rec", "eff",
                 "key", "action", "af", "prob", "deadline", "version", "ope")
    # Set once decided (deadline: once admitted).
    key: int
    action: str
    af: np.ndarray | None
    prob: float
    deadline: float
    version: int
    ope: tuple

    def __init__(self, id: str, time: float | None, x: np.ndarray | None, cols: list[int] | None,
                 vals: list[float] | None, actions: list[str] | None = None, afs: np.ndarray | None = None,
                 replay: bool = False, rec=None):
        self.id = id
        self.time = time
        self.x = x
        self.cols = cols
        self.vals = vals
        self.actions = actions
        self.afs = afs
        self.replay = replay
        self.rec = rec
        self.eff = -np.inf

    def decided(self, key: int, action: str, af: np.ndarray | None, prob: float, version: int, ope: tuple) -> Pending:
        self.key, self.action, self.af, self.prob, self.version, self.ope = key, action, af, prob, version, ope
        return self


def pending_to_arrays(items: list[tuple[str, Pending]], n_features: int, n_af: int,
                      n_targets: int) -> dict[str, np.ndarray]:
    """Decisions (id, entry) as plain arrays for a checkpoint."""
    es = [e for _, e in items]
    m = len(es)
    ids, ends = pack_strings([i for i, _ in items])
    acts, act_ends = pack_strings([e.action for e in es])
    return {
        "ids": ids, "id_ends": ends,
        "keys": np.array([e.key for e in es], dtype=np.uint64),
        "X": rows_matrix(es, n_features).reshape(m, n_features),
        "actions": acts, "action_ends": act_ends,
        "af": np.array([e.af if e.af is not None else np.zeros(n_af) for e in es],
                       dtype=np.float64).reshape(m, n_af),
        "prob": np.array([e.prob for e in es], dtype=np.float64),
        "deadline": np.array([e.deadline for e in es], dtype=np.float64),
        "version": np.array([e.version for e in es], dtype=np.int64),
        "ope": np.array([e.ope for e in es], dtype=np.float64).reshape(m, n_targets, 3),
    }


def pending_from_arrays(a: dict[str, np.ndarray], has_af: bool) -> list[tuple[str, Pending]]:
    ids = unpack_strings(a["ids"], a["id_ends"])
    acts = unpack_strings(a["actions"], a["action_ends"])
    keys, prob, deadline, version = (a["keys"].tolist(), a["prob"].tolist(), a["deadline"].tolist(),
                                     a["version"].tolist())
    ope = [tuple(r) for r in a["ope"].reshape(len(ids), a["ope"].shape[1] * 3).tolist()]
    out = []
    for i, eid in enumerate(ids):
        e = Pending(eid, None, a["X"][i].copy(), None, None).decided(
            keys[i], acts[i], a["af"][i].copy() if has_af else None, prob[i], version[i], ope[i])
        e.deadline = deadline[i]
        out.append((eid, e))
    return out


class JoinBuffer:
    def __init__(self, cap: int, wait_s: float):
        self.cap = cap
        self.wait_s = wait_s
        self._d: OrderedDict[str, Pending] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._d

    def add(self, event_id: str, entry: Pending) -> tuple[str, Pending] | None:
        """Adds an entry; returns (id, entry) of the entry the cap pushed out, if any."""
        self._d[event_id] = entry
        if len(self._d) > self.cap:
            self.evicted += 1
            return self._d.popitem(last=False)
        return None

    def pop(self, event_id: str) -> Pending | None:
        return self._d.pop(event_id, None)

    def next_deadline(self) -> float:
        if not self._d:
            return float("inf")
        return next(iter(self._d.values())).deadline

    def expire(self, watermark: float) -> list[tuple[str, Pending]]:
        """Removes and returns the entries whose deadline is at or before ``watermark``."""
        out = []
        d = self._d
        while d:
            eid, e = next(iter(d.items()))
            if e.deadline > watermark:
                break
            d.popitem(last=False)
            out.append((eid, e))
        return out

    # -- checkpoint as arrays ---------------------------------------------------------------------
    def to_arrays(self, n_features: int, n_af: int, n_targets: int) -> dict[str, np.ndarray]:
        out = pending_to_arrays(list(self._d.items()), n_features, n_af, n_targets)
        out["evicted"] = np.array(self.evicted, dtype=np.int64)
        return out

    def load(self, a: dict[str, np.ndarray], has_af: bool) -> None:
        self._d = OrderedDict(pending_from_arrays(a, has_af))
        self.evicted = int(a["evicted"])
