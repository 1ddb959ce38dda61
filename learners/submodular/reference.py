"""Plain-Python versions of the family's algorithms: the slow, obvious references the kernels are
tested against, and the path a :class:`~.objectives.PythonObjective` runs on.

An oracle here is any object with ``value(items) -> float`` over a list of item handles; the
built-in objectives are wrapped by :class:`RowOracle` (items are dense rows).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .objectives import Objective


class RowOracle:
    """A built-in objective over dense rows, evaluated from scratch at every call (counted)."""

    def __init__(self, objective: Objective, rows: np.ndarray):
        self.objective = objective
        self.rows = np.asarray(rows, dtype=np.float64)
        self.calls = 0

    def value(self, items: Sequence[int]) -> float:
        return self.objective.value_of([self.rows[i] for i in items])

    def gain(self, items: Sequence[int], e: int) -> float:
        self.calls += 1
        return self.value([*items, e]) - self.value(items)


def brute_force(oracle: Any, ground: Sequence[int], k: int) -> tuple[float, tuple[int, ...]]:
    """OPT: the best set of at most ``k`` elements of ``ground`` (every subset tried; small n only)."""
    best = 0.0
    arg: tuple[int, ...] = ()
    for size in range(1, min(k, len(ground)) + 1):
        for s in itertools.combinations(ground, size):
            v = oracle.value(list(s))
            if v > best:
                best, arg = v, s
    return best, arg


def greedy(oracle: Any, ground: Sequence[int], k: int) -> tuple[float, list[int]]:
    """Plain greedy: k times, the element of largest positive gain (ties: the earlier in ``ground``)."""
    chosen: list[int] = []
    rest = list(ground)
    for _ in range(k):
        best, arg = 0.0, -1
        for e in rest:
            g = oracle.gain(chosen, e)
            if g > best:
                best, arg = g, e
        if arg < 0:
            break
        chosen.append(arg)
        rest.remove(arg)
    return oracle.value(chosen), chosen


# -- the dynamic algorithms, plainly (sets and lists) -------------------------------------------------------
class Items:
    """Stored rows of the items by slot and the kernels' oracle over them (calls counted)."""

    def __init__(self, objective: Objective, rows: np.ndarray, idx: np.ndarray, cnt: np.ndarray, keys: np.ndarray):
        self.o = objective
        self.rows, self.idx, self.cnt = rows, idx, cnt
        self.keys = np.asarray(keys, dtype=np.uint64)
        self.calls = 0

    def gain(self, e: int, c: np.ndarray) -> float:
        from . import _objectives as K
        self.calls += 1
        o = self.o
        return float(K.gain(o.form, o.phik, o.sparse, o.w, self.rows, self.idx, self.cnt, e, c))

    def add(self, e: int, c: np.ndarray) -> None:
        from . import _objectives as K
        K.add(self.o.form, self.o.sparse, self.rows, self.idx, self.cnt, e, c)

    def value(self, c: np.ndarray) -> float:
        from . import _objectives as K
        return float(K.value(self.o.form, self.o.phik, self.o.w, c))

    def zero(self) -> np.ndarray:
        """The state of the empty set."""
        return np.zeros(self.o.m)

    def copy(self, c: np.ndarray) -> np.ndarray:
        return c.copy()


class PyItems:
    """Items scored by a :class:`~.objectives.PythonObjective`: a set's state is the list of its
    slots, and every oracle call evaluates the user's function on the set with and without the
    element (slow; counted like the kernels' calls)."""

    def __init__(self, objective: Any, features: dict[int, Any], keys: np.ndarray):
        self.o = objective
        self.features = features  # slot -> the item's features, as the user's function takes them
        self.keys = np.asarray(keys, dtype=np.uint64)
        self.calls = 0

    def _of(self, c: list[int]) -> list[Any]:
        return [self.features[e] for e in c]

    def gain(self, e: int, c: list[int]) -> float:
        self.calls += 1
        return self.o.gain(self._of(c), [self.features[e]])

    def add(self, e: int, c: list[int]) -> None:
        c.append(e)

    def value(self, c: list[int]) -> float:
        return self.o.value(self._of(c))

    def zero(self) -> list[int]:
        return []

    def copy(self, c: list[int]) -> list[int]:
        return list(c)


