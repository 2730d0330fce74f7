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
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING

from .core import outcomes as oc
from .core import settle
from .core.outcomes import Result
from .core.reasons import Reason
from .errors import JournalError
from .limiter import RunContext

if TYPE_CHECKING:
    from .client import Client

Operation = Callable[[str, RunContext], Result]
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
                "halted after an unauthorized/forbidden answer: {n} row(s) not sent "
                "(skipped/SKIPPED_AUTH_FAILED). Check the API key, then run again."),
    Halt.RESERVE: (oc.BUDGET_RESERVE, "not sent: the hourly budget reached the reserve kept for production",
                   "halted at the budget reserve: {n} row(s) not sent (skipped/BUDGET_RESERVE). "
                   "Run the skipped rows again after the hourly window resets, or lower reserve=."),
    Halt.UNREACHABLE: (oc.SKIPPED_UNREACHABLE, "not sent: the API could not be reached ({cause})",
                       "halted: the API could not be reached ({cause}). {n} row(s) not sent "
                       "(skipped/SKIPPED_UNREACHABLE); the rows that tried could not connect "
                       "(network_error/CONNECT_FAILED: not sent either). {check} Then run again."),
    Halt.INTERRUPT: (oc.INTERRUPTED, "not sent: the run was interrupted",
                     "interrupted: {n} row(s) not sent (skipped/INTERRUPTED); the report holds every answer received."),
    Halt.ERROR: (RUN_ERROR, "not sent: the run halted on an error ({cause})",
                 "halted on an error: {cause}. {n} row(s) not sent (skipped/{code}); "
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
    """The error code and message of the rows a run with this halt did not send."""
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
    context: RunContext | None = None,
) -> RunResult:
    """Apply `operation` to each ID (each once); a result for every ID. Never raises (but
    for BaseExceptions other than KeyboardInterrupt, which are not the run's to own).

    Each sink in `on_result` is called in this thread for every result, in the order they
    arrive. A sink that raises is not called again and halts the run (`Halt.ERROR`), as does
    an operation that raises: sending stops at once, requests in flight get up to `grace`
    seconds, and IDs never sent are `skipped` with a code naming the cause. On
    KeyboardInterrupt the same happens with `INTERRUPTED`. `on_idle` is called in this
    thread about ten times a second while no result arrives (to show a wait, say); like a
    sink, it halts the run if it raises. `context` (the run's halt signal, tally and budget
    wait; a fresh one by default) is handed to every call of `operation`; the run sets its
    halt signal when it halts.
    """
    return _Run(ids, operation, workers=workers, on_result=on_result, stop_on_auth_error=stop_on_auth_error,
                grace=grace, on_idle=on_idle, context=context or RunContext()).run()


