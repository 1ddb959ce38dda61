"""Keyed pipelines (daemon.keyed): one engine per key value, bounded by key_cap per partition."""

from __future__ import annotations

import json
import random

import orjson
import pytest

from daemon import config
from daemon.engine import Engine
from daemon.keyed import KeyedEngine
from daemon.metrics import DaemonMetrics

from .feeding import records

KEYS = ["m1", "m2", "m3", "m4", "m5"]
BASE = {
    "bandit": {"learner": "squarecb", "n_features": 8, "learn_every_events": 3, "reward_wait_s": 20.0,
               "shadow_learners": ["linucb"]},
    "groupwise": {"learner": "groupwise-mixture", "n_features": 8, "learn_every_events": 3, "reward_wait_s": 20.0,
                  "params": {"groups": ["g"]}},
    "paging": {"learner": "paging-learned-discard", "params": {"capacity": 4, "switch_every": 8, "history_cap": 64}},
}


def pc(family: str, **over):
    raw = {"name": "k", "input_topic": "in", "output_topic": "out", **BASE[family], **over}
    return config.load_dict({"pipelines": [raw]}, env=False).pipelines[0]


def stream(family: str, n: int = 300, seed: int = 0) -> list[dict]:
    """Events of five merchants, interleaved (m1 the busiest), with feedback a few events later."""
    rng = random.Random(seed)
    out: list[dict] = []
    waiting: list[tuple[int, dict]] = []
    for i in range(n):
        m = KEYS[min(int(rng.expovariate(0.7)), 4)]
        t = float(i)
        if family == "paging":
            out.append({"merchant": m, "key": f"p{int(12 * rng.random() ** 2)}", "time": t})
            continue
        if family == "bandit":
            out.append({"merchant": m, "id": f"e{i}", "time": t, "features": {"x": round(rng.random(), 3)},
                        "actions": ["a", "b", "c"]})
            fb = {"type": "feedback", "merchant": m, "id": f"e{i}", "reward": round(rng.random(), 3)}
        else:
            out.append({"merchant": m, "id": f"e{i}", "time": t, "features": {"x": round(rng.random(), 3)},
                        "groups": ["g"] if i % 2 else []})
            fb = {"type": "label", "merchant": m, "id": f"e{i}", "label": round(rng.random(), 3)}
        waiting.append((i + rng.randint(1, 6), {**fb, "time": t + 1}))
        while waiting and min(w[0] for w in waiting) <= i:
            j = min(range(len(waiting)), key=lambda q: waiting[q][0])
            out.append(waiting.pop(j)[1])
    return out


def run(core, objs, batch=23, start=0):
    recs = records(objs, start=start)
    outs = []
    for i in range(0, len(recs), batch):
        outs += core.handle(recs[i:i + batch])
    return outs


def decisions(outs) -> list[dict]:
    res = []
    for o in outs:
        assert o.kind == "decision", orjson.loads(o.value)
        res.append(orjson.loads(o.value))
    return res


@pytest.mark.parametrize("family", sorted(BASE))
def test_each_key_decides_as_an_unkeyed_pipeline_fed_only_its_records(family):
    objs = stream(family)
    keyed = decisions(run(KeyedEngine(pc(family, key_by="merchant")), objs))
    alone: dict[str, list[dict]] = {}
    for m in KEYS:
        mine = [o for o in objs if o["merchant"] == m]
        alone[m] = decisions(run(Engine(pc(family)), mine))
    # The keyed outputs, in log order, interleave the per-key ones exactly
    order = [o["merchant"] for o in objs if o.get("type") in (None, "event")]
    it = {m: iter(v) for m, v in alone.items()}
    assert keyed == [next(it[m]) for m in order]
    assert all(next(v, None) is None for v in it.values())


@pytest.mark.parametrize("family", sorted(BASE))
def test_a_key_snapshotted_out_and_back_equals_one_that_never_left(family):
    objs = stream(family, seed=1)
    whole = KeyedEngine(pc(family, key_by="merchant"))
    small = KeyedEngine(pc(family, key_by="merchant", key_cap=1))
    assert decisions(run(whole, objs)) == decisions(run(small, objs))
    assert small.evictions["snapshotted"] > 50 and small.restores > 50 and small.evictions["dropped"] == 0
    assert len(small.cells) == 1 and len(whole.cells) == 5
    # the families' counters are the sums over the keys, whether they are live or not
    summed = lambda e: {(s.name, tuple(sorted(s.labels.items()))): s.value  # noqa: E731
                        for s in e.samples() if s.kind == "counter" and not s.name.startswith("eddy_key")}
    assert summed(small) == summed(whole) and summed(whole)


