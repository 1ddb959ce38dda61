"""Paging pipelines: a shadow of one cache node, fed its requests, saying hit or miss and what to evict.

Input records (one JSON object each, Kafka or the sidecar's ``/access``)::

    {"key": "img/42.png"}                      an access (get); key: a string or an integer
    {"key": 42, "op": "delete"}                the real cache dropped the key (also "invalidate")
    {"op": "resize", "capacity": 20000}        the real cache changed size (pages)
    optional everywhere: "id" (a request id: a retried id is not replayed twice), "time" (event
    time, passed through), "size" (bytes; accepted and ignored: pages are unit-size)

Output, one record per valid input, in input order: ``{"key", "hit", "evicted", "pipeline"}`` for
an access (``evicted``: the key the cache should evict on this miss, or null), ``{"key", "op":
"delete", "present"}`` for a delete, ``{"op": "resize", "capacity", "evicted": [...]}`` for a resize,
plus ``id``/``time`` when given and ``replay`` (true when published again after a restart).
Invalid records go to the dead-letter topic with the reason.

String keys are hashed to 64 bits (blake2b); the original key of every page in the cache is kept
(at most ``capacity`` entries) so that evictions name it. Requests are replayed strictly in log
order, so a replay of the same records gives the same outputs, and the state (cache, predictor,
baseline shadows, key map, remembered ids, recent-window hits) is checkpointed with the offsets.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Any, cast

import numpy as np
import orjson

import learners
from connectors.base import SourceRecord as InRecord
from learners._hashing import event_keys
from learners.paging import PagingCache
from learners.paging._table import EMPTY

from .checkpoint import pack_strings, unpack_strings
from .config import learner_params
from .core import BadRecord, CoreBase, Out, dumps_kept
from .metrics import DaemonMetrics

FORMAT_VERSION = 1
MAX_KEY_LEN = 4096
MAX_ID_LEN = 256
OPS = {"get": 0, "access": 0, "delete": 1, "invalidate": 1, "resize": 2}
DEFAULT_SHADOWS = ("paging-lru", "paging-s3fifo")


def int_keys(keys: list[Any]) -> np.ndarray:
    """64-bit keys: integers as they are, strings hashed (blake2b; never the reserved value)."""
    out = np.empty(len(keys), dtype=np.int64)
    strs = [i for i, k in enumerate(keys) if type(k) is str]
    if strs:
        h = event_keys([keys[i] for i in strs]).view(np.int64)
        h[h == EMPTY] = EMPTY + 1
        out[strs] = h
    for i, k in enumerate(keys):
        if type(k) is int:
            out[i] = k
    return out


class PagingCore(CoreBase):
    """Decoding, replay, key bookkeeping, metrics and checkpoint of one paging pipeline."""

    def __init__(self, pc: dict[str, Any], metrics: DaemonMetrics | None = None):
        self.pc = pc
        self.name = pc["name"]
        self.metrics = metrics or DaemonMetrics()
        self.params = learner_params(pc)
        self.learner = cast(PagingCache, learners.create(pc["learner"], **self.params))
        self.bytes = int(self.learner.byte_capacity) > 0  # byte-capacity mode: sizes matter
        names = list(dict.fromkeys(["paging-lru", *(pc["shadow_learners"] or DEFAULT_SHADOWS)]))
        self.shadows: dict[str, PagingCache] = {s: self._shadow(s, int(self.learner.capacity)) for s in names}
        self.keys: dict[int, Any] = {}  # original key of each page in the cache
        self.seen: OrderedDict[str, bytes] = OrderedDict()  # request id -> its output (retries)
        self.window = np.zeros(pc["cache_window"], dtype=np.int8)  # recent accesses: 1 hit, 0 miss
        self.wpos = 0  # accesses so far (the ring's write position modulo its size)
        self.watermark = -math.inf
        self.pending_out: list[Out] = []
        m, lbl = self.metrics, {"pipeline": self.name}
        self._c_hit = m.cache_requests.labels(result="hit", **lbl)
        self._c_miss = m.cache_requests.labels(result="miss", **lbl)
        self._c_evict = m.cache_evictions.labels(**lbl)
        self._c_delete = m.cache_deletes.labels(**lbl)
        self._c_events = m.events.labels(kind="event", **lbl)

    def _shadow(self, name: str, capacity: int) -> PagingCache:
        return cast(PagingCache, learners.create(name, capacity=capacity, seed=self.params["seed"],
                                                 byte_capacity=int(self.learner.byte_capacity)))

    # -- decoding ---------------------------------------------------------------------------------
    def decode(self, obj: Any, rec: InRecord | None = None) -> tuple[int, Any, int, str | None, float | None]:
        """(op, key, capacity or size, id, time) of one request object; raises BadRecord."""
        if type(obj) is not dict:
            raise BadRecord("bad_type", "a request must be a JSON object")
        op_name = obj.get("op", "get")
        op = OPS.get(op_name) if type(op_name) is str else None
        if op is None:
            raise BadRecord("bad_type", f"'op' must be one of {', '.join(OPS)}, got {op_name!r}")
        rid = obj.get("id")
        if rid is not None:
            rid = self._id(obj)
        t = self._time(obj, rec)
        if op == 2:
            what = "bytes" if self.bytes else "capacity"
            cap = obj.get(what)
            if type(cap) is not int or cap < 1:
                raise BadRecord("bad_type", f"a resize needs {what!r}, a positive integer "
                                f"({'bytes: this cache holds bytes' if self.bytes else 'pages'})")
            return op, None, cap, rid, t
        key = obj.get("key")
        if key is None:
            raise BadRecord("missing_field", "'key' is required")
        if type(key) is str:
            if not key or len(key) > MAX_KEY_LEN:
                raise BadRecord("bad_type", f"'key' must be a non-empty string of at most {MAX_KEY_LEN} characters")
        elif type(key) is int:
            if not -(2**63) < key < 2**63:
                raise BadRecord("bad_type", "an integer 'key' must fit 64 bits (and not be -2**63)")
        else:
            raise BadRecord("bad_type", "'key' must be a string or an integer")
        size = obj.get("size")
        if size is None and self.bytes and op == 0:
            raise BadRecord("missing_field", "'size' is required: this cache holds bytes (byte_capacity)")
        if size is not None and (type(size) is not int or size < (1 if self.bytes else 0)):
            raise BadRecord("bad_type", "'size' must be a positive integer (bytes)")
        return op, key, size or 1, rid, t

    # -- the log-order loop -----------------------------------------------------------------------
    def handle(self, records: list[InRecord]) -> list[Out]:
        """Replays records in order; returns the outputs and dead letters to publish."""
        out: list[Out] = []
        run: list[tuple[int, Any, int, str | None, float | None, bool]] = []
        run_ids: set[str] = set()
        for rec in records:
            try:
                obj = self.parse(rec)
                op, key, cap, rid, t = self.decode(obj, rec)
                if rid is not None and (rid in self.seen or rid in run_ids):
                    raise BadRecord("duplicate_event", f"request id {rid!r} was already replayed")
            except BadRecord as e:
                out.append(self._reject(e.reason, e.detail, rec))
                continue
            if op == 2:
                out += self._flush(run, run_ids)
                out.append(self._resize(cap, rid, t, rec.replay))
            else:
                run.append((op, key, cap, rid, t, rec.replay))
                if rid is not None:
                    run_ids.add(rid)
        out += self._flush(run, run_ids)
        self._c_events.inc(len(records))
        self.update_gauges()
        return out

    def _flush(self, run: list, run_ids: set[str], source: str = "kafka") -> list[Out]:
        """Replays a run of accesses and deletes through the cache and the baseline shadows."""
        if not run:
            return []
        ops = np.array([r[0] for r in run], dtype=np.int64)
        keys = int_keys([r[1] for r in run])
        cols = {"key": keys, "op": ops}
        if self.bytes:
            cols["size"] = np.array([r[2] for r in run], dtype=np.int64)
        res = self.learner.process(cols)
        for s in self.shadows.values():
            s.process(cols)
        hit, evicts = res["hit"].tolist(), res["evicts"].tolist()
        if self.bytes:  # a miss may evict several objects
            flat, counts = res["evicted_keys"].tolist(), res["evicted_count"].tolist()
            ends = np.cumsum(counts).tolist()
            evicted: list[Any] = [flat[e - c:e] for c, e in zip(counts, ends, strict=True)]
        else:
            evicted = res["evicted"].tolist()
        name, kmap, outs = self.name, self.keys, []
        n_hit = n_miss = n_ev = n_del = 0
        win, w, wpos = self.window, self.window.shape[0], self.wpos
        n_replay = 0
        for (op, key, size, rid, t, replay), kint, h, e, ev in zip(run, keys.tolist(), hit, evicts, evicted,
                                                                strict=True):
            if op == 1:
                n_del += 1
                present = kmap.pop(kint, None) is not None
                body: dict[str, Any] = {"key": key, "op": "delete", "present": present, "pipeline": name}
            else:
                if self.bytes:
                    gone: Any = [kmap.pop(q) for q in ev]
                    n_ev += len(ev)
                else:
                    gone = kmap.pop(ev, None) if e else None
                    n_ev += e
                if h == 0 and (not self.bytes or size <= self.learner.byte_capacity):  # (else not admitted)
                    kmap[kint] = key
                if h == 0:
                    n_miss += 1
                else:
                    n_hit += 1
                win[wpos % w] = h
                wpos += 1
                body = {"key": key, "hit": h == 1, "evicted": gone, "pipeline": name}
            if rid is not None:
                body["id"] = rid
            if t is not None:
                body["time"] = t
                if t > self.watermark:
                    self.watermark = t
            body["replay"] = replay
            n_replay += replay
            raw = dumps_kept(body)
            if rid is not None:
                self._remember(rid, raw)
            outs.append(Out("decision", str(key).encode(), raw))
        self.wpos = wpos
        self._c_hit.inc(n_hit)
        self._c_miss.inc(n_miss)
        self._c_evict.inc(n_ev)
        self._c_delete.inc(n_del)
        if n_replay:
            self.metrics.replays.labels(pipeline=name).inc(n_replay)
        self.metrics.decisions.labels(pipeline=name, source=source).inc(len(run))
        run.clear()
        run_ids.clear()
        return outs

    def _remember(self, rid: str, raw: bytes) -> None:
        self.seen[rid] = raw
        if len(self.seen) > self.pc["dedup_cap"]:
            self.seen.popitem(last=False)
            self.metrics.cap_evictions.labels(pipeline=self.name, cap="dedup").inc()

    def _resize(self, capacity: int, rid: str | None, t: float | None, replay: bool = False) -> Out:
        """Rebuilds the cache and the shadows at ``capacity`` pages (bytes in the byte mode; see
        :meth:`PagingCache.resize`)."""
        before = set(self.keys)
        for c in (self.learner, *self.shadows.values()):
            if self.bytes:
                c.resize(int(c.capacity), byte_capacity=capacity)
            else:
                c.resize(capacity)
        kept = set(self.learner.contents().tolist())
        gone = [self.keys.pop(k) for k in before - kept]
        self.metrics.cache_resizes.labels(pipeline=self.name).inc()
        self._c_evict.inc(len(gone))
        body: dict[str, Any] = {"op": "resize", "bytes" if self.bytes else "capacity": capacity, "evicted": gone,
                                "pipeline": self.name}
        if rid is not None:
            body["id"] = rid
        if t is not None:
            body["time"] = t
        body["replay"] = replay
        raw = dumps_kept(body)
        if rid is not None:
            self._remember(rid, raw)
        return Out("decision", b"resize", raw)

    # -- the sidecar's entry point ----------------------------------------------------------------
    def access_objects(self, objs: list[Any]) -> list[dict]:
        """Replays requests from /access; a retried id returns its first answer unchanged.

        Raises :class:`BadRecord` for the first invalid object (nothing is replayed then).
        """
        decoded, ids = [], set()
        for i, obj in enumerate(objs):
            try:
                d = self.decode(obj)
            except BadRecord as e:
                raise BadRecord(e.reason, f"item {i}: {e.detail}") from None
            rid = d[3]
            if rid is not None and rid not in self.seen:
                if rid in ids:
                    raise BadRecord("duplicate_event", f"item {i}: request id {rid!r} appears twice in one request")
                ids.add(rid)
            decoded.append(d)
        results: list[dict] = []
        run: list = []
        run_ids: set[str] = set()
        pending: list[int] = []  # positions in results waiting for the run's replay

        def flush() -> None:
            for pos, o in zip(pending, self._flush(run, run_ids, "http"), strict=True):
                results[pos] = orjson.loads(o.value)
            pending.clear()

        for op, key, cap, rid, t in decoded:
            if rid is not None and rid in self.seen:
                results.append(orjson.loads(self.seen[rid]))
                continue
            if op == 2:
                flush()
                results.append(orjson.loads(self._resize(cap, rid, t).value))
                continue
            pending.append(len(results))
            results.append({})
            run.append((op, key, cap, rid, t, False))
        flush()
        self.update_gauges()
        return results

    # -- gauges -----------------------------------------------------------------------------------
    def update_gauges(self) -> None:
        m, lbl = self.metrics, self.name
        lm = self.learner.metrics()
        m.cache_hit_ratio.labels(pipeline=lbl, window="all").set(lm["hit_ratio"])
        n = min(self.wpos, self.window.shape[0])
        m.cache_hit_ratio.labels(pipeline=lbl, window="recent").set(float(self.window[:n].mean()) if n else 0.0)
        for sname, s in self.shadows.items():
            m.cache_shadow_hit_ratio.labels(pipeline=lbl, policy=sname).set(s.metrics()["hit_ratio"])
        for k, v in lm.items():
            m.learner.labels(pipeline=lbl, name=k).set(v)
        m.dedup_size.labels(pipeline=lbl).set(len(self.seen))

    def report(self) -> dict[str, Any]:
        lm = self.learner.metrics()
        return {"pipeline": self.name, "learner": self.pc["learner"], "hit_ratio": lm["hit_ratio"],
                "requests": lm["requests"],
                "shadow_hit_ratios": {s: c.metrics()["hit_ratio"] for s, c in self.shadows.items()},
                "learner_metrics": lm}

    # -- checkpoint -------------------------------------------------------------------------------
    def snapshot(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays: dict[str, np.ndarray] = {f"learner/{k}": v for k, v in self.learner.snapshot().items()}
        for sname, s in self.shadows.items():
            arrays.update({f"shadow/{sname}/{k}": v for k, v in s.snapshot().items()})
        ks = list(self.keys)
        arrays["keys/int"] = np.array(ks, dtype=np.int64)
        arrays["keys/orig"], arrays["keys/orig_ends"] = pack_strings([orjson.dumps(self.keys[k]).decode() for k in ks])
        arrays["seen/ids"], arrays["seen/id_ends"] = pack_strings(list(self.seen))
        arrays["seen/outputs"], arrays["seen/output_ends"] = pack_strings(list(self.seen.values()))
        arrays["window"] = self.window.copy()
        meta = {"format_version": FORMAT_VERSION, "family": "paging", "pipeline": self.name,
                "learner": self.pc["learner"], "params": self.params, "shadows": list(self.shadows),
                "capacity": int(self.learner.capacity), "byte_capacity": int(self.learner.byte_capacity),
                "wpos": self.wpos,
                "watermark": self.watermark if math.isfinite(self.watermark) else None, "written_at": time.time()}
        return arrays, meta

    def restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        if meta.get("format_version") != FORMAT_VERSION or meta.get("family") != "paging":
            raise ValueError(f"checkpoint is not a paging checkpoint of format {FORMAT_VERSION}")
        if meta.get("learner") != self.pc["learner"] or meta.get("params") != self.params \
                or meta.get("shadows") != list(self.shadows):
            raise ValueError("checkpoint was written by a different learner, parameters or shadows "
                             f"({meta.get('learner')}, {meta.get('params')}); move it away to start fresh")
        cap, cap_bytes = int(meta["capacity"]), int(meta.get("byte_capacity", 0))
        if (cap, cap_bytes) != (self.learner.capacity, self.learner.byte_capacity):  # resized since start-up
            for c in (self.learner, *self.shadows.values()):
                c.resize(cap, byte_capacity=cap_bytes if self.bytes else None)
        self.learner.restore({k[8:]: v for k, v in arrays.items() if k.startswith("learner/")})
        for sname, s in self.shadows.items():
            pre = f"shadow/{sname}/"
            s.restore({k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)})
        origs = [orjson.loads(o) for o in unpack_strings(arrays["keys/orig"], arrays["keys/orig_ends"])]
        self.keys = dict(zip(arrays["keys/int"].tolist(), origs, strict=True))
        self.seen = OrderedDict(zip(unpack_strings(arrays["seen/ids"], arrays["seen/id_ends"]),
                                    unpack_strings(arrays["seen/outputs"], arrays["seen/output_ends"], as_bytes=True),
                                    strict=True))
        if arrays["window"].shape == self.window.shape:
            self.window = arrays["window"].astype(np.int8)
        self.wpos = int(meta["wpos"])
        w = meta.get("watermark")
        self.watermark = -math.inf if w is None else float(w)
        self.update_gauges()
