"""Atomic checkpoints: NumPy ``.npz`` (arrays) + JSON (metadata, source positions), no pickle.

A checkpoint ``N`` is two files, ``ckpt-N.npz`` then ``ckpt-N.json``, each written to a temporary
name, fsync'ed and renamed; the JSON is written last and is the commit point, so a crash at any
moment leaves the previous checkpoint whole. Loading uses ``allow_pickle=False``: a checkpoint can
never execute code.

The JSON carries the SHA-256 of its ``.npz`` and of its own content, so damage after the write (a
truncated or flipped-byte file, an empty file, bad JSON, positions that are not integers) is found
at load. Start-up restores the newest intact checkpoint, with a warning naming each damaged one
it skipped; when none is intact it fails with :class:`CheckpointError`, naming the directory.
Checkpoints written before the checksums (no ``sha256`` keys) are checked for structure only.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np

_NAME = re.compile(r"^ckpt-(\d{12})\.json$")
log = logging.getLogger("eddy")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (damaged), or a directory with no intact checkpoint."""


class NoCheckpoint(CheckpointError):
    """Nothing to inspect: no such path, no checkpoint written there, a file that is no checkpoint."""


def _meta_digest(meta: dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "sha256_meta"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def pack_strings(items: list[str] | list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    r"""Strings (or bytes) as one uint8 blob and int64 end offsets: compact, and no pickle.

    >>> blob, ends = pack_strings(["a", "bc", ""])
    >>> unpack_strings(blob, ends)
    ['a', 'bc', '']
    >>> unpack_strings(*pack_strings(["é", "x"])), unpack_strings(*pack_strings([b"\x00", b""]), as_bytes=True)
    (['é', 'x'], [b'\x00', b''])
    """
    if items and isinstance(items[0], str):
        joined = "".join(items)
        if joined.isascii():  # one character per byte: no per-item encoding needed
            ends = np.cumsum(np.fromiter(map(len, items), dtype=np.int64, count=len(items)), dtype=np.int64)
            return np.frombuffer(joined.encode("ascii"), dtype=np.uint8), ends
    raw = [s.encode("utf-8") if isinstance(s, str) else s for s in items]
    ends = np.cumsum(np.fromiter(map(len, raw), dtype=np.int64, count=len(raw)), dtype=np.int64)
    return np.frombuffer(b"".join(raw), dtype=np.uint8), ends


def unpack_strings(blob: np.ndarray, ends: np.ndarray, as_bytes: bool = False) -> list:
    data = blob.tobytes()
    if not as_bytes and data.isascii():  # one byte per character: slice the decoded text
        text = data.decode("ascii")
        bounds = [0, *ends.tolist()]
        return [text[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    out = []
    start = 0
    for e in ends.tolist():
        out.append(data[start:e] if as_bytes else data[start:e].decode("utf-8"))
        start = e
    return out


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: str, write) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class CheckpointStore:
    def __init__(self, directory: str, keep: int = 3):
        self.dir = directory
        self.keep = keep
        self.damaged: list[tuple[str, str]] = []  # (path, why) met by the last intact() pass
        os.makedirs(directory, exist_ok=True)

    def _seqs(self) -> list[int]:
        """Sequence numbers of the checkpoints present (a JSON file, the commit point, each)."""
        return sorted(int(m.group(1)) for f in os.listdir(self.dir) if (m := _NAME.match(f)))

    def path(self, seq: int) -> str:
        return os.path.join(self.dir, f"ckpt-{seq:012d}.json")

    def save(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
        seqs = self._seqs()
        seq = (seqs[-1] + 1) if seqs else 1
        base = os.path.join(self.dir, f"ckpt-{seq:012d}")
        for k, v in arrays.items():
            if v.dtype == object:
                raise TypeError(f"checkpoint array {k!r} has dtype object (would need pickle)")
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        blob = buf.getvalue()
        _write_atomic(base + ".npz", lambda f: f.write(blob))
        meta = {**meta, "seq": seq, "arrays": base.rsplit("/", 1)[-1] + ".npz",
                "sha256_arrays": hashlib.sha256(blob).hexdigest()}
        meta["sha256_meta"] = _meta_digest(meta)
        _write_atomic(base + ".json", lambda f: f.write(json.dumps(meta, indent=1, sort_keys=True).encode()))
        _fsync_dir(self.dir)
        for old in seqs[: max(0, len(seqs) + 1 - self.keep)]:
            for ext in (".json", ".npz"):
                try:
                    os.remove(os.path.join(self.dir, f"ckpt-{old:012d}{ext}"))
                except FileNotFoundError:
                    pass
        return base + ".json"

    def intact(self) -> Iterator[tuple[str, dict[str, np.ndarray], dict[str, Any]]]:
        """The intact checkpoints, newest first, as ``(json path, arrays, meta)``; each damaged one
        met on the way is logged (naming the file) and recorded in :attr:`damaged`."""
        self.damaged = []
        for seq in reversed(self._seqs()):
            path = self.path(seq)
            try:
                arrays, meta = load(path)
            except CheckpointError as e:
                self.reject(path, str(e))
                continue
            yield path, arrays, meta

    def reject(self, path: str, why: str) -> None:
        """Records a checkpoint that cannot be used; start-up goes on with an older one."""
        self.damaged.append((path, why))
        log.warning("checkpoint %s is damaged (%s); trying an older one", path, why)

    def latest(self) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The newest intact checkpoint; None when there is none at all; :class:`CheckpointError`
        when there are some but none is intact."""
        for _, arrays, meta in self.intact():
            return arrays, meta
        if self.damaged:
            raise CheckpointError(self.none_intact())
        return None

    def none_intact(self) -> str:
        return (f"no intact checkpoint in {self.dir}: " + "; ".join(
            f"{os.path.basename(p)}: {why}" for p, why in self.damaged))


def load(json_path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads and checks one checkpoint; :class:`CheckpointError` (naming the file) if it is damaged."""
    try:
        with open(json_path, "rb") as f:
            meta = json.loads(f.read())
    except OSError as e:
        raise CheckpointError(f"{json_path}: cannot read: {e.strerror}") from None
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{json_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("arrays"), str):
        raise CheckpointError(f"{json_path}: not a checkpoint (no 'arrays' entry)")
    if "sha256_meta" in meta and meta["sha256_meta"] != _meta_digest(meta):
        raise CheckpointError(f"{json_path}: checksum mismatch (the file changed after it was written)")
    positions = meta.get("positions", {})
    if not isinstance(positions, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in positions.items()):
        raise CheckpointError(f"{json_path}: positions are not topic:partition -> non-negative integers")
    npz = os.path.join(os.path.dirname(json_path), os.path.basename(meta["arrays"]))
    try:
        with open(npz, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise CheckpointError(f"{npz}: cannot read: {e.strerror}") from None
    if "sha256_arrays" in meta and hashlib.sha256(blob).hexdigest() != meta["sha256_arrays"]:
        raise CheckpointError(f"{npz}: checksum mismatch (truncated or changed after it was written)")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{npz}: not a readable array archive ({e})") from None
    return arrays, meta


def _described(path: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, Any]:
    """One checkpoint: its path, metadata, and each array's shape and dtype."""
    return {"path": path, "meta": meta,
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in sorted(arrays.items())}}


def _seqs_in(directory: str) -> list[int]:
    """The checkpoints' sequence numbers in a directory (creating nothing)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise CheckpointError(f"{directory}: cannot read: {e.strerror}") from None
    return sorted(int(m.group(1)) for f in names if (m := _NAME.match(f)))


def _summary(directory: str) -> dict[str, Any]:
    rows = []
    latest = None
    for seq in reversed(_seqs_in(directory)):
        path = os.path.join(directory, f"ckpt-{seq:012d}.json")
        try:
            arrays, meta = load(path)
        except CheckpointError as e:
            rows.append({"path": path, "seq": seq, "intact": False, "error": str(e)})
            continue
        rows.append({"path": path, "seq": seq, "intact": True})
        if latest is None:
            latest = _described(path, arrays, meta)
    return {"dir": directory, "checkpoints": rows, "latest_intact": latest}


_LAYOUT = ("checkpoints are ckpt-N.json files, each with its ckpt-N.npz, in one directory per pipeline under "
           "checkpoint.dir")


def _holds(directory: str) -> str:
    """What a directory without checkpoints holds, for the message."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        return f"cannot read it: {e.strerror}"
    if not names:
        return "it is empty"
    shown = [n + ("/" if os.path.isdir(os.path.join(directory, n)) else "") for n in names[:5]]
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return f"it holds {', '.join(shown)}{more}"


def inspect(path: str) -> dict[str, Any]:
    """Which checkpoints are intact, and a summary of the newest intact one.

    ``path``: a ``ckpt-N.json`` file (or its ``.npz``), a pipeline's checkpoint directory, or the
    configured ``checkpoint.dir`` (one subdirectory per pipeline, each summarised under
    ``pipelines``). :class:`NoCheckpoint` when there is nothing to inspect (no such path, no
    checkpoint in it, a file that is no checkpoint); a damaged checkpoint is reported, not raised.
    """
    if os.path.isfile(path):
        npz = re.match(r"^(ckpt-\d{12})\.npz$", os.path.basename(path))
        if npz:  # the arrays: inspect their checkpoint (whose JSON holds their checksum)
            path = os.path.join(os.path.dirname(path), npz.group(1) + ".json")
            if not os.path.isfile(path):
                raise NoCheckpoint(f"{path}: missing: an array file without its checkpoint JSON (an interrupted "
                                   "write, never restored)")
        try:
            return {**_described(path, *load(path)), "intact": True}
        except CheckpointError as e:
            if _NAME.match(os.path.basename(path)):
                return {"path": path, "intact": False, "error": str(e)}
            why = str(e).removeprefix(f"{path}: ")
            raise NoCheckpoint(f"{path}: not a checkpoint ({why}); {_LAYOUT}") from None
    if not os.path.exists(path):
        raise NoCheckpoint(f"{path}: no such file or directory")
    if not os.path.isdir(path):
        raise NoCheckpoint(f"{path}: not a file nor a directory")
    if _seqs_in(path):
        return _summary(path)
    try:
        entries = sorted(os.listdir(path))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror}") from None
    subs = [d for d in entries if os.path.isdir(os.path.join(path, d)) and _seqs_in(os.path.join(path, d))]
    if not subs:
        raise NoCheckpoint(f"{path}: no checkpoint in it nor in a pipeline directory under it ({_holds(path)}; "
                           f"{_LAYOUT})")
    return {"dir": path, "pipelines": {d: _summary(os.path.join(path, d)) for d in subs}}


def inspect_configured(directory: str, pipelines: list[str], source: str) -> dict[str, Any]:
    """The checkpoints of a config's pipelines under its ``checkpoint.dir``: each pipeline's
    summary (a pipeline with none yet starts fresh: ``checkpoints`` empty), and the directories
    of pipelines the config does not name (``not_in_config``)."""
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        rel = "" if os.path.isabs(directory) else f" (relative to the current directory {os.getcwd()})"
        raise NoCheckpoint(f"checkpoint.dir {directory!r} of {source}{rel} {what}: no checkpoint written yet")
    out = {name: _summary(os.path.join(directory, name)) for name in pipelines}
    if not any(s["checkpoints"] for s in out.values()):
        raise NoCheckpoint(f"checkpoint.dir {directory!r} of {source}: no checkpoint yet for pipeline"
                           f"{'s' if len(pipelines) > 1 else ''} {', '.join(pipelines)} ({_holds(directory)})")
    try:
        entries = sorted(os.listdir(directory))
    except OSError as e:
        raise CheckpointError(f"{directory}: cannot read: {e.strerror}") from None
    others = [d for d in entries if d not in out and os.path.isdir(os.path.join(directory, d))
              and _seqs_in(os.path.join(directory, d))]
    return {"dir": directory, "source": source, "pipelines": out, "not_in_config": others}
