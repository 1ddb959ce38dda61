"""Contextual bandits for decisions such as payment routing.

Exploration rules wrap an online regression oracle, as Vowpal Wabbit's reductions wrap a base
learner: the oracle predicts each available action's reward, the exploration rule turns those
predictions into a probability vector, floors and caps bound it, and one seeded draw per event picks
the action. The oracle then learns only the chosen action's reward, when the reward arrives.

References
----------
.. [1] Foster, D. and Rakhlin, A. (2020). Beyond UCB: Optimal and Efficient Contextual Bandits with
   Regression Oracles. ICML. (SquareCB, inverse gap weighting.)
.. [2] Foster, D. and Krishnamurthy, A. (2021). Efficient First-Order Contextual Bandits: Prediction,
   Allocation, and Triangular Discrimination. NeurIPS. (FastCB.)
.. [3] Deb, R., Ban, Y., Zuo, S., He, J. and Banerjee, A. (2023). Contextual Bandits with Online
   Neural Regression. arXiv:2312.07145. (Perturbed neural oracle, squared and KL losses.) Only the
   abstract was readable here: the perturbation law (Gaussian on the output logit), its scale, the
   width and the step size are our reconstruction, not the paper's constants.
.. [4] Li, L., Chu, W., Langford, J. and Schapire, R. (2010). A Contextual-Bandit Approach to
   Personalized News Article Recommendation. WWW. (LinUCB.)
.. [5] Agrawal, S. and Goyal, N. (2013). Thompson Sampling for Contextual Bandits with Linear Payoffs.
   ICML.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from ..base import Batch, Column, Decider, InvalidInput
from ..linear import _kernels as LK
from . import _kernels as BK

POLICIES = ("squarecb", "fastcb", "epsilon-greedy", "linucb", "lints")
ORACLES = ("ridge", "ridge-shared", "neural")


class _RowByRow(Exception):
    """A batch whose lookups must evict: it is decided one row at a time (see ``_by_row``)."""


class ActionTable:
    """Action id ↔ slot map with a cap; the least recently offered action is evicted when full.

    Recency counts rows, not calls: each row of a batch (an event decided, a reward learned) has
    its own tick, one after the previous row's, so the table after a stream of rows is the same
    however the stream was cut into batches. A batch that must evict (more new ids than free
    slots) is taken one row at a time by the learner, so each row evicts what it would alone: the
    least recently used slot its own row does not offer."""

    def __init__(self, cap: int):
        self.cap = cap
        self.ids: list[str | None] = []
        self.slot: dict[str, int] = {}
        self.last_used = np.zeros(0, dtype=np.int64)
        self.evictions = 0

    def lookup(self, ids, ticks: np.ndarray, allow_new: bool, on_reset) -> np.ndarray:
        """The slots of ``ids``; ``ticks``: each id's row tick (non-decreasing)."""
        slot = self.slot
        found = [slot.get(a) for a in ids]
        since = int(ticks[0]) if len(ticks) else 0  # the batch's first row
        if None in found:
            self._check_room(ids, found, since, allow_new)
            # Slots already used by this batch are taken before any new id may evict one.
            known = [j for j, f in enumerate(found) if f is not None]
            np.maximum.at(self.last_used, np.array([found[j] for j in known], dtype=np.int64), ticks[known])
            for j, a in enumerate(ids):
                if found[j] is None:
                    s = slot.get(a)  # an id new in this batch may repeat
                    if s is None:
                        if not allow_new:
                            raise InvalidInput(f"unknown action id {a!r}")
                        s = self._new(a, int(ticks[j]), since, on_reset)
                    found[j] = s
        out = np.array(found, dtype=np.int64)
        if len(out):
            np.maximum.at(self.last_used, out, ticks)
        return out

    def evicts(self, ids, allow_new: bool) -> bool:
        """Whether looking ``ids`` up would evict an action (more new ids than free slots)."""
        free = self.cap - len(self.ids)
        if not allow_new or len(ids) <= free:
            return False
        return len(set(ids).difference(self.slot)) > free

    def _check_room(self, ids, found: list, since: int, allow_new: bool) -> None:
        """Raises before anything changes if the batch's new ids are not allowed or cannot all get a
        slot (a rejected batch leaves the table and the models as they were)."""
        new = list(dict.fromkeys(a for a, f in zip(ids, found, strict=True) if f is None))
        if not allow_new:
            raise InvalidInput(f"unknown action id {new[0]!r}")
        taken = np.zeros(len(self.ids), dtype=np.bool_)
        taken[[f for f in found if f is not None]] = True
        room = self.cap - len(self.ids) + int(((self.last_used < since) & ~taken).sum())
        if len(new) > room:
            raise InvalidInput(f"more than max_actions={self.cap} distinct actions in one batch")

    def _new(self, a: str, tick: int, since: int, on_reset) -> int:
        if len(self.ids) < self.cap:
            s = len(self.ids)
            self.ids.append(a)
            self.last_used = np.append(self.last_used, tick)
        else:
            candidates = np.flatnonzero(self.last_used < since)
            if len(candidates) == 0:
                raise InvalidInput(f"more than max_actions={self.cap} distinct actions in one batch")
            s = int(candidates[np.argmin(self.last_used[candidates])])
            old = self.ids[s]
            if old is not None:
                del self.slot[old]
            self.ids[s] = a
            self.evictions += 1
            on_reset(s)
        self.slot[a] = s
        self.last_used[s] = tick
        return s

    def to_arrays(self) -> dict[str, np.ndarray]:
        ids = np.array([a if a is not None else "" for a in self.ids], dtype=str)
        return {"action_ids": ids, "action_last_used": self.last_used.copy(),
                "action_evictions": np.array(self.evictions, dtype=np.int64)}

    def load(self, state: Mapping[str, np.ndarray]) -> None:
        self.ids = [str(a) for a in state["action_ids"].tolist()]
        self.slot = {a: i for i, a in enumerate(self.ids) if a is not None}
        self.last_used = np.array(state["action_last_used"], dtype=np.int64)
        self.evictions = int(state["action_evictions"])


