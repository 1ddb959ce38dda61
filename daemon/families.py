"""A pipeline's engine from its configuration (the family comes from the learner's)."""

from __future__ import annotations

from typing import Any

from .engine import Engine
from .metrics import DaemonMetrics

Core = Engine


def make_core(pc: dict[str, Any], metrics: DaemonMetrics | None = None) -> Engine:
    """The engine of pipeline config ``pc``, with its family's adapter."""
    return Engine(pc, metrics)
