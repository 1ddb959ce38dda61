"""One pipeline's processing, independent of where records come from (Kafka, files, HTTP).

Records are handled strictly in log order, whatever the micro-batch boundaries: consecutive events
are decided together by the learner's batch kernels, but a run of events is cut wherever state
would change (a reward is learned, or event time expires a waiting decision), so a decision only
ever sees the state left by the records before it. Hence the determinism contract: the same records
in the same order give the same decisions, live, in a replay, or after a restart from a checkpoint.
"""

from __future__ import annotations

import collections
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

import learners
from connectors.base import SourceRecord as InRecord
from learners._hashing import FeatureHasher, event_keys
from learners.bandit.ope import OffPolicyEstimate

from .checkpoint import pack_strings, unpack_strings
from .config import learner_params
from .joinbuffer import JoinBuffer, Pending, pending_from_arrays, pending_to_arrays, rows_matrix
from .metrics import DaemonMetrics

FORMAT_VERSION = 2
MAX_ID_LEN = 256

# Status of a remembered event id.
PENDING, JOINED, EXPIRED = 0, 1, 2


def dumps_kept(obj: Any) -> bytes:
    """``orjson.dumps`` for output that is kept (published, remembered for retries).

    orjson writes into a generously sized buffer; keeping thousands of those makes every call touch
    fresh memory (measured here: 5.6 µs per decision instead of 1.5 µs). A right-sized copy lets
    the next call reuse the freed buffer.
    """
    return bytes(memoryview(orjson.dumps(obj)))


def json_error(raw: bytes, e: Exception) -> BadRecord:
    """The rejection of bytes orjson could not parse: ``non_finite`` when they are JSON but for
    a NaN, Infinity or a number beyond the float range (JSON has no such numbers; Python's json
    module reads them), else ``malformed_json``. Runs on the error path only."""
    import json

    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return BadRecord("malformed_json", str(e))
    return BadRecord("non_finite", "NaN, Infinity or a number beyond the float range (not JSON numbers)")


def _numbers_only(v: dict[str, Any], what: str) -> None:
    """A name→number object's check, as the feature hasher makes it (booleans are not numbers)."""
    for name, value in v.items():
        if type(value) is not int and type(value) is not float:
            raise BadRecord("bad_type", f"{what}[{name!r}] must be a number")


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


Event = Pending  # an event is decoded into the object that later waits for its reward


class CoreBase:
    """What every family's pipeline core shares: the record rules common to all input (size, JSON,
    id, event time) and the dead-letter records with their counters. A family's core adds the
    decoding of its events, the log-order loop and its checkpoint."""

    pc: dict[str, Any]
    name: str
    metrics: DaemonMetrics

    # -- decoding (shared) --------------------------------------------------------------------------
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
            raise json_error(rec.value, e) from None
        if type(obj) is not dict:
            raise BadRecord("bad_type", "a record must be a JSON object")
        return obj

    @staticmethod
    def _id(obj: dict[str, Any]) -> str:
        eid = obj.get("id")
        if type(eid) is not str or not eid or len(eid) > MAX_ID_LEN:
            if eid is None:
                raise BadRecord("missing_field", "'id' is required")
            raise BadRecord("bad_type", f"'id' must be a non-empty string of at most {MAX_ID_LEN} characters")
        return eid

    def _time(self, obj: dict[str, Any], rec: InRecord | None = None) -> float | None:
        """The record's event time, if it has one. One record may not move event time more than
        ``max_time_ahead_s`` past the record's Kafka timestamp (its arrival, by wall clock, for HTTP
        and files): a far-future time would expire every waiting decision at once."""
        t = obj.get("time")
        if t is None:
            return None
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
            raise BadRecord("bad_type", "'time' must be a finite number (event time, seconds)")
        if t > self._time_limit(rec):
            self._future_time(t, rec)
        return float(t)

    def _time_limit(self, rec: InRecord | None) -> float:
        ahead = self.pc["max_time_ahead_s"]
        if ahead <= 0:
            return math.inf
        ts = rec.timestamp_ms if rec is not None else 0
        return (ts / 1000.0 if ts > 0 else time.time()) + ahead

    def _future_time(self, t: float, rec: InRecord | None) -> None:
        by = "Kafka timestamp" if rec is not None and rec.timestamp_ms > 0 else "arrival (wall clock)"
        raise BadRecord("future_time", f"'time' {t!r} lies more than max_time_ahead_s="
                        f"{self.pc['max_time_ahead_s']:g} s after the record's {by}")


