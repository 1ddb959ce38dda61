"""The daemon as a process among others: several pipelines start consuming promptly, readiness
means consuming, and nothing it made (a broker, a Kafka client) outlives it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
from kafka import KafkaProducer

from connectors.kafka import create_topics
from daemon import config
from daemon.app import Daemon

from .conftest import pipeline_cfg

pytestmark = pytest.mark.kafka
CLIENTS = ["kafka-python", "confluent-kafka"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tagged(tag: str) -> list[int]:
    """Live processes (not zombies) whose environment carries ``EDDY_TEST_TAG=tag``: a process and
    every descendant it started, wherever they were reparented."""
    out = []
    needle = f"EDDY_TEST_TAG={tag}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    out.append(int(pid))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return out


def wait_until(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def client_threads() -> list[str]:
    """One thread per live Kafka client of this process: librdkafka's main thread (an OS thread
    named rdk:main; its broker threads vary with the brokers it knows) and kafka-python's thread."""
    names = []
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            continue
    return sorted([n for n in names if n == "rdk:main"]  # client numbers in names (producer-4) stripped
                  + [re.sub(r"\d+", "N", t.name) for t in threading.enumerate() if t.name.startswith("kafka")])


def decided(d, name) -> float:
    return d.metrics.registry.get_sample_value("eddy_decisions_total", {"pipeline": name, "source": "kafka"}) or 0


@pytest.mark.slow
@pytest.mark.parametrize("client", CLIENTS)
def test_three_pipelines_each_decide_their_first_record_within_10s(broker, tmp_path, client):
    """Three bandit pipelines in one daemon, records produced after start: in each of ten runs every
    pipeline decides its first record within 10 s of that record being produced. (With one consumer
    group for all pipelines, kafka-python left one or two of them without a partition for 50-95 s.)"""
    names = ["routing", "fraud", "retry"]
    for run in range(10):
        tag = f"three{CLIENTS.index(client)}r{run}"
        pcs = [pipeline_cfg(f"{tag}{n}") for n in names]
        cfg = config.load_dict({"kafka": {"client": client, "bootstrap_servers": broker.bootstrap, "group_id": tag},
                                "http": {"enabled": False},
                                "checkpoint": {"dir": str(tmp_path / tag)}, "pipelines": pcs}, env=False)
        create_topics(cfg.kafka, [t for p in cfg.pipelines
                                  for t in (p["input_topic"], p["output_topic"], p["dead_letter_topic"])])
        d = Daemon(cfg).start()
        try:
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
            produced = {}
            for p in pcs:
                event = {"id": "first", "time": 1.0, "features": {"x": 1.0}, "actions": ["a", "b"]}
                producer.send(p["input_topic"], json.dumps(event).encode()).get(timeout=10)
                produced[p["name"]] = time.monotonic()
            producer.close()
            first: dict[str, float] = {}
            deadline = time.monotonic() + 12
            while len(first) < len(pcs) and time.monotonic() < deadline:
                for p in pcs:
                    if p["name"] not in first and decided(d, p["name"]) >= 1:
                        first[p["name"]] = time.monotonic() - produced[p["name"]]
                time.sleep(0.05)
            late = {p["name"]: first.get(p["name"]) for p in pcs if first.get(p["name"], 99.0) > 10.0}
            assert not late, f"run {run}: pipelines without a decision within 10 s: {late} (decided: {first})"
            for p in pcs:  # each owns its one partition, in its own group (the gauge: every 0.5 s)
                assert wait_until(lambda p=p, d=d: d.metrics.registry.get_sample_value("eddy_assigned_partitions", {
                    "pipeline": p["name"], "topic": p["input_topic"]}) == 1, 2)
        finally:
            d.stop()


