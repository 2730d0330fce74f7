"""Reading one HTTP answer from the API, whatever shape it comes in.

Handles the JSON envelope, RFC 9457 problem+json, empty, truncated and non-JSON bodies
(gateway pages) without raising. Pure: takes status, headers and bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .retry import parse_retry_after

#: The largest answer read, after decompression. Every documented answer is a few KiB; a
#: larger one is cut off here and reported (`RESPONSE_TOO_LARGE`), so a hostile or broken
#: server cannot exhaust the caller's memory.
MAX_ANSWER_BYTES = 1024 * 1024
#: Rate-limit header values above this are not believed (the API documents at most 10,000).
MAX_RATELIMIT = 10_000_000
RESPONSE_TOO_LARGE = "RESPONSE_TOO_LARGE"


@dataclass(frozen=True, slots=True)
class Answer:
    """What the server said, as far as it could be read."""

    http_status: int
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
    replaced: int = 0  # code points of the body no writer could encode, replaced by U+FFFD

    @property
    def is_2xx(self) -> bool:
        return 200 <= self.http_status < 300

    @property
    def ok(self) -> bool:
        """A 2xx whose body could be read: the server's word on the batch."""
        return self.readable and self.is_2xx


#: Lone UTF-16 surrogates: JSON lets a server send them ("\\ud83d", half an emoji) and so does
#: raw CESU-8, and json.loads passes them on; no UTF-8 writer (journal, audit, CSV, JSON, the
#: terminal) can encode one.
_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def safe_text(text: str) -> tuple[str, int]:
    """`text` with every code point UTF-8 cannot encode replaced by U+FFFD, and how many were."""
    if text.isascii():
        return text, 0
    return _SURROGATE.subn(REPLACEMENT, text)


def _safe_payload(value: Any) -> tuple[Any, int]:
    """A decoded JSON value with every string (keys too) made encodable; the count replaced.
    Iterative, so any nesting depth that json.loads accepted is fine."""
    replaced = 0
    root: list[Any] = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]  # (container, key) whose item to clean
    while stack:
        holder, key = stack.pop()
        item = holder[key]
        if isinstance(item, str):
            holder[key], n = safe_text(item)
            replaced += n
        elif isinstance(item, list):
            stack.extend((item, i) for i in range(len(item)))
        elif isinstance(item, dict):
            for k in list(item):
                if isinstance(k, str):
                    clean, n = safe_text(k)
                    if n:
                        replaced += n
                        item[clean] = item.pop(k)
                        k = clean
                stack.append((item, k))
    return root[0], replaced


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    """A rate-limit header as an int in 0..MAX_RATELIMIT; anything else is ignored (None)."""
    raw = headers.get(name)
    if not isinstance(raw, str):
        return None
    raw = raw.strip()
    # ASCII digits only (int() also takes '٣' and '1_0'), and few enough to mean something.
    if not raw or len(raw) > 12 or not (raw.isascii() and raw.isdigit()):
        return None
    value = int(raw)
    return value if value <= MAX_RATELIMIT else None


def compact_json(value: Any, limit: int) -> str:
    """`value` (as decoded from JSON) as compact JSON text of at most `limit` characters.

    Iterative, so any nesting depth works on every Python version, and it stops as soon as
    `limit` is reached, so a huge value costs no more than `limit`.
    """
    out: list[str] = []
    size = 0
    stack: list[Any] = [value]
    while stack and size <= limit:
        item = stack.pop()
        if isinstance(item, _Token):
            piece = item.text
        elif isinstance(item, dict):
            piece = "{"
            pending: list[Any] = [_Token("}")]
            for i, (k, v) in enumerate(reversed(list(item.items()))):
                pending.append(v)
                pending.append(_Token(json.dumps(str(k), ensure_ascii=False) + ":"))
                if i < len(item) - 1:
                    pending.append(_Token(","))
            stack.extend(pending)
        elif isinstance(item, list):
            piece = "["
            pending = [_Token("]")]
            for i, v in enumerate(reversed(item)):
                pending.append(v)
                if i < len(item) - 1:
                    pending.append(_Token(","))
            stack.extend(pending)
        elif isinstance(item, str):
            piece = json.dumps(item, ensure_ascii=False)
        elif item is None or isinstance(item, (bool, int, float)):
            try:
                piece = json.dumps(item)
            except ValueError:  # an int too long to print (only built in Python, not parsed)
                piece = '"<number>"'
        else:
            piece = json.dumps(str(item), ensure_ascii=False)
        out.append(piece)
        size += len(piece)
    return "".join(out)[:limit]


