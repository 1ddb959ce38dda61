"""JSON-lines sources and sinks (files or stdin/stdout), so a pipeline runs without Kafka."""

from __future__ import annotations

import sys
from typing import IO

from .base import Sink, Source, SourceRecord, pos_key


class JsonLinesSource(Source):
    """Reads one record per line; the position is the line number (``"<path>:0"``)."""

    def __init__(self, path: str, topic: str = "file"):
        self.path = path
        self.topic = topic
        self._f: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")
        self._line = 0
        self._eof = False

    def seek(self, positions: dict[str, int]) -> None:
        target = positions.get(pos_key(self.topic, 0), 0)
        while self._line < target and self._f.readline():
            self._line += 1

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        out: list[SourceRecord] = []
        while len(out) < max_records:
            line = self._f.readline()
            if not line:
                self._eof = True
                break
            off = self._line
            self._line += 1
            line = line.rstrip(b"\r\n")
            if line.strip():
                out.append(SourceRecord(line, self.topic, 0, off))
        return out

    def positions(self) -> dict[str, int]:
        return {pos_key(self.topic, 0): self._line}

    def at_end(self) -> bool:
        return self._eof

    def close(self) -> None:
        if self._f is not sys.stdin.buffer:
            self._f.close()


class JsonLinesSink(Sink):
    """Writes each topic's messages to its own file (``-`` for stdout), one JSON per line."""

    def __init__(self, paths: dict[str, str]):
        self._files: dict[str, IO[bytes]] = {}
        for topic, path in paths.items():
            self._files[topic] = sys.stdout.buffer if path == "-" else open(path, "ab")

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        f = self._files.get(topic)
        if f is not None:
            f.write(value + b"\n")

    def flush(self, timeout_s: float = 30.0) -> None:
        for f in self._files.values():
            f.flush()

    def close(self) -> None:
        for f in self._files.values():
            if f is not sys.stdout.buffer:
                f.close()
