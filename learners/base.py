"""The one learner protocol every family implements, and the registry of learners by name.

A learner is a library object: columnar NumPy batches in, columnar outputs out. It imports nothing
from ``daemon/`` or ``connectors/``.

* ``process(batch)`` turns a batch of events into outputs (a bandit's decisions, a cache's
  evictions, a prediction). It may change state (a cache shadow does; a bandit does not).
* ``learn(batch)`` takes feedback (rewards, labels) that arrives later, in batches.
* ``snapshot()`` returns the whole learned state as a flat ``dict`` of NumPy arrays (nothing that
  needs pickle); ``restore(state)`` on a learner built with the same parameters continues exactly
  where the snapshot was taken.
* ``metrics()`` returns learner-specific gauges as ``{name: float}``; the daemon exports them.

Settings are public constructor attributes, stored verbatim; learned state is private arrays.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

Batch = Mapping[str, np.ndarray]


class InvalidInput(ValueError):
    """A batch that a learner refuses, with the reason (and the offending rows when known)."""

    def __init__(self, reason: str, rows: np.ndarray | None = None):
        super().__init__(reason)
        self.reason = reason
        self.rows = rows


class Learner(abc.ABC):
    """Base class of all learners (see the module docstring for the contract)."""

    family: ClassVar[str] = ""

    @abc.abstractmethod
    def process(self, batch: Batch) -> dict[str, np.ndarray]:
        """Outputs for a batch of events."""

    @abc.abstractmethod
    def learn(self, batch: Batch) -> None:
        """Learns from a batch of feedback."""

    @abc.abstractmethod
    def snapshot(self) -> dict[str, np.ndarray]:
        """The learned state as arrays."""

    @abc.abstractmethod
    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Replaces the learned state by a snapshot's."""

    def metrics(self) -> dict[str, float]:
        return {}

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

    def clone(self) -> Learner:
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- conformance hooks ------------------------------------------------------------------------
    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {}

    @classmethod
    @abc.abstractmethod
    def _conformance_stream(cls, seed: int, n_events: int = 64) -> Iterator[tuple[str, Batch]]:
        """A seeded stream of ``("process" | "learn", batch)`` steps for the conformance suite."""

    @classmethod
    def _bad_batches(cls) -> Iterator[tuple[str, Batch]]:
        """Invalid ``(kind, batch)`` pairs that must raise :class:`InvalidInput`."""
        return iter(())


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
    from . import bandit, groupwise, paging  # noqa: F401  (register on import)
