"""Numba kernels of eddy's dynamic algorithm: the level structure of :class:`.reference.Levels`
over OPT guesses (:class:`.reference.DynamicReference` is the same algorithm, plainly; the tests
run both on the same streams and compare them step by step).

State (:class:`DynState`, arrays only, so that it checkpoints as it is): the items by slot (the
objective's rows, keys, singletons, liveness), and per guess slot ``g`` (a ring of ``gmax``):
its exponent ``gi`` (γ = base^i), τ = γ/2k, draw counter, the lowest level that lost a chosen
element, the chosen elements ``sol`` in level order with their levels, the prefix states ``cst[g, l]``
(the state of the elements chosen below level l; ``cst[g, T+1]``: the whole solution), and the
members: every live element whose singleton reaches τ, with its pool height ``h`` (it is in the
pools of levels 0..h) and buffer height ``hb`` (in the buffers of levels 0..hb). The members are
kept in ``P[g]`` sorted by ``H = max(h, hb)`` ascending, with ``b[g, l]`` the count with H < l
(the first place of bucket l; ``nb[g]`` the count of all), so that a level's pool and buffer,
``A_l ∪ B_l``, are the suffix ``P[g, b[g, l]:nb[g]]``, an element moves one level in O(1), and one
inserted into every buffer (the top bucket, at the end) joins in O(1).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .._numba import jit
from .._random import draw_uniform, mix64
from ._greedy import greedy_complete
from ._objectives import add, gain, state_of, value

GOLDEN = 0x9E3779B97F4A7C15


class DynState(NamedTuple):
    """Everything the kernels read and write (see the module docstring)."""

    ip: np.ndarray  # int64 [form, phik, sparse, k, T, gmax]
    fp: np.ndarray  # float64 [eps, base, bound, max singleton, calls, best value]
    seed: np.ndarray  # uint64 [seed]
    w: np.ndarray
    rows: np.ndarray  # float32 [cap, width]: the items' rows (half the memory and memory traffic)
    idx: np.ndarray
    cnt: np.ndarray
    keys: np.ndarray  # uint64 per slot
    single: np.ndarray  # float64 per slot
    alive: np.ndarray  # bool per slot
    gi: np.ndarray  # int64 per guess slot
    gon: np.ndarray  # bool
    gdraws: np.ndarray  # int64
    glowest: np.ndarray  # int64
    gseed: np.ndarray  # uint64
    nb: np.ndarray  # int64 per guess
    b: np.ndarray  # int64 [gmax, T+1]
    P: np.ndarray  # int32 [gmax, cap]
    pos: np.ndarray  # int32 [gmax, cap]
    h: np.ndarray  # int8 [gmax, cap]
    hb: np.ndarray  # int8 [gmax, cap]
    member: np.ndarray  # bool [gmax, cap]
    sol: np.ndarray  # int32 [gmax, k]
    slev: np.ndarray  # int8 [gmax, k]
    ns: np.ndarray  # int64 per guess
    cst: np.ndarray  # float64 [gmax, T+2, m]
    gval: np.ndarray  # float64 per guess: f of its solution (the value of cst[g, T+1])
    best: np.ndarray  # int64 [k + 1]: the best guess's solution after the last update, its count last
    work: np.ndarray  # int32 [cap] (scratch)
    hnew: np.ndarray  # int8 [cap] (scratch)


def guess_count(k: int, eps: float) -> int:
    """Guess slots enough for the band (log_{1+ε}(k(1+ε)) + 2 wide) and its margins of 3 each."""
    return int(math.ceil(math.log(k * (1 + eps)) / math.log(1 + eps))) + 12


def new_state(form: int, phik: int, sparse: bool, w: np.ndarray, width: int, cap: int, k: int, eps: float,
              seed: int) -> DynState:
    T = max(1, int(math.ceil(math.log2(max(2, cap)))))
    gmax = guess_count(k, eps)
    m = len(w)
    return DynState(
        ip=np.array([form, phik, int(sparse), k, T, gmax], dtype=np.int64),
        fp=np.array([eps, 1.0 + eps, 0.0, 0.0, 0.0, 0.0]), seed=np.array([seed], dtype=np.uint64),
        w=np.asarray(w, dtype=np.float64), rows=np.zeros((cap, width), dtype=np.float32),
        idx=np.zeros((cap, width if sparse else 0), dtype=np.int64), cnt=np.zeros(cap, dtype=np.int64),
        keys=np.zeros(cap, dtype=np.uint64), single=np.zeros(cap), alive=np.zeros(cap, dtype=np.bool_),
        gi=np.zeros(gmax, dtype=np.int64), gon=np.zeros(gmax, dtype=np.bool_),
        gdraws=np.zeros(gmax, dtype=np.int64), glowest=np.zeros(gmax, dtype=np.int64),
        gseed=np.zeros(gmax, dtype=np.uint64), nb=np.zeros(gmax, dtype=np.int64),
        b=np.zeros((gmax, T + 1), dtype=np.int64), P=np.zeros((gmax, cap), dtype=np.int32),
        pos=np.zeros((gmax, cap), dtype=np.int32), h=np.full((gmax, cap), -1, dtype=np.int8),
        hb=np.full((gmax, cap), -1, dtype=np.int8), member=np.zeros((gmax, cap), dtype=np.bool_),
        sol=np.zeros((gmax, k), dtype=np.int32), slev=np.zeros((gmax, k), dtype=np.int8),
        ns=np.zeros(gmax, dtype=np.int64), cst=np.zeros((gmax, T + 2, m)), gval=np.zeros(gmax),
        best=np.zeros(k + 1, dtype=np.int64),
        work=np.zeros(cap, dtype=np.int32), hnew=np.zeros(cap, dtype=np.int8))


# -- the member buckets ---------------------------------------------------------------------------------
@jit(inline="always")
def _bound_of(st, g, level):
    """The first position of bucket ``level`` (H = level): b[g, level], with 0 for level -1 and
    nb[g] for level T+1."""
    if level < 0:
        return 0
    if level > st.ip[4]:
        return st.nb[g]
    return st.b[g, level]


@jit(inline="always")
def _swap(st, g, a, c):
    ea, ec = st.P[g, a], st.P[g, c]
    st.P[g, a], st.P[g, c] = ec, ea
    st.pos[g, ec], st.pos[g, ea] = a, c


@jit(inline="always")
def _raise(st, g, e, to):
    """Moves member e up to H = ``to`` (one bucket at a time: the last place of its bucket)."""
    cur = max(st.h[g, e], st.hb[g, e])
    while cur < to:
        last = _bound_of(st, g, cur + 1) - 1
        _swap(st, g, st.pos[g, e], last)
        st.b[g, cur + 1] -= 1
        cur += 1


@jit(inline="always")
def _lower(st, g, e, to):
    """Moves member e down to H = ``to`` (>= -1; one bucket at a time: the first place of its bucket)."""
    cur = max(st.h[g, e], st.hb[g, e])
    while cur > to:
        first = st.b[g, cur]
        _swap(st, g, st.pos[g, e], first)
        st.b[g, cur] += 1
        cur -= 1


@jit(inline="always")
def _join(st, g, e, hb):
    """Makes e a member with pool height -1 and buffer height ``hb`` (at the top, hb = T: O(1))."""
    n = st.nb[g]
    st.P[g, n] = e
    st.pos[g, e] = n
    st.nb[g] = n + 1  # (the end of the array is the top bucket)
    st.h[g, e] = -1
    st.hb[g, e] = st.ip[4]
    st.member[g, e] = True
    _lower(st, g, e, hb)
    st.hb[g, e] = hb


@jit(inline="always")
def _leave(st, g, e):
    _raise(st, g, e, st.ip[4])
    last = st.nb[g] - 1
    _swap(st, g, st.pos[g, e], last)
    st.nb[g] = last
    st.member[g, e] = False
    st.h[g, e] = -1
    st.hb[g, e] = -1


# -- one guess ------------------------------------------------------------------------------------------
@jit(inline="always")
def _gain(st, e, c):
    st.fp[4] += 1.0
    return gain(st.ip[0], st.ip[1], st.ip[2] != 0, st.w, st.rows, st.idx, st.cnt, e, c)


@jit(inline="always")
def _add(st, e, c):
    add(st.ip[0], st.ip[2] != 0, st.rows, st.idx, st.cnt, e, c)


@jit(inline="always")
def _tau(st, g):
    return math.pow(st.fp[1], float(st.gi[g])) / (2.0 * st.ip[3])


@jit(inline="always")
def _gamma(st, g):
    return math.pow(st.fp[1], float(st.gi[g]))


@jit(inline="always")
def guess_value(st, g):
    return st.gval[g]


@jit(inline="always")
def _revalue(st, g):
    st.gval[g] = value(st.ip[0], st.ip[1], st.w, st.cst[g, st.ip[4] + 1])


@jit
def _choose(st, g, xs, n):
    """The candidate of least rank in this draw (ties: the lower slot): uniform, order-free."""
    best, arg = 2.0, -1
    d = st.gdraws[g]
    for t in range(n):
        x = xs[t]
        r = draw_uniform(st.gseed[g], st.keys[x], d)
        if r < best or (r == best and x < xs[arg]):
            best, arg = r, t
    st.gdraws[g] = d + 1
    return arg


@jit
def construct(st, g, j):
    """Builds levels j..T of guess g (:meth:`.reference.Levels.construct`)."""
    T, k = st.ip[4], st.ip[3]
    tau = _tau(st, g)
    first = st.b[g, j]
    nx = st.nb[g] - first
    xs = st.work
    for t in range(nx):
        xs[t] = st.P[g, first + t]
    ns = 0
    while ns < st.ns[g] and st.slev[g, ns] < j:
        ns += 1
    st.ns[g] = ns
    c = st.cst[g, j].copy()
    # Entry: the pool of level j is known to pass; the buffer's fresh elements are filtered.
    keep = 0
    for t in range(nx):
        x = xs[t]
        if j == 0:
            ok = st.single[x] >= tau
        else:
            ok = st.h[g, x] >= j or _gain(st, x, c) >= tau
        if ok:
            xs[keep] = x
            keep += 1
        # (a rejected one keeps its pool height, below j; _resort empties its buffers above j-1)
    survivors = keep
    level = j
    chosen = ns
    while level <= T:
        st.cst[g, level] = c
        for t in range(survivors):
            st.h[g, xs[t]] = level
        while survivors > 0 and survivors >= (1 << (T - level)) and chosen < k:
            a = _choose(st, g, xs, survivors)
            u = xs[a]
            st.sol[g, chosen] = u
            st.slev[g, chosen] = level
            chosen += 1
            _add(st, u, c)
            xs[a] = xs[survivors - 1]
            survivors -= 1
            kept = 0
            for t in range(survivors):
                x = xs[t]
                if _gain(st, x, c) >= tau:
                    xs[kept] = x
                    kept += 1
            survivors = kept
        if survivors == 0 or chosen >= k:
            break
        level += 1
    st.ns[g] = chosen
    for rest in range(level + 1, T + 2):
        st.cst[g, rest] = c
    _revalue(st, g)
    if j <= st.glowest[g]:
        st.glowest[g] = T + 1
    _resort(st, g, j)


@jit
def _resort(st, g, j):
    """After building from level j: every member of the old suffix P[g, b[g, j]:nb[g]] (H >= j)
    has its new pool height in ``h`` and buffer height min(hb, j-1); the suffix is sorted again by
    H and the boundaries of levels >= j recounted."""
    T = st.ip[4]
    first, n = st.b[g, j], st.nb[g]
    counts = np.zeros(T + 2, dtype=np.int64)  # by H + 1 (H >= j - 1 >= -1)
    for t in range(first, n):
        x = st.P[g, t]
        if st.hb[g, x] > j - 1:
            st.hb[g, x] = j - 1
        hh = max(st.h[g, x], st.hb[g, x])
        st.hnew[x] = hh
        counts[hh + 1] += 1
    start = np.zeros(T + 2, dtype=np.int64)  # ascending H from the suffix's first place
    acc = first
    for hh in range(j - 1, T + 1):
        start[hh + 1] = acc
        acc += counts[hh + 1]
    tmp = st.work
    for t in range(first, n):
        tmp[t - first] = st.P[g, t]
    for t in range(n - first):
        x = tmp[t]
        p = start[st.hnew[x] + 1]
        start[st.hnew[x] + 1] = p + 1
        st.P[g, p] = x
        st.pos[g, x] = p
    acc = first
    for lv in range(j, T + 1):
        acc += counts[lv]  # (those with H = lv - 1)
        st.b[g, lv] = acc


@jit
def _restate(st, g, level):
    T = st.ip[4]
    c = st.cst[g, level].copy()
    t = 0
    while t < st.ns[g] and st.slev[g, t] < level:
        t += 1
    for up in range(level, T + 1):
        while t < st.ns[g] and st.slev[g, t] == up:
            _add(st, st.sol[g, t], c)
            t += 1
        st.cst[g, up + 1] = c
    _revalue(st, g)


@jit(inline="always")
def _certify(st, g):
    T = st.ip[4]
    if st.glowest[g] <= T and guess_value(st, g) < (1.0 - st.fp[0]) * _gamma(st, g) / 2.0:
        construct(st, g, st.glowest[g])


@jit
def _insert_guess(st, g, e, s):
    T, k = st.ip[4], st.ip[3]
    tau = _tau(st, g)
    if s < tau:
        return
    _join(st, g, e, T)
    if st.ns[g] < k:
        top = st.cst[g, T + 1]
        if _gain(st, e, top) >= tau:
            st.sol[g, st.ns[g]] = e
            st.slev[g, st.ns[g]] = T
            st.ns[g] += 1
            _add(st, e, top)
            _revalue(st, g)
    _certify(st, g)


@jit
def _delete_guess(st, g, e):
    if st.member[g, e]:
        _leave(st, g, e)
    n = st.ns[g]
    for t in range(n):
        if st.sol[g, t] == e:
            level = st.slev[g, t]
            for u in range(t, n - 1):
                st.sol[g, u] = st.sol[g, u + 1]
                st.slev[g, u] = st.slev[g, u + 1]
            st.ns[g] = n - 1
            _restate(st, g, level)
            if level < st.glowest[g]:
                st.glowest[g] = level
            break
    _certify(st, g)


# -- the guesses ----------------------------------------------------------------------------------------
@jit
def _order(st):
    """Active guess slots by exponent."""
    n = 0
    for g in range(st.ip[5]):
        if st.gon[g]:
            n += 1
    out = np.empty(n, dtype=np.int64)
    n = 0
    for g in range(st.ip[5]):
        if st.gon[g]:
            out[n] = g
            n += 1
    keys = np.empty(n, dtype=np.int64)
    for t in range(n):
        keys[t] = st.gi[out[t]]
    return out[np.argsort(keys, kind="mergesort")]


@jit
def best_guess(st):
    """The guess slot of the largest value (ties: the smaller exponent); -1 if none."""
    order = _order(st)
    best, arg = -1.0, -1
    for g in order:
        v = guess_value(st, g)
        if v > best:
            best, arg = v, g
    return arg


@jit
def _raise_bound(st, s):
    g = best_guess(st)
    best = guess_value(st, g) if g >= 0 else 0.0
    eps = st.fp[0]
    st.fp[2] = (2.0 * (1.0 + eps) / (1.0 - eps) * best + s) if best > 0.0 else 0.0


@jit
def _band(st):
    hi = st.fp[3]
    if not hi > 0.0:
        return 0, -1
    lb = math.log(st.fp[1])
    k = st.ip[3]
    top = int(math.ceil(math.log(k * hi) / lb - 1e-9))
    g = best_guess(st)
    best = guess_value(st, g) if g >= 0 else 0.0
    if st.fp[2] > 0.0:
        top = min(top, int(math.floor(math.log(st.fp[2]) / lb + 1e-9)) + 1)
    return int(math.floor(math.log(max(hi, best) / st.fp[1]) / lb + 1e-9)), top


@jit
def _new_guess(st, i):
    g = -1
    for s in range(st.ip[5]):
        if not st.gon[s]:
            g = s
            break
    if g < 0:
        raise ValueError("no free guess slot")
    T = st.ip[4]
    st.gon[g] = True
    st.gi[g] = i
    st.gdraws[g] = 0
    st.glowest[g] = T + 1
    st.gseed[g] = mix64(np.uint64(st.seed[0]) + np.uint64(GOLDEN) * np.uint64(i + 2 ** 31))
    st.nb[g] = 0
    st.b[g, :] = 0
    st.ns[g] = 0
    st.cst[g, :, :] = 0.0
    tau = _tau(st, g)
    n = 0
    for e in range(st.alive.shape[0]):  # every live element whose singleton reaches τ, in level 0's buffer
        if st.alive[e] and st.single[e] >= tau:
            st.P[g, n] = e
            st.pos[g, e] = n
            st.h[g, e] = -1
            st.hb[g, e] = 0
            st.member[g, e] = True
            n += 1
    st.nb[g] = n
    st.b[g, 1:] = n  # (all in bucket 0)
    construct(st, g, 0)


@jit
def _drop_guess(st, g):
    for t in range(st.nb[g]):
        x = st.P[g, t]
        st.member[g, x] = False
        st.h[g, x] = -1
        st.hb[g, x] = -1
    st.gon[g] = False
    st.nb[g] = 0


@jit
def _sync(st):
    lo, hi = _band(st)
    for g in _order(st):
        if st.gi[g] > hi + 3 or st.gi[g] < lo - 3:
            _drop_guess(st, g)
    for i in range(lo, hi + 1):
        have = False
        for g in range(st.ip[5]):
            if st.gon[g] and st.gi[g] == i:
                have = True
                break
        if not have:
            _new_guess(st, i)


@jit
def insert(st, e):
    """Inserts the item stored in slot e (its row, key already set)."""
    c0 = np.zeros(st.w.shape[0])
    s = _gain(st, e, c0)
    _raise_bound(st, s)
    st.single[e] = s
    st.alive[e] = True
    if s > st.fp[3]:
        st.fp[3] = s
    for g in _order(st):
        _insert_guess(st, g, e, s)
    _sync(st)
    _keep_best(st)


@jit
def delete(st, e):
    """Deletes the live item in slot e."""
    _raise_bound(st, 0.0)
    st.alive[e] = False
    s = st.single[e]
    if s >= st.fp[3]:  # the largest singleton left: found again
        top = 0.0
        for x in range(st.alive.shape[0]):
            if st.alive[x] and st.single[x] > top:
                top = st.single[x]
        st.fp[3] = top
    for g in _order(st):
        _delete_guess(st, g, e)
    _sync(st)
    _keep_best(st)


@jit
def _keep_best(st):
    """The best guess's solution into ``st.best`` (count last) and its value into fp[5]."""
    k = st.ip[3]
    g = best_guess(st)
    n = st.ns[g] if g >= 0 else 0
    for t in range(n):
        st.best[t] = st.sol[g, t]
    st.best[k] = n
    st.fp[5] = guess_value(st, g) if g >= 0 else 0.0


