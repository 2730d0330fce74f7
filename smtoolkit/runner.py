"""The bulk engine: one operation over many IDs with a pool of workers.

Workers pull IDs from a shared iterator and share the client's pacer; results come back to
the calling thread, which alone talks to the sinks (journal, progress bar). A run ends
early on an auth failure, on reaching the budget reserve, on KeyboardInterrupt, or on any
error inside the run itself (a sink that raises, a bug in an operation). However it ends,
`run` returns a result for every ID: once a request may have been sent, the caller gets the
report, and nothing new is sent after `run` has returned.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from .core import outcomes as oc
from .core.outcomes import Outcome, Result
from .errors import JournalError

Operation = Callable[[str, threading.Event], Result]
Sink = Callable[[Result], None]

#: Seconds an interrupted (or failed) run waits for requests already in flight.
INTERRUPT_GRACE = 5.0

JOURNAL_ERROR = "JOURNAL_ERROR"
RUN_ERROR = "RUN_ERROR"
INTERNAL_ERROR = "INTERNAL_ERROR"
IN_FLIGHT = "INTERRUPTED_IN_FLIGHT"

_STOP_CODES = {
    "auth": (oc.SKIPPED_AUTH_FAILED, "not sent: an earlier request was refused as unauthorized/forbidden"),
    "reserve": (oc.BUDGET_RESERVE, "not sent: the hourly budget reached the reserve kept for production"),
    "interrupt": (oc.INTERRUPTED, "not sent: the run was interrupted"),
}


@dataclass
class RunState:
    """How a run ended, for the report's attrs and for messages."""

    stopped: str | None = None  # None, "auth", "reserve", "interrupt" or "error"
    error: BaseException | None = None  # with stopped == "error": what ended the run
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def error_text(self) -> str | None:
        return None if self.error is None else describe_error(self.error)


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
    state: RunState | None = None,
) -> dict[str, Result]:
    """Apply `operation` to each ID (each once) and return {id: result}; never raises
    (but for BaseExceptions other than KeyboardInterrupt, which are not the run's to own).

    Each sink in `on_result` is called in this thread for every result, in the order they
    arrive. A sink that raises is not called again and ends the run (`state.stopped ==
    "error"`), as does an operation that raises: sending stops at once, requests in flight
    get up to `grace` seconds, and IDs never sent are `skipped` with a code naming the cause.
    On KeyboardInterrupt the same happens with `INTERRUPTED`.
    """
    state = state or RunState()
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

    def halt(reason: str, exc: BaseException | None = None) -> None:
        nonlocal deadline
        if state.stopped is None:
            state.stopped = reason
            if exc is not None:
                state.error = exc
        stop.set()
        if reason in ("interrupt", "error") and deadline is None:
            deadline = time.monotonic() + grace

    def emit(result: Result) -> None:
        for sink in list(sinks):
            try:
                sink(result)
            except Exception as exc:  # noqa: BLE001 - the run owns it: it ends, the report stays
                sinks.remove(sink)
                halt("error", exc)

    def take(batch_id: str, item: Result | BaseException) -> None:
        if isinstance(item, BaseException):
            result = Result(batch_id, Outcome.NETWORK_ERROR, error_code=INTERNAL_ERROR,
                            error_message=f"smtoolkit failed while handling this batch ({describe_error(item)}); "
                                          "a request may have been sent: run again to settle it")
            halt("error", item)
        else:
            result = item
            if result.outcome is Outcome.SKIPPED and result.attempts == 0:
                if result.error_code == oc.BUDGET_RESERVE:
                    halt("reserve")
                _relabel(result, state)
            if stop_on_auth_error and result.outcome in (Outcome.UNAUTHORIZED, Outcome.FORBIDDEN):
                halt("auth")
        results[batch_id] = result
        emit(result)

    threads = [threading.Thread(target=worker, args=(n,), name=f"smtoolkit-worker-{n}", daemon=True)
               for n in range(max(1, min(workers, len(todo) or 1)))]
    for t in threads:
        t.start()
    alive = len(threads)
    while alive:
        try:
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                timeout = 0.1 if deadline is None else max(0.001, deadline - time.monotonic())
                batch_id, item = out.get(timeout=timeout)
            except queue.Empty:
                continue
            if item is None or batch_id is None:
                alive -= 1
                continue
            take(batch_id, item)
        except KeyboardInterrupt:
            if deadline is not None:
                break  # a second interrupt, or one while settling after an error: stop waiting
            halt("interrupt")
    stop.set()
    while True:  # answers that arrived while we stopped waiting
        try:
            batch_id, item = out.get_nowait()
        except queue.Empty:
            break
        if item is not None and batch_id is not None:
            take(batch_id, item)
    # Requests still in flight after the grace period: their effect is unknown.
    with lock:
        in_flight = dict(busy)
    for batch_id in in_flight.values():
        if batch_id in results:
            continue
        r = Result(batch_id, Outcome.NETWORK_ERROR, error_code=IN_FLIGHT,
                   error_message="the run ended while this request was in flight; "
                                 "its effect is unknown (run again to settle it)", attempts=1)
        results[batch_id] = r
        emit(r)
    for batch_id in todo:
        if batch_id not in results:
            r = Result(batch_id, Outcome.SKIPPED)
            _relabel(r, state)
            results[batch_id] = r
            emit(r)
    return results


def skip_label(state: RunState) -> tuple[str, str]:
    """The error code and message of rows not sent because of how the run ended."""
    if state.stopped == "error":
        if isinstance(state.error, JournalError):
            return JOURNAL_ERROR, f"not sent: the run stopped because {state.error_text}"
        return RUN_ERROR, f"not sent: the run stopped on an error ({state.error_text})"
    return _STOP_CODES.get(state.stopped or "interrupt", _STOP_CODES["interrupt"])


def _relabel(result: Result, state: RunState) -> None:
    if state.stopped is not None or result.error_code is None:
        result.error_code, result.error_message = skip_label(state)
