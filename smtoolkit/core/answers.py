"""Reading one HTTP answer from the API, whatever shape it comes in.

Handles the JSON envelope, RFC 9457 problem+json, empty, truncated and non-JSON bodies
(gateway pages) without raising. Pure: takes status, headers and bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from .retry import parse_retry_after


@dataclass(frozen=True, slots=True)
class Answer:
    """What the server said, as far as it could be read."""

    status: int
    data: Mapping[str, Any] | None = None  # the `data` object of a 2xx
    meta: Mapping[str, Any] | None = None  # the whole JSON object of a 2xx (meta may nest)
    readable: bool = True  # False: the body should have been JSON and was not
    error_code: str | None = None
    error_message: str | None = None
    error_description: str | None = None
    request_id: str | None = None
    ratelimit_limit: int | None = None
    ratelimit_remaining: int | None = None
    retry_after: float | None = None  # seconds, already capped


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def _text(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value[:limit]
    try:
        return str(value)[:limit]
    except (RecursionError, ValueError):  # a JSON value nested too deep to print
        return None


def parse_answer(status: int, headers: Mapping[str, str], body: bytes, now: float) -> Answer:
    """Turn an HTTP answer into an `Answer`. `now` (epoch seconds) resolves HTTP-date Retry-After."""
    headers = {k.lower(): v for k, v in headers.items()}
    common: dict[str, Any] = {
        "ratelimit_limit": _int_header(headers, "x-ratelimit-limit"),
        "ratelimit_remaining": _int_header(headers, "x-ratelimit-remaining"),
        "retry_after": parse_retry_after(headers.get("retry-after"), now),
    }
    try:
        payload = json.loads(body.decode("utf-8")) if body.strip() else None
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested too deep
        payload = None
        parsed = False
    else:
        parsed = True
    ok = 200 <= status < 300
    if not isinstance(payload, dict):
        snippet = body[:120].decode("utf-8", "replace").strip() if body.strip() else ""
        message = None
        if not ok:
            kind = "an empty body" if not body.strip() else "a body that is not JSON" if not parsed else "unexpected JSON"
            message = f"HTTP {status} with {kind}" + (f": {snippet!r}" if snippet else "")
        return Answer(status, None, readable=False, error_message=message,
                      error_code=None if ok else f"HTTP_{status}", **common)
    meta = payload.get("meta")
    if not isinstance(meta, dict):
        meta = {}
    request_id = _text(meta.get("request_id"), 64)
    if ok:
        data = payload.get("data")
        return Answer(status, data if isinstance(data, dict) else None, payload,
                      readable=isinstance(data, (dict, list)), request_id=request_id, **common)
    error = payload.get("error")
    if isinstance(error, dict):  # the standard envelope
        return Answer(status, None, None, True, _text(error.get("code"), 100) or f"HTTP_{status}",
                      _text(error.get("message"), 255), _text(error.get("description"), 2048),
                      request_id, **common)
    if "title" in payload or "detail" in payload or "type" in payload:  # RFC 9457 problem details
        code = _problem_code(payload, status)
        return Answer(status, None, None, True, code, _text(payload.get("title"), 255),
                      _text(payload.get("detail"), 2048), request_id or _text(payload.get("instance"), 64),
                      **common)
    return Answer(status, None, None, False, f"HTTP_{status}", f"HTTP {status} with unexpected JSON",
                  request_id=request_id, **common)


_STATUS_CODES = {
    400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
    409: "CONFLICT_ERROR", 422: "UNPROCESSABLE_ENTITY", 429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_SERVER_ERROR", 503: "SERVICE_UNAVAILABLE",
}


def _problem_code(payload: Mapping[str, Any], status: int) -> str:
    # Problem details carry no stable code; use the documented code for the status so that
    # callers branch the same way whichever shape the server chose.
    return _STATUS_CODES.get(status, f"HTTP_{status}")


def progress_counts(payload: Mapping[str, Any] | None) -> dict[str, int] | None:
    """Per-query counts from a status answer; `progress` may sit in `meta` or at the top."""
    if not payload:
        return None
    meta = payload.get("meta")
    found = meta.get("progress") if isinstance(meta, dict) else None
    if not isinstance(found, dict):
        found = payload.get("progress")
    if not isinstance(found, dict):
        return None
    counts = {}
    for name in ("queued", "running", "success", "failure"):
        value = found.get(name)
        counts[name] = value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
    return counts
