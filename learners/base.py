"""Learner roles on one base, the columns each learner declares, and the registry of learners by name.

A learner is a library object: columnar NumPy batches in, columnar outputs out. Nothing in
``learners/`` imports the runtime (``daemon/``, ``connectors/``).

Roles
-----
:class:`Decider`
    Decides without changing what it has learned, and learns from feedback joined later (bandits,
    groupwise regression). ``process(batch)`` returns decisions or predictions; ``learn(batch)``
    takes the feedback (rewards, labels).
:class:`Tracker`
    Applies a stream of operations and shows a view of its state (cache shadows).
    ``process(batch)`` applies the operations in order and returns their outcomes; ``view()`` is
    the current state (a cache's keys); ``resize(**size)`` changes its size settings as the real
    system did.

Columns
-------
A learner declares the columns it reads and writes as :class:`Column` tuples: ``inputs`` (read
by ``process``), ``outputs`` (returned by ``process``) and, for a decider, ``feedback`` (read by
``learn``). A batch that lacks a required column raises :class:`InvalidInput` naming it, before
anything changes. A column that is not required is read or written only in some settings or
modes (its ``doc`` says which).

State
-----
``snapshot()`` returns the whole learned state as a flat ``dict`` of NumPy arrays (nothing that
needs pickle); ``restore(state)`` on a learner built with the same parameters continues exactly
where the snapshot was taken. ``metrics()`` returns gauges as ``{name: float}``; ``report()`` a
JSON-able description of the learned state. Settings are public constructor attributes, stored
verbatim; learned state is private arrays.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

Batch = Mapping[str, np.ndarray]


class InvalidInput(ValueError):
    """A batch that a learner refuses, with the reason (and the offending rows when known)."""

    def __init__(self, reason: str, rows: np.ndarray | None = None):
        super().__init__(reason)
        self.reason = reason
        self.rows = rows


DTYPES = ("bool", "int8", "int64", "uint64", "float64", "str")
"""The dtypes a :class:`Column` may declare: NumPy dtype names, and ``"str"`` for strings (a list, or
a 1-d array of Python strings)."""


@dataclass(frozen=True)
class Column:
    """One column a learner reads or writes.

    Parameters
    ----------
    name
        The key in the batch or output ``dict``.
    dtype
        One of :data:`DTYPES`: a NumPy dtype name (``"float64"``, ``"int64"``, ...) or ``"str"``.
    shape
        For the reader: ``"n"`` (one per event), ``"n×d"``, ``"n+1"`` (CSR offsets), ``"nnz"`` (one
        per entry of a CSR list), ...
    doc
        What it holds.
    required
        ``False``: read or written only in some settings or modes (``doc`` says which).
    """

    name: str
    dtype: str
    shape: str
    doc: str
    required: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"column {self.name!r}: dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")


def _require(columns: tuple[Column, ...], batch: Batch) -> None:
    for c in columns:
        if c.required and c.name not in batch:
            raise InvalidInput(f"missing column {c.name!r} ({c.dtype}, {c.shape}: {c.doc})")


class Learner(abc.ABC):
    """Base class of the roles :class:`Decider` and :class:`Tracker` (see the module docstring)."""

    family: ClassVar[str] = ""
    role: ClassVar[str] = ""
    inputs: ClassVar[tuple[Column, ...]] = ()
    outputs: ClassVar[tuple[Column, ...]] = ()

    def process(self, batch: Batch) -> dict[str, np.ndarray]:
        """Outputs for a batch of events (keys among :attr:`outputs`).

        Raises :class:`InvalidInput` if a required column of :attr:`inputs` is missing, or if the
        learner refuses the batch (then nothing has changed).
        """
        _require(self.inputs, batch)
        return self._process(batch)

    @abc.abstractmethod
    def _process(self, batch: Batch) -> dict[str, np.ndarray]:
        """:meth:`process` on a batch that holds the required input columns."""

    @abc.abstractmethod
    def snapshot(self) -> dict[str, np.ndarray]:
        """The learned state as arrays."""

    @abc.abstractmethod
    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Replaces the learned state by a snapshot's."""

    def metrics(self) -> dict[str, float]:
        return {}

    def report(self) -> dict[str, Any]:
        """A JSON-able description of the learned state, for reports."""
        return {"metrics": self.metrics()}

    def warm_up(self) -> None:
        """Compiles the kernels on a tiny batch (then resets the state)."""
        state = self.snapshot()
        for kind, batch in self._conformance_stream(0, n_events=4):
            getattr(self, kind)(batch)
        self.restore(state)

    # -- parameters, cloning ----------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        return {n: getattr(self, n) for n in sig.parameters if n != "self"}

    def clone(self) -> Self:
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- conformance hooks ------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def _conformance_stream(cls, seed: int, n_events: int = 64) -> Iterator[tuple[str, Batch]]:
        """A seeded stream of ``(kind, batch)`` steps for the conformance suite: ``"process"`` or
        ``"learn"`` for a decider, ``"process"`` only for a tracker."""

    @classmethod
    def _bad_batches(cls) -> Iterator[tuple[str, Batch]]:
        """Invalid ``(kind, batch)`` pairs that must raise :class:`InvalidInput`."""
        return iter(())


