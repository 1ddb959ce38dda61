"""The shared conformance suite, run over every registered learner."""

from __future__ import annotations

import ast
import copy
import inspect
import json
import textwrap

import numpy as np
import numpy.testing as npt
import pytest

import learners
from learners.base import DTYPES, Column, Decider, InvalidInput, Tracker, conformance_params, factory_of
from learners.paging.cache import BYTE_POLICIES

NAMES = learners.names()
ROLES = {"decider": Decider, "tracker": Tracker}


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


# -- roles and declared columns ----------------------------------------------------------------------
def class_of(name):
    factory = factory_of(name)
    return getattr(factory, "func", factory)


def has_dtype(col, values):
    if col.dtype == "str":
        return all(isinstance(v, str) for v in values)
    return np.asarray(values).dtype == np.dtype(col.dtype)


@pytest.mark.parametrize("name", NAMES)
def test_role_and_declared_columns(name):
    cls = class_of(name)
    assert cls.role in ROLES and issubclass(cls, ROLES[cls.role]), cls.role
    groups = {"inputs": cls.inputs, "outputs": cls.outputs}
    if cls.role == "decider":
        groups["feedback"] = cls.feedback
    for what, cols in groups.items():
        assert cols, f"{name} declares no {what}"
        assert len({c.name for c in cols}) == len(cols), f"{what}: a column declared twice"
        for c in cols:
            assert isinstance(c, Column) and c.dtype in DTYPES and c.shape and c.doc, (what, c)
    if cls.role == "tracker":
        learner = build(name)
        assert cls.size_settings and all(isinstance(getattr(learner, s), int) for s in cls.size_settings)


@pytest.mark.parametrize("name", NAMES)
def test_stream_uses_declared_columns_and_process_returns_declared_outputs(name):
    """The conformance stream's batches hold only declared columns, of their dtypes (a tracker's
    only "process" steps); process returns declared outputs only, every required one, as arrays of
    the declared dtypes."""
    learner = build(name)
    cls = type(learner)
    kinds = {"process": cls.inputs}
    if cls.role == "decider":
        kinds["learn"] = cls.feedback
    outputs = {c.name: c for c in cls.outputs}
    required = {c.name for c in cls.outputs if c.required}
    seen = set()
    for kind, batch in stream(learner):
        assert kind in kinds, f"a {cls.role} stream yields {kind!r} steps"
        seen.add(kind)
        declared = {c.name: c for c in kinds[kind]}
        assert set(batch) <= set(declared), f"{kind}: undeclared {sorted(set(batch) - set(declared))}"
        for col, values in batch.items():
            assert has_dtype(declared[col], values), f"{kind}: {col} is not {declared[col].dtype}"
        out = getattr(learner, kind)(batch)
        if kind == "learn":
            assert out is None
            continue
        assert set(out) <= set(outputs), f"undeclared outputs {sorted(set(out) - set(outputs))}"
        assert required <= set(out), f"missing outputs {sorted(required - set(out))}"
        for col, values in out.items():
            assert isinstance(values, np.ndarray), col
            assert has_dtype(outputs[col], values), f"{col} is {values.dtype}, declared {outputs[col].dtype}"
    assert seen == set(kinds)


