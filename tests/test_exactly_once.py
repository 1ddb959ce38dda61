"""Exactly-once (``kafka.exactly_once``): the isolation probe, the refusal, the transactional path.

The embedded broker (Tansu 0.6) accepts transactions but shows aborted records to read_committed
consumers, so here the probe must refuse; the transactional code path itself is exercised on it
with the probe set aside (its commits and offsets are real; the isolation is not).
"""

from __future__ import annotations

import json
import time

import pytest

from connectors.files import JsonLinesSink, JsonLinesSource
from daemon import config
from daemon.app import Daemon
from daemon.config import ConfigError
from daemon.families import make_core
from daemon.runner import PipelineRunner

from .conftest import make_records, pipeline_cfg
from .test_kafka import consume_until, produce, small_events

pytestmark = pytest.mark.kafka


def test_the_probe_finds_that_the_embedded_broker_does_not_isolate_transactions(broker):
    from connectors.transactions import isolation_problem

    problem = isolation_problem({"bootstrap_servers": broker.bootstrap}, topic="probe-test")
    assert problem == "a read_committed consumer received a record of an aborted transaction"


def _cfg(broker, tmp_path, name, **kafka):
    from connectors.kafka import create_topics

    pc = pipeline_cfg(name, batch_max_events=10)
    cfg = config.load_dict({"kafka": {"bootstrap_servers": broker.bootstrap, "group_id": name, "exactly_once": True,
                                      "transactional_id": f"test-{name}", **kafka},
                            "http": {"enabled": False},
                            "checkpoint": {"dir": str(tmp_path / "state"), "every_events": 10},
                            "pipelines": [pc]}, env=False)
    create_topics(cfg.kafka, [pc["input_topic"], pc["output_topic"], cfg.pipelines[0]["dead_letter_topic"]])
    return pc, cfg


def test_exactly_once_is_refused_at_start_on_a_broker_that_does_not_isolate(broker, tmp_path):
    _, cfg = _cfg(broker, tmp_path, "eosrefused")
    d = Daemon(cfg)
    with pytest.raises(ConfigError, match="does not isolate transactions .a read_committed consumer received"):
        d.start()
    assert not d.runners and not d.threads  # nothing started


def test_the_settings_exactly_once_needs_are_checked():
    base = {"pipelines": [pipeline_cfg("e")]}
    with pytest.raises(ConfigError) as e:
        config.load_dict({**base, "kafka": {"exactly_once": True, "client": "confluent-kafka"},
                          "checkpoint": {"keep": 1}}, env=False)
    assert "needs checkpoint.keep >= 2" in str(e.value) and "client" not in str(e.value)  # (both clients do)
    keyed = pipeline_cfg("k", learner="epsilon-greedy", key_by="m", changelog_topic="k-changelog")
    config.load_dict({"kafka": {"exactly_once": True}, "pipelines": [keyed]}, env=False)  # (with a changelog too)


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_the_transactional_path_commits_decisions_and_offsets_together(broker, tmp_path, monkeypatch, client):
    """Probe set aside: every decision published once, in transactions, the offsets committed by
    them (none by the consumer); a daemon started again resumes at the committed offsets from the
    checkpoint of the last committed transaction and decides what an uninterrupted one decides."""
    from connectors import transactions
    from connectors.kafka import committed_offsets

    monkeypatch.setattr(transactions, "isolation_problem", lambda settings, **kw: None)
    pc, cfg = _cfg(broker, tmp_path, f"eospath-{client}", client=client)
    key = f"{pc['input_topic']}:0"
    events = small_events("a-", 40)
    d = Daemon(cfg).start()
    try:
        produce(broker.bootstrap, pc["input_topic"], events)
        got = consume_until(broker.bootstrap, pc["output_topic"], lambda out: len(out) >= 40)
        deadline = time.monotonic() + 30
        while committed_offsets(cfg.kafka, cfg.pipelines[0]["group_id"], pc["input_topic"]).get(key) != 40:
            assert time.monotonic() < deadline, "the transactions did not commit the offsets"
            time.sleep(0.2)
    finally:
        d.stop()
    assert sorted(x["id"] for x in got) == sorted(f"a-{i}" for i in range(40)) and not any(x["replay"] for x in got)
    first = {x["id"]: (x["action"], x["prob"]) for x in got}
    d = Daemon(cfg).start()  # a new incarnation of the same transactional id
    try:
        assert d.runners[0].positions == {key: 40}  # the committed transaction's checkpoint
        produce(broker.bootstrap, pc["input_topic"], small_events("b-", 20))
        got = consume_until(broker.bootstrap, pc["output_topic"], lambda out: len(out) >= 60)
    finally:
        d.stop()
    assert sorted(x["id"] for x in got) == sorted([f"a-{i}" for i in range(40)] + [f"b-{i}" for i in range(20)])
    assert {x["id"]: (x["action"], x["prob"]) for x in got if x["id"].startswith("a-")} == first
    assert not any(x["replay"] for x in got)