class Decider(Learner):
    """A learner that decides without changing what it has learned, and learns from feedback.

    :meth:`process` leaves the learned state as it was: of the :meth:`snapshot` arrays, it may
    change only those named in :attr:`bookkeeping` (records of what was seen, such as a clock or
    the last time an action was offered, not anything learned from feedback). :meth:`learn` takes
    a batch of feedback (columns :attr:`feedback`), joined to the decisions later, in order.
    """

    role: ClassVar[str] = "decider"
    feedback: ClassVar[tuple[Column, ...]] = ()
    bookkeeping: ClassVar[tuple[str, ...]] = ()

    @property
    @abc.abstractmethod
    def learned_events(self) -> int:
        """Feedback rows learned so far (cheap: read before every run, to tell a model that is not
        ready yet)."""

    def learn(self, batch: Batch) -> None:
        """Learns from a batch of feedback.

        Raises :class:`InvalidInput` if a required column of :attr:`feedback` is missing, or if the
        learner refuses the batch (then nothing has changed).
        """
        _require(self.feedback, batch)
        self._learn(batch)

    @abc.abstractmethod
    def _learn(self, batch: Batch) -> None:
        """:meth:`learn` on a batch that holds the required feedback columns."""


class Tracker(Learner):
    """A learner that applies a stream of operations and shows a view of its state.

    :meth:`process` applies a batch of operations in order (it changes the state) and returns
    their outcomes; :meth:`view` is the current state users see; :meth:`resize` changes the size
    settings named in :attr:`size_settings`.
    """

    role: ClassVar[str] = "tracker"
    size_settings: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def view(self) -> dict[str, np.ndarray]:
        """The current state users see, as arrays (e.g. a cache's keys)."""

    def resize(self, **size: int | None) -> None:
        """Changes size settings (keywords among :attr:`size_settings`; ``None`` keeps the current
        value) as the real system did.

        Raises ``ValueError`` for a name that is not a size setting, or a value the learner refuses.
        """
        unknown = [name for name in size if name not in self.size_settings]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a size setting of {type(self).__name__}; size settings: "
                             f"{', '.join(self.size_settings)}")
        self._resize(**{name: value for name, value in size.items() if value is not None})

    @abc.abstractmethod
    def _resize(self, **size: int) -> None:
        """:meth:`resize` with the settings to change (known names, values not ``None``)."""


def checked_state(current: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray],
                  hint: str) -> dict[str, np.ndarray]:
    """The arrays of a snapshot, as the dtypes and shapes of ``current`` (the learner's own arrays by
    name); raises :class:`InvalidInput` naming a missing or misshapen array (``hint``: the likely
    cause, e.g. "another capacity?")."""
    new = {}
    for name, cur in current.items():
        if name not in state:
            raise InvalidInput(f"snapshot lacks the array {name!r} ({hint})")
        arr = np.array(state[name], dtype=cur.dtype)
        if arr.shape != cur.shape:
            raise InvalidInput(f"snapshot array {name!r} has shape {arr.shape}, expected {cur.shape} ({hint})")
        new[name] = arr
    return new


_REGISTRY: dict[str, Callable[..., Learner]] = {}
_TEST_PARAMS: dict[str, dict[str, Any]] = {}


def register(
    name: str, test_params: dict[str, Any] | None = None
) -> Callable[[Callable[..., Learner]], Callable[..., Learner]]:
    """Registers a learner factory under ``name``; ``test_params`` build it for the conformance suite."""

    def deco(factory: Callable[..., Learner]) -> Callable[..., Learner]:
        if name in _REGISTRY:
            raise ValueError(f"learner {name!r} registered twice")
        _REGISTRY[name] = factory
        _TEST_PARAMS[name] = dict(test_params or {})
        return factory

    return deco


def conformance_params(name: str) -> dict[str, Any]:
    """Parameters that build ``name`` for the conformance suite's streams."""
    _load_families()
    return dict(_TEST_PARAMS[name])


def names() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def create(name: str, **params: Any) -> Learner:
    """Builds the learner registered as ``name``.

    >>> create("no-such-learner")
    Traceback (most recent call last):
    ...
    KeyError: "unknown learner 'no-such-learner'; valid names: ..."
    """
    _load_families()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown learner {name!r}; valid names: {', '.join(sorted(_REGISTRY))}") from None
    return factory(**params)


def family_of(name: str) -> str:
    """The family (``bandit``, ``paging``, ...) of the learner registered as ``name``.

    >>> family_of("squarecb"), family_of("paging-lru")
    ('bandit', 'paging')
    """
    factory = factory_of(name)
    return str(getattr(getattr(factory, "func", factory), "family", ""))


def factory_of(name: str) -> Callable[..., Learner]:
    _load_families()
    return _REGISTRY[name]


def _load_families() -> None:
    from . import bandit, groupwise, paging, sor, submodular  # noqa: F401  (register on import)
