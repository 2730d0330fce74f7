"""Routing and behaviour of the sandbox API: a request in, a response (and what to do with
the connection) out. No sockets here; `_http` does the wire."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ._faults import Dice, Faults
from ._limits import Admission, RateLimits
from ._state import BATCH_STATUSES, STOPPED, Store, query_record

API_PREFIX = "/enterprise/v2"
MAX_LOG = 1_000_000
CONTROL_PREFIX = "/_sandbox"
JSON = "application/json"
PROBLEM = "application/problem+json"

_REASONS = {
    200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
}
_ERROR_CODES = {
    400: "BAD_REQUEST", 401: "UNAUTHORIZED", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT_ERROR", 429: "TOO_MANY_REQUESTS", 500: "INTERNAL_SERVER_ERROR",
    502: "BAD_GATEWAY", 503: "SERVICE_UNAVAILABLE",
}
_HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)


def fingerprint(key: str | None) -> str | None:
    """A short, irreversible name for a key, for logs that must never hold the key."""
    if key is None:
        return None
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    # What the wire layer does: None (answer), "reset_before", "reset_after", "truncate".
    action: str | None = None
    delay: float = 0.0

    @property
    def reason(self) -> str:
        return _REASONS.get(self.status, "Unknown")


# The faults a request may meet, in the order their dice are rolled (the order keeps runs reproducible).
_FAULT_RATES = ("reset_before_rate", "throttle_rate", "error_rate", "html_rate", "problem_rate",
                "reset_after_rate", "truncate_rate", "hang_rate")


@dataclass(frozen=True)
class _Draws:
    """One request's random decisions, all drawn up front in a fixed order, with the faults they
    were drawn under (the settings may change while the request is answered)."""

    faults: Faults
    hits: frozenset[str]  # the names in _FAULT_RATES this request meets
    error_status: int  # what an injected upstream failure answers
    delay: float  # seconds: latency plus jitter

    @classmethod
    def roll(cls, faults: Faults, dice: Dice) -> _Draws:
        hits = frozenset(name for name in _FAULT_RATES if dice.roll(getattr(faults, name)))
        return cls(faults, hits, dice.choice((500, 502, 503)), faults.latency + dice.uniform(faults.jitter))

    @property
    def problem(self) -> bool:
        """Errors are answered as problem+json, not the API's envelope."""
        return "problem_rate" in self.hits


@dataclass(frozen=True)
class _Answered:
    """A response and what the request log says about it."""

    response: Response
    fault: str | None = None
    remaining: int | None = None
    admitted_at: float | None = None


