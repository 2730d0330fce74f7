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
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import pandas as pd

from . import frames
from .client import Client
from .config import operator_name
from .core.bounds import MAX_CHECK_EVERY, MAX_WAIT, seconds_text, within
from .core.ids import Plan, plan
from .core.outcomes import NOT_CONFIRMED, Result
from .core.pacing import budget_plan as pacing_plan
from .core.record import check_reason
from .core.select import CancelPlan, Criteria, choose, criteria, held_back, selection_plan, with_lookup
from .core.settle import ends_stopped
from .errors import ConfigError, InputError, JournalError
from .journal import Journal
from .limiter import BudgetWait, RunContext
from .progress import Progress
from .runner import MAX_WORKERS, CancelAndWait, Halt, Operation, RunResult, describe_error, run

log = logging.getLogger("smtoolkit")
T = TypeVar("T")



class _ClientScope:
    """Use the caller's client, or make one from keyword arguments and close it after."""

    def __init__(self, client: Client | None, kwargs: dict[str, Any]) -> None:
        known = set(inspect.signature(Client).parameters)
        for name in kwargs:
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known | _own_arguments()), n=1)
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


def _own_arguments() -> set[str]:
    """The keyword arguments of the functions below, for did-you-mean hints."""
    names = {p for f in (cancel_batch, cancel_batches, get_batches) for p in inspect.signature(f).parameters}
    return names - {"batches", "batch_id", "client_kwargs"}


def _check_workers(workers: Any) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise InputError(f"workers must be a whole number from 1 to {MAX_WORKERS}, not {workers!r}")
    return workers


def _check_wait(wait: Any, name: str = "wait") -> float | None:
    if wait is None or wait is False:
        return None
    if not within(wait, 0, MAX_WAIT):
        raise InputError(f"{name} must be a number of seconds from 0 to {MAX_WAIT:g} ({seconds_text(MAX_WAIT)}), "
                         f"or None, not {wait!r}")
    return float(wait) or None


def _check_every(every: Any) -> float:
    if not within(every, 0, MAX_CHECK_EVERY, low_open=True):
        raise InputError(f"budget_check_every must be a number of seconds > 0 and at most {MAX_CHECK_EVERY:g} "
                         f"({seconds_text(MAX_CHECK_EVERY)}), not {every!r}")
    return float(every)


