"""A family defined in test code (tests/meanfamily.py) through every path of the runtime: the engine,
the HTTP sidecar, the file replay CLI, checkpoints, and the real broker; and the configuration
errors of families and plugins (no silent fallback)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import subprocess
import sys
from collections import defaultdict

import orjson
import pytest

import learners
import learners.base as lb
from connectors.base import SourceRecord
from daemon import config
from daemon import family as fam
from daemon.checkpoint import CheckpointStore
from daemon.engine import Engine
from daemon.metrics import DaemonMetrics

from . import meanfamily
from . import test_conformance as conformance
from .conftest import served
from .test_sidecar import call as http_call

PLUGIN = "tests.meanfamily"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRUE = {"north": 1.0, "south": -2.0, "east": 0.5, "west": 3.0}


# The test family's adapter is registered only while this module's tests run (the fixture below):
# pytest's --doctest-modules imports tests/meanfamily.py at collection, which registers it for the
# whole session, and other tests (the README's settings table) expect the built-in families only.
meanfamily.unregister()


@pytest.fixture(scope="module", autouse=True)
def mf():
    """The test family, registered while this module's tests run (and dropped after them, so that
    the rest of the session, e.g. the README's settings table, sees the built-in families only)."""
    meanfamily._register()
    yield meanfamily
    meanfamily.unregister()


def mean_pc(name="avg", **over):
    pc = {"name": name, "learner": "test-running-mean", "input_topic": f"{name}-in", "output_topic": f"{name}-out",
          "reward_wait_s": 20.0, "learn_every_events": 4, "default_mean": 0.5, "params": {"n_buckets": 64},
          "batch_max_events": 40}
    pc.update(over)
    return pc


def mean_cfg(name="avg", **over):
    return config.load_dict({"plugins": [PLUGIN], "pipelines": [mean_pc(name, **over)]}, env=False).pipelines[0]


def stream(n=300, seed=0, delay=4, drop_every=7):
    """Events over four segments; a label `delay` events later (none for every `drop_every`-th
    event), or given with the event itself (every 11th)."""
    rng = random.Random(seed)
    out, waiting = [], []
    for i in range(n):
        seg = rng.choice(sorted(TRUE))
        y = round(TRUE[seg] + rng.gauss(0, 0.3), 4)
        ev = {"id": f"m{i}", "segment": seg, "time": float(i)}
        if i % 11 == 5:
            ev["label"] = y
        elif i % drop_every:
            waiting.append((i + delay, {"type": "label", "id": f"m{i}", "label": y, "time": float(i + delay)}))
        out.append(ev)
        while waiting and waiting[0][0] <= i:
            out.append(waiting.pop(0)[1])
    return out


def records(objs, topic="avg-in", partition=0):
    return [SourceRecord(o if isinstance(o, bytes) else orjson.dumps(o), topic, partition, i)
            for i, o in enumerate(objs)]


def feed(core, recs, batch=37):
    out = []
    for i in range(0, len(recs), batch):
        out += core.handle(recs[i:i + batch])
    return out


def values(outs, kind="decision"):
    return [o.value for o in outs if o.kind == kind]


def naive(objs, default):
    """The predictions of a running mean per segment, every label learned before the next event."""
    sums, counts, waiting, out = defaultdict(float), defaultdict(int), {}, []
    for o in objs:
        if o.get("type") == "label":
            seg = waiting.pop(o["id"])
            sums[seg] += o["label"]
            counts[seg] += 1
            continue
        seg = o["segment"]
        n = sum(counts.values())
        p = sums[seg] / counts[seg] if counts[seg] else sum(sums.values()) / n if n else default
        out.append((o["id"], p, counts[seg]))
        if "label" in o:
            sums[seg] += o["label"]
            counts[seg] += 1
        else:
            waiting[o["id"]] = seg
    return out


