"""Interleaved A/B runs of a benchmark: an earlier commit ("before") against this code ("after").

``--before REV`` checks REV out as a detached ``git worktree`` under the temp dir and runs the
benchmark's measuring function in a child process of the same interpreter whose code tree is that
worktree, then the same for the "after" tree (the working tree, or ``--after REV``'s worktree):
before, after, before, after ... for ``--rounds`` rounds, back to back on the same box. The
measuring code is the current tree's script in both variants; only the imported ``daemon``,
``learners`` and ``connectors`` differ, which each child checks (the module files must lie in its
tree) and the parent prints once per variant.

How a child is set up: ``python <this tree>/benchmarks/<script>.py <the same options> --measure-json
PATH`` with ``EDDY_BENCH_TREE=<tree>``, ``PYTHONPATH=<tree>`` and cwd ``<tree>``; the script puts
``EDDY_BENCH_TREE`` first on ``sys.path`` (before the venv's editable install of the working tree)
and its own directory second (``_common``, ``_ab``).

Results: per (system, workload, variant) one row, its numeric fields the medians over the rounds,
the rest (nested details) from the median round by the judged metric; ``runs`` holds every round's
numeric fields; rows carry ``"variant": "before"|"after"`` and ``"rev"``. The results file's
``ab`` entry has the revisions and the after/before ratio of each judged metric (a speed ratio:
latencies are judged before/after), flagged when below :data:`FLOOR`.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

FLOOR = 0.95  # issue 10: each after median at least 0.95x its before median
HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = ("daemon", "learners", "connectors")
# The options handled here, with the number of values each takes (stripped from a child's argv).
OPTIONS = {"--before": 1, "--after": 1, "--rounds": 1, "--keep-worktree": 0, "--measure-json": 1, "--prime": 0}


def add_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("interleaved A/B (benchmarks/_ab.py)")
    g.add_argument("--before", metavar="REV", default="",
                   help="also measure REV (a detached git worktree) interleaved with this code; rows get 'variant'")
    g.add_argument("--after", metavar="REV", default="",
                   help="with --before: the 'after' code is REV's worktree instead of the working tree")
    g.add_argument("--rounds", type=int, default=3, help="with --before: rounds of before, after (default 3)")
    g.add_argument("--keep-worktree", action="store_true",
                   help="leave the worktrees in place at exit (the next run reuses them, numba caches included)")
    g.add_argument("--measure-json", metavar="PATH", default="", help=argparse.SUPPRESS)  # child mode
    g.add_argument("--prime", action="store_true", help=argparse.SUPPRESS)  # child mode: warm caches only


def _git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, check=True).stdout.strip()


def repo_root() -> str:
    return _git(HERE, "rev-parse", "--show-toplevel")


def short(repo: str, rev: str) -> str:
    return _git(repo, "rev-parse", "--short", rev)


class Worktrees:
    """Detached worktrees of commits under the temp dir: ``eddy-ab-<sha12>``, reused when one is
    there at the same commit, removed at exit unless kept."""

    def __init__(self, repo: str, keep: bool):
        self.repo, self.keep = repo, keep
        self.made: list[str] = []
        atexit.register(self.close)

    def get(self, rev: str) -> str:
        sha = _git(self.repo, "rev-parse", "--verify", f"{rev}^{{commit}}")
        path = os.path.join(tempfile.gettempdir(), f"eddy-ab-{sha[:12]}")
        if path in self.made:
            return path
        if os.path.isdir(path):
            try:
                here = _git(path, "rev-parse", "HEAD")
                dirty = _git(path, "status", "--porcelain", "--untracked-files=no")
            except subprocess.CalledProcessError:
                here, dirty = "", "?"
            if here == sha and not dirty:
                print(f"[ab] reusing the worktree {path} at {sha[:9]}", file=sys.stderr, flush=True)
                self.made.append(path)
                return path
            subprocess.run(["git", "-C", self.repo, "worktree", "remove", "--force", path], capture_output=True)
            if os.path.isdir(path):
                raise RuntimeError(f"{path} exists and is not a clean worktree of {sha[:9]}: remove it")
        subprocess.run(["git", "-C", self.repo, "worktree", "prune"], capture_output=True)
        subprocess.run(["git", "-C", self.repo, "worktree", "add", "--detach", path, sha],
                       capture_output=True, text=True, check=True)
        print(f"[ab] worktree {path} at {sha[:9]}", file=sys.stderr, flush=True)
        self.made.append(path)
        return path

    def close(self) -> None:
        if self.keep:
            return
        for path in self.made:
            subprocess.run(["git", "-C", self.repo, "worktree", "remove", "--force", path], capture_output=True)
        self.made = []


def child_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` less the A/B options (``--opt V`` and ``--opt=V`` forms)."""
    out: list[str] = []
    skip = 0
    for a in argv:
        if skip:
            skip -= 1
            continue
        name = a.split("=", 1)[0]
        if name in OPTIONS:
            skip = 0 if "=" in a else OPTIONS[name]
            continue
        out.append(a)
    return out


