"""Logged decisions for ``eddy evaluate``: JSON lines or Parquet, streamed, and one checked row each.

A log row holds a context, the action the logging policy chose, the probability it chose it with
(optional), its reward, and optionally the actions available, an id and a time. Where they sit in a
row is a :class:`Mapping` from these fields to column names (``--map
context=features,action=chosen,propensity=p``); a name may be a dotted path into nested objects
(``meta.p``); the context may be one column (a name→value object, or a list of numbers), several
columns joined by ``+`` (``context=merchant+country+amount``) or ``*`` (every column the other
fields do not use). Context values: numbers as they are, booleans as 0/1, strings one-hot as
``name=value`` (the field convention of feature crosses), nulls left out.

Files are read in chunks (JSON lines: line by line; Parquet: record batches of the needed columns
through pyarrow, an optional dependency), so months of logs never sit in memory at once. A row that
cannot be used is counted under a reason (:data:`REASONS`) and never stops the reading.
"""

from __future__ import annotations

import datetime as dt
import gzip
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from .config import ConfigError

FIELDS = ("context", "action", "propensity", "reward", "actions", "id", "time")
DEFAULTS = {"context": "features", "action": "action", "propensity": "propensity", "reward": "reward",
            "actions": "actions", "id": "id", "time": "time"}
REASONS = {
    "malformed_json": "the line is not a JSON object",
    "missing_context": "no context",
    "bad_context": "the context is neither a name→value object nor a list of numbers (or holds NaN, inf or "
                   "nested values)",
    "missing_action": "no logged action",
    "bad_action": "the logged action is not a string or an integer",
    "missing_reward": "no reward",
    "bad_reward": "the reward is not a finite number",
    "bad_propensity": "the propensity is not a number in (0, 1]",
    "bad_actions": "the available actions are not a non-empty list of ids",
    "action_not_offered": "the logged action is not among the available actions",
}
CHUNK_ROWS = 4096


@dataclass
class Mapping:
    """Where each field is found in a log row (see the module docstring)."""

    columns: dict[str, str] = field(default_factory=lambda: dict(DEFAULTS))

    @classmethod
    def parse(cls, text: str | None) -> Mapping:
        """``field=column`` pairs separated by commas; fields not named keep their defaults.

        >>> Mapping.parse("context=ctx,propensity=meta.p").columns["propensity"]
        'meta.p'
        """
        cols = dict(DEFAULTS)
        for part in (text or "").split(","):
            part = part.strip()
            if not part:
                continue
            key, eq, col = part.partition("=")
            key, col = key.strip(), col.strip()
            if not eq or not col:
                raise ConfigError(f"--map: {part!r} is not field=column")
            if key not in FIELDS:
                raise ConfigError(f"--map: unknown field {key!r}; fields: {', '.join(FIELDS)}")
            cols[key] = col
        return cls(cols)

    @property
    def context_columns(self) -> list[str] | None:
        """The context's columns when it is several (``a+b``) or every other one (``*``: [])."""
        c = self.columns["context"]
        if c == "*":
            return []
        return [p.strip() for p in c.split("+")] if "+" in c else None

    def top_level(self) -> set[str]:
        """The top-level columns the fields use (to read only those from Parquet)."""
        out = set()
        for key, col in self.columns.items():
            if key == "context" and self.context_columns is not None:
                out.update(self.context_columns)
            else:
                out.add(col.split(".")[0])
                out.add(col)
        return out


class LogRow:
    """One usable row: ``index`` (0-based, in the file), ``id``, ``context`` (a name→value dict or a
    list of floats), ``actions`` (the available ids or ``{"id", "features"}`` objects; None: the
    pipeline's configured actions), ``action``, ``propensity`` (NaN: none logged), ``reward``,
    ``time`` (seconds or None)."""

    __slots__ = ("index", "id", "context", "actions", "action", "propensity", "reward", "time")

    def __init__(self, index: int, id: str, context: Any, actions: list | None, action: str, propensity: float,
                 reward: float, time: float | None):
        self.index, self.id, self.context, self.actions = index, id, context, actions
        self.action, self.propensity, self.reward, self.time = action, propensity, reward, time


def _get(obj: dict, path: str) -> Any:
    if path in obj:
        return obj[path]
    if "." not in path:
        return None
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        return float(v)
    except OverflowError:
        return None


def _features(d: Any) -> dict[str, float] | None:
    out: dict[str, float] = {}
    for k, v in d.items() if isinstance(d, dict) else d:
        if v is None:
            continue
        k = str(k)
        if isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, str):
            out[f"{k}={v}"] = 1.0
        elif isinstance(v, int):
            out[k] = v  # (an int too large for a float is the adapter's reject)
        elif isinstance(v, float):
            if not math.isfinite(v):
                return None
            out[k] = v
        else:
            return None
    return out


