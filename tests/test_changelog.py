"""The changelog topic's records (connectors.changelog): chunked generations, tombstones, and a
round trip through a real broker."""

from __future__ import annotations

import os
import random
import time
import uuid

import pytest

from connectors import changelog as cl


def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def test_a_generation_is_chunks_then_its_header_then_the_previous_ones_tombstones():
    recs = cl.records("in:3", 2, blob(2500, 0), position=41, previous=1, previous_chunks=4, chunk_bytes=1000)
    keys = [k.decode() for k, _ in recs]
    assert keys == ["in:3/2/0", "in:3/2/1", "in:3/2/2", "in:3", "in:3/1/0", "in:3/1/1", "in:3/1/2", "in:3/1/3"]
    assert all(v is None for _, v in recs[4:]) and max(len(v) for _, v in recs[:3] if v) == 1000
    assert cl.records("p", 0, b"", 0)[0] == (b"p/0/0", b"")  # an empty state is one empty chunk


def test_fold_keeps_each_partitions_latest_generation():
    a1, a2, b1 = blob(3000, 1), blob(1200, 2), blob(10, 3)
    log = (cl.records("a", 1, a1, 10, chunk_bytes=1000) + cl.records("b", 1, b1, 5, chunk_bytes=1000)
           + cl.records("a", 2, a2, 20, previous=1, previous_chunks=3, chunk_bytes=1000))
    got = cl.fold(log)
    assert got["a"] == cl.PartitionState("a", 2, 20, a2, 2) and got["b"].state == b1 and got["b"].position == 5
    # what compaction keeps (the last record per key, tombstoned keys gone) folds the same
    last = {}
    for k, v in log:
        last[k] = v
    assert cl.fold([(k, v) for k, v in last.items() if v is not None]) == got


def test_published_marks_fold_to_each_partitions_latest_and_are_not_states():
    log = (cl.mark_records({"in:0": 5, "in:1": 3}) + cl.records("in:0", 1, blob(10, 5), 4)
           + cl.mark_records({"in:0": 9}))
    assert cl.fold_marks(log) == {"in:0": 9, "in:1": 3}
    assert set(cl.fold(log)) == {"in:0"} and cl.fold(log)["in:0"].position == 4


def test_a_missing_chunk_or_a_wrong_checksum_is_an_error_not_a_silent_state():
    recs = cl.records("a", 1, blob(3000, 4), 1, chunk_bytes=1000)
    with pytest.raises(cl.ChangelogError, match="misses chunk"):
        cl.fold([r for r in recs if r[0] != b"a/1/1"])
    bad = [(k, (b"x" + v[1:]) if k == b"a/1/0" and v else v) for k, v in recs]
    with pytest.raises(cl.ChangelogError, match="checksum"):
        cl.fold(bad)
    # a header whose generation's chunks were not all written is never read: the header comes last
    assert cl.fold(recs[:2]) == {}


def test_through_a_real_broker_state_larger_than_a_message_round_trips(broker):
    from kafka import KafkaProducer

    settings = {"bootstrap_servers": broker.bootstrap}
    topic = f"changelog-{uuid.uuid4().hex[:8]}"
    cl.create_changelog(settings, topic)
    cl.create_changelog(settings, topic)  # idempotent
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=1 << 20)
    first = {f"in:{i}": os.urandom(900_000 + i) for i in range(3)}  # chunked at 256 KiB
    for part, state in first.items():
        for k, v in cl.records(part, 1, state, 100, chunk_bytes=256 * 1024):
            p.send(topic, key=k, value=v)
    p.flush()
    got = cl.read(settings, topic)
    assert {k: s.state for k, s in got.items()} == first and all(s.position == 100 for s in got.values())
    second = os.urandom(300_000)
    for k, v in cl.records("in:1", 2, second, 250, previous=1, previous_chunks=4, chunk_bytes=256 * 1024):
        p.send(topic, key=k, value=v)
    p.flush()
    p.close()
    got = cl.read(settings, topic)
    assert got["in:1"] == cl.PartitionState("in:1", 2, 250, second, 2) and got["in:0"].state == first["in:0"]
    assert cl.read(settings, f"absent-{uuid.uuid4().hex[:8]}") == {}


