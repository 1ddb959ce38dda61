"""The HTTP sidecar: a thin ASGI app served by uvicorn (loopback by default).

Routes: ``POST /v1/pipelines/{name}/{verb}`` with the verbs the pipeline's family offers (each
adapter's ``verbs``, of three kinds: events, feedback, control). An events verb takes one JSON
object or ``{<items>: [...]}`` and answers one output or ``{<answer>: [...]}``; a feedback verb
answers one status, or per item;
``control`` takes ``{"force_default": bool}``.
``GET /v1/pipelines/{name}/{view}`` with the views the family offers (each adapter's ``views``:
the current state users see, e.g. a summary's current set), and
``GET /v1/pipelines`` lists the pipelines with their learner, family and routes; a verb asked
with another method than POST gets 405 with ``Allow: POST``.
``GET /healthz``, ``/readyz`` (ready once kernels are compiled, state restored, and every pipeline
has joined its consumer group with each assigned partition restored; the body gives each pipeline's
standing), ``/metrics``.
Bad requests get a 4xx with the reason as JSON: ``{"error": reason, "detail": ...}``.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .engine import Engine
from .family import Verb, all_verbs
from .metrics import DaemonMetrics
from .records import BadRecord, json_error

JSON = [(b"content-type", b"application/json")]


class Sidecar:
    def __init__(self, engines: dict[str, Engine], metrics: DaemonMetrics, token: str = "",
                 max_body: int = 1 << 20):
        self.engines = engines
        self.metrics = metrics
        self.token = token.encode()
        self.max_body = max_body
        self.verbs = all_verbs() | {v for e in engines.values() for v in e.adapter.verbs}
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

    def _rejected(self, engine: Engine, e: BadRecord) -> tuple[int, list, bytes]:
        """A request the engine rejected: counted, and answered 422 for a duplicate id or an action
        the pipeline does not know (the request was understood), else 400."""
        engine.metrics.errors.labels(pipeline=engine.name, reason=e.reason).inc()
        return self._err(422 if e.reason in ("duplicate_event", "unknown_action") else 400, e.reason, e.detail)

    def _bad_body(self, engine: Engine, detail: str) -> tuple[int, list, bytes]:
        """A 400 ``bad_type`` for a request body of the wrong shape, counted like the engine's own errors."""
        engine.metrics.errors.labels(pipeline=engine.name, reason="bad_type").inc()
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

    @staticmethod
    def _describe(name: str, engine: Engine) -> dict[str, Any]:
        """A pipeline as ``GET /v1/pipelines`` lists it: its learner, family and routes."""
        a = engine.adapter
        return {"name": name, "learner": engine.pc["learner"], "family": engine.family,
                "verbs": [f"POST /v1/pipelines/{name}/{v}" for v in a.verbs],
                "views": [f"GET /v1/pipelines/{name}/{v}" for v in a.views],
                "input_topic": engine.pc["input_topic"], "output_topic": engine.pc["output_topic"]}

    async def route(self, scope, receive) -> tuple[int, list, bytes]:
        path, method = scope["path"], scope["method"]
        if method == "GET":
            if path == "/healthz":
                return 200, JSON, b'{"status":"ok"}'
            if path == "/readyz":
                return self._readyz()
            if path == "/metrics":  # (in a thread: the families' collector may wait for a busy pipeline)
                text = await asyncio.to_thread(generate_latest, self.metrics.registry)
                return 200, [(b"content-type", CONTENT_TYPE_LATEST.encode())], text
        parts = path.strip("/").split("/")
        if parts == ["v1", "pipelines"] and method == "GET":
            if not self._authorized(scope):
                return self._err(401, "unauthorized", "a valid bearer token is required")
            return 200, JSON, orjson.dumps({"pipelines": [self._describe(n, e) for n, e in self.engines.items()]})
        if len(parts) != 4 or parts[:2] != ["v1", "pipelines"]:
            return self._err(404, "not_found", f"no route {method} {path}")
        name, verb = parts[2], parts[3]
        if method == "GET" and name in self.engines and verb in self.engines[name].adapter.views:
            return self._view(self.engines[name], verb, scope)
        if method != "POST" and verb in self.verbs:
            status, headers, body = self._err(405, "method_not_allowed", f"{method} {path}: {verb} takes POST")
            return status, [*headers, (b"allow", b"POST")], body
        if verb not in self.verbs:
            return self._err(404, "not_found", f"no route {method} {path}")
        if not self._authorized(scope):
            return self._err(401, "unauthorized", "a valid bearer token is required")
        engine = self.engines.get(name)
        if engine is None:
            return self._err(404, "unknown_pipeline", f"no pipeline {name!r}; pipelines: {', '.join(self.engines)}")
        own = engine.adapter.verbs
        if verb not in own:
            return self._err(404, "not_found", f"pipeline {name!r} is a {engine.family} pipeline: "
                             + ", ".join(f"POST .../{v}" for v in own))
        if not self.ready:
            return self._err(503, "not_ready", "kernels are compiling or state is being restored")
        raw = await self._body(scope, receive)
        if raw is None:
            engine.metrics.errors.labels(pipeline=name, reason="oversize").inc()
            return self._err(413, "oversize", f"request body exceeds {self.max_body} bytes")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            return self._rejected(engine, json_error(raw, e))
        v = own[verb]
        if v.kind == "control":
            return self._control(engine, obj)
        batch = isinstance(obj, dict) and v.items in obj
        items = obj[v.items] if batch else [obj]
        if not isinstance(items, list) or not items:
            return self._bad_body(engine, f"{v.items!r} must be a non-empty list")
        if v.kind == "feedback":
            return self._feedback(engine, items, batch)
        return self._events(engine, v, items, batch)

    def _events(self, engine: Engine, v: Verb, items: list, batch: bool) -> tuple[int, list, bytes]:
        t0 = time.perf_counter()
        lock = engine.lock
        budget = engine.adapter.budget_s
        if not lock.acquire(timeout=budget if budget > 0 else -1):
            try:  # validated first, as when the lock is had: a bad request is a 4xx on every path
                kept = engine.validate(items)
            except BadRecord as e:
                return self._rejected(engine, e)
            return self._over_budget(engine, v, items, kept, batch)
        try:
            results = engine.submit(items)
        except BadRecord as e:
            return self._rejected(engine, e)
        finally:
            lock.release()
        engine.metrics.decision_latency.labels(pipeline=engine.name).observe(time.perf_counter() - t0)
        if not batch and "error" in results[0]:  # rejected when its run was computed (a family's own reason)
            reason = results[0]["error"]
            return self._err(self._code(reason), reason, results[0]["detail"])
        return 200, JSON, orjson.dumps({v.answer: results} if batch else results[0])

    @staticmethod
    def _code(reason: str) -> int:
        """The status of a rejection: 404 for an unknown id, 409 for a late or repeated one, else 400."""
        return 404 if reason.startswith("unknown_") else 409 if reason.startswith(("late_", "duplicate_")) else 400

    def _over_budget(self, engine: Engine, v: Verb, items: list[dict], kept: list[dict | None],
                     batch: bool) -> tuple[int, list, bytes]:
        """The learner is busy past the latency budget: the family's default answer, not logged for
        learning (a retried id gets the output it already has). ``items`` are validated."""
        out = [had if had is not None else engine.adapter.default_answer(it)
               for it, had in zip(items, kept, strict=True)]
        engine.metrics.defaults.labels(pipeline=engine.name, reason="latency_budget").inc(sum(k is None for k in kept))
        return 200, JSON, orjson.dumps({v.answer: out} if batch else out[0])

    def _feedback(self, engine: Engine, items: list, batch: bool) -> tuple[int, list, bytes]:
        with engine.lock:
            res = engine.feedback(items)
        if not batch:
            r = res[0]
            if r["status"] != "joined":
                reason = r["reason"]
                return self._err(self._code(reason), reason, r["detail"])
            return 200, JSON, orjson.dumps(r)
        return 200, JSON, orjson.dumps({"results": res})

    def _authorized(self, scope) -> bool:
        if not self.token:
            return True
        return hmac.compare_digest(dict(scope["headers"]).get(b"authorization", b""), b"Bearer " + self.token)

    def _view(self, engine: Engine, view: str, scope) -> tuple[int, list, bytes]:
        if not self._authorized(scope):
            return self._err(401, "unauthorized", "a valid bearer token is required")
        if not self.ready:
            return self._err(503, "not_ready", "kernels are compiling or state is being restored")
        with engine.lock:
            body = getattr(engine.adapter, engine.adapter.views[view])()
        return 200, JSON, orjson.dumps(body)

    def _control(self, engine: Engine, obj: Any) -> tuple[int, list, bytes]:
        if not isinstance(obj, dict) or not isinstance(obj.get("force_default"), bool):
            return self._bad_body(engine, "body must be {\"force_default\": true|false}")
        with engine.lock:
            forced = engine.control(obj["force_default"])
        return 200, JSON, orjson.dumps({"force_default": forced})


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
