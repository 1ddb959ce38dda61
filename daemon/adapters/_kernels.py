"""Numba kernels of the adapters' encoders (options from :mod:`learners._numba`).

:func:`decisions` writes a run's bandit decisions as JSON from orjson's texts of their columns:
each column is dumped once for the whole run (orjson writes every number and string), and the
kernel only copies bytes between the template's fixed segments. ``tests/test_bandit_encoding.py``
checks the result against the decision dicts through orjson.
"""

from __future__ import annotations

import numpy as np

from learners._numba import jit

NL = 10  # b"\n": never in orjson's output (a newline in a string is escaped): it separates records
COMMA, CLOSE, QUOTE, BACKSLASH, MINUS, ZERO = 44, 93, 34, 92, 45, 48
TRUE = np.frombuffer(b"true", dtype=np.uint8)
FALSE = np.frombuffer(b"false", dtype=np.uint8)


@jit
def _put(out, w, src, a, b):
    for q in range(a, b):
        out[w] = src[q]
        w += 1
    return w


@jit
def _token(out, w, blob, i):
    """Copies the number (or null) at ``blob[i]`` up to the next ``,`` or ``]``; returns (w, i there)."""
    c = blob[i]
    while c != COMMA and c != CLOSE:
        out[w] = c
        w += 1
        i += 1
        c = blob[i]
    return w, i


@jit
def _string(out, w, blob, i):
    """Copies the JSON string body that starts after the quote at ``blob[i]``; returns (w, i past
    its closing quote)."""
    i += 1
    while True:
        c = blob[i]
        if c == BACKSLASH:
            out[w] = c
            out[w + 1] = blob[i + 1]
            w += 2
            i += 2
        elif c == QUOTE:
            return w, i + 1
        else:
            out[w] = c
            w += 1
            i += 1


@jit
def _bool(out, w, flag):
    if flag:
        return _put(out, w, TRUE, 0, 4)
    return _put(out, w, FALSE, 0, 5)


@jit
def _int(out, w, v):
    if v < 0:
        out[w] = MINUS
        w += 1
        v = -v
    start = w
    while True:
        out[w] = ZERO + v % 10
        w += 1
        v //= 10
        if v == 0:
            break
    a, b = start, w - 1
    while a < b:
        out[a], out[b] = out[b], out[a]
        a += 1
        b -= 1
    return w


@jit
def decisions(segs, seg_ends, ids, actions, action_ends, keys, key_ends, probs, prob, times,
              chosen, versions, explored, replay, out):
    """Writes n decisions, newline-separated, into ``out``; returns the length written.

    ``segs``: the template's 9 fixed segments one after another (ending at ``seg_ends``), around,
    in order, the fields id, action, prob, probs' members, model version, explored, time, replay.
    ``ids``: orjson's ``["id", ...]``; ``actions``/``keys``: each action's JSON text and its
    ``"name":`` (k of each, ending at ``action_ends``/``key_ends``); ``probs``: orjson's
    ``[[p, ...], ...]`` (n rows of k); ``prob``, ``times``: orjson's ``[v, ...]``.
    """
    n, k = chosen.shape[0], key_ends.shape[0]
    w = 0
    i_id, i_pr, i_p, i_t = 1, 2, 1, 1  # past the opening brackets
    for r in range(n):
        if r:
            out[w] = NL
            w += 1
        w = _put(out, w, segs, 0, seg_ends[0])
        w, i_id = _string(out, w, ids, i_id)
        i_id += 1  # past "," (or the closing "]")
        w = _put(out, w, segs, seg_ends[0], seg_ends[1])
        c = chosen[r]
        w = _put(out, w, actions, action_ends[c - 1] if c else 0, action_ends[c])
        w = _put(out, w, segs, seg_ends[1], seg_ends[2])
        w, i_p = _token(out, w, prob, i_p)
        i_p += 1
        w = _put(out, w, segs, seg_ends[2], seg_ends[3])
        for j in range(k):
            if j:
                out[w] = COMMA
                w += 1
            w = _put(out, w, keys, key_ends[j - 1] if j else 0, key_ends[j])
            w, i_pr = _token(out, w, probs, i_pr)
            i_pr += 1  # past "," or the row's "]"
        i_pr += 2  # past ",[" (or the final "]")
        w = _put(out, w, segs, seg_ends[3], seg_ends[4])
        w = _int(out, w, versions[r])
        w = _put(out, w, segs, seg_ends[4], seg_ends[5])
        w = _bool(out, w, explored[r])
        w = _put(out, w, segs, seg_ends[5], seg_ends[6])
        w, i_t = _token(out, w, times, i_t)
        i_t += 1
        w = _put(out, w, segs, seg_ends[6], seg_ends[7])
        w = _bool(out, w, replay[r])
        w = _put(out, w, segs, seg_ends[7], seg_ends[8])
    return w
