"""Sidecar latency: POST /v1/pipelines/pay/decide at one keep-alive connection on loopback.

16 actions, 100 features (dense list), SquareCB; the daemon's sidecar (uvicorn + the thin ASGI
handler) in this process's background thread, the client in a separate process (http.client).
Reported latencies are client-side round trips, so they include the Python client's own cost.

Usage: python benchmarks/sidecar.py [--requests 5000] [--quick]
       python benchmarks/sidecar.py --before b86896e [--rounds 3]   (interleaved A/B, see _ab.py)
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import threading

_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.environ.get("EDDY_BENCH_TREE") or os.path.dirname(_here), _here]

import _ab  # noqa: E402
from _common import versions, write_results  # noqa: E402

CLIENT = r"""
import http.client, json, random, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
acts = [f"acq-{i}" for i in range(16)]
rng = random.Random(1)
c = http.client.HTTPConnection("127.0.0.1", port)
lat = []
for i in range(n + 300):
    body = json.dumps({"id": f"r{i}", "time": float(i), "features": [round(rng.random(), 4) for _ in range(100)],
                       "actions": acts}).encode()
    t0 = time.perf_counter()
    c.request("POST", "/v1/pipelines/pay/decide", body=body, headers={"content-type": "application/json"})
    r = c.getresponse(); r.read()
    dt = time.perf_counter() - t0
    assert r.status == 200
    if i >= 300:
        lat.append(dt)
lat.sort()
print(json.dumps({"p50_ms": lat[len(lat)//2]*1e3, "p99_ms": lat[int(len(lat)*0.99)]*1e3,
                  "requests_per_s": len(lat)/sum(lat)}))
"""


def measure(args: argparse.Namespace) -> list[dict]:
    from daemon import config
    from daemon.families import make_core
    from daemon.metrics import DaemonMetrics
    from daemon.sidecar import Sidecar, serve_in_thread

    pc = {"name": "pay", "learner": "squarecb", "input_topic": "i", "output_topic": "o", "n_features": 100,
          "reward_wait_s": 1e9}
    cfg = config.load_dict({"pipelines": [pc]}, env=False)
    metrics = DaemonMetrics()
    core = make_core(cfg.pipelines[0], metrics)
    core.learner.warm_up()
    if "locks" in inspect.signature(Sidecar).parameters:  # before issue 10's engine: a lock per pipeline
        app = Sidecar({"pay": core}, {"pay": threading.RLock()}, metrics)
    else:
        app = Sidecar({"pay": core}, metrics)
    server, th, port = serve_in_thread(app, "127.0.0.1", 0)
    app.ready = True
    try:
        out = subprocess.run([sys.executable, "-c", CLIENT, str(port), str(args.requests)],
                             capture_output=True, text=True, check=True)
    finally:
        server.should_exit = True
        th.join(5)
    res = json.loads(out.stdout)
    row = {"system": "eddy.sidecar", "workload": "decide-16-actions-100-features-1-connection",
           "requests": args.requests, **res}
    print(row, flush=True)
    return [row]


COLS = [("system", lambda r: r["system"]), ("workload", lambda r: r["workload"]),
        ("p50 ms", lambda r: _ab.fmt(r["p50_ms"], 3)), ("p99 ms", lambda r: _ab.fmt(r["p99_ms"], 3)),
        ("requests/s", lambda r: _ab.fmt(r["requests_per_s"]))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--requests", type=int, default=0, help="timed requests (default 5000; --quick 500)")
    ap.add_argument("--quick", action="store_true", help="smoke sizes")
    _ab.add_args(ap)
    args = ap.parse_args()
    args.requests = args.requests or (500 if args.quick else 5000)
    if args.measure_json:
        _ab.run_child(args, lambda: measure(args))
        return
    vers = versions("eddyd", "uvicorn", "uvloop", "httptools", "numba")
    if args.before:
        judge = {"requests_per_s": +1, "p50_ms": -1, "p99_ms": -1}
        rows, info = _ab.interleave(__file__, sys.argv[1:], args, judge=judge)
        path = write_results("sidecar", rows, vers, {"ab": info})
        print(_ab.table(rows, COLS + [("runs p99 ms", lambda r: " / ".join(_ab.fmt(x["p99_ms"], 3) for x in r["runs"]))]))
        print()
        print(_ab.summary(info))
    else:
        rows = measure(args)
        path = write_results("sidecar", rows, vers)
        print(_ab.table(rows, COLS))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
