"""Settling one row: what happened to a batch, decided in one place from the facts.

The client records a request's `Story` (each attempt's answer or transport failure, why its
retry loop ended, the answers of verification GETs); the functions here turn it into the
row's frozen `Result`, and build every other row a run can give (invalid, duplicate, not sent,
in flight, internal error, after polls). Every outcome rule lives here, pure and socket-free:

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
from dataclasses import dataclass, replace

from . import outcomes as oc
from .answers import Answer, safe_text
from .outcomes import Outcome, Result, classify, result_from_answer
from .reasons import Reason
from .retry import RETRY_STATUSES

__all__ = [
    "CONNECT_CHECKS", "GAVE_UP", "IN_FLIGHT", "INTERNAL_ERROR", "NOT_SENT", "VERIFY_TRIES", "Attempt", "Reason",
    "Story", "accepted", "after_polls", "cannot_connect", "duplicate", "duplicate_message", "halted",
    "in_flight", "internal_error", "invalid_id", "is_final", "key_refused", "needs_verification", "never_sent",
    "not_sent", "reads_stopped", "settle", "still_stopping", "unsent",
]

# GETs that may follow a cancel whose own answer was lost, to learn whether it was applied.
VERIFY_TRIES = 3

# smtoolkit's own codes for rows the run itself decides.
INTERNAL_ERROR = "INTERNAL_ERROR"
IN_FLIGHT = "INTERRUPTED_IN_FLIGHT"

#: Why a request's retry loop ended without a final answer, as the row says it.
GAVE_UP: dict[Reason, str] = {
    Reason.DEADLINE: "gave up: the row's time limit (row_deadline) was reached",
    Reason.RETRY_BUDGET: "gave up: the run's retry budget is spent (the server keeps failing)",
}

#: Why a request was never sent at all: the row's code and message.
NOT_SENT: dict[Reason, tuple[str | None, str]] = {
    # The run that halted says why (runner.halt_label, then `halted`); until then, no code.
    Reason.HALTED: (None, "not sent: the run halted"),
    Reason.RESERVE: (oc.BUDGET_RESERVE, "not sent: the hourly budget reached the reserve kept for production"),
    Reason.DEADLINE: (oc.ROW_DEADLINE, "not sent: the row's time limit passed while waiting for the rate limit"),
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
_KEY_REFUSED = frozenset({Outcome.UNAUTHORIZED, Outcome.FORBIDDEN})


@dataclass(frozen=True, slots=True)
class Attempt:
    """One exchange: the answer, or why there was none. `not_sent` names why no connection
    was made (then nothing was sent); None when the request may have reached the server."""

    answer: Answer | None
    error: str | None = None
    not_sent: str | None = None


@dataclass(frozen=True, slots=True)
class Story:
    """Everything that happened to one row's request, as the client recorded it.

    `method` is DELETE (a cancel) or GET (a lookup: outcomes say what a cancel would do);
    `ended` says why the retry loop stopped without a final answer (None: it got one);
    `checks` are the verification GETs made afterwards; `elapsed_s` the row's whole time.
    """

    batch_id: str
    method: str
    attempts: tuple[Attempt, ...] = ()
    ended: Reason | None = None
    checks: tuple[Attempt, ...] = ()
    elapsed_s: float = 0.0

    @property
    def last_answer(self) -> Answer | None:
        """The answer to the request's last attempt, if it got one."""
        return self.attempts[-1].answer if self.attempts else None


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
    return answer.ok or (not answer.is_2xx and answer.http_status not in RETRY_STATUSES)


def needs_verification(story: Story) -> bool:
    """A cancel that ended failed (429, 5xx, no answer, an unreadable 2xx) may still have been
    applied: a GET must tell, unless nothing was ever sent."""
    if story.method != "DELETE" or not story.attempts or never_sent(story.attempts):
        return False
    a = story.attempts[-1].answer
    if a is None or (a.is_2xx and not a.ok):
        return True
    if a.ok or (a.http_status == 409 and accepted(story.method, story.attempts)):
        return False
    return classify(a) in _FAILED


