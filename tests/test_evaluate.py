"""``eddy evaluate`` against a known truth: simulated router logs of a contextual problem whose
expected rewards are known in closed form.

Contexts: a segment (6 values) and an amount (5 values), equally likely: 30 cells, so the value of
any fixed policy, V(π) = E_x Σ_a π(a|x) μ(x, a), is an exact finite sum. Rewards are Bernoulli
with mean μ(x, a). Logs are written by (a) a uniform logger and (b) a context-dependent softmax
logger, with the propensity of the chosen action recorded, as a payment router would.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import learners
from daemon import config
from daemon.evaluate import evaluate
from learners._hashing import FeatureHasher, event_keys

ACTIONS = ["a", "b", "c"]
SEGMENTS = 6
AMOUNTS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])


def mu(seg: np.ndarray, amt: np.ndarray) -> np.ndarray:
    """Expected reward of each action (columns a, b, c) in each context (rows)."""
    return np.stack([0.3 + 0.4 * amt, 0.7 - 0.4 * amt, 0.2 + 0.1 * seg], axis=-1)


def logger(seg: np.ndarray, amt: np.ndarray, kind: str) -> np.ndarray:
    if kind == "uniform":
        return np.full((len(seg), 3), 1 / 3)
    s = 1.5 * np.stack([amt, 1 - amt, seg / 5], axis=-1)  # favours the good action, never excludes one
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def greedy(ctx, actions):
    """Deterministic: a for large amounts, b otherwise (never c)."""
    best = "a" if ctx["amount"] >= 0.5 else "b"
    return [1.0 if x == best else 0.0 for x in actions]


def soft(ctx, actions):
    """Stochastic, by segment."""
    low = any(k in ctx for k in ("segment=s0", "segment=s1", "segment=s2"))
    return [0.6, 0.3, 0.1] if low else [0.1, 0.3, 0.6]


def truth(policy) -> float:
    seg, amt = np.meshgrid(np.arange(SEGMENTS), AMOUNTS, indexing="ij")
    seg, amt = seg.ravel(), amt.ravel()
    pi = np.array([policy({f"segment=s{s}": 1.0, "amount": float(a), "bias": 1.0}, ACTIONS)
                   for s, a in zip(seg, amt, strict=True)])
    return float((pi * mu(seg, amt)).sum(axis=1).mean())


def make_log(n: int, kind: str, seed: int, mu_fn=mu, propensity: str = "propensity") -> list[dict]:
    rng = np.random.default_rng(seed)
    seg = rng.integers(0, SEGMENTS, n)
    amt = AMOUNTS[rng.integers(0, len(AMOUNTS), n)]
    p = logger(seg, amt, kind)
    a = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1).clip(0, 2)
    r = (rng.random(n) < mu_fn(seg, amt)[np.arange(n), a]).astype(float)
    return [{"id": f"tx-{seed}-{i}", "features": {"segment": f"s{seg[i]}", "amount": float(amt[i]), "bias": 1.0},
             "action": ACTIONS[a[i]], propensity: float(p[i, a[i]]), "reward": float(r[i])} for i in range(n)]


def cfg(**over):
    pc = {"name": "routing", "learner": "squarecb", "input_topic": "t", "output_topic": "o", "n_features": 32,
          "learn_every_events": 64, "params": {"actions": ACTIONS}, **over}
    return config.load_dict({"pipelines": [pc]}, env=False)


def binomial_bounds(reps: int, p: float, tail: float) -> tuple[int, int]:
    """[lo, hi] with P(X < lo) ≤ tail and P(X > hi) ≤ tail for X ~ Binomial(reps, p)."""
    pmf = [math.comb(reps, k) * p**k * (1 - p) ** (reps - k) for k in range(reps + 1)]
    cdf = np.cumsum(pmf)
    lo = int(np.searchsorted(cdf, tail, side="right"))  # P(X ≤ lo − 1) ≤ tail
    hi = int(np.searchsorted(cdf, 1 - tail, side="left"))  # P(X > hi) ≤ tail
    return lo, hi


REPS = 200


@pytest.mark.parametrize("kind", ["uniform", "skewed"])
def test_intervals_cover_the_true_value_at_the_stated_rate(kind):
    """Over 200 seeded logs of 400 rows, the 95% intervals of IPS, SNIPS and DR contain the exact
    value of each target policy at a rate consistent with 95%.

    Tolerance: with exact 95% coverage the count of covering intervals is Binomial(200, 0.95), and
    [lo, hi] = [179, 198] holds it but with probability ≤ 0.1% on each side; over the 6 counts of
    one logger (2 policies × 3 estimators) a true 95% rate fails somewhere with probability ≤ 1.2%
    (the seeds are fixed, so the test is deterministic). The estimates' average is also within 4
    of its standard errors of the truth (unbiasedness)."""
    targets = {"greedy": greedy, "soft": soft}
    true = {name: truth(f) for name, f in targets.items()}
    assert true == pytest.approx({"greedy": 0.62, "soft": 0.52})
    config_ = cfg()
    covered: dict[tuple[str, str], int] = {}
    values: dict[tuple[str, str], list[float]] = {}
    for rep in range(REPS):
        rows = make_log(400, kind, seed=rep + (10_000 if kind == "skewed" else 0))
        report = evaluate(config_, rows, policies=targets, include_learners=False)
        pr = report["pipelines"]["routing"]
        assert pr["status"] == "ok" and pr["rows"]["evaluated"] == 400
        for name, q in pr["policies"].items():
            for est in ("ips", "snips", "dr"):
                lo, hi = q[est]["ci"]
                covered[name, est] = covered.get((name, est), 0) + (lo <= true[name] <= hi)
                values.setdefault((name, est), []).append(q[est]["value"])
    lo, hi = binomial_bounds(REPS, 0.95, 0.001)
    assert (lo, hi) == (179, 198)
    rates = {k: v / REPS for k, v in covered.items()}
    print(kind, "coverage", rates)
    for k, c in covered.items():
        assert lo <= c <= hi, (k, c / REPS)
    for (name, est), v in values.items():
        assert abs(np.mean(v) - true[name]) < 4 * np.std(v) / np.sqrt(REPS), (name, est, np.mean(v), true[name])


def test_the_learners_progressive_estimate_finds_the_best_action():
    """One action is clearly best (0.8 against 0.2 and 0.3); under uniform logging the learner and
    its shadows, learning progressively, are estimated near 0.8 and far above the logger's 0.43."""
    def flat(seg, amt):
        return np.broadcast_to(np.array([0.2, 0.8, 0.3]), (len(seg), 3))

    rows = make_log(3000, "uniform", seed=7, mu_fn=flat)
    report = evaluate(cfg(shadow_learners=["linucb", "epsilon-greedy"]), rows)
    pr = report["pipelines"]["routing"]
    logged = pr["logged_policy"]
    assert logged["value"] == pytest.approx(0.433, abs=0.03)
    assert set(pr["policies"]) == {"squarecb", "linucb", "epsilon-greedy"}
    for name, q in pr["policies"].items():
        assert q["role"] == ("learner" if name == "squarecb" else "shadow")
        for est in ("ips", "snips", "dr"):
            assert 0.7 < q[est]["value"] < 0.85, (name, est, q[est])
            assert q[est]["ci"][0] > logged["ci"][1]
        assert q["direct_method"]["biased"] is True
        assert 0.2 * 3000 < q["ess"] < 3000
    assert pr["warnings"] == [] and report["warnings"] == []