@jit
def solution(st, out):
    """The best guess's chosen elements into ``out``; returns (count, value)."""
    g = best_guess(st)
    if g < 0:
        return 0, 0.0
    n = st.ns[g]
    for t in range(n):
        out[t] = st.sol[g, t]
    return n, guess_value(st, g)


# -- the served solution ----------------------------------------------------------------------------------
@jit
def _served_value(st, served, n, sstate):
    state_of(st.ip[0], st.ip[2] != 0, st.rows, st.idx, st.cnt, served, n, sstate)
    return value(st.ip[0], st.ip[1], st.w, sstate)


@jit
def upkeep(st, served, nserved, sstate, sfp, inserted, deleted, improve, recourse):
    """The served set after an update (:class:`.learner.SubmodularSummary`): a deleted element
    leaves it; with ``improve``, an inserted element is taken while there is room and positive gain,
    and after a deletion the free places are filled greedily from the guesses' solutions; the best
    guess's solution replaces it whenever that is more than (1 + recourse) times better (or it is
    empty). ``sfp``: [its value, the improvement's oracle calls, the elements that entered or left
    in this update]."""
    k = st.ip[3]
    form, phik, sparse = st.ip[0], st.ip[1], st.ip[2] != 0
    n = nserved[0]
    prev = served[:n].copy()
    if deleted >= 0:
        j = -1
        for t in range(n):
            if served[t] == deleted:
                j = t
        if j >= 0:
            for t in range(j, n - 1):
                served[t] = served[t + 1]
            n -= 1
            sfp[0] = _served_value(st, served, n, sstate)
    if improve and n < k:
        if inserted >= 0:
            sfp[1] += 1.0
            if gain(form, phik, sparse, st.w, st.rows, st.idx, st.cnt, inserted, sstate) > 0.0:
                served[n] = inserted
                n += 1
                add(form, sparse, st.rows, st.idx, st.cnt, inserted, sstate)
                sfp[0] = value(form, phik, st.w, sstate)
        else:
            mark = np.zeros(st.alive.shape[0], dtype=np.bool_)
            for t in range(n):
                mark[served[t]] = True
            total = 0
            for g in range(st.ip[5]):
                if st.gon[g]:
                    total += st.ns[g]
            cand = np.empty(total, dtype=np.int64)
            m = 0
            for g in range(st.ip[5]):
                if st.gon[g]:
                    for t in range(st.ns[g]):
                        e = st.sol[g, t]
                        if not mark[e]:
                            mark[e] = True
                            cand[m] = e
                            m += 1
            if m:
                cand = np.sort(cand[:m])
                n, calls = greedy_complete(form, phik, sparse, st.w, st.rows, st.idx, st.cnt, cand, k, served, n,
                                           sstate)
                sfp[1] += calls
                sfp[0] = value(form, phik, st.w, sstate)
    ng = st.best[k]
    vg = st.fp[5]
    if vg > sfp[0] * (1.0 + recourse) or (vg > 0.0 and n == 0):
        for t in range(ng):
            served[t] = st.best[t]
        n = ng
        sfp[0] = _served_value(st, served, n, sstate)
    nserved[0] = n
    # The change: elements in one of (before, after) only.
    diff = 0
    for t in range(prev.shape[0]):
        inside = False
        for u in range(n):
            if served[u] == prev[t]:
                inside = True
        if not inside:
            diff += 1
    diff += n - (prev.shape[0] - diff)
    sfp[2] = diff


@jit
def insert_served(st, served, nserved, sstate, sfp, e, improve, recourse):
    """:func:`insert`, then :func:`upkeep` (one call from Python)."""
    insert(st, e)
    upkeep(st, served, nserved, sstate, sfp, e, -1, improve, recourse)


@jit
def delete_served(st, served, nserved, sstate, sfp, e, improve, recourse):
    """:func:`delete`, then :func:`upkeep`."""
    delete(st, e)
    upkeep(st, served, nserved, sstate, sfp, -1, e, improve, recourse)