def test_a_full_cold_store_drops_keys_with_a_counter_and_they_start_afresh():
    objs = stream("bandit", seed=2)
    core = KeyedEngine(pc("bandit", key_by="merchant", key_cap=1, key_cold_bytes=0))
    outs = run(core, objs)
    dl = [orjson.loads(o.value) for o in outs if o.kind == "dlq"]
    assert core.evictions["dropped"] == core.evictions["snapshotted"] > 0 and core.restores == 0
    assert dl and {d["reason"] for d in dl} <= {"unknown_event"}  # feedback of a dropped key's event
    s = {(x.name, tuple(x.labels.items())): x.value for x in core.samples() if x.name.startswith("eddy_key")}
    assert s[("eddy_key_evictions", (("outcome", "dropped"),))] == core.evictions["dropped"]


def test_the_cap_is_per_partition():
    objs = stream("paging", n=200, seed=3)
    core = KeyedEngine(pc("paging", key_by="merchant", key_cap=2))
    recs = records(objs)
    for r, o in zip(recs, objs, strict=True):  # as a producer keying by merchant: a key on one partition
        r.partition = KEYS.index(o["merchant"]) % 2  # (m1, m3, m5 on 0; m2, m4 on 1)
    core.handle(recs)
    assert sorted(len(v) for v in core.recent.values()) == [2, 2] and len(core.cells) == 4
    live = {x.labels["partition"]: x.value for x in core.samples()
            if x.name == "eddy_keys" and x.labels["state"] == "live"}
    assert live == {"in:0": 2, "in:1": 2}


@pytest.mark.parametrize("cap", [100, 2])
def test_checkpoint_restore_continue_equals_never_stopping(cap):
    objs = stream("bandit", seed=4)
    whole = decisions(run(KeyedEngine(pc("bandit", key_by="merchant", key_cap=cap)), objs))
    a = KeyedEngine(pc("bandit", key_by="merchant", key_cap=cap))
    first = decisions(run(a, objs[:170]))
    arrays, meta = a.snapshot()
    json.dumps(meta)  # the metadata is JSON (the checkpoint's commit file)
    b = KeyedEngine(pc("bandit", key_by="merchant", key_cap=cap))
    b.restore(arrays, meta)
    assert first + decisions(run(b, objs[170:], start=170)) == whole
    with pytest.raises(ValueError, match="keyed by 'merchant'"):
        KeyedEngine(pc("bandit", key_by="tenant")).restore(arrays, meta)
    with pytest.raises(ValueError, match="keyed by 'merchant', this one is not keyed"):
        Engine(pc("bandit")).restore(arrays, meta)


def test_records_without_a_usable_key_are_dead_lettered_with_the_reason():
    core = KeyedEngine(pc("bandit", key_by="merchant"))
    bad = [{"id": "x1", "features": {"x": 1.0}, "actions": ["a"]},
           {"merchant": True, "id": "x2", "features": {"x": 1.0}, "actions": ["a"]},
           {"merchant": "", "id": "x3", "features": {"x": 1.0}, "actions": ["a"]},
           {"merchant": ["m"], "id": "x4", "features": {"x": 1.0}, "actions": ["a"]},
           b"{not json", [1, 2]]
    good = {"merchant": 7, "id": "ok", "features": {"x": 1.0}, "actions": ["a", "b"]}
    outs = core.handle(records([*bad, good]))
    reasons = [orjson.loads(o.value)["reason"] for o in outs if o.kind == "dlq"]
    assert reasons[:4] == ["missing_key", "bad_key", "bad_key", "bad_key"] and len(reasons) == 6
    assert [orjson.loads(o.value)["id"] for o in outs if o.kind == "decision"] == ["ok"]
    assert list(core.cells) == ["7"]  # an integer key reads as its decimal string
    assert core.metrics.registry.get_sample_value("eddy_dead_letter_messages_total",
                                                  {"pipeline": "k", "reason": "missing_key"}) == 1


def test_sidecar_verbs_route_by_key_and_check_every_object_first():
    m = DaemonMetrics()
    core = KeyedEngine(pc("bandit", key_by="merchant"), m)
    ev = lambda i, k: {"merchant": k, "id": f"h{i}", "time": 1.0, "features": {"x": 0.5},  # noqa: E731
                       "actions": ["a", "b"]}
    res = core.submit([ev(1, "m1"), ev(2, "m2"), ev(3, "m1")])
    assert [r["id"] for r in res] == ["h1", "h2", "h3"] and set(core.cells) == {"m1", "m2"}
    assert core.submit([ev(1, "m1")]) == [res[0]]  # a retry gets its first answer
    from daemon.records import BadRecord

    with pytest.raises(BadRecord, match="item 1"):
        core.submit([ev(4, "m3"), {"id": "h5", "features": {}}])
    assert "m3" not in core.cells  # nothing was processed
    fb = core.feedback([{"merchant": "m1", "id": "h1", "reward": 1.0}, {"merchant": "m9", "id": "h2", "reward": 1.0},
                        {"id": "h2", "reward": 1.0}])
    assert [f["status"] for f in fb] == ["joined", "rejected", "rejected"]
    assert fb[1]["reason"] == "unknown_event" and fb[2]["reason"] == "missing_key"
    assert "m9" not in core.cells
    core.control(True)
    assert all(c.adapter.force_default for c in core.cells.values())
    assert m.registry.get_sample_value("eddy_force_default", {"pipeline": "k"}) == 1


