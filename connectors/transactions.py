"""Exactly-once on Kafka: a transactional sink, and the probe that says whether a broker isolates.

A consume-transform-produce loop is exactly-once when the records it publishes and the input
offsets it consumed are committed in one transaction (KIP-98), the offsets sent with the
consumer's group metadata so that a member fenced by a rebalance cannot commit (KIP-447, Kafka
2.5+), and when whoever reads the outputs reads ``read_committed``. The transactional id is
stable per daemon instance and pipeline: a restarted daemon's ``init_transactions`` fences its
previous incarnation and aborts the transaction that one left open.

A broker may accept the transaction calls without isolating: Tansu (the embedded broker, 0.6)
commits and aborts, but a ``read_committed`` consumer still receives the aborted records
(measured with kafka-python and confluent-kafka). :func:`isolation_problem` writes a record in
a transaction it aborts, commits a second, and reads the partition back ``read_committed``; the
daemon refuses exactly-once where it reports a problem.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from .base import DeliveryError, Sink
from .kafka import _split, create_topics, producer_kwargs, security_kwargs

log = logging.getLogger("eddy.kafka")

PROBE_TOPIC = "eddy.transactions.probe"


def isolation_problem(settings: dict[str, Any], topic: str = PROBE_TOPIC, timeout_s: float = 30.0) -> str | None:
    """``None`` where the broker isolates transactions; otherwise what the probe saw."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    try:
        create_topics(settings, [topic], partitions=1)
    except Exception as e:  # (an ACL may forbid it: the probe cannot run, the mode is refused)
        return f"the probe topic {topic!r} could not be created: {e}"
    token = uuid.uuid4().hex
    aborted, committed = f"aborted {token}".encode(), f"committed {token}".encode()
    try:
        p = KafkaProducer(bootstrap_servers=settings["bootstrap_servers"], transactional_id=f"eddy-probe-{token}",
                          max_block_ms=int(timeout_s * 1000), **security_kwargs(settings, confluent=False))
    except Exception as e:
        return f"a transactional producer could not start: {e}"
    try:
        p.init_transactions()
        p.begin_transaction()
        p.send(topic, partition=0, value=aborted)
        p.flush()
        p.abort_transaction()
        p.begin_transaction()
        p.send(topic, partition=0, value=committed)
        p.flush()
        p.commit_transaction()
    except Exception as e:
        return f"the broker refused a transaction: {e}"
    finally:
        p.close(timeout=5)
    c = KafkaConsumer(bootstrap_servers=settings["bootstrap_servers"], group_id=None, enable_auto_commit=False,
                      isolation_level="read_committed", auto_offset_reset="earliest",
                      **security_kwargs(settings, confluent=False))
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for r in c.poll(timeout_ms=300).get(tp, []):
                if r.value == aborted:
                    return "a read_committed consumer received a record of an aborted transaction"
                if r.value == committed:
                    return None
        return f"the committed probe record was not read back within {timeout_s:.0f} s"
    finally:
        c.close()