class _Token:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _text(value: Any, limit: int) -> str | None:
    """Server text as sent: a string cut to `limit`; any other JSON value as compact JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value[:limit]
    return compact_json(value, limit)


def parse_answer(http_status: int, headers: Mapping[str, str], body: bytes, now: float, *,
                 too_large: bool = False) -> Answer:
    """Turn an HTTP answer into an `Answer`. `now` (epoch seconds) resolves HTTP-date Retry-After.

    `too_large`: the body was cut off at MAX_ANSWER_BYTES; only the status and headers count.
    """
    headers = {str(k).lower(): v for k, v in headers.items()}
    retry_after = headers.get("retry-after")
    common: dict[str, Any] = {
        "ratelimit_limit": _int_header(headers, "x-ratelimit-limit"),
        "ratelimit_remaining": _int_header(headers, "x-ratelimit-remaining"),
        "retry_after": parse_retry_after(retry_after[:200], now) if isinstance(retry_after, str) else None,
    }
    ok = 200 <= http_status < 300
    if too_large:
        return Answer(http_status, None, readable=False, error_code=RESPONSE_TOO_LARGE,
                      error_message=f"HTTP {http_status} with an answer larger than {MAX_ANSWER_BYTES / 2**20:g} MiB "
                                    "(not read past that)", **common)
    blank = not body or body.isspace()
    try:
        # json.loads takes the bytes as they are: no decoded copy of the body is made.
        payload = None if blank else json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; too deep: RecursionError
        payload = None
        parsed = False
    else:
        parsed = True
    # Made safe once, here: a lone surrogate can only come from a \\u escape or raw CESU-8 (0xED).
    if parsed and (b"\\u" in body or b"\xed" in body):
        payload, common["replaced"] = _safe_payload(payload)
    if not isinstance(payload, dict):
        snippet = "" if blank else bytes(body[:120]).decode("utf-8", "replace").strip()
        message = None
        if not ok:
            kind = "an empty body" if blank else "a body that is not JSON" if not parsed else "unexpected JSON"
            message = f"HTTP {http_status} with {kind}" + (f": {snippet!r}" if snippet else "")
        return Answer(http_status, None, readable=False, error_message=message,
                      error_code=None if ok else f"HTTP_{http_status}", **common)
    meta = payload.get("meta")
    if not isinstance(meta, dict):
        meta = {}
    request_id = _text(meta.get("request_id"), 64)
    if ok:
        data = payload.get("data")
        return Answer(http_status, data if isinstance(data, dict) else None, payload,
                      readable=isinstance(data, (dict, list)), request_id=request_id, **common)
    error = payload.get("error")
    if isinstance(error, dict):  # the standard envelope
        return Answer(http_status, None, None, True, _text(error.get("code"), 100) or f"HTTP_{http_status}",
                      _text(error.get("message"), 255), _text(error.get("description"), 2048),
                      request_id, **common)
    if "title" in payload or "detail" in payload or "type" in payload:  # RFC 9457 problem details
        code = _problem_code(http_status)
        return Answer(http_status, None, None, True, code, _text(payload.get("title"), 255),
                      _text(payload.get("detail"), 2048), request_id or _text(payload.get("instance"), 64),
                      **common)
    return Answer(http_status, None, None, False, f"HTTP_{http_status}", f"HTTP {http_status} with unexpected JSON",
                  request_id=request_id, **common)


_STATUS_CODES = {
    400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
    409: "CONFLICT_ERROR", 422: "UNPROCESSABLE_ENTITY", 429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_SERVER_ERROR", 503: "SERVICE_UNAVAILABLE",
}


def _problem_code(http_status: int) -> str:
    # Problem details carry no stable code; use the documented code for the status so that
    # callers branch the same way whichever shape the server chose.
    return _STATUS_CODES.get(http_status, f"HTTP_{http_status}")


def query_counts_in(payload: Mapping[str, Any] | None) -> dict[str, int] | None:
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
