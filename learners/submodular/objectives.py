"""The monotone submodular objectives: how items' features become rows of the common state.

Each objective turns a batch of items' features into rows (``encode``) that the kernels of
:mod:`._objectives` score: one row per item over the objective's ``m`` coordinates. The objective
is fixed for the life of a summary (the guarantees of the dynamic algorithms need a fixed f).

* :class:`FacilityLocation`: ``f(S) = Σ_{r∈R} w_r max_{s∈S} sim(r, s)`` over a fixed reference
  set R (its rows: an item's similarities to R; RBF or clipped cosine). Exemplars, representatives.
* :class:`FeatureBased`: ``f(S) = Σ_d w_d φ(Σ_{s∈S} x_sd)`` with φ concave (√, log1p,
  saturation) over non-negative features (negative values are rejected). Cheapest per call.
* :class:`WeightedCoverage`: ``f(S) = Σ_c w_c max_{s∈S} x_sc`` over sparse non-negative
  concept weights (an item covering concept c with weight x_sc; with 0/1 weights and concept
  weights w_c this is weighted set coverage).

:class:`PythonObjective` wraps a user's function ``f(list of feature vectors) -> float``: it is slow
(a Python call per oracle call, run by the plain-Python algorithms of :mod:`.reference`) and its
monotonicity and submodularity are the user's promise, not checked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..base import InvalidInput
from . import _objectives as K

PHIS = {"sqrt": K.PHI_SQRT, "log1p": K.PHI_LOG, "saturate": K.PHI_SATURATE}


class Objective:
    """What every built-in objective declares for the kernels (see :mod:`._objectives`)."""

    form: int = K.MAX
    phik: int = K.PHI_SQRT
    sparse: bool = False
    name: str = ""

    def __init__(self, weights: np.ndarray):
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if not len(w) or not (np.isfinite(w).all() and (w >= 0).all()):
            raise ValueError("objective weights must be finite numbers >= 0")
        self.w = w

    @property
    def m(self) -> int:
        """Coordinates of the state (and of a dense row)."""
        return len(self.w)

    @property
    def width(self) -> int:
        """Columns of a stored row (``m`` dense; ``max_nnz`` sparse)."""
        return self.m

    def encode(self, x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, idx, cnt) of a batch of items (n × width each; idx and cnt are used by sparse
        objectives only). Raises :class:`InvalidInput` naming the first bad item."""
        raise NotImplementedError

    def value_of(self, rows: Sequence[np.ndarray]) -> float:
        """f of a set given its items' dense rows, computed plainly (the reference for tests)."""
        if not len(rows):
            return 0.0
        r = np.asarray(rows, dtype=np.float64).reshape(len(rows), self.m)
        if self.form == K.MAX:
            return float((self.w * r.max(axis=0)).sum())
        s = r.sum(axis=0)
        if self.phik == K.PHI_SQRT:
            g = np.sqrt(s)
        elif self.phik == K.PHI_LOG:
            g = np.log1p(s)
        else:
            g = s / (1.0 + s)
        return float((self.w * g).sum())

    def dense(self, rows: np.ndarray, idx: np.ndarray, cnt: np.ndarray) -> np.ndarray:
        """Stored rows as dense rows over the ``m`` coordinates."""
        if not self.sparse:
            return rows[:, :self.m].copy()
        out = np.zeros((len(rows), self.m))
        for e in range(len(rows)):
            for t in range(int(cnt[e])):
                j = int(idx[e, t])
                out[e, j] = max(out[e, j], rows[e, t])
        return out

    def spec(self) -> dict[str, Any]:
        return {"objective": self.name, "m": self.m}