class _Transactional(Sink):
    """What both clients' transactional sinks share: a transaction opens with its first message."""

    _open = False
    producer: Any

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (something was sent since the last commit)."""
        return self._open

    def _begin(self) -> None:
        if not self._open:
            self.producer.begin_transaction()
            self._open = True


class KafkaPythonTransactionalSink(_Transactional):
    """Every message inside a transaction, committed with the consumed offsets by :meth:`commit`.

    A transaction opens with its first message (or with the commit, for offsets alone). Nothing
    is sent again here: a failed send or commit raises, the daemon aborts (:meth:`abandon`) and
    resumes from the checkpoint of the last committed transaction, so what the failed one held is
    decided again, from the same state, and published once in a new transaction.
    """

    def __init__(self, settings: dict[str, Any], transactional_id: str,
                 on_rebuild: Callable[[], None] | None = None):
        self.settings, self.transactional_id, self.on_rebuild = settings, transactional_id, on_rebuild
        self._open = False
        self._futures: list[Any] = []
        self.producer = self._build()

    def _build(self):
        from kafka import KafkaProducer

        p = KafkaProducer(**producer_kwargs(self.settings, max_block_ms=30000, transactional_id=self.transactional_id))
        p.init_transactions()  # fences an earlier producer of this id, aborting what it left open
        return p

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._begin()
        self._futures.append(self.producer.send(topic, key=key, value=value))

    def flush(self, timeout_s: float = 30.0) -> None:
        self.producer.flush(timeout=timeout_s)
        futures, self._futures = self._futures, []
        failed = [f for f in futures if not f.is_done or f.failed()]
        if failed:
            raise DeliveryError(f"{len(failed)} messages of the open transaction undelivered "
                                f"({failed[0].exception if failed[0].is_done else 'timed out'})")

    def commit(self, positions: dict[str, int], group_metadata: Any) -> None:
        """Flushes, adds ``positions`` (the next offsets to read) for the consumer's group, and
        commits the transaction; raises where any of it fails (the transaction is then aborted)."""
        from kafka.structs import OffsetAndMetadata, TopicPartition

        self._begin()
        self.flush()
        offsets = {TopicPartition(*_split(k)): OffsetAndMetadata(v, "", -1) for k, v in positions.items()}
        if offsets:
            self.producer.send_offsets_to_transaction(offsets, group_metadata)
        self.producer.commit_transaction()
        self._open = False

    def abandon(self) -> None:
        """Aborts the open transaction (where the broker still answers) and closes the client."""
        try:
            if self._open:
                self.producer.abort_transaction()
        except Exception as e:  # a fenced or broken producer: its transaction is aborted by the next one
            log.debug("abort: %s", e)
        self._open = False
        self._futures = []
        self.close(wait_s=0)

    def close(self, wait_s: float = 5.0) -> None:
        try:
            self.producer.close(timeout=wait_s)
        except Exception:
            pass


class ConfluentTransactionalSink(_Transactional):
    """:class:`KafkaPythonTransactionalSink` over confluent-kafka (librdkafka's transactions, the
    offsets sent with the consumer's group metadata, KIP-447). A failed delivery inside the
    transaction, a failed commit or a fenced producer raises; the daemon then aborts
    (:meth:`abandon`) and resumes from the checkpoint of the last committed transaction."""

    def __init__(self, settings: dict[str, Any], transactional_id: str,
                 on_rebuild: Callable[[], None] | None = None, timeout_s: float = 30.0):
        self.settings, self.transactional_id, self.on_rebuild = settings, transactional_id, on_rebuild
        self.timeout_s = timeout_s
        self._open = False
        self._failed: list[str] = []  # the delivery errors of the open transaction
        self.producer = self._build()

    def _build(self):
        from confluent_kafka import Producer

        failed = self._failed

        def on_delivery(err, msg) -> None:  # holds the list, not the sink: no cycle through the client
            if err is not None:
                failed.append(str(err))

        p = Producer({"bootstrap.servers": self.settings["bootstrap_servers"], "acks": "all",
                      "enable.idempotence": True, "linger.ms": 2, "transactional.id": self.transactional_id,
                      "transaction.timeout.ms": 60000, "delivery.report.only.error": True,
                      "on_delivery": on_delivery, **security_kwargs(self.settings, confluent=True)})
        p.init_transactions(self.timeout_s)  # fences an earlier producer of this id, aborting what it left open
        return p

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._begin()
        while True:
            try:
                self.producer.produce(topic, value, key)
                return
            except BufferError:  # the queue is full: wait for room
                self.producer.poll(0.05)

    def flush(self, timeout_s: float = 30.0) -> None:
        left = self.producer.flush(timeout_s)
        failed, self._failed[:] = list(self._failed), []
        if left or failed:
            raise DeliveryError(f"{len(failed) + left} messages of the open transaction undelivered "
                                f"({failed[0] if failed else 'timed out'})")

    def commit(self, positions: dict[str, int], group_metadata: Any) -> None:
        """Flushes, adds ``positions`` (the next offsets to read) for the consumer's group, and
        commits the transaction; raises where any of it fails (the transaction is then aborted)."""
        from confluent_kafka import TopicPartition

        self._begin()
        self.flush(self.timeout_s)
        offsets = [TopicPartition(*_split(k), v) for k, v in positions.items()]
        if offsets:
            self.producer.send_offsets_to_transaction(offsets, group_metadata, self.timeout_s)
        self.producer.commit_transaction(self.timeout_s)
        self._open = False

    def abandon(self) -> None:
        """Aborts the open transaction (where the broker still answers) and closes the client."""
        try:
            if self._open:
                self.producer.abort_transaction(5.0)
        except Exception as e:  # a fenced or broken producer: its transaction is aborted by the next one
            log.debug("abort: %s", e)
        self._open = False
        self._failed.clear()
        self.close(wait_s=0)

    def close(self, wait_s: float = 5.0) -> None:
        try:
            if wait_s > 0:
                self.producer.flush(wait_s)
            close = getattr(self.producer, "close", None)  # confluent-kafka >= 2.10
            if close is not None:
                close()
        except Exception:
            pass


def transactional_sink(settings: dict[str, Any], transactional_id: str,
                       on_rebuild: Callable[[], None] | None = None) -> Sink:
    """The transactional sink of the configured client."""
    cls = ConfluentTransactionalSink if settings["client"] == "confluent-kafka" else KafkaPythonTransactionalSink
    return cls(settings, transactional_id, on_rebuild)