def cancel_batch(batch_id: str, client: Client | None = None, *, wait: float | None = None,
                 **client_kwargs: Any) -> Result:
    """Cancel one batch. Returns a `Result` with the same fields as one report row."""
    wait = _check_wait(wait)
    with _ClientScope(client, client_kwargs) as c:
        return CancelAndWait(c, wait)(batch_id, RunContext())


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
    wait_for_budget: float | None = None,
    budget_check_every: float = 60.0,
    on_result: Callable[[Result], None] | None = None,
    stop: threading.Event | None = None,
    only_status: Any = None, older_than: Any = None, description: Any = None,
    on_plan: Callable[[CancelPlan], bool | None] | None = None,
    query_counts: bool = False,
    reason: str | None = None,
    **client_kwargs: Any,
) -> pd.DataFrame:
    """Cancel every batch in `batches` and return a report with one row per input row.

    `batches` is a DataFrame (IDs in `column`), a Series, or a list-like of IDs; it is not
    modified. Invalid IDs are never sent, duplicates are sent once, `dry_run=True` sends only
    GETs, `wait` (seconds) polls batches still QUEUED/RUNNING until they stop. `journal` (a
    file) records every result as it arrives; a rerun on it sends nothing already settled.
    At the budget reserve the run halts (rest `skipped`/BUDGET_RESERVE) unless
    `wait_for_budget` (seconds) lets it wait, looking at most once per `budget_check_every`.

    Mistakes raise `InputError`/`ConfigError` before anything is sent. Once a request may
    have been sent the report is always returned (Ctrl-C, auth failure, reserve, unreachable
    API, an error in a sink), with `attrs["halted"]` saying why (`attrs["stopped"]`: alias for
    one release). `on_result(result)` runs in the run's thread per result, after the journal;
    setting `stop` halts the run as Ctrl-C does.

    `only_status`, `older_than`, `description` look every batch up first and cancel only those
    meeting every criterion (the rest `left_alone`); `on_plan(plan)` sees the plan before any
    DELETE, False cancels nothing. `query_counts=True` adds per-query counts to rows that end
    STOPPED (one request each); `reason` goes on record with the operator. See the docs.
    """
    selection = _selection(only_status, older_than, description)
    workers = _check_workers(workers)
    reason = _check_reason(reason)
    wait = _check_wait(wait)
    wait_for_budget = _check_wait(wait_for_budget, "wait_for_budget")
    every = _check_every(budget_check_every)
    frame, values = frames.extract(batches, column)
    p = plan(values)
    started = datetime.now(UTC)
    with _ClientScope(client, client_kwargs) as c:
        operator = operator_name()
        jr = (Journal(journal, c.base_url, write=not dry_run, reason=reason, operator=operator)
              if journal is not None else None)
        # Locks and reads the journal; raises JournalError before anything is sent.
        with jr if jr is not None else nullcontext():
            done = jr.done() if jr is not None else {}
            todo = [i for i in p.unique if i not in done]
            on_record = {"reason": _reason_on_record(jr, reason), "operator": operator}
            job = _CancelRun(c, todo, dry_run=bool(dry_run), progress=bool(progress), wait=wait,
                             wait_for_budget=wait_for_budget, every=every, query_counts=bool(query_counts),
                             warned=_budget_warning(c, len(todo), wait_for_budget))
            job.choose(selection, jr, workers=workers, stop_on_auth_error=stop_on_auth_error,
                       on_result=on_result, stop=stop, on_plan=on_plan)
            outcome, saved = job.run(jr, workers=workers, stop_on_auth_error=stop_on_auth_error,
                                     on_result=on_result, stop=stop)
        results = {**outcome.results, **job.decided, **done}
        attrs = {"started_at": started.isoformat(), "finished_at": datetime.now(UTC).isoformat(),
                 **job.facts(workers), **_halt_facts(outcome, saved), "resumed_from_journal": len(done),
                 "wait_for_budget": wait_for_budget, **job.budget_facts(),
                 "journal": str(jr.path) if jr is not None else None, **on_record, **job.count_facts(),
                 **job.selection_facts()}
    report = _despite_interrupts(lambda: job.report(frame, values, p, results, attrs))
    _despite_interrupts(lambda: _announce(outcome, report, saved))
    return report


