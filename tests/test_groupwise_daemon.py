"""Groupwise pipelines in the daemon: decoding, group rules, the label join with its wait,
determinism, checkpoints, metrics, the sidecar, and delayed labels through the real broker."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from daemon import config
from daemon.engine import Engine
from daemon.families import make_core
from daemon.metrics import DaemonMetrics

from .feeding import feed as run


def gw_cfg(name="credit", **over):
    pc = {"name": name, "learner": "groupwise-mixture", "input_topic": f"{name}-in", "output_topic": f"{name}-out",
          "n_features": 16, "reward_wait_s": 50.0, "learn_every_events": 8, "batch_max_events": 100,
          "params": {"groups": ["segment-a", "segment-b"]},
          "group_rules": {"young": "age < 30", "female": "sex == 'F'"}}
    pc.update(over)
    return config.load_dict({"pipelines": [pc]}, env=False).pipelines[0]


def stream(n=600, seed=0, delay=5, drop_every=9):
    """Events and their labels `delay` events later (every `drop_every`-th label never comes)."""
    rng = np.random.default_rng(seed)
    out, waiting = [], []
    for i in range(n):
        age = int(rng.integers(18, 70))
        sex = "F" if rng.random() < 0.5 else "M"
        seg = ["segment-a"] if rng.random() < 0.3 else []
        x = {"income": round(float(rng.random()), 3), "age": age, "sex": sex, "bias": 1}
        y = 0.3 * x["income"] + (0.5 if age < 30 else 0.0) + (0.2 if sex == "F" else 0.0) + (0.4 if seg else 0.0)
        out.append({"id": f"e{i}", "time": float(i), "features": x, "groups": seg})
        if i % drop_every:
            waiting.append((i + delay, {"type": "label", "id": f"e{i}", "label": round(y, 4), "time": float(i)}))
        while waiting and waiting[0][0] <= i:
            out.append(waiting.pop(0)[1])
    return out


def test_a_groupwise_pipeline_gets_its_core_and_rules_are_checked():
    assert make_core(gw_cfg()).family == "groupwise"
    with pytest.raises(config.ConfigError, match="group_rules.young"):
        gw_cfg(group_rules={"young": "age <"})
    with pytest.raises(config.ConfigError, match="a groupwise setting"):
        config.load_dict({"pipelines": [{"name": "p", "learner": "squarecb", "input_topic": "a", "output_topic": "b",
                                         "group_rules": {"x": "a < 1"}}]}, env=False)
    core = Engine(gw_cfg())
    assert core.learner.names_ == ["always_on", "segment-a", "segment-b", "young", "female"]


def test_predictions_are_independent_of_batching_and_learn_from_joined_labels():
    objs = stream()
    a = [o.value for o in run(Engine(gw_cfg()), objs, batch=37)]
    core = Engine(gw_cfg())
    b = [o.value for o in run(core, objs, batch=200)]
    assert a == b
    preds = [orjson.loads(v) for v in a]
    assert len(preds) == 600
    first = preds[0]
    assert first["groups"][0] == "always_on" and set(first) >= {"id", "prediction", "groups", "default", "time"}
    n_labels = sum(1 for o in objs if o.get("type") == "label")
    learned = core.learner.metrics()["learned_events"]
    assert n_labels - 8 <= learned <= n_labels  # the last block may still wait
    reg = core.metrics.registry
    assert reg.get_sample_value("eddy_labels_total", {"pipeline": "credit", "outcome": "joined"}) == n_labels
    # The events whose label never came left the buffer unlearned once event time passed their wait.
    expired = reg.get_sample_value("eddy_labels_total", {"pipeline": "credit", "outcome": "expired"})
    assert expired == sum(1 for i in range(600) if i % 9 == 0 and i + 50 <= 599)  # deadline reached
    young = [p for p in preds[300:] if "young" in p["groups"]]
    old = [p for p in preds[300:] if "young" not in p["groups"]]
    assert np.mean([p["prediction"] for p in young]) > np.mean([p["prediction"] for p in old]) + 0.3


def test_bad_events_and_labels_are_dead_lettered():
    core = Engine(gw_cfg())
    objs = [{"id": "a", "features": {"age": 20}}, {"id": "a", "features": {"age": 20}},
            {"id": "b", "features": {"age": [1]}}, {"id": "c", "features": {"age": 3}, "groups": ["nope"]},
            {"id": "d"}, {"type": "label", "id": "zz", "label": 1}, {"type": "label", "id": "a", "label": "x"},
            {"type": "label", "id": "a", "label": 1.0}, {"type": "label", "id": "a", "label": 1.0},
            {"id": "e", "features": {"age": 20}, "time": 0.0}, {"id": "f", "features": {"age": 1}, "time": 100.0},
            {"type": "label", "id": "e", "label": 1.0}, {"type": "score", "id": "g"}]
    outs = run(core, objs)
    reasons = [orjson.loads(o.value)["reason"] for o in outs if o.kind == "dlq"]
    assert reasons == ["duplicate_event", "bad_type", "unknown_group", "missing_field", "unknown_event", "bad_type",
                       "duplicate_label", "late_label", "bad_type"]


@pytest.mark.parametrize("learner", ["groupwise-mixture", "groupwise-randomized"])
def test_checkpoint_restore_continue_equals_never_stopping(learner):
    objs = stream(500, seed=2)
    whole = [o.value for o in run(Engine(gw_cfg(learner=learner)), objs)]
    a = Engine(gw_cfg(learner=learner))
    first = [o.value for o in run(a, objs[:300])]
    arrays, meta = a.snapshot()
    b = Engine(gw_cfg(learner=learner))
    b.restore({k: v.copy() for k, v in arrays.items()}, json.loads(json.dumps(meta)))
    rest = [o.value for o in run(b, objs[300:])]
    assert first + rest == whole


def test_group_metrics_and_default_when_not_ready():
    core = Engine(gw_cfg(min_learned_events=50, default_prediction=0.25))
    preds = [orjson.loads(o.value) for o in run(core, stream(400))]
    assert all(p["default"] and p["prediction"] == 0.25 and p["reason"] == "not_ready" for p in preds[:40])
    assert not preds[-1]["default"]
    reg = core.metrics.registry
    rep = {r["group"]: r for r in core.learner.group_report()}
    for g in ("always_on", "young", "female", "segment-a"):
        assert reg.get_sample_value("eddy_group_events", {"pipeline": "credit", "group": g}) == rep[g]["events"]
        assert reg.get_sample_value("eddy_group_regret", {"pipeline": "credit", "group": g, "rule": "mixture"}) \
            == pytest.approx(rep[g]["regret"])
    assert rep["young"]["events"] > 0 and rep["segment-b"]["events"] == 0


def test_sidecar_predict_label_and_retry():
    from .conftest import served
    from .test_sidecar import call as http_call

    metrics = DaemonMetrics()
    core = Engine(gw_cfg(learn_every_events=1), metrics)
    with served({"credit": core}) as port:

        def call(path, body):
            return http_call(port, "POST", path, body, token="")

        ev = {"id": "q1", "features": {"age": 22, "sex": "F", "bias": 1}}
        st, p = call("/v1/pipelines/credit/predict", ev)
        assert st == 200 and p["groups"] == ["always_on", "young", "female"]
        assert call("/v1/pipelines/credit/predict", ev) == (200, p)  # a retried id: the same answer
        st, r = call("/v1/pipelines/credit/label", {"id": "q1", "label": 1.0})
        assert (st, r["status"]) == (200, "joined")
        st, r = call("/v1/pipelines/credit/label", {"id": "q1", "label": 1.0})
        assert (st, r["error"]) == (409, "duplicate_label")
        st, res = call("/v1/pipelines/credit/predict", {"events": [{"id": "q2", "features": {"age": 50, "bias": 1}},
                                                                   {**ev, "id": "q3"}]})
        assert st == 200 and [r["id"] for r in res["predictions"]] == ["q2", "q3"]
        assert p["prediction"] == 0.0 and 0.0 < res["predictions"][1]["prediction"] <= 1.0  # learned from q1
        assert res["predictions"][0]["groups"] == ["always_on"]
        st, err = call("/v1/pipelines/credit/access", {"key": 1})
        assert st == 404 and "groupwise pipeline" in err["detail"]


@pytest.mark.kafka
def test_delayed_labels_through_the_broker_match_the_file_replay(broker, tmp_path):
    from .feeding import through_broker
    from .test_kafka import file_reference

    pc = {"name": "gwk", "learner": "groupwise-mixture", "input_topic": "gwk-in", "output_topic": "gwk-out",
          "n_features": 16, "reward_wait_s": 50.0, "learn_every_events": 8, "batch_max_events": 60,
          "params": {"groups": ["segment-a", "segment-b"]},
          "group_rules": {"young": "age < 30", "female": "sex == 'F'"}}
    objs = stream(400, seed=5)
    records = [orjson.dumps(o) for o in objs] + [b'{"type": "label", "id": "ghost", "label": 1}']
    got, dlq, _ = through_broker(broker, tmp_path, pc, records, 400, 1, every_events=150)
    ref = file_reference(tmp_path, records, pc)
    assert len(got) == 400 and {g["id"] for g in got} == set(ref)
    for g in got:
        assert g["prediction"] == ref[g["id"]]["prediction"] and g["groups"] == ref[g["id"]]["groups"]
    assert [x["reason"] for x in dlq] == ["unknown_event"]
