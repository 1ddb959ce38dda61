"""Every rejection reason on every path that can produce it, with its counters.

Paths: the record path (Kafka, files) through each family's ``handle()`` (bandit, paging,
groupwise), where a rejected record becomes a dead letter counted in both
``eddy_dead_letter_messages_total{reason}`` and ``eddy_errors_total{reason}``; and the HTTP
sidecar's routes (bandit /decide, /feedback, /control; paging /access; groupwise /predict, /label),
where a rejected request gets a 4xx ``{"error": reason, "detail"}`` counted in ``eddy_errors_total``
only. Each case runs on a fresh core, so the counters must show exactly that one rejection.

``non_finite`` can only come from a hashed column: JSON numbers (orjson) are finite, and integers
beyond 64 bits are read as (finite) floats, so each non_finite case sums two colliding names.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from connectors.base import SourceRecord
from daemon import config
from daemon.families import make_core
from daemon.metrics import DaemonMetrics
from daemon.sidecar import Sidecar, serve_in_thread
from learners._hashing import FeatureHasher

from .conftest import pipeline_cfg
from .test_groupwise_daemon import gw_cfg
from .test_paging_daemon import paging_cfg
from .test_sidecar import call

MAX_MSG = 8192
MAX_BODY = 4096
BIG = 1.5e308  # two of these in one hashed column sum to inf


def colliding(n_columns: int, k: int = 2) -> list[str]:
    """k feature names hashed to the same column with the same sign."""
    h = FeatureHasher(n_columns)
    by: dict[tuple[int, float], list[str]] = {}
    for i in range(100_000):
        cols, vals = h.sparse({f"k{i}": 1.0})
        names = by.setdefault((cols[0], vals[0]), [])
        names.append(f"k{i}")
        if len(names) == k:
            return names
    raise AssertionError("no collision")


OVER16 = dict.fromkeys(colliding(16), BIG)  # n_features = 16 in every family below
OVER_AF = dict.fromkeys(colliding(2), BIG)  # n_action_features = 2


def cfg(family: str, **over) -> dict[str, Any]:
    """The pipeline config of each kind of core under test."""
    if family == "bandit":  # actions in the events, none configured
        pc = pipeline_cfg("pay", max_message_bytes=MAX_MSG, **over)
    elif family == "configured":  # configured actions (events may omit theirs: the inline decoding)
        pc = pipeline_cfg("pay", max_message_bytes=MAX_MSG, params={"actions": ["a", "b", "c"]}, **over)
    elif family == "strict":
        pc = pipeline_cfg("pay", max_message_bytes=MAX_MSG, params={"actions": ["a", "b"], "strict_actions": True},
                          **over)
    elif family == "shared":  # action features
        pc = pipeline_cfg("pay", learner="squarecb-shared", shadow_learners=[], max_message_bytes=MAX_MSG,
                          params={"n_action_features": 2}, **over)
    elif family == "paging":
        return paging_cfg("pay", learner="paging-lru", max_message_bytes=MAX_MSG, params={"capacity": 8}, **over)
    elif family == "paging-bytes":
        return paging_cfg("pay", learner="paging-lru", max_message_bytes=MAX_MSG,
                          params={"capacity": 8, "byte_capacity": 1000}, **over)
    else:
        assert family == "groupwise"
        return gw_cfg("pay", max_message_bytes=MAX_MSG, join_buffer_cap=3, **over)
    return config.load_dict({"pipelines": [pc]}, env=False).pipelines[0]


def counts(core, metric: str) -> dict[str, float]:
    """Non-zero samples of a {pipeline, reason} counter for the core's pipeline."""
    return {s.labels["reason"]: s.value for fam in core.metrics.registry.collect() if fam.name == metric
            for s in fam.samples if s.name.endswith("_total") and s.labels["pipeline"] == core.name and s.value}


def enc(x: Any) -> bytes:
    return x if isinstance(x, bytes) else orjson.dumps(x)


