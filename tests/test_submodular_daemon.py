"""Summary pipelines in the daemon: inserts, deletes and gets through the engine, their outputs and
dead letters, TTLs and the window, the library run as the reference, the sidecar, the real broker."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from daemon import config
from daemon.engine import Engine
from learners._hashing import event_keys
from learners.submodular import SubmodularSummary

from .feeding import feed

PARAMS = {"objective": "feature-based", "d": 4, "k": 3, "capacity": 256}


def cfg(name="sum", **over):
    pc = {"name": name, "learner": "submodular-dynamic", "input_topic": f"{name}-in", "output_topic": f"{name}-out",
          "params": dict(PARAMS)}
    pc.update(over)
    return config.load_dict({"pipelines": [pc]}, env=False).pipelines[0]


def stream(n: int, seed: int) -> list[dict]:
    """Inserts with event times, deletes of live items now and then, and a get."""
    rng = np.random.default_rng(seed)
    live: list[str] = []
    out: list[dict] = []
    for i in range(n):
        t = float(i)
        if live and rng.random() < 0.3:
            out.append({"op": "delete", "id": live.pop(int(rng.integers(len(live)))), "time": t})
        elif i % 50 == 25:
            out.append({"op": "get", "time": t})
        else:
            x = rng.exponential(size=4) * (rng.random(4) < 0.6)
            out.append({"id": f"it{i}", "features": [round(float(v), 4) for v in x], "time": t})
            live.append(f"it{i}")
    return out


def library_run(ops: list[dict], **params) -> list[list[str]]:
    """The learner fed the same operations directly: the served ids after each valid one."""
    s = SubmodularSummary(**{**PARAMS, **params})
    ids: dict[int, str] = {}
    sols = []
    for o in ops:
        if o.get("op") == "get":
            sols.append([ids[int(k)] for k in s.view()["keys"]])
            continue
        key = event_keys([o["id"]])[0]
        op = 1 if o.get("op") == "delete" else 0
        feats = np.array([o.get("features", [0.0] * 4)], dtype=np.float64)
        st = s.process({"op": np.array([op], np.int8), "item_key": np.array([key], np.uint64), "features": feats,
                        "time": np.array([o["time"]])})["status"][0]
        if st == 0:
            if op == 0:
                ids[int(key)] = o["id"]
            sols.append([ids[int(k)] for k in s.view()["keys"]])
    return sols


def solutions(outs) -> list[list[str]]:
    """The served set after each output, from the outputs' changes alone."""
    cur: list[str] = []
    got = []
    for o in outs:
        if o.kind != "decision":
            continue
        d = orjson.loads(o.value)
        if "solution" in d:
            assert sorted(set(cur) - set(d["solution"])) == sorted(d["removed"])
            assert sorted(set(d["solution"]) - set(cur)) == sorted(d["added"])
            cur = d["solution"]
        else:
            assert not d["changed"]
        got.append(list(cur))
    return got


def test_the_pipeline_serves_what_the_library_serves_and_names_every_change():
    ops = stream(300, seed=1)
    core = Engine(cfg())
    outs = feed(core, ops)
    assert not [o for o in outs if o.kind == "dlq"]
    got = solutions(outs)
    assert got == library_run(ops)
    last = orjson.loads([o for o in outs if o.kind == "decision"][-1].value)
    assert last["size"] == len(got[-1]) <= 3 and last["value"] > 0
    assert core.adapter.solution()["solution"] == got[-1]
    reg, lbl = core.metrics.registry, {"pipeline": "sum"}
    n_ins = sum("features" in o for o in ops)
    assert reg.get_sample_value("eddy_summary_operations_total", {**lbl, "kind": "inserts"}) == n_ins
    assert reg.get_sample_value("eddy_summary_live_items", lbl) == core.adapter.solution()["live_items"]
    assert reg.get_sample_value("eddy_summary_oracle_calls_total", lbl) > 0
    assert reg.get_sample_value("eddy_summary_value", lbl) == pytest.approx(last["value"])


def test_the_ratio_to_lazy_greedy_and_the_update_latency_are_exported():
    core = Engine(cfg(greedy_check_every=50))
    feed(core, stream(200, seed=5))
    reg, lbl = core.metrics.registry, {"pipeline": "sum"}
    ratio = reg.get_sample_value("eddy_summary_greedy_ratio", lbl)
    assert ratio is not None and 0.5 <= ratio <= 1.0 + 1e-9
    lrn = core.adapter.learner
    assert ratio == pytest.approx(float(lrn.view()["value"][0]) / lrn.offline_greedy()) or len(lrn) == 0
    n_upd = sum(1 for o in stream(200, seed=5) if o.get("op") != "get")
    assert reg.get_sample_value("eddy_summary_update_seconds_count", lbl) == n_upd
    assert reg.get_sample_value("eddy_summary_update_seconds_sum", lbl) > 0


