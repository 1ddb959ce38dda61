"""The engine's contract, checked the same way for every registered family adapter.

Each family has a spec below (its pipeline settings and a seeded generator of valid records:
events and, for families that take feedback, feedback records, all with event times); the checks
are generic: outputs independent of micro-batch boundaries, checkpoint → restore → continue equal
to never stopping, duplicates, every dead-letter reason the engine owns with its counter, the
bounded caps with their eviction counters, and per-partition lanes. A family registered without a
spec fails :func:`test_the_suite_covers_every_registered_family`.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest

from connectors.base import SourceRecord
from daemon import config
from daemon import family as fam
from daemon.checkpoint import CheckpointStore
from daemon.engine import Engine

from . import meanfamily

TOPIC = "suite-in"
MAX_BYTES = 2048
WAIT = 30.0


# The test family's adapter is registered only while this module's tests run (the fixture below):
# pytest's --doctest-modules imports tests/meanfamily.py at collection, which registers it for the
# whole session, and other tests (the README's settings table) expect the built-in families only.
meanfamily.unregister()


@pytest.fixture(scope="module", autouse=True)
def _test_family():
    """The test family (tests/meanfamily.py) registered while this module runs, dropped after."""
    meanfamily._register()
    yield meanfamily
    meanfamily.unregister()


# -- the per-family specs ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """A family under test: ``pipeline`` settings, ``event(rng, i, t)`` (a valid event of the
    family's stream, id ``e<i>`` where it has one), ``plain(eid, t)`` (a valid event with that id),
    ``feedback(rng, eid, t)`` (None: the family takes no feedback), ``missing`` (an event that lacks
    a required field). ``remembers_ids``: the engine remembers the records' ids (a repeated one is a
    ``duplicate_event``); a family whose ids name the items it tracks (a summary's inserts and
    deletes share one) judges repeats itself, with ``duplicate_reason``."""

    pipeline: dict[str, Any]
    event: Callable[[random.Random, int, float], dict[str, Any]]
    plain: Callable[[str, float], dict[str, Any]]
    missing: dict[str, Any]
    feedback: Callable[[random.Random, str, float], dict[str, Any]] | None = None
    feedback_name: str = ""
    plugins: list[str] = field(default_factory=list)
    remembers_ids: bool = True
    duplicate_reason: str = "duplicate_event"


def _features(rng: random.Random) -> dict[str, float]:
    return {"x": round(rng.gauss(0, 1), 3), "y": round(rng.gauss(0, 1), 3), "bias": 1.0}


def _bandit_event(rng, i, t):
    return {"id": f"e{i}", "time": t, "features": _features(rng), "actions": ["a", "b", "c"] if i % 5 else ["b", "d"]}


def _groupwise_event(rng, i, t):
    return {"id": f"e{i}", "time": t, "features": _features(rng), "groups": rng.choice([[], ["g1"], ["g2"], ["g1", "g2"]])}


def _paging_event(rng, i, t):
    key = f"k{min(int(rng.paretovariate(1.2)), 40)}"
    if i % 5 == 4:
        return {"key": key}  # a bare access: no id, no time
    if i % 97 == 50:
        return {"op": "resize", "capacity": rng.choice([6, 10]), "id": f"e{i}", "time": t}
    if i % 23 == 11:
        return {"key": key, "op": "delete", "id": f"e{i}", "time": t}
    return {"key": key, "id": f"e{i}", "time": t}


def _summary_event(rng, i, t):
    if i % 7 == 3 and i > 10:  # a delete of an item inserted a while ago (live unless deleted already)
        return {"op": "delete", "id": f"e{i - 7 - (i % 3)}", "time": t}
    if i % 19 == 5:
        return {"op": "get", "time": t}
    return {"id": f"e{i}", "time": t, "features": [round(rng.random(), 3), round(rng.random(), 3), 1.0]}


def _mean_event(rng, i, t):
    ev = {"id": f"e{i}", "segment": rng.choice(["n", "s", "e", "w", "x"]), "time": t}
    if i % 13 == 6:
        ev["label"] = round(rng.gauss(1, 1), 3)  # a label given with its event
    return ev


SPECS: dict[str, Spec] = {
    "bandit": Spec(
        pipeline={"learner": "squarecb", "n_features": 8, "default_action": "a"},
        event=_bandit_event,
        plain=lambda eid, t: {"id": eid, "time": t, "features": {"x": 1.0}, "actions": ["a", "b"]},
        missing={"time": 0.0, "features": {"x": 1.0}, "actions": ["a", "b"]},
        feedback=lambda rng, eid, t: {"type": "feedback", "id": eid, "reward": round(rng.random(), 3), "time": t},
        feedback_name="reward"),
    "groupwise": Spec(
        pipeline={"learner": "groupwise-mixture", "n_features": 8, "params": {"groups": ["g1", "g2"]}},
        event=_groupwise_event,
        plain=lambda eid, t: {"id": eid, "time": t, "features": {"x": 1.0}},
        missing={"time": 0.0, "features": {"x": 1.0}},
        feedback=lambda rng, eid, t: {"type": "label", "id": eid, "label": round(rng.gauss(0, 1), 3), "time": t},
        feedback_name="label"),
    "paging": Spec(
        pipeline={"learner": "paging-lru", "params": {"capacity": 8}, "cache_window": 50},
        event=_paging_event,
        plain=lambda eid, t: {"key": f"key-{eid}", "id": eid, "time": t},
        missing={"op": "get", "id": "x", "time": 0.0}),  # ids are optional here: the key is required
    "sor": Spec(
        pipeline={"learner": "sor-chebcb", "params": {"context_range": [0.0, 1.0]}},
        event=lambda rng, i, t: {"id": f"e{i}", "time": t, "context": round(rng.random(), 3)},
        plain=lambda eid, t: {"id": eid, "time": t, "context": 0.5},
        missing={"time": 0.0},  # no context: the contextual policy needs one (and no id)
        feedback=lambda rng, eid, t: {"type": "report", "id": eid, "iterations": rng.randint(40, 400), "time": t,
                                      "seconds": round(rng.random() / 100, 5), "converged": rng.random() < 0.9},
        feedback_name="report"),
    "submodular": Spec(
        pipeline={"learner": "submodular-dynamic", "params": {"objective": "feature-based", "d": 3, "k": 3,
                                                              "capacity": 16}},
        event=_summary_event,
        plain=lambda eid, t: {"id": eid, "time": t, "features": [0.5, 0.25, 1.0]},
        missing={"time": 0.0, "features": [1.0, 0.0, 0.0]},  # no id
        remembers_ids=False, duplicate_reason="duplicate_item"),
    "mean": Spec(
        pipeline={"learner": "test-running-mean", "params": {"n_buckets": 8}},
        event=_mean_event,
        plain=lambda eid, t: {"id": eid, "segment": "n", "time": t},
        missing={"segment": "n", "time": 0.0},
        feedback=lambda rng, eid, t: {"type": "label", "id": eid, "label": round(rng.gauss(1, 1), 3), "time": t},
        feedback_name="label",
        plugins=["tests.meanfamily"]),
}
FAMILIES = sorted(SPECS)
FEEDBACK = [f for f in FAMILIES if SPECS[f].feedback is not None]


def pipeline(family: str, **over) -> dict[str, Any]:
    spec = SPECS[family]
    pc = {"name": "suite", "input_topic": TOPIC, "output_topic": "suite-out", "max_message_bytes": MAX_BYTES,
          "reward_wait_s": WAIT, "learn_every_events": 5, **spec.pipeline, **over}
    return config.load_dict({"plugins": spec.plugins, "pipelines": [pc]}, env=False).pipelines[0]


def engine(family: str, **over) -> Engine:
    e = Engine(pipeline(family, **over))
    assert e.family == family
    return e


def stream(family: str, n: int = 160, seed: int = 0) -> list[Any]:
    """The family's events and (delayed, some never) feedback in log order, with some bad records:
    broken JSON, repeated events and feedback, feedback for unknown ids."""
    spec = SPECS[family]
    rng = random.Random(seed)
    out: list[Any] = []
    waiting: list[tuple[int, str]] = []
    last_event = last_fb = None
    for i in range(n):
        t = round(i + rng.random(), 3)
        ev = spec.event(rng, i, t)
        out.append(ev)
        if "id" in ev:
            last_event = ev
        if spec.feedback is not None and "label" not in ev and rng.random() < 0.75:
            waiting.append((i + rng.randint(0, 8), ev["id"]))
        still = []
        for due, eid in waiting:
            if due <= i:
                last_fb = spec.feedback(rng, eid, t)
                out.append(last_fb)
            else:
                still.append((due, eid))
        waiting = still
        if i % 29 == 13:
            out.append(b"{oops")
        if i % 31 == 17 and last_event is not None:
            out.append(last_event)  # a duplicate event
        if i % 37 == 20 and last_fb is not None:
            out.append(last_fb)  # a duplicate feedback
        if i % 41 == 30 and spec.feedback is not None:
            out.append(spec.feedback(rng, f"ghost{i}", t))
    return out


def source_records(objs: list[Any], partitions: int = 1) -> list[SourceRecord]:
    """Records over ``partitions`` input partitions: an event and its feedback (and repeats) on the
    partition of its id, others in turn; offsets count per partition."""
    offsets = [0] * partitions
    out = []
    for i, o in enumerate(objs):
        eid = o.get("id") if isinstance(o, dict) else None
        p = (int(eid[1:]) if eid[1:].isdigit() else len(eid)) % partitions if isinstance(eid, str) else i % partitions
        out.append(SourceRecord(o if isinstance(o, bytes) else orjson.dumps(o), TOPIC, p, offsets[p]))
        offsets[p] += 1
    return out


def feed(core: Engine, recs: list[SourceRecord], batch: int) -> list:
    out = []
    for i in range(0, len(recs), batch):
        out += core.handle(recs[i:i + batch])
    return out


def by_kind(outs) -> dict[str, list[tuple[bytes | None, bytes]]]:
    """Outputs per topic (the relative order of outputs and dead letters is not part of the contract)."""
    return {k: [(o.key, o.value) for o in outs if o.kind == k] for k in ("decision", "dlq")}


def sample(core: Engine, name: str, **labels) -> float:
    return core.metrics.registry.get_sample_value(name, {"pipeline": core.name, **labels}) or 0.0


def dlq_bodies(outs) -> list[dict[str, Any]]:
    return [orjson.loads(o.value) for o in outs if o.kind == "dlq"]


# -- coverage -----------------------------------------------------------------------------------------
def test_the_suite_covers_every_registered_family():
    for family in FAMILIES:
        pipeline(family)  # loads the spec's plugins
    missing = sorted(set(fam.families()) - set(SPECS))
    assert not missing, (f"families without an engine-suite spec: {missing}; add one to SPECS in "
                         "tests/test_engine_suite.py (its pipeline settings and a seeded record generator)")
    for family in FAMILIES:
        a = fam.adapter_for(pipeline(family)["learner"])
        assert a.family == family and (a.feedback_type is not None) == (family in FEEDBACK)
        if family in FEEDBACK:
            assert a.feedback_name == SPECS[family].feedback_name


# -- (i) micro-batch boundaries ---------------------------------------------------------------------
@pytest.mark.parametrize("partitions", [1, 2])
@pytest.mark.parametrize("family", FAMILIES)
def test_outputs_do_not_depend_on_micro_batch_boundaries(family, partitions):
    recs = source_records(stream(family), partitions)
    ref = by_kind(feed(engine(family), recs, len(recs)))
    assert len(ref["decision"]) > 100 and ref["dlq"]
    reasons = {d["reason"] for d in map(orjson.loads, (v for _, v in ref["dlq"]))}
    assert {"malformed_json", SPECS[family].duplicate_reason} <= reasons
    if family in FEEDBACK:
        assert {"unknown_event", f"duplicate_{SPECS[family].feedback_name}"} <= reasons
    for batch in (1, 7, 64):
        assert by_kind(feed(engine(family), recs, batch)) == ref, f"batch size {batch}"


# -- (ii) checkpoints ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_restore_continue_equals_never_stopping(family, tmp_path):
    recs = source_records(stream(family, seed=1), 2)
    straight = engine(family)
    ref = by_kind(feed(straight, recs, 16))
    waited = False
    for cut in (1, len(recs) // 3, len(recs) // 2 + 1, len(recs) - 2):
        first = engine(family)
        before = feed(first, recs[:cut], 16)
        waited |= any(lane.buffer and lane.queue for lane in first.lanes.values())
        store = CheckpointStore(str(tmp_path / f"cut{cut}"))
        store.save(*first.snapshot())
        second = engine(family)
        second.restore(*store.latest())
        assert set(second.lanes) == set(first.lanes)
        for key, lane in first.lanes.items():
            other = second.lanes[key]
            assert (list(other.seen.items()), list(other.buffer), other.watermark, other.since_learn) == \
                (list(lane.seen.items()), list(lane.buffer), lane.watermark, lane.since_learn)
        after = feed(second, recs[cut:], 16)
        got = by_kind(before + after)
        assert got == ref, f"cut at record {cut}"
        end, want = second.learner.snapshot(), straight.learner.snapshot()
        assert end.keys() == want.keys()
        for k in sorted(want):  # bookkeeping too (a bandit's clock counts rows, not calls)
            np.testing.assert_array_equal(end[k], want[k], err_msg=f"cut {cut}: learner array {k}")
    if family in FEEDBACK:
        assert waited, "a cut should hold events waiting for feedback and feedback waiting to be learned"


# -- (iii) duplicates ---------------------------------------------------------------------------------
def one(raw: Any, partition: int = 0, offset: int = 0) -> SourceRecord:
    return SourceRecord(raw if isinstance(raw, bytes) else orjson.dumps(raw), TOPIC, partition, offset)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_repeated_event_id_is_dead_lettered_and_not_processed_twice(family):
    spec = SPECS[family]
    core = engine(family, learn_every_events=1)
    d1, d2 = spec.plain("d1", 1.0), spec.plain("d2", 2.0)
    again = {**d1, "time": 3.0}  # another body, the same id
    outs = core.handle([one(d1, 0, 0), one(again, 0, 1), one(d2, 0, 2)])
    outs += core.handle([one(d1, 0, 3)])
    decided = [orjson.loads(o.value)["id"] for o in outs if o.kind == "decision"]
    assert decided == ["d1", "d2"]
    dl = dlq_bodies(outs)
    dup = spec.duplicate_reason
    assert [(d["reason"], d["offset"]) for d in dl] == [(dup, 1), (dup, 3)]
    assert all("'d1'" in d["detail"] for d in dl)
    assert sample(core, "eddy_dead_letter_messages_total", reason=dup) == 2
    assert sample(core, "eddy_decisions_total", source="kafka") == 2
    if family not in FEEDBACK:
        return
    name = spec.feedback_name
    rng = random.Random(0)
    fb = spec.feedback(rng, "d1", 4.0)
    outs = core.handle([one(fb, 0, 4), one(fb, 0, 5)]) + core.handle([one({**fb, "time": 4.5}, 0, 6)])
    assert [(d["reason"], d["offset"]) for d in dlq_bodies(outs)] == [(f"duplicate_{name}", 5),
                                                                      (f"duplicate_{name}", 6)]
    assert core.outcomes["joined"] == 1
    core.handle([one(spec.plain("d3", 5.0), 0, 7)])  # the next event learns the block first
    assert core.learner.learned_events == 1
    assert sample(core, "eddy_dead_letter_messages_total", reason=f"duplicate_{name}") == 2


# -- (iv) every dead-letter reason the engine owns ------------------------------------------------------
def _nan_time(ev: dict[str, Any]) -> bytes:
    return json.dumps({**ev, "time": "__NAN__"}).replace('"__NAN__"', "NaN").encode()


def dead_letter_cases(family: str) -> list[tuple[str, str]]:
    cases = [("oversize", "oversize"), ("malformed_json", "malformed_json"), ("non_finite", "non_finite"),
             ("array", "bad_type"), ("string", "bad_type"), ("missing", "missing_field"),
             ("future", "future_time"), ("duplicate_event", SPECS[family].duplicate_reason)]
    if family in FEEDBACK:  # (a tracker's records have no 'type': its requests ignore one, as before the engine)
        cases.append(("type", "bad_type"))
        name = SPECS[family].feedback_name
        cases += [("fb_missing", "missing_field"), ("fb_future", "future_time"), ("fb_nan", "non_finite"),
                  ("unknown", "unknown_event"), ("late", f"late_{name}"), ("fb_duplicate", f"duplicate_{name}")]
    return cases


def dead_letter_case(family: str, case: str) -> tuple[list[Any], Any]:
    """(records before, the rejected record)."""
    spec = SPECS[family]
    ev = spec.plain("x1", 0.0)
    fb = spec.feedback(random.Random(0), "x1", 1.0) if spec.feedback else {}
    return {
        "oversize": ([], {**ev, "pad": "p" * MAX_BYTES}),
        "malformed_json": ([], b'{"id": "x1", '),
        "non_finite": ([], _nan_time(ev)),
        "array": ([], b"[1, 2]"),
        "string": ([], b'"event"'),
        "type": ([], {**ev, "type": "no-such-type"}),
        "missing": ([], spec.missing),
        "future": ([], {**ev, "time": 1e300}),
        "duplicate_event": ([ev], ev),
        "fb_missing": ([ev], {k: v for k, v in fb.items() if k != "id"}),
        "fb_future": ([ev], {**fb, "time": 1e300}),
        "fb_nan": ([ev], _nan_time(fb)),
        "unknown": ([ev], {**fb, "id": "nobody"}),
        "late": ([ev, spec.plain("x2", WAIT + 1.0)], fb),
        "fb_duplicate": ([ev, fb], fb),
    }[case]


@pytest.mark.parametrize("family,case,reason", [(f, c, r) for f in FAMILIES for c, r in dead_letter_cases(f)])
def test_every_engine_reason_is_a_dead_letter_with_its_record_and_counter(family, case, reason):
    core = engine(family)
    before, bad = dead_letter_case(family, case)
    assert not dlq_bodies(core.handle([one(r, 1, i) for i, r in enumerate(before)]))
    raw = bad if isinstance(bad, bytes) else orjson.dumps(bad)
    outs = core.handle([one(raw, 1, 42)])
    assert [o.kind for o in outs] == ["dlq"]
    (body,) = dlq_bodies(outs)
    assert body["reason"] == reason and body["detail"] and body["pipeline"] == "suite"
    assert (body["topic"], body["partition"], body["offset"]) == (TOPIC, 1, 42)
    assert body["original"] == raw.decode()
    assert sample(core, "eddy_dead_letter_messages_total", reason=reason) == 1
    assert sample(core, "eddy_errors_total", reason=reason) == 1
    # Redacted: the size of the record instead of its bytes.
    core = engine(family, redact_payloads=True)
    core.handle([one(r, 1, i) for i, r in enumerate(before)])
    (body,) = dlq_bodies(core.handle([one(raw, 1, 42)]))
    assert body["reason"] == reason and "original" not in body and body["original_bytes"] == len(raw)


# -- (v) caps -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_the_caps_hold_per_lane_and_count_their_evictions(family):
    spec = SPECS[family]
    dedup, join, n = 12, 5, 40
    core = engine(family, dedup_cap=dedup, join_buffer_cap=join, reward_wait_s=1e6)
    recs = [one(spec.plain(f"c{i}", float(i)), i % 2, i // 2) for i in range(n)]
    for i in range(0, n, 7):
        assert not dlq_bodies(core.handle(recs[i:i + 7]))
        for lane in core.lanes.values():
            assert len(lane.seen) <= dedup and len(lane.buffer) <= join
    if not spec.remembers_ids:  # (the family's own state is bounded by its own caps)
        assert sample(core, "eddy_dedup_entries") == 0 == sample(core, "eddy_cap_evictions_total", cap="dedup")
        return
    per_lane = n // 2
    assert {k: len(v.seen) for k, v in core.lanes.items()} == {f"{TOPIC}:0": dedup, f"{TOPIC}:1": dedup}
    assert sample(core, "eddy_cap_evictions_total", cap="dedup") == 2 * (per_lane - dedup)
    assert sample(core, "eddy_dedup_entries") == 2 * dedup
    if family not in FEEDBACK:
        assert sample(core, "eddy_cap_evictions_total", cap="join_buffer") == 0
        return
    assert {len(v.buffer) for v in core.lanes.values()} == {join}
    assert sample(core, "eddy_cap_evictions_total", cap="join_buffer") == 2 * (per_lane - join)
    assert sample(core, f"{core.adapter.feedback_metric}_total", outcome="evicted") == 2 * (per_lane - join)
    assert sample(core, "eddy_join_buffer_entries") == 2 * join
    assert sample(core, "eddy_join_buffer_capacity_entries") == join
    rng, name = random.Random(0), spec.feedback_name
    outs = core.handle([one(spec.feedback(rng, f"c{n - 2}", 50.0), 0, 99),   # still waiting: joins
                        one(spec.feedback(rng, f"c{n - 20}", 50.0), 0, 100),  # pushed out by the join cap
                        one(spec.feedback(rng, "c0", 50.0), 0, 101)])        # forgotten by the dedup cap
    assert [d["reason"] for d in dlq_bodies(outs)] == [f"late_{name}", "unknown_event"]
    assert core.outcomes["joined"] == 1


@pytest.mark.parametrize("family", FEEDBACK)
def test_every_event_that_leaves_the_join_buffer_has_an_outcome(family):
    spec = SPECS[family]
    core = engine(family, dedup_cap=5, join_buffer_cap=10, reward_wait_s=1e6)
    core.handle([one(spec.plain(f"c{i}", float(i)), 0, i) for i in range(20)])
    (lane,) = core.lanes.values()
    assert sum(core.outcomes.values()) == 20 - len(lane.buffer)


# -- (vi) two input partitions ------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_each_input_partition_has_its_own_lane(family):
    spec = SPECS[family]
    recs = []
    for i in range(10):
        recs += [one(spec.plain(f"p{i}", float(i)), 0, i), one(spec.plain(f"q{i}", float(i)), 1, i)]
    core = engine(family)
    outs = feed(core, recs, 7)
    assert [orjson.loads(o.value)["id"] for o in outs if o.kind == "decision"] == \
        [orjson.loads(r.value)["id"] for r in recs]  # log order across the partitions
    lanes = core.lanes
    assert sorted(lanes) == [f"{TOPIC}:0", f"{TOPIC}:1"]
    if spec.remembers_ids:
        assert list(lanes[f"{TOPIC}:0"].seen) == [f"p{i}" for i in range(10)]
        assert list(lanes[f"{TOPIC}:1"].seen) == [f"q{i}" for i in range(10)]
    # A repeated id is judged by its partition's lane (records keyed by id stay on one partition).
    (dup,) = dlq_bodies(core.handle([one(spec.plain("q3", 20.0), 1, 10)]))
    assert (dup["reason"], dup["partition"]) == (spec.duplicate_reason, 1)
    if family not in FEEDBACK:
        return
    name, rng = spec.feedback_name, random.Random(1)
    # Event time is per lane: partition 0 far ahead expires its own waiting events only.
    far = 10 * WAIT
    outs = core.handle([one(spec.plain("p-far", far), 0, 10)])
    assert lanes[f"{TOPIC}:0"].watermark == far and lanes[f"{TOPIC}:1"].watermark == 9.0
    outs += core.handle([one(spec.feedback(rng, "q4", 11.0), 1, 11),   # joins on its event's partition
                         one(spec.feedback(rng, "p4", 11.0), 0, 11),   # expired by its lane's event time
                         one(spec.feedback(rng, "q5", 12.0), 0, 12)])  # found in the other lane: joins
    assert [(d["reason"], d["partition"]) for d in dlq_bodies(outs)] == [(f"late_{name}", 0)]
    assert core.outcomes["joined"] == 2 and "q4" not in lanes[f"{TOPIC}:1"].buffer
    assert lanes[f"{TOPIC}:1"].seen["q5"] == lanes[f"{TOPIC}:1"].seen["q4"]  # both joined, in q's lane
    assert math.isclose(lanes[f"{TOPIC}:1"].watermark, 12.0)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_same_id_on_two_partitions_is_judged_alike_whatever_the_batches(family):
    ev = SPECS[family].plain("same", 1.0)
    recs = [one(ev, 0, 0), one(ev, 1, 0)]
    together = engine(family).handle(recs)
    apart = engine(family)
    assert by_kind(together) == by_kind(apart.handle(recs[:1]) + apart.handle(recs[1:]))
