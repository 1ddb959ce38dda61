"""Batches of the events verbs over real HTTP: answered per item, as a feedback batch is.

Each valid item gets its output (and is really decided: its feedback joins, the learner learns,
the cache or the summary holds it), each bad one ``{"id", "error", "detail"}`` at its position,
counted in ``eddy_errors_total``; the batch is 200 whenever its envelope is well formed, and a
batch and its retry are answered alike.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from connectors.base import SourceRecord
from daemon import config
from daemon.engine import Engine
from daemon.families import make_core
from daemon.metrics import DaemonMetrics

from .conftest import pipeline_cfg, served
from .test_dead_letters import colliding
from .test_groupwise_daemon import gw_cfg
from .test_paging_daemon import paging_cfg
from .test_sidecar import call
from .test_submodular_daemon import cfg as sum_cfg

OVER16 = dict.fromkeys(colliding(16), 1.5e308)  # two colliding hashed features: their column sums to inf


def strict_core() -> Engine:
    pc = pipeline_cfg("pay", learn_every_events=1, params={"actions": ["a", "b"], "strict_actions": True})
    return Engine(config.load_dict({"pipelines": [pc]}, env=False).pipelines[0], DaemonMetrics())


def ev(i: int, **over: Any) -> dict[str, Any]:
    return {"id": f"e{i}", "time": float(i), "features": {"x": float(i), "country=NL": 1.0}, "actions": ["a", "b"],
            **over}


def post(port: int, pipeline: str, verb: str, body: Any) -> tuple[int, Any]:
    return call(port, "POST", f"/v1/pipelines/{pipeline}/{verb}", body, token="")


def errors(core: Engine) -> dict[str, float]:
    """Non-zero ``eddy_errors_total`` of the core's pipeline, by reason."""
    out = {}
    for fam in core.metrics.registry.collect():
        for s in fam.samples:
            if s.name == "eddy_errors_total" and s.labels.get("pipeline") == core.name and s.value:
                out[s.labels["reason"]] = s.value
    return out


def sample(core: Engine, name: str, **labels: str) -> float:
    return core.metrics.registry.get_sample_value(name, {"pipeline": core.name, **labels}) or 0.0


def decision(d: dict[str, Any]) -> tuple:
    return d["id"], d["action"], d["prob"], d["probs"], d["model_version"], d["explored"]


# (item, expected error or None): valid, malformed, duplicate, unknown-action, a retry, a Kafka id.
MIXED: list[tuple[Any, str | None]] = [
    (ev(1), None),
    ({**ev(2), "features": {"x": "high"}}, "bad_type"),
    (ev(3), None),
    (ev(1), "duplicate_event"),  # an id repeated within the batch
    ({**ev(4), "actions": ["a", "zz"]}, "unknown_action"),
    (7, "bad_type"),
    ({k: v for k, v in ev(5).items() if k != "id"}, "missing_field"),
    (ev(0), None),  # decided before: a retry gets its first decision
    (ev(90), "duplicate_event"),  # decided from the Kafka input
    ({**ev(6), "features": OVER16}, "non_finite"),  # two features overflowing their hashed column
    (ev(7), None),
]


def test_a_mixed_batch_is_answered_per_item_and_decides_the_valid_items():
    core = strict_core()
    assert [o.kind for o in core.handle([SourceRecord(orjson.dumps(ev(90)))])] == ["decision"]
    with served({"pay": core}) as port:
        st, first = post(port, "pay", "decide", ev(0))
        assert st == 200
        decided = sample(core, "eddy_decisions_total", source="http")
        st, out = post(port, "pay", "decide", {"events": [item for item, _ in MIXED]})
        assert st == 200
        answers = out["decisions"]
        assert [a.get("error") for a in answers] == [want for _, want in MIXED]
        assert [a["id"] for a in answers] == ["e1", "e2", "e3", "e1", "e4", None, None, "e0", "e90", "e6", "e7"]
        assert all(a["detail"] for a in answers if "error" in a)
        assert answers[3]["detail"].startswith("item 3: ") and "twice" in answers[3]["detail"]
        assert answers[7] == first
        for a in (answers[0], answers[2], answers[10]):
            assert a["action"] in ("a", "b") and a["prob"] == a["probs"][a["action"]]
        # Counted: one error per bad item (no dead letter: the client has the answer); three new decisions.
        assert errors(core) == {"bad_type": 2, "duplicate_event": 2, "unknown_action": 1, "missing_field": 1,
                                "non_finite": 1}
        assert not any(s.value for f in core.metrics.registry.collect() for s in f.samples
                       if s.name == "eddy_dead_letter_messages_total")
        assert sample(core, "eddy_decisions_total", source="http") == decided + 3

        # The valid ones were really decided: their rewards join, the bad ones' ids are unknown.
        st, res = post(port, "pay", "feedback", {"feedback": [{"id": f"e{i}", "reward": 1.0, "time": 8.0}
                                                              for i in (1, 3, 7, 2, 4, 6)]})
        assert st == 200
        assert [(r["status"], r.get("reason")) for r in res["results"]] == [("joined", None)] * 3 + [
            ("rejected", "unknown_event")] * 3
        learned = core.learner.learned_events
        assert post(port, "pay", "decide", ev(8))[0] == 200  # the learning block runs before it
        assert core.learner.learned_events == learned + 3

        # A retry of the whole batch is answered alike, position by position, and decides nothing new.
        decided = sample(core, "eddy_decisions_total", source="http")
        st, again = post(port, "pay", "decide", {"events": [item for item, _ in MIXED]})
        assert st == 200 and again == out
        assert sample(core, "eddy_decisions_total", source="http") == decided