def module_files() -> dict[str, str]:
    out = {}
    for m in MODULES:
        try:
            out[m] = os.path.realpath(importlib.import_module(m).__file__ or "?")
        except ImportError as e:
            out[m] = f"not importable: {e}"
    return out


def run_child(args: argparse.Namespace, measure: Callable[[], list[dict]],
              prime: Callable[[], None] | None = None) -> None:
    """Child mode (``--measure-json PATH``): measure (or only prime), then write the rows and the
    files the code came from."""
    rows: list[dict] = []
    if args.prime:
        if prime is not None:
            prime()
    else:
        rows = measure()
    tree = os.path.realpath(os.environ.get("EDDY_BENCH_TREE") or os.path.dirname(HERE))
    with open(args.measure_json, "w") as f:
        json.dump({"rows": rows, "tree": tree, "modules": module_files()}, f)


def _variant_rev(repo: str, rev: str) -> str:
    if rev:
        return short(repo, rev)
    dirty = _git(repo, "status", "--porcelain", "--", "daemon", "learners", "connectors")
    return short(repo, "HEAD") + ("+dirty" if dirty else "")


def _measure(script: str, argv: list[str], variant: str, tree: str, rev: str, prime: bool) -> dict:
    fd, out = tempfile.mkstemp(prefix=f"eddy-ab-{variant}-", suffix=".json")
    os.close(fd)
    env = dict(os.environ, EDDY_BENCH_TREE=tree)
    env["PYTHONPATH"] = tree + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, script, *argv, "--measure-json", out] + (["--prime"] if prime else [])
    try:
        rc = subprocess.run(cmd, cwd=tree, env=env).returncode
        if rc != 0:
            raise RuntimeError(f"the {variant} variant ({rev}, {tree}) failed with exit code {rc}"
                               + (" while priming" if prime else ""))
        with open(out) as f:
            res = json.load(f)
    finally:
        os.unlink(out)
    root = os.path.realpath(tree) + os.sep
    wrong = {m: p for m, p in res["modules"].items() if not p.startswith(root)}
    if wrong:
        raise RuntimeError(f"the {variant} variant imported code from outside {tree}: {wrong}")
    return res


def _median(values: list[float]) -> float:
    m = statistics.median(values)
    return int(m) if all(type(v) is int for v in values) and float(m).is_integer() else m


def _number(v: Any) -> bool:
    return type(v) in (int, float)


