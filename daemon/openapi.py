"""The OpenAPI 3.1 document of the sidecar, served at ``GET /v1/openapi.json``.

It is generated, per request, from the tables the router dispatches on, so that it cannot drift
from the routes: :data:`daemon.sidecar.FIXED` (the routes outside the pipelines), and per
pipeline its adapter's ``verbs`` (by kind: events, feedback, control; the batch form's
``items`` and ``answer`` keys) and ``views``. The family's own fields are the family's: an event
or a feedback item is documented as an object with the fields every family shares (``id``,
``time``) and any others. An adapter may declare ``examples`` (verb → one request item, a
feedback example answering the events example of the same id); a control verb's example is the
sidecar's own. Errors have one schema, ``{"error": reason, "detail": ...}``; a route asked with
another method answers 405 with ``Allow`` (components ``MethodNotAllowed``, said in each path's
description).
"""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Any

from .family import Verb
from .records import MAX_ID_LEN

if TYPE_CHECKING:
    from .families import Core
    from .sidecar import Sidecar

JSON = "application/json"
ERR = {"$ref": "#/components/schemas/Error"}

ERRORS = {  # status -> (component name, description)
    "400": ("BadRequest", "the request or an item of it is malformed (reason: malformed_json, bad_type, "
            "missing_field, non_finite, future_time, ...)"),
    "401": ("Unauthorized", "a valid bearer token is required"),
    "404": ("NotFound", "the request names something the pipeline does not hold (reason unknown_*)"),
    "405": ("MethodNotAllowed", "the route takes another method (the Allow header names it)"),
    "409": ("Conflict", "too late or once too often (reason late_* or duplicate_*)"),
    "413": ("TooLarge", "the request body exceeds the sidecar's limit (reason oversize)"),
    "422": ("Unprocessable", "understood but refused: an id already decided (duplicate_event) or an action "
            "the pipeline does not know (unknown_action)"),
    "503": ("NotReady", "kernels are compiling or state is being restored (reason not_ready)"),
}
# The error statuses per verb kind and for views (401 only when a token is configured).
STATUSES = {"events": ("400", "401", "404", "409", "413", "422", "503"),
            "feedback": ("400", "401", "404", "409", "413", "503"),
            "control": ("400", "401", "413", "503"), "view": ("401", "503")}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "detail"],
              "properties": {"error": {"type": "string", "description": "the reason (a metric label)"},
                             "detail": {"type": "string", "description": "for people"}}},
    "ItemError": {"type": "object", "required": ["id", "error", "detail"],
                  "description": "a batch item refused, at its position (counted in eddy_errors_total)",
                  "properties": {"id": {"type": ["string", "null"]}, "error": {"type": "string"},
                                 "detail": {"type": "string"}}},
    "FeedbackResult": {"type": "object", "required": ["id", "status"],
                       "properties": {"id": {"type": ["string", "null"]},
                                      "status": {"enum": ["joined", "rejected"]},
                                      "reason": {"type": "string"}, "detail": {"type": "string"}}},
    "Control": {"type": "object", "required": ["force_default"],
                "properties": {"force_default": {"type": "boolean"}}},
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
    "Readiness": {"type": "object", "required": ["ready", "pipelines"],
                  "properties": {"ready": {"type": "boolean"},
                                 "pipelines": {"type": "object", "description": "each pipeline's standing",
                                               "additionalProperties": {"type": "object"}}}},
    "Pipelines": {"type": "object", "required": ["pipelines"], "properties": {"pipelines": {
        "type": "array", "items": {"type": "object", "required": ["name", "learner", "family", "verbs", "views"],
                                   "properties": {"name": {"type": "string"}, "learner": {"type": "string"},
                                                  "family": {"type": "string"},
                                                  "verbs": {"type": "array", "items": {"type": "string"}},
                                                  "views": {"type": "array", "items": {"type": "string"}},
                                                  "input_topic": {"type": "string"},
                                                  "output_topic": {"type": "string"}}}}}},
    "Document": {"type": "object", "required": ["openapi", "paths"]},
}

