"""The HTTP sidecar: a thin ASGI app served by uvicorn (loopback by default).

Routes: ``POST /v1/pipelines/{name}/decide`` and ``.../feedback`` (one JSON object, or
``{"events": [...]}`` / ``{"feedback": [...]}``), ``POST .../control`` (``{"force_default": bool}``)
for bandit pipelines; ``POST /v1/pipelines/{name}/access`` (one request object, or
``{"requests": [...]}``: see :mod:`daemon.paging`) for paging pipelines; ``POST .../predict`` (one
event or ``{"events": [...]}``) and ``POST .../label`` (one label or ``{"labels": [...]}``) for
groupwise pipelines (see :mod:`daemon.groupwise`);
``GET /healthz``, ``/readyz`` (ready once kernels are compiled, state restored, and every pipeline
has joined its consumer group with each assigned partition restored; the body gives each pipeline's
standing), ``/metrics``.
Bad requests get a 4xx with the reason as JSON: ``{"error": reason, "detail": ...}``.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .core import BadRecord, PipelineCore, json_error
from .families import Core
from .groupwise import GroupwiseCore
from .metrics import DaemonMetrics
from .paging import PagingCore

JSON = [(b"content-type", b"application/json")]


class Sidecar:
    def __init__(self, cores: dict[str, Core], locks: dict[str, threading.RLock],
                 metrics: DaemonMetrics, token: str = "", max_body: int = 1 << 20):
        self.cores = cores
        self.locks = locks
        self.metrics = metrics
        self.token = token.encode()
        self.max_body = max_body
        self.ready = False  # kernels compiled and state restored: HTTP decisions are served
        # Per pipeline consuming readiness (set by the daemon): name -> {"ready": bool, ...}.
        self.readiness: Callable[[], dict[str, dict[str, Any]]] | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, headers, body = await self.route(scope, receive)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _readyz(self) -> tuple[int, list, bytes]:
        pipelines = self.readiness() if self.readiness is not None and self.ready else {}
        ok = self.ready and all(p["ready"] for p in pipelines.values())
        return 200 if ok else 503, JSON, orjson.dumps({"ready": ok, "pipelines": pipelines})

    @staticmethod
    def _err(status: int, reason: str, detail: str) -> tuple[int, list, bytes]:
        return status, JSON, orjson.dumps({"error": reason, "detail": detail})

    def _rejected(self, core: Core, e: BadRecord) -> tuple[int, list, bytes]:
        """A request the core rejected: counted, and answered 422 for a duplicate id or an action
        the pipeline does not know (the request was understood), else 400."""
        core.metrics.errors.labels(pipeline=core.name, reason=e.reason).inc()
        return self._err(422 if e.reason in ("duplicate_event", "unknown_action") else 400, e.reason, e.detail)

    def _bad_body(self, core: Core, detail: str) -> tuple[int, list, bytes]:
        """A 400 ``bad_type`` for a request body of the wrong shape, counted like the core's own errors."""
        core.metrics.errors.labels(pipeline=core.name, reason="bad_type").inc()
        return self._err(400, "bad_type", detail)

    async def _body(self, scope, receive) -> bytes | None:
        for k, v in scope["headers"]:
            if k == b"content-length" and v.isdigit() and int(v) > self.max_body:
                return None
        chunks, size = [], 0
        while True:
            msg = await receive()
            part = msg.get("body", b"")
            size += len(part)
            if size > self.max_body:
                return None
            chunks.append(part)
            if not msg.get("more_body"):
                return b"".join(chunks)

    async def route(self, scope, receive) -> tuple[int, list, bytes]:
        path, method = scope["path"], scope["method"]
        if method == "GET":
            if path == "/healthz":
                return 200, JSON, b'{"status":"ok"}'
            if path == "/readyz":
                return self._readyz()
            if path == "/metrics":
                return 200, [(b"content-type", CONTENT_TYPE_LATEST.encode())], generate_latest(self.metrics.registry)
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["v1", "pipelines"]:
            return self._err(404, "not_found", f"no route {method} {path}")
        name, verb = parts[2], parts[3]
        verbs = ("decide", "feedback", "control", "access", "predict", "label")
        if method != "POST" or verb not in verbs:
            return self._err(405 if verb in verbs else 404, "not_found", f"no route {method} {path}")
        if self.token:
            auth = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(auth, b"Bearer " + self.token):
                return self._err(401, "unauthorized", "a valid bearer token is required")
        core = self.cores.get(name)
        if core is None:
            return self._err(404, "unknown_pipeline", f"no pipeline {name!r}; pipelines: {', '.join(self.cores)}")
        family = "paging" if isinstance(core, PagingCore) else "groupwise" if isinstance(core, GroupwiseCore) \
            else "bandit"
        own = {"paging": ("access",), "groupwise": ("predict", "label"), "bandit": ("decide", "feedback", "control")}
        if verb not in own[family]:
            return self._err(404, "not_found", f"pipeline {name!r} is a {family} pipeline: "
                             + ", ".join(f"POST .../{v}" for v in own[family]))
        if not self.ready:
            return self._err(503, "not_ready", "kernels are compiling or state is being restored")
        raw = await self._body(scope, receive)
        if raw is None:
            core.metrics.errors.labels(pipeline=name, reason="oversize").inc()
            return self._err(413, "oversize", f"request body exceeds {self.max_body} bytes")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            return self._rejected(core, json_error(raw, e))
        if isinstance(core, PagingCore):
            return self._access(core, obj)
        if isinstance(core, GroupwiseCore):
            return self._groupwise(core, verb, obj)
        if verb == "control":
            return self._control(core, obj)
        return self._decide(core, obj) if verb == "decide" else self._feedback(core, obj)

    def _decide(self, core: PipelineCore, obj: Any) -> tuple[int, list, bytes]:
        t0 = time.perf_counter()
        batch = isinstance(obj, dict) and "events" in obj
        items = obj["events"] if batch else [obj]
        if not isinstance(items, list) or not items:
            return self._bad_body(core, "'events' must be a non-empty list")
        lock = self.locks[core.name]
        budget = core.pc["latency_budget_ms"] / 1000.0
        if not lock.acquire(timeout=budget if budget > 0 else -1):
            try:  # validated first, as when the lock is had: a bad request is a 4xx on every path
                kept = core.validate_objects(items)
            except BadRecord as e:
                return self._rejected(core, e)
            return self._over_budget(core, items, kept, batch)
        try:
            decisions = core.decide_objects(items)
        except BadRecord as e:
            return self._rejected(core, e)
        finally:
            lock.release()
        core.metrics.decision_latency.labels(pipeline=core.name).observe(time.perf_counter() - t0)
        return 200, JSON, orjson.dumps({"decisions": decisions} if batch else decisions[0])

    def _access(self, core: PagingCore, obj: Any) -> tuple[int, list, bytes]:
        t0 = time.perf_counter()
        batch = isinstance(obj, dict) and "requests" in obj
        items = obj["requests"] if batch else [obj]
        if not isinstance(items, list) or not items:
            return self._bad_body(core, "'requests' must be a non-empty list")
        try:
            with self.locks[core.name]:
                results = core.access_objects(items)
        except BadRecord as e:
            return self._rejected(core, e)
        core.metrics.decision_latency.labels(pipeline=core.name).observe(time.perf_counter() - t0)
        return 200, JSON, orjson.dumps({"results": results} if batch else results[0])

    def _groupwise(self, core: GroupwiseCore, verb: str, obj: Any) -> tuple[int, list, bytes]:
        t0 = time.perf_counter()
        key = "events" if verb == "predict" else "labels"
        batch = isinstance(obj, dict) and key in obj
        items = obj[key] if batch else [obj]
        if not isinstance(items, list) or not items:
            return self._bad_body(core, f"{key!r} must be a non-empty list")
        with self.locks[core.name]:
            if verb == "label":
                res = core.label_objects(items)
                if not batch:
                    r = res[0]
                    if r["status"] != "joined":
                        code = 404 if r["reason"] == "unknown_event" else (409 if r["reason"] in
                                                                            ("late_label", "duplicate_label") else 400)
                        return self._err(code, r["reason"], r["detail"])
                    return 200, JSON, orjson.dumps(r)
                return 200, JSON, orjson.dumps({"results": res})
            try:
                out = core.predict_objects(items)
            except BadRecord as e:
                return self._rejected(core, e)
        core.metrics.decision_latency.labels(pipeline=core.name).observe(time.perf_counter() - t0)
        return 200, JSON, orjson.dumps({"predictions": out} if batch else out[0])

    def _over_budget(self, core: PipelineCore, items: list[dict], kept: list[dict | None],
                     batch: bool) -> tuple[int, list, bytes]:
        """The learner is busy past the latency budget: the default action, not logged for learning
        (a retried id gets the decision it already has). ``items`` are validated."""
        out = []
        for it, had in zip(items, kept, strict=True):
            if had is not None:
                out.append(had)
                continue
            acts = it.get("actions")
            offered = [a if isinstance(a, str) else a["id"] for a in acts] if acts is not None \
                else list(getattr(core.learner, "actions", ()))
            dflt = core.pc["default_action"]
            action = dflt if dflt in offered or not offered else offered[0]
            out.append({"id": it["id"], "pipeline": core.name, "action": action, "prob": 1.0,
                        "probs": {action: 1.0}, "model_version": None, "explored": False, "default": True,
                        "reason": "latency_budget", "time": it.get("time"), "replay": False})
        core.metrics.defaults.labels(pipeline=core.name, reason="latency_budget").inc(sum(k is None for k in kept))
        return 200, JSON, orjson.dumps({"decisions": out} if batch else out[0])

    def _feedback(self, core: PipelineCore, obj: Any) -> tuple[int, list, bytes]:
        batch = isinstance(obj, dict) and "feedback" in obj
        items = obj["feedback"] if batch else [obj]
        if not isinstance(items, list) or not items:
            return self._bad_body(core, "'feedback' must be a non-empty list")
        with self.locks[core.name]:
            res = core.feedback_objects(items)
        if not batch:
            r = res[0]
            if r["status"] != "joined":
                code = 404 if r["reason"] == "unknown_event" else (409 if r["reason"] in
                                                                    ("late_reward", "duplicate_reward") else 400)
                return self._err(code, r["reason"], r["detail"])
            return 200, JSON, orjson.dumps(r)
        return 200, JSON, orjson.dumps({"results": res})

    def _control(self, core: PipelineCore, obj: Any) -> tuple[int, list, bytes]:
        if not isinstance(obj, dict) or not isinstance(obj.get("force_default"), bool):
            return self._bad_body(core, "body must be {\"force_default\": true|false}")
        with self.locks[core.name]:
            core.force_default = obj["force_default"]
        core.metrics.force_default.labels(pipeline=core.name).set(int(core.force_default))
        return 200, JSON, orjson.dumps({"force_default": core.force_default})


def serve_in_thread(app: Sidecar, host: str, port: int):
    """Starts uvicorn in a background thread; returns (server, thread, bound port)."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"http: cannot listen on {host}:{port}: {e.strerror}") from None
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            loop="auto", http="auto")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]  # the daemon owns signals
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="eddy-http")
    th.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    return server, th, bound
