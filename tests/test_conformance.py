"""The shared conformance suite, run over every registered learner."""

from __future__ import annotations

import copy

import numpy as np
import numpy.testing as npt
import pytest

import learners
from learners.base import InvalidInput, conformance_params, factory_of

NAMES = learners.names()


def build(name: str):
    return learners.create(name, **conformance_params(name))


def run(learner, steps):
    outs = []
    for kind, batch in steps:
        out = getattr(learner, kind)(batch)
        if out is not None:
            outs.append(out)
    return outs


def stream(learner, seed=0, n=64):
    return list(type(learner)._conformance_stream(seed, n_events=n))


def assert_outputs_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            npt.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]), err_msg=k)


def test_registry_lists_every_family():
    assert {"squarecb", "linucb", "lints", "epsilon-greedy", "squarecb-neural", "fastcb-neural"} <= set(NAMES)


def test_unknown_name_lists_valid_names():
    with pytest.raises(KeyError, match="valid names: .*squarecb"):
        learners.create("nope")


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_outputs(name):
    a, b = build(name), build(name)
    assert_outputs_equal(run(a, stream(a)), run(b, stream(b)))


@pytest.mark.parametrize("name", NAMES)
def test_snapshot_restore_continue_equals_never_stopping(name):
    steps = stream(build(name), n=128)
    cut = len(steps) // 2 + 1  # cut between a process and its learn step
    straight = build(name)
    expected = run(straight, steps)
    first = build(name)
    before = run(first, steps[:cut])
    state = copy.deepcopy(first.snapshot())
    second = build(name)
    second.restore(state)
    after = run(second, steps[cut:])
    assert_outputs_equal(before + after, expected)
    final_a, final_b = straight.snapshot(), second.snapshot()
    assert final_a.keys() == final_b.keys()
    for k in final_a:
        npt.assert_array_equal(final_a[k], final_b[k], err_msg=k)


@pytest.mark.parametrize("name", NAMES)
def test_snapshot_is_plain_arrays(name):
    learner = build(name)
    run(learner, stream(learner))
    for k, v in learner.snapshot().items():
        assert isinstance(v, np.ndarray), k
        assert v.dtype != object, f"{k} would need pickle"


@pytest.mark.parametrize("name", NAMES)
def test_inputs_not_mutated(name):
    learner = build(name)
    steps = stream(learner)
    frozen = copy.deepcopy(steps)
    run(learner, steps)
    for (k1, b1), (k2, b2) in zip(steps, frozen, strict=True):
        assert k1 == k2
        for col in b1:
            npt.assert_array_equal(np.asarray(b1[col]), np.asarray(b2[col]), err_msg=col)


def assert_snapshots_equal(before, after, what=""):
    """Every array of two snapshots (models, tables, counters, meta) is the same: names, dtypes, shapes, values."""
    assert sorted(before) == sorted(after), what
    for k in before:
        assert before[k].dtype == after[k].dtype, f"{what}: {k}"
        npt.assert_array_equal(before[k], after[k], err_msg=f"{what}: {k}", strict=True)


@pytest.mark.parametrize("trained", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_bad_input_rejected_clearly(name, trained):
    """A rejected batch raises InvalidInput with a reason and leaves the whole snapshot unchanged,
    on a fresh learner and on one part way through its stream."""
    learner = build(name)
    if trained:
        run(learner, stream(learner, seed=1, n=32))
    bad = list(type(learner)._bad_batches())
    assert bad, "every learner lists bad batches"
    for i, (kind, batch) in enumerate(bad):
        before = copy.deepcopy(learner.snapshot())
        with pytest.raises(InvalidInput) as err:
            getattr(learner, kind)(batch)
        assert str(err.value)
        assert_snapshots_equal(before, learner.snapshot(), f"bad batch {i} ({kind}: {err.value})")


@pytest.mark.parametrize("name", NAMES)
def test_clone_is_fresh_and_params_roundtrip(name):
    learner = build(name)
    run(learner, stream(learner))
    fresh = learner.clone()
    assert fresh.get_params() == learner.get_params()
    ref = build(name)
    assert_outputs_equal(run(fresh, stream(fresh)), run(ref, stream(ref)))


@pytest.mark.parametrize("name", NAMES)
def test_docstring_and_factory(name):
    learner = build(name)
    assert type(learner).__doc__ and "Parameters" in type(learner).__doc__
    assert callable(factory_of(name))
