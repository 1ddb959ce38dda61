"""SOR tuning: iterations per solve of the ω policies against the best fixed ω and the per-instance best.

Workloads (distinct systems, none resampled):

* ``poisson-50x50``, ``poisson-100x100`` (5,000 systems each): A_t = delsq(m) + s_t·I (the 5-point
  Laplacian, natural ordering) with s_t = 0.6·Beta(0.5, 1.5) (the paper's offset law without its
  negative part, which makes large grids indefinite), b_t ~ N(0, I), x0 = 0, solved by SOR to
  ||r|| <= 1e-8·||b|| (cap 10,000 iterations). Context: s_t, range [0, 0.6].
* ``heat-50x50``, ``heat-100x100`` (2,000 steps each): the 2D heat equation u_t = κ(t) Δu + f on
  the unit square (zero boundary), Crank–Nicolson, κ(t) = max(0.1 sin 2πt, -10 sin 2πt) (the
  authors' h2d.m), a Gaussian bump of forcing circling the centre, two periods of κ over the run;
  each step is solved by SSOR-preconditioned CG from the previous step's solution (warm start) to
  1e-8. Context: κ(t) at the step, range [0, 10]. The chain of previous solutions is computed once
  (CG to 1e-12) and every ω starts from it: every policy sees the same systems.

The issue's floors ask for at least 2,000 systems at 50×50 and 300 at 100×100; these sizes are
larger because learning over 20 arms takes rounds: Tsallis-INF paid 1.22x the best fixed ω over
systems 400-2,000 of poisson-50x50 and 1.25x over systems 400-2,000 of poisson-100x100, and with 300 systems at 100×100 no policy got near the best
fixed ω (ChebCB 1.42x on heat-100x100, 41% of the Poisson gap closed), as its warm-up alone is
60 systems for 20 arms.

For each system the iterations (and seconds) of the solve at every ω of the authors' 20-value grid
are measured first (two worker processes); a policy then chooses one ω per system in sequence and
learns the measured count, exactly what the solver would report (the solves are deterministic).
Over the systems after a warm-up of the first 20%: the policy's mean iterations, the best fixed ω's
(in hindsight, over those systems) and the per-instance best ω's of the same grid. Learning
policies run 5 seeds; their rows give the median. ``decision_us``: the policy's mean time per
decision (one request at a time, as the sidecar's ``/advise``). Baselines beside them:
``eddy.instance-golden`` (a golden-section search over ω in [1, 1.95] per system, 12 solves, as the
authors' instance-optimal baseline), ``eddy.young`` (Young's ω from the Jacobi radius, known in
closed form for both families: ρ_J = 4c·cos(π/(m+1)) / (1 + 4c)), eddy's own Numba CG, and what a
user would pick instead: scipy's CG, PyAMG's SOR at ω = 1 (a convergence loop around its compiled
sweep, checked with scipy's residual) and PyAMG's smoothed-aggregation solver (set-up included: each
system is new). Peers run on 20 systems spread evenly over those after the warm-up; eddy's rows on
all of them (``distinct_systems``: the systems of the sequence; ``evaluated_systems``: those after
the warm-up).

Usage: python benchmarks/sor.py [--workloads ...] [--seeds 5] [--quick]
Tables are cached under benchmarks/.cache/ (delete it to measure them again).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time

_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.environ.get("EDDY_BENCH_TREE") or os.path.dirname(_here), _here]

import numpy as np  # noqa: E402
from _common import versions, write_results  # noqa: E402

from learners.sor import AUTHORS_GRID, evaluate  # noqa: E402
from learners.sor.systems import System, check_system, golden_omega, poisson, solve  # noqa: E402

GRID = np.array(AUTHORS_GRID)
TOL, CAP, WARMUP = 1e-8, 10_000, 0.2
WORKLOADS = {"poisson-50x50": ("poisson", 50, 5000), "poisson-100x100": ("poisson", 100, 5000),
             "heat-50x50": ("heat", 50, 2000), "heat-100x100": ("heat", 100, 2000)}
POLICIES = ("chebcb", "tsallis-inf", "tsallis-inf-cb")
CACHE = os.path.join(_here, ".cache")
PEER_SAMPLE = 20


# -- the systems --------------------------------------------------------------------------------------
def poisson_system(m: int, i: int, seed: int) -> tuple[System, float]:
    rng = np.random.default_rng([seed, m, i])
    s = 0.6 * rng.beta(0.5, 1.5)
    return poisson(m, s, b=rng.normal(size=m * m)), float(s)


def kappa(t: float) -> float:
    return max(0.1 * math.sin(2 * math.pi * t), -10.0 * math.sin(2 * math.pi * t))


def heat_steps(m: int, n: int) -> dict[str, np.ndarray]:
    """The heat workload: per step its κ, right-hand side and warm start (the previous solution)."""
    h = 1.0 / (m + 1)
    dt = 2.0 / n  # two periods of κ over the run
    lap = poisson(m, 0.0)  # delsq: -h²Δ
    g = np.arange(1, m + 1) * h
    X, Y = np.meshgrid(g, g, indexing="ij")

    def force(t: float) -> np.ndarray:
        xc, yc = 0.5 + 0.25 * math.cos(2 * math.pi * t), 0.5 + 0.25 * math.sin(2 * math.pi * t)
        return (10.0 * np.exp(-((X - xc) ** 2 + (Y - yc) ** 2) / 0.01)).ravel()

    u = np.zeros(m * m)
    ks, bs, x0s = np.empty(n), np.empty((n, m * m)), np.empty((n, m * m))
    for step in range(n):
        t0, t1 = step * dt, (step + 1) * dt
        c0, c1 = dt * kappa(t0) / (2 * h * h), dt * kappa(t1) / (2 * h * h)
        # (I + c1·delsq) u1 = (I - c0·delsq) u0 + dt/2 (f0 + f1)
        Lu = _csr_matvec(lap, u)
        b = u - c0 * Lu + dt / 2 * (force(t0) + force(t1))
        A = heat_system(lap, c1, b)
        ks[step], bs[step], x0s[step] = kappa(t1), b, u
        u = solve(A, "cg", tol=1e-12, maxiter=CAP, x0=u).x
    return {"kappa": ks, "b": bs, "x0": x0s, "m": np.array(m), "dt": np.array(dt)}


def _csr_matvec(s: System, x: np.ndarray) -> np.ndarray:
    rows = np.repeat(np.arange(s.n), np.diff(s.indptr))
    return np.bincount(rows, weights=s.data * x[s.indices], minlength=s.n)


def heat_system(lap: System, c: float, b: np.ndarray) -> System:
    """I + c·delsq with right-hand side b."""
    diag = lap.indices == np.repeat(np.arange(lap.n), np.diff(lap.indptr))
    return check_system(lap.indptr, lap.indices, c * lap.data + diag, b)


# -- the tables (iterations and seconds at every ω) -----------------------------------------------------
_STATE: dict = {}


def _row(args: tuple) -> tuple[int, np.ndarray, np.ndarray, float]:
    kind, m, i, seed = args
    if kind == "poisson":
        s, c = poisson_system(m, i, seed)
        x0, method = None, "sor"
    else:
        s, x0, method = system_of(kind, m, i, seed, {})
        c = float(_STATE["heat"]["kappa"][i])
    its, secs = np.empty(len(GRID)), np.empty(len(GRID))
    for a, w in enumerate(GRID):
        r = solve(s, method, float(w), tol=TOL, maxiter=CAP, x0=x0)
        its[a], secs[a] = r.iterations, r.seconds
    return i, its, secs, c


def table(name: str, kind: str, m: int, n: int, seed: int, workers: int) -> dict[str, np.ndarray]:
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"sor-{name}-{n}-{seed}.npz")
    if os.path.exists(path):
        with np.load(path) as z:
            return dict(z)
    t0 = time.perf_counter()
    if kind == "heat":
        _STATE["heat"] = heat_steps(m, n)
        _STATE["lap"] = poisson(m, 0.0)
    solve(poisson(4, 0.1), "sor", 1.2)  # compiled before the workers fork
    solve(poisson(4, 0.1), "ssor-pcg", 1.2)
    its, secs, ctx = np.empty((n, len(GRID))), np.empty((n, len(GRID))), np.empty(n)
    start = 0
    if kind == "poisson":  # system i depends on (seed, m, i) alone: a shorter table's rows are this one's first
        shorter = [(k, f) for f in os.listdir(CACHE)
                   if (k := _cached_length(f, f"sor-{name}-", f"-{seed}.npz")) is not None and k < n]
        if shorter:
            start, f = max(shorter)
            with np.load(os.path.join(CACHE, f)) as z:
                its[:start], secs[:start], ctx[:start] = z["iterations"], z["seconds"], z["context"]
    with mp.get_context("fork").Pool(workers) as pool:
        for i, a, s, c in pool.imap_unordered(_row, [(kind, m, i, seed) for i in range(start, n)], chunksize=4):
            its[i], secs[i], ctx[i] = a, s, c
    out = {"iterations": its, "seconds": secs, "context": ctx}
    if kind == "heat":
        out.update({k: v for k, v in _STATE["heat"].items() if k in ("dt",)})
    np.savez(path, **out)
    print(f"  {name}: table of {n} systems x {len(GRID)} omegas in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def _cached_length(f: str, prefix: str, suffix: str) -> int | None:
    """The system count in a cached table's file name ``<prefix><n><suffix>``, or None."""
    mid = f[len(prefix):-len(suffix)] if f.startswith(prefix) and f.endswith(suffix) else ""
    return int(mid) if mid.isdigit() else None


