"""Keyed pipelines: one learner per value of a record field (``key_by``), each a whole engine.

A keyed pipeline routes every record by ``obj[key_by]`` (a string, or an integer read as its
decimal string) to the engine of that key, created on first sight from the pipeline's settings.
Each key's engine sees exactly its own records, in log order, so a key's decisions are those of an
unkeyed pipeline fed only that key's records (ids and caps are per key too). Records without the
field, or with one that is not a short string or an integer, are dead-lettered (``missing_key``,
``bad_key``); a record without the field takes its Kafka record key. Feedback carries the same
key as its event, as the field or the record key (producers key records by it, so that a key and
its feedback live on one partition).

**Bounded memory.** At most ``key_cap`` keys are live per input partition (HTTP requests count as
one partition of their own), so a key's fate does not depend on how many partitions a daemon
owns. Beyond it, the least recently used key of that partition is *snapshotted out*: its engine's
checkpoint is compressed into a cold store, and restored on its next record exactly as it was (so
a key snapshotted out and back equals one that never left). The cold store holds at most
``key_cold_bytes`` per partition; beyond that its least recently used keys are *dropped* (state
lost, counted in ``eddy_key_evictions_total{outcome="dropped"}``), and a dropped key starts afresh.

**Metrics.** The families' counters and histograms are the sums over the keys (those of keys
snapshotted out or dropped included), under the unkeyed names and labels; the families' gauges
are not exported per key (their label set would grow with the keys). Own metrics:
``eddy_keys{partition, state=live|cold}``, ``eddy_key_evictions_total{outcome=snapshotted|dropped}``,
``eddy_key_restores_total``.
"""

from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

from connectors.base import SourceRecord

from .engine import FORMAT_VERSION, HTTP_LANE, Engine, Lane
from .family import Sample
from .metrics import DaemonMetrics
from .records import MAX_ID_LEN, BadRecord, Out, json_error

_SUMMED = ("counter", "histogram")


def record_key(obj: dict[str, Any], field: str, kafka_key: bytes | None = None) -> str:
    """The key of a record: ``obj[field]``, a non-empty string or an integer (not a boolean);
    without the field, the Kafka record key (UTF-8)."""
    k = obj.get(field)
    if k is None and kafka_key:
        try:
            k = kafka_key.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRecord("bad_key", "the Kafka record key is not UTF-8") from None
    if type(k) is int:
        return str(k)
    if type(k) is str and 0 < len(k) <= MAX_ID_LEN:
        return k
    if k is None:
        raise BadRecord("missing_key", f"the pipeline is keyed by {field!r}: the record has no {field!r} "
                        "and no Kafka record key")
    raise BadRecord("bad_key", f"{field!r} must be a non-empty string of at most {MAX_ID_LEN} characters "
                    f"or an integer, got {type(k).__name__}")


