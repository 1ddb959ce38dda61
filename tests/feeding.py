"""Records into a pipeline's engine in micro-batches: the one helper the family tests share."""

from __future__ import annotations

from typing import Any

import orjson

from connectors.base import SourceRecord


def records(items: list[Any], topic: str = "in", partition: int = 0, start: int = 0) -> list[SourceRecord]:
    """Source records of JSON objects (or of raw bytes), at consecutive offsets from ``start``."""
    return [SourceRecord(v if isinstance(v, bytes) else orjson.dumps(v), topic, partition, start + i)
            for i, v in enumerate(items)]


def feed(core: Any, items: list[Any], batch: int = 37, topic: str = "in") -> list:
    """All outputs and dead letters of ``items`` handled in micro-batches of ``batch``."""
    recs = records(items, topic)
    out: list = []
    for i in range(0, len(recs), batch):
        out += core.handle(recs[i:i + batch])
    return out