EV = {"id": "e1", "time": 0.0, "features": {"x": 1.0}, "actions": ["a", "b"]}
FB = {"type": "feedback", "id": "e1", "reward": 1.0}
AF_EV = {"id": "e1", "features": {"x": 1.0}, "actions": [{"id": "p", "features": [1.0, 0.5]},
                                                         {"id": "q", "features": [0.0, 1.0]}]}
GW = {"id": "g1", "time": 0.0, "features": {"age": 22, "bias": 1}}
LB = {"type": "label", "id": "g1", "label": 1.0}
PAD = "x" * MAX_MSG

# (family, records before, the rejected record, reason)
RECORD_CASES: list[tuple[str, list[Any], Any, str]] = [
    # bandit: decode_event
    ("bandit", [], {**EV, "pad": PAD}, "oversize"),
    ("bandit", [], b"{nope", "malformed_json"),
    ("bandit", [], b'{"id": "x", "features": {"a": NaN}, "actions": ["a"]}', "non_finite"),
    ("bandit", [], b'{"id": "x", "features": {"a": 1e999}, "actions": ["a"]}', "non_finite"),
    ("bandit", [], b'{"id": "x", "features": {"a": -Infinity}, "actions": ["a"]}', "non_finite"),
    ("bandit", [], b'{"id": "x", "time": NaN, "features": {"a": 1}, "actions": ["a"]}', "non_finite"),
    ("bandit", [], {**EV, "time": 1e300}, "future_time"),
    ("bandit", [EV], {**FB, "time": 1e300}, "future_time"),
    ("bandit", [], b"[1, 2]", "bad_type"),
    ("bandit", [], b'"event"', "bad_type"),
    ("bandit", [], {**EV, "type": "other"}, "bad_type"),
    ("bandit", [], {**EV, "id": 5}, "bad_type"),
    ("bandit", [], {**EV, "id": ""}, "bad_type"),
    ("bandit", [], {**EV, "id": "i" * 257}, "bad_type"),
    ("bandit", [], {**EV, "time": "noon"}, "bad_type"),
    ("bandit", [], {**EV, "time": True}, "bad_type"),
    ("bandit", [], {**EV, "features": {"a": "high"}}, "bad_type"),
    ("bandit", [], {**EV, "features": {"a": True}}, "bad_type"),
    ("bandit", [], {**EV, "features": "a=1"}, "bad_type"),
    ("bandit", [], {**EV, "features": [1.0, 2.0]}, "bad_type"),
    ("bandit", [], {**EV, "features": [1.0] * 15 + ["x"]}, "bad_type"),
    ("bandit", [], {**EV, "actions": []}, "bad_type"),
    ("bandit", [], {**EV, "actions": "a"}, "bad_type"),
    ("bandit", [], {**EV, "actions": [5]}, "bad_type"),
    ("bandit", [], {**EV, "actions": ["a", "a"]}, "bad_type"),
    ("bandit", [], {"id": "x", "actions": ["a"]}, "missing_field"),
    ("bandit", [], {"features": {"a": 1}, "actions": ["a"]}, "missing_field"),
    ("bandit", [], {"id": "x", "features": {"a": 1}}, "missing_field"),  # no actions configured
    ("bandit", [], {**EV, "features": {**OVER16, "x": 1.0}}, "non_finite"),
    ("bandit", [EV], {**EV, "features": {"x": 2.0}}, "duplicate_event"),
    ("bandit", [EV, EV | {"id": "e2"}], EV, "duplicate_event"),
    ("bandit", [], FB, "unknown_event"),
    ("bandit", [EV], {**FB, "time": 26.0}, "late_reward"),  # event time passed reward_wait_s = 25
    ("bandit", [EV, EV | {"id": "e2", "time": 30.0}], FB, "late_reward"),
    ("bandit", [EV, FB], FB, "duplicate_reward"),
    ("bandit", [EV], {**FB, "reward": "1"}, "bad_type"),
    ("bandit", [EV], {**FB, "reward": True}, "bad_type"),
    ("bandit", [EV], {**FB, "id": 7}, "bad_type"),
    ("bandit", [EV], {**FB, "time": "later"}, "bad_type"),
    ("bandit", [EV], {"type": "feedback", "id": "e1"}, "missing_field"),
    ("bandit", [EV], {"type": "feedback", "reward": 1.0}, "missing_field"),
    # bandit: the inline decoding (configured actions, name→value features, no 'actions')
    ("configured", [], {"id": 5, "features": {"x": 1.0}}, "bad_type"),
    ("configured", [], {"id": "x", "time": "noon", "features": {"x": 1.0}}, "bad_type"),
    ("configured", [], {"id": "x", "features": {"x": "one"}}, "bad_type"),
    ("configured", [], {"time": 1.0, "features": {"x": 1.0}}, "missing_field"),
    ("configured", [], {"id": "x", "features": OVER16}, "non_finite"),
    ("configured", [], {"id": "x", "time": 1e300, "features": {"x": 1.0}}, "future_time"),
    ("configured", [], b'{"id": "x", "time": 1' + b'0' * 300 + b', "features": {"x": 1.0}}', "future_time"),  # an integer past 64 bits: read as a float
    ("configured", [{"id": "x", "features": {"x": 1.0}}], {"id": "x", "features": {"y": 1.0}}, "duplicate_event"),
    ("configured", [{"id": "x", "features": {"x": 1.0}}, {"id": "y", "features": {"x": 1.0}, "time": 30.0}],
     {"type": "feedback", "id": "x", "reward": 0.5}, "late_reward"),
    ("strict", [], {**EV, "actions": ["a", "zz"]}, "unknown_action"),
    # bandit: action features
    ("shared", [], {**AF_EV, "actions": ["p", "q"]}, "missing_field"),
    ("shared", [], {"id": "x", "features": {"x": 1.0}}, "missing_field"),
    ("shared", [], {**AF_EV, "actions": [{"id": "p", "features": [1.0]}]}, "bad_type"),
    ("shared", [], {**AF_EV, "actions": [{"id": "p"}]}, "bad_type"),
    ("shared", [], {**AF_EV, "actions": [{"id": "p", "features": {"w": "x"}}]}, "bad_type"),
    ("shared", [], {**AF_EV, "actions": [{"id": "p", "features": OVER_AF}]}, "non_finite"),
    # paging
    ("paging", [], {"key": "a", "pad": PAD}, "oversize"),
    ("paging", [], b"{nope", "malformed_json"),
    ("paging", [], b"[1]", "bad_type"),
    ("paging", [], {"key": 1.5}, "bad_type"),
    ("paging", [], {"key": True}, "bad_type"),
    ("paging", [], {"key": ""}, "bad_type"),
    ("paging", [], {"key": "k" * 4097}, "bad_type"),
    ("paging", [], {"key": 2**63}, "bad_type"),
    ("paging", [], {"key": "a", "op": "evict"}, "bad_type"),
    ("paging", [], {"key": "a", "op": 1}, "bad_type"),
    ("paging", [], {"key": "a", "size": -1}, "bad_type"),
    ("paging", [], {"key": "a", "size": "big"}, "bad_type"),
    ("paging", [], {"key": "a", "id": 5}, "bad_type"),
    ("paging", [], {"key": "a", "time": "noon"}, "bad_type"),
    ("paging", [], {"op": "resize"}, "bad_type"),
    ("paging", [], {"op": "resize", "capacity": 0}, "bad_type"),
    ("paging", [], {"op": "resize", "capacity": "8"}, "bad_type"),
    ("paging", [], {"op": "get"}, "missing_field"),
    ("paging", [], {"key": "a", "time": 1e300}, "future_time"),
    ("paging", [], b'{"key": "a", "time": Infinity}', "non_finite"),
    ("paging", [{"key": "a", "id": "r1"}], {"key": "b", "id": "r1"}, "duplicate_event"),
    ("paging", [{"key": "a", "id": "r1"}, {"key": "c"}], {"key": "a", "id": "r1"}, "duplicate_event"),
    ("paging-bytes", [], {"key": "a"}, "missing_field"),
    ("paging-bytes", [], {"key": "a", "size": 0}, "bad_type"),
    ("paging-bytes", [], {"op": "resize", "capacity": 8}, "bad_type"),  # byte mode resizes 'bytes'
    # groupwise
    ("groupwise", [], {**GW, "pad": PAD}, "oversize"),
    ("groupwise", [], b"{nope", "malformed_json"),
    ("groupwise", [], b"[1]", "bad_type"),
    ("groupwise", [], {**GW, "type": "score"}, "bad_type"),
    ("groupwise", [], {**GW, "id": 5}, "bad_type"),
    ("groupwise", [], {**GW, "time": "noon"}, "bad_type"),
    ("groupwise", [], {**GW, "features": [1.0, 2.0]}, "bad_type"),
    ("groupwise", [], {**GW, "features": "age=22"}, "bad_type"),
    ("groupwise", [], {**GW, "features": {"age": [22]}}, "bad_type"),
    ("groupwise", [], {**GW, "features": {"age": None}}, "bad_type"),
    ("groupwise", [], {**GW, "groups": "segment-a"}, "bad_type"),
    ("groupwise", [], {**GW, "groups": [1]}, "bad_type"),
    ("groupwise", [], {**GW, "label": "yes"}, "bad_type"),
    ("groupwise", [GW], {**LB, "label": "yes"}, "bad_type"),
    ("groupwise", [GW], {**LB, "label": True}, "bad_type"),
    ("groupwise", [GW], {**LB, "time": "x"}, "bad_type"),
    ("groupwise", [], {"time": 0.0, "features": {"age": 1}}, "missing_field"),
    ("groupwise", [], {"id": "g9"}, "missing_field"),
    ("groupwise", [GW], {"type": "label", "id": "g1"}, "missing_field"),
    ("groupwise", [GW], {"type": "label", "label": 1.0}, "missing_field"),
    ("groupwise", [], {**GW, "features": {**OVER16, "bias": 1}}, "non_finite"),
    ("groupwise", [], {**GW, "groups": ["segment-z"]}, "unknown_group"),
    ("groupwise", [], {**GW, "time": 1e300}, "future_time"),
    ("groupwise", [GW], {**LB, "time": 1e300}, "future_time"),
    ("groupwise", [], b'{"id": "g1", "features": {"age": NaN}}', "non_finite"),
    ("groupwise", [GW], {**GW, "features": {"age": 60}}, "duplicate_event"),
    ("groupwise", [GW, GW | {"id": "g2"}], GW, "duplicate_event"),
    ("groupwise", [], LB, "unknown_event"),
    ("groupwise", [GW], {**LB, "time": 50.0}, "late_label"),  # reward_wait_s = 50
    ("groupwise", [GW] + [GW | {"id": f"g{i}"} for i in range(2, 5)], LB, "late_label"),  # join_buffer_cap = 3
    ("groupwise", [GW, LB], LB, "duplicate_label"),
    ("groupwise", [GW | {"label": 0.5}], LB, "duplicate_label"),
]


