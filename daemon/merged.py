"""``global_model = "merge"``: one model across a topic's partitions, as replicas that merge what they learn.

Each input partition has its own replica of the pipeline's learner (a whole engine, like a keyed
pipeline's key: :class:`~daemon.keyed.KeyedEngine` keyed by the partition), so that a partition's
state follows it through the changelog as a keyed pipeline's does. After each record whose offset
+ 1 is a multiple of ``merge_every`` (a log position, not a clock), the replica of partition p:

1. *ships*: what it learned since its previous shipment is added to its **total** S_p (everything
   p's own records taught it, nothing merged), written to the changelog as ``merge/total/<p>``
   (compacted: the latest only) with its shipment count n;
2. *merges*: from the latest total of every other partition q that the daemon knows (its own
   replicas', the changelog's for the partitions other daemons own), Δ = Σ_q S_q − M_p, where M_p
   is what p merged so far, is added to its model and to M_p. Ridge statistics add exactly, so the
   model is that of p's rows and of every other partition's rows up to its shipment (not an
   average of models: :mod:`learners.bandit.merge`). Δ is written to the changelog as
   ``merge/delta/<p>/<m>`` (m counts p's merge points) with the shipment counts it reached;
3. *replays*: a replica that reaches merge point m again (restarted from a checkpoint, or restored
   by a new owner from the changelog) and finds ``merge/delta/<p>/<m>`` adds that Δ, not what it
   would merge now, so a replay decides as live operation did.

The runner sends these records before any output of the batch that holds the merge point, and
has them acknowledged (under exactly-once they go in the transaction, with the outputs and the
offsets): no published decision depends on a merge the changelog lacks. Once p's changelog state
is written past merge point m, the records ``merge/delta/<p>/<j ≤ m>`` are tombstoned (a restore
starts from that state; the local checkpoint of the same moment holds the same), so the changelog
keeps one total per partition and the deltas of one checkpoint interval.

A merge point at which the latest total of some partition q holds fewer shipments than p already
merged from q (its log was lost: a memory broker restarted; or q's owner is replaying) merges
nothing (counted ``skipped``) and the next one tries again.

Learners: those whose adapter says :meth:`~daemon.family.Adapter.mergeable` (the bandits with the
``ridge`` and ``ridge-shared`` oracles: squarecb, squarecb-shared, linucb, lints, epsilon-greedy).
Shadow learners stay per replica. Decisions come from the log only: the sidecar's verbs answer
400 ``merge_mode`` (an HTTP request has no log position to merge at). Feedback must reach the
partition of its event (producers key both alike), as in a keyed pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from connectors.base import SourceRecord, pos_key
from connectors.changelog import chunk_count
from connectors.changelog import records as changelog_records

from .engine import Engine
from .family import Sample
from .keyed import KeyedEngine, dump, load
from .metrics import DaemonMetrics
from .records import BadRecord, Out

TOTAL, DELTA = "merge/total/", "merge/delta/"


class _Replica:
    """A partition's merge state (beside its engine): its learner's merge protocol, its own
    total, what it merged, its counters."""

    def __init__(self, engine: Engine, every: int):
        self.merger = engine.adapter.merger()
        self.own = self.merger.empty()  # S_p
        self.got = self.merger.empty()  # M_p
        self.shipped = 0
        self.merges = 0
        self.reached: dict[str, int] = {}  # q -> the shipments of q merged
        self.next_at = every

    def snapshot(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {f"merge/base/{k}": v for k, v in self.merger.snapshot().items()}
        arrays.update({f"merge/own/{k}": v for k, v in self.own.items()})
        arrays.update({f"merge/got/{k}": v for k, v in self.got.items()})
        return arrays, {"shipped": self.shipped, "merges": self.merges, "reached": self.reached,
                        "next_at": self.next_at}

    def restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        def part(pre: str) -> dict[str, np.ndarray]:
            return {k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)}

        self.merger.restore(part("merge/base/"))
        self.own, self.got = part("merge/own/"), part("merge/got/")
        self.shipped, self.merges = int(meta["shipped"]), int(meta["merges"])
        self.reached = {str(k): int(v) for k, v in meta["reached"].items()}
        self.next_at = int(meta["next_at"])


class MergedEngine(KeyedEngine):
    """A pipeline with ``global_model = "merge"`` (see the module docstring). ``exchange``: the
    changelog as read so far (a :class:`connectors.changelog.Reader`; the runner sets it), or None
    (the daemon's own replicas only)."""

    def __init__(self, pc: dict[str, Any], metrics: DaemonMetrics | None = None):
        super().__init__({**pc, "key_by": "", "key_cap": max(1, int(pc["key_cap"]))}, metrics)
        self.pc = pc
        self.key_by = ""
        self.every = int(pc["merge_every"])
        self.reps: dict[str, _Replica] = {}
        self.exchange: Any = None
        self.totals: dict[str, tuple[int, dict[str, np.ndarray]]] = {}  # q -> (n, S_q) of this daemon's replicas
        self._remote: dict[str, tuple[int, dict[str, np.ndarray]]] = {}  # q -> (n, S_q) read from the changelog
        self._mine: dict[str, tuple[int, bytes]] = {}  # merge/delta/<p>/<m> -> (m, record) this daemon sent
        self._sent: dict[str, tuple[int, int]] = {}  # merge/total/<p> -> the generation last sent, its chunks
        self._recorded_upto: dict[str, int] = {}  # p -> the last merge the changelog recorded (at assignment)
        self._outbox: list[tuple[bytes, bytes | None]] = []
        self.outcomes = {"merged": 0, "replayed": 0, "idle": 0, "skipped": 0}
        self.template.adapter.merger()  # (a learner that cannot merge fails here, at start)

    # -- replicas -----------------------------------------------------------------------------------
    def _cell(self, key: str, part: str) -> Engine:
        c = super()._cell(key, part)
        if key not in self.reps:
            self.reps[key] = _Replica(c, self.every)
        return c

    def handle(self, records: list[SourceRecord]) -> list[Out]:
        """Records in log order, each partition's by its replica, split at its merge points."""
        out: list[Out] = []
        chunk: list[SourceRecord] = []
        cur: str | None = None
        rep: _Replica | None = None
        every = self.every
        for rec in records:
            part = pos_key(rec.topic, rec.partition)
            if part != cur:
                if chunk and cur is not None:
                    out += self.cells[cur].handle(chunk)
                chunk = []
                cur = part
                self._cell(part, part)
                rep = self.reps[part]
            assert rep is not None
            if rec.offset + 1 <= rep.next_at - every:  # behind the last merge point: the log was reset
                rep.next_at = (rec.offset // every + 1) * every
            chunk.append(rec)
            if rec.offset + 1 >= rep.next_at:
                out += self.cells[part].handle(chunk)
                chunk = []
                self._merge_point(part, rec.offset + 1)
        if chunk and cur is not None:
            out += self.cells[cur].handle(chunk)
        self.update_gauges()
        return out

    # -- merge points -------------------------------------------------------------------------------
    def _merge_point(self, p: str, pos: int) -> None:
        rep = self.reps[p]
        m = rep.merger
        held = m.held()
        rep.own = m.restrict(m.combine(rep.own, m.delta()), held)  # (an action the replica dropped leaves it)
        rep.shipped += 1
        have = self.totals.get(p)
        if have is None or have[0] < rep.shipped:
            self.totals[p] = (rep.shipped, rep.own)
        header = f"{TOTAL}{p}"
        if self.exchange is not None and rep.shipped > max(self._generation(header),
                                                           self._sent.get(header, (0, 0))[0]):
            # (a replay's shipment that the changelog holds, or a newer one, is not sent again)
            self._send(header, rep.shipped, dump(rep.own, {"partition": p, "n": rep.shipped}), rep.shipped)
        k = rep.merges + 1
        header = f"{DELTA}{p}/{k}"
        recorded = self._recorded(p, header, k, pos)
        if recorded is not None:
            delta, meta = recorded
            reached = {str(q): int(n) for q, n in meta["reached"].items()}
            outcome = "replayed"
        else:
            reached, delta, outcome = self._live(p, rep, held)
            blob = dump(delta, {"partition": p, "merge": k, "position": pos, "reached": reached})
            if self.exchange is not None:  # (no changelog: nothing to record, no replay to honour it)
                self._mine[header] = (k, blob)
                self._send(header, 0, blob, pos)
        m.merge(delta)
        rep.got = m.combine(m.restrict(rep.got, held), delta)
        rep.reached, rep.merges = reached, k
        rep.next_at = (pos // self.every + 1) * self.every
        self.outcomes[outcome] += 1

    def _recorded(self, p: str, header: str, k: int, pos: int
                  ) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The merge recorded for merge point k of p at ``pos``: this daemon's own (sent again: an
        aborted transaction's records never reached the log), or the changelog's; None where there
        is none, or one of another history (another position: the log was reset). A merge the
        changelog recorded when the partition was assigned that is not found (the changelog read
        since then failed, and is read again) stops the loop: deciding without it would not
        replay what was published."""
        mine = self._mine.get(header)
        if mine is not None:
            arrays, meta = load(mine[1])
            if int(meta["position"]) == pos:
                self._send(header, 0, mine[1], pos)
                return arrays, meta
        if self.exchange is None:
            return None
        st = self.exchange.state(header)
        if st is None and k <= self._recorded_upto.get(p, 0):
            self.exchange.follow()
            st = self.exchange.state(header)
            if st is None:
                raise RuntimeError(f"merge {k} of {p} was recorded in the changelog but cannot be read now")
        if st is None:
            return None
        arrays, meta = load(st.state)
        return (arrays, meta) if int(meta["position"]) == pos else None

    def _live(self, p: str, rep: _Replica, held: list[str]) -> tuple[dict[str, int], dict[str, np.ndarray], str]:
        """What p merges now, into the models it holds: (shipments reached per partition, Δ, outcome)."""
        m = rep.merger
        avail = {q: v for q, v in self._all_totals().items() if q != p}
        for q, had in rep.reached.items():
            if had > 0 and (q not in avail or avail[q][0] < had):
                return rep.reached, m.empty(), "skipped"
        total = m.empty()
        for q in sorted(avail):
            total = m.combine(total, avail[q][1])
        reached = {q: avail[q][0] for q in sorted(avail)}
        delta = m.combine(m.restrict(total, held), m.restrict(rep.got, held), -1)
        return reached, delta, "merged" if len(delta["ids"]) or int(delta["dt"]) else "idle"

    def _generation(self, header: str) -> int:
        if self.exchange is None:
            return 0
        return self.exchange.generation(header) or 0

    def _all_totals(self) -> dict[str, tuple[int, dict[str, np.ndarray]]]:
        """The latest total of every partition: this daemon's replicas', or the changelog's where it
        holds more shipments."""
        out = dict(self.totals)
        if self.exchange is not None:
            for h in self.exchange.headers(TOTAL):
                q = h[len(TOTAL):]
                g = self.exchange.generation(h) or 0
                if g <= out.get(q, (0, None))[0]:
                    continue
                have = self._remote.get(q)
                if have is None or have[0] != g:
                    st = self.exchange.state(h)
                    if st is None:
                        continue
                    have = self._remote[q] = (st.generation, load(st.state)[0])
                out[q] = have
        return out

    def _send(self, header: str, generation: int, blob: bytes, position: int) -> None:
        """Queues a record of the changelog (chunked); a total's previous generation is tombstoned."""
        prev: tuple[int, int] | None = None
        if header.startswith(TOTAL):
            prev = self._sent.get(header)
            if prev is None and self.exchange is not None:
                st = self.exchange.state(header)
                prev = None if st is None else (st.generation, st.chunks)
            self._sent[header] = (generation, chunk_count(len(blob)))
        self._outbox += changelog_records(header, generation, blob, position, previous=prev[0] if prev else None,
                                          previous_chunks=prev[1] if prev else 0)

    # -- what the runner reads ------------------------------------------------------------------
    def take_outbox(self) -> list[tuple[bytes, bytes | None]]:
        """The changelog records of the merge points since the last call, in the order to send."""
        out, self._outbox = self._outbox, []
        return out

    def assigned(self, parts: list[str]) -> None:
        """The changelog was read to its end for these newly assigned partitions: the merges it
        recorded for them must be found again when their records are replayed."""
        if self.exchange is None:
            return
        for p in parts:
            pre = f"{DELTA}{p}/"
            ks = [int(h[len(pre):]) for h in self.exchange.headers(pre) if h[len(pre):].isdigit()]
            self._recorded_upto[p] = max(ks, default=0)

    def prune(self, part: str) -> list[bytes]:
        """The keys of ``part``'s recorded merges that its state, written now, has passed (to
        tombstone with it)."""
        rep = self.reps.get(part)
        if rep is None:
            return []
        pre = f"{DELTA}{part}/"
        keys: set[str] = set()
        for header, (k, blob) in list(self._mine.items()):
            if header.startswith(pre) and k <= rep.merges:
                del self._mine[header]
                n = chunk_count(len(blob))
                keys.update([header, *(f"{header}/0/{i}" for i in range(n))])
        if self.exchange is not None:
            for key in self.exchange.keys(pre):
                rest = key[len(pre):].split("/", 1)[0]
                if rest.isdigit() and int(rest) <= rep.merges:
                    keys.add(key)
        return [k.encode() for k in sorted(keys)]

    # -- partitions -------------------------------------------------------------------------------
    def snapshot_partition(self, part: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, meta = super().snapshot_partition(part)
        rep = self.reps.get(part)
        if rep is not None:
            a, m = rep.snapshot()
            arrays.update(a)
            meta["merge"] = m
        return arrays, meta

    def restore_partition(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        part = meta["partition"]
        super().restore_partition({k: v for k, v in arrays.items() if not k.startswith("merge/")}, meta)
        self.reps.pop(part, None)
        c = self.cells.get(part)
        if c is not None:
            rep = self.reps[part] = _Replica(c, self.every)
            if "merge" in meta:
                rep.restore(arrays, meta["merge"])
                self.totals[part] = (rep.shipped, rep.own)

    def release(self, part: str) -> None:
        super().release(part)
        self.reps.pop(part, None)
        self.totals.pop(part, None)
        self._sent.pop(f"{TOTAL}{part}", None)
        self._recorded_upto.pop(part, None)
        pre = f"{DELTA}{part}/"
        for header in [h for h in self._mine if h.startswith(pre)]:
            del self._mine[header]

    def restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super().restore(arrays, meta)
        self._sent = {}  # (an aborted transaction's totals never reached the log: their successors say so)
        self.totals = {p: (r.shipped, r.own) for p, r in self.reps.items()}

    # -- the sidecar: decisions come from the log only ---------------------------------------------
    def _refuse(self, objs: list[Any]) -> list[Any]:
        raise BadRecord("merge_mode", f"pipeline {self.name!r} merges one model across its input partitions "
                        "(global_model = 'merge'): it decides and learns from its Kafka topic only")

    validate = submit = feedback = _refuse

    # -- metrics and reports ------------------------------------------------------------------------
    def samples(self) -> Iterator[Sample]:
        yield from super().samples()
        for outcome, n in self.outcomes.items():
            yield Sample("eddy_model_merges", "counter", "Merge points of global_model = 'merge': merged (others' "
                         "learning added), replayed (a recorded merge added again), idle (nothing new), skipped "
                         "(a partition's total behind what was merged from it)", {"outcome": outcome}, n)

    def report(self) -> dict[str, Any]:
        out = super().report()
        out["merge"] = {"every": self.every, **self.outcomes,
                        "partitions": {p: {"shipped": r.shipped, "merges": r.merges, "reached": r.reached}
                                       for p, r in sorted(self.reps.items())}}
        return out
