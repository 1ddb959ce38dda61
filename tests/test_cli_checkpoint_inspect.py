"""``eddy checkpoint inspect`` on real checkpoints (written by ``eddy replay --state``) and on
everything that is not one: a message and an exit status, never a traceback.

Exit status: 0 every pipeline found has an intact checkpoint, 1 one has checkpoints but none
intact (start-up would fail), 2 nothing to inspect."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import make_records


def eddy(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "daemon.cli", *args], capture_output=True, text=True, timeout=120,
                         cwd=cwd, env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))})
    assert "Traceback" not in out.stderr, out.stderr
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The config's checkpoint.dir after a replay of pipeline ck (pipeline fresh has none yet)."""
    tmp = tmp_path_factory.mktemp("ckpt")
    state = tmp / "state"
    events = tmp / "in.jsonl"
    events.write_bytes(b"\n".join(make_records(400)) + b"\n")
    cfg = tmp / "eddy.toml"
    cfg.write_text(f'[checkpoint]\ndir = "{state}"\nevery_events = 60\nkeep = 3\n'
                   '[[pipelines]]\nname = "ck"\ndefault_action = "a"\nbatch_max_events = 50\n'
                   '[[pipelines]]\nname = "fresh"\ndefault_action = "a"\n')
    out = eddy("replay", "--config", str(cfg), "--events", str(events), "--out", str(tmp / "d.jsonl"),
               "--state", str(state))
    assert out.returncode == 0, out.stderr
    names = sorted(os.listdir(state / "ck"))
    assert sum(n.endswith(".json") and n.startswith("ckpt-") for n in names) == 3, names
    return tmp, cfg, state


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _ckpts(d):
    return sorted(str(d / n) for n in os.listdir(d) if n.startswith("ckpt-") and n.endswith(".json"))


def test_the_configured_dir_a_pipeline_dir_one_checkpoint_and_its_arrays(written):
    tmp, cfg, state = written
    out = eddy("checkpoint", "inspect", str(state))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)["pipelines"]["ck"]
    assert [r["intact"] for r in summary["checkpoints"]] == [True] * 3
    out = eddy("checkpoint", "inspect", str(state / "ck"))
    assert out.returncode == 0 and json.loads(out.stdout)["latest_intact"]["path"] == summary["checkpoints"][0]["path"]
    newest = summary["checkpoints"][0]["path"]
    out = eddy("checkpoint", "inspect", newest)
    assert out.returncode == 0 and json.loads(out.stdout)["intact"] is True
    out = eddy("checkpoint", "inspect", newest[:-5] + ".npz")  # its arrays: inspected through its JSON
    assert out.returncode == 0 and json.loads(out.stdout)["path"] == newest


def test_with_the_config_each_pipeline_is_listed_a_fresh_one_too(written, tmp_path):
    tmp, cfg, state = written
    out = eddy("checkpoint", "inspect", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert set(got["pipelines"]) == {"ck", "fresh"} and got["not_in_config"] == []
    assert got["pipelines"]["fresh"]["checkpoints"] == [] and got["pipelines"]["ck"]["latest_intact"]
    # a config whose checkpoint.dir (relative, as shipped: "state") does not exist yet
    bare = tmp_path / "bare.toml"
    bare.write_text('[[pipelines]]\nname = "p"\n')
    out = eddy("checkpoint", "inspect", "--config", str(bare), cwd=str(tmp_path))
    assert out.returncode == 2
    assert f"checkpoint.dir 'state' of {bare} (relative to the current directory {tmp_path}) does not exist" \
        in out.stderr
    # a config with errors: all of them, and nothing inspected
    broken = tmp_path / "broken.toml"
    broken.write_text('[checkpoint]\ndri = "x"\n[[pipelines]]\nname = "p"\nlearner = "nope"\n')
    out = eddy("checkpoint", "inspect", "--config", str(broken))
    assert out.returncode == 2 and "checkpoint.dri: unknown key (did you mean 'dir'?)" in out.stderr
    assert "pipelines[0] (p).learner: 'nope' is not allowed" in out.stderr
    out = eddy("checkpoint", "inspect")
    assert out.returncode == 2 and "needs a PATH or --config FILE" in out.stderr


@pytest.mark.parametrize("case, message", [
    ("empty", "no checkpoint in it nor in a pipeline directory under it (it is empty; checkpoints are ckpt-N.json"),
    ("missing", "no such file or directory"),
    ("file", "not a checkpoint (not valid JSON"),
    ("unrelated", "no checkpoint in it nor in a pipeline directory under it (it holds notes.txt, sub/;"),
])
def test_nothing_to_inspect_is_a_message_and_exit_2(tmp_path, case, message):
    path = tmp_path / case
    if case == "empty":
        path.mkdir()
    elif case == "file":
        path.write_text("not a checkpoint\n")
    elif case == "unrelated":
        (path / "sub").mkdir(parents=True)
        (path / "notes.txt").write_text("x")
    out = eddy("checkpoint", "inspect", str(path))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().startswith(f"eddy: {path}: {message}"), out.stderr


def test_damaged_checkpoints_are_named_and_exit_1_when_none_is_intact(written, tmp_path):
    tmp, cfg, state = written
    root = _copy(state, tmp_path / "state")
    paths = _ckpts(root / "ck")
    with open(paths[-1][:-5] + ".npz", "r+b") as f:  # the newest truncated: start-up restores the one before
        f.truncate(100)
    out = eddy("checkpoint", "inspect", str(root))
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["pipelines"]["ck"]["checkpoints"]
    assert [r["intact"] for r in rows] == [False, True, True] and "checksum mismatch" in rows[0]["error"]
    for p in paths[:-1]:
        open(p, "w").close()  # every other one emptied: none intact
    out = eddy("checkpoint", "inspect", str(root))
    assert out.returncode == 1
    assert json.loads(out.stdout)["pipelines"]["ck"]["latest_intact"] is None
    line = out.stderr.strip()
    assert line.startswith(f"eddy: no intact checkpoint in {root / 'ck'} (pipeline ck), start-up would fail: ")
    assert "checksum mismatch" in line and line.count("not valid JSON") == 2
    out = eddy("checkpoint", "inspect", paths[0])  # one damaged checkpoint file
    assert out.returncode == 1 and json.loads(out.stdout)["intact"] is False
    assert out.stderr.strip() == f"eddy: {paths[0]} is damaged: not valid JSON (Expecting value: line 1 column 1 " \
        "(char 0))"
