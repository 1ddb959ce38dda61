"""Choosing the SOR relaxation parameter ω of each linear system from iteration counts alone."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..base import Batch, Column, Decider, InvalidInput, checked_state
from . import _kernels as K

POLICIES = ("tsallis-inf", "tsallis-inf-cb", "chebcb", "fixed")
CONTEXTUAL = ("tsallis-inf-cb", "chebcb")
MAX_COST = 1e12  # iterations; sums over 1e6 solves stay far from overflow
AUTHORS_GRID = tuple(float(w) for w in np.round(np.linspace(1.0, 1.95, 20), 10))


class RelaxationTuner(Decider):
    """A bandit over a grid of relaxation parameters ω, fed the cost (iteration count) of each solve.

    After "Learning to Relax: Setting Solver Parameters Across a Sequence of Linear System
    Instances" (Khodak, Chow, Balcan, Talwalkar; ICLR 2024). The paper's full text was not
    reachable here: the policies are **reconstructed from the authors' public MATLAB code**
    (``learners/TsallisINF.m``, ``TsallisINFCB.m``, ``ChebCB.m``; notes in
    ``shared/research/sor_groupwise.md``), with the departures listed below, and the paper's claims
    are checked empirically in ``tests/test_sor.py`` (Tsallis-INF's regret against the best fixed
    ω grows sublinearly; ChebCB approaches the per-instance best) and ``benchmarks/sor.py``.

    Policies
    --------
    ``tsallis-inf``
        1/2-Tsallis-INF (Zimmert & Seldin) over the grid, η_t = 2/√t, importance-weighted losses
        ``(cost - 1) / p`` normalised by the running mean cost minus one, as in the authors' code.
        Their normaliser is 20 Newton steps from x = -1; here Newton's method runs inside a bracket
        that provably holds the root (the same distribution where theirs converges).
    ``tsallis-inf-cb``
        One independent Tsallis-INF per bin of the scalar context over ``context_range``.
    ``chebcb``
        Per arm, least squares on Chebyshev features T_0..T_{degree-1} of the context mapped to
        [-1, 1]; inverse-gap weighting (SquareCB style) over the predictions:
        ``p_i = 1 / (K + γ_t (ŷ_i - ŷ*))``, the rest on the arm with the lowest prediction.
        Departures from the authors' code, each measured in ``benchmarks/sor.py``: the fits are
        **incremental** (a ridge of penalty ``lam`` kept as an inverse Gram matrix per arm,
        Sherman–Morrison, O(m²) per learned row, where the authors refit on the whole history
        every round) and unconstrained (their box-constrained fallback is left out); ``degree`` is 8
        where the authors use 6: on the Poisson workloads each ω's cost curve over the context has a
        kink at the context whose optimal ω it is, which 8 terms follow better (poisson-50x50, 2,000
        systems: 86% of the best-fixed → per-instance gap closed with 6 terms, 90% with 8; on a
        smooth synthetic family 8 terms cost a little in the first few hundred rounds). With
        ``target="log"`` the fits regress log(1 + cost) instead (the weights then act on relative
        gaps): 93% on the same table with 8 terms, but markedly slower to start on short sequences
        (5% of the gap after 400 synthetic rounds, against 46% on the cost), so not the default.
        γ_t follows their schedule's shape, ``2 t √(K / (R_t / t + 2 α²))``, growing
        about linearly in t, with R_t the cumulative squared prediction error of the played arms
        (in the target's units).
    ``fixed``
        Always ``omega`` (1: Gauss–Seidel); a baseline that learns only its statistics.

    A :class:`~learners.base.Decider`: ``process`` draws an arm per event (keyed by (seed, event
    key), so a replay draws the same), ``learn`` takes the played arm, its logged probability,
    the context and the cost. Costs are iteration counts (a solve that did not converge costs
    the iteration cap); any non-negative cost works.

    Parameters
    ----------
    policy
        One of ``tsallis-inf``, ``tsallis-inf-cb``, ``chebcb``, ``fixed``.
    omegas
        The grid of ω values (each in (0, 2)); the authors' 20 values in [1, 1.95] by default.
    omega
        ``fixed``: the ω used (the grid is then that one value).
    context_range
        ``(lo, hi)`` of the scalar context (the contextual policies; a context outside is refused).
    bins
        ``tsallis-inf-cb``: bins of the context range.
    degree
        ``chebcb``: Chebyshev terms m (the authors use 6).
    target
        ``chebcb``: ``cost`` (regress the cost; gaps divided by the mean cost so far) or ``log``
        (regress log(1 + cost)).
    lam
        ``chebcb``: ridge penalty of every arm's fit.
    alpha
        ``chebcb``: the exploration constant α of γ_t (larger: more exploration).
    seed
        Seed of the draws.

    Examples
    --------
    >>> import numpy as np
    >>> t = RelaxationTuner(policy="tsallis-inf", seed=1)
    >>> out = t.process({"event_key": np.arange(3, dtype=np.uint64)})
    >>> out["omega"].shape, bool(np.all((out["omega"] >= 1.0) & (out["omega"] <= 1.95)))
    ((3,), True)
    >>> t.learn({"arm": out["arm"], "prob": out["prob"], "cost": np.array([120.0, 80.0, 95.0])})
    >>> t.learned_events
    3
    """

    family = "sor"
    _stream_arms = len(AUTHORS_GRID)  # arms of the conformance stream's feedback
    inputs = (
        Column("event_key", "uint64", "n", "keys of the draws (a function of the event id)"),
        Column("context", "float64", "n", "the scalar context, inside context_range (contextual policies only)",
               required=False),
    )
    outputs = (
        Column("arm", "int64", "n", "index of the chosen ω in the grid"),
        Column("omega", "float64", "n", "the chosen ω"),
        Column("prob", "float64", "n", "the probability the arm was drawn with"),
        Column("greedy", "bool", "n", "the arm the policy prefers now was drawn (not an exploration)"),
    )
    feedback = (
        Column("arm", "int64", "n", "the arm played"),
        Column("prob", "float64", "n", "its logged probability"),
        Column("cost", "float64", "n", "the solve's cost (iterations; the cap when it did not converge)"),
        Column("context", "float64", "n", "the event's context (contextual policies only)", required=False),
    )

    def __init__(self, policy: str = "tsallis-inf", omegas: Sequence[float] = AUTHORS_GRID, omega: float = 1.0,
                 context_range: Sequence[float] = (0.0, 1.0), bins: int = 5, degree: int = 8, target: str = "cost",
                 lam: float = 1e-3, alpha: float = 1.0, seed: int = 0):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.policy = policy
        self.omegas = tuple(float(w) for w in omegas)
        self.omega = float(omega)
        self.context_range = tuple(float(c) for c in context_range)
        self.bins = int(bins)
        self.degree = int(degree)
        if target not in ("log", "cost"):
            raise ValueError(f"target must be 'log' or 'cost', got {target!r}")
        self.target = target
        self.lam = float(lam)
        self.alpha = float(alpha)
        self.seed = int(seed)
        grid = (self.omega,) if policy == "fixed" else self.omegas
        if not grid or not all(0.0 < w < 2.0 for w in grid):
            raise ValueError(f"every ω must lie in (0, 2), got {grid}")
        if len(self.context_range) != 2 or not (np.isfinite(self.context_range).all()
                                                and self.context_range[0] < self.context_range[1]):
            raise ValueError(f"context_range must be (lo, hi) with lo < hi, got {self.context_range}")
        if self.bins < 1 or self.degree < 1 or self.lam <= 0 or self.alpha <= 0:
            raise ValueError("bins and degree must be >= 1, lam and alpha > 0")
        self._grid = np.array(grid, dtype=np.float64)
        k = len(grid)
        nb = self.bins if policy == "tsallis-inf-cb" else 1
        m = self.degree
        # Tsallis-INF (per bin): importance-weighted losses, cost sums, rounds, scales.
        self._loss = np.zeros((nb, k))
        self._total = np.zeros(nb)
        self._rounds = np.zeros(nb)
        self._scale = np.ones(nb)
        # ChebCB: per arm inverse Gram matrix, Σ cost·f, θ; rows per arm; [Σ cost, rows, R].
        self._P = np.tile(np.eye(m) / self.lam, (k, 1, 1))
        self._b = np.zeros((k, m))
        self._theta = np.zeros((k, m))
        self._fits = np.zeros(k, dtype=np.int64)
        self._stats = np.zeros(3)
        # Every policy: plays and cost sums per arm.
        self._plays = np.zeros(k, dtype=np.int64)
        self._cost = np.zeros(k)

    # -- deciding ---------------------------------------------------------------------------------
    @property
    def contextual(self) -> bool:
        return self.policy in CONTEXTUAL

    @property
    def grid(self) -> np.ndarray:
        """The ω values the arms stand for."""
        return self._grid.copy()

    def _contexts(self, batch: Batch, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The batch's contexts (zeros for a policy without) and their bins."""
        bins = np.zeros(n, dtype=np.int64)
        if not self.contextual:
            return np.zeros(n), bins
        if "context" not in batch:
            raise InvalidInput(f"missing column 'context' (float64, n): policy {self.policy!r} needs it")
        c = batch["context"]
        if type(c) is not np.ndarray or c.dtype != np.float64 or c.ndim != 1:
            c = np.asarray(c, dtype=np.float64).reshape(-1)
        if c.shape != (n,):
            raise InvalidInput(f"'context' has {c.shape[0]} rows, expected {n}")
        lo, hi = self.context_range
        bad = K.context_bins(c, lo, hi, self._loss.shape[0], bins)
        if bad >= 0:
            raise InvalidInput(f"context {float(c[bad])!r} is not a finite number in context_range [{lo}, {hi}]",
                               np.array([bad]))
        return c, bins

    def gamma(self) -> float:
        """ChebCB's γ_t now (t: rows learned + 1)."""
        t = self._stats[1] + 1.0
        return float(2.0 * t * np.sqrt(len(self._grid) / (self._stats[2] / t + 2.0 * self.alpha ** 2)))

    def _process(self, batch: Batch) -> dict[str, np.ndarray]:
        keys = batch["event_key"]
        if type(keys) is not np.ndarray or keys.dtype != np.uint64 or keys.ndim != 1:
            keys = np.asarray(keys, dtype=np.uint64).reshape(-1)
        n = len(keys)
        c, bins = self._contexts(batch, n)
        arm = np.zeros(n, dtype=np.int64)
        prob = np.ones(n)
        greedy = np.ones(n, dtype=np.bool_)
        if self.policy in ("tsallis-inf", "tsallis-inf-cb"):
            K.tsallis_decide(self._loss, self._scale, self._rounds, bins, keys, self.seed, arm, prob, greedy)
        elif self.policy == "chebcb":
            lo, hi = self.context_range
            scale = 1.0 if self.target == "log" or not self._stats[1] else max(1.0, self._stats[0] / self._stats[1])
            K.chebcb_decide(self._theta, c, lo, hi, self.gamma(), scale, keys, self.seed, arm, prob, greedy)
        if not np.isfinite(prob).all():
            raise InvalidInput("the learned state gives no valid distribution (not finite)")
        return {"arm": arm, "omega": self._grid[arm], "prob": prob, "greedy": greedy}

    # -- learning ---------------------------------------------------------------------------------
    def _learn(self, batch: Batch) -> None:
        arm = np.asarray(batch["arm"]).reshape(-1)
        n = len(arm)
        if arm.dtype.kind not in "iu" or (n and (arm.min() < 0 or arm.max() >= len(self._grid))):
            raise InvalidInput(f"'arm' must hold arm indices in [0, {len(self._grid)})")
        arm = arm.astype(np.int64)
        prob = np.asarray(batch["prob"], dtype=np.float64).reshape(-1)
        cost = np.asarray(batch["cost"], dtype=np.float64).reshape(-1)
        if prob.shape != (n,) or cost.shape != (n,):
            raise InvalidInput("'arm', 'prob' and 'cost' must have the same number of rows")
        bad = np.flatnonzero(~((prob > 0) & (prob <= 1)))
        if len(bad):
            raise InvalidInput(f"'prob' must lie in (0, 1], got {prob[bad[0]]!r}", bad)
        bad = np.flatnonzero(~(np.isfinite(cost) & (cost >= 0) & (cost <= MAX_COST)))
        if len(bad):
            raise InvalidInput(f"'cost' must be a number in [0, {MAX_COST:g}], got {cost[bad[0]]!r}", bad)
        c, bins = self._contexts(batch, n)
        if self.policy in ("tsallis-inf", "tsallis-inf-cb"):
            K.tsallis_learn(self._loss, self._total, self._rounds, self._scale, bins, arm, prob, cost)
        elif self.policy == "chebcb":
            lo, hi = self.context_range
            log = self.target == "log"
            K.ridge_learn(self._P, self._b, self._theta, self._fits, self._stats, c, lo, hi, arm,
                          np.log1p(cost) if log else cost, not log)
        np.add.at(self._plays, arm, 1)
        np.add.at(self._cost, arm, cost)

    @property
    def learned_events(self) -> int:
        return int(self._plays.sum())

    # -- state ------------------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        return {"loss": self._loss, "total": self._total, "rounds": self._rounds, "scale": self._scale,
                "P": self._P, "b": self._b, "theta": self._theta, "fits": self._fits, "stats": self._stats,
                "plays": self._plays, "cost": self._cost}

    def snapshot(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._arrays().items()}

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        new = checked_state(self._arrays(), state, "another policy, grid, bins or degree?")
        for k, v in new.items():
            setattr(self, f"_{k}", v)

    # -- reports ----------------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        n = self.learned_events
        out = {"learned_events": float(n), "arms": float(len(self._grid))}
        if n:
            out["mean_cost"] = float(self._cost.sum()) / n
        if self.policy == "chebcb":
            out["gamma"] = self.gamma()
        return out

    def report(self) -> dict[str, Any]:
        n = np.maximum(self._plays, 1)
        return {"policy": self.policy, "metrics": self.metrics(),
                "arms": [{"omega": float(w), "plays": int(p), "mean_cost": float(c / k) if p else None}
                         for w, p, c, k in zip(self._grid, self._plays, self._cost, n, strict=True)]}

    def warm_up(self) -> None:
        """Compiles the kernels on a tiny batch inside ``context_range`` (then resets the state)."""
        state = self.snapshot()
        c = np.full(4, (self.context_range[0] + self.context_range[1]) / 2)
        out = self.process({"event_key": np.arange(4, dtype=np.uint64), "context": c})
        self.learn({"arm": out["arm"], "prob": out["prob"], "cost": np.full(4, 10.0), "context": c})
        self.restore(state)

    # -- conformance ------------------------------------------------------------------------------
    @classmethod
    def conformance_params(cls, **preset: Any) -> dict[str, Any]:
        return {"seed": 3, "context_range": (0.0, 1.0), **preset}

    @classmethod
    def _conformance_stream(cls, seed: int, n_events: int = 64) -> Iterator[tuple[str, Batch]]:
        rng = np.random.default_rng(seed)
        grid = np.array(AUTHORS_GRID)
        for start in range(0, n_events, 16):
            m = min(16, n_events - start)
            c = rng.uniform(0.0, 1.0, m)
            keys = np.arange(start, start + m, dtype=np.uint64) + np.uint64(1000 * seed)
            yield "process", {"event_key": keys, "context": c}
            arm = rng.integers(0, len(grid), m)
            best = 1.2 + 0.6 * c  # a smooth per-instance optimum
            cost = 50.0 + 400.0 * (grid[arm] - best) ** 2 + rng.uniform(0, 5, m)
            if cls._stream_arms == 1:
                arm = np.zeros(m, dtype=np.int64)
            yield "learn", {"arm": arm, "prob": np.full(m, 1.0 / cls._stream_arms), "cost": cost, "context": c}

    @classmethod
    def _bad_batches(cls) -> Iterator[tuple[str, Batch]]:
        half = np.array([0.5])
        yield "learn", {"arm": np.array([99]), "prob": half, "cost": np.array([3.0]), "context": half}
        yield "learn", {"arm": np.array([0]), "prob": np.array([0.0]), "cost": np.array([3.0]), "context": half}
        yield "learn", {"arm": np.array([0]), "prob": half, "cost": np.array([np.nan]), "context": half}
        yield "learn", {"arm": np.array([0]), "prob": half, "cost": np.array([-1.0]), "context": half}
        yield "learn", {"prob": np.array([0.5]), "cost": np.array([3.0])}


class FixedOmega(RelaxationTuner):
    """The fixed-ω baseline: every system gets ``omega`` (1: Gauss–Seidel); it learns only its
    statistics (plays, mean cost). :class:`RelaxationTuner` with ``policy="fixed"``.

    Parameters
    ----------
    omega
        The ω used, in (0, 2).
    seed
        Unused by the draws (there is one arm); kept so that every SOR learner takes it.

    >>> import numpy as np
    >>> FixedOmega(omega=1.5).process({"event_key": np.arange(2, dtype=np.uint64)})["omega"].tolist()
    [1.5, 1.5]
    """

    _stream_arms = 1

    def __init__(self, omega: float = 1.0, seed: int = 0):
        super().__init__(policy="fixed", omega=omega, seed=seed)

    def get_params(self) -> dict[str, Any]:
        return {"omega": self.omega, "seed": self.seed}
