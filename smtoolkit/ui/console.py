"""The cleanup console: review many batches in a data grid, select them, cancel the selection.

`CancelConsole` is a model that scripts and tests drive directly (`select`, `refresh`, `plan`,
`cancel`), and a view of it (`widget`: an itables `ITable` grid and ipywidgets controls).
Every request goes through the library's own `cancel_batches` (a look-up is its dry run), on a
worker thread when a button starts it; results are collected as they arrive and drawn in
batches, and widgets are only ever written by setting their values (never `with out:`).
Which rows a selection takes is decided in `core/select.py` alone.
"""

from __future__ import annotations

import html
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import ipywidgets as widgets
import pandas as pd

from ..api import _check_every, _check_wait, budget_plan, cancel_batches
from ..client import Client
from ..core.ids import plan as plan_ids
from ..core.outcomes import FINAL, Result, could_retry
from ..core.record import check_reason
from ..core.select import Row, cancel_plan, criteria, matching, unknown_ids
from ..errors import ConfigError, InputError
from ..frames import export_csv, extract
from ..journal import read as read_journal
from .console_view import ConsoleView, grid_frame

#: Fewest seconds between two redraws of the grid while requests run; a redraw that took long
#: pushes the next one back (the drawing thread is busy at most a fifth of the time). Redraws
#: happen on their own thread: the run's thread only hands each result over.
DRAW_EVERY = 0.5
DRAW_SHARE = 0.2

#: The frame's columns and their dtypes (a row per distinct valid ID; empty until known).
FRAME_DTYPES: dict[str, str] = {
    "batch_id": "string",
    "status_code": "string",
    "description": "string",
    "schedule_time": "datetime64[ns, UTC]",
    "outcome": "string",
    "error_code": "string",
    "error_message": "string",
    "http_status": "Int64",
    "cancel_time": "datetime64[ns, UTC]",
    "request_id": "string",
}
_FROM_RESULT = ("outcome", "error_code", "error_message", "http_status", "request_id")