def _file_runner(cfg, events, out, committed):
    core = make_core(cfg.pipelines[0])
    return PipelineRunner(core, JsonLinesSource(str(events), topic=cfg.pipelines[0]["input_topic"]),
                          JsonLinesSink({"d": str(out)}), cfg.checkpoint, {"decision": "d", "dlq": "d"},
                          stop_at_end=True, committed_offsets=committed)


def _ran_once(tmp_path, name: str, n: int, every: int):
    """A file runner over ``n`` records, run to their end without exactly-once (checkpoints every
    ``every``, three kept): (the records' file, the config, the input topic, the runner)."""
    events = tmp_path / "in.jsonl"
    events.write_bytes(b"\n".join(make_records(n)) + b"\n")
    cfg = config.load_dict({"checkpoint": {"dir": str(tmp_path / "state"), "every_events": every, "keep": 3},
                            "pipelines": [pipeline_cfg(name)]}, env=False)
    r = _file_runner(cfg, events, tmp_path / "out.jsonl", None)
    r.restore()
    r.run()
    return events, cfg, cfg.pipelines[0]["input_topic"], r


def test_a_restore_under_exactly_once_takes_the_checkpoint_of_the_committed_offsets(tmp_path):
    """The checkpoint saved before a transaction that never committed is passed over; without a
    checkpoint of the committed offsets the learner starts fresh there; with no commit at all, from
    the beginning."""
    events, cfg, topic, r = _ran_once(tmp_path, "eos", 300, 60)
    saved = [meta["positions"][f"{topic}:0"] for _, _, meta in r.store.intact()]
    assert len(saved) == 3 and saved == sorted(saved, reverse=True)
    older = saved[1]
    r = _file_runner(cfg, events, tmp_path / "o2.jsonl", lambda: {f"{topic}:0": older})
    assert r.restore() and r.positions == {f"{topic}:0": older}
    r = _file_runner(cfg, events, tmp_path / "o3.jsonl", lambda: {f"{topic}:0": older + 1})
    assert not r.restore() and r.positions == {f"{topic}:0": older + 1}  # no such checkpoint: fresh, there
    r = _file_runner(cfg, events, tmp_path / "o4.jsonl", lambda: {})
    assert not r.restore() and r.positions == {}
    assert json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])["replay"] is False


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_a_failed_commit_aborts_and_the_daemon_decides_again_from_the_committed_checkpoint(
        broker, tmp_path, monkeypatch, client):
    """The second transaction's commit fails: the daemon aborts it, rebuilds its clients, restores
    the checkpoint of the first (committed) transaction and decides the rest again. The embedded
    broker shows the aborted transaction's records too, so the check is on what isolation rests
    on: the offsets end committed at the end, every event is decided, and whatever of the aborted
    transaction reached the log is exactly what its redo published (the same state decided it)."""
    from connectors import transactions
    from connectors.kafka import committed_offsets

    monkeypatch.setattr(transactions, "isolation_problem", lambda settings, **kw: None)
    calls = {"n": 0}
    for cls in (transactions.KafkaPythonTransactionalSink, transactions.ConfluentTransactionalSink):
        def failing(self, positions, group_metadata, _commit=cls.commit):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("injected: the commit failed")
            return _commit(self, positions, group_metadata)
        monkeypatch.setattr(cls, "commit", failing)
    pc, cfg = _cfg(broker, tmp_path, f"eosabort-{client}", client=client)
    key = f"{pc['input_topic']}:0"
    d = Daemon(cfg).start()
    try:
        produce(broker.bootstrap, pc["input_topic"], small_events("a-", 40))
        deadline = time.monotonic() + 60
        while committed_offsets(cfg.kafka, cfg.pipelines[0]["group_id"], pc["input_topic"]).get(key) != 40:
            assert time.monotonic() < deadline, "the offsets were not committed after the abort"
            time.sleep(0.2)
        got = consume_until(broker.bootstrap, pc["output_topic"],
                            lambda out: {x["id"] for x in out} >= {f"a-{i}" for i in range(40)})
        assert d.metrics.broker_reconnects.labels(pipeline=pc["name"], client=client)._value.get() >= 1
    finally:
        d.stop()
    assert calls["n"] > 2
    assert {x["id"] for x in got} == {f"a-{i}" for i in range(40)}
    seen: dict[str, tuple] = {}
    for x in got:
        assert seen.setdefault(x["id"], (x["action"], x["prob"])) == (x["action"], x["prob"])
    assert not any(x["replay"] for x in got)


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_with_a_changelog_the_keyed_state_commits_in_the_transaction_and_a_new_owner_resumes_from_it(
        broker, tmp_path, monkeypatch, client):
    """Probe set aside. A keyed pipeline's changelog records go in the transaction that commits its
    decisions and offsets (no published marks: nothing is marked replay). A daemon on another
    machine (no local checkpoint) resumes at the committed offsets with each partition's keys from
    the changelog, and decides exactly as one daemon that never stopped."""
    import uuid

    from connectors import transactions
    from connectors.changelog import read_all
    from connectors.kafka import committed_offsets, create_topics

    from .test_changelog_daemon import _reference, consume, pipeline, produce_keyed, stream

    monkeypatch.setattr(transactions, "isolation_problem", lambda settings, **kw: None)
    tag = f"eoscl{uuid.uuid4().hex[:6]}"
    pc = pipeline(tag)
    settings = {"bootstrap_servers": broker.bootstrap}
    create_topics(settings, [pc["input_topic"], pc["output_topic"], f"{pc['name']}.dead-letter"], partitions=2)

    def daemon(state: str) -> Daemon:
        cfg = config.load_dict({"kafka": {"bootstrap_servers": broker.bootstrap, "group_id": tag, "client": client,
                                          "fetch_max_wait_ms": 50, "exactly_once": True,
                                          "transactional_id": f"{tag}-{state}"},
                                "http": {"enabled": False},
                                "checkpoint": {"dir": str(tmp_path / state), "every_events": 25},
                                "pipelines": [pc]}, env=False)
        return Daemon(cfg).start()

    recs = stream(200)
    half = next(i for i, (_, r) in enumerate(recs) if r.get("id") == "e100")
    n_first = sum(1 for _, r in recs[:half] if "type" not in r)
    produce_keyed(broker.bootstrap, pc["input_topic"], recs[:half])
    a = daemon("machine-a")
    try:
        assert len(consume(broker.bootstrap, pc["output_topic"], n_first, timeout=90)) == n_first
        time.sleep(1.0)  # the feedback after the last event of the first half is consumed too
    finally:
        a.stop()  # its last transaction commits each partition's keys with the offsets
    group = a.cfg.pipelines[0]["group_id"]
    offsets = committed_offsets(settings, group, pc["input_topic"])
    states, marks = read_all(settings, pc["changelog_topic"])
    assert not marks  # (no published marks under exactly-once)
    assert {k: st.position for k, st in states.items()} == offsets and sum(offsets.values()) == half
    produce_keyed(broker.bootstrap, pc["input_topic"], recs[half:])
    b = daemon("machine-b")  # another machine, another transactional id
    try:
        outs = consume(broker.bootstrap, pc["output_topic"], 200, timeout=90)
    finally:
        b.stop()
    got = {o["id"]: o for o in outs}
    assert len(outs) == 200 and len(got) == 200 and not any(o["replay"] for o in outs)
    want = _reference(pc, recs)
    mismatched = [w["id"] for w in want if (got[w["id"]]["action"], got[w["id"]]["probs"]) != (w["action"], w["probs"])]
    assert not mismatched, mismatched[:5]


