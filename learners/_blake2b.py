"""BLAKE2b (RFC 7693) with an 8-byte digest, as a Numba kernel over many short messages.

:func:`learners._hashing.event_keys` hashes every event id of a run; ``hashlib.blake2b`` costs about
1 µs per id from Python (an object per call), this kernel a fraction of that. The digest equals
``hashlib.blake2b(m, digest_size=8).digest()`` read little-endian (``tests/test_kernels_bandit.py``
checks it against hashlib on random and edge-case messages).
"""

from __future__ import annotations

import numpy as np

from ._numba import jit

IV = np.array([0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
               0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179], dtype=np.uint64)
SIGMA = np.array([
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3]], dtype=np.int64)
# The G function's word positions, per step of a round: columns, then diagonals.
LANES = np.array([[0, 4, 8, 12], [1, 5, 9, 13], [2, 6, 10, 14], [3, 7, 11, 15],
                  [0, 5, 10, 15], [1, 6, 11, 12], [2, 7, 8, 13], [3, 4, 9, 14]], dtype=np.int64)
PARAM = np.uint64(0x01010008)  # depth 1, fanout 1, no key, digest of 8 bytes


@jit
def _rotr(x, n):
    return (x >> np.uint64(n)) | (x << np.uint64(64 - n))


@jit
def _g(a, b, c, d, x, y):
    a = a + b + x
    d = _rotr(d ^ a, 32)
    c = c + d
    b = _rotr(b ^ c, 24)
    a = a + b + y
    d = _rotr(d ^ a, 16)
    c = c + d
    b = _rotr(b ^ c, 63)
    return a, b, c, d


@jit
def _compress(h, m, t, last):
    """One compression of the 16 little-endian words ``m`` into the state ``h``."""
    v0, v1, v2, v3, v4, v5, v6, v7 = h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]
    v8, v9, v10, v11, v12, v13, v14, v15 = IV[0], IV[1], IV[2], IV[3], IV[4], IV[5], IV[6], IV[7]
    v12 ^= np.uint64(t)
    if last:
        v14 = ~v14
    for r in range(12):
        s = SIGMA[r]
        v0, v4, v8, v12 = _g(v0, v4, v8, v12, m[s[0]], m[s[1]])
        v1, v5, v9, v13 = _g(v1, v5, v9, v13, m[s[2]], m[s[3]])
        v2, v6, v10, v14 = _g(v2, v6, v10, v14, m[s[4]], m[s[5]])
        v3, v7, v11, v15 = _g(v3, v7, v11, v15, m[s[6]], m[s[7]])
        v0, v5, v10, v15 = _g(v0, v5, v10, v15, m[s[8]], m[s[9]])
        v1, v6, v11, v12 = _g(v1, v6, v11, v12, m[s[10]], m[s[11]])
        v2, v7, v8, v13 = _g(v2, v7, v8, v13, m[s[12]], m[s[13]])
        v3, v4, v9, v14 = _g(v3, v4, v9, v14, m[s[14]], m[s[15]])
    h[0] ^= v0 ^ v8
    h[1] ^= v1 ^ v9
    h[2] ^= v2 ^ v10
    h[3] ^= v3 ^ v11
    h[4] ^= v4 ^ v12
    h[5] ^= v5 ^ v13
    h[6] ^= v6 ^ v14
    h[7] ^= v7 ^ v15


@jit
def blake2b_8(blob, ends, out):
    """``out[i]`` = the 8-byte BLAKE2b digest (little-endian) of ``blob[ends[i-1]:ends[i]]``
    (a little-endian machine: the message words are read through a view)."""
    h = np.empty(8, dtype=np.uint64)
    m = np.zeros(16, dtype=np.uint64)
    block = m.view(np.uint8)
    start = 0
    for i in range(ends.shape[0]):
        end = ends[i]
        for j in range(8):
            h[j] = IV[j]
        h[0] ^= PARAM
        p = start
        while True:
            n = min(end - p, 128)
            for j in range(n):
                block[j] = blob[p + j]
            for j in range(n, 128):
                block[j] = 0
            p += n
            if p == end:  # the last block (the only one of an empty message) is marked
                _compress(h, m, p - start, True)
                break
            _compress(h, m, p - start, False)
        out[i] = h[0]
        start = end
