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
