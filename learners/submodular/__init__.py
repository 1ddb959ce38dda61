"""Dynamic monotone submodular maximisation under a cardinality constraint: a k-element summary of
the live items, kept near-optimal while items are inserted and deleted.

:mod:`.objectives` holds the objectives (facility location over a fixed reference set,
feature-based, weighted coverage; a Python hook), :mod:`._objectives` their Numba kernels,
:mod:`._greedy` lazy greedy, :mod:`._dynamic` the dynamic algorithm's kernels, :mod:`.reference`
the plain-Python references, :class:`SubmodularSummary` the learner (registered as
``submodular-dynamic``, ``submodular-lazy-greedy`` and ``submodular-sieve-streaming-pp``);
:mod:`._sieve` the Sieve-Streaming++ baseline's kernels.
"""

from __future__ import annotations

from functools import partial

from ..base import register
from .learner import ALGORITHMS, OBJECTIVES, SubmodularSummary
from .objectives import FacilityLocation, FeatureBased, Objective, PythonObjective, WeightedCoverage

for _algorithm in ALGORITHMS:
    register(f"submodular-{_algorithm}", test_params=SubmodularSummary.conformance_params())(
        partial(SubmodularSummary, algorithm=_algorithm))

__all__ = ["ALGORITHMS", "OBJECTIVES", "FacilityLocation", "FeatureBased", "Objective", "PythonObjective",
           "SubmodularSummary", "WeightedCoverage"]
