"""The HTTP sidecar: a thin ASGI app served by uvicorn (loopback by default).

Routes: ``POST /v1/pipelines/{name}/{verb}`` with the verbs the pipeline's family offers (each
adapter's ``verbs``, of three kinds: events, feedback, control). An events verb takes one JSON
object or ``{<items>: [...]}`` and answers one output or ``{<answer>: [...]}``; a feedback verb
answers one status, or per item; ``control`` takes ``{"force_default": bool}``. A batch is
answered per item, in order: a bad item gets ``{"id", "error", "detail"}`` at its position
(counted in ``eddy_errors_total``) and the others their outputs; a batch whose envelope is well
formed is 200 even when every item is bad, and a malformed envelope (not JSON, ``<items>`` not a
non-empty list) is a 400. An id repeated within one batch is a ``duplicate_event`` at its second
position (so a batch and its retry are answered alike); a retried id gets its first output.
``GET /v1/pipelines/{name}/{view}`` with the views the family offers (each adapter's ``views``:
the current state users see, e.g. a summary's current set; of one key, ``?key=``, on a keyed
pipeline), and
``GET /v1/pipelines`` lists the pipelines with their learner, family and routes;
``GET /v1/openapi.json`` is the OpenAPI 3.1 document of these routes (:mod:`daemon.openapi`,
generated from the tables the router dispatches on; with the bearer token, as the listing).
A route asked with another method gets 405 with ``Allow``.
``GET /healthz``, ``/readyz`` (ready once kernels are compiled, state restored, and every pipeline
has joined its consumer group with each assigned partition restored; the body gives each pipeline's
standing), ``/metrics`` (these three without the token).
Bad requests get a 4xx with the reason as JSON: ``{"error": reason, "detail": ...}``.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .families import Core
from .family import Verb, all_verbs
from .metrics import DaemonMetrics
from .records import MAX_ID_LEN, BadRecord, json_error

JSON = [(b"content-type", b"application/json")]
# The routes outside the pipelines (GET): path -> (handler, whether the bearer token is needed).
# The router dispatches on this table and daemon.openapi documents it.
FIXED: dict[str, tuple[str, bool]] = {
    "/healthz": ("_healthz", False), "/readyz": ("_readyz", False), "/metrics": ("_metrics", False),
    "/v1/pipelines": ("_pipelines", True), "/v1/openapi.json": ("_openapi", True),
}
Response = tuple[int, list, bytes]


class Sidecar:
    def __init__(self, engines: dict[str, Core], metrics: DaemonMetrics, token: str = "",
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

    async def _healthz(self) -> Response:
        return 200, JSON, b'{"status":"ok"}'

    async def _readyz(self) -> Response:
        pipelines = self.readiness() if self.readiness is not None and self.ready else {}
        ok = self.ready and all(p["ready"] for p in pipelines.values())
        return 200 if ok else 503, JSON, orjson.dumps({"ready": ok, "pipelines": pipelines})

    async def _metrics(self) -> Response:  # (in a thread: the families' collector may wait for a busy pipeline)
        text = await asyncio.to_thread(generate_latest, self.metrics.registry)
        return 200, [(b"content-type", CONTENT_TYPE_LATEST.encode())], text

    async def _pipelines(self) -> Response:
        return 200, JSON, orjson.dumps({"pipelines": [self._describe(n, e) for n, e in self.engines.items()]})

    async def _openapi(self) -> Response:
        from .openapi import document

        return 200, JSON, orjson.dumps(document(self))

    @staticmethod
    def _err(status: int, reason: str, detail: str) -> Response:
        return status, JSON, orjson.dumps({"error": reason, "detail": detail})

    def _rejected(self, engine: Core, e: BadRecord) -> Response:
        """A request the engine rejected: counted, and answered 422 for a duplicate id or an action
        the pipeline does not know (the request was understood), else 400."""
        engine.metrics.errors.labels(pipeline=engine.name, reason=e.reason).inc()
        return self._err(422 if e.reason in ("duplicate_event", "unknown_action") else 400, e.reason, e.detail)

    def _bad_body(self, engine: Core, detail: str) -> Response:
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
    def _describe(name: str, engine: Core) -> dict[str, Any]:
        """A pipeline as ``GET /v1/pipelines`` lists it: its learner, family and routes."""
        a = engine.adapter
        return {"name": name, "learner": engine.pc["learner"], "family": engine.family,
                "verbs": [f"POST /v1/pipelines/{name}/{v}" for v in a.verbs],
                "views": [f"GET /v1/pipelines/{name}/{v}" for v in a.views],
                "input_topic": engine.pc["input_topic"], "output_topic": engine.pc["output_topic"]}

    @classmethod
    def _not_allowed(cls, method: str, path: str, allow: str) -> Response:
        status, headers, body = cls._err(405, "method_not_allowed", f"{method} {path}: this route takes {allow}")
        return status, [*headers, (b"allow", allow.encode())], body

    async def route(self, scope, receive) -> Response:
        path, method = scope["path"], scope["method"]
        fixed = FIXED.get(path)
        if fixed is not None:
            handler, auth = fixed
            if method != "GET":
                return self._not_allowed(method, path, "GET")
            if auth and not self._authorized(scope):
                return self._err(401, "unauthorized", "a valid bearer token is required")
            return await getattr(self, handler)()
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["v1", "pipelines"]:
            return self._err(404, "not_found", f"no route {method} {path}")
        name, verb = parts[2], parts[3]
        engine = self.engines.get(name)
        if engine is not None and verb in engine.adapter.views:
            if method != "GET":
                return self._not_allowed(method, path, "GET")
            return self._view(engine, verb, scope)
        if engine is None or verb not in engine.adapter.verbs:  # no route; a verb of some family named
            if verb not in self.verbs:
                return self._err(404, "not_found", f"no route {method} {path}")
            if not self._authorized(scope):
                return self._err(401, "unauthorized", "a valid bearer token is required")
            if engine is None:
                return self._err(404, "unknown_pipeline",
                                 f"no pipeline {name!r}; pipelines: {', '.join(self.engines)}")
            return self._err(404, "not_found", f"pipeline {name!r} is a {engine.family} pipeline: "
                             + ", ".join(f"POST .../{v}" for v in engine.adapter.verbs))
        if method != "POST":
            return self._not_allowed(method, path, "POST")
        if not self._authorized(scope):
            return self._err(401, "unauthorized", "a valid bearer token is required")
        own = engine.adapter.verbs
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
        if batch:
            return self._events_batch(engine, v, items)
        return self._events(engine, items)

    def _events(self, engine: Core, items: list) -> Response:
        """One event (the single form): its output, or a 4xx with the reason."""
        t0 = time.perf_counter()
        lock = engine.lock
        budget = engine.adapter.budget_s
        if not lock.acquire(timeout=budget if budget > 0 else -1):
            try:  # validated first, as when the lock is had: a bad request is a 4xx on every path
                kept = engine.validate(items)
            except BadRecord as e:
                return self._rejected(engine, e)
            return 200, JSON, orjson.dumps(self._over_budget(engine, items, kept)[0])
        try:
            results = engine.submit(items)
        except BadRecord as e:
            return self._rejected(engine, e)
        finally:
            lock.release()
        engine.metrics.decision_latency.labels(pipeline=engine.name).observe(time.perf_counter() - t0)
        if "error" in results[0]:  # rejected when its run was computed (a family's own reason)
            reason = results[0]["error"]
            return self._err(self._code(reason), reason, results[0]["detail"])
        return 200, JSON, orjson.dumps(results[0])

    def _events_batch(self, engine: Core, v: Verb, items: list) -> Response:
        """A batch of events, answered per item in order (see the module docstring): 200 whatever
        its items, each bad one answered ``{"id", "error", "detail"}`` and counted."""
        t0 = time.perf_counter()
        answers: list[dict | None] = [None] * len(items)
        todo: list[int] = []  # the positions to decide: all but an id's repeats
        ids: set[str] = set()
        for i, obj in enumerate(items):
            eid = obj.get("id") if isinstance(obj, dict) else None
            if type(eid) is str and 0 < len(eid) <= MAX_ID_LEN:  # (a bad id is the engine's to name)
                if eid in ids:
                    answers[i] = self._item_error(engine, i, obj, BadRecord(
                        "duplicate_event", f"event id {eid!r} appears twice in one request"))
                    continue
                ids.add(eid)
            todo.append(i)
        lock = engine.lock
        budget = engine.adapter.budget_s
        if not lock.acquire(timeout=budget if budget > 0 else -1):
            self._batch_over_budget(engine, items, todo, answers)
        else:
            try:
                self._decide(engine, items, todo, answers)
            finally:
                lock.release()
            engine.metrics.decision_latency.labels(pipeline=engine.name).observe(time.perf_counter() - t0)
        return 200, JSON, orjson.dumps({v.answer: answers})

    def _decide(self, engine: Core, items: list, todo: list[int], answers: list[dict | None]) -> None:
        """Decides the items at ``todo``, in order, one engine call per run of valid items. The
        engine refuses a call with a bad item whole (nothing processed): such a call is split in
        halves, the first decided before the second, until each bad item stands alone."""
        stack = [todo]
        while stack:
            part = stack.pop()
            try:
                results = engine.submit([items[i] for i in part])
            except BadRecord as e:
                if len(part) == 1:
                    answers[part[0]] = self._item_error(engine, part[0], items[part[0]], e)
                else:
                    half = len(part) // 2
                    stack += [part[half:], part[:half]]
                continue
            for i, r in zip(part, results, strict=True):
                if "error" in r and r.get("id") is None:  # (found with its run, counted: named as the request did)
                    r = {**r, "id": self._request_id(items[i])}
                answers[i] = r

    def _batch_over_budget(self, engine: Core, items: list, todo: list[int], answers: list[dict | None]) -> None:
        """The batch's answers while the learner is busy past the latency budget: each valid
        item's default answer (or a retried id's first output), each bad one its error."""
        good: list[int] = []
        kept: list[dict | None] = []
        for i in todo:
            try:
                kept += engine.validate([items[i]])
            except BadRecord as e:
                answers[i] = self._item_error(engine, i, items[i], e)
                continue
            good.append(i)
        for i, out in zip(good, self._over_budget(engine, [items[i] for i in good], kept), strict=True):
            answers[i] = out

    @staticmethod
    def _item_error(engine: Core, i: int, obj: Any, e: BadRecord) -> dict[str, Any]:
        """A batch item's rejection, counted: ``{"id", "error", "detail"}``."""
        engine.metrics.errors.labels(pipeline=engine.name, reason=e.reason).inc()
        return {"id": Sidecar._request_id(obj), "error": e.reason, "detail": f"item {i}: {e.detail}"}

    @staticmethod
    def _request_id(obj: Any) -> str | None:
        eid = obj.get("id") if isinstance(obj, dict) else None
        return eid if isinstance(eid, str) else None

    @staticmethod
    def _code(reason: str) -> int:
        """The status of a rejection: 404 for an unknown id, 409 for a late or repeated one, else 400."""
        return 404 if reason.startswith("unknown_") else 409 if reason.startswith(("late_", "duplicate_")) else 400

    @staticmethod
    def _over_budget(engine: Core, items: list[dict], kept: list[dict | None]) -> list[dict]:
        """The learner is busy past the latency budget: the family's default answers, not logged
        for learning (a retried id gets the output it already has). ``items`` are validated."""
        out = [had if had is not None else engine.adapter.default_answer(it)
               for it, had in zip(items, kept, strict=True)]
        engine.metrics.defaults.labels(pipeline=engine.name, reason="latency_budget").inc(sum(k is None for k in kept))
        return out

    def _feedback(self, engine: Core, items: list, batch: bool) -> Response:
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

    def _view(self, engine: Core, view: str, scope) -> Response:
        if not self._authorized(scope):
            return self._err(401, "unauthorized", "a valid bearer token is required")
        if not self.ready:
            return self._err(503, "not_ready", "kernels are compiling or state is being restored")
        query = {k: v[0] for k, v in urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        try:
            with engine.lock:
                body = engine.view(view, query)
        except BadRecord as e:
            engine.metrics.errors.labels(pipeline=engine.name, reason=e.reason).inc()
            return self._err(404 if e.reason == "unknown_key" else 400, e.reason, e.detail)
        return 200, JSON, orjson.dumps(body)

    def _control(self, engine: Core, obj: Any) -> Response:
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
