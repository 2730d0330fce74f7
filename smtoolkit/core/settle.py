"""Settling one row: what happened to a batch, decided in one place from the facts.

The client records facts (each attempt's answer or transport failure, why its retry loop
gave up, the answers of verification GETs); the functions here turn them into the row's
`Result`. Every outcome rule of a request's life lives here, pure and socket-free:

- a readable 2xx says what the batch is (`outcomes.classify`);
- a DELETE answered 2xx but unreadable was *accepted*: a later 409 is our own cancel, and if
  nothing readable follows, the row is `stopping`, never a failure;
- a cancel that ended failed (429, 5xx, no answer) is checked with GETs before it is called a
  failure: a batch the server stopped is never reported as failed when a GET can tell;
- a request none of whose attempts ever had a connection (DNS, refused, TLS) was not sent:
  its row says so (CONNECT_FAILED) and what to check, and there is nothing to verify.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import outcomes as oc
from .answers import Answer
from .outcomes import Outcome, Result, result_from_answer
from .retry import RETRY_STATUSES

# GETs that may follow a cancel whose own answer was lost, to learn whether it was applied.
VERIFY_TRIES = 3

#: Why a request's retry loop ended without a final answer.
GAVE_UP = {
    "deadline": "gave up: the row's time limit (row_deadline) was reached",
    "retry_budget": "gave up: the run's retry budget is spent (the server keeps failing)",
}

#: Why a request was never sent at all.
NOT_SENT: dict[str, tuple[str | None, str]] = {
    # The run that refused it says why (runner.halt_label); until then, no code.
    "stopped": (None, "not sent: the run stopped"),
    "reserve": (oc.BUDGET_RESERVE, "not sent: the hourly budget reached the reserve kept for production"),
    "deadline": (oc.ROW_DEADLINE, "not sent: the row's time limit passed while waiting for the rate limit"),
}

#: What to check when no connection could be made, by cause (`transport.NOT_SENT_CAUSES`).
CONNECT_CHECKS: dict[str, str] = {
    "dns": "Check the base URL's host name, the network connection and the VPN.",
    "refused": "Check the base URL (host and port), and that the server or proxy there is running.",
    "certificate": "Check the base URL; behind a proxy that inspects TLS, point REQUESTS_CA_BUNDLE at "
                   "its CA certificate.",
    "tls": "Check the base URL (https to a TLS server) and any proxy between here and the API.",
    "timeout": "Check the network connection, the VPN and any firewall.",
    "proxy": "Check the proxy settings (HTTPS_PROXY) and that the proxy is running.",
    "connect": "Check the network connection, the VPN and the base URL.",
}

_FAILED = frozenset({Outcome.RATE_LIMITED, Outcome.SERVER_ERROR, Outcome.NETWORK_ERROR})


@dataclass(frozen=True, slots=True)
class Attempt:
    """One exchange: the answer, or why there was none. `not_sent` names why no connection
    was made (then nothing was sent); None when the request may have reached the server."""

    answer: Answer | None
    error: str | None = None
    not_sent: str | None = None


def never_sent(attempts: Sequence[Attempt]) -> bool:
    """Attempts were made, and none of them ever had a connection: nothing reached the server."""
    return bool(attempts) and all(t.answer is None and t.not_sent is not None for t in attempts)


def accepted(method: str, attempts: Sequence[Attempt]) -> bool:
    """A DELETE that got a 2xx whose body could not be read: the server took the cancel."""
    return method == "DELETE" and any(
        t.answer is not None and t.answer.is_2xx and not t.answer.ok for t in attempts)


def is_final(answer: Answer | None) -> bool:
    """An answer after which retrying cannot help: a readable 2xx, or a non-retryable error."""
    if answer is None:
        return False
    return answer.ok or (not answer.is_2xx and answer.status not in RETRY_STATUSES)


def invalid_id(value: object, problem: str | None) -> Result:
    """The row of an ID refused locally (never sent)."""
    shown = value if isinstance(value, str) else None
    return Result(shown, Outcome.INVALID_ID, error_code=oc.INVALID_BATCH_ID, error_message=problem or "invalid batch ID")


def not_sent(batch_id: str, reason: str) -> Result:
    """The row of a request the gate refused to start (run stopped, reserve, deadline)."""
    code, message = NOT_SENT.get(reason, NOT_SENT["stopped"])
    return Result(batch_id, Outcome.SKIPPED, error_code=code, error_message=message)


def first_verdict(batch_id: str, method: str, attempts: Sequence[Attempt], gave_up: str | None,
                  *, dry_run: bool = False) -> Result:
    """The row as the request's own answers tell it (before any verification)."""
    if not attempts:
        return not_sent(batch_id, gave_up or "stopped")
    last = attempts[-1]
    a = last.answer
    if a is not None and a.ok:
        r = result_from_answer(batch_id, a, dry_run=dry_run)
    elif a is not None and a.status == 409 and accepted(method, attempts):
        r = result_from_answer(batch_id, a)  # our earlier DELETE was applied: this 409 is our own cancel
        r.outcome = Outcome.CANCELLED
    elif a is not None and not a.is_2xx:
        r = result_from_answer(batch_id, a, dry_run=dry_run)
    elif never_sent(attempts):
        r = Result(batch_id, Outcome.NETWORK_ERROR, error_code=oc.CONNECT_FAILED,
                   error_message=f"not sent: {last.error}",
                   error_description=CONNECT_CHECKS.get(last.not_sent or "", CONNECT_CHECKS["connect"]))
    else:  # no answer, or a 2xx that could not be read
        r = Result(batch_id, Outcome.NETWORK_ERROR,
                   http_status=a.status if a else None,
                   error_code=(a.error_code or oc.UNREADABLE_RESPONSE) if a else oc.NETWORK_ERROR,
                   error_message=(a.error_message or "the answer's body could not be read") if a else last.error,
                   ratelimit_remaining=a.ratelimit_remaining if a else None)
    r.attempts = len(attempts)
    if gave_up in GAVE_UP and r.outcome in _FAILED:
        r.error_description = _join(r.error_description, GAVE_UP[gave_up])
    return r


