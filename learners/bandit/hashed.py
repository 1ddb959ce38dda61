"""SquareCB and ε-greedy over a hashed sparse linear model, for wide sparse contexts.

Contexts arrive as sparse rows of hashed features (merchant, card BIN, country, their crosses...):
``x_indptr``/``x_index``/``x_value`` in CSR layout, indices in ``[0, n_features)``. One weight
table of ``n_features`` rows serves every action: the action crosses each feature by an offset
that hashes its id (Vowpal Wabbit's action-crossed hashing), so decisions cost K·nnz and an update
costs nnz, whatever the table's size (up to 2**22 rows).

The regression is NAG (normalized adaptive gradient) with importance-invariant steps, importance
weight 1/p of the logged propensity: the update Vowpal Wabbit's SquareCB applies through its cb_adf
``mtr`` reduction (``learners/bandit/_sparse.py`` states the step and where it is a reconstruction).

References
----------
.. [1] Foster, D. and Rakhlin, A. (2020). Beyond UCB: Optimal and Efficient Contextual Bandits with
   Regression Oracles. ICML.
.. [2] Ross, S., Mineiro, P. and Langford, J. (2013). Normalized Online Learning. UAI.
.. [3] Karampatziakis, N. and Langford, J. (2011). Online Importance Weight Aware Updates. UAI.
.. [4] Weinberger, K. et al. (2009). Feature Hashing for Large Scale Multitask Learning. ICML.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from .._hashing import event_keys
from ..base import Batch, Column, InvalidInput
from . import _sparse as SK
from .learner import BanditLearner

MAX_FEATURES = 2**22
HASHED_POLICIES = ("squarecb", "epsilon-greedy", "fastcb")
_ROWS = (
    Column("x_indptr", "int64", "n+1", "offsets of each event's features in x_index/x_value"),
    Column("x_index", "int64", "nnz", "hashed feature indices, in [0, n_features)"),
    Column("x_value", "float64", "nnz", "feature values"),
)


class HashedBanditLearner(BanditLearner):
    """A contextual bandit over a hashed sparse linear oracle shared by all actions.

    The action table, exploration rules, floors and draws are :class:`BanditLearner`'s; only the
    oracle differs. An action's weights live in the shared table at rows its id's hash addresses,
    so an action that leaves the action table (``max_actions``) and comes back finds what it had
    learned, except where other features have collided with it since.

    Parameters
    ----------
    n_features
        Rows of the weight table (a power of two, at most 2**22); the context's indices are hashed
        into it by the caller (the daemon's hasher, with declared feature crosses).
    policy
        ``squarecb`` (inverse gap weighting), ``epsilon-greedy`` or ``fastcb``.
    eta
        Base learning rate of the normalized adaptive update (Vowpal Wabbit's ``-l``, 0.5).
    importance_weights
        Weight each learned row by 1/prob of its logged propensity (as Vowpal Wabbit's SquareCB
        does); ``False`` regresses unweighted. Feedback must then carry ``prob`` in (0, 1].
    constant
        Add a constant feature per action (Vowpal Wabbit's default).
    actions, max_actions, strict_actions, gamma_scale, gamma_exponent, epsilon, min_prob,
    max_explore, version_interval, seed
        As in :class:`BanditLearner`.

    Examples
    --------
    >>> import numpy as np
    >>> from learners.bandit.hashed import HashedBanditLearner
    >>> hb = HashedBanditLearner(n_features=1024, actions=("a", "b"), seed=1)
    >>> ev = {"event_key": np.array([7], np.uint64), "x_indptr": np.array([0, 2]),
    ...       "x_index": np.array([3, 900]), "x_value": np.array([1.0, 0.5])}
    >>> out = hb.process(ev)
    >>> out["probs"].tolist()   # nothing learned yet: uniform
    [0.5, 0.5]
    >>> hb.learn({**ev, "action": out["chosen_action"], "reward": np.array([1.0]), "prob": out["prob"]})
    >>> bool(hb.process(ev)["scores"][hb.actions.index(out["chosen_action"][0])] > 0)
    True
    """

    inputs = (BanditLearner.inputs[0], *_ROWS, *BanditLearner.inputs[2:4])
    outputs = BanditLearner.outputs
    feedback = (
        Column("event_key", "uint64", "n", "keys of the decided events"),
        *_ROWS,
        Column("action", "str", "n", "id of the chosen action"),
        Column("reward", "float64", "n", "its reward (in [0, 1] for fastcb)"),
        Column("prob", "float64", "n", "its probability when chosen, in (0, 1]: the row's importance weight "
               "is 1/prob (needed unless importance_weights is false)", required=False),
    )

    def __init__(
        self,
        n_features: int = 2**18,
        policy: str = "squarecb",
        actions: tuple[str, ...] = (),
        max_actions: int = 256,
        strict_actions: bool = False,
        eta: float = 0.5,
        importance_weights: bool = True,
        constant: bool = True,
        gamma_scale: float = 10.0,
        gamma_exponent: float = 0.5,
        epsilon: float = 0.05,
        min_prob: float = 0.0,
        max_explore: float = 1.0,
        version_interval: int = 1000,
        seed: int = 0,
    ):
        if not isinstance(n_features, int) or not 1 <= n_features <= MAX_FEATURES or n_features & (n_features - 1):
            raise InvalidInput(f"n_features={n_features!r} is not allowed; allowed: a power of two up to 2**22")
        if policy not in HASHED_POLICIES:
            raise InvalidInput(f"policy={policy!r} is not allowed; allowed: {', '.join(HASHED_POLICIES)}")
        if not eta > 0 or not np.isfinite(eta):
            raise InvalidInput(f"eta={eta!r} is not allowed; allowed: > 0")
        self.eta = eta
        self.importance_weights = importance_weights
        self.constant = constant
        self._mask = n_features - 1
        self._W = np.zeros((3, n_features))
        self._acc = np.zeros(2)
        self._offsets = np.zeros(0, dtype=np.int64)
        super().__init__(n_features, policy=policy, oracle="ridge", actions=actions, max_actions=max_actions,
                         strict_actions=strict_actions, gamma_scale=gamma_scale, gamma_exponent=gamma_exponent,
                         epsilon=epsilon, min_prob=min_prob, max_explore=max_explore,
                         version_interval=version_interval, seed=seed)
        self.oracle = "hashed"
        self._A_inv = self._theta = np.zeros(0)

    _ragged: ClassVar[dict[str, str]] = {**BanditLearner._ragged, "x_index": "x_indptr", "x_value": "x_indptr"}

    # -- state ------------------------------------------------------------------------------------
    def _n_slots_alloc(self) -> int:
        return len(self._offsets)

    def _offset_of(self, ids: list[str]) -> np.ndarray:
        return (event_keys(ids) & np.uint64(self._mask)).astype(np.int64)

    def _grow(self) -> None:
        need = len(self._table.ids)
        have = len(self._offsets)
        if need > have:
            new = [str(a) for a in self._table.ids[have:need]]
            self._offsets = np.concatenate([self._offsets, self._offset_of(new)])

    def _reset_slot(self, s: int) -> None:
        # The slot now holds another action: its offset follows the new id (its weights are that
        # id's rows of the shared table).
        self._grow()
        a = self._table.ids[s]
        self._offsets[s] = self._offset_of([str(a)])[0]

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"W": self._W, "acc": self._acc}

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        W = np.array(state["W"], dtype=np.float64)
        acc = np.array(state["acc"], dtype=np.float64)
        if W.shape != self._W.shape or acc.shape != (2,):
            raise InvalidInput(f"snapshot array W has shape {W.shape}, expected {self._W.shape}")
        self._W, self._acc = W, acc
        self._table.load(state)
        self._offsets = np.zeros(0, dtype=np.int64)
        self._grow()
        self._t = int(state["t"])
        self._tick = int(state["tick"])
        self._all_slots = np.array([self._table.slot[a] for a in self.actions if a in self._table.slot],
                                   dtype=np.int64)

    def report(self) -> dict[str, Any]:
        return {**super().report(), "nonzero_weights": int(np.count_nonzero(self._W[0]))}

    # -- the oracle's hooks -----------------------------------------------------------------------
    def _context(self, batch: Batch) -> tuple[Any, np.ndarray]:
        try:
            keys = np.asarray(batch["event_key"], dtype=np.uint64)
            ptr = np.asarray(batch["x_indptr"], dtype=np.int64)
            idx = np.asarray(batch["x_index"], dtype=np.int64)
            val = np.asarray(batch["x_value"], dtype=np.float64)
        except (TypeError, ValueError, OverflowError) as e:
            raise InvalidInput(f"ill-typed column: {e}") from None
        n = keys.shape[0]
        if keys.ndim != 1:
            raise InvalidInput(f"event_key must be one-dimensional, got shape {keys.shape}")
        if ptr.shape != (n + 1,) or ptr[0] != 0 or (np.diff(ptr) < 0).any():
            raise InvalidInput(f"x_indptr must have n+1 = {n + 1} non-decreasing entries from 0")
        nnz = int(ptr[-1])
        if idx.shape != (nnz,) or val.shape != (nnz,):
            raise InvalidInput(f"x_index and x_value must have x_indptr[-1] = {nnz} entries")
        if nnz and (int(idx.min()) < 0 or int(idx.max()) > self._mask):
            bad = (idx < 0) | (idx > self._mask)
            raise InvalidInput(f"x_index must lie in [0, {self.n_features})", rows=_rows_of(ptr, bad))
        if not np.isfinite(val.sum()) and not np.isfinite(val).all():  # (one pass when all is well)
            raise InvalidInput("x_value contains NaN or inf", rows=_rows_of(ptr, ~np.isfinite(val)))
        return (ptr, idx, val), keys

    def _score(self, ctx: Any, keys: np.ndarray, indptr: np.ndarray, slots: np.ndarray, AF: np.ndarray,
               want_width: bool, scores: np.ndarray, widths: np.ndarray) -> None:
        ptr, idx, val = ctx
        SK.hashed_scores(ptr, idx, val, indptr, self._offsets[slots], self._W, self._mask, self.constant, scores)

    def _importance(self, batch: Batch, n: int) -> np.ndarray | None:
        if not self.importance_weights:
            return np.ones(n)
        if "prob" not in batch:
            raise InvalidInput("importance_weights needs the column 'prob' (the logged propensity)")
        try:
            p = np.asarray(batch["prob"], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"ill-typed column: {e}") from None
        if p.shape != (n,):
            raise InvalidInput(f"prob must have shape ({n},), got {p.shape}")
        bad = ~((p > 0.0) & (p <= 1.0))
        if bad.any():
            raise InvalidInput("prob must lie in (0, 1]", rows=np.flatnonzero(bad))
        return 1.0 / p

    def _fit(self, ctx: Any, keys: np.ndarray, slots: np.ndarray, reward: np.ndarray,
             omega: np.ndarray | None, AF: np.ndarray) -> None:
        ptr, idx, val = ctx
        w = np.ones(len(slots)) if omega is None else omega
        SK.hashed_update(ptr, idx, val, self._offsets[slots], reward, w, self._W, self._acc, self._mask,
                         self.eta, self.constant)

    def warm_up(self) -> None:
        twin = self.clone()
        keys = np.array([1, 2], dtype=np.uint64)
        rows = {"x_indptr": np.array([0, 1, 2]), "x_index": np.array([0, 1]), "x_value": np.array([1.0, 1.0])}
        out = twin.process({"event_key": keys, **rows, "action_indptr": np.array([0, 2, 4], dtype=np.int64),
                            "action_ids": np.array(["~w0", "~w1", "~w0", "~w1"], dtype=object)})
        twin.learn({"event_key": keys, **rows, "action": out["chosen_action"], "reward": np.zeros(2),
                    "prob": out["prob"]})

    # -- conformance ------------------------------------------------------------------------------
    @staticmethod
    def conformance_params(**preset: Any) -> dict[str, Any]:
        return {"n_features": 64, "seed": 3, "max_actions": 8}

    @classmethod
    def _conformance_stream(cls, seed: int, n_events: int = 64) -> Iterator[tuple[str, Batch]]:
        """:class:`BanditLearner`'s stream with each context as a sparse row (its non-zeros, at
        indices spread over the table)."""
        for op, batch in BanditLearner._conformance_stream(seed, n_events):
            yield op, _as_rows(batch)

    @classmethod
    def _bad_batches(cls) -> Iterator[tuple[str, Batch]]:
        stream = list(cls._conformance_stream(0))
        ok, fb = stream[0][1], stream[1][1]
        yield "process", {**ok, "x_value": np.where(np.arange(len(ok["x_value"])) == 1, np.nan, ok["x_value"])}
        yield "process", {**ok, "x_index": ok["x_index"] + 64}
        yield "process", {**ok, "x_indptr": ok["x_indptr"][:-1]}
        yield "process", {k: v for k, v in ok.items() if k != "event_key"}
        yield "process", {**ok, "action_indptr": ok["action_indptr"] * 0}
        many = np.array([f"new{j}" for j in range(9)], dtype=object)
        yield "process", {"event_key": ok["event_key"][:1], "x_indptr": np.array([0, 1]), "x_index": np.array([2]),
                          "x_value": np.array([1.0]), "action_indptr": np.array([0, 9], dtype=np.int64),
                          "action_ids": many}
        yield "learn", {**fb, "reward": np.full(len(fb["reward"]), np.inf)}
        yield "learn", {**fb, "prob": np.zeros(len(fb["reward"]))}
        yield "learn", {k: v for k, v in fb.items() if k != "prob"}
        yield "learn", {k: v for k, v in fb.items() if k != "reward"}


def _rows_of(ptr: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """The rows holding the flagged entries."""
    return np.unique(np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))[bad])


def _as_rows(batch: Batch) -> dict[str, np.ndarray]:
    X = np.asarray(batch["X"])
    out = {k: v for k, v in batch.items() if k not in ("X", "action_features")}
    r, c = np.nonzero(X)
    out["x_indptr"] = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=X.shape[0]))]).astype(np.int64)
    out["x_index"] = (c * 13 + 5).astype(np.int64)  # distinct, spread over the 64 rows
    out["x_value"] = X[r, c].astype(np.float64)
    return out