def _get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("client", CLIENTS)
def test_ready_means_joined_and_restored_and_a_spare_member_is_ready(broker, tmp_path, client):
    """/readyz and eddy_ready: 503 until the pipeline's group is joined and its partitions restored;
    a second daemon of the same pipeline on a one-partition topic owns nothing and is ready too."""
    name = f"ready{CLIENTS.index(client)}"
    pc = pipeline_cfg(name)

    def daemon_cfg(who):
        return config.load_dict({"kafka": {"client": client, "bootstrap_servers": broker.bootstrap, "group_id": name},
                                 "http": {"port": 0}, "checkpoint": {"dir": str(tmp_path / who)},
                                 "pipelines": [pc]}, env=False)

    create_topics(daemon_cfg("a").kafka, [pc["input_topic"], pc["output_topic"], f"{pc['input_topic']}.dlq"])
    a = Daemon(daemon_cfg("a")).start()
    b = None
    try:
        status, body = _get(a.http_port, "/readyz")
        if status == 503:  # not joined yet: says which pipeline holds readiness back
            assert body["pipelines"][name]["ready"] is False
        assert wait_until(lambda: _get(a.http_port, "/readyz")[0] == 200, 30)
        body = _get(a.http_port, "/readyz")[1]
        assert body["pipelines"][name] == {"ready": True, "joined": True, "assigned": [f"{pc['input_topic']}:0"]}
        assert wait_until(lambda: a.metrics.registry.get_sample_value("eddy_ready", {"pipeline": name}) == 1, 2)
        b = Daemon(daemon_cfg("b")).start()
        assert wait_until(lambda: _get(b.http_port, "/readyz")[0] == 200, 30), _get(b.http_port, "/readyz")
        assert _get(b.http_port, "/readyz")[1]["pipelines"][name] == {"ready": True, "joined": True, "assigned": []}
        assert wait_until(lambda: b.metrics.registry.get_sample_value(
            "eddy_assigned_partitions", {"pipeline": name, "topic": pc["input_topic"]}) == 0, 5)
        assert a.metrics.registry.get_sample_value(
            "eddy_assigned_partitions", {"pipeline": name, "topic": pc["input_topic"]}) == 1
    finally:
        a.stop()
        if b is not None:
            b.stop()


