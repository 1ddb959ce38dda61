"""Sidecar latency: POST /v1/pipelines/pay/decide at one keep-alive connection on loopback.

16 actions, 100 features (dense list), SquareCB; the daemon's sidecar (uvicorn + the thin ASGI
handler) in this process's background thread, the client in a separate process (http.client).
Reported latencies are client-side round trips, so they include the Python client's own cost.

Usage: python benchmarks/sidecar.py [--requests 5000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading

sys.path.insert(0, __file__.rsplit("/", 2)[0])

from benchmarks._common import versions, write_results  # noqa: E402
from daemon import config  # noqa: E402
from daemon.core import PipelineCore  # noqa: E402
from daemon.metrics import DaemonMetrics  # noqa: E402
from daemon.sidecar import Sidecar, serve_in_thread  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000)
    args = ap.parse_args()
    pc = {"name": "pay", "learner": "squarecb", "input_topic": "i", "output_topic": "o", "n_features": 100,
          "reward_wait_s": 1e9}
    cfg = config.load_dict({"pipelines": [pc]}, env=False)
    metrics = DaemonMetrics()
    core = PipelineCore(cfg.pipelines[0], metrics)
    core.learner.warm_up()
    app = Sidecar({"pay": core}, {"pay": threading.RLock()}, metrics)
    server, th, port = serve_in_thread(app, "127.0.0.1", 0)
    app.ready = True
    out = subprocess.run([sys.executable, "-c", CLIENT, str(port), str(args.requests)],
                         capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    server.should_exit = True
    th.join(5)
    row = {"system": "eddy.sidecar", "workload": "decide-16-actions-100-features-1-connection", **res}
    print(row)
    write_results("sidecar", [row], versions("eddyd", "uvicorn", "uvloop", "httptools", "numba"))


if __name__ == "__main__":
    main()