FIXED_DOCS: dict[str, tuple[str, str, dict[str, Any]]] = {  # path -> (summary, media type, status -> schema)
    "/healthz": ("liveness", JSON, {"200": {"$ref": "#/components/schemas/Health"}}),
    "/readyz": ("readiness: kernels compiled, state restored, every pipeline's group joined", JSON,
                {"200": {"$ref": "#/components/schemas/Readiness"},
                 "503": {"$ref": "#/components/schemas/Readiness"}}),
    "/metrics": ("Prometheus metrics (text exposition format)", "text/plain", {"200": {"type": "string"}}),
    "/v1/pipelines": ("the pipelines with their learner, family, topics and routes", JSON,
                      {"200": {"$ref": "#/components/schemas/Pipelines"}}),
    "/v1/openapi.json": ("this document", JSON, {"200": {"$ref": "#/components/schemas/Document"}}),
}


def _version() -> str:
    try:
        return importlib.metadata.version("eddyd")
    except importlib.metadata.PackageNotFoundError:  # (run from a source tree)
        return "unknown"


def _errors(kind: str, auth: bool) -> dict[str, Any]:
    return {s: {"$ref": f"#/components/responses/{ERRORS[s][0]}"} for s in STATUSES[kind] if auth or s != "401"}


def _item(engine: Core, kind: str) -> dict[str, Any]:
    """The schema of one item of a verb (inline: examples validate against it alone)."""
    a = engine.adapter
    if kind == "control":
        return dict(SCHEMAS["Control"])
    what = f"one {a.family} event" if kind == "events" else f"one {a.feedback_name}"
    props: dict[str, Any] = {
        "id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LEN,
               "description": "the event id (idempotency: a retried id gets its first output)"
               if kind == "events" else "the id of the event it is for"},
        "time": {"type": "number", "description": "event time, seconds"}}
    required = ["id"] if kind == "feedback" or a.ids_required else []
    return {"type": "object", "description": f"{what}: the fields of the {a.family} family "
            "(see the README's Records) and these", "properties": props, "required": required}


def _request(engine: Core, verb: str, v: Verb) -> dict[str, Any]:
    """The request body: one item, or ``{items: [...]}`` (events and feedback)."""
    item = _item(engine, v.kind)
    if v.kind == "control":
        schema = item
    else:
        single = {**item, "not": {"required": [v.items]}}
        batch = {"type": "object", "required": [v.items], "description": "a batch, answered per item in order",
                 "properties": {v.items: {"type": "array", "minItems": 1, "items": item}}}
        schema = {"oneOf": [single, batch]}
    media: dict[str, Any] = {"schema": schema}
    ex = _examples(engine, verb, v)
    if ex:
        media["examples"] = ex
    return {"required": True, "content": {JSON: media}}


def _examples(engine: Core, verb: str, v: Verb) -> dict[str, Any]:
    if v.kind == "control":
        return {"control": {"summary": "serve the learned policy", "value": {"force_default": False}}}
    one = getattr(engine.adapter, "examples", {}).get(verb)
    if one is None:
        return {}
    return {"single": {"summary": "one item", "value": one},
            "batch": {"summary": "a batch of one (a retried id: the same answer)", "value": {v.items: [one]}}}


def _answer(engine: Core, v: Verb) -> dict[str, Any]:
    """The 200 body of a verb."""
    if v.kind == "control":
        return {"$ref": "#/components/schemas/Control"}
    if v.kind == "feedback":
        one: dict[str, Any] = {"$ref": "#/components/schemas/FeedbackResult"}
        each: dict[str, Any] = one
    else:
        one = {"type": "object", "description": f"the {engine.family} output (see the README's Records)",
               "properties": {"id": {"type": ["string", "null"]}}}
        each = {"anyOf": [one, {"$ref": "#/components/schemas/ItemError"}]}
    batch = {"type": "object", "required": [v.answer], "properties": {v.answer: {"type": "array", "items": each}}}
    return {"anyOf": [one, batch]}