@pytest.mark.parametrize("family,before,bad,reason", RECORD_CASES,
                         ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(RECORD_CASES)])
@pytest.mark.parametrize("batched", [True, False], ids=["one-batch", "own-batch"])
def test_record_paths_dead_letter_with_the_reason(family, before, bad, reason, batched):
    core = make_core(cfg(family))
    recs = [SourceRecord(enc(x), "pay-in", 2, i) for i, x in enumerate([*before, bad])]
    if batched:
        outs = core.handle(recs)
    else:
        outs = core.handle(recs[:-1])
        assert all(o.kind == "decision" for o in outs)
        outs += core.handle(recs[-1:])
    dlq = [json.loads(o.value) for o in outs if o.kind == "dlq"]
    assert [d["reason"] for d in dlq] == [reason]
    (d,) = dlq
    assert d["pipeline"] == "pay" and d["detail"]
    assert (d["topic"], d["partition"], d["offset"]) == ("pay-in", 2, len(before))
    assert d["original"] == recs[-1].value.decode()
    assert counts(core, "eddy_dead_letter_messages") == {reason: 1}
    assert counts(core, "eddy_errors") == {reason: 1}
    # The records before were all accepted: events answered, feedback or labels taken.
    n_events = sum(1 for x in before if not (isinstance(x, dict) and x.get("type") in ("feedback", "label")))
    assert sum(o.kind == "decision" for o in outs) == n_events


