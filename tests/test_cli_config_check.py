"""``eddy config check`` and ``eddy run`` report every problem of a config file, each once and
naming its place, then exit 1; a good file prints ok. Replays need no Kafka topics."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from daemon import config
from daemon.config import ConfigError

from .conftest import make_records, pipeline_cfg


def eddy(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


BAD = """
[kafka]
bootstrap_server = "k:9092"

[checkpoint]
every_events = 1000000000000

[[pipelines]]
name = "routing"
input_topic = "a"
output_topic = "b"
[pipelines.params]
gamma_scale = "x"

[[pipelines]]
name = "cache"
learner = "paging-lruu"
input_topic = "c"
output_topic = "d"
cache_window = 10

[[pipelines]]
name = "third"
input_topic = "e"
output_topic = "f"
default_action = "z"
[pipelines.params]
actions = ["a", "b"]
"""

EXPECTED = [
    "config error: kafka.bootstrap_server: unknown key (did you mean 'bootstrap_servers'?)",
    "config error: checkpoint.every_events: 1000000000000 is above the maximum 1000000000; every_events: "
    "checkpoint after this many input records (a restart processes at most this many records again)",
    "config error: pipelines[0] (routing).params.gamma_scale: expected a number, got 'x'",
    "config error: pipelines[1] (cache).learner: 'paging-lruu' is not allowed (did you mean 'paging-lru'?)",
    "config error: pipelines[2] (third).params: default_action 'z' is not among the configured actions ['a', 'b']",
]


@pytest.mark.parametrize("command", ["check", "run"])
def test_every_error_of_a_file_is_reported_once_then_exit_1(tmp_path, command):
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    out = eddy(*(["config", "check", str(path)] if command == "check" else ["run", "--config", str(path)]))
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and "ok" not in out.stdout
    errors = [line for line in out.stderr.splitlines() if line.startswith("config error: ")]
    assert len(errors) == len(EXPECTED), errors
    for want in EXPECTED:
        assert sum(line.startswith(want) for line in errors) == 1, (want, errors)
    assert f"eddy: {path}: 5 errors" in out.stderr
    # the unknown learner's pipeline: its other family's setting is not reported as a second error
    assert "cache_window" not in out.stderr


def test_a_good_file_prints_ok(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text('[[pipelines]]\nname = "p"\ninput_topic = "a"\noutput_topic = "b"\n'
                    '[[pipelines]]\nname = "q"\nlearner = "paging-lru"\ninput_topic = "c"\noutput_topic = "d"\n')
    out = eddy("config", "check", str(path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{path}: ok (2 pipelines: p (squarecb), q (paging-lru))"


@pytest.mark.parametrize("value, why", [
    ("0", "0 is below the minimum 1; every_events: checkpoint after this many input records"),
    ("-5", "-5 is below the minimum 1; every_events:"),
    ("1000000000000", "1000000000000 is above the maximum 1000000000; every_events: checkpoint after"),
    ("2.5", "expected an integer, got 2.5"),
    ('"often"', "expected an integer, got 'often'"),
])
def test_an_absurd_every_events_is_refused_with_a_reason(tmp_path, value, why):
    path = tmp_path / "c.toml"
    path.write_text(f'[checkpoint]\nevery_events = {value}\n'
                    '[[pipelines]]\nname = "p"\ninput_topic = "a"\noutput_topic = "b"\n')
    out = eddy("config", "check", str(path))
    assert out.returncode == 1 and f"config error: checkpoint.every_events: {why}" in out.stderr, out.stderr


def test_a_config_error_lists_every_problem_and_labels_pipelines():
    with pytest.raises(ConfigError) as e:
        config.load_dict({"http": {"port": 70_000, "host": 5},
                          "pipelines": [pipeline_cfg("a", params={"gamma_scale": "x", "gama": 1}),
                                        pipeline_cfg("a", shadow_learners=["paging-lru", "nope"])]}, env=False)
    errors = e.value.errors
    assert errors[0].startswith("http.host: expected str, got 5")
    assert errors[1].startswith("http.port: 70000 is above the maximum 65535")
    assert "pipelines[0].params.gamma_scale: expected a number, got 'x'" in errors
    assert any(x.startswith("pipelines[0].params.gama: not a parameter of 'squarecb'") for x in errors)
    assert "pipelines[1].name: 'a' must be unique and of letters, digits, - and _" in errors
    assert any(x.startswith("pipelines[1].shadow_learners: 'paging-lru' is a paging learner") for x in errors)
    assert any(x.startswith("pipelines[1].shadow_learners: 'nope' is not allowed") for x in errors)
    assert len(errors) == len(set(errors)) == 7
    assert str(e.value) == "\n".join(errors)
    assert e.value.lines()[2].startswith("pipelines[0] (a).params.")


def test_topics_are_only_required_by_run(tmp_path):
    raw = {"pipelines": [{"name": "p", "default_action": "a"}]}
    with pytest.raises(ConfigError, match=r"pipelines\[0\].input_topic: required .*`eddy replay --events` and "
                                          r"`eddy evaluate` run without it"):
        config.load_dict(raw, env=False)
    cfg = config.load_dict(raw, env=False, topics=False)
    assert cfg.pipelines[0]["input_topic"] == "file" and cfg.pipelines[0]["dead_letter_topic"] == "file.dlq"

    events = tmp_path / "in.jsonl"
    events.write_bytes(b"\n".join(make_records(200)) + b"\n")
    path = tmp_path / "replay.toml"
    path.write_text('[[pipelines]]\nname = "p"\ndefault_action = "a"\n')  # no [kafka], no topics
    out = eddy("replay", "--config", str(path), "--events", str(events), "--out", str(tmp_path / "d.jsonl"),
               "--progress")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["pipeline"] == "p" and report["events"] == 200
    progress = [line for line in out.stderr.splitlines() if line.startswith("replay: ")]
    assert progress and progress[-1].startswith(f"replay: {len(events.read_bytes().splitlines())} lines (100% of "
                                                f"{events.stat().st_size:,} bytes)")
    assert progress[-1].endswith(": end of file")
    # without --progress (stderr is no terminal here): no progress line
    out = eddy("replay", "--config", str(path), "--events", str(events), "--out", str(tmp_path / "d2.jsonl"))
    assert out.returncode == 0 and "replay: " not in out.stderr
    # the same file through `eddy run`: the topics are required there
    out = eddy("config", "check", str(path))
    assert out.returncode == 1 and "pipelines[0] (p).output_topic: required" in out.stderr


def test_replay_takes_a_learner_instead_of_a_config(tmp_path):
    events = tmp_path / "in.jsonl"
    events.write_bytes(b"\n".join(make_records(100)) + b"\n")
    out = eddy("replay", "--learner", "linucb", "--events", str(events), "--out", str(tmp_path / "d.jsonl"))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["pipeline"] == report["learner"] == "linucb" and report["events"] == 100
    out = eddy("replay", "--learner", "linucbb", "--events", str(events))
    assert out.returncode == 2 and "--learner: 'linucbb' is not a learner (did you mean 'linucb'?)" in out.stderr
    out = eddy("replay", "--learner", "linucb", "--config", str(tmp_path / "x.toml"), "--events", str(events))
    assert out.returncode == 2 and "--config and --learner: give one" in out.stderr
    out = eddy("replay", "--learner", "linucb", "--events", str(tmp_path / "missing.jsonl"))
    assert out.returncode == 2 and "--events: file" in out.stderr and "Traceback" not in out.stderr