def test_a_checkpoint_matches_on_its_own_partitions_and_a_resume_without_one_starts_from_a_fresh_learner(tmp_path):
    """Other daemons of the group commit the partitions this one does not own: a checkpoint is
    the committed transaction's when its own partitions' positions equal the committed offsets.
    Where none is, the learner restarts fresh at the committed offsets, not with what this runner
    had learned in the aborted run."""
    import numpy as np

    events, cfg, topic, r = _ran_once(tmp_path, "eos2", 200, 50)
    newest = next(iter(r.store.intact()))[2]["positions"][f"{topic}:0"]
    others = {f"{topic}:1": 7, f"{topic}:2": 9}  # another daemon's partitions
    r2 = _file_runner(cfg, events, tmp_path / "o2.jsonl", lambda: {f"{topic}:0": newest, **others})
    assert r2.restore() and r2.positions == {f"{topic}:0": newest}
    fresh = {k: v.copy() for k, v in make_core(cfg.pipelines[0]).snapshot()[0].items()}
    learned = r2.core.snapshot()[0]
    assert any(not np.array_equal(learned[k], fresh[k]) for k in fresh)
    r2.committed_offsets = lambda: {f"{topic}:0": newest + 1, **others}  # (a commit no checkpoint holds)
    assert not r2.restore()
    now = r2.core.snapshot()[0]
    assert all(np.array_equal(now[k], fresh[k]) for k in fresh)
    assert r2.positions == {f"{topic}:0": newest + 1, **others}


