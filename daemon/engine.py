"""The engine: one pipeline's records, in log order, through its family's adapter and learner.

Data path: source → decode (:mod:`daemon.records` rules, then the adapter) → the engine (ids,
event time, feedback join, learning blocks) → one learner call per run → encode → sink → offsets
committed (by :mod:`daemon.runner`) once the outputs are acknowledged and a checkpoint holds the
state that produced them.

Determinism contract: consecutive events are processed together, but a run is cut wherever state
would change for a later record (feedback for an event of the run, a learning block, an operation
that must run alone), so every output sees exactly the state left by the records before it. The
same records in the same order give the same outputs, whatever the micro-batch boundaries, live,
in a file replay, or after a restart from a checkpoint.

At-least-once: a restart resumes from the checkpoint's positions; the records after it are
processed again from the same state and their outputs published again, marked ``"replay": true``.

Engine state is kept per input partition (a *lane*: remembered ids, waiting items, the learning
queue and its counter, the event-time watermark); caps apply per lane. Feedback joins its event in
the event's lane (records keyed by event id reach the event's partition), looked up in the other
lanes when it is not there. HTTP requests have a lane of their own that is pipeline-wide: it follows
the pipeline's event time (the latest of every lane's), its feedback is learned at every lane's
learning blocks, and an id it remembers is a duplicate on every partition. The learner is one per
pipeline.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

from connectors.base import SourceRecord

from .checkpoint import pack_strings, unpack_strings
from .family import LEGACY_LANE, Adapter, Item, Sample, adapter_for
from .metrics import DaemonMetrics
from .records import BadRecord, Out, RecordRules, json_error, record_id

log = logging.getLogger("eddy")

FORMAT_VERSION = 3
PENDING, JOINED, EXPIRED = 0, 1, 2
HTTP_LANE = "http"


class Lane:
    """The engine state of one input partition (or of the HTTP requests)."""

    __slots__ = ("key", "seen", "bodies", "buffer", "queue", "since_learn", "watermark")

    def __init__(self, key: str):
        self.key = key
        self.seen: OrderedDict[str, int] = OrderedDict()  # id -> PENDING / JOINED / EXPIRED
        self.bodies: dict[str, bytes] = {}  # outputs of ids decided over HTTP (a retry gets them again)
        self.buffer: OrderedDict[str, Item] = OrderedDict()  # items waiting for feedback; insertion = expiry order
        self.queue: list[tuple[Item, float]] = []  # feedback waiting for the next learning block
        self.since_learn = 0  # events admitted since the last learning block
        self.watermark = -math.inf


class Engine:
    """One pipeline: the family's adapter (from the learner's family) run by the shared engine.

    ``handle(records)`` processes Kafka or file records; ``submit``, ``feedback`` and ``control``
    serve the sidecar's verbs; ``snapshot``/``restore`` checkpoint engine and learner state.
    """

    def __init__(self, pc: dict[str, Any], metrics: DaemonMetrics | None = None,
                 adapter: type[Adapter] | None = None, register: bool = True):
        self.pc = pc
        self.registered = register  # False: a key's engine in a keyed pipeline (daemon.keyed), whose
        # gauges and family metrics the keyed pipeline sets and reads
        self.name: str = pc["name"]
        self.metrics = metrics or DaemonMetrics()
        self.rules = RecordRules(pc["max_message_bytes"], pc["max_time_ahead_s"])
        a = self.adapter = (adapter or adapter_for(pc["learner"]))(pc, self.metrics, self.rules)
        self.family = a.family
        self.lock = threading.RLock()
        self.feedback_type = a.feedback_type
        self.wait_s = float(pc["reward_wait_s"])
        self.learn_every = int(pc["learn_every_events"])
        self.join_cap = int(pc["join_buffer_cap"])
        self.dedup_cap = int(pc["dedup_cap"])
        self.lanes: dict[str, Lane] = {}
        self.pending_out: list[Out] = []  # outputs of HTTP requests and adapter workers, published by the runner
        a.emit = self._emit  # type: ignore[method-assign]
        self.outcomes = {"joined": 0, a.expired_outcome: 0, "evicted": 0}
        self.encode_s = 0.0  # seconds in runs outside the learner's calls (outputs built, serialized)
        m, lbl = self.metrics, {"pipeline": self.name}
        self._c_events = m.events.labels(kind="event", **lbl)
        self._c_feedback = m.events.labels(kind=a.feedback_type or "feedback", **lbl)
        self._c_decisions = {s: m.decisions.labels(source=s, **lbl) for s in ("kafka", "http")}
        self._c_replays = m.replays.labels(**lbl)
        self._c_cap = {c: m.cap_evictions.labels(cap=c, **lbl) for c in ("dedup", "join_buffer")}
        self._stage = {s: m.stage_seconds.labels(stage=s, **lbl) for s in ("decode", "features", "kernel", "encode")}
        if register:
            m.join_cap.labels(**lbl).set(self.join_cap)
            m.force_default.labels(**lbl).set(int(a.force_default))
            m.families.add(self)

    def drain(self, timeout_s: float) -> int:
        """Waits (not holding the pipeline) for the adapter's work outside the loop; see
        :meth:`Adapter.drain`."""
        return self.adapter.drain(timeout_s)

    def close(self) -> None:
        self.adapter.close()

    def _emit(self, outs: list[Out]) -> None:
        """Outputs an adapter made outside a run (a worker's), published with the next batch."""
        with self.lock:
            self.pending_out += outs

    @property
    def learner(self) -> Any:
        return self.adapter.learner

    @learner.setter
    def learner(self, value: Any) -> None:
        self.adapter.learner = value

    @property
    def shadows(self) -> dict[str, Any]:
        return self.adapter.shadows

    @shadows.setter
    def shadows(self, value: dict[str, Any]) -> None:
        self.adapter.shadows = value

    # -- lanes ------------------------------------------------------------------------------------
    def _lane(self, key: str) -> Lane:
        lane = self.lanes.get(key)
        if lane is None:
            lane = self.lanes[key] = Lane(key)
        return lane

    def _holding(self, eid: str, first: Lane) -> Lane | None:
        """The lane that remembers ``eid``: ``first``, else any other."""
        if eid in first.seen:
            return first
        for lane in list(self.lanes.values()):
            if eid in lane.seen:
                return lane
        return None

    # -- dead letters -----------------------------------------------------------------------------
    def _reject(self, reason: str, detail: str, rec: SourceRecord | None) -> Out:
        self.metrics.errors.labels(pipeline=self.name, reason=reason).inc()
        self.metrics.dead_letters.labels(pipeline=self.name, reason=reason).inc()
        body: dict[str, Any] = {"pipeline": self.name, "reason": reason, "detail": detail}
        if rec is not None:
            body.update(topic=rec.topic, partition=rec.partition, offset=rec.offset)
            if not self.pc["redact_payloads"]:
                body["original"] = rec.value.decode("utf-8", "backslashreplace")
            else:
                body["original_bytes"] = len(rec.value)
        return Out("dlq", None, orjson.dumps(body))

    # -- the log-order loop -----------------------------------------------------------------------
    def handle(self, records: list[SourceRecord]) -> list[Out]:
        """Processes records in order; returns the outputs and dead letters to publish."""
        t0, encode0, kernel0 = time.perf_counter(), self.encode_s, self.adapter.kernel_s
        features0 = self.adapter.features_s
        out: list[Out] = []
        run: list[Item] = []
        run_ids: set[str] = set()
        n_ev = n_fb = 0
        decode, rules, a = self.adapter.decode, self.rules, self.adapter
        loads, max_bytes = orjson.loads, rules.max_bytes
        fb_type = self.feedback_type
        tracker = fb_type is None
        ordered = a.rejects_in_runs
        lane = Lane("")
        topic, part = None, -1
        for rec in records:
            if rec.partition != part or rec.topic != topic:
                topic, part = rec.topic, rec.partition
                lane = self._lane(f"{topic}:{part}")
            try:
                v = rec.value  # size, JSON, an object (the module docstring of daemon.records), for every record
                if len(v) > max_bytes:
                    raise BadRecord("oversize", f"{len(v)} bytes > max_message_bytes={max_bytes}")
                try:
                    obj = loads(v)
                except orjson.JSONDecodeError as e:
                    raise json_error(v, e) from None
                if type(obj) is not dict:
                    raise BadRecord("bad_type", "a record must be a JSON object")
                kind = "event" if tracker else obj.get("type", "event")  # (a tracker's records have no type)
                if kind == "event":
                    n_ev += 1
                    try:
                        item = decode(obj, rec)
                    except BadRecord:
                        raise
                    except Exception as e:  # an adapter's decoding bug must not stop the pipeline
                        log.warning("%s: decoding failed: %r", self.name, e)
                        raise BadRecord("decode_error", f"{type(e).__name__}: {e}") from None
                    if tracker and item.id is None and not item.barrier:  # nothing to remember or join
                        t = item.time
                        if t is not None and t > lane.watermark:
                            lane.watermark = t
                        run.append(item)
                        continue
                    self._admit(lane, item, run, run_ids, out, None, "kafka")
                elif fb_type is not None and kind == fb_type:
                    n_fb += 1
                    eid = record_id(obj)
                    t = rules.time(obj, rec)
                    value = a.feedback_value(obj)
                    if eid in run_ids:  # its output goes out before the feedback is queued
                        self._flush(run, run_ids, out, None, "kafka")
                    self._join(lane, eid, value, t)
                else:
                    allowed = "'event'" + (f" or {fb_type!r}" if fb_type else "")
                    raise BadRecord("bad_type", f"'type' must be {allowed}, got {kind!r}")
            except BadRecord as e:
                if ordered and run:  # the run's own rejections come first
                    self._flush(run, run_ids, out, None, "kafka")
                out.append(self._reject(e.reason, e.detail, rec))
        self._flush(run, run_ids, out, None, "kafka")
        self._c_events.inc(n_ev)
        if n_fb:
            self._c_feedback.inc(n_fb)
        self._account(t0, encode0, kernel0, features0)
        self.update_gauges()
        return out

    def _account(self, t0: float, encode0: float, kernel0: float, features0: float) -> None:
        """Stage seconds of one call: kernel (the learner's calls: decisions and learning),
        features (the learner's inputs made from decoded items: feature hashing and crosses),
        encode (the rest of the runs: the batch columns assembled, the outputs built and
        serialized), decode (the rest: parsing, the record rules, ids, the join, learning blocks'
        batches)."""
        total = time.perf_counter() - t0
        kernel = self.adapter.kernel_s - kernel0
        features = self.adapter.features_s - features0
        encode = self.encode_s - encode0
        st = self._stage
        st["kernel"].inc(kernel)
        st["features"].inc(features)
        st["encode"].inc(encode)
        st["decode"].inc(max(0.0, total - kernel - features - encode))

    def _admit(self, lane: Lane, item: Item, run: list[Item], run_ids: set[str], out: list[Out],
               decided: list | None, source: str) -> None:
        """Places a valid, new item in log order: event time first, then a learning block if due;
        a waiting item enters its lane's buffer here, at its log position, though it is decided
        later with the rest of its run (expiry and feedback act on it in log order)."""
        eid = item.id
        seen = lane.seen  # (an admitted id is remembered at once: a duplicate within its run is found too)
        http = self.lanes.get(HTTP_LANE)
        if eid is not None and (eid in seen or (http is not None and eid in http.seen)):
            raise BadRecord("duplicate_event", f"event id {eid!r} was already decided")
        t = item.time
        if t is not None and t > lane.watermark:
            self._advance(lane, t)
        item.lane = lane
        if self.feedback_type is not None:
            item.deadline = lane.watermark + self.wait_s
            if lane.since_learn >= self.learn_every and (lane.queue or (http is not None and http.queue)):
                self._flush(run, run_ids, out, decided, source)
                self._learn(lane)
            lane.since_learn += 1
            if item.value is not None:  # feedback given with the event: learned after its output
                seen[eid] = JOINED  # type: ignore[index]
                lane.queue.append((item, item.value))
                self.outcomes["joined"] += 1
                self.adapter.joined(item, item.value)
            else:
                seen[eid] = PENDING  # type: ignore[index]
                buf = lane.buffer
                buf[eid] = item  # type: ignore[index]
                if len(buf) > self.join_cap:  # expired early, as on event time (learned at the next block)
                    old, early = buf.popitem(last=False)
                    seen[old] = EXPIRED
                    self._expired(lane, early, "evicted")
                    self._c_cap["join_buffer"].inc()
        else:
            if item.barrier:
                self._flush(run, run_ids, out, decided, source)
                run.append(item)
                self._flush(run, run_ids, out, decided, source)
                if eid is not None:
                    self._remember(lane, eid)
                return
            if eid is not None:
                seen[eid] = PENDING
        if eid is not None:
            run_ids.add(eid)
            if len(seen) > self.dedup_cap:
                self._forget(lane)
        run.append(item)

    def _remember(self, lane: Lane, eid: str) -> None:
        lane.seen[eid] = PENDING
        if len(lane.seen) > self.dedup_cap:
            self._forget(lane)

    def _forget(self, lane: Lane) -> None:
        old = lane.seen.popitem(last=False)[0]
        waiting = lane.buffer.pop(old, None)
        if waiting is not None:  # a forgotten id cannot be joined safely any more: it leaves as evicted
            self._expired(lane, waiting, "evicted")
        if lane.bodies:
            lane.bodies.pop(old, None)
        self._c_cap["dedup"].inc()

    def _expired(self, lane: Lane, item: Item, outcome: str) -> None:
        self.outcomes[outcome] += 1
        v = self.adapter.expire_value
        if v is not None:
            lane.queue.append((item, v))

    def _advance(self, lane: Lane, t: float) -> None:
        """Moves the lane's event time forward; what waited past its deadline expires."""
        if t <= lane.watermark:
            return
        lane.watermark = t
        if lane.key != HTTP_LANE:  # the HTTP lane follows the pipeline's event time (every lane's)
            http = self.lanes.get(HTTP_LANE)
            if http is not None and t > http.watermark:
                self._advance(http, t)
        buf = lane.buffer
        if not buf or next(iter(buf.values())).deadline > t:
            return
        seen, v = lane.seen, self.adapter.expire_value  # (what _expired does, inline: the loop's cost is per item)
        queue, pop, n = lane.queue, buf.popitem, 0
        for item in buf.values():
            if item.deadline > t:
                break
            n += 1
        for _ in range(n):
            eid, item = pop(last=False)
            if eid in seen:
                seen[eid] = EXPIRED
            if v is not None:
                queue.append((item, v))
        self.outcomes[self.adapter.expired_outcome] += n

    def _join(self, lane: Lane, eid: str, value: float, t: float | None) -> None:
        """Joins feedback to its waiting event (in the event's lane)."""
        item = lane.buffer.get(eid)
        if item is None:
            held = self._holding(eid, lane)
            if held is not None:
                lane = held
        if t is not None:
            self._advance(lane, t)
        item = lane.buffer.pop(eid, None)
        if item is None:
            status = lane.seen.get(eid)
            name = self.adapter.feedback_name
            if status is None:
                raise BadRecord("unknown_event", f"{name} for unknown event id {eid!r}")
            if status == EXPIRED:
                raise BadRecord(f"late_{name}", f"{name} for {eid!r} arrived after reward_wait_s")
            raise BadRecord(f"duplicate_{name}", f"event {eid!r} already has its {name}")
        lane.seen[eid] = JOINED
        lane.queue.append((item, value))
        self.outcomes["joined"] += 1
        self.adapter.joined(item, value)

    def _learn(self, lane: Lane) -> None:
        """A learning block: the HTTP lane's queued feedback, then the lane's (HTTP requests have
        no partition of their own: their feedback is learned at every lane's blocks)."""
        rows = lane.queue
        lane.queue = []
        lane.since_learn = 0
        http = self.lanes.get(HTTP_LANE)
        if http is not None and http is not lane and http.queue:
            rows = http.queue + rows
            http.queue = []
        if rows:
            self.adapter.learn(rows)

    def _flush(self, run: list[Item], run_ids: set[str], out: list[Out], decided: list | None,
               source: str) -> None:
        """Runs the items of the run through the adapter (one learner call) and publishes the outputs."""
        if not run:
            return
        a = self.adapter
        t0, k0, f0 = time.perf_counter(), a.kernel_s, a.features_s
        a.rejected = False
        outs, bodies = a.run(run, source)
        keep = source == "http"
        if not a.rejected and decided is None and not keep:  # the Kafka path, every item output
            out += outs  # type: ignore[arg-type]
            self._c_decisions[source].inc(len(outs))
            n_replay = sum([item.replay for item in run])
            if n_replay:
                self._c_replays.inc(n_replay)
            run.clear()
            run_ids.clear()
            self.encode_s += time.perf_counter() - t0 - (a.kernel_s - k0) - (a.features_s - f0)
            return
        n = n_replay = 0
        for item, o, body in zip(run, outs, bodies or [None] * len(outs), strict=True):
            if type(o) is BadRecord:
                self._drop(item)
                out.append(self._reject(o.reason, o.detail, item.rec))
                if decided is not None:
                    decided.append({"id": item.id, "error": o.reason, "detail": o.detail})
                continue
            out.append(o)  # type: ignore[arg-type]
            n += 1
            n_replay += item.replay
            if decided is not None:
                decided.append(body)
            if keep and item.id is not None and item.id in item.lane.seen:  # (not if forgotten already)
                item.lane.bodies[item.id] = o.value  # type: ignore[union-attr]
        self._c_decisions[source].inc(n)
        if n_replay:
            self._c_replays.inc(n_replay)
        run.clear()
        run_ids.clear()
        self.encode_s += time.perf_counter() - t0 - (a.kernel_s - k0) - (a.features_s - f0)

    def _drop(self, item: Item) -> None:
        """An item rejected within its run: never decided, so nothing remembers it."""
        lane, eid = getattr(item, "lane", None), item.id
        if lane is None:  # (a tracker's item without an id: never admitted to a lane)
            return
        if eid is not None:
            lane.seen.pop(eid, None)
            lane.buffer.pop(eid, None)
        if lane.queue:
            lane.queue = [q for q in lane.queue if q[0] is not item]

    # -- the sidecar's verbs ----------------------------------------------------------------------
    def _fresh(self, objs: list[Any], check) -> tuple[list[Any], list[dict | None]]:
        """Per object: its decoded item (or the object itself when ``check`` only validates),
        or, for a retried HTTP id, its first output. Raises :class:`BadRecord` for the first bad one."""
        kept: list[dict | None] = []
        fresh: list[Any] = []
        ids: set[str] = set()
        http = self.lanes.get(HTTP_LANE)
        for i, obj in enumerate(objs):
            if not isinstance(obj, dict):
                raise BadRecord("bad_type", f"item {i}: an event must be a JSON object")
            eid = record_id(obj) if self.adapter.ids_required or obj.get("id") is not None else None
            if eid is not None:
                body = http.bodies.get(eid) if http is not None else None
                if body is not None:
                    kept.append(orjson.loads(body))
                    continue
                if self._holding(eid, http or Lane("")) is not None:
                    raise BadRecord("duplicate_event", f"event id {eid!r} was decided from the Kafka input; "
                                    "its decision is on the output topic")
                if eid in ids:
                    raise BadRecord("duplicate_event", f"event id {eid!r} appears twice in one request")
                ids.add(eid)
            try:
                fresh.append(check(obj))
            except BadRecord as e:
                raise BadRecord(e.reason, f"item {i}: {e.detail}" if len(objs) > 1 else e.detail) from None
            kept.append(None)
        return fresh, kept

    def validate(self, objs: list[Any]) -> list[dict | None]:
        """The checks :meth:`submit` makes, touching no state (the latency-budget path runs them
        while the loop holds the pipeline); per object the output a retried id already has, or None."""
        def check(obj: dict[str, Any]) -> dict[str, Any]:
            self.rules.time(obj)
            self.adapter.validate(obj)
            return obj

        return self._fresh(objs, check)[1]

    def submit(self, objs: list[Any]) -> list[dict]:
        """Processes events from the sidecar (decide, predict, access): one output per object, a
        retried id getting its first output unchanged. Raises :class:`BadRecord` for the first
        invalid object, with nothing processed then."""
        t0, encode0, kernel0 = time.perf_counter(), self.encode_s, self.adapter.kernel_s
        features0 = self.adapter.features_s
        items, kept = self._fresh(objs, lambda obj: self.adapter.decode(obj, None))
        lane = self._lane(HTTP_LANE)
        run: list[Item] = []
        run_ids: set[str] = set()
        outs: list[Out] = []
        decided: list[dict] = []
        for item in items:
            self._admit(lane, item, run, run_ids, outs, decided, "http")
        self._flush(run, run_ids, outs, decided, "http")
        fresh = iter(decided)
        results = [k if k is not None else next(fresh) for k in kept]
        self.pending_out += outs
        self._c_events.inc(len(objs))
        self._account(t0, encode0, kernel0, features0)
        self.update_gauges()
        return results

    def feedback(self, objs: list[Any]) -> list[dict]:
        """Joins feedback from the sidecar; one status per object (errors are per object)."""
        res: list[dict[str, Any]] = []
        http = self._lane(HTTP_LANE)
        for obj in objs:
            try:
                if not isinstance(obj, dict):
                    raise BadRecord("bad_type", f"{self.adapter.feedback_name} must be a JSON object")
                eid = record_id(obj)
                t = self.rules.time(obj)
                v = self.adapter.feedback_value(obj)
                self._join(http, eid, v, t)
                res.append({"id": eid, "status": "joined"})
            except BadRecord as e:
                self.metrics.errors.labels(pipeline=self.name, reason=e.reason).inc()
                res.append({"id": obj.get("id") if isinstance(obj, dict) else None,
                            "status": "rejected", "reason": e.reason, "detail": e.detail})
        self._c_feedback.inc(len(objs))
        self.update_gauges()
        return res

    def view(self, name: str, query: dict[str, str]) -> Any:
        """A view of the family (``adapter.views``: the state users see), answered by the adapter."""
        return getattr(self.adapter, self.adapter.views[name])()

    def control(self, force_default: bool) -> bool:
        self.adapter.force_default = force_default
        if self.registered:
            self.metrics.force_default.labels(pipeline=self.name).set(int(force_default))
        return force_default

    # -- gauges, reports --------------------------------------------------------------------------
    def update_gauges(self) -> None:
        if not self.registered:
            return
        m, lbl = self.metrics, self.name
        lanes = self.lanes.values()
        m.join_size.labels(pipeline=lbl).set(sum(len(x.buffer) for x in lanes))
        m.dedup_size.labels(pipeline=lbl).set(sum(len(x.seen) for x in lanes))

    def samples(self) -> Iterator[Sample]:
        """The family's metrics, and its feedback outcomes, for the scrape."""
        if self.feedback_type is not None:
            doc = f"{self.adapter.feedback_name.capitalize()}s of events, by outcome (joined, " \
                  f"{self.adapter.expired_outcome} on event time, evicted by the buffer cap)"
            for outcome, n in self.outcomes.items():
                yield Sample(self.adapter.feedback_metric, "counter", doc, {"outcome": outcome}, n)
        yield from self.adapter.samples()

    def report(self) -> dict[str, Any]:
        return {"pipeline": self.name, "learner": self.pc["learner"], "family": self.family,
                **self.adapter.report()}

    # -- checkpoint -------------------------------------------------------------------------------
    def snapshot(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, own = self.adapter.snapshot()
        lanes: dict[str, dict[str, Any]] = {}
        for i, lane in enumerate(self.lanes.values()):
            pre = f"lane/{i}/"
            arrays[pre + "seen/ids"], arrays[pre + "seen/id_ends"] = pack_strings(list(lane.seen))
            arrays[pre + "seen/status"] = np.frombuffer(bytes(lane.seen.values()), dtype=np.uint8).copy()
            arrays[pre + "bodies/ids"], arrays[pre + "bodies/id_ends"] = pack_strings(list(lane.bodies))
            outputs = pack_strings(list(lane.bodies.values()))
            arrays[pre + "bodies/outputs"], arrays[pre + "bodies/output_ends"] = outputs
            if self.feedback_type is not None:
                for part, rows in (("buffer", [(it, 0.0) for it in lane.buffer.values()]), ("queue", lane.queue)):
                    items = [it for it, _ in rows]
                    arrays.update({f"{pre}{part}/{k}": v for k, v in self._pack(items).items()})
                    arrays[f"{pre}{part}/value"] = np.array([v for _, v in rows], dtype=np.float64)
            lanes[lane.key] = {"index": i, "since_learn": lane.since_learn,
                               "watermark": lane.watermark if math.isfinite(lane.watermark) else None}
        meta = {"format_version": FORMAT_VERSION, "family": self.family, "pipeline": self.name,
                **self.adapter.fingerprint(), "lanes": lanes, "adapter": own,
                "force_default": self.adapter.force_default, "written_at": time.time()}
        return arrays, meta

    def _pack(self, items: list[Item]) -> dict[str, np.ndarray]:
        out = self.adapter.pack(items)
        out["ids"], out["id_ends"] = pack_strings([str(it.id) for it in items])
        out["deadline"] = np.array([it.deadline for it in items], dtype=np.float64)
        return out

    def restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        if "keyed" in meta:
            raise ValueError(f"checkpoint is of a pipeline keyed by {meta['keyed'].get('key_by')!r}, this one is "
                             "not keyed; move it away to start fresh")
        if meta.get("format_version") != FORMAT_VERSION:  # the release before the engine
            arrays, meta = self.adapter.upgrade(dict(arrays), dict(meta))
            meta = {**meta, "format_version": FORMAT_VERSION, "family": self.family}
            lanes = meta["lanes"]
            one = lanes[HTTP_LANE] = lanes.pop(LEGACY_LANE)  # the pipeline-wide lane: as the one state was
            # The records after the checkpoint continue the earlier release's learning-block count
            # and event time on the input's first partition (exactly that release, for one partition).
            lanes[f"{self.pc['input_topic']}:0"] = {"index": None, "since_learn": one["since_learn"],
                                                   "watermark": one["watermark"]}
            one["since_learn"] = 0
        if meta.get("format_version") != FORMAT_VERSION or meta.get("family") != self.family:
            raise ValueError(f"checkpoint is not a {self.family} checkpoint of format {FORMAT_VERSION} "
                             f"(family {meta.get('family')!r}, format {meta.get('format_version')!r})")
        mine = self.adapter.fingerprint()
        if {k: meta.get(k) for k in mine} != mine:
            raise ValueError("checkpoint was written by a different learner or settings "
                             f"({ {k: meta.get(k) for k in mine} }); move it away to start fresh")
        self.adapter.restore(arrays, meta.get("adapter", {}))
        self.lanes = {}
        for key, info in meta["lanes"].items():
            lane = self.lanes[key] = Lane(key)
            lane.since_learn = int(info["since_learn"])
            w = info.get("watermark")
            lane.watermark = -math.inf if w is None else float(w)
            if info["index"] is None:  # a lane with counters only
                continue
            pre = f"lane/{info['index']}/"
            ids = unpack_strings(arrays[pre + "seen/ids"], arrays[pre + "seen/id_ends"])
            lane.seen = OrderedDict(zip(ids, arrays[pre + "seen/status"].tolist(), strict=True))
            lane.bodies = dict(zip(unpack_strings(arrays[pre + "bodies/ids"], arrays[pre + "bodies/id_ends"]),
                                   unpack_strings(arrays[pre + "bodies/outputs"], arrays[pre + "bodies/output_ends"],
                                                  as_bytes=True), strict=True))
            if self.feedback_type is not None:
                for part in ("buffer", "queue"):
                    p = f"{pre}{part}/"
                    a = {k[len(p):]: v for k, v in arrays.items() if k.startswith(p)}
                    items = self.adapter.unpack(a, unpack_strings(a["ids"], a["id_ends"]))
                    for it, dl in zip(items, a["deadline"].tolist(), strict=True):
                        it.deadline, it.lane = dl, lane
                    if part == "buffer":
                        lane.buffer = OrderedDict((it.id, it) for it in items)  # type: ignore[misc]
                    else:
                        lane.queue = list(zip(items, a["value"].tolist(), strict=True))
        self.update_gauges()
