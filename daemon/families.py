"""The pipeline core of each learner family: one place that maps a learner to its runtime."""

from __future__ import annotations

from typing import Any

import learners

from .core import PipelineCore
from .metrics import DaemonMetrics
from .paging import PagingCore


def make_core(pc: dict[str, Any], metrics: DaemonMetrics | None = None) -> PipelineCore | PagingCore:
    """The core for pipeline config ``pc``: bandit learners decide with a reward join, paging
    learners replay cache requests."""
    if learners.family_of(pc["learner"]) == "paging":
        return PagingCore(pc, metrics)
    return PipelineCore(pc, metrics)
