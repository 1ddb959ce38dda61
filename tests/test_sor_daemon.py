"""SOR tuning pipelines in the daemon (advise mode): requests for ω, iteration counts reported later
by a solver that is the user's (here: eddy's own SOR on small Poisson systems, the matrix never
sent), the report join with its wait, metrics, the sidecar, and the real broker."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from daemon import config
from daemon.engine import Engine
from daemon.families import make_core
from learners.sor.systems import poisson, solve

from .feeding import feed


def sor_cfg(name="heat", **over):
    pc = {"name": name, "learner": "sor-chebcb", "input_topic": f"{name}-in", "output_topic": f"{name}-out",
          "reward_wait_s": 50.0, "learn_every_events": 4, "params": {"context_range": [0.0, 0.6]}}
    pc.update(over)
    return config.load_dict({"pipelines": [pc]}, env=False).pipelines[0]


_SYSTEMS = {round(s, 2): poisson(10, s) for s in np.linspace(0.0, 0.6, 13)}


def iterations(omega: float, shift: float, cap: int = 400) -> tuple[int, bool]:
    """The user's solver: SOR at ω on the 10×10 Poisson system shifted by ``shift``."""
    r = solve(_SYSTEMS[round(shift, 2)], "sor", omega, tol=1e-8, maxiter=cap)
    return r.iterations, r.converged


def play(core: Engine, n: int, seed: int = 0, delay: int = 3, drop_every: int = 0, batch: int = 7):
    """Requests fed in micro-batches; each decision's report comes ``delay`` requests later
    (every ``drop_every``-th never comes). Returns the decisions and the reports sent."""
    rng = np.random.default_rng(seed)
    shifts = list(_SYSTEMS)
    decisions: list[dict] = []
    reports: list[dict] = []
    waiting: list[tuple[int, dict]] = []
    for i in range(0, n, batch):
        items: list = []
        while waiting and waiting[0][0] <= i:  # the reports due, then the next requests
            items.append(waiting.pop(0)[1])
        for j in range(i, min(n, i + batch)):
            items.append({"id": f"s{j}", "time": float(j), "context": float(shifts[int(rng.integers(len(shifts)))])})
        outs = feed(core, items, batch=len(items))
        for o in outs:
            assert o.kind == "decision", orjson.loads(o.value)
            d = orjson.loads(o.value)
            decisions.append(d)
            j = int(d["id"][1:])
            if drop_every and j % drop_every == 0:
                continue
            shift = next(it["context"] for it in items if it.get("id") == d["id"])
            its, ok = iterations(d["omega"], shift)
            rep = {"type": "report", "id": d["id"], "iterations": its, "converged": ok, "seconds": 0.001,
                   "time": float(j) + 0.5}
            reports.append(rep)
            waiting.append((i + delay, rep))
    for o in feed(core, [r for _, r in waiting]):  # the last reports
        assert o.kind == "decision", orjson.loads(o.value)
    return decisions, reports


def logged(n: int, seed: int, **over) -> list[dict]:
    """The input log of a closed-loop run (requests, and each report 3 requests after its own),
    to feed again to other engines."""
    decisions, reports = play(Engine(sor_cfg(**over)), n, seed=seed)
    rng = np.random.default_rng(seed)
    shifts = list(_SYSTEMS)
    contexts = [float(shifts[int(rng.integers(len(shifts)))]) for _ in range(n)]
    by_id = {r["id"]: r for r in reports}
    log: list[dict] = []
    for i in range(n):
        log.append({"id": f"s{i}", "time": float(i), "context": contexts[i]})
        if i >= 3 and f"s{i - 3}" in by_id:
            log.append(by_id[f"s{i - 3}"])
    return log


def learned_or_queued(core: Engine) -> int:
    """Reports learned, and joined ones queued for the next learning block."""
    return core.learner.learned_events + sum(len(lane.queue) for lane in core.lanes.values())


def test_an_sor_pipeline_gets_its_engine_and_its_settings_are_checked():
    core = make_core(sor_cfg())
    assert core.family == "sor" and core.learner.policy == "chebcb"
    with pytest.raises(config.ConfigError, match="default_omega"):
        sor_cfg(default_omega=2.5)
    with pytest.raises(config.ConfigError):
        sor_cfg(params={"context_range": [1.0, 0.0]})


