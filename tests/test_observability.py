"""The generated Grafana dashboard and the shipped alerts against a real Prometheus scraping a real
daemon that runs one pipeline of each family on its own embedded broker, with traffic flowing.

Every query of every panel must return at least one series (valid PromQL is not enough), and each
alert must fire on its scripted fault: a forced default, a stream of bad records, a lost broker
(not ready), a stopped daemon (target down). The alerts are the shipped rules with their ``for:``
durations shortened to one second: the expressions are the shipped ones.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from connectors.embedded import EmbeddedBroker, free_port
from connectors.kafka import create_topics
from daemon import config, dashboard
from daemon.app import Daemon

from .test_kafka import produce

pytestmark = pytest.mark.prometheus
ROOT = os.path.join(os.path.dirname(__file__), "..")
RATE_WINDOW = "20s"  # what $__rate_interval reads as here (Grafana: 4 scrape intervals at least)

PIPELINES = [
    {"name": "routing", "learner": "squarecb", "input_topic": "routing-in", "output_topic": "routing-out",
     "n_features": 16, "reward_wait_s": 30.0, "shadow_learners": ["linucb"], "default_action": "a",
     "batch_max_events": 50, "batch_max_ms": 20.0},
    {"name": "credit", "learner": "groupwise-mixture", "input_topic": "credit-in", "output_topic": "credit-out",
     "n_features": 16, "reward_wait_s": 30.0, "learn_every_events": 8, "params": {"groups": ["segment-a"]},
     "group_rules": {"young": "age < 30"}},
    {"name": "edge", "learner": "paging-learned-discard", "input_topic": "edge-in", "output_topic": "edge-out",
     "params": {"capacity": 32, "switch_every": 64}, "shadow_learners": ["paging-lru"], "cache_window": 200},
    {"name": "heat", "learner": "sor-chebcb", "input_topic": "heat-in", "output_topic": "heat-out",
     "reward_wait_s": 30.0, "learn_every_events": 4, "params": {"context_range": [0.0, 0.6]}},
    {"name": "tenants", "learner": "epsilon-greedy", "input_topic": "tenants-in", "output_topic": "tenants-out",
     "n_features": 16, "reward_wait_s": 30.0, "key_by": "tenant", "key_cap": 2, "changelog_topic": "tenants-cl",
     "batch_max_events": 50},
    {"name": "digest", "learner": "submodular-dynamic", "input_topic": "digest-in", "output_topic": "digest-out",
     "params": {"objective": "feature-based", "d": 4, "k": 3, "capacity": 256}, "greedy_check_every": 20},
]


def _traffic(i: int, rng: random.Random) -> dict[str, list[bytes]]:
    """Tick ``i`` of every family's traffic: events, and feedback for the event of a few ticks ago."""
    d = lambda o: json.dumps(o).encode()  # noqa: E731
    t, j = float(i), i - 3
    out: dict[str, list[bytes]] = {p["input_topic"]: [] for p in PIPELINES}
    x = {f"f{k}": round(rng.gauss(0, 1), 3) for k in range(4)}
    out["routing-in"].append(d({"id": f"r{i}", "time": t, "features": x, "actions": ["a", "b", "c"]}))
    if j >= 0:
        out["routing-in"].append(d({"type": "feedback", "id": f"r{j}", "time": t, "reward": rng.random()}))
    tenant = f"t{i % 5}"  # five tenants over a key cap of two: keys go cold and come back
    out["tenants-in"].append(d({"tenant": tenant, "id": f"k{i}", "time": t, "features": x, "actions": ["a", "b"]}))
    if j >= 0:
        out["tenants-in"].append(d({"type": "feedback", "tenant": f"t{j % 5}", "id": f"k{j}", "time": t,
                                    "reward": rng.random()}))
    age = rng.randint(18, 70)
    out["credit-in"].append(d({"id": f"c{i}", "time": t, "features": {"age": age, "income": rng.random()},
                               "groups": ["segment-a"] if i % 3 == 0 else []}))
    if j >= 0:
        out["credit-in"].append(d({"type": "label", "id": f"c{j}", "time": t, "label": rng.random()}))
    for k in range(4):  # a Zipf-like key stream over 200 keys
        out["edge-in"].append(d({"key": int(200 * rng.random() ** 3), "time": t + k / 4}))
    out["heat-in"].append(d({"id": f"h{i}", "time": t, "context": round(rng.random() * 0.6, 2)}))
    if j >= 0:
        out["heat-in"].append(d({"type": "report", "id": f"h{j}", "time": t, "iterations": rng.randint(20, 90),
                                 "best_iterations": 20, "converged": i % 17 != 0, "seconds": 0.002}))
    out["digest-in"].append(d({"id": f"s{i}", "time": t, "features": [round(rng.random(), 3) for _ in range(4)]}))
    if i >= 10 and i % 4 == 0:
        out["digest-in"].append(d({"op": "delete", "id": f"s{i - 10}", "time": t}))
    return out


