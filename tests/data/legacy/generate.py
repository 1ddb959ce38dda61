"""Writes the legacy checkpoints of tests/test_legacy_checkpoints.py with the release before the
engine (commit b86896e: bandit format 2, groupwise and paging format 1).

Run from a checkout of that commit: ``PYTHONPATH=. python <this file> <out dir>``. For each family
it feeds the first 40 records to a pipeline core, saves a checkpoint, then feeds the rest and
writes the outputs of the rest (what a restart from that checkpoint must reproduce).
"""

import json
import os
import sys

from connectors.base import SourceRecord
from daemon import config
from daemon.checkpoint import CheckpointStore
from daemon.families import make_core


def records(family):
    out = []
    for i in range(80):
        t = 1000.0 + i
        if family == "bandit":
            out.append({"id": f"e{i}", "time": t, "features": {"x": (i % 5) / 5, "bias": 1.0}})
            if i % 2 == 0 and i >= 3:
                out.append({"type": "feedback", "id": f"e{i - 3}", "time": t, "reward": (i % 7) / 7})
        elif family == "groupwise":
            out.append({"id": f"e{i}", "time": t, "features": {"x": (i % 5) / 5, "region": "n" if i % 3 else "s"},
                        "groups": ["g"] if i % 2 else []})
            if i >= 2:
                out.append({"type": "label", "id": f"e{i - 2}", "time": t, "label": (i % 4) / 4})
        else:
            rec = {"key": f"k{(i * 7) % 23}", "time": t}
            if i % 3 == 0:
                rec["id"] = f"r{i}"
            out.append(rec)
    return out


PIPES = {
    "bandit": {"learner": "squarecb", "n_features": 8, "learn_every_events": 4, "reward_wait_s": 10.0,
               "params": {"actions": ["a", "b", "c"]}, "shadow_learners": ["epsilon-greedy"]},
    "groupwise": {"learner": "groupwise-mixture", "n_features": 8, "learn_every_events": 4, "reward_wait_s": 10.0,
                  "params": {"groups": ["g"]}, "group_rules": {"south": "region == 's'"}},
    "paging": {"learner": "paging-lru", "params": {"capacity": 8}},
}


def main(out_dir):
    for family, extra in PIPES.items():
        pc = config.load_dict({"pipelines": [{"name": family, "input_topic": "in", "output_topic": "out",
                                              **extra}]}, env=False).pipelines[0]
        recs = [SourceRecord(json.dumps(r).encode(), "in", 0, i) for i, r in enumerate(records(family))]
        core = make_core(pc)
        core.handle(recs[:40])
        d = os.path.join(out_dir, family)
        arrays, meta = core.snapshot()
        meta["positions"] = {"in:0": 40}
        CheckpointStore(d, keep=1).save(arrays, meta)
        rest = [json.loads(o.value) for o in core.handle(recs[40:]) if o.kind == "decision"]
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump({"config": {"name": family, "input_topic": "in", "output_topic": "out", **extra},
                       "records": records(family), "cut": 40, "outputs": rest}, f)


if __name__ == "__main__":
    main(sys.argv[1])
