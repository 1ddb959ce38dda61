"""Runs one child process and ends it with this guard's parent.

``python _guard.py PROGRAM ARGS...``: the parent holds the write end of this guard's stdin; when the
parent exits, however it exits (a clean stop, an exception, ``kill -9``), the pipe closes, the guard
reads end-of-file and terminates the child. SIGTERM to the guard terminates the child too; the
guard exits with the child's code. The child also gets SIGKILL if the guard itself is killed
(Linux's parent-death signal). Standard library only: it starts in tens of milliseconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: _guard.py PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    done = threading.Event()

    def end() -> None:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
        done.set()

    def watch_parent() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        end()

    signal.signal(signal.SIGTERM, lambda *_: end())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    threading.Thread(target=watch_parent, daemon=True).start()
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