def choice_rank(seed_g: int, key: int, draw: int) -> float:
    """The rank of an element in a guess's ``draw``-th random choice: the choice is the element of
    least rank, uniform over the candidates and independent of their order."""
    from .._random import draw_uniform
    return float(draw_uniform(np.uint64(seed_g), np.uint64(key), draw))


def guess_seed(seed: int, i: int) -> int:
    """The seed of OPT guess number ``i`` (γ = (1+ε)^i)."""
    from .._random import mix64
    return int(mix64(np.uint64((int(seed) + 0x9E3779B97F4A7C15 * (int(i) + 2 ** 31)) % 2 ** 64)))


class Levels:
    """One OPT guess γ of the level structure (τ = γ / 2k), plainly.

    Levels 0..T; per level a pool ``A[l]`` (the candidates that entered level l: their gain with
    respect to the levels below was at least τ), a buffer ``B[l]`` (elements inserted since level l
    was last built, not filtered yet) and the elements chosen there ``S[l]``. Building level l
    (:meth:`construct`) takes ``A[l] ∪ B[l]``, keeps those with gain >= τ, and while at least
    2^(T-l) of them are left (and fewer than k are chosen) chooses one at random among them and
    filters again; the survivors enter level l+1. A deletion that takes a chosen element leaves
    the levels as they are while the value still certifies the guarantee (>= (1-ε)γ/2), and
    rebuilds from the lowest level that lost one once it does not.

    ``lattanzi``: Lattanzi et al.'s rules (while fewer than k are chosen, every insertion rebuilds
    the lowest level whose buffer holds 2^(T-l) elements, the top one always; the choice is the
    first candidate of a random order with gain > τ). Otherwise eddy's: an insertion only goes into
    the buffers and, while fewer than k are chosen, is checked against the whole solution (one
    oracle call) and chosen at the top level if its gain is at least τ; the choice is uniform
    among the candidates (the least of their ranks, drawn per choice).
    """

    def __init__(self, items: Any, i: int, gamma: float, k: int, T: int, eps: float, seed_g: int, lattanzi: bool,
                 single: dict[int, float]):  # items: Items or PyItems
        self.single = single  # the live singletons: the gains at level 0 (no oracle call)
        self.it, self.i, self.gamma, self.k, self.T, self.eps = items, i, gamma, k, T, eps
        self.tau = gamma / (2 * k)
        self.seed_g, self.lattanzi = seed_g, lattanzi
        self.A: list[set[int]] = [set() for _ in range(T + 1)]
        self.B: list[set[int]] = [set() for _ in range(T + 1)]
        self.S: list[list[int]] = [[] for _ in range(T + 1)]
        self.c = [items.zero() for _ in range(T + 2)]
        self.draws = 0
        self.lowest = T + 1  # the lowest level that lost a chosen element since it was built

    def solution(self) -> list[int]:
        return [e for s in self.S for e in s]

    def intact(self) -> bool:
        """Fewer than k chosen and no chosen element lost since the levels were built: every live
        element's gain is below τ against a prefix of the solution (so OPT <= f(G) + γ/2)."""
        return sum(len(s) for s in self.S) < self.k and self.lowest > self.T

    def value(self) -> float:
        return self.it.value(self.c[self.T + 1])

    def _choose(self, X: set[int], c: np.ndarray) -> int:
        keys = self.it.keys
        if self.lattanzi:  # the first of a random order whose gain is above τ
            for x in sorted(X, key=lambda x: choice_rank(self.seed_g, int(keys[x]), self.draws)):
                if self.it.gain(x, c) > self.tau:
                    self.draws += 1
                    return x
            self.draws += 1
            return -1
        u = min(X, key=lambda x: (choice_rank(self.seed_g, int(keys[x]), self.draws), x))
        self.draws += 1
        return u

    def construct(self, j: int) -> None:
        T, it = self.T, self.it
        X = self.A[j] | self.B[j]
        # (an element that entered the pool of level j or above passed against the levels below j:
        # no call needed; Lattanzi et al. filter them all again)
        fresh = self.B[j] - set().union(*self.A[j:]) if not self.lattanzi else X
        for level in range(j, T + 1):
            self.A[level], self.B[level], self.S[level] = set(), set(), []
        c = self.it.copy(self.c[j])
        if j == 0:  # against the empty set: the singletons, known
            X = {x for x in X if self.single[x] >= self.tau}
        else:
            X = {x for x in X if x not in fresh or it.gain(x, c) >= self.tau}
        chosen = sum(len(s) for s in self.S[:j])
        level = j
        while level <= T:
            self.c[level] = self.it.copy(c)
            self.A[level] = set(X)
            while X and len(X) >= 2 ** (T - level) and chosen < self.k:
                u = self._choose(X, c)
                if u < 0:
                    X = set()
                    break
                self.S[level].append(u)
                it.add(u, c)
                chosen += 1
                X.discard(u)
                X = {x for x in X if it.gain(x, c) >= self.tau}
            if not X or chosen >= self.k:
                break
            level += 1
        for rest in range(level + 1, T + 2):
            self.c[rest] = self.it.copy(c)
        if j <= self.lowest:
            self.lowest = T + 1

    def insert(self, e: int, single: float) -> None:
        if single < self.tau:
            return
        T = self.T
        for level in range(T + 1):
            self.B[level].add(e)
        if len(self.solution()) < self.k:
            if self.lattanzi:  # the lowest level whose buffer overflows is rebuilt (the top always does)
                self.construct(next(lv for lv in range(T + 1) if len(self.B[lv]) >= 2 ** (T - lv)))
            elif self.it.gain(e, self.c[T + 1]) >= self.tau:  # the top: e against the whole solution
                self.S[T].append(e)
                self.it.add(e, self.c[T + 1])
        self._certify()

    def delete(self, e: int) -> None:
        for level in range(self.T + 1):
            self.A[level].discard(e)
            self.B[level].discard(e)
        for level, s in enumerate(self.S):
            if e in s:
                s.remove(e)
                self._restate(level)
                self.lowest = min(self.lowest, level)
                break
        self._certify()

    def _restate(self, level: int) -> None:
        """The states above ``level`` again from the chosen elements (no oracle calls)."""
        c = self.it.copy(self.c[level])
        for up in range(level, self.T + 1):
            for e in self.S[up]:
                self.it.add(e, c)
            self.c[up + 1] = self.it.copy(c)

    def _certify(self) -> None:
        """A guess that lost a chosen element is rebuilt from that level once its value falls below
        (1-ε)γ/2 (until then the value itself certifies the guarantee)."""
        if self.lowest <= self.T and self.value() < (1 - self.eps) * self.gamma / 2:
            self.construct(self.lowest)