def test_the_estimate_is_the_learner_deciding_on_earlier_rows_only():
    """IPS, SNIPS and the logged value recomputed by hand: a SquareCB learner with the pipeline's
    parameters decides each block of 50 rows having learned only the blocks before it, then learns
    the block's logged actions and rewards."""
    rows = make_log(300, "skewed", seed=3)
    report = evaluate(cfg(n_features=16), rows, learn_every=50)
    q = report["pipelines"]["routing"]["policies"]["squarecb"]
    lrn = learners.create("squarecb", n_features=16, actions=tuple(ACTIONS), seed=0)
    hasher = FeatureHasher(16)
    w_r, w = [], []
    for lo in range(0, 300, 50):
        block = rows[lo:lo + 50]
        feats = [{("segment=" + r["features"]["segment"]): 1.0, "amount": r["features"]["amount"], "bias": 1.0}
                 for r in block]
        X = np.array([hasher.transform(f) for f in feats])
        keys = event_keys([r["id"] for r in block])
        probs = lrn.process({"event_key": keys, "X": X})["probs"].reshape(len(block), 3)
        for r, pr in zip(block, probs, strict=True):
            wi = pr[ACTIONS.index(r["action"])] / r["propensity"]
            w.append(wi)
            w_r.append(wi * r["reward"])
        lrn.learn({"event_key": keys, "X": X, "action": [r["action"] for r in block],
                   "reward": np.array([r["reward"] for r in block]), "prob": np.array([r["propensity"] for r in block])})
    assert q["ips"]["value"] == pytest.approx(np.mean(w_r), rel=1e-9)
    assert q["snips"]["value"] == pytest.approx(np.sum(w_r) / np.sum(w), rel=1e-9)
    assert q["ess"] == pytest.approx(np.sum(w) ** 2 / np.sum(np.square(w)), rel=1e-9)
    assert q["ips"]["stderr"] == pytest.approx(np.std(w_r, ddof=1) / np.sqrt(300), rel=1e-9)
    assert report["logged_policy"]["value"] == pytest.approx(np.mean([r["reward"] for r in rows]))


