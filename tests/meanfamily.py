"""A learner family defined entirely in test code: the running mean of labels, per segment.

It shows that a family needs no runtime module: this module registers a learner with
``learners.base.register`` and its adapter with ``daemon.family.register`` when imported, so a
configuration with ``plugins = ["tests.meanfamily"]`` runs ``learner = "test-running-mean"``
pipelines through the shared engine (Kafka, files, the sidecar, checkpoints).

Input records::

    {"id": "r-1", "segment": "north", "time": 12.0}              an event (predicted at once)
    {"id": "r-2", "segment": "south", "label": 3.5}              an event with its label
    {"type": "label", "id": "r-1", "label": 2.0, "time": 13.0}   a label, later

Output: ``{"id", "pipeline", "segment", "prediction", "count", "default", "reason", "time",
"replay"}``: the mean of the labels learned so far in the event's segment (its hash bucket, one
of ``params.n_buckets``; ``count`` labels); a segment with none gets the mean over every
segment, and before any label the pipeline's ``default_mean``, also served (``default``, with
``reason``) while a default is forced or fewer than ``min_learned_events`` labels are learned. A
label that does not come within ``reward_wait_s`` leaves its event unlearned.

Importing the module twice (under another name as well) is safe: a name already registered keeps
its first registration. :func:`unregister` drops the adapter's registration again (tests use it
so that the rest of a session sees the built-in families only).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any, cast

import numpy as np

import learners
import learners.base as lb
from connectors.base import SourceRecord
from daemon import family as fam
from daemon.checkpoint import pack_strings, unpack_strings
from daemon.config import S
from daemon.family import Adapter, Item, Outputs, Sample, Verb
from daemon.records import BadRecord, Out, dumps_kept, number, record_id
from learners._hashing import event_keys
from learners.base import Batch, Column, Decider, InvalidInput, checked_state

LEARNER = "test-running-mean"
FAMILY = "mean"
MAX_SEGMENT_LEN = 64


def _segments(values: Any, what: str) -> list[str]:
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise InvalidInput(f"{what} must be 1-d")
        values = values.tolist()
    if not isinstance(values, list | tuple) or not all(type(s) is str for s in values):
        raise InvalidInput(f"{what} must be a list of strings")
    return list(values)


class RunningMean(Decider):
    """The running mean of the labels learned so far, per segment (hashed into buckets).

    Parameters
    ----------
    n_buckets
        Segments are hashed (blake2b) into this many buckets; each keeps a label sum and count.
    prior
        The prediction before any label was learned.
    seed
        Unused (the learner draws nothing); accepted as every learner's seed.
    """

    family = FAMILY
    inputs = (Column("segment", "str", "n", "the event's segment name"),)
    outputs = (
        Column("prediction", "float64", "n", "mean label of the event's bucket (else of all, else the prior)"),
        Column("count", "int64", "n", "labels learned in the event's bucket"),
    )
    feedback = (
        Column("segment", "str", "n", "the labelled event's segment name"),
        Column("label", "float64", "n", "the label (finite)"),
    )

    def __init__(self, n_buckets: int = 16, prior: float = 0.0, seed: int = 0):
        if type(n_buckets) is not int or n_buckets < 1:
            raise ValueError(f"n_buckets must be a positive integer, got {n_buckets!r}")
        if not np.isfinite(prior):
            raise ValueError(f"prior must be finite, got {prior!r}")
        self.n_buckets = n_buckets
        self.prior = float(prior)
        self.seed = seed
        self._sums = np.zeros(n_buckets, dtype=np.float64)
        self._counts = np.zeros(n_buckets, dtype=np.int64)

    def _buckets(self, segments: list[str]) -> np.ndarray:
        if not segments:
            return np.zeros(0, dtype=np.int64)
        return (event_keys(segments) % np.uint64(self.n_buckets)).astype(np.int64)

    def overall(self) -> float:
        n = int(self._counts.sum())
        return float(self._sums.sum() / n) if n else self.prior

    def _process(self, batch: Batch) -> dict[str, np.ndarray]:
        b = self._buckets(_segments(batch["segment"], "segment"))
        counts = self._counts[b]
        with np.errstate(invalid="ignore", divide="ignore"):
            own = self._sums[b] / counts
        pred = np.where(counts > 0, own, self.overall()).astype(np.float64)
        return {"prediction": pred, "count": counts.astype(np.int64)}

    def _learn(self, batch: Batch) -> None:
        segs = _segments(batch["segment"], "segment")
        y = np.asarray(batch["label"])
        if y.dtype.kind not in "fiu" or y.shape != (len(segs),):
            raise InvalidInput(f"label must be {len(segs)} numbers (one per segment)")
        y = y.astype(np.float64)
        if not np.isfinite(y).all():
            raise InvalidInput("label must be finite", rows=np.flatnonzero(~np.isfinite(y)))
        b = self._buckets(segs)
        np.add.at(self._sums, b, y)  # in log order: the same sums whatever the block boundaries
        np.add.at(self._counts, b, 1)

    def snapshot(self) -> dict[str, np.ndarray]:
        return {"sums": self._sums.copy(), "counts": self._counts.copy()}

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        s = checked_state(self.snapshot(), state, "another n_buckets?")
        self._sums, self._counts = s["sums"], s["counts"]

    @property
    def learned_events(self) -> int:
        return int(self._counts.sum())

    def metrics(self) -> dict[str, float]:
        return {"learned_events": float(self.learned_events), "mean": self.overall()}

    @classmethod
    def _conformance_stream(cls, seed: int, n_events: int = 64) -> Iterator[tuple[str, Batch]]:
        rng = np.random.default_rng(seed)
        names = [f"s{i}" for i in range(5)]
        for _ in range(max(1, n_events // 8)):
            segs = [names[int(i)] for i in rng.integers(0, len(names), 8)]
            yield "process", {"segment": segs}
            yield "learn", {"segment": segs, "label": np.round(rng.normal(size=8), 3)}

    @classmethod
    def _bad_batches(cls) -> Iterator[tuple[str, Batch]]:
        yield "process", {"segment": np.arange(3)}
        yield "learn", {"segment": ["a", "b"], "label": np.array([1.0])}
        yield "learn", {"segment": ["a", "b"], "label": np.array([1.0, np.nan])}
        yield "learn", {"segment": ["a", 5], "label": np.array([1.0, 2.0])}


class Obs(Item):
    """A mean-family event: its segment."""

    __slots__ = ("segment", "value")

    def __init__(self, id: str, time: float | None, segment: str, rec: SourceRecord | None,
                 value: float | None = None):
        self.id, self.time, self.rec, self.value = id, time, rec, value  # (a "value" slot of its own)
        self.replay = rec.replay if rec is not None else False
        self.segment = segment


class MeanAdapter(Adapter):
    """Decoding, predictions and the mean gauge of a ``mean`` pipeline."""

    family = FAMILY
    settings = (S("default_mean", float, 0.0, "mean: prediction before any label is learned, and while a "
                  "default is forced"),)
    verbs = {"predict": Verb("events", "events", "predictions"), "label": Verb("feedback", "labels", "results")}
    feedback_type = "label"
    feedback_name = "label"
    feedback_metric = "eddy_mean_labels"
    expired_outcome = "expired"

    @classmethod
    def learner_params(cls, pc: dict[str, Any]) -> dict[str, Any]:
        params = super().learner_params(pc)
        params.setdefault("prior", pc["default_mean"])
        return params

    @classmethod
    def check(cls, pc: dict[str, Any]) -> None:
        if pc["shadow_learners"]:
            raise ValueError("mean pipelines run no shadow learners")

    def __init__(self, pc: dict[str, Any], metrics, rules):
        super().__init__(pc, metrics, rules)
        self.learner = cast(RunningMean, lb.create(pc["learner"], **self.params))

    def decode(self, obj: dict[str, Any], rec: SourceRecord | None) -> Item:
        eid = record_id(obj)
        t = self.rules.time(obj, rec)
        seg = obj.get("segment", "all")
        if type(seg) is not str or not seg or len(seg) > MAX_SEGMENT_LEN:
            raise BadRecord("bad_type", f"'segment' must be a non-empty string of at most {MAX_SEGMENT_LEN} characters")
        return Obs(eid, t, seg, rec, number(obj, "label", required=False))

    def feedback_value(self, obj: dict[str, Any]) -> float:
        return cast(float, number(obj, "label"))

    def run(self, items: list[Item], source: str) -> Outputs:
        run = cast(list[Obs], items)
        t0 = time.perf_counter()
        res = self.learner.process({"segment": [o.segment for o in run]})
        self.kernel_s += time.perf_counter() - t0
        reason = self.default_reason()
        if reason is None:
            preds = res["prediction"].tolist()
        else:
            preds = [float(self.pc["default_mean"])] * len(run)
            self.metrics.defaults.labels(pipeline=self.name, reason=reason).inc(len(run))
        http = source == "http"
        outs: list[Out | BadRecord] = []
        bodies: list[dict[str, Any]] = []
        for o, p, c in zip(run, preds, res["count"].tolist(), strict=True):
            body = {"id": o.id, "pipeline": self.name, "segment": o.segment, "prediction": p, "count": c,
                    "default": reason is not None, "reason": reason, "time": o.time, "replay": o.replay}
            outs.append(Out("decision", cast(str, o.id).encode(), dumps_kept(body)))
            if http:
                bodies.append(body)
            o.rec = None  # not needed while waiting for the label
        return outs, bodies

    def learn(self, rows: list[tuple[Item, float]]) -> None:
        t0 = time.perf_counter()
        self.learner.learn({"segment": [cast(Obs, o).segment for o, _ in rows],
                            "label": np.array([v for _, v in rows], dtype=np.float64)})
        self.kernel_s += time.perf_counter() - t0

    def pack(self, items: list[Item]) -> dict[str, np.ndarray]:
        blob, ends = pack_strings([cast(Obs, o).segment for o in items])
        return {"segment": blob, "segment_ends": ends}

    def unpack(self, arrays: Mapping[str, np.ndarray], ids: list[str]) -> list[Item]:
        segs = unpack_strings(arrays["segment"], arrays["segment_ends"])
        return [Obs(i, None, s, None) for i, s in zip(ids, segs, strict=True)]

    def samples(self) -> Iterator[Sample]:
        yield Sample("eddy_mean_current", "gauge", "Mean of every label learned so far (default_mean before any)",
                     {}, self.learner.overall())


def _register() -> None:
    """Registers the learner and the adapter, each unless its name is registered already (the
    learners' registry refuses a name twice; the first registration of a name is kept)."""
    if LEARNER not in learners.names():
        lb.register(LEARNER, test_params={"n_buckets": 8})(RunningMean)
    if FAMILY not in fam.families():
        fam.register(MeanAdapter)


def unregister() -> None:
    """Drops the adapter's registration (for tests: the rest of a test session sees the built-in
    families only, e.g. in the settings table; the next ``_register()`` restores it). The learner
    stays registered: the learners' conformance suite may have listed it already, and a learner
    is a library object that changes nothing in the runtime without its family's adapter."""
    fam.unregister(MeanAdapter)


_register()
