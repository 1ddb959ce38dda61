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


@pytest.mark.parametrize("policy", ["lru", "fifo", "sieve", "s3fifo", "arc", "marker", "ftp-discard",
                                    "marker-discard"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3, 8])
def test_policies_match_the_references(policy, seed, k):
    keys, ops, bits = stream(seed)
    c = PagingCache(policy, capacity=k, seed=seed)
    outs = [c.process({"key": keys[i:i + 37], "op": ops[i:i + 37], "bit": bits[i:i + 37]})
            for i in range(0, len(keys), 37)]  # batch boundaries do not matter
    hit = np.concatenate([o["hit"] for o in outs]).tolist()
    ev = [int(e) if x else None for o in outs for e, x in zip(o["evicted"], o["evicts"], strict=True)]
    if policy == "s3fifo":
        ref_hit, ref_ev = naive.s3fifo(keys, ops, k)
    elif policy == "arc":
        ref_hit, ref_ev = naive.arc(keys, ops, k)
    else:
        ref_hit, ref_ev = naive.cache_policy(policy, keys, ops, k, seed=seed, bits=bits)
    assert hit == ref_hit
    assert ev == ref_ev
    assert len(c.view()["keys"]) <= k and c.metrics()["misses"] == ref_hit.count(0)


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
    assert out["hit"].tolist() == [-1, -1] and len(c.view()["keys"]) == 0
    assert belady(np.array([], dtype=np.int64), 3)["misses"] == 0
    with pytest.raises(ValueError, match="allowed"):
        PagingCache("lfu")


def test_registered_under_paging_names():
    assert {"paging-lru", "paging-fifo", "paging-sieve", "paging-s3fifo", "paging-arc", "paging-marker", "paging-ftp-discard",
            "paging-marker-discard", "paging-robust-discard"} <= set(learners.names())


