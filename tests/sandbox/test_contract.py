"""Contract tests: every response shape the sandbox can produce, fetched over real HTTP, must
match the OpenAPI document shipped in the package (smtoolkit/sandbox/openapi.json). The
document itself is checked too: it is OpenAPI 3.1, every schema passes the OpenAPI 3.1 dialect
meta-schema, every $ref resolves, and every response declares the rate-limit headers.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
from jsonschema import Draft202012Validator
from openapi_schema_validator import OAS31Validator, oas31_format_checker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from smtoolkit.sandbox import API_PREFIX, Faults, Sandbox
from tests.helpers import Api, known, own

DOC_TEXT = (resources.files("smtoolkit.sandbox") / "openapi.json").read_text(encoding="utf-8")
DOC: dict[str, Any] = json.loads(DOC_TEXT)
DOC_URI = "urn:smtoolkit:sandbox:openapi"
REGISTRY = Registry().with_resource(DOC_URI, Resource.from_contents(DOC, default_specification=DRAFT202012))
TIMEOUT = 5.0

BATCH = "/query/batch/{batch_id}"
STATUS = "/query/batch/{batch_id}/status"
CREATE = "/query/batch"
CREATE_BODY = "/paths/~1query~1batch/post/requestBody/content/application~1json/schema"


# -- the checker ---------------------------------------------------------------------------------
def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _pointer(*parts: str) -> str:
    return "".join("/" + _escape(p) for p in parts)


def _lookup(ptr: str) -> Any:
    node: Any = DOC
    for raw in ptr.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _deref(obj: Any, ptr: str) -> tuple[dict[str, Any], str]:
    """Follow local $refs (response and header objects are often references)."""
    while isinstance(obj, dict) and "$ref" in obj:
        ref = obj["$ref"]
        assert ref.startswith("#/"), f"non-local $ref {ref!r}"
        ptr = ref[1:]
        obj = _lookup(ptr)
    return obj, ptr


def validate_at(instance: Any, schema_ptr: str) -> None:
    """Validate an instance against the schema at a JSON pointer into the document."""
    validator = OAS31Validator({"$ref": f"{DOC_URI}#{schema_ptr}"}, registry=REGISTRY,
                               format_checker=oas31_format_checker)
    validator.validate(instance)


def _header_value(value: str) -> Any:
    return int(value) if re.fullmatch(r"-?\d+", value) else value


def check_response_object(resp: requests.Response, response_ptr: str) -> Any:
    """Check status-independent parts: media type, body schema, declared headers. Returns the body."""
    robj, rptr = _deref(_lookup(response_ptr), response_ptr)
    media = resp.headers.get("Content-Type", "").split(";")[0].strip()
    content = robj.get("content", {})
    assert media in content, f"{resp.status_code} with undeclared media type {media!r} (declared {sorted(content)})"
    body: Any = resp.text
    if media.endswith("json"):
        body = resp.json()
    validate_at(body, rptr + _pointer("content", media, "schema"))
    for name, hobj in robj.get("headers", {}).items():
        hobj, hptr = _deref(hobj, rptr + _pointer("headers", name))
        value = resp.headers.get(name)
        if hobj.get("required"):
            assert value is not None, f"{resp.status_code} lacks required header {name}"
        if value is not None:
            validate_at(_header_value(value), hptr + "/schema")
    return body


def check(resp: requests.Response, path: str, method: str) -> Any:
    """Check a response against the operation (path template, method) that produced it."""
    op_ptr = _pointer("paths", path, method.lower())
    responses = _lookup(op_ptr)["responses"]
    status = str(resp.status_code)
    key = status if status in responses else status[0] + "XX"
    assert key in responses, f"{method} {path}: status {status} is not declared (declared {sorted(responses)})"
    return check_response_object(resp, op_ptr + _pointer("responses", key))


def check_component(resp: requests.Response, name: str) -> Any:
    """Check a response that belongs to no operation (405, unknown route) against a component."""
    return check_response_object(resp, _pointer("components", "responses", name))



# -- fixtures ------------------------------------------------------------------------------------



# -- the document --------------------------------------------------------------------------------
def _walk(node: Any, ptr: str = "") -> Iterator[tuple[str, Any]]:
    yield ptr, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, ptr + "/" + _escape(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{ptr}/{i}")


def _schema_locations() -> list[str]:
    locs = [_pointer("components", "schemas", n) for n in DOC["components"]["schemas"]]
    locs += [p for p, _ in _walk(DOC) if p.endswith("/schema") and "/components/schemas/" not in p]
    return locs


def test_document_is_openapi_31_shipped_as_package_data() -> None:
    assert re.fullmatch(r"3\.1\.\d+", DOC["openapi"])
    assert DOC["info"]["title"] and DOC["info"]["version"]
    # The file sits in the package and pyproject ships it.
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text("utf-8"))
    assert "sandbox/openapi.json" in pyproject["tool"]["setuptools"]["package-data"]["smtoolkit"]
    # Server URLs end in the prefix the sandbox serves.
    assert all(s["url"].endswith(API_PREFIX) for s in DOC["servers"])
    assert DOC["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "Authorization: Bearer <api key>"}
    assert DOC["security"] == [{"bearerAuth": []}]


def test_document_describes_exactly_the_four_operations() -> None:
    ops = {(m.upper(), p) for p, item in DOC["paths"].items() for m in item if m != "parameters"}
    assert ops == {("POST", CREATE), ("GET", BATCH), ("DELETE", BATCH), ("GET", STATUS)}
    codes = {(m.upper(), p): set(item[m]["responses"]) for p, item in DOC["paths"].items()
             for m in item if m != "parameters"}
    assert codes[("POST", CREATE)] == {"201", "400", "401", "429", "5XX"}
    assert codes[("GET", BATCH)] == {"200", "404", "401", "429", "5XX"}
    assert codes[("DELETE", BATCH)] == {"200", "404", "409", "401", "429", "5XX"}
    assert codes[("GET", STATUS)] == {"200", "400", "404", "401", "429", "5XX"}
    params = {p["name"]: p for p in DOC["paths"][STATUS]["get"]["parameters"]}
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
    assert params["offset"]["schema"]["minimum"] == 0


def test_every_schema_passes_the_openapi_31_dialect_meta_schema() -> None:
    locations = _schema_locations()
    assert len(locations) > 20
    for ptr in locations:
        schema = _lookup(ptr)
        OAS31Validator.check_schema(schema)  # the OpenAPI 3.1 dialect of JSON Schema 2020-12
        Draft202012Validator.check_schema(schema)
    # The meta-schema check is not a rubber stamp.
    with pytest.raises(jsonschema.SchemaError):
        OAS31Validator.check_schema({"type": "integer", "minimum": "one"})


def test_every_ref_resolves() -> None:
    resolver = REGISTRY.resolver(base_uri=DOC_URI)
    refs = [(p, n["$ref"]) for p, n in _walk(DOC) if isinstance(n, dict) and "$ref" in n]
    assert len(refs) > 30
    for where, ref in refs:
        assert ref.startswith("#/components/"), where
        assert resolver.lookup(ref).contents is not None, f"{where}: {ref} does not resolve"
    unused = {f"#/components/schemas/{n}" for n in DOC["components"]["schemas"]} - {r for _, r in refs}
    assert unused == set(), f"schemas nothing refers to: {unused}"


def test_every_response_declares_the_rate_headers() -> None:
    seen = 0
    for ptr, node in _walk(DOC):
        if not re.search(r"/responses/[^/]+$", ptr) or not isinstance(node, dict):
            continue
        robj, _ = _deref(node, ptr)
        hdrs = {n: _deref(h, "")[0] for n, h in robj["headers"].items()}
        for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "Access-Control-Allow-Origin"):
            assert hdrs[name]["required"] is True, f"{ptr} {name}"
        seen += 1
    assert seen >= 20
    comp = DOC["components"]["responses"]
    assert comp["Unauthorized"]["headers"]["WWW-Authenticate"] == {"$ref": "#/components/headers/WWW-Authenticate"}
    assert DOC["components"]["headers"]["WWW-Authenticate"]["required"] is True
    for name in ("TooManyRequests", "ServerError"):
        assert "Retry-After" in comp[name]["headers"]
    assert set(comp["ServerError"]["content"]) == {"application/json", "application/problem+json", "text/html"}
    for name, r in comp.items():  # any error may come as the envelope or as problem details
        if name not in ("QueryBatch", "Created", "BatchStatus"):
            assert {"application/json", "application/problem+json"} <= set(r["content"]), name


def test_full_openapi_validation_when_available() -> None:
    """openapi-spec-validator is not a test dependency; when it happens to be importable, the
    whole document must pass it. The structural checks above run regardless."""
    try:
        from openapi_spec_validator import validate
    except ImportError:
        # Fall back to the essentials the full validator would check first.
        assert set(DOC) >= {"openapi", "info", "paths", "components"}
        for item in DOC["paths"].values():
            for method, op in item.items():
                if method != "parameters":
                    assert op["operationId"] and op["responses"]
        return
    validate(DOC)


def test_checker_catches_drift(api: Api, sandbox: Sandbox) -> None:
    """The contract checks can fail: mutations of a real answer are rejected."""
    bid = sandbox.create_batches(1)[0]
    good = check(api.get(bid), BATCH, "GET")
    where = "/components/schemas/QueryBatchResponse"
    validate_at(good, where)
    mutations = [
        lambda d: d["data"].update(surprise=1),                       # undeclared field
        lambda d: d["data"].update(start_time=None),                  # RUNNING without start_time
        lambda d: d["data"].update(schedule_time="yesterday"),        # not a date-time
        lambda d: d["data"].update(status_code="CANCELLED"),          # not an enum value
        lambda d: d["data"].update(end_time="2026-01-01T00:00:00Z"),  # RUNNING with end_time
        lambda d: d["meta"].pop("request_id"),
        lambda d: d["meta"].update(request_id="short"),
        lambda d: d["data"].pop("cancel_time"),                       # nullable, but required
    ]
    for mutate in mutations:
        bad = copy.deepcopy(good)
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            validate_at(bad, where)
    with pytest.raises(jsonschema.ValidationError):
        validate_at({"meta": {"request_id": "req_0123456789"}, "error": {"code": "not_found", "message": "x"}},
                    "/components/schemas/ErrorEnvelope")
    # An undeclared status for an operation is a contract failure too.
    fake = requests.Response()
    fake.status_code = 418
    with pytest.raises(AssertionError, match="not declared"):
        check(fake, BATCH, "GET")


# -- 2xx -----------------------------------------------------------------------------------------
def test_get_200_in_every_batch_state() -> None:
    with own(seed=2, stop_delay=30.0) as (sb, api):
        queued, running, finished, pending = sb.create_batches(1, "QUEUED") + sb.create_batches(3)
        sb.set_status(finished, "STOPPED")
        assert api.delete(pending).status_code == 200  # cancel accepted, stop still pending
        seen = {}
        for bid in (queued, running, finished, pending):
            body = check(api.get(bid), BATCH, "GET")
            seen[bid] = body["data"]
        # The document's nullables are really exercised.
        assert seen[queued]["status_code"] == "QUEUED" and seen[queued]["start_time"] is None
        assert seen[running]["end_time"] is None and seen[running]["cancel_time"] is None
        assert seen[finished]["status_code"] == "STOPPED" and seen[finished]["cancel_time"] is None
        assert seen[pending]["status_code"] == "RUNNING" and seen[pending]["cancel_time"] is not None


def test_create_201(api: Api) -> None:
    minimal = check(api.create({"queries": [{"ds_id": "GA4"}]}), CREATE, "POST")
    full = check(api.create({
        "description": "contract", "timeout_minutes": 60, "query_concurrency": 50,
        "split_accounts_policy": "all", "split_dates_policy": "day", "query_output_format": "csv",
        "add_exclude_account_errors": True, "add_clean_data_types": True,
        "queries": [{"ds_id": "GA4", "ds_accounts": ["a1", "a2"]}, {"ds_id": "FB", "extra": 1}],
    }), CREATE, "POST")
    assert minimal["data"]["status_code"] == full["data"]["status_code"] == "QUEUED"
    for body in ({"queries": [{"ds_id": "GA4"}]}, {"queries": [{"ds_id": "x"}], "query_concurrency": 1}):
        validate_at(body, CREATE_BODY)  # what the sandbox accepts, the document accepts
    assert full["data"]["query_amount"] == 2 and full["data"]["query_output_format"] == "csv"


def test_delete_200_running_and_already_stopped(api: Api, sandbox: Sandbox) -> None:
    running, done = sandbox.create_batches(2)
    sandbox.set_status(done, "STOPPED")
    cancelled = check(api.delete(running), BATCH, "DELETE")
    assert cancelled["data"]["status_code"] == "STOPPED" and cancelled["data"]["cancel_time"]
    again = check(api.delete(running), BATCH, "DELETE")  # already_stopped="ok": 200, unchanged
    assert again["data"] == cancelled["data"]
    check(api.delete(done), BATCH, "DELETE")


def test_status_200_with_every_query_state() -> None:
    with own(seed=4, failure_rate=0.5) as (sb, api):
        bid = sb.create_batches(1, "QUEUED", queries=12)[0]
        states: set[str] = set()
        bodies = [check(api.status(bid), STATUS, "GET")]  # all QUEUED
        sb.advance([bid], 2)  # 5 finished, 5 running, 2 queued (concurrency 5)
        bodies.append(check(api.status(bid, offset=0, limit=5), STATUS, "GET"))
        bodies.append(check(api.status(bid, offset=5, limit=1000), STATUS, "GET"))
        assert api.delete(bid).status_code == 200  # running ones: FAILURE; queued ones never start
        bodies.append(check(api.status(bid), STATUS, "GET"))
        bodies.append(check(api.status(bid, offset=99), STATUS, "GET"))  # past the end: empty page
        for body in bodies:
            states |= {q["status_code"] for q in body["data"]}
        assert states == {"QUEUED", "RUNNING", "SUCCESS", "FAILURE"}
        assert bodies[-1]["data"] == [] and bodies[-1]["meta"]["paginate"]["total"] == 12
        never_started = [q for q in bodies[-2]["data"] if q["query_start_time"] is None]
        assert never_started and all(q["status_code"] == "QUEUED" and q["query_end_time"] is None
                                     for q in never_started)


# -- 4xx -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b'{"queries": []}', b'{"queries": [{"ds_id": ""}]}',
                                  b'{"queries": [{"ds_id": "GA4"}], "timeout_minutes": 61}', b"\xff\xfe"])
def test_create_400_is_problem_json(api: Api, data: bytes) -> None:
    try:
        sent = json.loads(data)
    except ValueError:
        pass
    else:  # what the sandbox rejects, the document's request schema rejects too
        with pytest.raises(jsonschema.ValidationError):
            validate_at(sent, CREATE_BODY)
    resp = api.create(data=data)
    assert resp.status_code == 400
    assert resp.headers["Content-Type"] == "application/problem+json"
    body = check(resp, CREATE, "POST")
    assert body["status"] == 400 and body["instance"] == API_PREFIX + CREATE


@pytest.mark.parametrize("params", [{"offset": -1}, {"limit": 0}, {"limit": 1001}, {"limit": "ten"}, {"offset": "1.5"}])
def test_status_400_is_the_envelope(api: Api, sandbox: Sandbox, params: dict[str, Any]) -> None:
    bid = sandbox.create_batches(1)[0]
    (name, value), = params.items()
    params_ptr = _pointer("paths", STATUS, "get", "parameters")
    index = [p["name"] for p in _lookup(params_ptr)].index(name)
    with pytest.raises(jsonschema.ValidationError):  # the document's parameter schema agrees
        validate_at(_header_value(str(value)), f"{params_ptr}/{index}/schema")
    resp = api.status(bid, **params)
    assert resp.status_code == 400 and resp.headers["Content-Type"] == "application/json"
    assert check(resp, STATUS, "GET")["error"]["code"] == "BAD_REQUEST"


@pytest.mark.parametrize("key", ["", "wrong-key"])
def test_401(sandbox: Sandbox, key: str) -> None:
    bid = sandbox.create_batches(1)[0]
    api = Api(sandbox, key)
    for resp, path, method in [(api.get(bid), BATCH, "GET"), (api.delete(bid), BATCH, "DELETE"),
                               (api.status(bid), STATUS, "GET"), (api.create({"queries": []}), CREATE, "POST")]:
        assert resp.status_code == 401
        assert check(resp, path, method)["error"]["code"] == "UNAUTHORIZED"
    api.s.close()


def test_404_unknown_batch_and_route(api: Api) -> None:
    for resp, path, method in [(api.get("qrb_000000000000"), BATCH, "GET"),
                               (api.delete("qrb_000000000000"), BATCH, "DELETE"),
                               (api.status("qrb_000000000000"), STATUS, "GET")]:
        assert resp.status_code == 404
        assert check(resp, path, method)["error"]["code"] == "NOT_FOUND"
    resp = api.s.get(api.sb.base_url + "/query/batches", timeout=TIMEOUT)
    assert resp.status_code == 404
    assert check_component(resp, "NotFound")["error"]["message"] == "Route not found"


def test_405_method_not_allowed(api: Api, sandbox: Sandbox) -> None:
    bid = sandbox.create_batches(1)[0]
    base = sandbox.base_url
    for method, url, allow in [("PUT", f"{base}/query/batch/{bid}", "GET, DELETE"),
                               ("GET", f"{base}/query/batch", "POST"),
                               ("DELETE", f"{base}/query/batch/{bid}/status", "GET")]:
        resp = api.s.request(method, url, timeout=TIMEOUT)
        assert resp.status_code == 405 and resp.headers["Allow"] == allow
        assert check_component(resp, "MethodNotAllowed")["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert known(sandbox, bid)["status_code"] == "RUNNING"


def test_409_conflict_when_configured() -> None:
    with own(already_stopped="conflict") as (sb, api):
        bid = sb.create_batches(1)[0]
        assert check(api.delete(bid), BATCH, "DELETE")["data"]["status_code"] == "STOPPED"
        resp = api.delete(bid)
        assert resp.status_code == 409
        assert check(resp, BATCH, "DELETE")["error"]["code"] == "CONFLICT_ERROR"


def test_429_per_second() -> None:
    with own(per_second=2) as (sb, api):
        bid = sb.create_batches(1)[0]
        assert [api.get(bid).status_code for _ in range(2)] == [200, 200]
        resp = api.delete(bid)
        assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
        assert check(resp, BATCH, "DELETE")["error"]["code"] == "TOO_MANY_REQUESTS"


def test_429_hourly() -> None:
    with own(hourly_limit=2) as (sb, api):
        bid = sb.create_batches(1)[0]
        assert [api.get(bid).status_code for _ in range(2)] == [200, 200]
        for resp, path, method in [(api.status(bid), STATUS, "GET"), (api.create({"queries": []}), CREATE, "POST")]:
            assert resp.status_code == 429 and resp.headers["X-RateLimit-Remaining"] == "0"
            assert check(resp, path, method)["error"]["code"] == "TOO_MANY_REQUESTS"


@pytest.mark.parametrize("retry_after", [True, False])
def test_429_injected_throttle(retry_after: bool) -> None:
    with own(faults=Faults(throttle_rate=1.0, throttle_retry_after=retry_after)) as (sb, api):
        bid = sb.create_batches(1)[0]
        resp = api.get(bid)
        assert resp.status_code == 429 and ("Retry-After" in resp.headers) is retry_after
        check(resp, BATCH, "GET")


def test_5xx_envelope_on_every_operation() -> None:
    with own(faults=Faults(error_rate=1.0), per_second=1000) as (sb, api):
        bid = sb.create_batches(1)[0]
        seen: set[int] = set()
        for _ in range(8):
            for resp, path, method in [(api.get(bid), BATCH, "GET"), (api.delete(bid), BATCH, "DELETE"),
                                       (api.status(bid), STATUS, "GET"),
                                       (api.create({"queries": [{"ds_id": "x"}]}), CREATE, "POST")]:
                assert resp.status_code in (500, 502, 503)
                body = check(resp, path, method)
                assert body["error"]["code"] in ("INTERNAL_SERVER_ERROR", "BAD_GATEWAY", "SERVICE_UNAVAILABLE")
                assert ("Retry-After" in resp.headers) is (resp.status_code == 503)
                seen.add(resp.status_code)
        assert seen == {500, 502, 503}


def test_502_html_page() -> None:
    with own(faults=Faults(html_rate=1.0)) as (sb, api):
        bid = sb.create_batches(1)[0]
        resp = api.delete(bid)
        assert resp.status_code == 502 and resp.headers["Content-Type"].startswith("text/html")
        assert "<html>" in check(resp, BATCH, "DELETE")


def test_problem_json_fault_variant() -> None:
    with own(faults=Faults(problem_rate=1.0), hourly_limit=4, already_stopped="conflict") as (sb, api):
        bid = sb.create_batches(1)[0]
        assert api.delete(bid).status_code == 200  # successes are unaffected
        answers = [(api.delete(bid), BATCH, "DELETE"), (api.get("qrb_000000000000"), BATCH, "GET"),
                   (api.status(bid, limit=0), STATUS, "GET"), (api.get(bid), BATCH, "GET"),
                   (Api(sb, "").get(bid), BATCH, "GET")]
        assert [r.status_code for r, _, _ in answers] == [409, 404, 400, 429, 401]
        for resp, path, method in answers:
            assert resp.headers["Content-Type"] == "application/problem+json"
            body = check(resp, path, method)
            assert body["status"] == resp.status_code and body["instance"].startswith(API_PREFIX)
        sb.set_faults(error_rate=1.0)
        sb.set_limits(hourly_limit=100)
        resp = api.get(bid)
        assert resp.status_code >= 500 and resp.headers["Content-Type"] == "application/problem+json"
        check(resp, BATCH, "GET")