class _CancelRun:
    """The moving parts of one `cancel_batches` run: its context (halt signal, tally, budget
    wait), the operation (cancel and poll, or look up for a dry run), the progress bar, the
    sinks, and the facts it reports. A run that chooses (`choose`) looks every ID up first, in
    the same tally and budget wait, and then cancels only the chosen ones."""

    def __init__(self, c: Client, todo: list[str], *, dry_run: bool, progress: bool, wait: float | None,
                 wait_for_budget: float | None, every: float, warned: bool, query_counts: bool = False) -> None:
        self.c, self.todo, self.dry_run, self.wait_for_budget = c, todo, dry_run, wait_for_budget
        self.progress = progress
        # With query_counts: {batch_id: counts, or None when not got} for each row found STOPPED.
        self.counts: dict[str, dict[str, int] | None] | None = {} if query_counts else None
        self.budget_wait = BudgetWait(c.limiter, wait_for_budget, every) if wait_for_budget else None
        self.context = RunContext(budget_wait=self.budget_wait)
        self.poller = CancelAndWait(c, wait)
        self.warned = warned
        self.handled = 0
        self.decided: dict[str, Result] = {}  # rows the look-ups settled (a choosing run): never sent a DELETE
        self.lookups: dict[str, Result] = {}
        self.chose = False  # True once `choose` looked the IDs up
        self.plan: CancelPlan | None = None
        self.early: RunResult | None = None  # the choosing halted or was declined: no cancel run
        self.confirmed: bool | None = None  # a choosing run's answer to its plan

    def _bar(self, total: int, desc: str) -> Progress:
        return Progress(total, enabled=self.progress, desc=desc,
                        facts=lambda: {**self.c.pacing(), "polls": self.poller.polls},
                        waiting=self.budget_wait.status if self.budget_wait is not None else None)

    def _plan_check(self, r: Result) -> None:
        """A sink: once the budget is known, say (once) when it cannot cover the rest of the run."""
        self.handled += 1
        if not self.warned:
            self.warned = _budget_warning(self.c, len(self.todo) - self.handled, self.wait_for_budget)

    def _lookup(self, batch_id: str, context: RunContext) -> Result:
        return self.c.lookup(batch_id, context=context)

    def _cancel(self, batch_id: str, context: RunContext) -> Result:
        lookup = self.lookups.get(batch_id)
        result = self.poller(batch_id, context)
        return with_lookup(result, lookup) if lookup is not None else result

    def choose(self, selection: Criteria | None, jr: Journal | None, *, workers: int, stop_on_auth_error: bool,
               on_result: Callable[[Result], None] | None, stop: threading.Event | None,
               on_plan: Callable[[CancelPlan], bool | None] | None) -> None:
        """Look every ID up, decide with `core.select.choose`, show the plan (`on_plan`), and
        leave in `todo` only the IDs to cancel. Rows settled here are journaled (and given to
        `on_result`) only when the cancel goes ahead: a halted or declined choosing, or a dry
        run, records nothing. Without `selection`, nothing to do."""
        if selection is None:
            return
        self.chose = True
        ids, bar = self.todo, self._bar(len(self.todo), "looking up")
        halting = _Halting(stop, bar.tick)
        looked = run(ids, self._lookup, workers=workers, on_result=[bar.update, halting.check],
                     stop_on_auth_error=stop_on_auth_error, on_idle=halting.idle,
                     context=RunContext(tally=self.context.tally, budget_wait=self.budget_wait))
        _despite_interrupts(lambda: _quietly(lambda: bar.close(looked.halt.value if looked.halt else None)))
        self.lookups, self.todo = looked.results, []
        choice = choose(ids, looked.results, selection, datetime.now(UTC),
                        looked.skip_label() if looked.halt else None)
        self.decided = dict(choice.decided)
        if looked.halt is not None:
            self.early = looked
            return
        b = self.c.budget
        text = selection_plan(choice, remaining=b.remaining, limit=b.limit, kept=b.kept, max_rps=self.c.max_rps,
                              over_budget=budget_plan(self.c, len(choice.to_cancel), self.wait_for_budget))
        self.plan = CancelPlan(text, len(choice.to_cancel), len(ids))
        go, self.early = _ask(on_plan, self.plan)
        if self.dry_run:
            self.early = None  # nothing is sent whatever the answer
            self.decided.update((i, looked.results[i]) for i in choice.to_cancel)
            return
        if self.early is None and choice.to_cancel and go is False:
            self.confirmed = False
            self.decided.update((i, held_back(looked.results[i], NOT_CONFIRMED, "not sent: the plan was not "
                                              "confirmed")) for i in choice.to_cancel)
            self.early = RunResult({})
            return
        if self.early is None:
            self.confirmed = True
            self.early = _record(self.decided.values(), jr, on_result, stop)
        if self.early is not None:
            code, message = self.early.skip_label()
            self.decided.update((i, held_back(looked.results[i], code, message)) for i in choice.to_cancel)
        else:
            self.todo = list(choice.to_cancel)

    def run(self, jr: Journal | None, *, workers: int, stop_on_auth_error: bool,
            on_result: Callable[[Result], None] | None = None,
            stop: threading.Event | None = None) -> tuple[RunResult, str | None]:
        """Run it; returns the run's result and, when the journal could not be saved, why."""
        if self.early is not None:  # the choosing halted, or was declined: nothing to cancel
            return self.early, _despite_interrupts(lambda: _closing(jr))
        bar = self._bar(len(self.todo), "dry run" if self.dry_run else "cancelling")
        sinks: list[Callable[[Result], None]] = [self._plan_check, bar.update]
        if jr is not None and jr.write:
            sinks.insert(0, jr.append)
        halting = _Halting(stop, bar.tick)
        sinks += [on_result, halting.check] if on_result is not None else [halting.check]
        operation: Operation = self._lookup if self.dry_run else self._cancel
        if self.counts is not None:
            operation = self._counted(operation)
        outcome = run(self.todo, operation, workers=workers, on_result=sinks, stop_on_auth_error=stop_on_auth_error,
                      on_idle=halting.idle, context=self.context)
        # From here on requests have been sent: nothing may cost the caller the report.
        if outcome.halt is None:
            self._count_decided(workers, halting)
        halted = outcome.halt.value if outcome.halt else None
        _despite_interrupts(lambda: _quietly(lambda: bar.close(halted)))
        saved = _despite_interrupts(lambda: _closing(jr))
        if isinstance(outcome.error, JournalError):
            saved = None  # the same failure, already the reason the run ended
        return outcome, saved

    def facts(self, workers: int) -> dict[str, Any]:
        """What the run sent, as counted by its own tally, and the budget as last seen."""
        info = _despite_interrupts(self.c.pacing)
        tally = self.context.tally
        return {"base_url": self.c.base_url, "dry_run": self.dry_run, "workers": workers, "max_rps": self.c.max_rps,
                "requests_sent": tally.sent, "throttled": tally.throttled, "text_replaced": tally.replaced,
                "polls": self.poller.polls, "ratelimit_limit": info["ratelimit_limit"],
                "ratelimit_remaining": info["ratelimit_remaining"], "reserve": info["reserve"]}

    def _counted(self, operation: Operation) -> Operation:
        """`operation`, then one status request for a row that ended STOPPED (never waiting for
        the budget, as polls do; not sent once the run halts). A failed one loses only the counts."""
        counts = self.counts
        assert counts is not None

        def counted(batch_id: str, context: RunContext) -> Result:
            r = operation(batch_id, context)
            if ends_stopped(r):
                counts[batch_id] = (None if context.halted else
                                    self.c.query_counts(batch_id, context=replace(context, budget_wait=None)))
            return r
        return counted

    def _count_decided(self, workers: int, halting: _Halting) -> None:
        """With query counts, the matches a choosing run found STOPPED already (no DELETE for
        them) get their one status request too; a halt leaves the rest without counts."""
        if self.counts is None:
            return
        stopped = [i for i, r in self.decided.items() if ends_stopped(r)]
        self.counts.update(dict.fromkeys(stopped))
        count = self._counted(lambda batch_id, context: self.decided[batch_id])
        try:  # a halt (Ctrl-C, stop, auth) ends the run() and is reported as missing counts
            run(stopped, count, workers=workers, on_result=[halting.check], stop_on_auth_error=True,
                on_idle=halting.idle, context=RunContext(tally=self.context.tally))
        except KeyboardInterrupt:
            pass

    def count_facts(self) -> dict[str, Any]:
        """Whether query counts were asked for, and for how many stopped rows they are missing."""
        missing = sum(v is None for v in self.counts.values()) if self.counts is not None else 0
        return {"query_counts": self.counts is not None, "query_counts_missing": missing}

    def report(self, frame: pd.DataFrame, values: list[Any], p: Plan, results: dict[str, Result],
               attrs: dict[str, Any]) -> pd.DataFrame:
        """The report: one row per input row; the query counts (on the row that was sent, not
        its duplicates) and the reason on record as columns when asked for."""
        report = frames.build_report(frame, values, p, results, attrs)
        if self.chose:  # what each look-up saw: status_seen, schedule_time, description
            report = frames.with_seen_fields(report, [self.lookups.get(b) if b else None for b in p.ids])
        if self.counts is not None:
            counts = self.counts
            report = frames.with_query_counts(report, [counts.get(b) if b is not None and i not in p.duplicates
                                                       else None for i, b in enumerate(p.ids)])
            if attrs["query_counts_missing"]:
                _warn(f"query counts are missing for {attrs['query_counts_missing']} stopped batch(es): the status "
                      "request failed or was not sent (the run halted); their count columns hold NA", stacklevel=4)
        if attrs.get("reason") is not None:
            report["reason"] = pd.Series([attrs["reason"]] * len(report), index=report.index, dtype="string")
        return report

    def budget_facts(self) -> dict[str, Any]:
        if self.budget_wait is None:
            return {"budget_waits": 0, "budget_waited_s": 0.0, "budget_looks": 0}
        return self.budget_wait.facts()

    def selection_facts(self) -> dict[str, Any]:
        """A choosing run's facts: its plan's text, the look-ups sent, and whether it went ahead."""
        if not self.lookups:
            return {}
        return {"plan": self.plan.text if self.plan is not None else None,
                "lookups": sum(r.attempts for r in self.lookups.values()), "confirmed": self.confirmed}


