"""Linear systems: their checks, the solvers eddy runs itself, and the evaluation-only baselines.

A system is a square sparse matrix in CSR arrays (``indptr``, ``indices``, ``data``) and a
right-hand side. :func:`check_system` refuses what no solver here can take, with a reason
(:class:`SystemRejected`); :func:`solve` runs SOR, SSOR-preconditioned CG or CG
(:mod:`._kernels`) and tells whether the solve converged. :func:`young_omega` (Young's formula
from the Jacobi spectral radius, by a dense eigen-solve) and :func:`golden_omega` (a
golden-section search over ω on one instance, as the authors' "instance-optimal" baseline) are for
evaluation: each costs far more than the solve it would tune. :func:`poisson` builds the
5-point Laplacian family of the paper's experiments.
"""

from __future__ import annotations

import math
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import _kernels as K

METHODS = ("sor", "ssor-pcg", "cg")


class SystemRejected(ValueError):
    """A system no solver here takes: ``reason`` is one of ``not_square``, ``bad_structure``,
    ``non_finite``, ``singular_diagonal``, ``not_symmetric``, ``not_spd``, ``oversize``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class System:
    """A checked system: CSR arrays (indices sorted within each row), its diagonal, ``b``."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    diag: np.ndarray
    b: np.ndarray

    @property
    def n(self) -> int:
        return int(self.b.shape[0])

    def symmetric(self) -> bool:
        """Whether A equals its transpose exactly (SSOR-PCG and CG need a symmetric A)."""
        n = self.n
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(self.indptr))
        a = np.lexsort((self.indices, rows))
        b = np.lexsort((rows, self.indices))
        return bool(np.array_equal(rows[a], self.indices[b]) and np.array_equal(self.indices[a], rows[b])
                    and np.array_equal(self.data[a], self.data[b]))

    def dense(self) -> np.ndarray:
        A = np.zeros((self.n, self.n))
        rows = np.repeat(np.arange(self.n), np.diff(self.indptr))
        np.add.at(A, (rows, self.indices), self.data)
        return A


@dataclass(frozen=True)
class Solve:
    """The outcome of one solve: ``iterations`` (the cap when it did not converge), the final
    relative residual, ``converged``, wall ``seconds``, and the solution ``x``."""

    iterations: int
    residual: float
    converged: bool
    seconds: float
    x: np.ndarray
    breakdown: bool = False


