"""SOR tuning pipelines (advise mode): ω for each linear system, learned from the iteration counts
the solver reports later.

Input records (one JSON object each, Kafka or the sidecar's ``/advise`` and ``/report``)::

    {"id": "step-17", "context": 0.31, "time": 1700000000.0}          a request for ω
    {"type": "report", "id": "step-17", "iterations": 143, "seconds": 0.012, "converged": true,
     "time": 1700000000.4}                                             the solve's outcome, later

``context`` (a number inside the learner's ``context_range``) is required by the contextual
policies (``sor-chebcb``, ``sor-tsallis-inf-cb``) and ignored by the others. eddy never sees the
matrix. Output: ``{"id", "pipeline", "omega", "arm", "prob", "explored", "default", "reason",
"time", "replay"}``; ``prob`` is the probability ω was drawn with. A report's ``iterations``
(a number >= 0) is the cost learned; ``converged: false`` counts the solve as not converged (its
reported count, the solver's cap, is learned as its cost); ``seconds`` (>= 0) feeds the solve-time
histogram; ``best_iterations`` (optional, >= 0: the fewest iterations any ω of the grid needs on
this system, where the user knows it, e.g. from an offline sweep; solve mode measures it with
``solve_sweep_every``) feeds the regret against the per-instance best. A report that has not
arrived within ``reward_wait_s`` of event time is counted
(``eddy_sor_reports_total{outcome="expired"}``) and not learned: no cost is invented.

Regret metrics: against the best fixed ω in hindsight, an importance-weighted estimate from the
policy's own draws (``eddy_sor_regret_best_fixed_iterations``, with ``eddy_sor_best_fixed_omega``);
against the per-instance best, exact over the reports with ``best_iterations``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any, cast

import numpy as np

import learners
from connectors.base import SourceRecord
from learners._hashing import event_keys
from learners.sor import RelaxationTuner
from learners.sor.learner import MAX_COST

from ..config import S
from ..family import Adapter, Histogram, Item, Outputs, Sample, Verb, register
from ..panels import SEL, Panel, Target, per, quantile, rate
from ..records import BadRecord, Out, dumps_kept, number, record_id
from .sor_solve import Solves, SolveSpec

ITERATION_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
SECONDS_BUCKETS = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


class Request(Item):
    """A request for ω: its ``context``, in solve mode its system (``solve``), and, once decided,
    ``arm`` (-1: a default ω off the grid, not learned) and ``prob``."""

    __slots__ = ("context", "arm", "prob", "drawn", "solve")

    def __init__(self, id: str, time: float | None, context: float, rec: SourceRecord | None):
        self.id, self.time, self.rec = id, time, rec
        self.replay = rec.replay if rec is not None else False
        self.context = context
        self.arm = -1
        self.prob = 1.0
        self.drawn = False  # drawn by the policy with probability ``prob`` (not a default)
        self.solve: SolveSpec | None = None  # a solve request's system (solve mode)


SETTINGS = (
    S("default_omega", float, 1.0, "sor: ω served while a default is forced or the model is not ready "
      "(min_learned_events); learned from like any decision when it is on the policy's grid",
      minimum=1e-9),
    S("solve_dir", str, "", "sor solve mode: the folder .npz systems are read from and solutions written to "
      "(no path outside it; empty: inline systems only)"),
    S("solve_method", str, "sor", "sor solve mode: the solver of a request that names none", ("sor", "ssor-pcg")),
    S("solve_tol", float, 1e-8, "sor solve mode: relative residual ||b - Ax|| / ||b|| a solve stops at",
      minimum=1e-14),
    S("solve_max_iterations", int, 10_000, "sor solve mode: iteration cap (a solve that reaches it is not "
      "converged and costs the cap)", minimum=1),
    S("solve_budget_s", float, 60.0, "sor solve mode: wall-time budget of one SOR solve (then not converged, "
      "at the cap's cost)", minimum=0.0),
    S("solve_max_rows", int, 4_000_000, "sor solve mode: largest system taken (rows)", minimum=1),
    S("solve_max_nnz", int, 40_000_000, "sor solve mode: largest system taken (non-zero entries)", minimum=1),
    S("solve_workers", int, 1, "sor solve mode: solver threads off the pipeline's loop", minimum=1),
    S("solve_queue_cap", int, 64, "sor solve mode: solves in flight at most (more are dead-lettered as "
      "solve_queue_full)", minimum=1),
    S("solve_sweep_every", int, 0, "sor solve mode: one solve request in this many (chosen by its id) is also "
      "solved at every ω of the grid, off the loop, to measure the per-instance best (its report carries "
      "best_iterations); 0: never", minimum=0),
)


class _Regret:
    """Regret of the decisions whose reports joined, in iterations.

    Against the best fixed ω in hindsight: ``Σ cost - min_i Ĉ_i`` over the policy's drawn decisions,
    where ``Ĉ_i = Σ cost·1[arm = i] / prob`` is the importance-weighted (unbiased) estimate of what
    always playing ω_i would have cost on the same systems; only the chosen ω's count is ever
    reported, so this is an estimate (the minimum of noisy estimates leans low: the regret leans
    high, most while few reports have come). Against the per-instance best: ``Σ (cost -
    best_iterations)`` over the reports that carry ``best_iterations`` (exact)."""

    def __init__(self, k: int):
        self.ipw = np.zeros(k)  # Ĉ_i
        self.sums = np.zeros(4)  # [Σ cost of drawn decisions, their count, Σ (cost - best), reports with best]

    def observe(self, arm: int, prob: float, drawn: bool, cost: float, best: float | None) -> None:
        if drawn and arm >= 0:
            self.ipw[arm] += cost / prob
            self.sums[0] += cost
            self.sums[1] += 1
        if best is not None:
            self.sums[2] += cost - best
            self.sums[3] += 1

    def best_fixed(self) -> tuple[float, int]:
        """The estimated regret against the best fixed ω, and that ω's arm (-1: nothing drawn yet)."""
        if not self.sums[1]:
            return 0.0, -1
        a = int(np.argmin(self.ipw))
        return float(self.sums[0] - self.ipw[a]), a

    def to_array(self) -> np.ndarray:
        return np.concatenate([self.ipw, self.sums])

    def load(self, a: np.ndarray) -> None:
        if a.shape == (len(self.ipw) + 4,):
            self.ipw, self.sums = a[:-4].copy(), a[-4:].copy()


