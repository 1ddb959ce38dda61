"""Paging: eddy's cache shadows against libCacheSim on real traces, unit-size pages.

For each trace in ../shared/traces (first ``--cap`` requests; 0 = all) and cache sizes of 1% and
10% of the unique keys in those requests, in one run: the miss ratio and requests/s of every eddy
policy and of libCacheSim's LRU, ARC, S3-FIFO, SIEVE, LRB and Belady (through ``process_trace``
over an oracleGeneral file written here, so its Belady sees next-access times). Oracle rows
(``.opt-bits-``) follow Belady's exact discard bits, exact or with a fraction flipped at random
(evaluation only: they see the future). The learned rows see the requests only, in one setting
for every trace; ``learned-discard`` also reports which shadow its real cache followed last and
every shadow's misses (so the share of the learned FtP shadows is visible). Misses include cold misses; the LRU→OPT gap recovered is
(LRU − policy)/(LRU − OPT).

Timing, the same for every row: the median of 3 runs, each on a cache built before its clock
starts, and each clock includes reading the requests from the same oracleGeneral file
(libCacheSim's ``process_trace`` reads it record by record; eddy reads it with numpy into arrays,
then replays them; the oracle rows' bits are in memory, as a predictor's output would be).

Usage: python benchmarks/paging.py [--cap 500000] [--traces NAME ...]
"""

from __future__ import annotations

import argparse
import lzma
import os
import struct
import sys
import tempfile
import time

sys.path.insert(0, __file__.rsplit("/", 2)[0])

import numpy as np  # noqa: E402

from benchmarks._common import versions, write_results  # noqa: E402
from learners.paging import PagingCache, belady, reuse_distances  # noqa: E402

TRACES = ("cache2k_web12", "cache2k_orm-busy", "cloudPhysicsIO", "cloudphysics_w106")
SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "traces")
CLASSICAL = ("lru", "fifo", "sieve", "s3fifo", "arc", "marker")
PEERS = ("LRU", "ARC", "S3FIFO", "Sieve", "LRB", "Belady")


def load(name: str, cap: int, sizes: bool = False):
    """The trace's keys (and, with ``sizes``, the objects' sizes in bytes)."""
    ids, szs = [], []
    with lzma.open(os.path.join(SHARED, f"{name}.common.csv.xz"), "rt") as f:
        next(f)
        for i, line in enumerate(f):
            if cap and i >= cap:
                break
            _, obj, size = line.split(",", 2)
            ids.append(int(obj))
            szs.append(int(size))
    if sizes:
        return np.array(ids, dtype=np.int64), np.array(szs, dtype=np.int64)
    return np.array(ids, dtype=np.int64)


OG = np.dtype([("time", "<u4"), ("id", "<u8"), ("size", "<u4"), ("next", "<i8")])  # 24 bytes, packed
RUNS = 3