def check_system(indptr, indices, data, b, n: int | None = None, max_n: int = 10_000_000,
                 max_nnz: int = 100_000_000) -> System:
    """A :class:`System` from CSR arrays and a right-hand side, or :class:`SystemRejected`.

    >>> s = check_system([0, 2, 4], [0, 1, 0, 1], [4.0, -1.0, -1.0, 4.0], [1.0, 2.0])
    >>> s.n, s.diag.tolist(), s.symmetric()
    (2, [4.0, 4.0], True)
    >>> check_system([0, 1, 1], [1], [1.0], [1.0, 1.0])
    Traceback (most recent call last):
    ...
    learners.sor.systems.SystemRejected: singular_diagonal: row 0 has no non-zero diagonal entry
    """
    try:
        indptr = np.asarray(indptr, dtype=np.int64).reshape(-1)
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        data = np.asarray(data, dtype=np.float64).reshape(-1)
        b = np.asarray(b, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as e:
        raise SystemRejected("bad_structure", f"CSR arrays and b must be numbers: {e}") from None
    rows = len(indptr) - 1
    if rows < 1:
        raise SystemRejected("bad_structure", "indptr needs at least 2 entries")
    if n is not None and n != rows:
        raise SystemRejected("not_square", f"shape ({rows}, {n}): a solver here needs a square matrix")
    if rows > max_n or len(data) > max_nnz:
        raise SystemRejected("oversize", f"{rows} rows and {len(data)} entries exceed the caps ({max_n} rows, "
                             f"{max_nnz} entries)")
    if len(b) != rows:
        raise SystemRejected("not_square" if n is None else "bad_structure",
                             f"b has {len(b)} entries for {rows} rows")
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != len(indices) or len(indices) != len(data):
        raise SystemRejected("bad_structure", "indptr must start at 0, never decrease and end at len(indices) "
                             "== len(data)")
    if len(indices) and (indices.min() < 0 or indices.max() >= rows):
        raise SystemRejected("not_square" if indices.max() >= rows else "bad_structure",
                             f"column indices must lie in [0, {rows}) (a square matrix)")
    if not (np.isfinite(data).all() and np.isfinite(b).all()):
        raise SystemRejected("non_finite", "the matrix and b must hold finite numbers")
    row_of = np.repeat(np.arange(rows, dtype=np.int64), np.diff(indptr))
    order = np.lexsort((indices, row_of))  # columns sorted within each row
    indices, data = indices[order], data[order]
    if len(indices) > 1 and np.any((np.diff(indices) == 0) & (np.diff(row_of) == 0)):
        raise SystemRejected("bad_structure", "a row lists a column twice")
    diag = np.zeros(rows)
    on = indices == row_of
    diag[row_of[on]] = data[on]
    zero = np.flatnonzero(diag == 0.0)
    if len(zero):
        raise SystemRejected("singular_diagonal", f"row {int(zero[0])} has no non-zero diagonal entry")
    return System(indptr, indices, data, diag, b)


def require_spd(system: System, method: str) -> None:
    """The checks a CG method needs: a positive diagonal (``not_spd``) and a symmetric A
    (``not_symmetric``); a breakdown during the solve finds the rest of an indefinite A."""
    if np.any(system.diag <= 0):
        raise SystemRejected("not_spd", f"{method} needs a positive definite matrix (a positive diagonal)")
    if not system.symmetric():
        raise SystemRejected("not_symmetric", f"{method} needs a symmetric matrix")


def load_npz(path: str, max_n: int = 10_000_000, max_nnz: int = 100_000_000) -> tuple[System, np.ndarray | None]:
    """The system of an ``.npz`` holding ``indptr``, ``indices``, ``data``, ``shape`` (what
    ``scipy.sparse.save_npz`` writes for a CSR matrix) and ``b``, and its ``x0`` if it holds one.

    Each member's header is read first: an array past the size caps is ``oversize`` before it is
    read (a compressed file may expand to far more than its size); a file that cannot be read is
    ``unreadable_file``.
    """
    base = os.path.basename(path)
    limit = max(max_n + 1, max_nnz)
    z: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
            for name in ("indptr", "indices", "data", "b", "shape", "x0"):
                if name not in members:
                    continue
                with zf.open(members[name]) as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(f)
                    if dtype.hasobject:
                        raise SystemRejected("unreadable_file", f"{base}: {name}: object arrays are not read")
                    if int(np.prod(shape)) > limit:
                        raise SystemRejected("oversize", f"{base}: {name} has {int(np.prod(shape))} entries "
                                             f"(caps: {max_n} rows, {max_nnz} entries)")
                with zf.open(members[name]) as f:
                    z[name] = np.lib.format.read_array(f, allow_pickle=False)
        missing = [k for k in ("indptr", "indices", "data", "b") if k not in z]
        if missing:
            raise SystemRejected("unreadable_file", f"{base} lacks {missing}")
        dims = tuple(int(v) for v in np.asarray(z["shape"]).reshape(-1)) if "shape" in z else None
        if dims is not None and (len(dims) != 2 or dims[0] != dims[1]):
            raise SystemRejected("not_square", f"shape {dims}: a solver here needs a square matrix")
        s = check_system(z["indptr"], z["indices"], z["data"], z["b"], n=dims[1] if dims else None,
                         max_n=max_n, max_nnz=max_nnz)
    except SystemRejected:
        raise
    except Exception as e:  # not a zip, truncated, a bad header, no memory
        raise SystemRejected("unreadable_file", f"{base}: {type(e).__name__}: {e}") from None
    return s, (np.asarray(z["x0"], dtype=np.float64) if "x0" in z else None)


def solve(system: System, method: str = "sor", omega: float = 1.0, tol: float = 1e-8, maxiter: int = 10_000,
          x0: np.ndarray | None = None) -> Solve:
    """Solves ``system`` by ``method`` (``sor``, ``ssor-pcg``, ``cg``) from ``x0`` (zeros if None).

    ``ssor-pcg`` and ``cg`` need a symmetric positive definite A: a non-symmetric A is refused
    (``not_symmetric``), a non-positive diagonal or a breakdown (a direction of non-positive
    curvature) is ``not_spd``. A solve that reaches ``maxiter`` is reported with
    ``converged=False`` and ``iterations == maxiter``.

    >>> from learners.sor.systems import poisson
    >>> r = solve(poisson(8, 0.1), "ssor-pcg", omega=1.5)
    >>> r.converged, r.iterations < 30
    (True, True)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0.0 < omega < 2.0:
        raise ValueError(f"omega must lie in (0, 2), got {omega}")
    if not (1e-15 <= tol < 1) or maxiter < 1:
        raise ValueError("tol must lie in [1e-15, 1) and maxiter >= 1")
    x = np.zeros(system.n) if x0 is None else np.array(x0, dtype=np.float64).reshape(-1)
    if x.shape != (system.n,) or not np.isfinite(x).all():
        raise SystemRejected("bad_structure", f"x0 must be {system.n} finite numbers")
    s = system
    if method != "sor":
        require_spd(s, method)
    t0 = time.perf_counter()
    if method == "sor":
        it, res, flag = K.sor_solve(s.indptr, s.indices, s.data, s.diag, s.b, x, omega, tol, maxiter)
    elif method == "ssor-pcg":
        it, res, flag = K.ssor_pcg(s.indptr, s.indices, s.data, s.diag, s.b, x, omega, tol, maxiter)
    else:
        it, res, flag = K.cg(s.indptr, s.indices, s.data, s.diag, s.b, x, tol, maxiter)
    seconds = time.perf_counter() - t0
    if flag < 0:
        if method == "sor":  # diverged (inf/nan): the cap is its cost
            return Solve(maxiter, float(res), False, seconds, x, breakdown=True)
        raise SystemRejected("not_spd", f"{method} broke down: the matrix is not positive definite")
    if method != "sor" and it > 0:  # CG's recurrence drifts from b - Ax: the true residual is reported
        bn = float(np.linalg.norm(s.b))
        res = K._residual(s.indptr, s.indices, s.data, s.b, x, np.empty(s.n)) / bn if bn else 0.0
    return Solve(int(it), float(res), flag == 1, seconds, x)


def poisson(m: int, shift: float = 0.0, b: np.ndarray | None = None) -> System:
    """The 5-point Laplacian on an m×m interior grid (MATLAB ``delsq(numgrid('S', m + 2))``, natural
    ordering) plus ``shift``·I, with right-hand side ``b`` (ones if None)."""
    n = m * m
    idx = np.arange(n).reshape(m, m)
    rows, cols, vals = [idx.ravel()], [idx.ravel()], [np.full(n, 4.0 + shift)]
    for di, dj in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        a = idx[max(0, -di):m - max(0, di), max(0, -dj):m - max(0, dj)]
        c = idx[max(0, di):m - max(0, -di), max(0, dj):m - max(0, -dj)]
        rows.append(a.ravel())
        cols.append(c.ravel())
        vals.append(np.full(a.size, -1.0))
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    order = np.lexsort((c, r))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=n))])
    return check_system(indptr, c[order], v[order], np.ones(n) if b is None else b)


def jacobi_radius(system: System) -> float:
    """ρ(I - D⁻¹A) by a dense eigen-solve (evaluation only: O(n³))."""
    A = system.dense()
    J = np.eye(system.n) - A / system.diag[:, None]
    return float(np.max(np.abs(np.linalg.eigvals(J))))


def young_omega(system: System) -> float:
    """Young's ω* = 2 / (1 + √(1 - ρ_J²)), optimal for SOR on consistently ordered matrices (the
    5-point Laplacian); ``nan`` when ρ_J >= 1 (Jacobi diverges: the formula does not apply)."""
    rho = jacobi_radius(system)
    return 2.0 / (1.0 + math.sqrt(1.0 - rho * rho)) if rho < 1.0 else math.nan


def golden_omega(cost: Callable[[float], float], lo: float = 1.0, hi: float = 1.95, evaluations: int = 12
                 ) -> tuple[float, float]:
    """A golden-section search of ``cost(ω)`` over [lo, hi] with ``evaluations`` calls (the
    authors' per-instance baseline, 12 evaluations); returns the best (ω, cost) evaluated."""
    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = cost(c), cost(d)
    seen = [(fc, c), (fd, d)]
    for _ in range(max(0, evaluations - 2)):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = cost(c)
            seen.append((fc, c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = cost(d)
            seen.append((fd, d))
    best = min(seen)
    return best[1], best[0]
