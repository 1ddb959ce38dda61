"""``GET /v1/openapi.json`` against the live app (uvicorn on loopback), one pipeline per family.

The document is checked against the real routes both ways: every documented operation answers
(never 404) with a status it documents and a body its schema admits, and every route the router
dispatches on (its tables: the fixed routes, each pipeline's adapter's verbs and views) is
documented, while undocumented paths 404. Request examples (the document's, and one per verb
here) validate against the documented request schemas and succeed on the live app.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import jsonschema
import pytest

from daemon import config
from daemon.engine import Engine
from daemon.metrics import DaemonMetrics
from daemon.sidecar import FIXED, Sidecar, serve_in_thread

from .conftest import pipeline_cfg
from .test_groupwise_daemon import gw_cfg
from .test_paging_daemon import paging_cfg
from .test_sor_daemon import sor_cfg
from .test_submodular_daemon import cfg as sum_cfg

TOKEN = "t0k"
# A request item per verb that the live pipeline accepts (feedback after its event: in this order).
ITEMS: dict[str, Any] = {
    "/v1/pipelines/pay/decide": {"id": "x1", "time": 1.0, "features": {"amount": 1.0}, "actions": ["a", "b"]},
    "/v1/pipelines/pay/feedback": {"id": "x1", "reward": 1.0},
    "/v1/pipelines/edge/access": {"key": "img/1.png", "id": "r1"},
    "/v1/pipelines/credit/predict": {"id": "g1", "time": 0.0, "features": {"age": 22, "bias": 1}},
    "/v1/pipelines/credit/label": {"id": "g1", "label": 1.0},
    "/v1/pipelines/sum/items": {"id": "s1", "features": [1, 0, 0, 0]},
    "/v1/pipelines/heat/advise": {"id": "q1", "context": 0.3},
    "/v1/pipelines/heat/report": {"id": "q1", "iterations": 10},
}


@pytest.fixture(scope="module")
def live():
    metrics = DaemonMetrics()
    pcs = [config.load_dict({"pipelines": [pipeline_cfg("pay")]}, env=False).pipelines[0],
           paging_cfg("edge", learner="paging-lru", params={"capacity": 8}), gw_cfg("credit"), sum_cfg("sum"),
           sor_cfg("heat")]
    app = Sidecar({pc["name"]: Engine(pc, metrics) for pc in pcs}, metrics, token=TOKEN)
    server, th, port = serve_in_thread(app, "127.0.0.1", 0)
    app.ready = True
    try:
        st, doc, _ = request(port, "GET", "/v1/openapi.json")
        assert st == 200
        yield app, port, doc
    finally:
        server.should_exit = True
        th.join(5)


def request(port: int, method: str, path: str, body: Any = None, token: str = TOKEN,
            raw: bytes | None = None) -> tuple[int, Any, http.client.HTTPResponse]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    c.request(method, path, body=data, headers=headers)
    r = c.getresponse()
    payload = r.read()
    c.close()
    text = payload.decode()
    return r.status, (json.loads(text) if r.getheader("content-type", "").startswith("application/json") else text), r


def resolve(doc: dict[str, Any], node: Any) -> Any:
    """``node`` with every local ``$ref`` replaced by what it names."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolve(doc, target)
        return {k: resolve(doc, v) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(doc, x) for x in node]
    return node


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in doc["paths"].items()
            for method, op in item.items() if method in ("get", "post", "put", "delete", "patch")]


def check_answer(doc: dict[str, Any], op: dict[str, Any], status: int, body: Any) -> None:
    """The status is documented for the operation and the body is admitted by its schema."""
    assert str(status) in op["responses"], (op["operationId"], status, body)
    response = resolve(doc, op["responses"][str(status)])
    (media,) = response["content"].values()
    jsonschema.validate(body, media["schema"], cls=jsonschema.Draft202012Validator)


def test_the_document_is_valid_openapi_and_needs_the_token(live):
    _, port, doc = live
    import openapi_spec_validator  # (dev extras)

    openapi_spec_validator.validate(doc)
    assert doc["openapi"] == "3.1.0" and doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    st, err, _ = request(port, "GET", "/v1/openapi.json", token="")
    assert (st, err["error"]) == (401, "unauthorized")
    assert {t["name"] for t in doc["tags"]} == {"pay", "edge", "credit", "sum", "heat"}


