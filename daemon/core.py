"""One pipeline's processing, independent of where records come from (Kafka, files, HTTP).

Records are handled strictly in log order, whatever the micro-batch boundaries: consecutive events
are decided together by the learner's batch kernels, but a run of events is cut wherever state
would change (a reward is learned, or event time expires a waiting decision), so a decision only
ever sees the state left by the records before it. Hence the determinism contract: the same records
in the same order give the same decisions, live, in a replay, or after a restart from a checkpoint.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

import learners
from connectors.base import SourceRecord as InRecord
from learners._hashing import FeatureHasher, event_key
from learners.bandit.ope import OffPolicyEstimate

from .joinbuffer import JoinBuffer, Pending
from .metrics import DaemonMetrics

FORMAT_VERSION = 1
MAX_ID_LEN = 256

# Status of a remembered event id.
PENDING, JOINED, EXPIRED = "pending", "joined", "expired"


class BadRecord(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Out:
    kind: str  # "decision" or "dlq"
    key: bytes | None
    value: bytes


@dataclass(slots=True)
class Event:
    id: str
    time: float | None
    x: np.ndarray
    actions: list[str] | None
    af: np.ndarray | None
    replay: bool
    rec: InRecord | None
    eff: float = -math.inf  # event time at arrival: max(own time, watermark); fixes the deadline


class PipelineCore:
    """Decoding, decisions, reward joins, guardrails, OPE and metrics of one pipeline."""

    def __init__(self, pc: dict[str, Any], metrics: DaemonMetrics | None = None):
        self.pc = pc
        self.name = pc["name"]
        self.metrics = metrics or DaemonMetrics()
        self.params = dict(pc["params"])
        self.params.setdefault("n_features", pc["n_features"])
        self.params.setdefault("seed", pc["seed"])
        self.learner = learners.create(pc["learner"], **self.params)
        self.shadows = {s: learners.create(s, **self.params) for s in pc["shadow_learners"]}
        self.d = self.params["n_features"]
        self.n_af = int(self.params.get("n_action_features", 0))
        self.hasher = FeatureHasher(self.d, pc["feature_cache"])
        self.buffer = JoinBuffer(pc["join_buffer_cap"], pc["reward_wait_s"])
        self.seen: OrderedDict[str, list] = OrderedDict()  # id -> [status, decision bytes]
        self.targets = [pc["learner"], *self.shadows]
        self.ope = {t: OffPolicyEstimate() for t in self.targets}
        self.watermark = -math.inf
        self.force_default = bool(pc["force_default"])
        self.version_stats: OrderedDict[int, list[float]] = OrderedDict()
        self.action_labels: set[str] = set()
        m = self.metrics
        self._lbl = {"pipeline": self.name}
        m.join_cap.labels(**self._lbl).set(pc["join_buffer_cap"])
        m.force_default.labels(**self._lbl).set(int(self.force_default))
        self._c_events = m.events.labels(pipeline=self.name, kind="event")
        self._c_feedback = m.events.labels(pipeline=self.name, kind="feedback")
        self._c_explored = m.explored.labels(**self._lbl)
        self.pending_out: list[Out] = []

    # -- decoding ---------------------------------------------------------------------------------
    def _reject(self, reason: str, detail: str, rec: InRecord | None) -> Out:
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

    def parse(self, rec: InRecord) -> dict[str, Any]:
        if len(rec.value) > self.pc["max_message_bytes"]:
            raise BadRecord("oversize", f"{len(rec.value)} bytes > max_message_bytes={self.pc['max_message_bytes']}")
        try:
            obj = orjson.loads(rec.value)
        except orjson.JSONDecodeError as e:
            raise BadRecord("malformed_json", str(e)) from None
        if not isinstance(obj, dict):
            raise BadRecord("bad_type", "a record must be a JSON object")
        return obj

    @staticmethod
    def _id(obj: dict[str, Any]) -> str:
        eid = obj.get("id")
        if eid is None:
            raise BadRecord("missing_field", "'id' is required")
        if not isinstance(eid, str) or not eid or len(eid) > MAX_ID_LEN:
            raise BadRecord("bad_type", f"'id' must be a non-empty string of at most {MAX_ID_LEN} characters")
        return eid

    @staticmethod
    def _time(obj: dict[str, Any]) -> float | None:
        t = obj.get("time")
        if t is None:
            return None
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
            raise BadRecord("bad_type", "'time' must be a finite number (event time, seconds)")
        return float(t)

    def _vector(self, v: Any, n: int, what: str) -> np.ndarray:
        if isinstance(v, dict):
            out = np.zeros(n)
            for k, val in v.items():
                if isinstance(val, bool) or not isinstance(val, int | float):
                    raise BadRecord("bad_type", f"{what}[{k!r}] must be a number")
            try:
                self.hasher.transform_into(v, out)
            except TypeError:
                raise BadRecord("bad_type", f"{what} values must be numbers") from None
        elif isinstance(v, list):
            if len(v) != n:
                raise BadRecord("bad_type", f"{what} as a list must have {n} numbers, got {len(v)}")
            if any(isinstance(a, bool) or not isinstance(a, int | float) for a in v):
                raise BadRecord("bad_type", f"{what} must hold numbers only")
            out = np.array(v, dtype=np.float64)
        else:
            raise BadRecord("bad_type", f"{what} must be a list of numbers or a name→number object")
        if not np.isfinite(out).all():
            raise BadRecord("non_finite", f"{what} contains NaN or inf")
        return out

    def decode_event(self, obj: dict[str, Any], rec: InRecord | None) -> Event:
        eid = self._id(obj)
        t = self._time(obj)
        if "features" not in obj:
            raise BadRecord("missing_field", "'features' is required")
        x = self._vector(obj["features"], self.d, "features")
        acts = obj.get("actions")
        ids: list[str] | None = None
        af = None
        if acts is not None:
            if not isinstance(acts, list) or not acts:
                raise BadRecord("bad_type", "'actions' must be a non-empty list")
            ids = []
            rows = []
            for a in acts:
                if isinstance(a, str):
                    ids.append(a)
                    if self.n_af:
                        raise BadRecord("missing_field", f"action {a!r} needs 'features' (the learner uses action features)")
                elif isinstance(a, dict) and isinstance(a.get("id"), str):
                    ids.append(a["id"])
                    if self.n_af:
                        rows.append(self._vector(a.get("features"), self.n_af, f"action {a['id']!r} features"))
                else:
                    raise BadRecord("bad_type", "each action must be an id string or {\"id\": ..., \"features\": [...]}")
            if len(set(ids)) != len(ids):
                raise BadRecord("bad_type", "'actions' lists an id twice")
            strict = getattr(self.learner, "strict_actions", False)
            known = getattr(self.learner, "actions", ())
            if strict:
                unknown = [a for a in ids if a not in known]
                if unknown:
                    raise BadRecord("unknown_action", f"action ids not configured: {unknown[:5]}")
            if self.n_af:
                af = np.array(rows)
        elif self.n_af:
            raise BadRecord("missing_field", "'actions' with features are required by this learner")
        elif not getattr(self.learner, "actions", ()):
            raise BadRecord("missing_field", "'actions' is required (no actions are configured)")
        return Event(eid, t, x, ids, af, rec.replay if rec else False, rec)

    # -- the log-order loop -----------------------------------------------------------------------
    def handle(self, records: list[InRecord]) -> list[Out]:
        """Processes records in order; returns the decisions and dead letters to publish."""
        out: list[Out] = []
        run: list[Event] = []
        run_ids: set[str] = set()
        learn_rows: list[tuple[Pending, float]] = []
        n_ev = n_fb = 0
        for rec in records:
            try:
                obj = self.parse(rec)
                kind = obj.get("type", "event")
                if kind == "event":
                    n_ev += 1
                    ev = self.decode_event(obj, rec)
                    if ev.id in self.seen or ev.id in run_ids:
                        raise BadRecord("duplicate_event", f"event id {ev.id!r} was already decided")
                    if ev.time is not None and ev.time > self.watermark:
                        if self.buffer.next_deadline() <= ev.time:
                            self._flush_run(run, run_ids, out)
                        self._advance(ev.time, learn_rows)
                    if learn_rows:
                        self._learn(learn_rows)
                    ev.eff = self.watermark
                    run.append(ev)
                    run_ids.add(ev.id)
                elif kind == "feedback":
                    n_fb += 1
                    eid = self._id(obj)
                    t = self._time(obj)
                    r = obj.get("reward")
                    if isinstance(r, bool) or not isinstance(r, int | float):
                        raise BadRecord("missing_field" if r is None else "bad_type", "'reward' must be a number")
                    if not math.isfinite(r):
                        raise BadRecord("non_finite", "'reward' is NaN or inf")
                    self._flush_run(run, run_ids, out)
                    if t is not None:
                        self._advance(t, learn_rows)
                    self._join(eid, float(r), learn_rows)
                else:
                    raise BadRecord("bad_type", f"'type' must be 'event' or 'feedback', got {kind!r}")
            except BadRecord as e:
                out.append(self._reject(e.reason, e.detail, rec))
        self._flush_run(run, run_ids, out)
        if learn_rows:
            self._learn(learn_rows)
        self._c_events.inc(n_ev)
        self._c_feedback.inc(n_fb)
        self.update_gauges()
        return out

    def _advance(self, t: float, learn_rows: list) -> None:
        if t <= self.watermark:
            return
        self.watermark = t
        for eid, e in self.buffer.expire(t):
            self.seen_status(eid, EXPIRED)
            learn_rows.append((e, self.pc["default_reward"]))
            self.metrics.rewards.labels(pipeline=self.name, outcome="defaulted").inc()

    def seen_status(self, eid: str, status: str) -> None:
        entry = self.seen.get(eid)
        if entry is not None:
            entry[0] = status

    def _join(self, eid: str, reward: float, learn_rows: list) -> None:
        e = self.buffer.pop(eid)
        if e is None:
            entry = self.seen.get(eid)
            if entry is None:
                raise BadRecord("unknown_event", f"reward for unknown event id {eid!r}")
            if entry[0] == EXPIRED:
                raise BadRecord("late_reward", f"reward for {eid!r} arrived after reward_wait_s")
            raise BadRecord("duplicate_reward", f"event {eid!r} already has its reward")
        self.seen_status(eid, JOINED)
        learn_rows.append((e, reward))
        lbl = self.name
        m = self.metrics
        m.rewards.labels(pipeline=lbl, outcome="joined").inc()
        m.reward_sum.labels(pipeline=lbl).inc(reward)
        a = self._action_label(e.action)
        m.action_rewards.labels(pipeline=lbl, action=a).inc(reward)
        m.action_feedback.labels(pipeline=lbl, action=a).inc()
        st = self.version_stats.setdefault(e.version, [0.0, 0.0])
        st[0] += reward
        st[1] += 1
        for i, t in enumerate(self.targets):
            pi_a, dm, rhat = e.ope[i]
            w = pi_a / e.prob
            self.ope[t].update(np.array([w]), np.array([reward]), np.array([dm]), np.array([rhat]))

    def _learn(self, rows: list[tuple[Pending, float]]) -> None:
        """Learns the rows (joined or expired decisions) in order, then clears the list."""
        n = len(rows)
        batch: dict[str, Any] = {
            "event_key": np.array([e.key for e, _ in rows], dtype=np.uint64),
            "X": np.array([e.x for e, _ in rows]),
            "action": np.array([e.action for e, _ in rows], dtype=object),
            "reward": np.array([r for _, r in rows], dtype=np.float64),
            "prob": np.array([e.prob for e, _ in rows]),
        }
        if self.n_af:
            batch["action_features"] = np.array([e.af for e, _ in rows]).reshape(n, self.n_af)
        for lrn in (self.learner, *self.shadows.values()):
            lrn.learn(batch)
        rows.clear()

    def _action_label(self, a: str) -> str:
        if a in self.action_labels:
            return a
        if len(self.action_labels) < self.pc["metrics_max_actions"]:
            self.action_labels.add(a)
            return a
        return "other"

    # -- decisions --------------------------------------------------------------------------------
    def _flush_run(self, run: list[Event], run_ids: set[str], out: list[Out], source: str = "kafka") -> list[dict]:
        if not run:
            return []
        decisions = self.decide(run, source)
        for ev, dec in zip(run, decisions, strict=True):
            out.append(Out("decision", ev.id.encode(), dec["_bytes"]))
        run.clear()
        run_ids.clear()
        return decisions

    def _batch(self, run: list[Event]) -> dict[str, Any]:
        batch: dict[str, Any] = {
            "event_key": np.array([event_key(e.id) for e in run], dtype=np.uint64),
            "X": np.array([e.x for e in run]).reshape(len(run), self.d),
        }
        if any(e.actions is not None for e in run):
            default = list(getattr(self.learner, "actions", ()))
            sets = [e.actions if e.actions is not None else default for e in run]
            batch["action_indptr"] = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
            batch["action_ids"] = np.array([a for s in sets for a in s], dtype=object)
            if self.n_af:
                batch["action_features"] = np.concatenate([e.af for e in run])
        return batch

    def _default_reason(self) -> str | None:
        if self.force_default:
            return "forced"
        if self.learner.metrics().get("learned_events", 0.0) < self.pc["min_learned_events"]:
            return "not_ready"
        return None

    def decide(self, run: list[Event], source: str) -> list[dict]:
        """Decides a run of events at the current state, stores them for the reward join."""
        n = len(run)
        batch = self._batch(run)
        reason = self._default_reason()
        out = None
        if reason is None:
            try:
                out = self.learner.process(batch)
            except Exception as e:  # a learner failure never takes the daemon down
                self.metrics.errors.labels(pipeline=self.name, reason="learner_error").inc(n)
                reason = "learner_error"
                self.last_learner_error = repr(e)
        shadow_outs = {}
        for sname, s in self.shadows.items():
            try:
                shadow_outs[sname] = s.process(batch)
            except Exception:
                self.metrics.errors.labels(pipeline=self.name, reason="shadow_error").inc(n)
        indptr = batch.get("action_indptr")
        if indptr is None:
            k = len(self.learner.actions)
            indptr = np.arange(0, n * k + 1, k)
        ids = batch.get("action_ids")
        if ids is None:
            ids = np.tile(np.array(self.learner.actions, dtype=object), n)
        rhat_all = np.clip(out["scores"], 0.0, 1.0) if out is not None else np.zeros(len(ids))
        version = int(self.learner.metrics().get("model_version", 0))
        decisions = []
        m = self.metrics
        n_explored = 0
        for i, ev in enumerate(run):
            lo, hi = int(indptr[i]), int(indptr[i + 1])
            offered = [str(a) for a in ids[lo:hi]]
            if out is None:
                dflt = self.pc["default_action"]
                pos = offered.index(dflt) if dflt in offered else 0
                probs = np.zeros(hi - lo)
                probs[pos] = 1.0
                prob, explored, ver = 1.0, False, version
                m.defaults.labels(pipeline=self.name, reason=reason).inc()
            else:
                pos = int(out["chosen"][i])
                probs = out["probs"][lo:hi]
                prob, explored, ver = float(out["prob"][i]), bool(out["explored"][i]), int(out["model_version"][i])
            n_explored += explored
            action = offered[pos]
            rhat = rhat_all[lo:hi]
            ope = np.empty((len(self.targets), 3))
            ope[0] = (probs[pos], float(probs @ rhat), rhat[pos])
            for j, sname in enumerate(self.shadows, start=1):
                so = shadow_outs.get(sname)
                sp = so["probs"][lo:hi] if so is not None else probs
                ope[j] = (sp[pos], float(sp @ rhat), rhat[pos])
            # Deadlines never decrease (insertion order is expiry order): an event is placed at
            # the watermark of its arrival at least; one without a time before any time was seen
            # waits until event time first appears.
            t = ev.eff
            dec: dict[str, Any] = {
                "id": ev.id,
                "pipeline": self.name,
                "action": action,
                "prob": prob,
                "probs": dict(zip(offered, probs.tolist(), strict=True)),
                "model_version": ver,
                "explored": explored,
                "default": out is None,
                "reason": reason,
                "time": ev.time,
                "replay": ev.replay,
            }
            body = orjson.dumps(dec)
            dec["_bytes"] = body
            decisions.append(dec)
            evicted = self.buffer.add(ev.id, Pending(int(batch["event_key"][i]), ev.x, action,
                                                     ev.af[pos] if ev.af is not None else None, prob,
                                                     t + self.pc["reward_wait_s"], ver, ope))
            self._remember(ev.id, body)
            if evicted is not None:
                self.seen_status(evicted, EXPIRED)
                # Not learned: learning here would change the state between two decisions of
                # one run and make decisions depend on batch boundaries. Counted instead.
                self.metrics.cap_evictions.labels(pipeline=self.name, cap="join_buffer").inc()
                self.metrics.rewards.labels(pipeline=self.name, outcome="evicted").inc()
            m.action_decisions.labels(pipeline=self.name, action=self._action_label(action)).inc()
            if ev.replay:
                m.replays.labels(pipeline=self.name).inc()
        self._c_explored.inc(n_explored)
        m.decisions.labels(pipeline=self.name, source=source).inc(n)
        return decisions

    def _remember(self, eid: str, body: bytes) -> None:
        self.seen[eid] = [PENDING, body]
        if len(self.seen) > self.pc["dedup_cap"]:
            old, _ = self.seen.popitem(last=False)
            self.metrics.cap_evictions.labels(pipeline=self.name, cap="dedup").inc()
            self.buffer.pop(old)  # a forgotten id cannot be joined safely any more

    # -- the sidecar's entry points ---------------------------------------------------------------
    def decide_objects(self, objs: list[Any]) -> list[dict]:
        """Decides JSON objects from /decide; a retried id returns its first decision unchanged.

        Raises :class:`BadRecord` for the first invalid object (nothing is decided then).
        """
        results: list[dict | None] = [None] * len(objs)
        fresh: list[Event] = []
        where: list[int] = []
        ids: set[str] = set()
        for i, obj in enumerate(objs):
            if not isinstance(obj, dict):
                raise BadRecord("bad_type", f"item {i}: an event must be a JSON object")
            eid = self._id(obj)
            if eid in self.seen:
                results[i] = orjson.loads(self.seen[eid][1])
                continue
            if eid in ids:
                raise BadRecord("duplicate_event", f"event id {eid!r} appears twice in one request")
            ev = self.decode_event(obj, None)
            ids.add(eid)
            fresh.append(ev)
            where.append(i)
        learn_rows: list = []
        for ev in fresh:
            if ev.time is not None:
                self._advance(ev.time, learn_rows)
            ev.eff = self.watermark
        if learn_rows:
            self._learn(learn_rows)
        if fresh:
            for i, dec in zip(where, self.decide(fresh, "http"), strict=True):
                results[i] = {k: v for k, v in dec.items() if k != "_bytes"}
                self.pending_out.append(Out("decision", dec["id"].encode(), dec["_bytes"]))
        self.update_gauges()
        return [r for r in results if r is not None]

    def feedback_objects(self, objs: list[Any]) -> list[dict]:
        """Joins rewards from /feedback; returns one status per item (errors are per item)."""
        res = []
        learn_rows: list = []
        for obj in objs:
            try:
                if not isinstance(obj, dict):
                    raise BadRecord("bad_type", "feedback must be a JSON object")
                eid = self._id(obj)
                t = self._time(obj)
                r = obj.get("reward")
                if isinstance(r, bool) or not isinstance(r, int | float) or not math.isfinite(r):
                    raise BadRecord("bad_type", "'reward' must be a finite number")
                if t is not None:
                    self._advance(t, learn_rows)
                self._join(eid, float(r), learn_rows)
                res.append({"id": eid, "status": "joined"})
            except BadRecord as e:
                self.metrics.errors.labels(pipeline=self.name, reason=e.reason).inc()
                res.append({"id": obj.get("id") if isinstance(obj, dict) else None,
                            "status": "rejected", "reason": e.reason, "detail": e.detail})
        if learn_rows:
            self._learn(learn_rows)
        self._c_feedback.inc(len(objs))
        self.update_gauges()
        return res

    # -- gauges, OPE ------------------------------------------------------------------------------
    def update_gauges(self) -> None:
        m, lbl = self.metrics, self.name
        m.join_size.labels(pipeline=lbl).set(len(self.buffer))
        m.dedup_size.labels(pipeline=lbl).set(len(self.seen))
        m.vocab_size.labels(pipeline=lbl).set(len(self.hasher))
        for k, v in self.learner.metrics().items():
            m.learner.labels(pipeline=lbl, name=k).set(v)
        for t, est in self.ope.items():
            for k, v in est.values().items():
                m.ope.labels(pipeline=lbl, policy=t, estimator=k).set(v)
        while len(self.version_stats) > 8:
            old, _ = self.version_stats.popitem(last=False)
            try:
                m.version_reward.remove(lbl, str(old))
            except KeyError:
                pass
        for v, (s, c) in self.version_stats.items():
            m.version_reward.labels(pipeline=lbl, version=str(v)).set(s / c if c else float("nan"))

    def report(self) -> dict[str, Any]:
        return {
            "pipeline": self.name,
            "learner": self.pc["learner"],
            "ope": {t: {**e.values(), "n": e.n, "ips_stderr": e.ips_stderr()} for t, e in self.ope.items()},
            "reward_by_model_version": {str(v): {"mean": s / c, "n": int(c)}
                                        for v, (s, c) in self.version_stats.items() if c},
            "learner_metrics": self.learner.metrics(),
        }

    # -- checkpoint -------------------------------------------------------------------------------
    def snapshot(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays: dict[str, np.ndarray] = {}
        for k, v in self.learner.snapshot().items():
            arrays[f"learner/{k}"] = v
        for sname, s in self.shadows.items():
            for k, v in s.snapshot().items():
                arrays[f"shadow/{sname}/{k}"] = v
        for k, v in self.buffer.to_arrays(self.d, self.n_af, len(self.targets)).items():
            arrays[f"join/{k}"] = v
        arrays["seen/ids"] = np.array(list(self.seen.keys()), dtype=str)
        arrays["seen/status"] = np.array([s for s, _ in self.seen.values()], dtype=str)
        arrays["seen/decisions"] = np.array([b.decode() for _, b in self.seen.values()], dtype=str)
        for t, e in self.ope.items():
            arrays[f"ope/{t}"] = e.to_array()
        arrays["versions"] = np.array([[v, s, c] for v, (s, c) in self.version_stats.items()],
                                      dtype=np.float64).reshape(-1, 3)
        meta = {
            "format_version": FORMAT_VERSION,
            "pipeline": self.name,
            "learner": self.pc["learner"],
            "shadows": list(self.shadows),
            "params": self.params,
            "watermark": self.watermark if math.isfinite(self.watermark) else None,
            "force_default": self.force_default,
            "written_at": time.time(),
        }
        return arrays, meta

    def restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"checkpoint format {meta.get('format_version')} is not {FORMAT_VERSION}")
        if meta.get("learner") != self.pc["learner"] or meta.get("params") != self.params:
            raise ValueError("checkpoint was written by a different learner or learner parameters "
                             f"({meta.get('learner')}, {meta.get('params')}); move it away to start fresh")
        self.learner.restore({k[8:]: v for k, v in arrays.items() if k.startswith("learner/")})
        for sname, s in self.shadows.items():
            pre = f"shadow/{sname}/"
            s.restore({k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)})
        self.buffer.load({k[5:]: v for k, v in arrays.items() if k.startswith("join/")}, self.n_af > 0)
        self.seen = OrderedDict(
            (str(i), [str(s), str(d).encode()])
            for i, s, d in zip(arrays["seen/ids"].tolist(), arrays["seen/status"].tolist(),
                               arrays["seen/decisions"].tolist(), strict=True))
        for t, e in self.ope.items():
            if f"ope/{t}" in arrays:
                e.load(arrays[f"ope/{t}"])
        self.version_stats = OrderedDict((int(v), [s, c]) for v, s, c in arrays["versions"].tolist())
        w = meta.get("watermark")
        self.watermark = -math.inf if w is None else float(w)
        self.update_gauges()