def dump(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> bytes:
    """A state (arrays and JSON metadata) as compressed ``.npz`` bytes (no pickle): a cold key, a
    changelog record's partition state."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{"__meta__": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays})  # type: ignore[arg-type]
    return buf.getvalue()


def load(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The state :func:`dump` wrote."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("__meta__").tobytes())
    return arrays, meta


def _summed(samples: Iterator[Sample], into: dict[tuple, Any]) -> None:
    """Adds the counters and histograms of ``samples`` into ``into`` (keyed by name, kind, doc, labels)."""
    for s in samples:
        if s.kind not in _SUMMED:
            continue
        k = (s.name, s.kind, s.doc, tuple(sorted((str(a), str(b)) for a, b in s.labels.items())))
        if s.kind == "counter":
            into[k] = into.get(k, 0.0) + float(s.value)
        else:
            buckets, total = s.value
            had = into.get(k)
            if had is None:
                into[k] = ([(b, float(c)) for b, c in buckets], float(total))
            else:
                into[k] = ([(b, c + float(c2)) for (b, c), (_, c2) in zip(had[0], buckets, strict=True)],
                           had[1] + float(total))


class KeyedEngine:
    """A keyed pipeline (see the module docstring): the interface of :class:`~daemon.engine.Engine`
    over one engine per key value. ``adapter`` is a template's (its verbs, views, default answer)."""

    def __init__(self, pc: dict[str, Any], metrics: DaemonMetrics | None = None):
        self.pc = pc
        self.name: str = pc["name"]
        self.metrics = metrics or DaemonMetrics()
        self.key_by: str = pc["key_by"]
        self.cap = int(pc["key_cap"])
        self.cold_cap = int(pc["key_cold_bytes"])
        self.template = Engine(pc, self.metrics, register=False)  # never decides: the family's constants
        self.adapter = self.template.adapter
        self.family, self.feedback_type = self.template.family, self.template.feedback_type
        self.rules = self.template.rules
        self.lock = threading.RLock()
        self.force_default = bool(pc["force_default"])
        self.cells: dict[str, Engine] = {}  # key -> its engine, live
        self.home: dict[str, str] = {}  # key -> the partition whose key cap it counts in (live or cold)
        self.recent: dict[str, OrderedDict[str, None]] = defaultdict(OrderedDict)  # partition -> live keys, LRU first
        self.cold: dict[str, OrderedDict[str, bytes]] = defaultdict(OrderedDict)  # partition -> key -> snapshot
        self.cold_bytes: dict[str, int] = defaultdict(int)
        self.retired: dict[tuple, Any] = {}  # the summed metrics of keys not live (cold or dropped)
        self.evictions = {"snapshotted": 0, "dropped": 0}
        self.restores = 0
        self._pending: list[Out] = []
        m, lbl = self.metrics, {"pipeline": self.name}
        m.join_cap.labels(**lbl).set(self.template.join_cap)
        m.force_default.labels(**lbl).set(int(self.force_default))
        m.families.add(self)

    # -- what the runtime reads -------------------------------------------------------------------
    @property
    def learner(self) -> Any:
        return self.template.learner  # warming it up compiles the kernels every key's learner uses

    @property
    def shadows(self) -> dict[str, Any]:
        return self.template.shadows

    @property
    def lanes(self) -> dict[str, Lane]:
        """Every live key's lanes, as ``<key>/<lane>``."""
        return {f"{k}/{lk}": lane for k, c in self.cells.items() for lk, lane in c.lanes.items()}

    @property
    def pending_out(self) -> list[Out]:
        for c in self.cells.values():
            if c.pending_out:
                self._pending += c.pending_out
                c.pending_out = []
        return self._pending

    @pending_out.setter
    def pending_out(self, value: list[Out]) -> None:
        self.pending_out  # noqa: B018  (collects the cells' first)
        self._pending = value

    # -- keys -------------------------------------------------------------------------------------
    def _cell(self, key: str, part: str) -> Engine:
        """The live engine of ``key`` (restored from the cold store, or new), most recent in
        ``part``'s key cap."""
        c = self.cells.get(key)
        if c is None:
            c = Engine(self.pc, self.metrics, register=False)
            c.adapter.force_default = self.force_default
            was = self.home.get(key)
            blob = self.cold[was].pop(key, None) if was is not None else None
            if blob is not None and was is not None:
                self.cold_bytes[was] -= len(blob)
                c.restore(*load(blob))
                c.adapter.force_default = self.force_default
                counts: dict[tuple, Any] = {}
                _summed(c.samples(), counts)  # what it reports again (a counter a checkpoint keeps) is
                for k, v in counts.items():  # live again: the sums go on from where they were
                    self._unretire(k, v)
                self.restores += 1
            self.cells[key] = c
        was = self.home.get(key)
        if was != part:
            if was is not None:
                self.recent[was].pop(key, None)
            self.home[key] = part
        lru = self.recent[part]
        lru[key] = None
        lru.move_to_end(key)
        while len(lru) > self.cap:
            old, _ = lru.popitem(last=False)
            self._snapshot_out(old, part)
        return c

    def _snapshot_out(self, key: str, part: str) -> None:
        c = self.cells.pop(key)
        c.drain(30.0)
        self._pending += c.pending_out
        c.pending_out = []
        counts: dict[tuple, Any] = {}
        _summed(c.samples(), counts)
        for k, v in counts.items():
            self._retire(k, v)
        self.evictions["snapshotted"] += 1
        blob = dump(*c.snapshot())
        c.close()
        if len(blob) > self.cold_cap:
            self._drop(key)
            return
        self.cold[part][key] = blob
        self.cold_bytes[part] += len(blob)
        cold = self.cold[part]
        while self.cold_bytes[part] > self.cold_cap:
            old, b = cold.popitem(last=False)
            self.cold_bytes[part] -= len(b)
            self._drop(old)

    def _drop(self, key: str) -> None:
        self.home.pop(key, None)
        self.evictions["dropped"] += 1

    def _retire(self, k: tuple, v: Any) -> None:
        _summed(iter([_sample(k, v)]), self.retired)

    def _unretire(self, k: tuple, v: Any) -> None:
        r = self.retired[k]
        if k[1] == "counter":
            self.retired[k] = r - v
        else:
            self.retired[k] = ([(b, c - c2) for (b, c), (_, c2) in zip(r[0], v[0], strict=True)], r[1] - v[1])

    # -- the log-order loop -----------------------------------------------------------------------
    def handle(self, records: list[SourceRecord]) -> list[Out]:
        """Records in log order, each run of one key's consecutive records handled by its engine."""
        out: list[Out] = []
        chunk: list[SourceRecord] = []
        cur: tuple[str, str] | None = None
        max_bytes, field = self.rules.max_bytes, self.key_by
        for rec in records:
            try:
                v = rec.value
                if len(v) > max_bytes:
                    raise BadRecord("oversize", f"{len(v)} bytes > max_message_bytes={max_bytes}")
                try:
                    obj = orjson.loads(v)
                except orjson.JSONDecodeError as e:
                    raise json_error(v, e) from None
                if type(obj) is not dict:
                    raise BadRecord("bad_type", "a record must be a JSON object")
                at = (record_key(obj, field, rec.key), f"{rec.topic}:{rec.partition}")
            except BadRecord as e:
                self._run(cur, chunk, out)
                out.append(self.template._reject(e.reason, e.detail, rec))
                continue
            if at != cur:
                self._run(cur, chunk, out)
                cur = at
            chunk.append(rec)
        self._run(cur, chunk, out)
        self.update_gauges()
        return out

    def _run(self, at: tuple[str, str] | None, chunk: list[SourceRecord], out: list[Out]) -> None:
        if chunk and at is not None:
            out += self._cell(*at).handle(chunk)
        chunk.clear()

    # -- the sidecar's verbs ----------------------------------------------------------------------
    def _keys(self, objs: list[Any]) -> list[str]:
        keys = []
        for i, obj in enumerate(objs):
            if not isinstance(obj, dict):
                raise BadRecord("bad_type", f"item {i}: an event must be a JSON object")
            try:
                keys.append(record_key(obj, self.key_by))
            except BadRecord as e:
                raise BadRecord(e.reason, f"item {i}: {e.detail}" if len(objs) > 1 else e.detail) from None
        return keys

    def _groups(self, objs: list[Any]) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, k in enumerate(self._keys(objs)):
            groups.setdefault(k, []).append(i)
        return groups

    def validate(self, objs: list[Any]) -> list[dict | None]:
        out: list[dict | None] = [None] * len(objs)
        for key, idx in self._groups(objs).items():
            c = self.cells.get(key, self.template)
            for i, r in zip(idx, c.validate([objs[i] for i in idx]), strict=True):
                out[i] = r
        return out

    def submit(self, objs: list[Any]) -> list[dict]:
        """As :meth:`Engine.submit`, each key's events by its engine; every object is checked
        (key and event) before any is processed."""
        groups = self._groups(objs)
        self.validate(objs)
        out: list[dict] = [{}] * len(objs)
        for key, idx in groups.items():
            cell = self._cell(key, self.home.get(key, HTTP_LANE))  # (a key of a partition stays that partition's)
            for i, r in zip(idx, cell.submit([objs[i] for i in idx]), strict=True):
                out[i] = r
        self.update_gauges()
        return out

    def feedback(self, objs: list[Any]) -> list[dict]:
        res: list[dict] = []
        for obj in objs:
            try:
                key = self._keys([obj])[0]
            except BadRecord as e:
                self.metrics.errors.labels(pipeline=self.name, reason=e.reason).inc()
                res.append({"id": obj.get("id") if isinstance(obj, dict) else None, "status": "rejected",
                            "reason": e.reason, "detail": e.detail})
                continue
            if key in self.cells or key in self.home:
                res += self._cell(key, self.home.get(key, HTTP_LANE)).feedback([obj])
            else:  # no such key: its event was never decided (nothing is created for it)
                res += self.template.feedback([obj])
        self.update_gauges()
        return res

    def view(self, name: str, query: dict[str, str]) -> Any:
        """A key's view: ``?key=`` names it (restored from the cold store if it went cold);
        BadRecord ``missing_key`` without it, ``unknown_key`` for a key never seen (or dropped)."""
        key = query.get("key")
        if not key:
            raise BadRecord("missing_key", f"the pipeline is keyed by {self.key_by!r}: name the key, ?key=...")
        if key not in self.cells and key not in self.home:
            raise BadRecord("unknown_key", f"no state for key {key!r} (never seen, or dropped)")
        c = self._cell(key, self.home[key])
        return {"key": key, **getattr(c.adapter, c.adapter.views[name])()}

    def control(self, force_default: bool) -> bool:
        self.force_default = force_default
        for c in (self.template, *self.cells.values()):
            c.adapter.force_default = force_default
        self.metrics.force_default.labels(pipeline=self.name).set(int(force_default))
        return force_default

    def drain(self, timeout_s: float) -> int:
        return sum(c.drain(timeout_s) for c in self.cells.values())

    def close(self) -> None:
        for c in (self.template, *self.cells.values()):
            c.close()

    # -- gauges, metrics, reports -----------------------------------------------------------------
    def update_gauges(self) -> None:
        m, lanes = self.metrics, [lane for c in self.cells.values() for lane in c.lanes.values()]
        m.join_size.labels(pipeline=self.name).set(sum(len(x.buffer) for x in lanes))
        m.dedup_size.labels(pipeline=self.name).set(sum(len(x.seen) for x in lanes))

    def samples(self) -> Iterator[Sample]:
        total: dict[tuple, Any] = {}
        for k, v in self.retired.items():
            _summed(iter([_sample(k, v)]), total)
        for c in self.cells.values():
            _summed(c.samples(), total)
        for k, v in total.items():
            yield _sample(k, v)
        for part in sorted(set(self.recent) | set(self.cold)):
            yield Sample("eddy_keys", "gauge", "Keys of a keyed pipeline per partition, live or snapshotted "
                         "out (cold)", {"partition": part, "state": "live"}, len(self.recent.get(part, ())))
            yield Sample("eddy_keys", "gauge", "Keys of a keyed pipeline per partition, live or snapshotted "
                         "out (cold)", {"partition": part, "state": "cold"}, len(self.cold.get(part, ())))
        for outcome, n in self.evictions.items():
            yield Sample("eddy_key_evictions", "counter", "Keys pushed out by key_cap (snapshotted to the "
                         "cold store) and by key_cold_bytes (dropped: state lost)", {"outcome": outcome}, n)
        yield Sample("eddy_key_restores", "counter", "Keys restored from the cold store on their next record",
                     {}, self.restores)

    def report(self) -> dict[str, Any]:
        keys = sorted(self.cells)
        return {"pipeline": self.name, "learner": self.pc["learner"], "family": self.family,
                "keyed": {"key_by": self.key_by, "live": len(self.cells),
                          "cold": sum(len(c) for c in self.cold.values()), "restores": self.restores,
                          **{f"evicted_{k}": v for k, v in self.evictions.items()}},
                "keys": {k: self.cells[k].adapter.report() for k in keys[:100]}}

    # -- checkpoint -------------------------------------------------------------------------------
    def partitions(self) -> list[str]:
        """The partitions (``topic:partition``, or ``http``) that hold keys, live or cold."""
        return sorted({p for p, lru in self.recent.items() if lru} | {p for p, c in self.cold.items() if c})

    def snapshot_partition(self, part: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The state of the keys of one partition: their engines (least recently used first) and
        their cold store; what a changelog record of that partition carries."""
        arrays: dict[str, np.ndarray] = {}
        live = []
        for i, key in enumerate(self.recent.get(part, ())):
            a, m = self.cells[key].snapshot()
            arrays.update({f"key/{i}/{k}": v for k, v in a.items()})
            live.append({"key": key, "meta": m})
        cold = list(self.cold.get(part, {}))
        for j, key in enumerate(cold):
            arrays[f"cold/{j}"] = np.frombuffer(self.cold[part][key], dtype=np.uint8)
        return arrays, {"partition": part, "live": live, "cold": cold}

    def release(self, part: str) -> None:
        """Forgets the keys of a partition this daemon no longer owns (their counters stay in the
        sums: this process counted them)."""
        for key in list(self.recent.pop(part, {})):
            c = self.cells.pop(key)
            counts: dict[tuple, Any] = {}
            _summed(c.samples(), counts)
            for k, v in counts.items():
                self._retire(k, v)
            c.close()
            self.home.pop(key, None)
        for key in self.cold.pop(part, {}):
            self.home.pop(key, None)
        self.cold_bytes.pop(part, None)
        self.update_gauges()

    def restore_partition(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Replaces a partition's keys with those of :meth:`snapshot_partition`'s output."""
        part = meta["partition"]
        self.release(part)
        lru = self.recent[part]
        for i, e in enumerate(meta["live"]):
            pre = f"key/{i}/"
            c = Engine(self.pc, self.metrics, register=False)
            c.restore({k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)}, e["meta"])
            c.adapter.force_default = self.force_default
            self.cells[e["key"]] = c
            self.home[e["key"]] = part
            lru[e["key"]] = None
        for j, key in enumerate(meta["cold"]):
            blob = arrays[f"cold/{j}"].tobytes()
            self.cold[part][key] = blob
            self.cold_bytes[part] += len(blob)
            self.home[key] = part
        self.update_gauges()

    def snapshot(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Every partition's keys (:meth:`snapshot_partition`), and the pipeline's sums, in one
        checkpoint."""
        arrays: dict[str, np.ndarray] = {}
        parts = []
        for i, part in enumerate(self.partitions()):
            a, m = self.snapshot_partition(part)
            arrays.update({f"part/{i}/{k}": v for k, v in a.items()})
            parts.append(m)
        meta = {"format_version": FORMAT_VERSION, "family": self.family, "pipeline": self.name,
                **self.adapter.fingerprint(), "keyed": {
                    "key_by": self.key_by, "partitions": parts,
                    "retired": [[*_jsonable_key(k), _jsonable(v)] for k, v in self.retired.items()],
                    "evictions": self.evictions, "restores": self.restores},
                "force_default": self.force_default}
        return arrays, meta

    def restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        kd = meta.get("keyed")
        if kd is None or kd.get("key_by") != self.key_by:
            raise ValueError(f"checkpoint is not of a pipeline keyed by {self.key_by!r} "
                             f"(keyed by {None if kd is None else kd.get('key_by')!r}); move it away to start fresh")
        mine = self.adapter.fingerprint()
        if {k: meta.get(k) for k in mine} != mine:
            raise ValueError("checkpoint was written by a different learner or settings "
                             f"({ {k: meta.get(k) for k in mine} }); move it away to start fresh")
        for part in self.partitions():
            self.release(part)
        self.retired = {}
        for i, m in enumerate(kd["partitions"]):
            pre = f"part/{i}/"
            self.restore_partition({k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)}, m)
        self.retired = {_tuple_key(r[:4]): _from_json(r[4]) for r in kd["retired"]}
        self.evictions, self.restores = dict(kd["evictions"]), int(kd["restores"])
        self.control(bool(meta.get("force_default", self.force_default)))
        self.update_gauges()

def _sample(k: tuple, v: Any) -> Sample:
    name, kind, doc, labels = k
    return Sample(name, kind, doc, dict(labels), v)


def _jsonable_key(k: tuple) -> list:
    return [k[0], k[1], k[2], [list(x) for x in k[3]]]


def _tuple_key(r: list) -> tuple:
    return (r[0], r[1], r[2], tuple(tuple(x) for x in r[3]))


def _jsonable(v: Any) -> Any:
    return v if not isinstance(v, tuple) else [[list(b) for b in v[0]], v[1]]


def _from_json(v: Any) -> Any:
    return v if not isinstance(v, list) else ([tuple(b) for b in v[0]], v[1])