class App:
    """The sandbox's behaviour, shared by every connection thread."""

    def __init__(
        self,
        store: Store,
        limits: RateLimits,
        faults: Faults,
        keys: set[str],
        seed: int,
        already_stopped: str,
        base_url: Callable[[], str],
        wall: Callable[[], float] = time.time,
    ) -> None:
        if already_stopped not in ("ok", "conflict"):
            raise ValueError("already_stopped must be 'ok' (200, unchanged) or 'conflict' (409)")
        self.store = store
        self.limits = limits
        self.faults = faults
        self.keys = set(keys)
        self.seed = seed
        self.already_stopped = already_stopped
        self._base_url = base_url
        self._wall = wall
        self._lock = threading.Lock()
        self._seq = 0
        # The newest MAX_LOG requests; a long-running sandbox must not grow without bound.
        self.log: deque[dict[str, Any]] = deque(maxlen=MAX_LOG)

    # -- bookkeeping --------------------------------------------------------------------------
    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.log.append(entry)

    @staticmethod
    def _request_id() -> str:
        return "req_" + secrets.token_hex(10)

    # -- rendering ----------------------------------------------------------------------------
    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        return Response(status, json.dumps(payload).encode(), JSON, dict(headers or {}))

    def _error(
        self, status: int, message: str, description: str = "", code: str | None = None,
        problem: bool = False, path: str = "",
    ) -> Response:
        if problem:
            payload: dict[str, Any] = {
                "type": f"https://api.supermetrics.com/problems/{status}",
                "title": _REASONS.get(status, "Error"),
                "status": status,
                "detail": message,
                "instance": path or "/",
            }
            return Response(status, json.dumps(payload).encode(), PROBLEM)
        payload = {
            "meta": {"request_id": self._request_id()},
            "error": {"code": code or _ERROR_CODES.get(status, "ERROR"), "message": message[:255],
                      "description": description[:2048]},
        }
        return self._json(status, payload)

    # -- the API ------------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Response:
        """Answer one request to the API (everything under API_PREFIX or not control), and log it."""
        seq = self._next_seq()
        started = self._wall()
        path = urlsplit(target).path
        key = _bearer(headers.get("authorization"))
        draws = _Draws.roll(self.faults, Dice(self.seed, seq))
        answered = self._answer(method, path, target, body, key, draws)
        resp = answered.response
        self.record({
            "seq": seq, "time": started, "method": method, "path": path, "target": target,
            "batch_id": _batch_id_of(path), "key": fingerprint(key),
            "status": None if resp.action in ("reset_before", "reset_after") else resp.status,
            "fault": answered.fault, "remaining": answered.remaining,
            # When the limiter admitted it (its monotonic clock), None if never admitted. Under
            # concurrency neither `time` nor `seq` (both taken at arrival) is admission order.
            "admitted_at": answered.admitted_at,
        })
        return resp

    def _answer(self, method: str, path: str, target: str, body: bytes, key: str | None,
                draws: _Draws) -> _Answered:
        """A connection reset, a refusal (key, rate limits), an injected fault or the route's answer."""
        if "reset_before_rate" in draws.hits:
            return _Answered(Response(0, action="reset_before"), "reset_before")
        if key is None or key not in self.keys:
            return _Answered(self._unauthorized(draws.problem, path))
        adm = self.limits.admit(key)
        if not adm.admitted:
            return _Answered(self._over_limit(adm, draws.problem, path), None, adm.remaining, adm.at)
        resp, fault = self._injected(draws, path) or self._routed(method, path, target, body, draws)
        _rate_headers(resp, adm.limit, adm.remaining)
        return _Answered(resp, fault, adm.remaining, adm.at)

    def _unauthorized(self, problem: bool, path: str) -> Response:
        limit, remaining = self.limits.peek(None)
        resp = self._error(401, "Invalid or missing API key", "Send the API key as 'Authorization: Bearer <key>'.",
                           problem=problem, path=path)
        resp.headers["WWW-Authenticate"] = 'Bearer realm="supermetrics", error="invalid_token"'
        _rate_headers(resp, limit, remaining)
        return resp

    def _over_limit(self, adm: Admission, problem: bool, path: str) -> Response:
        what = "Hourly request budget used up" if adm.reason == "hourly" else "Too many requests per second"
        resp = self._error(429, what, f"Retry after {adm.retry_after} s.", problem=problem, path=path)
        resp.headers["Retry-After"] = str(adm.retry_after)
        _rate_headers(resp, adm.limit, adm.remaining)
        return resp

    def _injected(self, draws: _Draws, path: str) -> tuple[Response, str] | None:
        """The injected answer that replaces the route's (429, an HTML 502, a 5xx) and its fault name."""
        if "throttle_rate" in draws.hits:
            resp = self._error(429, "Too many requests (injected)", problem=draws.problem, path=path)
            if draws.faults.throttle_retry_after:
                resp.headers["Retry-After"] = "1"
            return resp, "throttle"
        if "html_rate" in draws.hits:
            return Response(502, _HTML_PAGE, "text/html; charset=utf-8", delay=draws.delay), "html"
        if "error_rate" in draws.hits:
            status = draws.error_status
            resp = self._error(status, "Upstream failure (injected)", problem=draws.problem, path=path)
            if status == 503:
                resp.headers["Retry-After"] = "1"
            resp.delay = draws.delay
            return resp, f"error_{status}"
        return None

    def _routed(self, method: str, path: str, target: str, body: bytes,
                draws: _Draws) -> tuple[Response, str | None]:
        """The route's answer, late (a hang), cut off after it was applied or truncated, as drawn."""
        resp = self._route(method, path, target, body, draws.problem)
        hang = "hang_rate" in draws.hits
        resp.delay = draws.delay + (draws.faults.hang_seconds if hang else 0.0)
        fault = "hang" if hang else None
        if "reset_after_rate" in draws.hits:
            resp.action, fault = "reset_after", "reset_after"
        elif "truncate_rate" in draws.hits:
            resp.action, fault = "truncate", "truncate"
        return resp, fault

    def _route(self, method: str, path: str, target: str, body: bytes, problem: bool) -> Response:
        rel = path[len(API_PREFIX):] if path.startswith(API_PREFIX + "/") else None
        parts = rel.split("/")[1:] if rel is not None else []
        if parts[:2] != ["query", "batch"] or len(parts) > 4 or (len(parts) == 4 and parts[3] != "status"):
            return self._error(404, "Route not found", problem=problem, path=path)
        if len(parts) == 2:
            if method != "POST":
                return self._not_allowed("POST", problem, path)
            return self._create(body, path)
        batch_id = unquote(parts[2])
        if len(parts) == 4:
            if method != "GET":
                return self._not_allowed("GET", problem, path)
            return self._status(batch_id, target, problem, path)
        if method == "GET":
            with self.store.lock:
                b = self.store.get(batch_id)
                if b is None:
                    return self._not_found(batch_id, problem, path)
                b.gets += 1
                return self._json(200, {"meta": {"request_id": self._request_id()},
                                        "data": b.record(self._base_url() + API_PREFIX)})
        if method == "DELETE":
            with self.store.lock:
                b, applied = self.store.cancel(batch_id)
                if b is None:
                    return self._not_found(batch_id, problem, path)
                if not applied and b.status_code == STOPPED and self.already_stopped == "conflict":
                    return self._error(409, "Batch is already stopped",
                                       f"Batch {batch_id} stopped before this request.",
                                       code="CONFLICT_ERROR", problem=problem, path=path)
                return self._json(200, {"meta": {"request_id": self._request_id()},
                                        "data": b.record(self._base_url() + API_PREFIX)})
        return self._not_allowed("GET, DELETE", problem, path)

    def _not_allowed(self, allow: str, problem: bool, path: str) -> Response:
        # RFC 9110 15.5.6: a 405 must list the methods the resource does support.
        resp = self._error(405, "Method not allowed", problem=problem, path=path)
        resp.headers["Allow"] = allow
        return resp

    def _not_found(self, batch_id: str, problem: bool, path: str) -> Response:
        return self._error(404, "Batch not found", f"No batch with ID {batch_id[:100]!r}.",
                           problem=problem, path=path)

    def _status(self, batch_id: str, target: str, problem: bool, path: str) -> Response:
        qs = parse_qs(urlsplit(target).query)
        try:
            offset = int(qs.get("offset", ["0"])[-1])
            limit = int(qs.get("limit", ["100"])[-1])
        except ValueError:
            return self._error(400, "offset and limit must be integers", problem=problem, path=path)
        if offset < 0 or not 1 <= limit <= 1000:
            return self._error(400, "offset must be >= 0 and limit between 1 and 1000",
                               problem=problem, path=path)
        with self.store.lock:
            b = self.store.get(batch_id)
            if b is None:
                return self._not_found(batch_id, problem, path)
            page = b.queries[offset:offset + limit]
            base = self._base_url()
            payload = {
                "meta": {
                    "request_id": self._request_id(),
                    "status_code": b.status_code,
                    "progress": b.progress(),
                    "paginate": {"offset": offset, "limit": limit, "total": len(b.queries)},
                },
                "data": [query_record(q, base) for q in page],
            }
        return self._json(200, payload)

    def _create(self, body: bytes, path: str) -> Response:
        try:
            spec = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self._error(400, "Request body must be a JSON object", problem=True, path=path)
        problems = _validate_create(spec)
        if problems:
            return self._error(400, "; ".join(problems)[:255], problem=True, path=path)
        queries = spec["queries"]
        accounts = [str(a) for q in queries for a in (q.get("ds_accounts") or ["acc_1"])]
        b = self.store.create(
            description=spec.get("description", ""),
            accounts=accounts,
            queries=len(queries),
            concurrency=spec.get("query_concurrency", 5),
            timeout_minutes=spec.get("timeout_minutes", 30),
            split_accounts_policy=spec.get("split_accounts_policy", "none"),
            split_dates_policy=spec.get("split_dates_policy", "none"),
            output_format=spec.get("query_output_format", "json"),
            exclude_account_errors=spec.get("add_exclude_account_errors", False),
            clean_data_types=spec.get("add_clean_data_types", False),
        )
        return self._json(201, {"meta": {"request_id": self._request_id()},
                                "data": b.record(self._base_url() + API_PREFIX)})


