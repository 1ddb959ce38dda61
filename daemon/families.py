"""The pipeline core of each learner family: one place that maps a learner to its runtime."""

from __future__ import annotations

from typing import Any

import learners

from .core import PipelineCore
from .groupwise import GroupwiseCore
from .metrics import DaemonMetrics
from .paging import PagingCore

Core = PipelineCore | PagingCore | GroupwiseCore


def make_core(pc: dict[str, Any], metrics: DaemonMetrics | None = None) -> Core:
    """The core for pipeline config ``pc``: bandit learners decide with a reward join, paging
    learners replay cache requests, groupwise learners predict with a label join."""
    family = learners.family_of(pc["learner"])
    if family == "paging":
        return PagingCore(pc, metrics)
    if family == "groupwise":
        return GroupwiseCore(pc, metrics)
    return PipelineCore(pc, metrics)
