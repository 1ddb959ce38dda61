"""A changelog topic: the latest state of each input partition, chunked across records.

A pipeline's state per input partition (opaque bytes to this module) is written as one generation:
chunk records keyed ``<partition>/<generation>/<i>`` then a header keyed ``<partition>`` naming the
generation, its chunk count, the SHA-256 of the whole, and the input position the state holds
(records before it are in the state). The header is written last, so a reader that sees it has
every chunk before it on the same changelog partition; the previous generation's chunks are then
deleted with tombstones. On a compacted topic (``cleanup.policy=compact``, which
:func:`create_changelog` sets) the log keeps one header and one generation per partition; where
compaction is missing (the embedded broker) the reader reads the log to its end and keeps the last
record of each key, with the same result.

Chunks stay under ``chunk_bytes`` (Kafka's default maximum message size is 1 MB).

**Published marks.** Beside the states, records keyed ``published/<partition>`` hold how far each
partition's outputs may have been published (:func:`mark_records`): a pipeline writes the mark of
a batch, and has it acknowledged, before it sends that batch's outputs. A new owner of the
partition (another machine, after a crash) thereby knows which of the records it decides again
were decided before, and marks their outputs ``replay``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

CHUNK_BYTES = 512 * 1024


@dataclass(frozen=True)
class PartitionState:
    """What a changelog holds for one input partition."""

    partition: str  # topic:partition of the input
    generation: int
    position: int  # the input offset the state has consumed up to (next record to process)
    state: bytes
    chunks: int = 1  # records the generation spans (its tombstones, once a newer one is written)


class ChangelogError(RuntimeError):
    """A changelog whose records do not add up (a missing chunk, a checksum mismatch)."""


def chunk_count(size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """The chunk records a state of ``size`` bytes spans (one at least)."""
    return max(1, -(-size // chunk_bytes))


def records(part: str, generation: int, state: bytes, position: int, previous: int | None = None,
            previous_chunks: int = 0, chunk_bytes: int = CHUNK_BYTES) -> list[tuple[bytes, bytes | None]]:
    """The (key, value) records of one generation of ``part``'s state, in the order to send them:
    chunks, the header, then tombstones for the previous generation's chunks (value None)."""
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be positive")
    n = chunk_count(len(state), chunk_bytes)
    out: list[tuple[bytes, bytes | None]] = [
        (f"{part}/{generation}/{i}".encode(), state[i * chunk_bytes:(i + 1) * chunk_bytes]) for i in range(n)]
    header = {"generation": generation, "chunks": n, "bytes": len(state), "position": position,
              "sha256": hashlib.sha256(state).hexdigest(), "written_at": time.time()}
    out.append((part.encode(), json.dumps(header).encode()))
    if previous is not None and previous != generation:
        out += [(f"{part}/{previous}/{i}".encode(), None) for i in range(previous_chunks)]
    return out


MARK = "published/"


def mark_records(marks: dict[str, int]) -> list[tuple[bytes, bytes]]:
    """The records of published marks: ``{partition: position}``, outputs of every record before
    ``position`` may have been published."""
    return [(f"{MARK}{k}".encode(), b"%d" % v) for k, v in sorted(marks.items())]


def fold_marks(log: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, int]:
    """The latest published mark of each partition in a changelog's records (log order)."""
    out: dict[str, int] = {}
    pre = MARK.encode()
    for key, value in log:
        if key is not None and key.startswith(pre) and value is not None:
            out[key[len(pre):].decode()] = int(value)
    return out


def fold(log: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, PartitionState]:
    """The latest state of each partition from a changelog's records in log order (what compaction
    would keep: the last value of each key; a None value deletes its key)."""
    last: dict[bytes, bytes] = {}
    _apply(last, log)
    out: dict[str, PartitionState] = {}
    for key in last:
        k = key.decode()
        if "/" in k:  # a chunk, a published mark, or a record of another kind (with its own prefix)
            continue
        st = state_of(last, k)
        if st is not None:
            out[k] = st
    return out


def state_of(last: dict[bytes, bytes], header: str) -> PartitionState | None:
    """The generation a header names, from the last value of each key (None: no such header);
    ChangelogError where a chunk is missing or the whole does not match its checksum."""
    raw = last.get(header.encode())
    if raw is None:
        return None
    h = json.loads(raw)
    g = int(h["generation"])
    try:
        state = b"".join(last[f"{header}/{g}/{i}".encode()] for i in range(int(h["chunks"])))
    except KeyError as e:
        raise ChangelogError(f"changelog of {header}: generation {g} misses chunk {e}") from None
    if hashlib.sha256(state).hexdigest() != h["sha256"]:
        raise ChangelogError(f"changelog of {header}: generation {g} does not match its checksum")
    return PartitionState(header, g, int(h["position"]), state, int(h["chunks"]))


