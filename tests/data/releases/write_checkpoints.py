"""Writes one release's checkpoints for tests/test_release_checkpoints.py: every later release must
restore them and continue exactly as the release that wrote them did.

Run at a release (from the repository root): ``python tests/data/releases/write_checkpoints.py``. It writes
``tests/data/releases/<version>/<case>/``: for each case (one pipeline of each family, and learners
whose state differs in shape: hashed bandits with crosses, a learned paging policy), the first 60
records are handled, a checkpoint saved, and the outputs of the remaining records written to
``expected.json`` with the records and the pipeline's configuration.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))

from connectors.base import SourceRecord  # noqa: E402
from daemon import __version__, config  # noqa: E402
from daemon.checkpoint import CheckpointStore  # noqa: E402
from daemon.engine import FORMAT_VERSION, Engine  # noqa: E402

N, CUT = 120, 60
IO = {"input_topic": "in", "output_topic": "out"}
CASES = {
    "bandit-squarecb": {"learner": "squarecb", "n_features": 8, "learn_every_events": 4, "reward_wait_s": 10.0,
                        "shadow_learners": ["linucb", "epsilon-greedy"], "default_action": "a"},
    "bandit-hashed": {"learner": "squarecb-hashed", "learn_every_events": 4, "reward_wait_s": 10.0,
                      "crosses": [["region", "day"]], "n_features": 4096},
    "groupwise": {"learner": "groupwise-mixture", "n_features": 8, "learn_every_events": 4, "reward_wait_s": 10.0,
                  "params": {"groups": ["g"]}, "group_rules": {"south": "region == 's'"}},
    "paging-learned": {"learner": "paging-learned-discard", "params": {"capacity": 8, "switch_every": 16, "history_cap": 256}},
    "sor": {"learner": "sor-chebcb", "reward_wait_s": 10.0, "learn_every_events": 4,
            "params": {"context_range": [0.0, 1.0]}},
    "submodular": {"learner": "submodular-dynamic", "params": {"objective": "feature-based", "d": 3, "k": 3,
                                                             "capacity": 64}},
}


def records(case: str) -> list[dict]:
    rng = random.Random(case)
    out: list[dict] = []
    for i in range(N):
        t = 1000.0 + i
        region = "n" if i % 3 else "s"
        if case.startswith("bandit"):
            acts = ["a", "b", "c"] if i % 5 else ["b", "c", "d"]
            out.append({"id": f"e{i}", "time": t, "features": {"x": round(rng.random(), 3), f"region={region}": 1.0,
                                                               f"day={i % 4}": 1.0}, "actions": acts})
            if i % 2 == 0 and i >= 3:
                out.append({"type": "feedback", "id": f"e{i - 3}", "time": t, "reward": round(rng.random(), 3)})
        elif case == "groupwise":
            out.append({"id": f"e{i}", "time": t, "features": {"x": round(rng.random(), 3), "region": region},
                        "groups": ["g"] if i % 2 else []})
            if i >= 2:
                out.append({"type": "label", "id": f"e{i - 2}", "time": t, "label": round(rng.random(), 3)})
        elif case.startswith("paging"):
            out.append({"key": f"k{int(30 * rng.random() ** 2)}", "time": t})
        elif case == "sor":
            out.append({"id": f"s{i}", "time": t, "context": round(rng.random(), 2)})
            if i >= 2:
                out.append({"type": "report", "id": f"s{i - 2}", "time": t, "iterations": rng.randint(20, 80),
                            "converged": True})
        else:
            if i >= 8 and i % 5 == 0:
                out.append({"op": "delete", "id": f"it{i - 8}", "time": t})
            else:
                out.append({"id": f"it{i}", "time": t, "features": [round(rng.random(), 3) for _ in range(3)]})
    return out


def main() -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), __version__)
    shutil.rmtree(root, ignore_errors=True)
    for case, extra in CASES.items():
        spec = {"name": case, **IO, **extra}
        pc = config.load_dict({"pipelines": [spec]}, env=False).pipelines[0]
        recs = records(case)
        src = [SourceRecord(json.dumps(r).encode(), "in", 0, i) for i, r in enumerate(recs)]
        core = Engine(pc)
        core.handle(src[:CUT])
        d = os.path.join(root, case)
        arrays, meta = core.snapshot()
        meta["positions"] = {"in:0": CUT}
        CheckpointStore(d, keep=1).save(arrays, meta)
        rest = [json.loads(o.value) for o in core.handle(src[CUT:]) if o.kind == "decision"]
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump({"release": __version__, "commit": commit, "format_version": FORMAT_VERSION,
                       "config": spec, "records": recs, "cut": CUT, "outputs": rest}, f)
        print(f"{case}: {len(rest)} outputs after the checkpoint", file=sys.stderr)


if __name__ == "__main__":
    main()