def _run_cfg(tmp_path, tag, http_port, state=None):
    path = tmp_path / f"{tag}.toml"
    pc = pipeline_cfg(tag)
    lines = ['[kafka]\nbootstrap_servers = "embedded"\n', f"[http]\nport = {http_port}\n",
             f'[checkpoint]\ndir = "{state or tmp_path / "state"}"\n', "[[pipelines]]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in pc.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _eddy(args, tag, **kw):
    env = {**os.environ, "EDDY_TEST_TAG": tag}
    return subprocess.Popen([sys.executable, "-m", "daemon.cli", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_a_failed_start_leaves_no_broker_behind(tmp_path):
    """`eddy run` on the embedded broker with its HTTP port taken: one line naming the port, exit 1,
    and no process of its tree left (the broker had started before the failure)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        tag = uuid.uuid4().hex
        proc = _eddy(["run", "--config", _run_cfg(tmp_path, "portclash", port)], tag)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err
    assert wait_until(lambda: not tagged(tag), 10), f"left behind: {tagged(tag)}"


def test_a_failed_start_on_damaged_checkpoints_leaves_no_broker_behind(tmp_path):
    state = tmp_path / "state" / "ckbad"
    state.mkdir(parents=True)
    (state / "ckpt-000000000001.json").write_text("{")
    tag = uuid.uuid4().hex
    proc = _eddy(["run", "--config", _run_cfg(tmp_path, "ckbad", 0)], tag)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    lines = [line for line in err.splitlines() if "no intact checkpoint" in line]
    assert len(lines) == 1 and str(state) in lines[0] and "Traceback" not in err
    assert wait_until(lambda: not tagged(tag), 10), f"left behind: {tagged(tag)}"


def test_a_killed_daemon_takes_its_broker_with_it(tmp_path):
    """kill -9 of the daemon's own process: its embedded broker goes too (within seconds)."""
    tag = uuid.uuid4().hex
    proc = _eddy(["run", "--config", _run_cfg(tmp_path, "killed", 0)], tag)
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # wait until it runs
        if "eddy running" in line or time.monotonic() > deadline:
            break
    assert len(tagged(tag)) >= 3  # the daemon, the broker's guard, the broker
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert wait_until(lambda: not tagged(tag), 15), f"left behind: {tagged(tag)}"


def one_pipeline(broker, tmp_path, client, name):
    """A one-pipeline daemon config named ``name`` (HTTP off, kafka.group_id = name), topics created."""
    pc = pipeline_cfg(name)
    cfg = config.load_dict({"kafka": {"client": client, "bootstrap_servers": broker.bootstrap, "group_id": name},
                            "http": {"enabled": False}, "checkpoint": {"dir": str(tmp_path)},
                            "pipelines": [pc]}, env=False)
    create_topics(cfg.kafka, [pc["input_topic"], pc["output_topic"], cfg.pipelines[0]["dead_letter_topic"]])
    return pc, cfg


@pytest.mark.parametrize("client", CLIENTS)
def test_stop_releases_every_kafka_client(broker, tmp_path, client):
    """After stop, none of the daemon's Kafka clients is alive (a confluent-kafka producer left to
    the garbage collector used to go on reconnecting to the broker for minutes)."""
    before = client_threads()
    pc, cfg = one_pipeline(broker, tmp_path, client, f"release{CLIENTS.index(client)}")
    d = Daemon(cfg).start()
    try:
        assert wait_until(lambda: len(client_threads()) > len(before), 10)
    finally:
        d.stop()
    assert wait_until(lambda: client_threads() == before, 10), (before, client_threads())


@pytest.mark.parametrize("client", CLIENTS)
def test_an_upgrade_without_checkpoints_resumes_from_the_earlier_shared_group(broker, tmp_path, client):
    """Before the per-pipeline groups every pipeline consumed in kafka.group_id itself. A daemon
    upgraded without its checkpoints resumes each pipeline from the offsets that group committed
    (once: its own group's commits decide from then on), not at auto_offset_reset."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    legacy = f"legacy{CLIENTS.index(client)}"
    pc, cfg = one_pipeline(broker, tmp_path, client, legacy)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(10):
        event = {"id": f"m{i}", "time": float(i), "features": {"x": 1.0}, "actions": ["a", "b"]}
        producer.send(pc["input_topic"], json.dumps(event).encode())
    producer.flush()
    producer.close()
    old = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=legacy, enable_auto_commit=False)
    old.commit({TopicPartition(pc["input_topic"], 0): OffsetAndMetadata(6, "", -1)})  # decided m0..m5 before
    old.close()
    d = Daemon(cfg).start()
    try:
        assert wait_until(lambda: decided(d, legacy) >= 4, 30)
        time.sleep(1.0)
        assert decided(d, legacy) == 4  # m6..m9 only
    finally:
        d.stop()
    from connectors.kafka import committed_offsets
    assert committed_offsets(cfg.kafka, f"{legacy}.{legacy}", pc["input_topic"]) == {f"{pc['input_topic']}:0": 10}


@pytest.mark.parametrize("client", CLIENTS)
def test_topic_lag_counts_every_partition_past_the_groups_commits(broker, client):
    """eddy_topic_lag_messages' source: records past the group's committed offsets on every partition
    of the topic, owned or not (here by a source that owns nothing yet: it never polled)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    from connectors.kafka import make_source

    topic, group = f"lagtopic{CLIENTS.index(client)}", f"laggroup{CLIENTS.index(client)}"
    create_topics({"bootstrap_servers": broker.bootstrap}, [topic], partitions=2)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
    for i in range(10):  # one record per request: Tansu's end offsets are exact for single-record batches
        producer.send(topic, b"x", partition=i % 2).get(timeout=10)
    producer.close()
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False)
    c.commit({TopicPartition(topic, 0): OffsetAndMetadata(3, "", -1)})  # partition 1: nothing committed
    c.close()
    source = make_source({"client": client, "bootstrap_servers": broker.bootstrap, "group_id": group}, [topic])
    try:
        assert source.topic_lag() == {topic: (5 - 3) + 5}
    finally:
        source.close()


@pytest.mark.parametrize("client", CLIENTS)
def test_sources_carry_the_brokers_record_timestamp(broker, client):
    """max_time_ahead_s bounds a record's event time against its Kafka timestamp: both sources
    hand it over (milliseconds; CreateTime from the producer here)."""
    from connectors.kafka import make_source

    topic = f"tstopic{CLIENTS.index(client)}"
    create_topics({"bootstrap_servers": broker.bootstrap}, [topic])
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    producer.send(topic, b"x", timestamp_ms=1_700_000_000_123).get(timeout=10)
    producer.close()
    source = make_source({"client": client, "bootstrap_servers": broker.bootstrap, "group_id": f"ts{topic}"}, [topic])
    try:
        got: list = []
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            got = source.poll(10, 0.5)
        assert [(r.value, r.timestamp_ms) for r in got] == [(b"x", 1_700_000_000_123)]
    finally:
        source.close()
