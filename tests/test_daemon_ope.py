"""The daemon's off-policy estimates, recomputed by hand from what it published.

A bandit pipeline core (SquareCB acting, LinUCB and ε-greedy as shadows) is fed events and delayed
feedback. Its decisions give the logged action a, its propensity p and the acting policy's
probabilities; the shadows' probabilities and the acting learner's reward model r̂ (its scores,
clipped to [0, 1]) are recorded from the learners' own outputs. From those and the feedback that
joined, IPS, SNIPS and DR of every policy are written out from their definitions

    w = π(a|x)/p,  IPS = mean(w r),  SNIPS = Σ w r / Σ w,  DR = mean(Σ_b π(b|x) r̂(x,b) + w (r − r̂(x,a)))

and compared with ``eddy_ope_value{policy,estimator}``, the core's report and the replay report.
"""

from __future__ import annotations

import json
import math

import numpy as np
import orjson
import pytest

from daemon import config
from daemon.engine import Engine
from learners._hashing import event_keys

from .conftest import make_records, pipeline_cfg
from .feeding import feed

SHADOWS = ["linucb", "epsilon-greedy"]
SETTINGS = {"learner": "squarecb", "shadow_learners": SHADOWS, "learn_every_events": 4, "min_learned_events": 15,
            "reward_wait_s": 25.0, "n_features": 16, "default_action": "a"}


class Recorder:
    """A learner that records, per event key, the offered actions and its ``probs`` and ``scores``."""

    def __init__(self, inner):
        self.inner = inner
        self.seen: dict[int, tuple[list[str], list[float], list[float]]] = {}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def process(self, batch):
        out = self.inner.process(batch)
        bounds = out["indptr"].tolist()
        ids = batch.get("action_ids") or [a for _ in range(len(bounds) - 1) for a in self.inner.actions]
        probs, scores = out["probs"].tolist(), out["scores"].tolist()
        for k, lo, hi in zip(batch["event_key"].tolist(), bounds[:-1], bounds[1:], strict=True):
            self.seen[k] = (ids[lo:hi], probs[lo:hi], scores[lo:hi])
        return out


def recorded_core(**over) -> tuple[Engine, Recorder, dict[str, Recorder]]:
    core = Engine(config.load_dict({"pipelines": [pipeline_cfg(**{**SETTINGS, **over})]}, env=False).pipelines[0])
    core.learner = Recorder(core.learner)
    core.shadows = {s: Recorder(lrn) for s, lrn in core.shadows.items()}
    return core, core.learner, core.shadows


def by_hand(records, outs, main: Recorder, shadows: dict[str, Recorder]) -> dict[str, dict[str, float]]:
    """IPS, SNIPS, DR (and n, the IPS standard error) of each policy from the published decisions,
    the dead letters, the feedback records and the learners' recorded outputs."""
    decisions = {d["id"]: d for d in (orjson.loads(o.value) for o in outs if o.kind == "decision")}
    rejected = {json.loads(o.value)["original"] for o in outs if o.kind == "dlq"}
    joined = []  # (event id, reward) in log order
    for raw in records:
        obj = json.loads(raw)
        if obj.get("type") == "feedback" and raw.decode() not in rejected:
            joined.append((obj["id"], float(obj["reward"])))
    terms: dict[str, list[tuple[float, float, float]]] = {"squarecb": [], **{s: [] for s in shadows}}
    for eid, r in joined:
        d = decisions[eid]
        a, p = d["action"], d["prob"]
        key = int(event_keys([eid])[0])
        offered = list(d["probs"])
        if d["default"]:  # the default action: no model was asked, r̂ = 0
            rhat = dict.fromkeys(offered, 0.0)
        else:
            ids, _, scores = main.seen[key]
            assert ids == offered
            rhat = {b: min(max(s, 0.0), 1.0) for b, s in zip(ids, scores, strict=True)}
        policies = {"squarecb": d["probs"]}
        for s, rec in shadows.items():
            ids, probs, _ = rec.seen[key]
            assert ids == offered
            policies[s] = dict(zip(ids, probs, strict=True))
        for name, pi in policies.items():
            w = pi[a] / p
            dm = sum(pi[b] * rhat[b] for b in offered)
            terms[name].append((w, r, dm + w * (r - rhat[a])))
    out = {}
    for name, rows in terms.items():
        w, r, dr = (np.array(c) for c in zip(*rows, strict=True))
        n = len(rows)
        ips = float(np.mean(w * r))
        out[name] = {"ips": ips, "snips": float(np.sum(w * r) / np.sum(w)), "dr": float(np.mean(dr)), "n": n,
                     "ips_stderr": math.sqrt(max(float(np.mean((w * r) ** 2)) - ips**2, 0.0) / n)}
    return out


