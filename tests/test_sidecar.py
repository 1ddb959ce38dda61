"""The HTTP sidecar over real HTTP (uvicorn on loopback), and a real Prometheus scraping it."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from connectors.embedded import free_port
from daemon import config
from daemon.engine import Engine
from daemon.metrics import DaemonMetrics
from daemon.sidecar import Sidecar, serve_in_thread

from .conftest import pipeline_cfg

EVENT = {"id": "tx-1", "time": 10.0, "features": {"amount": 12.5, "country=NL": 1.0},
         "actions": ["acq-a", "acq-b", "acq-c"]}


@pytest.fixture(scope="module")
def sidecar():

    cfg = config.load_dict({"pipelines": [pipeline_cfg("pay", max_message_bytes=4096, learn_every_events=1)]}, env=False)
    metrics = DaemonMetrics()
    core = Engine(cfg.pipelines[0], metrics)
    core.learner.warm_up()
    app = Sidecar({"pay": core}, metrics, token="t0k", max_body=4096)
    server, th, port = serve_in_thread(app, "127.0.0.1", 0)
    app.ready = True
    yield app, port, core
    server.should_exit = True
    th.join(5)


def call(port, method, path, body=None, token="t0k", raw=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    c.request(method, path, body=data, headers=headers)
    r = c.getresponse()
    payload = r.read()
    c.close()
    return r.status, (json.loads(payload) if payload[:1] in (b"{", b"[") else payload)


def test_decide_feedback_and_idempotent_retry(sidecar):
    _, port, core = sidecar
    st, d = call(port, "POST", "/v1/pipelines/pay/decide", EVENT)
    assert st == 200 and d["action"] in EVENT["actions"] and abs(sum(d["probs"].values()) - 1) < 1e-9
    assert d["id"] == "tx-1" and d["prob"] == d["probs"][d["action"]] and "model_version" in d
    st, again = call(port, "POST", "/v1/pipelines/pay/decide", EVENT)
    assert st == 200 and again == d  # a retried id returns the same decision
    st, fb = call(port, "POST", "/v1/pipelines/pay/feedback", {"id": "tx-1", "reward": 1.0, "time": 11.0})
    assert st == 200 and fb["status"] == "joined"
    assert [e.id for e, _ in core.lanes["http"].queue] == ["tx-1"]  # learned before the next decision
    st, err = call(port, "POST", "/v1/pipelines/pay/feedback", {"id": "tx-1", "reward": 1.0})
    assert st == 409 and err["error"] == "duplicate_reward"
    st, err = call(port, "POST", "/v1/pipelines/pay/feedback", {"id": "nobody", "reward": 1.0})
    assert st == 404 and err["error"] == "unknown_event"
    batch = {"events": [{**EVENT, "id": f"b{i}"} for i in range(5)]}
    st, out = call(port, "POST", "/v1/pipelines/pay/decide", batch)
    assert st == 200 and [x["id"] for x in out["decisions"]] == [f"b{i}" for i in range(5)]
    assert core.learner.metrics()["learned_events"] == 1 and not core.lanes["http"].queue
    st, out = call(port, "POST", "/v1/pipelines/pay/feedback",
                   {"feedback": [{"id": "b0", "reward": 0.0}, {"id": "zz", "reward": 1.0}]})
    assert [r["status"] for r in out["results"]] == ["joined", "rejected"]


@pytest.mark.parametrize("body,status,reason", [
    (b"{nope", 400, "malformed_json"),
    (json.dumps({"features": {"a": 1}, "actions": ["a"]}).encode(), 400, "missing_field"),
    (json.dumps({"id": "q", "features": {"a": "x"}, "actions": ["a"]}).encode(), 400, "bad_type"),
    (json.dumps({"events": []}).encode(), 400, "bad_type"),
    (b'{"id": "big", "pad": "' + b"x" * 5000 + b'"}', 413, "oversize"),
])
def test_bad_requests_get_4xx_with_reason(sidecar, body, status, reason):
    _, port, _ = sidecar
    st, err = call(port, "POST", "/v1/pipelines/pay/decide", raw=body)
    assert st == status and err["error"] == reason and err["detail"]


def test_auth_routes_health_and_control(sidecar):
    app, port, core = sidecar
    assert call(port, "POST", "/v1/pipelines/pay/decide", EVENT, token="")[0] == 401
    assert call(port, "POST", "/v1/pipelines/pay/decide", EVENT, token="wrong")[0] == 401
    st, err = call(port, "POST", "/v1/pipelines/nope/decide", EVENT)
    assert st == 404 and "pay" in err["detail"]
    assert call(port, "GET", "/healthz")[0] == 200
    assert call(port, "GET", "/readyz") == (200, {"ready": True, "pipelines": {}})
    app.ready = False
    assert call(port, "GET", "/readyz")[0] == 503
    st, err = call(port, "POST", "/v1/pipelines/pay/decide", {**EVENT, "id": "early"})
    assert st == 503 and err["error"] == "not_ready"  # kernels compiling or state being restored
    app.ready = True
    st, err = call(port, "POST", "/v1/pipelines/pay/access", EVENT)  # a paging verb on a bandit pipeline
    assert st == 404 and err["error"] == "not_found" and "POST .../decide" in err["detail"]
    assert call(port, "GET", "/v1/pipelines/pay/decide")[0] == 405
    assert call(port, "POST", "/v2/anything", EVENT)[0] == 404
    # Consuming readiness per pipeline: one that has not joined its group holds the daemon back.
    standing = {"pay": {"ready": False, "joined": False, "assigned": []}}
    app.readiness = lambda: standing
    assert call(port, "GET", "/readyz") == (503, {"ready": False, "pipelines": standing})
    standing["pay"] = {"ready": True, "joined": True, "assigned": []}  # a spare member: ready
    assert call(port, "GET", "/readyz") == (200, {"ready": True, "pipelines": standing})
    app.readiness = None
    st, out = call(port, "POST", "/v1/pipelines/pay/control", {"force_default": True})
    assert st == 200 and out == {"force_default": True}
    st, d = call(port, "POST", "/v1/pipelines/pay/decide", {**EVENT, "id": "forced"})
    assert d["default"] and d["reason"] == "forced"
    call(port, "POST", "/v1/pipelines/pay/control", {"force_default": False})
    st, text = call(port, "GET", "/metrics")
    assert st == 200 and b'eddy_decisions_total{pipeline="pay",source="http"}' in text
    assert b"eddy_decision_latency_seconds_bucket" in text
    # /decide is input like a Kafka event; no _created series; the process collector is there.
    assert b'eddy_events_total{kind="event",pipeline="pay"}' in text
    assert b"_created" not in text and b"process_cpu_seconds_total" in text and b"python_info" in text
    assert text.count(b"# TYPE eddy_ope_value ") == 1  # one family per name, whatever the pipelines


@pytest.mark.prometheus
def test_real_prometheus_scrapes_the_daemon(sidecar, tmp_path):
    _, port, _ = sidecar
    st, _ = call(port, "POST", "/v1/pipelines/pay/decide", {**EVENT, "id": "scraped-1"})
    assert st == 200  # something to scrape, whichever tests ran before
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is required (make test installs it)"
    prom_port = free_port()
    (tmp_path / "prom.yml").write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: eddy\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n")
    proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prom.yml'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}",
                             f"--storage.tsdb.path={tmp_path / 'data'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        q = urllib.parse.quote('sum(eddy_decisions_total{pipeline="pay"})')
        value = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and value is None:
            time.sleep(1)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/query?query={q}", timeout=5) as r:
                    res = json.loads(r.read())["data"]["result"]
                if res:
                    value = float(res[0]["value"][1])
            except OSError:
                continue
        assert value is not None and value >= 1
        # (the dashboard's queries and the alerts run against a live scrape in test_observability.py)
    finally:
        proc.terminate()
        proc.wait(10)
    assert os.path.isdir(tmp_path / "data")


@pytest.mark.prometheus
def test_shipped_prometheus_config_and_alert_rules_are_valid():
    promtool = shutil.which("promtool")
    assert promtool, "Debian's prometheus package ships promtool (make test installs it)"
    root = os.path.join(os.path.dirname(__file__), "..", "deploy", "prometheus")
    for args in (["check", "rules", os.path.join(root, "alerts.yml")],
                 ["test", "rules", os.path.join(root, "alerts_test.yml")],  # the alerts fire when they should
                 ["check", "config", "--syntax-only", os.path.join(root, "prometheus.yml")]):
        out = subprocess.run([promtool, *args], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_over_the_latency_budget_requests_are_validated_first(sidecar):
    """While the Kafka loop holds the pipeline past latency_budget_ms, /decide serves the default
    action: but only to a valid request. Before, `"actions": [1, 2]` got HTTP 500 (the default was
    built before validation) and a body without `id` got 200 with `"id": null`."""
    import threading

    app, port, core = sidecar
    held, release = threading.Event(), threading.Event()

    def hold():
        with app.engines["pay"].lock:
            held.set()
            release.wait(30)

    st, first = call(port, "POST", "/v1/pipelines/pay/decide", {**EVENT, "id": "budget-kept"})
    assert st == 200 and not first["default"]
    th = threading.Thread(target=hold)
    th.start()
    try:
        assert held.wait(5)
        bad = [({**EVENT, "id": "over-b1", "actions": [1, 2]}, 400, "bad_type"),
               ({k: v for k, v in EVENT.items() if k != "id"}, 400, "missing_field"),
               ({**EVENT, "id": "over-b2", "features": {"x": "high"}}, 400, "bad_type"),
               ({**EVENT, "id": "over-b3", "features": None}, 400, "missing_field"),
               ({**EVENT, "id": "over-b4", "time": "noon"}, 400, "bad_type"),
               ({**EVENT, "id": "over-b5", "actions": ["acq-a", "acq-a"]}, 400, "bad_type"),
               ([1, 2], 400, "bad_type")]
        for body, status, reason in bad:
            before = core.metrics.registry.get_sample_value(
                "eddy_errors_total", {"pipeline": "pay", "reason": reason}) or 0
            st, err = call(port, "POST", "/v1/pipelines/pay/decide", body)
            assert (st, err.get("error")) == (status, reason), (body, st, err)
            assert core.metrics.registry.get_sample_value(
                "eddy_errors_total", {"pipeline": "pay", "reason": reason}) == before + 1
        st, d = call(port, "POST", "/v1/pipelines/pay/decide", {**EVENT, "id": "budget-ok"})
        assert st == 200 and d["default"] and d["reason"] == "latency_budget" and d["id"] == "budget-ok"
        assert d["action"] in EVENT["actions"] and d["prob"] == 1.0
        st, d = call(port, "POST", "/v1/pipelines/pay/decide", {**EVENT, "id": "budget-kept"})  # a retry
        assert st == 200 and d == first
        st, out = call(port, "POST", "/v1/pipelines/pay/decide", {"events": [{**EVENT, "id": "budget-one"}]})
        assert st == 200 and [x["id"] for x in out["decisions"]] == ["budget-one"]
        # A batch over the budget is answered per item too: defaults for the valid, errors for the bad.
        errors = {r: core.metrics.registry.get_sample_value("eddy_errors_total", {"pipeline": "pay", "reason": r})
                  or 0 for r in ("duplicate_event", "bad_type")}
        st, out = call(port, "POST", "/v1/pipelines/pay/decide", {"events": [
            {**EVENT, "id": "over-b6"}, {**EVENT, "id": "over-b6"}, {**EVENT, "id": "over-b7", "time": "noon"},
            {**EVENT, "id": "budget-kept"}]})
        assert st == 200
        dec = out["decisions"]
        assert dec[0]["id"] == "over-b6" and dec[0]["reason"] == "latency_budget"
        assert (dec[1]["id"], dec[1]["error"]) == ("over-b6", "duplicate_event") and "item 1" in dec[1]["detail"]
        assert (dec[2]["id"], dec[2]["error"]) == ("over-b7", "bad_type")
        assert dec[3] == first  # a retried id: its first decision, even over the budget
        assert {r: core.metrics.registry.get_sample_value("eddy_errors_total", {"pipeline": "pay", "reason": r})
                for r in errors} == {r: n + 1 for r, n in errors.items()}
    finally:
        release.set()
        th.join(5)


def test_pipelines_are_listed_and_a_wrong_method_says_so(sidecar):
    _, port, _ = sidecar
    st, listing = call(port, "GET", "/v1/pipelines")
    assert st == 200
    (pay,) = listing["pipelines"]
    assert pay["name"] == "pay" and pay["family"] == "bandit" and pay["learner"] == "squarecb"
    assert "POST /v1/pipelines/pay/decide" in pay["verbs"]
    assert call(port, "GET", "/v1/pipelines", token="")[0] == 401
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/v1/pipelines/pay/decide", headers={"authorization": "Bearer t0k"})
    r = c.getresponse()
    body = json.loads(r.read())
    c.close()
    assert r.status == 405 and r.getheader("allow") == "POST" and body["error"] == "method_not_allowed"
