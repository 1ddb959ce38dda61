"""Numba options, set in one place.

Every kernel in ``learners/`` is compiled with :func:`jit`, never with a literal ``numba.njit``
carrying its own options. ``fastmath`` leaves out ``nnan`` and ``ninf`` on purpose: NaN and inf are
real inputs that the wrappers must be able to detect. On-disk caching is on unless
``EDDY_NUMBA_CACHE=0``; point ``NUMBA_CACHE_DIR`` at a writable volume in containers.
"""

from __future__ import annotations

import os
from typing import Any

import numba

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})
CACHE = os.environ.get("EDDY_NUMBA_CACHE", "1") != "0"


def jit(func=None, *, refcounts: bool = True, **overrides):
    """``numba.njit`` with the project's options (usable as ``@jit`` or ``@jit(...)``).

    ``refcounts=False`` compiles without Numba's reference counting (``_nrt=False``), for kernels
    that allocate nothing: every array they touch is borrowed from the caller. With it on, Numba
    wraps the arrays handed to each inlined helper or callee in atomic increments and decrements,
    and it does not prune them all inside a loop: the LRU kernel on a cache of 137 pages ran 3.6x
    faster without them (the same code, ``benchmarks/RESULTS.md``). Such a kernel and everything it
    calls must then allocate nothing (``np.empty`` and the like fail to compile), and it can only
    call kernels that allocate nothing either.
    """
    options: dict[str, Any] = {"cache": CACHE, "fastmath": set(FASTMATH), "nogil": True}
    if not refcounts:
        options["_nrt"] = False
    options.update(overrides)
    if func is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(func)