def test_bad_operations_are_dead_lettered_with_their_reason_and_change_nothing():
    core = Engine(cfg())
    outs = feed(core, [
        {"id": "a", "features": [1, 0, 0, 0]},
        {"id": "a", "features": [0, 1, 0, 0]},  # live already
        {"op": "delete", "id": "nobody"},
        {"id": "b", "features": [1, -1, 0, 0]},  # negative: feature-based objectives refuse it
        {"id": "c", "features": [1, 0]},
        {"id": "d", "features": "x"},
        {"id": "e"},
        {"op": "drop", "id": "a"},
        {"id": "f", "features": [0, 0, 1, 0], "ttl": -1},
        {"op": "delete", "id": "a"},
        {"op": "delete", "id": "a"},  # not live any more
    ])
    reasons = [orjson.loads(o.value)["reason"] for o in outs if o.kind == "dlq"]
    assert sorted(reasons) == sorted(["duplicate_item", "unknown_item", "bad_features", "bad_features",
                                      "bad_features", "missing_field", "bad_type", "bad_type", "unknown_item"])
    decided = [orjson.loads(o.value) for o in outs if o.kind == "decision"]
    assert [(d["op"], d["id"]) for d in decided] == [("insert", "a"), ("delete", "a")]
    assert core.adapter.solution() == {"pipeline": "sum", "solution": [], "value": 0.0, "live_items": 0}


def test_ttls_the_pipeline_default_and_the_window_expire_items_without_deletes():
    core = Engine(cfg(item_ttl_s=10.0, params={**PARAMS, "window": 5}))
    ops = [{"id": f"x{i}", "features": [1.0 + i, 0, 0, 0] if i % 2 else [0, 1.0, 0, 0], "time": float(i)}
           for i in range(8)]
    ops[3]["ttl"] = 2.0  # x3 leaves at time 5
    feed(core, ops)
    live = core.adapter.solution()["live_items"]
    assert live == 5  # x3 left by its ttl at time 5, then the window of 5 pushed out x0 and x1
    outs = feed(core, [{"op": "get", "time": 16.5}])  # x4, x5, x6 past their 10 s
    d = orjson.loads(outs[0].value)
    assert d["solution"] == ["x7"] and core.adapter.solution()["live_items"] == 1
    reg, lbl = core.metrics.registry, {"pipeline": "sum"}
    assert reg.get_sample_value("eddy_summary_operations_total", {**lbl, "kind": "expired"}) == 7


def test_named_features_and_coverage_items_are_hashed_into_the_objective():
    core = Engine(cfg(params={"objective": "coverage", "m": 64, "max_nnz": 8, "k": 2, "capacity": 16}))
    outs = feed(core, [{"id": "p", "features": ["sports", "politics"]},
                       {"id": "q", "features": {"sports": 1.0}},
                       {"id": "r", "features": {"music": 3.0, "art": 1.0}},
                       {"id": "s", "features": [1, 2, 200]},
                       {"id": "t", "features": {"x": -1.0}}])
    assert sorted(orjson.loads(o.value)["reason"] for o in outs if o.kind == "dlq") == ["bad_features"] * 2
    assert sorted(core.adapter.solution()["solution"]) == ["p", "r"]
    dense = Engine(cfg(params={**PARAMS, "k": 1}))
    feed(dense, [{"id": "a", "features": {"u": 1.0, "v": 2.0}}, {"id": "b", "features": {"u": 0.5}}])
    assert dense.adapter.solution()["solution"] == ["a"]


def test_sidecar_items_and_the_current_solution():
    from .conftest import served
    from .test_sidecar import call as http_call

    core = Engine(cfg())
    with served({"sum": core}) as port:
        def call(method, path, body=None):
            return http_call(port, method, path, body, token="")

        st, d = call("POST", "/v1/pipelines/sum/items", {"id": "a", "features": [1, 0, 0, 0]})
        assert st == 200 and d["solution"] == ["a"] and d["added"] == ["a"]
        st, res = call("POST", "/v1/pipelines/sum/items", {"items": [{"id": "b", "features": [0, 2, 0, 0]},
                                                                    {"op": "delete", "id": "a"}]})
        assert st == 200 and [r["op"] for r in res["results"]] == ["insert", "delete"]
        st, err = call("POST", "/v1/pipelines/sum/items", {"op": "delete", "id": "a"})
        assert st == 404 and err["error"] == "unknown_item"
        st, err = call("POST", "/v1/pipelines/sum/items", {"id": "b", "features": [0, 2, 0, 0]})
        assert st == 409 and err["error"] == "duplicate_item"
        st, cur = call("GET", "/v1/pipelines/sum/solution")
        assert st == 200 and cur["solution"] == ["b"] and cur["live_items"] == 1
        st, _ = call("GET", "/v1/pipelines/sum/nothing")
        assert st == 404


@pytest.mark.kafka
def test_an_insert_delete_stream_with_a_window_through_the_broker_matches_the_library(broker, tmp_path):
    from .feeding import through_broker

    pc = {"name": "sumk", "learner": "submodular-dynamic", "input_topic": "sumk-in", "output_topic": "sumk-out",
          "batch_max_events": 40, "params": {**PARAMS, "window": 40}}
    ops = stream(240, seed=3)
    raw = [orjson.dumps(o) for o in ops] + [b'{"op": "delete", "id": "ghost"}']
    n_out = len(ops)
    got, dlq, _ = through_broker(broker, tmp_path, pc, raw, n_out, 1, every_events=100)
    assert [x["reason"] for x in dlq] == ["unknown_item"]

    class Out:
        kind = "decision"

        def __init__(self, d):
            self.value = orjson.dumps(d)

    ref = library_run(ops, window=40)
    assert solutions([Out(d) for d in got]) == ref[:len(got)] and len(got) == len(ref)
