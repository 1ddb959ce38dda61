"""``eddy replay --sequence``: a sequence of linear systems through the ω policies, iterations per
policy against the best fixed ω in hindsight and the per-instance best, and a PNG plot.

The file holds JSON lines. An optional first line sets the replay: ``{"omegas": [...],
"context_range": [lo, hi], "method": "sor" | "ssor-pcg", "tol": 1e-8, "maxiter": 10000}``
(defaults: the authors' 20 ω values in [1, 1.95], the contexts' own range, SOR, 1e-8, 10,000). Each
further line is one system of the sequence, either

* measured already: ``{"context": 0.3, "iterations": [682, 611, ...]}`` (one count per ω), or
* to solve here: ``{"context": 0.3, "indptr": [...], "indices": [...], "data": [...], "b": [...],
  "x0": [...]}`` (CSR arrays inline; ``x0`` optional), or ``{"context": 0.3, "npz": "step-17.npz"}``:
  a NumPy ``.npz`` holding ``indptr``, ``indices``, ``data``, ``shape`` (what
  ``scipy.sparse.save_npz`` writes for a CSR matrix) and ``b`` (and optionally ``x0``), at a path
  relative to the sequence file's folder; a path that leaves that folder is refused.

``context`` is optional (the contextual policies then see 0 everywhere). Each system to solve is
solved at every ω of the grid (its iteration counts are the table a policy is replayed over; see
:mod:`learners.sor.evaluate`).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from .config import ConfigError


def _system(obj: dict[str, Any], base: str, line: int) -> tuple[Any, np.ndarray | None]:
    from learners.sor.systems import SystemRejected, check_system, load_npz

    try:
        if "npz" in obj:
            path = os.path.realpath(os.path.join(base, str(obj["npz"])))
            if os.path.commonpath([path, base]) != base:
                raise ConfigError(f"line {line}: {obj['npz']!r} lies outside the sequence file's folder")
            return load_npz(path)
        arrays = {k: np.asarray(obj[k]) for k in ("indptr", "indices", "data", "b") if k in obj}
        missing = [k for k in ("indptr", "indices", "data", "b") if k not in arrays]
        if missing:
            raise ConfigError(f"line {line}: a system needs {missing}")
        s = check_system(arrays["indptr"], arrays["indices"], arrays["data"], arrays["b"])
        return s, (np.asarray(obj["x0"], dtype=np.float64) if "x0" in obj else None)
    except ConfigError:
        raise
    except SystemRejected as e:
        raise ConfigError(f"line {line}: {e}") from None
    except Exception as e:  # a bad x0, a NUL in a path
        raise ConfigError(f"line {line}: {type(e).__name__}: {e}") from None


def _settings(obj: dict[str, Any], line: int) -> dict[str, Any]:
    """The settings line, checked."""
    from learners.sor.systems import METHODS

    om = obj.get("omegas")
    if om is not None and not (isinstance(om, list) and om and all(
            isinstance(w, int | float) and not isinstance(w, bool) and 0 < w < 2 for w in om)):
        raise ConfigError(f"line {line}: 'omegas' must be a list of numbers in (0, 2)")
    cr = obj.get("context_range")
    if cr is not None and not (isinstance(cr, list) and len(cr) == 2 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in cr) and cr[0] < cr[1]):
        raise ConfigError(f"line {line}: 'context_range' must be [lo, hi] with lo < hi")
    if obj.get("method", "sor") not in METHODS:
        raise ConfigError(f"line {line}: 'method' must be one of {', '.join(METHODS)}")
    tol = obj.get("tol", 1e-8)
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not 1e-15 <= tol < 1:
        raise ConfigError(f"line {line}: 'tol' must lie in [1e-15, 1)")
    mi = obj.get("maxiter", 1)
    if isinstance(mi, bool) or not isinstance(mi, int) or mi < 1:
        raise ConfigError(f"line {line}: 'maxiter' must be an integer >= 1")
    return obj


def read_sequence(path: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(settings, iterations n×k, contexts n) of a sequence file."""
    from learners.sor import AUTHORS_GRID
    from learners.sor.systems import SystemRejected, solve

    base = os.path.dirname(os.path.realpath(path))
    settings: dict[str, Any] = {"omegas": list(AUTHORS_GRID), "context_range": None, "method": "sor",
                                "tol": 1e-8, "maxiter": 10_000}
    rows: list[list[float]] = []
    contexts: list[float] = []
    with open(path) as f:
        for n, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise ConfigError(f"line {n}: not JSON: {e}") from None
            if not isinstance(obj, dict):
                raise ConfigError(f"line {n}: a JSON object per line")
            if not rows and set(obj) <= set(settings):  # the settings line
                settings.update(_settings(obj, n))
                continue
            c = obj.get("context", 0.0)
            if isinstance(c, bool) or not isinstance(c, int | float):
                raise ConfigError(f"line {n}: 'context' must be a number")
            k = len(settings["omegas"])
            if "iterations" in obj:
                its = obj["iterations"]
                if not isinstance(its, list) or len(its) != k or not all(
                        isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < math.inf for v in its):
                    raise ConfigError(f"line {n}: 'iterations' must be {k} counts >= 0 (one per ω)")
                rows.append([float(v) for v in its])
            else:
                s, x0 = _system(obj, base, n)
                try:
                    rows.append([float(solve(s, settings["method"], float(w), settings["tol"], settings["maxiter"],
                                             x0).iterations) for w in settings["omegas"]])
                except SystemRejected as e:
                    raise ConfigError(f"line {n}: {e}") from None
            contexts.append(float(c))
    if not rows:
        raise ConfigError(f"{path}: no systems")
    return settings, np.array(rows), np.array(contexts)