def test_feedback_keyed_by_the_kafka_record_key_joins_its_event():
    from connectors.base import SourceRecord

    core = KeyedEngine(pc("bandit", key_by="merchant"))
    ev = {"merchant": "m1", "id": "e1", "time": 1.0, "features": {"x": 1.0}, "actions": ["a", "b"]}
    fb = {"type": "feedback", "id": "e1", "time": 2.0, "reward": 1.0}
    outs = core.handle([SourceRecord(orjson.dumps(ev), "in", 0, 0),
                        SourceRecord(orjson.dumps(fb), "in", 0, 1, key=b"m1"),
                        SourceRecord(orjson.dumps({**fb, "id": "e2"}), "in", 0, 2, key=b"\xff")])
    assert [o.kind for o in outs] == ["decision", "dlq"] and orjson.loads(outs[1].value)["reason"] == "bad_key"
    assert core.cells["m1"].outcomes["joined"] == 1


@pytest.mark.parametrize("family", ["bandit", "paging"])
def test_a_partitions_keys_move_to_another_owner_and_continue_as_if_they_never_moved(family):
    """Daemon A owns both partitions, then hands partition 1 to daemon B (its snapshot, as a
    changelog record carries it): A's and B's outputs together are one daemon's."""
    objs = stream(family, n=400, seed=5)
    recs = records(objs)
    for r, o in zip(recs, objs, strict=True):
        r.partition = KEYS.index(o["merchant"]) % 2
    one = KeyedEngine(pc(family, key_by="merchant", key_cap=2))
    whole = [o.value for o in one.handle(recs)]
    a = KeyedEngine(pc(family, key_by="merchant", key_cap=2))
    cut = 200
    got = [o.value for o in a.handle(recs[:cut])]
    arrays, meta = a.snapshot_partition("in:1")
    a.release("in:1")
    assert all(a.home[k] == "in:0" for k in a.home) and a.partitions() == ["in:0"]
    b = KeyedEngine(pc(family, key_by="merchant", key_cap=2))
    b.restore_partition(arrays, meta)
    rest = {0: [], 1: []}
    for r in recs[cut:]:
        rest[r.partition].append(r)
    out_a = iter(o.value for o in a.handle(rest[0]))
    out_b = iter(o.value for o in b.handle(rest[1]))
    for r in recs[cut:]:  # merged in log order (one output per record here: no dead letters)
        if not (family != "paging" and orjson.loads(r.value).get("type") == "feedback"):
            got.append(next(out_a if r.partition == 0 else out_b))
    assert got == whole


def test_a_keyed_pipeline_over_http_decides_per_key_and_shows_one_keys_view():
    import openapi_spec_validator

    from .conftest import served
    from .test_sidecar import call

    m = DaemonMetrics()
    raw = {"name": "sum", "learner": "submodular-dynamic", "input_topic": "in", "output_topic": "out",
           "params": {"objective": "feature-based", "d": 3, "k": 2, "capacity": 64}, "key_by": "tenant",
           "key_cap": 1}
    core = KeyedEngine(config.load_dict({"pipelines": [raw]}, env=False).pipelines[0], m)
    core.learner.warm_up()  # (as the daemon does at start: no compilation inside a timed-out request)
    with served({"sum": core}) as port:
        items = [{"tenant": t, "id": f"{t}-{i}", "time": float(i), "features": [i % 3, 1, 0]}
                 for i in range(4) for t in ("acme", "zeta")]
        st, res = call(port, "POST", "/v1/pipelines/sum/items", {"items": items}, token="")
        assert st == 200 and len(res["results"]) == 8
        st, view = call(port, "GET", "/v1/pipelines/sum/solution?key=acme", token="")
        assert st == 200 and view["key"] == "acme" and view["solution"] and all(k.startswith("acme-") for k in view["solution"])
        assert view["live_items"] == 4
        assert core.restores >= 1  # acme had gone cold (key_cap 1): the view restored it
        st, err = call(port, "GET", "/v1/pipelines/sum/solution", token="")
        assert (st, err["error"]) == (400, "missing_key")
        st, err = call(port, "GET", "/v1/pipelines/sum/solution?key=nobody", token="")
        assert (st, err["error"]) == (404, "unknown_key")
        st, doc = call(port, "GET", "/v1/openapi.json", token="")
        assert st == 200
        openapi_spec_validator.validate(doc)
        (param,) = doc["paths"]["/v1/pipelines/sum/solution"]["get"]["parameters"]
        assert param["name"] == "key" and param["required"]
