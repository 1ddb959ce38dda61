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


def through_broker(broker: Any, tmp_path: Any, pc: dict[str, Any], raw: list[bytes], n_out: int, n_dlq: int,
                   every_events: int = 100, plugins: tuple[str, ...] = (),
                   client: str = "kafka-python") -> tuple[list[dict], list[dict], Any]:
    """``raw`` on a real input topic through a daemon running pipeline ``pc``: the outputs and the
    dead letters read back from their topics, and the (stopped) daemon."""
    from connectors.kafka import create_topics
    from daemon import config
    from daemon.app import Daemon

    from .test_kafka import consume, produce

    cfg = config.load_dict({"plugins": list(plugins),
                            "kafka": {"client": client, "bootstrap_servers": broker.bootstrap,
                                      "group_id": f"g-{pc['name']}"},
                            "http": {"enabled": False},
                            "checkpoint": {"dir": str(tmp_path / "state"), "every_events": every_events},
                            "pipelines": [pc]}, env=False)
    p = cfg.pipelines[0]
    create_topics(cfg.kafka, [p["input_topic"], p["output_topic"], p["dead_letter_topic"]])
    produce(broker.bootstrap, p["input_topic"], raw)
    d = Daemon(cfg).start()
    try:
        out = consume(broker.bootstrap, p["output_topic"], n_out)
        return out, consume(broker.bootstrap, p["dead_letter_topic"], n_dlq), d
    finally:
        d.stop()