class _Run:
    """One run of `run`: worker threads send; this thread takes their results, feeds the
    sinks, decides whether the run halts, and settles every ID at the end."""

    def __init__(self, ids: Iterable[str], operation: Operation, *, workers: int, on_result: Sink | Sequence[Sink],
                 stop_on_auth_error: bool, grace: float, on_idle: Callable[[], None] | None,
                 context: RunContext) -> None:
        self.operation, self.context, self.grace, self.on_idle = operation, context, grace, on_idle
        self.stop_on_auth_error = stop_on_auth_error
        self.sinks = [on_result] if callable(on_result) else list(on_result)
        self.todo = list(ids)
        self.workers = max(1, min(workers, len(self.todo) or 1))
        self.halted: Halt | None = None
        self.cause: BaseException | None = None
        self.unreachable: list[Result] = []  # rows in a row that could not connect (reset by one that did)
        self.results: dict[str, Result] = {}
        self.lock = threading.Lock()
        self.source = iter(self.todo)
        self.busy: dict[int, str] = {}
        self.out: queue.Queue[tuple[str | None, Result | BaseException | None]] = queue.Queue()
        self.deadline: float | None = None  # once the run ends early: how long to wait for requests in flight
        self.pending: tuple[str, Result | BaseException] | None = None  # being taken when an interrupt came

    def run(self) -> RunResult:
        threads = [threading.Thread(target=self.worker, args=(n,), name=f"smtoolkit-worker-{n}", daemon=True)
                   for n in range(self.workers)]
        for t in threads:
            t.start()
        alive = len(threads)
        while alive:
            try:
                alive -= self.receive()
            except KeyboardInterrupt:
                if self.deadline is not None:
                    break  # a second interrupt, or one while settling after an error: stop waiting
                self.halt(Halt.INTERRUPT)
            if self.deadline is not None and time.monotonic() >= self.deadline:
                break
        self.context.halt.set()
        for _ in range(3):  # settling is idempotent: an interrupt here only repeats it
            try:
                self.take_pending()
                self.settle_the_rest()
                break
            except KeyboardInterrupt:
                self.halt(Halt.INTERRUPT)
        return RunResult(self.results, self.halted, self.cause, self.last_unreachable())

    def worker(self, n: int) -> None:
        stop = self.context.halt
        while not stop.is_set():
            with self.lock:
                batch_id = next(self.source, None)
                if batch_id is None:
                    break
                self.busy[n] = batch_id
            try:
                res: Result | BaseException = self.operation(batch_id, self.context)
            except BaseException as exc:  # noqa: BLE001 - reported to the main thread
                res = exc
                stop.set()  # a bug: no other worker may go on sending behind the caller's back
            if self.stop_on_auth_error and isinstance(res, Result) and settle.key_refused(res):
                stop.set()  # at once, not when the main thread gets to it
            self.out.put((batch_id, res))  # queued before it stops counting as in flight
            with self.lock:
                self.busy.pop(n, None)
        self.out.put((None, None))  # this worker is done

    def receive(self) -> int:
        """Take one worker's result (or call `on_idle`); 1 when a worker said it is done."""
        self.take_pending()
        try:
            timeout = 0.1 if self.deadline is None else max(0.001, self.deadline - time.monotonic())
            batch_id, item = self.out.get(timeout=timeout)
        except queue.Empty:
            if self.on_idle is not None and self.deadline is None:
                try:
                    self.on_idle()
                except Exception as exc:  # noqa: BLE001 - as for a sink
                    self.on_idle = None
                    self.halt(Halt.ERROR, exc)
            return 0
        if item is None or batch_id is None:
            return 1
        self.pending = (batch_id, item)
        self.take_pending()
        return 0

    def take_pending(self) -> None:
        if self.pending is not None:
            taking = self.pending
            self.take(*taking)
            self.pending = None

    def last_unreachable(self) -> Result | None:
        return self.unreachable[-1] if self.halted is Halt.UNREACHABLE and self.unreachable else None

    def halt(self, reason: Halt, exc: BaseException | None = None) -> None:
        if self.halted is None:
            self.halted, self.cause = reason, exc
        self.context.halt.set()
        if reason in (Halt.INTERRUPT, Halt.ERROR) and self.deadline is None:
            self.deadline = time.monotonic() + self.grace

    def emit(self, result: Result) -> None:
        for sink in list(self.sinks):
            try:
                sink(result)
            except Exception as exc:  # noqa: BLE001 - the run owns it: it ends, the report stays
                self.sinks.remove(sink)
                self.halt(Halt.ERROR, exc)

    def take(self, batch_id: str, item: Result | BaseException) -> None:
        if batch_id in self.results:
            return  # already taken (an interrupt landed while it was being handled)
        if isinstance(item, BaseException):
            result = settle.internal_error(batch_id, describe_error(item))
            self.halt(Halt.ERROR, item)
        else:
            result = item
            if result.reason is Reason.RESERVE:
                self.halt(Halt.RESERVE)
            if self.stop_on_auth_error and settle.key_refused(result):
                self.halt(Halt.AUTH)
            if settle.cannot_connect(result):
                self.unreachable.append(result)
                if len(self.unreachable) >= UNREACHABLE_ROWS:
                    self.halt(Halt.UNREACHABLE)
            elif result.attempts:  # it reached the API (or may have): the network works
                self.unreachable.clear()
        self.results[batch_id] = result
        self.emit(result)

    def settle_the_rest(self) -> None:
        # In-flight first, then the queue: a worker queues its result before it leaves `busy`,
        # so every request is found in one of the two (never reported as not sent).
        with self.lock:
            in_flight = list(self.busy.values())
        while True:  # answers that arrived while we stopped waiting
            try:
                batch_id, item = self.out.get_nowait()
            except queue.Empty:
                break
            if item is not None and batch_id is not None:
                self.take(batch_id, item)
        code, message = halt_label(self.halted, self.cause, self.last_unreachable())
        # Requests still in flight after the grace period: their effect is unknown.
        for batch_id in in_flight:
            if batch_id not in self.results:
                self.results[batch_id] = r = settle.in_flight(batch_id)
                self.emit(r)
        for batch_id in self.todo:
            if batch_id not in self.results:
                self.results[batch_id] = r = settle.unsent(batch_id, code, message)
                self.emit(r)
        # Rows not sent because the run halted say why, whatever order their results came in.
        for batch_id, r in self.results.items():
            self.results[batch_id] = settle.halted(r, code, message)


class CancelAndWait:
    """The operation of a cancel run: cancel, then (with `wait`) poll GET until the batch
    reads STOPPED or the time is up. Polls go through the same limiter and tally, but never
    wait for the budget: a poll refused at the reserve ends the polling."""

    def __init__(self, client: Client, wait: float | None) -> None:
        self.client, self.wait = client, wait
        self.polls = 0
        self._lock = threading.Lock()

    def __call__(self, batch_id: str, context: RunContext) -> Result:
        r = self.client.cancel(batch_id, context=context)
        if not self.wait or not settle.still_stopping(r):
            return r
        return settle.after_polls(r, self._poll(batch_id, replace(context, budget_wait=None)), self.wait)

    def _poll(self, batch_id: str, context: RunContext) -> list[Result]:
        """The lookups sent while waiting for the batch to read STOPPED (none once one is not sent)."""
        halt = context.halt
        polls: list[Result] = []
        deadline = time.monotonic() + (self.wait or 0.0)
        gap = POLL_FIRST
        while not halt.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or halt.wait(min(gap, left)):
                break
            seen = self.client.lookup(batch_id, context=context)
            if seen.attempts == 0:
                break  # not sent: the run halted or the budget reached the reserve
            with self._lock:
                self.polls += seen.attempts
            polls.append(seen)
            if settle.reads_stopped(seen):
                break
            gap = min(gap * POLL_GROWTH, POLL_MAX)
        return polls
