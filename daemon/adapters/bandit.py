"""Bandit pipelines: a decision per event, its reward joined later by event id, off-policy estimates.

Input records (one JSON object each, Kafka or the sidecar's ``/decide`` and ``/feedback``)::

    {"id": "tx-1", "features": {"amount": 0.3, "bias": 1}, "actions": ["a", "b"], "time": 1700000000.0}
    {"type": "feedback", "id": "tx-1", "reward": 1.0, "time": 1700000003.0}

``features``: a name→value object (hashed into ``n_features``) or a list of ``n_features`` numbers;
``actions`` (optional with configured actions): ids, or ``{"id", "features"}`` objects for learners
with action features. Output: ``{"id", "pipeline", "action", "prob", "probs", "model_version",
"explored", "default", "reason", "time", "replay"}``. A decision whose reward has not arrived
within ``reward_wait_s`` of event time learns ``default_reward`` (Personalizer's semantics).
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, cast

import numpy as np
import orjson

import learners
from connectors.base import SourceRecord
from learners._hashing import NUMBER_TYPES, FeatureHasher, event_keys
from learners.bandit import BanditLearner
from learners.bandit.ope import OffPolicyEstimate
from learners.base import factory_of

from ..checkpoint import pack_strings, unpack_strings
from ..config import S
from ..family import Adapter, Item, Outputs, Sample, Verb, legacy_lane, register
from ..panels import RATE, SEL, Panel, Target, per, rate
from ..records import MAX_ID_LEN, BadRecord, Out, dumps_kept, number, numbers_only
from ..records import record_id as _id
from . import _kernels as EK

VERSIONS_KEPT = 8
log = logging.getLogger(__name__)
LEARNER_METRICS = (  # the learner's metrics() keys as named metrics
    ("learned_events", "eddy_bandit_learned_rewards", "counter", "Rewards the model has learned"),
    ("actions", "eddy_bandit_actions", "gauge", "Actions the model holds state for"),
    ("action_evictions", "eddy_bandit_action_evictions", "counter",
     "Actions whose state was dropped to make room (the action table's cap)"),
    ("gamma", "eddy_bandit_exploration_gamma", "gauge", "SquareCB's exploration parameter γ (larger: greedier)"),
    ("model_version", "eddy_bandit_model_version", "gauge", "Current model version"),
)  # model versions whose average reward is reported (ranks 0..7, newest first)


PAIR = np.dtype([("c", "<i8"), ("v", "<f8")])  # a hashed feature as an event keeps it: column, value


def rows_matrix(rows: list, d: int) -> np.ndarray:
    """Contexts as one n×d matrix, from items holding a dense ``x``, hashed ``cols``/``vals`` or
    hashed ``pairs`` (the bytes of a :data:`PAIR` array)."""
    n = len(rows)
    X: np.ndarray
    packed = [e.pairs for e in rows]
    if None not in packed:  # hashed with their run (the Kafka path): one join, one view
        rec = np.frombuffer(b"".join(packed), dtype=PAIR)
        return hashed_matrix(np.arange(n, dtype=np.int64), rec["c"], rec["v"], [len(p) >> 4 for p in packed], n, d)
    pairs = {i: np.frombuffer(p, dtype=PAIR) for i, p in enumerate(packed) if p is not None}
    sparse = [i for i, e in enumerate(rows) if e.cols is not None or i in pairs]
    if not sparse:
        return np.array([e.x for e in rows], dtype=np.float64).reshape(n, d)
    cl = [pairs[i]["c"].tolist() if i in pairs else rows[i].cols for i in sparse]
    vl = [pairs[i]["v"].tolist() if i in pairs else rows[i].vals for i in sparse]
    lens = [len(c) for c in cl]
    total = sum(lens)
    chain = itertools.chain.from_iterable
    cols = np.fromiter(chain(cl), np.int64, count=total)
    vals = np.fromiter(chain(vl), np.float64, count=total)
    X = hashed_matrix(np.asarray(sparse, dtype=np.int64), cols, vals, lens, n, d)
    if len(sparse) < n:
        dense = sorted(set(range(n)).difference(sparse))
        X[dense] = np.array([rows[i].x for i in dense], dtype=np.float64).reshape(len(dense), d)
    return X


def rows_csr(rows: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contexts as sparse rows (``x_indptr``, ``x_index``, ``x_value``) for learners that take them,
    from the same items as :func:`rows_matrix`: no n×d matrix is ever built."""
    parts_c: list[np.ndarray] = []
    parts_v: list[np.ndarray] = []
    for e in rows:
        if e.pairs is not None:
            rec = np.frombuffer(e.pairs, dtype=PAIR)
            parts_c.append(rec["c"])
            parts_v.append(rec["v"])
        elif e.cols is not None:
            parts_c.append(np.asarray(e.cols, dtype=np.int64))
            parts_v.append(np.asarray(e.vals, dtype=np.float64))
        else:
            nz = np.flatnonzero(e.x)
            parts_c.append(nz.astype(np.int64))
            parts_v.append(np.asarray(e.x, dtype=np.float64)[nz])
    ptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(c) for c in parts_c], out=ptr[1:])
    if not parts_c:
        return ptr, np.zeros(0, dtype=np.int64), np.zeros(0)
    return ptr, np.concatenate(parts_c).astype(np.int64, copy=False), np.concatenate(parts_v)