def test_a_reader_reads_the_log_once_then_only_what_was_appended(broker):
    from kafka import KafkaProducer

    settings = {"bootstrap_servers": broker.bootstrap}
    topic = f"changelog-{uuid.uuid4().hex[:8]}"
    cl.create_changelog(settings, topic)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)

    def send(recs):
        for k, v in recs:
            p.send(topic, key=k, value=v)
        p.flush()

    reader = cl.Reader(settings, topic)
    try:
        assert reader.catch_up() == ({}, {})
        a1, b1 = blob(3000, 6), blob(500, 7)
        first = cl.records("a", 1, a1, 10, chunk_bytes=1000) + cl.records("b", 1, b1, 4) + cl.mark_records({"a": 12})
        send(first)
        states, marks = reader.catch_up()
        assert states["a"].state == a1 and states["b"].state == b1 and marks == {"a": 12}
        assert reader.records_read == len(first)
        a2 = blob(1500, 8)  # a new generation of a: its old chunks tombstoned
        second = cl.records("a", 2, a2, 30, previous=1, previous_chunks=3, chunk_bytes=1000) + cl.mark_records({"a": 31})
        send(second)
        states, marks = reader.catch_up()
        assert reader.records_read == len(first) + len(second)  # only the appended records
        assert (states, marks) == cl.read_all(settings, topic) and states["a"].position == 30
        assert not any(k.startswith(b"a/1/") for k in reader._last)  # tombstoned keys are not kept
    finally:
        reader.close()
        p.close()


def test_a_reader_at_the_end_of_a_batch_of_several_records_does_not_read_the_log_again(broker):
    """The embedded broker answers "latest" with the last batch's first offset + 1: a reader that
    has read a batch of several records stands beyond that end, and must not take the log for lost
    (reading it all again at every catch-up) while the records are there."""
    from kafka import KafkaProducer

    settings = {"bootstrap_servers": broker.bootstrap}
    topic = f"changelog-{uuid.uuid4().hex[:8]}"
    cl.create_changelog(settings, topic)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=200)  # (each send() below: one batch)

    def send(recs):
        for k, v in recs:
            p.send(topic, key=k, value=v)
        p.flush()

    reader = cl.Reader(settings, topic)
    try:
        first = cl.records("a", 1, blob(3000, 6), 10, chunk_bytes=1000) + cl.mark_records({"a": 12})
        send(first)
        reader.catch_up()
        assert reader.records_read == len(first)
        for _ in range(3):
            assert reader.catch_up() == cl.read_all(settings, topic)
        assert reader.records_read == len(first)  # nothing read again
        second = cl.mark_records({"a": 20}) + cl.records("b", 1, blob(500, 7), 4)
        send(second)
        states, marks = reader.catch_up()
        assert marks == {"a": 20} and states["b"].position == 4
        assert reader.records_read == len(first) + len(second)
    finally:
        reader.close()
        p.close()


def test_a_reader_whose_log_was_lost_reads_the_new_one_from_its_beginning(tmp_path):
    """A memory broker restarted on its port: the log the reader had read is gone; its next
    catch-up holds what the new log holds, and nothing of the old one."""
    from kafka import KafkaProducer

    from connectors.embedded import EmbeddedBroker

    broker = EmbeddedBroker().start()
    settings = {"bootstrap_servers": broker.bootstrap}
    topic = "changelog-lost"
    reader = cl.Reader(settings, topic)
    try:
        cl.create_changelog(settings, topic)
        p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=200)
        for k, v in cl.records("a", 1, blob(3000, 6), 10, chunk_bytes=1000) + cl.mark_records({"a": 12}):
            p.send(topic, key=k, value=v)
        p.flush()
        p.close()
        states, marks = reader.catch_up()
        assert set(states) == {"a"} and marks == {"a": 12}
        broker.stop(kill=True)
        broker = EmbeddedBroker(port=broker.port).start()
        cl.create_changelog(settings, topic)
        p = KafkaProducer(bootstrap_servers=broker.bootstrap)
        for k, v in cl.mark_records({"b": 3}):
            p.send(topic, key=k, value=v)
        p.flush()
        p.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                got = reader.catch_up(timeout_s=10)
                if got == ({}, {"b": 3}):
                    break
            except cl.ChangelogError:
                pass
            assert time.monotonic() < deadline, got
            time.sleep(0.5)
    finally:
        reader.close()
        broker.stop()