def combine(samples: dict[tuple[str, str, str], list[dict]], revs: dict[str, str],
            judge: dict[str, int]) -> list[dict]:
    """One row per (system, workload, variant): numeric fields the medians over the rounds."""
    primary = next(iter(judge))
    rows = []
    for (system, workload, variant), runs in samples.items():
        numeric = [k for k in runs[0] if _number(runs[0][k]) and all(_number(r.get(k)) for r in runs)]
        ordered = sorted(runs, key=lambda r: r.get(primary, 0))
        row = dict(ordered[(len(ordered) - 1) // 2])  # the median round (the lower one of an even count)
        row.update({k: _median([r[k] for r in runs]) for k in numeric})
        row.update(variant=variant, rev=revs[variant], rounds=len(runs),
                   runs=[{k: r[k] for k in numeric} for r in runs])
        row["system"], row["workload"] = system, workload
        rows.append(row)
    first = {k: i for i, k in enumerate(dict.fromkeys((s, w) for s, w, _ in samples))}  # measured order
    rows.sort(key=lambda r: (first[r["system"], r["workload"]], r["variant"] != "before"))
    return rows


def ratios(rows: list[dict], judge: dict[str, int]) -> list[dict]:
    """after/before of each judged metric, as a speed ratio (``judge``: +1 higher is better, -1 lower)."""
    by = {(r["system"], r["workload"], r["variant"]): r for r in rows}
    out = []
    for (system, workload, variant), after in by.items():
        before = by.get((system, workload, "before"))
        if variant != "after" or before is None:
            continue
        for metric, sign in judge.items():
            a, b = after.get(metric), before.get(metric)
            if not _number(a) or not _number(b) or a <= 0 or b <= 0:
                continue
            speed = a / b if sign > 0 else b / a
            out.append({"system": system, "workload": workload, "metric": metric, "before": b, "after": a,
                        "speed_ratio": round(speed, 4), "ok": speed >= FLOOR})
    return out


def interleave(script: str, argv: Sequence[str], args: argparse.Namespace, judge: dict[str, int],
               extra: Sequence[str] = (), prime: bool = False) -> tuple[list[dict], dict]:
    """Runs ``script``'s measuring function for the before and after trees, alternately, for
    ``args.rounds`` rounds; returns (rows with variants, the results file's ``ab`` entry)."""
    repo = repo_root()
    script = os.path.abspath(script)
    sub = child_argv(argv) + list(extra)
    trees = Worktrees(repo, args.keep_worktree)
    try:
        revs = {"before": _variant_rev(repo, args.before), "after": _variant_rev(repo, args.after)}
        where = {"before": trees.get(args.before), "after": trees.get(args.after) if args.after else repo}
        variants = ("before", "after")
        if prime:
            for v in variants:
                _measure(script, sub, v, where[v], revs[v], prime=True)
        samples: dict[tuple[str, str, str], list[dict]] = {}
        shown: set[str] = set()
        for r in range(args.rounds):
            for v in variants:
                print(f"[ab] round {r + 1}/{args.rounds}: {v} ({revs[v]})", file=sys.stderr, flush=True)
                res = _measure(script, sub, v, where[v], revs[v], prime=False)
                if v not in shown:
                    shown.add(v)
                    print(f"[ab] {v} ({revs[v]}) imports: "
                          + ", ".join(f"{m} from {p}" for m, p in res["modules"].items()), file=sys.stderr, flush=True)
                for row in res["rows"]:
                    samples.setdefault((row["system"], row["workload"], v), []).append(row)
    finally:
        trees.close()
    rows = combine(samples, revs, judge)
    rat = ratios(rows, judge)
    info = {"before": revs["before"], "after": revs["after"], "rounds": args.rounds, "order": "before, after per round",
            "floor": FLOOR, "ratios": rat}
    return rows, info


def fmt(v: Any, digits: int = 0) -> str:
    if not _number(v):
        return "" if v is None else str(v)
    return f"{v:,.{digits}f}"


def table(rows: list[dict], cols: Sequence[tuple[str, Callable[[dict], str]]]) -> str:
    """A markdown table: ``cols`` as (title, cell of a row); variant and rev columns when rows have them."""
    if any("variant" in r for r in rows):
        cols = [cols[0], cols[1], ("variant", lambda r: f"{r.get('variant', '')} ({r.get('rev', '')})"), *cols[2:]]
    cells = [[c(r) for _, c in cols] for r in rows]
    right = [bool(rows) and all(row[i][:1].isdigit() for row in cells) for i in range(len(cols))]  # numbers
    lines = ["| " + " | ".join(t for t, _ in cols) + " |", "|" + "|".join("---:" if x else "---" for x in right) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def summary(info: dict) -> str:
    """The after/before ratios as a markdown table, and a line naming the flagged ones."""
    rat = info["ratios"]
    lines = [f"after ({info['after']}) / before ({info['before']}), medians of {info['rounds']} interleaved rounds; "
             f"speed ratio (latencies: before/after), floor {FLOOR}:", "",
             "| system | workload | metric | before | after | speed ratio |", "|---|---|---|---:|---:|---:|"]
    for x in rat:
        digits = 3 if x["before"] < 100 else 0
        flag = "" if x["ok"] else f" **< {FLOOR}**"
        lines.append(f"| {x['system']} | {x['workload']} | {x['metric']} | {fmt(x['before'], digits)} | "
                     f"{fmt(x['after'], digits)} | {x['speed_ratio']:.3f}{flag} |")
    bad = [f"{x['system']} {x['workload']} {x['metric']} {x['speed_ratio']:.3f}" for x in rat if not x["ok"]]
    lines += ["", ("FLAGGED below the floor: " + "; ".join(bad)) if bad else
              f"every judged after median is at least {FLOOR}x its before median"]
    return "\n".join(lines)