# -- registration ----------------------------------------------------------------------------------
def test_the_module_registers_its_learner_and_adapter_and_a_second_import_is_safe(mf):
    assert "mean" in fam.families() and "test-running-mean" in learners.names()
    assert learners.family_of("test-running-mean") == "mean"
    assert fam.adapter_for("test-running-mean") is mf.MeanAdapter
    mf._register()  # again: the names are taken, nothing is registered twice
    spec = importlib.util.spec_from_file_location("meanfamily_again", mf.__file__)
    again = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(again)  # the same file under another module name: new classes
    assert again.RunningMean is not mf.RunningMean
    assert fam.adapter_for("test-running-mean") is mf.MeanAdapter  # the first registration is kept
    assert lb.factory_of("test-running-mean") is mf.RunningMean
    assert [s.key for f, s in fam.all_settings() if f == "mean"] == ["default_mean"]
    assert "predict" in fam.all_verbs() and "label" in fam.all_verbs()


def test_the_learner_passes_the_learners_conformance_suite():
    name = "test-running-mean"
    for check in (conformance.test_same_seed_same_outputs, conformance.test_snapshot_restore_continue_equals_never_stopping,
                  conformance.test_snapshot_is_plain_arrays, conformance.test_inputs_not_mutated,
                  conformance.test_clone_is_fresh_and_params_roundtrip, conformance.test_docstring_and_factory,
                  conformance.test_role_and_declared_columns,
                  conformance.test_stream_uses_declared_columns_and_process_returns_declared_outputs,
                  conformance.test_missing_required_column_is_named,
                  conformance.test_decider_process_changes_no_learned_state, conformance.test_warm_up_leaves_the_state,
                  conformance.test_report_is_json):
        check(name)
    for trained in (False, True):
        conformance.test_bad_input_rejected_clearly(name, trained)


# -- configuration errors --------------------------------------------------------------------------
@contextlib.contextmanager
def temporary_learner(name, family_name, mf):
    """A learner registered under ``name`` with family ``family_name`` for the block's duration."""
    cls = type("Orphan", (mf.RunningMean,), {"family": family_name, "__doc__": mf.RunningMean.__doc__})
    lb.register(name)(cls)
    try:
        yield cls
    finally:
        lb._REGISTRY.pop(name, None)
        lb._TEST_PARAMS.pop(name, None)


def test_a_learner_of_a_family_no_adapter_serves_is_a_config_error(mf):
    with temporary_learner("test-orphan-mean", "orphan", mf):
        with pytest.raises(config.ConfigError, match=r"pipelines\[0\]\.learner: learner 'test-orphan-mean' is of "
                           r"family 'orphan', which no adapter serves .*plugins"):
            config.load_dict({"plugins": [PLUGIN], "pipelines": [mean_pc(learner="test-orphan-mean")]}, env=False)
        with pytest.raises(ValueError, match="no adapter serves"):  # nor does the engine fall back to one
            Engine({**mean_cfg(), "learner": "test-orphan-mean"})
    with temporary_learner("test-familyless", "", mf):
        with pytest.raises(config.ConfigError, match="family '', which no adapter serves"):
            config.load_dict({"pipelines": [mean_pc(learner="test-familyless")]}, env=False)


def test_family_settings_and_checks_are_the_adapters():
    assert mean_cfg(default_mean=2)["default_mean"] == 2.0
    with pytest.raises(config.ConfigError, match=r"pipelines\[0\]\.default_mean: expected float"):
        mean_cfg(default_mean="high")
    # Another family's setting is ignored with a warning (earlier configuration files stay valid).
    other = config.load_dict({"plugins": [PLUGIN], "pipelines": [
        {"name": "p", "input_topic": "a", "output_topic": "b", "default_mean": 1.0}]}, env=False)
    assert "default_mean" not in other.pipelines[0]
    with pytest.raises(config.ConfigError, match="group_rules: a groupwise setting"):
        mean_cfg(group_rules={"a": "x < 1"})
    with pytest.raises(config.ConfigError, match="n_buckets must be a positive integer"):
        mean_cfg(params={"n_buckets": 0})
    with pytest.raises(config.ConfigError, match="no shadow learners"):
        mean_cfg(shadow_learners=["test-running-mean"])
    with pytest.raises(config.ConfigError, match="shadow_learners: 'linucb' is a bandit learner"):
        mean_cfg(shadow_learners=["linucb"])


