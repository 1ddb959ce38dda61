"""The pipeline core on files and in memory: log order, determinism, checkpoints, bad input."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from connectors.base import SourceRecord
from daemon import config
from daemon.checkpoint import CheckpointStore
from daemon.engine import Engine

from .conftest import make_records, pipeline_cfg
from .feeding import feed


def lane(core):
    """The engine state of the one input partition (or HTTP) a test used."""
    (only,) = core.lanes.values()
    return only

def core_for(**over) -> Engine:
    cfg = config.load_dict({"pipelines": [pipeline_cfg(**over)]}, env=False)
    return Engine(cfg.pipelines[0])


def decisions(outs):
    return [orjson.loads(o.value) for o in outs if o.kind == "decision"]


@pytest.mark.parametrize("learn_every", [1, 5, 64])
def test_decisions_do_not_depend_on_batch_boundaries(learn_every):
    recs = make_records(400)
    ref = decisions(feed(core_for(learn_every_events=learn_every), recs, 1))
    assert len(ref) == 400
    for b in (7, 64, 1000):
        assert decisions(feed(core_for(learn_every_events=learn_every), recs, b)) == ref
    # Learning happened (the exploration stops being uniform) and some rewards were defaulted.
    assert len({round(d["prob"], 6) for d in ref}) > 10


@pytest.mark.parametrize("learn_every", [1, 64])
def test_checkpoint_restore_continue_equals_never_stopping(tmp_path, learn_every):
    recs = make_records(400)
    ref = decisions(feed(core_for(learn_every_events=learn_every), recs, 50))
    first = core_for(learn_every_events=learn_every)
    before = decisions(feed(first, recs[:233], 50))
    if learn_every > 1:
        assert lane(first).queue, "the checkpoint should hold rewards waiting for their learning block"
    store = CheckpointStore(str(tmp_path))
    store.save(*first.snapshot())
    second = core_for(learn_every_events=learn_every)
    second.restore(*store.latest())
    after = decisions(feed(second, recs[233:], 50))
    assert before + after == ref


def test_checkpoint_rejects_other_learner(tmp_path):
    store = CheckpointStore(str(tmp_path))
    store.save(*core_for().snapshot())
    with pytest.raises(ValueError, match="different learner"):
        core_for(learner="linucb").restore(*store.latest())


def test_checkpoint_files_load_without_pickle(tmp_path):
    core = core_for()
    feed(core, make_records(50), 10)
    store = CheckpointStore(str(tmp_path), keep=2)
    for _ in range(3):
        store.save(*core.snapshot())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-000000000002.json", "ckpt-000000000002.npz", "ckpt-000000000003.json", "ckpt-000000000003.npz"]
    with np.load(tmp_path / "ckpt-000000000003.npz", allow_pickle=False) as z:
        assert "learner/theta" in z.files and "lane/0/buffer/X" in z.files


BAD = [
    (b"{not json", "malformed_json"),
    (b"[1, 2]", "bad_type"),
    (b'{"features": {"a": 1}, "actions": ["a"]}', "missing_field"),
    (b'{"id": 5, "features": {"a": 1}, "actions": ["a"]}', "bad_type"),
    (b'{"id": "x", "features": {"a": "high"}, "actions": ["a"]}', "bad_type"),
    (b'{"id": "x", "features": [1, 2], "actions": ["a"]}', "bad_type"),
    (b'{"id": "x", "features": {"a": NaN}, "actions": ["a"]}', "non_finite"),
    (b'{"id": "x", "features": {"a": 1e999}, "actions": ["a"]}', "non_finite"),  # not JSON numbers: classified as the README says
    (b'{"id": "x", "features": {"a": 1}, "actions": []}', "bad_type"),
    (b'{"id": "x", "features": {"a": 1}, "actions": ["a", "a"]}', "bad_type"),
    (b'{"type": "feedback", "id": "nobody", "reward": 1}', "unknown_event"),
    (b'{"type": "feedback", "id": "x"}', "missing_field"),
    (b'{"type": "other", "id": "x"}', "bad_type"),
    (b'{"id": "x", "time": "noon", "features": {"a": 1}, "actions": ["a"]}', "bad_type"),
    (b'{"id": "big", "features": {"a": 1}, "actions": ["a"], "pad": "' + b"x" * 70000 + b'"}', "oversize"),
]


@pytest.mark.parametrize("raw,reason", BAD)
def test_bad_input_goes_to_the_dead_letter_topic(raw, reason):
    core = core_for()
    outs = core.handle([SourceRecord(raw, "in", 3, 42)])
    assert [o.kind for o in outs] == ["dlq"]
    body = json.loads(outs[0].value)
    assert body["reason"] == reason and body["detail"]
    assert (body["topic"], body["partition"], body["offset"]) == ("in", 3, 42)
    assert body["original"] == raw.decode()
    m = core.metrics.registry
    assert m.get_sample_value("eddy_dead_letter_messages_total", {"pipeline": "routing", "reason": reason}) == 1


def test_unknown_action_with_a_strict_catalogue_and_redaction():
    core = core_for(redact_payloads=True, params={"actions": ["a", "b"], "strict_actions": True})
    raw = b'{"id": "x", "features": {"card=1234": 1}, "actions": ["a", "zz"]}'
    (out,) = core.handle([SourceRecord(raw)])
    body = json.loads(out.value)
    assert body["reason"] == "unknown_action" and "original" not in body and body["original_bytes"] == len(raw)


def test_duplicates_never_learned_twice_and_late_rewards_counted():
    core = core_for(reward_wait_s=5.0, learn_every_events=1)
    ev = b'{"id": "e1", "time": 0, "features": {"a": 1}, "actions": ["a", "b"]}'
    fb = b'{"type": "feedback", "id": "e1", "time": 1, "reward": 1}'
    outs = core.handle([SourceRecord(v) for v in (ev, ev, fb, fb)])
    assert sorted(o.kind for o in outs) == ["decision", "dlq", "dlq"]
    reasons = [json.loads(o.value)["reason"] for o in outs if o.kind == "dlq"]
    assert sorted(reasons) == ["duplicate_event", "duplicate_reward"]
    assert len(lane(core).queue) == 1 and core.learner.metrics()["learned_events"] == 0  # learned before the next event
    ev2 = b'{"id": "e2", "time": 2, "features": {"a": 1}, "actions": ["a", "b"]}'
    later = b'{"id": "e3", "time": 100, "features": {"a": 1}, "actions": ["a", "b"]}'
    fb2 = b'{"type": "feedback", "id": "e2", "time": 101, "reward": 1}'
    outs = core.handle([SourceRecord(v) for v in (ev2, later, fb2)])
    assert [json.loads(o.value)["reason"] for o in outs if o.kind == "dlq"] == ["late_reward"]
    m = core.metrics.registry
    assert m.get_sample_value("eddy_rewards_total", {"pipeline": "routing", "outcome": "defaulted"}) == 1
    assert core.learner.metrics()["learned_events"] == 2  # e1 joined, e2 defaulted on event time


def test_guardrails_default_action():
    core = core_for(min_learned_events=1)
    d = decisions(core.handle([SourceRecord(b'{"id": "n", "features": {"a": 1}, "actions": ["b", "a"]}')]))[0]
    assert (d["action"], d["default"], d["reason"], d["prob"]) == ("a", True, "not_ready", 1.0)
    core = core_for(force_default=True, default_action="zz")
    d = decisions(core.handle([SourceRecord(b'{"id": "f", "features": {"a": 1}, "actions": ["b", "a"]}')]))[0]
    assert (d["action"], d["reason"]) == ("b", "forced")  # default not offered: the first offered action

    class Broken:
        actions = ()
        strict_actions = False
        learned_events = 0

        def process(self, batch):
            raise RuntimeError("boom")

        def metrics(self):
            return {}

        def learn(self, batch):
            pass

    core = core_for()
    core.learner = Broken()
    d = decisions(core.handle([SourceRecord(b'{"id": "b", "features": {"a": 1}, "actions": ["b", "a"]}')]))[0]
    assert (d["action"], d["reason"]) == ("a", "learner_error")
    assert core.metrics.registry.get_sample_value(
        "eddy_default_decisions_total", {"pipeline": "routing", "reason": "learner_error"}) == 1


def test_caps_bound_memory_and_are_counted():
    core = core_for(join_buffer_cap=10, dedup_cap=20, feature_cache=5)
    feed(core, make_records(100, feedback_every=1000), 10)
    assert len(lane(core).buffer) == 10 and len(lane(core).seen) == 20 and len(core.adapter.hasher) <= 5
    m = core.metrics.registry
    assert m.get_sample_value("eddy_cap_evictions_total", {"pipeline": "routing", "cap": "join_buffer"}) > 0
    assert m.get_sample_value("eddy_cap_evictions_total", {"pipeline": "routing", "cap": "dedup"}) == 80


def test_replay_cli_report(tmp_path):
    from daemon.cli import main

    ev = tmp_path / "events.jsonl"
    ev.write_bytes(b"\n".join(make_records(200)) + b"\n{oops\n")
    cfgp = tmp_path / "c.toml"
    cfgp.write_text('[[pipelines]]\nname="r"\nlearner="squarecb"\ninput_topic="i"\noutput_topic="o"\n'
                    'n_features=16\nreward_wait_s=25.0\nshadow_learners=["epsilon-greedy"]\n')
    out, dlq, rep = tmp_path / "d.jsonl", tmp_path / "dlq.jsonl", tmp_path / "r.json"
    assert main(["replay", "--config", str(cfgp), "--events", str(ev), "--out", str(out),
                 "--dead-letters", str(dlq), "--report", str(rep)]) == 0
    report = json.loads(rep.read_text())
    assert report["decisions"] == 200 and report["dead_letters"] == {"malformed_json": 1}
    assert all(type(report[k]) is int for k in ("events", "feedback", "decisions", "waiting_at_end"))
    assert 0 < report["waiting_at_end"] < 200  # the last events' rewards never came within the file
    assert set(report["ope"]) == {"squarecb", "epsilon-greedy"}
    assert len(out.read_text().splitlines()) == 200
    # A second replay of the same log gives the same decisions.
    out2 = tmp_path / "d2.jsonl"
    main(["replay", "--config", str(cfgp), "--events", str(ev), "--out", str(out2)])
    assert out2.read_text() == out.read_text()


def test_hashed_overflow_is_dead_lettered_and_leaves_no_trace():
    # With one hashed column, two large values of the same sign sum to inf: that event is rejected
    # after it entered its run; the others are decided, and learning carries on.
    core = core_for(n_features=1, reward_wait_s=1.0, learn_every_events=1)
    h = core.adapter.hasher
    names = [n for n in (f"k{i}" for i in range(50)) if h.sparse({n: 1.0})[1][0] > 0][:2]
    big = json.dumps({"id": "big", "time": 1.0, "features": {n: 1.5e308 for n in names}, "actions": ["a", "b"]})
    recs = [json.dumps({"id": f"e{i}", "time": float(i), "features": {"x": 1.0}, "actions": ["a", "b"]})
            for i in range(5)]
    outs = core.handle([SourceRecord(v.encode()) for v in recs[:2] + [big] + recs[2:]])
    dlq = [json.loads(o.value) for o in outs if o.kind == "dlq"]
    assert [(d["reason"], "big" in d["original"]) for d in dlq] == [("non_finite", True)]
    assert sorted(d["id"] for d in decisions(outs)) == [f"e{i}" for i in range(5)]
    assert "big" not in lane(core).buffer and all(e.id != "big" for e, _ in lane(core).queue)
    core.handle([SourceRecord(b'{"id": "late", "time": 50.0, "features": {"x": 1.0}, "actions": ["a"]}')])
    assert core.learner.metrics()["learned_events"] == 5


class LearnRecorder:
    """A learner that records every row it learns as (event key, action, reward)."""

    def __init__(self, inner):
        self.inner = inner
        self.rows: list[tuple[int, str, float]] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def learn(self, batch):
        self.rows += zip(batch["event_key"].tolist(), list(batch["action"]), batch["reward"].tolist(), strict=True)
        self.inner.learn(batch)


def learned_by_id(rec: LearnRecorder, ids) -> dict[str, tuple[str, float]]:
    from learners._hashing import event_keys

    names = dict(zip(event_keys(ids).tolist(), ids, strict=True))
    return {names[k]: (a, r) for k, a, r in rec.rows}


def test_default_reward_is_learned_for_decisions_whose_reward_never_came():
    core = core_for(default_reward=-0.37, reward_wait_s=5.0, learn_every_events=3)
    core.learner = main = LearnRecorder(core.learner)
    core.shadows = {s: LearnRecorder(lrn) for s, lrn in core.shadows.items()}
    recs, rewards = [], {}
    for i in range(40):
        recs.append(json.dumps({"id": f"e{i}", "time": float(i), "features": {"x": 1.0, "y": i % 3},
                                "actions": ["a", "b", "c"]}).encode())
        if i % 3 == 0:  # joined one second later; the others never get a reward
            rewards[f"e{i}"] = round(0.1 + i / 100, 2)
            recs.append(json.dumps({"type": "feedback", "id": f"e{i}", "time": i + 1.0,
                                    "reward": rewards[f"e{i}"]}).encode())
    # Event time 100 expires the rest; the next learning block (at most 3 events later) learns them.
    recs += [json.dumps({"id": f"end{j}", "time": 100.0, "features": {"x": 1.0}, "actions": ["a"]}).encode()
             for j in range(4)]
    outs = feed(core, recs, 9)
    actions = {d["id"]: d["action"] for d in decisions(outs)}
    ids = [f"e{i}" for i in range(40)]
    want = {e: (actions[e], rewards.get(e, -0.37)) for e in ids}
    assert learned_by_id(main, ids + [f"end{j}" for j in range(4)]) == want
    for s in core.shadows.values():
        assert learned_by_id(s, ids) == want  # the shadows learn the same rows
    m = core.metrics.registry
    assert m.get_sample_value("eddy_rewards_total", {"pipeline": "routing", "outcome": "defaulted"}) == 40 - 14
    assert m.get_sample_value("eddy_rewards_total", {"pipeline": "routing", "outcome": "joined"}) == 14
    assert m.get_sample_value("eddy_reward_sum_total", {"pipeline": "routing"}) == pytest.approx(sum(rewards.values()))
    assert core.learner.metrics()["learned_events"] == 40


def test_join_buffer_cap_evictions_get_the_default_reward():
    core = core_for(default_reward=-0.37, join_buffer_cap=4, reward_wait_s=1e6, learn_every_events=2)
    core.learner = main = LearnRecorder(core.learner)
    recs = [json.dumps({"id": f"e{i}", "time": float(i), "features": {"x": 1.0}, "actions": ["a", "b"]}).encode()
            for i in range(12)]
    recs.insert(3, b'{"type": "feedback", "id": "e1", "reward": 0.8}')
    outs = feed(core, recs, 5)
    actions = {d["id"]: d["action"] for d in decisions(outs)}
    # e1 joined; e0, e2.. e7 pushed out by the cap of 4 as e5.. e11 arrived; e8.. e11 still wait.
    # Each evicted decision is learned with the default reward, or waits for the next block with it.
    learned = learned_by_id(main, [f"e{i}" for i in range(12)])
    waiting = {e.id: (e.action, r) for e, r in lane(core).queue}
    assert len(learned) >= 5 and not set(learned) & set(waiting)
    assert {**learned, **waiting} == {"e1": (actions["e1"], 0.8),
                                      **{f"e{i}": (actions[f"e{i}"], -0.37) for i in (0, 2, 3, 4, 5, 6, 7)}}
    assert list(lane(core).buffer) == ["e8", "e9", "e10", "e11"]
    m = core.metrics.registry
    assert m.get_sample_value("eddy_rewards_total", {"pipeline": "routing", "outcome": "evicted"}) == 7
    # An evicted decision's reward comes too late, as after an expiry.
    (dl,) = core.handle([SourceRecord(b'{"type": "feedback", "id": "e3", "reward": 1}')])
    assert json.loads(dl.value)["reason"] == "late_reward"


@pytest.mark.parametrize("learn_every", [1, 3])
def test_decisions_with_cap_evictions_do_not_depend_on_batch_boundaries(learn_every):
    recs = make_records(300, feedback_every=3)
    ref = decisions(feed(core_for(join_buffer_cap=6, learn_every_events=learn_every, default_reward=0.2), recs, 1))
    for b in (4, 50, 1000):
        assert decisions(feed(core_for(join_buffer_cap=6, learn_every_events=learn_every, default_reward=0.2),
                              recs, b)) == ref


def test_http_decisions_learn_expire_and_stay_unique_with_kafka_traffic():
    """HTTP decisions have no partition: their rewards (arriving on Kafka) are learned at the Kafka
    lane's learning blocks, they expire on the pipeline's event time, and their ids are duplicates
    on Kafka (as with the one state before the engine)."""
    core = core_for(learn_every_events=4, reward_wait_s=10.0)
    core.submit([{"id": f"h{i}", "time": float(i), "features": {"a": 1.0}, "actions": ["a", "b"]} for i in range(6)])
    fb = [{"type": "feedback", "id": f"h{i}", "time": 6.0, "reward": 1.0} for i in range(3)]
    evs = [{"id": f"k{i}", "time": 7.0 + i, "features": {"a": 1.0}, "actions": ["a", "b"]} for i in range(40)]
    outs = feed(core, fb + evs, 9)
    assert not [o for o in outs if o.kind == "dlq"]
    assert core.outcomes["joined"] == 3 and core.outcomes["defaulted"] >= 3  # h3..h5 expired on Kafka's time
    assert not core.lanes["http"].buffer and core.learner.learned_events >= 6
    (dup,) = core.handle([SourceRecord(orjson.dumps({**evs[0], "id": "h1"}), "in", 0, 99)])
    assert json.loads(dup.value)["reason"] == "duplicate_event"
