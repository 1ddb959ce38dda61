"""``eddy replay --sequence``: systems (inline, .npz) or measured iteration rows through the ω policies."""

from __future__ import annotations

import json

import numpy as np
import pytest

from daemon import cli
from daemon.config import ConfigError
from daemon.sequences import read_sequence, replay_sequence
from learners.sor import AUTHORS_GRID
from learners.sor.systems import poisson, solve


def write_lines(path, objs) -> str:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return str(path)


def test_measured_rows_replay_every_policy_against_the_baselines(tmp_path, capsys):
    rng = np.random.default_rng(0)
    grid = np.array(AUTHORS_GRID)
    rows = []
    for _ in range(400):
        c = float(rng.uniform(0, 1))
        rows.append({"context": c, "iterations": (60 + 2000 * (grid - (1.3 + 0.5 * c)) ** 2).round().tolist()})
    seq = write_lines(tmp_path / "seq.jsonl", [{"context_range": [0, 1]}, *rows])
    out = tmp_path / "rows.json"
    png = tmp_path / "cum.png"
    assert cli.main(["replay", "--sequence", seq, "--json", str(out), "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    got = {r["policy"]: r for r in json.loads(out.read_text())}
    assert set(got) == {"chebcb", "tsallis-inf-cb", "tsallis-inf", "fixed-1.0", "best-fixed", "instance-best"}
    assert got["instance-best"]["gap_closed"] == pytest.approx(1.0) and got["best-fixed"]["gap_closed"] == 0.0
    assert got["chebcb"]["gap_closed"] > 0.5 and got["fixed-1.0"]["mean_iterations"] > got["best-fixed"]["mean_iterations"]
    its = np.array([r["iterations"] for r in rows])
    assert got["instance-best"]["mean_iterations"] == pytest.approx(its[80:].min(axis=1).mean())
    assert "chebcb" in text and png.read_bytes()[:4] == b"\x89PNG"


def test_systems_inline_and_from_npz_are_solved_at_every_omega(tmp_path):
    shifts = [0.0, 0.2, 0.4]
    lines: list[dict] = [{"omegas": [1.0, 1.4, 1.8], "method": "sor"}]
    for i, s in enumerate(shifts):
        sys_ = poisson(6, s)
        if i % 2:
            np.savez(tmp_path / f"s{i}.npz", indptr=sys_.indptr, indices=sys_.indices, data=sys_.data,
                     shape=np.array([36, 36]), b=sys_.b)
            lines.append({"context": s, "npz": f"s{i}.npz"})
        else:
            lines.append({"context": s, "indptr": sys_.indptr.tolist(), "indices": sys_.indices.tolist(),
                          "data": sys_.data.tolist(), "b": sys_.b.tolist()})
    settings, its, ctx = read_sequence(write_lines(tmp_path / "seq.jsonl", lines))
    assert ctx.tolist() == shifts and its.shape == (3, 3)
    for i, s in enumerate(shifts):
        assert its[i].tolist() == [solve(poisson(6, s), "sor", w).iterations for w in (1.0, 1.4, 1.8)]
    rows, paid = replay_sequence(str(tmp_path / "seq.jsonl"), seeds=1, warmup=0.0)
    assert {r["policy"] for r in rows} >= {"chebcb", "fixed-1.0"} and len(paid["chebcb"]) == 3


@pytest.mark.parametrize("line,match", [
    ({"npz": "../outside.npz"}, "outside"),
    ({"indptr": [0, 1], "indices": [0]}, "needs"),
    ({"indptr": [0, 1, 2], "indices": [0, 0], "data": [1.0, 1.0], "b": [1.0, 1.0]}, "singular_diagonal"),
    ({"iterations": [1, 2]}, "20 counts"),
    ({"context": "hot", "iterations": [1] * 20}, "'context'"),
])
def test_bad_lines_are_refused_with_their_line(tmp_path, line, match):
    seq = write_lines(tmp_path / "seq.jsonl", [{"context": 0.1, "iterations": [5] * 20}, line])
    with pytest.raises(ConfigError, match=f"line 2: .*{match}"):
        read_sequence(seq)