def _ask(on_plan: Callable[[CancelPlan], bool | None] | None, plan: CancelPlan) -> tuple[bool | None, RunResult | None]:
    """The caller's answer to the plan; a Ctrl-C or an error in `on_plan` halts the run there
    (nothing cancelled, the report returned: look-ups were already sent)."""
    if on_plan is None:
        return True, None
    try:
        return on_plan(plan), None
    except KeyboardInterrupt:
        return False, RunResult({}, Halt.INTERRUPT)
    except Exception as exc:  # noqa: BLE001 - as a failing sink: it halts, the report stays
        return False, RunResult({}, Halt.ERROR, exc)


def _selection(only_status: Any, older_than: Any, description: Any) -> Criteria | None:
    """The criteria of a choosing run (None: cancel every ID); InputError naming a bad one."""
    if only_status is None and older_than is None and description is None:
        return None
    return criteria(status=only_status, older_than=older_than, description=description)


def _record(decided: Any, jr: Journal | None, on_result: Callable[[Result], None] | None,
            stop: threading.Event | None) -> RunResult | None:
    """Give the rows a confirmed plan settled to the journal and `on_result`, before any DELETE;
    a failure (or Ctrl-C, or `stop`) halts the run there: the RunResult that says so."""
    sinks = [s for s in ((jr.append if jr is not None and jr.write else None), on_result) if s is not None]
    try:
        for r in decided:
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            for sink in sinks:
                sink(r)
    except KeyboardInterrupt:
        return RunResult({}, Halt.INTERRUPT)
    except Exception as exc:  # noqa: BLE001 - as a failing sink in a run: it halts, the report stays
        return RunResult({}, Halt.ERROR, exc)
    return None