def test_a_plugin_module_that_does_not_import_is_a_config_error_naming_it(tmp_path, monkeypatch):
    pipes = [{"name": "p", "input_topic": "a", "output_topic": "b"}]
    with pytest.raises(config.ConfigError, match="plugins: plugin module 'tests.no_such_family' cannot be imported"):
        config.load_dict({"plugins": ["tests.no_such_family"], "pipelines": pipes}, env=False)
    (tmp_path / "family_with_missing_dep.py").write_text("import no_such_dependency_of_eddy_tests\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(config.ConfigError, match="plugin module 'family_with_missing_dep' cannot be imported: "
                       "No module named 'no_such_dependency_of_eddy_tests'"):
        config.load_dict({"plugins": ["family_with_missing_dep"], "pipelines": pipes}, env=False)
    with pytest.raises(config.ConfigError, match="plugins: expected a list of module names"):
        config.load_dict({"plugins": "tests.meanfamily", "pipelines": pipes}, env=False)


def test_a_plugin_module_with_a_syntax_error_is_a_config_error_naming_it(tmp_path, monkeypatch):
    (tmp_path / "family_with_bad_syntax.py").write_text("def (:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(config.ConfigError, match="family_with_bad_syntax"):
        config.load_dict({"plugins": ["family_with_bad_syntax"],
                          "pipelines": [{"name": "p", "input_topic": "a", "output_topic": "b"}]}, env=False)


# -- (a) the engine --------------------------------------------------------------------------------
def test_the_engine_predicts_running_means_and_counts_labels(mf):
    objs = stream(300)
    core = Engine(mean_cfg(learn_every_events=1))
    assert core.family == "mean" and isinstance(core.adapter, mf.MeanAdapter)
    assert isinstance(core.learner, mf.RunningMean) and core.learner.prior == 0.5
    assert len(set(core.learner._buckets(sorted(TRUE)).tolist())) == 4  # no two segments share a bucket
    outs = feed(core, records(objs))
    preds = [orjson.loads(v) for v in values(outs)]
    assert not values(outs, "dlq") and len(preds) == 300
    want = naive(objs, 0.5)
    assert [p["id"] for p in preds] == [w[0] for w in want]
    assert [p["count"] for p in preds] == [w[2] for w in want]
    assert [p["prediction"] for p in preds] == pytest.approx([w[1] for w in want], rel=1e-12, abs=1e-12)
    assert preds[0]["prediction"] == 0.5 and preds[0]["default"] is False and preds[0]["reason"] is None
    for p in preds[200:]:
        assert p["prediction"] == pytest.approx(TRUE[p["segment"]], abs=0.25)
    n_labels = sum(1 for o in objs if o.get("type") == "label" or "label" in o)
    reg, lbl = core.metrics.registry, {"pipeline": "avg"}
    assert reg.get_sample_value("eddy_mean_labels_total", {**lbl, "outcome": "joined"}) == n_labels
    expired = sum(1 for i in range(300) if i % 7 == 0 and i % 11 != 5 and i + 20 <= 299)
    assert reg.get_sample_value("eddy_mean_labels_total", {**lbl, "outcome": "expired"}) == expired
    assert reg.get_sample_value("eddy_events_total", {**lbl, "kind": "label"}) == len(objs) - 300
    assert reg.get_sample_value("eddy_mean_current", lbl) == pytest.approx(core.learner.overall())
    assert core.learner.metrics()["learned_events"] in (n_labels, n_labels - 1)  # the last block may wait
    assert core.report()["family"] == "mean"


def test_defaults_when_forced_or_not_ready():
    core = Engine(mean_cfg(min_learned_events=10, default_mean=-1.0, learn_every_events=1))
    preds = [orjson.loads(v) for v in values(feed(core, records(stream(60))))]
    assert all(p["default"] and p["reason"] == "not_ready" and p["prediction"] == -1.0 for p in preds[:10])
    assert not preds[-1]["default"]
    core.control(True)
    (p,) = [orjson.loads(v) for v in values(core.handle(records([{"id": "f", "segment": "east"}])))]
    assert (p["prediction"], p["default"], p["reason"]) == (-1.0, True, "forced")
    reg = core.metrics.registry
    assert reg.get_sample_value("eddy_default_decisions_total", {"pipeline": "avg", "reason": "forced"}) == 1


def test_bad_records_are_dead_lettered_with_the_familys_names():
    core = Engine(mean_cfg(reward_wait_s=5.0))
    objs = [{"id": "a", "segment": "n", "time": 0.0}, {"id": "a", "segment": "n"}, {"id": "b", "segment": 5},
            {"id": "c", "segment": ""}, {"segment": "n"}, {"id": "d", "label": "x"},
            {"type": "label", "id": "zz", "label": 1.0}, {"type": "label", "id": "a", "label": "x"},
            {"type": "label", "id": "a"}, {"type": "label", "id": "a", "label": 1.0},
            {"type": "label", "id": "a", "label": 1.0}, {"id": "e", "segment": "n", "time": 1.0},
            {"id": "f", "segment": "n", "time": 10.0}, {"type": "label", "id": "e", "label": 1.0},
            {"type": "reward", "id": "f"}, b"{oops"]
    dlq = [orjson.loads(v) for v in values(feed(core, records(objs)), "dlq")]
    assert [d["reason"] for d in dlq] == ["duplicate_event", "bad_type", "bad_type", "missing_field", "bad_type",
                                         "unknown_event", "bad_type", "missing_field", "duplicate_label",
                                         "late_label", "bad_type", "malformed_json"]
    assert all(d["topic"] == "avg-in" and d["detail"] and "original" in d for d in dlq)


# -- (b) the sidecar -------------------------------------------------------------------------------
def test_the_sidecar_serves_the_familys_verbs():
    metrics = DaemonMetrics()
    core = Engine(mean_cfg(learn_every_events=1), metrics)
    with served({"avg": core}) as port:

        def call(verb, body, method="POST"):
            return http_call(port, method, f"/v1/pipelines/avg/{verb}", body, token="")

        ev = {"id": "q1", "segment": "north", "time": 1.0}
        st, p = call("predict", ev)
        assert st == 200 and (p["id"], p["prediction"], p["count"], p["segment"]) == ("q1", 0.5, 0, "north")
        assert call("predict", ev) == (200, p)  # a retried id: the same answer, nothing decided again
        assert call("predict", {**ev, "segment": "south"}) == (200, p)
        st, r = call("label", {"id": "q1", "label": 4.0, "time": 2.0})
        assert (st, r) == (200, {"id": "q1", "status": "joined"})
        st, err = call("label", {"id": "q1", "label": 4.0})
        assert (st, err["error"]) == (409, "duplicate_label")
        st, err = call("label", {"id": "nobody", "label": 1.0})
        assert (st, err["error"]) == (404, "unknown_event")
        st, err = call("predict", {"segment": "north"})
        assert (st, err["error"]) == (400, "missing_field")
        st, err = call("predict", {"id": "q9", "segment": 7})
        assert (st, err["error"]) == (400, "bad_type")
        st, res = call("predict", {"events": [{"id": "q2", "segment": "north"}, {"id": "q3", "segment": "west"},
                                              ev]})
        assert st == 200 and [x["id"] for x in res["predictions"]] == ["q2", "q3", "q1"]
        q2, q3, q1 = res["predictions"]
        assert (q2["prediction"], q2["count"]) == (4.0, 1)  # learned from q1's label before q2
        assert (q3["prediction"], q3["count"]) == (4.0, 0)  # no label in its segment: the overall mean
        assert q1 == p  # a retried id within a batch
        st, res = call("label", {"labels": [{"id": "q2", "label": 2.0}, {"id": "zz", "label": 1.0}]})
        assert st == 200 and [x["status"] for x in res["results"]] == ["joined", "rejected"]
        assert res["results"][1]["reason"] == "unknown_event"
        st, p4 = call("predict", {"id": "q4", "segment": "north"})
        assert (p4["prediction"], p4["count"]) == (3.0, 2)
        for other in ("decide", "access", "control", "feedback"):  # other families' verbs
            st, err = call(other, ev)
            assert st == 404 and err["error"] == "not_found", other
            assert "mean pipeline" in err["detail"] and "POST .../predict" in err["detail"]
        assert call("predict", None, method="GET")[0] == 405
        st, text = http_call(port, "GET", "/metrics", token="")
        assert st == 200 and b'eddy_mean_current{pipeline="avg"} 3.0' in text
        assert b'eddy_mean_labels_total{outcome="joined",pipeline="avg"} 2.0' in text
    assert list(core.lanes) == ["http"] and core.lanes["http"].bodies.keys() == {"q1", "q2", "q3", "q4"}


# -- (c) the file replay CLI, (d) checkpoints ------------------------------------------------------
def write_toml(path, state=None, **over):
    lines = [f"plugins = [{json.dumps(PLUGIN)}]"]
    if state is not None:
        lines += ["[checkpoint]", f"dir = {json.dumps(str(state))}", "every_events = 50"]
    lines.append("[[pipelines]]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in mean_pc(**over).items() if k != "params"]
    lines += ["[pipelines.params]", "n_buckets = 64"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_replay_cli_runs_the_family_from_its_config(tmp_path):
    from daemon.cli import main

    objs = stream(200, seed=3)
    raw = [orjson.dumps(o) for o in objs] + [b"{oops", b'{"type": "label", "id": "ghost", "label": 1}']
    ev = tmp_path / "events.jsonl"
    ev.write_bytes(b"\n".join(raw) + b"\n")
    cfgp = write_toml(tmp_path / "c.toml")
    out, dlq, rep = tmp_path / "d.jsonl", tmp_path / "dlq.jsonl", tmp_path / "r.json"
    assert main(["replay", "--config", str(cfgp), "--events", str(ev), "--out", str(out),
                 "--dead-letters", str(dlq), "--report", str(rep)]) == 0
    report = json.loads(rep.read_text())
    n_labels = sum(1 for o in objs if o.get("type") == "label")
    assert report["family"] == "mean" and report["learner"] == "test-running-mean"
    assert (report["events"], report["decisions"], report["feedback"]) == (200, 200, n_labels + 1)
    assert report["dead_letters"] == {"malformed_json": 1.0, "unknown_event": 1.0}
    assert 0 < report["learner_metrics"]["learned_events"] <= n_labels + sum("label" in o for o in objs)
    # The same outputs as the engine on the same records (the file source: topic "file", offset = line).
    core = Engine(mean_cfg())
    direct = feed(core, records(raw, topic="file"), 13)
    assert out.read_bytes().splitlines() == values(direct)
    assert dlq.read_bytes().splitlines() == values(direct, "dlq")
    # A fresh interpreter loads the family from the config's plugins alone.
    out2 = tmp_path / "d2.jsonl"
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "replay", "--config", str(cfgp), "--events", str(ev),
                           "--out", str(out2)], cwd=str(tmp_path), env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert out2.read_bytes() == out.read_bytes()
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "config", "check", str(cfgp)], cwd=str(tmp_path),
                          env=env, capture_output=True, timeout=120)
    assert done.returncode == 0 and b": ok" in done.stdout


