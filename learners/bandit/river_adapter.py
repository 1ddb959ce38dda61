"""Use eddy's bandit policies from river's bandit tooling (``pull`` / ``update`` with contexts).

Examples
--------
>>> from learners.bandit.river_adapter import RiverPolicy
>>> pol = RiverPolicy("squarecb", n_features=16, seed=0)
>>> arm = pol.pull(["a", "b"], context={"amount": 3.0})
>>> arm in ("a", "b")
True
>>> pol.update(arm, {"amount": 3.0}, 1.0)
>>> int(pol.learner.metrics()["learned_events"])
1
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from .. import create
from .._hashing import FeatureHasher, event_key
from .learner import BanditLearner


class RiverPolicy:
    """A river-style contextual policy over a registered eddy bandit learner.

    ``pull(arm_ids, context)`` decides with the learner's batch kernel (one event); contexts are
    river dicts, hashed into ``n_features``. ``update(arm_id, context, reward)`` learns the reward.
    """

    def __init__(self, learner: str = "squarecb", n_features: int = 64, **params: Any):
        lrn = create(learner, n_features=n_features, **params)
        if not isinstance(lrn, BanditLearner):
            raise ValueError(f"{learner!r} is not a bandit learner")
        self.learner = lrn
        self.hasher = FeatureHasher(n_features)
        self._counter = itertools.count()

    def _x(self, context: dict | None) -> np.ndarray:
        return self.hasher.transform(context or {})[None, :]

    def pull(self, arm_ids: list, context: dict | None = None):
        key = np.array([event_key(f"river-{next(self._counter)}")], dtype=np.uint64)
        ids = [str(a) for a in arm_ids]
        out = self.learner.process({"event_key": key, "X": self._x(context),
                                    "action_indptr": np.array([0, len(ids)], dtype=np.int64),
                                    "action_ids": np.array(ids, dtype=object)})
        self._last_key = key
        return arm_ids[int(out["chosen"][0])]

    def update(self, arm_id, context: dict | None, reward: float) -> None:
        key = getattr(self, "_last_key", np.array([0], dtype=np.uint64))
        self.learner.learn({"event_key": key, "X": self._x(context),
                            "action": np.array([str(arm_id)], dtype=object),
                            "reward": np.array([float(reward)])})
