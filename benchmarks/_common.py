"""Shared helpers of the benchmarks: machine description, versions, result files."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform


def machine() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        model = platform.processor() or "?"
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus ({model}), Python {platform.python_version()}"


def versions(*names: str) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def write_results(name: str, rows: list[dict], vers: dict[str, str], extra: dict | None = None) -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(os.path.join(here, "results"), exist_ok=True)
    path = os.path.join(here, "results", f"{name}.json")
    with open(path, "w") as f:
        json.dump({"machine": machine(), "versions": vers, "rows": rows, **(extra or {})}, f, indent=1)
    return path


def stage_seconds(registry, pipeline: str) -> dict[str, float]:
    """Seconds by stage for ``pipeline`` from every counter of ``registry`` with a 'stage' label
    (``eddy_stage_seconds_total``'s by their stage name, others as ``metric:stage``); {} if none."""
    out: dict[str, float] = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.name.endswith("_total") and "stage" in s.labels and s.labels.get("pipeline") == pipeline:
                key = s.labels["stage"] if metric.name == "eddy_stage_seconds" else f"{metric.name}:{s.labels['stage']}"
                out[key] = out.get(key, 0.0) + s.value
    return out