def test_redacted_dead_letters_carry_the_length_only():
    for family in ("bandit", "paging", "groupwise"):
        core = make_core(cfg(family, redact_payloads=True))
        (out,) = core.handle([SourceRecord(b"{nope", "pay-in", 0, 9)])
        d = json.loads(out.value)
        assert (d["reason"], d["original_bytes"], "original" in d) == ("malformed_json", 5, False)


def test_learner_and_shadow_errors_are_counted_not_dead_lettered():
    class Broken:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def process(self, batch):
            raise RuntimeError("boom")

    core = make_core(cfg("bandit"))
    assert core.family == "bandit"
    core.shadows = {s: Broken(lrn) for s, lrn in core.shadows.items()}
    outs = core.handle([SourceRecord(enc({**EV, "id": f"e{i}"})) for i in range(3)])
    assert [o.kind for o in outs] == ["decision"] * 3
    assert counts(core, "eddy_errors") == {"shadow_error": 3} and counts(core, "eddy_dead_letter_messages") == {}
    core = make_core(cfg("bandit"))
    core.learner = Broken(core.learner)
    outs = core.handle([SourceRecord(enc({**EV, "id": f"e{i}"})) for i in range(2)])
    assert [json.loads(o.value)["reason"] for o in outs] == ["learner_error"] * 2
    assert counts(core, "eddy_errors") == {"learner_error": 2} and counts(core, "eddy_dead_letter_messages") == {}


