"""Property-based fuzz (Hypothesis) of every family's record decoding and of the sidecar's bodies.

Inputs are near-valid records (a valid one with fields removed, replaced by arbitrary JSON values,
or added), arbitrary JSON values and arbitrary bytes, in micro-batches. Properties: the engine
never raises; every record is accounted for exactly once (an output, a dead letter with its reason
and offset, or joined feedback); the pipeline still decides a valid record afterwards. Over HTTP
(the ASGI app, in-process): every answer is 200 or a 4xx with ``error`` and ``detail``, never a 5xx.

``EDDY_FUZZ_EXAMPLES`` sets the examples per family (default 150: about 750 records and 150
bodies each; the 100,000-input run of issue 16 is ``EDDY_FUZZ_EXAMPLES=17000``, in
benchmarks/RESULTS.md). With ``EDDY_FUZZ_REPORT=path.json`` the counts (records, dead letters,
decisions, joins, bodies by status) are written there, per family.
"""

from __future__ import annotations

import asyncio
import json
import os

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.base import SourceRecord
from daemon import config
from daemon.families import make_core
from daemon.metrics import DaemonMetrics
from daemon.sidecar import Sidecar

EXAMPLES = int(os.environ.get("EDDY_FUZZ_EXAMPLES", "150"))
COUNTS: dict[str, dict[str, int]] = {}  # family -> what the fuzz fed and saw


def count(family: str, **n: int) -> None:
    c = COUNTS.setdefault(family, {})
    for k, v in n.items():
        c[k] = c.get(k, 0) + v


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    path = os.environ.get("EDDY_FUZZ_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"examples": EXAMPLES, "families": COUNTS}, f, indent=1, sort_keys=True)
IDS = [f"e{i}" for i in range(6)]  # few ids: duplicates, and feedback that finds its event

PIPES = {
    "bandit": {"learner": "squarecb", "n_features": 16, "learn_every_events": 2, "max_message_bytes": 4096},
    "bandit-keyed": {"learner": "epsilon-greedy", "n_features": 16, "key_by": "merchant", "key_cap": 2},
    "groupwise": {"learner": "groupwise-mixture", "n_features": 16, "learn_every_events": 2,
                  "params": {"groups": ["g"]}, "group_rules": {"young": "age < 30"}},
    "paging": {"learner": "paging-learned-discard", "params": {"capacity": 4, "switch_every": 8, "history_cap": 64}},
    "sor": {"learner": "sor-chebcb", "learn_every_events": 2, "params": {"context_range": [0.0, 1.0]}},
    "submodular": {"learner": "submodular-dynamic", "params": {"objective": "feature-based", "d": 3, "k": 2,
                                                             "capacity": 16}},
}
VALID = {  # valid records of each family (events, feedback, operations)
    "bandit": [{"id": "e0", "time": 1.0, "features": {"x": 0.5, "c=a": 1.0}, "actions": ["a", "b"]},
               {"type": "feedback", "id": "e0", "reward": 1.0, "time": 2.0}],
    "bandit-keyed": [{"merchant": "m", "id": "e0", "time": 1.0, "features": {"x": 0.5}, "actions": ["a", "b"]},
                     {"type": "feedback", "merchant": "m", "id": "e0", "reward": 0.0}],
    "groupwise": [{"id": "e0", "time": 1.0, "features": {"age": 20, "sex": "F"}, "groups": ["g"]},
                  {"type": "label", "id": "e0", "label": 0.5, "time": 2.0}],
    "paging": [{"key": "k1", "time": 1.0}, {"key": 7, "id": "e0", "time": 2.0}, {"op": "delete", "key": "k1"}],
    "sor": [{"id": "e0", "time": 1.0, "context": 0.3},
            {"type": "report", "id": "e0", "iterations": 40, "converged": True, "time": 2.0}],
    "submodular": [{"id": "e0", "time": 1.0, "features": [1.0, 0.0, 2.0]}, {"op": "delete", "id": "e0"},
                   {"op": "get"}],
}
VERBS = {"bandit": ("decide", "events"), "bandit-keyed": ("decide", "events"), "groupwise": ("predict", "events"),
         "paging": ("access", "requests"), "sor": ("advise", "requests"), "submodular": ("items", "items")}
FEEDBACK = {"bandit": ("feedback", "feedback"), "groupwise": ("label", "labels"), "sor": ("report", "reports")}

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
           | st.floats(min_value=-1e308, max_value=1e308) | st.text(max_size=12) | st.sampled_from(IDS))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)


