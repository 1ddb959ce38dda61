"""A pipeline's engine from its configuration (the family comes from the learner's)."""

from __future__ import annotations

from typing import Any

from .engine import Engine
from .keyed import KeyedEngine
from .merged import MergedEngine
from .metrics import DaemonMetrics

Core = Engine | KeyedEngine | MergedEngine  # what a pipeline's runner, sidecar and replay drive


def make_core(pc: dict[str, Any], metrics: DaemonMetrics | None = None) -> Core:
    """The engine of pipeline config ``pc``, with its family's adapter (one per key value when the
    pipeline is keyed: ``key_by``; one per input partition, merging, with ``global_model = "merge"``)."""
    if pc.get("global_model") == "merge":
        return MergedEngine(pc, metrics)
    if pc.get("key_by"):
        return KeyedEngine(pc, metrics)
    return Engine(pc, metrics)