def assert_close(got: dict, want: dict) -> None:
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k


def with_rejected_feedback(records: list[bytes]) -> list[bytes]:
    """The records, with feedback that must not enter the estimates: late (an odd event's, which
    waited past reward_wait_s unrewarded) and duplicate (a second reward for e0)."""
    late = [json.dumps({"type": "feedback", "id": f"e{i}", "reward": 1.0}).encode() for i in (1, 3, 5)]
    dup = json.dumps({"type": "feedback", "id": "e0", "reward": 1.0}).encode()
    return records[:300] + late + [dup] + records[300:]


def test_daemon_ope_equals_the_estimators_by_hand():
    records = with_rejected_feedback(make_records(500, seed=3))
    core, main, shadows = recorded_core()
    outs = feed(core, records)
    want = by_hand(records, outs, main, shadows)
    decisions = [orjson.loads(o.value) for o in outs if o.kind == "decision"]
    # The data exercise what the estimators weigh: defaults (p = 1, r̂ = 0), exploration (p < 1),
    # feedback joined and feedback too late, and shadows that disagree with the logged action.
    assert sum(d["default"] for d in decisions) >= 10 and min(d["prob"] for d in decisions) < 0.5
    reg = core.metrics.registry
    n_joined = reg.get_sample_value("eddy_rewards_total", {"pipeline": "routing", "outcome": "joined"})
    assert want["squarecb"]["n"] == n_joined > 100
    for reason, n in (("late_reward", 3), ("duplicate_reward", 1)):
        assert reg.get_sample_value("eddy_dead_letter_messages_total", {"pipeline": "routing", "reason": reason}) == n
    for name in SHADOWS:
        assert abs(want[name]["snips"] - want[name]["ips"]) > 1e-3
    report = core.report()["ope"]
    assert set(report) == {"squarecb", *SHADOWS}
    for name, est in want.items():
        assert_close(report[name], est)
        for k in ("ips", "snips", "dr"):
            gauge = reg.get_sample_value("eddy_ope_value", {"pipeline": "routing", "policy": name, "estimator": k})
            assert gauge == pytest.approx(est[k], rel=1e-9, abs=1e-12), (name, k)
    # The acting policy's own IPS weights are 1 on every decision (π(a|x) = p): its IPS is the mean reward.
    rewards = [json.loads(r)["reward"] for r in records if b'"feedback"' in r]
    assert want["squarecb"]["ips"] == pytest.approx(want["squarecb"]["snips"], rel=1e-12)
    assert min(rewards) <= want["squarecb"]["ips"] <= max(rewards)


def test_replay_report_ope_equals_the_estimators_by_hand(tmp_path):
    from daemon.cli import main

    records = with_rejected_feedback(make_records(400, seed=4))
    core, lrn, shadows = recorded_core()
    outs = feed(core, records, batch=1000)
    want = by_hand(records, outs, lrn, shadows)
    ev = tmp_path / "events.jsonl"
    ev.write_bytes(b"\n".join(records) + b"\n")
    cfgp = tmp_path / "c.toml"
    cfgp.write_text('[[pipelines]]\nname="routing"\ninput_topic="i"\noutput_topic="o"\n'
                    + "".join(f"{k}={json.dumps(v)}\n" for k, v in SETTINGS.items()))
    out, rep = tmp_path / "d.jsonl", tmp_path / "r.json"
    assert main(["replay", "--config", str(cfgp), "--events", str(ev), "--out", str(out), "--report", str(rep)]) == 0
    # The replay decided what the in-memory core decided, and reports the estimates by hand.
    assert [json.loads(line) for line in out.read_text().splitlines()] == \
        [orjson.loads(o.value) for o in outs if o.kind == "decision"]
    report = json.loads(rep.read_text())["ope"]
    assert set(report) == {"squarecb", *SHADOWS}
    for name, est in want.items():
        assert_close(report[name], est)
