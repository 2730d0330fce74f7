"""What happened to one batch: the outcome vocabulary, the result record (a frozen value: a
changed row is a new one, `dataclasses.replace`), and the rules that turn an `Answer` into an
outcome."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, cast

from .answers import Answer, compact_json
from .reasons import Reason


class Outcome(str, Enum):
    """Exactly one per report row."""

    CANCELLED = "cancelled"  # 200 and STOPPED with a cancel_time
    STOPPING = "stopping"  # 200 but still QUEUED/RUNNING
    ALREADY_STOPPED = "already_stopped"  # 409, or 200 STOPPED without cancel_time
    NOT_FOUND = "not_found"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"  # still 429 after the retries
    SERVER_ERROR = "server_error"  # still 5xx (or an unexpected answer) after the retries
    NETWORK_ERROR = "network_error"  # still no usable answer after the retries
    CLIENT_ERROR = "client_error"  # any other 4xx, never retried
    INVALID_ID = "invalid_id"  # rejected locally, never sent
    DUPLICATE = "duplicate"  # same ID earlier in the input, sent once
    SKIPPED = "skipped"  # not attempted: the run stopped
    WOULD_CANCEL = "would_cancel"  # dry run: the batch is QUEUED/RUNNING
    LEFT_ALONE = "left_alone"  # looked up, and not chosen by the run's criteria (only_status=, ...)

    def __str__(self) -> str:
        return self.value


#: Outcomes after which nothing more needs doing for a batch (a resumed run skips them).
FINAL = frozenset({Outcome.CANCELLED, Outcome.ALREADY_STOPPED, Outcome.NOT_FOUND})
#: Outcomes a journal settles: a run resumed from it sends nothing more for these rows (the
#: final ones, and the rows a confirmed plan left alone: a resume must not cancel them).
SETTLED = FINAL | {Outcome.LEFT_ALONE}
#: Outcomes that count as success for exit codes and summaries.
FINE = frozenset({Outcome.CANCELLED, Outcome.ALREADY_STOPPED, Outcome.NOT_FOUND,
                  Outcome.DUPLICATE, Outcome.WOULD_CANCEL, Outcome.LEFT_ALONE})
#: Outcomes a retry could change (`to_retry`, the console's selection after a cancel): the batch
#: may still be running (stopping, would_cancel), or no final answer came (failures, skipped,
#: a key refused). Not: final rows, rows left alone on purpose, invalid IDs, duplicates.
RETRY = frozenset({Outcome.STOPPING, Outcome.WOULD_CANCEL, Outcome.UNAUTHORIZED, Outcome.FORBIDDEN,
                   Outcome.RATE_LIMITED, Outcome.SERVER_ERROR, Outcome.NETWORK_ERROR, Outcome.CLIENT_ERROR,
                   Outcome.SKIPPED})
_RETRY_TEXT = frozenset(o.value for o in RETRY)


def could_retry(outcome: object) -> bool:
    """Whether a retry could change a row with this outcome (an `Outcome` or its text)."""
    return (outcome.value if isinstance(outcome, Outcome) else outcome) in _RETRY_TEXT

# smtoolkit's own error codes for outcomes decided locally.
INVALID_BATCH_ID = "INVALID_BATCH_ID"
DUPLICATE_BATCH_ID = "DUPLICATE_BATCH_ID"
SKIPPED_AUTH_FAILED = "SKIPPED_AUTH_FAILED"
SKIPPED_UNREACHABLE = "SKIPPED_UNREACHABLE"
BUDGET_RESERVE = "BUDGET_RESERVE"
INTERRUPTED = "INTERRUPTED"
NETWORK_ERROR = "NETWORK_ERROR"
CONNECT_FAILED = "CONNECT_FAILED"  # network_error, but nothing was sent: no connection was ever made
UNREADABLE_RESPONSE = "UNREADABLE_RESPONSE"
ROW_DEADLINE = "ROW_DEADLINE"
UNKNOWN_STATUS = "UNKNOWN_STATUS"
NOT_SELECTED = "NOT_SELECTED"  # left_alone: the look-up showed a batch the criteria do not choose
NOT_CONFIRMED = "NOT_CONFIRMED"  # skipped: the plan was shown and not confirmed

RUNNING_STATES = frozenset({"QUEUED", "RUNNING"})


@dataclass(frozen=True, slots=True)
class Result:
    """What happened to one batch ID; the same fields as one report row. Frozen: a row is
    built once (by `core.settle`, or read back from a journal) and never edited."""

    batch_id: str | None
    outcome: Outcome
    http_status: int | None = None
    status_code: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_description: str | None = None
    request_id: str | None = None
    cancel_time: datetime | None = None
    end_time: datetime | None = None
    attempts: int = 0
    elapsed_s: float = 0.0
    ratelimit_remaining: int | None = None
    batch: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    #: Why the request's story ended without a final answer (None: it got one), from the
    #: client's record; the runner halts on `Reason.RESERVE` without reading the row's fields.
    reason: Reason | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.outcome in FINE

    def row(self) -> dict[str, Any]:
        """The report columns (everything but the raw batch record)."""
        d = asdict(self)
        d.pop("batch")
        d.pop("reason")
        d["outcome"] = self.outcome.value
        return d


class _Restored:
    """See `restored`: Result's slots, written directly; `__init__` ends by making the instance
    a Result (`__class__` may change between classes whose instances have the same layout)."""

    __slots__ = tuple(Result.__dataclass_fields__)

    def __init__(self, batch_id: str, outcome: Outcome, http_status: int | None, status_code: str | None,
                 error_code: str | None, error_message: str | None, error_description: str | None,
                 request_id: str | None, cancel_time: datetime | None, end_time: datetime | None, attempts: int,
                 elapsed_s: float, ratelimit_remaining: int | None) -> None:
        self.batch_id = batch_id
        self.outcome = outcome
        self.http_status = http_status
        self.status_code = status_code
        self.error_code = error_code
        self.error_message = error_message
        self.error_description = error_description
        self.request_id = request_id
        self.cancel_time = cancel_time
        self.end_time = end_time
        self.attempts = attempts
        self.elapsed_s = elapsed_s
        self.ratelimit_remaining = ratelimit_remaining
        self.batch = None
        self.reason = None
        self.__class__ = Result  # type: ignore[assignment]


#: `restored(batch_id, outcome, http_status, ..., ratelimit_remaining)` (the report columns, in
#: order): a row read back from a record whose fields were already checked (a journal line),
#: equal to `Result(...)` with the same values and as frozen. The dataclass's own `__init__`
#: writes each field through `object.__setattr__` (about 2 us a row, a third of reading a
#: journal line); a journal of a million lines is read before a run starts.
restored = cast(Callable[..., Result], _Restored)


REPORT_COLUMNS: tuple[str, ...] = (
    "batch_id", "outcome", "http_status", "status_code", "error_code", "error_message",
    "error_description", "request_id", "cancel_time", "end_time", "attempts", "elapsed_s",
    "ratelimit_remaining",
)


def parse_time(value: Any) -> datetime | None:
    """An API date-time as an aware UTC datetime; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    if value[-1] == "Z" and value[0].isdigit():  # the API's and the journal's own form: quick
        try:
            dt = datetime.fromisoformat(value)  # reads "Z" as UTC since Python 3.11
        except ValueError:
            pass
        else:
            if dt.tzinfo is UTC:
                return dt
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None

    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def classify(answer: Answer, *, dry_run: bool = False) -> Outcome:
    """The outcome of a final answer to DELETE (or, for a dry run, GET) of one batch."""
    s = answer.http_status
    if 200 <= s < 300:
        data = answer.data or {}
        status = data.get("status_code")
        if not isinstance(status, str):  # a list or dict here would not even be hashable
            status = None
        if status in RUNNING_STATES:
            return Outcome.WOULD_CANCEL if dry_run else Outcome.STOPPING
        if status == "STOPPED":
            if dry_run:
                return Outcome.ALREADY_STOPPED
            return Outcome.CANCELLED if data.get("cancel_time") else Outcome.ALREADY_STOPPED
        # A status we do not know: the request was accepted, but we cannot say the batch stopped.
        return Outcome.WOULD_CANCEL if dry_run else Outcome.STOPPING
    if s == 404:
        return Outcome.NOT_FOUND
    if s == 401:
        return Outcome.UNAUTHORIZED
    if s == 403:
        return Outcome.FORBIDDEN
    if s == 409 and (answer.error_code in (None, "CONFLICT_ERROR", "HTTP_409")):
        return Outcome.ALREADY_STOPPED
    if s == 429:
        return Outcome.RATE_LIMITED
    if 400 <= s < 500:
        return Outcome.CLIENT_ERROR
    return Outcome.SERVER_ERROR


