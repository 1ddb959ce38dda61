"""SOR tuning: the relaxation parameter ω of each linear system in a sequence, from iteration counts alone.

The method of "Learning to Relax: Setting Solver Parameters Across a Sequence of Linear System
Instances" (Khodak, Chow, Balcan, Talwalkar; ICLR 2024), reconstructed from the authors' public code
(:class:`RelaxationTuner` says what is reconstructed and how it departs): Tsallis-INF over a grid of
ω values, one Tsallis-INF per context bin, and ChebCB (inverse-gap weighting over per-arm fits on
Chebyshev features of a scalar context). :mod:`.systems` holds the solvers eddy runs itself (Numba
SOR, SSOR-preconditioned CG, CG), the checks of a system, and the evaluation-only baselines (Young's
ω, a golden-section search per instance).
"""

from __future__ import annotations

from functools import partial

from ..base import register
from .learner import AUTHORS_GRID, POLICIES, FixedOmega, RelaxationTuner

for _policy in ("tsallis-inf", "tsallis-inf-cb", "chebcb"):
    register(f"sor-{_policy}", test_params=RelaxationTuner.conformance_params())(
        partial(RelaxationTuner, policy=_policy))
register("sor-fixed", test_params={"omega": 1.0, "seed": 3})(FixedOmega)

__all__ = ["AUTHORS_GRID", "POLICIES", "FixedOmega", "RelaxationTuner"]