# -- the sidecar ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    """The sidecar over a mutable dict of cores (each test puts in fresh ones), max body 4096 bytes."""
    cores: dict[str, Any] = {}
    app = Sidecar(cores, DaemonMetrics(), max_body=MAX_BODY)
    srv, th, port = serve_in_thread(app, "127.0.0.1", 0)
    app.ready = True
    yield cores, port
    srv.should_exit = True
    th.join(5)


def post(port, verb, body):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return call(port, "POST", f"/v1/pipelines/pay/{verb}", raw=raw, token="")


HEV = {"id": "h1", "time": 0.0, "features": {"x": 1.0}, "actions": ["a", "b"]}
HFB = {"id": "h1", "reward": 1.0}
OVERSIZE = b'{"id": "big", "pad": "' + b"x" * MAX_BODY + b'"}'

# (family, calls before (verb, body), or ("kafka", record), verb, body, status, reason)
HTTP_CASES: list[tuple[str, list[tuple[str, Any]], str, Any, int, str]] = [
    # bandit /decide
    ("bandit", [], "decide", OVERSIZE, 413, "oversize"),
    ("bandit", [], "decide", b"{nope", 400, "malformed_json"),
    ("bandit", [], "decide", {"events": []}, 400, "bad_type"),
    ("bandit", [], "decide", {"events": HEV}, 400, "bad_type"),
    ("bandit", [], "decide", [1, 2], 400, "bad_type"),
    ("bandit", [], "decide", {**HEV, "id": 5}, 400, "bad_type"),
    ("bandit", [], "decide", {**HEV, "time": "noon"}, 400, "bad_type"),
    ("bandit", [], "decide", {**HEV, "features": {"x": "one"}}, 400, "bad_type"),
    ("bandit", [], "decide", {**HEV, "features": [1.0]}, 400, "bad_type"),
    ("bandit", [], "decide", {**HEV, "actions": []}, 400, "bad_type"),
    ("bandit", [], "decide", {**HEV, "actions": ["a", "a"]}, 400, "bad_type"),
    ("bandit", [], "decide", {"features": {"x": 1.0}, "actions": ["a"]}, 400, "missing_field"),
    ("bandit", [], "decide", {"id": "h1", "actions": ["a"]}, 400, "missing_field"),
    ("bandit", [], "decide", {"id": "h1", "features": {"x": 1.0}}, 400, "missing_field"),
    ("bandit", [], "decide", {**HEV, "features": OVER16}, 400, "non_finite"),
    ("bandit", [], "decide", b'{"id": "h1", "features": {"x": NaN}, "actions": ["a"]}', 400, "non_finite"),
    ("bandit", [], "decide", b'{"id": "h1", "features": {"x": 1e999}, "actions": ["a"]}', 400, "non_finite"),
    ("bandit", [], "decide", {**HEV, "time": 1e300}, 400, "future_time"),
    ("bandit", [("decide", HEV)], "feedback", {**HFB, "time": 1e300}, 400, "future_time"),
    ("bandit", [("decide", HEV)], "feedback", b'{"id": "h1", "reward": Infinity}', 400, "non_finite"),
    ("configured", [], "decide", {"id": "h1", "features": OVER16}, 400, "non_finite"),
    ("shared", [], "decide", {**AF_EV, "actions": [{"id": "p", "features": OVER_AF}]}, 400, "non_finite"),
    ("shared", [], "decide", {**AF_EV, "actions": ["p"]}, 400, "missing_field"),
    ("shared", [], "decide", {**AF_EV, "actions": [{"id": "p", "features": [1.0]}]}, 400, "bad_type"),
    ("strict", [], "decide", {**HEV, "actions": ["a", "zz"]}, 422, "unknown_action"),
    ("bandit", [("kafka", HEV)], "decide", HEV, 422, "duplicate_event"),
    # bandit /feedback
    ("bandit", [], "feedback", OVERSIZE, 413, "oversize"),
    ("bandit", [], "feedback", b"{nope", 400, "malformed_json"),
    ("bandit", [], "feedback", {"feedback": []}, 400, "bad_type"),
    ("bandit", [("decide", HEV)], "feedback", [HFB], 400, "bad_type"),
    ("bandit", [("decide", HEV)], "feedback", {**HFB, "id": 5}, 400, "bad_type"),
    ("bandit", [("decide", HEV)], "feedback", {**HFB, "reward": "1"}, 400, "bad_type"),
    ("bandit", [("decide", HEV)], "feedback", {**HFB, "time": "x"}, 400, "bad_type"),
    ("bandit", [("decide", HEV)], "feedback", {"reward": 1.0}, 400, "missing_field"),
    ("bandit", [("decide", HEV)], "feedback", {"id": "h1"}, 400, "missing_field"),
    ("bandit", [], "feedback", HFB, 404, "unknown_event"),
    ("bandit", [("decide", HEV)], "feedback", {**HFB, "time": 25.0}, 409, "late_reward"),
    ("bandit", [("decide", HEV), ("decide", {**HEV, "id": "h2", "time": 30.0})], "feedback", HFB, 409,
     "late_reward"),
    ("bandit", [("decide", HEV), ("feedback", HFB)], "feedback", HFB, 409, "duplicate_reward"),
    # bandit /control
    ("bandit", [], "control", {"force_default": "yes"}, 400, "bad_type"),
    ("bandit", [], "control", b"{nope", 400, "malformed_json"),
    # paging /access
    ("paging", [], "access", OVERSIZE, 413, "oversize"),
    ("paging", [], "access", b"{nope", 400, "malformed_json"),
    ("paging", [], "access", {"requests": []}, 400, "bad_type"),
    ("paging", [], "access", {"key": 1.5}, 400, "bad_type"),
    ("paging", [], "access", {"key": "a", "op": "evict"}, 400, "bad_type"),
    ("paging", [], "access", {"op": "resize", "capacity": 0}, 400, "bad_type"),
    ("paging", [], "access", {"key": "a", "id": 5}, 400, "bad_type"),
    ("paging", [], "access", {"op": "get"}, 400, "missing_field"),
    ("paging", [], "access", {"key": "a", "time": 1e300}, 400, "future_time"),
    ("paging-bytes", [], "access", {"key": "a"}, 400, "missing_field"),
    # groupwise /predict
    ("groupwise", [], "predict", OVERSIZE, 413, "oversize"),
    ("groupwise", [], "predict", b"{nope", 400, "malformed_json"),
    ("groupwise", [], "predict", {"events": []}, 400, "bad_type"),
    ("groupwise", [], "predict", {**GW, "id": 5}, 400, "bad_type"),
    ("groupwise", [], "predict", {**GW, "features": {"age": [1]}}, 400, "bad_type"),
    ("groupwise", [], "predict", {**GW, "label": "yes"}, 400, "bad_type"),
    ("groupwise", [], "predict", {"id": "g1"}, 400, "missing_field"),
    ("groupwise", [], "predict", {**GW, "features": OVER16}, 400, "non_finite"),
    ("groupwise", [], "predict", {**GW, "groups": ["segment-z"]}, 400, "unknown_group"),
    ("groupwise", [], "predict", {**GW, "time": 1e300}, 400, "future_time"),
    ("groupwise", [], "predict", b'{"id": "g1", "features": {"age": NaN}}', 400, "non_finite"),
    ("groupwise", [("kafka", GW)], "predict", GW, 422, "duplicate_event"),
    # groupwise /label
    ("groupwise", [], "label", OVERSIZE, 413, "oversize"),
    ("groupwise", [], "label", b"{nope", 400, "malformed_json"),
    ("groupwise", [], "label", {"labels": []}, 400, "bad_type"),
    ("groupwise", [("predict", GW)], "label", [{"id": "g1", "label": 1.0}], 400, "bad_type"),
    ("groupwise", [("predict", GW)], "label", {"id": "g1", "label": "yes"}, 400, "bad_type"),
    ("groupwise", [("predict", GW)], "label", {"id": "g1", "label": 1.0, "time": "x"}, 400, "bad_type"),
    ("groupwise", [("predict", GW)], "label", {"id": "g1"}, 400, "missing_field"),
    ("groupwise", [("predict", GW)], "label", {"id": "g1", "label": 1.0, "time": 1e300}, 400, "future_time"),
    ("groupwise", [("predict", GW)], "label", {"label": 1.0}, 400, "missing_field"),
    ("groupwise", [], "label", {"id": "g1", "label": 1.0}, 404, "unknown_event"),
    ("groupwise", [("predict", GW)], "label", {"id": "g1", "label": 1.0, "time": 50.0}, 409, "late_label"),
    ("groupwise", [("predict", {"events": [GW] + [GW | {"id": f"g{i}"} for i in range(2, 5)]})], "label",
     {"id": "g1", "label": 1.0}, 409, "late_label"),  # join_buffer_cap = 3
    ("groupwise", [("predict", GW), ("label", {"id": "g1", "label": 1.0})], "label", {"id": "g1", "label": 0.0},
     409, "duplicate_label"),
]


