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


def jit(func=None, **overrides):
    """``numba.njit`` with the project's options (usable as ``@jit`` or ``@jit(...)``)."""
    options: dict[str, Any] = {"cache": CACHE, "fastmath": set(FASTMATH), "nogil": True}
    options.update(overrides)
    if func is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(func)
