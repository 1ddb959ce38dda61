"""What a learner family adds to the engine: one :class:`Adapter`, registered under its family name.

The engine (:mod:`daemon.engine`) owns everything families share; an adapter says only

* how an event decodes into an :class:`Item` (:meth:`Adapter.decode`) and a feedback record into
  its value (:meth:`Adapter.feedback_value`), and how a run of items becomes the learner's batch
  columns and the outputs (:meth:`Adapter.run`, one kernel call per run);
* how joined feedback is learned (:meth:`Adapter.learn`, deciders), and which operations must
  run alone (items whose class sets :attr:`Item.barrier`, e.g. a tracker's resize);
* which sidecar verbs it offers (:attr:`Adapter.verbs`), which pipeline settings it reads
  (:attr:`Adapter.settings`), which metrics it adds (:meth:`Adapter.samples`, read at scrape time);
* how its items and its own state enter a checkpoint (:meth:`Adapter.pack`, :meth:`Adapter.snapshot`).

Adapters are found by the family of the pipeline's learner (``learners.family_of``): the built-in
ones in :mod:`daemon.adapters`, third-party ones from the ``eddy.families`` entry point group or a
module named in the configuration's ``plugins`` list; a module registers its adapter with
:func:`register` when imported (and its learners with ``learners.base.register``).
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from connectors.base import SourceRecord

from .config import Setting
from .metrics import DaemonMetrics
from .panels import Panel
from .records import BadRecord, Out, RecordRules

LEGACY_LANE = "legacy"  # the lane of an upgraded checkpoint (the engine names it after its partition)


def legacy_lane(arrays: dict[str, np.ndarray], meta: dict[str, Any], renames: dict[str, str],
                adapter: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """An earlier single-state checkpoint as the engine's layout: arrays renamed by prefix
    (``renames``: old prefix → new name under ``lane/0/``; others kept), one lane."""
    out: dict[str, np.ndarray] = {}
    for k, v in arrays.items():
        for old, new in renames.items():
            if k.startswith(old):
                out["lane/0/" + new + k[len(old):]] = v
                break
        else:
            out[k] = v
    lanes = {LEGACY_LANE: {"index": 0, "since_learn": int(meta.get("since_learn", 0)),
                           "watermark": meta.get("watermark")}}
    return out, {**meta, "lanes": lanes, "adapter": adapter or {}}


class Item:
    """One decoded event or operation, as the engine sees it.

    ``id`` (None only for a tracker's operation without one), ``time`` (event time or None),
    ``replay``, the source record ``rec`` (for dead letters), ``value`` (feedback given with the
    event itself, or None), and, set by the engine, ``deadline`` (event time by which feedback is
    due) and ``lane`` (the input partition whose state holds it). A family subclasses it with
    ``__slots__`` of its own (and may set the fields itself instead of calling this
    ``__init__``: the loop's cost is per item). An item class with ``barrier = True`` runs alone:
    the run before it is flushed, and it is processed by itself (a tracker's resize).
    """

    __slots__ = ("id", "time", "replay", "rec", "deadline", "lane")
    barrier: ClassVar[bool] = False
    value: float | None = None  # a class default: a family whose events carry feedback adds a "value" slot
    deadline: float
    lane: Any

    def __init__(self, id: str | None, time: float | None, rec: SourceRecord | None, value: float | None = None):
        self.id = id
        self.time = time
        self.rec = rec
        self.replay = rec.replay if rec is not None else False
        if value is not None:
            self.value = value  # type: ignore[misc]  # (a subclass's slot)


@dataclass(frozen=True)
class Verb:
    """A sidecar verb (``POST /v1/pipelines/<name>/<verb>``): ``kind`` is ``"events"`` (the family's
    events: decided, predicted, replayed), ``"feedback"`` or ``"control"``; a batch request is
    ``{items: [...]}`` and its answer ``{answer: [...]}``."""

    kind: str
    items: str = ""
    answer: str = ""


class Sample(NamedTuple):
    """One metric sample a family exports (the engine adds the ``pipeline`` label)."""

    name: str  # without the _total suffix of a counter
    kind: str  # "counter", "gauge" or "histogram"
    doc: str
    labels: dict[str, str]
    value: Any  # a number; a histogram's: ([(upper bound, cumulative count), ..., ("+Inf", count)], sum)


class Histogram:
    """Bucket counts and a sum that a family keeps (in its checkpoint) and exports as a histogram
    :class:`Sample` (``value()``)."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = np.array(bounds, dtype=np.float64)
        self.counts = np.zeros(len(bounds) + 1)
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.counts[int(np.searchsorted(self.bounds, v, side="left"))] += 1
        self.sum += v

    def value(self) -> tuple[list[tuple[str, float]], float]:
        cum = np.cumsum(self.counts).tolist()
        return [*((f"{b:g}", c) for b, c in zip(self.bounds.tolist(), cum, strict=False)), ("+Inf", cum[-1])], self.sum

    def to_array(self) -> np.ndarray:
        return np.append(self.counts, self.sum)

    def load(self, a: np.ndarray) -> None:
        if a.shape == (len(self.counts) + 1,):
            self.counts, self.sum = a[:-1].copy(), float(a[-1])


Outputs = tuple[list["Out | BadRecord"], list[Any]]  # per item: the record to publish (or a rejection), the output


class Adapter(abc.ABC):
    """A learner family's part of a pipeline (see the module docstring).

    ``feedback_type`` is the ``type`` of a feedback record (None: the family takes no feedback,
    a tracker); ``feedback_name`` names it in reasons (``late_<name>``, ``duplicate_<name>``);
    ``feedback_metric`` names the counter of feedback outcomes (joined, ``expired_outcome``,
    evicted); ``expire_value`` is learned for an event whose feedback never came (None: the event
    leaves unlearned). ``rejects_in_runs``: :meth:`run` may reject items it meets (a summary's
    delete of an item that is not live); the engine then publishes the run before a later record's
    dead letter, so that dead letters keep log order whatever the micro-batches.
    """

    family: ClassVar[str]
    settings: ClassVar[tuple[Setting, ...]] = ()
    verbs: ClassVar[Mapping[str, Verb]]
    views: ClassVar[Mapping[str, str]] = {}  # GET /v1/pipelines/<name>/<view>: the adapter method answering it
    feedback_type: ClassVar[str | None] = None
    feedback_name: ClassVar[str] = "feedback"
    feedback_metric: ClassVar[str] = "eddy_feedback"
    expired_outcome: ClassVar[str] = "expired"
    ids_required: ClassVar[bool] = True
    rejects_in_runs: ClassVar[bool] = False  # run() may reject items: dead letters then keep log order
    default_params: ClassVar[tuple[str, ...]] = ("seed",)  # pipeline settings that default learner params
    panels: ClassVar[tuple[Panel, ...]] = ()  # the family's row of the generated dashboard
    panels_title: ClassVar[str] = ""  # that row's title (default: the family's name)

    expire_value: float | None = None
    force_default: bool = False
    rejected: bool = False  # the last run() result holds a BadRecord
    kernel_s: float = 0.0  # seconds in the learner's calls (the engine's "kernel" stage)
    features_s: float = 0.0  # seconds making the learner's inputs from decoded items: feature hashing,
    # crosses (the engine's "features" stage; an adapter that does it inside run() or learn() counts it)
    budget_s: float = 0.0  # > 0: /decide answers default_answer() when the learner is busy this long

    def __init__(self, pc: dict[str, Any], metrics: DaemonMetrics, rules: RecordRules):
        self.pc = pc
        self.name: str = pc["name"]
        self.metrics = metrics
        self.rules = rules
        self.params = self.learner_params(pc)
        self.force_default = bool(pc["force_default"])
        self.learner: Any = None
        self.shadows: dict[str, Any] = {}

    # -- configuration ----------------------------------------------------------------------------
    @classmethod
    def learner_params(cls, pc: dict[str, Any]) -> dict[str, Any]:
        """The learner's parameters: the pipeline's ``params``, with the pipeline settings named in
        :attr:`default_params` (the same names) as defaults."""
        params = dict(pc["params"])
        for key in cls.default_params:
            params.setdefault(key, pc[key])
        return params

    @classmethod
    def check(cls, pc: dict[str, Any]) -> None:
        """Raises ValueError for a pipeline setting this family cannot run with (at config check)."""

    @classmethod
    def mergeable(cls, pc: dict[str, Any]) -> bool:
        """Whether replicas of the pipeline's learner can merge what each learned
        (``global_model = "merge"``): the learner has sufficient statistics that add up."""
        return False

    def merger(self) -> Any:
        """The learner's merge protocol, for ``global_model = "merge"``: an object with ``delta()``
        (what it learned since the previous call), ``merge(delta)``, ``empty()``,
        ``combine(a, b, sign)`` (of two deltas), ``snapshot()``/``restore()`` (its own state)."""
        raise ValueError(f"{self.family} learners cannot merge replicas")

    # -- the data path ----------------------------------------------------------------------------
    @abc.abstractmethod
    def decode(self, obj: dict[str, Any], rec: SourceRecord | None) -> Item:
        """The item of an event object; raises :class:`BadRecord`, changes no learned state."""

    def validate(self, obj: dict[str, Any]) -> None:
        """The checks of :meth:`decode` touching no shared state (for the latency-budget path, which
        runs while the loop holds the pipeline)."""
        raise NotImplementedError(f"{self.family} pipelines have no latency budget")

    def feedback_value(self, obj: dict[str, Any]) -> float:
        raise BadRecord("bad_type", f"{self.family} pipelines take no feedback")

    @abc.abstractmethod
    def run(self, items: list[Item], source: str) -> Outputs:
        """The outputs of a run of items, in order (one learner call for the run): per item the
        :class:`Out` to publish and, for ``source == "http"`` (else the list may be empty), the
        output object the sidecar answers. An item rejected
        within its run (found only when its run is computed) has a :class:`BadRecord` in place of
        its Out, and :attr:`rejected` is set so that the engine looks for it."""

    def learn(self, rows: list[tuple[Item, float]]) -> None:
        """Learns a block of (item, feedback value) pairs, in log order."""
        raise NotImplementedError(f"{self.family} pipelines learn nothing from feedback")

    def joined(self, item: Item, value: float) -> None:
        """Feedback joined its item (before it is learned): a family's statistics."""

    def drain(self, timeout_s: float) -> int:
        """Waits up to ``timeout_s`` for the family's work in flight outside the loop (whose outputs
        then wait in the engine to be published); returns how much is still running. A family with
        no such work has none."""
        return 0

    def close(self) -> None:
        """Releases what the family holds outside the loop (worker threads) when its pipeline stops."""
        self.drain(0.0)

    def emit(self, outs: list[Out]) -> None:
        """Publishes outputs made outside a run (by a family's worker thread) with the pipeline's
        next batch; kinds ``decision``, ``dlq``, and ``input`` (a record for the pipeline's own input
        topic, read back in log order). The engine replaces this with its own."""
        raise RuntimeError(f"{self.family} adapter of {self.name!r} is not attached to an engine")

    def default_reason(self) -> str | None:
        """Why a decider's outputs are its family's default now: ``forced`` (``force_default``),
        ``not_ready`` (fewer than ``min_learned_events`` learned), or None."""
        if self.force_default:
            return "forced"
        if self.learner.learned_events < self.pc["min_learned_events"]:
            return "not_ready"
        return None

    def default_answer(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The answer to a validated event when the latency budget is spent."""
        raise NotImplementedError(f"{self.family} pipelines have no latency budget")

    # -- checkpoint -------------------------------------------------------------------------------
    def pack(self, items: list[Item]) -> dict[str, np.ndarray]:
        """Waiting items as arrays (the engine adds ids, deadlines and values)."""
        raise NotImplementedError(f"{self.family} items do not wait for feedback")

    def unpack(self, arrays: Mapping[str, np.ndarray], ids: list[str]) -> list[Item]:
        raise NotImplementedError(f"{self.family} items do not wait for feedback")

    def snapshot(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The learner's, the shadows' and the family's own state."""
        arrays = {f"learner/{k}": v for k, v in self.learner.snapshot().items()}
        for sname, s in self.shadows.items():
            arrays.update({f"shadow/{sname}/{k}": v for k, v in s.snapshot().items()})
        return arrays, {"shadows": list(self.shadows)}

    def restore(self, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.learner.restore({k[8:]: v for k, v in arrays.items() if k.startswith("learner/")})
        for sname, s in self.shadows.items():
            pre = f"shadow/{sname}/"
            state = {k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)}
            if state:  # (a shadow added since the checkpoint starts fresh)
                s.restore(state)

    def upgrade(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """A checkpoint of the release before the engine, in the engine's layout (its one lane
        named ``LEGACY_LANE``); ValueError when it is none of this family's."""
        raise ValueError(f"checkpoint format {meta.get('format_version')!r} is not a {self.family} format")

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must have been written with to restore here (shadow learners may
        come and go: one the checkpoint lacks starts fresh)."""
        return {"learner": self.pc["learner"], "params": self.params}

    # -- reports and metrics ----------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        return {"learner_metrics": self.learner.metrics()}

    def samples(self) -> Iterator[Sample]:
        """The family's metrics now (read at scrape time, under the pipeline's lock)."""
        return iter(())


_ADAPTERS: dict[str, type[Adapter]] = {}
_loaded: set[str] = set()


def register(cls: type[Adapter]) -> type[Adapter]:
    """Registers an adapter class under its ``family`` (a class decorator)."""
    other = _ADAPTERS.get(cls.family)
    if other is not None and other is not cls:
        raise ValueError(f"family {cls.family!r} has two adapters: {other.__qualname__} and {cls.__qualname__}")
    _ADAPTERS[cls.family] = cls
    return cls


def unregister(cls: type[Adapter]) -> None:
    """Drops an adapter's registration (a plugin's own tests; the built-ins stay)."""
    if _ADAPTERS.get(cls.family) is cls:
        del _ADAPTERS[cls.family]
        _loaded.difference_update({cls.__module__})


def load_plugins(modules: Iterable[str] = ()) -> None:
    """Imports the built-in adapters, the ``eddy.families`` entry points, and ``modules``."""
    from importlib.metadata import entry_points

    names = ["daemon.adapters", *(ep.value.split(":")[0] for ep in entry_points(group="eddy.families")), *modules]
    for mod in names:
        if mod not in _loaded:
            try:
                importlib.import_module(mod)
            except Exception as e:  # a missing module, a syntax error, an error at import
                raise ValueError(f"plugin module {mod!r} cannot be imported: {e}") from None
            _loaded.add(mod)


def families() -> list[str]:
    load_plugins()
    return sorted(_ADAPTERS)


def adapter_class(family: str) -> type[Adapter]:
    """The registered adapter of ``family`` (KeyError when none)."""
    load_plugins()
    return _ADAPTERS[family]


def adapter_for(learner: str) -> type[Adapter]:
    """The adapter of a learner's family; ValueError naming the family when none serves it."""
    import learners

    load_plugins()
    family = learners.family_of(learner)
    cls = _ADAPTERS.get(family)
    if cls is None:
        raise ValueError(f"learner {learner!r} is of family {family!r}, which no adapter serves (adapters: "
                         f"{', '.join(sorted(_ADAPTERS))}); a plugin module registers one (setting 'plugins')")
    return cls


def all_verbs() -> set[str]:
    """Every sidecar verb some family offers."""
    load_plugins()
    return {v for cls in _ADAPTERS.values() for v in cls.verbs}


def all_settings() -> list[tuple[str, Setting]]:
    """(family, setting) of every adapter's pipeline settings."""
    load_plugins()
    return [(f, s) for f, cls in sorted(_ADAPTERS.items()) for s in cls.settings]
