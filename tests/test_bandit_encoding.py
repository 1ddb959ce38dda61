"""The bandit pipeline's batch paths against their row-by-row references.

* ``DecisionTemplate`` (the Kafka path's decision JSON, one kernel call per run) against the
  decision dict through orjson, on awkward ids and action names.
* ``FeatureHasher.sparse_many`` (a run's features hashed at once) against ``sparse`` per map.
* Features hashed with their run (checked at decoding): dead letters keep log order whatever
  the micro-batches, and a rejected id is not remembered.
"""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest

from connectors.base import SourceRecord
from daemon.adapters.bandit import DecisionTemplate, Event
from learners._hashing import FeatureHasher

from .test_pipeline_core import core_for

AWKWARD = ["a", 'q"uote', "back\\slash", "per%cent", "%s%b%%", '","', "ünï\u2028", "tab\tnl\n", "", "x" * 300]


def reference(pipeline, ev, action, prob, offered, prow, version, explored):
    return {"id": ev.id, "pipeline": pipeline, "action": action, "prob": prob,
            "probs": dict(zip(offered, prow, strict=True)), "model_version": version, "explored": explored,
            "default": False, "reason": None, "time": ev.time, "replay": ev.replay}


@pytest.mark.parametrize("seed", range(4))
def test_the_decision_template_writes_what_the_dict_would(seed):
    rng = random.Random(seed)
    actions = rng.sample(AWKWARD, rng.randint(1, len(AWKWARD)))
    pipeline = rng.choice(["routing", 'p"%s\\'])
    tmpl = DecisionTemplate(pipeline, actions)
    n = rng.randint(1, 40)
    run = []
    for i in range(n):
        eid = rng.choice([f"tx-{i}", f'{rng.choice(AWKWARD)}-{i}', f'\\",{i}"', f'",",{i}'])
        rec = SourceRecord(b"", replay=rng.random() < 0.3)
        run.append(Event(eid, rng.choice([None, rng.uniform(-1e9, 1e9), 0.0, 1e-300]), None, None, None, None,
                         None, rec))
    k = len(actions)
    probs = np.random.default_rng(seed).dirichlet(np.ones(k), size=n)
    probs[0, 0] = 1e-17  # tiny and exponent forms
    chosen = [rng.randrange(k) for _ in range(n)]
    prob = probs[np.arange(n), chosen]
    versions = [rng.randrange(10**9) for _ in range(n)]
    explored = [rng.random() < 0.5 for _ in range(n)]
    texts = tmpl.encode(run, chosen, prob, probs.ravel(), versions, explored)
    assert len(texts) == n
    for i, text in enumerate(texts):
        want = reference(pipeline, run[i], actions[chosen[i]], float(prob[i]), actions, probs[i].tolist(),
                         versions[i], explored[i])
        assert orjson.loads(text) == want
        assert list(orjson.loads(text)) == list(want)  # the same keys in the same order


@pytest.mark.parametrize("ids", [["a", "b"], ['",', "c"], ['x","y', "z"], ["only"], ["\\", '\\"', '","",""'],
                                 ["\u2028\n", ""]])
def test_the_decision_kernel_on_edge_cases(ids):
    # One action, the extremes of the integer and number columns, strings that hold the
    # separators the kernel scans for.
    tmpl = DecisionTemplate("p", ["only-action"])
    run = [Event(eid, t, None, None, None, None, None, SourceRecord(b"", replay=bool(i % 2)))
           for i, (eid, t) in enumerate(zip(ids, [None, 1e300, -0.0, 5e-324, 1.0, 2.0], strict=False))]
    n = len(run)
    probs = np.ones(n)
    versions = [0, 2**62, 7, 10, 99, 100][:n]
    texts = tmpl.encode(run, [0] * n, probs, probs, versions, [True] * n)
    for i, text in enumerate(texts):
        assert orjson.loads(text) == reference("p", run[i], "only-action", 1.0, ["only-action"], [1.0],
                                               versions[i], True)
    assert tmpl.encode([], [], np.ones(0), np.ones(0), [], []) == []


@pytest.mark.parametrize("seed", range(3))
def test_sparse_many_equals_sparse_row_by_row(seed):
    rng = random.Random(seed)
    names = [f"f{i}" for i in range(60)] + AWKWARD
    for cache in (2, 10, 100_000):  # tiny caches evict names within one call
        h, ref = FeatureHasher(rng.choice([1, 7, 64]), cache), FeatureHasher(1, 1)
        ref.n_features = h.n_features
        for _ in range(20):
            maps = [{nm: rng.choice([1, -3, 2.5, 0.0, 1e300, 2**70]) for nm in rng.sample(names, rng.randint(0, 12))}
                    for _ in range(rng.randint(0, 9))]
            cols, vals, lens = h.sparse_many(maps)
            assert lens == [len(m) for m in maps]
            want = [ref.sparse(m) for m in maps]
            assert cols.tolist() == [c for cs, _ in want for c in cs]
            assert vals.tolist() == [v for _, vs in want for v in vs]
        assert len(h) <= cache


