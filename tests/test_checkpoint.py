"""Damaged checkpoints: start-up falls back to the newest intact one, names what it skipped, and
fails with one line naming the directory when none is intact; ``eddy checkpoint inspect``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from connectors.files import JsonLinesSink, JsonLinesSource
from daemon import config
from daemon.checkpoint import CheckpointError, CheckpointStore, load
from daemon.cli import main as cli_main
from daemon.families import make_core
from daemon.runner import PipelineRunner

from .conftest import make_records, pipeline_cfg


def _cfg(state):
    return config.load_dict({"checkpoint": {"dir": str(state), "every_events": 60, "keep": 3},
                             "pipelines": [pipeline_cfg("ck")]}, env=False)


def _runner(cfg, events, out):
    core = make_core(cfg.pipelines[0])
    return PipelineRunner(core, JsonLinesSource(str(events)), JsonLinesSink({"decisions": str(out)}),
                          cfg.checkpoint, {"decision": "decisions", "dlq": "decisions"}, stop_at_end=True)


@pytest.fixture()
def written(tmp_path):
    """A pipeline run over 300 events, checkpointing every 60 records (three kept)."""
    events = tmp_path / "in.jsonl"
    events.write_bytes(b"\n".join(make_records(300)) + b"\n")
    cfg = _cfg(tmp_path / "state")
    r = _runner(cfg, events, tmp_path / "out.jsonl")
    r.restore()
    r.run()
    store = CheckpointStore(str(tmp_path / "state" / "ck"))
    seqs = store._seqs()
    assert len(seqs) == 3
    return cfg, events, store, [store.path(s) for s in seqs]


def _npz(json_path):
    return json_path[:-5] + ".npz"


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _flip(path, at=0.5):
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        i = int(len(data) * at)
        data[i] ^= 0x20
        f.seek(0)
        f.write(data)


def _empty(path):
    open(path, "wb").close()


def _bad_json(path):
    with open(path, "wb") as f:
        f.write(b'{"seq": 3, "arrays": ')


def _bad_positions(path):
    meta = json.loads(open(path).read())
    meta["positions"] = {"file:0": "3OO"}
    meta.pop("sha256_meta")  # as an older release (no checksums) would have left it
    open(path, "w").write(json.dumps(meta))


def _digit_changed(path):  # still valid JSON: only the checksum notices
    text = open(path).read()
    meta = json.loads(text)
    pos = meta["positions"]["file:0"]
    open(path, "w").write(text.replace(f'"file:0": {pos}', f'"file:0": {pos + 1}'))


DAMAGE = {
    "npz truncated": (_npz, _truncate),
    "npz flipped byte": (_npz, _flip),
    "npz empty": (_npz, _empty),
    "npz missing": (_npz, os.remove),
    "json empty": (lambda p: p, _empty),
    "json bad": (lambda p: p, _bad_json),
    "json non-integer positions": (lambda p: p, _bad_positions),
    "json changed digit": (lambda p: p, _digit_changed),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_start_falls_back_to_the_newest_intact_checkpoint(written, tmp_path, caplog, damage):
    cfg, events, store, paths = written
    target, harm = DAMAGE[damage]
    harm(target(paths[-1]))
    with pytest.raises(CheckpointError, match=os.path.basename(paths[-1])[:-5]):
        load(paths[-1])
    expected_arrays, expected_meta = load(paths[-2])
    r = _runner(cfg, events, tmp_path / "again.jsonl")
    with caplog.at_level(logging.WARNING, logger="eddy"):
        assert r.restore()
    assert r.positions == expected_meta["positions"]
    arrays, _ = r.core.snapshot()
    assert arrays.keys() == expected_arrays.keys()
    assert all(np.array_equal(arrays[k], expected_arrays[k]) for k in arrays)
    warned = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert any(os.path.basename(paths[-1])[:-5] in w and "damaged" in w for w in warned), warned
    damaged = r.core.metrics.registry.get_sample_value("eddy_checkpoint_damaged_total", {"pipeline": "ck"})
    assert damaged == 1
    # It goes on from there: the rest of the log is processed and a new checkpoint is written.
    r.run()
    assert r.positions == {"file:0": len(events.read_bytes().splitlines())}
    assert load(store.path(store._seqs()[-1]))[1]["positions"] == r.positions


def test_a_state_that_does_not_fit_the_pipeline_is_skipped_too(written, tmp_path):
    cfg, events, store, paths = written
    arrays, meta = load(paths[-1])
    arrays = {k: v for k, v in arrays.items() if not k.startswith("learner")}  # intact, but not this state
    store.save(arrays, {k: v for k, v in meta.items() if k not in ("seq", "arrays", "sha256_arrays", "sha256_meta")})
    r = _runner(cfg, events, tmp_path / "again.jsonl")
    assert r.restore()
    assert r.positions == load(paths[-1])[1]["positions"]
    assert len(r.store.damaged) == 1 and "does not restore into pipeline" in r.store.damaged[0][1]


def test_no_intact_checkpoint_fails_with_one_line_naming_the_directory(written, tmp_path):
    cfg, events, store, paths = written
    for p in paths:
        _truncate(_npz(p))
    r = _runner(cfg, events, tmp_path / "again.jsonl")
    with pytest.raises(CheckpointError, match=f"no intact checkpoint in {store.dir}"):
        r.restore()
    # The command line: one line, naming the directory, no traceback.
    out = subprocess.run([sys.executable, "-m", "daemon.cli", "replay", "--config", _toml(tmp_path, cfg),
                          "--events", str(events), "--out", str(tmp_path / "o.jsonl"), "--state",
                          str(tmp_path / "state")],
                         capture_output=True, text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if "no intact checkpoint" in line]
    assert len(errors) == 1 and store.dir in errors[0] and "Traceback" not in out.stderr


def _toml(tmp_path, cfg):
    p = cfg.pipelines[0]
    path = tmp_path / "c.toml"
    lines = ["[checkpoint]", f'dir = "{cfg.checkpoint["dir"]}"', "every_events = 60", "[[pipelines]]"]
    for k in ("name", "learner", "input_topic", "output_topic", "n_features", "reward_wait_s", "shadow_learners",
              "default_action", "batch_max_events"):
        lines.append(f"{k} = {json.dumps(p[k])}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_checkpoint_inspect_says_which_are_intact(written, capsys):
    cfg, events, store, paths = written
    _flip(_npz(paths[-1]))
    # The configured checkpoint dir (one subdirectory per pipeline) ...
    assert cli_main(["checkpoint", "inspect", cfg.checkpoint["dir"]]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["pipelines"]["ck"]["checkpoints"]
    assert [row["path"] for row in rows] == paths[::-1]  # newest first
    assert [row["intact"] for row in rows] == [False, True, True]
    assert "checksum mismatch" in rows[0]["error"]
    assert out["pipelines"]["ck"]["latest_intact"]["path"] == paths[-2]
    # ... or one pipeline's directory; with none intact the exit code says so.
    for p in paths[:-1]:
        _empty(p)
    assert cli_main(["checkpoint", "inspect", store.dir]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [row["intact"] for row in out["checkpoints"]] == [False, False, False]
    assert out["latest_intact"] is None
