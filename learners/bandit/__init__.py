"""Contextual bandits: SquareCB/FastCB over ridge, neural or hashed sparse oracles, LinUCB, Thompson, ε-greedy."""

from __future__ import annotations

from functools import partial
from typing import Any

from ..base import register
from .hashed import HashedBanditLearner
from .learner import ORACLES, POLICIES, ActionTable, BanditLearner

# One registry entry per benchmarked policy (all the same class, composed differently).
PRESETS: dict[str, dict[str, Any]] = {
    "squarecb": {"policy": "squarecb", "oracle": "ridge"},
    "squarecb-shared": {"policy": "squarecb", "oracle": "ridge-shared"},
    "squarecb-neural": {"policy": "squarecb", "oracle": "neural"},
    "fastcb-neural": {"policy": "fastcb", "oracle": "neural", "kl_loss": True},
    "linucb": {"policy": "linucb", "oracle": "ridge"},
    "lints": {"policy": "lints", "oracle": "ridge"},
    "epsilon-greedy": {"policy": "epsilon-greedy", "oracle": "ridge"},
}

for _name, _preset in PRESETS.items():
    register(_name, test_params=BanditLearner.conformance_params(**_preset))(
        partial(BanditLearner, **_preset)
    )

# The hashed sparse oracle (wide contexts: hashed features and their declared crosses).
HASHED_PRESETS: dict[str, dict[str, Any]] = {
    "squarecb-hashed": {"policy": "squarecb"},
    "epsilon-greedy-hashed": {"policy": "epsilon-greedy"},
}
for _name, _preset in HASHED_PRESETS.items():
    register(_name, test_params=HashedBanditLearner.conformance_params())(
        partial(HashedBanditLearner, **_preset)
    )

__all__ = ["ActionTable", "BanditLearner", "HASHED_PRESETS", "HashedBanditLearner", "ORACLES", "POLICIES", "PRESETS"]
