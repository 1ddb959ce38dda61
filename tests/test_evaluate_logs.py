"""``eddy evaluate`` on files: the command line, the column mapping, bad rows, JSON lines and Parquet."""

from __future__ import annotations

import argparse
import gzip
import json
import sys

import orjson
import pytest

from daemon import config
from daemon.config import ConfigError
from daemon.evaluate import add_arguments, cmd, evaluate

from .test_evaluate import ACTIONS, make_log

TOML = """
[[pipelines]]
name = "routing"
learner = "squarecb"
input_topic = "payments"
output_topic = "decisions"
n_features = 32
learn_every_events = 64
shadow_learners = ["linucb"]
params = {actions = ["a", "b", "c"]}
"""


def run(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="eddy evaluate")
    add_arguments(p)
    return cmd(p.parse_args(argv))


def write_jsonl(path, rows) -> str:
    with open(path, "wb") as f:
        for r in rows:
            f.write(orjson.dumps(r) + b"\n")
    return str(path)


def same_report(a: dict, b: dict) -> None:
    """Equal but for where the rows came from."""
    strip = ("logs", "format", "mapping")
    assert {k: v for k, v in a.items() if k not in strip} == {k: v for k, v in b.items() if k not in strip}


@pytest.fixture()
def toml(tmp_path):
    path = tmp_path / "eddy.toml"
    path.write_text(TOML)
    return str(path)


