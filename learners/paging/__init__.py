"""Paging: cache shadows that say hit or miss and which page to evict.

Classical policies (LRU, FIFO, SIEVE, S3-FIFO, ARC, randomized Marker), follow-the-prediction with
one-bit discard predictions and its robust forms, a learned one-bit predictor that sees the requests
only (``learned-discard``, ``learned-phase``), a byte-capacity mode, and Belady's offline optimum
for evaluation. The method of "Paging with
Succinct Predictions" (Antoniadis, Boyar, Eliáš, Favrholdt, Hoeksma, Larsen, Polak, Simon; ICML
2023, arXiv 2210.02775) could only be read in its abstract: the rules here are reconstructions
(see ../shared/research/paging.md), and their claimed properties are tested empirically
(consistency: with exact discard bits, follow-the-prediction faults exactly as often as Belady).
"""

from __future__ import annotations

from functools import partial

from ..base import register
from .cache import POLICIES, PagingCache
from .offline import belady, phase_bits, reuse_distances

for _policy in POLICIES:
    register(f"paging-{_policy}", test_params=PagingCache.conformance_params(policy=_policy))(
        partial(PagingCache, policy=_policy))

__all__ = ["PagingCache", "belady", "phase_bits", "reuse_distances", "POLICIES"]