class CancelConsole:
    """Review, select and cancel many batches. Show it by putting it last in a notebook cell.

    `batches` is what `cancel_batches` takes (a DataFrame with IDs in `column`, a Series, a
    list, or a previous report); its columns named like the frame's (status_code, description,
    schedule_time, ...) are taken as what is known so far. Invalid and duplicate input rows are
    listed in `rejected` and never become rows, so they cannot be selected. `journal` is used by
    every cancel: rows already final there are not sent again, and the console shows them as the
    journal tells from the start (read without taking its lock). `wait_for_budget` (seconds, in
    total) lets a refresh or cancel wait for the hourly budget instead of halting at the reserve,
    looking at most once per `budget_check_every` seconds, as in `cancel_batches`. `reason`
    (text, also settable as `reason` or per call, `cancel(reason=...)`) goes on record with every
    cancel, as `cancel_batches(reason=...)` keeps it. Nothing is sent before `refresh()` (GETs
    only) or `cancel()` (DELETEs for exactly the selected rows).
    """

    def __init__(self, batches: Any, column: str = "batch_id", client: Client | None = None, *,
                 journal: str | os.PathLike[str] | None = None, reason: str | None = None,
                 wait_for_budget: float | None = None, budget_check_every: float = 60.0,
                 **client_kwargs: Any) -> None:
        if client is not None and client_kwargs:
            raise ConfigError("pass either client=... or client settings, not both")
        self.reason = _checked_reason(reason)
        self._wait_for_budget = _check_wait(wait_for_budget, "wait_for_budget")
        self._budget_check_every = _check_every(budget_check_every)
        self._client = client if client is not None else Client(**client_kwargs)
        self._journal = journal
        self._frame, self.rejected = _initial_frame(batches, column)
        self._pos = {b: i for i, b in enumerate(self._frame["batch_id"].tolist())}
        if journal is not None:  # what an earlier run settled is known before anything is sent
            _, earlier = read_journal(journal, self._client.base_url)
            _apply_results(self._frame, self._pos, [r for r in earlier.values() if r.outcome in FINAL])
        self._selected: list[int] = []
        self.report: pd.DataFrame | None = None
        self._last_lookup: pd.DataFrame | None = None
        self._lock = threading.RLock()  # the frame, the selection and the pending results
        self._acting = threading.RLock()  # deciding and starting an action
        self._pending: list[Result] = []
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None
        self._armed: tuple[str, ...] | None = None
        self._refresh_armed = False
        self._done_count = 0
        self._new_results = threading.Event()
        self.view = ConsoleView(self)
        self.view.draw_grid(grid_frame(self._frame), [])
        self.view.show_rejected(self.rejected)

    # -- what the view shows --------------------------------------------------------------------
    @property
    def widget(self) -> widgets.VBox:
        """The ipywidgets container that is shown."""
        return self.view.box

    @property
    def frame(self) -> pd.DataFrame:
        """A copy of the rows: one per distinct valid ID, each with its latest known status."""
        with self._lock:
            return self._frame.copy()

    @property
    def selected(self) -> list[str]:
        """The selected batch IDs, in table order."""
        with self._lock:
            ids = self._frame["batch_id"]
            return [str(ids.iat[i]) for i in self._selected]

    def __repr__(self) -> str:
        # What Jupyter shows when it cannot draw widgets: say why, and what to do.
        return (f"<CancelConsole rows={len(self._frame)} selected={len(self._selected)}>: if you see this text "
                "instead of the console, this Jupyter cannot draw widgets. Install them where Jupyter runs "
                "(pip install jupyterlab_widgets anywidget, in the server's environment), restart Jupyter and "
                "reload the page.")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            data["text/plain"] = repr(self)
        return bundle

    # -- selecting ------------------------------------------------------------------------------
    def select(self, *, ids: Any = None, status: Any = None, older_than: Any = None, description: Any = None,
               all: bool = False, retry: bool = False) -> list[str]:  # noqa: A002 - the documented name
        """Replace the selection with the rows matching every criterion given; returns it.
        `retry=True` takes the rows whose last outcome a retry could change (`sm.to_retry`'s
        rule: after a cancel, or from a report given as input). InputError (the selection left
        as it was) for no criterion, a misspelt status, an unreadable age, or IDs that are no
        row here."""
        c = criteria(ids=ids, status=status, older_than=older_than, description=description, all=all, retry=retry)
        with self._lock:
            rows = self._rows()
            unknown = unknown_ids(rows, c)
            if unknown:
                shown = ", ".join(map(repr, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
                raise InputError(f"{len(unknown)} ID(s) are no row of this console (invalid, duplicate of "
                                 f"nothing here, or not in the input): {shown}")
            self._set_selection(matching(rows, c, datetime.now(UTC)))
        return self.selected

    def _rows(self) -> list[Row]:
        f = self._frame
        return [Row(b, _text(s), _text(o), None if t is pd.NaT else t, _text(d)) for b, s, o, t, d in zip(
            f["batch_id"].tolist(), f["status_code"].tolist(), f["outcome"].tolist(),
            f["schedule_time"].tolist(), f["description"].tolist(), strict=True)]

    def _set_selection(self, positions: Sequence[int], push: bool = True) -> None:
        """The new selection (positions, in table order), shown in the grid when `push`."""
        with self._lock:
            n = len(self._frame)
            self._selected = sorted({int(p) for p in positions if 0 <= int(p) < n})
            self._armed = None
            if push:
                self.view.push_selection(self._selected)
        self.view.selection_changed(len(self._selected))

    def select_none(self) -> list[str]:
        """Clear the selection."""
        self._set_selection([])
        return []

    def grid_selected(self, positions: Sequence[int]) -> None:
        """Ticks in the grid (positions, as the grid reports them) become the selection."""
        with self._lock:
            if sorted(positions) != self._selected:
                self._set_selection(positions, push=False)

    # -- the plan -------------------------------------------------------------------------------
    def plan(self) -> str:
        """One line: what a cancel of the selection will do and cost (nothing is sent)."""
        with self._lock:
            rows = self._rows()
            chosen = [rows[i] for i in self._selected]
        b = self._client.budget
        return cancel_plan(chosen, remaining=b.remaining, limit=b.limit, kept=b.kept, max_rps=self._client.max_rps,
                           over_budget=budget_plan(self._client, len(chosen), self._wait_for_budget))

    # -- actions from Python (they block until done) ----------------------------------------------
    def refresh(self, ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Look each batch (or these) up: GETs only, paced; returns the look-up report. Beyond
        what the hourly budget allows now the rows past it are skipped, and the console says so."""
        self._start("refresh", self._refresh_ids(ids))
        self.wait()
        assert self._last_lookup is not None
        return self._last_lookup

    def cancel(self, *, reason: str | None = None) -> pd.DataFrame:
        """Cancel exactly the selected batches, each once; returns the report (also `report`).
        InputError, and nothing sent, when nothing is selected, a request is already running or
        the reason is not text. A `reason` given here becomes the console's `reason`."""
        if reason is not None:
            self.reason = _checked_reason(reason)
        self._start("cancel", tuple(self.selected))
        self.wait()
        assert self.report is not None
        return self.report

    def stop(self) -> None:
        """Halt the running refresh or cancel: nothing new is sent; what was sent is reported."""
        if self._stop is not None:
            self._stop.set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the request run in flight (if any) has ended and been drawn."""
        t = self._thread
        if t is not None:
            t.join(timeout)

    def running(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive()

    def export(self, path: str | None = None, *, excel: bool | None = None) -> str:
        """Write the last cancel's report as CSV (`path`, else the path in the export box)."""
        if self.report is None:
            raise InputError("there is no report yet: cancel something first")
        target = path if path is not None else self.view.export_path.value
        as_excel = bool(self.view.excel.value if excel is None else excel)
        return str(export_csv(self.report, target, excel=as_excel))

    # -- buttons (they start a worker and return at once) -------------------------------------------
    def arm(self) -> None:
        """Cancel button: show the plan; only Confirm sends."""
        with self._acting:
            if not self._selected:
                self.view.say("warn", "Nothing selected: tick rows or use <b>Select matching</b> first.")
                return
            self._armed = tuple(self.selected)
            self.view.armed(True, html.escape(self.plan()) + ". <b>Confirm</b> sends.")

    def confirm(self) -> None:
        """Confirm button: send the armed cancel if the selection is still the one armed."""
        with self._acting:
            armed, self._armed = self._armed, None
            self.view.armed(False)
            if armed is None or armed != tuple(self.selected):
                self.view.say("warn", "Nothing sent: the selection changed (or was never armed); "
                                      "click <b>Cancel selected…</b> again.")
                return
            self._try_start("cancel", armed)

    def refresh_clicked(self, only_selected: bool) -> None:
        """Refresh buttons: look up all rows (asking once more when beyond the budget) or the selected."""
        with self._acting:
            ids = tuple(self.selected) if only_selected else tuple(self._pos)
            over = budget_plan(self._client, len(ids), self._wait_for_budget)
            if over is not None and not only_selected and not self._refresh_armed:
                self._refresh_armed = True
                self.view.say("warn", f"Looking up every row: {html.escape(over)}. Click <b>Refresh all</b> again "
                                      "to go on, or <b>Refresh selected</b> to look up only the selected rows.")
                return
            self._refresh_armed = False
            self._try_start("refresh", ids)

    def select_clicked(self) -> None:
        """Select matching button: the filters in the boxes become a `select`."""
        f = self.view.filters()
        try:
            n = len(self.select(**f))
        except InputError as exc:
            self.view.say("bad", html.escape(str(exc)))
            return
        self.view.say("good", f"{n:,} row(s) selected.")

    def export_clicked(self) -> None:
        try:
            path = self.export()
        except (InputError, ConfigError, ValueError) as exc:
            self.view.say("bad", html.escape(str(exc)))
            return
        self.view.say("good", f"Report written to <code>{html.escape(path)}</code>.")

    def _try_start(self, action: str, ids: tuple[str, ...]) -> None:
        try:
            self._start(action, ids)
        except InputError as exc:
            self.view.say("bad", html.escape(str(exc)))

    # -- running ----------------------------------------------------------------------------------
    def _refresh_ids(self, ids: Sequence[str] | None) -> tuple[str, ...]:
        if ids is None:
            return tuple(self._pos)
        listed = [ids] if isinstance(ids, str) else list(ids)
        missing = [i for i in listed if i not in self._pos]
        if missing:
            raise InputError(f"{len(missing)} ID(s) are no row of this console: {', '.join(map(repr, missing[:5]))}")
        return tuple(listed)

    def _start(self, action: str, ids: tuple[str, ...]) -> None:
        """Start a refresh or cancel of exactly `ids` on a worker thread."""
        with self._acting:
            if self.running():
                raise InputError("a refresh or cancel is still running: wait for it (or Stop it)")
            if not ids:
                raise InputError("nothing selected: nothing was sent" if action == "cancel" else "no rows to look up")
            self._stop = threading.Event()
            self._pending, self._done_count = [], 0
            self.view.running(True, f"{'Cancelling' if action == 'cancel' else 'Looking up'} {len(ids):,}…", len(ids))
            work = self._run_cancel if action == "cancel" else self._run_refresh
            self._thread = threading.Thread(target=self._guarded, args=(work, ids, self._stop),
                                            name=f"smtoolkit-console-{action}", daemon=True)
            self._thread.start()

    def _guarded(self, work: Callable[[tuple[str, ...], threading.Event], None], ids: tuple[str, ...],
                 stop: threading.Event) -> None:
        ended = threading.Event()
        drawer = threading.Thread(target=self._drawing, args=(ended,), name="smtoolkit-console-draw", daemon=True)
        drawer.start()
        try:
            work(ids, stop)
        except Exception as exc:  # noqa: BLE001 - shown in the console, never lost
            self.view.say("bad", f"Unexpected error: {html.escape(type(exc).__name__)}: {html.escape(str(exc))}")
        finally:
            ended.set()
            self._new_results.set()
            drawer.join()
            self.view.running(False)

    def _drawing(self, ended: threading.Event) -> None:
        """The drawing thread of one run: redraws the grid as results arrive, at most every
        DRAW_EVERY seconds and at most a DRAW_SHARE of the time; the run's end draws the rest."""
        while True:
            self._new_results.wait()
            if ended.is_set():
                return
            began = time.monotonic()
            self._new_results.clear()
            try:
                self._draw()
            except Exception:  # noqa: BLE001 - a failed redraw must not end the run; its report draws again
                return
            ended.wait(max(DRAW_EVERY, (time.monotonic() - began) / DRAW_SHARE))

    def _run_refresh(self, ids: tuple[str, ...], stop: threading.Event) -> None:
        report = cancel_batches(list(ids), client=self._client, dry_run=True, progress=False,
                                wait_for_budget=self._wait_for_budget,
                                budget_check_every=self._budget_check_every, on_result=self._collect, stop=stop)
        self._last_lookup = report
        self._apply_report(report, cancel=False)
        self.view.say(*_summary("Look-up", report))

    def _run_cancel(self, ids: tuple[str, ...], stop: threading.Event) -> None:
        report = cancel_batches(list(ids), client=self._client, progress=False, journal=self._journal,
                                wait_for_budget=self._wait_for_budget,
                                budget_check_every=self._budget_check_every, on_result=self._collect, stop=stop,
                                reason=self.reason)
        self.report = report
        self._apply_report(report, cancel=True)
        self.view.say(*_summary("Cancel", report))

    def _collect(self, r: Result) -> None:
        """Each result as it arrives (on the run's thread): kept for the drawing thread."""
        with self._lock:
            self._pending.append(r)
            self._done_count += 1
        self._new_results.set()

    def _draw(self) -> None:
        # Under the lock: a tick in the grid waits for the redraw instead of being drawn over.
        with self._lock:
            pending, self._pending = self._pending, []
            _apply_results(self._frame, self._pos, pending)
            self.view.draw_grid(grid_frame(self._frame), self._selected)
            self.view.progress(self._done_count)

    def _apply_report(self, report: pd.DataFrame, cancel: bool) -> None:
        """The run's report becomes the rows' latest state; after a cancel the selection keeps
        only the rows a retry could still change."""
        with self._lock:
            pending, self._pending = self._pending, []
            _apply_results(self._frame, self._pos, pending)
            sent = report.dropna(subset=["batch_id"]).drop_duplicates("batch_id")
            sent = sent[sent["batch_id"].isin(self._pos)]
            _apply_frame(self._frame, self._pos, sent)
            if cancel:
                over = {self._pos[b] for b, o in zip(sent["batch_id"], sent["outcome"], strict=True)
                        if o is not pd.NA and not could_retry(str(o))}
                self._selected = [p for p in self._selected if p not in over]
            self.view.draw_grid(grid_frame(self._frame), self._selected)
            self.view.selection_changed(len(self._selected))
            self.view.progress(len(sent))


def _checked_reason(reason: Any) -> str | None:
    kept, problem = check_reason(reason)
    if problem is not None:
        raise InputError(problem)
    return kept


def _text(value: Any) -> str | None:
    return None if value is None or value is pd.NA else str(value)


def _initial_frame(batches: Any, column: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows (one per distinct valid ID, with what the input already says of each) and the
    input rows that cannot be rows (invalid or duplicate)."""
    source, values = extract(batches, column)
    p = plan_ids(values)
    first = [i for i, b in enumerate(p.ids) if b is not None and i not in p.duplicates]
    frame = pd.DataFrame({"batch_id": pd.array([p.ids[i] for i in first], dtype="string")})
    for name, dtype in FRAME_DTYPES.items():
        if name == "batch_id":
            continue
        known = source[name].iloc[first].tolist() if name in source.columns and name != column else [None] * len(first)
        frame[name] = _typed(known, dtype)
    rejected = pd.DataFrame({
        "position": [*p.problems, *p.duplicates],
        "value": [values[i] for i in p.problems] + [values[i] for i in p.duplicates],
        "reason": [*p.problems.values(), *(f"duplicate of row {p.duplicates[i]}" for i in p.duplicates)],
    }).sort_values("position", ignore_index=True)
    return frame, rejected


def _typed(values: list[Any], dtype: str) -> pd.Series:
    if dtype.startswith("datetime"):
        return pd.Series(pd.to_datetime(pd.Series(values, dtype=object), utc=True, errors="coerce"),
                         dtype=dtype)
    if dtype == "Int64":
        return pd.Series(pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")).astype("Int64")
    return pd.Series([None if v is None or v is pd.NA or v != v else str(v) for v in values], dtype="string")


def _apply_results(frame: pd.DataFrame, pos: dict[str, int], results: Sequence[Result]) -> None:
    """Write results into their rows (new values only; a status not told keeps the last seen)."""
    col = {name: list(frame.columns).index(name) for name in FRAME_DTYPES}
    for r in results:
        at = pos.get(r.batch_id or "")
        if at is None:
            continue
        batch = r.batch or {}
        values: dict[str, Any] = {name: getattr(r, name) for name in _FROM_RESULT}
        values["outcome"] = r.outcome.value
        told = {"status_code": r.status_code, "cancel_time": r.cancel_time,
                "description": batch.get("description"), "schedule_time": batch.get("schedule_time")}
        values.update({k: v for k, v in told.items() if v is not None})
        for name, value in values.items():
            typed: Any = _typed([value], FRAME_DTYPES[name]).iat[0]
            frame.iat[at, col[name]] = typed


def _apply_frame(frame: pd.DataFrame, pos: dict[str, int], report: pd.DataFrame) -> None:
    """Write a run's report rows into the frame, column by column."""
    at = [pos[b] for b in report["batch_id"]]
    for name in _FROM_RESULT:
        frame.loc[frame.index[at], name] = _typed(report[name].tolist(), FRAME_DTYPES[name]).to_numpy()
    for name in ("status_code", "cancel_time", *(("description", "schedule_time") if "description" in report else ())):
        if name not in report.columns:
            continue
        new = _typed(report[name].tolist(), FRAME_DTYPES[name])
        keep = new.notna().to_numpy()
        rows = frame.index[[a for a, k in zip(at, keep, strict=True) if k]]
        frame.loc[rows, name] = new[keep].to_numpy()


def _summary(what: str, report: pd.DataFrame) -> tuple[str, str]:
    """The message after a run: counts by outcome, and why it halted early if it did."""
    counts = report["outcome"].value_counts()
    parts = ", ".join(f"{k} {v:,}" for k, v in counts.items())
    halted = report.attrs.get("halted", report.attrs.get("stopped"))
    if halted:
        why = report.attrs.get("error") or halted
        return "bad", f"{what} halted ({html.escape(str(why))}): {html.escape(parts)}."
    return "good", f"{what} done: {html.escape(parts)}."