def test_deterministic_logs_give_only_the_direct_method_labelled_biased():
    rows = make_log(500, "uniform", seed=1)
    for r in rows:
        r["propensity"] = 1.0
    report = evaluate(cfg(), rows, policies={"greedy": greedy})
    pr = report["pipelines"]["routing"]
    assert pr["status"] == "deterministic"
    assert pr["rows"]["propensity_one"] == 500
    for q in pr["policies"].values():
        assert q["ips"] is None and q["snips"] is None and q["dr"] is None
        assert "no unbiased estimate" in q["reason"] and "deterministic" in q["reason"]
        dm = q["direct_method"]
        assert dm["biased"] is True and dm["n"] == 500 and dm["ci"][0] <= dm["value"] <= dm["ci"][1]
        assert 0.0 <= dm["value"] <= 1.0
    assert any("every logged propensity is 1" in w and "no unbiased estimate" in w for w in pr["warnings"])


def test_missing_propensities_all_or_some():
    rows = make_log(400, "uniform", seed=2, propensity="unused")  # no propensity field at all
    pr = evaluate(cfg(), rows)["pipelines"]["routing"]
    assert pr["status"] == "no_propensities" and pr["rows"]["with_propensity"] == 0
    q = pr["policies"]["squarecb"]
    assert q["ips"] is None and q["direct_method"]["n"] == 400 and q["direct_method"]["biased"]
    assert any("no row has a propensity" in w and "--map propensity=" in w for w in pr["warnings"])

    rows = make_log(400, "uniform", seed=2)
    for r in rows[::4]:
        del r["propensity"]
    pr = evaluate(cfg(), rows, policies={"greedy": greedy})["pipelines"]["routing"]
    assert pr["status"] == "ok" and pr["rows"]["with_propensity"] == 300
    q = pr["policies"]["greedy"]
    assert q["ips"]["n"] == 300 and q["direct_method"]["n"] == 400
    assert any(w.startswith("100 of 400 rows have no propensity") for w in pr["warnings"])


def test_support_and_weight_warnings():
    """Rows logged with propensity 1 hide what the target would earn elsewhere; tiny propensities
    blow up the weights; propensities that are not the logger's show in the mean weight."""
    rows = make_log(600, "uniform", seed=4)
    for r in rows[:200]:  # a logger deterministic on a third of the traffic
        r["propensity"] = 1.0
    rows[300]["propensity"] = 0.001
    pr = evaluate(cfg(), rows, policies={"soft": soft}, include_learners=False)["pipelines"]["routing"]
    q = pr["policies"]["soft"]
    assert q["unsupported_mass"] > 0.1
    text = "\n".join(pr["warnings"])
    assert "soft:" in text and "never takes" in text
    assert "1 rows have a propensity below 0.01 (smallest 0.001" in text
    assert pr["propensity"]["min"] == 0.001
    import daemon.evaluate
    import daemon.evaluate_core

    assert daemon.evaluate.TINY_PROPENSITY == daemon.evaluate_core.TINY_PROPENSITY

    rows = make_log(2000, "uniform", seed=5)
    for r in rows:
        r["propensity"] = 0.5  # the logger chose among three uniformly, and logged 1/2
    pr = evaluate(cfg(), rows, policies={"soft": soft}, include_learners=False)["pipelines"]["routing"]
    mw = pr["policies"]["soft"]["mean_weight"]
    assert mw["value"] == pytest.approx(2 / 3, abs=0.05) and mw["ci"][1] < 1
    assert any("mean importance weight 0.6" in w and "standard errors from 1" in w for w in pr["warnings"])


def test_the_eddy_command_evaluates_a_log_file(tmp_path):
    """`eddy evaluate` as a user runs it: a config file, a log file, a JSON report."""
    import json
    import subprocess
    import sys

    logs = tmp_path / "router.jsonl"
    logs.write_text("".join(json.dumps(r) + "\n" for r in make_log(600, "uniform", 3)) + "{broken\n")
    conf = tmp_path / "eddy.toml"
    conf.write_text('[[pipelines]]\nname = "routing"\nlearner = "squarecb"\nn_features = 32\n'
                    'learn_every_events = 64\nparams = {actions = ["a", "b", "c"]}\n')
    out = subprocess.run([sys.executable, "-m", "daemon.cli", "evaluate", "--config", str(conf), "--logs", str(logs),
                          "--out", str(tmp_path / "report.json")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "squarecb" in out.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert "snips" in json.dumps(report).lower()
    assert "601 rows read, 600 parsed, skipped: malformed_json 1" in out.stdout  # the broken line, counted
