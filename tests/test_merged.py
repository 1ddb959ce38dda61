"""global_model = "merge" (daemon.merged): one replica per input partition, merging what each learned
at log positions recorded in the changelog, so that the model is one ridge fit of every partition's
rows and a replay decides as live operation did."""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest

import learners
from connectors.base import SourceRecord
from connectors.changelog import Latest
from daemon import config
from daemon.merged import MergedEngine
from daemon.records import BadRecord

PARTS = ("in:0", "in:1")


def pc(**over):
    raw = {"name": "g", "input_topic": "in", "output_topic": "out", "learner": "squarecb", "n_features": 4,
           "learn_every_events": 1, "reward_wait_s": 1e6, "global_model": "merge", "merge_every": 10,
           "changelog_topic": "in-changelog", **over}
    return config.load_dict({"pipelines": [raw]}, env=False).pipelines[0]


def interleave(logs: list[list[SourceRecord]], seed: int) -> list[SourceRecord]:
    """The partitions' records in one stream, each partition in its order, merged at random."""
    rng = random.Random(seed)
    idx = [0] * len(logs)
    out = []
    while any(i < len(log) for i, log in zip(idx, logs, strict=True)):
        j = rng.choice([k for k in range(len(logs)) if idx[k] < len(logs[k])])
        take = rng.randint(1, 7)
        out += logs[j][idx[j]:idx[j] + take]
        idx[j] += take
    return out


def stream(n: int = 120, seed: int = 0) -> list[list[SourceRecord]]:
    """Two partitions' logs of n events, each followed by its reward (x plus noise), with offsets."""
    logs = []
    for part in (0, 1):
        rng = random.Random(seed * 10 + part)
        recs = []
        off = 0
        for i in range(n):
            eid = f"p{part}e{i}"
            x = {"x": round(rng.random(), 3), "y": round(rng.random(), 3)}
            recs.append(SourceRecord(orjson.dumps({"id": eid, "time": float(i), "features": x,
                                                   "actions": ["a", "b", "c"]}), "in", part, off))
            recs.append(SourceRecord(orjson.dumps({"type": "feedback", "id": eid, "time": float(i),
                                                   "reward": round(x["x"] + 0.3 * rng.random(), 3)}),
                                     "in", part, off + 1))
            off += 2
        logs.append(recs)
    return logs


def run(core, recs, batch=13):
    outs = []
    for i in range(0, len(recs), batch):
        outs += core.handle(recs[i:i + batch])
    return outs


def decisions(outs) -> dict[str, tuple]:
    res = {}
    for o in outs:
        assert o.kind == "decision", orjson.loads(o.value)
        d = orjson.loads(o.value)
        res[d["id"]] = (d["action"], round(d["prob"], 12))
    return res


def model(lr) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {a: (lr._A_inv[s], lr._theta[s]) for a, s in lr._table.slot.items()}


def test_a_replica_holds_one_ridge_fit_of_its_rows_and_the_others_shipped_rows():
    core = MergedEngine(pc())
    logs = stream()
    run(core, [logs[0][0], logs[1][0]])  # (the replicas exist: their learning is logged from here)
    learned: dict[str, list[dict]] = {p: [] for p in PARTS}
    ships: dict[str, list[int]] = {p: [] for p in PARTS}
    for p in PARTS:
        lr, rep = core.cells[p].adapter.learner, core.reps[p]

        def learn(batch, _p=p, _orig=lr.learn):
            learned[_p].append({k: (list(v) if isinstance(v, list) else np.array(v, copy=True))
                                for k, v in batch.items()})
            return _orig(batch)

        def delta(_p=p, _orig=rep.merger.delta):
            ships[_p].append(len(learned[_p]))
            return _orig()

        lr.learn, rep.merger.delta = learn, delta
    run(core, interleave([logs[0][1:], logs[1][1:]], seed=3))
    assert core.outcomes["merged"] > 3 and core.outcomes["skipped"] == 0
    for p, q in (PARTS, PARTS[::-1]):
        rep = core.reps[p]
        n = rep.reached[q]
        assert n >= 2
        ref = learners.create("squarecb", **core.cells[p].adapter.params)
        for b in learned[p] + learned[q][:ships[q][n - 1]]:
            ref.learn(b)
        got, want = model(core.cells[p].adapter.learner), model(ref)
        assert got.keys() == want.keys()
        for a in want:
            np.testing.assert_allclose(got[a][0], want[a][0], rtol=1e-7, atol=1e-10)
            np.testing.assert_allclose(got[a][1], want[a][1], rtol=1e-7, atol=1e-10)
        assert core.cells[p].adapter.learner.learned_events == ref.learned_events


def test_merges_make_the_partitions_decide_differently_than_alone():
    logs = stream(seed=1)
    merged = decisions(run(MergedEngine(pc()), interleave(logs, seed=1)))
    alone = decisions(run(MergedEngine(pc(merge_every=10**9)), interleave(logs, seed=1)))
    assert merged.keys() == alone.keys()
    assert sum(merged[k] != alone[k] for k in merged) > 10