def needs_verification(method: str, verdict: Result) -> bool:
    """A cancel that ended failed may still have been applied: a GET must tell (unless it
    was never sent)."""
    return method == "DELETE" and verdict.outcome in _FAILED and verdict.error_code != oc.CONNECT_FAILED


def verification_done(answer: Answer | None) -> bool:
    """Stop verifying: the batch's state was read, or the server refuses for good."""
    return is_final(answer)


def settle(batch_id: str, method: str, attempts: Sequence[Attempt], gave_up: str | None,
           checks: Sequence[Attempt] = (), *, dry_run: bool = False) -> Result:
    """The row's final result from everything that happened to it.

    `attempts` are the request's own exchanges, `gave_up` why its retry loop ended without a
    final answer (None, "retries", "deadline", "retry_budget", or a not-sent reason), and
    `checks` the verification GETs made afterwards (if any).
    """
    verdict = first_verdict(batch_id, method, attempts, gave_up, dry_run=dry_run)
    if not needs_verification(method, verdict):
        return verdict
    was_accepted = accepted(method, attempts)
    verdict.attempts += len(checks)
    seen_answer = next((t.answer for t in checks if t.answer is not None and t.answer.ok), None)
    if seen_answer is None:
        if was_accepted:
            verdict.outcome = Outcome.STOPPING
            verdict.error_description = _join(
                verdict.error_description,
                "the API accepted the cancel (HTTP 2xx) but its answer could not be read, nor could the "
                "batch's state afterwards")
        return verdict
    seen = result_from_answer(batch_id, seen_answer)
    if seen.status_code == "STOPPED" or was_accepted:
        if seen.status_code != "STOPPED":
            seen.outcome = Outcome.STOPPING
        else:
            seen.outcome = Outcome.CANCELLED if seen.cancel_time is not None else Outcome.ALREADY_STOPPED
        seen.attempts = verdict.attempts
        seen.error_description = (f"the cancel's own answer was lost ({verdict.error_code}); "
                                  "the batch's state was confirmed with a GET")
        return seen
    verdict.status_code = seen.status_code
    verdict.ratelimit_remaining = seen.ratelimit_remaining
    return verdict


def _join(a: str | None, b: str) -> str:
    return f"{a}; {b}" if a else b