@st.composite
def near_valid(draw, family: str) -> dict:
    obj = dict(draw(st.sampled_from(VALID[family])))
    if "id" in obj:  # mostly fresh ids (decided), some of a few (duplicates, feedback that joins)
        obj["id"] = draw(st.one_of(st.uuids().map(str), st.uuids().map(str), st.sampled_from(IDS)))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):  # a valid record one time in three
        op = draw(st.sampled_from(["drop", "replace", "add"]))
        if op == "drop" and obj:
            obj.pop(draw(st.sampled_from(sorted(obj))))
        elif op == "replace" and obj:
            obj[draw(st.sampled_from(sorted(obj)))] = draw(values)
        else:
            obj[draw(st.text(max_size=8))] = draw(values)
    return obj


def encoded(family: str):
    near = near_valid(family).map(lambda o: json.dumps(o).encode())
    return st.one_of(near, near, near, values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64))


def engine(family: str):
    raw = {"name": family, "input_topic": "in", "output_topic": "out", **PIPES[family]}
    return make_core(config.load_dict({"pipelines": [raw]}, env=False).pipelines[0], DaemonMetrics())


def joined(core) -> int:
    """Feedback joined to its event, as the scrape counts it (a keyed engine's live keys and the
    retired sums of those snapshotted out: a count over the live keys alone drops when one goes)."""
    return sum(s.value for s in core.samples() if s.kind == "counter" and s.labels.get("outcome") == "joined")


@pytest.mark.parametrize("family", sorted(PIPES))
def test_every_fuzzed_record_is_decided_dead_lettered_or_joined_and_nothing_raises(family):
    core = engine(family)
    offset = [0]

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(encoded(family), min_size=1, max_size=12))
    def check(batch: list[bytes]) -> None:
        recs = [SourceRecord(v, "in", 0, offset[0] + i) for i, v in enumerate(batch)]
        offset[0] += len(batch)
        before = joined(core)
        outs = core.handle(recs)
        dead = [orjson.loads(o.value) for o in outs if o.kind == "dlq"]
        assert all(isinstance(d["reason"], str) and d["reason"] and d["detail"] for d in dead), dead
        assert len({d["offset"] for d in dead}) == len(dead)
        decided = sum(o.kind == "decision" for o in outs)
        assert decided + len(dead) + joined(core) - before == len(recs), (batch, outs)
        count(family, records=len(recs), dead_letters=len(dead), decisions=decided, joined=joined(core) - before)

    check()
    good = [json.dumps({**VALID[family][0], "id": "fresh-1"} if "id" in VALID[family][0] else VALID[family][0])]
    outs = core.handle([SourceRecord(good[0].encode(), "in", 0, offset[0])])
    assert [o.kind for o in outs] == ["decision"]  # the pipeline still decides


def asgi(app, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "method": method, "path": path, "query_string": b"", "headers":
             [(b"content-type", b"application/json")]}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize("family", sorted(PIPES))
def test_every_fuzzed_sidecar_body_is_answered_200_or_4xx_with_a_reason(family):
    core = engine(family)
    app = Sidecar({family: core}, core.metrics, max_body=4096)
    app.ready = True
    verb, items = VERBS[family]
    fb = FEEDBACK.get(family.removesuffix("-keyed"))
    paths = [f"/v1/pipelines/{family}/{verb}"] + ([f"/v1/pipelines/{family}/{fb[0]}"] if fb else []) + [
        f"/v1/pipelines/{family}/control"]
    one = near_valid(family) | values
    bodies = (one.map(lambda o: json.dumps(o).encode())
              | st.lists(one, max_size=5).map(lambda b: json.dumps({items: b}).encode())
              | st.binary(max_size=64))

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.sampled_from(paths), bodies)
    def check(path: str, body: bytes) -> None:
        status, answer = asgi(app, "POST", path, body)
        assert status == 200 or 400 <= status < 500, (path, body, status, answer)
        if status != 200:
            err = orjson.loads(answer)
            assert err["error"] and err["detail"], err
        count(family, bodies=1, **{f"bodies_{status // 100}xx": 1})

    check()