@register
class SorAdapter(Adapter):
    """Decoding, ω decisions and the solve statistics of an SOR tuning pipeline."""

    family = "sor"
    settings = SETTINGS
    verbs = {"advise": Verb("events", "requests", "decisions"), "report": Verb("feedback", "reports", "results"),
             "control": Verb("control")}
    feedback_type = "report"
    feedback_name = "report"
    feedback_metric = "eddy_sor_reports"
    panels_title = "SOR tuning"
    panels = (
        Panel("Iterations per solve", (
            Target(per(rate("eddy_sor_iterations_sum"), rate("eddy_sor_iterations_count")), "{{pipeline}} mean"),
            Target(quantile(0.9, "eddy_sor_iterations"), "{{pipeline}} p90"),
        ), "short", "Iterations the reported solves took (joined reports)"),
        Panel("Regret per report: against the best fixed ω, and each system's best", (
            Target(per(f"max by (pipeline) (eddy_sor_regret_best_fixed_iterations{{{SEL}}})",
                       f"max by (pipeline) (eddy_sor_iterations_count{{{SEL}}})"), "{{pipeline}} vs best fixed ω"),
            Target(per(f"max by (pipeline) (eddy_sor_regret_instance_best_iterations{{{SEL}}})",
                       f"max by (pipeline) (eddy_sor_instance_best_reports_total{{{SEL}}})"),
                   "{{pipeline}} vs each system's best ω"),
        ), "short", "Iterations spent beyond the best fixed ω in hindsight (an importance-weighted estimate), "
                    "and beyond each system's best ω where reports carry best_iterations; per report"),
        Panel("Chosen ω", (
            Target(rate("eddy_sor_omega_decisions_total", "pipeline, omega"), "{{pipeline}} ω={{omega}}"),
        ), "ops", "Decisions per ω of the grid"),
        Panel("Solves: not converged, in flight; reported solve time", (
            Target(rate("eddy_sor_not_converged_total"), "{{pipeline}} not converged (per s)"),
            Target(f"max by (pipeline) (eddy_sor_solves_in_flight{{{SEL}}})", "{{pipeline}} in flight"),
            Target(quantile(0.99, "eddy_sor_solve_seconds"), "{{pipeline}} solve time p99 (s)"),
        ), "short", "Reports of solves that did not converge; solves eddy runs (solve mode) or queues; "
                    "the p99 of reported solve seconds"),
    )
    expired_outcome = "expired"
    default_params = ("seed",)
    rejects_in_runs = True  # (solve_queue_full)

    @classmethod
    def check(cls, pc: dict[str, Any]) -> None:
        if not 0.0 < pc["default_omega"] < 2.0:
            raise ValueError(f"default_omega must lie in (0, 2), got {pc['default_omega']}")
        if pc["solve_dir"] and not os.path.isdir(pc["solve_dir"]):
            raise ValueError(f"solve_dir {pc['solve_dir']!r} is not a folder")

    def __init__(self, pc: dict[str, Any], metrics, rules):
        super().__init__(pc, metrics, rules)
        self.learner = cast(RelaxationTuner, learners.create(pc["learner"], **self.params))
        self.grid = self.learner.grid
        self.contextual = self.learner.contextual
        self.lo, self.hi = self.learner.context_range
        dflt = float(pc["default_omega"])
        on = np.flatnonzero(np.isclose(self.grid, dflt, rtol=0, atol=1e-12))
        self.default_arm = int(on[0]) if len(on) else -1
        self.default_omega = dflt
        self.iterations = Histogram(ITERATION_BUCKETS)
        self.seconds = Histogram(SECONDS_BUCKETS)
        self.not_converged = 0
        self.explored = 0
        self.per_arm = np.zeros(len(self.grid), dtype=np.int64)  # decisions per ω
        self.regret = _Regret(len(self.grid))
        self._report: tuple[bool, float | None, float | None] = (True, None, None)  # the report being joined
        self.solves = Solves(pc, self.name, metrics)
        self.solves.emit = lambda outs: self.emit(outs)
        self.solves.grid = self.grid
        self.last_learner_error = ""

    # -- decoding ---------------------------------------------------------------------------------
    def decode(self, obj: dict[str, Any], rec: SourceRecord | None) -> Item:
        eid = record_id(obj)
        t = self.rules.time(obj, rec)
        c = obj.get("context")
        if not self.contextual:
            c = math.nan
        elif c is None:
            raise BadRecord("missing_field", f"'context' is required by {self.pc['learner']}")
        elif type(c) is bool or not isinstance(c, int | float) or not (self.lo <= c <= self.hi):
            raise BadRecord("bad_context", f"'context' must be a number in [{self.lo:g}, {self.hi:g}] "
                            "(the learner's context_range)")
        r = Request(eid, t, float(c), rec)
        if "system" in obj:
            r.solve = self.solves.parse(obj)
        return r

    def validate(self, obj: dict[str, Any]) -> None:
        self.decode(obj, None)

    def feedback_value(self, obj: dict[str, Any]) -> float:
        it = cast(float, number(obj, "iterations"))
        if not 0 <= it <= MAX_COST:
            raise BadRecord("bad_type", f"'iterations' must be a number in [0, {MAX_COST:g}]")
        converged = obj.get("converged", True)
        if type(converged) is not bool:
            raise BadRecord("bad_type", "'converged' must be true or false")
        sec = number(obj, "seconds", required=False)
        if sec is not None and sec < 0:
            raise BadRecord("bad_type", "'seconds' must be a number >= 0")
        best = number(obj, "best_iterations", required=False)
        if best is not None and not 0 <= best <= MAX_COST:
            raise BadRecord("bad_type", f"'best_iterations' must be a number in [0, {MAX_COST:g}]")
        # Read back by joined() if the report joins its request (the engine calls the two in turn).
        self._report = (converged, sec, best)
        return float(it)

    # -- decisions, learning ----------------------------------------------------------------------
    def run(self, items: list[Item], source: str) -> Outputs:
        run = cast(list[Request], items)
        n = len(run)
        reason = self.default_reason()
        if reason is None:
            batch: dict[str, Any] = {"event_key": event_keys([r.id for r in run])}
            if self.contextual:
                batch["context"] = np.array([r.context for r in run])
            t0 = time.perf_counter()
            try:
                out = self.learner.process(batch)
            except Exception as e:  # a learner failure never takes the daemon down
                self.metrics.errors.labels(pipeline=self.name, reason="learner_error").inc(n)
                reason, self.last_learner_error = "learner_error", repr(e)
            self.kernel_s += time.perf_counter() - t0
        if reason is None:
            arms, omegas = out["arm"].tolist(), out["omega"].tolist()
            probs, explored = out["prob"].tolist(), (~out["greedy"]).tolist()
        else:
            self.metrics.defaults.labels(pipeline=self.name, reason=reason).inc(n)
            arms, omegas, probs, explored = [self.default_arm] * n, [self.default_omega] * n, [1.0] * n, [False] * n
        name, http = self.name, source == "http"
        outs: list[Out | BadRecord] = []
        bodies: list[dict[str, Any] | None] = []
        solves: list[tuple[Request, float]] = []
        for r, a, w, p, x in zip(run, arms, omegas, probs, explored, strict=True):
            if r.solve is not None:
                try:
                    self.solves.reserve()
                except BadRecord as e:
                    outs.append(e)
                    if http:
                        bodies.append(None)
                    self.rejected = True
                    continue
                solves.append((r, w))
            body = {"id": r.id, "pipeline": name, "omega": w, "arm": a, "prob": p, "explored": x,
                    "default": reason is not None, "reason": reason, "time": r.time, "replay": r.replay}
            outs.append(Out("decision", cast(str, r.id).encode(), dumps_kept(body)))
            if http:
                bodies.append(body)
            r.arm, r.prob, r.drawn, r.rec = a, p, reason is None, None
            if a >= 0:
                self.per_arm[a] += 1
            self.explored += x
        for r, w in solves:  # off the loop; the outcome and its report go out with a later batch
            self.solves.submit(cast(str, r.id), cast(SolveSpec, r.solve), w, r.time, r.replay)
            r.solve = None
        return outs, bodies

    def drain(self, timeout_s: float) -> int:
        return self.solves.drain(timeout_s)

    def close(self) -> None:
        self.solves.close()

    def joined(self, item: Item, value: float) -> None:
        converged, sec, best = self._report
        self._report = (True, None, None)
        r = cast(Request, item)
        self.regret.observe(r.arm, r.prob, r.drawn, value, best)
        self.iterations.observe(value)
        if sec is not None:
            self.seconds.observe(sec)
        if not converged:
            self.not_converged += 1

    def learn(self, rows: list[tuple[Item, float]]) -> None:
        rs = [(cast(Request, r), v) for r, v in rows if cast(Request, r).arm >= 0]  # (-1: a default off the grid)
        if not rs:
            return
        batch = {"arm": np.array([r.arm for r, _ in rs], dtype=np.int64),
                 "prob": np.array([r.prob for r, _ in rs], dtype=np.float64),
                 "cost": np.array([v for _, v in rs], dtype=np.float64)}
        if self.contextual:
            batch["context"] = np.array([r.context for r, _ in rs], dtype=np.float64)
        t0 = time.perf_counter()
        try:
            self.learner.learn(batch)
        except Exception as e:  # a learner failure never takes the daemon down (nothing was learned)
            self.metrics.errors.labels(pipeline=self.name, reason="learner_error").inc(len(rs))
            self.last_learner_error = repr(e)
        self.kernel_s += time.perf_counter() - t0

    # -- checkpoint -------------------------------------------------------------------------------
    def pack(self, items: list[Item]) -> dict[str, np.ndarray]:
        rs = cast(list[Request], items)
        return {"context": np.array([r.context for r in rs], dtype=np.float64),
                "arm": np.array([r.arm for r in rs], dtype=np.int64),
                "prob": np.array([r.prob for r in rs], dtype=np.float64),
                "drawn": np.array([r.drawn for r in rs], dtype=np.bool_)}

    def unpack(self, a: Mapping[str, np.ndarray], ids: list[str]) -> list[Item]:
        out: list[Item] = []
        drawn = a["drawn"].tolist() if "drawn" in a else [False] * len(ids)
        for eid, c, arm, p, d in zip(ids, a["context"].tolist(), a["arm"].tolist(), a["prob"].tolist(), drawn,
                                     strict=True):
            r = Request(eid, None, c, None)
            r.arm, r.prob, r.drawn = arm, p, d
            out.append(r)
        return out

    def snapshot(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, own = super().snapshot()
        arrays["stats/iterations"] = self.iterations.to_array()
        arrays["stats/seconds"] = self.seconds.to_array()
        arrays["stats/per_arm"] = self.per_arm.copy()
        arrays["stats/counts"] = np.array([self.not_converged, self.explored], dtype=np.int64)
        arrays["stats/regret"] = self.regret.to_array()
        return arrays, own

    def restore(self, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
        super().restore(arrays, meta)
        self.iterations.load(np.asarray(arrays["stats/iterations"]))
        self.seconds.load(np.asarray(arrays["stats/seconds"]))
        if arrays["stats/per_arm"].shape == self.per_arm.shape:
            self.per_arm = np.asarray(arrays["stats/per_arm"], dtype=np.int64).copy()
        self.not_converged, self.explored = (int(v) for v in arrays["stats/counts"])
        if "stats/regret" in arrays:
            self.regret.load(np.asarray(arrays["stats/regret"], dtype=np.float64))

    # -- reports and metrics ----------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        n = self.iterations.counts.sum()
        regret, arm = self.regret.best_fixed()
        return {**self.learner.report(), "reports_joined": int(n),
                "mean_iterations": self.iterations.sum / n if n else None, "not_converged": self.not_converged,
                "regret_best_fixed": regret, "best_fixed_omega": float(self.grid[arm]) if arm >= 0 else None,
                "regret_instance_best": float(self.regret.sums[2]),
                "instance_best_reports": int(self.regret.sums[3])}

    def samples(self) -> Iterator[Sample]:
        yield Sample("eddy_sor_learned_reports", "counter", "Reports the model has learned", {},
                     self.learner.learned_events)
        yield Sample("eddy_sor_iterations", "histogram", "Iterations per solve (joined reports)", {},
                     self.iterations.value())
        yield Sample("eddy_sor_solve_seconds", "histogram", "Solve time reported (joined reports with 'seconds')",
                     {}, self.seconds.value())
        yield Sample("eddy_sor_not_converged", "counter", "Joined reports of solves that did not converge", {},
                     self.not_converged)
        yield Sample("eddy_sor_explored_decisions", "counter", "Decisions that did not pick the ω the policy "
                     "prefers now", {}, self.explored)
        regret, arm = self.regret.best_fixed()
        yield Sample("eddy_sor_regret_best_fixed_iterations", "gauge", "Iterations spent beyond the best fixed ω "
                     "in hindsight (importance-weighted estimate over the policy's drawn decisions)", {}, regret)
        if arm >= 0:
            yield Sample("eddy_sor_best_fixed_omega", "gauge", "The ω with the lowest estimated total cost so far",
                         {}, float(self.grid[arm]))
        yield Sample("eddy_sor_regret_instance_best_iterations", "gauge", "Iterations spent beyond each "
                     "system's best ω of the grid (reports with best_iterations)", {}, float(self.regret.sums[2]))
        yield Sample("eddy_sor_instance_best_reports", "counter", "Joined reports that carried best_iterations", {},
                     int(self.regret.sums[3]))
        for w, c in zip(self.grid.tolist(), self.per_arm.tolist(), strict=True):
            yield Sample("eddy_sor_omega_decisions", "counter", "Decisions per ω of the grid", {"omega": f"{w:g}"}, c)
        for outcome, n in self.solves.done.items():
            yield Sample("eddy_sor_solves", "counter", "Solves eddy ran (solve mode), by outcome",
                         {"outcome": outcome}, n)
        yield Sample("eddy_sor_solves_in_flight", "gauge", "Solves running or queued (solve_queue_cap bounds it)",
                     {}, self.solves.in_flight)
        lm = self.learner.metrics()
        if "mean_cost" in lm:
            yield Sample("eddy_sor_mean_iterations", "gauge", "Mean iterations per learned solve", {}, lm["mean_cost"])
        if "gamma" in lm:
            yield Sample("eddy_sor_exploration_gamma", "gauge", "ChebCB's γ (larger: greedier)", {}, lm["gamma"])