class PipelineCore(CoreBase):
    """Decoding, decisions, reward joins, guardrails, OPE and metrics of one pipeline.

    Learned rewards (joined, or defaulted on event time) wait in a queue and are applied to the
    model in blocks: before an event, once ``learn_every_events`` events were decided since the
    last block (1: before every event). Blocks are counted in log order and the queue is part of
    the checkpoint, so decisions stay independent of micro-batch boundaries and of restarts, while
    consecutive events are decided by one kernel call.
    """

    def __init__(self, pc: dict[str, Any], metrics: DaemonMetrics | None = None):
        self.pc = pc
        self.name = pc["name"]
        self.metrics = metrics or DaemonMetrics()
        self.params = learner_params(pc)
        self.learner = learners.create(pc["learner"], **self.params)
        self.shadows = {s: learners.create(s, **self.params) for s in pc["shadow_learners"]}
        self.d = self.params["n_features"]
        self.n_af = int(self.params.get("n_action_features", 0))
        self.hasher = FeatureHasher(self.d, pc["feature_cache"])
        # Name→value action features are hashed into their own n_action_features columns.
        self.af_hasher = FeatureHasher(self.n_af, pc["feature_cache"]) if self.n_af else None
        self.wait_s = float(pc["reward_wait_s"])
        self.learn_every = int(pc["learn_every_events"])
        self.buffer = JoinBuffer(pc["join_buffer_cap"], self.wait_s)
        # Remembered ids (duplicates, late rewards); the decision bytes are kept for decisions made
        # over HTTP only (a retried /decide returns them): Kafka's are on the output topic already.
        self.seen: OrderedDict[str, int] = OrderedDict()  # id -> status
        self.bodies: dict[str, bytes] = {}  # id -> decision bytes, for ids decided over HTTP
        self.queue: list[tuple[str, Pending, float]] = []  # rewards waiting for the next learning block
        self.since_learn = 0  # events decided since the last learning block
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
        self._c_joined = m.rewards.labels(pipeline=self.name, outcome="joined")
        self._c_defaulted = m.rewards.labels(pipeline=self.name, outcome="defaulted")
        self._n_defaulted = 0
        self._c_reward_sum = m.reward_sum.labels(**self._lbl)
        self._c_action: dict[str, tuple[Any, Any, Any]] = {}  # label -> (decisions, reward sum, feedback)
        self.pending_out: list[Out] = []

    # -- decoding -----------------------------------------------------------------------------------
    @staticmethod
    def _reward(obj: dict[str, Any]) -> float:
        """The reward of a feedback record or request (one rule for Kafka and HTTP)."""
        r = obj.get("reward")
        if r is None:
            raise BadRecord("missing_field", "'reward' is required")
        if isinstance(r, bool) or not isinstance(r, int | float):
            raise BadRecord("bad_type", "'reward' must be a number")
        return float(r)  # finite: orjson rejects NaN/inf, and gives integers beyond 64 bits as floats

    def _dense(self, v: Any, n: int, what: str) -> np.ndarray:
        if type(v) is not list:
            raise BadRecord("bad_type", f"{what} must be a list of numbers or a name→number object")
        if len(v) != n:
            raise BadRecord("bad_type", f"{what} as a list must have {n} numbers, got {len(v)}")
        if any(isinstance(a, bool) or not isinstance(a, int | float) for a in v):
            raise BadRecord("bad_type", f"{what} must hold numbers only")
        return np.array(v, dtype=np.float64)  # finite (JSON numbers; see _reward); only hashed sums can overflow

    def _vector(self, v: Any, n: int, what: str) -> np.ndarray:
        """A dense vector from a list or a name→value map (hashed)."""
        if type(v) is dict:
            cols, vals = self._sparse(v, what, self.af_hasher)
            out = np.zeros(n)
            with np.errstate(over="ignore"):  # an overflow is rejected just below
                np.add.at(out, cols, vals)
            if not np.isfinite(out).all():
                raise BadRecord("non_finite", f"{what} sum to inf in a hashed column")
            return out
        return self._dense(v, n, what)

    def _sparse(self, v: dict[str, Any], what: str, hasher: FeatureHasher | None = None) -> tuple[list[int], list[float]]:
        try:
            return (self.hasher if hasher is None else hasher).sparse(v)  # (an empty hasher is falsy: len)
        except TypeError as e:
            raise BadRecord("bad_type", f"{what}[{e.args[0]!r}] must be a number") from None

    def decode_event(self, obj: dict[str, Any], rec: InRecord | None) -> Event:
        eid = self._id(obj)
        t = self._time(obj, rec)
        feats = obj.get("features")
        if feats is None:
            raise BadRecord("missing_field", "'features' is required")
        x = cols = vals = None
        if type(feats) is dict:
            cols, vals = self._sparse(feats, "features")
        else:
            x = self._dense(feats, self.d, "features")
        ids, af = self._action_ids(obj.get("actions"))
        return Event(eid, t, x, cols, vals, ids, af, rec.replay if rec is not None else False, rec)

    def _action_ids(self, acts: Any, validate_only: bool = False) -> tuple[list[str] | None, np.ndarray | None]:
        """The event's action ids (None: the configured actions) and action features; with
        ``validate_only`` the same checks without hashing anything."""
        if acts is None:
            if self.n_af:
                raise BadRecord("missing_field", "'actions' with features are required by this learner")
            if not getattr(self.learner, "actions", ()):
                raise BadRecord("missing_field", "'actions' is required (no actions are configured)")
            return None, None
        if not isinstance(acts, list) or not acts:
            raise BadRecord("bad_type", "'actions' must be a non-empty list")
        ids: list[str] = []
        rows = []
        for a in acts:
            if isinstance(a, str):
                ids.append(a)
                if self.n_af:
                    raise BadRecord("missing_field", f"action {a!r} needs 'features' (the learner uses action features)")
            elif isinstance(a, dict) and isinstance(a.get("id"), str):
                ids.append(a["id"])
                if self.n_af:
                    what, v = f"action {a['id']!r} features", a.get("features")
                    if not validate_only:
                        rows.append(self._vector(v, self.n_af, what))
                    elif type(v) is dict:
                        _numbers_only(v, what)
                    else:
                        self._dense(v, self.n_af, what)
            else:
                raise BadRecord("bad_type", "each action must be an id string or {\"id\": ..., \"features\": [...]}")
        if len(set(ids)) != len(ids):
            raise BadRecord("bad_type", "'actions' lists an id twice")
        if getattr(self.learner, "strict_actions", False):
            known = getattr(self.learner, "actions", ())
            unknown = [a for a in ids if a not in known]
            if unknown:
                raise BadRecord("unknown_action", f"action ids not configured: {unknown[:5]}")
        return ids, (np.array(rows) if self.n_af and not validate_only else None)

    # -- the log-order loop -----------------------------------------------------------------------
    def handle(self, records: list[InRecord]) -> list[Out]:
        """Processes records in order; returns the decisions and dead letters to publish."""
        out: list[Out] = []
        run: list[Event] = []
        run_ids: set[str] = set()
        n_ev = n_fb = 0
        loads, max_bytes, seen = orjson.loads, self.pc["max_message_bytes"], self.seen
        # The common event (name→value features, the configured actions) is decoded inline;
        # everything else goes through decode_event, which holds the full rules.
        inline = not self.n_af and bool(getattr(self.learner, "actions", ()))
        for rec in records:
            try:
                v = rec.value
                if len(v) > max_bytes:
                    raise BadRecord("oversize", f"{len(v)} bytes > max_message_bytes={max_bytes}")
                try:
                    obj = loads(v)
                except orjson.JSONDecodeError as e:
                    raise json_error(v, e) from None
                if type(obj) is not dict:
                    raise BadRecord("bad_type", "a record must be a JSON object")
                kind = obj.get("type", "event")
                if kind == "event":
                    n_ev += 1
                    feats = obj.get("features")
                    if inline and type(feats) is dict and "actions" not in obj:
                        eid = obj.get("id")
                        if type(eid) is not str or not eid or len(eid) > MAX_ID_LEN:
                            eid = self._id(obj)
                        t = obj.get("time")
                        # JSON floats are finite: only the bound is checked for them.
                        if t is not None and (type(t) is not float or t > self._time_limit(rec)):
                            t = self._time(obj, rec)
                        cols, vals = self._sparse(feats, "features")
                        ev = Event(eid, t, None, cols, vals, None, None, rec.replay, rec)
                    else:
                        ev = self.decode_event(obj, rec)
                        eid, t = ev.id, ev.time
                    if eid in seen or eid in run_ids:
                        raise BadRecord("duplicate_event", f"event id {eid!r} was already decided")
                    self._admit(ev, run, run_ids, out, None)
                elif kind == "feedback":
                    n_fb += 1
                    eid = self._id(obj)
                    t = self._time(obj, rec)
                    r = self._reward(obj)
                    if eid in run_ids:
                        self._flush_run(run, run_ids, out, None)
                    if t is not None:
                        self._advance_to(t)
                    self._join(eid, r)
                else:
                    raise BadRecord("bad_type", f"'type' must be 'event' or 'feedback', got {kind!r}")
            except BadRecord as e:
                out.append(self._reject(e.reason, e.detail, rec))
        self._flush_run(run, run_ids, out, None)
        self._c_events.inc(n_ev)
        self._c_feedback.inc(n_fb)
        self.update_gauges()
        return out

    def _admit(self, ev: Event, run: list[Event], run_ids: set[str], out: list[Out], decided: list | None) -> None:
        """Places a valid, new event in log order: event time first, then a learning block if due.

        The event enters the join buffer here, at its log position, although it is decided later
        with the rest of its run: expiry and rewards then act on it in log order whatever the run
        boundaries, and a run is cut only where the model changes (a learning block).
        """
        t = ev.time
        if t is not None and t > self.watermark:
            self._advance_to(t)
        if self.queue and self.since_learn >= self.learn_every:
            self._flush_run(run, run_ids, out, decided)
            self._learn()
        ev.eff = self.watermark
        ev.deadline = ev.eff + self.wait_s
        evicted = self.buffer.add(ev.id, ev)
        if evicted is not None:
            # Expired early: it gets the default reward, as an expiry on event time does. Queued,
            # not learned here: the next learning block learns it after its run is decided, so the
            # state still changes only between runs.
            self.seen_status(evicted[0], EXPIRED)
            self.queue.append((*evicted, self.pc["default_reward"]))
            self.metrics.cap_evictions.labels(pipeline=self.name, cap="join_buffer").inc()
            self.metrics.rewards.labels(pipeline=self.name, outcome="evicted").inc()
        run.append(ev)
        run_ids.add(ev.id)
        self.since_learn += 1

    def _advance_to(self, t: float) -> None:
        """Moves event time forward and expires what waited past its deadline (default reward)."""
        if t <= self.watermark:
            return
        self.watermark = t
        if self.buffer.next_deadline() > t:
            return
        expired = self.buffer.expire(t)
        r = self.pc["default_reward"]
        seen, q = self.seen, self.queue
        for eid, e in expired:
            if eid in seen:
                seen[eid] = EXPIRED
            q.append((eid, e, r))
        self._n_defaulted += len(expired)

    def seen_status(self, eid: str, status: int) -> None:
        if eid in self.seen:
            self.seen[eid] = status

    def _join(self, eid: str, reward: float) -> None:
        e = self.buffer.pop(eid)
        if e is None:
            status = self.seen.get(eid)
            if status is None:
                raise BadRecord("unknown_event", f"reward for unknown event id {eid!r}")
            if status == EXPIRED:
                raise BadRecord("late_reward", f"reward for {eid!r} arrived after reward_wait_s")
            raise BadRecord("duplicate_reward", f"event {eid!r} already has its reward")
        self.seen_status(eid, JOINED)
        self.queue.append((eid, e, reward))
        self._c_joined.inc()
        self._c_reward_sum.inc(reward)
        _, c_sum, c_fb = self._action_counters(e.action)
        c_sum.inc(reward)
        c_fb.inc()
        st = self.version_stats.setdefault(e.version, [0.0, 0.0])
        st[0] += reward
        st[1] += 1
        o = e.ope
        for i, t in enumerate(self.targets):
            self.ope[t].update_one(o[3 * i] / e.prob, reward, o[3 * i + 1], o[3 * i + 2])

    def _learn(self) -> None:
        """Learns the queued rewards (joined or expired decisions) in order, then empties the queue."""
        rows = self.queue
        n = len(rows)
        batch: dict[str, Any] = {
            "event_key": np.array([e.key for _, e, _ in rows], dtype=np.uint64),
            "X": rows_matrix([e for _, e, _ in rows], self.d),
            "action": [e.action for _, e, _ in rows],
            "reward": np.array([r for _, _, r in rows], dtype=np.float64),
            "prob": np.array([e.prob for _, e, _ in rows]),
        }
        if self.n_af:
            batch["action_features"] = np.array([e.af for _, e, _ in rows]).reshape(n, self.n_af)
        self.queue = []
        self.since_learn = 0
        for lrn in (self.learner, *self.shadows.values()):
            lrn.learn(batch)

    def _action_label(self, a: str) -> str:
        if a in self.action_labels:
            return a
        if len(self.action_labels) < self.pc["metrics_max_actions"]:
            self.action_labels.add(a)
            return a
        return "other"

    def _action_counters(self, action: str) -> tuple[Any, Any, Any]:
        label = self._action_label(action)
        c = self._c_action.get(label)
        if c is None:
            m = self.metrics
            c = self._c_action[label] = (m.action_decisions.labels(pipeline=self.name, action=label),
                                         m.action_rewards.labels(pipeline=self.name, action=label),
                                         m.action_feedback.labels(pipeline=self.name, action=label))
        return c

    # -- decisions --------------------------------------------------------------------------------
    def _flush_run(self, run: list[Event], run_ids: set[str], out: list[Out], decided: list | None,
                   source: str = "kafka") -> None:
        """Decides the run of events (dead-letters any whose hashed features overflow)."""
        if not run:
            return
        X, bad = self._matrix(run)
        if len(bad):
            dropped = set()
            for i in bad.tolist():
                out.append(self._reject("non_finite", "features sum to inf in a hashed column", run[i].rec))
                self.buffer.pop(run[i].id)
                dropped.add(id(run[i]))
            self.queue = [q for q in self.queue if id(q[1]) not in dropped]  # expired within the run
            keep = np.ones(len(run), dtype=bool)
            keep[bad] = False
            run[:] = [ev for ev, k in zip(run, keep.tolist(), strict=True) if k]
            X = X[keep]
        decisions = self.decide(run, source, X) if run else []
        out += [Out("decision", dec["id"].encode(), body) for dec, body in decisions]
        if decided is not None:
            decided += decisions
        run.clear()
        run_ids.clear()

    def _matrix(self, run: list[Event]) -> tuple[np.ndarray, np.ndarray]:
        """The run's contexts as one n×d matrix, and the rows that are not finite."""
        X = rows_matrix(run, self.d)
        return X, np.flatnonzero(~np.isfinite(X).all(axis=1))

    def _batch(self, run: list[Event], X: np.ndarray) -> dict[str, Any]:
        batch: dict[str, Any] = {
            "event_key": event_keys([e.id for e in run]),
            "X": X,
        }
        if any(e.actions is not None for e in run):
            default = list(getattr(self.learner, "actions", ()))
            sets = [e.actions if e.actions is not None else default for e in run]
            batch["action_indptr"] = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
            batch["action_ids"] = [a for s in sets for a in s]
            if self.n_af:
                batch["action_features"] = np.concatenate([e.afs for e in run])
        return batch

    def _default_reason(self) -> str | None:
        if self.force_default:
            return "forced"
        if self.learner.metrics().get("learned_events", 0.0) < self.pc["min_learned_events"]:
            return "not_ready"
        return None

    def decide(self, run: list[Event], source: str, X: np.ndarray) -> list[tuple[dict, bytes]]:
        """Decides a run of events (contexts ``X``, finite: see :meth:`_flush_run`) at the current state."""
        n = len(run)
        batch = self._batch(run, X)
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
        ids: list[str] | None = batch.get("action_ids")
        fixed: list[str] = []
        if indptr is None:
            fixed = [str(a) for a in getattr(self.learner, "actions", ())]
            k = len(fixed)
            indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
        starts = indptr[:-1]
        nnz = int(indptr[-1])
        if out is not None:
            chosen = np.asarray(out["chosen"], dtype=np.int64)
            probs = out["probs"]
            rhat = np.clip(out["scores"], 0.0, 1.0)
            prob_l = out["prob"].tolist()
            explored_l = out["explored"].tolist()
            ver_l = out["model_version"].tolist()
        else:
            dflt = self.pc["default_action"]
            if ids is None:
                chosen = np.full(n, fixed.index(dflt) if dflt in fixed else 0, dtype=np.int64)
            else:
                chosen = np.array([ids[lo:hi].index(dflt) if dflt in ids[lo:hi] else 0
                                   for lo, hi in zip(indptr[:-1].tolist(), indptr[1:].tolist(), strict=True)],
                                  dtype=np.int64)
            probs = np.zeros(nnz)
            probs[starts + chosen] = 1.0
            rhat = np.zeros(nnz)
            prob_l = [1.0] * n
            explored_l = [False] * n
            ver_l = [int(self.learner.metrics().get("model_version", 0))] * n
            self.metrics.defaults.labels(pipeline=self.name, reason=reason).inc(n)
        flat = starts + chosen
        # Per target policy: π(a|x), Σ_b π(b|x) r̂(x,b) and r̂(x,a), for the OPE of the reward join,
        # as one flat tuple per event.
        r_chosen = rhat[flat].tolist()
        cols = []
        for j, sname in enumerate(self.targets):
            p = probs if j == 0 else shadow_outs.get(sname, {}).get("probs", probs)
            cols += [p[flat].tolist(), np.add.reduceat(p * rhat, starts).tolist(), r_chosen]
        ope_l = list(zip(*cols, strict=True))
        probs_l = probs.tolist()
        chosen_l = chosen.tolist()
        keys_l = batch["event_key"].tolist()
        bounds = indptr.tolist()
        default = out is None
        name, keep_body = self.name, source == "http"
        bd, seen, dedup_cap = self.buffer._d, self.seen, self.pc["dedup_cap"]
        if ids is None:
            k = len(fixed)
            actions = [fixed[p] for p in chosen_l]
            offers = [fixed] * n
            probs_rows = [probs_l[i * k:(i + 1) * k] for i in range(n)]
        else:
            offers = [ids[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
            actions = [o[p] for o, p in zip(offers, chosen_l, strict=True)]
            probs_rows = [probs_l[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        bodies = self.bodies
        decisions: list[tuple[dict, bytes]] = []
        n_forgotten = 0
        for ev, action, offered, prow, pos, prob, explored, ver, ope, key in zip(
                run, actions, offers, probs_rows, chosen_l, prob_l, explored_l, ver_l, ope_l, keys_l, strict=True):
            eid = ev.id
            dec: dict[str, Any] = {
                "id": eid,
                "pipeline": name,
                "action": action,
                "prob": prob,
                "probs": dict(zip(offered, prow, strict=True)),
                "model_version": ver,
                "explored": explored,
                "default": default,
                "reason": reason,
                "time": ev.time,
                "replay": ev.replay,
            }
            body = dumps_kept(dec)
            decisions.append((dec, body))
            ev.decided(key, action, ev.afs[pos] if ev.afs is not None else None, prob, ver, ope)
            ev.rec = ev.actions = ev.afs = None  # not needed while waiting for the reward
            # Still waiting in the buffer, or already expired (event time or the cap) within its run.
            seen[eid] = PENDING if eid in bd else EXPIRED
            if keep_body:
                bodies[eid] = body
            if len(seen) > dedup_cap:
                old = seen.popitem(last=False)[0]
                bd.pop(old, None)  # a forgotten id cannot be joined safely any more
                if bodies:
                    bodies.pop(old, None)
                n_forgotten += 1
        counts = collections.Counter(actions)
        n_explored = sum(explored_l)
        n_replay = sum([ev.replay for ev in run])
        m = self.metrics
        for action, c in counts.items():
            self._action_counters(action)[0].inc(c)
        if n_forgotten:
            m.cap_evictions.labels(pipeline=name, cap="dedup").inc(n_forgotten)
        if n_replay:
            m.replays.labels(pipeline=name).inc(n_replay)
        self._c_explored.inc(n_explored)
        m.decisions.labels(pipeline=name, source=source).inc(n)
        return decisions

    # -- the sidecar's entry points ---------------------------------------------------------------
    def validate_objects(self, objs: list[Any]) -> list[dict | None]:
        """The checks :meth:`decide_objects` makes before deciding, touching no state (no lock is
        needed: the latency-budget path runs them while the Kafka loop holds the pipeline).

        Raises :class:`BadRecord` for the first invalid object; returns, per object, the decision
        a retried id already has (HTTP decisions are kept), else None. Sums of hashed features
        that overflow are found only when deciding (the hashing cache is not touched here).
        """
        kept: list[dict | None] = []
        ids: set[str] = set()
        for i, obj in enumerate(objs):
            if not isinstance(obj, dict):
                raise BadRecord("bad_type", f"item {i}: an event must be a JSON object")
            eid = self._id(obj)
            body = self.bodies.get(eid)
            if body is not None:
                kept.append(orjson.loads(body))
                continue
            if eid in self.seen:
                raise BadRecord("duplicate_event", f"event id {eid!r} was decided from the Kafka input; "
                                "its decision is on the output topic")
            if eid in ids:
                raise BadRecord("duplicate_event", f"event id {eid!r} appears twice in one request")
            ids.add(eid)
            self._time(obj)
            feats = obj.get("features")
            if feats is None:
                raise BadRecord("missing_field", "'features' is required")
            if type(feats) is dict:
                _numbers_only(feats, "features")
            else:
                self._dense(feats, self.d, "features")
            self._action_ids(obj.get("actions"), validate_only=True)
            kept.append(None)
        return kept

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
                body = self.bodies.get(eid)
                if body is None:
                    raise BadRecord("duplicate_event", f"event id {eid!r} was decided from the Kafka input; "
                                    "its decision is on the output topic")
                results[i] = orjson.loads(body)
                continue
            if eid in ids:
                raise BadRecord("duplicate_event", f"event id {eid!r} appears twice in one request")
            ev = self.decode_event(obj, None)
            ids.add(eid)
            fresh.append(ev)
            where.append(i)
        if fresh:
            _, bad = self._matrix(fresh)
            if len(bad):
                raise BadRecord("non_finite", f"event {fresh[int(bad[0])].id!r}: features sum to inf in a hashed column")
        run: list[Event] = []
        run_ids: set[str] = set()
        outs: list[Out] = []
        decided: list[dict] = []
        for ev in fresh:
            self._admit(ev, run, run_ids, outs, decided)
        self._flush_run(run, run_ids, outs, decided, "http")
        for i, (dec, _) in zip(where, decided, strict=True):
            results[i] = dec
        self.pending_out += outs
        self.update_gauges()
        return [r for r in results if r is not None]

    def feedback_objects(self, objs: list[Any]) -> list[dict]:
        """Joins rewards from /feedback; returns one status per item (errors are per item)."""
        res: list[dict[str, Any]] = []
        for obj in objs:
            try:
                if not isinstance(obj, dict):
                    raise BadRecord("bad_type", "feedback must be a JSON object")
                eid = self._id(obj)
                t = self._time(obj)
                r = self._reward(obj)
                if t is not None:
                    self._advance_to(t)
                self._join(eid, r)
                res.append({"id": eid, "status": "joined"})
            except BadRecord as e:
                self.metrics.errors.labels(pipeline=self.name, reason=e.reason).inc()
                res.append({"id": obj.get("id") if isinstance(obj, dict) else None,
                            "status": "rejected", "reason": e.reason, "detail": e.detail})
        self._c_feedback.inc(len(objs))
        self.update_gauges()
        return res

    # -- gauges, OPE ------------------------------------------------------------------------------
    def update_gauges(self) -> None:
        if self._n_defaulted:  # counted in bulk: expiry runs at every step of event time
            self._c_defaulted.inc(self._n_defaulted)
            self._n_defaulted = 0
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
        arrays["seen/ids"], arrays["seen/id_ends"] = pack_strings(list(self.seen))
        arrays["seen/status"] = np.fromiter(self.seen.values(), dtype=np.uint8, count=len(self.seen))
        arrays["bodies/ids"], arrays["bodies/id_ends"] = pack_strings(list(self.bodies))
        arrays["bodies/decisions"], arrays["bodies/decision_ends"] = pack_strings(list(self.bodies.values()))
        q = pending_to_arrays([(i, e) for i, e, _ in self.queue], self.d, self.n_af, len(self.targets))
        q["reward"] = np.array([r for _, _, r in self.queue], dtype=np.float64)
        for k, v in q.items():
            arrays[f"queue/{k}"] = v
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
            "since_learn": self.since_learn,
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
        ids = unpack_strings(arrays["seen/ids"], arrays["seen/id_ends"])
        self.seen = OrderedDict(zip(ids, arrays["seen/status"].tolist(), strict=True))
        self.bodies = dict(zip(unpack_strings(arrays["bodies/ids"], arrays["bodies/id_ends"]),
                               unpack_strings(arrays["bodies/decisions"], arrays["bodies/decision_ends"], as_bytes=True),
                               strict=True))
        q = {k[6:]: v for k, v in arrays.items() if k.startswith("queue/")}
        rewards = q["reward"].tolist()
        self.queue = [(i, e, r) for (i, e), r in zip(pending_from_arrays(q, self.n_af > 0), rewards, strict=True)]
        self.since_learn = int(meta.get("since_learn", 0))
        for t, e in self.ope.items():
            if f"ope/{t}" in arrays:
                e.load(arrays[f"ope/{t}"])
        self.version_stats = OrderedDict((int(v), [s, c]) for v, s, c in arrays["versions"].tolist())
        w = meta.get("watermark")
        self.watermark = -math.inf if w is None else float(w)
        self.update_gauges()
