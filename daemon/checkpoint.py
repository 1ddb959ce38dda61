"""Atomic checkpoints: NumPy ``.npz`` (arrays) + JSON (metadata, source positions), no pickle.

A checkpoint ``N`` is two files, ``ckpt-N.npz`` then ``ckpt-N.json``, each written to a temporary
name, fsync'ed and renamed; the JSON is written last and is the commit point, so a crash at any
moment leaves the previous checkpoint whole. Loading uses ``allow_pickle=False``: a checkpoint can
never execute code.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np

_NAME = re.compile(r"^ckpt-(\d{12})\.json$")


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
        os.makedirs(directory, exist_ok=True)

    def _seqs(self) -> list[int]:
        out = []
        for f in os.listdir(self.dir):
            m = _NAME.match(f)
            if m and os.path.exists(os.path.join(self.dir, f"ckpt-{m.group(1)}.npz")):
                out.append(int(m.group(1)))
        return sorted(out)

    def save(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
        seqs = self._seqs()
        seq = (seqs[-1] + 1) if seqs else 1
        base = os.path.join(self.dir, f"ckpt-{seq:012d}")
        for k, v in arrays.items():
            if v.dtype == object:
                raise TypeError(f"checkpoint array {k!r} has dtype object (would need pickle)")
        _write_atomic(base + ".npz", lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
        meta = {**meta, "seq": seq, "arrays": base.rsplit("/", 1)[-1] + ".npz"}
        _write_atomic(base + ".json", lambda f: f.write(json.dumps(meta, indent=1, sort_keys=True).encode()))
        _fsync_dir(self.dir)
        for old in seqs[: max(0, len(seqs) + 1 - self.keep)]:
            for ext in (".json", ".npz"):
                try:
                    os.remove(os.path.join(self.dir, f"ckpt-{old:012d}{ext}"))
                except FileNotFoundError:
                    pass
        return base + ".json"

    def latest(self) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        seqs = self._seqs()
        if not seqs:
            return None
        return load(os.path.join(self.dir, f"ckpt-{seqs[-1]:012d}.json"))


def load(json_path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with open(json_path, "rb") as f:
        meta = json.loads(f.read())
    npz = os.path.join(os.path.dirname(json_path), meta["arrays"])
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, meta


def inspect(path: str) -> dict[str, Any]:
    """A summary of a checkpoint (a ckpt-N.json file or a directory holding some)."""
    if os.path.isdir(path):
        store = CheckpointStore(path)
        seqs = store._seqs()
        if not seqs:
            raise FileNotFoundError(f"no checkpoint in {path}")
        path = os.path.join(path, f"ckpt-{seqs[-1]:012d}.json")
    arrays, meta = load(path)
    return {
        "path": path,
        "meta": meta,
        "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in sorted(arrays.items())},
    }
