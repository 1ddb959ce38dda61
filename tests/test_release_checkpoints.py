"""Checkpoints written by each earlier release (tests/data/releases/<version>, written at that
release by tests/data/releases/write_checkpoints.py) restore into this one and continue exactly as the
release that wrote them did: a rolling upgrade keeps every pipeline's state. A release that changes
the format (daemon.engine.FORMAT_VERSION) must upgrade these, not drop them."""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest

from connectors.base import SourceRecord
from daemon import config
from daemon.checkpoint import CheckpointStore
from daemon.engine import FORMAT_VERSION, Engine

from .test_legacy_checkpoints import _close

DATA = pathlib.Path(__file__).parent / "data" / "releases"
CASES = sorted(p.parent for p in DATA.glob("*/*/expected.json"))


def test_every_family_has_a_checkpoint_of_the_current_format():
    from daemon.family import families

    formats = {json.loads((c / "expected.json").read_text())["format_version"] for c in CASES}
    assert FORMAT_VERSION in formats or max(formats) < FORMAT_VERSION
    learners_ = {json.loads((c / "expected.json").read_text())["config"]["learner"] for c in CASES}
    import learners

    assert {learners.family_of(n) for n in learners_} == set(families())


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_release_checkpoint_continues_as_that_release_did(case, tmp_path):
    shutil.copytree(case, tmp_path / "ck")
    spec = json.loads((tmp_path / "ck" / "expected.json").read_text())
    pc = config.load_dict({"pipelines": [spec["config"]]}, env=False).pipelines[0]
    (_, arrays, meta), = CheckpointStore(str(tmp_path / "ck")).intact()
    assert meta["format_version"] == spec["format_version"]
    engine = Engine(pc)
    engine.restore(arrays, meta)
    recs = [SourceRecord(json.dumps(r).encode(), "in", 0, i) for i, r in enumerate(spec["records"])]
    got = [json.loads(o.value) for o in engine.handle(recs[spec["cut"]:]) if o.kind == "decision"]
    assert len(got) == len(spec["outputs"])
    bad = [(i, g, e) for i, (g, e) in enumerate(zip(got, spec["outputs"], strict=True)) if not _close(g, e)]
    assert not bad, bad[:3]  # the same outputs; floats to 1e-9
    again = Engine(pc)  # and this release's own checkpoint of the continued state restores
    arrays2, meta2 = engine.snapshot()
    assert meta2["format_version"] == FORMAT_VERSION
    again.restore(arrays2, meta2)
    assert again.snapshot()[0].keys() == arrays2.keys()
