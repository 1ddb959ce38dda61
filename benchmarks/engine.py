"""Records/s through a pipeline core, in this process: no broker, no client, no threads.

One pipeline core per workload, built the daemon's way (``daemon.config.load_dict`` →
``daemon.families.make_core(pc, DaemonMetrics())``, then ``core.learner.warm_up()``), is fed
seeded records as ``connectors.base.SourceRecord`` objects with JSON values (made and encoded
before the clock starts) through ``core.handle`` in batches of 500; the time is the sum over the
batches, outputs (decisions, dead letters) included, publishing not. Garbage collection is set as
the daemon sets it (collect, freeze, thresholds 50,000/20/100) once the records are built.

* ``bandit-squarecb``: SquareCB, 4 configured actions, 8 name→value features per event; 30% of the
  events get a feedback record (reward 0/1) about 600 events later; event time advances 0.05 s per
  event, so the rest are learned with the default reward after ``reward_wait_s`` = 600 s (12,000
  events; the daemon's default is 1 h).
* ``bandit-squarecb-hashed-wide``: the hashed SquareCB (2^18 weights) over wide categorical
  contexts (merchant, card BIN, country, currency, amount bucket, hour, amount, bias) and four
  declared crosses: 12 non-zeros per event, fed as sparse rows; feedback as above. Its stage split
  shows the cost of hashing and crossing (``features``) apart from decoding.
* ``paging-lru``, ``paging-learned-discard``: capacity 1,000 pages, string keys drawn from a seeded
  Zipf-like law (rank^-0.9 over 50,000 keys); the core's default baseline shadows run alongside.
* ``groupwise-mixture``: 4 configured groups (each event in 0–3 of them, besides always-on),
  8 numeric features and one categorical; 80% of the events get a label about 400 events later,
  the rest expire after ``reward_wait_s`` = 600 s of event time.

Each workload: one untimed pass over the first records (every kernel on the path compiled), then
``--repeats`` timed passes over all records, each on a fresh core; the row is the median pass
(``records_per_s``; every pass in ``records_per_s_runs``). Records count events, feedback and labels.

Usage: python benchmarks/engine.py [--records 100000] [--repeats 3] [--workloads ...] [--quick]
       python benchmarks/engine.py --before b86896e [--rounds 3]   (interleaved A/B, see _ab.py)
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import sys
import time

_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.environ.get("EDDY_BENCH_TREE") or os.path.dirname(_here), _here]

import _ab  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
from _common import stage_seconds, versions, write_results  # noqa: E402

BATCH = 500
SYSTEM = "eddy.engine"
ACTIONS = ["route-a", "route-b", "route-c", "route-d"]
GROUPS = ["g0", "g1", "g2", "g3"]


def _with_feedback(n: int, rng: np.random.Generator, event) -> list[bytes]:
    """``n`` records: the events ``event(i)`` makes (``(event object, wants feedback)``), each wanted
    feedback (reward 0/1, drawn from ``rng``) 600 events after its event."""
    out: list[bytes] = []
    waiting: list[tuple[int, str]] = []  # (due at event count, id) of feedback to send
    i = 0
    while len(out) < n:
        while waiting and waiting[0][0] <= i and len(out) < n:
            _, eid = waiting.pop(0)
            out.append(orjson.dumps({"type": "feedback", "id": eid, "time": i * 0.05,
                                     "reward": float(rng.random() < 0.4)}))
        if len(out) >= n:
            break
        obj, wanted = event(i)
        out.append(orjson.dumps(obj))
        if wanted:
            waiting.append((i + 600, obj["id"]))
        i += 1
    return out


def bandit_stream(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)

    def event(i: int) -> tuple[dict, bool]:
        f = rng.random(8)
        return {"type": "event", "id": f"e{i}", "time": i * 0.05, "features": {
            "amount": round(float(f[0]) * 500, 2), "age_days": round(float(f[1]) * 900, 1),
            "hour": float(int(f[2] * 24)), "risk": round(float(f[3]), 4), "retries": float(int(f[4] * 3)),
            "latency_ms": round(float(f[5]) * 80, 2), "load": round(float(f[6]), 4), "bias": 1.0}}, bool(f[7] < 0.3)

    return _with_feedback(n, rng, event)


def wide_stream(n: int, seed: int) -> list[bytes]:
    """Payment-routing events with wide categorical contexts (merchant, card BIN, country, currency,
    amount bucket, hour), for the hashed learner and its declared crosses; feedback as in
    :func:`bandit_stream`."""
    rng = np.random.default_rng(seed)
    countries = ["NL", "DE", "FR", "GB", "US", "ES", "IT", "BE", "SE", "PL"]

    def event(i: int) -> tuple[dict, bool]:
        m, b, c = int(rng.zipf(1.3)) % 20_000, int(rng.integers(400_000, 420_000)), countries[int(rng.integers(10))]
        amount = float(rng.lognormal(3.0, 1.2))
        obj = {"type": "event", "id": f"w{i}", "time": i * 0.05, "features": {
            f"merchant={m}": 1.0, f"bin={b}": 1.0, f"country={c}": 1.0, f"currency={c}-cur": 1.0,
            f"amount_bucket={min(int(np.log2(amount + 1)), 12)}": 1.0, f"hour={int(rng.integers(24))}": 1.0,
            "amount": round(amount / 100.0, 4), "bias": 1.0}}
        return obj, bool(rng.random() < 0.3)

    return _with_feedback(n, rng, event)


@functools.cache  # both paging workloads replay the same records
def paging_stream(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    universe = 50_000
    p = 1.0 / np.arange(1, universe + 1) ** 0.9
    names = rng.permutation(universe)  # rank -> key number
    ranks = rng.choice(universe, size=n, p=p / p.sum())
    return [orjson.dumps({"key": f"obj/{int(names[r])}"}) for r in ranks]


def groupwise_stream(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=8)
    out: list[bytes] = []
    waiting: list[tuple[int, str, float]] = []
    i = 0
    while len(out) < n:
        while waiting and waiting[0][0] <= i and len(out) < n:
            _, eid, y = waiting.pop(0)
            out.append(orjson.dumps({"type": "label", "id": eid, "label": y, "time": i * 0.05}))
        if len(out) >= n:
            break
        x = rng.random(8)
        groups = [g for g, u in zip(GROUPS, rng.random(len(GROUPS)), strict=True) if u < 0.35]
        eid = f"u{i}"
        feats: dict[str, float | str] = {f"x{j}": round(float(x[j]), 4) for j in range(8)}
        feats["region"] = ("north", "south", "east")[int(x[0] * 3)]
        out.append(orjson.dumps({"id": eid, "time": i * 0.05, "features": feats, "groups": groups}))
        if rng.random() < 0.8:
            waiting.append((i + 400, eid, round(float(x @ w + rng.normal(scale=0.1)), 4)))
        i += 1
    return out


# workload -> (learner, params, record stream, further pipeline settings). A reward or label wait of
# 600 s of event time (12,000 events) puts the defaulted rewards and expired labels inside the
# untimed first pass, so that no path is first taken (or compiled) in a timed one.
WORKLOADS = {
    "bandit-squarecb": ("squarecb", {"actions": ACTIONS}, bandit_stream, {"reward_wait_s": 600.0}),
    "bandit-squarecb-hashed-wide": ("squarecb-hashed", {"actions": ACTIONS, "n_features": 2**18}, wide_stream,
                                    {"reward_wait_s": 600.0, "crosses": [["merchant", "country"], ["bin", "currency"],
                                                                         ["country", "hour"],
                                                                         ["amount_bucket", "country"]]}),
    "paging-lru": ("paging-lru", {"capacity": 1000}, paging_stream, {}),
    "paging-learned-discard": ("paging-learned-discard", {"capacity": 1000}, paging_stream, {}),
    "groupwise-mixture": ("groupwise-mixture", {"groups": GROUPS}, groupwise_stream, {"reward_wait_s": 600.0}),
}


def measure_workload(name: str, n: int, repeats: int, seed: int) -> dict:
    from connectors.base import SourceRecord
    from daemon import config
    from daemon.families import make_core
    from daemon.metrics import DaemonMetrics

    learner, params, stream, settings = WORKLOADS[name]
    values = stream(n, seed)
    recs = [SourceRecord(value=v, topic="in", partition=0, offset=i) for i, v in enumerate(values)]
    batches = [recs[i:i + BATCH] for i in range(0, len(recs), BATCH)]

    def fresh():
        pc = config.load_dict({"pipelines": [{"name": "bench", "learner": learner, "input_topic": "in",
                                              "output_topic": "out", "params": params, **settings}]},
                                env=False).pipelines[0]
        metrics = DaemonMetrics()
        core = make_core(pc, metrics)
        core.learner.warm_up()
        return core, metrics

    core, _ = fresh()
    for b in batches[: max(1, min(len(batches), 20_000 // BATCH))]:  # compiles every kernel on the path
        core.handle(b)
    del core
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    runs, stages = [], []
    dlq = outs_n = 0
    for _ in range(repeats):
        core, metrics = fresh()
        outs = []
        t0 = time.perf_counter()
        for b in batches:
            outs.append(core.handle(b))
        dt = time.perf_counter() - t0
        runs.append(round(len(recs) / dt, 1))
        outs_n = sum(len(o) for o in outs)
        dlq = sum(1 for o in outs for x in o if x.kind == "dlq")
        stages.append(stage_seconds(metrics.registry, "bench"))
        del core, outs
        gc.unfreeze()
        gc.collect()
        gc.freeze()
    if dlq:
        raise RuntimeError(f"{name}: {dlq} of {len(recs)} records were dead-lettered")
    order = sorted(range(repeats), key=lambda i: runs[i])
    mid = order[(repeats - 1) // 2]
    row = {"system": SYSTEM, "workload": name, "learner": learner, "records": len(recs), "batch": BATCH,
           "outputs": outs_n, "records_per_s": runs[mid], "records_per_s_runs": runs,
           "us_per_record": round(1e6 / runs[mid], 3)}
    if stages[mid]:
        row["stage_us_per_record"] = {k: round(v * 1e6 / len(recs), 3) for k, v in stages[mid].items()}
    return row


def measure(args: argparse.Namespace) -> list[dict]:
    rows = []
    for name in args.workloads:
        rows.append(measure_workload(name, args.records, args.repeats, args.seed))
        print(orjson.dumps(rows[-1]).decode(), flush=True)
    return rows


COLS = [("system", lambda r: r["system"]), ("workload", lambda r: r["workload"]),
        ("records/s (median)", lambda r: _ab.fmt(r["records_per_s"])),
        ("µs per record", lambda r: _ab.fmt(r.get("us_per_record"), 2)),
        ("runs", lambda r: " / ".join(_ab.fmt(x["records_per_s"]) for x in r["runs"]) if "runs" in r
         else " / ".join(_ab.fmt(x) for x in r["records_per_s_runs"]))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--records", type=int, default=0, help="records per workload (default 100000; --quick 20000)")
    ap.add_argument("--repeats", type=int, default=0, help="timed passes per workload (default 3; --quick 1)")
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smoke sizes")
    _ab.add_args(ap)
    args = ap.parse_args()
    args.records = args.records or (20_000 if args.quick else 100_000)
    args.repeats = args.repeats or (1 if args.quick else 3)
    if args.measure_json:
        _ab.run_child(args, lambda: measure(args))
        return
    vers = versions("eddyd", "numba", "numpy", "orjson")
    if args.before:
        rows, info = _ab.interleave(__file__, sys.argv[1:], args, judge={"records_per_s": +1})
        path = write_results("engine", rows, vers, {"ab": info})
        print(_ab.table(rows, COLS))
        print()
        print(_ab.summary(info))
    else:
        rows = measure(args)
        path = write_results("engine", rows, vers)
        print(_ab.table(rows, COLS))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
