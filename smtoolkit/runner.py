"""The bulk engine: one operation over many IDs with a pool of workers.

Workers pull IDs from a shared iterator and share the client's pacer; results come back to
the calling thread, which alone talks to progress bars, journals and the user. A run stops
early on an auth failure, on reaching the budget reserve, or on KeyboardInterrupt; every ID
then still gets exactly one result.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .core import outcomes as oc
from .core.outcomes import Outcome, Result

Operation = Callable[[str, threading.Event], Result]

#: Seconds an interrupted run waits for requests already in flight.
INTERRUPT_GRACE = 5.0

_STOP_CODES = {
    "auth": (oc.SKIPPED_AUTH_FAILED, "not sent: an earlier request was refused as unauthorized/forbidden"),
    "reserve": (oc.BUDGET_RESERVE, "not sent: the hourly budget reached the reserve kept for production"),
    "interrupt": (oc.INTERRUPTED, "not sent: the run was interrupted"),
}


@dataclass
class RunState:
    """How a run ended, for the report's attrs and for messages."""

    stopped: str | None = None  # None, "auth", "reserve" or "interrupt"
    counts: dict[str, int] = field(default_factory=dict)


def run(
    ids: Iterable[str],
    operation: Operation,
    *,
    workers: int,
    on_result: Callable[[Result], None],
    stop_on_auth_error: bool = True,
    grace: float = INTERRUPT_GRACE,
    state: RunState | None = None,
) -> dict[str, Result]:
    """Apply `operation` to each ID (each once) and return {id: result}.

    `on_result` is called in this thread for every result, in the order they arrive. On
    KeyboardInterrupt the run stops sending, waits up to `grace` seconds for requests in
    flight, and returns; IDs never sent are `skipped`.
    """
    state = state or RunState()
    todo = list(ids)
    results: dict[str, Result] = {}
    stop = threading.Event()
    lock = threading.Lock()
    source = iter(todo)
    busy: dict[int, str] = {}
    out: queue.Queue[tuple[str | None, Result | BaseException | None]] = queue.Queue()

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
            if (stop_on_auth_error and isinstance(res, Result)
                    and res.outcome in (Outcome.UNAUTHORIZED, Outcome.FORBIDDEN)):
                stop.set()  # at once, not when the main thread gets to it
            out.put((batch_id, res))  # queued before it stops counting as in flight
            with lock:
                busy.pop(n, None)
        out.put((None, None))  # this worker is done

    def take(batch_id: str, item: Result | BaseException) -> None:
        if isinstance(item, BaseException):
            stop.set()  # a bug: no other worker may go on sending behind the caller's back
            raise item
        result = item
        if result.outcome is Outcome.SKIPPED and result.attempts == 0:
            if result.error_code == oc.BUDGET_RESERVE:
                state.stopped = state.stopped or "reserve"
                stop.set()
            _relabel(result, state.stopped)
        results[batch_id] = result
        if stop_on_auth_error and result.outcome in (Outcome.UNAUTHORIZED, Outcome.FORBIDDEN):
            state.stopped = state.stopped or "auth"
            stop.set()
        on_result(result)

    threads = [threading.Thread(target=worker, args=(n,), name=f"smtoolkit-worker-{n}", daemon=True)
               for n in range(max(1, min(workers, len(todo) or 1)))]
    for t in threads:
        t.start()
    alive = len(threads)
    deadline: float | None = None  # set once interrupted: how long to wait for requests in flight
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
                break  # a second interrupt: stop waiting
            state.stopped = state.stopped or "interrupt"
            stop.set()
            deadline = time.monotonic() + grace
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
        r = Result(batch_id, Outcome.NETWORK_ERROR, error_code="INTERRUPTED_IN_FLIGHT",
                   error_message="the run was interrupted while this request was in flight; "
                                 "its effect is unknown (run again to settle it)", attempts=1)
        results[batch_id] = r
        on_result(r)
    for batch_id in todo:
        if batch_id not in results:
            r = Result(batch_id, Outcome.SKIPPED)
            _relabel(r, state.stopped or "interrupt")
            results[batch_id] = r
            on_result(r)
    return results


def _relabel(result: Result, reason: str | None) -> None:
    if reason in _STOP_CODES:
        result.error_code, result.error_message = _STOP_CODES[reason]