@pytest.mark.parametrize("family,before,verb,body,status,reason", HTTP_CASES,
                         ids=[f"{c[0]}-{c[2]}-{c[5]}-{i}" for i, c in enumerate(HTTP_CASES)])
def test_sidecar_routes_answer_4xx_with_the_reason(server, family, before, verb, body, status, reason):
    cores, port = server
    core = cores["pay"] = make_core(cfg(family), DaemonMetrics())
    for v, b in before:
        if v == "kafka":
            assert [o.kind for o in core.handle([SourceRecord(enc(b))])] == ["decision"]
        else:
            assert post(port, v, b)[0] == 200
    decided = core.metrics.registry.get_sample_value("eddy_decisions_total", {"pipeline": "pay", "source": "http"})
    st, err = post(port, verb, body)
    assert (st, err["error"]) == (status, reason) and err["detail"]
    assert counts(core, "eddy_errors") == {reason: 1}
    assert counts(core, "eddy_dead_letter_messages") == {}
    # A rejected request decides nothing (not even the valid events before the bad one).
    assert core.metrics.registry.get_sample_value("eddy_decisions_total",
                                                  {"pipeline": "pay", "source": "http"}) == decided


def test_batched_feedback_and_labels_answer_per_item_reasons(server):
    cores, port = server
    core = cores["pay"] = make_core(cfg("bandit"), DaemonMetrics())
    assert post(port, "decide", {"events": [HEV, HEV | {"id": "h2"}]})[0] == 200
    st, res = post(port, "feedback", {"feedback": [HFB, HFB, {"id": "zz", "reward": 1}, {"id": "h2", "reward": "x"},
                                                   {"id": "h2"}, 7, {"id": "h2", "reward": 0.5}]})
    assert st == 200
    assert [(r["status"], r.get("reason")) for r in res["results"]] == [
        ("joined", None), ("rejected", "duplicate_reward"), ("rejected", "unknown_event"), ("rejected", "bad_type"),
        ("rejected", "missing_field"), ("rejected", "bad_type"), ("joined", None)]
    assert counts(core, "eddy_errors") == {"duplicate_reward": 1, "unknown_event": 1, "bad_type": 2,
                                           "missing_field": 1}
    core = cores["pay"] = make_core(cfg("groupwise"), DaemonMetrics())
    assert post(port, "predict", GW)[0] == 200
    st, res = post(port, "label", {"labels": [LB, LB, {"id": "zz", "label": 1}, {"id": "g1", "label": None}]})
    assert st == 200
    assert [(r["status"], r.get("reason")) for r in res["results"]] == [
        ("joined", None), ("rejected", "duplicate_label"), ("rejected", "unknown_event"),
        ("rejected", "missing_field")]
    assert counts(core, "eddy_errors") == {"duplicate_label": 1, "unknown_event": 1, "missing_field": 1}