def adversarial(seed, k, n=3000):
    """Sequences that hurt online policies: cycles over k+1 pages, scans, and mixtures."""
    rng = np.random.default_rng(seed)
    cyc = np.arange(n) % (k + 1)
    scan = np.where(rng.random(n) < 0.5, rng.integers(0, k // 2 + 1, n), 1000 + np.arange(n))
    mix = np.where(rng.random(n) < 0.7, cyc, rng.integers(0, 3 * k, n))
    return [cyc.astype(np.int64), scan.astype(np.int64), mix.astype(np.int64)]


def drifting(seed, k, n=3000, stay=8):
    """A working set of k pages that slides by one page every ``stay * k`` requests, requests
    uniform within it: long phases, so the marking and competitive bounds are far below n."""
    rng = np.random.default_rng(seed)
    return (np.arange(n) // (stay * k) + rng.integers(0, k, n)).astype(np.int64)


def per_phase_misses(keys, k, hit):
    """Marker phases of the sequence (blocks of k distinct pages) and the misses in each."""
    from learners.paging import phase_bits

    phase = phase_bits(keys, k)["phase"]
    return phase, np.bincount(phase, weights=(np.asarray(hit) == 0)).astype(np.int64)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k", [4, 16])
def test_robustness_with_every_bit_wrong(seed, k):
    """With every discard bit inverted, the marking variant is still a marking algorithm: its
    phases are the sequence's Marker phases, it faults at most k times in each (once per distinct
    page), so at most k * phases; OPT and randomized Marker fault at least once in every phase
    after the first, so also at most k * (OPT + 1) and k * (Marker + 1). Following the wrong bits
    unprotected can be far worse. On a cycle over k+1 pages every bound is >= n (a marking
    algorithm may fault on every request there), so the bounds are checked on sequences with long
    phases, where each is below n, and the per-phase bound on scans and mixtures too."""
    _, scan, mix = adversarial(seed, k)
    for keys, long_phases in ((drifting(seed, k, stay=4), True), (drifting(seed + 10, k, stay=8), True),
                              (scan, False), (mix, False)):
        n = len(keys)
        r = belady(keys, k)
        c = PagingCache("marker-discard", capacity=k)
        hit = c.process({"key": keys, "bit": 1 - r["discard_bit"]})["hit"]
        misses = int((hit == 0).sum())
        phase, in_phase = per_phase_misses(keys, k, hit)
        phases = int(phase[-1]) + 1
        assert c.metrics()["phase"] + 1 == phases
        assert in_phase.max() <= k and misses == in_phase.sum()
        assert k * phases < n  # non-vacuous
        assert misses <= k * phases
        if long_phases:
            marker = int((PagingCache("marker", capacity=k, seed=seed).process({"key": keys})["hit"] == 0).sum())
            assert k * (r["misses"] + 1) < n and k * (marker + 1) < n  # non-vacuous
            assert misses <= k * (r["misses"] + 1) and misses <= k * (marker + 1)
            ftp = PagingCache("ftp-discard", capacity=k).process({"key": keys, "bit": 1 - r["discard_bit"]})
            assert int((ftp["hit"] == 0).sum()) > k * phases  # the same wrong bits, unprotected
    cyc = adversarial(seed, k)[0]
    r = belady(cyc, k)
    ftp = PagingCache("ftp-discard", capacity=k).process({"key": cyc, "bit": 1 - r["discard_bit"]})
    assert int((ftp["hit"] == 0).sum()) > 2 * r["misses"]  # unprotected: wrong bits cost a lot


@pytest.mark.parametrize("k", [5, 20])
def test_smoothness_misses_grow_at_most_linearly_with_wrong_bits(k):
    """Following the bits, misses <= OPT + (wrong "safe" bits) + (k-1) (wrong "keep" bits).

    Proof for this FtP (exact bit 1 iff Belady evicts the page before its next request): a miss
    where Belady hits is on a page p whose latest bit is exactly 0 and that FtP evicted since. Either
    that bit was wrongly 1 (one miss per such bit), or FtP evicted p from the "keep" list, at a fault
    with no "safe" page cached. At such a fault at most k-1 cached pages are kept by Belady (it holds
    them and the requested page, or evicts one of its own), so some cached page w has a wrong "keep"
    bit; charge the fault to the oldest such w. The evicted page is the least recently requested,
    older than w, so it was cached when w's bit came: at most k-1 charges per wrong "keep" bit.

    The bound is checked where it is below n: mixed flips at small rates, and one-sided flips
    (only wrong "safe", bound OPT + 1 per flip; only wrong "keep", OPT + (k-1) per flip)."""
    keys, _, _ = stream(11, n=6000, universe=200, p_delete=0.0)
    n = len(keys)
    r = belady(keys, k)
    exact = r["discard_bit"]
    rng = np.random.default_rng(3)
    cases = [(rate, np.ones(n, dtype=bool)) for rate in (0.0, 0.003, 0.01, 0.03)]
    cases += [(0.1, exact == 0), (0.3, exact == 0), (0.01, exact == 1), (0.03, exact == 1)]
    for rate, where in cases:
        flips = (rng.random(n) < rate) & where
        bits = np.where(flips, 1 - exact, exact)
        ftp = PagingCache("ftp-discard", capacity=k).process({"key": keys, "bit": bits})
        misses = int((ftp["hit"] == 0).sum())
        wrong_safe = int((flips & (exact == 0)).sum())
        wrong_keep = int((flips & (exact == 1)).sum())
        bound = r["misses"] + wrong_safe + (k - 1) * wrong_keep
        assert bound < n, (rate, bound)  # non-vacuous
        assert misses <= bound  # no wrong bit: exactly OPT
        if rate == 0.0:
            assert misses == r["misses"]


def race_bound(best, k, switches, margin, m0, stretch_faults):
    """Follow-the-leader with a doubling margin (learners.paging._kernels.leader_after): misses <=
    best + switches * k + sum over epochs of (margin of the epoch + D), where best is the fewest
    faults of a shadow and D the most faults of the leader in one stretch between checks. Within an
    epoch the real cache faults at most as often as its leader, plus k after a switch (the leader's
    pages that it lacks only decrease, from at most k); the leader, the best shadow when chosen,
    ends the epoch at most its margin plus its faults since the last check above the best.
    Margins m0, 2 m0, ...: their sum is 2 * margin_now - m0."""
    assert margin == m0 * 2**switches  # the margin doubles at each switch
    return best + switches * k + 2 * margin - m0 + (switches + 1) * stretch_faults


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [3, 10])
def test_robust_discard_follows_the_better_of_predictions_and_lru(seed, k):
    """Consistent with exact bits (= OPT), robust with wrong ones (within :func:`race_bound` of the
    better shadow), and in between with noisy ones."""
    keys, ops, _ = stream(seed, n=3000, universe=12 * k, p_delete=0.0)
    r = belady(keys, k)
    rng = np.random.default_rng(seed)
    noisy = np.where(rng.random(len(keys)) < 0.2, 1 - r["discard_bit"], r["discard_bit"])
    for bits in (r["discard_bit"], 1 - r["discard_bit"], noisy, np.zeros_like(noisy), np.ones_like(noisy)):
        c = PagingCache("robust-discard", capacity=k, switch_every=1)
        outs = [c.process({"key": keys[i:i + 500], "bit": bits[i:i + 500]}) for i in range(0, len(keys), 500)]
        misses = sum(int((o["hit"] == 0).sum()) for o in outs)
        ftp = int((PagingCache("ftp-discard", capacity=k).process({"key": keys, "bit": bits})["hit"] == 0).sum())
        lru = int((PagingCache("lru", capacity=k).process({"key": keys})["hit"] == 0).sum())
        switches, margin = int(c.metrics()["switches"]), int(c.metrics()["switch_margin"])
        assert [c.metrics()["shadow_misses_ftp"], c.metrics()["shadow_misses_lru"]] == [ftp, lru]
        assert c.metrics()["stretch_faults"] <= 1  # (a check at every request)
        bound = race_bound(min(ftp, lru), k, switches, margin, max(1, k // 16), 1)
        assert bound < len(keys)  # non-vacuous
        assert misses <= bound
        assert len(c.view()["keys"]) <= k
        if bits is r["discard_bit"]:
            assert misses == r["misses"]  # exact bits: optimal
    # Deletes keep the real cache and both shadows in step.
    keys, ops, bits = stream(seed, n=1000, universe=4 * k)
    c = PagingCache("robust-discard", capacity=k, switch_every=1)
    out = c.process({"key": keys, "op": ops, "bit": bits})
    present = set(c.view()["keys"].tolist())
    alive = {}
    for key, op in zip(keys.tolist(), ops.tolist(), strict=True):
        alive[key] = op == 0
    assert all(alive[q] for q in present) and (out["hit"][ops == 1] == -1).all()


def real_trace():
    import lzma
    import os

    path = os.path.join(os.path.dirname(__file__), "data", "cache2k_web12_first20000.txt.xz")
    with lzma.open(path, "rt") as f:
        return np.array([int(line) for line in f if line.strip()], dtype=np.int64)


@pytest.mark.parametrize("k", [64, 640])
def test_on_a_real_trace_slice(k):
    """cache2k web12 (CC BY 4.0), first 20,000 requests: the kernels agree with the references
    request by request, Belady is optimal, exact bits give OPT, and the order LRU > OPT holds."""
    keys = real_trace()
    ops = np.zeros(len(keys), dtype=np.int64)
    for policy, ref in (("lru", lambda: naive.cache_policy("lru", keys, ops, k)),
                        ("sieve", lambda: naive.cache_policy("sieve", keys, ops, k)),
                        ("s3fifo", lambda: naive.s3fifo(keys, ops, k)),
                        ("arc", lambda: naive.arc(keys, ops, k))):
        out = PagingCache(policy, capacity=k).process({"key": keys})
        assert out["hit"].tolist() == ref()[0], policy
    r = belady(keys, k)
    lru = int((PagingCache("lru", capacity=k).process({"key": keys})["hit"] == 0).sum())
    assert r["misses"] < lru
    ftp = PagingCache("ftp-discard", capacity=k).process({"key": keys, "bit": r["discard_bit"]})
    assert int((ftp["hit"] == 0).sum()) == r["misses"]


def switches_of_the_rule(fa, fb, margin, doubling):
    """Switches of the follow-the-leader rule over two shadows' faults (checked at every request)."""
    faults, lead, switches = [0, 0], 0, 0
    for x, y in zip(fa.tolist(), fb.tolist(), strict=True):
        faults[0] += x
        faults[1] += y
        if faults[lead] > faults[1 - lead] + margin:
            lead, switches, margin = 1 - lead, switches + 1, margin * (2 if doubling else 1)
    return switches


def test_robust_discard_switches_only_logarithmically_often():
    """Bits exact for 2000 requests, then inverted for 1300, and again: FtP leads, then LRU, in
    turn, so a fixed-margin combiner switches back and forth. With the doubling margin, the leader
    trails the other shadow by more than m0 * 2^(j-1) at switch j, having led it at switch j-1, so
    the difference of their fault counts moves by more than that in between: m0 (2^S - 1) is below
    its total variation V (requests where exactly one shadow faults), S <= log2(V / m0 + 1)."""
    k = 16
    keys, _, _ = stream(4, n=40_000, universe=10 * k, p_delete=0.0)
    n, m0 = len(keys), max(1, k // 16)
    r = belady(keys, k)
    inverted = np.arange(n) % 3300 >= 2000
    bits = np.where(inverted, 1 - r["discard_bit"], r["discard_bit"])
    c = PagingCache("robust-discard", capacity=k, switch_every=1)
    misses = int((c.process({"key": keys, "bit": bits})["hit"] == 0).sum())
    fa = PagingCache("ftp-discard", capacity=k).process({"key": keys, "bit": bits})["hit"] == 0
    fb = PagingCache("lru", capacity=k).process({"key": keys})["hit"] == 0
    switches, margin = int(c.metrics()["switches"]), int(c.metrics()["switch_margin"])
    assert switches == switches_of_the_rule(fa, fb, m0, doubling=True)
    bound = np.log2((fa != fb).sum() / m0 + 1)
    assert bound < switches_of_the_rule(fa, fb, m0, doubling=False)  # non-vacuous: a fixed margin exceeds it
    assert switches <= bound
    bound = race_bound(min(fa.sum(), fb.sum()), k, switches, margin, m0, 1)
    assert bound < n  # non-vacuous
    assert misses <= bound


def clean_pages(keys, phase):
    """Pages per phase (sets, in order) and the clean ones of each: requested in the phase but not
    in the one before (every page of the first phase is clean)."""
    pages = [set() for _ in range(int(phase[-1]) + 1)]
    for key, ph in zip(keys.tolist(), phase.tolist(), strict=True):
        pages[ph].add(key)
    return pages, [len(p - (pages[i - 1] if i else set())) for i, p in enumerate(pages)]


@pytest.mark.parametrize("trace,k,twice_opt_below_n", [("stream", 10, False), ("stream", 32, True), ("stream", 64, True),
                                                       ("real", 64, False), ("real", 256, True), ("real", 640, True)])
def test_exact_phase_bits_are_within_twice_opt(trace, k, twice_opt_below_n):
    """The phase setup: with exact "not needed next phase" bits, the marking variant faults exactly
    on the clean pages of each phase: at a phase's start it holds the previous phase's k pages, of
    which those not requested in this phase (bit 1, as many as its clean pages at least) go first,
    so no page requested later in the phase is evicted. OPT pays at least the clean pages of phase
    i over phases i-1 and i (k + clean distinct pages), so misses <= 2 OPT + k; that bound is
    checked where it is below n (not so at k = 10 on the stream, 64 on the trace). Also:
    the phases are Marker's (k distinct pages each), and randomized Marker pays the clean pages too."""
    from learners.paging import phase_bits

    keys = stream(0, n=20000, universe=300, p_delete=0.0)[0] if trace == "stream" else real_trace()
    n = len(keys)
    r = belady(keys, k)
    pb = phase_bits(keys, k)
    pages, clean = clean_pages(keys, pb["phase"])
    assert all(len(p) == k for p in pages[:-1]) and len(pages[-1]) <= k
    c = PagingCache("marker-discard", capacity=k)
    misses = int((c.process({"key": keys, "bit": pb["phase_bit"]})["hit"] == 0).sum())
    assert misses == sum(clean) and c.metrics()["phase"] + 1 == len(pages)
    marker = int((PagingCache("marker", capacity=k).process({"key": keys})["hit"] == 0).sum())
    assert misses < marker
    assert (2 * r["misses"] + k < n) == twice_opt_below_n  # non-vacuous where checked
    if twice_opt_below_n:
        assert misses <= 2 * r["misses"] + k


def test_learned_predictor_is_causal():
    """The bits and evictions for the first n requests do not change when later requests change."""
    keys = real_trace()[:6000]
    k, cut = 64, 3000
    a = PagingCache("learned-discard", capacity=k, history_cap=2000).process({"key": keys})
    changed = keys.copy()
    changed[cut:] = np.random.default_rng(0).permutation(changed[cut:]) + 10_000_000
    b = PagingCache("learned-discard", capacity=k, history_cap=2000).process({"key": changed})
    for col in ("hit", "evicts", "evicted"):
        assert a[col][:cut].tolist() == b[col][:cut].tolist()


@pytest.mark.parametrize("k", [1, 2, 5, 16, 40])
def test_learned_labels_are_beladys_decisions_in_hindsight(k):
    """OPTgen keeps exactly Belady's hits: where every reuse gap lies inside the label window, the
    "keep" labels (true and false negatives) number Belady's hits, and the labels revealed are
    every request but the last of each key (those still pending at the end)."""
    from learners.paging import _predict as P

    rng = np.random.default_rng(k)
    u = 2 * k + 3  # blocks of every key once and half as many repeats, shuffled: every gap < 3u
    keys = np.concatenate([rng.permutation(np.concatenate([np.arange(u), rng.integers(0, u, u // 2)]))
                           for _ in range(4000 // u)]).astype(np.int64)
    last, gaps = {}, []
    for t, key in enumerate(keys.tolist()):
        gaps.append(t - last.get(key, t))
        last[key] = t
    assert max(gaps) < P.WINDOW * k  # every label comes from OPTgen's decision, none from the window
    n = len(keys)
    st = P.new_state(100_000, 200_000, k)
    prob, horizon = np.empty(n), np.empty(n, dtype=np.int64)
    P.predict_run(keys, np.zeros(n, dtype=np.int64), np.ones(1, dtype=np.int64), k, k - 1, 2.0,
                  *(st[name] for name in P.ORDER), prob, horizon)
    tn, fn, fp, tp = (int(v) for v in st["conf"])
    hits = n - belady(keys, k)["misses"]
    assert hits > 0 and tn + fp == hits
    assert tn + fn + fp + tp == n - len(np.unique(keys))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k", [1, 4, 9])
def test_ftp_with_grace_matches_the_reference(seed, k):
    from learners.paging import _kernels as K
    from learners.paging.cache import _FRAME, _frames

    keys, ops, bits = stream(seed, n=600)
    grace = np.random.default_rng(seed).integers(0, 40, len(keys))
    fr = _frames("f", k)
    hit, ev = np.empty(len(keys), dtype=np.int8), np.empty(len(keys), dtype=np.int64)
    K.ftp_discard_run(keys, ops, None, k, bits, grace, k, *(fr[f"f/{n}"] for n in _FRAME), None,
                      np.zeros(k, dtype=np.int64), hit, ev, None, None, None)
    ref_hit, ref_ev = naive.ftp_grace(keys, ops, k, bits, grace)
    assert np.where(hit == -2, -1, hit).tolist() == ref_hit  # (-2: a delete of a cached key, next test)
    assert [int(e) if e != T.EMPTY else None for e in ev] == ref_ev


@pytest.mark.parametrize("cap", [5, 10_000])
def test_predictor_matches_the_reference(cap):
    """The predictor kernel against its plain-Python twin: probabilities, horizons, confusion counts
    (with and without forgetting keys at the history cap)."""
    from learners.paging import _predict as P

    keys, ops, _ = stream(7, n=3000, universe=80)
    n, k = len(keys), 4
    st = P.new_state(cap, 20_000, k)
    prob, horizon = np.empty(n), np.empty(n, dtype=np.int64)
    P.predict_run(keys, ops, np.ones(1, dtype=np.int64), k, k - 1, 2.0, *(st[name] for name in P.ORDER), prob,
                  horizon)
    ref_p, ref_h, ref_conf = naive.predictor(keys, ops, k, 2.0, cap)
    assert np.allclose(prob, ref_p, rtol=0, atol=1e-9)
    assert horizon.tolist() == ref_h and st["conf"].tolist() == ref_conf
    assert len(np.unique(prob.round(6))) > 20 and sum(ref_conf) > (n // 2 if cap > n else 100)  # labels came in


def shadow_refs(keys, ops, k, bits_by_grace):
    return [(h, e) for h, e in (naive.ftp_grace(keys, ops, k, b, g) for b, g in bits_by_grace)]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k", [2, 6])
@pytest.mark.parametrize("threads", [1, 2])
def test_learned_discard_matches_the_composed_references(seed, k, threads):
    """learned-discard = the predictor's bits, the FtP and learned S3-FIFO shadows over them, LRU,
    ARC and S3-FIFO shadows and the follow-the-leader real cache with its adaptive checks, each
    from its plain reference, request by request, whatever the batch boundaries."""
    CHUNK = 64
    keys, ops, _ = stream(seed, n=2500 * threads, universe=10 * k)  # threads=2: stretches of 512+ go to 2 threads
    c = PagingCache("learned-discard", capacity=k, history_cap=10_000, switch_every=CHUNK * threads * 8,
                    threads=threads)
    CHUNK = c.switch_every
    step = 333 if threads == 1 else 1700
    outs = [c.process({"key": keys[i:i + step], "op": ops[i:i + step]}) for i in range(0, len(keys), step)]
    prob, horizon, _ = naive.predictor(keys, ops, k, c.reach, 10_000)
    prob, horizon = np.array(prob), np.array(horizon)
    ftp = shadow_refs(keys, ops, k, [(prob > 0.3, horizon // 4)])
    shadows = [naive.cache_policy("lru", keys, ops, k), naive.arc(keys, ops, k), naive.s3fifo(keys, ops, k), *ftp,
               naive.s3fifo(keys, ops, k, lbits=prob > 0.3)]
    ref_hit, ref_ev, (switches, _, _, _) = naive.follow(keys, ops, k, shadows, CHUNK, max(1, k // 16), trace=True,
                                                        lead=2)  # S3-FIFO leads at first
    assert np.concatenate([o["hit"] for o in outs]).tolist() == ref_hit
    assert [int(e) if x else None for o in outs for e, x in zip(o["evicted"], o["evicts"], strict=True)] == ref_ev
    faults = [sum(1 for h in hits if h == 0) for hits, _ in shadows]
    m = c.metrics()
    assert [m[f"shadow_misses_{name}"] for name in c.shadows()] == faults and m["switches"] == switches


@pytest.mark.parametrize("k", [16, 64])
def test_learned_discard_stays_within_the_race_bound(k):
    """The real cache of learned-discard faults at most :func:`race_bound` more than its best
    shadow (on the trace slice, long enough for the bound to be below n; the small-stream reference
    tests above have too few requests for their stretches), and its leader's faults per stretch
    stay near k (the checks adapt to the fault rate: about k faults per stretch, at least 64
    requests, at most ``switch_every``)."""
    keys = real_trace()
    chunk = 256
    c = PagingCache("learned-discard", capacity=k, switch_every=chunk)
    misses = int((c.process({"key": keys})["hit"] == 0).sum())
    m = c.metrics()
    faults = [int(m[f"shadow_misses_{name}"]) for name in c.shadows()]
    lru = int((PagingCache("lru", capacity=k).process({"key": keys})["hit"] == 0).sum())
    assert faults[c.shadows().index("lru")] == lru
    d = int(m["stretch_faults"])
    assert d <= max(2 * k, 64)
    bound = race_bound(min(faults), k, int(m["switches"]), int(m["switch_margin"]), max(1, k // 16), d)
    assert bound < len(keys)  # non-vacuous
    assert misses <= bound


@pytest.mark.parametrize("seed", [0, 1])
def test_robust_discard_matches_the_composed_references(seed):
    k, CHUNK = 5, 64
    keys, ops, bits = stream(seed, n=2000, universe=40)
    c = PagingCache("robust-discard", capacity=k, switch_every=CHUNK)
    outs = [c.process({"key": keys[i:i + 250], "op": ops[i:i + 250], "bit": bits[i:i + 250]})
            for i in range(0, len(keys), 250)]
    shadows = [naive.ftp_grace(keys, ops, k, bits, [len(keys)] * len(keys)), naive.cache_policy("lru", keys, ops, k)]
    ref_hit, ref_ev = naive.follow(keys, ops, k, shadows, CHUNK, 1)
    assert np.concatenate([o["hit"] for o in outs]).tolist() == ref_hit
    assert [int(e) if x else None for o in outs for e, x in zip(o["evicted"], o["evicts"], strict=True)] == ref_ev


def sized_stream(seed, n=1500, universe=60, cap=300):
    keys, ops, bits = stream(seed, n=n, universe=universe)
    rng = np.random.default_rng(seed + 100)
    sizes = rng.integers(1, cap // 6, n)
    sizes[rng.random(n) < 0.01] = cap + 5  # too large to admit
    return keys, ops, bits, sizes.astype(np.int64)


def byte_outputs(outs):
    hit = np.concatenate([o["hit"] for o in outs]).tolist()
    evs, pos = [], 0
    flat = np.concatenate([o["evicted_keys"] for o in outs]).tolist()
    for c in np.concatenate([o["evicted_count"] for o in outs]).tolist():
        evs.append(flat[pos:pos + c])
        pos += c
    return hit, evs


@pytest.mark.parametrize("policy", ["lru", "fifo", "sieve", "s3fifo", "ftp-discard"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [3, 50])
def test_byte_mode_matches_the_references(policy, seed, k):
    cap = 300
    keys, ops, bits, sizes = sized_stream(seed, cap=cap)
    c = PagingCache(policy, capacity=k, byte_capacity=cap)
    outs = [c.process({"key": keys[i:i + 41], "op": ops[i:i + 41], "size": sizes[i:i + 41], "bit": bits[i:i + 41]})
            for i in range(0, len(keys), 41)]
    hit, evs = byte_outputs(outs)
    big = np.full(len(keys), 10**9)
    ref_hit, ref_evs = naive.cache_bytes(policy.removesuffix("-discard"), keys, ops, sizes, cap, k, bits, big)
    assert hit == ref_hit and evs == ref_evs
    held = c._st["real/fsize"][c._st["real/fkey"] != T.EMPTY]
    assert held.sum() <= cap and held.sum() == c._st["real/meta"][6] and len(held) <= k


@pytest.mark.parametrize("policy", ["lru", "fifo", "sieve", "s3fifo", "ftp-discard"])
def test_byte_mode_with_unit_sizes_is_the_page_mode(policy):
    keys, ops, bits = stream(5, n=2000, universe=40)
    unit = PagingCache(policy, capacity=7).process({"key": keys, "op": ops, "bit": bits})
    byte = PagingCache(policy, capacity=7, byte_capacity=7).process(
        {"key": keys, "op": ops, "bit": bits, "size": np.ones(len(keys), dtype=np.int64)})
    assert unit["hit"].tolist() == byte["hit"].tolist()
    assert unit["evicted"][unit["evicts"]].tolist() == byte["evicted_keys"].tolist()


@pytest.mark.parametrize("seed", [0, 1])
def test_byte_mode_races_match_the_composed_references(seed):
    """robust-discard and learned-discard in bytes: byte shadows (FtP, LRU, S3-FIFO) and the byte
    follow-the-leader real cache, request by request."""
    cap, k, chunk = 300, 40, 128
    keys, ops, bits, sizes = sized_stream(seed, n=2500, cap=cap)
    big = np.full(len(keys), 10**9)
    c = PagingCache("robust-discard", capacity=k, byte_capacity=cap, switch_every=chunk)
    outs = [c.process({"key": keys[i:i + 300], "op": ops[i:i + 300], "size": sizes[i:i + 300],
                       "bit": bits[i:i + 300]}) for i in range(0, len(keys), 300)]
    shadows = [naive.cache_bytes("ftp", keys, ops, sizes, cap, k, bits, big),
               naive.cache_bytes("lru", keys, ops, sizes, cap, k)]
    assert byte_outputs(outs) == naive.follow_bytes(keys, ops, sizes, cap, k, shadows, chunk, "held")
    # learned-discard: streams (seeds 1 and 3, a wider universe) on which its leader changes
    keys, ops, bits, sizes = sized_stream(2 * seed + 1, n=2500, universe=200, cap=cap)
    c = PagingCache("learned-discard", capacity=k, byte_capacity=cap, switch_every=chunk, history_cap=5000)
    outs = [c.process({"key": keys[i:i + 300], "op": ops[i:i + 300], "size": sizes[i:i + 300]})
            for i in range(0, len(keys), 300)]
    prob, horizon, _ = naive.predictor(keys, ops, k, c.reach, 5000, sizes=sizes, cap_units=cap)
    prob, horizon = np.array(prob), np.array(horizon)
    assert np.allclose(np.concatenate([o["prob"] for o in outs]), prob, rtol=0, atol=1e-9)
    shadows = [naive.cache_bytes("lru", keys, ops, sizes, cap, k),
               (*naive.cache_bytes("s3fifo", keys, ops, sizes, cap, k), cap // 10),  # S3-FIFO admits up to S
               naive.cache_bytes("ftp", keys, ops, sizes, cap, k, prob > 0.3, horizon // 4),
               naive.cache_bytes("ftp", keys, ops, sizes, cap, k, prob > 0.5, big)]
    assert byte_outputs(outs) == naive.follow_bytes(keys, ops, sizes, cap, k, shadows, chunk, "held", lead=1)
    assert c.metrics()["switches"] >= 1 and c.shadows() == ("lru", "s3fifo", "ftp-0.3-quarter", "ftp-0.5")


def test_byte_mode_rejects_what_it_cannot_do():
    with pytest.raises(ValueError, match="no byte-capacity mode"):
        PagingCache("arc", capacity=4, byte_capacity=100)
    c = PagingCache("lru", capacity=4, byte_capacity=100)
    with pytest.raises(learners.InvalidInput, match="size"):
        c.process({"key": np.arange(3)})
    with pytest.raises(learners.InvalidInput, match="positive"):
        c.process({"key": np.arange(3), "size": np.array([1, 0, 2])})


@pytest.mark.parametrize("policy", ["lru", "s3fifo", "robust-discard", "learned-discard"])
def test_byte_mode_checkpoint_restore_continue_equals_never_stopping(policy):
    cap, k = 300, 40
    keys, ops, bits, sizes = sized_stream(3, n=3000, cap=cap)
    cols = {"key": keys, "op": ops, "size": sizes, "bit": bits}
    params = {"capacity": k, "byte_capacity": cap, "switch_every": 256, "history_cap": 3000}
    whole = PagingCache(policy, **params).process(cols)
    a = PagingCache(policy, **params)
    first = a.process({n: v[:1700] for n, v in cols.items()})
    b = PagingCache(policy, **params)
    b.restore({n: v.copy() for n, v in a.snapshot().items()})
    rest = b.process({n: v[1700:] for n, v in cols.items()})
    for col in ("hit", "evicted_count", "evicted_keys"):
        assert np.concatenate([first[col], rest[col]]).tolist() == whole[col].tolist()
    assert b.metrics()["misses"] == int((whole["hit"] == 0).sum())


def test_the_s3fifo_ghost_packs_its_ring_and_frees_a_place_on_each_ghost_hit():
    # Keys come back from the ghost over and over (each hit frees a slot in the middle of the
    # ring), so the ring fills with dead slots and is packed many times; the reference holds the
    # ghost as an ordered dict of at most ⌊0.9·k⌋ keys.
    k = 10
    rng = np.random.default_rng(7)
    keys = np.concatenate([np.arange(60), rng.integers(0, 40, size=6000)]).astype(np.int64)
    ops = (rng.random(len(keys)) < 0.02).astype(np.int64)
    c = PagingCache("s3fifo", capacity=k)
    hit = np.concatenate([c.process({"key": keys[i:i + 97], "op": ops[i:i + 97]})["hit"]
                          for i in range(0, len(keys), 97)]).tolist()
    assert hit == naive.s3fifo(keys, ops, k)[0]
    g = c._st["real/gmeta"]
    assert g[2] <= int(0.9 * k) and g[1] <= c._st["real/ring"].shape[0]
    assert (c._st["real/ring"] != T.EMPTY).sum() == g[2]


@pytest.mark.parametrize("seed", range(8))
def test_the_ghost_ring_packs_in_place_keeping_its_live_keys_in_order(seed):
    # The pack rotates the ring so that its oldest slot comes first and slides the live keys
    # down, allocating nothing; the reference lists the live keys from the head, in order.
    from learners.paging import _kernels as K

    rng = np.random.default_rng(seed)
    g = int(rng.integers(1, 40))
    R = 2 * g
    ring, gsize = np.full(R, T.EMPTY, dtype=np.int64), np.zeros(R, dtype=np.int64)
    gtk, gtv = T.new_table(g)
    head = int(rng.integers(0, R))
    live = sorted(rng.choice(R, size=int(rng.integers(0, g + 1)), replace=False).tolist())
    expect = []
    for j in range(R):  # slots in ring order from the head
        pos = (head + j) % R
        if pos in live:
            key = int(rng.integers(0, 10**6)) * R + pos  # distinct keys
            ring[pos], gsize[pos] = key, int(rng.integers(1, 100))
            T.ht_put(gtk, gtv, key, pos)
            expect.append((key, int(gsize[pos])))
    gmeta = np.array([head, R, len(live), 1, sum(s for _, s in expect)], dtype=np.int64)
    K._ghost_pack(gtk, gtv, ring, gsize, gmeta)
    m = len(expect)
    assert [(int(ring[j]), int(gsize[j])) for j in range(m)] == expect
    assert (ring[m:] == T.EMPTY).all()
    assert gmeta[:3].tolist() == [0, m, m]
    assert all(T.ht_get(gtk, gtv, key) == j for j, (key, _) in enumerate(expect))


def test_an_s3fifo_snapshot_of_the_earlier_ghost_layout_restores():
    # Before S3-FIFO followed libCacheSim, its ghost was a ring of one slot per key with
    # gmeta = [head, count]; such a snapshot restores with its live ghost keys and goes on.
    k = 20
    keys = np.arange(200, dtype=np.int64) % 37
    c = PagingCache("s3fifo", capacity=k)
    c.process({"key": keys})
    state = c.snapshot()
    live = [int(x) for x in state["real/ring"] if x != T.EMPTY]
    g = len(live)
    old = {**state, "real/ring": np.array(live + [0] * (18 - g), dtype=np.int64), "real/gmeta": np.array([0, g])}
    del old["real/gsize"]
    gtk, gtv = T.new_table(18)
    for pos, key in enumerate(live):
        T.ht_put(gtk, gtv, key, pos)
    old["real/gtk"], old["real/gtv"] = gtk, gtv
    again = PagingCache("s3fifo", capacity=k)
    again.restore(old)
    more = np.arange(100, dtype=np.int64) % 41
    assert again.process({"key": more})["hit"].tolist() == c.process({"key": more})["hit"].tolist()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k", [2, 6])
def test_learned_ftp_is_the_learned_bits_followed_alone(seed, k):
    """learned-ftp = the predictor's bits (p > 0.3, a grace of a quarter of the horizon) through
    FtP, from their plain references, whatever the batch boundaries; and it is learned-discard's
    first FtP shadow, run as the real cache."""
    keys, ops, _ = stream(seed, n=2500, universe=10 * k)
    c = PagingCache("learned-ftp", capacity=k, history_cap=10_000)
    outs = [c.process({"key": keys[i:i + 333], "op": ops[i:i + 333]}) for i in range(0, len(keys), 333)]
    prob, horizon, _ = naive.predictor(keys, ops, k, c.reach, 10_000)
    (ref_hit, ref_ev), = shadow_refs(keys, ops, k, [(np.array(prob) > 0.3, np.array(horizon) // 4)])
    assert np.concatenate([o["hit"] for o in outs]).tolist() == ref_hit
    assert [int(e) if x else None for o in outs for e, x in zip(o["evicted"], o["evicts"], strict=True)] == ref_ev
    race = PagingCache("learned-discard", capacity=k, history_cap=10_000)
    race.process({"key": keys, "op": ops})
    assert race.metrics()["shadow_misses_ftp-0.3-quarter"] == ref_hit.count(0) == c.metrics()["misses"]


def test_predictor_in_bytes_matches_the_reference():
    """The byte mode's labels weigh each kept interval by its object's size against the byte capacity."""
    from learners.paging import _predict as P

    keys, ops, _ = stream(11, n=3000, universe=60)
    sizes = np.random.default_rng(11).integers(1, 50, len(keys)).astype(np.int64)
    n, k, cap_bytes = len(keys), 6, 120
    st = P.new_state(10_000, 20_000, k)
    prob, horizon = np.empty(n), np.empty(n, dtype=np.int64)
    P.predict_run(keys, ops, sizes, k, cap_bytes, 2.0, *(st[name] for name in P.ORDER), prob, horizon)
    ref_p, ref_h, ref_conf = naive.predictor(keys, ops, k, 2.0, 10_000, sizes=sizes, cap_units=cap_bytes)
    assert np.allclose(prob, ref_p, rtol=0, atol=1e-9)
    assert horizon.tolist() == ref_h and st["conf"].tolist() == ref_conf
    tn, fn, fp, tp = ref_conf
    assert tn + fp > 100 and fn + tp > 100  # both labels came


def test_a_learned_snapshot_from_before_optgen_restores_with_a_fresh_predictor():
    """A learned-discard snapshot in the earlier predictor layout (eight tables, no occupancy ring):
    the caches and shadows come back as they were, the predictor starts again, and the cache goes on."""
    keys = real_trace()[:3000]
    c = PagingCache("learned-discard", capacity=32)
    c.process({"key": keys[:2000]})
    snap = c.snapshot()
    old = {name: arr for name, arr in snap.items() if not name.startswith("predictor/")}
    old.update({"predictor/hist": np.zeros((65_536, 8), dtype=np.int64), "predictor/w": np.zeros((8, 4096)),
                "predictor/g2sum": np.ones((8, 4096)), "predictor/pm": np.array([2000, 500, 0, 0])})
    again = PagingCache("learned-discard", capacity=32)
    again.restore(old)
    after = again.snapshot()
    assert all(np.array_equal(after[name], arr) for name, arr in snap.items() if not name.startswith("predictor/"))
    assert after["predictor/pm"].tolist() == [0, 0, 0, 0] and not after["predictor/w"].any()
    out = again.process({"key": keys[2000:]})
    assert set(np.unique(out["hit"]).tolist()) <= {0, 1} and again.metrics()["requests"] == 3000


def test_a_race_snapshot_from_before_the_adaptive_checks_restores():
    """Snapshots with the three-entry switching state (checks at multiples of switch_every) and,
    for learned-discard, the FtP p > 0.5 shadow where the learned S3-FIFO now races: the next check
    comes at the next multiple, the dropped shadow's place starts empty behind the others, and a
    cache that followed it follows the best of the others."""
    from learners.paging import _kernels as K

    keys = real_trace()[:6000]
    c = PagingCache("learned-discard", capacity=32, switch_every=512)
    c.process({"key": keys[:3000]})
    snap = c.snapshot()
    old = {name: arr for name, arr in snap.items() if not name.startswith("s3l/")}
    old.update({name.replace("ftp1/", "ftp2/"): arr.copy() for name, arr in snap.items() if name.startswith("ftp1/")})
    old["ftp/time"] = np.stack([snap["ftp/time"], snap["ftp/time"]])
    old["follow/cm"] = np.array([4, 3, 8])  # following the dropped shadow
    old["follow/faults"] = np.array([900, 800, 700, 750, 600])
    again = PagingCache("learned-discard", capacity=32, switch_every=512)
    again.restore(old)
    cm, faults = again.snapshot()["follow/cm"], again.snapshot()["follow/faults"]
    assert cm[K.CM_LEADER] == 2 and cm[K.CM_SWITCHES] == 3 and cm[K.CM_MARGIN] == 8
    assert cm[K.CM_NEXT] == 3072 and cm[K.CM_T_AT] == 2560 and faults.tolist() == [900, 800, 700, 750, 900]
    held = set(again.view()["keys"].tolist())
    assert held == set(c.view()["keys"].tolist())  # the same pages, re-sorted
    out = again.process({"key": keys[3000:]})
    assert (out["hit"] >= 0).all() and again.metrics()["requests"] == 6000
    r = PagingCache("robust-discard", capacity=32, switch_every=512)
    r.process({"key": keys[:1000], "bit": np.zeros(1000, dtype=np.int64)})
    old = r.snapshot()
    old["follow/cm"] = old["follow/cm"][:3]
    again = PagingCache("robust-discard", capacity=32, switch_every=512)
    again.restore(old)
    assert again.snapshot()["follow/cm"][K.CM_NEXT] == 1024


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reuse_distances_count_the_distinct_keys_between(seed):
    from learners.paging import reuse_distances

    keys, _, _ = stream(seed, n=700, universe=50)
    got = reuse_distances(keys).tolist()
    for t in range(len(keys)):
        nxt = next((u for u in range(t + 1, len(keys)) if keys[u] == keys[t]), None)
        assert got[t] == (-1 if nxt is None else len(set(keys[t + 1:nxt].tolist()))), t
    k = 8  # an LRU cache of k pages hits exactly the next requests of distance below k
    hit = PagingCache("lru", capacity=k).process({"key": keys})["hit"]
    d = np.array(got)
    nxt = belady(keys, k)["next_use"]
    has = nxt < len(keys)
    assert (hit[nxt[has]] == 1).tolist() == (d[has] < k).tolist()


@pytest.mark.parametrize("policy", ["lru", "s3fifo", "arc", "ftp-discard"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_shadow_kernel_flags_the_deletes_that_removed_a_cached_key(policy, seed):
    # The race reads what a shadow held from its outputs (resort_at): the kernels say -2 for a
    # delete of a cached key, -1 for one of a key not cached. Checked against the set of keys the
    # kernel's own hits, misses and evictions imply; PagingCache reports both as -1.
    keys, ops, bits = stream(seed, n=800, p_delete=0.1)
    c = PagingCache(policy, capacity=5)
    real = c._t("real")
    n = len(keys)
    hit, ev = np.empty(n, dtype=np.int8), np.empty(n, dtype=np.int64)
    from learners.paging import _kernels as K
    from learners.paging.cache import _GHOST, _S3_GHOST

    if policy == "lru":
        K.queue_run(0, keys, ops, None, 5, 5, *real, None, hit, ev, None, None, None)
    elif policy == "s3fifo":
        K.s3fifo_run(keys, ops, None, 5, 5, 1, *real, None, *c._t("real", _S3_GHOST), None, None, hit, ev, None,
                     None, None)
    elif policy == "arc":
        K.arc_run(keys, ops, 5, *real, *c._t("real/ghost", _GHOST), c._st["real/target"], hit, ev)
    else:
        K.ftp_discard_run(keys, ops, None, 5, bits, np.full(n, 1 << 40), 5, *real, None, c._st["real/time"], hit, ev,
                          None, None, None)
    held: set[int] = set()
    for key, op, h, e in zip(keys.tolist(), ops.tolist(), hit.tolist(), ev.tolist(), strict=True):
        if op == 1:
            assert h == (-2 if key in held else -1)
            held.discard(key)
            continue
        assert h == (1 if key in held else 0)
        if e != T.EMPTY:
            held.remove(e)
        held.add(key)
    assert set(c.view()["keys"].tolist()) == held
    out = PagingCache(policy, capacity=5).process({"key": keys, "op": ops, "bit": bits})
    assert out["hit"][ops == 1].tolist() == [-1] * int(ops.sum())


def test_learned_discard_outputs_do_not_depend_on_chunks_or_batches_across_switches(monkeypatch):
    # The shadows replay a chunk before the real cache follows them; a switch inside a chunk sorts
    # the real pages by what the new leader held at the switch, not at the chunk's end. Small
    # chunks and a stream that switches often: every cut gives the same outputs.
    from learners.paging import cache as C

    rng = np.random.default_rng(11)
    phases = [rng.integers(0, 60, 1500), np.arange(3000) % 23, rng.zipf(1.3, 1500) % 200, np.arange(2000) % 11]
    keys = np.concatenate(phases).astype(np.int64)
    ops = (rng.random(len(keys)) < 0.03).astype(np.int64)
    params = {"capacity": 16, "switch_every": 128, "history_cap": 500}
    whole = PagingCache("learned-discard", **params).process({"key": keys, "op": ops})
    monkeypatch.setattr(C, "_CHUNK", 97)
    c = PagingCache("learned-discard", **params)
    cut = [c.process({"key": keys[i:i + 1000], "op": ops[i:i + 1000]}) for i in range(0, len(keys), 1000)]
    assert c.metrics()["switches"] >= 3
    two = PagingCache("learned-discard", threads=2, **params)  # the predictor one chunk ahead, on a thread
    ahead = [two.process({"key": keys[i:i + 1000], "op": ops[i:i + 1000]}) for i in range(0, len(keys), 1000)]
    for col in ("hit", "evicted", "prob"):
        assert np.concatenate([o[col] for o in cut]).tolist() == whole[col].tolist()
        assert np.concatenate([o[col] for o in ahead]).tolist() == whole[col].tolist()
    assert {n: a.tolist() for n, a in two.snapshot().items()} == {n: a.tolist() for n, a in c.snapshot().items()}
