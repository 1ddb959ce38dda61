"""Paging pipelines in the daemon: decoding, key bookkeeping, dead letters, resize, checkpoints,
metrics, the sidecar's /access, and a trace slice streamed through the real broker."""

from __future__ import annotations

import json
import lzma
import os

import numpy as np
import orjson
import pytest

from connectors.base import SourceRecord
from daemon import config
from daemon.adapters.paging import int_keys
from daemon.engine import Engine
from daemon.families import make_core
from daemon.metrics import DaemonMetrics
from learners.paging import PagingCache

from .feeding import feed, records


def trace(n=4000):
    path = os.path.join(os.path.dirname(__file__), "data", "cache2k_web12_first20000.txt.xz")
    with lzma.open(path, "rt") as f:
        return [int(line) for line in f if line.strip()][:n]


def paging_cfg(name="edge", learner="paging-learned-discard", **over):
    pc = {"name": name, "learner": learner, "input_topic": f"{name}-in", "output_topic": f"{name}-out",
          "params": {"capacity": 64, "switch_every": 256}, "batch_max_events": 200, "cache_window": 500}
    pc.update(over)
    return config.load_dict({"pipelines": [pc]}, env=False).pipelines[0]


def outputs(core, objs, batch=97):
    return feed(core, objs, batch)


def test_a_paging_pipeline_gets_the_paging_core():
    assert make_core(paging_cfg()).family == "paging"
    with pytest.raises(config.ConfigError, match="shadow_learners.*bandit"):
        paging_cfg(shadow_learners=["linucb"])
    with pytest.raises(config.ConfigError, match="capacity"):
        paging_cfg(params={"capacity": 0})


@pytest.mark.parametrize("learner", ["paging-lru", "paging-arc", "paging-learned-discard"])
def test_outputs_equal_the_learner_and_name_the_original_keys(learner):
    """Hits and evictions are the learner's on the same requests (strings hashed, integers as they
    are), whatever the batches; every evicted key is named as the client sent it."""
    keys = trace(3000)
    rng = np.random.default_rng(0)
    objs = [{"key": f"obj/{k}" if k % 3 else k, "time": float(i)} for i, k in enumerate(keys)]
    for i in rng.choice(len(objs), 40, replace=False).tolist():
        objs[i] = {"key": objs[i]["key"], "op": "delete"}
    core = Engine(paging_cfg(learner=learner))
    outs = outputs(core, objs)
    assert all(o.kind == "decision" for o in outs) and len(outs) == len(objs)
    got = [orjson.loads(o.value) for o in outs]
    ref = PagingCache(learner.removeprefix("paging-"), capacity=64, **(
        {"switch_every": 256} if "learned" in learner else {}))
    ops = np.array([1 if o.get("op") == "delete" else 0 for o in objs])
    r = ref.process({"key": int_keys([o["key"] for o in objs]), "op": ops})
    cached = {}  # int key -> original
    for o, g, h, e, ev, kint in zip(objs, got, r["hit"].tolist(), r["evicts"].tolist(), r["evicted"].tolist(),
                                    int_keys([o["key"] for o in objs]).tolist(), strict=True):
        assert g["key"] == o["key"]
        if o.get("op") == "delete":
            assert g["present"] == (kint in cached)
            cached.pop(kint, None)
            continue
        assert g["hit"] == (h == 1)
        assert g["evicted"] == (cached.pop(ev) if e else None)
        if h == 0:
            cached[kint] = o["key"]
    assert set(core.adapter.keys) == set(core.learner.view()["keys"].tolist()) and len(core.adapter.keys) <= 64


