"""Slow, obvious reference versions of every Numba kernel (the source of truth in tests)."""

from __future__ import annotations

import math

import numpy as np

MASK = (1 << 64) - 1


def mix64(z: int) -> int:
    z &= MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def draw_uniform(seed: int, key: int, stream: int) -> float:
    z = mix64(seed ^ mix64((key + 0x9E3779B97F4A7C15 * (stream + 1)) & MASK))
    return (z >> 11) / 2.0**53


def draw_normal(seed: int, key: int, stream: int) -> float:
    u1 = max(draw_uniform(seed, key, 2 * stream), 1e-300)
    u2 = draw_uniform(seed, key, 2 * stream + 1)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def ridge(X: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Batch ridge: (A⁻¹, θ) with A = λI + XᵀX."""
    A = lam * np.eye(X.shape[1]) + X.T @ X
    A_inv = np.linalg.inv(A)
    return A_inv, A_inv @ (X.T @ y)


def events(indptr):
    return [(int(indptr[i]), int(indptr[i + 1])) for i in range(len(indptr) - 1)]


def igw(scores, indptr, gamma):
    out = np.empty(len(scores))
    for lo, hi in events(indptr):
        s = list(scores[lo:hi])
        k = len(s)
        b = s.index(max(s))
        p = [1.0 / (k + gamma * (s[b] - v)) for v in s]
        p[b] = 1.0 - (sum(p) - p[b])
        out[lo:hi] = p
    return out


def fastcb(scores, indptr, gamma):
    out = np.empty(len(scores))
    for lo, hi in events(indptr):
        s = list(scores[lo:hi])
        k = len(s)
        b = s.index(max(s))
        c = [min(max(1.0 - v, 0.0), 1.0) for v in s]
        p = []
        for ca in c:
            den = k * c[b] + gamma * (ca - c[b])
            p.append(c[b] / den if den > 0 else 0.0)
        p[b] = 1.0 - (sum(p) - p[b])
        out[lo:hi] = p
    return out


def epsgreedy(scores, indptr, eps):
    out = np.empty(len(scores))
    for lo, hi in events(indptr):
        s = list(scores[lo:hi])
        p = [eps / len(s)] * len(s)
        p[s.index(max(s))] += 1 - eps
        out[lo:hi] = p
    return out


def ucb(scores, widths, indptr, alpha):
    out = np.empty(len(scores))
    for lo, hi in events(indptr):
        u = [scores[p] + alpha * widths[p] for p in range(lo, hi)]
        m = max(u)
        n = u.count(m)
        out[lo:hi] = [1.0 / n if v == m else 0.0 for v in u]
    return out


def ts(scores, widths, indptr, scale, seed, keys, n_samples):
    out = np.zeros(len(scores))
    for i, (lo, hi) in enumerate(events(indptr)):
        k = hi - lo
        for s in range(n_samples):
            vals = [scores[p] + scale * widths[p] * draw_normal(seed, int(keys[i]), 1_000_000 + s * k + (p - lo))
                    for p in range(lo, hi)]
            out[lo + vals.index(max(vals))] += 1
        out[lo:hi] /= n_samples
    return out


def bounds(probs, scores, indptr, floor, cap):
    out = probs.copy()
    for lo, hi in events(indptr):
        s = list(scores[lo:hi])
        b = lo + s.index(max(s))
        others = [p for p in range(lo, hi) if p != b]
        for p in others:
            out[p] = max(out[p], floor)
        off = sum(out[p] for p in others)
        if off > cap:
            for p in others:
                out[p] *= cap / off
            off = sum(out[p] for p in others)
        out[b] = max(1.0 - off, 0.0)
    return out


def sample(probs, scores, indptr, seed, keys):
    chosen, prob, explored = [], [], []
    for i, (lo, hi) in enumerate(events(indptr)):
        p = list(probs[lo:hi])
        u = draw_uniform(seed, int(keys[i]), 0) * sum(p)
        acc, pick = 0.0, None
        for j, v in enumerate(p):
            acc += v
            if u < acc and v > 0:
                pick = j
                break
        if pick is None:
            pick = max(j for j, v in enumerate(p) if v > 0) if any(v > 0 for v in p) else len(p) - 1
        s = list(scores[lo:hi])
        chosen.append(pick)
        prob.append(p[pick] / sum(p))
        explored.append(pick != s.index(max(s)))
    return np.array(chosen), np.array(prob), np.array(explored)


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def mlp_scores(X, indptr, slots, W1, b1, W2, b2, kl, sigma, seed, keys):
    out = np.empty(len(slots))
    for i, (lo, hi) in enumerate(events(indptr)):
        h = np.maximum(W1 @ X[i] + b1, 0.0)
        for p in range(lo, hi):
            k = slots[p]
            z = W2[k] @ h + b2[k]
            if sigma > 0:
                z += sigma * draw_normal(seed, int(keys[i]), 2_000_000 + int(k))
            out[p] = sigmoid(z) if kl else z
    return out


def mlp_update(X, slots, y, keys, W1, b1, W2, b2, kl, sigma, lr, seed):
    W1, b1, W2, b2 = W1.copy(), b1.copy(), W2.copy(), b2.copy()
    for i in range(len(X)):
        k = slots[i]
        pre = W1 @ X[i] + b1
        h = np.maximum(pre, 0.0)
        z = W2[k] @ h + b2[k]
        if sigma > 0:
            z += sigma * draw_normal(seed, int(keys[i]), 3_000_000 + int(k))
        g = (sigmoid(z) - y[i]) if kl else (z - y[i])
        gh = g * W2[k] * (h > 0)
        W2[k] -= lr * g * h
        b2[k] -= lr * g
        W1 -= lr * np.outer(gh, X[i])
        b1 -= lr * gh
    return W1, b1, W2, b2


# -- paging -------------------------------------------------------------------------------------------
def cache_policy(policy, keys, ops, k, seed=0, bits=None):
    """Obvious references of the cache shadows: (hit list, evicted list with None)."""
    from collections import OrderedDict

    from learners._random import draw_uniform

    order = OrderedDict()  # key -> flag; first = oldest
    unm = []  # Marker: unmarked keys, with the kernel's swap-remove order
    hits, evs, t = [], [], 0
    hand = None  # SIEVE: the key under the hand (None: start from the oldest)

    def unm_remove(key):
        j = unm.index(key)
        unm[j] = unm[-1]
        unm.pop()

    for i, (key, op) in enumerate(zip(keys.tolist(), ops.tolist(), strict=True)):
        t += 1
        if op == 1:
            hits.append(-1)
            evs.append(None)
            if key in order:
                if policy == "sieve" and hand == key:
                    seq = list(order)
                    j = seq.index(key)
                    hand = seq[j + 1] if j + 1 < len(seq) else None
                if policy == "marker" and order[key] == 0:
                    unm_remove(key)
                del order[key]
            continue
        if key in order:
            hits.append(1)
            evs.append(None)
            if policy == "lru":
                order.move_to_end(key)
            elif policy == "sieve":
                order[key] = 1
            elif policy == "marker" and order[key] == 0:
                unm_remove(key)
                order[key] = 1
            elif policy == "ftp-discard":
                del order[key]
                order[key] = int(bits[i])
            elif policy == "marker-discard":
                del order[key]
                order[key] = (1, int(bits[i]))  # (marked, bit), most recent last
            continue
        hits.append(0)
        victim = None
        if len(order) >= k:
            seq = list(order)  # oldest first
            if policy in ("lru", "fifo"):
                victim = seq[0]
            elif policy == "sieve":
                j = seq.index(hand) if hand is not None else 0
                while order[seq[j]] == 1:
                    order[seq[j]] = 0
                    j = j + 1 if j + 1 < len(seq) else 0
                victim = seq[j]
                hand = seq[j + 1] if j + 1 < len(seq) else None
            elif policy == "marker":
                if not unm:
                    for q in reversed(seq):  # the kernel walks from the newest
                        order[q] = 0
                        unm.append(q)
                victim = unm[int(draw_uniform(seed, t, 0) * len(unm))]
                unm_remove(victim)
            elif policy == "ftp-discard":
                ones = [q for q in seq if order[q] == 1]
                victim = ones[0] if ones else seq[0]
            elif policy == "marker-discard":
                if all(order[q][0] == 1 for q in seq):  # a new phase
                    for q in seq:
                        order[q] = (0, order[q][1])
                unmarked = [q for q in seq if order[q][0] == 0]
                ones = [q for q in unmarked if order[q][1] == 1]
                victim = ones[0] if ones else unmarked[0]
            del order[victim]
        evs.append(victim)
        if policy == "marker-discard":
            order[key] = (1, int(bits[i]))
            continue
        order[key] = {"marker": 1, "ftp-discard": int(bits[i]) if bits is not None else 0}.get(policy, 0)
    return hits, evs


def belady_misses(keys, k):
    """Furthest-in-future by brute force."""
    keys = list(keys)
    cache, misses = set(), 0
    for i, key in enumerate(keys):
        if key in cache:
            continue
        misses += 1
        if len(cache) >= k:
            rest = keys[i + 1:]
            cache.remove(max(cache, key=lambda q, rest=rest: rest.index(q) if q in rest else len(rest)))
        cache.add(key)
    return misses


def s3fifo(keys, ops, k, lbits=None):
    """S3-FIFO as libCacheSim's S3FIFO.c runs it (see learners/paging/_kernels.py): (hit list,
    evicted list with None). Pages are objects of size 1 in a cache of k bytes: :func:`s3fifo_bytes`
    (unit sizes make each of its byte bounds the page bound: S, M, and the ghost's ⌊0.9·k⌋ keys);
    ``lbits``: learned bits vetoing promotion (learned-discard's learned S3-FIFO shadow)."""
    hits, gone = s3fifo_bytes(keys, ops, np.ones(len(keys), dtype=np.int64), k, k, lbits)
    return hits, [g[0] if g else None for g in gone]


def arc(keys, ops, c):
    """ARC by the paper's pseudo-code (Megiddo & Modha 2003), with deletes dropping a key anywhere."""
    from collections import OrderedDict

    T1, T2, B1, B2 = OrderedDict(), OrderedDict(), OrderedDict(), OrderedDict()  # first = LRU
    p = 0.0
    hits, evs = [], []

    def replace(in_b2):
        if T1 and ((in_b2 and len(T1) == p) or len(T1) > p):
            v, _ = T1.popitem(last=False)
            B1[v] = None
        elif T2:
            v, _ = T2.popitem(last=False)
            B2[v] = None
        else:
            v, _ = T1.popitem(last=False)
            B2[v] = None
        return v

    for x, op in zip(keys.tolist(), ops.tolist(), strict=True):
        if op == 1:
            hits.append(-1)
            evs.append(None)
            for d in (T1, T2, B1, B2):
                d.pop(x, None)
            continue
        if x in T1 or x in T2:
            hits.append(1)
            evs.append(None)
            T1.pop(x, None)
            T2.pop(x, None)
            T2[x] = None
            continue
        hits.append(0)
        victim = None
        if x in B1 or x in B2:
            in_b2 = x in B2
            if not in_b2:
                p = min(float(c), p + max(len(B2) / len(B1), 1.0))
                del B1[x]
            else:
                p = max(0.0, p - max(len(B1) / len(B2), 1.0))
                del B2[x]
            if len(T1) + len(T2) >= c:
                victim = replace(in_b2)
            T2[x] = None
            evs.append(victim)
            continue
        if len(T1) + len(B1) == c:
            if len(T1) < c:
                B1.popitem(last=False)
                if len(T1) + len(T2) >= c:
                    victim = replace(False)
            else:
                victim, _ = T1.popitem(last=False)
        else:
            total = len(T1) + len(T2) + len(B1) + len(B2)
            if total >= c:
                if total == 2 * c:
                    B2.popitem(last=False)
                if len(T1) + len(T2) >= c:
                    victim = replace(False)
        T1[x] = None
        evs.append(victim)
    return hits, evs


def ftp_grace(keys, ops, k, bits, grace):
    """Follow-the-prediction where a "keep" page older than the oldest safe page by more than
    ``grace[i]`` requests is evicted first (the learned policies' softened FtP)."""
    from collections import OrderedDict

    order = OrderedDict()  # key -> (bit, last request time), oldest first
    hits, evs = [], []
    for t, (key, op) in enumerate(zip(keys.tolist(), ops.tolist(), strict=True), start=1):
        if op == 1:
            hits.append(-1)
            evs.append(None)
            order.pop(key, None)
            continue
        victim = None
        if key in order:
            hits.append(1)
            del order[key]
        else:
            hits.append(0)
            if len(order) >= k:
                kept = [q for q in order if order[q][0] == 0]
                safe = [q for q in order if order[q][0] == 1]
                if not safe or (kept and order[kept[0]][1] + grace[t - 1] < order[safe[0]][1]):
                    victim = kept[0]
                else:
                    victim = safe[0]
                del order[victim]
        evs.append(victim)
        order[key] = (int(bits[t - 1]), t)
    return hits, evs


def follow(keys, ops, k, shadows, chunk, margin, trace=False, lead=0):
    """Follow-the-leader over shadows given as (hits, evicted) lists, unit-size pages: the real
    cache keeps two queues, pages its leader does not hold (in the order the leader dropped them)
    and pages it holds (least recently used first); a fault evicts the oldest unheld page, else the
    oldest held one. At each check the leader becomes the shadow with the fewest faults when the
    leader's exceed those by the margin (which then doubles); the real pages are then re-sorted,
    each queue walked oldest first, a page changing queue going to the newest end of the other.
    The first check comes after min(``chunk``, max(64, k)) requests, each next one after
    k x (the last stretch's length) / (the leader's faults in it) requests, rounded up, between 64
    and ``chunk`` (``chunk`` when it did not fault). (:func:`follow_bytes` with every size 1 and
    ``k`` bytes; ``lead``: the shadow leading at first.) Returns hits, evictions, and with ``trace`` also (switches, last margin, the most
    faults of the leader in one stretch, the shadows' faults)."""
    ones = np.ones(len(keys), dtype=np.int64)
    lists = [(h, [[] if e is None else [e] for e in ev]) for h, ev in shadows]
    hits, evs, info = follow_bytes(keys, ops, ones, k, k, lists, chunk, margin, trace=True, stretch_k=k, lead=lead)
    evs = [e[0] if e else None for e in evs]
    return (hits, evs, info) if trace else (hits, evs)


def predictor(keys, ops, k, reach, cap, sizes=None, cap_units=None, window=None):
    """The learned discard predictor (learners/paging/_predict.py), written plainly: per-key history
    in a dict with the oldest remembered key forgotten beyond ``cap``; labels by OPTgen over a
    plain occupancy list of the last ``window`` (default 16·k) requests (a request's interval to
    its key's next request is kept iff every time strictly between has fewer than ``cap_units``
    (default k - 1) units kept, counting its own size; a request not repeated within the window is
    labelled 1; a "keep" whose slots held at most half of ``cap_units`` weighs 0.3); features as log-buckets of recency, the gap before and the count, and the key's
    OPTgen counter; an AdaGrad logistic model over seven one-hot tables. Returns the
    probabilities, horizons and confusion counts [tn, fn, fp, tp] of the bit p > 0.5."""
    import math

    window = 16 * k if window is None else window
    cap_units = k - 1 if cap_units is None else cap_units
    sizes = [1] * len(keys) if sizes is None else sizes.tolist()

    def bucket(x, top):
        b = 0
        while x > 1 and b < top:
            x >>= 1
            b += 1
        return b

    def cells(f):
        r, g, c, o = f
        return [r, g, c, r * 16 + g, r * 16 + c, (r * 16 + g) * 16 + c, o * 16 + r]

    w = [[0.0] * 4096 for _ in range(7)]
    g2sum = [[1e-6] * 4096 for _ in range(7)]
    wb = [0.0, 1e-6]
    conf = [0, 0, 0, 0]
    occ = {}  # time -> units kept over it

    def prob(f):
        z = wb[0] + sum(w[q][c] for q, c in enumerate(cells(f)))
        return 1.0 / (1.0 + math.exp(-z))

    def reveal(h, label, weight=1.0):
        g = (prob(h["pend_f"]) - label) * weight
        wb[1] += g * g
        wb[0] -= 0.05 * g / math.sqrt(wb[1])
        for q, c in enumerate(cells(h["pend_f"])):
            gq = g + 1e-4 * w[q][c]
            g2sum[q][c] += gq * gq
            w[q][c] -= 0.05 * gq / math.sqrt(g2sum[q][c])
        conf[2 * h["pend_bit"] + label] += 1
        h["pend_t"] = -1
        h["opt"] = max(h["opt"] - 1, 0) if label else min(h["opt"] + 1, 7)

    hist = {}  # key -> history; slots reused in arrival order of new keys
    slots = [None] * cap
    queue = []  # (time, key) of pending requests, oldest first
    seen, t = 0, 0
    probs, horizons = [], []
    for key, op, size in zip(keys.tolist(), ops.tolist(), sizes, strict=True):
        if op == 1:
            probs.append(0.0)
            horizons.append(0)
            continue
        horizon = int(reach * k * max(1.0, t / max(seen, 1)))
        while queue and queue[0][0] + window < t:
            qt, qk = queue.pop(0)
            if qk in hist and hist[qk]["pend_t"] == qt:
                reveal(hist[qk], 1)
        scale = max(k // 16, 1)
        if key in hist:
            h = hist[key]
            r = t - h["last"]
            if h["pend_t"] >= 0:
                between = range(h["pend_t"] + 1, t)
                top = max((occ.get(u, 0) for u in between), default=0)
                keep = not between or top + h["pend_size"] <= cap_units  # (an immediate repeat: kept)
                if keep:
                    for u in between:
                        occ[u] = occ.get(u, 0) + h["pend_size"]
                reveal(h, 0 if keep else 1, 1.0 if 2 * top >= cap_units else 0.3)
            h["count"] += 1
            f = (1 + bucket(r // scale, 14), 0 if h["gap"] < 0 else 1 + bucket(h["gap"] // scale, 14),
                 1 + bucket(h["count"], 14), h["opt"])
            h["gap"] = r
        else:
            old = slots[seen % cap]
            if old is not None:
                del hist[old]
            slots[seen % cap] = key
            seen += 1
            h = hist[key] = {"count": 1, "gap": -1, "pend_t": -1, "opt": 3}
            f = (0, 0, 1, 3)
        h["last"] = t
        p = prob(f)
        h.update(pend_t=t, pend_f=f, pend_bit=1 if p > 0.5 else 0, pend_size=size)
        queue.append((t, key))
        probs.append(p)
        horizons.append(horizon)
        occ.pop(t - window - 1, None)
        t += 1
    return probs, horizons, conf


def s3fifo_bytes(keys, ops, sizes, cap, k, lbits=None):
    """S3-FIFO in bytes as libCacheSim weighs it (see learners/paging/_kernels.py, the byte-capacity mode): S a tenth of the
    bytes, M the rest, a ghost of ⌊0.9·cap⌋ bytes and ⌊0.9·k⌋ keys; an object heavier than S is
    not admitted. With ``lbits`` (learned bits per request, 1 "safe"), a page leaves S for M only
    when accessed twice and its latest bit is 0. (hit list, list of the evicted keys at each request)."""
    from collections import OrderedDict

    small = max(1, cap // 10)
    main_cap, gbytes, gkeys = cap - small, (cap * 9) // 10, int(k * 0.9)
    S, M, G = OrderedDict(), OrderedDict(), OrderedDict()  # key -> [count, size]; G: key -> size
    evicted_once = False
    hits, evs = [], []
    latest = {}  # key -> its latest learned bit
    lb = [0] * len(keys) if lbits is None else [int(b) for b in lbits]
    for key, op, sz, b in zip(keys.tolist(), ops.tolist(), sizes.tolist(), lb, strict=True):
        gone = []
        evs.append(gone)
        if op == 1:
            hits.append(-1)
            if S.pop(key, None) is None and M.pop(key, None) is None:
                G.pop(key, None)
            continue
        q = S if key in S else M if key in M else None
        latest[key] = b
        if q is not None:
            hits.append(1)
            q[key][0] += 1
            continue
        hits.append(0)
        ghost_hit = G.pop(key, None) is not None
        if sz > small:
            continue
        while len(S) + len(M) >= k or sum(v[1] for v in S.values()) + sum(v[1] for v in M.values()) + sz > cap:
            evicted_once = True
            if sum(v[1] for v in M.values()) > main_cap or not S:
                while True:
                    t, (c, size) = M.popitem(last=False)
                    if c >= 1:
                        M[t] = [min(c, 3) - 1, size]
                    else:
                        gone.append(t)
                        break
            else:
                while S:
                    t, (c, size) = S.popitem(last=False)
                    if c >= 2 and not latest.get(t, 0):
                        M[t] = [0, size]
                    else:
                        gone.append(t)
                        if gkeys and size <= gbytes:
                            while G and (len(G) >= gkeys or sum(G.values()) + size > gbytes):
                                G.popitem(last=False)
                            G[t] = size
                        break
        if ghost_hit or (not evicted_once and sum(v[1] for v in S.values()) >= small):
            M[key] = [0, sz]
        else:
            S[key] = [0, sz]
    return hits, evs


def cache_bytes(policy, keys, ops, sizes, cap, k, bits=None, grace=None):
    """Byte-capacity references of LRU, FIFO, SIEVE, S3-FIFO and FtP (with grace): (hit list, list
    of the evicted keys at each request). An object larger than ``cap`` is not admitted; a miss
    evicts until the object fits and at most k objects are held."""
    from collections import OrderedDict, deque

    if policy == "s3fifo":
        return s3fifo_bytes(keys, ops, sizes, cap, k)

    order = OrderedDict()  # key -> [flag, size, time]; first = oldest (S3-FIFO: the small queue)
    main = OrderedDict()  # S3-FIFO's main queue
    ring, live, seq = deque(), {}, 0  # ghost: (key, seq, size), oldest first
    ghost_cap = max(1, k - max(1, k // 10))  # entries at most; and at most the main queue's bytes
    hand = None
    hits, evs = [], []

    def held():
        return sum(v[1] for v in order.values()) + sum(v[1] for v in main.values())

    def ghost_add(key, size):
        nonlocal seq
        while ring and (len(ring) == ghost_cap or sum(r[2] for r in ring) + size > cap - max(1, cap // 10)):
            old, old_seq, _ = ring.popleft()
            if live.get(old) == old_seq:
                del live[old]
        seq += 1
        ring.append((key, seq, size))
        live[key] = seq

    for t, (key, op, sz) in enumerate(zip(keys.tolist(), ops.tolist(), sizes.tolist(), strict=True), start=1):
        gone = []
        if op == 1:
            hits.append(-1)
            evs.append(gone)
            if key in order:
                if policy == "sieve" and hand == key:
                    seq_ = list(order)
                    j = seq_.index(key)
                    hand = seq_[j + 1] if j + 1 < len(seq_) else None
                del order[key]
            main.pop(key, None)
            continue
        q = order if key in order else main if key in main else None
        if q is not None:
            hits.append(1)
            evs.append(gone)
            if policy == "lru":
                order.move_to_end(key)
            elif policy == "sieve":
                order[key][0] = 1
            elif policy == "s3fifo":
                q[key][0] = min(q[key][0] + 1, 3)
            elif policy == "ftp":
                v = order.pop(key)
                order[key] = [int(bits[t - 1]), v[1], t]
            continue
        hits.append(0)
        evs.append(gone)
        if sz > cap:
            continue
        while len(order) + len(main) >= k or held() + sz > cap:
            if policy in ("lru", "fifo"):
                victim = next(iter(order))
            elif policy == "sieve":
                seq_ = list(order)
                j = seq_.index(hand) if hand is not None else 0
                while order[seq_[j]][0] == 1:
                    order[seq_[j]][0] = 0
                    j = j + 1 if j + 1 < len(seq_) else 0
                victim = seq_[j]
                hand = seq_[j + 1] if j + 1 < len(seq_) else None
            elif policy == "ftp":
                kept = [q for q in order if order[q][0] == 0]
                safe = [q for q in order if order[q][0] == 1]
                victim = safe[0] if safe and (not kept or order[kept[0]][2] + grace[t - 1] >= order[safe[0]][2]) \
                    else kept[0]
            else:  # s3fifo
                small_bytes = sum(v[1] for v in order.values())
                if small_bytes >= max(1, cap // 10) or not main:
                    tk, v = order.popitem(last=False)
                    if v[0] > 1:
                        main[tk] = [0, v[1], 0]
                        continue
                    ghost_add(tk, v[1])
                    gone.append(tk)
                    continue
                tk, v = main.popitem(last=False)
                if v[0] > 0:
                    main[tk] = [v[0] - 1, v[1], 0]
                    continue
                gone.append(tk)
                continue
            del order[victim]
            gone.append(victim)
        if policy == "s3fifo":
            if key in live:
                del live[key]
                main[key] = [0, sz, 0]
            else:
                order[key] = [0, sz, 0]
        else:
            order[key] = [int(bits[t - 1]) if policy == "ftp" else 0, sz, t]
    return hits, evs


def follow_bytes(keys, ops, sizes, cap, k, shadows, chunk, margin, trace=False, stretch_k=None, lead=0):
    """:func:`follow` in bytes: shadows as (hits, evicted-key lists per request[, the largest
    object the shadow admits: S3-FIFO's small queue, else the cache]); a fault evicts
    from the unheld queue first until the object fits. ``margin="held"``: the first margin is a
    sixteenth of the objects the real cache holds at the first check; a stretch's k (see
    :func:`follow`) is ``stretch_k``, or where None the objects the real cache holds at the check."""
    held = [set() for _ in shadows]
    faults = [0] * len(shadows)
    m = margin
    check, f_at, t_at, dmax, switches = min(chunk, max(64, k)), 0, 0, 0, 0
    queues = ([], [])
    size = {}
    hits, evs = [], []
    for i, (key, op, sz) in enumerate(zip(keys.tolist(), ops.tolist(), sizes.tolist(), strict=True)):
        for e, (h, ev, *limit) in enumerate(shadows):  # (a third item: the largest object it admits)
            for q in ev[i]:
                held[e].discard(q)
            if op == 1 or (h[i] == 0 and sz > (limit[0] if limit else cap)):
                held[e].discard(key)
            else:
                held[e].add(key)
            faults[e] += h[i] == 0
        for q in shadows[lead][1][i]:
            if q in queues[1]:
                queues[1].remove(q)
                queues[0].append(q)
        where = 0 if key in queues[0] else 1 if key in queues[1] else None
        gone = []
        if op == 1:
            hits.append(-1)
            if where is not None:
                queues[where].remove(key)
        elif where is not None:
            hits.append(1)
            queues[where].remove(key)
            queues[1].append(key)
        else:
            hits.append(0)
            if sz <= cap:
                while len(queues[0]) + len(queues[1]) >= k or sum(size[q] for q in queues[0] + queues[1]) + sz > cap:
                    gone.append((queues[0] or queues[1]).pop(0))
                size[key] = sz
                queues[1].append(key)
        evs.append(gone)
        if i + 1 == check:
            held_now = len(queues[0]) + len(queues[1])
            if m == "held":
                m = max(1, held_now // 16)
            d = faults[lead] - f_at
            dmax = max(dmax, d)
            best = min(range(len(shadows)), key=lambda e: (faults[e], e))
            kk = max(1, held_now) if stretch_k is None else stretch_k
            stretch = chunk if d <= 0 else min(chunk, max(64, -(-kk * (i + 1 - t_at) // d)))
            check, t_at = i + 1 + stretch, i + 1
            switched = faults[lead] > faults[best] + m
            if switched:
                lead, m = best, 2 * m
                switches += 1
            f_at = faults[lead]
            if switched:
                for L in (0, 1):
                    for page in list(queues[L]):
                        if (page in held[lead]) != (L == 1):
                            queues[L].remove(page)
                            queues[1 - L].append(page)
    if trace:
        return hits, evs, (switches, m, max(dmax, faults[lead] - f_at), faults)
    return hits, evs


def anh_weight(R, C):
    """AdaNormalHedge's weight, written as the formula: ½(exp([R+1]₊²/3(C+1)) − exp([R−1]₊²/3(C+1)))."""
    import math

    return 0.5 * (math.exp(max(R + 1, 0) ** 2 / (3 * (C + 1))) - math.exp(max(R - 1, 0) ** 2 / (3 * (C + 1))))


def learn_expert(g, i, X, y, yhat, rows, theta, gsum, lam, lr, base):
    """Group g's expert learns row i (``yhat`` its prediction of it): a ridge solved from scratch
    over the group's rows, or one AdaGrad step of the logistic expert."""
    rows[g].append(i)
    if base == "ridge":
        Xg, yg = X[rows[g]], y[rows[g]]
        theta[g] = np.linalg.solve(lam * np.eye(X.shape[1]) + Xg.T @ Xg, Xg.T @ yg)
    else:
        grad = (yhat - y[i]) * X[i]
        gsum[g] += grad ** 2
        theta[g] -= np.where(grad != 0, lr * grad / np.sqrt(gsum[g]), 0.0)


def groupwise(X, member, y, lam, base="ridge", lr=0.1, seed=0, keys=None, anchor=True):
    """Groupwise regret, the obvious way: each group's ridge solved from scratch,
    θ_g = (λI + Σ x xᵀ)⁻¹ Σ y x over its rows so far (logistic: AdaGrad steps), AdaNormalHedge
    weights from the formula (``anchor``: the always-on prior weighs as the others together). Each
    row is predicted (both rules) and then learned. Returns the
    mixture and randomized predictions, and per group R, C, the two cumulative losses."""
    import math

    n, d = X.shape
    G = member.shape[1]
    rows = [[] for _ in range(G)]
    theta = np.zeros((G, d))
    gsum = np.full((G, d), 1e-12)
    R, C = np.zeros(G), np.zeros(G)
    loss = np.zeros((G, 2))
    mix_out, rand_out = [], []

    def pred(g, x):
        s = float(theta[g] @ x)
        return 1 / (1 + math.exp(-s)) if base == "logistic" else s

    for i in range(n):
        awake = [g for g in range(G) if member[i, g]]
        w = np.array([anh_weight(R[g], C[g]) for g in awake])
        if anchor and len(awake) > 1:  # the always-on group's prior = the others' together
            w[0] *= len(awake) - 1
        p = w / w.sum() if w.sum() > 0 else np.full(len(awake), 1 / len(awake))
        yh = np.array([pred(g, X[i]) for g in awake])
        mix_out.append(float(p @ yh))
        if keys is not None:
            u = draw_uniform(seed, int(keys[i]), 0)
            q = int(np.searchsorted(np.cumsum(p), u, side="right"))
            rand_out.append(float(yh[min(q, len(awake) - 1)]))
        losses = (yh - y[i]) ** 2
        lhat = float(p @ losses)
        lmix = (float(p @ yh) - y[i]) ** 2
        for q, g in enumerate(awake):
            r = lhat - losses[q]
            R[g] += r
            C[g] += abs(r)
            loss[g] += (lmix, lhat)
            learn_expert(g, i, X, y, yh[q], rows, theta, gsum, lam, lr, base)
    return np.array(mix_out), np.array(rand_out), R, C, loss, rows


# -- the whole bandit learner -------------------------------------------------------------------------
class NaiveBandit:
    """BanditLearner written the obvious way: each ridge model solved from scratch from every row it
    learned (θ = (λI + XᵀX)⁻¹Xᵀy, A⁻¹ = (λI + XᵀX)⁻¹, so an action with no rows has A⁻¹ = I/λ),
    γ = gamma_scale·t^gamma_exponent with t the number of learned events, the exploration floor
    and cap applied to every event (they change nothing at min_prob = 0, max_explore = 1), and the
    action table as a list of ids where a new id, when the list is full, takes the place of the id
    offered longest ago that the same batch does not use (lowest slot first among equals), whose
    model starts afresh."""

    def __init__(self, n_features, policy="squarecb", oracle="ridge", actions=(), max_actions=256,
                 n_action_features=0, lam=1.0, gamma_scale=10.0, gamma_exponent=0.5, epsilon=0.05, alpha=1.0,
                 ts_scale=0.5, ts_samples=64, hidden=32, lr=0.05, perturbation=0.01, kl_loss=False,
                 min_prob=0.0, max_explore=1.0, seed=0):
        self.d, self.policy, self.oracle, self.cap = n_features, policy, oracle, max_actions
        self.dim = n_features * (n_action_features + 1)  # the shared model's dimension
        self.lam, self.gamma_scale, self.gamma_exponent = lam, gamma_scale, gamma_exponent
        self.epsilon, self.alpha, self.ts_scale, self.ts_samples = epsilon, alpha, ts_scale, ts_samples
        self.lr, self.sigma, self.kl = lr, perturbation, kl_loss
        self.min_prob, self.max_explore, self.seed = min_prob, max_explore, seed
        self.actions = list(actions)
        self.ids, self.last = [], []  # slot -> action id, slot -> tick it was last used
        self.rows = []  # slot -> [(x, y)] learned (ridge); the shared model's [(φ, y)] is self.shared
        self.shared = []
        self.t = self.tick = self.evictions = 0
        self.bounds_changed = 0  # events whose probabilities the floor or the cap changed
        if oracle == "neural":
            rng = np.random.default_rng(seed)
            self.W1 = rng.normal(0.0, 1.0 / np.sqrt(n_features), size=(hidden, n_features))
            self.b1 = np.zeros(hidden)
            self.W2 = np.zeros((0, hidden))
            self.b2 = np.zeros(0)
        self.slots_of(self.actions, [0] * len(self.actions))

    @property
    def gamma(self):
        return self.gamma_scale * self.t ** self.gamma_exponent if self.t > 0 else 0.0

    def slots_of(self, ids, ticks):
        """The slots of one row's ``ids``, used at ``ticks`` (the row's tick: one per row, decided or
        learned); a new id evicts the least recently used slot the row does not use."""
        since = ticks[0] if ticks else 0
        for a, tick in zip(ids, ticks, strict=True):
            if a in self.ids:
                s = self.ids.index(a)
                self.last[s] = max(self.last[s], tick)
        out = []
        for a, tick in zip(ids, ticks, strict=True):
            if a not in self.ids:
                if len(self.ids) < self.cap:
                    self.ids.append(a)
                    self.last.append(tick)
                    self.rows.append([])
                    if self.oracle == "neural":
                        self.W2 = np.vstack([self.W2, np.zeros(self.W2.shape[1])])
                        self.b2 = np.append(self.b2, 0.0)
                else:
                    s = min((s for s in range(len(self.ids)) if self.last[s] < since), key=lambda s: (self.last[s], s))
                    self.ids[s] = a
                    self.evictions += 1
                    self.rows[s] = []
                    if self.oracle == "neural":
                        self.W2[s] = 0.0
                        self.b2[s] = 0.0
            s = self.ids.index(a)
            self.last[s] = max(self.last[s], tick)
            out.append(s)
        return out

    def phi(self, x, af):
        return np.outer(x, np.concatenate([[1.0], af])).ravel()

    def ridge_model(self, rows, dim):
        if not rows:
            return np.eye(dim) / self.lam, np.zeros(dim)
        return ridge(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), self.lam)

    def process(self, keys, X, sets=None, AF=None):
        """``sets``: each event's action ids (None: the configured actions); ``AF``: the flat action
        features (shared oracle). Returns the learner's outputs. A batch is its rows in sequence
        (the learner must decide alike however it batches them)."""
        if len(X) > 1:
            outs, at = [], 0
            for i in range(len(X)):
                k = len(self.actions) if sets is None else len(sets[i])
                outs.append(self.process(keys[i:i + 1], X[i:i + 1], None if sets is None else [sets[i]],
                                         None if AF is None else AF[at:at + k]))
                at += k
            merged = {k: np.concatenate([o[k] for o in outs]) for k in ("probs", "scores", "chosen", "prob", "explored")}
            merged["indptr"] = np.concatenate([[0], np.cumsum([o["indptr"][-1] for o in outs])]).astype(np.int64)
            merged["chosen_action"] = [a for o in outs for a in o["chosen_action"]]
            return merged
        base, self.tick = self.tick, self.tick + len(X)
        if sets is None:
            sets = [self.actions] * len(X)
        flat = [a for s in sets for a in s]
        ticks = [base + 1 + i for i, s in enumerate(sets) for _ in s]
        slots = self.slots_of(flat, ticks) if flat else []
        indptr = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
        scores, widths = np.empty(len(flat)), np.empty(len(flat))
        if self.oracle == "ridge-shared":
            A_inv, theta = self.ridge_model(self.shared, self.dim)
        for i, (lo, hi) in enumerate(events(indptr)):
            for p in range(lo, hi):
                s = slots[p]
                if self.oracle == "ridge":
                    A_inv, theta = self.ridge_model(self.rows[s], self.d)
                    v = X[i]
                elif self.oracle == "ridge-shared":
                    v = self.phi(X[i], AF[p])
                if self.oracle == "neural":
                    z = self.W2[s] @ np.maximum(self.W1 @ X[i] + self.b1, 0.0) + self.b2[s]
                    if self.sigma > 0:
                        z += self.sigma * draw_normal(self.seed, int(keys[i]), 2_000_000 + s)
                    scores[p] = sigmoid(z) if self.kl else z
                else:
                    scores[p] = v @ theta
                    widths[p] = math.sqrt(max(v @ A_inv @ v, 0.0))
        if self.policy == "squarecb":
            probs = igw(scores, indptr, self.gamma)
        elif self.policy == "fastcb":
            probs = fastcb(scores, indptr, self.gamma)
        elif self.policy == "epsilon-greedy":
            probs = epsgreedy(scores, indptr, self.epsilon)
        elif self.policy == "linucb":
            probs = ucb(scores, widths, indptr, self.alpha)
        else:
            probs = ts(scores, widths, indptr, self.ts_scale, self.seed, keys, self.ts_samples)
        bounded = bounds(probs, scores, indptr, self.min_prob, self.max_explore)
        self.bounds_changed += sum(not np.allclose(bounded[lo:hi], probs[lo:hi], rtol=0, atol=1e-9)
                                   for lo, hi in events(indptr))
        chosen, prob, explored = sample(bounded, scores, indptr, self.seed, keys)
        return {"indptr": indptr, "probs": bounded, "scores": scores, "chosen": chosen, "prob": prob,
                "explored": explored, "chosen_action": [flat[lo + c] for (lo, _), c in zip(events(indptr), chosen, strict=True)]}

    def learn(self, keys, X, actions, reward, AF=None):
        if len(X) == 0:
            return
        if len(X) > 1:  # a batch is its rows in sequence
            for i in range(len(X)):
                self.learn(keys[i:i + 1], X[i:i + 1], list(actions)[i:i + 1], reward[i:i + 1],
                           None if AF is None else AF[i:i + 1])
            return
        ticks = [self.tick + 1 + i for i in range(len(actions))]
        self.tick += len(actions)
        slots = self.slots_of(list(actions), ticks)
        if self.oracle == "neural":
            self.W1, self.b1, self.W2, self.b2 = mlp_update(
                X, np.array(slots), reward, keys, self.W1, self.b1, self.W2, self.b2, self.kl, self.sigma,
                self.lr, self.seed)
        for i, s in enumerate(slots):
            if self.oracle == "ridge":
                self.rows[s].append((X[i], reward[i]))
            elif self.oracle == "ridge-shared":
                self.shared.append((self.phi(X[i], AF[i]), reward[i]))
        self.t += len(X)

    def state(self):
        """The learner's snapshot, as the learner names it."""
        out = {"action_ids": np.array(self.ids, dtype=str), "action_last_used": np.array(self.last, dtype=np.int64),
               "action_evictions": np.array(self.evictions), "t": np.array(self.t), "tick": np.array(self.tick)}
        if self.oracle == "neural":
            out.update(W1=self.W1, b1=self.b1, W2=self.W2, b2=self.b2)
        elif self.oracle == "ridge-shared":
            out["A_inv"], out["theta"] = self.ridge_model(self.shared, self.dim)
        else:
            models = [self.ridge_model(r, self.d) for r in self.rows]
            out["A_inv"] = np.array([m[0] for m in models]).reshape(len(models), self.d, self.d)
            out["theta"] = np.array([m[1] for m in models]).reshape(len(models), self.d)
        return out


def adahedge(la, lu, gap, ea=None, eu=None):
    """AdaHedge over two experts, written as the formulas of de Rooij, van Erven, Grünwald and
    Koolen (JMLR 2014): with cumulative losses la, lu and mixability gap Δ, the learning rate is
    η = ln 2 / Δ and the weights are w ∝ exp(−η L) (η = ∞ while Δ = 0: follow the leader,
    halves at a tie). Returns the first expert's weight, and with round losses ea, eu also the
    round's mixability gap h − m, h = w·e, m = −(1/η) ln(w·exp(−η e)) = −(1/η)(ln Σ exp(−η(L + e))
    − ln Σ exp(−η L)) (at η = ∞: min(L + e) − min(L))."""
    import math

    L = np.array([la, lu], dtype=float)
    if gap == 0:
        best = L == L.min()
        w = best / best.sum()
    else:
        eta = math.log(2) / gap
        v = np.exp(-eta * (L - L.min()))
        w = v / v.sum()
    if ea is None:
        return float(w[0])
    e = np.array([ea, eu], dtype=float)
    h = float(w @ e)
    if gap == 0:
        m = float((L + e).min() - L.min())
    else:
        m = float(-(np.logaddexp.reduce(-eta * (L + e)) - np.logaddexp.reduce(-eta * L)) / eta)
    return float(w[0]), max(h - m, 0.0)


def groupwise_prior(X, member, y, lam, prior, base="ridge", lr=0.1, seed=0, keys=None, rule="mixture"):
    """Groupwise regret under any of the three priors, the obvious way (as :func:`groupwise`:
    each group's ridge solved from scratch, AdaNormalHedge weights from the formula). ``anchor``
    and ``uniform``: one track of AdaNormalHedge weights with that prior. ``adaptive``: both
    tracks over the same experts, each with its own regrets; every group's AdaHedge
    (:func:`adahedge`) over the two tracks on its own rows (their mixture losses for the mixture
    rule, their expected losses for the randomized rule) gives its weight α_g of the anchor
    track, a row mixes the tracks with the largest α_g of its awake groups. Returns the mixture
    and randomized predictions, and per group the two tracks' R and C (the uniform track's zero
    for a fixed prior), the tracks' losses and gaps per group (G×3), the two cumulative losses."""
    import math

    n, d = X.shape
    G = member.shape[1]
    rows = [[] for _ in range(G)]
    theta = np.zeros((G, d))
    gsum = np.full((G, d), 1e-12)
    R, C, Ru, Cu = np.zeros(G), np.zeros(G), np.zeros(G), np.zeros(G)
    hedge = np.zeros((G, 3))  # anchor track's loss, uniform track's loss, mixability gap
    loss = np.zeros((G, 2))
    mix_out, rand_out = [], []

    def pred(g, x):
        s = float(theta[g] @ x)
        return 1 / (1 + math.exp(-s)) if base == "logistic" else s

    def weights(Rs, Cs, awake, anchored):
        w = np.array([anh_weight(Rs[g], Cs[g]) for g in awake])
        if anchored and len(awake) > 1:
            w[0] *= len(awake) - 1
        return w / w.sum() if w.sum() > 0 else np.full(len(awake), 1 / len(awake))

    for i in range(n):
        awake = [g for g in range(G) if member[i, g]]
        if prior == "adaptive":
            pa, pu = weights(R, C, awake, True), weights(Ru, Cu, awake, False)
            alphas = [adahedge(*hedge[g]) for g in awake]
            a = max(alphas)
            p = a * pa + (1 - a) * pu
        else:
            p = pa = weights(R, C, awake, prior == "anchor")
        yh = np.array([pred(g, X[i]) for g in awake])
        mix_out.append(float(p @ yh))
        if keys is not None:
            u = draw_uniform(seed, int(keys[i]), 0)
            q = int(np.searchsorted(np.cumsum(p), u, side="right"))
            rand_out.append(float(yh[min(q, len(awake) - 1)]))
        losses = (yh - y[i]) ** 2
        lmix = (float(p @ yh) - y[i]) ** 2
        lhat = float(p @ losses)
        for q, g in enumerate(awake):
            r = float(pa @ losses) - losses[q]
            R[g] += r
            C[g] += abs(r)
            if prior == "adaptive":
                r = float(pu @ losses) - losses[q]
                Ru[g] += r
                Cu[g] += abs(r)
                ma, mu = float(pa @ yh), float(pu @ yh)
                if rule == "mixture":
                    ea, eu = (ma - y[i]) ** 2, (mu - y[i]) ** 2
                    tie = abs(ma - mu) <= 1e-12 * max(abs(ma), abs(mu))
                else:
                    ea, eu = float(pa @ losses), float(pu @ losses)
                    tie = abs(ea - eu) <= 1e-12 * max(ea, eu)
                eu = ea if tie else eu  # equal up to rounding: one loss
                _, gap = adahedge(*hedge[g], ea, eu)
                hedge[g] += (ea, eu, gap)
            loss[g] += (lmix, lhat)
            learn_expert(g, i, X, y, yh[q], rows, theta, gsum, lam, lr, base)
    return np.array(mix_out), np.array(rand_out), (R, C, Ru, Cu), hedge, loss


HASHED_CONSTANT = 11650396


def hashed_row_value(table, feats, off, mask, constant):
    """Σ w[(i + off) & mask]·x over a row's (index, value) pairs, plus the constant feature."""
    v = table.get((HASHED_CONSTANT + off) & mask, [0.0, 0.0, 0.0])[0] if constant else 0.0
    for i, x in feats:
        v += table.get((i + off) & mask, [0.0, 0.0, 0.0])[0] * x
    return v


def hashed_learn(table, acc, feats, off, y, omega, mask, eta, constant):
    """One NAG step with an importance-invariant step (Ross et al. 2013; Karampatziakis and Langford
    2011), written plainly: ``table`` maps a row to [weight, G, s]; ``acc`` = [T, N]."""
    cells = [((i + off) & mask, x) for i, x in feats if x != 0.0]
    if constant:
        cells.append(((HASHED_CONSTANT + off) & mask, 1.0))
    for j, x in cells:  # normalizer first: a larger |x| shrinks the weight by s²/x²
        cell = table.setdefault(j, [0.0, 0.0, 0.0])
        if abs(x) > cell[2]:
            if cell[2] > 0:
                cell[0] *= cell[2] ** 2 / x ** 2
            cell[2] = abs(x)
    pred = hashed_row_value(table, feats, off, mask, constant)
    g = pred - y
    acc[0] += omega
    u = 0.0
    for j, x in cells:
        cell = table[j]
        acc[1] += omega * x * x / cell[2] ** 2
        cell[1] += omega * g * g * x * x
        if cell[1] > 0:
            u += x * x / (cell[2] * math.sqrt(cell[1]))
    if u <= 0 or g == 0 or acc[1] <= 0:
        return
    eta_t = eta * math.sqrt(acc[0] / acc[1])
    step = -g * (1 - math.exp(-eta_t * omega * u)) / u
    for j, x in cells:
        cell = table[j]
        cell[0] += step * x / (cell[2] * math.sqrt(cell[1]))


def crossed_features(features, crosses, cross_only, n_features):
    """Plain declared crosses: each feature (but cross_only fields) hashed by name, then each cross's
    terms hashed from their parts' 64-bit name hashes (h ← mix64(h·P ⊕ h_part)), in row order."""
    import hashlib

    def raw(name):
        return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")

    def put(h, v):
        cols.append(h % n_features)
        vals.append(v if h >> 63 == 0 else -v)

    cols, vals = [], []
    field = {name: name.split("=", 1)[0] for name in features}
    for name, v in features.items():
        if field[name] not in cross_only:
            put(raw(name), float(v))
    for cross in crosses:
        terms = [(None, 1.0)]
        for f in cross:
            terms = [(raw(n) if h is None else mix64(((h * 0x100000001B3) & MASK) ^ raw(n)), w * float(features[n]))
                     for h, w in terms for n in features if field[n] == f]
        for h, w in terms:
            put(h, w)
    return cols, vals
