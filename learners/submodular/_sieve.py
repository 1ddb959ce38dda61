"""Numba kernels of Sieve-Streaming++, the streaming baseline of the family.

Sieve-Streaming++ (Kazemi, Mitrovic, Zadimoghaddam, Lattanzi and Karbasi, "Submodular Streaming in
All Its Glory: Tight Approximation, Minimum Memory and Low Adaptive Complexity", ICML 2019), as its
published pseudocode reads: Δ is the largest singleton value seen, LB the best sieve's value;
the sieves are the thresholds τ = (1+ε)^i with max(LB, Δ)/(2k) <= τ <= Δ, each holding a set of
at most k elements; an element joins every sieve that has room and where its marginal gain is at
least τ. The best sieve is a (1/2 - ε)-approximation of the stream's OPT. The algorithm is for
insertions only: the learner runs it again over the live items, in insertion order, when a deleted
item is in a sieve, was Δ's element or is in the set that reached LB (LB bounds the floor of the
thresholds: a bound from a set with a deleted item would no longer hold for the live items)
(:class:`~.learner.SubmodularSummary`).

State: ``sv`` = [Δ, LB, exponent of the first sieve, number of sieves, Δ's slot, size of LB's set];
per sieve t (ascending thresholds, ``T`` at most): ``ns[t]`` elements ``members[t, :ns[t]]``,
objective state ``states[t]`` and value ``vals[t]``; ``inside[s]``: the sieves slot s is in;
``lbm``: the set that reached LB; ``eps``: [ε] (checked when a checkpoint is restored).
"""

from __future__ import annotations

import math

import numpy as np

from .._numba import jit
from ._objectives import add, gain, value

DELTA, LB, LO, NT, ARG, NLB = 0, 1, 2, 3, 4, 5


def sieve_count(k: int, eps: float) -> int:
    """Sieves at most: thresholds (1+ε)^i spanning [Δ/(2k), Δ], and one more for rounding."""
    return int(math.ceil(math.log(2.0 * k) / math.log1p(eps))) + 2


@jit
def sieve_add(form, phik, sparse, w, rows, idx, cnt, e, k, eps, sv, ns, members, states, vals, inside, lbm, zero):
    """Streams slot ``e`` through the sieves; returns the oracle calls made."""
    T = ns.shape[0]
    calls = 1
    single = gain(form, phik, sparse, w, rows, idx, cnt, e, zero)
    if single > sv[DELTA]:
        sv[DELTA] = single
        sv[ARG] = e
    delta = sv[DELTA]
    if delta <= 0.0:
        return calls
    base = math.log1p(eps)
    lo = int(math.ceil(math.log(max(sv[LB], delta) / (2.0 * k)) / base - 1e-9))
    hi = int(math.floor(math.log(delta) / base + 1e-9))
    lo = max(lo, hi - T + 1)
    cur, nt = int(sv[LO]), int(sv[NT])
    if nt == 0:
        cur = lo
    drop = min(max(0, lo - cur), nt)  # sieves whose threshold fell below the floor
    for t in range(drop):
        for j in range(ns[t]):
            inside[members[t, j]] -= 1
    keep = nt - drop
    for t in range(keep):  # shifted down (ascending thresholds stay contiguous)
        u = t + drop
        ns[t] = ns[u]
        members[t, :ns[u]] = members[u, :ns[u]]
        states[t, :] = states[u, :]
        vals[t] = vals[u]
    first = cur + drop if keep else lo
    total = max(keep, hi - first + 1)
    for t in range(keep, total):  # new, empty sieves up to Δ
        ns[t] = 0
        states[t, :] = 0.0
        vals[t] = 0.0
    sv[LO], sv[NT] = first, total
    for t in range(total):
        if ns[t] >= k:
            continue
        tau = math.exp((first + t) * base)
        g = gain(form, phik, sparse, w, rows, idx, cnt, e, states[t])
        calls += 1
        if g >= tau:
            members[t, ns[t]] = e
            ns[t] += 1
            inside[e] += 1
            add(form, sparse, rows, idx, cnt, e, states[t])
            vals[t] = value(form, phik, w, states[t])
            if vals[t] > sv[LB]:
                sv[LB] = vals[t]
                lbm[:ns[t]] = members[t, :ns[t]]
                sv[NLB] = ns[t]
    return calls


@jit
def sieve_rerun(form, phik, sparse, w, rows, idx, cnt, order, k, eps, sv, ns, members, states, vals, inside, lbm,
                zero):
    """The sieves from scratch over the slots ``order``; returns the oracle calls made."""
    sv[:] = 0.0
    sv[ARG] = -1.0
    inside[:] = 0
    ns[:] = 0
    calls = 0
    for t in range(order.shape[0]):
        calls += sieve_add(form, phik, sparse, w, rows, idx, cnt, order[t], k, eps, sv, ns, members, states, vals,
                           inside, lbm, zero)
    return calls


@jit
def best_sieve(sv, vals):
    """The index of the best sieve (-1: none)."""
    nt = int(sv[NT])
    best, arg = -1.0, -1
    for t in range(nt):
        if vals[t] > best:
            best, arg = vals[t], t
    return arg


def new_sieves(k: int, eps: float, m: int, cap: int) -> dict[str, np.ndarray]:
    T = sieve_count(k, eps)
    sv = np.zeros(6)
    sv[ARG] = -1.0
    return {"sv": sv, "ns": np.zeros(T, np.int64), "members": np.zeros((T, k), np.int64),
            "states": np.zeros((T, m)), "vals": np.zeros(T), "inside": np.zeros(cap, np.int64),
            "lbm": np.zeros(k, np.int64), "eps": np.array([eps])}


def must_rerun(sv, inside, lbm, s: int) -> bool:
    """Whether deleting slot ``s`` needs the sieves run again (see the module docstring)."""
    return bool(inside[s]) or int(sv[ARG]) == s or s in lbm[:int(sv[NLB])].tolist()
