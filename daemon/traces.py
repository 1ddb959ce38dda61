"""``eddy replay --trace``: a cache trace replayed through eddy's paging policies at several cache
sizes, a miss-ratio table against the baselines and Belady (OPT), and a PNG plot.

Trace formats: libCacheSim's common CSV (a header naming ``obj_id``, e.g. ``time,obj_id,size``) or
one key per line; ``.xz``, ``.gz`` and ``.bz2`` files are read compressed. Keys that are integers
are used as they are, others hashed as the daemon hashes string keys.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
from collections.abc import Sequence
from typing import IO, Any

import numpy as np


def _open(path: str) -> IO[str]:
    opener: Any = {"xz": lzma.open, "gz": gzip.open, "bz2": bz2.open}.get(path.rsplit(".", 1)[-1], open)
    return opener(path, "rt")


def read_trace(path: str, limit: int = 0) -> np.ndarray:
    """The trace's keys as int64 (the first ``limit`` requests; 0: all)."""
    from .adapters.paging import int_keys

    raw: list[Any] = []
    with _open(path) as f:
        first = f.readline().strip()
        col = None
        if "obj_id" in first.split(","):
            col = first.split(",").index("obj_id")
        elif first:
            raw.append(first)
        for line in f:
            if limit and len(raw) >= limit:
                break
            line = line.strip()
            if line:
                raw.append(line if col is None else line.split(",")[col])
    if limit:
        raw = raw[:limit]
    keys: list[Any] = []
    for k in raw:
        try:
            keys.append(int(k))
        except ValueError:
            keys.append(k)
    return int_keys(keys)


def sizes_for(keys: np.ndarray, sizes: Sequence[float]) -> list[int]:
    """Cache sizes in pages: values below 1 are fractions of the unique keys."""
    unique = len(np.unique(keys))
    out = sorted({max(1, int(s * unique)) if s < 1 else int(s) for s in sizes})
    return out


def miss_ratios(keys: np.ndarray, sizes: Sequence[int], policies: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (policy, size): misses and miss ratio; Belady's (OPT) rows included."""
    from learners.paging import PagingCache, belady

    rows = []
    n = len(keys)
    for k in sizes:
        for p in policies:
            misses = int((PagingCache(p, capacity=k).process({"key": keys})["hit"] == 0).sum())
            rows.append({"policy": p, "cache_size": k, "misses": misses, "miss_ratio": misses / n})
        m = belady(keys, k)["misses"]
        rows.append({"policy": "belady (OPT)", "cache_size": k, "misses": m, "miss_ratio": m / n})
    return rows


def table(rows: list[dict[str, Any]], n: int) -> str:
    """The miss-ratio table as text: one line per cache size, one column per policy."""
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    sizes = sorted({r["cache_size"] for r in rows})
    by = {(r["policy"], r["cache_size"]): r["miss_ratio"] for r in rows}
    w = max(8, *(len(p) for p in policies))
    lines = [f"miss ratio over {n} requests (misses include cold misses)",
             "cache_size  " + "  ".join(f"{p:>{w}}" for p in policies)]
    for k in sizes:
        lines.append(f"{k:>10}  " + "  ".join(f"{by[(p, k)]:>{w}.4f}" for p in policies))
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: str, title: str) -> None:
    """Miss ratio against cache size, one line per policy, written as a PNG (needs matplotlib:
    ``pip install 'eddyd[plot]'``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("the PNG plot needs matplotlib: pip install 'eddyd[plot]'") from None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for p in dict.fromkeys(r["policy"] for r in rows):
        pts = sorted((r["cache_size"], r["miss_ratio"]) for r in rows if r["policy"] == p)
        ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", label=p,
                linestyle="--" if p.startswith("belady") else "-")
    ax.set_xscale("log")
    ax.set_xlabel("cache size (pages)")
    ax.set_ylabel("miss ratio")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def cmd(args: Any) -> int:
    """``eddy replay --trace``: the table (and JSON, PNG) of a trace at several sizes."""
    import json
    import os
    import sys

    from learners.paging import POLICIES

    from .config import ConfigError

    try:
        sizes = [float(x) for x in args.sizes.split(",")]
    except ValueError:
        raise ConfigError(f"--sizes: {args.sizes!r} is not a comma-separated list of numbers") from None
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    bad = [p for p in policies if p not in POLICIES or p in ("ftp-discard", "marker-discard", "robust-discard")]
    if bad or not policies:
        raise ConfigError(f"--policies: {bad or policies!r} not allowed; allowed: lru, fifo, sieve, s3fifo, arc, "
                          "marker, learned-discard, learned-phase, learned-ftp")
    if not os.path.exists(args.trace):
        raise ConfigError(f"--trace: file {args.trace!r} not found")
    keys = read_trace(args.trace, args.limit)
    rows = miss_ratios(keys, sizes_for(keys, sizes), policies)
    print(table(rows, len(keys)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"trace": args.trace, "requests": len(keys), "rows": rows}, f, indent=1)
    if args.plot:
        plot(rows, args.plot, f"{os.path.basename(args.trace)} ({len(keys)} requests)")
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0