def test_every_route_the_router_serves_is_documented_and_nothing_else(live):
    app, port, doc = live
    served = {(path, "get") for path in FIXED}
    for name, engine in app.engines.items():
        served |= {(f"/v1/pipelines/{name}/{verb}", "post") for verb in engine.adapter.verbs}
        served |= {(f"/v1/pipelines/{name}/{view}", "get") for view in engine.adapter.views}
    assert {(path, method) for path, method, _ in operations(doc)} == served
    assert ("/v1/pipelines/sum/solution", "get") in served and ("/v1/pipelines/heat/control", "post") in served
    undocumented = ["/", "/openapi.json", "/v1/openapi.yaml", "/v1/pipelines/", "/v1/pipelines/pay",
                    "/v1/pipelines/pay/access",  # a verb of another family
                    "/v1/pipelines/pay/solution",  # a view of another family
                    "/v1/pipelines/nope/decide", "/v1/pipelines/pay/nothing", "/v1/pipelines/pay/decide/extra",
                    "/v2/pipelines/pay/decide"]
    for path in undocumented:
        assert path not in doc["paths"]
        for method in ("GET", "POST"):
            st, err, _ = request(port, method, path, {})
            assert st == 404 and err["error"] in ("not_found", "unknown_pipeline"), (method, path, st, err)


def test_every_documented_operation_answers_as_documented(live):
    _, port, doc = live
    for path, method, op in operations(doc):
        # An empty body for a verb (malformed JSON: a documented 400), nothing for a GET.
        st, body, _ = request(port, method.upper(), path, raw=b"" if method == "post" else None)
        assert st != 404, (method, path, body)
        check_answer(doc, op, st, body)
        if path == "/metrics":
            assert "# TYPE eddy_decisions_total counter" in body
        # Without the token: 401 where the operation says so, else served.
        st, body, _ = request(port, method.upper(), path, raw=b"" if method == "post" else None, token="")
        if op.get("security") == []:
            assert st != 401 and str(st) in op["responses"], (path, st)
        else:
            assert "401" in op["responses"] and st == 401, (path, st)
            check_answer(doc, op, st, body)
        # Another method: 405 with Allow naming the documented one.
        for other in ("GET", "POST", "PUT", "DELETE"):
            if other.lower() in doc["paths"][path]:
                continue
            st, body, r = request(port, other, path, {})
            assert (st, body["error"], r.getheader("allow")) == (405, "method_not_allowed", method.upper()), path
            jsonschema.validate(body, resolve(doc, doc["components"]["responses"]["MethodNotAllowed"])["content"][
                "application/json"]["schema"])


def test_request_examples_validate_and_succeed_on_the_live_app(live):
    _, port, doc = live
    sent = 0
    posts = [(path, op) for path, method, op in operations(doc) if method == "post"]
    kinds = {"events": 0, "feedback": 1, "control": 2}

    def kind(path: str) -> str:
        name, verb = path.split("/")[3:5]
        return live[0].engines[name].adapter.verbs[verb].kind

    for path, op in sorted(posts, key=lambda p: kinds[kind(p[0])]):  # events before their feedback
        media = op["requestBody"]["content"]["application/json"]
        schema = resolve(doc, media["schema"])
        examples = [e["value"] for e in media.get("examples", {}).values()]
        if path in ITEMS:
            name, verb = path.split("/")[3:5]
            items_key = live[0].engines[name].adapter.verbs[verb].items
            examples += [ITEMS[path], {items_key: [ITEMS[path]]}]
        assert examples, f"no example for {path}"
        for value in examples:
            jsonschema.validate(value, schema, cls=jsonschema.Draft202012Validator)
            st, body, _ = request(port, "POST", path, value)
            assert st == 200, (path, value, body)
            check_answer(doc, op, st, body)
            sent += 1
        if kind(path) == "events":  # the schema refuses what the app refuses: an id that is no string
            bad = {**ITEMS[path], "id": 5}
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(bad, schema, cls=jsonschema.Draft202012Validator)
            st, body, _ = request(port, "POST", path, bad)
            assert (st, body["error"]) == (400, "bad_type")
            check_answer(doc, op, st, body)
    assert sent >= 2 * len(ITEMS) + 2  # every verb, single and batch, and both control examples
