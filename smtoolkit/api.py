"""The functions users call: cancel one batch, cancel many, look them up.

Thin glue: the pandas edge (`frames`) on one side, the engine (`runner`) and the `Client`
on the other, with the progress bar in between.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import threading
import time
import warnings
from contextlib import nullcontext
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from . import frames
from .client import Client
from .core.ids import plan
from .core.outcomes import Outcome, Result
from .errors import ConfigError, InputError
from .journal import Journal
from .progress import Progress
from .runner import RunState, run

log = logging.getLogger("smtoolkit")

MAX_WORKERS = 64
# Polling after a cancel that still reads QUEUED/RUNNING: first gap, growth, longest gap.
POLL_FIRST, POLL_GROWTH, POLL_MAX = 0.5, 1.5, 5.0


# Arguments of the functions below, for did-you-mean hints on a misspelt keyword.
_OWN_ARGUMENTS = {"column", "client", "workers", "dry_run", "progress", "stop_on_auth_error", "wait",
                  "journal", "with_progress"}


class _ClientScope:
    """Use the caller's client, or make one from keyword arguments and close it after."""

    def __init__(self, client: Client | None, kwargs: dict[str, Any]) -> None:
        known = set(inspect.signature(Client).parameters)
        for name in kwargs:
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known | _OWN_ARGUMENTS), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown argument {name!r}{hint}")
        if client is not None and kwargs:
            raise ConfigError(f"pass either client=... or client settings ({', '.join(sorted(kwargs))}), not both")
        if client is not None and not isinstance(client, Client):
            raise ConfigError(f"client must be a smtoolkit.Client, not {type(client).__name__}")
        self.own = client is None
        self.client = client if client is not None else Client(**kwargs)

    def __enter__(self) -> Client:
        return self.client

    def __exit__(self, *exc: object) -> None:
        if self.own:
            self.client.close()


def _check_workers(workers: Any) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise InputError(f"workers must be a whole number from 1 to {MAX_WORKERS}, not {workers!r}")
    return workers


def _check_wait(wait: Any) -> float | None:
    if wait is None or wait is False:
        return None
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not wait >= 0:
        raise InputError(f"wait must be a number of seconds >= 0 (or None), not {wait!r}")
    return float(wait) or None


class _Poller:
    """After a cancel that still reads QUEUED/RUNNING, polls GET until STOPPED or time is up."""

    def __init__(self, client: Client, wait: float | None) -> None:
        self.client, self.wait = client, wait
        self.polls = 0
        self._lock = threading.Lock()

    def cancel(self, batch_id: str, stop: threading.Event) -> Result:
        r = self.client.cancel(batch_id, stop=stop)
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
            seen = self.client.lookup(batch_id, stop=stop)
            if seen.attempts == 0:
                break  # not sent: the run stopped or the budget reached the reserve
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


def cancel_batch(batch_id: str, client: Client | None = None, *, wait: float | None = None,
                 **client_kwargs: Any) -> Result:
    """Cancel one batch. Returns a `Result` with the same fields as one report row."""
    wait = _check_wait(wait)
    with _ClientScope(client, client_kwargs) as c:
        return _Poller(c, wait).cancel(batch_id, threading.Event())


def cancel_batches(
    batches: Any,
    column: str = "batch_id",
    client: Client | None = None,
    workers: int = 4,
    dry_run: bool = False,
    progress: bool = True,
    stop_on_auth_error: bool = True,
    *,
    wait: float | None = None,
    journal: str | os.PathLike[str] | None = None,
    **client_kwargs: Any,
) -> pd.DataFrame:
    """Cancel every batch in `batches` and return a report with one row per input row.

    `batches` is a DataFrame (IDs in `column`), a Series, or a list-like of IDs. Invalid IDs
    are never sent, duplicates are sent once, and `dry_run=True` sends only GETs. The input
    is not modified. `wait` (seconds) polls batches that still read QUEUED/RUNNING until
    they stop. `journal` (a file path) records every result as it arrives; running again
    with the same journal sends nothing for batches already final there. On
    KeyboardInterrupt the partial report is returned. See the README for the report.
    """
    workers = _check_workers(workers)
    wait = _check_wait(wait)
    frame, values = frames.extract(batches, column)
    p = plan(values)
    started = datetime.now(timezone.utc)
    with _ClientScope(client, client_kwargs) as c:
        jr = Journal(journal, c.base_url) if journal is not None else None
        done = jr.done() if jr is not None else {}
        todo = [i for i in p.unique if i not in done]
        sent_before, throttled_before = c.requests_sent, c.throttled
        poller = _Poller(c, wait)
        bar = Progress(len(todo), enabled=bool(progress), desc="dry run" if dry_run else "cancelling",
                       budget=lambda: {**c.pacing(), "polls": poller.polls})
        state = RunState()
        warned = _budget_warning(c, len(todo))
        writer = jr if jr is not None and not dry_run else None

        def on_result(r: Result) -> None:
            nonlocal warned
            if writer is not None:
                writer.append(r)
            bar.update(r)
            if not warned:
                warned = _budget_warning(c, len(todo) - sum(bar.counts.values()))

        operation = (lambda i, stop: c.lookup(i, stop=stop)) if dry_run else poller.cancel
        try:
            with writer if writer is not None else nullcontext():
                results = run(todo, operation, workers=workers, on_result=on_result,
                              stop_on_auth_error=stop_on_auth_error, state=state)
        finally:
            bar.close()
        results.update(done)
        info = c.pacing()
        attrs = {
            "started_at": started.isoformat(),
            "finished_at": datetime.now(timezone.utc).isoformat(),
            "base_url": c.base_url,
            "dry_run": bool(dry_run),
            "workers": workers,
            "max_rps": c.max_rps,
            "requests_sent": c.requests_sent - sent_before,
            "throttled": c.throttled - throttled_before,
            "polls": poller.polls,
            "ratelimit_limit": info["ratelimit_limit"],
            "ratelimit_remaining": info["ratelimit_remaining"],
            "reserve": info["reserve"],
            "stopped": state.stopped,
            "resumed_from_journal": len(done),
            "journal": str(jr.path) if jr is not None else None,
        }
    report = frames.build_report(frame, values, p, results, attrs)
    _announce(state, report)
    return report


