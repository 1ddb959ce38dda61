"""Decisions waiting for their reward, keyed by event id, expiring on event time.

A reward that arrives within ``wait_s`` (event time) of its decision is joined; after that the
entry expires and the configured default reward is learned (Personalizer's semantics). The buffer
is capped: when full, the entry that would expire first is expired early (and counted). Entries are
kept in insertion order, and since every entry waits the same ``wait_s`` and event time only moves
forward (a watermark), insertion order is expiry order.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class Pending:
    key: int
    x: np.ndarray
    action: str
    af: np.ndarray | None
    prob: float
    deadline: float
    version: int
    ope: np.ndarray  # (n_targets, 3): π(a|x), Σ_b π(b|x) r̂(x,b), r̂(x,a)


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

    def add(self, event_id: str, entry: Pending) -> str | None:
        """Adds an entry; returns the id of the entry the cap pushed out, if any."""
        self._d[event_id] = entry
        if len(self._d) > self.cap:
            self.evicted += 1
            return self._d.popitem(last=False)[0]
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
        es = list(self._d.values())
        m = len(es)
        return {
            "ids": np.array(list(self._d.keys()), dtype=str),
            "keys": np.array([e.key for e in es], dtype=np.uint64),
            "X": np.array([e.x for e in es], dtype=np.float64).reshape(m, n_features),
            "actions": np.array([e.action for e in es], dtype=str),
            "af": np.array([e.af if e.af is not None else np.zeros(n_af) for e in es],
                           dtype=np.float64).reshape(m, n_af),
            "prob": np.array([e.prob for e in es], dtype=np.float64),
            "deadline": np.array([e.deadline for e in es], dtype=np.float64),
            "version": np.array([e.version for e in es], dtype=np.int64),
            "ope": np.array([e.ope for e in es], dtype=np.float64).reshape(m, n_targets, 3),
            "evicted": np.array(self.evicted, dtype=np.int64),
        }

    def load(self, a: dict[str, np.ndarray], has_af: bool) -> None:
        self._d = OrderedDict()
        for i, eid in enumerate(a["ids"].tolist()):
            self._d[str(eid)] = Pending(
                int(a["keys"][i]), a["X"][i].copy(), str(a["actions"][i]),
                a["af"][i].copy() if has_af else None, float(a["prob"][i]),
                float(a["deadline"][i]), int(a["version"][i]), a["ope"][i].copy())
        self.evicted = int(a["evicted"])
