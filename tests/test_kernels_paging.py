"""Paging kernels against obvious references, on seeded random and edge-case request streams."""

from __future__ import annotations

import numpy as np
import pytest

import learners
from learners.paging import PagingCache, belady
from learners.paging import _table as T

from . import naive


def stream(seed, n=400, universe=30, p_delete=0.05):
    rng = np.random.default_rng(seed)
    keys = (rng.zipf(1.2, size=n) % universe).astype(np.int64) - universe // 2  # negative keys too
    ops = (rng.random(n) < p_delete).astype(np.int64)
    bits = (rng.random(n) < 0.5).astype(np.int64)
    return keys, ops, bits


@pytest.mark.parametrize("policy", ["lru", "fifo", "sieve", "marker", "ftp-discard"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3, 8])
def test_policies_match_the_references(policy, seed, k):
    keys, ops, bits = stream(seed)
    c = PagingCache(policy, capacity=k, seed=seed)
    outs = [c.process({"key": keys[i:i + 37], "op": ops[i:i + 37], "bit": bits[i:i + 37]})
            for i in range(0, len(keys), 37)]  # batch boundaries do not matter
    hit = np.concatenate([o["hit"] for o in outs]).tolist()
    ev = [int(e) if x else None for o in outs for e, x in zip(o["evicted"], o["evicts"], strict=True)]
    ref_hit, ref_ev = naive.cache_policy(policy, keys, ops, k, seed=seed, bits=bits)
    assert hit == ref_hit
    assert ev == ref_ev
    assert len(c.contents()) <= k and c.metrics()["misses"] == ref_hit.count(0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("k", [1, 2, 5, 12])
def test_belady_is_optimal_and_exact_bits_make_ftp_optimal(seed, k):
    keys, _, _ = stream(seed, n=300, p_delete=0.0)
    r = belady(keys, k)
    assert r["misses"] == naive.belady_misses(keys.tolist(), k)
    # Consistency: following exact discard bits faults exactly as often as Belady.
    ftp = PagingCache("ftp-discard", capacity=k).process({"key": keys, "bit": r["discard_bit"]})
    assert int((ftp["hit"] == 0).sum()) == r["misses"]
    lru = PagingCache("lru", capacity=k).process({"key": keys})
    assert r["misses"] <= int((lru["hit"] == 0).sum())


def test_hash_table_against_a_dict():
    rng = np.random.default_rng(5)
    tk, tv = T.new_table(64)
    ref = {}
    for step in range(5000):
        key = int(rng.integers(-100, 100))
        if rng.random() < 0.4:
            assert T.ht_del(tk, tv, key) == ref.pop(key, -1)
        elif len(ref) < 64 or key in ref:
            T.ht_put(tk, tv, key, step)
            ref[key] = step
        for q in (key, key + 1):
            assert T.ht_get(tk, tv, q) == ref.get(q, -1)
    assert sorted(k for k in tk.tolist() if k != T.EMPTY) == sorted(ref)


def test_edge_cases():
    c = PagingCache("lru", capacity=1)
    out = c.process({"key": np.array([7, 7, 8, 7])})
    assert out["hit"].tolist() == [0, 1, 0, 0] and out["evicted"][out["evicts"]].tolist() == [7, 8]
    assert c.process({"key": np.array([], dtype=np.int64)})["hit"].shape == (0,)
    out = c.process({"key": np.array([9, 7]), "op": np.array([1, 1])})  # deleting absent and present keys
    assert out["hit"].tolist() == [-1, -1] and len(c.contents()) == 0
    assert belady(np.array([], dtype=np.int64), 3)["misses"] == 0
    with pytest.raises(ValueError, match="allowed"):
        PagingCache("lfu")


def test_registered_under_paging_names():
    assert {"paging-lru", "paging-fifo", "paging-sieve", "paging-marker", "paging-ftp-discard"} <= set(learners.names())
