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


SIZES_HELP = ("a whole number is pages (1 = one page); a decimal number in (0, 1] or a percentage is a share of "
              "the trace's unique keys (1.0 = 100%, 0.5 = 50%)")
OPT = "belady (OPT)"
OPT_NAMES = ("opt", "belady", "belady (opt)")  # what --policies accepts for the optimum (always shown)
NEED_BITS = ("ftp-discard", "marker-discard", "robust-discard")  # need a predictor's bits, which a trace lacks


def parse_sizes(text: str) -> list[tuple[str, float]]:
    """``--sizes``: each value as ``("pages", n)`` or ``("share", fraction of the unique keys)``.

    >>> parse_sizes("1,1.0,50%,0.01,200")
    [('pages', 1), ('share', 1.0), ('share', 0.5), ('share', 0.01), ('pages', 200)]
    """
    from .config import ConfigError

    out: list[tuple[str, float]] = []
    for raw in text.split(","):
        t = raw.strip()
        try:
            if t.endswith("%"):
                v = float(t[:-1])
                if not 0 < v <= 100:
                    raise ValueError
                out.append(("share", v / 100))
            elif t.isdigit():
                if int(t) < 1:
                    raise ValueError
                out.append(("pages", int(t)))
            else:
                v = float(t)
                if not 0 < v <= 1:
                    raise ValueError
                out.append(("share", v))
        except ValueError:
            raise ConfigError(f"--sizes: {t!r} is not a cache size: {SIZES_HELP}; a percentage lies in (0, 100]")\
                from None
    return out


def sizes_for(keys: np.ndarray, sizes: Sequence[tuple[str, float]]) -> list[int]:
    """Cache sizes in pages (each at least 1), in order, each once."""
    unique = len(np.unique(keys))
    return sorted({max(1, int(v * unique)) if kind == "share" else int(v) for kind, v in sizes})


def parse_policies(text: str) -> list[str]:
    """``--policies``: the paging policies named (case-insensitive, ``paging-`` prefix allowed), each
    once; the optimum's names (OPT, belady) are accepted and dropped, its rows being always there."""
    from learners.paging import POLICIES

    from .config import ConfigError

    valid = [p for p in POLICIES if p not in NEED_BITS]
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    names = [p.removeprefix("paging-") for p in names]
    bad = [p for p in names if p not in valid and p not in OPT_NAMES]
    if bad or not names:
        from .config import _suggest

        why = "".join(f"; {p!r} needs a predictor's bits, which a trace has not" for p in bad if p in NEED_BITS)
        near = "".join(_suggest(p, [*valid, "opt"]) for p in bad if p not in NEED_BITS)
        raise ConfigError(f"--policies: {', '.join(map(repr, bad)) or 'none given'} not allowed{near}{why}; allowed: "
                          f"{', '.join(valid)} (Belady's optimum, OPT or belady, is always shown)")
    return list(dict.fromkeys(p for p in names if p not in OPT_NAMES))


def miss_ratios(keys: np.ndarray, sizes: Sequence[int], policies: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (policy, size): misses, miss ratio and seconds taken (compiling excluded); Belady's
    (OPT) rows included."""
    import time

    from learners.paging import PagingCache, belady

    rows = []
    n = len(keys)
    for p in policies:  # (compiled first, on a few requests: the times are the trace's)
        PagingCache(p, capacity=1).process({"key": keys[:64]})
    belady(keys[:64], 1)
    for k in sizes:
        for p in policies:
            t0 = time.perf_counter()
            misses = int((PagingCache(p, capacity=k).process({"key": keys})["hit"] == 0).sum())
            rows.append({"policy": p, "cache_size": k, "misses": misses, "miss_ratio": misses / n,
                         "seconds": time.perf_counter() - t0})
        t0 = time.perf_counter()
        m = belady(keys, k)["misses"]
        rows.append({"policy": OPT, "cache_size": k, "misses": m, "miss_ratio": m / n,
                     "seconds": time.perf_counter() - t0})
    return rows


def timings(rows: list[dict[str, Any]]) -> str:
    """Each policy's time over all the sizes, as one line."""
    took: dict[str, float] = {}
    for r in rows:
        took[r["policy"]] = took.get(r["policy"], 0.0) + r["seconds"]
    n = len({r["cache_size"] for r in rows})
    return f"time per policy (all {n} sizes): " + ", ".join(f"{p} {t:.3f} s" for p, t in took.items())


def table(rows: list[dict[str, Any]], n: int, unique: int | None = None) -> str:
    """The miss-ratio table as text: one line per cache size, one column per policy."""
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    sizes = sorted({r["cache_size"] for r in rows})
    by = {(r["policy"], r["cache_size"]): r["miss_ratio"] for r in rows}
    w = max(8, *(len(p) for p in policies))
    keys = f", {unique} unique keys" if unique is not None else ""
    lines = [f"miss ratio over {n} requests{keys} (misses include cold misses)",
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
    import time

    from .config import ConfigError

    sizes = parse_sizes(args.sizes)
    policies = parse_policies(args.policies)
    if not os.path.isfile(args.trace):
        raise ConfigError(f"--trace: file {args.trace!r} not found")
    if args.limit < 0:
        raise ConfigError(f"--limit: {args.limit} is negative (0: all requests)")
    t0 = time.perf_counter()
    try:
        keys = read_trace(args.trace, args.limit)
    except (OSError, EOFError, UnicodeDecodeError, lzma.LZMAError) as e:
        raise ConfigError(f"--trace: {args.trace!r} cannot be read: {e}") from None
    read_s = time.perf_counter() - t0
    if not len(keys):
        raise ConfigError(f"--trace: {args.trace!r} holds no requests")
    unique = len(np.unique(keys))
    rows = miss_ratios(keys, sizes_for(keys, sizes), policies)
    print(table(rows, len(keys), unique))
    print(f"trace: {len(keys)} requests, {unique} unique keys (read in {read_s:.2f} s)")
    print(timings(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"trace": args.trace, "requests": len(keys), "unique_keys": unique, "read_seconds": read_s,
                       "rows": rows}, f, indent=1)
    if args.plot:
        plot(rows, args.plot, f"{os.path.basename(args.trace)} ({len(keys)} requests)")
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0
