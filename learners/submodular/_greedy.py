"""Numba kernels of the from-scratch algorithms: lazy greedy (Minoux) over a set of live slots.

Lazy greedy keeps a max-heap of stale upper bounds on each element's marginal gain (submodularity:
a gain only shrinks as the set grows); the top element's gain is recomputed, and it is taken when
its fresh gain is still at least the next bound. Same output as plain greedy (ties: the lower
position in ``live``), far fewer oracle calls. Each :func:`_objectives.gain` call is counted.
"""

from __future__ import annotations

import numpy as np

from .._numba import jit
from ._objectives import add, gain, value


@jit
def _better(bound, pos, a, b):
    """Heap order: the larger bound first, then the lower position."""
    return bound[a] > bound[b] or (bound[a] == bound[b] and pos[a] < pos[b])


@jit
def _sift_down(heap, size, bound, pos, at):
    while True:
        left = 2 * at + 1
        if left >= size:
            return
        best = left
        right = left + 1
        if right < size and _better(bound, pos, heap[right], heap[left]):
            best = right
        if _better(bound, pos, heap[best], heap[at]):
            heap[best], heap[at] = heap[at], heap[best]
            at = best
        else:
            return


@jit
def lazy_greedy(form, phik, sparse, w, rows, idx, cnt, live, k, c, out):
    """Greedy over the slots ``live`` for at most ``k`` elements with positive gain. ``c``: a work
    state (length m, overwritten: the state of the result); ``out``: the chosen slots in order.
    Returns (chosen count, f of the result, oracle calls)."""
    n = live.shape[0]
    c[:] = 0.0
    bound = np.empty(n)
    pos = np.arange(n)
    stamp = np.zeros(n, dtype=np.int64)  # the set size a bound was computed at
    calls = 0
    for e in range(n):
        bound[e] = gain(form, phik, sparse, w, rows, idx, cnt, live[e], c)
        calls += 1
    heap = np.arange(n)
    for at in range(n // 2 - 1, -1, -1):
        _sift_down(heap, n, bound, pos, at)
    size = n
    chosen = 0
    while chosen < k and size > 0:
        top = heap[0]
        if stamp[top] == chosen:  # fresh: no other bound can beat it
            if bound[top] <= 0.0:
                break
            out[chosen] = live[top]
            add(form, sparse, rows, idx, cnt, live[top], c)
            chosen += 1
            size -= 1
            heap[0] = heap[size]
            _sift_down(heap, size, bound, pos, 0)
            continue
        bound[top] = gain(form, phik, sparse, w, rows, idx, cnt, live[top], c)
        calls += 1
        stamp[top] = chosen
        _sift_down(heap, size, bound, pos, 0)
    return chosen, value(form, phik, w, c), calls


@jit
def greedy_complete(form, phik, sparse, w, rows, idx, cnt, cand, k, served, nserved, c):
    """Completes ``served[:nserved]`` (its state in ``c``) greedily from the slots ``cand`` (not in
    it) up to k elements of positive gain (plain greedy: the candidate pools are small). Returns
    (the new count, oracle calls)."""
    n = cand.shape[0]
    taken = np.zeros(n, dtype=np.bool_)
    calls = 0
    while nserved < k:
        best, arg = 0.0, -1
        for t in range(n):
            if taken[t]:
                continue
            g = gain(form, phik, sparse, w, rows, idx, cnt, cand[t], c)
            calls += 1
            if g > best:
                best, arg = g, t
        if arg < 0:
            break
        taken[arg] = True
        served[nserved] = cand[arg]
        nserved += 1
        add(form, sparse, rows, idx, cnt, cand[arg], c)
    return nserved, calls
