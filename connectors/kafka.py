"""Kafka sources and sinks behind one interface: kafka-python (default) and confluent-kafka.

Consumers never auto-commit: the daemon's checkpoint is the source of truth for positions, and it
seeks each newly assigned partition to its checkpointed offset. Commits happen only after the
decisions are acknowledged and the state that produced them is checkpointed. Groups use
cooperative-sticky assignment. Producers are idempotent with ``acks=all``; a producer that fails
(for kafka-python, the ``UnknownProducerIdError`` that follows a broker restart and never clears by
itself) is closed, rebuilt, and the undelivered messages are sent again. kafka-python takes a
DUPLICATE_SEQUENCE_NUMBER answer for success, with offset -1; Tansu gives that answer after a
restart for a batch it never stored (it advances the producer's sequence first), so the
kafka-python sink treats an acknowledgement without an offset as undelivered. A message sent again
that may have reached the broker goes out through :attr:`Sink.resent` (the daemon marks its
decisions ``replay`` there). Whether librdkafka answers the same way was not measured: the
confluent-kafka sink asks for delivery reports of failures only.

Every client a source or sink builds is released when it is replaced, closed or abandoned: a
confluent-kafka client left to the garbage collector goes on reconnecting to a broker that is gone
(twice a second, for as long as the process lives), so none is ever left to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .base import DeliveryError, Membership, OffsetReset, Sink, Source, SourceRecord, pos_key

log = logging.getLogger("eddy.kafka")


def _split(key: str) -> tuple[str, int]:
    topic, part = key.rsplit(":", 1)
    return topic, int(part)


def security_kwargs(k: dict[str, Any], confluent: bool) -> dict[str, Any]:
    """Passes the security settings through to the chosen client, in its own spelling."""
    out: dict[str, Any] = {}
    proto = k.get("security_protocol", "PLAINTEXT")
    if confluent:
        out["security.protocol"] = proto
        if proto.startswith("SASL"):
            out.update({"sasl.mechanism": k["sasl_mechanism"], "sasl.username": k["sasl_username"],
                        "sasl.password": k["sasl_password"]})
        for src, dst in (("ssl_cafile", "ssl.ca.location"), ("ssl_certfile", "ssl.certificate.location"),
                         ("ssl_keyfile", "ssl.key.location")):
            if k.get(src):
                out[dst] = k[src]
    else:
        out["security_protocol"] = proto
        if proto.startswith("SASL"):
            out.update({"sasl_mechanism": k["sasl_mechanism"], "sasl_plain_username": k["sasl_username"],
                        "sasl_plain_password": k["sasl_password"]})
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if k.get(key):
                out[key] = k[key]
    return out


class _Resume:
    """Where each partition resumes, and the check that the position still lies within the log.

    A partition resumes from the checkpoint's position, or, when it is assigned again after being
    lost (a session timeout, a broker restart), from where this source left it: the state has
    learned every record before that, and resuming from the older committed offset would make it
    learn them twice. A partition revoked in an orderly rebalance may be moved on by another member,
    so it resumes from the group's committed offset instead.

    A broker that lost its log (memory storage restarted, a topic deleted and created again) leaves
    a resume position beyond the log's end. Kafka answers a fetch there with OFFSET_OUT_OF_RANGE and
    the client applies the reset policy, but not every Kafka-protocol broker does: the embedded
    Tansu answers with an empty fetch, and the consumer would wait there for offsets that may never
    come while the records before them went undecided. So, at most once a second, the source
    compares each position with the high watermark of the last fetch response and applies the
    reset policy itself, reporting an :class:`OffsetReset`. (The broker's ListOffsets answer is not
    used: Tansu's "latest" is wrong when the last batch holds several records.)
    """

    def __init__(self, policy: str):
        self.policy = policy
        self.at: dict[str, int] = {}  # next offset per partition, seeked or consumed
        self.pos: dict[str, int] = {}  # reported positions: assigned partitions that returned records
        self.resets: list[OffsetReset] = []
        self.lost_keys: list[str] = []  # lost since the last take_lost()
        self.restored: set[str] = set()  # assigned partitions already positioned where they resume
        self.joined = False  # the group was joined since the client was built
        self._checked = 0.0

    def consumed(self, key: str, nxt: int) -> None:
        self.at[key] = nxt
        self.pos[key] = nxt

    def revoked(self, key: str) -> None:
        self.at.pop(key, None)
        self.pos.pop(key, None)
        self.restored.discard(key)

    def lost(self, key: str) -> None:
        """Kept in ``at``: the partition resumes where the state left it if it comes back."""
        self.pos.pop(key, None)
        self.restored.discard(key)
        self.lost_keys.append(key)

    def membership(self, assigned: list[str]) -> Membership:
        return Membership(self.joined, assigned, all(k in self.restored for k in assigned))

    def due(self) -> bool:
        now = time.monotonic()
        if not self.at or now - self._checked < 1.0:
            return False
        self._checked = now
        return True

    def check(self, key: str, high: int | None, seek: Callable[[str, int], None]) -> None:
        """Applies the reset policy through ``seek(policy, high)`` when the position lies beyond
        ``high`` (a failed seek is logged and retried at the next check)."""
        at = self.at.get(key)
        if at is None or high is None or high < 0 or at <= high:
            return
        try:
            seek(self.policy, high)
        except Exception as e:
            log.warning("%s: position %d lies beyond the log's end (%d), and the reset failed: %s",
                        key, at, high, e)
            return
        log.warning("%s: position %d lies beyond the log's end (%d): the log was lost or recreated; "
                    "resumed from the %s offset", key, at, high, self.policy)
        self.resets.append(OffsetReset(key, at, high, self.policy))
        del self.at[key]

    def take(self) -> list[OffsetReset]:
        out, self.resets = self.resets, []
        return out


# -- kafka-python ---------------------------------------------------------------------------------
class KafkaPythonSource(Source):
    def __init__(self, settings: dict[str, Any], topics: list[str], on_assign: Callable | None = None,
                 on_revoke: Callable | None = None):
        from kafka import KafkaConsumer
        from kafka.consumer.subscription_state import ConsumerRebalanceListener
        from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor

        policy = settings.get("auto_offset_reset", "earliest")
        self._resume = _Resume(policy)
        self._held: set[Any] = set()  # partitions paused until they are positioned
        outer = self

        def revoked(tps):
            if on_revoke and tps:  # (before they go: the owner may hand their state over)
                on_revoke([pos_key(tp.topic, tp.partition) for tp in tps])
            for tp in tps:
                outer._resume.revoked(pos_key(tp.topic, tp.partition))

        def lost(tps):
            for tp in tps:
                outer._resume.lost(pos_key(tp.topic, tp.partition))

        def assigned(tps):
            if on_assign:  # first: it may restore their state and seek() where it resumes
                on_assign([pos_key(tp.topic, tp.partition) for tp in tps])
            positioned(tps)

        def positioned(tps):
            for tp in tps:
                k = pos_key(tp.topic, tp.partition)
                if k in outer._resume.at:
                    outer.consumer.seek(tp, outer._resume.at[k])
                outer._resume.restored.add(k)
            outer._resume.joined = True

        class Listener(ConsumerRebalanceListener):
            """kafka-python before 3: the callbacks run in the caller's poll; heartbeats have their
            own thread."""

            def on_partitions_revoked(self, tps):
                revoked(tps)

            def on_partitions_lost(self, tps):
                lost(tps)

            def on_partitions_assigned(self, tps):
                assigned(tps)

        listener: Any = Listener()
        import kafka

        base = getattr(kafka, "AsyncConsumerRebalanceListener", None)  # (kafka-python 3 and later)
        if base is not None:

            class AsyncListener(base):  # type: ignore[misc, valid-type]
                """kafka-python 3 runs the callbacks on its network thread, the one that sends the
                heartbeats: a restore run there (it reads the changelog, maybe for longer than
                the session timeout) would get the member evicted in the middle of it. So the
                daemon's callbacks run on a worker thread while this one awaits them, and the
                partitions being added stay paused until their state is restored and they are
                positioned (they are in the assignment already while the revocation is awaited)."""

                async def on_partitions_revoked(self, tps):
                    outer._hold_unrestored()
                    await outer._off_loop(revoked, tps)

                async def on_partitions_lost(self, tps):
                    lost(tps)

                async def on_partitions_assigned(self, tps):
                    tps = list(tps)
                    outer.consumer.pause(*tps)
                    if on_assign:  # (if it raises, they stay paused: the daemon rebuilds its clients)
                        await outer._off_loop(on_assign, [pos_key(tp.topic, tp.partition) for tp in tps])
                    positioned(tps)
                    outer._release_held(tps)

            listener = AsyncListener()

        self.consumer = KafkaConsumer(
            bootstrap_servers=settings["bootstrap_servers"],
            group_id=settings["group_id"],
            enable_auto_commit=False,
            auto_offset_reset=settings.get("auto_offset_reset", "earliest"),
            session_timeout_ms=settings.get("session_timeout_ms", 6000),
            heartbeat_interval_ms=max(300, settings.get("session_timeout_ms", 6000) // 6),
            partition_assignment_strategy=[CooperativeStickyAssignor],
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=settings.get("fetch_max_wait_ms", 500),
            # exactly-once reads what committed transactions wrote, and nothing of aborted ones
            isolation_level="read_committed" if settings.get("exactly_once") else "read_uncommitted",
            **security_kwargs(settings, confluent=False),
        )
        self.topics = list(topics)
        self.consumer.subscribe(topics, listener=listener)

    def _hold_unrestored(self) -> None:
        """Pauses the assigned partitions that were not positioned yet (being added)."""
        tps = [tp for tp in self.consumer.assignment()
               if pos_key(tp.topic, tp.partition) not in self._resume.restored]
        if tps:
            self.consumer.pause(*tps)
            self._held.update(tps)

    def _release_held(self, tps: list[Any]) -> None:
        """Resumes ``tps`` (positioned now) and what :meth:`_hold_unrestored` paused and is
        positioned too."""
        ready = {tp for tp in self._held | set(tps) if pos_key(tp.topic, tp.partition) in self._resume.restored}
        self._held -= ready
        mine = self.consumer.assignment()
        if ready & mine:
            self.consumer.resume(*(ready & mine))

    async def _off_loop(self, fn: Callable[[Any], None], arg: Any) -> None:
        """``fn(arg)`` on a worker thread, awaited on kafka-python's network loop, which goes on
        sending heartbeats meanwhile; what ``fn`` raises is raised here."""
        import threading

        done, failed = threading.Event(), []

        def work():
            try:
                fn(arg)
            except BaseException as e:  # (raised on the network loop below, as a sync listener's would be)
                failed.append(e)
            finally:
                done.set()

        threading.Thread(target=work, name="eddy-rebalance", daemon=True).start()
        net = self.consumer._net  # kafka-python 3's loop (no public handle): its sleep() is awaitable
        while not done.is_set():
            await net.sleep(_LISTENER_WAIT_S)
        if failed:
            raise failed[0]

    def seek(self, positions: dict[str, int]) -> None:
        self._resume.at.update(positions)

    def group_metadata(self) -> Any:
        """The consumer's group metadata (member, generation), for a transaction's offsets."""
        return self.consumer.group_metadata()

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        if _kafka_python_joined(self.consumer):
            self._resume.joined = True  # kafka-python calls the listener only when partitions are added
        else:
            # Joining or rebalancing: wait inside poll. kafka-python 3.0 (through 3.0.12 at least)
            # drops a join that completes between two polls and sends a new JoinGroup; with
            # micro-batch polls of 20 ms on a busy machine, and a broker that answers a join after
            # a 3 s delay (Tansu), single-member groups took 6-21 s to join, measured. Records
            # still return as soon as they arrive (poll does not wait for the timeout then).
            timeout_s = max(timeout_s, _JOIN_POLL_S)
        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        out: list[SourceRecord] = []
        for tp, recs in batches.items():
            for r in recs:
                out.append(SourceRecord(r.value or b"", tp.topic, tp.partition, r.offset, False,
                                        r.timestamp if r.timestamp and r.timestamp > 0 else 0, r.key))
            if recs:
                self._resume.consumed(pos_key(tp.topic, tp.partition), recs[-1].offset + 1)
        if self._resume.due():
            consumer = self.consumer

            def reset(tp):
                return lambda policy, high: (consumer.seek_to_beginning(tp) if policy == "earliest"
                                             else consumer.seek(tp, high))

            for tp in consumer.assignment():
                self._resume.check(pos_key(tp.topic, tp.partition), consumer.highwater(tp), reset(tp))
        return out

    def positions(self) -> dict[str, int]:
        return dict(self._resume.pos)

    def take_resets(self) -> list[OffsetReset]:
        return self._resume.take()

    def take_lost(self) -> list[str]:
        out, self._resume.lost_keys = self._resume.lost_keys, []
        return out

    def membership(self) -> Membership:
        return self._resume.membership([pos_key(tp.topic, tp.partition) for tp in self.consumer.assignment()])

    def topic_lag(self) -> dict[str, int]:
        from kafka.structs import TopicPartition

        out = {}
        for topic in self.topics:
            tps = [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic))]
            if not tps:
                continue
            ends, starts = self.consumer.end_offsets(tps), self.consumer.beginning_offsets(tps)
            committed = _committed(self.consumer, topic)
            out[topic] = sum(max(0, ends[tp] - (committed.get(pos_key(topic, tp.partition)) or starts[tp]))
                             for tp in tps)
        return out

    def commit(self, positions: dict[str, int]) -> None:
        from kafka.structs import OffsetAndMetadata, TopicPartition

        assigned = {pos_key(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        offsets = {TopicPartition(*_split(k)): OffsetAndMetadata(v, "", -1)
                   for k, v in positions.items() if k in assigned}
        if offsets:
            self.consumer.commit(offsets)

    def lag(self) -> dict[str, int]:
        """Lag from the high watermarks of the last fetch responses (no broker round trip)."""
        out = {}
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is not None:
                out[pos_key(tp.topic, tp.partition)] = max(0, high - self.consumer.position(tp))
        return out

    def close(self) -> None:
        self.consumer.close(autocommit=False)


_LISTENER_WAIT_S = 0.02  # how often kafka-python 3's network loop looks whether a worker's callback ended
_JOIN_POLL_S = 5.0  # kafka-python poll timeout while the member is not stable (see KafkaPythonSource.poll)


def _kafka_python_joined(consumer) -> bool:
    """Whether a kafka-python consumer is a stable member of its group (an owner or a spare)."""
    from kafka.coordinator.base import MemberState

    try:
        md = consumer.group_metadata()
        return bool(md.generation_id >= 0 and md.state is MemberState.STABLE)
    except AttributeError:  # kafka-python before group_metadata()
        return bool(consumer._coordinator.state is MemberState.STABLE)


def _maybe_written(exc: BaseException | None) -> bool:
    """Whether a kafka-python send that failed with ``exc`` may still have been written: yes after
    a timeout or a lost connection (the broker's answer was not heard) and after the two broker
    answers that come after an append; no after the broker refused it (e.g. ``UnknownProducerId``)."""
    from kafka import errors

    maybe = (errors.RequestTimedOutError, errors.NotEnoughReplicasAfterAppendError)
    return not isinstance(exc, errors.BrokerResponseError) or isinstance(exc, maybe)


def producer_kwargs(settings: dict[str, Any], **over: Any) -> dict[str, Any]:
    """The daemon's kafka-python producer settings (``over`` replaces or adds some)."""
    return {"bootstrap_servers": settings["bootstrap_servers"], "acks": "all", "linger_ms": 2,
            "batch_size": 256 * 1024, "max_request_size": 4 * 1024 * 1024, "request_timeout_ms": 10000,
            "max_block_ms": 10000, **security_kwargs(settings, confluent=False), **over}


class KafkaPythonSink(Sink):
    def __init__(self, settings: dict[str, Any], on_rebuild: Callable[[], None] | None = None):
        self.settings = settings
        self.on_rebuild = on_rebuild
        self._inflight: list[tuple[Any, str, bytes | None, bytes]] = []
        self.producer = self._build()

    def _build(self):
        from kafka import KafkaProducer

        return KafkaProducer(**producer_kwargs(self.settings))

    def rebuild(self) -> None:
        try:
            self.producer.close(timeout=1)
        except Exception:  # a broken producer may fail to close
            pass
        self.producer = self._build()
        if self.on_rebuild:
            self.on_rebuild()

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        try:
            fut = self.producer.send(topic, key=key, value=value)
        except Exception as e:  # buffer full, closed producer: retried at flush
            log.warning("send failed (%s); will retry at flush", e)
            fut = None
        self._inflight.append((fut, topic, key, value))

    def flush(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.producer.flush(timeout=max(0.1, deadline - time.monotonic()))
            except Exception as e:
                log.warning("flush failed: %s", e)
            failed = []
            for fut, topic, key, value in self._inflight:
                if fut is None or (fut.is_done and fut.failed() and not _maybe_written(fut.exception)):
                    failed.append((topic, key, value))  # never handed to the client, or refused by the broker
                elif not fut.is_done or fut.failed() or fut.value.offset < 0:
                    # With acks=all a written record has an offset. An acknowledgement without one
                    # (a DUPLICATE_SEQUENCE_NUMBER answer to a retry, which the client takes for
                    # success) is no proof of a write: Tansu advances a producer's sequence before
                    # it stores the batch, so a batch in flight when it is killed is answered so
                    # after the restart and is lost. Sent again, marked as a possible copy.
                    failed.append((topic, key, self.again(topic, key, value)))
            self._inflight = []
            if not failed:
                return
            if time.monotonic() > deadline:
                self._inflight = [(None, t, k, v) for t, k, v in failed]
                raise DeliveryError(f"{len(failed)} messages undelivered after {timeout_s}s")
            log.warning("%d messages undelivered or unconfirmed (acknowledged without an offset); rebuilding "
                        "the producer and resending", len(failed))
            time.sleep(0.5)
            self.rebuild()
            for t, k, v in failed:
                self.send(t, k, v)

    def close(self) -> None:
        try:
            self.producer.close(timeout=5)
        except Exception:
            pass

    def abandon(self) -> None:
        self._inflight = []
        try:
            self.producer.close(timeout=0)
        except Exception:
            pass


# -- confluent-kafka ------------------------------------------------------------------------------
class ConfluentSource(Source):
    def __init__(self, settings: dict[str, Any], topics: list[str], on_assign: Callable | None = None,
                 on_revoke: Callable | None = None):
        from confluent_kafka import Consumer

        self._resume = _Resume(settings.get("auto_offset_reset", "earliest"))
        self.consumer = Consumer({
            "bootstrap.servers": settings["bootstrap_servers"],
            "group.id": settings["group_id"],
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": settings.get("auto_offset_reset", "earliest"),
            "session.timeout.ms": settings.get("session_timeout_ms", 6000),
            "heartbeat.interval.ms": max(300, settings.get("session_timeout_ms", 6000) // 6),
            "partition.assignment.strategy": "cooperative-sticky",
            "fetch.max.bytes": 8 * 1024 * 1024,
            "fetch.wait.max.ms": settings.get("fetch_max_wait_ms", 500),
            # exactly-once reads what committed transactions wrote, and nothing of aborted ones
            "isolation.level": "read_committed" if settings.get("exactly_once") else "read_uncommitted",
            **security_kwargs(settings, confluent=True),
        })

        resume = self._resume

        def assign(consumer, parts):  # called on every join, with an empty list for a spare member
            if on_assign:  # first: it may restore their state and seek() where it resumes
                on_assign([pos_key(p.topic, p.partition) for p in parts])
            for p in parts:
                k = pos_key(p.topic, p.partition)
                if k in resume.at:
                    p.offset = resume.at[k]
            consumer.incremental_assign(parts)
            resume.restored.update(pos_key(p.topic, p.partition) for p in parts)
            resume.joined = True

        def revoke(consumer, parts):
            if on_revoke and parts:
                on_revoke([pos_key(p.topic, p.partition) for p in parts])
            for p in parts:
                resume.revoked(pos_key(p.topic, p.partition))
            consumer.incremental_unassign(parts)

        def lost(consumer, parts):
            for p in parts:
                resume.lost(pos_key(p.topic, p.partition))
            consumer.incremental_unassign(parts)

        self.topics = list(topics)
        self.consumer.subscribe(topics, on_assign=assign, on_revoke=revoke, on_lost=lost)

    def seek(self, positions: dict[str, int]) -> None:
        self._resume.at.update(positions)

    def group_metadata(self) -> Any:
        """The consumer's group metadata (member, generation), for a transaction's offsets."""
        return self.consumer.consumer_group_metadata()

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        msgs = self.consumer.consume(num_messages=max_records, timeout=timeout_s)
        out = []
        last: dict[tuple[str, int], int] = {}
        for m in msgs:
            if m.error():
                log.warning("consumer error: %s", m.error())
                continue
            topic, part, off = m.topic() or "", m.partition() or 0, m.offset() or 0
            ts = m.timestamp()[1]
            out.append(SourceRecord(m.value() or b"", topic, part, off, False, ts if ts > 0 else 0, m.key()))
            last[topic, part] = off
        for (topic, part), off in last.items():
            self._resume.consumed(pos_key(topic, part), off + 1)
        if self._resume.due():
            consumer = self.consumer

            def reset(p):
                return lambda policy, high: consumer.seek(TopicPartition(
                    p.topic, p.partition, OFFSET_BEGINNING if policy == "earliest" else high))

            for p in consumer.assignment():
                high = consumer.get_watermark_offsets(p, cached=True)[1]
                self._resume.check(pos_key(p.topic, p.partition), high, reset(p))
        return out

    def positions(self) -> dict[str, int]:
        return dict(self._resume.pos)

    def take_resets(self) -> list[OffsetReset]:
        return self._resume.take()

    def take_lost(self) -> list[str]:
        out, self._resume.lost_keys = self._resume.lost_keys, []
        return out

    def membership(self) -> Membership:
        return self._resume.membership([pos_key(p.topic, p.partition) for p in self.consumer.assignment()])

    def topic_lag(self) -> dict[str, int]:
        from confluent_kafka import TopicPartition

        out = {}
        for topic in self.topics:
            meta = self.consumer.list_topics(topic, timeout=5).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                continue
            tps = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
            total = 0
            for tp in self.consumer.committed(tps, timeout=5):
                low, high = self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
                total += max(0, high - (tp.offset if tp.offset >= 0 else low))
            out[topic] = total
        return out

    def commit(self, positions: dict[str, int]) -> None:
        from confluent_kafka import TopicPartition

        assigned = {pos_key(p.topic, p.partition) for p in self.consumer.assignment()}
        offs = [TopicPartition(*_split(k), v) for k, v in positions.items() if k in assigned]
        if offs:
            self.consumer.commit(offsets=offs, asynchronous=False)

    def lag(self) -> dict[str, int]:
        """Lag from the watermarks cached from the last fetch responses (no broker round trip)."""
        out = {}
        for p in self.consumer.assignment():
            _, high = self.consumer.get_watermark_offsets(p, cached=True)
            if high < 0:
                continue
            pos = self.consumer.position([p])[0].offset
            out[pos_key(p.topic, p.partition)] = max(0, high - pos) if pos >= 0 else high
        return out

    def close(self) -> None:
        self.consumer.close()


def _ck_maybe_written(err) -> bool:
    """Whether a confluent-kafka delivery that failed with ``err`` may still have been written:
    librdkafka's own errors (negative codes: a message timeout, a lost connection, an in-flight
    purge) leave it open, except those raised before a send; of the broker's answers, only the two
    that come after an append do."""
    from confluent_kafka import KafkaError

    code = err.code()
    if code < 0:
        return code not in (KafkaError._PURGE_QUEUE, KafkaError._QUEUE_FULL, KafkaError._TIMED_OUT_QUEUE,
                            KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION)
    return code in (KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND)


class ConfluentSink(Sink):
    def __init__(self, settings: dict[str, Any], on_rebuild: Callable[[], None] | None = None):
        self.settings = settings
        self.on_rebuild = on_rebuild
        # (topic, key, value, whether it may have been written), filled by the delivery callback
        self._failed: list[tuple[str, bytes | None, bytes, bool]] = []
        self.producer = self._build()

    def _build(self):
        from confluent_kafka import Producer

        failed = self._failed

        def on_delivery(err, msg) -> None:  # holds the list, not the sink: no cycle through the client
            if err is not None:
                maybe = _ck_maybe_written(err)
                log.debug("delivery failed (%s): %s", "may have been written" if maybe else "not written", err)
                failed.append((msg.topic(), msg.key(), msg.value(), maybe))

        # Delivery reports for failures only: a successful send costs no Python callback.
        return Producer({"bootstrap.servers": self.settings["bootstrap_servers"], "acks": "all",
                         "enable.idempotence": True, "linger.ms": 2, "message.timeout.ms": 10000,
                         "delivery.report.only.error": True, "on_delivery": on_delivery,
                         **security_kwargs(self.settings, confluent=True)})

    def _take_failed(self) -> list[tuple[str, bytes | None, bytes, bool]]:
        out = list(self._failed)
        self._failed.clear()
        return out

    @staticmethod
    def _release(producer, wait_s: float) -> None:
        """Delivers what it can within ``wait_s``, drops the rest, and closes the client."""
        try:
            if wait_s > 0:
                producer.flush(wait_s)
            producer.purge()
            producer.flush(0)
            close = getattr(producer, "close", None)  # confluent-kafka >= 2.10; older ones close when freed
            if close is not None:
                close()
        except Exception as e:  # a broken client may fail to close: it is dropped either way
            log.debug("producer release: %s", e)

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        produce = self.producer.produce
        while True:
            try:
                produce(topic, value, key)
                return
            except BufferError:
                self.producer.poll(0.05)

    def send_all(self, messages: list[tuple[str, bytes | None, bytes]]) -> None:
        produce, i, n = self.producer.produce, 0, len(messages)
        while i < n:
            try:
                for topic, key, value in messages[i:] if i else messages:
                    produce(topic, value, key)
                    i += 1
            except BufferError:  # the queue is full: wait for room, then go on from message i
                self.producer.poll(0.05)

    def flush(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            left = self.producer.flush(max(0.1, deadline - time.monotonic()))
            failed = self._take_failed()
            if left == 0 and not failed:
                return
            if time.monotonic() > deadline:
                self._failed.extend(failed)
                raise DeliveryError(f"{len(failed) + left} messages undelivered after {timeout_s}s")
            log.warning("%d messages undelivered; rebuilding the producer and resending", len(failed) + left)
            if left:
                self._failed.extend(failed)
                continue
            self._release(self.producer, 0)
            self.producer = self._build()
            if self.on_rebuild:
                self.on_rebuild()
            for t, k, v, maybe in failed:
                self.send(t, k, self.again(t, k, v) if maybe else v)

    def close(self) -> None:
        self._release(self.producer, 5.0)

    def abandon(self) -> None:
        """Queued and in-flight messages fail at once, undelivered; the client is closed."""
        self._release(self.producer, 0)
        self._failed.clear()


def make_source(settings, topics, on_assign=None, on_revoke=None) -> Source:
    """A consumer of ``topics``; ``on_assign(keys)`` runs when partitions are assigned, before they
    are positioned (it may :meth:`~Source.seek` them), ``on_revoke(keys)`` before they are revoked."""
    cls = ConfluentSource if settings["client"] == "confluent-kafka" else KafkaPythonSource
    return cls(settings, topics, on_assign, on_revoke)


def make_sink(settings, on_rebuild=None) -> Sink:
    cls = ConfluentSink if settings["client"] == "confluent-kafka" else KafkaPythonSink
    return cls(settings, on_rebuild)


def committed_offsets(settings: dict[str, Any], group_id: str, topic: str) -> dict[str, int]:
    """``{"topic:partition": offset}`` committed by ``group_id`` on each partition of ``topic``
    (partitions with no commit left out). Asks the group coordinator without joining the group."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=settings["bootstrap_servers"], group_id=group_id,
                             enable_auto_commit=False, **security_kwargs(settings, confluent=False))
    try:
        return _committed(consumer, topic)
    finally:
        consumer.close(autocommit=False)


def _committed(consumer, topic: str) -> dict[str, int]:
    """A kafka-python consumer's group's committed offsets on ``topic`` (uncommitted partitions left out)."""
    from kafka.structs import TopicPartition

    out = {}
    for part in sorted(consumer.partitions_for_topic(topic) or ()):
        off = consumer.committed(TopicPartition(topic, part))
        if off is not None and off >= 0:
            out[pos_key(topic, part)] = int(off)
    return out


def create_topics(settings: dict[str, Any], topics: list[str], partitions: int = 1) -> None:
    """Creates topics that do not exist yet (used with the embedded broker)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=settings["bootstrap_servers"],
                             **security_kwargs(settings, confluent=False))
    try:
        for t in topics:
            try:
                admin.create_topics([NewTopic(t, partitions, 1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
