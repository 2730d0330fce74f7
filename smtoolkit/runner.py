"""The bulk engine: one operation over many IDs with a pool of workers.

Workers pull IDs from a shared iterator and share the client's pacer; results come back to
the calling thread, which alone talks to the sinks (journal, progress bar). A run ends
early on an auth failure, on reaching the budget reserve, when the API cannot be reached
(rows keep failing before anything is sent), on KeyboardInterrupt, or on any error inside
the run itself (a sink that raises, a bug in an operation). However it ends,
`run` returns a result for every ID: once a request may have been sent, the caller gets the
report, and nothing new is sent after `run` has returned.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from .core import outcomes as oc
from .core.outcomes import Outcome, Result
from .errors import JournalError

if TYPE_CHECKING:
    from .client import Client
    from .limiter import BudgetWait, Tally

Operation = Callable[[str, threading.Event], Result]
Sink = Callable[[Result], None]

#: Most workers a run may use (the library and the command line alike).
MAX_WORKERS = 64
#: Seconds an interrupted (or failed) run waits for requests already in flight.
INTERRUPT_GRACE = 5.0
# Polling after a cancel that still reads QUEUED/RUNNING: first gap, growth, longest gap.
POLL_FIRST, POLL_GROWTH, POLL_MAX = 0.5, 1.5, 5.0
#: Rows in a row (each already retried) that could not connect at all, with no row between that
#: reached the API, after which a run halts: the network, the VPN or the base URL is wrong.
UNREACHABLE_ROWS = 5

JOURNAL_ERROR = "JOURNAL_ERROR"
RUN_ERROR = "RUN_ERROR"
INTERNAL_ERROR = "INTERNAL_ERROR"
IN_FLIGHT = "INTERRUPTED_IN_FLIGHT"


class Halt(str, Enum):
    """Why a run ended before every ID was sent (a batch *stops*; a run *halts*)."""

    AUTH = "auth"
    RESERVE = "reserve"
    UNREACHABLE = "unreachable"
    INTERRUPT = "interrupt"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


# One table: each halt's row code, row message, and the run's message ({n}: rows not sent;
# {cause}: the error, or for UNREACHABLE the last connection failure; {check}: what to check).
_HALTS: dict[Halt, tuple[str, str, str]] = {
    Halt.AUTH: (oc.SKIPPED_AUTH_FAILED, "not sent: an earlier request was refused as unauthorized/forbidden",
                "stopped after an unauthorized/forbidden answer: {n} row(s) not sent "
                "(skipped/SKIPPED_AUTH_FAILED). Check the API key, then run again."),
    Halt.RESERVE: (oc.BUDGET_RESERVE, "not sent: the hourly budget reached the reserve kept for production",
                   "stopped at the budget reserve: {n} row(s) not sent (skipped/BUDGET_RESERVE). "
                   "Run the skipped rows again after the hourly window resets, or lower reserve=."),
    Halt.UNREACHABLE: (oc.SKIPPED_UNREACHABLE, "not sent: the API could not be reached ({cause})",
                       "stopped: the API could not be reached ({cause}). {n} row(s) not sent "
                       "(skipped/SKIPPED_UNREACHABLE); the rows that tried could not connect "
                       "(network_error/CONNECT_FAILED: not sent either). {check} Then run again."),
    Halt.INTERRUPT: (oc.INTERRUPTED, "not sent: the run was interrupted",
                     "interrupted: {n} row(s) not sent (skipped/INTERRUPTED); the report holds every answer received."),
    Halt.ERROR: (RUN_ERROR, "not sent: the run stopped on an error ({cause})",
                 "stopped on an error: {cause}. {n} row(s) not sent (skipped/{code}); "
                 "the report holds every answer received."),
}


@dataclass(frozen=True)
class RunResult:
    """What a run returns: a result for every ID, and why it halted early (if it did)."""

    results: dict[str, Result]
    halt: Halt | None = None
    error: BaseException | None = None  # with Halt.ERROR: what ended the run
    unreachable: Result | None = None  # with Halt.UNREACHABLE: the last row that could not connect

    @property
    def error_text(self) -> str | None:
        return None if self.error is None else describe_error(self.error)

    def skip_label(self) -> tuple[str, str]:
        """The error code and message of rows not sent because of how the run ended."""
        return halt_label(self.halt, self.error, self.unreachable)

    def message(self, not_sent: int) -> str | None:
        """One line for the user about an early halt, or None."""
        if self.halt is None:
            return None
        code, _ = self.skip_label()
        cause, check = _unreachable_cause(self.unreachable)
        return _HALTS[self.halt][2].format(n=not_sent, cause=self.error_text or cause, code=code, check=check)


def halt_label(halt: Halt | None, error: BaseException | None,
               unreachable: Result | None = None) -> tuple[str, str]:
    if halt is Halt.ERROR and isinstance(error, JournalError):
        return JOURNAL_ERROR, f"not sent: the run stopped because {describe_error(error)}"
    code, row, _ = _HALTS[halt or Halt.INTERRUPT]
    cause = describe_error(error) if error is not None else _unreachable_cause(unreachable)[0]
    return code, row.format(cause=cause)


def _unreachable_cause(row: Result | None) -> tuple[str, str]:
    """Why a row could not connect, and what to check (from its CONNECT_FAILED message)."""
    if row is None:
        return "unknown", "Check the network connection, the VPN, the base URL and any proxy."
    return ((row.error_message or "unknown").removeprefix("not sent: "),
            row.error_description or "Check the network connection, the VPN and the base URL.")


def cannot_connect(result: Result) -> bool:
    """A row whose request never got a connection (it was retried, and nothing was sent)."""
    return result.outcome is Outcome.NETWORK_ERROR and result.error_code == oc.CONNECT_FAILED


def describe_error(exc: BaseException) -> str:
    """One line about an exception that ended a run (key-free: no locals, no headers)."""
    if isinstance(exc, JournalError):
        return str(exc)
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run(
    ids: Iterable[str],
    operation: Operation,
    *,
    workers: int,
    on_result: Sink | Sequence[Sink] = (),
    stop_on_auth_error: bool = True,
    grace: float = INTERRUPT_GRACE,
    on_idle: Callable[[], None] | None = None,
) -> RunResult:
    """Apply `operation` to each ID (each once); a result for every ID. Never raises (but
    for BaseExceptions other than KeyboardInterrupt, which are not the run's to own).

    Each sink in `on_result` is called in this thread for every result, in the order they
    arrive. A sink that raises is not called again and halts the run (`Halt.ERROR`), as does
    an operation that raises: sending stops at once, requests in flight get up to `grace`
    seconds, and IDs never sent are `skipped` with a code naming the cause. On
    KeyboardInterrupt the same happens with `INTERRUPTED`. `on_idle` is called in this
    thread about ten times a second while no result arrives (to show a wait, say); like a
    sink, it halts the run if it raises.
    """
    halted: Halt | None = None
    cause: BaseException | None = None
    unreachable: list[Result] = []  # rows in a row that could not connect (reset by one that did)
    sinks = [on_result] if callable(on_result) else list(on_result)
    todo = list(ids)
    results: dict[str, Result] = {}
    stop = threading.Event()
    lock = threading.Lock()
    source = iter(todo)
    busy: dict[int, str] = {}
    out: queue.Queue[tuple[str | None, Result | BaseException | None]] = queue.Queue()
    deadline: float | None = None  # once the run ends early: how long to wait for requests in flight

    def worker(n: int) -> None:
        while not stop.is_set():
            with lock:
                batch_id = next(source, None)
                if batch_id is None:
                    break
                busy[n] = batch_id
            try:
                res: Result | BaseException = operation(batch_id, stop)
            except BaseException as exc:  # noqa: BLE001 - reported to the main thread
                res = exc
                stop.set()  # a bug: no other worker may go on sending behind the caller's back
            if (stop_on_auth_error and isinstance(res, Result)
                    and res.outcome in (Outcome.UNAUTHORIZED, Outcome.FORBIDDEN)):
                stop.set()  # at once, not when the main thread gets to it
            out.put((batch_id, res))  # queued before it stops counting as in flight
            with lock:
                busy.pop(n, None)
        out.put((None, None))  # this worker is done

    def last_unreachable() -> Result | None:
        return unreachable[-1] if halted is Halt.UNREACHABLE and unreachable else None

    def halt(reason: Halt, exc: BaseException | None = None) -> None:
        nonlocal deadline, halted, cause
        if halted is None:
            halted, cause = reason, exc
        stop.set()
        if reason in (Halt.INTERRUPT, Halt.ERROR) and deadline is None:
            deadline = time.monotonic() + grace

    def emit(result: Result) -> None:
        for sink in list(sinks):
            try:
                sink(result)
            except Exception as exc:  # noqa: BLE001 - the run owns it: it ends, the report stays
                sinks.remove(sink)
                halt(Halt.ERROR, exc)

    def take(batch_id: str, item: Result | BaseException) -> None:
        if batch_id in results:
            return  # already taken (an interrupt landed while it was being handled)
        if isinstance(item, BaseException):
            result = Result(batch_id, Outcome.NETWORK_ERROR, error_code=INTERNAL_ERROR,
                            error_message=f"smtoolkit failed while handling this batch ({describe_error(item)}); "
                                          "a request may have been sent: run again to settle it")
            halt(Halt.ERROR, item)
        else:
            result = item
            if result.outcome is Outcome.SKIPPED and result.attempts == 0 and result.error_code == oc.BUDGET_RESERVE:
                halt(Halt.RESERVE)
            if stop_on_auth_error and result.outcome in (Outcome.UNAUTHORIZED, Outcome.FORBIDDEN):
                halt(Halt.AUTH)
            if cannot_connect(result):
                unreachable.append(result)
                if len(unreachable) >= UNREACHABLE_ROWS:
                    halt(Halt.UNREACHABLE)
            elif result.attempts:  # it reached the API (or may have): the network works
                unreachable.clear()
        results[batch_id] = result
        emit(result)

    def settle_the_rest() -> None:
        # In-flight first, then the queue: a worker queues its result before it leaves `busy`,
        # so every request is found in one of the two (never reported as not sent).
        with lock:
            in_flight = list(busy.values())
        while True:  # answers that arrived while we stopped waiting
            try:
                batch_id, item = out.get_nowait()
            except queue.Empty:
                break
            if item is not None and batch_id is not None:
                take(batch_id, item)
        # Requests still in flight after the grace period: their effect is unknown.
        for batch_id in in_flight:
            if batch_id not in results:
                r = Result(batch_id, Outcome.NETWORK_ERROR, error_code=IN_FLIGHT,
                           error_message="the run ended while this request was in flight; "
                                         "its effect is unknown (run again to settle it)", attempts=1)
                results[batch_id] = r
                emit(r)
        for batch_id in todo:
            if batch_id not in results:
                r = Result(batch_id, Outcome.SKIPPED)
                results[batch_id] = r
                emit(r)
        # Rows not sent because the run halted say why, whatever order their results came in.
        for r in results.values():
            if r.outcome is Outcome.SKIPPED and r.attempts == 0 and r.error_code != oc.ROW_DEADLINE:
                if halted is not None or r.error_code is None:
                    r.error_code, r.error_message = halt_label(halted, cause, last_unreachable())

    threads = [threading.Thread(target=worker, args=(n,), name=f"smtoolkit-worker-{n}", daemon=True)
               for n in range(max(1, min(workers, len(todo) or 1)))]
    for t in threads:
        t.start()
    alive = len(threads)
    pending: tuple[str, Result | BaseException] | None = None
    while alive:
        try:
            if pending is not None:  # taken when an interrupt cut its handling short
                taking, pending = pending, None
                take(*taking)
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                timeout = 0.1 if deadline is None else max(0.001, deadline - time.monotonic())
                batch_id, item = out.get(timeout=timeout)
            except queue.Empty:
                if on_idle is not None and deadline is None:
                    try:
                        on_idle()
                    except Exception as exc:  # noqa: BLE001 - as for a sink
                        on_idle = None
                        halt(Halt.ERROR, exc)
                continue
            if item is None or batch_id is None:
                alive -= 1
                continue
            pending = (batch_id, item)
            take(batch_id, item)
            pending = None
        except KeyboardInterrupt:
            if deadline is not None:
                break  # a second interrupt, or one while settling after an error: stop waiting
            halt(Halt.INTERRUPT)
    stop.set()
    for _ in range(3):  # settling is idempotent: an interrupt here only repeats it
        try:
            if pending is not None:
                taking, pending = pending, None
                take(*taking)
            settle_the_rest()
            break
        except KeyboardInterrupt:
            halt(Halt.INTERRUPT)
    return RunResult(results, halted, cause, last_unreachable())


class CancelAndWait:
    """The operation of a cancel run: cancel, then (with `wait`) poll GET until the batch
    reads STOPPED or the time is up. Polls go through the same limiter and tally."""

    def __init__(self, client: Client, wait: float | None, tally: Tally | None = None,
                 budget_wait: BudgetWait | None = None) -> None:
        self.client, self.wait, self.tally, self.budget_wait = client, wait, tally, budget_wait
        self.polls = 0
        self._lock = threading.Lock()

    def __call__(self, batch_id: str, stop: threading.Event) -> Result:
        r = self.client.cancel(batch_id, stop=stop, tally=self.tally, budget_wait=self.budget_wait)
        if not self.wait or r.outcome is not Outcome.STOPPING:
            return r
        deadline = time.monotonic() + self.wait
        gap = POLL_FIRST
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if stop.wait(min(gap, left)):
                break
            seen = self.client.lookup(batch_id, stop=stop, tally=self.tally)
            if seen.attempts == 0:
                break  # not sent: the run halted or the budget reached the reserve
            with self._lock:
                self.polls += seen.attempts
            r.attempts += seen.attempts
            if seen.http_status == 200 and seen.status_code is not None:
                r.status_code, r.request_id = seen.status_code, seen.request_id
                r.cancel_time = seen.cancel_time or r.cancel_time
                r.end_time = seen.end_time
                r.ratelimit_remaining = seen.ratelimit_remaining
                if seen.status_code == "STOPPED":
                    r.outcome = Outcome.CANCELLED
                    return r
            gap = min(gap * POLL_GROWTH, POLL_MAX)
        r.error_description = f"still {r.status_code} after waiting {self.wait:g} s for it to stop"
        return r