class BanditLearner(Decider):
    """A contextual bandit: an exploration rule over an online regression oracle.

    A :class:`~learners.base.Decider`: ``process`` decides, ``learn`` learns the chosen actions'
    rewards. ``process`` learns nothing, but it keeps the action table: it records when each
    action was last offered (``tick``, ``action_last_used``: a count of rows, decided and learned,
    so the same however the rows were batched), and an action id it has not seen
    takes a slot with a fresh model at the prior; when the table is full, that slot is the least
    recently offered action's, whose model is reset (forgotten: the one way ``process`` changes
    the models).

    Parameters
    ----------
    n_features
        Dimension d of the context vector (name→value contexts are hashed to it by the caller).
    policy
        Exploration rule: ``squarecb`` (inverse gap weighting, γ = gamma_scale·t^gamma_exponent
        with t the number of learned events, as in Vowpal Wabbit), ``fastcb`` (FastCB's weighting
        on costs 1 − reward), ``epsilon-greedy``, ``linucb`` or ``lints`` (the last two need a ridge
        oracle: they use its confidence widths).
    oracle
        ``ridge`` (one ridge model per action), ``ridge-shared`` (one ridge model over
        vec(context ⊗ [1, action features])) or ``neural`` (one hidden ReLU layer, one output per
        action, SGD on the chosen action, random output perturbation).
    actions
        Action ids known from the start; an event without its own action set offers all of them.
    max_actions
        Cap on action slots; beyond it the least recently offered action's model is reset and reused.
    strict_actions
        Reject action ids not in ``actions`` instead of adding them.
    n_action_features
        Dimension of the per-action feature vectors (``ridge-shared`` only).
    lam
        Ridge penalty.
    gamma_scale, gamma_exponent
        SquareCB/FastCB exploration schedule.
    epsilon, alpha, ts_scale, ts_samples
        ε-greedy rate; LinUCB width multiplier; Thompson posterior scale and the number of draws
        used to compute its propensities.
    hidden, lr, perturbation, kl_loss
        Neural oracle: width, step size, σ of the output perturbation, KL (sigmoid) or squared loss.
    min_prob, max_explore
        Exploration floor (per non-greedy action) and cap (total mass off the greedy action).
    version_interval
        The model version is ``t // version_interval``.
    threads
        ``ridge`` oracle: 2 learns the actions' models on two threads (each model in its rows' order:
        the same result as one thread, bit for bit).
    seed
        Seeds the exploration draws (with each event's key) and the neural initialisation.

    Examples
    --------
    >>> import numpy as np
    >>> from learners.bandit import BanditLearner
    >>> bl = BanditLearner(n_features=2, actions=("a", "b"), seed=1)
    >>> ev = {"event_key": np.array([7], np.uint64), "X": np.array([[1.0, 0.5]])}
    >>> out = bl.process(ev)
    >>> out["probs"].tolist()   # nothing learned yet: uniform
    [0.5, 0.5]
    >>> bl.learn({"event_key": ev["event_key"], "X": ev["X"], "action": out["chosen_action"],
    ...           "reward": np.array([1.0]), "prob": out["prob"]})
    >>> int(bl.metrics()["learned_events"])
    1
    """

    family = "bandit"
    inputs: ClassVar[tuple[Column, ...]] = (
        Column("event_key", "uint64", "n", "event keys: seed the exploration draws"),
        Column("X", "float64", "n×d", "contexts (d = n_features)"),
        Column("action_indptr", "int64", "n+1", "offsets of each event's action set in action_ids; "
               "without it every event offers the configured actions", required=False),
        Column("action_ids", "str", "nnz", "available action ids, event after event (with action_indptr)",
               required=False),
        Column("action_features", "float64", "nnz×n_action_features", "features of each available action "
               "(oracle ridge-shared only; nnz = n × the configured actions without action_indptr)",
               required=False),
    )
    outputs: ClassVar[tuple[Column, ...]] = (
        Column("indptr", "int64", "n+1", "offsets of each event's actions in probs and scores"),
        Column("probs", "float64", "nnz", "probability of each available action"),
        Column("scores", "float64", "nnz", "the oracle's predicted reward of each available action"),
        Column("chosen", "int64", "n", "position of the chosen action within the event's set"),
        Column("chosen_action", "str", "n", "id of the chosen action"),
        Column("prob", "float64", "n", "probability of the chosen action"),
        Column("explored", "bool", "n", "the chosen action is not the greedy one"),
        Column("model_version", "int64", "n", "learned events // version_interval"),
    )
    feedback: ClassVar[tuple[Column, ...]] = (
        Column("event_key", "uint64", "n", "keys of the decided events (seed the neural oracle's perturbation)"),
        Column("X", "float64", "n×d", "the contexts decided on"),
        Column("action", "str", "n", "id of the chosen action"),
        Column("reward", "float64", "n", "its reward (in [0, 1] for fastcb)"),
        Column("prob", "float64", "n", "its probability when chosen: accepted for the record, not used (the "
               "ridge and neural oracles regress unweighted; the hashed oracle weights by 1/prob)",
               required=False),
        Column("action_features", "float64", "n×n_action_features", "the chosen action's features (oracle "
               "ridge-shared only)", required=False),
    )
    bookkeeping = ("tick", "action_last_used")

    def __init__(
        self,
        n_features: int,
        policy: str = "squarecb",
        oracle: str = "ridge",
        actions: tuple[str, ...] = (),
        max_actions: int = 256,
        strict_actions: bool = False,
        n_action_features: int = 0,
        lam: float = 1.0,
        gamma_scale: float = 10.0,
        gamma_exponent: float = 0.5,
        epsilon: float = 0.05,
        alpha: float = 1.0,
        ts_scale: float = 0.5,
        ts_samples: int = 64,
        hidden: int = 32,
        lr: float = 0.05,
        perturbation: float = 0.01,
        kl_loss: bool = False,
        min_prob: float = 0.0,
        max_explore: float = 1.0,
        version_interval: int = 1000,
        seed: int = 0,
        threads: int = 1,
    ):
        self.n_features = n_features
        self.policy = policy
        self.oracle = oracle
        self.actions = tuple(actions)
        self.max_actions = max_actions
        self.strict_actions = strict_actions
        self.n_action_features = n_action_features
        self.lam = lam
        self.gamma_scale = gamma_scale
        self.gamma_exponent = gamma_exponent
        self.epsilon = epsilon
        self.alpha = alpha
        self.ts_scale = ts_scale
        self.ts_samples = ts_samples
        self.hidden = hidden
        self.lr = lr
        self.perturbation = perturbation
        self.kl_loss = kl_loss
        self.min_prob = min_prob
        self.max_explore = max_explore
        self.version_interval = version_interval
        self.seed = seed
        self.threads = threads
        self._pool: Any = None
        self._validate_params()

        d = n_features
        self._dim = d * (n_action_features + 1)
        self._t = 0
        self._tick = 0
        self._table = ActionTable(max_actions)
        self._A_inv: np.ndarray  # (k, d, d) per action, or (D, D) shared
        self._theta: np.ndarray  # (k, d) per action, or (D,) shared
        if oracle == "ridge":
            self._A_inv = np.zeros((0, d, d))
            self._theta = np.zeros((0, d))
        elif oracle == "ridge-shared":
            self._A_inv = np.eye(self._dim) / lam
            self._theta = np.zeros(self._dim)
        else:
            rng = np.random.default_rng(seed)
            self._W1 = rng.normal(0.0, 1.0 / np.sqrt(d), size=(hidden, d))
            self._b1 = np.zeros(hidden)
            self._W2 = np.zeros((0, hidden))
            self._b2 = np.zeros(0)
        self._all_slots = self._table.lookup(list(self.actions), np.zeros(len(self.actions), dtype=np.int64), True,
                                              self._reset_slot)
        self._grow()

    # -- settings ---------------------------------------------------------------------------------
    def _validate_params(self) -> None:
        def bad(key: str, value: Any, allowed: str) -> InvalidInput:
            return InvalidInput(f"{key}={value!r} is not allowed; allowed: {allowed}")

        if not isinstance(self.n_features, int) or self.n_features < 1:
            raise bad("n_features", self.n_features, "an integer >= 1")
        if self.policy not in POLICIES:
            raise bad("policy", self.policy, ", ".join(POLICIES))
        if self.oracle not in ORACLES:
            raise bad("oracle", self.oracle, ", ".join(ORACLES))
        if self.policy in ("linucb", "lints") and self.oracle == "neural":
            raise bad("oracle", self.oracle, "ridge or ridge-shared with policy " + self.policy)
        if self.oracle == "ridge-shared" and self.n_action_features < 1:
            raise bad("n_action_features", self.n_action_features, ">= 1 with oracle ridge-shared")
        if self.oracle != "ridge-shared" and self.n_action_features != 0:
            raise bad("n_action_features", self.n_action_features, "0 unless oracle is ridge-shared")
        if self.max_actions < 1 or len(set(self.actions)) != len(self.actions):
            raise bad("actions", self.actions, "distinct ids, at most max_actions of them")
        if len(self.actions) > self.max_actions:
            raise bad("max_actions", self.max_actions, f">= len(actions) = {len(self.actions)}")
        if self.strict_actions and not self.actions:
            raise bad("strict_actions", True, "False when no actions are configured")
        if not self.lam > 0:
            raise bad("lam", self.lam, "> 0")
        if not 0.0 <= self.epsilon <= 1.0:
            raise bad("epsilon", self.epsilon, "[0, 1]")
        if not 0.0 <= self.min_prob <= 1.0 or not 0.0 <= self.max_explore <= 1.0:
            raise bad("min_prob/max_explore", (self.min_prob, self.max_explore), "[0, 1]")
        if self.threads not in (1, 2):
            raise bad("threads", self.threads, "1 or 2")
        if self.ts_samples < 1 or self.hidden < 1 or self.version_interval < 1:
            raise bad("ts_samples/hidden/version_interval", None, ">= 1")
        if self.gamma_scale < 0 or self.perturbation < 0 or self.lr <= 0 or self.alpha < 0:
            raise bad("gamma_scale/perturbation/lr/alpha", None, "non-negative (lr > 0)")

    # -- state ------------------------------------------------------------------------------------
    def _n_slots_alloc(self) -> int:
        return self._theta.shape[0] if self.oracle == "ridge" else (
            self._W2.shape[0] if self.oracle == "neural" else len(self._table.ids))

    def _grow(self) -> None:
        """Allocates model rows for slots the table handed out since the last call."""
        need = len(self._table.ids)
        have = self._n_slots_alloc()
        if need <= have or self.oracle == "ridge-shared":
            return
        extra = need - have
        d = self.n_features
        if self.oracle == "ridge":
            self._A_inv = np.concatenate([self._A_inv, np.broadcast_to(np.eye(d) / self.lam, (extra, d, d))])
            self._theta = np.concatenate([self._theta, np.zeros((extra, d))])
        else:
            self._W2 = np.concatenate([self._W2, np.zeros((extra, self.hidden))])
            self._b2 = np.concatenate([self._b2, np.zeros(extra)])

    def _reset_slot(self, s: int) -> None:
        if self.oracle == "ridge":
            self._A_inv[s] = np.eye(self.n_features) / self.lam
            self._theta[s] = 0.0
        elif self.oracle == "neural":
            self._W2[s] = 0.0
            self._b2[s] = 0.0
        # ridge-shared: the model is shared, an action is only its features.

    def _arrays(self) -> dict[str, np.ndarray]:
        if self.oracle == "neural":
            return {"W1": self._W1, "b1": self._b1, "W2": self._W2, "b2": self._b2}
        return {"A_inv": self._A_inv, "theta": self._theta}

    def snapshot(self) -> dict[str, np.ndarray]:
        state = {k: v.copy() for k, v in self._arrays().items()}
        state.update(self._table.to_arrays())
        state["t"] = np.array(self._t, dtype=np.int64)
        state["tick"] = np.array(self._tick, dtype=np.int64)
        return state

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        for k, v in self._arrays().items():
            arr = np.array(state[k], dtype=np.float64)
            if arr.shape[1:] != v.shape[1:]:
                raise InvalidInput(f"snapshot array {k} has shape {arr.shape}, expected (*, {v.shape[1:]})")
            setattr(self, "_" + k, arr)
        self._table.load(state)
        self._t = int(state["t"])
        self._tick = int(state["tick"])
        self._all_slots = np.array([self._table.slot[a] for a in self.actions if a in self._table.slot],
                                   dtype=np.int64)

    @property
    def gamma(self) -> float:
        return self.gamma_scale * float(self._t) ** self.gamma_exponent if self._t > 0 else 0.0

    @property
    def model_version(self) -> int:
        return self._t // self.version_interval

    @property
    def learned_events(self) -> int:
        return int(self._t)

    def metrics(self) -> dict[str, float]:
        return {
            "learned_events": float(self._t),
            "actions": float(len(self._table.slot)),
            "action_evictions": float(self._table.evictions),
            "gamma": self.gamma,
            "model_version": float(self.model_version),
        }

    # -- input checks -----------------------------------------------------------------------------
    def _check_X(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        try:
            X = np.asarray(batch["X"], dtype=np.float64)
            keys = np.asarray(batch["event_key"], dtype=np.uint64)
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"ill-typed column: {e}") from None
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InvalidInput(f"X must have shape (n, {self.n_features}), got {X.shape}")
        if keys.shape != (X.shape[0],):
            raise InvalidInput(f"event_key must have shape ({X.shape[0]},), got {keys.shape}")
        finite = np.isfinite(X).all(axis=1)
        if not finite.all():
            raise InvalidInput("X contains NaN or inf", rows=np.flatnonzero(~finite))
        return np.ascontiguousarray(X), keys

    def _check_af(self, batch: Batch, n: int) -> np.ndarray:
        if self.oracle != "ridge-shared":
            return np.zeros((n, 0))
        if "action_features" not in batch:
            raise InvalidInput("oracle ridge-shared needs the column 'action_features'")
        AF = np.ascontiguousarray(batch["action_features"], dtype=np.float64)
        if AF.shape != (n, self.n_action_features):
            raise InvalidInput(f"action_features must have shape ({n}, {self.n_action_features}), got {AF.shape}")
        if not np.isfinite(AF).all():
            raise InvalidInput("action_features contain NaN or inf")
        return AF

    def _action_sets(self, batch: Batch, n: int, base: int) -> tuple[np.ndarray, np.ndarray, list | None, np.ndarray]:
        """The batch's action sets as slots; row ``j``'s actions offered at tick ``base + 1 + j``."""
        if "action_indptr" not in batch:
            if len(self._all_slots) == 0:
                raise InvalidInput("events carry no action set and no actions are configured")
            k = len(self._all_slots)
            AF = self._check_af(batch, n * k)
            if n:
                self._table.last_used[self._all_slots] = base + n
            return np.arange(0, n * k + 1, k, dtype=np.int64), np.tile(self._all_slots, n), None, AF
        if "action_ids" not in batch:
            raise InvalidInput("missing column 'action_ids' (the action sets that action_indptr delimits)")
        indptr = np.asarray(batch["action_indptr"], dtype=np.int64)
        ids = list(batch["action_ids"])
        if indptr.shape != (n + 1,) or indptr[0] != 0 or indptr[-1] != len(ids):
            raise InvalidInput("action_indptr must have n+1 entries from 0 to len(action_ids)")
        sizes = np.diff(indptr)
        if (sizes < 1).any():
            raise InvalidInput("every event needs at least one available action",
                               rows=np.flatnonzero(sizes < 1))
        if set(map(type, ids)) != {str} and not all(isinstance(a, str) for a in ids):
            raise InvalidInput("action ids must be strings")
        AF = self._check_af(batch, len(ids))
        if n > 1 and self._table.evicts(ids, not self.strict_actions):
            for lo, hi in zip(indptr[:-1], indptr[1:], strict=True):
                if len(set(ids[lo:hi])) > self._table.cap:
                    raise InvalidInput(f"more than max_actions={self._table.cap} distinct actions in one event")
            raise _RowByRow  # checked whole: each row is valid on its own
        ticks = np.repeat(np.arange(base + 1, base + n + 1, dtype=np.int64), sizes)
        slots = self._table.lookup(ids, ticks, not self.strict_actions, self._reset_slot)
        self._grow()
        return indptr, slots, ids, AF

    # -- evictions: one row at a time ---------------------------------------------------------------
    #: ragged columns and the offsets column that delimits each row's entries (an oracle with
    #: sparse contexts adds its own)
    _ragged: ClassVar[dict[str, str]] = {"action_ids": "action_indptr"}

    def _by_row(self, batch: Batch, n: int, step) -> Any:
        """``step`` on each row of ``batch`` in turn: where a batch must evict, a later row's new
        action could otherwise reset a model an earlier row is scored or learned with; one row at
        a time, the result is the rows' in sequence, however they were batched."""
        ragged = dict(self._ragged)
        if "action_indptr" in batch and "action_features" in batch:
            ragged["action_features"] = "action_indptr"
        outs = []
        for j in range(n):
            row: dict[str, Any] = {}
            for k, v in batch.items():
                if k in ragged:
                    ptr = batch[ragged[k]]
                    row[k] = v[ptr[j]:ptr[j + 1]]
                elif k in ragged.values():
                    row[k] = np.array([0, v[j + 1] - v[j]], dtype=np.int64)
                else:
                    row[k] = v[j:j + 1]
            outs.append(step(row))
        if outs[0] is None:
            return None
        merged = {k: np.concatenate([o[k] for o in outs]) for k in outs[0] if k != "indptr"}
        merged["indptr"] = np.concatenate([[0], np.cumsum([o["indptr"][-1] for o in outs])]).astype(np.int64)
        return merged

    # -- the two operations -----------------------------------------------------------------------
    def _process(self, batch: Batch) -> dict[str, np.ndarray]:
        """Decides for a batch of events (columns :attr:`inputs`, outputs :attr:`outputs`)."""
        ctx, keys = self._context(batch)
        n = keys.shape[0]
        # Every check runs before any state changes: a rejected batch leaves the learner as it was.
        try:
            indptr, slots, ids, AF = self._action_sets(batch, n, self._tick)
        except _RowByRow:
            return self._by_row(batch, n, self._process)
        self._tick += n
        nnz = len(slots)
        scores = np.empty(nnz)
        widths = np.empty(nnz)
        self._score(ctx, keys, indptr, slots, AF, self.policy in ("linucb", "lints"), scores, widths)
        probs = np.empty(nnz)
        if self.policy == "squarecb":
            BK.igw_pmf(scores, indptr, self.gamma, probs)
        elif self.policy == "fastcb":
            BK.fastcb_pmf(scores, indptr, self.gamma, probs)
        elif self.policy == "epsilon-greedy":
            BK.epsgreedy_pmf(scores, indptr, self.epsilon, probs)
        elif self.policy == "linucb":
            BK.ucb_pmf(scores, widths, indptr, self.alpha, probs)
        else:
            BK.ts_pmf(scores, widths, indptr, self.ts_scale, self.seed, keys, self.ts_samples, probs)
        if self.min_prob > 0.0 or self.max_explore < 1.0:
            BK.apply_bounds(probs, scores, indptr, self.min_prob, self.max_explore)
        chosen = np.empty(n, dtype=np.int64)
        prob = np.empty(n)
        explored = np.empty(n, dtype=np.bool_)
        BK.sample_actions(probs, scores, indptr, self.seed, keys, chosen, prob, explored)
        names = self._table.ids
        flat = slots[indptr[:-1] + chosen]
        return {
            "indptr": indptr,
            "probs": probs,
            "scores": scores,
            "chosen": chosen,
            "chosen_action": np.array([names[s] for s in flat], dtype=object),
            "prob": prob,
            "explored": explored,
            "model_version": np.full(n, self.model_version, dtype=np.int64),
        }

    def _learn(self, batch: Batch) -> None:
        """Learns the chosen actions' rewards, rows in order (columns :attr:`feedback`). ``prob`` is
        accepted for the record: the ridge and neural oracles regress without importance
        weights. Vowpal Wabbit's SquareCB does weight: its cb_adf ``mtr`` reduction learns the
        chosen action with weight 1/p, as :class:`~learners.bandit.hashed.HashedBanditLearner` does."""
        ctx, keys = self._context(batch)
        n = keys.shape[0]
        actions = list(batch["action"])
        reward = np.asarray(batch["reward"], dtype=np.float64)
        if reward.shape != (n,) or len(actions) != n:
            raise InvalidInput("action and reward need one entry per row")
        if not np.isfinite(reward).all():
            raise InvalidInput("reward contains NaN or inf", rows=np.flatnonzero(~np.isfinite(reward)))
        if self.policy == "fastcb" and ((reward < 0) | (reward > 1)).any():
            raise InvalidInput("fastcb needs rewards in [0, 1]")
        AF = self._check_af(batch, n)
        omega = self._importance(batch, n)
        if n == 0:
            return
        if n > 1 and self._table.evicts(actions, not self.strict_actions):
            self._by_row(batch, n, self._learn)
            return
        ticks = np.arange(self._tick + 1, self._tick + n + 1, dtype=np.int64)
        slots = self._table.lookup(actions, ticks, not self.strict_actions, self._reset_slot)
        self._tick += n
        self._grow()
        self._fit(ctx, keys, slots, reward, omega, AF)
        self._t += n

    # -- the oracle's hooks (a subclass with another oracle overrides these) ------------------------
    def _context(self, batch: Batch) -> tuple[Any, np.ndarray]:
        """The batch's contexts in the oracle's form, checked, and the event keys."""
        return self._check_X(batch)

    def _score(self, ctx: Any, keys: np.ndarray, indptr: np.ndarray, slots: np.ndarray, AF: np.ndarray,
               want_width: bool, scores: np.ndarray, widths: np.ndarray) -> None:
        """Fills each available action's predicted reward (and confidence width when asked)."""
        X = ctx
        if self.oracle == "ridge":
            LK.disjoint_scores(X, indptr, slots, self._theta, self._A_inv, want_width, scores, widths)
        elif self.oracle == "ridge-shared":
            LK.shared_scores(X, indptr, AF, self._theta, self._A_inv, want_width, scores, widths)
        else:
            BK.mlp_scores(X, indptr, slots, self._W1, self._b1, self._W2, self._b2, self.kl_loss,
                          self.perturbation, self.seed, keys, scores)

    def _importance(self, batch: Batch, n: int) -> np.ndarray | None:
        """Importance weights of the feedback rows (None: this oracle regresses unweighted)."""
        return None

    def _fit(self, ctx: Any, keys: np.ndarray, slots: np.ndarray, reward: np.ndarray,
             omega: np.ndarray | None, AF: np.ndarray) -> None:
        """Learns each row's reward for its action slot, rows in order."""
        X = ctx
        if self.oracle == "ridge":
            if self.threads == 2 and len(slots) >= 64:
                self._ridge_two_threads(X, slots, reward)
            else:
                LK.ridge_update_rows(self._A_inv, self._theta, X, slots, reward)
        elif self.oracle == "ridge-shared":
            LK.shared_update_rows(self._A_inv, self._theta, X, AF, reward)
        else:
            BK.mlp_update(X, slots, reward, keys, self._W1, self._b1, self._W2, self._b2,
                          self.kl_loss, self.perturbation, self.lr, self.seed)

    def _ridge_two_threads(self, X: np.ndarray, slots: np.ndarray, reward: np.ndarray) -> None:
        """The actions' models split in two halves of about equal rows, learned at once."""
        order, starts = LK.slot_groups(slots)
        sizes = np.diff(starts)
        if len(sizes) < 2:
            LK.ridge_update_rows(self._A_inv, self._theta, X, slots, reward)
            return
        by_size = np.argsort(-sizes, kind="stable")
        halves: tuple[list[int], list[int]] = ([], [])
        load = [0, 0]
        for g in by_size.tolist():  # largest first, each to the lighter half
            h = 0 if load[0] <= load[1] else 1
            halves[h].append(g)
            load[h] += int(sizes[g])
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="eddy-bandit")
        args = (self._A_inv, self._theta, X, slots, reward, order, starts)
        job = self._pool.submit(LK.ridge_update_groups, *args, np.array(halves[1], dtype=np.int64))
        LK.ridge_update_groups(*args, np.array(halves[0], dtype=np.int64))
        job.result()

    def warm_up(self) -> None:
        """Compiles every kernel this configuration uses, on a clone (own state untouched)."""
        twin = self.clone()
        d, da = self.n_features, self.n_action_features
        keys = np.array([1, 2], dtype=np.uint64)
        X = np.zeros((2, d))
        batch = {"event_key": keys, "X": X, "action_indptr": np.array([0, 2, 4], dtype=np.int64),
                 "action_ids": np.array(["~w0", "~w1", "~w0", "~w1"], dtype=object),
                 "action_features": np.zeros((4, da))}
        out = twin.process(batch)
        twin.learn({"event_key": keys, "X": X, "action": out["chosen_action"], "reward": np.zeros(2),
                    "prob": out["prob"], "action_features": np.zeros((2, da))})
        if self.actions and self.oracle != "ridge-shared":
            twin.process({"event_key": keys, "X": X})

    # -- conformance ------------------------------------------------------------------------------
    @staticmethod
    def conformance_params(**preset: Any) -> dict[str, Any]:
        """Parameters matching :meth:`_conformance_stream` (4 features, 2 action features)."""
        params: dict[str, Any] = {"n_features": 4, "seed": 3, "max_actions": 8}
        if preset.get("oracle") == "ridge-shared":
            params["n_action_features"] = 2
        return params

    @classmethod
    def _conformance_stream(cls, seed: int, n_events: int = 64) -> Iterator[tuple[str, Batch]]:
        """Decide a batch, learn its rewards (from a hidden linear model), repeat; actions vary."""
        rng = np.random.default_rng(seed)
        d, da = 4, 2
        pool = [f"a{i}" for i in range(6)]
        truth = rng.normal(size=(len(pool), d))
        afeat = rng.normal(size=(len(pool), da))
        step = 0
        while step * 16 < n_events:
            m = 16
            X = rng.normal(size=(m, d))
            sizes = rng.integers(1, 5, size=m)
            sets = [sorted(rng.choice(len(pool), size=s, replace=False).tolist()) for s in sizes]
            flat = [j for s in sets for j in s]
            keys = _random_keys(rng, m)
            batch = {
                "event_key": keys,
                "X": X,
                "action_indptr": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                "action_ids": np.array([pool[j] for j in flat], dtype=object),
                "action_features": afeat[flat],
            }
            yield "process", batch
            # Rewards for an arbitrary (seeded) pick within each set: learning must not depend on
            # the outputs of process, so that the stream is the same for every learner.
            pick = [s[int(rng.integers(len(s)))] for s in sets]
            reward = 1.0 / (1.0 + np.exp(-np.einsum("ij,ij->i", X, truth[pick])))
            yield "learn", {
                "event_key": keys,
                "X": X,
                "action": np.array([pool[j] for j in pick], dtype=object),
                "action_features": afeat[pick],
                "reward": reward,
                "prob": np.full(m, 0.5),
            }
            step += 1

    @classmethod
    def _bad_batches(cls) -> Iterator[tuple[str, Batch]]:
        ok = next(iter(cls._conformance_stream(0)))[1]
        yield "process", {**ok, "X": np.where(np.arange(4) == 1, np.nan, ok["X"])}
        yield "process", {**ok, "X": ok["X"][:, :3]}
        yield "process", {k: v for k, v in ok.items() if k != "event_key"}
        yield "process", {**ok, "action_indptr": ok["action_indptr"] * 0}
        # One event offering more action ids than max_actions (8 in the conformance parameters):
        # the table must not keep the ones it had room for.
        many = np.array([f"new{j}" for j in range(9)], dtype=object)
        yield "process", {"event_key": ok["event_key"][:1], "X": ok["X"][:1],
                          "action_indptr": np.array([0, 9], dtype=np.int64), "action_ids": many,
                          "action_features": np.zeros((9, 2))}
        _, fb = list(cls._conformance_stream(0))[1]
        yield "learn", {**fb, "reward": np.full(len(fb["reward"]), np.inf)}
        yield "learn", {k: v for k, v in fb.items() if k != "reward"}
        yield "learn", {"event_key": np.arange(1, 10, dtype=np.uint64), "X": np.ones((9, 4)), "action": many[:8],
                        "reward": np.full(9, 0.5), "prob": np.full(9, 0.5), "action_features": np.zeros((9, 2))}


def _random_keys(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64)