def _context(v: Any) -> Any:
    """A name→value dict, a list of floats, or None (unusable)."""
    if isinstance(v, dict):
        return _features(v)
    if isinstance(v, list | tuple):
        if v and all(isinstance(p, list | tuple) and len(p) == 2 and isinstance(p[0], str) for p in v):
            return _features(v)  # (a Parquet map column reads as (key, value) pairs)
        xs = [_number(a) for a in v]
        if None in xs or not all(math.isfinite(a) for a in xs):  # type: ignore[arg-type]
            return None
        return xs
    return None


def _action_id(v: Any) -> str | None:
    if isinstance(v, str) and v:
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return None


def _time(v: Any) -> float | None:
    if isinstance(v, dt.datetime):
        return (v if v.tzinfo else v.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(v, str):
        try:
            t = dt.datetime.fromisoformat(v)
        except ValueError:
            return None
        return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
    x = _number(v)
    return x if x is not None and math.isfinite(x) else None


def parse_row(obj: Any, index: int, m: Mapping) -> LogRow | str:
    """The row, or the reason it cannot be used (a key of :data:`REASONS`)."""
    if not isinstance(obj, dict):
        return "malformed_json"
    c = m.columns
    cc = m.context_columns
    if cc is None:
        raw = _get(obj, c["context"])
    else:
        used = {col for k, col in c.items() if k != "context"}
        keys = cc or [k for k in obj if k not in used]
        raw = {k: obj[k] for k in keys if obj.get(k) is not None}
        if not raw:
            raw = None
    if raw is None:
        return "missing_context"
    ctx = _context(raw)
    if ctx is None:
        return "bad_context"
    a = _get(obj, c["action"])
    if a is None:
        return "missing_action"
    action = _action_id(a)
    if action is None:
        return "bad_action"
    r = _get(obj, c["reward"])
    if r is None:
        return "missing_reward"
    reward = _number(r)
    if reward is None or not math.isfinite(reward):
        return "bad_reward"
    p = _get(obj, c["propensity"])
    if p is None or (isinstance(p, float) and math.isnan(p)):  # (a null in a float column may read as NaN)
        prop = math.nan
    else:
        q = _number(p)
        if q is None or not 0.0 < q <= 1.0:
            return "bad_propensity"
        prop = q
    acts = _get(obj, c["actions"])
    actions: list | None = None
    if acts is not None:
        if not isinstance(acts, list | tuple) or not acts:
            return "bad_actions"
        actions, ids = [], []
        for x in acts:
            if isinstance(x, dict):
                i = _action_id(x.get("id"))
                if i is None:
                    return "bad_actions"
                actions.append({**x, "id": i})
            else:
                i = _action_id(x)
                if i is None:
                    return "bad_actions"
                actions.append(i)
            ids.append(i)
        if action not in ids:
            return "action_not_offered"
    rid = _action_id(_get(obj, c["id"])) or f"row-{index}"
    t = _get(obj, c["time"])
    return LogRow(index, rid, ctx, actions, action, prop, reward, None if t is None else _time(t))


def guess_format(path: str) -> str:
    low = path.lower()
    return "parquet" if low.endswith((".parquet", ".pq", ".parq")) else "jsonl"


def _jsonl(path: str) -> Iterator[Any]:
    if path == "-":
        f: Any = sys.stdin.buffer
    elif path.endswith(".gz"):
        f = gzip.open(path, "rb")
    else:
        f = open(path, "rb")  # (closed below)
    try:
        for line in f:
            if not line.strip():
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                yield None
    finally:
        if path != "-":
            f.close()


def pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("reading Parquet logs needs pyarrow: pip install 'eddyd[parquet]' (or pyarrow)") from None
    return pq


def _parquet(path: str, m: Mapping, chunk: int) -> Iterator[Any]:
    pq = pyarrow_parquet()
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    cols = None if m.context_columns == [] else [n for n in names if n in m.top_level()]
    for batch in pf.iter_batches(batch_size=chunk, columns=cols):
        yield from batch.to_pylist()


def read(source: str | Iterable[Any], m: Mapping, fmt: str | None = None,
         chunk: int = CHUNK_ROWS) -> Iterator[list[LogRow | str]]:
    """Chunks of parsed rows (a :class:`LogRow` or a skip reason each), in file order, from a path
    (JSON lines, ``.gz`` too, ``-`` for stdin; or Parquet) or from an iterable of row objects."""
    if isinstance(source, str):
        fmt = fmt or guess_format(source)
        objs: Iterable[Any] = _parquet(source, m, chunk) if fmt == "parquet" else _jsonl(source)
    else:
        objs = source
    out: list[LogRow | str] = []
    for i, obj in enumerate(objs):
        out.append(parse_row(obj, i, m))
        if len(out) >= chunk:
            yield out
            out = []
    if out:
        yield out
