"""The Grafana dashboard, generated: the runtime's row, then one row per registered family (its
adapter's ``panels``), every query filtered by a ``$pipeline`` variable.

``python -m daemon.dashboard --out deploy/grafana/eddy-dashboard.json`` writes the shipped file
(a test checks it is current); ``--check FILE`` exits 1 when FILE differs from the generated one.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .panels import RATE, SEL, Panel, Target, or_zero, quantile, rate

UID = "eddy-main"
WIDTH, HEIGHT = 12, 8  # two panels a row, Grafana's 24-column grid

RUNTIME: tuple[Panel, ...] = (
    Panel("Events in and outputs out", (
        Target(rate("eddy_events_total", "pipeline, kind"), "{{pipeline}} in: {{kind}}"),
        Target(rate("eddy_decisions_total", "pipeline, source"), "{{pipeline}} out: {{source}}"),
    ), "ops", "Input records consumed by kind (events and their feedback), outputs published by source "
              "(kafka: decided from the input topic; http: the sidecar's)"),
    Panel("Rejected records and dead letters", (
        Target(or_zero(rate("eddy_errors_total", "pipeline, reason")), "{{pipeline}} rejected: {{reason}}"),
        Target(or_zero(rate("eddy_dead_letter_messages_total", "pipeline, reason")),
               "{{pipeline}} dead-lettered: {{reason}}"),
    ), "ops", "Records and requests rejected, by reason; the ones published to the dead-letter topic"),
    Panel("Default outputs", (
        Target(or_zero(rate("eddy_default_decisions_total", "pipeline, reason")), "{{pipeline}} {{reason}}"),
        Target(f"max by (pipeline) (eddy_force_default{{{SEL}}})", "{{pipeline}} default forced (1)"),
    ), "short", "Outputs that fell back to the pipeline's default (forced, model not ready, over the "
                "latency budget), per second; and 1 while the default is forced"),
    Panel("Sidecar request latency", (
        Target(quantile(0.5, "eddy_decision_latency_seconds"), "{{pipeline}} p50"),
        Target(quantile(0.99, "eddy_decision_latency_seconds"), "{{pipeline}} p99"),
    ), "s", "Handling time of the sidecar's event requests (/decide, /predict, /access...)"),
    Panel("Micro-batch duration", (
        Target(quantile(0.5, "eddy_batch_duration_seconds"), "{{pipeline}} p50"),
        Target(quantile(0.99, "eddy_batch_duration_seconds"), "{{pipeline}} p99"),
    ), "s", "Wall time of one micro-batch from the input topic: decode, decide, learn"),
    Panel("Where the time goes", (
        Target(rate("eddy_stage_seconds_total", "pipeline, stage"), "{{pipeline}} {{stage}}"),
    ), "percentunit", "Share of wall time per stage of the pipeline's loop (poll, process, publish, "
                      "flush, checkpoint) and of the engine within process (decode, features, kernel, encode)"),
    Panel("Consumer lag", (
        Target(f"sum by (pipeline, topic, partition) (eddy_consumer_lag_messages{{{SEL}}})",
               "{{pipeline}} {{topic}}/{{partition}}"),
        Target(f"max by (pipeline, topic) (eddy_topic_lag_messages{{{SEL}}})", "{{pipeline}} {{topic}} (group)"),
    ), "short", "Records behind the log end per owned partition; and the whole topic's records past "
                "the group's committed offsets (every partition, owned or not)"),
    Panel("Readiness and partitions", (
        Target(f"min by (pipeline) (eddy_ready{{{SEL}}})", "{{pipeline}} ready"),
        Target(f"sum by (pipeline, topic) (eddy_assigned_partitions{{{SEL}}})", "{{pipeline}} partitions owned"),
    ), "short", "1 once the pipeline has joined its group and restored each assigned partition; "
                "the input partitions its daemons own"),
    Panel("Checkpoints", (
        Target(f"max by (pipeline) (eddy_checkpoint_age_seconds{{{SEL}}})", "{{pipeline}} age"),
        Target(f"sum by (pipeline) (increase(eddy_checkpoints_total{{{SEL}}}[{RATE}]))",
               "{{pipeline}} written per window"),
    ), "s", "Seconds since the last checkpoint; checkpoints written"),
    Panel("Join buffer and caps", (
        Target(f"sum by (pipeline) (eddy_join_buffer_entries{{{SEL}}}) / sum by (pipeline) "
               f"(eddy_join_buffer_capacity_entries{{{SEL}}})", "{{pipeline}} join buffer fill"),
        Target(rate("eddy_cap_evictions_total", "pipeline, cap"), "{{pipeline}} pushed out by cap: {{cap}}"),
    ), "percentunit", "Events waiting for their feedback, as a share of the buffer's cap; entries pushed "
                      "out by a cap (per second)"),
    Panel("Recovery: replays, offset resets, rebuilt clients", (
        Target(rate("eddy_replayed_decisions_total"), "{{pipeline}} replayed decisions"),
        Target(or_zero(rate("eddy_offset_resets_total", "pipeline, topic, partition")),
               "{{pipeline}} offset resets {{topic}}/{{partition}}"),
        Target(or_zero(rate("eddy_kafka_client_rebuilds_total", "pipeline, client")),
               "{{pipeline}} rebuilt {{client}} client"),
    ), "ops", "Decisions published again after a restart (marked replay); positions moved by the reset "
              "policy; Kafka clients rebuilt after a fatal error or broker loss"),
    Panel("Keyed and merging pipelines: keys, evictions, changelog, merges", (
        Target(f"sum by (pipeline, state) (eddy_keys{{{SEL}}})", "{{pipeline}} keys {{state}}"),
        Target(rate("eddy_key_evictions_total", "pipeline, outcome"), "{{pipeline}} keys {{outcome}} per s"),
        Target(f"max by (pipeline) (eddy_changelog_lag_messages{{{SEL}}})", "{{pipeline}} changelog lag (records)"),
        Target(f"max by (pipeline) (eddy_partition_restore_seconds{{{SEL}}})",
               "{{pipeline}} last partition restore (s)"),
        Target(or_zero(rate("eddy_model_merges_total", "pipeline, outcome")), "{{pipeline}} merges {{outcome}} per s"),
    ), "short", "Keys live and snapshotted out (cold), keys pushed out by key_cap and dropped beyond "
                "key_cold_bytes; records processed since the changelog's last write; the last restore "
                "of an assigned partition from the changelog; merge points of global_model = 'merge' "
                "(merged, replayed, idle, skipped)"),
    Panel("Process", (
        Target('process_resident_memory_bytes{job=~".*eddy.*"}', "{{instance}} RSS"),
        Target('rate(process_cpu_seconds_total{job=~".*eddy.*"}[$__rate_interval])', "{{instance}} CPU (cores)"),
    ), "bytes", "Resident memory of each daemon; CPU in cores (right axis)"),
)


def _panel(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    overrides: list[dict[str, Any]] = []
    if p.title == "Process":  # CPU on its own axis, in cores
        overrides.append({"matcher": {"id": "byRegexp", "options": ".*CPU.*"},
                          "properties": [{"id": "unit", "value": "short"},
                                         {"id": "custom.axisPlacement", "value": "right"}]})
    return {
        "id": pid, "type": "timeseries", "title": p.title, "description": p.description,
        "gridPos": {"x": x, "y": y, "w": WIDTH, "h": HEIGHT},
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": p.unit, "custom": {"lineWidth": 1, "fillOpacity": 0}},
                        "overrides": overrides},
        "options": {"legend": {"showLegend": True, "displayMode": "table", "placement": "bottom",
                               "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [{"refId": chr(ord("A") + i), "expr": t.expr, "legendFormat": t.legend,
                     "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                    for i, t in enumerate(p.targets)],
    }


def rows() -> list[tuple[str, tuple[Panel, ...]]]:
    """(row title, panels): the runtime's, then each registered family's that declares panels."""
    from .family import adapter_class, families

    out = [("Runtime (every pipeline)", RUNTIME)]
    for fam in families():
        cls = adapter_class(fam)
        if cls.panels:
            out.append((cls.panels_title or fam, tuple(cls.panels)))
    return out


def dashboard() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (schema version 39)."""
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for title, group in rows():
        panels.append({"id": pid, "type": "row", "title": title, "collapsed": False, "panels": [],
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}})
        pid, y = pid + 1, y + 1
        for i, p in enumerate(group):
            panels.append(_panel(p, pid, (i % 2) * WIDTH, y + (i // 2) * HEIGHT))
            pid += 1
        y += ((len(group) + 1) // 2) * HEIGHT
    ds = {"type": "prometheus", "uid": "${datasource}"}
    return {
        "title": "eddy", "uid": UID, "schemaVersion": 39, "version": 1, "editable": True,
        "tags": ["eddy"], "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
        "description": "Generated by daemon/dashboard.py from the runtime's and the families' panels",
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"},
            {"name": "pipeline", "label": "Pipeline", "type": "query", "datasource": ds,
             "definition": "label_values(eddy_events_total, pipeline)",
             "query": {"query": "label_values(eddy_events_total, pipeline)", "refId": "pipelines"},
             "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": ".*",
             "current": {"text": "All", "value": "$__all"}},
        ]},
        "panels": panels,
    }


def queries(d: dict[str, Any] | None = None) -> list[tuple[str, str, str]]:
    """Every (panel title, legend, expr) of a dashboard (the generated one by default)."""
    d = d or dashboard()
    return [(p["title"], t["legendFormat"], t["expr"]) for p in d["panels"] if p["type"] != "row"
            for t in p["targets"]]


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m daemon.dashboard", description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--out", help="write the dashboard to this file (default: standard output)")
    g.add_argument("--check", metavar="FILE", help="exit 1 when FILE is not the generated dashboard")
    ap.add_argument("--plugins", nargs="*", default=[], help="modules registering further families")
    args = ap.parse_args(argv)
    from .family import load_plugins

    load_plugins(args.plugins)
    text = render()
    if args.check:
        with open(args.check, encoding="utf-8") as f:
            same = f.read() == text
        print(f"{args.check}: {'current' if same else 'differs from the generated dashboard: regenerate it'}",
              file=sys.stderr)
        return 0 if same else 1
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