def take_rows(ctx: Any, keep: np.ndarray) -> Any:
    """The contexts of the kept rows (a matrix, or sparse rows)."""
    if isinstance(ctx, np.ndarray):
        return ctx[keep]
    ptr, idx, val = ctx
    lens = np.diff(ptr)[keep]
    mask = np.repeat(keep, np.diff(ptr))
    out = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=out[1:])
    return out, idx[mask], val[mask]


def _takes_rows(learner: str) -> bool:
    """Whether the named learner takes its contexts as sparse rows (read off its class: building
    one could allocate its whole state)."""
    factory = factory_of(learner)
    cls = getattr(factory, "func", factory)
    return any(c.name == "x_indptr" for c in getattr(cls, "inputs", ()))


def hashed_matrix(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, lens: list[int], n: int,
                  d: int) -> np.ndarray:
    """The n×d matrix whose row ``rows[j]`` sums the ``lens[j]`` (column, value) pairs that are next
    in ``cols``/``vals`` (colliding columns add up)."""
    flat = np.repeat(rows * d, lens) + cols
    return np.bincount(flat, weights=vals, minlength=n * d).reshape(n, d)


class DecisionTemplate:
    """The JSON of model decisions over a fixed action set, written by one kernel call per run
    (:func:`daemon.adapters._kernels.decisions`) instead of a dict (with a nested ``probs`` dict)
    per decision through orjson: the ids', numbers' and times' texts come from one orjson call
    per column over the whole run, and the kernel copies them between the template's fixed
    segments. Parsed, the output equals the dict's (``tests/test_bandit_encoding.py`` checks it on
    awkward ids and action names)."""

    def __init__(self, pipeline: str, actions: list[str]):
        self.actions = tuple(actions)
        self.k = len(actions)
        segs = [b'{"id":"', b'","pipeline":' + orjson.dumps(pipeline) + b',"action":', b',"prob":',
                b',"probs":{', b'},"model_version":', b',"explored":',
                b',"default":false,"reason":null,"time":', b',"replay":', b"}"]
        self.segs, self.seg_ends = pack_strings(segs)
        self.action_texts, self.action_ends = pack_strings([orjson.dumps(a) for a in actions])
        self.keys, self.key_ends = pack_strings([orjson.dumps(a) + b":" for a in actions])
        self._fixed = sum(map(len, segs)) + len(self.keys) + self.k + 32  # per decision, besides its texts

    def encode(self, run: list[Event], chosen: list[int], prob: np.ndarray, probs: np.ndarray,
               versions: list[int], explored: list[bool]) -> list[bytes]:
        n, k = len(run), self.k
        if not n:
            return []
        dumps, u8 = orjson.dumps, np.uint8
        ids = dumps([e.id for e in run])
        rows = dumps(probs.reshape(n, k), option=orjson.OPT_SERIALIZE_NUMPY)
        prob_t = dumps(prob, option=orjson.OPT_SERIALIZE_NUMPY)
        times = dumps([e.time for e in run])
        out = np.empty(len(ids) + len(rows) + len(prob_t) + len(times) + n * (self._fixed + int(self.action_ends[-1])),
                       dtype=u8)
        pos = np.asarray(chosen, dtype=np.int64)
        if (not len(pos) == len(prob) == len(versions) == len(explored) == n or probs.size != n * k
                or not 0 <= pos.min() <= pos.max() < k):
            raise ValueError("the decision columns do not match the run")  # (the kernel reads unchecked)
        m = EK.decisions(self.segs, self.seg_ends, np.frombuffer(ids, u8), self.action_texts, self.action_ends,
                         self.keys, self.key_ends, np.frombuffer(rows, u8), np.frombuffer(prob_t, u8),
                         np.frombuffer(times, u8), pos,
                         np.asarray(versions, dtype=np.int64), np.asarray(explored, dtype=u8),
                         np.fromiter([e.replay for e in run], dtype=u8, count=n), out)
        return out[:m].tobytes().split(b"\n")


