"""The fuzz of issue 16 at scale: ``tests/test_fuzz.py`` with ``--examples`` per family, its counts
written to ``benchmarks/results/fuzz.json`` (one row per family: records fed to the engine and what
became of them, sidecar bodies by status, failures).

The properties are the test's (nothing raises; every record decided, dead-lettered with its reason
or joined to its event; every answer 200 or a 4xx with ``error`` and ``detail``); a failed one
fails the run. ``--from-report`` turns an existing report (``EDDY_FUZZ_REPORT``) into the results
file without running the fuzz again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import versions, write_results


def rows_of(report: dict, failed: int, seconds: float | None) -> list[dict]:
    rows = []
    for family, c in sorted(report["families"].items()):
        inputs = c.get("records", 0) + c.get("bodies", 0)
        rows.append({"system": "eddy", "workload": f"fuzz {family}", "examples": report["examples"],
                     "inputs": inputs, "records": c.get("records", 0), "dead_letters": c.get("dead_letters", 0),
                     "decisions": c.get("decisions", 0), "joined": int(c.get("joined", 0)),
                     "bodies": c.get("bodies", 0), "bodies_2xx": c.get("bodies_2xx", 0),
                     "bodies_4xx": c.get("bodies_4xx", 0), "bodies_5xx": c.get("bodies_5xx", 0),
                     "failed_tests": failed, **({"seconds": round(seconds, 1)} if seconds is not None else {})})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=17000, help="Hypothesis examples per family and test")
    ap.add_argument("--from-report", default="", help="a report written by EDDY_FUZZ_REPORT; no run")
    ap.add_argument("--failed", type=int, default=0, help="with --from-report: the run's failed tests")
    args = ap.parse_args()
    seconds = None
    if args.from_report:
        path, failed = args.from_report, args.failed
    else:
        path = os.path.join(tempfile.mkdtemp(prefix="eddy-fuzz-"), "report.json")
        env = {**os.environ, "EDDY_FUZZ_EXAMPLES": str(args.examples), "EDDY_FUZZ_REPORT": path}
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fuzz.py",
                               "--timeout", "0", "-rf"], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        print(done.stdout[-3000:])
        failed = sum(1 for line in done.stdout.splitlines() if line.startswith("FAILED"))
    with open(path) as f:
        report = json.load(f)
    rows = rows_of(report, failed, seconds)
    for r in rows:
        print(json.dumps(r))
    print("wrote", write_results("fuzz", rows, versions("eddyd", "hypothesis")))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
