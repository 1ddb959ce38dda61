"""A keyed pipeline's state follows its partitions through the changelog topic (issue 16): a daemon
on another machine (no local checkpoint) that takes the partitions over restores each one's keys
before its first record, and decides exactly as one daemon that never stopped."""

from __future__ import annotations

import json
import random
import time
import uuid

import orjson
import pytest

from connectors.base import SourceRecord
from connectors.kafka import create_topics
from daemon import config
from daemon.app import Daemon
from daemon.keyed import KeyedEngine

from .test_kafka import consume, consume_until

MERCHANTS = [f"m{i}" for i in range(6)]


def stream(n: int, seed: int = 0) -> list[tuple[str, dict]]:
    """(merchant, record): events of six merchants and their rewards two events later."""
    rng = random.Random(seed)
    out, waiting = [], []
    for i in range(n):
        m = rng.choice(MERCHANTS)
        out.append((m, {"merchant": m, "id": f"e{i}", "time": float(i), "features": {"x": round(rng.random(), 3)},
                        "actions": ["a", "b", "c"]}))
        waiting.append((m, {"type": "feedback", "merchant": m, "id": f"e{i}", "time": float(i),
                            "reward": round(rng.random(), 3)}))
        if len(waiting) > 2:
            out.append(waiting.pop(0))
    return out + waiting


def pipeline(tag: str) -> dict:
    return {"name": "keyed", "learner": "squarecb", "input_topic": f"{tag}-in", "output_topic": f"{tag}-out",
            "n_features": 8, "learn_every_events": 4, "reward_wait_s": 1e6, "key_by": "merchant", "key_cap": 4,
            "changelog_topic": f"{tag}-changelog", "batch_max_events": 16}


def daemon(broker, tmp_path, tag: str, state: str, **kafka) -> Daemon:
    cfg = config.load_dict({"kafka": {"bootstrap_servers": broker.bootstrap, "group_id": tag,
                                      "fetch_max_wait_ms": 50, **kafka},
                            "http": {"enabled": False},
                            "checkpoint": {"dir": str(tmp_path / state), "every_events": 25},
                            "pipelines": [pipeline(tag)]}, env=False)
    return Daemon(cfg).start()


def produce_keyed(bootstrap: str, topic: str, recs: list[tuple[str, dict]]) -> None:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for m, r in recs:
        p.send(topic, key=m.encode(), value=json.dumps(r).encode())
    p.flush()
    p.close()


def decided(outs: list[dict]) -> dict[str, dict]:
    return {o["id"]: o for o in outs}


@pytest.mark.kafka
def test_a_new_owner_restores_each_partitions_keys_from_the_changelog(broker, tmp_path):
    tag = f"cl{uuid.uuid4().hex[:6]}"
    pc = pipeline(tag)
    create_topics({"bootstrap_servers": broker.bootstrap}, [pc["input_topic"], pc["output_topic"]], partitions=2)
    recs = stream(240)
    half = next(i for i, (_, r) in enumerate(recs) if r.get("id") == "e120")
    n_first = sum(1 for _, r in recs[:half] if "type" not in r)
    produce_keyed(broker.bootstrap, pc["input_topic"], recs[:half])
    a = daemon(broker, tmp_path, tag, "machine-a")
    try:
        first = consume(broker.bootstrap, pc["output_topic"], n_first, timeout=90)
        assert len(first) == n_first
        time.sleep(1.0)  # the feedback after the last event of the first half is consumed too
    finally:
        a.stop()  # its last checkpoint writes each partition's keys to the changelog
    produce_keyed(broker.bootstrap, pc["input_topic"], recs[half:])
    b = daemon(broker, tmp_path, tag, "machine-b")  # another machine: no local checkpoint
    try:
        outs = consume(broker.bootstrap, pc["output_topic"], 240, timeout=90)
        m = b.metrics.registry
        restored = [m.get_sample_value("eddy_partition_restore_seconds", {"pipeline": "keyed", "partition": p})
                    for p in (f"{pc['input_topic']}:0", f"{pc['input_topic']}:1")]
    finally:
        b.stop()
    got = decided(outs)
    assert len(outs) == 240 and len(got) == 240  # every event decided once: none replayed, none lost
    assert all(r is not None for r in restored), restored
    # the same decisions as one daemon that never stopped (per key: its records in log order)
    ref = KeyedEngine(config.load_dict({"pipelines": [pc]}, env=False).pipelines[0])
    want = [orjson.loads(o.value) for o in ref.handle([SourceRecord(json.dumps(r).encode(), pc["input_topic"],
                                                                    0, i) for i, (_, r) in enumerate(recs)])]
    mismatched = [w["id"] for w in want if (got[w["id"]]["action"], got[w["id"]]["probs"]) != (w["action"], w["probs"])]
    assert not mismatched, mismatched[:5]


