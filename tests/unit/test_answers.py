"""Unit tests for smtoolkit.core.answers: reading any HTTP answer without raising."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtoolkit.core.answers import MAX_RATELIMIT, Answer, compact_json, parse_answer, query_counts_in
from smtoolkit.core.retry import MAX_RETRY_AFTER

NOW = 1_445_412_480.0  # 2015-10-21 07:28:00 UTC


def js(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def envelope_error(code: str = "NOT_FOUND", message: str = "Batch not found", description: str | None = "no such batch",
                   request_id: str = "req_12345678") -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if description is not None:
        err["description"] = description
    return js({"meta": {"request_id": request_id}, "error": err})


BATCH = {"@type": "query_batch", "batch_id": "qrb_1", "status_code": "STOPPED", "cancel_time": "2024-01-01T00:00:00Z"}


# -- the standard envelope ---------------------------------------------------------------------


def test_error_envelope_is_read() -> None:
    a = parse_answer(404, {"Content-Type": "application/json"}, envelope_error(), NOW)
    assert a == Answer(404, None, None, True, "NOT_FOUND", "Batch not found", "no such batch", "req_12345678")


def test_error_envelope_without_description_or_meta() -> None:
    a = parse_answer(409, {}, js({"error": {"code": "CONFLICT_ERROR", "message": "already stopped"}}), NOW)
    assert a.readable and a.error_code == "CONFLICT_ERROR"
    assert a.error_message == "already stopped"
    assert a.error_description is None and a.request_id is None


@pytest.mark.parametrize("code", [None, "", 0])
def test_error_envelope_without_usable_code_falls_back_to_status(code: Any) -> None:
    a = parse_answer(503, {}, js({"error": {"code": code, "message": "m"}}), NOW)
    assert a.error_code == ("HTTP_503" if code in (None, "") else "0")
    assert a.readable


def test_error_envelope_fields_are_truncated_to_documented_sizes() -> None:
    body = envelope_error(code="C" * 500, message="m" * 1000, description="d" * 5000, request_id="r" * 200)
    a = parse_answer(400, {}, body, NOW)
    assert a.error_code == "C" * 100
    assert a.error_message == "m" * 255
    assert a.error_description == "d" * 2048
    assert a.request_id == "r" * 64


def test_error_envelope_non_string_fields_become_text() -> None:
    a = parse_answer(400, {}, js({"meta": {"request_id": 12345678}, "error": {"code": 42, "message": ["x"], "description": {"k": 1}}}), NOW)
    # As the server sent them (compact JSON), never as a Python repr.
    assert a.error_code == "42"
    assert a.error_message == '["x"]'
    assert a.error_description == '{"k":1}'
    assert a.request_id == "12345678"


@pytest.mark.parametrize("value, text", [({"a": 1}, '{"a":1}'), ([1, "→", None, True], '[1,"→",null,true]'),
                                         (3.5, "3.5"), (False, "false"), ({"k": {"n": []}}, '{"k":{"n":[]}}')])
def test_non_string_error_fields_are_compact_json(value: object, text: str) -> None:
    for status in (400, 409, 500):
        a = parse_answer(status, {}, js({"error": {"code": value, "message": value, "description": value}}), NOW)
        assert (a.error_code, a.error_message, a.error_description) == (text, text, text)


def test_compact_json_matches_json_dumps_and_stops_at_the_limit() -> None:
    value = {"a": [1, 2.5, {"b": None, "c": "Ł東京"}], "d": {}, "e": []}
    assert compact_json(value, 10_000) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    deep: object = []
    for _ in range(50_000):  # deeper than any recursive printer handles
        deep = [deep]
    assert compact_json(deep, 100) == "[" * 100
    assert compact_json(list(range(10**6)), 20) == "[0,1,2,3,4,5,6,7,8,9"


def test_meta_that_is_not_an_object_is_ignored() -> None:
    a = parse_answer(404, {}, js({"meta": "oops", "error": {"code": "NOT_FOUND"}}), NOW)
    assert a.error_code == "NOT_FOUND" and a.request_id is None


def test_error_that_is_not_an_object_is_unexpected_json() -> None:
    a = parse_answer(500, {}, js({"meta": {"request_id": "req_abcdefgh"}, "error": "boom"}), NOW)
    assert not a.readable
    assert a.error_code == "HTTP_500"
    assert a.error_message == "HTTP 500 with unexpected JSON"
    assert a.request_id == "req_abcdefgh"


# -- RFC 9457 problem details ------------------------------------------------------------------


@pytest.mark.parametrize("status, code", [(400, "BAD_REQUEST"), (401, "UNAUTHORIZED"), (403, "FORBIDDEN"), (404, "NOT_FOUND"),
                                          (409, "CONFLICT_ERROR"), (422, "UNPROCESSABLE_ENTITY"), (429, "TOO_MANY_REQUESTS"),
                                          (500, "INTERNAL_SERVER_ERROR"), (503, "SERVICE_UNAVAILABLE"), (418, "HTTP_418"),
                                          (502, "HTTP_502")])
def test_problem_json_gets_the_documented_code_for_its_status(status: int, code: str) -> None:
    body = js({"type": "https://example.com/probs/x", "title": "Unauthorized", "status": status, "detail": "Token expired",
               "instance": "/query/batch/qrb_1"})
    a = parse_answer(status, {"Content-Type": "application/problem+json"}, body, NOW)
    assert a.readable
    assert a.error_code == code
    assert a.error_message == "Unauthorized"
    assert a.error_description == "Token expired"
    assert a.request_id == "/query/batch/qrb_1"
    assert a.data is None and a.meta is None


@pytest.mark.parametrize("body", [{"title": "t"}, {"detail": "d"}, {"type": "about:blank"}])
def test_problem_json_with_only_one_member(body: dict[str, str]) -> None:
    a = parse_answer(401, {}, js(body), NOW)
    assert a.readable and a.error_code == "UNAUTHORIZED"
    assert a.error_message == body.get("title")
    assert a.error_description == body.get("detail")


def test_problem_json_prefers_meta_request_id_over_instance() -> None:
    a = parse_answer(400, {}, js({"meta": {"request_id": "req_aaaaaaaa"}, "title": "Bad", "instance": "/x"}), NOW)
    assert a.request_id == "req_aaaaaaaa"


def test_problem_json_fields_are_truncated() -> None:
    a = parse_answer(400, {}, js({"title": "t" * 1000, "detail": "d" * 5000, "instance": "i" * 500}), NOW)
    assert a.error_message == "t" * 255
    assert a.error_description == "d" * 2048
    assert a.request_id == "i" * 64


# -- bodies that are not what they should be ---------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"   ", b"\r\n\t"])
def test_empty_error_body(body: bytes) -> None:
    a = parse_answer(502, {}, body, NOW)
    assert not a.readable
    assert a.error_code == "HTTP_502"
    assert a.error_message == "HTTP 502 with an empty body"


def test_empty_success_body_is_unreadable_without_error() -> None:
    a = parse_answer(200, {}, b"", NOW)
    assert not a.readable
    assert a.data is None and a.error_code is None and a.error_message is None


def test_html_gateway_page() -> None:
    html = b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>" + b"x" * 5000 + b"</body></html>"
    a = parse_answer(502, {"Content-Type": "text/html"}, html, NOW)
    assert not a.readable
    assert a.error_code == "HTTP_502"
    assert a.error_message is not None
    assert a.error_message.startswith("HTTP 502 with a body that is not JSON: ")
    assert "502 Bad Gateway" in a.error_message
    assert len(a.error_message) < 250  # only a snippet of the page


def test_html_page_with_200_is_unreadable() -> None:
    a = parse_answer(200, {}, b"<html>login</html>", NOW)
    assert not a.readable and a.data is None and a.error_code is None


@pytest.mark.parametrize("body", [b'{"meta": {"request_id": "abc', b'{"data": {"batch_id": "qrb_1", "status_code": "STOP', b"{", b'{"a":1,}', b"nul"])
def test_truncated_json(body: bytes) -> None:
    a = parse_answer(500, {}, body, NOW)
    assert not a.readable
    assert a.error_code == "HTTP_500"
    assert a.error_message is not None and "not JSON" in a.error_message
    ok = parse_answer(200, {}, body, NOW)
    assert not ok.readable and ok.data is None


@pytest.mark.parametrize("body", [b"[1, 2]", b"[]", b"42", b"-1.5", b'"text"', b"null", b"true"])
def test_json_that_is_not_an_object(body: bytes) -> None:
    a = parse_answer(400, {}, body, NOW)
    assert not a.readable
    assert a.error_code == "HTTP_400"
    assert a.error_message is not None and a.error_message.startswith("HTTP 400 with unexpected JSON")
    ok = parse_answer(200, {}, body, NOW)
    assert not ok.readable and ok.data is None and ok.error_code is None


@pytest.mark.parametrize("body", [b"\xff\xfe\xfd", b'{"data": "\xff"}', b"\x80" * 100, "ü".encode("latin-1"), b"\x00\x00"])
def test_non_utf8_bytes(body: bytes) -> None:
    a = parse_answer(500, {}, body, NOW)
    assert not a.readable
    assert a.error_code == "HTTP_500"
    assert isinstance(a.error_message, str)


def test_utf8_with_bom_is_not_crashing() -> None:
    a = parse_answer(200, {}, b"\xef\xbb\xbf" + js({"data": BATCH}), NOW)
    assert isinstance(a, Answer)


def test_huge_json_body_is_read_and_truncated() -> None:
    body = envelope_error(message="m" * 3_000_000, description="d" * 3_000_000)
    a = parse_answer(500, {}, body, NOW)
    assert a.readable
    assert a.error_message is not None and len(a.error_message) == 255
    assert a.error_description is not None and len(a.error_description) == 2048


def test_huge_non_json_body_gives_a_short_message() -> None:
    a = parse_answer(503, {}, b"<" * 5_000_000, NOW)
    assert not a.readable and a.error_code == "HTTP_503"
    assert a.error_message is not None and len(a.error_message) < 250


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_does_not_raise(depth: int) -> None:
    for body in (b"[" * depth + b"]" * depth, b'{"error": {"code": ' + b"[" * depth + b"]" * depth + b"}}"):
        a = parse_answer(500, {}, body, NOW)
        # Refused as too deep (HTTP_500), or, on Pythons whose parser takes 1,000 levels, the
        # nested code as the JSON text it was.
        assert a.error_code is not None
        assert a.error_code.startswith("HTTP_500") or a.error_code == ("[" * depth + "]" * depth)[:100]
        assert parse_answer(200, {}, body, NOW).data is None


def test_nested_json_just_below_the_parser_limit_does_not_raise() -> None:
    # Depths the decoder accepts but str() of the value may not print.
    for depth in range(900, 1100, 3):
        body = b'{"error": {"code": ' + b"[" * depth + b"]" * depth + b"}}"
        a = parse_answer(400, {}, body, NOW)
        assert a.error_code  # some code, never an exception


# -- headers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("limit_name, remaining_name, retry_name",
                         [("X-RateLimit-Limit", "X-RateLimit-Remaining", "Retry-After"),
                          ("x-ratelimit-limit", "x-ratelimit-remaining", "retry-after"),
                          ("X-RATELIMIT-LIMIT", "X-RATELIMIT-REMAINING", "RETRY-AFTER"),
                          ("x-RateLimit-LIMIT", "X-ratelimit-Remaining", "rEtRy-AfTeR")])
def test_headers_are_case_insensitive(limit_name: str, remaining_name: str, retry_name: str) -> None:
    a = parse_answer(429, {limit_name: "5000", remaining_name: "4321", retry_name: "7"}, envelope_error("TOO_MANY_REQUESTS"), NOW)
    assert a.ratelimit_limit == 5000
    assert a.ratelimit_remaining == 4321
    assert a.retry_after == 7.0


def test_headers_absent() -> None:
    a = parse_answer(200, {}, js({"data": BATCH}), NOW)
    assert a.ratelimit_limit is None and a.ratelimit_remaining is None and a.retry_after is None


@pytest.mark.parametrize("raw, value", [("0", 0), (" 42 ", 42), ("10000", 10000), ("-1", None), ("-0", None), ("abc", None),
                                        ("", None), ("1.5", None), ("1e3", None), ("0x10", None), ("9" * 5000, None),
                                        ("5000, 5000", None), ("9223372036854775808", None), ("9" * 400, None),
                                        ("10000000", 10_000_000), ("10000001", None), ("٣", None), ("1_000", None),
                                        ("+5", None)])
def test_ratelimit_header_values(raw: str, value: int | None) -> None:
    a = parse_answer(200, {"X-RateLimit-Limit": raw, "X-RateLimit-Remaining": raw}, js({"data": BATCH}), NOW)
    assert a.ratelimit_limit == value
    assert a.ratelimit_remaining == value


@pytest.mark.parametrize("raw, seconds", [("0", 0.0), ("120", 120.0), ("9999999999", MAX_RETRY_AFTER), ("soon", None),
                                          ("-3", None), ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
                                          ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0)])
def test_retry_after_header_is_parsed_against_now(raw: str, seconds: float | None) -> None:
    a = parse_answer(503, {"Retry-After": raw}, b"", NOW)
    assert a.retry_after == seconds


def test_ratelimit_headers_kept_on_unreadable_bodies() -> None:
    a = parse_answer(502, {"X-RateLimit-Remaining": "17", "Retry-After": "3"}, b"<html>", NOW)
    assert a.ratelimit_remaining == 17 and a.retry_after == 3.0 and not a.readable


# -- 2xx and data ------------------------------------------------------------------------------


def test_2xx_with_data_object() -> None:
    payload = {"meta": {"request_id": "req_12345678"}, "data": BATCH}
    a = parse_answer(200, {}, js(payload), NOW)
    assert a.readable
    assert a.data == BATCH
    assert a.meta == payload  # the whole object
    assert a.request_id == "req_12345678"
    assert a.error_code is None and a.error_message is None


@pytest.mark.parametrize("status", [201, 202, 204, 299])
def test_other_2xx_with_data_object(status: int) -> None:
    a = parse_answer(status, {}, js({"data": BATCH}), NOW)
    assert a.readable and a.data == BATCH and a.error_code is None


def test_2xx_with_data_list_is_readable_without_data() -> None:
    payload = {"meta": {"request_id": "req_12345678", "progress": {"queued": 1}}, "data": [{"@type": "batch_query"}]}
    a = parse_answer(200, {}, js(payload), NOW)
    assert a.readable
    assert a.data is None
    assert a.meta == payload
    assert query_counts_in(a.meta) == {"queued": 1, "running": 0, "success": 0, "failure": 0}


@pytest.mark.parametrize("payload", [{"meta": {"request_id": "req_12345678"}}, {"data": None}, {"data": "STOPPED"}, {"data": 1}, {}])
def test_2xx_without_usable_data_is_unreadable(payload: dict[str, Any]) -> None:
    a = parse_answer(200, {}, js(payload), NOW)
    assert not a.readable
    assert a.data is None
    assert a.meta == payload
    assert a.error_code is None


def test_2xx_with_error_member_is_still_a_success_shape() -> None:
    a = parse_answer(200, {}, js({"data": BATCH, "error": {"code": "X"}}), NOW)
    assert a.data == BATCH and a.error_code is None


@pytest.mark.parametrize("status", [100, 301, 304])
def test_non_2xx_non_error_statuses_are_not_success(status: int) -> None:
    a = parse_answer(status, {}, js({"data": BATCH}), NOW)
    assert a.data is None
    assert a.error_code == f"HTTP_{status}"


# -- query_counts_in ---------------------------------------------------------------------------


def test_progress_in_meta() -> None:
    payload = {"meta": {"progress": {"queued": 1, "running": 2, "success": 3, "failure": 4}}, "data": []}
    assert query_counts_in(payload) == {"queued": 1, "running": 2, "success": 3, "failure": 4}


def test_progress_at_top_level() -> None:
    payload = {"meta": {"request_id": "x"}, "progress": {"queued": 0, "running": 5, "success": 6, "failure": 0}, "data": []}
    assert query_counts_in(payload) == {"queued": 0, "running": 5, "success": 6, "failure": 0}


def test_progress_in_meta_wins_over_top_level() -> None:
    payload = {"meta": {"progress": {"queued": 9}}, "progress": {"queued": 1}}
    assert query_counts_in(payload) == {"queued": 9, "running": 0, "success": 0, "failure": 0}


def test_progress_with_meta_not_an_object_uses_top_level() -> None:
    assert query_counts_in({"meta": [1], "progress": {"success": 2}}) == {"queued": 0, "running": 0, "success": 2, "failure": 0}


def test_progress_bad_values_count_as_zero() -> None:
    payload = {"progress": {"queued": -1, "running": True, "success": "3", "failure": 2.0, "extra": 5}}
    assert query_counts_in(payload) == {"queued": 0, "running": 0, "success": 0, "failure": 0}


@pytest.mark.parametrize("payload", [None, {}, {"meta": {}}, {"progress": [1, 2]}, {"meta": {"progress": "x"}}, {"data": []}])
def test_progress_absent(payload: Any) -> None:
    assert query_counts_in(payload) is None


# -- properties --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(
        ["meta", "data", "error", "code", "message", "description", "request_id", "title", "detail", "type", "instance",
         "status", "status_code", "progress", "queued", "x"]), children, max_size=5),
    max_leaves=20,
)
header_names = st.sampled_from(["X-RateLimit-Limit", "x-ratelimit-remaining", "Retry-After", "RETRY-AFTER", "Content-Type", "X-Other"])
header_values = st.one_of(st.text(max_size=40), st.integers(-10**20, 10**20).map(str),
                          st.sampled_from(["Wed, 21 Oct 2015 07:28:30 GMT", "Sun, 06 Nov 1994 08:49:37", "9999999999", "²", "٣"]))
headers = st.dictionaries(st.one_of(header_names, st.text(max_size=10)), header_values, max_size=5)
bodies = st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                   json_values.map(lambda v: json.dumps(v).encode()[: max(0, len(json.dumps(v)) // 2)]))


def check_answer_invariants(a: Answer, status: int) -> None:
    assert a.http_status == status
    assert isinstance(a.readable, bool)
    for v in (a.ratelimit_limit, a.ratelimit_remaining):
        assert v is None or (type(v) is int and 0 <= v <= MAX_RATELIMIT)
    assert a.retry_after is None or 0.0 <= a.retry_after <= MAX_RETRY_AFTER
    if 200 <= status < 300:
        assert a.error_code is None
        assert a.data is None or isinstance(a.data, dict)
    else:
        assert a.data is None
        assert isinstance(a.error_code, str) and a.error_code
    for text, limit in ((a.error_code, 100), (a.error_description, 2048), (a.request_id, 64)):
        assert text is None or (isinstance(text, str) and len(text) <= limit)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 999), headers, bodies, st.floats(0, 4e9))
def test_parse_answer_never_raises(status: int, hdrs: dict[str, str], body: bytes, now: float) -> None:
    a = parse_answer(status, hdrs, body, now)
    check_answer_invariants(a, status)
    counts = query_counts_in(a.meta)
    assert counts is None or (set(counts) == {"queued", "running", "success", "failure"} and all(v >= 0 for v in counts.values()))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([200, 400, 401, 404, 409, 429, 500, 503]), json_values)
def test_parse_answer_on_any_json_object(status: int, payload: Any) -> None:
    body = json.dumps({"meta": {"request_id": "r"}, "data": payload, "error": payload, "title": payload}).encode()
    check_answer_invariants(parse_answer(status, {}, body, 0.0), status)