@pytest.mark.parametrize("name", NAMES)
def test_missing_required_column_is_named(name):
    """A batch without a required column raises InvalidInput naming it, and changes nothing."""
    learner = build(name)
    cls = type(learner)
    steps = stream(learner, n=32)
    run(learner, steps[: len(steps) // 2])
    firsts = {}
    for kind, batch in steps:
        firsts.setdefault(kind, batch)
    for kind, batch in firsts.items():
        cols = cls.inputs if kind == "process" else cls.feedback
        for c in (c for c in cols if c.required):
            before = copy.deepcopy(learner.snapshot())
            with pytest.raises(InvalidInput, match=f"missing column '{c.name}'"):
                getattr(learner, kind)({k: v for k, v in batch.items() if k != c.name})
            assert_snapshots_equal(before, learner.snapshot(), f"{kind} without {c.name}")


@pytest.mark.parametrize("name", [n for n in NAMES if class_of(n).role == "decider"])
def test_decider_process_changes_no_learned_state(name):
    """After learning, deciding on batches again changes no snapshot array but the declared
    bookkeeping. (The batches' action ids are all known by then: a bandit's process also gives an
    unseen action id a slot, evicting the least recently offered action's model when full; see
    BanditLearner and tests/test_bandit_actions.py.)"""
    learner = build(name)
    steps = stream(learner)
    run(learner, steps)
    assert set(type(learner).bookkeeping) <= set(learner.snapshot())
    for kind, batch in steps:
        if kind != "process":
            continue
        before = copy.deepcopy(learner.snapshot())
        learner.process(batch)
        after = learner.snapshot()
        for k in type(learner).bookkeeping:
            before.pop(k), after.pop(k)
        assert_snapshots_equal(before, after, "process")


@pytest.mark.parametrize("name", [n for n in NAMES if class_of(n).role == "tracker"])
def test_tracker_view_and_resize(name):
    learner = build(name)
    run(learner, stream(learner))
    view = learner.view()
    assert view and all(isinstance(v, np.ndarray) for v in view.values())
    before = copy.deepcopy(learner.snapshot())
    with pytest.raises(ValueError, match="not a size setting"):
        learner.resize(no_such_size=3)
    with pytest.raises(TypeError):
        learner.resize(8)
    assert_snapshots_equal(before, learner.snapshot(), "rejected resize")
    sizes = {s: getattr(learner, s) for s in type(learner).size_settings}
    learner.resize()  # every size kept: the state users see is the same
    assert {s: getattr(learner, s) for s in sizes} == sizes
    again = learner.view()
    assert again.keys() == view.keys()
    for k in view:
        npt.assert_array_equal(np.sort(again[k]), np.sort(view[k]), err_msg=k)


@pytest.mark.parametrize("name", NAMES)
def test_warm_up_leaves_the_state(name):
    learner = build(name)
    run(learner, stream(learner, n=32))
    before = copy.deepcopy(learner.snapshot())
    learner.warm_up()
    assert_snapshots_equal(before, learner.snapshot(), "warm_up")


@pytest.mark.parametrize("policy", BYTE_POLICIES)
def test_warm_up_in_the_paging_byte_mode(policy):
    """The byte mode needs a size per request, which the conformance stream has not."""
    learner = learners.create(f"paging-{policy}", **conformance_params(f"paging-{policy}"), byte_capacity=64)
    before = copy.deepcopy(learner.snapshot())
    learner.warm_up()
    assert_snapshots_equal(before, learner.snapshot(), "warm_up")


@pytest.mark.parametrize("name", NAMES)
def test_report_is_json(name):
    learner = build(name)
    run(learner, stream(learner))
    report = learner.report()
    assert "metrics" in report
    json.dumps(report)


def _does_nothing(func) -> bool:
    """The body is only a docstring, ``pass`` or ``...``."""
    node = ast.parse(textwrap.dedent(inspect.getsource(func))).body[0]
    return all(isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
               for s in node.body)


@pytest.mark.parametrize("cls", sorted({class_of(n) for n in NAMES}, key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_no_method_does_nothing(cls):
    """No method of a registered learner class (its own or inherited) has an empty body."""
    empty = []
    for name in dir(cls):
        attr = inspect.getattr_static(cls, name)
        func = attr.fget if isinstance(attr, property) else getattr(attr, "__func__", attr)
        if inspect.isfunction(func) and func.__module__.startswith("learners"):
            assert not getattr(func, "__isabstractmethod__", False), name
            if _does_nothing(func):
                empty.append(name)
    assert not empty, f"{cls.__name__}: methods that do nothing: {empty}"
