"""SOR tuning's solve mode: eddy solves the request's system off the loop (inline CSR or an .npz
under solve_dir), publishes the outcome, and learns from the report it writes to its own input."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from daemon import config
from daemon.engine import Engine
from learners.sor.systems import poisson, solve

from .feeding import feed
from .test_sor_daemon import learned_or_queued


def cfg(tmp_path=None, **over):
    pc = {"name": "sim", "learner": "sor-chebcb", "input_topic": "sim-in", "output_topic": "sim-out",
          "learn_every_events": 1, "reward_wait_s": 1e6, "params": {"context_range": [0.0, 1.0]}}
    if tmp_path is not None:
        pc["solve_dir"] = str(tmp_path)
    pc.update(over)
    return config.load_dict({"pipelines": [pc]}, env=False).pipelines[0]


def save_npz(path, s, b=None):
    np.savez(path, indptr=s.indptr, indices=s.indices, data=s.data, shape=np.array([s.n, s.n]),
             b=s.b if b is None else b)


def inline(s) -> dict:
    return {"indptr": s.indptr.tolist(), "indices": s.indices.tolist(), "data": s.data.tolist(), "b": s.b.tolist()}


def wait_outputs(core: Engine, n: int, timeout_s: float = 30.0) -> list:
    """The first ``n`` outputs the solver threads emitted (taken from the engine's pending list)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with core.lock:
            if len(core.pending_out) >= n:
                got, core.pending_out = core.pending_out, []
                return got
        time.sleep(0.01)
    raise AssertionError(f"only {len(core.pending_out)} of {n} solve outputs after {timeout_s}s")


def test_an_npz_system_over_the_sidecar_is_solved_written_and_learned(tmp_path):
    from .conftest import served
    from .test_sidecar import call as http_call

    s = poisson(12, 0.2)
    save_npz(tmp_path / "step-1.npz", s)
    core = Engine(cfg(tmp_path))
    with served({"sim": core}) as port:
        st, d = http_call(port, "POST", "/v1/pipelines/sim/advise",
                          {"id": "s1", "context": 0.2, "system": {"npz": "step-1.npz", "solution": "step-1.x.npy"}},
                          token="")
        assert st == 200 and 1.0 <= d["omega"] <= 1.95
        outs = wait_outputs(core, 2)
    kinds = {o.kind: orjson.loads(o.value) for o in outs}
    res, report = kinds["decision"], kinds["input"]
    ref = solve(s, "sor", d["omega"], tol=1e-8)
    assert res["type"] == "solve" and res["id"] == "s1" and res["omega"] == d["omega"] and res["converged"]
    assert res["iterations"] == ref.iterations == report["iterations"] and res["method"] == "sor"
    assert res["solution"] == "step-1.x.npy" and res["residual"] <= 1e-8
    x = np.load(tmp_path / "step-1.x.npy")
    np.testing.assert_allclose(x, ref.x)
    assert (report["type"], report["id"], report["converged"]) == ("report", "s1", True)
    # The report comes back through the pipeline's input, and is learned in log order.
    feed(core, [report])
    assert core.outcomes["joined"] == 1 and learned_or_queued(core) == 1
    reg = core.metrics.registry
    assert reg.get_sample_value("eddy_sor_solves_total", {"pipeline": "sim", "outcome": "converged"}) == 1
    assert reg.get_sample_value("eddy_sor_solves_in_flight", {"pipeline": "sim"}) == 0


def test_inline_ssor_pcg_with_a_warm_start_and_a_capped_solve(tmp_path):
    s = poisson(10, 0.1)
    core = Engine(cfg())
    x0 = solve(s, "ssor-pcg", 1.5, tol=1e-4).x
    out = feed(core, [{"id": "a", "context": 0.1, "system": {**inline(s), "method": "ssor-pcg", "x0": x0.tolist()}},
                      {"id": "b", "context": 0.1, "system": {**inline(s), "max_iterations": 3}}])
    decisions = {orjson.loads(o.value)["id"]: orjson.loads(o.value) for o in out}
    got = {orjson.loads(o.value)["id"] + ":" + o.kind: orjson.loads(o.value) for o in wait_outputs(core, 4)}
    a, b = got["a:decision"], got["b:decision"]
    ref = solve(s, "ssor-pcg", decisions["a"]["omega"], tol=1e-8, x0=x0)
    assert a["converged"] and a["iterations"] == ref.iterations and a["method"] == "ssor-pcg"
    assert not b["converged"] and b["iterations"] == 3 and got["b:input"]["iterations"] == 3
    assert got["b:input"]["converged"] is False


def test_a_swept_solve_reports_the_per_instance_best_of_the_grid():
    s = poisson(10, 0.3)
    core = Engine(cfg(solve_sweep_every=1))
    out = feed(core, [{"id": "a", "context": 0.3, "system": inline(s)}])
    omega = orjson.loads(out[0].value)["omega"]
    got = {o.kind: orjson.loads(o.value) for o in wait_outputs(core, 2)}
    per_omega = {w: solve(s, "sor", w, tol=1e-8).iterations for w in core.learner.grid.tolist()}
    best = min(per_omega.values())
    assert got["input"]["best_iterations"] == got["decision"]["best_iterations"] == best
    assert per_omega[got["decision"]["best_omega"]] == best
    assert got["input"]["iterations"] == per_omega[omega] >= best
    feed(core, [got["input"]])  # read back: the exact regret against the per-instance best
    reg = core.metrics.registry
    assert reg.get_sample_value("eddy_sor_regret_instance_best_iterations", {"pipeline": "sim"}) == \
        per_omega[omega] - best
    # One request in N, by its id: the same ids in every run; none with the sweep off.
    third = Engine(cfg(solve_sweep_every=3)).adapter.solves
    picked = [third.sweeps(f"r{i}") for i in range(300)]
    assert picked == [Engine(cfg(solve_sweep_every=3)).adapter.solves.sweeps(f"r{i}") for i in range(300)]
    assert 60 < sum(picked) < 140
    assert not any(Engine(cfg()).adapter.solves.sweeps(f"r{i}") for i in range(300))
    plain = Engine(cfg())
    feed(plain, [{"id": "a", "context": 0.3, "system": inline(s)}])
    assert all("best_iterations" not in orjson.loads(o.value) for o in wait_outputs(plain, 2))


@pytest.mark.parametrize("system,reason", [
    ({"indptr": [0, 1, 2], "indices": [0, 2], "data": [1.0, 1.0], "b": [1.0, 1.0]}, "not_square"),
    ({"indptr": [0, 1, 2], "indices": [0, 0], "data": [1.0, 1.0], "b": [1.0, 1.0]}, "singular_diagonal"),
    ({"indptr": [0, 2, 4], "indices": [0, 1, 0, 1], "data": [1.0, 2.0, 0.0, 1.0], "b": [1.0, 1.0],
      "method": "ssor-pcg"}, "not_symmetric"),
    ({"indptr": [0, 1, 2], "indices": [0, 1], "data": [-1.0, 1.0], "b": [1.0, 1.0], "method": "ssor-pcg"}, "not_spd"),
    ({"indptr": [0, 1, 2], "indices": [0, 1], "data": [1.0, 1.0], "b": [1.0, 1.0], "method": "cg"}, "bad_type"),
    ({"npz": "../elsewhere.npz"}, "path_outside"),
    ({"npz": "missing.npz"}, "missing_file"),
    ({"indptr": [0, 1], "indices": [0], "data": [1.0], "b": [1.0], "solution": "/etc/x.npy"}, "path_outside"),
    ({"indptr": [0, 1], "indices": [0], "data": [1.0], "b": [1.0], "tol": 2}, "bad_type"),
    ("a.npz", "bad_type"),
    ({"npz": "a\u0000.npz"}, "bad_type"),
    ({"indptr": [0, 1], "indices": [0], "data": [1.0], "b": [1.0], "solution": "x\u0000.npy"}, "bad_type"),
    ({"indptr": [0, 1], "indices": [0], "data": [1.0], "b": [1.0], "tol": 1e-300}, "bad_type"),
])
def test_bad_systems_are_dead_lettered_at_decoding(tmp_path, system, reason):
    core = Engine(cfg(tmp_path))
    out = feed(core, [{"id": "x", "context": 0.5, "system": system}])
    assert [orjson.loads(o.value)["reason"] for o in out if o.kind == "dlq"] == [reason]
    assert not [o for o in out if o.kind == "decision"]


def test_files_need_solve_dir_and_unreadable_or_oversize_files_are_dead_lettered_by_the_worker(tmp_path):
    out = feed(Engine(cfg()), [{"id": "x", "context": 0.5, "system": {"npz": "a.npz"}}])
    assert [orjson.loads(o.value)["reason"] for o in out] == ["solve_files_off"]
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    save_npz(tmp_path / "big.npz", poisson(6, 0.0))
    core = Engine(cfg(tmp_path, solve_max_rows=10))
    out = feed(core, [{"id": "j", "context": 0.5, "system": {"npz": "junk.npz"}},
                      {"id": "k", "context": 0.5, "system": {"npz": "big.npz"}}])
    assert [o.kind for o in out] == ["decision", "decision"]  # the decisions go out at once
    dlq = sorted((orjson.loads(o.value)["id"], orjson.loads(o.value)["reason"]) for o in wait_outputs(core, 2))
    assert dlq == [("j", "unreadable_file"), ("k", "oversize")]
    assert core.metrics.registry.get_sample_value("eddy_dead_letter_messages_total",
                                                  {"pipeline": "sim", "reason": "unreadable_file"}) == 1


def test_the_queue_of_solves_is_bounded(tmp_path):
    core = Engine(cfg(solve_queue_cap=2))
    core.adapter.solves.in_flight = 2  # two solves still running
    s = poisson(4, 0.0)
    out = feed(core, [{"id": "q", "context": 0.5, "system": inline(s)}, {"id": "r", "context": 0.5}])
    assert [(o.kind, orjson.loads(o.value).get("reason")) for o in out] == [("dlq", "solve_queue_full"),
                                                                             ("decision", None)]
    core.adapter.solves.in_flight = 0
    out = feed(core, [{"id": "q", "context": 0.5, "system": inline(s)}])  # the rejected id may come again
    assert [o.kind for o in out] == ["decision"] and len(wait_outputs(core, 2)) == 2


@pytest.mark.kafka
def test_solve_reports_go_to_the_pipeline_input_topic(broker, tmp_path):
    from .feeding import through_broker
    from .test_kafka import consume

    s = poisson(6, 0.3)
    pc = {"name": "solvek", "learner": "sor-tsallis-inf", "input_topic": "solvek-in", "output_topic": "solvek-out",
          "batch_max_events": 10}
    reqs = [orjson.dumps({"id": f"r{i}", "time": float(i), "system": inline(s)}) for i in range(12)]
    got, _, _ = through_broker(broker, tmp_path, pc, reqs, 24, 0)
    assert sorted(g.get("type", "decision") for g in got) == ["decision"] * 12 + ["solve"] * 12
    back = consume(broker.bootstrap, "solvek-in", 24)
    reports = [r for r in back if r.get("type") == "report"]
    assert sorted(r["id"] for r in reports) == sorted(f"r{i}" for i in range(12))
    assert all(r["converged"] and r["iterations"] > 0 for r in reports)


def test_a_solution_that_cannot_be_written_keeps_the_solve_and_its_report(tmp_path):
    s = poisson(5, 0.1)
    core = Engine(cfg(tmp_path))
    feed(core, [{"id": "w", "context": 0.5, "system": {**inline(s), "solution": "no/such/folder/x.npy"}}])
    assert core.drain(30.0) == 0  # the solve has ended: its outputs wait to be published
    got = {o.kind: orjson.loads(o.value) for o in core.pending_out}
    assert got["decision"]["converged"] and got["decision"]["solution"] is None
    assert "solution not written" in got["decision"]["error"] and got["input"]["iterations"] > 0


def test_an_empty_or_truncated_npz_and_a_header_past_the_caps_are_dead_lettered(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    save_npz(tmp_path / "ok.npz", poisson(8, 0.0))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:200])
    np.savez_compressed(tmp_path / "bomb.npz", indptr=np.zeros(3, dtype=np.int64), indices=np.zeros(10**6, np.int64),
                        data=np.zeros(10**6), shape=np.array([2, 2]), b=np.zeros(2))
    core = Engine(cfg(tmp_path, solve_max_nnz=1000))
    feed(core, [{"id": n, "context": 0.5, "system": {"npz": f"{n}.npz"}} for n in ("empty", "cut", "bomb")])
    assert core.drain(30.0) == 0
    got = sorted((orjson.loads(o.value)["id"], orjson.loads(o.value)["reason"]) for o in core.pending_out)
    assert got == [("bomb", "oversize"), ("cut", "unreadable_file"), ("empty", "unreadable_file")]
