"""A checkpoint of the release before the engine (tests/data/legacy, written by its generate.py
with commit b86896e) restores into the engine and continues exactly as that release did."""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest

from connectors.base import SourceRecord
from daemon import config
from daemon.checkpoint import CheckpointStore
from daemon.engine import Engine

DATA = pathlib.Path(__file__).parent / "data" / "legacy"


@pytest.mark.parametrize("family", ["bandit", "groupwise", "paging"])
def test_a_legacy_checkpoint_continues_as_the_earlier_release(family, tmp_path):
    shutil.copytree(DATA / family, tmp_path / family)
    spec = json.loads((tmp_path / family / "expected.json").read_text())
    pc = config.load_dict({"pipelines": [spec["config"]]}, env=False).pipelines[0]
    (path, arrays, meta), = CheckpointStore(str(tmp_path / family)).intact()
    engine = Engine(pc)
    engine.restore(arrays, meta)
    assert list(engine.lanes) == ["http", "in:0"]  # the one earlier state, in the pipeline-wide lane
    if family != "paging":  # an id of the earlier state is a duplicate on the partitions too
        (dup,) = engine.handle([SourceRecord(json.dumps(spec["records"][0]).encode(), "in", 0, 999)])
        assert json.loads(dup.value)["reason"] == "duplicate_event"
        engine = Engine(pc)
        engine.restore(arrays, meta)
    recs = [SourceRecord(json.dumps(r).encode(), "in", 0, i) for i, r in enumerate(spec["records"])]
    got = [json.loads(o.value) for o in engine.handle(recs[spec["cut"]:]) if o.kind == "decision"]
    # The same decisions; probabilities to 1e-9 (a kernel may since round differently in the last bits)
    assert _close(got, spec["outputs"]), (got, spec["outputs"])
    assert meta["positions"] == {"in:0": spec["cut"]}
    again = Engine(pc)  # and the engine's own checkpoint of that state restores too
    again.restore(*engine.snapshot())
    assert again.snapshot()[0].keys() == engine.snapshot()[0].keys()


def _close(a, b) -> bool:
    """Equal, floats to a relative 1e-9 (recursively through lists and dicts)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
