"""Dashboard panels as data: the runtime's row and each family's row (an adapter's ``panels``).

:mod:`daemon.dashboard` turns them into the Grafana dashboard; the tests run every query against a
real Prometheus scraping a daemon that ran each family, so a panel here is one that shows data.

In a query, ``$pipeline`` is the dashboard's pipeline variable (a regex, all by default; use
:data:`SEL` in a selector) and ``$__rate_interval`` Grafana's rate window.
"""

from __future__ import annotations

from dataclasses import dataclass

SEL = 'pipeline=~"$pipeline"'  # the pipeline variable, in a selector: {SEL} or {SEL, outcome="joined"}
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Target:
    """One query of a panel, and its legend (Grafana's ``{{label}}`` templates)."""

    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    """A time-series panel: a title, its queries, a Grafana unit id (``short``, ``s``, ``ops``,
    ``percentunit``, ``bytes``...) and a description shown on hover."""

    title: str
    targets: tuple[Target, ...]
    unit: str = "short"
    description: str = ""


def rate(metric: str, by: str = "pipeline", where: str = "") -> str:
    """``sum by (<by>) (rate(<metric>{pipeline=~"$pipeline"[, where]}[$__rate_interval]))``."""
    sel = SEL + (f", {where}" if where else "")
    return f"sum by ({by}) (rate({metric}{{{sel}}}[{RATE}]))"


def or_zero(expr: str) -> str:
    """``expr``, or 0 for each pipeline while it has no series: a counter born on its first
    event (a reset, a rebuilt client) reads 0 rather than "No data" until it happens."""
    return f"({expr}) or on (pipeline) (0 * max by (pipeline) (eddy_events_total{{{SEL}}}))"


def quantile(q: float, histogram: str) -> str:
    """The ``q`` quantile of a histogram per pipeline over the rate window."""
    return f"histogram_quantile({q:g}, {rate(histogram + '_bucket', 'pipeline, le')})"


def per(numerator: str, denominator: str) -> str:
    """``numerator / denominator`` matched on pipeline, 0/0 read as no data (denominator clamped)."""
    return f"{numerator} / on (pipeline) clamp_min({denominator}, 1e-9)"
