"""Settling a row from its facts (`core.settle`): every outcome rule, without sockets.

Each case is one of the life stories the fault matrix produces over HTTP (resets before and
after the server applied a cancel, 5xx, 429 storms, HTML and truncated bodies, answers too
large, verification GETs that fail), told as facts.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from smtoolkit.core import outcomes as oc
from smtoolkit.core.answers import Answer, parse_answer
from smtoolkit.core.outcomes import Outcome, Result
from smtoolkit.core.reasons import Reason
from smtoolkit.core.settle import (
    CONNECT_CHECKS,
    Attempt,
    Story,
    accepted,
    is_final,
    needs_verification,
    not_sent,
    settle,
)

NOW = 1_800_000_000.0
ID = "qrb_1"


def batch(status: str = "STOPPED", cancel_time: str | None = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {"meta": {"request_id": "req_12345678"},
            "data": {"batch_id": ID, "status_code": status, "cancel_time": cancel_time, "end_time": cancel_time}}


def answer(status: int, body: Any = None, **headers: str) -> Attempt:
    raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    return Attempt(parse_answer(status, headers, raw, NOW))


def error(code: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": "m"}}


def story(method: str, attempts: list[Attempt], ended: Reason | None = None,
          checks: list[Attempt] | tuple[Attempt, ...] = ()) -> Story:
    return Story(ID, method, tuple(attempts), ended, tuple(checks))


def told(method: str, attempts: list[Attempt], ended: Reason | None = None,
         checks: list[Attempt] | tuple[Attempt, ...] = ()) -> Result:
    """The row `settle` makes of this story."""
    return settle(story(method, attempts, ended, checks))


LOST = Attempt(None, "ConnectionError: the connection was reset")
HTML = b"<html>502 Bad Gateway</html>"
TOO_LARGE = Attempt(parse_answer(200, {}, b"", NOW, too_large=True))


@pytest.mark.parametrize("facts, outcome, code", [
    ([answer(200, batch())], Outcome.CANCELLED, None),
    ([answer(200, batch(cancel_time=None))], Outcome.ALREADY_STOPPED, None),
    ([answer(200, batch("RUNNING", None))], Outcome.STOPPING, None),
    ([answer(200, batch("PAUSED", None))], Outcome.STOPPING, oc.UNKNOWN_STATUS),
    ([answer(404, error("NOT_FOUND"))], Outcome.NOT_FOUND, "NOT_FOUND"),
    ([answer(401, error("UNAUTHORIZED"))], Outcome.UNAUTHORIZED, "UNAUTHORIZED"),
    ([answer(403, error("FORBIDDEN"))], Outcome.FORBIDDEN, "FORBIDDEN"),
    ([answer(409, error("CONFLICT_ERROR"))], Outcome.ALREADY_STOPPED, "CONFLICT_ERROR"),
    ([answer(422, error("UNPROCESSABLE_ENTITY"))], Outcome.CLIENT_ERROR, "UNPROCESSABLE_ENTITY"),
    ([answer(500, error("INTERNAL_SERVER_ERROR"))] * 3, Outcome.SERVER_ERROR, "INTERNAL_SERVER_ERROR"),
    ([answer(502, HTML)] * 2, Outcome.SERVER_ERROR, "HTTP_502"),
    ([answer(429, error("TOO_MANY_REQUESTS"))] * 6, Outcome.RATE_LIMITED, "TOO_MANY_REQUESTS"),
    ([LOST, LOST], Outcome.NETWORK_ERROR, oc.NETWORK_ERROR),
    ([answer(500, error("X")), answer(200, batch())], Outcome.CANCELLED, None),  # retried to success
])
def test_a_request_settled_by_its_own_answers(facts: list[Attempt], outcome: Outcome, code: str | None) -> None:
    r = told("DELETE", facts, Reason.RETRIES if not is_final(facts[-1].answer) else None)
    assert r.outcome is outcome and r.error_code == code
    assert r.attempts == len(facts)


def test_nothing_sent_is_skipped_with_the_reason() -> None:
    for reason, code in ((Reason.HALTED, None), (Reason.RESERVE, oc.BUDGET_RESERVE),
                         (Reason.DEADLINE, oc.ROW_DEADLINE)):
        r = told("DELETE", [], reason)
        assert (r.outcome, r.error_code, r.attempts) == (Outcome.SKIPPED, code, 0)
    assert not_sent(ID, Reason.HALTED).error_code is None  # the run that halted says why


def test_reset_after_the_server_applied_the_cancel_is_settled_by_a_get() -> None:
    facts = [LOST, LOST, LOST]
    assert needs_verification(story("DELETE", facts, Reason.RETRIES))
    r = told("DELETE", facts, Reason.RETRIES, [LOST, answer(200, batch())])
    assert r.outcome is Outcome.CANCELLED and r.attempts == 5
    assert r.error_description is not None and "confirmed with a GET" in r.error_description


def test_reset_before_applying_stays_a_failure_with_the_batch_state() -> None:
    r = told("DELETE", [LOST, LOST], Reason.RETRIES, [answer(200, batch("RUNNING", None))])
    assert r.outcome is Outcome.NETWORK_ERROR and r.status_code == "RUNNING" and r.attempts == 3


def test_a_failed_cancel_whose_checks_all_fail_stays_failed() -> None:
    r = told("DELETE", [answer(503, HTML)], Reason.RETRIES, [LOST, LOST, LOST])
    assert r.outcome is Outcome.SERVER_ERROR and r.attempts == 4


def test_accepted_but_unreadable_then_409_is_our_own_cancel() -> None:
    facts = [answer(200, b"<html>ok</html>"), answer(409, error("CONFLICT_ERROR"))]
    assert accepted("DELETE", facts)
    r = told("DELETE", facts, None)
    assert r.outcome is Outcome.CANCELLED and r.attempts == 2


@pytest.mark.parametrize("checks, outcome", [
    ([], Outcome.STOPPING),  # nothing readable after the 2xx: never a failure
    ([LOST, LOST, LOST], Outcome.STOPPING),
    ([answer(200, batch("RUNNING", None))], Outcome.STOPPING),
    ([answer(200, batch())], Outcome.CANCELLED),
    ([answer(200, batch(cancel_time=None))], Outcome.ALREADY_STOPPED),
])
def test_accepted_but_unreadable_is_never_reported_as_a_failure(checks: list[Attempt], outcome: Outcome) -> None:
    facts = [answer(200, b'{"data": {"batch_id": "qrb_1", "status_'), LOST]
    r = told("DELETE", facts, Reason.RETRIES, checks)
    assert r.outcome is outcome


def test_an_answer_too_large_is_named() -> None:
    r = told("DELETE", [TOO_LARGE], Reason.RETRIES, [])
    assert r.outcome is Outcome.STOPPING and r.error_code == "RESPONSE_TOO_LARGE"
    r = told("DELETE", [Attempt(parse_answer(500, {}, b"", NOW, too_large=True))], Reason.RETRIES, [])
    assert r.outcome is Outcome.SERVER_ERROR and r.error_code == "RESPONSE_TOO_LARGE"


@pytest.mark.parametrize("gave_up, text", [(Reason.DEADLINE, "row_deadline"), (Reason.RETRY_BUDGET, "retry budget")])
def test_why_the_retries_stopped_is_said(gave_up: Reason, text: str) -> None:
    r = told("DELETE", [answer(503, HTML)], gave_up, [answer(200, batch("RUNNING", None))])
    assert r.outcome is Outcome.SERVER_ERROR
    assert r.error_description is not None and text in r.error_description


def test_a_look_up_is_never_verified_and_says_what_a_cancel_would_do() -> None:
    assert not needs_verification(story("GET", [LOST], Reason.RETRIES))
    assert told("GET", [answer(200, batch("RUNNING", None))], None).outcome is Outcome.WOULD_CANCEL
    assert told("GET", [answer(200, batch())], None).outcome is Outcome.ALREADY_STOPPED
    assert told("GET", [LOST], Reason.RETRIES).outcome is Outcome.NETWORK_ERROR


def test_final_answers() -> None:
    assert is_final(answer(200, batch()).answer) and is_final(answer(404, error("NOT_FOUND")).answer)
    for retried in (answer(429).answer, answer(503).answer, answer(200, HTML).answer, None):
        assert not is_final(retried)
    a: Answer | None = answer(200, batch()).answer
    assert a is not None and a.ok and a.is_2xx


# -- requests that never got a connection (transport.NOT_SENT_CAUSES) ----------------------------
UNSENT = Attempt(None, "the host name 'api.example.invalid' could not be resolved (DNS)", not_sent="dns")


@pytest.mark.parametrize("method", ["DELETE", "GET"])
def test_a_request_that_never_connected_says_nothing_was_sent_and_is_not_verified(method: str) -> None:
    facts = [UNSENT, UNSENT, UNSENT]
    assert not needs_verification(story(method, facts, Reason.RETRIES))  # there is nothing to verify
    r = told(method, facts, Reason.RETRIES)
    assert r.outcome is Outcome.NETWORK_ERROR and r.error_code == oc.CONNECT_FAILED
    assert r.error_message == "not sent: the host name 'api.example.invalid' could not be resolved (DNS)"
    assert r.error_description == CONNECT_CHECKS["dns"] and r.attempts == 3


def test_a_request_cut_short_by_a_halt_after_failing_to_connect_still_says_not_sent() -> None:
    r = told("DELETE", [UNSENT], Reason.HALTED)
    assert r.error_code == oc.CONNECT_FAILED and r.attempts == 1


@pytest.mark.parametrize("facts", [[LOST, UNSENT], [UNSENT, LOST], [answer(503, HTML), UNSENT]])
def test_once_any_attempt_may_have_been_sent_the_row_is_verified(facts: list[Attempt]) -> None:
    """One attempt that had a connection may have reached the server: the row may never say
    'not sent', and a cancel is checked with GETs."""
    verdict = told("DELETE", facts, Reason.RETRIES)  # before any check
    assert verdict.error_code != oc.CONNECT_FAILED and not (verdict.error_message or "").startswith("not sent")
    assert needs_verification(story("DELETE", facts, Reason.RETRIES))
    r = told("DELETE", facts, Reason.RETRIES, [answer(200, batch())])
    assert r.outcome is Outcome.CANCELLED and r.attempts == len(facts) + 1


def test_an_unknown_cause_still_says_what_to_check() -> None:
    r = told("DELETE", [Attempt(None, "could not connect", not_sent="something new")], Reason.RETRIES)
    assert r.error_code == oc.CONNECT_FAILED and r.error_description == CONNECT_CHECKS["connect"]


def test_every_cause_the_transport_names_has_a_check() -> None:
    from smtoolkit.transport import NOT_SENT_CAUSES

    assert set(CONNECT_CHECKS) == set(NOT_SENT_CAUSES)
    assert all(text.startswith("Check") and text.endswith(".") for text in CONNECT_CHECKS.values())