def replay_sequence(path: str, seeds: int = 3, warmup: float = 0.2) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Every policy over the sequence (learning ones: the median of ``seeds`` seeds); the rows and
    each policy's iterations per system."""
    from learners.sor import evaluate

    settings, its, ctx = read_sequence(path)
    omegas = settings["omegas"]
    rng = settings["context_range"]
    if rng is None:
        lo, hi = float(ctx.min()), float(ctx.max())
        rng = (lo, hi if hi > lo else lo + 1.0)
    arms: dict[str, np.ndarray] = {}
    after = slice(int(warmup * len(its)), None)
    for policy in evaluate.POLICIES:
        if policy.startswith("fixed-") and not np.isclose(omegas, float(policy[6:])).any():
            continue
        runs = [evaluate.replay(policy, its, ctx, omegas, rng, seed)[0]
                for seed in range(1 if policy.startswith("fixed-") else seeds)]
        runs.sort(key=lambda a: its[np.arange(len(its)), a][after].mean())
        arms[policy] = runs[len(runs) // 2]
    arms["best-fixed"] = np.full(len(its), int(its[after].mean(axis=0).argmin()))
    arms["instance-best"] = its.argmin(axis=1)
    rows = evaluate.summary(its, arms, warmup)
    for r in rows:
        r["best_fixed_omega"] = float(omegas[r.pop("best_fixed_arm")])
        r["systems"] = len(its)
    paid = {name: its[np.arange(len(its)), a] for name, a in arms.items()}
    return rows, paid


def cmd(args) -> int:
    rows, paid = replay_sequence(args.sequence)
    print(f"{'policy':<16} {'mean its':>10} {'best fixed':>11} {'per-instance':>13} {'gap closed':>11}")
    for r in rows:
        print(f"{r['policy']:<16} {r['mean_iterations']:>10.1f} {r['best_fixed_iterations']:>11.1f} "
              f"{r['instance_best_iterations']:>13.1f} {r['gap_closed']:>11.0%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, p in paid.items():
            ax.plot(np.arange(1, len(p) + 1), np.cumsum(p), label=name)
        ax.set_xlabel("system")
        ax.set_ylabel("cumulative iterations")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    return 0
