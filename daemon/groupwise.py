"""Groupwise pipelines: predictions that must be good on every group, labels joined later by id.

Input records (one JSON object each, Kafka or the sidecar's ``/predict`` and ``/label``)::

    {"id": "app-1", "features": {"income": 0.4, "region": "north", "bias": 1},
     "groups": ["segment-a"], "time": 1700000000.0}          an event (predicted at once)
    {"id": "app-1", "features": {...}, "label": 1.0}         an event with its label
    {"type": "label", "id": "app-1", "label": 0.0, "time": ...}   a label, later

``features``: a name→value object (numbers hashed into ``n_features``; a string value v of feature
k counts as the indicator "k=v") or a list of ``n_features`` numbers. ``groups``: names among the
configured ones; further memberships come from ``group_rules`` (name → rule over the raw features,
:mod:`learners.groupwise.rules`; never eval). Every event also belongs to ``always_on``.

Output: ``{"id", "pipeline", "prediction", "groups", "default", "reason", "time", "replay"}``.
``default`` is true (with ``reason``) while the model is not ready (``min_learned_events``) or a
default is forced: the prediction is then ``default_prediction``.

A label that has not arrived within ``reward_wait_s`` of event time is not invented: the event
leaves the buffer unlearned and is counted (``eddy_labels_total{outcome="expired"}``). Labels are
learned in log-order blocks (``learn_every_events``), so outputs do not depend on batching or
restarts; the buffer, the waiting labels and the model are checkpointed together.
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
from learners._hashing import FeatureHasher, event_keys
from learners.groupwise import GroupwiseRegressor
from learners.groupwise.rules import parse

from .checkpoint import pack_strings, unpack_strings
from .config import learner_params
from .core import BadRecord, CoreBase, Out, dumps_kept
from .metrics import DaemonMetrics

FORMAT_VERSION = 1
PENDING, LEARNED, EXPIRED = 0, 1, 2


class GroupwiseCore(CoreBase):
    """Decoding, predictions, the label join, group metrics and checkpoint of a groupwise pipeline."""

    def __init__(self, pc: dict[str, Any], metrics: DaemonMetrics | None = None):
        self.pc = pc
        self.name = pc["name"]
        self.metrics = metrics or DaemonMetrics()
        self.params = learner_params(pc)
        self.learner = cast(GroupwiseRegressor, learners.create(pc["learner"], **self.params))
        self.shadows: dict[str, Any] = {}
        self.d = int(self.learner.n_features)
        self.rules = [(name, parse(text)) for name, text in pc["group_rules"].items()]
        self.group_col = {g: i for i, g in enumerate(self.learner.groups)}
        self.hasher = FeatureHasher(self.d, pc["feature_cache"])
        self.wait_s = float(pc["reward_wait_s"])
        self.learn_every = int(pc["learn_every_events"])
        # Events waiting for a label: id -> (deadline, x, membership row); insertion = expiry order.
        self.buffer: OrderedDict[str, tuple[float, np.ndarray, np.ndarray]] = OrderedDict()
        self.queue: list[tuple[np.ndarray, np.ndarray, float]] = []  # labelled rows waiting for a block
        self.seen: OrderedDict[str, int] = OrderedDict()  # id -> PENDING / LEARNED / EXPIRED
        self.bodies: dict[str, bytes] = {}  # outputs of HTTP predictions (retries)
        self.since_learn = 0
        self.watermark = -math.inf
        self.force_default = bool(pc["force_default"])
        self.pending_out: list[Out] = []
        self._gauges_at = 0.0
        m, lbl = self.metrics, {"pipeline": self.name}
        self._c_events = m.events.labels(kind="event", **lbl)
        self._c_labels_in = m.events.labels(kind="label", **lbl)
        self._c_joined = m.labels.labels(outcome="joined", **lbl)
        self._c_expired = m.labels.labels(outcome="expired", **lbl)
        self._c_evicted = m.labels.labels(outcome="evicted", **lbl)
        m.join_cap.labels(**lbl).set(pc["join_buffer_cap"])

    # -- decoding ---------------------------------------------------------------------------------
    def _features(self, obj: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        feats = obj.get("features")
        if feats is None:
            raise BadRecord("missing_field", "'features' is required")
        x = np.zeros(self.d)
        if type(feats) is dict:
            num: dict[str, float] = {}
            for k, v in feats.items():
                if isinstance(v, str):
                    num[f"{k}={v}"] = 1.0
                elif isinstance(v, bool):
                    num[k] = float(v)
                else:
                    num[k] = v
            try:
                cols, vals = self.hasher.sparse(num)
            except TypeError as e:
                raise BadRecord("bad_type", f"features[{e.args[0]!r}] must be a number, string or boolean") from None
            with np.errstate(over="ignore"):  # an overflow is rejected below
                np.add.at(x, cols, vals)
            raw = feats
        elif type(feats) is list:
            if len(feats) != self.d or any(isinstance(a, bool) or not isinstance(a, int | float) for a in feats):
                raise BadRecord("bad_type", f"features as a list must be {self.d} numbers")
            x = np.array(feats, dtype=np.float64)
            raw = {}
        else:
            raise BadRecord("bad_type", "'features' must be a name→value object or a list of numbers")
        if not np.isfinite(x).all():  # JSON numbers are finite: only a hashed column's sum can overflow
            raise BadRecord("non_finite", "features sum to inf in a hashed column")
        return x, raw

    def _member(self, obj: dict[str, Any], raw: dict[str, Any]) -> np.ndarray:
        row = np.zeros(len(self.group_col), dtype=np.int64)
        groups = obj.get("groups", [])
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise BadRecord("bad_type", "'groups' must be a list of group names")
        for g in groups:
            col = self.group_col.get(g)
            if col is None:
                raise BadRecord("unknown_group", f"group {g!r} is not configured; groups: {list(self.group_col)}")
            row[col] = 1
        for name, rule in self.rules:
            if rule(raw):
                row[self.group_col[name]] = 1
        return row

    @staticmethod
    def _label(obj: dict[str, Any], required: bool) -> float | None:
        y = obj.get("label")
        if y is None:
            if required:
                raise BadRecord("missing_field", "'label' is required")
            return None
        if isinstance(y, bool) or not isinstance(y, int | float):  # (JSON numbers are finite)
            raise BadRecord("bad_type", "'label' must be a number")
        return float(y)

    # -- the log-order loop -----------------------------------------------------------------------
    def handle(self, records: list[InRecord]) -> list[Out]:
        out: list[Out] = []
        run: list[tuple[str, np.ndarray, np.ndarray, float | None, bool, float | None]] = []
        n_ev = n_lb = 0
        for rec in records:
            try:
                obj = self.parse(rec)
                kind = obj.get("type", "event")
                if kind == "event":
                    n_ev += 1
                    self._admit(self._decode(obj, rec), rec.replay, run, out)
                elif kind == "label":
                    n_lb += 1
                    eid, t, y = self._id(obj), self._time(obj, rec), self._label(obj, True)
                    if any(r[0] == eid for r in run):  # its prediction goes out before the label is queued
                        self._flush(run, out)
                    if t is not None:
                        self._advance_to(t)
                    self._join(eid, cast(float, y))
                else:
                    raise BadRecord("bad_type", f"'type' must be 'event' or 'label', got {kind!r}")
            except BadRecord as e:
                out.append(self._reject(e.reason, e.detail, rec))
        self._flush(run, out)
        self._c_events.inc(n_ev)
        self._c_labels_in.inc(n_lb)
        self.update_gauges()
        return out

    def _decode(self, obj: dict[str, Any], rec: InRecord | None = None
                ) -> tuple[str, float | None, np.ndarray, np.ndarray, float | None]:
        """(id, time, x, membership row, label or None) of an event; raises BadRecord, changes nothing."""
        eid = self._id(obj)
        t = self._time(obj, rec)
        x, raw = self._features(obj)
        member = self._member(obj, raw)
        return eid, t, x, member, self._label(obj, False)

    def _admit(self, ev: tuple[str, float | None, np.ndarray, np.ndarray, float | None], replay: bool, run: list,
               out: list[Out], source: str = "kafka") -> None:
        """Places a decoded, new event in log order: event time first, then a learning block if due;
        the event waits for its label from here (predicted later with the rest of its run)."""
        eid, t, x, member, y = ev
        if eid in self.seen or any(r[0] == eid for r in run):
            raise BadRecord("duplicate_event", f"event id {eid!r} was already predicted")
        if t is not None:
            self._advance_to(t)
        if self.queue and self.since_learn >= self.learn_every:
            self._flush(run, out, source)
            self._learn()
        run.append((eid, x, member, t, replay, y))
        self.since_learn += 1
        if y is not None:  # labelled in the event: learned after this prediction (at the next block)
            self.seen[eid] = LEARNED
            self.queue.append((x, member, y))
            self._c_joined.inc()
        else:
            self.seen[eid] = PENDING
            self.buffer[eid] = ((t if t is not None else self.watermark) + self.wait_s, x, member)
            if len(self.buffer) > self.pc["join_buffer_cap"]:
                old, _ = self.buffer.popitem(last=False)
                self.seen[old] = EXPIRED
                self._c_evicted.inc()
                self.metrics.cap_evictions.labels(pipeline=self.name, cap="join_buffer").inc()
        if len(self.seen) > self.pc["dedup_cap"]:
            old = self.seen.popitem(last=False)[0]
            self.buffer.pop(old, None)
            self.bodies.pop(old, None)
            self.metrics.cap_evictions.labels(pipeline=self.name, cap="dedup").inc()

    def _advance_to(self, t: float) -> None:
        if t <= self.watermark:
            return
        self.watermark = t
        n = 0
        while self.buffer:
            eid, (deadline, _, _) = next(iter(self.buffer.items()))
            if deadline > t:
                break
            self.buffer.popitem(last=False)
            if eid in self.seen:
                self.seen[eid] = EXPIRED
            n += 1
        if n:
            self._c_expired.inc(n)

    def _join(self, eid: str, y: float) -> None:
        entry = self.buffer.pop(eid, None)
        if entry is None:
            status = self.seen.get(eid)
            if status is None:
                raise BadRecord("unknown_event", f"label for unknown event id {eid!r}")
            if status == EXPIRED:
                raise BadRecord("late_label", f"label for {eid!r} arrived after reward_wait_s")
            raise BadRecord("duplicate_label", f"event {eid!r} already has its label")
        self.seen[eid] = LEARNED
        self.queue.append((entry[1], entry[2], y))
        self._c_joined.inc()

    def _learn(self) -> None:
        q = self.queue
        self.learner.learn({"X": np.array([r[0] for r in q]).reshape(len(q), self.d),
                            "G": np.array([r[1] for r in q]).reshape(len(q), len(self.group_col)),
                            "y": np.array([r[2] for r in q])})
        self.queue = []
        self.since_learn = 0

    def _reason(self) -> str | None:
        if self.force_default:
            return "forced"
        if self.learner.learned_events < self.pc["min_learned_events"]:
            return "not_ready"
        return None

    def _flush(self, run: list, out: list[Out], source: str = "kafka") -> list[dict]:
        """Predicts a run of events (all at the state left by the records before the run)."""
        if not run:
            return []
        n = len(run)
        X = np.array([r[1] for r in run]).reshape(n, self.d)
        G = np.array([r[2] for r in run]).reshape(n, len(self.group_col))
        res = self.learner.process({"X": X, "G": G, "event_key": event_keys([r[0] for r in run])})
        reason = self._reason()
        preds = res["prediction"].tolist() if reason is None else [float(self.pc["default_prediction"])] * n
        if reason is not None:
            self.metrics.defaults.labels(pipeline=self.name, reason=reason).inc(n)
        names = list(self.group_col)
        decided = []
        for (eid, _, member, t, replay, _), p in zip(run, preds, strict=True):
            awake = [names[j] for j in np.flatnonzero(member).tolist() if names[j] != "always_on"]
            body = {"id": eid, "pipeline": self.name, "prediction": p, "groups": ["always_on", *awake],
                    "default": reason is not None, "reason": reason, "time": t, "replay": replay}
            raw = dumps_kept(body)
            out.append(Out("decision", eid.encode(), raw))
            decided.append(body)
            if source == "http":
                self.bodies[eid] = raw
        self.metrics.decisions.labels(pipeline=self.name, source=source).inc(n)
        run.clear()
        return decided

    # -- the sidecar's entry points ---------------------------------------------------------------
    def predict_objects(self, objs: list[Any]) -> list[dict]:
        """Predicts JSON objects from /predict; a retried id returns its first answer.

        Raises :class:`BadRecord` for the first invalid object (nothing is predicted or remembered then).
        """
        results: list[dict | None] = [None] * len(objs)
        run: list = []
        where = []
        out: list[Out] = []
        fresh = []
        ids: set[str] = set()
        for i, obj in enumerate(objs):
            if not isinstance(obj, dict):
                raise BadRecord("bad_type", f"item {i}: an event must be a JSON object")
            eid = self._id(obj)
            if eid in self.seen and eid in self.bodies:
                results[i] = orjson.loads(self.bodies[eid])
                continue
            ev = self._decode(obj)
            if eid in self.seen or eid in ids:
                raise BadRecord("duplicate_event", f"event id {eid!r} was already predicted (from the Kafka input, "
                                "or earlier in this request)")
            ids.add(eid)
            fresh.append(ev)
            where.append(i)
        for ev in fresh:
            self._admit(ev, False, run, out, "http")  # (a learning block may decide part of the run early)
        self._flush(run, out, "http")
        decided = [orjson.loads(o.value) for o in out if o.kind == "decision"]
        for i, d in zip(where, decided, strict=True):
            results[i] = d
        self.pending_out += out
        self.update_gauges()
        return [r for r in results if r is not None]

    def label_objects(self, objs: list[Any]) -> list[dict]:
        res: list[dict[str, Any]] = []
        for obj in objs:
            try:
                if not isinstance(obj, dict):
                    raise BadRecord("bad_type", "a label must be a JSON object")
                eid, t, y = self._id(obj), self._time(obj), self._label(obj, True)
                if t is not None:
                    self._advance_to(t)
                self._join(eid, cast(float, y))
                res.append({"id": eid, "status": "joined"})
            except BadRecord as e:
                self.metrics.errors.labels(pipeline=self.name, reason=e.reason).inc()
                res.append({"id": obj.get("id") if isinstance(obj, dict) else None, "status": "rejected",
                            "reason": e.reason, "detail": e.detail})
        self._c_labels_in.inc(len(objs))
        self.update_gauges()
        return res

    # -- gauges -----------------------------------------------------------------------------------
    def update_gauges(self, force: bool = False) -> None:
        m, lbl = self.metrics, self.name
        m.join_size.labels(pipeline=lbl).set(len(self.buffer))
        m.dedup_size.labels(pipeline=lbl).set(len(self.seen))
        now = time.monotonic()
        if not force and now - self._gauges_at < 1.0:  # the hindsight comparator costs O(groups·d³)
            return
        self._gauges_at = now
        m.learner.labels(pipeline=lbl, name="learned_events").set(self.learner.learned_events)
        for r in self.learner.group_report():
            g = r["group"]
            m.group_events.labels(pipeline=lbl, group=g).set(r["events"])
            m.group_loss.labels(pipeline=lbl, group=g, rule="mixture").set(r["loss"])
            m.group_loss.labels(pipeline=lbl, group=g, rule="randomized").set(r["loss_randomized"])
            m.group_regret.labels(pipeline=lbl, group=g, rule="mixture").set(r["regret"])
            m.group_regret.labels(pipeline=lbl, group=g, rule="randomized").set(r["regret_randomized"])

    def report(self) -> dict[str, Any]:
        return {"pipeline": self.name, "learner": self.pc["learner"], "groups": self.learner.group_report(),
                "learner_metrics": {"learned_events": self.learner.learned_events}}

    # -- checkpoint -------------------------------------------------------------------------------
    def snapshot(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        G = len(self.group_col)
        arrays: dict[str, np.ndarray] = {f"learner/{k}": v for k, v in self.learner.snapshot().items()}
        items = list(self.buffer.items())
        arrays["buffer/ids"], arrays["buffer/id_ends"] = pack_strings([i for i, _ in items])
        arrays["buffer/deadline"] = np.array([e[0] for _, e in items], dtype=np.float64)
        arrays["buffer/X"] = np.array([e[1] for _, e in items], dtype=np.float64).reshape(len(items), self.d)
        arrays["buffer/G"] = np.array([e[2] for _, e in items], dtype=np.int64).reshape(len(items), G)
        q = self.queue
        arrays["queue/X"] = np.array([r[0] for r in q], dtype=np.float64).reshape(len(q), self.d)
        arrays["queue/G"] = np.array([r[1] for r in q], dtype=np.int64).reshape(len(q), G)
        arrays["queue/y"] = np.array([r[2] for r in q], dtype=np.float64)
        arrays["seen/ids"], arrays["seen/id_ends"] = pack_strings(list(self.seen))
        arrays["seen/status"] = np.fromiter(self.seen.values(), dtype=np.uint8, count=len(self.seen))
        arrays["bodies/ids"], arrays["bodies/id_ends"] = pack_strings(list(self.bodies))
        arrays["bodies/outputs"], arrays["bodies/output_ends"] = pack_strings(list(self.bodies.values()))
        meta = {"format_version": FORMAT_VERSION, "family": "groupwise", "pipeline": self.name,
                "learner": self.pc["learner"], "params": self.params, "group_rules": self.pc["group_rules"],
                "since_learn": self.since_learn, "force_default": self.force_default,
                "watermark": self.watermark if math.isfinite(self.watermark) else None, "written_at": time.time()}
        return arrays, meta

    def restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        if meta.get("format_version") != FORMAT_VERSION or meta.get("family") != "groupwise":
            raise ValueError(f"checkpoint is not a groupwise checkpoint of format {FORMAT_VERSION}")
        if meta.get("learner") != self.pc["learner"] or meta.get("params") != self.params \
                or meta.get("group_rules") != self.pc["group_rules"]:
            raise ValueError("checkpoint was written by a different learner, parameters or group rules; "
                             "move it away to start fresh")
        self.learner.restore({k[8:]: v for k, v in arrays.items() if k.startswith("learner/")})
        ids = unpack_strings(arrays["buffer/ids"], arrays["buffer/id_ends"])
        self.buffer = OrderedDict((i, (float(dl), x.copy(), g.copy())) for i, dl, x, g in zip(
            ids, arrays["buffer/deadline"].tolist(), arrays["buffer/X"], arrays["buffer/G"], strict=True))
        self.queue = [(x.copy(), g.copy(), float(y)) for x, g, y in zip(
            arrays["queue/X"], arrays["queue/G"], arrays["queue/y"].tolist(), strict=True)]
        self.seen = OrderedDict(zip(unpack_strings(arrays["seen/ids"], arrays["seen/id_ends"]),
                                    arrays["seen/status"].tolist(), strict=True))
        self.bodies = dict(zip(unpack_strings(arrays["bodies/ids"], arrays["bodies/id_ends"]),
                               unpack_strings(arrays["bodies/outputs"], arrays["bodies/output_ends"], as_bytes=True),
                               strict=True))
        self.since_learn = int(meta["since_learn"])
        w = meta.get("watermark")
        self.watermark = -math.inf if w is None else float(w)
        self.update_gauges(force=True)