class DynamicReference:
    """The dynamic algorithm over OPT guesses, plainly (see :class:`Levels`).

    ``lattanzi``: guesses (1+``eps_guess``)^i spanning [min, k·max] of the live singletons, as in
    Lattanzi et al.'s code; otherwise eddy's band: from max(max singleton, best value)/(1+ε) to
    k·max singleton (a guess is dropped once two steps below the band)."""

    def __init__(self, items: Any, k: int, T: int, eps: float = 0.2, seed: int = 0, lattanzi: bool = False,
                 eps_guess: float | None = None):
        self.it, self.k, self.T, self.eps, self.seed, self.lattanzi = items, k, T, eps, seed, lattanzi
        self.base = 1.0 + (eps if eps_guess is None else eps_guess)
        self.guesses: dict[int, Levels] = {}
        self.single: dict[int, float] = {}
        self.bound = 0.0  # an upper bound on OPT during the update (0: none known)

    def _band(self) -> tuple[int, int]:
        positive = [v for v in self.single.values() if v > 0]
        if not positive:  # nothing of value: no guess, the empty solution
            return 0, -1
        lb = math.log(self.base)
        hi = max(positive)
        top = math.ceil(math.log(self.k * hi) / lb - 1e-9)
        if self.lattanzi:
            return math.floor(math.log(min(positive)) / lb + 1e-9), top
        best = max((g.value() for g in self.guesses.values()), default=0.0)
        # Before this update the best guess held at least (1-ε)/(2(1+ε))·OPT, and an insertion
        # raises OPT by at most its singleton: no guess above that bound is needed now.
        if self.bound > 0:
            top = min(top, math.floor(math.log(self.bound) / lb + 1e-9) + 1)
        return math.floor(math.log(max(hi, best) / self.base) / lb + 1e-9), top

    def _sync(self) -> None:
        lo, hi = self._band()
        below, above = (0, 0) if self.lattanzi else (3, 3)  # eddy: kept a little outside the band
        for i in [i for i in self.guesses if i > hi + above or i < lo - below]:
            del self.guesses[i]
        for i in range(lo, hi + 1):
            if i not in self.guesses:
                g = Levels(self.it, i, math.pow(self.base, float(i)), self.k, self.T, self.eps,
                           guess_seed(self.seed, i), self.lattanzi, self.single)
                for e in sorted(self.single):
                    if self.single[e] >= g.tau:
                        g.B[0].add(e)
                g.construct(0)
                self.guesses[i] = g

    def _raise_bound(self, single: float) -> None:
        """The bound on OPT after this update (see :meth:`_band`)."""
        best = max((g.value() for g in self.guesses.values()), default=0.0)
        self.bound = (2 * (1 + self.eps) / (1 - self.eps) * best + single) if best > 0 else 0.0

    def insert(self, e: int) -> None:
        s = self.it.gain(e, self.it.zero())
        self._raise_bound(s)
        self.single[e] = s
        for i in sorted(self.guesses):
            self.guesses[i].insert(e, s)
        self._sync()

    def delete(self, e: int) -> None:
        self._raise_bound(0.0)
        del self.single[e]
        for i in sorted(self.guesses):
            self.guesses[i].delete(e)
        self._sync()

    def best(self) -> Levels | None:
        return max(self.guesses.values(), key=lambda g: (g.value(), -g.i), default=None)

    def solution(self) -> list[int]:
        g = self.best()
        return [] if g is None else g.solution()

    def value(self) -> float:
        g = self.best()
        return 0.0 if g is None else g.value()


