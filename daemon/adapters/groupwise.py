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
leaves the buffer unlearned and is counted (``eddy_labels_total{outcome="expired"}``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any, cast

import numpy as np

import learners
from connectors.base import SourceRecord
from learners._hashing import FeatureHasher, event_keys
from learners.groupwise import GroupwiseRegressor
from learners.groupwise.rules import RuleError, parse

from ..checkpoint import pack_strings
from ..config import S
from ..family import Adapter, Item, Outputs, Sample, Verb, legacy_lane, register
from ..panels import SEL, Panel, Target, rate
from ..records import BadRecord, Out, dumps_kept, number, record_id


class Event(Item):
    """A groupwise event: its dense context ``x`` and group membership row ``member``."""

    __slots__ = ("x", "member", "value")

    def __init__(self, id: str, time: float | None, x: np.ndarray, member: np.ndarray, rec: SourceRecord | None,
                 value: float | None = None):
        self.id, self.time, self.rec, self.value = id, time, rec, value
        self.replay = rec.replay if rec is not None else False
        self.x, self.member = x, member


SETTINGS = (
    S("group_rules", dict, {}, "groupwise: group name → rule over the event's features (e.g. \"age < 30 and "
      "sex == 'F'\"; a small safe grammar, never eval); rule groups join the learner's params.groups",
      exclusive=True),
    S("default_prediction", float, 0.0, "groupwise: prediction served while the model is not ready "
      "(min_learned_events) or a default is forced"),
)


@register
class GroupwiseAdapter(Adapter):
    """Decoding, predictions and group metrics of a groupwise pipeline."""

    family = "groupwise"
    settings = SETTINGS
    verbs = {"predict": Verb("events", "events", "predictions"), "label": Verb("feedback", "labels", "results")}
    feedback_type = "label"
    feedback_name = "label"
    feedback_metric = "eddy_labels"
    expired_outcome = "expired"
    panels_title = "Groupwise regret"
    panels = (
        Panel("Regret per group (mixture rule)", (
            Target(f'max by (pipeline, group) (eddy_group_regret{{{SEL}, rule="mixture"}})', "{{pipeline}} {{group}}"),
        ), "short", "Squared loss beyond the best fixed linear model in hindsight on each group's own events"),
        Panel("Mean squared loss per group", (
            Target(f"max by (pipeline, group, rule) (eddy_group_loss{{{SEL}}}) / on (pipeline, group) group_left "
                   f"clamp_min(max by (pipeline, group) (eddy_group_events{{{SEL}}}), 1)",
                   "{{pipeline}} {{group}} ({{rule}})"),
        ), "short", "Cumulative squared loss over the labelled events of each group, by prediction rule"),
        Panel("Labels joined, expired, evicted", (
            Target(rate("eddy_labels_total", "pipeline, outcome"), "{{pipeline}} {{outcome}}"),
            Target(rate("eddy_groupwise_learned_labels_total"), "{{pipeline}} learned"),
        ), "ops", "Labels joined to their prediction, predictions whose label never came, pushed out by the cap"),
        Panel("Labelled events per group", (
            Target(f"max by (pipeline, group) (eddy_group_events{{{SEL}}})", "{{pipeline}} {{group}}"),
        ), "short", "Labelled events learned per group (groups intersect: an event counts in each of its groups)"),
    )
    default_params = ("seed", "n_features")

    @classmethod
    def learner_params(cls, pc: dict[str, Any]) -> dict[str, Any]:
        params = super().learner_params(pc)
        groups = list(params.get("groups", []))  # the rule groups are groups too
        params["groups"] = groups + [g for g in pc["group_rules"] if g not in groups]
        return params

    @classmethod
    def check(cls, pc: dict[str, Any]) -> None:
        for name, text in pc["group_rules"].items():
            try:
                parse(text)
            except RuleError as e:
                raise ValueError(f"group_rules.{name}: {e}") from None

    def __init__(self, pc: dict[str, Any], metrics, rules):
        super().__init__(pc, metrics, rules)
        self.learner = cast(GroupwiseRegressor, learners.create(pc["learner"], **self.params))
        self.d = int(self.learner.n_features)
        self.rule_fns = [(name, parse(text)) for name, text in pc["group_rules"].items()]
        self.group_col = {g: i for i, g in enumerate(self.learner.groups)}
        self.names = list(self.group_col)
        self.hasher = FeatureHasher(self.d, pc["feature_cache"])

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "group_rules": self.pc["group_rules"]}

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
        for name, rule in self.rule_fns:
            if rule(raw):
                row[self.group_col[name]] = 1
        return row

    def decode(self, obj: dict[str, Any], rec: SourceRecord | None) -> Item:
        eid = record_id(obj)
        t = self.rules.time(obj, rec)
        x, raw = self._features(obj)
        return Event(eid, t, x, self._member(obj, raw), rec, number(obj, "label", required=False))

    def feedback_value(self, obj: dict[str, Any]) -> float:
        return cast(float, number(obj, "label"))

    # -- predictions, learning --------------------------------------------------------------------
    def run(self, items: list[Item], source: str) -> Outputs:
        run = cast(list[Event], items)
        n = len(run)
        X = np.array([e.x for e in run]).reshape(n, self.d)
        G = np.array([e.member for e in run]).reshape(n, len(self.group_col))
        t0 = time.perf_counter()
        res = self.learner.process({"X": X, "G": G, "event_key": event_keys([e.id for e in run])})
        self.kernel_s += time.perf_counter() - t0
        reason = self.default_reason()
        preds = res["prediction"].tolist() if reason is None else [float(self.pc["default_prediction"])] * n
        if reason is not None:
            self.metrics.defaults.labels(pipeline=self.name, reason=reason).inc(n)
        names, name, http = self.names, self.name, source == "http"
        outs: list[Out | BadRecord] = []
        bodies: list[dict[str, Any]] = []
        for e, p in zip(run, preds, strict=True):
            awake = [names[j] for j in np.flatnonzero(e.member).tolist() if names[j] != "always_on"]
            body = {"id": e.id, "pipeline": name, "prediction": p, "groups": ["always_on", *awake],
                    "default": reason is not None, "reason": reason, "time": e.time, "replay": e.replay}
            outs.append(Out("decision", cast(str, e.id).encode(), dumps_kept(body)))
            if http:
                bodies.append(body)
            e.rec = None  # not needed while waiting for the label
        return outs, bodies

    def learn(self, rows: list[tuple[Item, float]]) -> None:
        es = cast(list[Event], [e for e, _ in rows])
        n = len(es)
        t0 = time.perf_counter()
        self.learner.learn({"X": np.array([e.x for e in es]).reshape(n, self.d),
                            "G": np.array([e.member for e in es]).reshape(n, len(self.group_col)),
                            "y": np.array([v for _, v in rows], dtype=np.float64)})
        self.kernel_s += time.perf_counter() - t0

    # -- checkpoint -------------------------------------------------------------------------------
    def pack(self, items: list[Item]) -> dict[str, np.ndarray]:
        es = cast(list[Event], items)
        return {"X": np.array([e.x for e in es], dtype=np.float64).reshape(len(es), self.d),
                "G": np.array([e.member for e in es], dtype=np.int64).reshape(len(es), len(self.group_col))}

    def unpack(self, a: Mapping[str, np.ndarray], ids: list[str]) -> list[Item]:
        return [Event(i, None, x.copy(), g.copy(), None) for i, x, g in zip(ids, a["X"], a["G"], strict=True)]

    def upgrade(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Format 1 (one state: buffer/, queue/ without ids, seen/, bodies/)."""
        if meta.get("format_version") != 1 or meta.get("family") != "groupwise":
            return super().upgrade(arrays, meta)
        n = len(arrays["queue/y"])
        arrays["queue/value"] = arrays.pop("queue/y")
        arrays["queue/ids"], arrays["queue/id_ends"] = pack_strings([""] * n)  # learned by position only
        arrays["queue/deadline"] = np.zeros(n)
        arrays["buffer/value"] = np.zeros(len(arrays["buffer/deadline"]))
        return legacy_lane(arrays, {**meta, "shadows": []}, {"buffer/": "buffer/", "queue/": "queue/",
                                                             "seen/": "seen/", "bodies/": "bodies/"})

    # -- reports and metrics ----------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        return {"groups": self.learner.report()["groups"],
                "learner_metrics": {"learned_events": self.learner.learned_events}}

    def samples(self) -> Iterator[Sample]:
        yield Sample("eddy_groupwise_learned_labels", "counter", "Labels the model has learned", {},
                     self.learner.learned_events)
        yield Sample("eddy_feature_cache_entries", "gauge", "Cached feature-name hashes", {}, len(self.hasher))
        for r in self.learner.report()["groups"]:
            g = {"group": r["group"]}
            yield Sample("eddy_group_events", "gauge", "Labelled events learned per group", g, r["events"])
            for rule, loss, regret in (("mixture", "loss", "regret"), ("randomized", "loss_randomized",
                                                                       "regret_randomized")):
                yield Sample("eddy_group_loss", "gauge", "Cumulative squared loss per group and prediction rule",
                             {**g, "rule": rule}, r[loss])
                yield Sample("eddy_group_regret", "gauge", "Regret per group against the best fixed linear "
                             "model in hindsight on the group's events", {**g, "rule": rule}, r[regret])