class Traffic(threading.Thread):
    """Steady traffic into every input topic (about 20 ticks a second), and sidecar calls; ``bad``
    topics also get that many undecodable records per tick."""

    def __init__(self, bootstrap: str, http_port: int):
        super().__init__(daemon=True)
        self.bootstrap, self.http_port = bootstrap, http_port
        self.stop_flag = threading.Event()
        self.bad: dict[str, int] = {}
        self.ticks = 0

    def run(self) -> None:
        from kafka import KafkaProducer

        p = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        rng = random.Random(7)
        while not self.stop_flag.is_set():
            for topic, values in _traffic(self.ticks, rng).items():
                for v in values + [b"{not json"] * self.bad.get(topic, 0):
                    p.send(topic, v)
            if self.ticks % 5 == 0:
                try:
                    call(self.http_port, "/v1/pipelines/routing/decide",
                         {"id": f"web{self.ticks}", "time": float(self.ticks), "features": {"f0": 1.0},
                          "actions": ["a", "b", "c"]})
                    call(self.http_port, "/v1/pipelines/routing/feedback",
                         {"id": f"web{self.ticks}", "reward": 1.0, "time": float(self.ticks)})
                except OSError:
                    pass  # the daemon was stopped (the target-down fault)
            self.ticks += 1
            p.flush()
            time.sleep(0.05)
        p.close()


def call(port: int, path: str, body: dict) -> tuple[int, dict]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", path, body=json.dumps(body).encode(), headers={"content-type": "application/json"})
    r = c.getresponse()
    out = json.loads(r.read())
    c.close()
    return r.status, out


