"""The pipeline loop and the daemon process around it.

Per micro-batch: poll (bounded by count and time) → decode and decide/learn in log order → publish.
Publishing is pipelined: a batch's acknowledgements arrive while the next batch is processed, and
the runner waits for them before it publishes that next batch. Every ``every_events`` records or
``every_seconds``, and at shutdown:
checkpoint (state + positions, atomically) → commit the same positions to Kafka. Offsets are
therefore committed only once the decisions are acknowledged and the state that produced them is
recoverable. After a restart the daemon restores the checkpoint, seeks to its positions and
processes the records after it again; their decisions are published again, marked ``"replay":
true`` (known from a small progress file, written for every batch before it is sent). A keyed
pipeline with a changelog also sends that mark to the changelog, acknowledged before the batch's
outputs are sent, so a daemon on another machine that takes the partition over after a crash marks
its replays too (a mark is an upper bound: a crash between the mark and the send leaves at most one
batch marked ``replay`` that was never published).

Exactly-once (a transactional sink, ``committed_offsets`` given): the outputs between two
checkpoints form one transaction; the checkpoint is saved, then the transaction commits with the
owned partitions' positions (the consumer commits nothing). A restore takes the checkpoint whose
positions are the group's committed offsets, skipping a newer one whose transaction did not
commit; there are no replay marks (an aborted transaction's outputs are never read).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from connectors.base import DeliveryError, OffsetReset, Sink, Source, pos_key

from .checkpoint import CheckpointError, CheckpointStore
from .families import Core

log = logging.getLogger("eddy")
DRAIN_S = 30.0  # at stop, how long the loop waits for work outside it (a family's solves)
STALL_S = 30.0  # a loop whose step has not ended for this long is not ready (eddy_ready 0, /readyz 503)


class PipelineRunner:
    def __init__(self, core: Core, source: Source, sink: Sink, ckpt: dict[str, Any],
                 topics: dict[str, str], lock: threading.RLock | None = None, stop_at_end: bool = False,
                 changelog: dict[str, Any] | None = None,
                 committed_offsets: Callable[[], dict[str, int]] | None = None):
        self.core = core
        # Exactly-once (a transactional sink): the group's committed offsets, read at each restore;
        # the checkpoint restored is the one of the last committed transaction.
        self.committed_offsets = committed_offsets
        self.exactly_once = committed_offsets is not None
        self._revoking: set[str] = set()  # exactly-once: partitions revoked, their offsets not committed yet
        self._stateless: set[str] = set()  # exactly-once: positions resumed without the state that reached them
        self._dropping: set[str] = set()  # exactly-once: handed over inside the poll, its records go
        self._loop_ident: int | None = None  # the thread of the pipeline's loop (its last step)
        # exactly-once: the learner a resume without its checkpoint starts from
        self._fresh = core.snapshot() if self.exactly_once else None
        # A keyed pipeline's changelog ({"topic", "settings": Kafka settings to read it}): each owned
        # partition's keys are written at every checkpoint and restored when a partition is assigned.
        self.changelog = changelog
        self._written: dict[str, tuple[int, int, int]] = {}  # partition -> changelog generation, chunks, position
        self._marks: dict[str, int] = {}  # partition -> the published mark last sent to the changelog
        self._reader: Any = None  # the changelog, read incrementally (connectors.changelog.Reader)
        self._reader_lock = threading.Lock()
        self._standby_thread: threading.Thread | None = None
        # global_model = "merge": the replicas' merge records go to the changelog before the outputs
        # after them, and the others' are read from it (followed all the time)
        self._merging = changelog is not None and hasattr(core, "take_outbox")
        if self._merging:
            core.exchange = self._changelog_reader()  # type: ignore[union-attr]
        self._restore_failed: str | None = None
        self.source = source
        # {"decision": ..., "dlq": ...}; "input": an adapter's records for the pipeline's own input
        self.topics = {"input": core.pc["input_topic"], **topics}
        self.sink = sink
        self.lock = lock or core.lock
        self.store = CheckpointStore(os.path.join(ckpt["dir"], core.name), ckpt["keep"])
        self.every_events = ckpt["every_events"]
        self.every_seconds = ckpt["every_seconds"]
        self.stop_at_end = stop_at_end
        self.stop_event = threading.Event()
        self.positions: dict[str, int] = {}
        self.published: dict[str, int] = {}
        self._since = 0
        self._last_ckpt = time.monotonic()
        self._progress_path = os.path.join(self.store.dir, "published.json")
        self.error: BaseException | None = None
        self.batches = 0
        self.committed: dict[str, int] = {}  # the positions last committed to Kafka
        self._unacked = False  # the last batch's decisions were sent and await acknowledgement
        m, name = core.metrics, core.name
        self._stage = {s: m.stage_seconds.labels(pipeline=name, stage=s)
                       for s in ("poll", "process", "publish", "flush", "checkpoint")}
        self._batch_latency = m.batch_latency.labels(pipeline=name)
        self._checkpoint_age = m.checkpoint_age.labels(pipeline=name)
        self._input_topic = core.pc["input_topic"]
        self._observed = -1e9  # perf_counter of the last membership observation
        self._standing: dict[str, Any] = {"ready": False, "joined": False, "assigned": []}
        self._topic_lag_at = -1e9  # monotonic time of the last whole-topic lag query
        self._stepped = time.monotonic()  # the end of the loop's last step (a stall: see readiness)
        m.ready.labels(pipeline=name).set_function(lambda: float(self.readiness()["ready"]))

    # -- start-up ---------------------------------------------------------------------------------
    @property
    def sink(self) -> Sink:
        return self._sink

    @sink.setter
    def sink(self, sink: Sink) -> None:  # a rebuilt sink too marks what it sends again
        sink.resent = self._resent
        self._sink = sink

    def _resent(self, topic: str, key: bytes | None, value: bytes) -> bytes:
        """A decision sent again that the broker may already hold goes out marked ``replay``."""
        if topic != self.topics.get("decision"):
            return value
        try:
            o = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
        if not isinstance(o, dict) or o.get("replay") is not False:
            return value
        o["replay"] = True
        self.core.metrics.resent.labels(pipeline=self.core.name).inc()
        return orjson.dumps(o)

    def restore(self) -> bool:
        """Restores the newest intact checkpoint (state and positions); damaged ones are skipped
        with a warning naming each and counted; :class:`CheckpointError` when none is intact."""
        self._unacked = False  # a resumed runner publishes again from the checkpoint
        self._restore_failed = None  # (the rebuilt clients' assignment restores its partitions anew)
        self._revoking = set()  # (an aborted transaction: the restored positions are the committed ones)
        self._dropping = set()
        if self.exactly_once:
            self._written = {}  # (what an aborted transaction wrote to the changelog never counted)
        self._since = 0
        self._standing = {"ready": False, "joined": False, "assigned": []}  # until the new clients join
        self._observed = -1e9
        restored = None
        topic = self.topics["input"]
        committed = self.committed_offsets() if self.committed_offsets is not None else None
        on_topic = _on_topic(committed, topic) if committed is not None else None
        for path, arrays, meta in self.store.intact():
            mine = _on_topic(meta.get("positions", {}), topic)
            if on_topic is not None and any(on_topic.get(k) != v for k, v in mine.items()):
                # past the last committed transaction (it was aborted or never committed): its
                # outputs were never visible, so the records after the committed offsets are
                # decided again from the state of the transaction that committed them. (Its
                # partitions' offsets must match; other daemons of the group commit the others.)
                log.info("%s: checkpoint %s (positions %s) is not the last committed transaction's (offsets %s): "
                         "skipped", self.core.name, meta.get("seq"), meta.get("positions"), committed)
                continue
            try:
                self.core.restore(arrays, meta)
            except (ValueError, KeyError, TypeError, IndexError) as e:  # intact file, unusable state
                self.store.reject(path, f"does not restore into pipeline {self.core.name!r}: {e}")
                continue
            restored = meta
            break
        if self.store.damaged:
            self.core.metrics.checkpoint_damaged.labels(pipeline=self.core.name).inc(len(self.store.damaged))
        if restored is None and self.store.damaged:
            raise CheckpointError(self.store.none_intact())
        if restored is not None:
            self.positions = dict(restored.get("positions", {}))
            self._stateless = set()
            self.source.seek(self.positions)
            log.info("%s: restored checkpoint %s (positions %s)", self.core.name, restored.get("seq"), self.positions)
        elif committed:
            log.warning("%s: no checkpoint holds the state of the last committed transaction (offsets %s): "
                        "resuming there with a fresh learner", self.core.name, committed)
            if self._fresh is not None:
                self.core.restore(*self._fresh)  # (not what an aborted run had learned)
            self.positions = dict(committed)
            self._stateless = set(committed)  # (a changelog state at these positions restores on assignment)
            self.source.seek(self.positions)
        self.published = {} if self.exactly_once else _read_progress(self._progress_path)
        return restored is not None

    def readiness(self) -> dict[str, Any]:
        """Consuming-ready: the group joined and every assigned partition restored, as the loop
        last observed it (at most every 0.5 s; only the loop's thread touches the Kafka client),
        and the loop not stalled: a step that has not ended for :data:`STALL_S` (a lost broker:
        a send blocks for the producer's metadata, a flush for its acknowledgements) is not ready."""
        out = dict(self._standing)
        stalled = time.monotonic() - self._stepped
        if stalled > STALL_S and not self.stop_event.is_set():
            out.update(ready=False, stalled_s=round(stalled, 1))
        return out

    def observe_membership(self) -> None:
        """Assigned-partition gauges, eddy_ready and :meth:`readiness` from the group standing."""
        m = self.source.membership()
        ready = m is None or (m.joined and m.restored)
        self._standing = {"ready": ready} if m is None else {
            "ready": ready, "joined": m.joined, "assigned": sorted(m.assigned)}
        metrics, name = self.core.metrics, self.core.name
        if m is not None:
            n = sum(1 for k in m.assigned if k.rsplit(":", 1)[0] == self._input_topic)
            metrics.assigned_partitions.labels(pipeline=name, topic=self._input_topic).set(n)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        if self.changelog is not None and (self.core.pc.get("changelog_standby") or self._merging) \
                and self._standby_thread is None:
            self._standby_thread = threading.Thread(target=self._standby, name=f"{self.core.name}-standby",
                                                    daemon=True)
            self._standby_thread.start()
        try:
            while not self.stop_event.is_set():
                self.step()
                if self.stop_at_end and self.source.at_end():
                    break
            left = self.core.drain(DRAIN_S)  # work outside the loop (a family's solves) ends first
            if left:
                log.warning("%s: %d jobs still running after %.0f s: their outputs are lost", self.core.name,
                            left, DRAIN_S)
            flushed = self.checkpoint()
            self.core.close()
            if self._reader is not None:
                self._reader.close()
            log.info("%s: stopped: %d outputs flushed and acknowledged, state checkpointed at positions %s, "
                     "offsets committed %s", self.core.name, flushed, self.positions,
                     self.committed if self.committed == self.positions else f"{self.committed} (the commit failed; "
                     "the checkpoint holds the positions)")
        except BaseException as e:  # recorded for the daemon, which exits non-zero
            self.error = e
            log.exception("%s: pipeline stopped by an error", self.core.name)
            raise

    def step(self) -> int:
        pc = self.core.pc
        t0 = time.perf_counter()
        self._loop_ident = threading.get_ident()
        recs = self.source.poll(pc["batch_max_events"], pc["batch_max_ms"] / 1000.0)
        if self._restore_failed is not None:  # the rebuilt clients are assigned it again, and retry
            raise RuntimeError(self._restore_failed)
        lost = self.source.take_lost()
        if lost and self.exactly_once:
            # The open transaction holds outputs of partitions another member may now consume:
            # committing it would publish them twice. It is aborted (the daemon rebuilds its
            # clients and resumes from the checkpoint of the last committed transaction).
            raise DeliveryError(f"partitions {sorted(lost)} lost from the group: the open transaction is aborted")
        if self._dropping:
            recs = [r for r in recs if pos_key(r.topic, r.partition) not in self._dropping]
            self._dropping = set()
        if self._revoking:
            recs = self._hand_over(recs)
        if t0 - self._observed >= 0.5:
            self._observed = t0
            self.observe_membership()
        for reset in self.source.take_resets():
            self._reset(reset)
        if recs and self.published and not self.exactly_once:
            self._mark_replays(recs)
        t1 = time.perf_counter()
        with self.lock:
            outs = self.core.handle(recs) if recs else []
            outs += self.core.pending_out
            self.core.pending_out = []
        t2 = time.perf_counter()
        self._batch_latency.observe(t2 - t1)
        marked = False
        box = self.core.take_outbox() if self._merging else []  # type: ignore[union-attr]
        if box:  # (merge points: acknowledged with the flush below, before an output after them is sent)
            self.sink.send_all([(self.changelog["topic"], k, v) for k, v in box])  # type: ignore[index,misc]
            marked = not self.exactly_once
        if recs and self.changelog is not None and not self.exactly_once:
            # Where another machine may take a partition over after a crash, the mark that these
            # records' outputs may be published goes to the changelog, acknowledged with the
            # flush below, before an output of them is sent. (Under exactly-once an output is
            # read only once its transaction, with the state and offsets, has committed.)
            marked = self._send_marks(self.source.positions()) or marked
        if self._unacked or marked:
            # The previous batch's decisions were acknowledged while this one was processed
            # (pipelined publishing): the next batch may go out.
            self._flush()
            self._unacked = False
        self._stage["flush"].inc(time.perf_counter() - t2)
        if recs:
            self.positions.update(self.source.positions())
            # Marked published before a single decision of the batch is sent: a kill -9 at any
            # moment after that finds these records marked, and their decisions published again
            # after the restart carry "replay": true (some may not have reached the broker: a
            # replay mark means "may have been published before"). Under exactly-once there are no
            # replays to mark: an aborted transaction's outputs are never read.
            if not self.exactly_once:
                self._write_progress(self.positions)
        if outs:
            topics = self.topics
            self.sink.send_all([(topics[o.kind], o.key, o.value) for o in outs])
        if recs:
            self._since += len(recs)
            self.batches += 1
            self._unacked = True
        t3 = time.perf_counter()
        if self._since >= self.every_events or time.monotonic() - self._last_ckpt >= self.every_seconds:
            self.checkpoint()
        t4 = time.perf_counter()
        st = self._stage
        st["poll"].inc(t1 - t0)
        st["process"].inc(t2 - t1)
        st["publish"].inc(t3 - t2)
        if t4 > t3:
            st["checkpoint"].inc(t4 - t3)
        self._stepped = time.monotonic()
        self._checkpoint_age.set(self._stepped - self._last_ckpt)
        if self.changelog is not None:
            for k, (_, _, at) in self._written.items():
                if k in self.positions:
                    self.core.metrics.changelog_lag.labels(pipeline=self.core.name, partition=k).set(
                        self.positions[k] - at)
        return len(recs)

    def _mark_replays(self, recs: list) -> None:
        """Marks the records below their partition's published position (decided before a crash or
        a restart: their outputs go out again with ``replay: true``); a partition whose lowest
        offset in the batch is past its mark has none. A source delivers no record below its
        position, so once every mark lies at or below the position read, nothing is looked at."""
        pos = self.positions
        if all(mark <= pos.get(k, -1) for k, mark in self.published.items()):
            return
        low: dict[tuple[str, int], int] = {}
        for r in recs:
            tp = (r.topic, r.partition)
            if r.offset < low.get(tp, r.offset + 1):
                low[tp] = r.offset
        for (topic, part), off in low.items():
            mark = self.published.get(f"{topic}:{part}", -1)
            if off < mark:
                for r in recs:
                    if r.partition == part and r.topic == topic and r.offset < mark:
                        r.replay = True

    def _reset(self, reset: OffsetReset) -> None:
        """A partition's log was lost behind its position: the records now read from it are new.

        The learned state is kept; the partition's position and its published mark are dropped,
        so the records read after the reset are not taken for replays of what the lost log held.
        """
        topic, part = reset.key.rsplit(":", 1)
        self.core.metrics.offset_resets.labels(pipeline=self.core.name, topic=topic, partition=part).inc()
        self.positions.pop(reset.key, None)
        self._marks.pop(reset.key, None)
        if reset.key in self.published:
            del self.published[reset.key]
            self._write_progress({})

    def _flush(self) -> None:
        while True:
            try:
                self.sink.flush(timeout_s=30.0)
                return
            except DeliveryError as e:
                if self.stop_event.is_set() or self.exactly_once:  # (the transaction is aborted)
                    raise
                log.warning("%s: %s; retrying", self.core.name, e)

    def _hand_over(self, recs: list) -> list:
        """Exactly-once, partitions revoked: the open transaction commits with their offsets (the
        next owner starts where this one's outputs end), and the records just read of them go."""
        keys = set(self._revoking)
        self.checkpoint(also=tuple(keys))  # (with the changelog: their state in the same transaction)
        self._revoking -= keys
        for k in keys:
            self.positions.pop(k, None)
            if self.changelog is not None:
                with self.lock:
                    self.core.release(k)  # type: ignore[union-attr]
                self._written.pop(k, None)
        return [r for r in recs if pos_key(r.topic, r.partition) not in keys]

    def _commit_transaction(self, also: tuple[str, ...] = ()) -> None:
        """Commits the open transaction with the positions of the owned partitions and ``also``."""
        keys = set(self._owned()) | {k for k in also if k in self.positions}
        positions = {k: self.positions[k] for k in sorted(keys)}
        if not self.sink.in_transaction and all(self.committed.get(k) == v for k, v in positions.items()):  # type: ignore[attr-defined]
            return  # nothing sent, nothing consumed since the last commit: no empty transaction
        self.sink.commit(positions, self.source.group_metadata())  # type: ignore[attr-defined]
        self.committed = {**self.committed, **positions}

    # -- the changelog (keyed pipelines) ---------------------------------------------------------
    def _owned(self) -> list[str]:
        m = self.source.membership()
        return sorted(self.positions) if m is None else sorted(k for k in m.assigned if k in self.positions)

    def _write_changelog(self, also: tuple[str, ...] = ()) -> None:
        """Each owned partition's keys (and those of ``also``, partitions being revoked), where they
        moved since their last write, to the changelog; acknowledged before the offsets are
        committed (a new owner finds the state of the offset). Under exactly-once they go in the
        open transaction, which commits them with the decisions and the offsets."""
        from connectors import changelog

        from .keyed import dump

        topic, msgs, size = self.changelog["topic"], [], 0  # type: ignore[index]
        for k in sorted(set(self._owned()) | {k for k in also if k in self.positions}):
            pos, prev = self.positions[k], self._written.get(k)
            if prev is not None and prev[2] == pos:
                continue
            with self.lock:
                blob = dump(*self.core.snapshot_partition(k))  # type: ignore[union-attr]
            gen = time.time_ns()
            recs = changelog.records(k, gen, blob, pos, previous=prev[0] if prev else None,
                                     previous_chunks=prev[1] if prev else 0)
            msgs += [(topic, key, value) for key, value in recs]
            if self._merging:  # the merges this state has passed are not needed again
                msgs += [(topic, key, None) for key in self.core.prune(k)]  # type: ignore[union-attr]
            self._written[k] = (gen, changelog.chunk_count(len(blob)), pos)
            size += len(blob)
        if msgs:
            self.sink.send_all(msgs)  # type: ignore[arg-type]  # (tombstones: value None)
            self._flush()
            self.core.metrics.changelog_bytes.labels(pipeline=self.core.name).inc(size)

    def _send_marks(self, positions: dict[str, int]) -> bool:
        """Sends the published marks of the partitions whose positions moved past their mark."""
        from connectors.changelog import mark_records

        moved = {k: v for k, v in positions.items() if v > self._marks.get(k, -1)}
        if not moved:
            return False
        self.sink.send_all([(self.changelog["topic"], k, v)  # type: ignore[index]
                            for k, v in mark_records(moved)])
        self._marks.update(moved)
        return True

    def on_assigned(self, keys: list[str]) -> None:
        """Partitions assigned (called by the source before it positions them): each whose
        changelog state is newer than what this daemon holds is restored, and resumes where that
        state left off, before a record of it is processed."""
        if self.changelog is None or not keys:
            return

        from .keyed import load

        t0 = time.perf_counter()
        reader = self._changelog_reader()
        read_before = reader.records_read
        try:
            states, marks = reader.catch_up()
        except Exception as e:  # processing without the state would lose it: the loop stops and retries
            self._restore_failed = f"reading the changelog {self.changelog['topic']} failed: {e}"
            log.error("%s: %s", self.core.name, self._restore_failed)
            return
        fresh = {k: marks[k] for k in keys if marks.get(k, -1) > self.published.get(k, -1)}
        if fresh:  # outputs another owner may have published: decided again, they are replays
            self._write_progress(fresh)
            self._marks.update(fresh)
        for k in keys:
            st = states.get(k)
            self.core.metrics.partition_restore.labels(pipeline=self.core.name, partition=k).set(
                time.perf_counter() - t0)  # (the changelog's read, when it holds nothing of k)
            if st is None:
                continue
            self._written[k] = (st.generation, st.chunks, st.position)
            held = self.positions.get(k, -1)
            if st.position > held or (k in self._stateless and st.position == held):
                with self.lock:
                    self.core.restore_partition(*load(st.state))  # type: ignore[union-attr]
                self.positions[k] = st.position
                self._stateless.discard(k)
                self.source.seek({k: st.position})
                log.info("%s: %s restored from the changelog at position %d", self.core.name, k, st.position)
            self.core.metrics.partition_restore.labels(pipeline=self.core.name, partition=k).set(
                time.perf_counter() - t0)
        if self._merging:
            self.core.assigned(keys)  # type: ignore[union-attr]
        log.info("%s: assigned %s: changelog caught up in %.2f s (%d records read)", self.core.name, keys,
                 time.perf_counter() - t0, reader.records_read - read_before)

    def _changelog_reader(self) -> Any:
        """The pipeline's one changelog reader (the loop's restores and the standby thread share it)."""
        from connectors import changelog

        with self._reader_lock:
            if self._reader is None:
                self._reader = changelog.Reader(self.changelog["settings"], self.changelog["topic"])  # type: ignore[index]
            return self._reader

    def _standby(self) -> None:
        """A warm standby: the changelog followed every second while the pipeline runs (read, not
        folded: the fold is the restore's)."""
        while not self.stop_event.wait(0.25 if self._merging else 1.0):
            try:
                self._changelog_reader().follow()
            except Exception as e:  # the next assignment reads what it needs itself
                log.debug("%s: standby catch-up: %s", self.core.name, e)

    def on_revoked(self, keys: list[str]) -> None:
        """Partitions revoked in an orderly rebalance: their state is written (a checkpoint) for
        the next owner, then forgotten here (this daemon stops learning from them). Under
        exactly-once the open transaction commits first, with their offsets: the next owner
        starts where this one's published outputs end."""
        if self.exactly_once:
            if self.stop_event.is_set():  # (at shutdown the last checkpoint has committed)
                return
            self._revoking.update(keys)
            if threading.get_ident() == self._loop_ident:
                # confluent-kafka calls this inside the loop's poll, before the partitions go: the
                # open transaction commits with their offsets now, so the next owner, which reads
                # the committed offsets, starts where this one's outputs end; what the poll
                # returns of them is dropped
                self._hand_over([])
                self._dropping.update(keys)
            # (kafka-python calls this on its network thread: the loop commits at once after its
            # poll returns, and drops what that poll read of these partitions)
            return
        if self.changelog is None:
            return
        try:
            self.checkpoint(commit=False)  # (the changelog holds the positions the next owner resumes from)
        except Exception as e:
            log.warning("%s: the hand-over checkpoint of %s failed (%s): the next owner resumes from the "
                        "last changelog state", self.core.name, keys, e)
        with self.lock:
            for k in keys:
                self.core.release(k)  # type: ignore[union-attr]
                self.positions.pop(k, None)
                self._written.pop(k, None)

    def _write_progress(self, positions: dict[str, int]) -> None:
        merged = {**self.published, **{k: max(v, self.published.get(k, 0)) for k, v in positions.items()}}
        self.published = merged
        tmp = self._progress_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(merged, f)
        os.replace(tmp, self._progress_path)

    def checkpoint(self, commit: bool = True, also: tuple[str, ...] = ()) -> int:
        """Publishes what is pending, waits for its acknowledgements, saves state and positions,
        commits the positions (not with ``commit=False``: inside a rebalance callback the consumer
        cannot block); returns the number of outputs that were pending. Under exactly-once the
        positions of the owned partitions (and of ``also``: partitions being revoked) are committed
        with the open transaction, after the checkpoint is saved: a crash between the two leaves a
        checkpoint past the committed offsets, which the restore skips."""
        with self.lock:
            arrays, meta = self.core.snapshot()
            outs = self.core.pending_out
            self.core.pending_out = []
        self.sink.send_all([(self.topics[o.kind], o.key, o.value) for o in outs])
        self._flush()  # everything sent so far is acknowledged before the state is saved
        self._unacked = False
        meta["positions"] = dict(self.positions)
        self.store.save(arrays, meta)
        if self.changelog is not None:
            self._write_changelog(also)
        if self.exactly_once:  # (by the producer: the consumer commits nothing)
            self._commit_transaction(also)
        self._since = 0
        self._last_ckpt = time.monotonic()
        m = self.core.metrics
        m.checkpoints.labels(pipeline=self.core.name).inc()
        if not commit:
            return len(outs)
        if not self.exactly_once:
            try:
                self.source.commit(self.positions)
                self.committed = dict(self.positions)
            except Exception as e:  # commits serve monitoring; the checkpoint holds the truth
                log.warning("%s: offset commit failed: %s", self.core.name, e)
        try:
            for k, v in self.source.lag().items():
                topic, part = k.rsplit(":", 1)
                m.lag.labels(pipeline=self.core.name, topic=topic, partition=part).set(v)
        except Exception as e:
            log.debug("lag unavailable: %s", e)
        if time.monotonic() - self._topic_lag_at >= 15.0:  # broker round trips: not every checkpoint
            self._topic_lag_at = time.monotonic()
            try:
                for topic, v in self.source.topic_lag().items():
                    m.topic_lag.labels(pipeline=self.core.name, topic=topic).set(v)
            except Exception as e:
                log.debug("topic lag unavailable: %s", e)
        return len(outs)


def _on_topic(positions: dict[str, int], topic: str) -> dict[str, int]:
    """The positions of ``topic``'s partitions (a checkpoint's, or the committed offsets)."""
    return {k: v for k, v in positions.items() if k.rsplit(":", 1)[0] == topic}


def _read_progress(path: str) -> dict[str, int]:
    """The published marks (``{"topic:partition": offset}``); a missing or damaged file reads as none
    (its only use is marking replays)."""
    try:
        with open(path) as f:
            raw = json.load(f)
        return {str(k): int(v) for k, v in raw.items()}
    except FileNotFoundError:
        return {}
    except (ValueError, TypeError, AttributeError) as e:
        log.warning("%s is damaged (%s): decisions after the restart are not marked as replays", path, e)
        return {}