@pytest.mark.parametrize("cut", [1, 57, 150, 249])
def test_checkpoint_restore_continue_equals_never_stopping(tmp_path, cut):
    recs = records(stream(250, seed=4))
    whole = feed(Engine(mean_cfg()), recs, 16)
    first = Engine(mean_cfg())
    before = feed(first, recs[:cut], 16)
    lane = first.lanes["avg-in:0"]
    if cut == 150:  # events waiting for labels, and labels waiting for their learning block
        assert lane.buffer and lane.queue
    store = CheckpointStore(str(tmp_path))
    store.save(*first.snapshot())
    second = Engine(mean_cfg())
    second.restore(*store.latest())
    assert {k: len(v.buffer) for k, v in second.lanes.items()} == {k: len(v.buffer) for k, v in first.lanes.items()}
    after = feed(second, recs[cut:], 16)
    assert values(before) + values(after) == values(whole)
    assert values(before, "dlq") + values(after, "dlq") == values(whole, "dlq")
    straight = Engine(mean_cfg())
    feed(straight, recs, 16)
    a, b = second.learner.snapshot(), straight.learner.snapshot()
    assert a["counts"].tolist() == b["counts"].tolist() and a["sums"].tolist() == b["sums"].tolist()


def test_a_checkpoint_of_another_family_or_learner_setting_is_refused(tmp_path):
    core = Engine(mean_cfg())
    feed(core, records(stream(30)))
    arrays, meta = core.snapshot()
    with pytest.raises(ValueError, match="different learner or settings"):
        Engine(mean_cfg(params={"n_buckets": 8})).restore(arrays, meta)
    gw = config.load_dict({"pipelines": [{"name": "avg", "learner": "groupwise-mixture", "input_topic": "a",
                                          "output_topic": "b", "params": {"groups": ["g"]}}]}, env=False)
    with pytest.raises(ValueError, match="not a groupwise checkpoint"):
        Engine(gw.pipelines[0]).restore(arrays, meta)