def read_oracle_general(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The keys and sizes of an oracleGeneral file (what eddy's clock reads)."""
    rec = np.fromfile(path, dtype=OG)
    return rec["id"].astype(np.int64), rec["size"].astype(np.int64)


def write_oracle_general(path: str, keys: np.ndarray, next_use: np.ndarray, sizes: np.ndarray | None = None) -> None:
    """libCacheSim's oracleGeneral records: uint32 time, uint64 id, uint32 size, int64 next access."""
    n = len(keys)
    rec = struct.Struct("<IQIq")
    with open(path, "wb") as f:
        for i in range(n):
            nxt = int(next_use[i]) if next_use[i] < n else -1
            f.write(rec.pack(i, int(keys[i]) & (2**64 - 1), 1 if sizes is None else int(sizes[i]), nxt))


BYTE_POLICIES = ("lru", "fifo", "sieve", "s3fifo", "learned-discard")
BYTE_PEERS = ("LRU", "FIFO", "Sieve", "S3FIFO")


def byte_rows(name: str, cap: int, tmp: str) -> list[dict]:
    """The byte-capacity mode on a trace with variable object sizes: eddy against libCacheSim at
    1% and 10% of the unique objects' bytes (no object-count limit: capacity = unique objects)."""
    keys, sizes = load(name, cap, sizes=True)
    if len(np.unique(sizes)) < 2:
        return []
    n = len(keys)
    _, first = np.unique(keys, return_index=True)
    total, unique = int(sizes[first].sum()), len(first)
    path = os.path.join(tmp, f"{name}.bytes.oracleGeneral.bin")
    write_oracle_general(path, keys, np.full(n, n), sizes)
    rows = []
    for frac in (0.01, 0.1):
        cb = total * frac
        cb = int(cb)
        case = []
        for policy in BYTE_POLICIES:
            out, _, dt = replay(policy, path, unique, sized=True, byte_capacity=cb)
            case.append({"system": f"eddy.{policy}", "misses": int((out["hit"] == 0).sum()), "seconds": dt})
        import libcachesim as lcs

        for peer in BYTE_PEERS:
            (mr, _), dt = timed(lambda p=peer, b=cb: (getattr(lcs, p)(cache_size=b),
                                                lcs.TraceReader(path, lcs.TraceType.ORACLE_GENERAL_TRACE)),
                                lambda cr: cr[0].process_trace(cr[1]))
            case.append({"system": f"libcachesim.{peer.lower()}", "misses": int(round(mr * n)), "seconds": dt})
        for r in case:
            r.update(workload=f"{name}-first-{n}-bytes", cache_size=cb, cache_unit="bytes", requests=n,
                     miss_ratio=r["misses"] / n, requests_per_s=n / r.pop("seconds"))
            print(f"{r['workload']:32s} B={cb:<10d} {r['system']:45s} {r['miss_ratio']:.4f} "
                  f"{r['requests_per_s'] / 1e6:7.2f} Mreq/s", flush=True)
        rows += case
    return rows


def timed(make, run, repeat: int = RUNS):
    """``run(make())``'s result and its median wall time over ``repeat`` runs, each on a fresh
    ``make()`` built before the clock starts (this box is shared and noisy)."""
    times, out = [], None
    for obj in [make() for _ in range(repeat)]:
        t0 = time.perf_counter()
        out = run(obj)
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


def replay(policy: str, path: str, k: int, sized: bool = False, cols=None, **kw):
    """A fresh cache replaying every request of the oracleGeneral file at ``path`` (read inside the
    clock; ``cols``: further columns, in memory): (output, cache, seconds)."""
    keys, sizes = read_oracle_general(path)
    first = {"key": keys[:1000], **({"size": sizes[:1000]} if sized else {}),
             **{c: v[:1000] for c, v in (cols or {}).items()}}
    PagingCache(policy, capacity=k, **kw).process(first)  # compiled first
    made: list[PagingCache] = []

    def make():
        made.append(PagingCache(policy, capacity=k, **kw))
        return made[-1]

    def run(c):
        keys, sizes = read_oracle_general(path)
        return c.process({"key": keys, **({"size": sizes} if sized else {}), **(cols or {})})

    out, dt = timed(make, run)
    return out, made[-1], dt


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for the 0/1 ``label`` (ties count one half)."""
    label = label.astype(bool)
    pos, neg = int(label.sum()), int((~label).sum())
    if not pos or not neg:
        return float("nan")
    _, inv, counts = np.unique(score, return_inverse=True, return_counts=True)
    mid = np.cumsum(counts) - (counts - 1) / 2  # each distinct score's average rank
    return float((mid[inv][label].sum() - pos * (pos + 1) / 2) / (pos * neg))


def bit_quality(prob: np.ndarray, exact: np.ndarray, distance: np.ndarray, k: int, th: float = 0.3) -> dict:
    """The learned bit (p > ``th``, the bit the learned shadows act on) against Belady's exact
    discard bit where the decision matters: requests whose reuse distance lies in [k, 8k) distinct
    keys (an LRU cache misses them; Belady keeps some, evicts others). Precision and recall of "safe",
    the AUC of p there and over all requests."""
    near = (distance >= k) & (distance < 8 * k)
    b, e = prob[near] > th, exact[near] == 1
    tp, fp, fn = int((b & e).sum()), int((b & ~e).sum()), int((~b & e).sum())
    return {"boundary_share": float(near.mean()), "boundary_safe_share": float(e.mean()) if near.any() else 0.0,
            "bit_precision_boundary": tp / (tp + fp) if tp + fp else 0.0,
            "bit_recall_boundary": tp / (tp + fn) if tp + fn else 0.0,
            "bit_auc_boundary": auc(prob[near], e), "bit_auc": auc(prob, exact == 1), "bit_threshold": th}


def eddy_rows(path: str, keys: np.ndarray, k: int, opt: dict) -> list[dict]:
    rows = []
    distance = reuse_distances(keys)
    n = len(keys)
    for policy in CLASSICAL:
        out, _, dt = replay(policy, path, k)
        rows.append({"system": f"eddy.{policy}", "misses": int((out["hit"] == 0).sum()), "seconds": dt})
    _, dt = timed(lambda: None, lambda _: belady(read_oracle_general(path)[0], k))
    rows.append({"system": "eddy.belady", "misses": opt["misses"], "seconds": dt})
    for policy in ("learned-discard", "learned-phase", "learned-ftp"):
        # Sees the requests only; one setting for every trace. learned-discard runs its two
        # independent halves on the box's two cores (threads=2); its one-thread speed is kept too.
        out, c, dt = replay(policy, path, k, **({"threads": 2} if policy == "learned-discard" else {}))
        m = c.metrics()
        row = {"system": f"eddy.{policy}", "misses": int((out["hit"] == 0).sum()), "seconds": dt,
               "bit_precision": m["bit_precision"], "bit_recall": m["bit_recall"],
               "config": f"history_cap={c.history_cap} reach={c.reach} switch_every={c.switch_every}",
               "requests_per_s_1_thread": len(keys) / dt,
               **bit_quality(out["prob"], opt["discard_bit"], distance, k)}
        if c.shadows():  # which shadow the real cache followed at the end, and each shadow's misses
            _, _, dt1 = replay(policy, path, k)
            row.update(leader=c.shadows()[int(m["leader"])], switches=int(m["switches"]),
                       shadow_misses={s: int(m[f"shadow_misses_{s}"]) for s in c.shadows()},
                       requests_per_s_1_thread=len(keys) / dt1)
        rows.append(row)
    rng = np.random.default_rng(1)
    exact = opt["discard_bit"]
    for rate in (0.0, 0.1, 0.3):
        bits = np.where(rng.random(n) < rate, 1 - exact, exact)
        for policy in ("ftp-discard", "marker-discard", "robust-discard"):
            out, _, dt = replay(policy, path, k, cols={"bit": bits})
            rows.append({"system": f"eddy.{policy}.opt-bits-{int(rate * 100)}pct-flipped",
                         "misses": int((out["hit"] == 0).sum()), "seconds": dt})
    return rows


def peer_rows(path: str, n: int, k: int) -> list[dict]:
    import libcachesim as lcs

    rows = []
    for name in PEERS:
        (mr, _), dt = timed(lambda nm=name: (getattr(lcs, nm)(cache_size=k),
                                             lcs.TraceReader(path, lcs.TraceType.ORACLE_GENERAL_TRACE)),
                            lambda cr: cr[0].process_trace(cr[1]))
        rows.append({"system": f"libcachesim.{name.lower()}", "misses": int(round(mr * n)), "seconds": dt})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cap", type=int, default=500_000, help="requests per trace (0: all)")
    ap.add_argument("--traces", nargs="+", default=list(TRACES))
    args = ap.parse_args()
    rows = []
    tmp = tempfile.mkdtemp(prefix="eddy-paging-")
    for name in args.traces:
        keys = load(name, args.cap)
        n, unique = len(keys), len(np.unique(keys))
        workload = f"{name}-first-{n}"
        for k in (max(1, unique // 100), max(1, unique // 10)):
            opt = belady(keys, k)
            path = os.path.join(tmp, f"{name}.oracleGeneral.bin")
            write_oracle_general(path, keys, opt["next_use"])
            case = eddy_rows(path, keys, k, opt) + peer_rows(path, n, k)
            lru = next(r["misses"] for r in case if r["system"] == "eddy.lru")
            for r in case:
                r.update(workload=workload, cache_size=k, requests=n, miss_ratio=r["misses"] / n,
                         requests_per_s=n / r.pop("seconds"),
                         gap_recovered=(lru - r["misses"]) / (lru - opt["misses"]) if lru > opt["misses"] else 0.0)
                print(f"{workload:32s} k={k:<6d} {r['system']:45s} {r['miss_ratio']:.4f} "
                      f"{r['gap_recovered'] * 100:7.1f}% {r['requests_per_s'] / 1e6:7.2f} Mreq/s", flush=True)
            rows += case
        rows += byte_rows(name, args.cap, tmp)
    write_results("paging", rows, versions("eddyd", "numba", "numpy", "libcachesim"), {"cap": args.cap})
    print(markdown(rows))


def markdown(rows: list[dict]) -> str:
    """The RESULTS.md table: miss ratio (share of the LRU→OPT gap) per case, and speeds."""
    cols = [("LRU", "eddy.lru"), ("OPT", "eddy.belady"), ("eddy SIEVE", "eddy.sieve"),
            ("eddy S3-FIFO", "eddy.s3fifo"), ("eddy ARC", "eddy.arc"), ("lcs S3-FIFO", "libcachesim.s3fifo"),
            ("lcs ARC", "libcachesim.arc"), ("lcs SIEVE", "libcachesim.sieve"), ("lcs LRB", "libcachesim.lrb"),
            ("FtP, OPT bits 10% flipped", "eddy.ftp-discard.opt-bits-10pct-flipped"),
            ("eddy learned-phase", "eddy.learned-phase"), ("eddy learned-ftp", "eddy.learned-ftp"),
            ("eddy learned-discard", "eddy.learned-discard")]
    byte = [r for r in rows if r.get("cache_unit") == "bytes"]
    rows = [r for r in rows if r.get("cache_unit") != "bytes"]
    cases: dict[tuple, dict] = {}
    for r in rows:
        cases.setdefault((r["workload"], r["cache_size"]), {})[r["system"]] = r
    out = ["| trace | k | " + " | ".join(c for c, _ in cols) + " | learned-discard followed |",
           "|---|---:|" + "---:|" * len(cols) + "---|"]
    best, learned, worst, ftp, quality = [], [], [], [], []
    for (w, k), d in cases.items():
        lru, opt = d["eddy.lru"]["miss_ratio"], d["eddy.belady"]["miss_ratio"]

        def cell(s, d=d, lru=lru, opt=opt):
            m = d[s]["miss_ratio"]
            return f"{m:.4f}" if s in ("eddy.lru", "eddy.belady") else f"{m:.4f} ({(lru - m) / (lru - opt):.0%})"

        ld = d["eddy.learned-discard"]
        out.append(f"| {w} | {k} | " + " | ".join(cell(s) for _, s in cols) + f" | {ld.get('leader')} |")
        best.append(max((lru - d[s]["miss_ratio"]) / (lru - opt) for s in
                        ("libcachesim.arc", "libcachesim.s3fifo", "libcachesim.sieve", "libcachesim.lrb")))
        learned.append((lru - ld["miss_ratio"]) / (lru - opt))
        worst.append((ld["miss_ratio"] - lru) / lru)
        ftp.append((lru - d["eddy.learned-ftp"]["miss_ratio"]) / (lru - opt))
        q = d["eddy.learned-ftp"]
        quality.append(f"| {w} | {k} | {q['boundary_share']:.1%} | {q['boundary_safe_share']:.1%} | "
                       f"{q['bit_precision_boundary']:.3f} | {q['bit_recall_boundary']:.3f} | "
                       f"{q['bit_auc_boundary']:.3f} | {q['bit_auc']:.3f} |")
    n = len(best)
    out.append("")
    out.append(f"Mean over the {n} cases: per-case best of libCacheSim's ARC/S3-FIFO/SIEVE/LRB {sum(best) / n:.1%} "
               f"of the gap; eddy learned-discard {sum(learned) / n:.1%}, worst against LRU {max(worst):+.2%} "
               f"of misses; eddy learned-ftp (the bits alone) {sum(ftp) / n:.1%}, better than LRU on "
               f"{sum(g > 0 for g in ftp)} of {n}.")
    out += ["", "The learned bit (p > 0.3) against Belady's exact bit where the decision matters (requests of "
            "reuse distance k to 8k distinct keys):", "",
            "| trace | k | share of requests | Belady evicts | precision | recall | AUC there | AUC, all |",
            "|---|---:|---:|---:|---:|---:|---:|---:|", *quality]
    speeds: dict[str, list[float]] = {}
    for r in rows:
        speeds.setdefault(r["system"], []).append(r["requests_per_s"])
    out.append("")
    out.append("Requests/s, millions (median over the cases / slowest case): " + ", ".join(
        f"{s} {float(np.median(v)) / 1e6:.1f} / {min(v) / 1e6:.2f}" for s, v in speeds.items()
        if "opt-bits-10" in s or "opt-bits" not in s))
    if byte:
        out += ["", "Byte-capacity mode (miss ratio of requests; capacity in bytes):", "",
                "| trace | bytes | " + " | ".join(sorted({r["system"] for r in byte})) + " |",
                "|---|---:|" + "---:|" * len({r["system"] for r in byte})]
        for (w, cb) in dict.fromkeys((r["workload"], r["cache_size"]) for r in byte):
            d = {r["system"]: r for r in byte if (r["workload"], r["cache_size"]) == (w, cb)}
            out.append(f"| {w} | {cb} | " + " | ".join(f"{d[s]['miss_ratio']:.4f}" for s in sorted(d)) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
