"""The connector interfaces: a source reports its position, a sink confirms delivery."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class SourceRecord:
    value: bytes
    topic: str = ""
    partition: int = 0
    offset: int = -1
    replay: bool = False
    timestamp_ms: int = 0  # the broker's record timestamp (CreateTime or LogAppendTime); 0: none
    key: bytes | None = None  # the Kafka record key (None: none, or a file's record)


def pos_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


@dataclass(slots=True)
class OffsetReset:
    """A partition whose resume position lay beyond its log's end, moved by the reset policy.

    The log behind the position is gone: a topic deleted and created again, or a broker with
    memory storage restarted. ``position`` is where the source meant to resume, ``high`` the log's
    end as the broker reported it, ``to`` the policy applied ("earliest" or "latest").
    """

    key: str
    position: int
    high: int
    to: str


@dataclass(slots=True)
class Membership:
    """A group member's standing, for readiness and the assignment gauges.

    ``joined``: the consumer has joined its group since it was built (a member that legitimately
    owns no partition, a spare, has joined too). ``assigned``: the partitions it owns now.
    ``restored``: every assigned partition has been positioned where it resumes (its checkpointed
    position, or the group's committed offset, or the reset policy).
    """

    joined: bool
    assigned: list[str]
    restored: bool


class DeliveryError(RuntimeError):
    """Some messages could not be delivered (after retries and client rebuilds)."""


class Source(abc.ABC):
    @abc.abstractmethod
    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        """Up to ``max_records`` records in log order (per partition); [] when none arrived in time."""

    @abc.abstractmethod
    def positions(self) -> dict[str, int]:
        """``{"topic:partition": next offset}`` after the last record returned by :meth:`poll`."""

    def seek(self, positions: dict[str, int]) -> None:
        """Resumes from positions taken from a checkpoint (applied when partitions are assigned)."""

    def take_resets(self) -> list[OffsetReset]:
        """The partitions moved since the last call because their position lay beyond the log."""
        return []

    def take_lost(self) -> list[str]:
        """The partitions lost since the last call (taken away without an orderly revocation: a
        session timeout), which another member may already be consuming."""
        return []

    def commit(self, positions: dict[str, int]) -> None:
        """Records positions with the broker (for lag monitoring and clean hand-over)."""

    def lag(self) -> dict[str, int]:
        return {}

    def membership(self) -> Membership | None:
        """The consumer group standing; None for a source that belongs to no group (a file)."""
        return None

    def topic_lag(self) -> dict[str, int]:
        """``{topic: records}`` the group has not committed yet, over every partition of each
        subscribed topic, owned or not (a broker round trip: called rarely)."""
        return {}

    def at_end(self) -> bool:
        """True for a finite source that has been read completely."""
        return False

    def close(self) -> None:
        pass


class Sink(abc.ABC):
    #: The value a message goes out with when it is sent again after a send that may already have
    #: reached the broker (it failed or timed out after it was handed to the client, or its
    #: acknowledgement named no offset): ``resent(topic, key, value)``; ``None`` resends it as it
    #: was. The daemon marks its decisions ``"replay": true`` there, so that a copy the broker may
    #: hold twice is told from a first publication.
    resent: Callable[[str, bytes | None, bytes], bytes] | None = None

    def again(self, topic: str, key: bytes | None, value: bytes) -> bytes:
        """The value of a message sent again that may already have reached the broker."""
        return value if self.resent is None or value is None else self.resent(topic, key, value)

    @abc.abstractmethod
    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queues a message (non-blocking)."""

    def send_all(self, messages: list[tuple[str, bytes | None, bytes]]) -> None:
        """Queues ``(topic, key, value)`` messages in order (a client may do it in a tighter loop)."""
        send = self.send
        for topic, key, value in messages:
            send(topic, key, value)

    @abc.abstractmethod
    def flush(self, timeout_s: float = 30.0) -> None:
        """Returns once every queued message is acknowledged; raises :class:`DeliveryError`."""

    def close(self) -> None:
        pass

    def abandon(self) -> None:
        """Drops whatever is still queued and releases the client, without waiting for a broker.

        Used when the runner gives a sink up to resume from its checkpoint: the decisions still
        queued are produced again from there, so delivering them late would only duplicate them.
        """
        self.close()