def test_the_command_with_a_column_mapping(tmp_path, toml, capsys):
    """A router's own column names (nested propensity, per-row action sets, integer ids and times)
    through --map give the report of the same rows under eddy's default names."""
    rows = make_log(500, "skewed", seed=11)
    theirs = [{"tx_id": i, "ctx": r["features"], "chosen": r["action"], "meta": {"p": r["propensity"]},
               "r": r["reward"], "available": ACTIONS, "ts": 1_700_000_000 + i} for i, r in enumerate(rows)]
    logs = write_jsonl(tmp_path / "router.jsonl", theirs)
    out = tmp_path / "report.json"
    mapping = "context=ctx,action=chosen,propensity=meta.p,reward=r,actions=available,id=tx_id,time=ts"
    assert run(["--config", toml, "--logs", logs, "--map", mapping, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["mapping"]["propensity"] == "meta.p" and report["format"] == "jsonl"
    assert report["rows"] == {"read": 500, "parsed": 500, "skipped": {}, "out_of_order_time": 0}
    assert report["time"] == {"first": 1_700_000_000, "last": 1_700_000_499}
    pr = report["pipelines"]["routing"]
    assert pr["learn_every"] == 64 and set(pr["policies"]) == {"squarecb", "linucb"}
    for line in ("pipeline routing: 500 rows evaluated, 500 with a propensity", "logged policy (mean reward): ",
                 "squarecb", "linucb", "IPS", "SNIPS", "DR", "ESS", "direct method (biased)"):
        assert line in text
    # The same rows under the default names (an integer id reads as its decimal string).
    ours = [{"id": str(t["tx_id"]), "features": t["ctx"], "action": t["chosen"], "propensity": t["meta"]["p"],
             "reward": t["r"], "actions": ACTIONS, "time": t["ts"]} for t in theirs]
    same_report(evaluate(config.load(toml), write_jsonl(tmp_path / "ours.jsonl", ours)), report)
    # Gzipped, and learning before every row (--learn-every 1: a different, slower replay).
    gz = tmp_path / "router.jsonl.gz"
    gz.write_bytes(gzip.compress((tmp_path / "router.jsonl").read_bytes()))
    assert run(["--config", toml, "--logs", str(gz), "--map", mapping, "--learn-every", "1",
                "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    assert again["pipelines"]["routing"]["learn_every"] == 1 and again["rows"]["parsed"] == 500


def test_bad_rows_are_counted_never_fatal(tmp_path, toml, capsys):
    good = make_log(200, "uniform", seed=12)
    f = {"segment": "s1", "amount": 0.5}
    bad = [
        b"{not json", b"[1, 2]", b"",  # (an empty line is no row)
        {"features": f, "action": "a", "propensity": 0.5},
        {"features": f, "action": "a", "propensity": 0.5, "reward": "1"},
        {"features": f, "action": "a", "propensity": 0.0, "reward": 1},
        {"features": f, "action": "a", "propensity": 1.5, "reward": 1},
        {"features": f, "action": "a", "propensity": "0.3", "reward": 1},
        {"features": f, "action": "z", "propensity": 0.5, "reward": 1, "actions": ["a", "b"]},
        {"features": f, "action": "z", "propensity": 0.5, "reward": 1},  # not among the configured actions
        {"features": f, "propensity": 0.5, "reward": 1},
        {"features": f, "action": True, "propensity": 0.5, "reward": 1},
        {"features": f, "action": "a", "propensity": 0.5, "reward": 1, "actions": []},
        {"features": f, "action": "a", "propensity": 0.5, "reward": 1, "actions": ["a", "a"]},
        {"features": {"nested": {"x": 1}}, "action": "a", "propensity": 0.5, "reward": 1},
        {"features": [1.0, 2.0], "action": "a", "propensity": 0.5, "reward": 1},  # 2 numbers for n_features 32
        {"action": "a", "propensity": 0.5, "reward": 1},
    ]
    lines = [r if isinstance(r, bytes) else orjson.dumps(r) for r in bad]
    path = tmp_path / "logs.jsonl"
    path.write_bytes(b"\n".join([*lines[:8], *(orjson.dumps(r) for r in good), *lines[8:]]) + b"\n")
    out = tmp_path / "r.json"
    assert run(["--config", toml, "--logs", str(path), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["rows"]["read"] == 200 + len(bad) - 1
    assert report["rows"]["skipped"] == {"malformed_json": 2, "missing_reward": 1, "bad_reward": 1,
                                         "bad_propensity": 3, "action_not_offered": 1, "missing_action": 1,
                                         "bad_action": 1, "bad_actions": 1, "bad_context": 1, "missing_context": 1}
    pr = report["pipelines"]["routing"]
    # Rows the pipeline's decoder refuses (as the daemon would dead-letter them), with its reasons.
    assert pr["rows"]["skipped"] == {"action_not_offered": 1, "bad_type": 2}
    assert pr["rows"]["evaluated"] == 200
    assert "skipped: " in capsys.readouterr().out


def test_jsonl_and_parquet_give_identical_reports(tmp_path, toml):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = make_log(700, "skewed", seed=13)
    flat = [{"id": r["id"], "segment": r["features"]["segment"], "amount": r["features"]["amount"],
             "chosen": r["action"], "p": r["propensity"], "reward": r["reward"]} for r in rows]
    flat[5]["p"] = None  # a null propensity
    flat[9]["reward"] = None  # a null reward: skipped
    jsonl = write_jsonl(tmp_path / "logs.jsonl", flat)
    parquet = tmp_path / "logs.parquet"
    pq.write_table(pa.Table.from_pylist(flat), parquet, row_group_size=128)  # several row groups
    mapping = "context=segment+amount,action=chosen,propensity=p"
    a = evaluate(config.load(toml), jsonl, mapping=mapping)
    b = evaluate(config.load(toml), str(parquet), mapping=mapping)
    assert b["format"] == "parquet" and a["format"] == "jsonl"
    assert a["rows"]["skipped"] == {"missing_reward": 1} and a["pipelines"]["routing"]["rows"]["with_propensity"] == 698
    same_report(a, b)
    # context=* takes every column but the mapped ones; a struct column reads as a nested object.
    c = evaluate(config.load(toml), str(parquet), mapping="context=*,action=chosen,propensity=p,id=none")
    assert c["pipelines"]["routing"]["rows"]["evaluated"] == 699
    nested = [{"features": {"segment": r["segment"], "amount": r["amount"]}, **{k: r[k] for k in ("id", "chosen", "p",
                                                                                                   "reward")}}
              for r in flat]
    pq.write_table(pa.Table.from_pylist(nested), tmp_path / "nested.parquet")
    d = evaluate(config.load(toml), str(tmp_path / "nested.parquet"), mapping="action=chosen,propensity=p")
    same_report(a, d)


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, toml, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"pip install 'eddyd\[parquet\]'"):
        evaluate(config.load(toml), str(tmp_path / "x.parquet"))


def test_hashed_and_action_feature_pipelines(tmp_path):
    """Sparse hashed contexts with crosses, and per-row action sets with action features."""
    rows = make_log(300, "uniform", seed=14)
    pcs = [{"name": "hashed", "learner": "squarecb-hashed", "input_topic": "t", "output_topic": "o",
            "n_features": 1024, "learn_every_events": 32, "crosses": [["segment", "amount"]],
            "shadow_learners": ["epsilon-greedy-hashed"], "params": {"actions": ACTIONS}},
           {"name": "shared", "learner": "squarecb-shared", "input_topic": "t2", "output_topic": "o2",
            "n_features": 16, "params": {"n_action_features": 2}}]
    cfg = config.load_dict({"pipelines": pcs}, env=False)
    feats = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 1.0]}
    for r in rows:
        r["actions"] = [{"id": x, "features": feats[x]} for x in ACTIONS]
    report = evaluate(cfg, rows)
    for name in ("hashed", "shared"):
        pr = report["pipelines"][name]
        assert pr["rows"]["evaluated"] == 300 and pr["status"] == "ok", pr
        for q in pr["policies"].values():
            assert q["status"] == "ok" and 0.2 < q["dr"]["value"] < 0.8
    assert set(report["pipelines"]["hashed"]["policies"]) == {"squarecb-hashed", "epsilon-greedy-hashed"}
    only = evaluate(cfg, rows, pipeline="shared")
    assert list(only["pipelines"]) == ["shared"]
    with pytest.raises(ConfigError, match="no pipeline 'nope'"):
        evaluate(cfg, rows, pipeline="nope")


def test_unreadable_logs_and_bad_options(tmp_path, toml, capsys):
    assert run(["--config", toml, "--logs", str(tmp_path / "missing.jsonl")]) == 1
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    if pytest.importorskip("pyarrow"):
        assert run(["--config", toml, "--logs", str(tmp_path / "x.parquet")]) == 1
        assert "as Parquet" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--confidence"):
        run(["--config", toml, "--logs", "x", "--confidence", "95"])
    with pytest.raises(ConfigError, match="--map"):
        run(["--config", toml, "--logs", str(tmp_path / "missing.jsonl"), "--map", "prob=p"])
    rows = make_log(100, "uniform", seed=15)
    report = evaluate(config.load(toml), rows, mapping="action=nothing")
    assert report["rows"]["skipped"] == {"missing_action": 100}
    assert report["warnings"] == ["no usable row in 100 rows read (check --map: context=features,action=nothing,"
                                  "propensity=propensity,reward=reward,actions=actions,id=id,time=time)"]


def test_a_learner_that_fails_on_the_logs_is_reported_and_the_others_go_on(capsys):
    """FastCB needs rewards in [0, 1]: on rewards up to 5 it fails at its first learning block; the
    acting learner is evaluated to the end. Rows out of time order are counted."""
    rows = make_log(300, "uniform", seed=16)
    for i, r in enumerate(rows):
        r["reward"] *= 5.0
        r["time"] = float(i if i != 150 else 10)
    cfg = config.load_dict({"pipelines": [{"name": "routing", "learner": "squarecb", "input_topic": "t",
                                           "output_topic": "o", "n_features": 16, "learn_every_events": 100,
                                           "shadow_learners": ["fastcb-neural"], "params": {"actions": ACTIONS}}]},
                           env=False)
    report = evaluate(cfg, rows)
    pr = report["pipelines"]["routing"]
    bad, ok = pr["policies"]["fastcb-neural"], pr["policies"]["squarecb"]
    assert bad["status"] == "error" and "fastcb needs rewards in [0, 1]" in bad["error"]
    assert bad["ips"]["n"] == 100 and ok["status"] == "ok" and ok["ips"]["n"] == 300
    assert any(w.startswith("fastcb-neural: failed on these logs") for w in pr["warnings"])
    assert report["rows"]["out_of_order_time"] == 1
    assert any("1 rows have a time earlier" in w for w in report["warnings"])
    from daemon.evaluate import table

    assert "shadow (failed)" in table(report)
