"""Groupwise regret: online prediction that is good on every (intersecting) group at once.

The method of "Oracle Efficient Algorithms for Groupwise Regret" (Acharya, Arunachaleswaran,
Kannan, Roth, Ziani; ICLR 2024): a sleeping-experts reduction over one online regressor per group
(plus an always-on group), combined by AdaNormalHedge weights. Reconstructed from the authors'
public code; see :mod:`._kernels`. Group membership can be computed from features by
:mod:`.rules` (a small safe grammar).
"""

from __future__ import annotations

from functools import partial

from ..base import register
from .learner import BASES, RULES, GroupwiseRegressor

for _rule in RULES:
    for _base in BASES:
        _name = f"groupwise-{_rule}" + ("" if _base == "ridge" else f"-{_base}")
        register(_name, test_params=GroupwiseRegressor.conformance_params(rule=_rule, base=_base))(
            partial(GroupwiseRegressor, rule=_rule, base=_base))

__all__ = ["GroupwiseRegressor"]