def _rules_for_the_test(path: str) -> str:
    """The shipped alert rules, each ``for:`` one second (the expressions unchanged)."""
    with open(os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")) as f:
        rules = yaml.safe_load(f)
    for g in rules["groups"]:
        for r in g["rules"]:
            if "for" in r:
                r["for"] = "1s"
    with open(path, "w") as f:
        yaml.safe_dump(rules, f)
    return path


class Prom:
    def __init__(self, url: str):
        self.url = url

    def get(self, path: str, **params) -> dict:
        q = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{q}", timeout=10) as r:
            return json.loads(r.read())

    def query(self, expr: str) -> list[dict]:
        body = self.get("/api/v1/query", query=expr)
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def firing(self) -> set[tuple[str, str]]:
        """(alert name, pipeline label or '') of every firing alert."""
        alerts = self.get("/api/v1/alerts")["data"]["alerts"]
        return {(a["labels"]["alertname"], a["labels"].get("pipeline", "")) for a in alerts if a["state"] == "firing"}

    def wait_firing(self, alert: tuple[str, str], timeout: float = 90) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if alert in self.firing():
                return time.monotonic() - t0
            time.sleep(1)
        raise AssertionError(f"{alert} did not fire in {timeout}s; firing: {sorted(self.firing())}")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is required (make test installs it)"
    tmp = tmp_path_factory.mktemp("observability")
    broker = EmbeddedBroker().start()  # its own: the not-ready fault stops it
    cfg = config.load_dict({"kafka": {"bootstrap_servers": broker.bootstrap, "group_id": "obs"},
                            "http": {"enabled": True, "host": "127.0.0.1", "port": 0},
                            "checkpoint": {"dir": str(tmp / "state"), "every_events": 200},
                            "pipelines": PIPELINES}, env=False)
    topics = [t for p in cfg.pipelines for t in (p["input_topic"], p["output_topic"], p["dead_letter_topic"])]
    create_topics(cfg.kafka, topics)
    produce(broker.bootstrap, "routing-in", [b"{not json", b'{"id": 3}'])  # a few dead letters to show
    d = Daemon(cfg).start()
    traffic = Traffic(broker.bootstrap, d.http_port)
    traffic.start()
    prom_port = free_port()
    (tmp / "prom.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files: ['{_rules_for_the_test(str(tmp / 'alerts.yml'))}']\n"
        "scrape_configs:\n  - job_name: eddy\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{d.http_port}']\n")
    proc = subprocess.Popen([binary, f"--config.file={tmp / 'prom.yml'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}",
                             f"--storage.tsdb.path={tmp / 'data'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
    prom = Prom(f"http://127.0.0.1:{prom_port}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if prom.query('up{job="eddy"} == 1'):
                break
        except OSError:
            pass
        time.sleep(1)
    try:
        yield d, prom, traffic, broker
    finally:
        traffic.stop_flag.set()
        traffic.join(10)
        proc.terminate()
        proc.wait(10)
        d.stop()
        broker.stop()


def _instantiate(expr: str) -> str:
    return expr.replace("$__rate_interval", RATE_WINDOW).replace("$pipeline", ".*")


def test_every_panel_query_returns_a_series_from_a_daemon_that_ran_each_family(live):
    _, prom, _, _ = live
    queries = dashboard.queries()
    assert len(queries) >= 40
    empty: dict[str, str] = {}
    answers: dict[str, list[dict]] = {}
    deadline = time.monotonic() + 90  # rates need two scrapes in the window; ratios a first feedback
    pending = list(queries)
    while pending and time.monotonic() < deadline:
        for title, legend, expr in list(pending):
            res = prom.query(_instantiate(expr))
            if res:
                answers[expr] = res
                pending.remove((title, legend, expr))
            else:
                empty[f"{title} / {legend}"] = _instantiate(expr)
        time.sleep(1)
    assert not pending, "no series: " + json.dumps({f"{t} / {lg}": _instantiate(e) for t, lg, e in pending},
                                                     indent=1)
    # One series per pipeline where the panel is the runtime's (sidecar traffic is counted as events in)
    events = answers[dashboard.RUNTIME[0].targets[0].expr]
    assert {r["metric"]["pipeline"] for r in events} == {p["name"] for p in PIPELINES}
    kinds = {(r["metric"]["pipeline"], r["metric"]["kind"]) for r in events}
    assert {("routing", "event"), ("routing", "feedback"), ("credit", "label"), ("heat", "report")} <= kinds
    # The panel that answered nothing before (labels mismatched across a division): a real average
    reward = next(e for t, lg, e in queries if lg == "{{pipeline}} average reward")
    values = [float(r["value"][1]) for r in prom.query(_instantiate(reward))]
    assert values and all(0.0 <= v <= 1.0 for v in values), values


def test_the_pipeline_variable_filters_every_query(live):
    _, prom, _, _ = live
    for _, _, expr in dashboard.queries():
        if "$pipeline" not in expr:
            assert "process_" in expr, expr  # only the process's panel is per daemon, not per pipeline
            continue
        res = prom.query(expr.replace("$__rate_interval", RATE_WINDOW).replace("$pipeline", "edge"))
        assert all(r["metric"].get("pipeline") in ("edge", None) for r in res), (expr, res)


def test_the_alerts_fire_on_their_faults(live):
    d, prom, traffic, broker = live
    tested = {"EddyForcedDefault", "EddyDeadLetterRateHigh", "EddyNotReady", "EddyTargetDown"}
    assert not {a for a in prom.firing() if a[0] in tested}, prom.firing()  # (latency may fire on a busy box)
    # A forced default, through the control verb
    st, _ = call(d.http_port, "/v1/pipelines/routing/control", {"force_default": True})
    assert st == 200
    prom.wait_firing(("EddyForcedDefault", "routing"))
    call(d.http_port, "/v1/pipelines/routing/control", {"force_default": False})
    # A stream of bad records: one undecodable record per good event of the groupwise pipeline
    assert ("EddyDeadLetterRateHigh", "credit") not in prom.firing()
    traffic.bad["credit-in"] = 2
    prom.wait_firing(("EddyDeadLetterRateHigh", "credit"))
    prom.wait_firing(("EddyDeadLetters", "credit"))
    traffic.bad.clear()
    # The broker lost: the pipelines leave their groups, not ready
    broker.stop(kill=True)
    prom.wait_firing(("EddyNotReady", "routing"), timeout=120)
    # The daemon stopped: Prometheus cannot scrape it
    d.stop()
    prom.wait_firing(("EddyTargetDown", ""))
