"""Unit tests for smtoolkit.core.outcomes: from an Answer to one report row."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtoolkit.core import outcomes as oc
from smtoolkit.core.answers import Answer, parse_answer
from smtoolkit.core.outcomes import (
    FINAL,
    FINE,
    REPORT_COLUMNS,
    Outcome,
    Result,
    classify,
    parse_time,
    result_from_answer,
)

UTC = UTC


def batch(status: Any = "STOPPED", cancel_time: Any = "2024-05-01T12:00:00Z", **extra: Any) -> dict[str, Any]:
    d = {"@type": "query_batch", "batch_id": "qrb_1", "status_code": status, "cancel_time": cancel_time,
         "end_time": None}
    d.update(extra)
    return d


def ok(data: dict[str, Any] | None, status: int = 200) -> Answer:
    body = json.dumps({"meta": {"request_id": "req_12345678"}, "data": data}).encode()
    return parse_answer(status, {"X-RateLimit-Remaining": "4000"}, body, 0.0)


def err(status: int, code: str | None = None) -> Answer:
    body = json.dumps({"meta": {"request_id": "req_87654321"}, "error": {"code": code, "message": "m"}}).encode() if code else b""
    return parse_answer(status, {}, body, 0.0)


# -- classify: 2xx -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202])
def test_stopped_with_cancel_time_is_cancelled(status: int) -> None:
    assert classify(ok(batch("STOPPED", "2024-05-01T12:00:00Z"), status)) is Outcome.CANCELLED


@pytest.mark.parametrize("cancel_time", [None, ""])
def test_stopped_without_cancel_time_is_already_stopped(cancel_time: Any) -> None:
    assert classify(ok(batch("STOPPED", cancel_time))) is Outcome.ALREADY_STOPPED
    assert classify(ok({"status_code": "STOPPED"})) is Outcome.ALREADY_STOPPED


@pytest.mark.parametrize("state", ["QUEUED", "RUNNING"])
def test_still_running_after_delete_is_stopping(state: str) -> None:
    assert classify(ok(batch(state, None))) is Outcome.STOPPING
    assert classify(ok(batch(state, "2024-05-01T12:00:00Z"))) is Outcome.STOPPING


@pytest.mark.parametrize("state", ["QUEUED", "RUNNING"])
def test_dry_run_of_a_running_batch_would_cancel(state: str) -> None:
    assert classify(ok(batch(state, None)), dry_run=True) is Outcome.WOULD_CANCEL


@pytest.mark.parametrize("cancel_time", [None, "2024-05-01T12:00:00Z"])
def test_dry_run_of_a_stopped_batch_is_already_stopped(cancel_time: Any) -> None:
    # A dry run changes nothing, so even a cancel_time means "stopped before", not "we cancelled".
    assert classify(ok(batch("STOPPED", cancel_time)), dry_run=True) is Outcome.ALREADY_STOPPED


@pytest.mark.parametrize("state", ["DONE", "stopped", "Running", "", 3, None, ["STOPPED"], {"RUNNING": 1}])
def test_unknown_status_is_stopping_or_would_cancel(state: Any) -> None:
    assert classify(ok(batch(state, None))) is Outcome.STOPPING
    assert classify(ok(batch(state, None)), dry_run=True) is Outcome.WOULD_CANCEL


def test_2xx_without_a_batch_record() -> None:
    for a in (ok(None), parse_answer(200, {}, b"", 0.0), parse_answer(200, {}, b"<html>", 0.0)):
        assert classify(a) is Outcome.STOPPING
        assert classify(a, dry_run=True) is Outcome.WOULD_CANCEL


# -- classify: errors --------------------------------------------------------------------------


@pytest.mark.parametrize("status, code, outcome", [
    (401, "UNAUTHORIZED", Outcome.UNAUTHORIZED),
    (401, None, Outcome.UNAUTHORIZED),
    (403, "FORBIDDEN", Outcome.FORBIDDEN),
    (403, "PERMISSION_ERROR", Outcome.FORBIDDEN),
    (404, "NOT_FOUND", Outcome.NOT_FOUND),
    (404, None, Outcome.NOT_FOUND),
    (409, "CONFLICT_ERROR", Outcome.ALREADY_STOPPED),
    (409, None, Outcome.ALREADY_STOPPED),  # no body: HTTP_409
    (409, "DUPLICATION_FAILED", Outcome.CLIENT_ERROR),  # a conflict of another kind
    (429, "TOO_MANY_REQUESTS", Outcome.RATE_LIMITED),
    (429, None, Outcome.RATE_LIMITED),
    (400, "BAD_REQUEST", Outcome.CLIENT_ERROR),
    (405, None, Outcome.CLIENT_ERROR),
    (410, None, Outcome.CLIENT_ERROR),
    (422, "UNPROCESSABLE_ENTITY", Outcome.CLIENT_ERROR),
    (499, None, Outcome.CLIENT_ERROR),
    (500, "INTERNAL_SERVER_ERROR", Outcome.SERVER_ERROR),
    (502, None, Outcome.SERVER_ERROR),
    (503, "SERVICE_UNAVAILABLE", Outcome.SERVER_ERROR),
    (504, None, Outcome.SERVER_ERROR),
    (599, None, Outcome.SERVER_ERROR),
])
@pytest.mark.parametrize("dry_run", [False, True])
def test_error_statuses(status: int, code: str | None, outcome: Outcome, dry_run: bool) -> None:
    assert classify(err(status, code), dry_run=dry_run) is outcome


def test_409_read_from_problem_json_is_already_stopped() -> None:
    a = parse_answer(409, {}, json.dumps({"title": "Conflict", "status": 409}).encode(), 0.0)
    assert a.error_code == "CONFLICT_ERROR"
    assert classify(a) is Outcome.ALREADY_STOPPED


def test_409_with_explicit_error_code_none_is_already_stopped() -> None:
    assert classify(Answer(409, error_code=None)) is Outcome.ALREADY_STOPPED


@pytest.mark.parametrize("status", [100, 301, 302, 304])
def test_odd_statuses_are_server_errors(status: int) -> None:
    # Redirects are not followed; anything that is neither 2xx nor 4xx is not a client fault.
    assert classify(Answer(status)) is Outcome.SERVER_ERROR


# -- result_from_answer ------------------------------------------------------------------------


def test_result_for_a_cancelled_batch() -> None:
    data = batch("STOPPED", "2024-05-01T12:00:00Z", end_time="2024-05-01T12:00:05+02:00")
    r = result_from_answer("qrb_1", ok(data))
    assert r.batch_id == "qrb_1"
    assert r.outcome is Outcome.CANCELLED
    assert r.http_status == 200
    assert r.status_code == "STOPPED"
    assert r.error_code is None and r.error_message is None and r.error_description is None
    assert r.request_id == "req_12345678"
    assert r.cancel_time == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert r.end_time == datetime(2024, 5, 1, 10, 0, 5, tzinfo=UTC)
    assert r.ratelimit_remaining == 4000
    assert r.batch == data
    assert r.attempts == 0 and r.elapsed_s == 0.0  # filled in by the caller
    assert r.ok


def test_result_batch_is_a_copy() -> None:
    a = ok(batch())
    r = result_from_answer("qrb_1", a)
    assert r.batch is not None
    r.batch["status_code"] = "X"
    assert a.data is not None and a.data["status_code"] == "STOPPED"


@pytest.mark.parametrize("state, outcome", [("QUEUED", Outcome.STOPPING), ("RUNNING", Outcome.STOPPING)])
def test_result_for_a_stopping_batch(state: str, outcome: Outcome) -> None:
    r = result_from_answer("qrb_1", ok(batch(state, None)))
    assert r.outcome is outcome
    assert r.status_code == state
    assert r.error_code is None
    assert r.cancel_time is None
    assert not r.ok


def test_result_for_an_unknown_status() -> None:
    r = result_from_answer("qrb_1", ok(batch("PAUSED", None)))
    assert r.outcome is Outcome.STOPPING
    assert r.status_code == "PAUSED"
    assert r.error_code == oc.UNKNOWN_STATUS
    assert r.error_message is not None and '"PAUSED"' in r.error_message
    r2 = result_from_answer("qrb_1", ok(batch(7, None)))
    assert r2.status_code == "7" and r2.error_code == oc.UNKNOWN_STATUS
    r3 = result_from_answer("qrb_1", ok(batch(["STOPPED"], None)))  # not even hashable
    assert r3.outcome is Outcome.STOPPING
    assert r3.status_code == '["STOPPED"]' and r3.error_code == oc.UNKNOWN_STATUS  # JSON, not a repr
    assert r3.error_message is not None and '["STOPPED"]' in r3.error_message


def test_result_for_a_2xx_without_record() -> None:
    for a in (ok(None), parse_answer(200, {}, b"", 0.0), ok({})):
        r = result_from_answer("qrb_1", a)
        assert r.outcome is Outcome.STOPPING
        assert r.error_code == oc.UNREADABLE_RESPONSE
        assert r.error_message == "the API answered 2xx without a readable batch record"
        assert r.status_code is None and r.batch is None


def test_result_for_a_dry_run() -> None:
    r = result_from_answer("qrb_1", ok(batch("RUNNING", None)), dry_run=True)
    assert r.outcome is Outcome.WOULD_CANCEL and r.ok
    r = result_from_answer("qrb_1", ok(batch("STOPPED", "2024-05-01T12:00:00Z")), dry_run=True)
    assert r.outcome is Outcome.ALREADY_STOPPED
    assert r.cancel_time == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_result_for_an_error_envelope() -> None:
    body = json.dumps({"meta": {"request_id": "req_abcdefgh"},
                       "error": {"code": "NOT_FOUND", "message": "Batch not found", "description": "gone"}}).encode()
    r = result_from_answer("qrb_x", parse_answer(404, {"X-RateLimit-Remaining": "12"}, body, 0.0))
    assert r.outcome is Outcome.NOT_FOUND and r.ok
    assert (r.http_status, r.error_code, r.error_message, r.error_description, r.request_id) == (
        404, "NOT_FOUND", "Batch not found", "gone", "req_abcdefgh")
    assert r.status_code is None and r.cancel_time is None and r.end_time is None and r.batch is None
    assert r.ratelimit_remaining == 12


def test_result_for_a_gateway_page() -> None:
    r = result_from_answer("qrb_x", parse_answer(502, {}, b"<html>Bad Gateway</html>", 0.0))
    assert r.outcome is Outcome.SERVER_ERROR and not r.ok
    assert r.error_code == "HTTP_502"
    assert r.error_message is not None and "Bad Gateway" in r.error_message


# -- parse_time --------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ("2024-05-01T12:00:00z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ("2024-05-01T12:00:00.123456Z", datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)),
    ("2024-05-01T12:00:00+00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ("2024-05-01T14:30:00+02:30", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ("2024-05-01T07:00:00-05:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ("2024-05-01T00:30:00+01:00", datetime(2024, 4, 30, 23, 30, tzinfo=UTC)),
    ("2024-05-01T12:00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),  # naive: UTC
    ("2024-05-01 12:00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ("  2024-05-01T12:00:00Z  ", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
])
def test_parse_time(text: str, expected: datetime) -> None:
    got = parse_time(text)
    assert got == expected
    assert got is not None and got.utcoffset() == timedelta(0)


@pytest.mark.parametrize("value", [None, "", "   ", "garbage", "2024-13-01T00:00:00Z", "2024-05-01T25:00:00Z", "Z",
                                   "2024-05-01T12:00:00+25:00", 1714564800, 1714564800.0, ["2024-05-01"],
                                   datetime(2024, 5, 1), b"2024-05-01"])
def test_parse_time_garbage_is_none(value: Any) -> None:
    assert parse_time(value) is None


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=40), st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
                 st.datetimes().map(lambda d: d.isoformat() + "Z")))
def test_parse_time_never_raises_and_is_utc(text: str) -> None:
    got = parse_time(text)
    assert got is None or got.utcoffset() == timedelta(0)


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))))
def test_parse_time_round_trips_aware_datetimes(dt: datetime) -> None:
    got = parse_time(dt.isoformat())
    assert got is not None
    assert got == dt  # same instant


# -- Result.row and the vocabulary -------------------------------------------------------------


def test_row_keys_are_the_report_columns_in_order() -> None:
    r = result_from_answer("qrb_1", ok(batch()))
    row = r.row()
    assert tuple(row) == REPORT_COLUMNS
    assert "batch" not in row
    assert row["outcome"] == "cancelled" and type(row["outcome"]) is str
    assert row["cancel_time"] == datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_row_of_a_local_result() -> None:
    r = Result(None, Outcome.INVALID_ID, error_code=oc.INVALID_BATCH_ID, error_message="empty batch ID")
    row = r.row()
    assert tuple(row) == REPORT_COLUMNS
    assert row["batch_id"] is None and row["outcome"] == "invalid_id" and row["attempts"] == 0
    assert r.batch is None


def test_report_columns_are_the_result_fields_but_batch_and_reason() -> None:
    assert set(REPORT_COLUMNS) == set(Result.__dataclass_fields__) - {"batch", "reason"}
    assert len(REPORT_COLUMNS) == len(set(REPORT_COLUMNS))


def test_outcome_strings() -> None:
    assert str(Outcome.CANCELLED) == "cancelled"
    assert f"{Outcome.NOT_FOUND}" == "not_found"
    assert Outcome("already_stopped") is Outcome.ALREADY_STOPPED
    assert len({o.value for o in Outcome}) == len(Outcome)


def test_final_and_fine_sets() -> None:
    assert FINAL == {Outcome.CANCELLED, Outcome.ALREADY_STOPPED, Outcome.NOT_FOUND}
    assert FINAL <= FINE
    assert FINE - FINAL == {Outcome.DUPLICATE, Outcome.WOULD_CANCEL, Outcome.LEFT_ALONE}
    for o in Outcome:
        assert Result("x", o).ok == (o in FINE)


def test_result_equality_ignores_the_raw_batch() -> None:
    assert Result("x", Outcome.CANCELLED, batch={"a": 1}) == Result("x", Outcome.CANCELLED, batch={"b": 2})
    assert "batch=" not in repr(Result("x", Outcome.CANCELLED, batch={"a": 1}))


# -- property ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.integers(100, 599), st.one_of(st.none(), st.sampled_from(["NOT_FOUND", "CONFLICT_ERROR", "X", ""])),
       st.one_of(st.none(), st.fixed_dictionaries({"status_code": st.one_of(st.none(), st.sampled_from(["QUEUED", "RUNNING", "STOPPED", "ODD"]), st.integers(),
                                                                            st.lists(st.text(max_size=3), max_size=2)),
                                                   "cancel_time": st.one_of(st.none(), st.text(max_size=25)),
                                                   "end_time": st.one_of(st.none(), st.text(max_size=25), st.integers())})),
       st.booleans())
def test_every_answer_gets_exactly_one_known_outcome(status: int, code: str | None, data: dict[str, Any] | None, dry_run: bool) -> None:
    a = Answer(status, data if 200 <= status < 300 else None, error_code=code)
    r = result_from_answer("qrb_1", a, dry_run=dry_run)
    assert isinstance(r.outcome, Outcome)
    assert r.outcome is classify(a, dry_run=dry_run)
    if dry_run:
        assert r.outcome not in (Outcome.CANCELLED, Outcome.STOPPING)
    else:
        assert r.outcome is not Outcome.WOULD_CANCEL
    if r.outcome is Outcome.CANCELLED:
        assert 200 <= status < 300 and data and data.get("status_code") == "STOPPED" and data.get("cancel_time")
    assert tuple(r.row()) == REPORT_COLUMNS
    assert r.outcome not in (Outcome.INVALID_ID, Outcome.DUPLICATE, Outcome.SKIPPED, Outcome.NETWORK_ERROR)


def test_a_row_read_back_is_a_frozen_result_equal_to_one_built_directly() -> None:
    import dataclasses
    from datetime import UTC, datetime

    from smtoolkit.core.outcomes import restored

    values = ("qrb_1", Outcome.CANCELLED, 200, "STOPPED", None, "m", "d", "req_12345678",
              datetime(2026, 1, 1, tzinfo=UTC), None, 2, 0.5, 4999)
    r = restored(*values)
    assert type(r) is Result and r == Result(*values) and r.row() == Result(*values).row()
    assert r.batch is None and r.reason is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.attempts = 3
