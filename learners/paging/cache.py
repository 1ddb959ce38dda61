"""Cache shadows: a cache's state replayed request by request, saying hit or miss and what to evict.

Unit-size pages, ``capacity`` frames. Keys are int64 (a caller with string keys maps them first,
e.g. with :func:`learners._hashing.event_keys`); the smallest int64 is reserved.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..base import Batch, Column, InvalidInput, Tracker, checked_state
from . import _kernels as K
from . import _predict as PR
from . import _robust as R
from ._table import EMPTY, ht_get, ht_put, new_table

POLICIES = ("lru", "fifo", "sieve", "s3fifo", "arc", "marker", "ftp-discard", "marker-discard", "robust-discard",
            "learned-discard", "learned-phase", "learned-ftp")
LEARNED = ("learned-discard", "learned-phase", "learned-ftp")
BYTE_POLICIES = ("lru", "fifo", "sieve", "s3fifo", "ftp-discard", "robust-discard", "learned-discard")
_QUEUE = {"lru": 0, "fifo": 1, "sieve": 2}
_FRAME = ("tkeys", "tvals", "fkey", "free", "prv", "nxt", "lst", "lhead", "ltail", "lcnt", "bit", "meta")
_PREFIX = {"ftp": "ftp", "lru": "lru", "arc": "arc", "s3fifo": "s3", "ftp-0.3-quarter": "ftp1", "ftp-0.5": "ftp2",
           "s3fifo-learned": "s3l"}  # a raced shadow's name -> the prefix of its state
_ONE = np.ones(1, dtype=np.int64)  # every request one unit (page mode)
_S3_GHOST = ("gtk", "gtv", "ring", "gsize", "gmeta")
_GHOST = ("fkey", "free", "prv", "nxt", "lst", "lhead", "ltail", "lcnt", "meta")
_CHUNK = 8192  # learned-discard: requests its shadows replay before the real cache follows them


def _frames(prefix: str, k: int, arc: bool = False) -> dict[str, np.ndarray]:
    """The arrays of one cache of k frames (see :mod:`._kernels`), names prefixed."""
    tkeys, tvals = new_table(2 * k if arc else k)
    meta = np.zeros(K.N_META, dtype=np.int64)
    meta[K.M_NFREE] = k
    meta[K.M_HAND] = -1
    arrays = {"tkeys": tkeys, "tvals": tvals, "fkey": np.full(k, EMPTY, dtype=np.int64),
              "free": np.arange(k - 1, -1, -1, dtype=np.int64), "prv": np.full(k, -1, dtype=np.int64),
              "nxt": np.full(k, -1, dtype=np.int64), "lst": np.full(k, -1, dtype=np.int64),
              "lhead": np.full(3, -1, dtype=np.int64), "ltail": np.full(3, -1, dtype=np.int64),
              "lcnt": np.zeros(3, dtype=np.int64), "bit": np.zeros(k, dtype=np.int64), "meta": meta}
    return {f"{prefix}/{name}": arr for name, arr in arrays.items()}


def _arc(prefix: str, k: int) -> dict[str, np.ndarray]:
    """ARC's ghost lists B1/B2 (keys only, k frames; the cache's key table maps them too) and the
    adaptive target size of T1."""
    ghost = {name.replace(f"{prefix}/", f"{prefix}/ghost/"): arr for name, arr in _frames(prefix, k).items()
             if name.rsplit("/", 1)[1] not in ("bit", "tkeys", "tvals")}
    return {**_frames(prefix, k, arc=True), **ghost, f"{prefix}/target": np.zeros(1)}


def _s3(prefix: str, k: int) -> dict[str, np.ndarray]:
    """S3-FIFO's frames and its ghost FIFO of ⌊0.9·k⌋ keys (libCacheSim's ghost-size-ratio) in a
    ring of twice as many slots, with their sizes (see :mod:`._kernels`; the byte mode also bounds
    the ghost's bytes)."""
    g = int(k * 0.9)
    gtk, gtv = new_table(max(1, g))
    return {**_frames(prefix, k), f"{prefix}/gtk": gtk, f"{prefix}/gtv": gtv,
            f"{prefix}/ring": np.full(2 * g, EMPTY, dtype=np.int64), f"{prefix}/gsize": np.zeros(2 * g, dtype=np.int64),
            f"{prefix}/gmeta": np.zeros(K.N_GMETA, dtype=np.int64)}


def _upgrade_s3_ghosts(current: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A snapshot from before S3-FIFO followed libCacheSim (a ghost ring of one slot per key,
    ``gmeta`` = [head, count] in page mode or [head, count, bytes] in the byte mode, slots left
    stale by a ghost hit still counted) in the current layout: its live ghost keys, oldest first,
    as many of the newest as fit; the cache counts as having evicted once its ghost holds a key
    or it is full."""
    out = dict(state)
    for name, cur in current.items():
        old_meta = state.get(name)
        if not name.endswith("/gmeta") or cur.shape != (K.N_GMETA,) or old_meta is None or \
                np.shape(old_meta) not in ((2,), (3,)):
            continue
        pre = name[: -len("/gmeta")]
        ring = np.asarray(state[f"{pre}/ring"], dtype=np.int64)
        old_sizes = np.asarray(state.get(f"{pre}/gsize", np.ones_like(ring)), dtype=np.int64)
        head, count = (int(v) for v in np.asarray(old_meta)[:2])
        gtk, gtv = np.asarray(state[f"{pre}/gtk"], dtype=np.int64), np.asarray(state[f"{pre}/gtv"], dtype=np.int64)
        n = ring.shape[0]
        live = [((head + j) % n) for j in range(count) if ht_get(gtk, gtv, ring[(head + j) % n]) == (head + j) % n]
        g = current[f"{pre}/ring"].shape[0] // 2
        live = live[max(0, len(live) - g):]
        ntk, ntv = new_table(max(1, g))
        nring, nsize = np.full(2 * g, EMPTY, dtype=np.int64), np.zeros(2 * g, dtype=np.int64)
        for j, pos in enumerate(live):
            nring[j], nsize[j] = ring[pos], old_sizes[pos]
            ht_put(ntk, ntv, ring[pos], j)
        full = int(np.asarray(state[f"{pre}/meta"])[K.M_SIZE]) >= int(np.asarray(state[f"{pre}/fkey"]).shape[0])
        out.update({f"{pre}/gtk": ntk, f"{pre}/gtv": ntv, f"{pre}/ring": nring, f"{pre}/gsize": nsize,
                    name: np.array([0, len(live), len(live), int(bool(live) or full), int(nsize.sum())],
                                   dtype=np.int64)})
    return out


def _new_cm(k: int, most: int, leader: int) -> np.ndarray:
    """The race's switching state (see :func:`._kernels.leader_after`): shadow ``leader`` leads, the
    first check after max(k, 64) requests, at most ``most``."""
    cm = np.zeros(K.N_CM, dtype=np.int64)
    cm[K.CM_LEADER] = leader
    cm[K.CM_NEXT] = K.first_check(k, most)
    return cm


def _upgrade_race(current: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray],
                  most: int) -> dict[str, np.ndarray]:
    """A race snapshot from before the adaptive switching rule (``follow/cm`` = [leader, switches,
    margin], checks at multiples of ``most``) in the current layout: its next check at the next
    multiple, as it would have come; and a learned-discard snapshot from before its learned S3-FIFO
    shadow (which raced FtP over the bit p > 0.5 in that place, ``ftp2``): that shadow is dropped,
    the learned S3-FIFO joins empty with as many faults as the worst other shadow (so it leads
    only once it has earned it), and a real cache that followed the dropped shadow follows the
    best of the others (the caller re-sorts its pages)."""
    out = dict(state)
    cm = state.get("follow/cm")
    if cm is None or "follow/cm" not in current or np.shape(cm) != (3,):
        return out
    t = int(np.asarray(state["real/meta"])[K.M_T])
    faults = np.array(state["follow/faults"], dtype=np.int64)
    new = np.zeros(K.N_CM, dtype=np.int64)
    new[:3] = np.asarray(cm, dtype=np.int64)
    if "ftp2/fkey" in state and "s3l/fkey" in current:
        out = {name: arr for name, arr in out.items() if not name.startswith("ftp2/")}
        out.update({name: arr.copy() for name, arr in current.items() if name.startswith("s3l/")})
        out["ftp/time"] = np.asarray(state["ftp/time"])[0].copy()
        faults[4] = faults[:4].max()
        if new[K.CM_LEADER] == 4:
            new[K.CM_LEADER] = int(np.argmin(faults[:4]))
        out["follow/faults"] = faults
    new[K.CM_NEXT] = t + most - t % most
    new[K.CM_T_AT] = t - t % most
    new[K.CM_FAULTS_AT] = faults[new[K.CM_LEADER]]
    out["follow/cm"] = new
    return out


def _upgrade_predictor(current: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A snapshot of a learned policy from before the predictor learned Belady's decisions (no
    occupancy tree; eight feature tables over another label) in the current layout: the caches
    and shadows as they were, the predictor fresh (its old model predicted another label, so it
    learns again from the next request; until it has, its FtP shadows act on uninformed bits and
    the race follows the classical shadows)."""
    if "predictor/hist" not in current or "predictor/hist" not in state or "predictor/occ" in state:
        return dict(state)
    out = {name: arr for name, arr in state.items() if not name.startswith("predictor/")}
    out.update({name: arr.copy() for name, arr in current.items() if name.startswith("predictor/")})
    return out


class PagingCache(Tracker):
    """A cache shadow under one eviction policy.

    A :class:`~learners.base.Tracker`: ``process`` replays requests (accesses and deletes) in
    order, ``view()`` is ``{"keys": the cached keys}``, ``resize(capacity=..., byte_capacity=...)``
    changes the capacity as the real cache did. The learned policies learn from the request stream
    itself (labels revealed in hindsight inside ``process``): there is no feedback to learn from.

    Parameters
    ----------
    policy
        ``lru``, ``fifo``, ``sieve`` (Zhang et al., NSDI'24), ``s3fifo`` (Yang et al., SOSP'23),
        ``arc`` (Megiddo & Modha, FAST'03), ``marker`` (randomized Marker, Fiat
        et al. 1991; draws seeded by ``seed`` and the request's position) or ``ftp-discard``
        (follow one-bit discard predictions given with each request, column ``bit``) or
        ``marker-discard`` (the same bits inside Marker's phases: robust whatever the bits) or
        ``robust-discard`` (follow the bits while they do better than LRU, else LRU: within
        k + the margin + the leader's faults in one stretch per switch of the better of the two,
        the switching margin starting at k/16 and doubling at each switch; see
        :func:`._kernels.leader_after`), ``learned-discard`` (a learned one-bit predictor of
        Belady's decisions, :mod:`._predict`, that sees the request stream only, drives an FtP
        shadow and a learned S3-FIFO shadow raced against LRU, ARC and S3-FIFO shadows; see
        :mod:`._robust`), ``learned-phase``
        (the learned bits inside Marker's phases) or ``learned-ftp`` (follow-the-prediction on
        the learned bits alone, no race: bit p > 0.3 with a grace of a quarter of the predicted
        horizon, as learned-discard's first FtP shadow).
        After "Paging with Succinct Predictions", Antoniadis et al., ICML 2023, whose rules are
        reconstructed from its abstract: see ``learners/paging/__init__.py``.
    capacity
        Frames: unit-size pages, or in the byte mode the most objects held.
    seed
        Seed of the randomized policies.
    history_cap
        Learned policies: keys whose history the predictor remembers (the oldest is forgotten).
    reach
        Learned policies: the horizon of trust in "keep" bits, ``reach`` x capacity keys' worth of
        requests; the first FtP shadow (and learned-ftp) evicts a kept page once it was last
        requested a quarter of that before the least recently used safe page. (The labels are
        Belady's decisions in hindsight, :mod:`._predict`.)
    switch_every
        Robust policies: the most requests between two checks of the switching rule (checks come
        where the leader would have faulted about k times at its last rate, at least 64 requests
        apart; at absolute positions, so the outputs do not depend on batching).
    threads
        ``learned-discard``: 2 runs its two independent halves on two threads.
    byte_capacity
        0: unit-size pages; otherwise the cache holds this many bytes of objects of the sizes given
        per request (column ``size``); policies: lru, fifo, sieve, s3fifo, ftp-discard,
        robust-discard, learned-discard.

    Examples
    --------
    >>> c = PagingCache("lru", capacity=2)
    >>> out = c.process({"key": np.array([1, 2, 1, 3, 2])})
    >>> out["hit"].tolist(), out["evicted"][out["evicts"]].tolist()
    ([0, 0, 1, 0, 0], [2, 1])
    """

    family = "paging"
    inputs = (
        Column("key", "int64", "n", "requested keys (-2**63 is reserved)"),
        Column("op", "int64", "n", "0 access, 1 delete (default: all accesses)", required=False),
        Column("bit", "int64", "n", "one-bit discard predictions, 1: safe to evict (policies ftp-discard, "
               "marker-discard, robust-discard only)", required=False),
        Column("size", "int64", "n", "object sizes in bytes (byte-capacity mode only)", required=False),
    )
    outputs = (
        Column("hit", "int8", "n", "1 hit, 0 miss, -1 delete"),
        Column("evicts", "bool", "n", "the request evicted an object"),
        Column("evicted", "int64", "n", "the evicted key, 0 where evicts is false (unit-size pages only)",
               required=False),
        Column("evicted_count", "int64", "n", "objects the request evicted (byte-capacity mode only)",
               required=False),
        Column("evicted_keys", "int64", "evictions", "every evicted key, in order (byte-capacity mode only)",
               required=False),
        Column("prob", "float64", "n", "predicted probability that the request is safe to evict (learned "
               "policies only)", required=False),
    )
    size_settings = ("capacity", "byte_capacity")

    def __init__(self, policy: str = "lru", capacity: int = 1024, seed: int = 0, history_cap: int = 65_536,
                 reach: float = 2.0, switch_every: int = 4096, threads: int = 1, byte_capacity: int = 0):
        self.policy = policy
        self.capacity = capacity
        self.byte_capacity = byte_capacity
        self.seed = seed
        self.history_cap = history_cap
        self.reach = reach
        self.switch_every = switch_every
        self.threads = threads
        self._pool: Any = None
        if not isinstance(switch_every, int | np.integer) or switch_every < 1 or threads not in (1, 2):
            raise ValueError(f"switch_every must be a positive integer and threads 1 or 2, got {switch_every!r}, "
                             f"{threads!r}")
        if policy not in POLICIES:
            raise ValueError(f"policy {policy!r} is not allowed; allowed: {', '.join(POLICIES)}")
        if not isinstance(capacity, int | np.integer) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        if not isinstance(history_cap, int | np.integer) or history_cap < 1 or not reach > 0:
            raise ValueError(f"history_cap must be a positive integer and reach > 0, got {history_cap!r}, {reach!r}")
        if not isinstance(byte_capacity, int | np.integer) or byte_capacity < 0:
            raise ValueError(f"byte_capacity must be an integer >= 0 (0: unit-size pages), got {byte_capacity!r}")
        if byte_capacity and policy not in BYTE_POLICIES:
            raise ValueError(f"policy {policy!r} has no byte-capacity mode; with byte_capacity: "
                             f"{', '.join(BYTE_POLICIES)}")
        k = int(capacity)
        if byte_capacity:
            self._init_bytes(k)
            return
        st = _frames("real", k)  # the real cache: the one whose hits and evictions are reported
        if policy == "s3fifo":
            st.update(_s3("real", k))
        elif policy == "arc":
            st.update(_arc("real", k))
        elif policy == "marker":
            st.update({"real/unm": np.zeros(k, dtype=np.int64), "real/upos": np.full(k, -1, dtype=np.int64)})
        elif policy in ("ftp-discard", "learned-ftp"):
            st["real/time"] = np.zeros(k, dtype=np.int64)
        elif policy == "robust-discard":
            st.update({**_frames("ftp", k), "ftp/time": np.zeros(k, dtype=np.int64), **_frames("lru", k)})
        elif policy == "learned-discard":
            st.update({**_frames("lru", k), **_arc("arc", k), **_s3("s3", k), **_frames("ftp1", k),
                       "ftp/time": np.zeros(k, dtype=np.int64), **_s3("s3l", k),
                       "s3l/lbit": np.zeros(k, dtype=np.int64)})
        if policy in ("robust-discard", "learned-discard"):
            st["follow/cm"] = _new_cm(k, int(switch_every), self._first_leader())
            st["follow/faults"] = np.zeros(len(self.shadows()), dtype=np.int64)
        if policy in LEARNED:
            st.update({f"predictor/{name}": arr for name, arr in
                       PR.new_state(int(history_cap), max(1024, 2 * int(history_cap)), k).items()})
        st["counts"] = np.zeros(2, dtype=np.int64)  # hits, misses
        self._st = st

    def _init_bytes(self, k: int) -> None:
        """State of the byte-capacity mode: frames with their objects' sizes (see :mod:`._kernels`)."""
        policy = self.policy
        st = _frames("real", k)
        if policy == "s3fifo":
            st.update(_s3("real", k))
        elif policy == "ftp-discard":
            st["real/time"] = np.zeros(k, dtype=np.int64)
        elif policy in ("robust-discard", "learned-discard"):
            for name in self.shadows():
                pre = _PREFIX[name]
                st.update(_s3(pre, k) if name == "s3fifo" else _frames(pre, k))
                if pre.startswith("ftp"):
                    st[f"{pre}/time"] = np.zeros(k, dtype=np.int64)
            st["follow/cm"] = _new_cm(k, int(self.switch_every), self._first_leader())
            st["follow/faults"] = np.zeros(len(self.shadows()), dtype=np.int64)
        if policy in LEARNED:
            st.update({f"predictor/{name}": arr for name, arr in
                       PR.new_state(int(self.history_cap), max(1024, 2 * int(self.history_cap)), k).items()})
        for name in [n for n in st if n.endswith("/fkey") and "ghost" not in n]:
            st[name.replace("/fkey", "/fsize")] = np.zeros(k, dtype=np.int64)
        st["counts"] = np.zeros(2, dtype=np.int64)
        self._st = st

    def _t(self, prefix: str, names: tuple[str, ...] = _FRAME) -> tuple[np.ndarray, ...]:
        return tuple(self._st[f"{prefix}/{name}"] for name in names)

    # -- the protocol -----------------------------------------------------------------------------
    def _process(self, batch: Batch) -> dict[str, np.ndarray]:
        """Replays requests in order (columns :attr:`inputs`, outputs :attr:`outputs`)."""
        keys, ops = self._check(batch)
        if self.byte_capacity:
            return self._process_bytes(batch, keys, ops)
        n = keys.shape[0]
        hit = np.empty(n, dtype=np.int8)
        ev = np.empty(n, dtype=np.int64)
        real = self._t("real")
        k = int(self.capacity)
        policy = self.policy
        out: dict[str, np.ndarray] = {}
        if policy in _QUEUE:
            K.queue_run(_QUEUE[policy], keys, ops, None, k, k, *real, None, hit, ev, None, None, None)
        elif policy == "s3fifo":
            K.s3fifo_run(keys, ops, None, k, k, max(1, k // 10), *real, None, *self._t("real", _S3_GHOST), None,
                         None, hit, ev, None, None, None)
        elif policy == "arc":
            K.arc_run(keys, ops, k, *real, *self._t("real/ghost", _GHOST), self._st["real/target"],
                      hit, ev)
        elif policy == "marker":
            K.marker_run(self.seed, keys, ops, k, *real, self._st["real/unm"], self._st["real/upos"], hit, ev)
        elif policy == "ftp-discard":
            K.ftp_discard_run(keys, ops, None, k, self._bits(batch, n), np.full(n, R.BIG_GRACE), k, *real, None,
                              self._st["real/time"], hit, ev, None, None, None)
        elif policy == "marker-discard":
            K.marker_discard_run(keys, ops, self._bits(batch, n), k, *real, hit, ev)
        elif policy == "robust-discard":
            c = int(self.switch_every)
            R.robust_run(keys, ops, self._bits(batch, n), c, max(1, k // 16), self._t("ftp"), self._st["ftp/time"],
                         self._t("lru"), real, self._st["follow/cm"], self._st["follow/faults"],
                         np.empty((2, c), dtype=np.int8), np.empty((2, c), dtype=np.int64), np.full(c, R.BIG_GRACE),
                         hit, ev)
        else:
            prob = np.empty(n)
            horizon = np.empty(n, dtype=np.int64)
            ps = self._t("predictor", PR.ORDER)
            if policy == "learned-phase":
                PR.predict_run(keys, ops, _ONE, k, k - 1, float(self.reach), *ps, prob, horizon)
                K.marker_discard_run(keys, ops, (prob > 0.5).astype(np.int64), k, *real, hit, ev)
            elif policy == "learned-ftp":  # (the bits and grace of learned-discard's first FtP shadow)
                PR.predict_run(keys, ops, _ONE, k, k - 1, float(self.reach), *ps, prob, horizon)
                K.ftp_discard_run(keys, ops, None, k, (prob > 0.3).astype(np.int64), horizon // 4, k, *real, None,
                                  self._st["real/time"], hit, ev, None, None, None)
            else:
                self._learned(keys, ops, ps, real, prob, horizon, hit, ev)
            out["prob"] = prob
        evicts = ev != EMPTY
        ev[~evicts] = 0
        hit[hit < -1] = -1  # (a delete of a cached key: -2 from the kernels)
        counts = self._st["counts"]
        counts[0] += int((hit == 1).sum())
        counts[1] += int((hit == 0).sum())
        return {"hit": hit, "evicts": evicts, "evicted": ev, **out}

    def _learned(self, keys, ops, ps, real, prob, horizon, hit, ev) -> None:
        """learned-discard over one batch, in chunks of at most ``_CHUNK`` requests: the predictor's
        bits for a chunk, then the shadows over it, then the real cache following the leader stretch
        by stretch (:func:`._robust.learned_follow`). With ``threads`` 2 the predictor runs one
        chunk ahead on a second thread (each step only reads what the steps before it wrote)."""
        k, c, n = int(self.capacity), int(self.switch_every), keys.shape[0]
        if n == 0:
            return
        w = min(n, _CHUNK)
        hits = np.empty((len(R.LEARNED_SHADOWS), w), dtype=np.int8)
        evs = np.empty((len(R.LEARNED_SHADOWS), w), dtype=np.int64)
        bits, grace = np.empty((2, w), dtype=np.int64), np.empty((2, w), dtype=np.int64)  # (two chunks' worth)
        stk, stv = new_table(2 * w)
        lru, arc, s3, f1, s3l = (self._t(p) for p in ("lru", "arc", "s3", "ftp1", "s3l"))
        ghost, s3g, s3lg = self._t("arc/ghost", _GHOST), self._t("s3", _S3_GHOST), self._t("s3l", _S3_GHOST)
        cm, reach, small = self._st["follow/cm"], float(self.reach), max(1, k // 10)
        starts = range(0, n, w)

        def predict(j: int) -> None:
            i, b = starts[j], min(n, starts[j] + w)
            R.learned_bits(keys[i:b], ops[i:b], k, reach, ps, prob[i:b], horizon[i:b], bits[j % 2], grace[j % 2])

        ahead = self.threads == 2 and len(starts) > 1
        if ahead and self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="eddy-paging")
        predict(0)
        for j, i in enumerate(starts):
            b = min(n, i + w)
            job = self._pool.submit(predict, j + 1) if ahead and j + 1 < len(starts) else None
            try:
                if not ahead and j > 0:
                    predict(j)
                ks, os_ = keys[i:b], ops[i:b]
                R.learned_shadows(ks, os_, k, f1, self._st["ftp/time"], s3l, s3lg, self._st["s3l/lbit"], small,
                                  bits[j % 2], grace[j % 2], hits, evs)
                R.learned_classical(ks, os_, k, lru, arc, ghost, self._st["arc/target"], s3, s3g, small, hits, evs)
                R.learned_follow(ks, os_, c, max(1, k // 16), lru, arc, s3, f1, s3l, real, cm,
                                 self._st["follow/faults"], hits, evs, hit[i:b], ev[i:b], stk, stv)
            finally:  # (the predictor's thread never outlives the call)
                if job is not None:
                    job.result()

    def _process_bytes(self, batch: Batch, keys: np.ndarray, ops: np.ndarray) -> dict[str, np.ndarray]:
        """Byte-capacity mode: ``size`` per request; outputs ``hit``, ``evicted_count`` per request
        and ``evicted_keys`` (all evictions in order; a miss may evict several objects)."""
        n = keys.shape[0]
        if "size" not in batch:
            raise InvalidInput("byte-capacity mode needs the column 'size' (bytes per request)")
        sizes = np.asarray(batch["size"])
        if sizes.shape != (n,) or not np.issubdtype(sizes.dtype, np.integer) or (sizes[ops == 0] < 1).any():
            raise InvalidInput(f"size must be {n} positive integers (bytes)",
                               rows=np.flatnonzero(sizes < 1) if sizes.shape == (n,) else None)
        sizes = np.ascontiguousarray(sizes.astype(np.int64))
        hit = np.empty(n, dtype=np.int8)
        nev = np.empty(n, dtype=np.int64)
        k, cap = int(self.capacity), int(self.byte_capacity)
        evk = np.empty(n + k, dtype=np.int64)
        evpos = np.zeros(1, dtype=np.int64)
        policy = self.policy
        real = (*self._t("real"), self._st["real/fsize"])
        out: dict[str, np.ndarray] = {}
        if policy in _QUEUE:
            K.queue_run(_QUEUE[policy], keys, ops, sizes, cap, k, *real, hit, None, nev, evk, evpos)
        elif policy == "s3fifo":
            K.s3fifo_run(keys, ops, sizes, cap, k, 0, *real, *self._t("real", _S3_GHOST), None, None, hit, None, nev,
                         evk, evpos)
        elif policy == "ftp-discard":
            K.ftp_discard_run(keys, ops, sizes, cap, self._bits(batch, n), np.full(n, R.BIG_GRACE), k, *real,
                              self._st["real/time"], hit, None, nev, evk, evpos)
        else:
            out = self._race_bytes(batch, keys, ops, sizes, real, hit, nev, evk, evpos)
        hit[hit < -1] = -1
        counts = self._st["counts"]
        counts[0] += int((hit == 1).sum())
        counts[1] += int((hit == 0).sum())
        return {"hit": hit, "evicts": nev > 0, "evicted_count": nev, "evicted_keys": evk[:evpos[0]].copy(), **out}

    def _race_bytes(self, batch, keys, ops, sizes, real, hit, nev, evk, evpos) -> dict[str, np.ndarray]:
        """robust-/learned-discard in bytes: the shadows replay each stretch with their byte kernels,
        the real cache follows the leader (:func:`._kernels.follow_run`), the switching rule
        runs at multiples of ``switch_every`` (as in the unit-size mode)."""
        k, cap, c, n = int(self.capacity), int(self.byte_capacity), int(self.switch_every), keys.shape[0]
        names = self.shadows()
        e = len(names)
        learned = self.policy == "learned-discard"
        if learned:
            prob, horizon = np.empty(n), np.empty(n, dtype=np.int64)
            PR.predict_run(keys, ops, sizes, k, cap, float(self.reach), *self._t("predictor", PR.ORDER), prob, horizon)
            bits = {"ftp-0.3-quarter": (prob > 0.3).astype(np.int64), "ftp-0.5": (prob > 0.5).astype(np.int64)}
            grace = {"ftp-0.3-quarter": horizon // 4, "ftp-0.5": np.full(n, R.BIG_GRACE)}
        else:
            bits = {"ftp": self._bits(batch, n)}
            grace = {"ftp": np.full(n, R.BIG_GRACE)}
        hits = np.empty((e, c), dtype=np.int8)
        nevs = np.empty((e, c), dtype=np.int64)
        evks = np.empty((e, k + c), dtype=np.int64)
        pos = np.zeros(1, dtype=np.int64)
        cm, faults, meta = self._st["follow/cm"], self._st["follow/faults"], self._st["real/meta"]
        i = 0
        while i < n:
            b = min(n, i + int(cm[K.CM_NEXT] - meta[K.M_T]))
            m = b - i
            ks, os_, ss = keys[i:b], ops[i:b], sizes[i:b]
            for j, name in enumerate(names):
                pre = _PREFIX[name]
                fr = (*self._t(pre), self._st[f"{pre}/fsize"])
                pos[0] = 0
                if name == "lru":
                    K.queue_run(0, ks, os_, ss, cap, k, *fr, hits[j, :m], None, nevs[j, :m], evks[j], pos)
                elif name == "s3fifo":
                    K.s3fifo_run(ks, os_, ss, cap, k, 0, *fr, *self._t(pre, _S3_GHOST), None, None, hits[j, :m], None,
                                 nevs[j, :m], evks[j], pos)
                else:
                    K.ftp_discard_run(ks, os_, ss, cap, bits[name][i:b], grace[name][i:b], k, *fr,
                                      self._st[f"{pre}/time"], hits[j, :m], None, nevs[j, :m], evks[j], pos)
            faults += (hits[:, :m] == 0).sum(axis=1)
            lead = int(cm[0])
            K.follow_run(ks, os_, ss, cap, None, nevs[lead, :m], evks[lead], *real, hit[i:b], None, nev[i:b], evk,
                         evpos)
            # The first margin is a sixteenth of the objects held, and the stretches' k the objects
            # held (k only bounds their number here).
            held = max(1, int(meta[K.M_SIZE]))
            if int(meta[K.M_T]) == int(cm[K.CM_NEXT]) and K.leader_after(faults, cm, max(1, held // 16), held, c,
                                                                         int(meta[K.M_T])):
                pre = _PREFIX[names[int(cm[0])]]
                K.resort(self._st[f"{pre}/tkeys"], self._st[f"{pre}/tvals"], *real[:-1])
            i = b
        return {"prob": prob} if learned else {}

    def warm_up(self) -> None:
        """Compiles the kernels on a tiny batch (with sizes in the byte mode), then resets the state."""
        state = self.snapshot()
        for _, batch in self._conformance_stream(0, n_events=4):
            n = len(batch["key"])
            self.process({**batch, "size": np.ones(n, dtype=np.int64)} if self.byte_capacity else batch)
        self.restore(state)

    def snapshot(self) -> dict[str, np.ndarray]:
        return {name: arr.copy() for name, arr in self._st.items()}

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        old_leader = state.get("follow/cm", np.zeros(1))[0]
        state = _upgrade_race(self._st, state, int(self.switch_every))
        state = _upgrade_predictor(self._st, _upgrade_s3_ghosts(self._st, state))
        self._st = checked_state(self._st, state, "another policy or capacity?")
        leader = self._st["follow/cm"][0] if "follow/cm" in self._st else old_leader
        if leader != old_leader and not self.byte_capacity:  # (an upgrade moved the leader: re-sort)
            pre = _PREFIX[self.shadows()[int(leader)]]
            K.resort(self._st[f"{pre}/tkeys"], self._st[f"{pre}/tvals"], *self._t("real"))

    def metrics(self) -> dict[str, float]:
        hits, misses = (int(v) for v in self._st["counts"])
        total = hits + misses
        meta = self._st["real/meta"]
        out = {"requests": float(total), "hits": float(hits), "misses": float(misses),
               "hit_ratio": hits / total if total else 0.0, "size": float(meta[K.M_SIZE]),
               "capacity": float(self.capacity), "phase": float(meta[K.M_PHASE])}
        if "follow/cm" in self._st:
            cm = self._st["follow/cm"]
            faults = self._st["follow/faults"]
            out.update({"leader": float(cm[0]), "following_lru": float(self._leader() == "lru"),
                        "switches": float(cm[1]), "switch_margin": float(cm[2]),
                        "stretch_faults": float(max(cm[K.CM_DMAX], faults[cm[0]] - cm[K.CM_FAULTS_AT])),
                        "next_check": float(cm[K.CM_NEXT])})
            for name, f in zip(self.shadows(), faults, strict=True):
                out[f"shadow_misses_{name}"] = float(f)
        if "predictor/conf" in self._st:
            tn, fn, fp, tp = (int(v) for v in self._st["predictor/conf"])
            pm = self._st["predictor/pm"]
            out.update({"bit_precision": tp / (tp + fp) if tp + fp else 0.0,
                        "bit_recall": tp / (tp + fn) if tp + fn else 0.0, "bit_labels": float(tn + fn + fp + tp),
                        "history_keys": float(min(int(pm[1]), int(self.history_cap))),
                        "history_cap": float(self.history_cap)})
        return out

    def _resize(self, **size: int) -> None:
        """Changes ``capacity`` and, in the byte mode, ``byte_capacity`` (each kept if not given), as
        the real cache did: the cache is rebuilt at the new sizes and the objects it held are
        replayed into it (each policy list from its oldest end; when shrinking, the policy evicts
        as they come, so the most recent survive). The learned predictor keeps its model and
        history (its occupancy ring of kept intervals starts empty, at the new size); hit and miss
        counts are unchanged. Oracle-bit policies get bit 0 ("keep") for the
        replayed pages."""
        capacity = size.get("capacity", self.capacity)
        byte_capacity = size.get("byte_capacity")
        if not isinstance(capacity, int | np.integer) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        if byte_capacity is not None and not self.byte_capacity:
            raise ValueError("byte_capacity is for the byte-capacity mode")
        if byte_capacity is not None and (not isinstance(byte_capacity, int | np.integer) or byte_capacity < 1):
            raise ValueError(f"byte_capacity must be a positive integer in the byte-capacity mode, got "
                             f"{byte_capacity!r}")
        fkey, prv, lhead, ltail = (self._st[f"real/{n}"] for n in ("fkey", "prv", "lhead", "ltail"))
        order = []
        for L in range(lhead.shape[0]):
            f = int(ltail[L])
            while f >= 0:
                order.append(f)
                f = int(prv[f])
        keys = fkey[np.array(order, dtype=np.int64)]
        cols: dict[str, np.ndarray] = {"key": keys, "bit": np.zeros(len(order), dtype=np.int64)}
        if self.byte_capacity:
            cols["size"] = self._st["real/fsize"][np.array(order, dtype=np.int64)]
        kept = {name: arr for name, arr in self._st.items() if (name.startswith("predictor/") or name == "counts")
                and name not in ("predictor/occ", "predictor/lazy")}  # (the occupancy ring is sized for k)
        params = {**self.get_params(), "capacity": int(capacity)}
        if byte_capacity is not None:
            params["byte_capacity"] = int(byte_capacity)
        fresh = type(self)(**params)
        self.capacity, self.byte_capacity = params["capacity"], params["byte_capacity"]
        self._st = fresh._st
        if order:
            self.process(cols)
        self._st.update({name: arr.copy() for name, arr in kept.items()})

    def _first_leader(self) -> int:
        """The shadow a race follows at first: S3-FIFO for learned-discard (the strongest classical
        policy on average), else the first (robust-discard's FtP over the given bits)."""
        return self.shadows().index("s3fifo") if self.policy == "learned-discard" else 0

    def shadows(self) -> tuple[str, ...]:
        """Names of the shadow caches a robust policy races (empty for the others)."""
        if self.policy == "robust-discard":
            return R.ROBUST_SHADOWS
        if self.policy != "learned-discard":
            return ()
        return R.LEARNED_SHADOWS_BYTES if self.byte_capacity else R.LEARNED_SHADOWS

    def _leader(self) -> str:
        return self.shadows()[int(self._st["follow/cm"][0])]

    def view(self) -> dict[str, np.ndarray]:
        """``{"keys": the cached keys}`` (int64, in no particular order)."""
        fkey = self._st["real/fkey"]
        return {"keys": fkey[fkey != EMPTY].copy()}

    # -- input checks -----------------------------------------------------------------------------
    @staticmethod
    def _check(batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        keys = np.asarray(batch["key"])
        if keys.ndim != 1 or not np.issubdtype(keys.dtype, np.integer):
            raise InvalidInput(f"key must be a 1-d integer array, got {keys.dtype} with shape {keys.shape}")
        keys = keys.astype(np.int64)
        if (keys == EMPTY).any():
            raise InvalidInput("key -2**63 is reserved", rows=np.flatnonzero(keys == EMPTY))
        if "op" in batch:
            ops = np.asarray(batch["op"]).astype(np.int64)
            if ops.shape != keys.shape or ((ops != 0) & (ops != 1)).any():
                raise InvalidInput("op must be 0 (access) or 1 (delete), one per key")
        else:
            ops = np.zeros(keys.shape[0], dtype=np.int64)
        return np.ascontiguousarray(keys), np.ascontiguousarray(ops)

    @staticmethod
    def _bits(batch: Batch, n: int) -> np.ndarray:
        if "bit" not in batch:
            raise InvalidInput("this policy needs the column 'bit' (one prediction per request)")
        bits = np.asarray(batch["bit"])
        if bits.shape != (n,):
            raise InvalidInput(f"bit must have shape ({n},), got {bits.shape}")
        return np.ascontiguousarray(bits.astype(np.int64) != 0).astype(np.int64)

    # -- conformance ------------------------------------------------------------------------------
    @classmethod
    def conformance_params(cls, **preset: Any) -> dict[str, Any]:
        return {**preset, "capacity": 8, "seed": 3, "history_cap": 64}

    @classmethod
    def _conformance_stream(cls, seed: int, n_events: int = 64) -> Iterator[tuple[str, Batch]]:
        rng = np.random.default_rng(seed)
        for _ in range(max(1, n_events // 16)):
            n = 16
            keys = rng.zipf(1.3, size=n).astype(np.int64) % 40
            ops = (rng.random(n) < 0.05).astype(np.int64)
            yield "process", {"key": keys, "op": ops, "bit": (rng.random(n) < 0.5).astype(np.int64)}

    @classmethod
    def _bad_batches(cls) -> Iterator[tuple[str, Batch]]:
        yield "process", {"kee": np.arange(3)}
        yield "process", {"key": np.array([0.5, 1.5])}
        yield "process", {"key": np.array([EMPTY])}
        yield "process", {"key": np.arange(3), "op": np.array([0, 2, 0])}
