"""The rules every input record follows, whatever its family: size, JSON, id, event time.

A record is one JSON object of at most ``max_message_bytes``. Bytes orjson cannot read are
``malformed_json``, or ``non_finite`` when they are JSON but for a NaN, Infinity or a number beyond
the float range. An ``id`` is a non-empty string of at most 256 characters. A ``time`` (event time,
seconds) is a finite number no further than ``max_time_ahead_s`` past the record's Kafka timestamp
(its arrival by wall clock for HTTP and files): one far-future record would otherwise move event
time past every waiting feedback at once. A broken rule raises :class:`BadRecord` with a reason.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import orjson

from connectors.base import SourceRecord

MAX_ID_LEN = 256


class BadRecord(Exception):
    """A record or request refused, with the reason (a metric label) and a detail for people."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Out:
    """One record to publish: ``kind`` is ``"decision"`` (the output topic) or ``"dlq"``."""

    kind: str
    key: bytes | None
    value: bytes


def dumps_kept(obj: Any) -> bytes:
    """``orjson.dumps`` for output that is kept (published, remembered for retries).

    orjson writes into a generously sized buffer; keeping thousands of those makes every call touch
    fresh memory (measured here: 5.6 µs per decision instead of 1.5 µs). A right-sized copy lets
    the next call reuse the freed buffer.
    """
    return bytes(memoryview(orjson.dumps(obj)))


def json_error(raw: bytes, e: Exception) -> BadRecord:
    """The rejection of bytes orjson could not parse: ``non_finite`` when they are JSON but for
    a NaN, Infinity or a number beyond the float range (JSON has no such numbers; Python's json
    module reads them), else ``malformed_json``. Runs on the error path only."""
    import json

    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return BadRecord("malformed_json", str(e))
    return BadRecord("non_finite", "NaN, Infinity or a number beyond the float range (not JSON numbers)")


def record_id(obj: dict[str, Any], what: str = "id") -> str:
    """The record's ``id`` (required)."""
    eid = obj.get("id")
    if type(eid) is not str or not eid or len(eid) > MAX_ID_LEN:
        if eid is None:
            raise BadRecord("missing_field", f"'{what}' is required")
        raise BadRecord("bad_type", f"'{what}' must be a non-empty string of at most {MAX_ID_LEN} characters")
    return eid


def number(obj: dict[str, Any], key: str, required: bool = True) -> float | None:
    """A number field (booleans are not numbers; JSON numbers are finite)."""
    v = obj.get(key)
    if v is None:
        if required:
            raise BadRecord("missing_field", f"'{key}' is required")
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BadRecord("bad_type", f"'{key}' must be a number")
    return float(v)


def numbers_only(v: dict[str, Any], what: str) -> None:
    """A name→number object's check, as the feature hasher makes it (booleans are not numbers)."""
    for name, value in v.items():
        if type(value) is not int and type(value) is not float:
            raise BadRecord("bad_type", f"{what}[{name!r}] must be a number")


class RecordRules:
    """The shared rules of one pipeline (its ``max_message_bytes`` and ``max_time_ahead_s``)."""

    def __init__(self, max_message_bytes: int, max_time_ahead_s: float):
        self.max_bytes = max_message_bytes
        self.ahead = max_time_ahead_s

    def time_limit(self, rec: SourceRecord | None) -> float:
        """The latest event time a record may carry."""
        if self.ahead <= 0:
            return math.inf
        ts = rec.timestamp_ms if rec is not None else 0
        return (ts / 1000.0 if ts > 0 else time.time()) + self.ahead

    def time(self, obj: dict[str, Any], rec: SourceRecord | None = None) -> float | None:
        """The record's event time, if it has one."""
        t = obj.get("time")
        if t is None:
            return None
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
            raise BadRecord("bad_type", "'time' must be a finite number (event time, seconds)")
        if t > self.time_limit(rec):
            by = "Kafka timestamp" if rec is not None and rec.timestamp_ms > 0 else "arrival (wall clock)"
            raise BadRecord("future_time", f"'time' {t!r} lies more than max_time_ahead_s={self.ahead:g} s "
                            f"after the record's {by}")
        return float(t)