def test_bad_requests_go_to_the_dead_letter_topic_with_the_reason():
    core = Engine(paging_cfg(learner="paging-lru", max_message_bytes=256))
    bad = [b"{nope", b"[1, 2]", orjson.dumps({"op": "get"}), orjson.dumps({"key": 1.5}),
           orjson.dumps({"key": True}), orjson.dumps({"key": ""}), orjson.dumps({"key": "a", "op": "evict"}),
           orjson.dumps({"key": "a", "size": -1}), orjson.dumps({"op": "resize"}),
           orjson.dumps({"op": "resize", "capacity": 0}), orjson.dumps({"key": 2**63}),
           orjson.dumps({"key": "a", "time": "noon"}), orjson.dumps({"key": "x" * 300}),
           orjson.dumps({"key": "a", "id": "r1"}), orjson.dumps({"key": "b", "id": "r1"})]
    outs = core.handle([SourceRecord(v, "edge-in", 0, i) for i, v in enumerate(bad)])
    dl = [orjson.loads(o.value) for o in outs if o.kind == "dlq"]
    assert [d["reason"] for d in dl] == ["malformed_json", "bad_type", "missing_field", "bad_type", "bad_type",
                                         "bad_type", "bad_type", "bad_type", "bad_type", "bad_type", "bad_type",
                                         "bad_type", "oversize", "duplicate_event"]
    assert all(d["offset"] >= 0 and "original" in d for d in dl)
    good = [orjson.loads(o.value) for o in outs if o.kind == "decision"]
    assert [g["key"] for g in good] == ["a"] and good[0]["id"] == "r1"
    reg = core.metrics.registry
    assert reg.get_sample_value("eddy_dead_letter_messages_total", {"pipeline": "edge", "reason": "bad_type"}) == 10


@pytest.mark.parametrize("learner", ["paging-s3fifo", "paging-learned-discard"])
def test_checkpoint_restore_continue_equals_never_stopping(learner):
    keys = trace(3000)
    objs = [{"key": f"k{k}", "id": f"r{i}"} for i, k in enumerate(keys)]
    objs.insert(1500, {"op": "resize", "capacity": 40})
    a = Engine(paging_cfg(learner=learner))
    whole = [o.value for o in outputs(a, objs)]
    b = Engine(paging_cfg(learner=learner))
    first = [o.value for o in outputs(b, objs[:2000])]
    arrays, meta = b.snapshot()
    arrays = {k: v.copy() for k, v in arrays.items()}
    meta = json.loads(json.dumps(meta))
    c = Engine(paging_cfg(learner=learner))
    c.restore(arrays, meta)
    rest = [o.value for o in outputs(c, objs[2000:])]
    assert first + rest == whole
    assert c.learner.capacity == 40 and c.metrics.registry.get_sample_value(
        "eddy_cache_hit_ratio", {"pipeline": "edge", "window": "all"}) == a.learner.metrics()["hit_ratio"]


def test_resize_shrinks_and_grows_the_shadow():
    core = Engine(paging_cfg(learner="paging-lru", params={"capacity": 8}))
    outputs(core, [{"key": i} for i in range(8)])
    (shrink,) = [orjson.loads(o.value) for o in core.handle(records([{"op": "resize", "capacity": 3}]))]
    assert shrink["op"] == "resize" and sorted(shrink["evicted"]) == [0, 1, 2, 3, 4]  # LRU keeps 5, 6, 7
    assert sorted(core.adapter.keys.values()) == [5, 6, 7] and core.learner.capacity == 3
    assert all(s.capacity == 3 for s in core.shadows.values())
    hits = [orjson.loads(o.value)["hit"] for o in core.handle(records([{"key": 7}, {"key": 5}, {"key": 1}]))]
    assert hits == [True, True, False]
    core.handle(records([{"op": "resize", "capacity": 10}]))
    out = [orjson.loads(o.value) for o in core.handle(records([{"key": i} for i in range(20, 27)]))]
    assert all(o["evicted"] is None for o in out) and len(core.adapter.keys) == 10


def test_hit_ratio_gauges_recent_window_and_baseline_shadows():
    keys = trace(4000)  # (a "safe" label waits out the predictor's window, 16 x 64 requests: the bit needs them)
    core = Engine(paging_cfg(learner="paging-learned-discard", cache_window=500))
    got = [orjson.loads(o.value) for o in outputs(core, [{"key": k} for k in keys])]
    hits = np.array([g["hit"] for g in got], dtype=float)
    reg = core.metrics.registry

    def gauge(metric, **labels):
        return reg.get_sample_value(metric, {"pipeline": "edge", **labels})

    assert gauge("eddy_cache_hit_ratio", window="all") == pytest.approx(hits.mean())
    assert gauge("eddy_cache_hit_ratio", window="recent") == pytest.approx(hits[-500:].mean())
    for policy in ("lru", "s3fifo"):
        ref = PagingCache(policy, capacity=64).process({"key": np.array(keys)})
        assert gauge("eddy_cache_shadow_hit_ratio", policy=f"paging-{policy}") == pytest.approx(
            (ref["hit"] == 1).mean())
    assert gauge("eddy_cache_requests_total", result="hit") == hits.sum()
    assert gauge("eddy_cache_evictions_total") == sum(g["evicted"] is not None for g in got)
    assert 0 < gauge("eddy_cache_bit_precision_ratio") <= 1
    assert gauge("eddy_cache_history_capacity_entries") == 65_536