def test_a_partition_lost_from_the_group_aborts_the_open_transaction(tmp_path):
    """A lost partition (a session timeout: another member may consume it already) has outputs in
    the open transaction: the step raises, so the daemon aborts and resumes from the checkpoint of
    the last committed transaction, rather than commit them."""
    from connectors.base import DeliveryError

    events = tmp_path / "in.jsonl"
    events.write_bytes(b"\n".join(make_records(30)) + b"\n")
    cfg = config.load_dict({"checkpoint": {"dir": str(tmp_path / "state"), "every_events": 1000, "keep": 2},
                            "pipelines": [pipeline_cfg("eos3")]}, env=False)
    topic = cfg.pipelines[0]["input_topic"]

    class Losing(JsonLinesSource):
        lost: list[str] = []

        def take_lost(self):
            out, self.lost = self.lost, []
            return out

    src = Losing(str(events), topic=topic)
    r = PipelineRunner(make_core(cfg.pipelines[0]), src, JsonLinesSink({"d": str(tmp_path / "out.jsonl")}),
                       cfg.checkpoint, {"decision": "d", "dlq": "d"}, stop_at_end=True, committed_offsets=lambda: {})
    r.restore()
    assert r.step() > 0
    src.lost = [f"{topic}:0"]
    with pytest.raises(DeliveryError, match="lost from the group: the open transaction is aborted"):
        r.step()
    plain = PipelineRunner(make_core(cfg.pipelines[0]), Losing(str(events), topic=topic),
                           JsonLinesSink({"d": str(tmp_path / "o2.jsonl")}), cfg.checkpoint,
                           {"decision": "d", "dlq": "d"}, stop_at_end=True)
    plain.source.lost = [f"{topic}:0"]  # at least once: a lost partition is not an error
    plain.step()
