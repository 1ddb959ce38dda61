"""Counter-based random numbers for Numba kernels.

A decision must be a function of (seed, event id, learner state) alone, so kernels never hold a
generator state: every draw is derived by SplitMix64 from ``(seed, event key, stream)``. The same
event therefore gets the same draw in a replay, in a restarted daemon and in a different batch.
"""

from __future__ import annotations

import numpy as np

from ._numba import jit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0  # 2**-53


@jit
def mix64(z):
    """SplitMix64 finaliser of a uint64."""
    z = np.uint64(z)
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@jit
def draw_uniform(seed, key, stream):
    """A uniform number in [0, 1) determined by (seed, key, stream)."""
    z = mix64(np.uint64(seed) ^ mix64(np.uint64(key) + _GOLDEN * np.uint64(stream + 1)))
    return float(z >> _S11) * _INV53


@jit
def draw_normal(seed, key, stream):
    """A standard normal number determined by (seed, key, stream) (Box-Muller)."""
    u1 = draw_uniform(seed, key, 2 * stream)
    u2 = draw_uniform(seed, key, 2 * stream + 1)
    if u1 < 1e-300:
        u1 = 1e-300
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