def result_from_answer(batch_id: str, answer: Answer, *, dry_run: bool = False) -> Result:
    """Build the result row for a final answer (attempts and timing are filled in by the caller)."""
    outcome = classify(answer, dry_run=dry_run)
    data = dict(answer.data) if answer.data else None
    status = data.get("status_code") if data else None
    shown_status = (status if isinstance(status, str) else compact_json(status, 100)) if status is not None else None
    error_code, error_message = answer.error_code, answer.error_message
    if answer.is_2xx and not (isinstance(status, str) and (status in RUNNING_STATES or status == "STOPPED")):
        error_code = UNKNOWN_STATUS if data else UNREADABLE_RESPONSE
        shown = json.dumps(status, ensure_ascii=False) if isinstance(status, str) else shown_status
        error_message = (f"the API answered with batch status {shown}, which smtoolkit does not know"
                         if data else "the API answered 2xx without a readable batch record")
    return Result(
        batch_id=batch_id,
        outcome=outcome,
        http_status=answer.http_status,
        status_code=shown_status,
        error_code=error_code,
        error_message=error_message,
        error_description=answer.error_description,
        request_id=answer.request_id,
        cancel_time=parse_time(data.get("cancel_time")) if data else None,
        end_time=parse_time(data.get("end_time")) if data else None,
        ratelimit_remaining=answer.ratelimit_remaining,
        batch=data,
    )