def test_sidecar_access_batch_single_retry_and_wrong_routes():
    from .conftest import served
    from .test_sidecar import call as http_call

    metrics = DaemonMetrics()
    core = Engine(paging_cfg(learner="paging-arc"), metrics)
    with served({"edge": core}) as port:

        def call(path, body):
            return http_call(port, "POST", path, body, token="")

        st, res = call("/v1/pipelines/edge/access", {"requests": [{"key": "a"}, {"key": "b"}, {"key": "a"}]})
        assert st == 200 and [r["hit"] for r in res["results"]] == [False, False, True]
        st, one = call("/v1/pipelines/edge/access", {"key": "c", "id": "q1"})
        assert st == 200 and one["hit"] is False and one["id"] == "q1"
        st, again = call("/v1/pipelines/edge/access", {"key": "c", "id": "q1"})
        assert (st, again) == (200, one)  # a retried id is answered, not replayed
        assert core.learner.metrics()["requests"] == 4
        st, res = call("/v1/pipelines/edge/access", {"requests": [{"key": "d"}, {"key": 1.5}]})
        assert st == 200 and res["results"][1]["error"] == "bad_type" and "item 1" in res["results"][1]["detail"]
        assert core.learner.metrics()["requests"] == 5  # the valid request reached the cache, the bad one not
        st, err = call("/v1/pipelines/edge/decide", {"id": "x"})
        assert st == 404 and "paging pipeline" in err["detail"]


@pytest.mark.kafka
def test_a_trace_slice_through_the_broker_matches_the_reference(broker, tmp_path):
    """The web12 slice as request records on a real topic, through the daemon (learned-discard),
    read back from the output topic: every answer equals the learner's on the same keys."""
    from .feeding import through_broker

    keys = trace(5000)
    pc = {"name": "cdn", "learner": "paging-learned-discard", "input_topic": "cdn-in", "output_topic": "cdn-out",
          "params": {"capacity": 100, "switch_every": 512}, "batch_max_events": 300}
    raw = [orjson.dumps({"key": f"/img/{k}", "id": f"q{i}"}) for i, k in enumerate(keys)] + [b'{"key": null}']
    got, dlq, _ = through_broker(broker, tmp_path, pc, raw, len(keys), 1, every_events=1000)
    assert [g["id"] for g in got] == [f"q{i}" for i in range(len(keys))]
    ref = PagingCache("learned-discard", capacity=100, switch_every=512).process(
        {"key": int_keys([f"/img/{k}" for k in keys])})
    assert [g["hit"] for g in got] == (ref["hit"] == 1).tolist()
    names = {int(v): f"/img/{k}" for k, v in zip(keys, int_keys([f"/img/{k}" for k in keys]).tolist(), strict=True)}
    assert [g["evicted"] for g in got] == [names[int(e)] if x else None
                                          for e, x in zip(ref["evicted"], ref["evicts"], strict=True)]
    assert [x["reason"] for x in dlq] == ["missing_field"]


def test_replay_trace_prints_the_table_and_writes_png_and_json(tmp_path, capsys):
    from daemon.cli import main

    path = os.path.join(os.path.dirname(__file__), "data", "cache2k_web12_first20000.txt.xz")
    png, js = tmp_path / "mr.png", tmp_path / "mr.json"
    assert main(["replay", "--trace", path, "--limit", "3000", "--sizes", "0.01,50,0.1",
                 "--policies", "lru,arc,learned-discard", "--plot", str(png), "--json", str(js)]) == 0
    text = capsys.readouterr().out
    assert "lru" in text and "belady (OPT)" in text and "3000 requests" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    rows = json.loads(js.read_text())["rows"]
    keys = trace(3000)
    sizes = sorted({r["cache_size"] for r in rows})
    assert 50 in sizes and len(sizes) == 3
    for r in rows:
        if r["policy"] != "belady (OPT)":
            ref = PagingCache(r["policy"], capacity=r["cache_size"]).process({"key": np.array(keys)})
            assert r["misses"] == int((ref["hit"] == 0).sum())
        assert r["misses"] >= min(q["misses"] for q in rows if q["cache_size"] == r["cache_size"])
    opt = {r["cache_size"]: r["misses"] for r in rows if r["policy"] == "belady (OPT)"}
    assert all(r["misses"] >= opt[r["cache_size"]] for r in rows)
    assert main(["replay", "--trace", path, "--policies", "robust-discard"]) == 2  # needs bits: refused