class _Halting:
    """Halts a run, once, when the caller sets `stop`: the run takes a KeyboardInterrupt from
    a sink or from its idle call as Ctrl-C (a second one would cut short the grace given to
    requests in flight, so it is raised only once)."""

    def __init__(self, stop: threading.Event | None, tick: Callable[[], None]) -> None:
        self.stop, self.tick, self.raised = stop, tick, False

    def idle(self) -> None:
        self.check()
        self.tick()

    def check(self, _: object = None) -> None:
        if self.stop is not None and not self.raised and self.stop.is_set():
            self.raised = True
            raise KeyboardInterrupt


def _check_reason(reason: Any) -> str | None:
    """The reason as kept on record (stripped, made encodable), None for none; InputError else."""
    kept, problem = check_reason(reason)
    if problem is not None:
        raise InputError(problem)
    return kept


def _reason_on_record(jr: Journal | None, reason: str | None) -> str | None:
    """The run's reason: the one given, else a resumed journal's latest. A reason other than the
    journal's is this run's; the journal keeps both (each run's header has its own); said once."""
    if jr is None:
        return reason
    if reason is not None and jr.earlier_reason not in (None, reason):
        _warn(f"this journal's earlier run gave another reason ({_short(jr.earlier_reason)}); this run records "
              f"{_short(reason)}; the journal keeps both", stacklevel=4)
    return jr.reason


def _short(text: str | None) -> str:
    from .text import shorten

    return repr(shorten(text or "", 60))


def _halt_facts(outcome: RunResult, saved: str | None = None) -> dict[str, Any]:
    """Why the run halted (`halted`, and `stopped`: the same value under its old name, kept for
    one release) and the error that ended it or that the journal met."""
    halted = outcome.halt.value if outcome.halt else None
    return {"halted": halted, "stopped": halted, "error": outcome.error_text or saved}


def _despite_interrupts(step: Callable[[], T]) -> T:
    """Run a finishing step (each is idempotent); a Ctrl-C during it repeats it, so an impatient
    second interrupt cannot lose a report whose requests were already sent."""
    for _ in range(3):
        try:
            return step()
        except KeyboardInterrupt:
            log.warning("interrupt ignored while finishing the report (the requests were already sent)")
    return step()


def _closing(jr: Journal | None) -> str | None:
    """Close the journal; a failure to save it is returned as text, never raised (the run is over)."""
    if jr is None:
        return None
    try:
        jr.close()
    except Exception as exc:  # noqa: BLE001 - JournalError, or anything else the OS throws
        return str(exc)
    return None


