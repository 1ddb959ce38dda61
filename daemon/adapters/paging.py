"""Paging pipelines: a shadow of one cache node, fed its requests, saying hit or miss and what to evict.

Input records (one JSON object each, Kafka or the sidecar's ``/access``)::

    {"key": "img/42.png"}                      an access (get); key: a string or an integer
    {"key": 42, "op": "delete"}                the real cache dropped the key (also "invalidate")
    {"op": "resize", "capacity": 20000}        the real cache changed size (pages; "bytes" in the byte mode)
    optional everywhere: "id" (a request id: a retried id is not replayed twice), "time" (event
    time, passed through), "size" (bytes; required in the byte mode, else accepted and ignored)

Output, one record per valid input, in input order: ``{"key", "hit", "evicted", "pipeline"}`` for
an access (``evicted``: the key the cache should evict on this miss, or null; a list in the byte
mode), ``{"key", "op": "delete", "present"}`` for a delete, ``{"op": "resize", "capacity",
"evicted": [...]}`` for a resize, plus ``id``/``time`` when given and ``replay``.

String keys are hashed to 64 bits (blake2b); the original key of every page in the cache is kept
(at most ``capacity`` entries) so that evictions name it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any, cast

import numpy as np
import orjson

import learners
from connectors.base import SourceRecord
from learners._hashing import event_keys
from learners.paging import PagingCache
from learners.paging._table import EMPTY

from ..checkpoint import pack_strings, unpack_strings
from ..config import S
from ..family import Adapter, Item, Outputs, Sample, Verb, legacy_lane, register
from ..panels import RATE, SEL, Panel, Target, per, rate
from ..records import BadRecord, Out, dumps_kept, record_id

MAX_KEY_LEN = 4096
MAX_PAGES = 1 << 26  # a resize beyond this many pages is refused (the shadows' arrays would not fit)
MAX_BYTES = 1 << 56  # the largest byte capacity or object size taken
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


class Request(Item):
    """A cache request: ``op`` (0 get, 1 delete, 2 resize), ``key``, ``size`` (bytes, or the new
    capacity of a resize)."""

    __slots__ = ("op", "key", "size")

    def __init__(self, id: str | None, time: float | None, op: int, key: Any, size: int, rec: SourceRecord | None):
        self.id, self.time, self.rec = id, time, rec
        self.replay = rec.replay if rec is not None else False
        self.op, self.key, self.size = op, key, size


class Resize(Request):
    """A resize: runs alone (the cache is rebuilt at the new size)."""

    __slots__ = ()
    barrier = True


SETTINGS = (
    S("cache_window", int, 10_000, "paging: accesses in the recent-window hit ratio", minimum=1),
)


@register
class PagingAdapter(Adapter):
    """Replay, key bookkeeping and metrics of one paging pipeline (a tracker: no feedback)."""

    family = "paging"
    settings = SETTINGS
    verbs = {"access": Verb("events", "requests", "results")}
    panels_title = "Paging with predictions"
    panels = (
        Panel("Cache hit ratio: overall, recent window, baselines", (
            Target(f"max by (pipeline, window) (eddy_cache_hit_ratio{{{SEL}}})", "{{pipeline}} {{window}}"),
            Target(f"max by (pipeline, policy) (eddy_cache_shadow_hit_ratio{{{SEL}}})",
                   "{{pipeline}} baseline {{policy}}"),
        ), "percentunit", "Hit ratio of the advised cache over all accesses and the recent window; of each "
                          "baseline policy replayed on the same stream"),
        Panel("Cache requests and evictions", (
            Target(rate("eddy_cache_requests_total", "pipeline, result"), "{{pipeline}} {{result}}"),
            Target(rate("eddy_cache_evictions_total"), "{{pipeline}} evictions"),
        ), "ops", "Accesses by result, and the pages the cache was told to evict"),
        Panel("Learned bit: precision and recall", (
            Target(f"max by (pipeline) (eddy_cache_bit_precision_ratio{{{SEL}}})", "{{pipeline}} precision"),
            Target(f"max by (pipeline) (eddy_cache_bit_recall_ratio{{{SEL}}})", "{{pipeline}} recall"),
        ), "percentunit", "Quality of the learned 'evict soon' bit on the labels revealed in hindsight"),
        Panel("Robust race: followed policy and switches", (
            Target(f"max by (pipeline, policy) (eddy_cache_leader{{{SEL}}}) == 1", "{{pipeline}} follows {{policy}}"),
            Target(f"sum by (pipeline) (increase(eddy_cache_leader_switches_total{{{SEL}}}[{RATE}]))",
                   "{{pipeline}} switches per window"),
        ), "short", "The raced policy the robust cache follows now (1), and its switches"),
        Panel("Occupancy and predictor history", (
            Target(per(f"max by (pipeline) (eddy_cache_objects{{{SEL}}})",
                       f"max by (pipeline) (eddy_cache_capacity_pages{{{SEL}}})"), "{{pipeline}} cache filled"),
            Target(per(f"max by (pipeline) (eddy_cache_history_entries{{{SEL}}})",
                       f"max by (pipeline) (eddy_cache_history_capacity_entries{{{SEL}}})"),
                   "{{pipeline}} predictor history filled"),
        ), "percentunit", "Pages held over capacity; keys in the bit predictor's history over its cap"),
    )
    ids_required = False

    @classmethod
    def check(cls, pc: dict[str, Any]) -> None:
        lrn = learners.create(pc["learner"], **cls.learner_params(pc))
        for s in pc["shadow_learners"]:  # the baseline shadows run at the same capacity (and byte mode)
            learners.create(s, capacity=lrn.capacity, byte_capacity=lrn.byte_capacity)  # type: ignore[attr-defined]

    def __init__(self, pc: dict[str, Any], metrics, rules):
        super().__init__(pc, metrics, rules)
        self.learner = cast(PagingCache, learners.create(pc["learner"], **self.params))
        self.bytes = int(self.learner.byte_capacity) > 0  # byte-capacity mode: sizes matter
        names = list(dict.fromkeys(["paging-lru", *(pc["shadow_learners"] or DEFAULT_SHADOWS)]))
        self.shadows = {s: self._shadow(s, int(self.learner.capacity)) for s in names}
        self.keys: dict[int, Any] = {}  # original key of each page in the cache
        self.window = np.zeros(pc["cache_window"], dtype=np.int8)  # recent accesses: 1 hit, 0 miss
        self.wpos = 0  # accesses so far (the ring's write position modulo its size)
        self.counts = {"hit": 0, "miss": 0, "evicted": 0, "deleted": 0, "resized": 0}

    def _shadow(self, name: str, capacity: int) -> PagingCache:
        return cast(PagingCache, learners.create(name, capacity=capacity, seed=self.params["seed"],
                                                 byte_capacity=int(self.learner.byte_capacity)))

    # -- decoding ---------------------------------------------------------------------------------
    def decode(self, obj: dict[str, Any], rec: SourceRecord | None) -> Item:
        if len(obj) == 1 and not self.bytes:  # the common record, a bare access: {"key": ...}
            key = obj.get("key")
            if type(key) is str and 0 < len(key) <= MAX_KEY_LEN:
                return Request(None, None, 0, key, 1, rec)
        op_name = obj.get("op", "get")
        op = OPS.get(op_name) if type(op_name) is str else None
        if op is None:
            raise BadRecord("bad_type", f"'op' must be one of {', '.join(OPS)}, got {op_name!r}")
        rid = obj.get("id")
        if rid is not None:
            rid = record_id(obj)
        t = obj.get("time")
        if t is not None:
            t = self.rules.time(obj, rec)
        if op == 2:
            what = "bytes" if self.bytes else "capacity"
            cap = obj.get(what)
            top = MAX_BYTES if self.bytes else MAX_PAGES
            if type(cap) is not int or not 1 <= cap <= top:
                raise BadRecord("bad_type", f"a resize needs {what!r}, an integer from 1 to {top} "
                                f"({'bytes: this cache holds bytes' if self.bytes else 'pages'})")
            return Resize(rid, t, op, None, cap, rec)
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
        if size is not None and (type(size) is not int or not (1 if self.bytes else 0) <= size <= MAX_BYTES):
            raise BadRecord("bad_type", f"'size' must be a positive integer of at most {MAX_BYTES} (bytes)")
        return Request(rid, t, op, key, size or 1, rec)

    # -- replay -----------------------------------------------------------------------------------
    def run(self, items: list[Item], source: str) -> Outputs:
        """Replays a run of accesses and deletes (or one resize) through the cache and the shadows."""
        run = cast(list[Request], items)
        if run[0].op == 2:
            return self._resize(run[0])
        keys = int_keys([r.key for r in run])
        cols = {"key": keys, "op": np.array([r.op for r in run], dtype=np.int64)}
        if self.bytes:
            cols["size"] = np.array([r.size for r in run], dtype=np.int64)
        t0 = time.perf_counter()
        res = self.learner.process(cols)
        for s in self.shadows.values():
            s.process(cols)
        self.kernel_s += time.perf_counter() - t0
        hit, evicts = res["hit"].tolist(), res["evicts"].tolist()
        if self.bytes:  # a miss may evict several objects
            flat, counts = res["evicted_keys"].tolist(), res["evicted_count"].tolist()
            ends = np.cumsum(counts).tolist()
            evicted: list[Any] = [flat[e - c:e] for c, e in zip(counts, ends, strict=True)]
        else:
            evicted = res["evicted"].tolist()
        name, kmap = self.name, self.keys
        outs: list[Out | BadRecord] = []
        bodies: list[dict[str, Any]] = []
        n_hit = n_miss = n_ev = n_del = 0
        win, w, wpos = self.window, self.window.shape[0], self.wpos
        cap_bytes, http = self.learner.byte_capacity, source == "http"
        for r, kint, h, e, ev in zip(run, keys.tolist(), hit, evicts, evicted, strict=True):
            key = r.key
            if r.op == 1:
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
                if h == 0 and (not self.bytes or r.size <= cap_bytes):  # (else not admitted)
                    kmap[kint] = key
                if h == 0:
                    n_miss += 1
                else:
                    n_hit += 1
                win[wpos % w] = h
                wpos += 1
                body = {"key": key, "hit": h == 1, "evicted": gone, "pipeline": name}
            if r.id is not None:
                body["id"] = r.id
            if r.time is not None:
                body["time"] = r.time
            body["replay"] = r.replay
            outs.append(Out("decision", str(key).encode(), dumps_kept(body)))
            if http:
                bodies.append(body)
        self.wpos = wpos
        c = self.counts
        c["hit"] += n_hit
        c["miss"] += n_miss
        c["evicted"] += n_ev
        c["deleted"] += n_del
        return outs, bodies

    def _resize(self, r: Request) -> Outputs:
        """Rebuilds the cache and the shadows at the new capacity (bytes in the byte mode)."""
        before = set(self.keys)
        size = {"byte_capacity" if self.bytes else "capacity": r.size}
        for c in (self.learner, *self.shadows.values()):
            c.resize(**size)
        kept = set(self.learner.view()["keys"].tolist())
        gone = [self.keys.pop(k) for k in before - kept]
        self.counts["resized"] += 1
        self.counts["evicted"] += len(gone)
        body: dict[str, Any] = {"op": "resize", "bytes" if self.bytes else "capacity": r.size, "evicted": gone,
                                "pipeline": self.name}
        if r.id is not None:
            body["id"] = r.id
        if r.time is not None:
            body["time"] = r.time
        body["replay"] = r.replay
        return [Out("decision", b"resize", dumps_kept(body))], [body]

    # -- checkpoint -------------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """The baseline shadows too: their hit ratios are over the whole stream."""
        return {**super().fingerprint(), "shadows": list(self.shadows)}

    def snapshot(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, own = super().snapshot()
        ks = list(self.keys)
        arrays["keys/int"] = np.array(ks, dtype=np.int64)
        arrays["keys/orig"], arrays["keys/orig_ends"] = pack_strings([orjson.dumps(self.keys[k]).decode() for k in ks])
        arrays["window"] = self.window.copy()
        own.update(capacity=int(self.learner.capacity), byte_capacity=int(self.learner.byte_capacity), wpos=self.wpos)
        return arrays, own

    def restore(self, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
        cap, cap_bytes = int(meta["capacity"]), int(meta.get("byte_capacity", 0))
        if (cap, cap_bytes) != (self.learner.capacity, self.learner.byte_capacity):  # resized since start-up
            for c in (self.learner, *self.shadows.values()):
                c.resize(capacity=cap, byte_capacity=cap_bytes if self.bytes else None)
        super().restore(arrays, meta)
        origs = [orjson.loads(o) for o in unpack_strings(arrays["keys/orig"], arrays["keys/orig_ends"])]
        self.keys = dict(zip(arrays["keys/int"].tolist(), origs, strict=True))
        if arrays["window"].shape == self.window.shape:
            self.window = arrays["window"].astype(np.int8)
        self.wpos = int(meta["wpos"])

    def upgrade(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Format 1 (remembered request ids with their outputs: kept as retry answers)."""
        if meta.get("format_version") != 1 or meta.get("family") != "paging":
            return super().upgrade(arrays, meta)
        n = len(arrays["seen/id_ends"])
        arrays["bodies/ids"], arrays["bodies/id_ends"] = arrays["seen/ids"], arrays["seen/id_ends"]
        arrays["bodies/outputs"] = arrays.pop("seen/outputs")
        arrays["bodies/output_ends"] = arrays.pop("seen/output_ends")
        arrays["seen/status"] = np.zeros(n, dtype=np.uint8)
        own: dict[str, Any] = {k: meta[k] for k in ("capacity", "byte_capacity", "wpos") if k in meta}
        return legacy_lane(arrays, meta, {"seen/": "seen/", "bodies/": "bodies/"}, own)

    # -- reports and metrics ----------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        lm = self.learner.metrics()
        return {"hit_ratio": lm["hit_ratio"], "requests": lm["requests"],
                "shadow_hit_ratios": {s: c.metrics()["hit_ratio"] for s, c in self.shadows.items()},
                "learner_metrics": lm}

    def samples(self) -> Iterator[Sample]:
        c, lm = self.counts, self.learner.metrics()
        doc = "Cache accesses replayed, by result (hit, miss)"
        yield Sample("eddy_cache_requests", "counter", doc, {"result": "hit"}, c["hit"])
        yield Sample("eddy_cache_requests", "counter", doc, {"result": "miss"}, c["miss"])
        yield Sample("eddy_cache_evictions", "counter", "Pages the cache was told to evict", {}, c["evicted"])
        yield Sample("eddy_cache_deletes", "counter", "Delete/invalidate events applied", {}, c["deleted"])
        yield Sample("eddy_cache_resizes", "counter", "Resize events applied", {}, c["resized"])
        doc = "Hit ratio of the cache: over all accesses, and over the recent window"
        yield Sample("eddy_cache_hit_ratio", "gauge", doc, {"window": "all"}, lm["hit_ratio"])
        n = min(self.wpos, self.window.shape[0])
        yield Sample("eddy_cache_hit_ratio", "gauge", doc, {"window": "recent"},
                     float(self.window[:n].mean()) if n else 0.0)
        for sname, s in self.shadows.items():
            yield Sample("eddy_cache_shadow_hit_ratio", "gauge", "Hit ratio of a baseline policy replayed on the "
                         "same stream", {"policy": sname}, s.metrics()["hit_ratio"])
        yield Sample("eddy_cache_objects", "gauge", "Objects (pages) the cache holds", {}, lm["size"])
        yield Sample("eddy_cache_capacity_pages", "gauge", "Capacity of the cache in pages", {}, lm["capacity"])
        if self.bytes:
            yield Sample("eddy_cache_capacity_bytes", "gauge", "Capacity of the cache in bytes", {},
                         self.learner.byte_capacity)
        yield Sample("eddy_cache_phase", "gauge", "Phase of the marking algorithm (a count of phases)", {},
                     lm["phase"])
        if "leader" in lm:
            for i, policy in enumerate(self.learner.shadows()):
                yield Sample("eddy_cache_leader", "gauge", "1 for the raced policy the robust cache follows now",
                             {"policy": policy}, float(int(lm["leader"]) == i))
            yield Sample("eddy_cache_following_lru", "gauge", "1 while the robust policy follows LRU", {},
                         lm["following_lru"])
            yield Sample("eddy_cache_leader_switches", "counter", "Switches of the policy the robust cache follows",
                         {}, lm["switches"])
            yield Sample("eddy_cache_switch_margin_misses", "gauge", "Misses by which a raced policy must lead "
                         "before the cache switches to it", {}, lm["switch_margin"])
            for k, v in lm.items():
                if k.startswith("shadow_misses_"):
                    yield Sample("eddy_cache_race_misses", "counter", "Misses of each policy the robust cache "
                                 "races", {"policy": k[len("shadow_misses_"):]}, v)
        if "bit_precision" in lm:
            yield Sample("eddy_cache_bit_precision_ratio", "gauge", "Precision of the learned 'evict soon' bit "
                         "(labels revealed in hindsight)", {}, lm["bit_precision"])
            yield Sample("eddy_cache_bit_recall_ratio", "gauge", "Recall of the learned 'evict soon' bit", {},
                         lm["bit_recall"])
            yield Sample("eddy_cache_bit_labels", "counter", "Hindsight labels the bit predictor learned", {},
                         lm["bit_labels"])
            yield Sample("eddy_cache_history_entries", "gauge", "Keys in the predictor's history", {},
                         lm["history_keys"])
            yield Sample("eddy_cache_history_capacity_entries", "gauge", "Cap of the predictor's history", {},
                         lm["history_cap"])