def _verb(name: str, engine: Core, verb: str, v: Verb, auth: bool) -> dict[str, Any]:
    summary = {"events": f"{verb}: the pipeline's {engine.family} events, one or a batch",
               "feedback": f"{verb}: feedback ({engine.adapter.feedback_name}) for decided events, one or a batch",
               "control": f"{verb}: force the family's default answers, or lift it"}[v.kind]
    return {"operationId": f"post_{name}_{verb}", "summary": summary, "tags": [name],
            "requestBody": _request(engine, verb, v),
            "responses": {"200": {"description": "the answer (a batch: per item, in order)",
                                  "content": {JSON: {"schema": _answer(engine, v)}}}, **_errors(v.kind, auth)}}


def _view(name: str, engine: Core, view: str, auth: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": view, "content": {JSON: {"schema": {"type": "object"}}}},
                                 **_errors("view", auth)}
    op: dict[str, Any] = {"operationId": f"get_{name}_{view}", "tags": [name], "responses": responses,
                          "summary": f"{view}: the {engine.family} state users see"}
    key_by = engine.pc.get("key_by")
    if key_by:  # a keyed pipeline: the view of one key
        op["parameters"] = [{"name": "key", "in": "query", "required": True, "schema": {"type": "string"},
                             "description": f"the value of {key_by!r} whose state to show"}]
        responses["400"] = {"$ref": "#/components/responses/BadRequest"}
        responses["404"] = {"$ref": "#/components/responses/NotFound"}
    return op


def _fixed(path: str, handler: str, needs: bool, auth: bool) -> dict[str, Any]:
    summary, media, bodies = FIXED_DOCS.get(path, (handler.strip("_"), JSON, {"200": {}}))
    responses: dict[str, Any] = {s: {"description": summary if s == "200" else "not ready",
                                     "content": {media: {"schema": schema}}} for s, schema in bodies.items()}
    op: dict[str, Any] = {"operationId": f"get{handler}", "summary": summary, "responses": responses}
    if needs and auth:
        responses["401"] = {"$ref": "#/components/responses/Unauthorized"}
    elif auth:
        op["security"] = []
    return op


def document(app: Sidecar) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s routes (see the module docstring)."""
    from .sidecar import FIXED

    auth = bool(app.token)
    paths: dict[str, Any] = {}
    for path, (handler, needs) in FIXED.items():
        paths[path] = {"description": "Other methods: 405 (Allow: GET).", "get": _fixed(path, handler, needs, auth)}
    tags = []
    for name, engine in app.engines.items():
        a = engine.adapter
        tags.append({"name": name, "description": f"pipeline {name!r}: learner {engine.pc['learner']} "
                     f"({engine.family} family)"})
        for verb, v in a.verbs.items():
            paths[f"/v1/pipelines/{name}/{verb}"] = {"description": "Other methods: 405 (Allow: POST).",
                                                      "post": _verb(name, engine, verb, v, auth)}
        for view in a.views:
            paths[f"/v1/pipelines/{name}/{view}"] = {"description": "Other methods: 405 (Allow: GET).",
                                                      "get": _view(name, engine, view, auth)}
    responses = {}
    for status, (component, text) in ERRORS.items():
        if status == "413":
            text += f": {app.max_body} bytes"
        responses[component] = {"description": text, "content": {JSON: {"schema": ERR}}}
    responses["MethodNotAllowed"]["headers"] = {"Allow": {"schema": {"type": "string"}}}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "eddy sidecar", "version": _version(),
                 "description": "The HTTP sidecar of the eddy daemon: its pipelines' verbs and views, as this "
                 "daemon is configured. A batch is answered per item, in order, and is 200 once its envelope is "
                 "well formed, even when every item is refused."},
        "tags": tags, "paths": paths,
        "components": {"schemas": SCHEMAS, "responses": responses},
    }
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
