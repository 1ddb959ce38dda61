from __future__ import annotations

import contextlib
import json
import os
import random

import pytest

os.environ.setdefault("EDDY_NUMBA_CACHE", "1")


@pytest.fixture(scope="session")
def broker():
    """One embedded Tansu broker for the whole session (real Kafka protocol, memory storage)."""
    from connectors.embedded import EmbeddedBroker

    b = EmbeddedBroker().start()
    yield b
    b.stop()


def make_records(n_events: int = 300, seed: int = 1, feedback_every: int = 2, dim: int = 6) -> list[bytes]:
    """Events and (interleaved, delayed) feedback, as a payment service would write them."""
    rng = random.Random(seed)
    out, waiting = [], []
    for i in range(n_events):
        x = {f"f{j}": round(rng.gauss(0, 1), 4) for j in range(dim)}
        x["bias"] = 1.0
        acts = ["a", "b", "c", "d"] if i % 7 else ["b", "c", "e"]
        out.append(json.dumps({"id": f"e{i}", "time": float(i), "features": x, "actions": acts}).encode())
        if i % feedback_every == 0:
            waiting.append(i)
        if len(waiting) > 3 or (waiting and rng.random() < 0.3):
            j = waiting.pop(0)
            out.append(json.dumps({"type": "feedback", "id": f"e{j}", "time": float(i),
                                   "reward": round(rng.random(), 3)}).encode())
    return out


def pipeline_cfg(name="routing", **over):
    pc = {"name": name, "learner": "squarecb", "input_topic": f"{name}-in", "output_topic": f"{name}-out",
          "n_features": 16, "reward_wait_s": 25.0, "shadow_learners": ["linucb"], "default_action": "a",
          "batch_max_events": 50, "batch_max_ms": 20.0}
    pc.update(over)
    return pc


@contextlib.contextmanager
def served(cores, token=""):
    """The HTTP sidecar over ``cores`` (name -> pipeline core) on a free loopback port; yields the
    port (call it with :func:`tests.test_sidecar.call`)."""

    from daemon.sidecar import Sidecar, serve_in_thread

    core = next(iter(cores.values()))
    app = Sidecar(cores, core.metrics, token=token)
    server, th, port = serve_in_thread(app, "127.0.0.1", 0)
    app.ready = True
    try:
        yield port
    finally:
        server.should_exit = True
        th.join(5)
