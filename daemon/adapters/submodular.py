"""Dynamic submodular pipelines: a k-element summary of the live items, kept while items arrive,
leave and expire (a tracker: no feedback).

Input records (one JSON object each, Kafka or the sidecar's ``/items``)::

    {"id": "doc-17", "features": [0.2, 0, 1.5, ...], "time": 1700000000.0}   an insertion ("op": "insert")
    {"id": "doc-17", "features": {"sports": 1.0, "len": 0.3}, "ttl": 3600}  named features, hashed
    {"op": "delete", "id": "doc-17"}                                          a deletion
    {"op": "get"}                                                              the current set, now

``features``: for ``feature-based`` and ``facility-location`` a list of the objective's ``d``
numbers, or a name→value object hashed into ``d`` slots (unsigned: values of colliding names add);
for ``coverage`` a name→weight object (weights >= 0), or a list of concept names or indices (weight
1), hashed (names) into the objective's ``m`` concepts. ``ttl`` (seconds of event time; default the
pipeline's ``item_ttl_s``, 0: none) expires the item without a delete record; the learner's
``window`` deletes the item inserted that many live items ago.

Output, one record per valid input, in input order: ``{"pipeline", "op", "id", "changed", "value",
"size", "time", "replay"}``, with the current ``solution`` (ids), ``added`` and ``removed`` ids when
the summary changed (and always for ``get``). Dead-letter reasons: ``duplicate_item`` (an id already
live), ``unknown_item`` (a delete of an id not live), ``bad_features``. ``GET
/v1/pipelines/<name>/solution`` answers the current set.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from typing import Any, cast

import numpy as np

import learners
from connectors.base import SourceRecord
from learners._hashing import event_keys
from learners.submodular import SubmodularSummary

from ..checkpoint import pack_strings, unpack_strings
from ..config import S
from ..family import Adapter, Histogram, Item, Outputs, Sample, Verb, register
from ..panels import SEL, Panel, Target, per, quantile, rate
from ..records import BadRecord, Out, dumps_kept, record_id

OPS = {"insert": 0, "delete": 1, "get": 2}
UPDATE_BUCKETS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)
MAX_NAMES = 4096


class Op(Item):
    """One operation: ``op`` (0 insert, 1 delete, 2 get), the item's id ``iid``, its ``row``
    (dense: d numbers; coverage: (indices, values)) and ``ttl``."""

    __slots__ = ("op", "iid", "row", "ttl")

    def __init__(self, op: int, iid: str | None, row: Any, ttl: float, t: float | None, rec: SourceRecord | None):
        self.id, self.time, self.rec = None, t, rec  # (item ids are the family's: not the engine's event ids)
        self.replay = rec.replay if rec is not None else False
        self.op, self.iid, self.row, self.ttl = op, iid, row, ttl


SETTINGS = (
    S("item_ttl_s", float, 0.0, "submodular: event-time seconds an item lives unless its record gives 'ttl' "
      "(0: until deleted, the window or the live cap)", minimum=0.0),
    S("greedy_check_every", int, 1000, "submodular: every this many operations, lazy greedy is run on the live "
      "items and the served value's ratio to it is exported (eddy_summary_greedy_ratio); 0: never", minimum=0),
)


def _slots(names: list[str], dim: int) -> np.ndarray:
    return (event_keys(names) % np.uint64(dim)).astype(np.int64)


_UPD = 'kind=~"inserts|deletes"'  # the operations a summary update costs


@register
class SubmodularAdapter(Adapter):
    """Item bookkeeping (ids, hashing, TTLs), outputs and metrics of one summary pipeline."""

    family = "submodular"
    settings = SETTINGS
    verbs = {"items": Verb("events", "items", "results")}
    views = {"solution": "solution"}
    panels_title = "Dynamic submodular summary"
    panels = (
        Panel("Summary value: served and guaranteed", (
            Target(f"max by (pipeline) (eddy_summary_value{{{SEL}}})", "{{pipeline}} served"),
            Target(f"max by (pipeline) (eddy_summary_guaranteed_value{{{SEL}}})", "{{pipeline}} guaranteed"),
        ), "short", "Objective value of the served summary, and of the dynamic algorithm's own solution"),
        Panel("Ratio to lazy greedy", (
            Target(f"max by (pipeline) (eddy_summary_greedy_ratio{{{SEL}}})", "{{pipeline}}"),
        ), "percentunit", "Served value over lazy greedy's on the live items, at the last check "
                          "(greedy_check_every)"),
        Panel("Cost per update: oracle calls and recourse", (
            Target(per(rate("eddy_summary_oracle_calls_total"), rate("eddy_summary_operations_total", where=_UPD)),
                   "{{pipeline}} oracle calls"),
            Target(per(rate("eddy_summary_recourse_total"), rate("eddy_summary_operations_total", where=_UPD)),
                   "{{pipeline}} summary changes"),
        ), "short", "Marginal-gain evaluations and items entering or leaving the summary, per insert or delete"),
        Panel("Update latency", (
            Target(quantile(0.5, "eddy_summary_update_seconds"), "{{pipeline}} p50"),
            Target(quantile(0.99, "eddy_summary_update_seconds"), "{{pipeline}} p99"),
        ), "s", "Seconds per insert or delete (expiries included)"),
        Panel("Items: live, summary, operations", (
            Target(f"max by (pipeline) (eddy_summary_live_items{{{SEL}}})", "{{pipeline}} live"),
            Target(f"max by (pipeline) (eddy_summary_size{{{SEL}}})", "{{pipeline}} in the summary"),
            Target(rate("eddy_summary_operations_total", "pipeline, kind"), "{{pipeline}} {{kind}} per s"),
        ), "short", "Live items, the served summary's size, and operations applied by kind"),
    )
    ids_required = False
    rejects_in_runs = True

    def __init__(self, pc: dict[str, Any], metrics, rules):
        super().__init__(pc, metrics, rules)
        self.learner = cast(SubmodularSummary, learners.create(pc["learner"], **self.params))
        o = self.learner.item_objective
        self.sparse = o.sparse
        self.dim = o.m if o.sparse else int(getattr(o, "d", o.m))
        self.ttl = float(pc["item_ttl_s"])
        self.ids: dict[int, str] = {}  # key -> id of every live item
        self.clock = -math.inf  # the latest event time seen
        self.counts = {"duplicate": 0, "unknown": 0}
        self.check_every = int(pc["greedy_check_every"])
        self.since_check = 0
        self.greedy_ratio: float | None = None  # the served value over lazy greedy's, at the last check
        self.update_s = Histogram(UPDATE_BUCKETS)  # seconds per insert or delete (the learner's call)

    # -- decoding ---------------------------------------------------------------------------------
    def decode(self, obj: dict[str, Any], rec: SourceRecord | None) -> Item:
        name = obj.get("op", "insert")
        op = OPS.get(name) if type(name) is str else None
        if op is None:
            raise BadRecord("bad_type", f"'op' must be one of {', '.join(OPS)}, got {name!r}")
        t = self.rules.time(obj, rec) if obj.get("time") is not None or rec is not None else None
        if op == 2:
            return Op(2, None, None, math.nan, t, rec)
        iid = record_id(obj)
        if op == 1:
            return Op(1, iid, None, math.nan, t, rec)
        if "features" not in obj:
            raise BadRecord("missing_field", "an insertion needs 'features'")
        row = self._row(obj["features"])
        ttl = obj.get("ttl", self.ttl)
        if type(ttl) is bool or not isinstance(ttl, int | float) or not (ttl >= 0 and math.isfinite(ttl)):
            raise BadRecord("bad_type", "'ttl' must be a number of seconds >= 0")
        return Op(0, iid, row, float(ttl), t, rec)

    def validate(self, obj: dict[str, Any]) -> None:
        self.decode(obj, None)

    def _row(self, f: Any) -> Any:
        dim = self.dim
        if self.sparse:
            if isinstance(f, dict):
                if not f or len(f) > MAX_NAMES:
                    raise BadRecord("bad_features", f"'features' must name 1 to {MAX_NAMES} concepts")
                vals = list(f.values())
                if not all(type(v) in (int, float) and math.isfinite(v) and v >= 0 for v in vals):
                    raise BadRecord("bad_features", "coverage weights must be finite numbers >= 0")
                idx = _slots([str(k) for k in f], dim)
                v = np.array(vals, dtype=np.float64)
            elif isinstance(f, list) and f and len(f) <= MAX_NAMES:
                if all(type(x) is int for x in f):
                    if not all(0 <= x < dim for x in f):
                        raise BadRecord("bad_features", f"concept indices must lie in [0, {dim})")
                    idx = np.array(f, dtype=np.int64)
                elif all(type(x) is str for x in f):
                    idx = _slots(f, dim)
                else:
                    raise BadRecord("bad_features", "a concept list holds names or indices, not both")
                v = np.ones(len(idx))
            else:
                raise BadRecord("bad_features", f"'features' must be a name→weight object or a list of 1 to "
                                f"{MAX_NAMES} concepts")
            # Hashed names may collide: one entry per concept, the largest weight.
            u, inv = np.unique(idx, return_inverse=True)
            w = np.zeros(len(u))
            np.maximum.at(w, inv, v)
            if len(u) > self.learner.max_nnz:
                raise BadRecord("bad_features", f"{len(u)} concepts > max_nnz={self.learner.max_nnz}")
            return u, w
        if isinstance(f, list):
            if len(f) != dim or not all(type(x) in (int, float) for x in f):
                raise BadRecord("bad_features", f"'features' must be a list of {dim} numbers")
            x = np.array(f, dtype=np.float64)
        elif isinstance(f, dict):
            if not f or len(f) > MAX_NAMES or not all(type(v) in (int, float) for v in f.values()):
                raise BadRecord("bad_features", f"'features' must map 1 to {MAX_NAMES} names to numbers")
            x = np.zeros(dim)
            np.add.at(x, _slots([str(k) for k in f], dim), np.array(list(f.values()), dtype=np.float64))
        else:
            raise BadRecord("bad_features", f"'features' must be a list of {dim} numbers or a name→number object")
        if not np.isfinite(x).all():
            raise BadRecord("bad_features", "'features' must be finite numbers")
        if self.learner.objective == "feature-based" and (x < 0).any():
            raise BadRecord("bad_features", "feature-based objectives take non-negative features")
        return x

    # -- applying ---------------------------------------------------------------------------------
    def run(self, items: list[Item], source: str) -> Outputs:
        ops = cast(list[Op], items)
        outs: list[Out | BadRecord] = []
        bodies: list[dict[str, Any] | None] = []
        http = source == "http"
        lrn = self.learner
        for r in ops:  # one operation at a time: each output names what it changed
            if r.time is not None and r.time > self.clock:
                self.clock = r.time
            before = {int(k) for k in lrn.view()["keys"]}
            live = lrn.live_keys()
            t0 = time.perf_counter()
            if r.op < 2:
                key = int(event_keys([cast(str, r.iid)])[0])
                status = int(lrn.process(self._batch(r, key))["status"][0])
            else:  # a get still expires what is due
                status = 0
                lrn.advance(self.clock)
            dt = time.perf_counter() - t0
            self.kernel_s += dt
            if r.op < 2:
                self.update_s.observe(dt)
            if status:
                which = ("duplicate", "unknown")[status - 1]
                self.counts[which] += 1
                outs.append(BadRecord(f"{which}_item", f"item {r.iid!r} is live already" if status == 1
                                      else f"no live item {r.iid!r}"))
                bodies.append(None)
                self.rejected = True
                continue
            if r.op == 0:
                self.ids[key] = cast(str, r.iid)
            gone = {k: self.ids.pop(k) for k in live - lrn.live_keys() if k in self.ids}
            view = lrn.view()
            after = [int(k) for k in view["keys"]]
            served = float(view["value"][0])
            changed = set(after) != before
            body: dict[str, Any] = {"pipeline": self.name, "op": ("insert", "delete", "get")[r.op]}
            if r.iid is not None:
                body["id"] = r.iid
            body.update(changed=changed, value=served, size=len(after))
            if changed or r.op == 2:
                body["solution"] = [self.ids[k] for k in after]
                body["added"] = [self.ids[k] for k in after if k not in before]
                body["removed"] = [gone.get(k) or self.ids[k] for k in before - set(after)]
            body["time"], body["replay"] = r.time, r.replay
            outs.append(Out("decision", (r.iid or "get").encode(), dumps_kept(body)))
            bodies.append(body if http else None)
            self.since_check += 1
            if self.check_every and self.since_check >= self.check_every:
                self.since_check = 0
                best = lrn.offline_greedy()
                self.greedy_ratio = served / best if best > 0 else 1.0
        return outs, bodies

    def _batch(self, r: Op, key: int) -> dict[str, np.ndarray]:
        """The learner's batch of one insert or delete."""
        b: dict[str, np.ndarray] = {"op": np.array([r.op], dtype=np.int8), "item_key": np.array([key], np.uint64)}
        known = self.clock > -math.inf
        if known:
            b["time"] = np.array([self.clock])
        if r.op == 0:
            b["expires"] = np.array([self.clock + r.ttl if r.ttl > 0 and known else math.nan])
        if self.sparse:
            idx, val = r.row if r.op == 0 else (np.zeros(0, np.int64), np.zeros(0))
            b.update(offsets=np.array([0, len(idx)], dtype=np.int64), indices=idx, values=val)
        else:
            b["features"] = r.row.reshape(1, -1) if r.op == 0 else np.zeros((1, self.dim))
        return b

    # -- views, checkpoint ------------------------------------------------------------------------
    def solution(self) -> dict[str, Any]:
        """The current set (``GET .../solution``)."""
        keys = [int(k) for k in self.learner.view()["keys"]]
        return {"pipeline": self.name, "solution": [self.ids[k] for k in keys],
                "value": float(self.learner.view()["value"][0]), "live_items": len(self.learner)}

    def snapshot(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, own = super().snapshot()
        ks = list(self.ids)
        arrays["ids/key"] = np.array(ks, dtype=np.uint64)
        arrays["ids/id"], arrays["ids/id_ends"] = pack_strings([self.ids[k] for k in ks])
        arrays["stats/update_seconds"] = self.update_s.to_array()
        own.update(clock=self.clock if self.clock > -math.inf else None, counts=dict(self.counts),
                   sizes={s: getattr(self.learner, s) for s in self.learner.size_settings})
        return arrays, own

    def restore(self, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
        super().restore(arrays, meta)
        ids = unpack_strings(arrays["ids/id"], arrays["ids/id_ends"])
        self.ids = dict(zip((int(k) for k in arrays["ids/key"]), ids, strict=True))
        self.clock = -math.inf if meta.get("clock") is None else float(meta["clock"])
        self.counts.update(meta.get("counts", {}))
        if "stats/update_seconds" in arrays:
            self.update_s.load(np.asarray(arrays["stats/update_seconds"], dtype=np.float64))

    # -- reports and metrics ----------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        return {**self.solution(), "rejected": dict(self.counts), "learner_metrics": self.learner.metrics()}

    def samples(self) -> Iterator[Sample]:
        m = self.learner.metrics()
        yield Sample("eddy_summary_value", "gauge", "Objective value of the served summary", {}, m["value"])
        if "guaranteed_value" in m:
            yield Sample("eddy_summary_guaranteed_value", "gauge", "Objective value of the dynamic algorithm's own "
                         "(guaranteed) solution", {}, m["guaranteed_value"])
            yield Sample("eddy_summary_guesses", "gauge", "OPT guesses the dynamic algorithm keeps", {}, m["guesses"])
        yield Sample("eddy_summary_size", "gauge", "Items in the served summary", {},
                     len(self.learner.view()["keys"]))
        yield Sample("eddy_summary_live_items", "gauge", "Live items", {}, m["live_items"])
        yield Sample("eddy_summary_capacity_items", "gauge", "Live items at most (the learner's capacity)", {},
                     m["capacity_items"])
        yield Sample("eddy_summary_oracle_calls", "counter", "Marginal-gain evaluations (oracle calls)", {},
                     m["oracle_calls"])
        doc = "Operations applied, by kind"
        for kind in ("inserts", "deletes", "expired", "evicted"):
            yield Sample("eddy_summary_operations", "counter", doc, {"kind": kind}, m[kind])
        yield Sample("eddy_summary_recourse", "counter", "Items that entered or left the served summary", {},
                     m["recourse"])
        yield Sample("eddy_summary_update_seconds", "histogram", "Seconds per insert or delete (the summary's "
                     "update, expiries included)", {}, self.update_s.value())
        if self.greedy_ratio is not None:
            yield Sample("eddy_summary_greedy_ratio", "gauge", "Served value over lazy greedy's on the live items, "
                         "at the last check (greedy_check_every)", {}, self.greedy_ratio)