def _reference(pc: dict, recs: list[tuple[str, dict]]) -> list[dict]:
    ref = KeyedEngine(config.load_dict({"pipelines": [pc]}, env=False).pipelines[0])
    return [orjson.loads(o.value) for o in ref.handle([SourceRecord(json.dumps(r).encode(), pc["input_topic"], 0, i)
                                                       for i, (_, r) in enumerate(recs)])]


@pytest.mark.kafka
@pytest.mark.parametrize("mode", ["at-least-once", "exactly-once/kafka-python", "exactly-once/confluent-kafka"])
def test_a_partition_moved_by_a_rebalance_takes_its_keys_to_the_new_member(broker, tmp_path, monkeypatch, mode):
    """A second daemon joins the group while the first runs: the cooperative rebalance moves a
    partition, the first writes its keys to the changelog on revocation, the second restores them;
    every decision, duplicates included, is the one an uninterrupted daemon makes. Exactly-once
    (the isolation probe set aside: the embedded broker does not isolate): the revoked partition's
    keys and offsets commit in the open transaction, and nothing is marked replay."""
    tag = f"rb{uuid.uuid4().hex[:6]}"
    eos = mode.startswith("exactly-once")
    kafka: dict = {}
    if eos:
        from connectors import transactions

        monkeypatch.setattr(transactions, "isolation_problem", lambda settings, **kw: None)
        kafka = {"exactly_once": True, "client": mode.split("/")[1]}
    pc = pipeline(tag)
    create_topics({"bootstrap_servers": broker.bootstrap}, [pc["input_topic"], pc["output_topic"]], partitions=2)
    recs = stream(240, seed=1)
    half = next(i for i, (_, r) in enumerate(recs) if r.get("id") == "e120")
    n_first = sum(1 for _, r in recs[:half] if "type" not in r)
    produce_keyed(broker.bootstrap, pc["input_topic"], recs[:half])
    a = daemon(broker, tmp_path, tag, "machine-a", **kafka, **({"transactional_id": f"{tag}-a"} if eos else {}))
    b = None
    try:
        assert len(consume(broker.bootstrap, pc["output_topic"], n_first, timeout=90)) == n_first
        time.sleep(1.0)
        b = daemon(broker, tmp_path, tag, "machine-b", **kafka, **({"transactional_id": f"{tag}-b"} if eos else {}))
        owned = lambda d: d.metrics.registry.get_sample_value(  # noqa: E731
            "eddy_assigned_partitions", {"pipeline": "keyed", "topic": pc["input_topic"]}) or 0
        deadline = time.monotonic() + 60
        while not (owned(a) == 1 and owned(b) == 1) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert owned(a) == 1 and owned(b) == 1, (owned(a), owned(b))
        produce_keyed(broker.bootstrap, pc["input_topic"], recs[half:])
        ids = {r["id"] for _, r in recs}
        outs = consume_until(broker.bootstrap, pc["output_topic"], lambda o: {x["id"] for x in o} >= ids,
                             timeout=120)
        time.sleep(2.0)
        outs += consume(broker.bootstrap, pc["output_topic"], 10_000, timeout=3)[len(outs):]
    finally:
        a.stop()
        if b is not None:
            b.stop()
    want = {w["id"]: w for w in _reference(pc, recs)}
    assert {o["id"] for o in outs} == set(want)  # every event decided
    wrong = [o["id"] for o in outs if (o["action"], o["probs"]) != (want[o["id"]]["action"], want[o["id"]]["probs"])]
    assert not wrong, wrong[:5]
    if eos:  # (an aborted transaction's decisions show on this broker: they equal their redo's, above)
        assert not any(o.get("replay") for o in outs)
        return
    seen: dict[str, int] = {}
    for o in outs:  # a decision published twice (a hand-over) is marked replay after the first
        seen[o["id"]] = seen.get(o["id"], 0) + 1
        assert seen[o["id"]] == 1 or o.get("replay"), o