def test_a_replay_resumed_from_its_checkpoint_equals_one_replay(tmp_path):
    from daemon.cli import main

    raw = [orjson.dumps(o) for o in stream(240, seed=6)]
    full, half = tmp_path / "full.jsonl", tmp_path / "half.jsonl"
    full.write_bytes(b"\n".join(raw) + b"\n")
    half.write_bytes(b"\n".join(raw[:131]) + b"\n")
    cfgp = write_toml(tmp_path / "c.toml", state=tmp_path / "ignored")
    ref = tmp_path / "ref.jsonl"
    assert main(["replay", "--config", str(cfgp), "--events", str(full), "--out", str(ref)]) == 0
    state, out = tmp_path / "state", tmp_path / "out.jsonl"
    for events in (half, full):  # the second run resumes at the first one's checkpointed position
        assert main(["replay", "--config", str(cfgp), "--events", str(events), "--out", str(out),
                     "--state", str(state)]) == 0
    assert out.read_bytes() == ref.read_bytes()


# -- (e) the real broker ---------------------------------------------------------------------------
@pytest.mark.kafka
def test_the_family_on_the_broker_matches_the_file_replay(broker, tmp_path):
    from daemon.cli import replay

    from .feeding import through_broker

    pc = mean_pc("avgk", learn_every_events=3)
    objs = stream(240, seed=8)
    raw = [orjson.dumps(o) for o in objs] + [b'{"type": "label", "id": "ghost", "label": 1}']
    got, dlq, d = through_broker(broker, tmp_path, pc, raw, 240, 1, every_events=100, plugins=(PLUGIN,))
    ev = tmp_path / "log.jsonl"
    ev.write_bytes(b"\n".join(raw) + b"\n")
    ref_out = tmp_path / "ref.jsonl"
    replay(config.load_dict({"plugins": [PLUGIN], "pipelines": [pc]}, env=False), str(ev), str(ref_out), None,
           str(tmp_path / "refstate"), None)
    ref = [json.loads(line) for line in ref_out.read_text().splitlines()]
    assert len(got) == 240 and got == ref
    assert [(x["reason"], x["offset"]) for x in dlq] == [("unknown_event", len(raw) - 1)]
    reg = d.metrics.registry
    assert reg.get_sample_value("eddy_mean_labels_total", {"pipeline": "avgk", "outcome": "joined"}) \
        == sum(1 for o in objs if o.get("type") == "label" or "label" in o)
    meta = json.loads(sorted((tmp_path / "state" / "avgk").glob("ckpt-*.json"))[-1].read_text())
    assert meta["family"] == "mean" and meta["positions"] == {"avgk-in:0": len(raw)}