def test_the_daemon_learns_omega_from_reported_iterations():
    core = Engine(sor_cfg())
    decisions, reports = play(core, 700)
    assert len(decisions) == 700 and all(0 < d["omega"] < 2 and 0 < d["prob"] <= 1 for d in decisions)
    first = np.mean([r["iterations"] for r in reports[:100]])
    last = np.mean([r["iterations"] for r in reports[-200:]])
    gs = np.mean([iterations(1.0, s)[0] for s in _SYSTEMS])
    assert last < 0.6 * first and last < 0.4 * gs  # learned: far fewer iterations than Gauss–Seidel
    joined = core.outcomes["joined"]
    assert learned_or_queued(core) == joined == 700
    reg = core.metrics.registry
    lbl = {"pipeline": "heat"}
    assert reg.get_sample_value("eddy_sor_iterations_count", lbl) == joined
    assert reg.get_sample_value("eddy_sor_iterations_sum", lbl) == pytest.approx(
        sum(r["iterations"] for r in reports[:joined]))
    assert reg.get_sample_value("eddy_sor_solve_seconds_count", lbl) == joined
    assert reg.get_sample_value("eddy_sor_not_converged_total", lbl) == sum(
        not r["converged"] for r in reports[:joined])
    per_omega = sum(reg.get_sample_value("eddy_sor_omega_decisions_total", {**lbl, "omega": f"{w:g}"})
                    for w in core.learner.grid)
    assert per_omega == 700


def test_regret_against_the_best_fixed_omega_and_the_per_instance_best():
    """The regret metrics, recomputed from the decisions and reports by the formulas they state:
    the importance-weighted estimate of each fixed ω's total cost over the policy's draws, and the
    exact excess over each system's best ω of the grid where a report carries it."""
    core = Engine(sor_cfg(learner="sor-tsallis-inf", params={}))
    decisions, reports = play(core, 400, seed=2)
    by_id = {d["id"]: d for d in decisions}
    grid = core.learner.grid
    ipw, spent = np.zeros(len(grid)), 0.0
    for r in reports:
        d = by_id[r["id"]]
        ipw[d["arm"]] += r["iterations"] / d["prob"]
        spent += r["iterations"]
    rep = core.adapter.report()
    assert rep["regret_best_fixed"] == pytest.approx(spent - ipw.min())
    assert rep["best_fixed_omega"] == grid[ipw.argmin()]
    # The estimate lands near the truth of this sequence (each reported system solved at every ω).
    rng = np.random.default_rng(2)
    shifts = list(_SYSTEMS)
    context = {f"s{j}": float(shifts[int(rng.integers(len(shifts)))]) for j in range(400)}
    truth = np.array([sum(iterations(w, context[r["id"]])[0] for r in reports) for w in grid])
    assert spent - truth.min() > 0
    assert abs(rep["regret_best_fixed"] - (spent - truth.min())) < 0.25 * (spent - truth.min())
    reg = core.metrics.registry
    lbl = {"pipeline": "heat"}
    assert reg.get_sample_value("eddy_sor_regret_best_fixed_iterations", lbl) == pytest.approx(spent - ipw.min())
    assert reg.get_sample_value("eddy_sor_best_fixed_omega", lbl) == grid[ipw.argmin()]
    assert reg.get_sample_value("eddy_sor_instance_best_reports_total", lbl) == 0
    # Reports that carry the per-instance best: the exact excess.
    feed(core, [{"id": "x1", "time": 1000.0, "context": 0.3}, {"id": "x2", "time": 1000.0, "context": 0.3}])
    feed(core, [{"type": "report", "id": "x1", "iterations": 90, "best_iterations": 60, "time": 1001.0},
                {"type": "report", "id": "x2", "iterations": 70, "best_iterations": 70, "time": 1001.0}])
    assert reg.get_sample_value("eddy_sor_regret_instance_best_iterations", lbl) == 30
    assert reg.get_sample_value("eddy_sor_instance_best_reports_total", lbl) == 2
    bad = feed(core, [{"id": "x3", "time": 1002.0}, {"type": "report", "id": "x3", "iterations": 5,
                                                      "best_iterations": -1}])
    assert [orjson.loads(o.value)["reason"] for o in bad if o.kind == "dlq"] == ["bad_type"]


def test_forced_defaults_do_not_enter_the_regret_estimate():
    core = Engine(sor_cfg(force_default=True, default_omega=1.5))
    play(core, 40)
    assert core.outcomes["joined"] > 0
    assert core.adapter.report()["regret_best_fixed"] == 0.0 and core.adapter.report()["best_fixed_omega"] is None


def test_a_report_that_never_arrives_is_counted_and_not_learned():
    core = Engine(sor_cfg(reward_wait_s=10.0))
    decisions, reports = play(core, 300, drop_every=5)
    feed(core, [{"id": "late", "time": 10_000.0, "context": 0.1}])  # event time moves past every wait
    assert core.outcomes["expired"] == 60  # s0, s5, ..., s295
    assert learned_or_queued(core) == core.outcomes["joined"] == len(reports) == 240
    reg = core.metrics.registry
    assert reg.get_sample_value("eddy_sor_reports_total", {"pipeline": "heat", "outcome": "expired"}) == 60