@pytest.mark.parametrize("bad", [True, "1.0", None, [1.0], {"x": 1.0}])
def test_sparse_many_refuses_what_sparse_refuses(bad):
    h = FeatureHasher(8)
    with pytest.raises(TypeError):
        h.sparse({"a": 1.0, "b": bad})
    with pytest.raises(TypeError):
        h.sparse_many([{"a": 1.0}, {"a": 1.0, "b": bad}])


def _records(values: list[bytes]) -> list[SourceRecord]:
    return [SourceRecord(v, "routing-in", 0, i, False, 1_700_000_000_000 + i) for i, v in enumerate(values)]


def test_features_hashed_with_their_run_keep_dead_letters_in_log_order():
    def event(i, feats):
        return orjson.dumps({"id": f"e{i}", "time": float(i), "features": feats})

    values = []
    for i in range(60):
        if i % 10 == 3:
            values.append(event(i, {"a": 1.0, "b": "x"}))  # bad_type
        elif i % 10 == 6:
            values.append(b"{oops")  # malformed_json, found at decoding
        elif i % 10 == 8:
            values.append(event(i, {"a": True}))
        else:
            values.append(event(i, {"a": float(i % 3), "b": 1.0}))
    recs = _records(values)
    results = {}
    for batch in (1, 4, 7, len(recs)):
        core = core_for(params={"actions": ["a", "b", "c"]})
        outs = []
        for j in range(0, len(recs), batch):
            outs += core.handle(recs[j:j + batch])
        dlq = [orjson.loads(o.value) for o in outs if o.kind == "dlq"]
        decided = [orjson.loads(o.value)["id"] for o in outs if o.kind == "decision"]
        results[batch] = ([(d["reason"], d["offset"]) for d in dlq], decided,
                          [o.value for o in outs if o.kind == "decision"])
        assert [r for r, _ in results[batch][0]] == ["bad_type", "malformed_json", "bad_type"] * 6
        assert [off for _, off in results[batch][0]] == sorted(off for _, off in results[batch][0])
        assert "'b'" in dlq[0]["detail"] and dlq[0]["original"] == values[3].decode()
        assert decided == [f"e{i}" for i in range(60) if i % 10 not in (3, 6, 8)]
        assert core.metrics.registry.get_sample_value(
            "eddy_dead_letter_messages_total", {"pipeline": core.name, "reason": "bad_type"}) == 12
    assert len({repr(r) for r in results.values()}) == 1  # the same outputs whatever the batches
    # A rejected id is not remembered: the event sent again with good features is decided.
    core = core_for(params={"actions": ["a", "b", "c"]})
    outs = core.handle(_records([event(0, {"a": "x"}), event(0, {"a": 1.0})]))
    assert [o.kind for o in outs] == ["dlq", "decision"]  # (in one run: the check is at decoding)


def test_a_failing_template_falls_back_to_the_decision_dicts(monkeypatch):
    values = [orjson.dumps({"id": f"e{i}", "time": float(i), "features": {"a": 1.0, "b": float(i % 4)}})
              for i in range(30)]
    want = [orjson.loads(o.value) for o in core_for(params={"actions": ["a", "b", "c"]}).handle(_records(values))]

    def broken(*args, **kwargs):
        raise ValueError("a learner's output of another shape")

    monkeypatch.setattr(DecisionTemplate, "encode", broken)
    got = [orjson.loads(o.value) for o in core_for(params={"actions": ["a", "b", "c"]}).handle(_records(values))]
    assert got == want and len(got) == 30


def test_the_decision_template_refuses_columns_that_do_not_match_the_run():
    # The kernel reads its inputs unchecked: the template checks them first (the caller then
    # writes the decision dicts instead).
    tmpl = DecisionTemplate("p", ["a", "b"])
    run = [Event(f"e{i}", 1.0, None, None, None, None, None, SourceRecord(b"")) for i in range(3)]
    probs = np.full(6, 0.5)
    for chosen, prob, p in (([0, 2, 1], np.full(3, 0.5), probs), ([0, -1, 1], np.full(3, 0.5), probs),
                            ([0, 1], np.full(3, 0.5), probs), ([0, 1, 1], np.full(2, 0.5), probs),
                            ([0, 1, 1], np.full(3, 0.5), probs[:4])):  # (and a short column of versions below)
        with pytest.raises(ValueError):
            tmpl.encode(run, chosen, prob, p, [1, 1, 1], [False] * 3)
    with pytest.raises(ValueError):
        tmpl.encode(run, [0, 1, 1], np.full(3, 0.5), probs, [1, 1], [False] * 3)