class SieveReference:
    """Sieve-Streaming++ plainly (a dict of sieves by threshold exponent), with the learner's rule
    for deletions: run again over the live items, in insertion order, when a deleted item is in a
    sieve, was the largest singleton's element or is in the set that reached LB. The same rules as
    :mod:`._sieve`."""

    def __init__(self, items: Any, k: int, eps: float):
        from ._sieve import sieve_count

        self.it, self.k, self.eps, self.T = items, k, eps, sieve_count(k, eps)
        self.live: list[int] = []  # insertion order
        self._reset()

    def _reset(self) -> None:
        self.delta, self.arg, self.lb = 0.0, -1, 0.0
        self.lbset: list[int] = []
        self.sieves: dict[int, tuple[list[int], Any]] = {}  # exponent -> (members, state)

    def _add(self, e: int) -> None:
        single = self.it.gain(e, self.it.zero())
        if single > self.delta:
            self.delta, self.arg = single, e
        if self.delta <= 0.0:
            return
        base = math.log1p(self.eps)
        lo = math.ceil(math.log(max(self.lb, self.delta) / (2 * self.k)) / base - 1e-9)
        hi = math.floor(math.log(self.delta) / base + 1e-9)
        lo = max(lo, hi - self.T + 1)
        if self.sieves:  # sieves stay contiguous from the first kept one
            lo = max(lo, min(self.sieves))
        self.sieves = {i: self.sieves.get(i) or ([], self.it.zero()) for i in range(lo, max(hi, lo - 1) + 1)}
        for i in sorted(self.sieves):
            members, c = self.sieves[i]
            if len(members) < self.k:
                g = self.it.gain(e, c)
                if g >= math.exp(i * base):
                    members.append(e)
                    self.it.add(e, c)
                    if self.it.value(c) > self.lb:
                        self.lb, self.lbset = self.it.value(c), list(members)

    def insert(self, e: int) -> None:
        self.live.append(e)
        self._add(e)

    def delete(self, e: int) -> None:
        self.live.remove(e)
        if e == self.arg or e in self.lbset or any(e in m for m, _ in self.sieves.values()):
            self._reset()
            for x in self.live:
                self._add(x)

    def solution(self) -> list[int]:
        if not self.sieves:
            return []
        best = max(self.sieves.values(), key=lambda mc: self.it.value(mc[1]))
        return list(best[0])

    def value(self) -> float:
        return max((self.it.value(c) for _, c in self.sieves.values()), default=0.0)