def system_of(kind: str, m: int, i: int, seed: int, tab: dict) -> tuple[System, np.ndarray | None, str]:
    if kind == "poisson":
        return poisson_system(m, i, seed)[0], None, "sor"
    st = _STATE.get("heat")
    if st is None or int(st["m"]) != m or st["b"].shape[0] != len(tab.get("context", st["b"])):
        st = _STATE["heat"] = heat_steps(m, len(tab["context"]))  # (this workload's chain, not another's)
        _STATE["lap"] = poisson(m, 0.0)
    return heat_system(_STATE["lap"], st["dt"] * st["kappa"][i] / (2 / (m + 1) ** 2), st["b"][i]), st["x0"][i], \
        "ssor-pcg"


# -- the policies -----------------------------------------------------------------------------------------
def replay(policy: str, tab: dict, seed: int, lo: float, hi: float) -> tuple[np.ndarray, float]:
    """The arm chosen per system (one request at a time) and the µs per decision."""
    arms, seconds = evaluate.replay(policy, tab["iterations"], tab["context"], AUTHORS_GRID, (lo, hi), seed)
    return arms, seconds * 1e6


def measure_workload(name: str, seeds: int, workers: int, quick: bool) -> list[dict]:
    kind, m, n = WORKLOADS[name]
    if quick:
        m, n = max(8, m // 5), max(60, n // 10)
    seed = 2024
    tab = table(name + ("-quick" if quick else ""), kind, m, n, seed, workers)
    its, secs = tab["iterations"], tab["seconds"]
    lo, hi = (0.0, 0.6) if kind == "poisson" else (0.0, 10.0)
    after = np.arange(int(WARMUP * n), n)
    best_fixed_arm = int(np.argmin(its[after].mean(axis=0)))
    best_fixed = float(its[after, best_fixed_arm].mean())
    instance_best = float(its[after].min(axis=1).mean())
    base = {"workload": name, "distinct_systems": int(n), "evaluated_systems": int(len(after)),
            "best_fixed_iterations": best_fixed,
            "instance_best_iterations": instance_best, "best_fixed_omega": float(GRID[best_fixed_arm])}
    prefix = "eddy." if kind == "poisson" else "eddy.ssor-pcg."
    rows = []

    def chosen_row(system: str, arms: np.ndarray, decision_us: float | None, seeds_used: int, **extra) -> dict:
        sel = its[after, arms[after]]
        sec = secs[after, arms[after]]
        return {"system": system, **base, "mean_iterations": float(sel.mean()), "decision_us": decision_us,
                "seconds_per_iteration": float(sec.sum() / max(1.0, sel.sum())), "seconds_per_solve": float(sec.mean()),
                "seeds": seeds_used, **extra}

    for policy in POLICIES:
        runs = [(*replay(policy, tab, s, lo, hi), s) for s in range(seeds)]
        scored = sorted(runs, key=lambda r: its[after, r[0][after]].mean())
        arms, us, s = scored[len(scored) // 2]
        row = chosen_row(prefix + policy, arms, round(us, 2), seeds,
                         mean_iterations_runs=[float(its[after, r[0][after]].mean()) for r in runs], _arms=arms)
        if kind == "poisson":
            row["gap_closed"] = (best_fixed - row["mean_iterations"]) / (best_fixed - instance_best)
        rows.append(row)
        print(f"  {row['system']}: {row['mean_iterations']:.1f} iterations (best fixed {best_fixed:.1f}, "
              f"per-instance {instance_best:.1f}); {us:.1f} us/decision", flush=True)
    arms, us = replay("fixed-1.0", tab, 0, lo, hi)
    rows.append(chosen_row(prefix + "fixed-1.0", arms, round(us, 2), 1))
    rows.append(chosen_row(prefix + "best-fixed", np.full(n, best_fixed_arm), None, 1))
    rows.append(chosen_row(prefix + "instance-best", np.argmin(its, axis=1), None, 1))
    rows += baselines(name, kind, m, n, seed, tab, after, base, rows, workers)
    return rows


def young(kind: str, m: int, c: float, dt: float) -> float:
    """Young's ω from the closed-form Jacobi radius of either family (delsq + s·I; I + c·delsq)."""
    cosv = math.cos(math.pi / (m + 1))
    if kind == "poisson":
        rho = 4 * cosv / (4 + c)
    else:
        cc = dt * c / (2 / (m + 1) ** 2)
        rho = 4 * cc * cosv / (1 + 4 * cc)
    return 2 / (1 + math.sqrt(1 - rho * rho))


def _baseline(job: tuple) -> tuple:
    """One system's baselines: the golden-section ω, Young's ω and CG, (iterations, seconds) each,
    and the learned ω's solve run again right beside CG's (heat: the wall-time comparison)."""
    kind, m, i, seed, c, dt, learned_arm = job
    method = "sor" if kind == "poisson" else "ssor-pcg"
    s, x0, _ = system_of(kind, m, i, seed, {})
    w, _ = golden_omega(lambda w: solve(s, method, w, tol=TOL, maxiter=CAP, x0=x0).iterations, 1.0, 1.95, 12)
    r = solve(s, method, w, tol=TOL, maxiter=CAP, x0=x0)
    golden = (r.iterations, r.seconds)
    r = solve(s, method, young(kind, m, c, dt), tol=TOL, maxiter=CAP, x0=x0)
    yng = (r.iterations, r.seconds)
    r = solve(s, "cg", tol=TOL, maxiter=CAP, x0=x0)
    cg = (r.iterations, r.seconds)
    beside = None
    if learned_arm >= 0:
        r = solve(s, method, float(GRID[learned_arm]), tol=TOL, maxiter=CAP, x0=x0)
        beside = (r.iterations, r.seconds)
    return golden, yng, cg, beside


def baselines(name: str, kind: str, m: int, n: int, seed: int, tab: dict, after: np.ndarray, base: dict,
              rows_before: list[dict], workers: int) -> list[dict]:
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    method = "sor" if kind == "poisson" else "ssor-pcg"
    dt = float(tab.get("dt", 0.0))
    chosen = next((r for r in rows_before if r["system"].endswith(".chebcb")), None)
    learned = None if chosen is None or kind == "poisson" else chosen.pop("_arms")
    system_of(kind, m, int(after[0]), seed, tab)  # (the heat chain, before the workers fork)
    jobs = [(kind, m, int(i), seed, float(tab["context"][i]), dt, -1 if learned is None else int(learned[i]))
            for i in after]
    with mp.get_context("fork").Pool(workers) as pool:
        res = pool.map(_baseline, jobs, chunksize=4)
    golden = [r[0] for r in res]
    yng = [r[1] for r in res]
    cg = [r[2] for r in res]
    beside = [r[3] for r in res if r[3] is not None]
    rows = []
    for system, vals in (("eddy.instance-golden", golden), ("eddy.young", yng), ("eddy.cg", cg)):
        a = np.array(vals, dtype=np.float64)
        rows.append({"system": system, **base, "mean_iterations": float(a[:, 0].mean()), "decision_us": None,
                     "seconds_per_iteration": float(a[:, 1].sum() / max(1.0, a[:, 0].sum())),
                     "seconds_per_solve": float(a[:, 1].mean()), "seeds": 1,
                     "method": "cg" if system == "eddy.cg" else method})
    if beside:
        a = np.array(beside, dtype=np.float64)
        chosen["seconds_per_solve_table"] = chosen["seconds_per_solve"]
        chosen["seconds_per_solve"] = float(a[:, 1].mean())
        chosen["seconds_per_solve_from"] = "each learned solve run again beside eddy.cg's on the same system"
    for r in rows_before:
        r.pop("_arms", None)
    # Peers on a sample.
    sample = after[::max(1, len(after) // PEER_SAMPLE)][:PEER_SAMPLE]  # spread over the sequence
    peer: dict[str, list[tuple[float, float]]] = {"scipy.cg": [], "pyamg.sor": [], "pyamg.sa": []}
    paired: list[tuple[float, float]] = []
    try:
        import pyamg
        from pyamg.relaxation.relaxation import sor as pyamg_sor
    except ImportError:
        pyamg = None
    for i in sample:
        s, x0, _ = system_of(kind, m, int(i), seed, tab)
        A = sp.csr_matrix((s.data, s.indices, s.indptr), shape=(s.n, s.n))
        b = s.b
        x0v = np.zeros(s.n) if x0 is None else x0.copy()
        count = [0]
        t0 = time.perf_counter()
        spla.cg(A, b, x0=x0v.copy(), rtol=TOL, atol=0.0, maxiter=CAP,
                callback=lambda xk, count=count: count.__setitem__(0, count[0] + 1))
        peer["scipy.cg"].append((count[0], time.perf_counter() - t0))
        if pyamg is None:
            continue
        x = x0v.copy()
        bn = np.linalg.norm(b)
        t0 = time.perf_counter()
        it = 0
        while np.linalg.norm(b - A @ x) > TOL * bn and it < CAP:
            pyamg_sor(A, x, b, 1.0, iterations=1)
            it += 1
        peer["pyamg.sor"].append((it, time.perf_counter() - t0))
        r = solve(s, "sor", 1.0, tol=TOL, maxiter=CAP, x0=x0)  # eddy's SOR on the same system, right after
        paired.append((r.iterations, r.seconds))
        res: list[float] = []
        t0 = time.perf_counter()
        ml = pyamg.smoothed_aggregation_solver(A)
        ml.solve(b, x0=x0v.copy(), tol=TOL, residuals=res, maxiter=CAP)
        peer["pyamg.sa"].append((len(res) - 1, time.perf_counter() - t0))
    for system, vals in peer.items():
        if not vals:
            continue
        a = np.array(vals, dtype=np.float64)
        rows.append({"system": system, "workload": name, "distinct_systems": len(vals),
                     "mean_iterations": float(a[:, 0].mean()), "best_fixed_iterations": base["best_fixed_iterations"],
                     "instance_best_iterations": base["instance_best_iterations"], "decision_us": None,
                     "seconds_per_iteration": float(a[:, 1].sum() / max(1.0, a[:, 0].sum())),
                     "seconds_per_solve": float(a[:, 1].mean()), "seeds": 1,
                     **({"omega": 1.0} if system == "pyamg.sor" else {})})
    if paired:  # eddy's SOR at ω = 1 timed beside PyAMG's on the same systems: the floor's ratio
        a = np.array(paired, dtype=np.float64)
        fixed = next(r for r in rows_before if r["system"].endswith("fixed-1.0"))
        fixed["seconds_per_iteration_table"] = fixed["seconds_per_iteration"]
        fixed["seconds_per_iteration"] = float(a[:, 1].sum() / max(1.0, a[:, 0].sum()))
        fixed["seconds_per_iteration_from"] = f"SOR at omega=1 beside pyamg.sor on the same {len(paired)} systems"
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| workload | system | mean its | best fixed | per-instance best | gap closed | decision µs | s/iteration | s/solve |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        gap = (r["best_fixed_iterations"] - r["mean_iterations"]) / (r["best_fixed_iterations"] - r["instance_best_iterations"]) \
            if r["best_fixed_iterations"] > r["instance_best_iterations"] else float("nan")
        us = f"{r['decision_us']:.1f}" if r.get("decision_us") is not None else ""
        lines.append(f"| {r['workload']} | {r['system']} | {r['mean_iterations']:.1f} | {r['best_fixed_iterations']:.1f} | "
                     f"{r['instance_best_iterations']:.1f} | {gap:.0%} | {us} | {r['seconds_per_iteration']:.2e} | "
                     f"{r['seconds_per_solve']:.2e} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="smoke sizes (small grids, few systems; not written)")
    args = ap.parse_args()
    rows: list[dict] = []
    for name in args.workloads:
        print(name, flush=True)
        rows += measure_workload(name, args.seeds, args.workers, args.quick)
    print(markdown(rows))
    if not args.quick:
        path = os.path.join(_here, "results", "sor.json")
        if os.path.exists(path):  # the other workloads' rows of an earlier run are kept
            with open(path) as f:
                rows = [r for r in json.load(f)["rows"] if r["workload"] not in args.workloads] + rows
        print("wrote", write_results("sor", rows, versions("numpy", "numba", "scipy", "pyamg"),
                                     {"grid": GRID.tolist(), "tol": TOL, "cap": CAP, "warmup": WARMUP}))


if __name__ == "__main__":
    main()
