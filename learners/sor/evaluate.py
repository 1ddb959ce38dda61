"""Replays of the ω policies over a sequence whose iteration counts are known for every ω of the grid.

A table ``iterations[t, a]`` (system t solved at the grid's ω number a) is what a solver would have
reported for any choice, so a policy replayed over it, one system at a time (decide, then learn the
count of the ω it chose), sees exactly what it would have seen live. :func:`replay` gives the arms
a policy chooses; :func:`summary` the mean iterations of each policy beside the best fixed ω in
hindsight and the per-instance best of the same grid, over the systems after a warm-up.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from .learner import AUTHORS_GRID, FixedOmega, RelaxationTuner

POLICIES = ("chebcb", "tsallis-inf-cb", "tsallis-inf", "fixed-1.0")


def tuner(policy: str, omegas: Sequence[float] = AUTHORS_GRID, context_range: Sequence[float] = (0.0, 1.0),
          seed: int = 0) -> RelaxationTuner:
    """A learner for a policy name of :data:`POLICIES` (``fixed-<ω>`` for any fixed ω)."""
    if policy.startswith("fixed-"):
        return FixedOmega(omega=float(policy[6:]), seed=seed)
    return RelaxationTuner(policy=policy, omegas=omegas, context_range=context_range, seed=seed)


def replay(policy: str, iterations: np.ndarray, contexts: np.ndarray, omegas: Sequence[float] = AUTHORS_GRID,
           context_range: Sequence[float] | None = None, seed: int = 0) -> tuple[np.ndarray, float]:
    """The arm (index into ``omegas``) the policy chooses for each system, one at a time, and its
    mean seconds per decision. A fixed ω off the grid has no table column: it is refused."""
    its = np.asarray(iterations, dtype=np.float64)
    ctx = np.asarray(contexts, dtype=np.float64)
    n, k = its.shape
    if k != len(omegas) or ctx.shape != (n,):
        raise ValueError(f"iterations must be n×{len(omegas)} and contexts n long, got {its.shape} and {ctx.shape}")
    lo, hi = (float(ctx.min()), float(ctx.max())) if context_range is None else context_range
    if hi <= lo:
        hi = lo + 1.0
    t = tuner(policy, omegas, (lo, hi), seed)
    column = 0
    if policy.startswith("fixed-"):
        on = np.flatnonzero(np.isclose(np.asarray(omegas), t.omega))
        if not len(on):
            raise ValueError(f"{policy}: ω = {t.omega} is not on the grid {list(omegas)}")
        column = int(on[0])
    t.warm_up()
    arms = np.empty(n, dtype=np.int64)
    keys = np.arange(n, dtype=np.uint64)
    spent = 0.0
    for i in range(n):
        c = ctx[i:i + 1]
        t0 = time.perf_counter()
        out = t.process({"event_key": keys[i:i + 1], "context": c})
        spent += time.perf_counter() - t0
        arms[i] = column if policy.startswith("fixed-") else int(out["arm"][0])
        t.learn({"arm": out["arm"], "prob": out["prob"], "cost": its[i, arms[i]:arms[i] + 1], "context": c})
    return arms, spent / max(1, n)


def summary(iterations: np.ndarray, arms: Mapping[str, np.ndarray], warmup: float = 0.2) -> list[dict]:
    """Per policy, over the systems after the first ``warmup`` fraction: its mean iterations, the
    best fixed ω's (in hindsight, over the same systems), the per-instance best's, and the share of
    the gap between the two that the policy closes."""
    its = np.asarray(iterations, dtype=np.float64)
    after = slice(int(warmup * len(its)), None)
    fixed = its[after].mean(axis=0)
    best_fixed, instance_best = float(fixed.min()), float(its[after].min(axis=1).mean())
    rows = []
    for name, a in arms.items():
        m = float(its[np.arange(len(its)), a][after].mean())
        gap = (best_fixed - m) / (best_fixed - instance_best) if best_fixed > instance_best else float("nan")
        rows.append({"policy": name, "mean_iterations": m, "best_fixed_iterations": best_fixed,
                     "best_fixed_arm": int(fixed.argmin()), "instance_best_iterations": instance_best,
                     "gap_closed": gap})
    return rows