class Event(Item):
    """One event from decoding to its reward: the context (dense ``x``, hashed ``cols``/``vals``, or
    hashed ``pairs``: the bytes of a :data:`PAIR` array, as the run's hashing leaves them)
    and the offered ``actions`` with their features ``afs``; once decided, ``key`` (the event key),
    ``action``, ``af`` (its features), ``prob``, ``version`` and ``ope`` (per target policy π(a|x),
    Σ_b π(b|x) r̂(x,b) and r̂(x,a), flat). One object per event keeps the loop's cost low."""

    __slots__ = ("x", "cols", "vals", "pairs", "feats", "actions", "afs", "key", "action", "af", "prob", "version",
                 "ope")
    key: int
    action: str
    af: np.ndarray | None
    prob: float
    version: int
    ope: tuple

    def __init__(self, id: str, time: float | None, x: np.ndarray | None, cols: list[int] | None,
                 vals: list[float] | None, actions: list[str] | None, afs: np.ndarray | None,
                 rec: SourceRecord | None, feats: dict[str, Any] | None = None):
        self.id, self.time, self.rec = id, time, rec
        self.replay = rec.replay if rec is not None else False
        self.x, self.cols, self.vals, self.actions, self.afs = x, cols, vals, actions, afs
        self.feats = feats
        self.pairs: bytes | None = None


SETTINGS = (
    S("default_action", str, "", "action returned when the model is not ready, fails, is switched off "
      "or the latency budget is spent (the first offered action when empty or not offered)"),
    S("latency_budget_ms", float, 50.0, "sidecar: a decision that cannot start within this budget gets the "
      "default", minimum=0.0),
    S("default_reward", float, 0.0, "reward learned when none arrived within reward_wait_s"),
    S("metrics_max_actions", int, 64, "per-action metric labels kept (others as 'other')", minimum=1),
    S("crosses", list, [], "declared feature crosses, hashed like the features (Vowpal Wabbit's -q): lists of "
      "field names, a feature's field being its name up to the first '='; [[\"origin\", \"dest\"]] adds "
      "'origin=JFK^dest=LAX' for each pair of such features, valued by their product"),
    S("cross_only", list, [], "fields that feed crosses but are not features themselves"),
)


