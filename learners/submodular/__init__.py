"""Dynamic monotone submodular maximisation under a cardinality constraint: a k-element summary of
the live items, kept near-optimal while items are inserted and deleted.

:mod:`.objectives` holds the objectives (facility location over a fixed reference set,
feature-based, weighted coverage; a Python hook), :mod:`._objectives` their Numba kernels,
:mod:`._greedy` lazy greedy, :mod:`.reference` the plain-Python references.
"""

from __future__ import annotations

from .objectives import FacilityLocation, FeatureBased, Objective, PythonObjective, WeightedCoverage

__all__ = ["FacilityLocation", "FeatureBased", "Objective", "PythonObjective", "WeightedCoverage"]