def test_byte_capacity_mode_sizes_lists_of_evictions_and_resizes():
    rng = np.random.default_rng(4)
    keys = trace(2500)
    sizes = rng.integers(100, 5000, len(keys))
    sizes[::97] = 60_000  # larger than the cache: never admitted
    objs = [{"key": f"o{k}", "size": int(z)} for k, z in zip(keys, sizes, strict=True)]
    pc = paging_cfg(learner="paging-learned-discard", params={"capacity": 200, "byte_capacity": 50_000,
                                                              "switch_every": 256})
    core = Engine(pc)
    got = [orjson.loads(o.value) for o in outputs(core, objs)]
    ref = PagingCache("learned-discard", capacity=200, byte_capacity=50_000, switch_every=256).process(
        {"key": int_keys([o["key"] for o in objs]), "size": sizes})
    assert [g["hit"] for g in got] == (ref["hit"] == 1).tolist()
    assert sum(len(g["evicted"]) for g in got) == len(ref["evicted_keys"])
    assert all(isinstance(g["evicted"], list) for g in got) and any(len(g["evicted"]) > 1 for g in got)
    big = [g for g, z in zip(got, sizes.tolist(), strict=True) if z > 50_000 and not g["hit"]]
    assert big and all(g["evicted"] == [] for g in big)  # a miss too large to admit evicts nothing
    assert set(core.adapter.keys) == set(core.learner.view()["keys"].tolist())
    held = core.learner._st["real/fsize"][core.learner._st["real/fkey"] != np.iinfo(np.int64).min].sum()
    assert held <= 50_000
    (dl,) = [orjson.loads(o.value) for o in core.handle(records([{"key": "z"}]))]
    assert dl["reason"] == "missing_field" and "size" in dl["detail"]
    (rs,) = [orjson.loads(o.value) for o in core.handle(records([{"op": "resize", "bytes": 10_000}]))]
    assert rs["bytes"] == 10_000 and len(rs["evicted"]) > 0 and core.learner.byte_capacity == 10_000
    assert all(s.byte_capacity == 10_000 for s in core.shadows.values())
    assert set(core.adapter.keys) == set(core.learner.view()["keys"].tolist())
    arrays, meta = core.snapshot()
    again = Engine(pc)
    again.restore(arrays, json.loads(json.dumps(meta)))
    assert again.learner.byte_capacity == 10_000 and again.adapter.keys == core.adapter.keys
    with pytest.raises(config.ConfigError, match="byte-capacity"):
        paging_cfg(learner="paging-lru", params={"capacity": 10, "byte_capacity": 100}, shadow_learners=["paging-arc"])


def test_sizes_beyond_the_bounds_are_dead_lettered_not_fatal():
    """A resize to 10**13 pages tried to allocate 256 TiB and an object size of 2**63 overflowed,
    raising out of the engine again at every restart: both are bad records now."""
    core = Engine(paging_cfg(learner="paging-lru"))
    bytes_core = Engine(paging_cfg(learner="paging-lru", params={"capacity": 64, "byte_capacity": 10_000}))
    for c, obj in ((core, {"op": "resize", "capacity": 10**13}), (bytes_core, {"key": "b", "size": 2**63}),
                   (bytes_core, {"op": "resize", "bytes": 2**64 - 1})):
        (dl,) = c.handle(records([obj]))
        assert dl.kind == "dlq" and orjson.loads(dl.value)["reason"] == "bad_type"
    (ok,) = bytes_core.handle(records([{"key": "b", "size": 10}]))  # the cache works on
    assert orjson.loads(ok.value)["hit"] is False