# -- the row of a story -------------------------------------------------------------------------
def settle(story: Story) -> Result:
    """The row's final result from everything that happened to its request."""
    verdict = _verdict(story)
    if needs_verification(story):
        verdict = _verified(story, verdict)
    return replace(verdict, elapsed_s=story.elapsed_s, reason=story.ended)


def _verdict(story: Story) -> Result:
    """The row as the request's own answers tell it (before any verification)."""
    batch_id, method, attempts = story.batch_id, story.method, story.attempts
    if not attempts:
        return not_sent(batch_id, story.ended or Reason.HALTED)
    last = attempts[-1]
    a = last.answer
    dry_run = method == "GET"  # a lookup says what a cancel would do
    if a is not None and a.ok:
        r = result_from_answer(batch_id, a, dry_run=dry_run)
    elif a is not None and a.http_status == 409 and accepted(method, attempts):
        # Our earlier DELETE was applied: this 409 is our own cancel.
        r = replace(result_from_answer(batch_id, a), outcome=Outcome.CANCELLED)
    elif a is not None and not a.is_2xx:
        r = result_from_answer(batch_id, a, dry_run=dry_run)
    elif never_sent(attempts):
        r = Result(batch_id, Outcome.NETWORK_ERROR, error_code=oc.CONNECT_FAILED,
                   error_message=f"not sent: {last.error}",
                   error_description=CONNECT_CHECKS.get(last.not_sent or "", CONNECT_CHECKS["connect"]))
    else:  # no answer, or a 2xx that could not be read
        r = Result(batch_id, Outcome.NETWORK_ERROR,
                   http_status=a.http_status if a else None,
                   error_code=(a.error_code or oc.UNREADABLE_RESPONSE) if a else oc.NETWORK_ERROR,
                   error_message=(a.error_message or "the answer's body could not be read") if a else last.error,
                   ratelimit_remaining=a.ratelimit_remaining if a else None)
    description = r.error_description
    if story.ended in GAVE_UP and r.outcome in _FAILED:
        description = _join(description, GAVE_UP[story.ended])
    return replace(r, attempts=len(attempts), error_description=description)


def _verified(story: Story, verdict: Result) -> Result:
    """A failed cancel's row, corrected by what its verification GETs read."""
    was_accepted = accepted(story.method, story.attempts)
    attempts = verdict.attempts + len(story.checks)
    seen_answer = next((t.answer for t in story.checks if t.answer is not None and t.answer.ok), None)
    if seen_answer is None:
        if was_accepted:
            return replace(verdict, outcome=Outcome.STOPPING, attempts=attempts, error_description=_join(
                verdict.error_description,
                "the API accepted the cancel (HTTP 2xx) but its answer could not be read, nor could the "
                "batch's state afterwards"))
        return replace(verdict, attempts=attempts)
    seen = result_from_answer(story.batch_id, seen_answer)
    if seen.status_code == "STOPPED" or was_accepted:
        if seen.status_code != "STOPPED":
            outcome = Outcome.STOPPING
        else:
            outcome = Outcome.CANCELLED if seen.cancel_time is not None else Outcome.ALREADY_STOPPED
        return replace(seen, outcome=outcome, attempts=attempts,
                       error_description=(f"the cancel's own answer was lost ({verdict.error_code}); "
                                          "the batch's state was confirmed with a GET"))
    return replace(verdict, attempts=attempts, status_code=seen.status_code,
                   ratelimit_remaining=seen.ratelimit_remaining)


# -- what a row's result says, for the runner -------------------------------------------------
def key_refused(result: Result) -> bool:
    """The API refused the key (unauthorized/forbidden): no other row will fare better."""
    return result.outcome in _KEY_REFUSED


def cannot_connect(result: Result) -> bool:
    """A row whose request never got a connection (it was retried, and nothing was sent)."""
    return result.outcome is Outcome.NETWORK_ERROR and result.error_code == oc.CONNECT_FAILED


# -- polling after a cancel ---------------------------------------------------------------------
def still_stopping(result: Result) -> bool:
    """A cancel the server took whose batch did not read STOPPED yet: worth polling."""
    return result.outcome is Outcome.STOPPING