def test_the_valid_items_of_a_mixed_batch_are_decided_as_a_clean_batch_would_be():
    """The sidecar splits a batch the engine refuses around its bad items; the decisions are those
    of the valid items sent alone (the engine's determinism contract), on an identical pipeline."""
    mixed, clean = strict_core(), strict_core()
    for core in (mixed, clean):
        core.handle([SourceRecord(orjson.dumps(ev(90)))])
    with served({"pay": mixed}) as port:
        post(port, "pay", "decide", ev(0))
        st, out = post(port, "pay", "decide", {"events": [item for item, _ in MIXED]})
    with served({"pay": clean}) as port:
        post(port, "pay", "decide", ev(0))
        st2, ref = post(port, "pay", "decide", {"events": [ev(1), ev(3), ev(7)]})
    assert st == st2 == 200
    got = [decision(a) for a, (_, want) in zip(out["decisions"], MIXED, strict=True) if want is None][:2]
    got.append(decision(out["decisions"][10]))
    assert got == [decision(d) for d in ref["decisions"]]


def test_a_batch_of_bad_items_is_200_and_a_malformed_envelope_is_400():
    core = strict_core()
    with served({"pay": core}) as port:
        st, out = post(port, "pay", "decide", {"events": [5, {"id": "q"}, {**ev(1), "time": "noon"}]})
        assert st == 200
        assert [(a["id"], a["error"]) for a in out["decisions"]] == [
            (None, "bad_type"), ("q", "missing_field"), ("e1", "bad_type")]
        assert sample(core, "eddy_decisions_total", source="http") == 0
        for body in ({"events": 5}, {"events": []}, {"events": {"id": "x"}}):
            st, err = post(port, "pay", "decide", body)
            assert (st, err["error"]) == (400, "bad_type") and "'events' must be a non-empty list" in err["detail"]
        st, err = call(port, "POST", "/v1/pipelines/pay/decide", token="", raw=b'{"events": [')
        assert (st, err["error"]) == (400, "malformed_json")
    assert errors(core) == {"bad_type": 5, "missing_field": 1, "malformed_json": 1}


def test_the_other_families_events_verbs_answer_per_item():
    cache = Engine(paging_cfg("edge", learner="paging-lru", params={"capacity": 8}), DaemonMetrics())
    groups = Engine(gw_cfg("credit"), DaemonMetrics())
    summary = Engine(sum_cfg(), DaemonMetrics())
    gw = {"id": "g1", "time": 0.0, "features": {"age": 22, "bias": 1}}
    with served({"edge": cache, "credit": groups, "sum": summary}) as port:
        st, out = post(port, "edge", "access", {"requests": [
            {"key": "a"}, {"key": 1.5}, {"key": "b", "id": "r1"}, {"key": "c", "id": "r1"}, {"op": "get"},
            {"key": "a"}]})
        assert st == 200
        res = out["results"]
        assert [r.get("error") for r in res] == [None, "bad_type", None, "duplicate_event", "missing_field", None]
        assert [r.get("hit") for r in res] == [False, None, False, None, None, True]
        assert cache.learner.metrics()["requests"] == 3  # only the valid requests reached the cache

        st, out = post(port, "credit", "predict", {"events": [gw, {**gw, "id": "g2", "groups": ["segment-z"]},
                                                              {**gw, "id": "g3"}]})
        assert st == 200
        assert [(p["id"], p.get("error")) for p in out["predictions"]] == [
            ("g1", None), ("g2", "unknown_group"), ("g3", None)]
        assert set(groups.lanes["http"].buffer) == {"g1", "g3"}  # waiting for their labels

        st, out = post(port, "sum", "items", {"items": [
            {"id": "b", "features": [0, 2, 0, 0]}, {"op": "delete", "id": "ghost"},
            {"id": "c", "features": "x"}, {"id": "d", "features": [0, 0, 3, 0]}]})
        assert st == 200
        assert [(r.get("id"), r.get("error")) for r in out["results"]][1:3] == [
            ("ghost", "unknown_item"), ("c", "bad_features")]
        assert sorted(summary.adapter.solution()["solution"]) == ["b", "d"]
    assert errors(cache) == {"bad_type": 1, "duplicate_event": 1, "missing_field": 1}
    assert errors(groups) == {"unknown_group": 1}
    assert errors(summary) == {"unknown_item": 1, "bad_features": 1}


