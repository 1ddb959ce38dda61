"""Use the groupwise learner as a river regressor (``learn_one`` / ``predict_one``), e.g. inside
``river.evaluate.progressive_val_score``.

Examples
--------
>>> from learners.groupwise.river_adapter import GroupwiseRiver
>>> m = GroupwiseRiver(features=["x"], groups={"young": "age < 30", "older": "age >= 30"})
>>> for i in range(200):
...     m.learn_one({"x": 1.0, "age": 20 + i % 40}, 2.0 if i % 40 < 10 else 1.0)
>>> round(m.predict_one({"x": 1.0, "age": 25}), 1), round(m.predict_one({"x": 1.0, "age": 50}), 1)
(2.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from river import base

from .learner import GroupwiseRegressor
from .rules import parse


class GroupwiseRiver(base.Regressor):
    """A river regressor over :class:`GroupwiseRegressor`.

    Parameters
    ----------
    features
        The names of the features the experts use, in order (a missing one counts as 0); an
        intercept is added when ``intercept``.
    groups
        Group name → membership: a rule string (:mod:`.rules`, e.g. ``"age < 30"``) or a function
        of the feature dict.
    intercept
        Add a constant 1 feature.
    params
        Passed to :class:`GroupwiseRegressor` (``lam``, ``rule``, ``base``, ``lr``, ``seed``, ``prior``).
    """

    def __init__(self, features: Sequence[str], groups: Mapping[str, str | Callable[[dict], bool]],
                 intercept: bool = True, **params: Any):
        self.features = list(features)
        self.groups = dict(groups)
        self.intercept = intercept
        self.params = params
        self._rules = [parse(r) if isinstance(r, str) else r for r in self.groups.values()]
        self.model = GroupwiseRegressor(n_features=len(self.features) + int(intercept), groups=list(self.groups),
                                        **params)
        self._n = 0

    def _row(self, x: dict) -> dict[str, np.ndarray]:
        v = [float(x.get(f, 0.0)) for f in self.features] + ([1.0] if self.intercept else [])
        g = [1 if rule(x) else 0 for rule in self._rules]
        return {"X": np.array([v]), "G": np.array([g], dtype=np.int64).reshape(1, len(self._rules))}

    def learn_one(self, x: dict, y: float) -> None:
        self.model.learn({**self._row(x), "y": np.array([float(y)])})

    def predict_one(self, x: dict) -> float:
        self._n += 1
        return float(self.model.process({**self._row(x), "event_key": np.array([self._n], dtype=np.uint64)})
                     ["prediction"][0])
