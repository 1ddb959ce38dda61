"""Sieve-Streaming++ (the family's streaming baseline): the learner's kernels against the plain
reference step by step, and the (1/2 - ε) guarantee of the insertion-only algorithm against brute
force."""

from __future__ import annotations

import numpy as np
import pytest

from learners.submodular import SubmodularSummary
from learners.submodular.objectives import FacilityLocation, FeatureBased
from learners.submodular.reference import Items, RowOracle, SieveReference, brute_force

EPS = 0.2


def summary(kind: str, k: int, seed: int, **over) -> tuple[SubmodularSummary, object, np.ndarray]:
    """The learner, its objective as the reference sees it, and items' features."""
    rng = np.random.default_rng(seed)
    if kind == "fl":
        ref = rng.normal(size=(30, 4))
        s = SubmodularSummary(objective="facility-location", reference=ref, k=k, eps=EPS,
                              algorithm="sieve-streaming-pp", capacity=64, **over)
        return s, FacilityLocation(ref), rng.normal(size=(40, 4))
    phi = kind.split("-")[1]
    s = SubmodularSummary(objective="feature-based", d=5, phi=phi, k=k, eps=EPS, algorithm="sieve-streaming-pp",
                          capacity=64, **over)
    return s, FeatureBased(5, phi=phi), rng.exponential(size=(40, 5)) * (rng.random((40, 5)) < 0.6)


def ops_of(seed: int, n: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    live: list[int] = []
    out = []
    for _ in range(120):
        if live and (len(live) >= 14 or rng.random() < 0.35):
            out.append((1, live.pop(int(rng.integers(len(live))))))
        else:
            e = int(rng.choice([x for x in range(n) if x not in live]))
            live.append(e)
            out.append((0, e))
    return out


@pytest.mark.parametrize("kind", ["fl", "fb-sqrt", "fb-log1p"])
@pytest.mark.parametrize("k", [1, 3, 6])
def test_the_kernels_equal_the_plain_reference_step_by_step(kind, k):
    for seed in range(3):
        s, obj, x = summary(kind, k, seed)
        rows, idx, cnt = obj.encode(x)
        rows = rows.astype(np.float32).astype(np.float64)  # (the learner stores its rows in float32)
        ref = SieveReference(Items(obj, rows, idx, cnt, np.arange(len(x), dtype=np.uint64)), k, EPS)
        for op, e in ops_of(seed, len(x)):
            s.process({"op": np.array([op], np.int8), "item_key": np.array([e], np.uint64), "features": x[e:e + 1]})
            (ref.insert if op == 0 else ref.delete)(e)
            keys, value = s.guaranteed()  # the best sieve (the served set is replaced only by a better one)
            assert set(keys.tolist()) == set(ref.solution()), (seed, op, e)
            assert value == pytest.approx(ref.value(), rel=1e-6, abs=1e-9)
            assert float(s.view()["value"][0]) >= value - 1e-9
            assert set(s.view()["keys"].tolist()) <= s.live_keys()
            assert s.oracle_calls == ref.it.calls


@pytest.mark.parametrize("kind", ["fl", "fb-sqrt", "fb-saturate"])
def test_insertions_only_give_at_least_half_minus_eps_of_opt(kind):
    worst = 1.0
    for seed in range(4):
        for k in (1, 2, 4):
            s, obj, x = summary(kind, k, seed)
            x = x[:14]
            oracle = RowOracle(obj, obj.encode(x)[0] if not obj.sparse else None)
            for e in np.random.default_rng(seed).permutation(len(x)).tolist():
                s.process({"op": np.zeros(1, np.int8), "item_key": np.array([e], np.uint64), "features": x[e:e + 1]})
                live = [int(v) for v in s.live_keys()]
                opt, _ = brute_force(oracle, live, k)
                v = float(s.view()["value"][0])
                assert v >= (0.5 - EPS) * opt - 1e-9, (seed, k, e)
                worst = min(worst, v / opt if opt > 0 else 1.0)
    assert worst < 1.0  # (the guarantee is met, not a trivially exact instance)


def test_a_deletion_outside_the_sieves_costs_no_rerun_and_one_inside_does():
    """(Outside: in no sieve, not Δ's item, not in the set that reached LB.)"""
    s, obj, x = summary("fb-sqrt", 2, 0)
    for e in range(20):
        s.process({"op": np.zeros(1, np.int8), "item_key": np.array([e], np.uint64), "features": x[e:e + 1]})
    sv = s._sieve
    members = {int(m) for t in range(int(sv["sv"][3])) for m in sv["members"][t, :sv["ns"][t]]}
    slot_key = {int(slot): int(s._st.keys[slot]) for slot in members}
    held = members | {int(m) for m in sv["lbm"][:int(sv["sv"][5])]} | {int(sv["sv"][4])}  # sieves, LB's set, Δ
    outside = next(e for e in range(20) if s._slot_of[e] not in held)
    calls = s.oracle_calls
    s.process({"op": np.ones(1, np.int8), "item_key": np.array([outside], np.uint64), "features": x[:1]})
    assert s.oracle_calls == calls
    inside = next(iter(slot_key.values()))
    s.process({"op": np.ones(1, np.int8), "item_key": np.array([inside], np.uint64), "features": x[:1]})
    assert s.oracle_calls > calls + len(s) and inside not in s.view()["keys"].tolist()


def test_a_checkpoint_of_other_sieves_is_refused():
    s, _, x = summary("fb-sqrt", 3, 0)
    s.process({"op": np.zeros(4, np.int8), "item_key": np.arange(4, dtype=np.uint64), "features": x[:4]})
    other = SubmodularSummary(objective="feature-based", d=5, phi="sqrt", k=3, eps=EPS * 1.01,
                              algorithm="sieve-streaming-pp", capacity=64)
    assert other._sieve["ns"].shape == s._sieve["ns"].shape  # (the same sieve count: only eps tells them apart)
    with pytest.raises(Exception, match="eps"):
        other.restore(s.snapshot())
