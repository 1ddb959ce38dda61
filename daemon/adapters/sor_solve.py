"""SOR tuning's solve mode: eddy solves the system of a request itself, off the pipeline's loop.

A request that carries ``"system"`` is a solve request::

    {"id": "step-17", "context": 0.31, "time": 1700000000.0,
     "system": {"npz": "steps/17.npz", "x0": "steps/16.x.npy", "tol": 1e-8, "solution": "steps/17.x.npy"}}
    {"id": "q-3", "system": {"indptr": [...], "indices": [...], "data": [...], "b": [...]}}

``npz``: a NumPy ``.npz`` under ``solve_dir`` holding ``indptr``, ``indices``, ``data``, ``shape``
(what ``scipy.sparse.save_npz`` writes for a CSR matrix) and ``b``; or the CSR arrays inline (small
systems: a record is at most ``max_message_bytes``). ``x0``: an initial guess (a ``.npy`` path under
``solve_dir`` or a list; a time-stepping code warm-starts from the previous step); ``tol`` (relative
residual, default ``solve_tol``), ``max_iterations`` (default ``solve_max_iterations``),
``method`` (``sor`` or ``ssor-pcg``, default ``solve_method``), ``solution``: a ``.npy`` path under
``solve_dir`` the solution is written to (never into a Kafka record). No path outside ``solve_dir``
is read or written; with ``solve_dir`` unset, only inline systems are taken.

The ω decision is published at once, as in advise mode. The solve runs on one of ``solve_workers``
threads (the kernels release the GIL), within ``solve_budget_s`` of wall time (SOR is checked between
chunks of iterations; SSOR-PCG is bounded by its iteration cap). When it ends, two records go out
with the pipeline's next batch: the outcome on the output topic, ``{"id", "pipeline", "type":
"solve", "omega", "method", "iterations", "residual", "seconds", "converged", "solution", "time",
"replay"}``, and its report on the pipeline's own input topic, ``{"type": "report", "id",
"iterations", "seconds", "converged", "time"}``, learned when it is read back, in log order, like a
report from the user's solver (a replay of the input log therefore learns the same). A solve that
does not converge within the cap or the budget is reported with ``converged: false`` and the cap as
its cost. With ``solve_sweep_every`` = N, one request in N (chosen by a hash of its id) is also
solved at every ω of the grid, on the same worker after its own solve: its outcome and report
carry ``best_iterations`` (and the outcome ``best_omega``), the per-instance best the regret metric
is measured against. A system no solver takes (not square, non-finite, a zero diagonal, not symmetric positive
definite for SSOR-PCG, over the size caps, an unreadable file) is dead-lettered with its reason:
checks on the record itself at decoding, checks that need the file when the worker loads it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from learners._hashing import event_keys
from learners.sor.systems import METHODS, System, SystemRejected, check_system, load_npz, require_spd, solve

from ..records import BadRecord, Out, number

CHUNK = 64  # SOR iterations between two looks at the clock
log = logging.getLogger(__name__)


@dataclass
class SolveSpec:
    """What a solve request asks for (the system itself, or the file it is in)."""

    system: System | None
    npz: str | None
    x0: Any  # None, an array, or a path under solve_dir
    tol: float
    maxiter: int
    method: str
    solution: str | None


class Solves:
    """The solve requests of one pipeline: their checks, the worker threads and their outcomes."""

    def __init__(self, pc: dict[str, Any], name: str, metrics):
        self.dir = os.path.realpath(pc["solve_dir"]) if pc["solve_dir"] else ""
        self.method = pc["solve_method"]
        self.tol = float(pc["solve_tol"])
        self.maxiter = int(pc["solve_max_iterations"])
        self.max_rows = int(pc["solve_max_rows"])
        self.max_nnz = int(pc["solve_max_nnz"])
        self.budget_s = float(pc["solve_budget_s"])
        self.cap = int(pc["solve_queue_cap"])
        self.workers = int(pc["solve_workers"])
        self.sweep_every = int(pc["solve_sweep_every"])
        self.grid: np.ndarray = np.zeros(0)  # set by the adapter: the ω a sweep solves at
        self.name = name
        self.metrics = metrics
        self.emit: Any = None  # set by the adapter: publishes outputs made outside a run
        self._pool: ThreadPoolExecutor | None = None
        self._guard = threading.Lock()
        self._futures: set = set()
        self.in_flight = 0
        self.done = {"converged": 0, "not_converged": 0, "rejected": 0}

    # -- the request's own checks (at decoding) ---------------------------------------------------
    def _path(self, v: Any, what: str, suffix: str, must_exist: bool) -> str:
        if not self.dir:
            raise BadRecord("solve_files_off", f"'{what}' names a file, but solve_dir is not set")
        if not isinstance(v, str) or not v or not v.endswith(suffix):
            raise BadRecord("bad_type", f"'{what}' must be a {suffix} path under solve_dir")
        try:
            path = os.path.realpath(os.path.join(self.dir, v))
        except (ValueError, OSError) as e:  # an embedded NUL, a path too long
            raise BadRecord("bad_type", f"'{what}': {e}") from None
        if os.path.commonpath([path, self.dir]) != self.dir:
            raise BadRecord("path_outside", f"'{what}' {v!r} lies outside solve_dir")
        if must_exist and not os.path.isfile(path):
            raise BadRecord("missing_file", f"'{what}' {v!r} does not exist under solve_dir")
        return path

    def parse(self, obj: dict[str, Any]) -> SolveSpec:
        spec = obj.get("system")
        if not isinstance(spec, dict):
            raise BadRecord("bad_type", "'system' must be an object (an npz path or CSR arrays)")
        method = spec.get("method", self.method)
        if method not in METHODS or method == "cg":
            raise BadRecord("bad_type", "'system.method' must be 'sor' or 'ssor-pcg'")
        tol = number(spec, "tol", required=False)
        if tol is not None and not 1e-14 <= tol < 1:
            raise BadRecord("bad_type", "'system.tol' must lie in [1e-14, 1)")
        maxiter = number(spec, "max_iterations", required=False)
        if maxiter is not None and not (1 <= maxiter <= self.maxiter and maxiter == int(maxiter)):
            raise BadRecord("bad_type", f"'system.max_iterations' must be an integer in [1, {self.maxiter}]")
        system, npz = None, None
        if "npz" in spec:
            npz = self._path(spec["npz"], "system.npz", ".npz", True)
        else:
            try:
                system = check_system(spec.get("indptr"), spec.get("indices"), spec.get("data"), spec.get("b"),
                                      max_n=self.max_rows, max_nnz=self.max_nnz)
            except SystemRejected as e:
                raise BadRecord(e.reason, e.detail) from None
            if method == "ssor-pcg":
                try:
                    require_spd(system, method)
                except SystemRejected as e:
                    raise BadRecord(e.reason, e.detail) from None
        x0 = spec.get("x0")
        if isinstance(x0, str):
            x0 = self._path(x0, "system.x0", ".npy", True)
        elif x0 is not None:
            x0 = self._vector(x0, system)
        solution = spec.get("solution")
        if solution is not None:
            solution = self._path(solution, "system.solution", ".npy", False)
        return SolveSpec(system, npz, x0, float(tol or self.tol), int(maxiter or self.maxiter), method, solution)

    @staticmethod
    def _vector(v: Any, system: System | None) -> np.ndarray:
        if not isinstance(v, list) or not all(isinstance(a, int | float) and not isinstance(a, bool) for a in v):
            raise BadRecord("bad_type", "'system.x0' must be a list of numbers or a .npy path")
        x = np.array(v, dtype=np.float64)
        if system is not None and x.shape != (system.n,):
            raise BadRecord("bad_structure", f"'system.x0' has {len(x)} entries for {system.n} rows")
        return x

    def reserve(self) -> None:
        """Takes a place among the solves in flight; ``solve_queue_full`` past ``solve_queue_cap``."""
        with self._guard:
            if self.in_flight >= self.cap:
                raise BadRecord("solve_queue_full", f"{self.in_flight} solves in flight (solve_queue_cap)")
            self.in_flight += 1

    def release(self) -> None:
        with self._guard:
            self.in_flight -= 1

    # -- the worker -------------------------------------------------------------------------------
    def submit(self, eid: str, spec: SolveSpec, omega: float, t: float | None, replay: bool) -> None:
        """Runs a reserved solve on a worker thread (the reservation is released when it ends)."""
        try:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"eddy-solve-{self.name}")
            fut = self._pool.submit(self._run, eid, spec, omega, t, replay)
        except BaseException:
            self.release()
            raise
        with self._guard:
            self._futures.add(fut)
        fut.add_done_callback(self._futures_done)

    def _futures_done(self, fut) -> None:
        with self._guard:
            self._futures.discard(fut)

    def _load(self, spec: SolveSpec) -> tuple[System, np.ndarray | None]:
        s = spec.system
        if s is None:  # (an x0 inside the .npz is not used: the request names its own)
            s = load_npz(str(spec.npz), self.max_rows, self.max_nnz)[0]
        x0 = spec.x0
        if isinstance(x0, str):
            try:
                x0 = np.load(x0, allow_pickle=False, mmap_mode="r")
                if x0.size != s.n:
                    raise ValueError(f"{x0.size} entries for {s.n} rows")
                x0 = np.array(x0)
            except Exception as e:
                raise SystemRejected("unreadable_file", f"x0: {type(e).__name__}: {e}") from None
        if x0 is not None:
            x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
            if x0.shape != (s.n,) or not np.isfinite(x0).all():
                raise SystemRejected("bad_structure", f"x0 must be {s.n} finite numbers")
        if spec.method == "ssor-pcg":
            require_spd(s, spec.method)
        return s, x0

    def _solve(self, s: System, spec: SolveSpec, omega: float, x0: np.ndarray | None):
        if spec.method != "sor":
            return solve(s, spec.method, omega, spec.tol, spec.maxiter, x0)
        deadline = time.perf_counter() + self.budget_s
        x = np.zeros(s.n) if x0 is None else x0.copy()
        its, seconds = 0, 0.0
        while True:  # SOR is stationary: a chunk continues exactly where the last stopped
            r = solve(s, "sor", omega, spec.tol, min(CHUNK, spec.maxiter - its), x)
            its += r.iterations
            seconds += r.seconds
            x = r.x
            if r.converged or r.breakdown or its >= spec.maxiter or r.iterations == 0 \
                    or time.perf_counter() > deadline:
                return r.__class__(its if r.converged else spec.maxiter, r.residual, r.converged, seconds, x,
                                   r.breakdown)

    def sweeps(self, eid: str) -> bool:
        """Whether this request is one of the ``solve_sweep_every`` swept (a function of its id, so
        a replay sweeps the same ones)."""
        return self.sweep_every > 0 and int(event_keys([eid])[0]) % self.sweep_every == 0

    def _sweep(self, eid: str, s: System, spec: SolveSpec, x0: np.ndarray | None) -> tuple[int, float] | None:
        """For a swept request: the fewest iterations of any ω of the grid on this system (each
        solved as the chosen one was, within the cap and the budget) and that ω."""
        if not self.sweeps(eid) or not len(self.grid):
            return None
        best, at = -1, 0.0
        for w in self.grid.tolist():
            r = self._solve(s, spec, w, x0)
            its = int(r.iterations) if r.converged else spec.maxiter
            if best < 0 or its < best:
                best, at = its, w
        return best, at

    def _count(self, outcome: str) -> None:
        with self._guard:
            self.done[outcome] += 1

    def _reject(self, eid: str, reason: str, detail: str) -> None:
        self._count("rejected")
        self.metrics.errors.labels(pipeline=self.name, reason=reason).inc()
        self.metrics.dead_letters.labels(pipeline=self.name, reason=reason).inc()
        body = {"pipeline": self.name, "reason": reason, "detail": detail, "id": eid}
        self.emit([Out("dlq", eid.encode(), orjson.dumps(body))])

    def _write(self, path: str, x: np.ndarray) -> str:
        """Writes the solution atomically (a fresh temporary file beside it, then a rename), after
        checking again that its folder is still under solve_dir."""
        folder = os.path.realpath(os.path.dirname(path))
        if os.path.commonpath([folder, self.dir]) != self.dir:
            raise OSError(f"{os.path.dirname(path)!r} no longer lies under solve_dir")
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npy.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, x)
            os.replace(tmp, os.path.join(folder, os.path.basename(path)))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return os.path.relpath(path, self.dir)

    def _run(self, eid: str, spec: SolveSpec, omega: float, t: float | None, replay: bool) -> None:
        try:
            try:
                s, x0 = self._load(spec)
                r = self._solve(s, spec, omega, x0)
            except SystemRejected as e:
                self._reject(eid, e.reason, e.detail)
                return
            written, error = None, None
            if spec.solution is not None:
                try:
                    written = self._write(spec.solution, r.x)
                except OSError as e:  # the solve stands; its solution is not written
                    error = f"solution not written: {e}"
                    log.warning("%s: %s: %s", self.name, eid, error)
            self._count("converged" if r.converged else "not_converged")
            best = self._sweep(eid, s, spec, x0)
            out = {"id": eid, "pipeline": self.name, "type": "solve", "omega": omega, "method": spec.method,
                   "iterations": r.iterations, "residual": r.residual, "seconds": r.seconds,
                   "converged": r.converged, "solution": written, "time": t, "replay": replay}
            if error is not None:
                out["error"] = error
            report = {"type": "report", "id": eid, "iterations": r.iterations, "seconds": r.seconds,
                      "converged": r.converged, "time": t}
            if best is not None:
                out["best_iterations"] = report["best_iterations"] = best[0]
                out["best_omega"] = best[1]
            self.emit([Out("decision", eid.encode(), orjson.dumps(out)),
                       Out("input", eid.encode(), orjson.dumps(report))])
        except Exception as e:  # never lost silently in the pool: a dead letter, a counter, a log line
            log.exception("%s: solve of %r failed", self.name, eid)
            try:
                self._reject(eid, "solve_failed", f"{type(e).__name__}: {e}")
            except Exception:
                log.exception("%s: the dead letter of %r failed", self.name, eid)
        finally:
            self.release()

    def drain(self, timeout_s: float) -> int:
        """Waits up to ``timeout_s`` for the solves in flight (their outputs are then pending);
        returns how many are still running."""
        with self._guard:
            futures = list(self._futures)
        if futures:
            wait(futures, timeout=timeout_s)
        with self._guard:
            return len(self._futures)

    def close(self) -> None:
        """Stops the workers: queued solves are dropped, a running one finishes on its own."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