def _dense_batch(x: Any, d: int, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1 and d and a.shape[0] == d:
        a = a.reshape(1, d)
    if a.ndim != 2 or a.shape[1] != d:
        raise InvalidInput(f"'{what}' must be n×{d} numbers, got shape {a.shape}")
    if not np.isfinite(a).all():
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
        raise InvalidInput(f"'{what}' of item {int(bad[0])} holds a value that is not a finite number", bad[:1])
    return a


class FacilityLocation(Objective):
    """Facility location over a fixed reference set ``reference`` (m × d; held in float32, as the
    items' rows are: similarities are good to about 1e-7).

    ``similarity``: ``"rbf"`` (``exp(-γ ||x - r||²)``, ``gamma`` default 1/d) or ``"cosine"``
    (``max(0, cos(x, r))``). ``weights``: one per reference point (default 1).
    """

    name = "facility-location"

    def __init__(self, reference: Any, similarity: str = "rbf", gamma: float | None = None,
                 weights: Any = None):
        ref = np.asarray(reference, dtype=np.float64)
        if ref.ndim != 2 or not ref.size or not np.isfinite(ref).all():
            raise ValueError("reference must be a non-empty m×d array of finite numbers")
        if similarity not in ("rbf", "cosine"):
            raise ValueError(f"similarity must be 'rbf' or 'cosine', got {similarity!r}")
        super().__init__(np.ones(len(ref)) if weights is None else weights)
        if self.m != len(ref):
            raise ValueError(f"{self.m} weights for {len(ref)} reference points")
        self.reference = ref
        self.similarity = similarity
        self.gamma = 1.0 / ref.shape[1] if gamma is None else float(gamma)
        if not self.gamma > 0:
            raise ValueError("gamma must be > 0")
        self.d = ref.shape[1]
        self._ref32 = ref.astype(np.float32)  # (the similarities read it per item: half the memory traffic)
        self._sq = (self._ref32.astype(np.float64) ** 2).sum(axis=1)
        self._norm = np.sqrt(self._sq)

    def encode(self, x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = _dense_batch(x, self.d, "features")
        rows = np.empty((len(a), self.m))
        if self.similarity == "rbf":
            K.rbf_rows(a, self._ref32, self._sq, self.gamma, rows)
        else:
            K.cosine_rows(a, self._ref32, self._norm, rows)
        return rows, np.zeros((len(a), 0), dtype=np.int64), np.zeros(len(a), dtype=np.int64)

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "d": self.d, "similarity": self.similarity, "gamma": self.gamma}


class FeatureBased(Objective):
    """Feature-based: ``Σ_d w_d φ(Σ_{s∈S} x_sd)`` over ``d`` non-negative features; ``phi`` one of
    ``sqrt``, ``log1p``, ``saturate``."""

    form = K.SUM
    name = "feature-based"

    def __init__(self, d: int, phi: str = "sqrt", weights: Any = None):
        if int(d) < 1:
            raise ValueError("d must be >= 1")
        if phi not in PHIS:
            raise ValueError(f"phi must be one of {', '.join(PHIS)}, got {phi!r}")
        super().__init__(np.ones(int(d)) if weights is None else weights)
        if self.m != int(d):
            raise ValueError(f"{self.m} weights for {d} features")
        self.d = int(d)
        self.phi = phi
        self.phik = PHIS[phi]

    def encode(self, x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = _dense_batch(x, self.d, "features")
        if (a < 0).any():
            bad = np.flatnonzero((a < 0).any(axis=1))
            raise InvalidInput(f"'features' of item {int(bad[0])} holds a negative value (feature-based "
                               "objectives take non-negative features)", bad[:1])
        return a.copy(), np.zeros((len(a), 0), dtype=np.int64), np.zeros(len(a), dtype=np.int64)

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "phi": self.phi}


class WeightedCoverage(Objective):
    """Weighted coverage over ``m`` concepts: an item is a sparse list of (concept, weight >= 0),
    at most ``max_nnz`` of them; ``f(S) = Σ_c w_c max_{s∈S} x_sc``."""

    sparse = True
    name = "coverage"

    def __init__(self, m: int, max_nnz: int = 64, weights: Any = None):
        if int(m) < 1 or int(max_nnz) < 1:
            raise ValueError("m and max_nnz must be >= 1")
        super().__init__(np.ones(int(m)) if weights is None else weights)
        if self.m != int(m):
            raise ValueError(f"{self.m} weights for {m} concepts")
        self.max_nnz = int(max_nnz)

    @property
    def width(self) -> int:
        return self.max_nnz

    def encode(self, x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``x``: ``(offsets, indices, values)`` in CSR form (n + 1 offsets)."""
        try:
            offsets, indices, values = x
        except (TypeError, ValueError):
            raise InvalidInput("coverage items are (offsets, indices, values) in CSR form") from None
        off = np.asarray(offsets, dtype=np.int64).reshape(-1)
        ind = np.asarray(indices, dtype=np.int64).reshape(-1)
        val = np.asarray(values, dtype=np.float64).reshape(-1)
        n = len(off) - 1
        if n < 0 or off[0] != 0 or (np.diff(off) < 0).any() or off[-1] != len(ind) or len(ind) != len(val):
            raise InvalidInput("coverage offsets must rise from 0 to len(indices) = len(values)")
        rows = np.zeros((n, self.max_nnz))
        idx = np.zeros((n, self.max_nnz), dtype=np.int64)
        cnt = np.diff(off)
        for e in range(n):
            a, b = int(off[e]), int(off[e + 1])
            if b - a > self.max_nnz:
                raise InvalidInput(f"item {e} covers {b - a} concepts > max_nnz={self.max_nnz}", np.array([e]))
            i, v = ind[a:b], val[a:b]
            if ((i < 0) | (i >= self.m)).any():
                raise InvalidInput(f"item {e} names a concept outside [0, {self.m})", np.array([e]))
            if not (np.isfinite(v).all() and (v >= 0).all()):
                raise InvalidInput(f"item {e} has a coverage weight that is not a finite number >= 0",
                                   np.array([e]))
            if len(np.unique(i)) != len(i):
                raise InvalidInput(f"item {e} names a concept twice", np.array([e]))
            rows[e, :b - a], idx[e, :b - a] = v, i
        return rows, idx, cnt.astype(np.int64)

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "max_nnz": self.max_nnz}


class PythonObjective:
    """A user's objective ``fn(list of feature vectors) -> float`` (monotone submodular by the
    user's promise). Slow: each oracle call is a Python call on the whole set; runs with the
    plain-Python algorithms of :mod:`.reference` only.

    >>> f = PythonObjective(lambda xs: float(len({round(v[0]) for v in xs})))
    >>> f.gain([[1.0]], [[1.2]]), f.gain([[1.0]], [[2.0]])
    (0.0, 1.0)
    """

    name = "python"

    def __init__(self, fn: Callable[[list], float]):
        self.fn = fn

    def value(self, items: Sequence) -> float:
        return float(self.fn(list(items)))

    def gain(self, items: Sequence, new: Sequence) -> float:
        return self.value([*items, *new]) - self.value(items)
