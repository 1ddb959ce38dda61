"""The dynamic algorithms' claimed guarantee, checked against brute force on small instances: at
every step of random, sliding-window and adversarial (oblivious: fixed before the run) streams,
the solution is at least (1/2 - ε)·OPT of the live items."""

from __future__ import annotations

import numpy as np
import pytest

from learners.submodular.reference import DynamicReference, Items, RowOracle, brute_force, greedy

from .test_submodular_objectives import KINDS, instance

EPS = 0.2
N = 15


def streams(n: int, seed: int, oracle) -> dict[str, list[tuple[str, int]]]:
    """Operation sequences over items 0..n-1, each fixed before the run."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple[str, int]]] = {}
    live: list[int] = []
    ops: list[tuple[str, int]] = []
    for _ in range(70):  # random inserts and deletes around a live set of about 10
        if live and (len(live) >= 12 or rng.random() < 0.4):
            ops.append(("delete", live.pop(int(rng.integers(len(live))))))
        else:
            e = int(rng.choice([x for x in range(n) if x not in live]))
            live.append(e)
            ops.append(("insert", e))
    out["random"] = ops
    order = [int(x) for x in rng.permutation(n)]
    window = 6
    out["sliding"] = [op for t, e in enumerate(order)
                      for op in ([("insert", e)] + ([("delete", order[t - window])] if t >= window else []))]
    # Adversarial: everything in, then greedy's choices out first (then the rest by falling singleton).
    _, chosen = greedy(oracle, list(range(n)), n)
    rest = sorted(set(range(n)) - set(chosen), key=lambda e: -oracle.value([e]))
    out["greedy-first"] = [("insert", e) for e in order] + [("delete", e) for e in chosen + rest]
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lattanzi", [False, True], ids=["eddy", "lattanzi"])
def test_at_least_half_minus_eps_of_opt_at_every_step(kind, lattanzi):
    worst = 1.0
    for seed in range(3):
        obj, rows, idx, cnt, dense = instance(kind, N, seed)
        ref = RowOracle(obj, dense)
        keys = (np.arange(N, dtype=np.uint64) * np.uint64(7919)) + np.uint64(seed)
        for name, ops in streams(N, seed, ref).items():
            for k in (1, 3, 5):
                alg = DynamicReference(Items(obj, rows, idx, cnt, keys), k, T=5, eps=EPS, seed=seed,
                                       lattanzi=lattanzi)
                live: set[int] = set()
                for op, e in ops:
                    getattr(alg, op)(e)
                    live.symmetric_difference_update({e})
                    sol = alg.solution()
                    assert set(sol) <= live and len(sol) == len(set(sol)) <= k, (name, op, e)
                    v = ref.value(sol)
                    assert v == pytest.approx(alg.value(), rel=1e-9, abs=1e-12)
                    opt, _ = brute_force(ref, sorted(live), k)
                    assert v >= (0.5 - EPS) * opt - 1e-12, (name, k, op, e, v, opt)
                    worst = min(worst, v / opt if opt > 0 else 1.0)
    assert worst >= 0.5 - EPS


def _ops(rng, n: int, steps: int, live_cap: int) -> list[tuple[str, int]]:
    live: list[int] = []
    ops = []
    for _ in range(steps):
        if live and (len(live) >= live_cap or rng.random() < 0.45):
            ops.append(("delete", live.pop(int(rng.integers(len(live))))))
        else:
            e = int(rng.choice([x for x in range(n) if x not in live]))
            live.append(e)
            ops.append(("insert", e))
    return ops


@pytest.mark.parametrize("kind", KINDS)
def test_the_kernel_equals_the_plain_algorithm_step_by_step(kind):
    """Same streams, same random draws: the same solution, value, oracle calls and guesses after
    every operation."""
    from learners.submodular import _dynamic as D

    for seed in range(3):
        obj, rows, idx, cnt, _ = instance(kind, 40, seed)
        keys = np.arange(40, dtype=np.uint64) * np.uint64(7919) + np.uint64(seed)
        for k in (1, 3, 6):
            st = D.new_state(obj.form, obj.phik, obj.sparse, obj.w, obj.width, 40, k, EPS, seed)
            st.rows[:], st.idx[:], st.cnt[:], st.keys[:] = rows, idx, cnt, keys
            ref = DynamicReference(Items(obj, st.rows, idx, cnt, keys), k, T=int(st.ip[4]), eps=EPS, seed=seed)
            out = np.empty(k, dtype=np.int64)
            for op, e in _ops(np.random.default_rng(seed + 10 * k), 40, 200, 25):
                getattr(ref, op)(e)
                getattr(D, op)(st, e)
                n, v = D.solution(st, out)
                assert out[:n].tolist() == ref.solution() and v == ref.value()
                assert int(st.fp[4]) == ref.it.calls
                assert sorted(int(st.gi[g]) for g in range(st.ip[5]) if st.gon[g]) == sorted(ref.guesses)


def test_a_python_objective_runs_on_the_plain_algorithm_with_the_same_guarantee():
    """A user's function (here: weighted coverage of the tags an item carries) through
    :class:`PyItems`: the plain algorithm keeps (1/2 - ε)·OPT at every step, OPT by brute force
    on the same function."""
    from learners.submodular import PythonObjective
    from learners.submodular.reference import PyItems

    rng = np.random.default_rng(5)
    tags = {e: frozenset(int(t) for t in rng.choice(8, size=int(rng.integers(1, 4)), replace=False)) for e in range(12)}
    weight = rng.uniform(0.5, 2.0, 8)
    f = PythonObjective(lambda sets: float(sum(weight[t] for t in frozenset().union(*sets))) if sets else 0.0)
    items = PyItems(f, tags, np.arange(12, dtype=np.uint64) * np.uint64(31))

    class Oracle:
        def value(self, s):
            return f.value([tags[e] for e in s])

    alg = DynamicReference(items, 3, T=4, eps=EPS, seed=2)
    live: set[int] = set()
    for op, e in _ops(np.random.default_rng(6), 12, 60, 9):
        getattr(alg, op)(e)
        live.symmetric_difference_update({e})
        opt, _ = brute_force(Oracle(), sorted(live), 3)
        assert alg.value() == pytest.approx(Oracle().value(alg.solution()))
        assert alg.value() >= (0.5 - EPS) * opt - 1e-12
    assert items.calls > 0