@pytest.mark.parametrize("cut", [0.3, 0.6])
def test_a_replay_from_a_checkpoint_merges_as_recorded_and_decides_as_live(cut):
    logs = stream(seed=2)
    live_order = interleave(logs, seed=5)
    k = int(len(live_order) * cut)
    live = MergedEngine(pc())
    log = Latest()
    live.exchange = log
    first = run(live, live_order[:k])
    log.apply(live.take_outbox())
    arrays, meta = live.snapshot()
    rest = run(live, live_order[k:])
    log.apply(live.take_outbox())
    assert live.outcomes["merged"] > 3

    # the replay: the checkpoint's positions onward, each partition in its order, interleaved otherwise
    seen = {(r.partition, r.offset) for r in live_order[:k]}
    after = [[r for r in lg if (r.partition, r.offset) not in seen] for lg in logs]
    again = MergedEngine(pc())
    again.exchange = log
    again.restore(arrays, meta)
    replayed = run(again, after[0] + after[1], batch=29)
    assert again.outcomes["replayed"] > 0 and again.outcomes["merged"] == 0
    assert decisions(replayed) == decisions(rest)
    a2, m2 = again.snapshot()
    a1, m1 = live.snapshot()
    assert a1.keys() == a2.keys()
    for name in a1:
        np.testing.assert_array_equal(a1[name], a2[name], err_msg=name)

    # without the recorded merges the same replay merges what it finds, and decides otherwise
    blind = MergedEngine(pc())
    blind.restore(arrays, meta)
    assert decisions(run(blind, after[0] + after[1], batch=29)) != decisions(rest)
    assert first


def test_recorded_merges_are_pruned_once_a_state_passes_them():
    logs = stream(seed=4)
    core = MergedEngine(pc())
    log = Latest()
    core.exchange = log
    run(core, interleave(logs, seed=4))
    log.apply(core.take_outbox())
    n = core.reps["in:0"].merges
    assert len(log.headers("merge/delta/in:0/")) == n and len(log.headers("merge/total/")) == 2
    dead = core.prune("in:0")
    log.apply((key, None) for key in dead)
    assert log.keys("merge/delta/in:0/") == [] and len(log.headers("merge/delta/in:1/")) > 0
    assert core.prune("in:0") == []


def test_a_total_behind_what_was_merged_from_it_is_skipped_not_subtracted():
    logs = stream(seed=6)
    core = MergedEngine(pc())
    run(core, interleave(logs, seed=6))
    rep = core.reps["in:0"]
    before = model(core.cells["in:0"].adapter.learner)
    core.totals["in:1"] = (rep.reached["in:1"] - 1, core.totals["in:1"][1])
    core._merge_point("in:0", rep.next_at)
    assert core.outcomes["skipped"] == 1
    after = model(core.cells["in:0"].adapter.learner)
    # (its own shipment moved nothing: no learning since the last merge point)
    for a in before:
        np.testing.assert_allclose(after[a][1], before[a][1])


def test_the_sidecar_and_learners_that_cannot_merge_are_refused():
    core = MergedEngine(pc())
    with pytest.raises(BadRecord, match="merge_mode"):
        core.submit([{"id": "x", "features": {}, "actions": ["a"]}])
    with pytest.raises(config.ConfigError, match="cannot merge replicas"):
        pc(learner="squarecb-neural")
    with pytest.raises(config.ConfigError, match="needs changelog_topic"):
        pc(changelog_topic="")
    with pytest.raises(config.ConfigError, match="choose one"):
        pc(key_by="merchant")


def rotating(n: int, part: int, seed: int) -> list[SourceRecord]:
    """Events offering two of ten actions each (a changing action set), each with its reward."""
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        eid = f"p{part}e{i}"
        acts = [f"a{(i // 5 + j) % 10}" for j in (0, 1)]
        recs.append(SourceRecord(orjson.dumps({"id": eid, "time": float(i), "features": {"x": rng.random()},
                                               "actions": acts}), "in", part, 2 * i))
        recs.append(SourceRecord(orjson.dumps({"type": "feedback", "id": eid, "time": float(i),
                                               "reward": rng.random()}), "in", part, 2 * i + 1))
    return recs


def test_merges_go_into_the_actions_a_replica_holds_and_never_past_its_action_cap():
    core = MergedEngine(pc(params={"max_actions": 4}))
    run(core, interleave([rotating(200, 0, 1), rotating(200, 1, 2)], seed=2))
    assert core.outcomes["merged"] > 5
    for p in PARTS:
        lr = core.cells[p].adapter.learner
        assert len(lr._table.slot) <= 4
        assert set(np.asarray(core.reps[p].got["ids"]).tolist()) <= set(lr._table.slot)


def test_a_recorded_merge_that_cannot_be_read_stops_the_replay_rather_than_merge_otherwise():
    logs = stream(seed=7)
    order = interleave(logs, seed=7)
    live = MergedEngine(pc())
    log = Latest()
    live.exchange = log
    arrays, meta = live.snapshot()
    run(live, order)
    log.apply(live.take_outbox())
    again = MergedEngine(pc())
    again.exchange = log
    again.restore(arrays, meta)
    again.assigned(list(PARTS))
    assert again._recorded_upto["in:0"] == live.reps["in:0"].merges
    log.apply([(b"merge/delta/in:0/3", None)])
    with pytest.raises(RuntimeError, match="merge 3 of in:0 was recorded"):
        run(again, logs[0] + logs[1])


def test_a_log_reset_behind_the_merge_points_starts_them_again_and_ignores_the_old_records():
    logs = stream(seed=8)
    core = MergedEngine(pc())
    log = Latest()
    core.exchange = log
    run(core, logs[0])
    log.apply(core.take_outbox())
    merges = core.reps["in:0"].merges
    assert core.reps["in:0"].next_at > 200
    # the partition's log is lost and written anew from offset 0 (other records at the same offsets)
    fresh = stream(seed=9)[0]
    run(core, fresh[:60])
    assert core.reps["in:0"].merges == merges + 6 and core.outcomes["replayed"] == 0


def test_without_a_changelog_nothing_is_recorded_or_kept():
    core = MergedEngine(pc())
    run(core, interleave(stream(seed=10), seed=10))
    assert core.outcomes["merged"] > 3
    assert core.take_outbox() == [] and core._mine == {}
