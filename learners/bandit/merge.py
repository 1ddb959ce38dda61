"""Exact merging of ridge bandits learned on several replicas: each ships its delta, never an average.

A ridge model is its sufficient statistics: per action, A = λI + Σ x xᵀ and b = Σ r x over the
rows it learned (θ = A⁻¹ b). Replicas of one model that learn disjoint parts of a stream (say, the
partitions of a topic, each on its owner) hold the model of all the rows once each replica has
added every other's *delta*: what it learned since its previous shipment, ΔA = A − A₀ and
Δb = b − b₀ against the statistics it held then. The sum is the model of the union of the rows,
up to rounding (the order of the rows does not matter to a ridge solution). Averaging the
replicas' θ instead gives no model of any stream: each θ solves its own rows only, and the
average of solutions is not the solution of the union (a test shows the difference).

:class:`RidgeMerge` wraps a :class:`~learners.bandit.learner.BanditLearner` with the ``ridge``
or ``ridge-shared`` oracle (the neural oracle and the hashed learners have no sufficient
statistics to add: they cannot merge). It reads A and b back from the learner's A⁻¹ and θ (one
d × d inversion per action at each shipment or merge, not per row), so the learner's own kernels
and checkpoints are unchanged; the statistics of the last shipment are the wrapper's own state
(:meth:`snapshot`/:meth:`restore`, to be kept with the learner's). Actions are matched by id: an
action that only another replica has seen takes a slot here (as a new id offered to the learner
would); an action whose slot was reused since the last shipment ships only what its new id
learned. The learned-event count, which sets SquareCB's γ, adds up too.

Examples
--------
>>> import numpy as np
>>> from learners.bandit import BanditLearner
>>> one, two = (BanditLearner(n_features=2, actions=("a", "b")) for _ in range(2))
>>> m1, m2 = RidgeMerge(one), RidgeMerge(two)
>>> X = np.array([[1.0, 0.0], [0.0, 1.0]])
>>> one.learn({"event_key": np.array([1], np.uint64), "X": X[:1], "action": ["a"], "reward": np.array([1.0])})
>>> two.learn({"event_key": np.array([2], np.uint64), "X": X[1:], "action": ["a"], "reward": np.array([1.0])})
>>> d1, d2 = m1.delta(), m2.delta()
>>> m1.merge(d2); m2.merge(d1)
>>> bool(np.allclose(one._theta, two._theta)), one.learned_events
(True, 2)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..base import InvalidInput
from .learner import BanditLearner

SHARED = "\x00shared"  # the id of ridge-shared's one model in a delta


class RidgeMerge:
    """Ships a ridge bandit's statistics since the last shipment (:meth:`delta`) and adds those of
    other replicas (:meth:`merge`). See the module docstring."""

    def __init__(self, learner: BanditLearner):
        if not isinstance(learner, BanditLearner) or learner.oracle not in ("ridge", "ridge-shared"):
            raise InvalidInput("only a bandit learner with the ridge or ridge-shared oracle can merge "
                               f"(sufficient statistics), got {type(learner).__name__} "
                               f"oracle={getattr(learner, 'oracle', None)!r}")
        self.learner = learner
        self._base: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._base_t = 0
        self._take_base()
        reset = learner._reset_slot

        def reset_slot(s: int) -> None:  # an id that takes a reset slot starts from the prior: so does its base
            reset(s)
            a = learner._table.ids[s]
            if a is not None:
                self._base.pop(a, None)

        learner._reset_slot = reset_slot  # type: ignore[method-assign]

    # -- statistics -------------------------------------------------------------------------------
    def _stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """A and b of every model, by action id (A = (A⁻¹)⁻¹, b = A θ)."""
        lr = self.learner
        if lr.oracle == "ridge-shared":
            A = np.linalg.inv(lr._A_inv)
            return {SHARED: (A, A @ lr._theta)}
        out = {}
        for a, s in lr._table.slot.items():
            A = np.linalg.inv(lr._A_inv[s])
            out[a] = (A, A @ lr._theta[s])
        return out

    def _prior(self) -> tuple[np.ndarray, np.ndarray]:
        lr = self.learner
        dim = lr._A_inv.shape[-1]
        return np.eye(dim) * lr.lam, np.zeros(dim)

    def _take_base(self) -> None:
        self._base = self._stats()
        self._base_t = self.learner.learned_events

    # -- the protocol -------------------------------------------------------------------------------
    def delta(self) -> dict[str, np.ndarray]:
        """What this replica learned since its previous :meth:`delta` (or since it was wrapped):
        ``ids`` (str), ``dA`` (m × d × d), ``db`` (m × d) for the models that moved, ``dt`` the
        events learned. The statistics now become the next delta's base."""
        now, t = self._stats(), self.learner.learned_events
        ids, dA, db = [], [], []
        prior = self._prior()
        for a, (A, b) in now.items():
            A0, b0 = self._base.get(a, prior)
            if not (np.array_equal(A, A0) and np.array_equal(b, b0)):
                ids.append(a)
                dA.append(A - A0)
                db.append(b - b0)
        dim = self._prior()[1].shape[0]
        out = {"ids": np.array(ids, dtype=str), "dA": np.array(dA).reshape(len(ids), dim, dim),
               "db": np.array(db).reshape(len(ids), dim), "dt": np.array(t - self._base_t, dtype=np.int64)}
        self._base, self._base_t = now, t
        return out

    def merge(self, delta: Mapping[str, np.ndarray]) -> None:
        """Adds another replica's delta to the models (and to the base, so that it is not shipped
        again as this replica's own)."""
        ids = [str(a) for a in np.asarray(delta["ids"]).tolist()]
        dA, db = np.asarray(delta["dA"], dtype=np.float64), np.asarray(delta["db"], dtype=np.float64)
        lr = self.learner
        dim = lr._A_inv.shape[-1]
        if dA.shape != (len(ids), dim, dim) or db.shape != (len(ids), dim):
            raise InvalidInput(f"a delta of {len(ids)} models of dimension {dim} needs dA {(len(ids), dim, dim)} "
                               f"and db {(len(ids), dim)}, got {dA.shape} and {db.shape}")
        if not (np.isfinite(dA).all() and np.isfinite(db).all()):
            raise InvalidInput("a delta holds NaN or inf")
        if lr.oracle == "ridge-shared" and any(a != SHARED for a in ids):
            raise InvalidInput("a ridge-shared model merges the shared model's delta, got action ids")
        new = [a for a in dict.fromkeys(ids) if a not in lr._table.slot] if lr.oracle == "ridge" else []
        if new:  # (every id gets its slot first: a refusal changes nothing)
            if lr.strict_actions:
                raise InvalidInput(f"unknown action id {new[0]!r} (strict_actions)")
            every = list(dict.fromkeys(ids))  # (the delta's known ids too, so that none of them is evicted)
            lr._table.lookup(every, np.full(len(every), lr._tick, dtype=np.int64), True, lr._reset_slot)
            lr._grow()
        prior = self._prior()
        for a, dAi, dbi in zip(ids, dA, db, strict=True):
            if lr.oracle == "ridge-shared":
                A_old = np.linalg.inv(lr._A_inv)
                b = A_old @ lr._theta + dbi
                lr._A_inv = np.linalg.inv(A_old + dAi)
                lr._theta = lr._A_inv @ b
            else:
                s = lr._table.slot[a]
                A_old = np.linalg.inv(lr._A_inv[s])
                b = A_old @ lr._theta[s] + dbi
                lr._A_inv[s] = np.linalg.inv(A_old + dAi)
                lr._theta[s] = lr._A_inv[s] @ b
            A0, b0 = self._base.get(a, prior)
            self._base[a] = (A0 + dAi, b0 + dbi)
        dt = int(np.asarray(delta["dt"]))
        lr._t += dt
        self._base_t += dt

    def empty(self) -> dict[str, np.ndarray]:
        """A delta of nothing learned (what :meth:`merge` adds without a change)."""
        dim = self._prior()[1].shape[0]
        return {"ids": np.array([], dtype=str), "dA": np.zeros((0, dim, dim)), "db": np.zeros((0, dim)),
                "dt": np.array(0, dtype=np.int64)}

    def held(self) -> list[str]:
        """The ids of the models this replica holds (``ridge-shared``: the shared model's)."""
        lr = self.learner
        return [SHARED] if lr.oracle == "ridge-shared" else list(lr._table.slot)

    @staticmethod
    def restrict(d: Mapping[str, np.ndarray], ids: list[str]) -> dict[str, np.ndarray]:
        """The models of delta ``d`` whose ids are among ``ids`` (its learned-event count kept)."""
        keep = set(ids)
        idx = [i for i, a in enumerate(np.asarray(d["ids"]).tolist()) if str(a) in keep]
        return {"ids": np.asarray(d["ids"])[idx], "dA": np.asarray(d["dA"])[idx], "db": np.asarray(d["db"])[idx],
                "dt": np.asarray(d["dt"])}

    @staticmethod
    def combine(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], sign: int = 1) -> dict[str, np.ndarray]:
        """``a + sign * b`` of two deltas, model by model (ids in ``a``'s order, then ``b``'s new
        ones; a model that sums to nothing is left out): the sum of replicas' shipments, or what is
        left to add of a sum once part of it was."""
        acc: dict[str, list[np.ndarray]] = {}
        for d, sg in ((a, 1), (b, sign)):
            ids = [str(x) for x in np.asarray(d["ids"]).tolist()]
            dA, db = np.asarray(d["dA"], dtype=np.float64), np.asarray(d["db"], dtype=np.float64)
            for i, k in enumerate(ids):
                have = acc.get(k)
                if have is None:
                    acc[k] = [sg * dA[i], sg * db[i]]
                else:
                    have[0] = have[0] + sg * dA[i]
                    have[1] = have[1] + sg * db[i]
        dim = np.asarray(a["db"]).shape[-1] if np.asarray(a["db"]).ndim == 2 else np.asarray(b["db"]).shape[-1]
        ids = [k for k, (A, v) in acc.items() if A.any() or v.any()]
        return {"ids": np.array(ids, dtype=str), "dA": np.array([acc[k][0] for k in ids]).reshape(len(ids), dim, dim),
                "db": np.array([acc[k][1] for k in ids]).reshape(len(ids), dim),
                "dt": np.array(int(np.asarray(a["dt"])) + sign * int(np.asarray(b["dt"])), dtype=np.int64)}

    # -- state ----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, np.ndarray]:
        """The base (the statistics of the last shipment), to keep with the learner's snapshot."""
        ids = list(self._base)
        dim = self._prior()[1].shape[0]
        return {"ids": np.array(ids, dtype=str),
                "A": np.array([self._base[a][0] for a in ids]).reshape(len(ids), dim, dim),
                "b": np.array([self._base[a][1] for a in ids]).reshape(len(ids), dim),
                "t": np.array(self._base_t, dtype=np.int64)}

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        ids = [str(a) for a in np.asarray(state["ids"]).tolist()]
        A, b = np.asarray(state["A"], dtype=np.float64), np.asarray(state["b"], dtype=np.float64)
        if A.shape[0] != len(ids) or b.shape[0] != len(ids):
            raise InvalidInput("a merge base needs one A and one b per id")
        self._base = {a: (A[i].copy(), b[i].copy()) for i, a in enumerate(ids)}
        self._base_t = int(np.asarray(state["t"]))