def _budget_warning(c: Client, needed: int) -> bool:
    """Warn once when the known budget cannot cover the run; True once it has been judged."""
    spendable = c.pacing()["spendable"]
    if spendable is None:
        return False
    if needed > spendable:
        warnings.warn(
            f"the hourly budget allows {spendable} more request(s) before the reserve of "
            f"{c.budget.kept} kept for production, and this run needs at least {needed}: "
            "rows beyond that will be skipped (BUDGET_RESERVE)",
            stacklevel=4,
        )
    return True


def _announce(state: RunState, report: pd.DataFrame) -> None:
    if state.stopped is None:
        return
    skipped = int((report["outcome"] == Outcome.SKIPPED.value).sum()) if len(report) else 0
    messages = {
        "auth": f"stopped after an unauthorized/forbidden answer: {skipped} row(s) not sent "
                "(skipped/SKIPPED_AUTH_FAILED). Check the API key, then run again.",
        "reserve": f"stopped at the budget reserve: {skipped} row(s) not sent (skipped/BUDGET_RESERVE). "
                   "Run the skipped rows again after the hourly window resets, or lower reserve=.",
        "interrupt": f"interrupted: {skipped} row(s) not sent (skipped/INTERRUPTED); "
                     "the report holds every answer received.",
    }
    warnings.warn(messages[state.stopped], stacklevel=3)
    log.warning(messages[state.stopped])


def get_batches(
    batches: Any,
    column: str = "batch_id",
    client: Client | None = None,
    workers: int = 4,
    progress: bool = True,
    *,
    with_progress: bool = False,
    **client_kwargs: Any,
) -> pd.DataFrame:
    """Each batch's current information, one row per input row, without changing anything.

    Columns: the report's columns (outcome is what a cancel would do: would_cancel,
    already_stopped, not_found, ...) plus the batch record's fields. With
    `with_progress=True`, also queued/running/success/failure query counts.
    """
    workers = _check_workers(workers)
    frame, values = frames.extract(batches, column)
    p = plan(values)
    with _ClientScope(client, client_kwargs) as c:
        sent_before = c.requests_sent
        bar = Progress(len(p.unique), enabled=bool(progress), desc="looking up", budget=c.pacing)
        counts: dict[str, dict[str, int] | None] = {}

        def operation(batch_id: str, stop: threading.Event) -> Result:
            r = c.lookup(batch_id, stop=stop)
            if with_progress and r.http_status == 200 and not stop.is_set():
                counts[batch_id] = c.query_progress(batch_id, stop=stop)
            return r

        state = RunState()
        try:
            results = run(p.unique, operation, workers=workers, on_result=bar.update, state=state)
        finally:
            bar.close()
        attrs = {"base_url": c.base_url, "requests_sent": c.requests_sent - sent_before, "stopped": state.stopped}
    report = frames.build_report(frame, values, p, results, attrs)
    records = [(results[b].batch or {}) if b is not None and b in results else {} for b in p.ids]
    for name in BATCH_FIELDS:
        values_ = [rec.get(name) for rec in records]
        if name in ("schedule_time", "start_time"):
            report[name] = pd.to_datetime(pd.Series(values_, dtype=object, index=report.index), utc=True, errors="coerce")
        elif name in ("query_amount", "query_concurrency", "timeout_minutes"):
            report[name] = pd.Series([v if isinstance(v, int) else None for v in values_], index=report.index, dtype="Int64")
        else:
            report[name] = pd.Series([None if v is None else str(v) for v in values_], index=report.index, dtype="string")
    if with_progress:
        for key in ("queued", "running", "success", "failure"):
            report[key] = pd.Series([(counts.get(b) or {}).get(key) if b else None for b in p.ids],
                                    index=report.index, dtype="Int64")
    _announce(state, report)
    return report


BATCH_FIELDS = ("description", "schedule_time", "start_time", "query_amount", "query_concurrency",
                "timeout_minutes", "split_accounts_policy", "split_dates_policy", "query_output_format")