HEV = {"id": "h1", "time": 0.0, "features": {"x": 1.0}, "actions": ["a", "b"]}
GW = {"id": "g1", "time": 0.0, "features": {"age": 22, "bias": 1}}
OVER16_DL = dict.fromkeys(colliding(16), 1.5e308)
# The batches that a bad item used to reject whole (tests/test_dead_letters.py's HTTP cases, then
# 4xx): (family of test_dead_letters.cfg, verb, batch, position of the bad item, its reason).
BATCHES: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("bandit", "decide", {"events": [HEV, 5]}, 1, "bad_type"),
    ("bandit", "decide", {"events": [HEV | {"id": "h0"}, {**HEV, "features": OVER16_DL}]}, 1, "non_finite"),
    ("bandit", "decide", {"events": [HEV, HEV]}, 1, "duplicate_event"),
    ("bandit", "decide", {"events": [HEV, {**HEV, "id": "h2", "actions": []}]}, 1, "bad_type"),
    ("strict", "decide", {"events": [{**HEV, "actions": ["a", "zz"]}, {**HEV, "id": "h2"}]}, 0, "unknown_action"),
    ("paging", "access", {"requests": [{"key": "a"}, 5]}, 1, "bad_type"),
    ("paging", "access", {"requests": [{"key": "a", "id": "r1"}, {"key": "b", "id": "r1"}]}, 1, "duplicate_event"),
    ("groupwise", "predict", {"events": [GW, 5]}, 1, "bad_type"),
    ("groupwise", "predict", {"events": [GW, {**GW, "id": "g2", "features": OVER16_DL}]}, 1, "non_finite"),
    ("groupwise", "predict", {"events": [GW, GW]}, 1, "duplicate_event"),
    ("groupwise", "predict", {"events": [GW, {**GW, "id": "g2", "groups": ["segment-z"]}]}, 1, "unknown_group"),
]


@pytest.mark.parametrize("family,verb,body,bad,reason", BATCHES,
                         ids=[f"{c[0]}-{c[4]}-{i}" for i, c in enumerate(BATCHES)])
def test_one_bad_item_no_longer_rejects_its_batch(family, verb, body, bad, reason):
    """The valid item is decided (and counted), the bad one answered with its reason and counted
    once, nothing dead-lettered; the bad item leaves no trace: corrected, it is decided."""
    from .test_dead_letters import cfg as dl_cfg
    from .test_dead_letters import counts

    core = make_core(dl_cfg(family), DaemonMetrics())
    (items,) = body.values()
    with served({"pay": core}) as port:
        st, out = post(port, "pay", verb, body)
        assert st == 200
        (answers,) = out.values()
        assert len(answers) == len(items) == 2
        assert answers[bad]["error"] == reason and answers[bad]["detail"].startswith(f"item {bad}: ")
        good = answers[1 - bad]
        assert "error" not in good and good.get("id") == items[1 - bad].get("id")
        assert counts(core, "eddy_errors") == {reason: 1}
        assert counts(core, "eddy_dead_letter_messages") == {}
        assert sample(core, "eddy_decisions_total", source="http") == 1
        bad_id = items[bad].get("id") if isinstance(items[bad], dict) else None
        if bad_id is not None and reason != "duplicate_event":  # not remembered: corrected, it is decided
            assert not any(bad_id in x.seen for x in core.lanes.values())
            st, again = post(port, "pay", verb, {**items[1 - bad], "id": bad_id})
            assert st == 200 and again["id"] == bad_id and "error" not in again
