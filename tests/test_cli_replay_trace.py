"""``eddy replay --trace``: the optimum has a name in ``--policies``, sizes mean one thing (a whole
number pages, a decimal in (0, 1] or a percentage a share of the unique keys), and the output
gives the request and unique-key counts and each policy's time."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from daemon.traces import parse_sizes


def eddy(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "daemon.cli", *args], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr, out.stderr
    return out


@pytest.fixture()
def trace(tmp_path):
    rng = np.random.default_rng(3)
    keys = rng.zipf(1.3, 4000) % 1000
    path = tmp_path / "t.txt"
    path.write_text("\n".join(map(str, keys.tolist())) + "\n")
    return str(path), keys


def test_opt_by_name_sizes_as_pages_or_shares_counts_and_timings(trace, tmp_path):
    path, keys = trace
    unique = len(np.unique(keys))
    js = tmp_path / "rows.json"
    out = eddy("replay", "--trace", path, "--policies", "LRU,opt,Belady,paging-arc", "--sizes", "1,1.0,50%,0.1,20",
               "--json", str(js))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"miss ratio over 4000 requests, {unique} unique keys (misses include cold misses)"
    assert lines[1].split() == ["cache_size", "lru", "arc", "belady", "(OPT)"]  # the optimum once
    assert [int(line.split()[0]) for line in lines[2:7]] == sorted({1, unique, unique // 2, int(unique * 0.1), 20})
    assert f"trace: 4000 requests, {unique} unique keys (read in " in out.stdout
    timing = next(line for line in lines if line.startswith("time per policy (all 5 sizes): "))
    assert [part.split()[0] for part in timing.split(": ", 1)[1].split(", ")] == ["lru", "arc", "belady"]
    got = json.loads(js.read_text())
    assert got["requests"] == 4000 and got["unique_keys"] == unique
    assert all(r["seconds"] >= 0 for r in got["rows"])
    full = [r for r in got["rows"] if r["cache_size"] == unique]
    assert {r["misses"] for r in full} == {unique}  # 1.0 = 100%: cold misses only


def test_sizes_parse_unambiguously():
    assert parse_sizes("1, 1.0 ,100%,0.25,25%,3,1e-2") == [
        ("pages", 1), ("share", 1.0), ("share", 1.0), ("share", 0.25), ("share", 0.25), ("pages", 3),
        ("share", 0.01)]


@pytest.mark.parametrize("sizes", ["2.5", "0", "-3", "150%", "0%", "x", "1,,2"])
def test_a_bad_size_says_what_sizes_mean(trace, sizes):
    out = eddy("replay", "--trace", trace[0], "--sizes", sizes)
    assert out.returncode == 2
    assert "is not a cache size: a whole number is pages (1 = one page); a decimal number in (0, 1] or a " \
           "percentage is a share of the trace's unique keys (1.0 = 100%, 0.5 = 50%)" in out.stderr


def test_a_bad_policy_lists_the_valid_names_and_says_opt_is_always_shown(trace):
    out = eddy("replay", "--trace", trace[0], "--policies", "lruu,robust-discard")
    assert out.returncode == 2
    err = out.stderr
    assert "--policies: 'lruu', 'robust-discard' not allowed (did you mean 'lru'?)" in err
    assert "'robust-discard' needs a predictor's bits" in err
    assert "allowed: lru, fifo, sieve, s3fifo, arc, marker, learned-discard, learned-phase, learned-ftp " \
           "(Belady's optimum, OPT or belady, is always shown)" in err
    out = eddy("replay", "--trace", trace[0], "--policies", "OPT")  # the optimum alone
    assert out.returncode == 0 and out.stdout.splitlines()[1].split() == ["cache_size", "belady", "(OPT)"]


def test_an_unreadable_or_empty_trace_is_a_message(tmp_path):
    bad = tmp_path / "t.xz"
    bad.write_bytes(b"not xz at all")
    out = eddy("replay", "--trace", str(bad))
    assert out.returncode == 2 and f"--trace: '{bad}' cannot be read" in out.stderr
    empty = tmp_path / "e.txt"
    empty.write_text("")
    out = eddy("replay", "--trace", str(empty))
    assert out.returncode == 2 and "holds no requests" in out.stderr