@register
class BanditAdapter(Adapter):
    """Decoding, decisions, the reward statistics (OPE, per action, per model version) of a bandit."""

    family = "bandit"
    settings = SETTINGS
    verbs = {"decide": Verb("events", "events", "decisions"), "feedback": Verb("feedback", "feedback", "results"),
             "control": Verb("control")}
    feedback_type = "feedback"
    rejects_in_runs = True  # (hashed features that sum to inf are found with their run: _contexts)
    feedback_name = "reward"
    feedback_metric = "eddy_rewards"
    expired_outcome = "defaulted"
    panels_title = "Contextual bandits"
    panels = (
        Panel("Average reward and exploration rate", (
            Target(per(f"sum by (pipeline) (delta(eddy_reward_sum_total{{{SEL}}}[{RATE}]))",
                       f'sum by (pipeline) (increase(eddy_rewards_total{{{SEL}, outcome="joined"}}[{RATE}]))'),
                   "{{pipeline}} average reward"),
            Target(per(rate("eddy_explored_decisions_total"), rate("eddy_decisions_total")),
                   "{{pipeline}} exploration rate"),
        ), "short", "Average joined reward over the window; share of decisions that did not pick the greedy action"),
        Panel("Off-policy estimates: deployed policy and shadows", (
            Target(f"max by (pipeline, policy, estimator) (eddy_ope_value{{{SEL}}})",
                   "{{pipeline}} {{policy}} ({{estimator}})"),
        ), "short", "Estimated average reward of each policy on the deployed policy's logged decisions"),
        Panel("Action selection share", (
            Target(f"{rate('eddy_action_decisions_total', 'pipeline, action')} / ignoring (action) group_left "
                   f"clamp_min({rate('eddy_action_decisions_total')}, 1e-9)", "{{pipeline}} {{action}}"),
        ), "percentunit", "Share of each action in the pipeline's decisions"),
        Panel("Rewards joined, defaulted, evicted", (
            Target(rate("eddy_rewards_total", "pipeline, outcome"), "{{pipeline}} {{outcome}}"),
            Target(rate("eddy_bandit_learned_rewards_total"), "{{pipeline}} learned"),
        ), "ops", "Rewards joined to their decision; decisions whose reward never came in reward_wait_s "
                  "(learned as the default reward, or not at all); pushed out by the buffer's cap"),
        Panel("Reward by model version", (
            Target(f"max by (pipeline, rank) (eddy_model_version_reward_mean{{{SEL}}})", "{{pipeline}} rank {{rank}}"),
        ), "short", "Average joined reward of the decisions of each recent model version (rank 0: the newest "
                    "with rewards): a swing between versions shows oscillation"),
        Panel("Model: exploration γ and actions held", (
            Target(f"max by (pipeline) (eddy_bandit_exploration_gamma{{{SEL}}})", "{{pipeline}} γ"),
            Target(f"max by (pipeline) (eddy_bandit_actions{{{SEL}}})", "{{pipeline}} actions held"),
        ), "short", "SquareCB's γ (larger: greedier); actions the model holds state for"),
    )
    default_params = ("seed", "n_features")

    @classmethod
    def check(cls, pc: dict[str, Any]) -> None:
        FeatureHasher(1, crosses=pc["crosses"], cross_only=pc["cross_only"])  # (raises on a bad cross)
        actions = cls.learner_params(pc).get("actions") or ()
        if pc["default_action"] and actions and pc["default_action"] not in actions:
            raise ValueError(f"default_action {pc['default_action']!r} is not among the configured actions "
                             f"{list(actions)}")
        if not all(isinstance(f, str) for f in pc["cross_only"]):
            raise ValueError("cross_only must list field names")
        form = _takes_rows(pc["learner"])
        for s in pc["shadow_learners"]:
            if _takes_rows(s) != form:
                raise ValueError(f"shadow learner {s!r} takes contexts in another form than {pc['learner']!r} "
                                 "(sparse rows and dense matrices do not mix in one pipeline)")

    @classmethod
    def mergeable(cls, pc: dict[str, Any]) -> bool:
        from learners.bandit import PRESETS

        preset = PRESETS.get(pc["learner"])
        return preset is not None and cls.learner_params(pc).get("oracle", preset["oracle"]) in ("ridge",
                                                                                               "ridge-shared")

    def merger(self) -> Any:
        from learners.bandit.merge import RidgeMerge

        return RidgeMerge(self.learner)

    def __init__(self, pc: dict[str, Any], metrics, rules):
        super().__init__(pc, metrics, rules)
        self.check(pc)  # (before any learner is built: a dense shadow of a hashed learner's size would not fit)
        self.learner = cast(BanditLearner, learners.create(pc["learner"], **self.params))
        self.shadows = {s: learners.create(s, **self.params) for s in pc["shadow_learners"]}
        self.expire_value = float(pc["default_reward"])
        self.budget_s = pc["latency_budget_ms"] / 1000.0
        self.d = int(self.params["n_features"])
        self.n_af = int(self.params.get("n_action_features", 0))
        self.actions = [str(a) for a in self.learner.actions]
        self.strict = bool(self.learner.strict_actions)
        # Learners over sparse rows (hashed oracles) get x_indptr/x_index/x_value, never an n×d matrix.
        self.sparse = _takes_rows(pc["learner"])
        self.hasher = FeatureHasher(self.d, pc["feature_cache"], crosses=pc["crosses"], cross_only=pc["cross_only"])
        # Name→value action features are hashed into their own n_action_features columns.
        self.af_hasher = FeatureHasher(self.n_af, pc["feature_cache"]) if self.n_af else None
        self.inline = not self.n_af and bool(self.actions)  # the common event, decoded inline
        self.ahead = rules.ahead if rules.ahead > 0 else math.inf  # (RecordRules.time_limit, inline)
        self.targets = [pc["learner"], *self.shadows]
        self.ope = {t: OffPolicyEstimate() for t in self.targets}
        self.version_stats: OrderedDict[int, list[float]] = OrderedDict()
        self.per_action: dict[str, list[float]] = {}  # label -> [decisions, reward sum, rewards]
        self.explored = 0
        self.reward_sum = 0.0
        self.n_joined = 0
        self.last_learner_error = ""
        self._template: DecisionTemplate | None = None

    # -- decoding ---------------------------------------------------------------------------------
    def _dense(self, v: Any, n: int, what: str) -> np.ndarray:
        if type(v) is not list:
            raise BadRecord("bad_type", f"{what} must be a list of numbers or a name→number object")
        if len(v) != n:
            raise BadRecord("bad_type", f"{what} as a list must have {n} numbers, got {len(v)}")
        if not set(map(type, v)) <= NUMBER_TYPES and any(  # (the set: a C loop over JSON's ints and floats)
                isinstance(a, bool) or not isinstance(a, int | float) for a in v):
            raise BadRecord("bad_type", f"{what} must hold numbers only")
        return np.array(v, dtype=np.float64)  # finite (JSON numbers); only hashed sums can overflow

    def _sparse(self, v: dict[str, Any], what: str,
                hasher: FeatureHasher | None = None) -> tuple[list[int], list[float]]:
        try:
            return (self.hasher if hasher is None else hasher).sparse(v)  # (an empty hasher is falsy: len)
        except TypeError as e:
            raise BadRecord("bad_type", f"{what}[{e.args[0]!r}] must be a number") from None
        except OverflowError:
            raise BadRecord("non_finite", f"{what} hold an integer too large for a float") from None

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

    def decode(self, obj: dict[str, Any], rec: SourceRecord | None) -> Item:
        feats = obj.get("features")
        if self.inline and rec is not None and type(feats) is dict and "actions" not in obj:
            eid = obj.get("id")
            if type(eid) is not str or not eid or len(eid) > MAX_ID_LEN:
                eid = _id(obj)
            t = obj.get("time")
            # JSON floats are finite: only the bound is checked for them (RecordRules.time otherwise).
            if t is not None and (type(t) is not float or (ts := rec.timestamp_ms) <= 0
                                  or t > ts / 1000.0 + self.ahead):
                t = self.rules.time(obj, rec)
            for value in feats.values():  # numbers only (hashed with the run: _contexts)
                kind = type(value)
                if kind is not float and kind is not int:
                    self._sparse(feats, "features")  # raises the record's reason
            return Event(eid, t, None, None, None, None, None, rec, feats)
        eid = _id(obj)
        t = self.rules.time(obj, rec)
        if feats is None:
            raise BadRecord("missing_field", "'features' is required")
        x: np.ndarray | None = None
        cols: list[int] | None = None
        vals: list[float] | None = None
        if type(feats) is dict:
            cols, vals = self._sparse(feats, "features")
        else:
            x = self._dense(feats, self.d, "features")
        ids, af = self._action_ids(obj.get("actions"))
        ev = Event(eid, t, x, cols, vals, ids, af, rec)
        if rec is None and cols is not None and not self._finite(ev):
            raise BadRecord("non_finite", f"event {eid!r}: features sum to inf in a hashed column")
        return ev

    def _finite(self, ev: Event) -> bool:
        """Whether one decoded event's hashed context is finite: its values (and crosses) for a
        learner of sparse rows, the sums of its hashed columns otherwise."""
        if self.sparse:
            return all(map(math.isfinite, ev.vals or ()))
        return bool(np.isfinite(rows_matrix([ev], self.d)).all())

    def validate(self, obj: dict[str, Any]) -> None:
        _id(obj)
        feats = obj.get("features")
        if feats is None:
            raise BadRecord("missing_field", "'features' is required")
        if type(feats) is dict:
            numbers_only(feats, "features")
        else:
            self._dense(feats, self.d, "features")
        self._action_ids(obj.get("actions"), validate_only=True)

    def _action_ids(self, acts: Any, validate_only: bool = False) -> tuple[list[str] | None, np.ndarray | None]:
        """The event's action ids (None: the configured actions) and action features; with
        ``validate_only`` the same checks without hashing anything."""
        if acts is None:
            if self.n_af:
                raise BadRecord("missing_field", "'actions' with features are required by this learner")
            if not self.actions:
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
                    raise BadRecord("missing_field",
                                    f"action {a!r} needs 'features' (the learner uses action features)")
            elif isinstance(a, dict) and isinstance(a.get("id"), str):
                ids.append(a["id"])
                if self.n_af:
                    what, v = f"action {a['id']!r} features", a.get("features")
                    if not validate_only:
                        rows.append(self._vector(v, self.n_af, what))
                    elif type(v) is dict:
                        numbers_only(v, what)
                    else:
                        self._dense(v, self.n_af, what)
            else:
                raise BadRecord("bad_type", "each action must be an id string or {\"id\": ..., \"features\": [...]}")
        if len(set(ids)) != len(ids):
            raise BadRecord("bad_type", "'actions' lists an id twice")
        if self.strict:
            unknown = [a for a in ids if a not in self.actions]
            if unknown:
                raise BadRecord("unknown_action", f"action ids not configured: {unknown[:5]}")
        return ids, (np.array(rows) if self.n_af and not validate_only else None)

    def feedback_value(self, obj: dict[str, Any]) -> float:
        return cast(float, number(obj, "reward"))

    # -- decisions --------------------------------------------------------------------------------
    def run(self, items: list[Item], source: str) -> Outputs:
        """Decides a run of events at the current state (dead-letters any whose hashed features
        overflow)."""
        run = cast(list[Event], items)
        t0 = time.perf_counter()
        X, bad = self._contexts(run)
        self.features_s += time.perf_counter() - t0
        if not bad:
            return self._decide(run, source, X)
        good = [ev for ev in run if ev not in bad]
        keep = np.array([ev not in bad for ev in run], dtype=bool)
        outs, bodies = self._decide(good, source, take_rows(X, keep)) if good else ([], [])
        self.rejected = True
        o, b = iter(outs), iter(bodies)
        return [bad.get(ev) or next(o) for ev in run], [None if ev in bad else next(b) for ev in run] if bodies else []

    def _contexts(self, run: list[Event]) -> tuple[Any, dict[Event, BadRecord]]:
        """The run's contexts (an n×d matrix, or sparse rows for a learner that takes them), and
        its events that are rejected (hashed features that sum to inf, an integer too large for a
        float). Events decoded from Kafka bring their features
        checked but unhashed: they are hashed here, all at once, and each keeps its own columns
        and values (``pairs``, a copy: a waiting event holds no share of the run's arrays)."""
        bad: dict[Event, BadRecord] = {}
        n, d = len(run), self.d
        X: Any = None
        if run[0].feats is not None and all(e.feats is not None for e in run):
            try:
                cols, vals, lens = self.hasher.sparse_many([e.feats for e in run], checked=True)  # type: ignore[misc]
            except (TypeError, OverflowError):
                pass  # (found row by row below)
            else:
                if self.sparse:
                    ptr = np.zeros(n + 1, dtype=np.int64)
                    np.cumsum(lens, out=ptr[1:])
                    X = (ptr, cols, vals)
                else:
                    X = hashed_matrix(np.arange(n, dtype=np.int64), cols, vals, lens, n, d)
                rec = np.empty(len(cols), dtype=PAIR)
                rec["c"], rec["v"] = cols, vals
                raw, a = rec.tobytes(), 0
                for e, b in zip(run, itertools.accumulate(lens), strict=True):
                    e.pairs, e.feats = raw[a << 4:b << 4], None
                    a = b
        if X is None:
            for e in run:
                if e.feats is not None:
                    try:
                        e.cols, e.vals = self._sparse(e.feats, "features")
                    except BadRecord as err:
                        bad[e] = err
                        e.cols, e.vals = [], []
                    e.feats = None
            X = rows_csr(run) if self.sparse else rows_matrix(run, d)
        if self.sparse:
            ptr, _, vals = X
            rows = np.unique(np.repeat(np.arange(n), np.diff(ptr))[~np.isfinite(vals)])
        else:
            rows = np.flatnonzero(~np.isfinite(X).all(axis=1))
        if len(rows):
            inf = BadRecord("non_finite", "a feature cross overflows to inf" if self.sparse
                            else "features (or their crosses) sum to inf in a hashed column")
            for i in rows.tolist():
                bad.setdefault(run[i], inf)
        return X, bad

    def _context_columns(self, X: Any) -> dict[str, Any]:
        if self.sparse:
            ptr, idx, val = X
            return {"x_indptr": ptr, "x_index": idx, "x_value": val}
        return {"X": X}

    def _batch(self, run: list[Event], X: Any) -> dict[str, Any]:
        batch: dict[str, Any] = {"event_key": event_keys([e.id for e in run]), **self._context_columns(X)}
        if any(e.actions is not None for e in run):
            sets = [e.actions if e.actions is not None else self.actions for e in run]
            batch["action_indptr"] = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
            batch["action_ids"] = [a for s in sets for a in s]
            if self.n_af:
                batch["action_features"] = np.concatenate([e.afs for e in run])
        return batch

    def _decide(self, run: list[Event], source: str, X: Any) -> Outputs:
        n = len(run)
        batch = self._batch(run, X)
        reason = self.default_reason()
        out = None
        t0 = time.perf_counter()
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
        self.kernel_s += time.perf_counter() - t0
        indptr = batch.get("action_indptr")
        ids: list[str] | None = batch.get("action_ids")
        fixed = self.actions
        if indptr is None:
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
        chosen_l = chosen.tolist()
        keys_l = batch["event_key"].tolist()
        default = out is None
        name, http = self.name, source == "http"
        outs: list[Out | BadRecord] = []
        bodies: list[dict[str, Any]] = []
        if ids is None:
            actions = [fixed[p] for p in chosen_l]
            texts = None
            if not default and not http:  # the Kafka path's common run: one template
                tmpl = self._template
                if tmpl is None or tmpl.actions != tuple(fixed):
                    tmpl = self._template = DecisionTemplate(name, fixed)
                try:
                    texts = tmpl.encode(run, chosen_l, np.asarray(out["prob"], dtype=np.float64),  # type: ignore[index]
                                        np.ascontiguousarray(probs, dtype=np.float64), ver_l, explored_l)
                except Exception as e:  # (a learner's unexpected output: the decision dicts below)
                    log.warning("%s: decision template failed (%r); writing dicts", self.name, e)
            if texts is not None:
                for ev, action, text, prob, ver, ope, key in zip(run, actions, texts, prob_l, ver_l, ope_l, keys_l,
                                                                 strict=True):
                    outs.append(Out("decision", ev.id.encode(), text))
                    ev.key, ev.action, ev.prob, ev.version, ev.ope = key, action, prob, ver, ope
                    ev.af = ev.rec = None  # not needed while waiting for the reward
                self._count(actions, explored_l)
                return outs, bodies
            k = len(fixed)
            offers = [fixed] * n
            probs_rows = probs.reshape(n, k).tolist()
        else:
            bounds = indptr.tolist()
            probs_l = probs.tolist()
            offers = [ids[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
            actions = [o[p] for o, p in zip(offers, chosen_l, strict=True)]
            probs_rows = [probs_l[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
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
            outs.append(Out("decision", eid.encode(), dumps_kept(dec)))
            if http:
                bodies.append(dec)
            ev.key, ev.action, ev.prob, ev.version, ev.ope = key, action, prob, ver, ope
            ev.af = ev.afs[pos] if ev.afs is not None else None
            ev.rec = ev.actions = ev.afs = None  # not needed while waiting for the reward
        self._count(actions, explored_l)
        return outs, bodies

    def _count(self, actions: list[str], explored: list[bool]) -> None:
        for action, c in collections.Counter(actions).items():
            self._action(action)[0] += c
        self.explored += sum(explored)

    def default_answer(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The default action, not logged for learning (the latency budget is spent)."""
        acts = obj.get("actions")
        offered = [a if isinstance(a, str) else a["id"] for a in acts] if acts is not None else self.actions
        dflt = self.pc["default_action"]
        action = dflt if dflt in offered or not offered else offered[0]
        return {"id": obj["id"], "pipeline": self.name, "action": action, "prob": 1.0, "probs": {action: 1.0},
                "model_version": None, "explored": False, "default": True, "reason": "latency_budget",
                "time": obj.get("time"), "replay": False}

    # -- rewards ----------------------------------------------------------------------------------
    def _action(self, action: str) -> list[float]:
        """The counters of an action's label (past ``metrics_max_actions`` labels: "other")."""
        c = self.per_action.get(action)
        if c is None:
            label = action if len(self.per_action) < self.pc["metrics_max_actions"] else "other"
            c = self.per_action.setdefault(label, [0, 0.0, 0])
        return c

    def joined(self, item: Item, value: float) -> None:
        e = cast(Event, item)
        self.reward_sum += value
        self.n_joined += 1
        c = self._action(e.action)
        c[1] += value
        c[2] += 1
        st = self.version_stats.get(e.version)
        if st is None:
            st = self.version_stats[e.version] = [0.0, 0.0]
            while len(self.version_stats) > VERSIONS_KEPT:
                self.version_stats.popitem(last=False)
        st[0] += value
        st[1] += 1
        o = e.ope
        for i, t in enumerate(self.targets):
            self.ope[t].update_one(o[3 * i] / e.prob, value, o[3 * i + 1], o[3 * i + 2])

    def learn(self, rows: list[tuple[Item, float]]) -> None:
        es = cast(list[Event], [e for e, _ in rows])
        n = len(es)
        t0 = time.perf_counter()
        ctx = self._context_columns(rows_csr(es) if self.sparse else rows_matrix(es, self.d))
        self.features_s += time.perf_counter() - t0
        batch: dict[str, Any] = {
            "event_key": np.array([e.key for e in es], dtype=np.uint64),
            **ctx,
            "action": [e.action for e in es],
            "reward": np.array([r for _, r in rows], dtype=np.float64),
            "prob": np.array([e.prob for e in es]),
        }
        if self.n_af:
            batch["action_features"] = np.array([e.af for e in es]).reshape(n, self.n_af)
        t0 = time.perf_counter()
        for lrn in (self.learner, *self.shadows.values()):
            lrn.learn(batch)
        self.kernel_s += time.perf_counter() - t0

    # -- checkpoint -------------------------------------------------------------------------------
    def pack(self, items: list[Item]) -> dict[str, np.ndarray]:
        es = cast(list[Event], items)
        m, n_af = len(es), self.n_af
        acts, act_ends = pack_strings([e.action for e in es])
        if self.sparse:  # waiting contexts as sparse rows (an n×2**18 matrix would not fit)
            ptr, idx, val = rows_csr(es)
            ctx = {"x_indptr": ptr, "x_index": idx, "x_value": val}
        else:
            ctx = {"X": rows_matrix(es, self.d).reshape(m, self.d)}
        return {
            "keys": np.array([e.key for e in es], dtype=np.uint64),
            **ctx,
            "actions": acts, "action_ends": act_ends,
            "af": np.array([e.af if e.af is not None else np.zeros(n_af) for e in es],
                           dtype=np.float64).reshape(m, n_af),
            "prob": np.array([e.prob for e in es], dtype=np.float64),
            "version": np.array([e.version for e in es], dtype=np.int64),
            "ope": np.array([e.ope for e in es], dtype=np.float64).reshape(m, len(self.targets), 3),
        }

    def unpack(self, a: Mapping[str, np.ndarray], ids: list[str]) -> list[Item]:
        acts = unpack_strings(a["actions"], a["action_ends"])
        keys, prob, version = a["keys"].tolist(), a["prob"].tolist(), a["version"].tolist()
        ope = [tuple(r) for r in a["ope"].reshape(len(ids), a["ope"].shape[1] * 3).tolist()]
        out: list[Item] = []
        ptr = a["x_indptr"].tolist() if "x_indptr" in a else None
        for i, eid in enumerate(ids):
            if ptr is not None:
                lo, hi = ptr[i], ptr[i + 1]
                e = Event(eid, None, None, a["x_index"][lo:hi].tolist(), a["x_value"][lo:hi].tolist(), None, None,
                          None)
            else:
                e = Event(eid, None, a["X"][i].copy(), None, None, None, None, None)
            e.key, e.action, e.prob, e.version, e.ope = keys[i], acts[i], prob[i], version[i], ope[i]
            e.af = a["af"][i].copy() if self.n_af else None
            out.append(e)
        return out

    def upgrade(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Format 2 (one state: join/, queue/, seen/, bodies/)."""
        if meta.get("format_version") != 2 or "family" in meta:
            return super().upgrade(arrays, meta)
        arrays.pop("join/evicted", None)
        for old, new in (("bodies/decisions", "bodies/outputs"), ("bodies/decision_ends", "bodies/output_ends"),
                         ("queue/reward", "queue/value")):
            arrays[new] = arrays.pop(old)
        arrays["join/value"] = np.zeros(len(arrays["join/deadline"]))
        return legacy_lane(arrays, meta, {"join/": "buffer/", "queue/": "queue/", "seen/": "seen/",
                                          "bodies/": "bodies/"})

    def snapshot(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, own = super().snapshot()
        for t, e in self.ope.items():
            arrays[f"ope/{t}"] = e.to_array()
        arrays["versions"] = np.array([[v, s, c] for v, (s, c) in self.version_stats.items()],
                                      dtype=np.float64).reshape(-1, 3)
        return arrays, own

    def restore(self, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
        super().restore(arrays, meta)
        for t, e in self.ope.items():
            if f"ope/{t}" in arrays:
                e.load(arrays[f"ope/{t}"])
        self.version_stats = OrderedDict((int(v), [s, c]) for v, s, c in arrays["versions"].tolist())

    # -- reports and metrics ----------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        return {
            "ope": {t: {**e.values(), "n": e.n, "ips_stderr": e.ips_stderr()} for t, e in self.ope.items()},
            "reward_by_model_version": {str(v): {"mean": s / c, "n": int(c)}
                                        for v, (s, c) in self.version_stats.items() if c},
            "learner_metrics": self.learner.metrics(),
            "rewards_joined": self.n_joined,
            "average_reward": self.reward_sum / self.n_joined if self.n_joined else None,
        }

    def samples(self) -> Iterator[Sample]:
        lm = self.learner.metrics()
        for key, name, kind, doc in LEARNER_METRICS:
            if key in lm:
                yield Sample(name, kind, doc, {}, lm[key])
        yield Sample("eddy_feature_cache_entries", "gauge", "Cached feature-name hashes", {}, len(self.hasher))
        yield Sample("eddy_explored_decisions", "counter", "Decisions that did not pick the greedy action",
                     {}, self.explored)
        yield Sample("eddy_reward_sum_total", "gauge", "Sum of joined rewards (a gauge: rewards may be negative)",
                     {}, self.reward_sum)
        for label, (n, rsum, nfb) in self.per_action.items():
            a = {"action": label}
            yield Sample("eddy_action_decisions", "counter", "Decisions per action", a, n)
            yield Sample("eddy_action_reward_sum_total", "gauge", "Joined reward per action (a gauge: rewards "
                         "may be negative)", a, rsum)
            yield Sample("eddy_action_feedback", "counter", "Joined rewards per action", a, nfb)
        for t, est in self.ope.items():
            for k, v in est.values().items():
                yield Sample("eddy_ope_value", "gauge", "Off-policy estimate of a policy's average reward",
                             {"policy": t, "estimator": k}, v)
        newest = list(self.version_stats.items())[::-1]
        for rank in range(VERSIONS_KEPT):
            v, (s, c) = newest[rank] if rank < len(newest) else (-1, (0.0, 0.0))
            r = {"rank": str(rank)}
            yield Sample("eddy_model_version_reward_mean", "gauge", "Average joined reward of the decisions "
                         "made by the model version of this rank (0: the newest with rewards; NaN: none)",
                         r, s / c if c else float("nan"))
            yield Sample("eddy_model_version_of_rank", "gauge", "The model version at this rank (-1: none)", r, v)

