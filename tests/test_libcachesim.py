"""eddy's cache shadows against libCacheSim on the tests/data trace slice, request by request.

LRU, FIFO, ARC (Megiddo & Modha, FAST'03), SIEVE (Zhang et al., NSDI'24), S3-FIFO (Yang et al.,
SOSP'23, as libCacheSim's S3FIFO.c runs it) and Belady are the same definitions in both, so every
request's hit or miss must agree, at cache sizes of 1%, 5% and 10% of the slice's unique keys and
a small cache of 16 (S3-FIFO from 20 pages up: below, libCacheSim's small queue of ⌊0.1·k⌋ ≤ 1 page
admits nothing). libCacheSim is driven through its Python API one request at a time
(``cache.get``); its Belady reads each request's next access time.
"""

from __future__ import annotations

import numpy as np
import pytest

from learners.paging import PagingCache, belady

from .test_kernels_paging import real_trace

lcs = pytest.importorskip("libcachesim")

NO_NEXT = 2**63 - 1  # libCacheSim's "never requested again"


def libcachesim_hits(policy, keys, k, next_use=None):
    cache = getattr(lcs, policy)(cache_size=k)
    n = len(keys)
    hits = []
    for i, key in enumerate(keys.tolist()):
        nxt = -2 if next_use is None else int(next_use[i]) if next_use[i] < n else NO_NEXT
        hits.append(int(cache.get(lcs.Request(obj_size=1, obj_id=key, clock_time=i, next_access_vtime=nxt))))
    return hits


@pytest.fixture(scope="module")
def keys():
    return real_trace()


@pytest.mark.parametrize("size", ["1%", "5%", "10%", "16"])
def test_hits_equal_libcachesim_request_by_request(keys, size):
    unique = len(np.unique(keys))
    k = 16 if size == "16" else unique * int(size[:-1]) // 100
    assert (len(keys), unique) == (20000, 6376)
    misses = {}
    pairs = [("lru", "LRU"), ("fifo", "FIFO"), ("arc", "ARC"), ("sieve", "Sieve")] + ([("s3fifo", "S3FIFO")] if k >= 20 else [])
    for ours, peer in pairs:
        hit = PagingCache(ours, capacity=k).process({"key": keys})["hit"].tolist()
        assert hit == libcachesim_hits(peer, keys, k), (ours, k)
        misses[ours] = hit.count(0)
    opt = belady(keys, k)
    assert opt["hit"].tolist() == libcachesim_hits("Belady", keys, k, opt["next_use"]), k
    misses["belady"] = opt["misses"]
    expected = {  # the miss counts both give (cold misses included)
        16: {"lru": 16310, "fifo": 16409, "arc": 16278, "sieve": 16632, "belady": 13476},
        63: {"lru": 14358, "fifo": 14563, "arc": 14286, "sieve": 14515, "s3fifo": 14585, "belady": 11149},
        318: {"lru": 11511, "fifo": 11961, "arc": 11046, "sieve": 11046, "s3fifo": 10849, "belady": 8288},
        637: {"lru": 10110, "fifo": 10655, "arc": 9675, "sieve": 9732, "s3fifo": 9609, "belady": 7301},
    }
    assert misses == expected[k]