def test_one_far_future_time_does_not_expire_the_waiting_decisions():
    """A finite far-future `time` (1e300) used to move event time so far that every waiting
    decision expired with the default reward and the next real reward was late_reward. It is
    dead-lettered as future_time against the record's Kafka timestamp; a time within
    max_time_ahead_s of it (a quiet weekend moves the timestamps too) is taken; 0 disables the bound."""
    now_ms = 1_700_000_000_000
    core = make_core(cfg("bandit"))  # reward_wait_s = 25
    ev = {**EV, "time": now_ms / 1000}
    outs = core.handle([SourceRecord(enc(ev), "pay-in", 0, 0, False, now_ms),
                        SourceRecord(enc({**EV, "id": "e2", "time": 1e300}), "pay-in", 0, 1, False, now_ms),
                        SourceRecord(enc({**EV, "id": "e3", "time": now_ms / 1000 + 2 * 86400}), "pay-in", 0, 2,
                                     False, now_ms + 1000)])
    dlq = [json.loads(o.value) for o in outs if o.kind == "dlq"]
    assert [(d["reason"], d["offset"]) for d in dlq] == [("future_time", 1), ("future_time", 2)]
    assert "Kafka timestamp" in dlq[0]["detail"]
    fb = {**FB, "time": now_ms / 1000 + 5}
    assert [o.kind for o in core.handle([SourceRecord(enc(fb), "pay-in", 0, 3, False, now_ms + 5000)])] == []
    assert counts(core, "eddy_dead_letter_messages") == {"future_time": 2}  # the reward joined: not late
    assert core.metrics.registry.get_sample_value("eddy_rewards_total", {"pipeline": "pay", "outcome": "joined"}) == 1
    # A weekend later by the broker's clock, event time a weekend later too: taken.
    later_ms = now_ms + 2 * 86400 * 1000
    ok = core.handle([SourceRecord(enc({**EV, "id": "e4", "time": later_ms / 1000}), "pay-in", 0, 4, False, later_ms)])
    assert [o.kind for o in ok] == ["decision"]
    off = make_core(cfg("bandit", max_time_ahead_s=0.0))
    assert [o.kind for o in off.handle([SourceRecord(enc({**EV, "time": 1e300}), "pay-in", 0, 0, False, now_ms)])] \
        == ["decision"]