def ends_stopped(result: Result) -> bool:
    """A row whose batch ended STOPPED (cancelled, or stopped already): the rows whose query
    counts say what the cancel did (`query_counts=`)."""
    return result.outcome in (Outcome.CANCELLED, Outcome.ALREADY_STOPPED)


def reads_stopped(poll: Result) -> bool:
    """A poll (a lookup) that read the batch as STOPPED: polling is over."""
    return poll.http_status == 200 and poll.status_code == "STOPPED"


def after_polls(result: Result, polls: Sequence[Result], waited: float) -> Result:
    """A `stopping` cancel's row after the lookups that polled it (each one that was sent):
    it takes what each readable poll read, is `cancelled` once one reads STOPPED, and
    otherwise says how long it waited. Their requests count in its attempts."""
    r = result
    attempts = r.attempts
    for seen in polls:
        attempts += seen.attempts
        if seen.http_status == 200 and seen.status_code is not None:
            r = replace(r, status_code=seen.status_code, request_id=seen.request_id,
                        cancel_time=seen.cancel_time or r.cancel_time, end_time=seen.end_time,
                        ratelimit_remaining=seen.ratelimit_remaining)
            if seen.status_code == "STOPPED":
                return replace(r, outcome=Outcome.CANCELLED, attempts=attempts)
    return replace(r, attempts=attempts,
                   error_description=f"still {r.status_code} after waiting {waited:g} s for it to stop")


# -- rows no request decided --------------------------------------------------------------------
def not_sent(batch_id: str, reason: Reason) -> Result:
    """The row of a request the gate refused to start (run halted, reserve, deadline)."""
    code, message = NOT_SENT.get(reason, NOT_SENT[Reason.HALTED])
    return Result(batch_id, Outcome.SKIPPED, error_code=code, error_message=message, reason=reason)


def unsent(batch_id: str, code: str, message: str) -> Result:
    """The row of an ID the run never got to, because it halted: the halt's code and message."""
    return Result(batch_id, Outcome.SKIPPED, error_code=code, error_message=message, reason=Reason.HALTED)


def halted(result: Result, code: str, message: str) -> Result:
    """`result` as the run's halt tells it: a row not sent because the run halted (or reached the
    reserve) says why the run halted; any other row is returned as it is."""
    if result.outcome is Outcome.SKIPPED and result.attempts == 0 and result.reason in (Reason.HALTED,
                                                                                         Reason.RESERVE):
        return replace(result, error_code=code, error_message=message)
    return result


def in_flight(batch_id: str) -> Result:
    """The row of a request still in flight when the run stopped waiting: its effect is unknown."""
    return Result(batch_id, Outcome.NETWORK_ERROR, error_code=IN_FLIGHT, attempts=1,
                  error_message="the run ended while this request was in flight; "
                                "its effect is unknown (run again to settle it)")


def internal_error(batch_id: str, cause: str) -> Result:
    """The row of an ID whose handling failed inside smtoolkit (`cause`: one line about it)."""
    return Result(batch_id, Outcome.NETWORK_ERROR, error_code=INTERNAL_ERROR,
                  error_message=f"smtoolkit failed while handling this batch ({cause}); "
                                "a request may have been sent: run again to settle it")


def invalid_id(value: object, problem: str | None) -> Result:
    """The row of an ID refused locally (never sent); text is shown as given, made encodable."""
    shown = safe_text(value)[0] if isinstance(value, str) else None
    return Result(shown, Outcome.INVALID_ID, error_code=oc.INVALID_BATCH_ID, error_message=problem or "invalid batch ID")


def duplicate(batch_id: str | None = None, message: str | None = None) -> Result:
    """The row of an ID given again later in the input (sent once, for the earlier row).
    A report shares one such row and fills in each one's ID and `duplicate_message`."""
    return Result(batch_id, Outcome.DUPLICATE, error_code=oc.DUPLICATE_BATCH_ID, error_message=message)


def duplicate_message(earlier: object) -> str:
    """What a duplicate row says, given the label of the earlier row with the same ID."""
    return f"same batch ID as input row {earlier!r}; sent once"


def _join(a: str | None, b: str) -> str:
    return f"{a}; {b}" if a else b