PROBE_S = 2.0  # how long a reader beyond the reported end waits for the record before its position


def _probe(c: Any, tp: Any, pos: int) -> list[Any] | None:
    """The reader stands at ``pos``, beyond the end the broker reports for ``tp``: the records from
    ``pos - 1`` on if the log still holds that record (the embedded broker answers "latest" with
    the last batch's first offset + 1, so a reader that read a batch of several records stands
    beyond it), None if it does not (the log was lost: a memory broker restarted, a topic created
    again; the reader is then left anywhere)."""
    others = [x for x in c.assignment() if x != tp]
    if others:
        c.pause(*others)
    try:
        c.seek(tp, pos - 1)
        deadline = time.monotonic() + PROBE_S
        while time.monotonic() < deadline:
            recs = c.poll(timeout_ms=200).get(tp)
            if recs:
                return recs if recs[0].offset == pos - 1 else None
        return None
    finally:
        if others:
            c.resume(*others)


class Latest:
    """The last value of each key of a changelog's records (what compaction keeps), with the lookups
    a merging pipeline makes (:mod:`daemon.merged`); :class:`Reader` reads a topic into one."""

    def __init__(self, last: dict[bytes, bytes] | None = None):
        self._last = {} if last is None else last

    def apply(self, log: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        _apply(self._last, log)

    def state(self, header: str) -> PartitionState | None:
        return state_of(self._last, header)

    def follow(self, timeout_s: float = 30.0) -> None:
        """Nothing to read (a :class:`Reader`'s step): it holds what was applied."""

    def generation(self, header: str) -> int | None:
        raw = self._last.get(header.encode())
        return None if raw is None else int(json.loads(raw)["generation"])

    def headers(self, prefix: str) -> list[str]:
        """The header keys under ``prefix``: the keys after it that hold no further ``/``."""
        pre = prefix.encode()
        return sorted(k.decode() for k in self._last if k.startswith(pre) and b"/" not in k[len(pre):])

    def keys(self, prefix: str) -> list[str]:
        pre = prefix.encode()
        return sorted(k.decode() for k in self._last if k.startswith(pre))


def create_changelog(settings: dict[str, Any], topic: str, partitions: int = 1) -> None:
    """Creates the changelog topic, compacted, if it does not exist."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from .kafka import security_kwargs

    admin = KafkaAdminClient(bootstrap_servers=settings["bootstrap_servers"], **security_kwargs(settings, False))
    try:
        admin.create_topics([NewTopic(topic, partitions, 1, topic_configs={"cleanup.policy": "compact"})])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def read(settings: dict[str, Any], topic: str, timeout_s: float = 30.0) -> dict[str, PartitionState]:
    """Reads the changelog topic from its beginning to the end it had when the read began, and
    folds it (:func:`fold`). ChangelogError when the end is not reached within ``timeout_s``."""
    return read_all(settings, topic, timeout_s)[0]


def read_all(settings: dict[str, Any], topic: str,
             timeout_s: float = 30.0) -> tuple[dict[str, PartitionState], dict[str, int]]:
    """The states (:func:`fold`) and the published marks (:func:`fold_marks`) of one read from the
    topic's beginning to the end it has when the read begins (a :class:`Reader` used once)."""
    reader = Reader(settings, topic)
    try:
        return reader.catch_up(timeout_s)
    finally:
        reader.close()


class Reader:
    """A changelog read once from its beginning, then only what was appended since (one consumer,
    kept open): :meth:`catch_up` reads to the end the topic has when it is called, keeping the last
    value of each key (what compaction keeps, tombstoned keys gone), so a restore after the first
    costs the records written since the previous one, however long the log (on a broker that does
    not compact, such as the embedded one, the log only grows). Thread-safe: a standby thread may
    catch up while the pipeline's loop restores or looks records up; a lookup waits for the records
    of one poll being applied, never for a read. A read that fails keeps what was read before
    (the next one starts over from the beginning, and its keys replace the old ones once it has
    reached the end)."""

    def __init__(self, settings: dict[str, Any], topic: str):
        self.settings, self.topic = settings, topic
        self._last: dict[bytes, bytes] = {}
        self._building: dict[bytes, bytes] | None = None  # a read from the beginning, until its end
        self._consumer: Any = None
        self._tps: list[Any] = []
        self._lock = threading.RLock()  # the last values
        self._read_lock = threading.RLock()  # the consumer: one read at a time
        self.records_read = 0

    def catch_up(self, timeout_s: float = 30.0) -> tuple[dict[str, PartitionState], dict[str, int]]:
        """The states (:func:`fold`) and published marks (:func:`fold_marks`) as of the topic's
        end now. ChangelogError when that end is not reached within ``timeout_s`` (the reader
        then starts over from the beginning at the next call)."""
        with self._read_lock:
            self.follow(timeout_s)
            with self._lock:
                log = list(self._last.items())
        return fold(log), fold_marks(log)

    def state(self, header: str) -> PartitionState | None:
        """One generation by its header key, as of the last read (:func:`state_of`)."""
        with self._lock:
            return Latest(self._last).state(header)

    def generation(self, header: str) -> int | None:
        """The generation a header names (None: no such header), as of the last read."""
        with self._lock:
            return Latest(self._last).generation(header)

    def headers(self, prefix: str) -> list[str]:
        """The header keys under ``prefix`` as of the last read (:meth:`Latest.headers`)."""
        with self._lock:
            return Latest(self._last).headers(prefix)

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (headers and chunks), as of the last read."""
        with self._lock:
            return Latest(self._last).keys(prefix)

    def follow(self, timeout_s: float = 30.0) -> None:
        """Reads to the topic's end now, without folding what was read (a warm standby's step)."""
        with self._read_lock:
            try:
                self._read(timeout_s)
            except BaseException:
                self._drop_consumer()
                raise

    def _read(self, timeout_s: float) -> None:
        from kafka import KafkaConsumer, TopicPartition

        from .kafka import security_kwargs

        c = self._consumer
        committed = bool(self.settings.get("exactly_once"))
        if c is None:
            # (exactly-once: only what committed transactions wrote; an aborted generation is not a state)
            isolation = "read_committed" if committed else "read_uncommitted"
            c = KafkaConsumer(bootstrap_servers=self.settings["bootstrap_servers"], enable_auto_commit=False,
                              group_id=None, auto_offset_reset="earliest", isolation_level=isolation,
                              **security_kwargs(self.settings, False))
            self._consumer, self._tps, self._building = c, [], {}
        parts = c.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        if tps != self._tps:
            new = [tp for tp in tps if tp not in self._tps]
            c.assign(tps)
            if new:
                c.seek_to_beginning(*new)
            self._tps = tps
        if tps:
            ends = c.end_offsets(tps)
            probed: list[list[Any]] = []
            for tp in tps:
                pos = c.position(tp)
                if pos > ends[tp] and committed:
                    # Read read_committed, the end is the last stable offset, which an open
                    # transaction holds back and which a broker that does not isolate (the embedded
                    # one) lets the reader pass: the high watermark of the last fetch decides.
                    hw = c.highwater(tp)
                    if hw is not None and hw >= pos:
                        continue
                if pos > ends[tp]:
                    recs = None if committed else _probe(c, tp, pos)
                    if recs is None:  # the log was lost (a memory broker restarted): read again from the start
                        self._building, probed = {}, []
                        c.seek_to_beginning(*tps)
                        break
                    probed.append(recs[1:])  # (the record at pos - 1 was applied already)
            for recs in probed:
                self._take(recs)
            deadline = time.monotonic() + timeout_s
            while any(c.position(tp) < ends[tp] for tp in tps):
                if time.monotonic() > deadline:
                    raise ChangelogError(f"changelog {self.topic}: its end was not reached in {timeout_s:.0f} s")
                for recs in c.poll(timeout_ms=200).values():
                    self._take(recs)
        if self._building is not None:
            with self._lock:
                self._last, self._building = self._building, None

    def _take(self, recs: list[Any]) -> None:
        """Applies the records of one poll (to the read from the beginning, if one is under way)."""
        pairs = [(r.key, r.value) for r in recs]
        if self._building is not None:  # (only this read touches it)
            _apply(self._building, pairs)
        else:
            with self._lock:
                _apply(self._last, pairs)
        self.records_read += len(recs)

    def _drop_consumer(self) -> None:
        c, self._consumer = self._consumer, None
        self._tps, self._building = [], None
        if c is not None:
            try:
                c.close()
            except Exception:
                pass

    def close(self) -> None:
        with self._read_lock:
            self._drop_consumer()
            with self._lock:
                self._last = {}


def _apply(last: dict[bytes, bytes], log: Iterable[tuple[bytes | None, bytes | None]]) -> None:
    """Keeps the last value of each key of ``log`` in ``last`` (a None value deletes its key)."""
    for key, value in log:
        if key is None:
            continue
        if value is None:
            last.pop(key, None)
        else:
            last[key] = value