def _quietly(action: Callable[[], None]) -> None:
    """Run a clean-up step (a progress bar's close) that must not cost the caller the report."""
    try:
        action()
    except Exception as exc:  # noqa: BLE001
        log.warning("ignored while finishing the run: %s", describe_error(exc))


def _warn(message: str, stacklevel: int) -> None:
    """Issue a warning; never raise (an 'error' warnings filter must not cost the report)."""
    try:
        warnings.warn(message, stacklevel=stacklevel + 1)
    except Exception:  # noqa: BLE001
        log.warning(message)


def _budget_warning(c: Client, needed: int, wait_for_budget: float | None = None) -> bool:
    """Warn once when the known budget cannot cover the run (the plan line); True once it
    has been judged."""
    text = budget_plan(c, needed, wait_for_budget)
    if text is None and c.budget.remaining is None:
        return False
    if text is not None:
        _warn(text, stacklevel=4)
    return True


def budget_plan(client: Client, needed: int, wait_for_budget: float | None = None) -> str | None:
    """One line, when `needed` requests are more than the hourly budget allows now: what the
    run needs, what the budget allows, and an estimate of when it would finish at the hourly
    limit. None when the budget covers it, or is not known yet (no answer has shown it)."""
    b = client.budget
    if b.remaining is None or b.limit is None:
        return None
    return pacing_plan(needed, limit=b.limit, remaining=b.remaining, kept=b.kept, max_rps=client.max_rps,
                       wait_for_budget=wait_for_budget)


def _announce(outcome: RunResult, report: pd.DataFrame, saved: str | None = None) -> None:
    if saved is not None:
        _warn(f"{saved}: its last records may be missing; the report returned is complete", stacklevel=3)
    message = outcome.message(frames.not_sent(report))
    if message is not None:
        _warn(message, stacklevel=3)
        log.warning(message)


def get_batches(
    batches: Any,
    column: str = "batch_id",
    client: Client | None = None,
    workers: int = 4,
    progress: bool = True,
    *,
    query_counts: bool = False,
    **client_kwargs: Any,
) -> pd.DataFrame:
    """Each batch's current information, one row per input row, without changing anything.

    Columns: the report's columns (outcome is what a cancel would do: would_cancel,
    already_stopped, not_found, ...) plus the batch record's fields. With
    `query_counts=True` (one more request per batch found), also the Int64 query counts
    queued/running/success/failure, as `cancel_batches(..., query_counts=True)` adds them.
    `with_progress=` is the old name of `query_counts=`, kept for one release.
    """
    if "with_progress" in client_kwargs:
        _warn("get_batches(with_progress=...) is now query_counts=...", stacklevel=2)
        query_counts = bool(client_kwargs.pop("with_progress")) or query_counts
    workers = _check_workers(workers)
    frame, values = frames.extract(batches, column)
    p = plan(values)
    with _ClientScope(client, client_kwargs) as c:
        context = RunContext()
        bar = Progress(len(p.unique), enabled=bool(progress), desc="looking up", facts=c.pacing)
        counts: dict[str, dict[str, int] | None] = {}

        def operation(batch_id: str, context: RunContext) -> Result:
            r = c.lookup(batch_id, context=context)
            if query_counts and r.http_status == 200 and not context.halted:
                counts[batch_id] = c.query_counts(batch_id, context=context)
            return r

        outcome = run(p.unique, operation, workers=workers, on_result=[bar.update], context=context)
        halted = outcome.halt.value if outcome.halt else None
        _despite_interrupts(lambda: _quietly(lambda: bar.close(halted)))
        results = outcome.results
        attrs = {"base_url": c.base_url, "requests_sent": context.tally.sent, "text_replaced": context.tally.replaced,
                 **_halt_facts(outcome)}
    report = frames.build_report(frame, values, p, results, attrs)
    records = [(results[b].batch or {}) if b is not None and b in results else {} for b in p.ids]
    report = frames.with_batch_fields(report, records, BATCH_FIELDS)
    if query_counts:
        report = frames.with_query_counts(report, [counts.get(b) if b else None for b in p.ids])
    _announce(outcome, report)
    return report


BATCH_FIELDS = ("description", "schedule_time", "start_time", "query_amount", "query_concurrency",
                "timeout_minutes", "split_accounts_policy", "split_dates_policy", "query_output_format")