def _validate_create(spec: Any) -> list[str]:
    if not isinstance(spec, dict):
        return ["body must be a JSON object"]
    errs = []
    queries = spec.get("queries")
    if not isinstance(queries, list) or not queries:
        errs.append("'queries' must be a non-empty list")
    elif not all(isinstance(q, dict) and isinstance(q.get("ds_id"), str) and q["ds_id"] for q in queries):
        errs.append("every query needs a non-empty string 'ds_id'")
    elif len(queries) > 1000:
        errs.append("at most 1000 queries per batch")
    checks: list[tuple[str, Callable[[Any], bool], str]] = [
        ("description", lambda v: isinstance(v, str) and len(v) <= 255, "a string of at most 255 chars"),
        ("timeout_minutes", lambda v: _int(v) and 5 <= v <= 60, "an integer from 5 to 60"),
        ("query_concurrency", lambda v: _int(v) and 1 <= v <= 50, "an integer from 1 to 50"),
        ("split_accounts_policy", lambda v: v in ("all", "none"), "'all' or 'none'"),
        ("split_dates_policy", lambda v: v in ("day", "none"), "'day' or 'none'"),
        ("query_output_format", lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
        ("add_exclude_account_errors", lambda v: isinstance(v, bool), "a boolean"),
        ("add_clean_data_types", lambda v: isinstance(v, bool), "a boolean"),
    ]
    for name, ok, what in checks:
        if name in spec and not ok(spec[name]):
            errs.append(f"'{name}' must be {what}")
    return errs


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _batch_id_of(path: str) -> str | None:
    prefix = API_PREFIX + "/query/batch/"
    if not path.startswith(prefix):
        return None
    return unquote(path[len(prefix):].split("/")[0]) or None


def _rate_headers(resp: Response, limit: int, remaining: int) -> None:
    resp.headers["X-RateLimit-Limit"] = str(limit)
    resp.headers["X-RateLimit-Remaining"] = str(remaining)
    resp.headers["Access-Control-Allow-Origin"] = "*"


__all__ = ["API_PREFIX", "App", "BATCH_STATUSES", "CONTROL_PREFIX", "Response", "fingerprint"]
