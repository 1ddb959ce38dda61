"""A restore (or a hand-over) that outlasts the session timeout, on the real embedded broker.

kafka-python 3 runs the rebalance callbacks on its network thread, the one that sends the
heartbeats; the source runs the daemon's callbacks on a worker thread instead, so the member goes on
heartbeating through a long restore, and the partitions being restored return no record until their
state is restored and they are positioned where it resumes.
"""

from __future__ import annotations

import json
import time

import pytest
from kafka import KafkaProducer

from connectors.kafka import create_topics, make_source

pytestmark = pytest.mark.kafka
SESSION_MS = 6000
SLOW_S = 10.0  # longer than the session timeout


def _heartbeat_age(src) -> float:
    return src.consumer.metrics()["consumer-coordinator-metrics"]["last-heartbeat-seconds-ago"]


def _slow(src_box, ages, done, then=None):
    """A callback that takes ``SLOW_S``, noting the member's heartbeat age as it goes."""

    def callback(keys):
        t0 = time.monotonic()
        while time.monotonic() - t0 < SLOW_S:
            time.sleep(0.5)
            ages.append(_heartbeat_age(src_box[0]))
        if then:
            then(keys)
        done.append(time.monotonic())

    return callback


def _produce(bootstrap, topic, n):
    p = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(n):
        p.send(topic, json.dumps({"i": i}).encode(), partition=i % 2)
    p.flush()
    p.close()


def test_a_restore_longer_than_the_session_timeout_keeps_heartbeating_and_holds_its_partitions(broker):
    settings = {"client": "kafka-python", "bootstrap_servers": broker.bootstrap, "group_id": "slow-restore",
                "session_timeout_ms": SESSION_MS}
    create_topics(settings, ["slow-restore-in"], partitions=2)
    _produce(broker.bootstrap, "slow-restore-in", 20)
    box, ages, done = [], [], []
    restore = _slow(box, ages, done, then=lambda keys: box[0].seek({"slow-restore-in:0": 5}))
    src = make_source(settings, ["slow-restore-in"], on_assign=restore)
    box.append(src)
    try:
        got, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline and len(got) < 15:
            got += [(time.monotonic(), r) for r in src.poll(100, 0.05)]
        assert len(done) == 1, "the restore ran once"
        # heartbeats went on while it ran (a callback on the network thread leaves none: inf, or the
        # whole restore's length)
        assert ages[-1] < SESSION_MS / 2000, ages
        assert min(t for t, _ in got) > done[0], "a record returned before its partition was restored"
        assert sorted(r.offset for _, r in got if r.partition == 0) == list(range(5, 10))  # where it resumes
        assert sorted(r.offset for _, r in got if r.partition == 1) == list(range(10))
        assert src.take_lost() == [] and src.membership().restored
    finally:
        src.close()


def test_a_hand_over_longer_than_the_session_timeout_keeps_heartbeating(broker):
    """The first member's revocation callback (the daemon writes the partition's state for the next
    owner there) outlasts the session timeout: it goes on heartbeating, keeps the partition it
    still owns, and the partition moves to the second member, which decides it from its start."""
    settings = {"client": "kafka-python", "bootstrap_servers": broker.bootstrap, "group_id": "slow-hand-over",
                "session_timeout_ms": SESSION_MS}
    create_topics(settings, ["slow-hand-over-in"], partitions=2)
    _produce(broker.bootstrap, "slow-hand-over-in", 20)
    box, ages, done = [], [], []
    a = make_source(settings, ["slow-hand-over-in"], on_revoke=_slow(box, ages, done))
    box.append(a)
    b = None
    try:
        got_a, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline and len(got_a) < 20:
            got_a += a.poll(100, 0.05)
        assert len(got_a) == 20
        b = make_source({**settings}, ["slow-hand-over-in"])
        got_b, deadline = [], time.monotonic() + 90
        while time.monotonic() < deadline and not got_b:
            a.poll(100, 0.05)
            got_b += b.poll(100, 0.05)
        assert len(done) == 1, "the hand-over ran once"
        assert ages[-1] < SESSION_MS / 2000, ages
        assert a.take_lost() == [], "the first member was evicted"
        assert len(a.membership().assigned) == 1 and len(b.membership().assigned) == 1
        moved = b.membership().assigned[0]
        part = int(moved.rsplit(":", 1)[1])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(got_b) < 10:
            got_b += b.poll(100, 0.05)
        assert sorted(r.offset for r in got_b) == list(range(10)) and {r.partition for r in got_b} == {part}
    finally:
        a.close()
        if b is not None:
            b.close()