def test_bad_requests_and_reports_are_dead_lettered_with_their_reason():
    core = Engine(sor_cfg())
    outs = feed(core, [
        {"id": "a", "context": 0.2},
        {"id": "b"},  # the contextual policy needs a context
        {"id": "c", "context": 0.9},  # outside context_range
        {"id": "d", "context": True},
        {"type": "report", "id": "a", "iterations": -3},
        {"type": "report", "id": "a", "iterations": 1e308},
        {"type": "report", "id": "a", "iterations": 40, "converged": "yes"},
        {"type": "report", "id": "a", "iterations": 40, "seconds": -1},
        {"type": "report", "id": "a"},
        {"type": "report", "id": "zz", "iterations": 40},
        {"type": "report", "id": "a", "iterations": 40},
        {"type": "report", "id": "a", "iterations": 41},
    ])
    reasons = [orjson.loads(o.value)["reason"] for o in outs if o.kind == "dlq"]
    assert reasons == ["missing_field", "bad_context", "bad_context", "bad_type", "bad_type", "bad_type",
                       "bad_type", "missing_field", "unknown_event", "duplicate_report"]
    assert core.outcomes["joined"] == 1


def test_forced_default_serves_default_omega_and_learns_it_when_on_the_grid():
    core = Engine(sor_cfg(force_default=True, default_omega=1.5))
    decisions, reports = play(core, 40)
    assert all(d["default"] and d["reason"] == "forced" and d["omega"] == 1.5 and d["prob"] == 1.0 for d in decisions)
    assert learned_or_queued(core) == core.outcomes["joined"] > 0
    off = Engine(sor_cfg(force_default=True, default_omega=1.03))
    decisions, _ = play(off, 40)
    assert all(d["arm"] == -1 for d in decisions) and off.learner.learned_events == 0 < off.outcomes["joined"]


def test_checkpoint_restore_continue_equals_never_stopping():
    log = logged(300, seed=4)
    whole_core = Engine(sor_cfg())
    whole = [o.value for o in feed(whole_core, log)]
    a = Engine(sor_cfg())
    first = [o.value for o in feed(a, log[:250])]
    arrays, meta = a.snapshot()
    b = Engine(sor_cfg())
    b.restore({k: v.copy() for k, v in arrays.items()}, json.loads(json.dumps(meta)))
    rest = [o.value for o in feed(b, log[250:])]
    assert first + rest == whole
    assert b.adapter.report() == whole_core.adapter.report()


def test_sidecar_advise_report_and_retry():
    from .conftest import served
    from .test_sidecar import call as http_call

    core = Engine(sor_cfg(learn_every_events=1))
    with served({"heat": core}) as port:

        def call(path, body):
            return http_call(port, "POST", path, body, token="")

        st, d = call("/v1/pipelines/heat/advise", {"id": "q1", "context": 0.3})
        assert st == 200 and 1.0 <= d["omega"] <= 1.95 and d["id"] == "q1"
        assert call("/v1/pipelines/heat/advise", {"id": "q1", "context": 0.3}) == (200, d)  # a retry: the same
        st, r = call("/v1/pipelines/heat/report", {"id": "q1", "iterations": iterations(d["omega"], 0.3)[0]})
        assert (st, r["status"]) == (200, "joined")
        st, r = call("/v1/pipelines/heat/report", {"id": "q1", "iterations": 10})
        assert (st, r["error"]) == (409, "duplicate_report")
        st, err = call("/v1/pipelines/heat/advise", {"id": "q2", "context": 3.0})
        assert st == 400 and err["error"] == "bad_context"
        st, res = call("/v1/pipelines/heat/advise", {"requests": [{"id": "q3", "context": 0.1},
                                                                  {"id": "q4", "context": 0.5}]})
        assert st == 200 and [x["id"] for x in res["decisions"]] == ["q3", "q4"]
        assert core.learner.learned_events == 1


@pytest.mark.kafka
def test_requests_and_reports_through_the_broker_match_the_file_replay(broker, tmp_path):
    from .feeding import through_broker
    from .test_kafka import file_reference

    pc = {"name": "sork", "learner": "sor-tsallis-inf-cb", "input_topic": "sork-in", "output_topic": "sork-out",
          "reward_wait_s": 50.0, "learn_every_events": 5, "batch_max_events": 40,
          "params": {"context_range": [0.0, 0.6], "bins": 3}}
    log = logged(240, seed=2, learner=pc["learner"], params=pc["params"])
    records = [orjson.dumps(o) for o in log] + [b'{"type": "report", "id": "ghost", "iterations": 3}']
    got, dlq, _ = through_broker(broker, tmp_path, pc, records, 240, 1, every_events=100)
    ref = file_reference(tmp_path, records, pc)
    assert len(got) == 240 and {g["id"] for g in got} == set(ref)
    for g in got:
        assert (g["omega"], g["prob"]) == (ref[g["id"]]["omega"], ref[g["id"]]["prob"])
    assert [x["reason"] for x in dlq] == ["unknown_event"]


def test_a_decoding_bug_is_a_dead_letter_not_a_stopped_pipeline(monkeypatch):
    core = Engine(sor_cfg())

    def broken(obj, rec):
        raise ZeroDivisionError("an adapter bug")

    monkeypatch.setattr(core.adapter, "decode", broken)
    out = feed(core, [{"id": "a", "context": 0.1}])
    assert [orjson.loads(o.value)["reason"] for o in out] == ["decode_error"]
