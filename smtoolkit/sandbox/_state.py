"""The sandbox's in-memory truth: batches, their queries, and how they progress.

Everything here runs under the store's lock; nothing touches sockets. Time comes from
injected clocks so progression can be exact in tests.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

QUEUED, RUNNING, STOPPED = "QUEUED", "RUNNING", "STOPPED"
SUCCESS, FAILURE = "SUCCESS", "FAILURE"
BATCH_STATUSES = (QUEUED, RUNNING, STOPPED)


def iso(ts: float | None) -> str | None:
    """Seconds since the epoch as an ISO-8601 UTC string (millisecond precision)."""
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass
class Query:
    schedule_id: str
    account: str
    start_date: str
    end_date: str
    status_code: str = QUEUED
    start: float | None = None
    end: float | None = None
    error_code: str | None = None
    rows: int = 0


@dataclass
class Batch:
    batch_id: str
    description: str
    created: float  # wall clock
    created_mono: float  # monotonic clock, drives automatic progression
    queries: list[Query]
    concurrency: int = 5
    timeout_minutes: int = 30
    split_accounts_policy: str = "none"
    split_dates_policy: str = "none"
    output_format: str = "json"
    exclude_account_errors: bool = False
    clean_data_types: bool = False
    status_code: str = QUEUED
    start: float | None = None
    end: float | None = None
    cancel_time: float | None = None
    stop_due_mono: float | None = None  # a cancel waiting for the stop delay to pass
    steps_applied: int = 0
    deletes: int = 0  # DELETEs that reached the handler (applied or not)
    cancels_applied: int = 0  # DELETEs that changed the batch
    gets: int = 0

    def record(self, base_path: str) -> dict[str, Any]:
        """The QueryBatch object the API returns as `data`."""
        return {
            "@type": "query_batch",
            "batch_id": self.batch_id,
            "status_code": self.status_code,
            "schedule_time": iso(self.created),
            "start_time": iso(self.start),
            "end_time": iso(self.end),
            "cancel_time": iso(self.cancel_time),
            "description": self.description,
            "split_accounts_policy": self.split_accounts_policy,
            "split_dates_policy": self.split_dates_policy,
            "timeout_minutes": self.timeout_minutes,
            "query_amount": len(self.queries),
            "query_concurrency": self.concurrency,
            "query_output_format": self.output_format,
            "add_exclude_account_errors": self.exclude_account_errors,
            "add_clean_data_types": self.clean_data_types,
            "links": {"status": {"href": f"{base_path}/query/batch/{self.batch_id}/status"}},
        }

    def progress(self) -> dict[str, int]:
        counts = {"queued": 0, "running": 0, "success": 0, "failure": 0}
        for q in self.queries:
            counts[q.status_code.lower()] += 1
        return counts

    def truth(self) -> dict[str, Any]:
        """What really happened to this batch, for tests to compare with a client's report."""
        return {
            "batch_id": self.batch_id,
            "status_code": self.status_code,
            "cancel_time": iso(self.cancel_time),
            "end_time": iso(self.end),
            "cancelled": self.cancel_time is not None,
            "stop_pending": self.stop_due_mono is not None,
            "deletes": self.deletes,
            "cancels_applied": self.cancels_applied,
            "gets": self.gets,
            "progress": self.progress(),
        }


def query_record(q: Query, base_url: str) -> dict[str, Any]:
    """The BatchQuery object of the status endpoint."""
    error = None
    if q.status_code == FAILURE:
        cancelled = q.error_code == "QUERY_CANCELLED"
        error = {
            "status": "error",
            "code": q.error_code,
            "message": "Query was cancelled with its batch" if cancelled else "Data source error",
            "description": "" if cancelled else "The data source returned an error (sandbox)",
        }
    result = None
    if q.status_code == SUCCESS:
        result = {"total_rows": q.rows, "results_url": f"{base_url}/_sandbox/results/{q.schedule_id}"}
    return {
        "@type": "batch_query",
        "schedule_id": q.schedule_id,
        "status_code": q.status_code,
        "query_start_time": iso(q.start),
        "query_end_time": iso(q.end),
        "split_info": {"ds_accounts": [q.account], "start_date": q.start_date, "end_date": q.end_date},
        "error_info": error,
        "result_info": result,
    }


@dataclass
class Progression:
    """How batches move on their own.

    tick: seconds per step of automatic progression; None means "only when told"
        (`Store.advance`), so tests need no sleeps.
    stop_delay: seconds between an accepted cancel and the batch reading STOPPED.
    failure_rate: share of queries that end in FAILURE.
    """

    tick: float | None = None
    stop_delay: float = 0.0
    failure_rate: float = 0.1


class Store:
    """Thread-safe batch store. All reads refresh progression first."""

    def __init__(
        self,
        progression: Progression,
        seed: int,
        wall: Callable[[], float],
        mono: Callable[[], float],
    ) -> None:
        self.lock = threading.RLock()
        self.progression = progression
        self._rng = random.Random(f"store:{seed}")
        self._wall = wall
        self._mono = mono
        self._batches: dict[str, Batch] = {}

    # -- creation -----------------------------------------------------------------------------
    def new_id(self, prefix: str = "qrb_") -> str:
        with self.lock:
            while True:
                candidate = prefix + f"{self._rng.getrandbits(48):012x}"
                if candidate not in self._batches:
                    return candidate

    def create(
        self,
        *,
        description: str = "",
        accounts: Iterable[str] = ("acc_1",),
        queries: int | None = None,
        concurrency: int = 5,
        timeout_minutes: int = 30,
        split_accounts_policy: str = "none",
        split_dates_policy: str = "none",
        output_format: str = "json",
        exclude_account_errors: bool = False,
        clean_data_types: bool = False,
    ) -> Batch:
        with self.lock:
            accounts = list(accounts) or ["acc_1"]
            n = queries if queries is not None else len(accounts)
            batch_id = self.new_id()
            qs = [
                Query(
                    schedule_id=self.new_id("qrs_"),
                    account=accounts[i % len(accounts)],
                    start_date="2026-01-01",
                    end_date="2026-01-31",
                )
                for i in range(n)
            ]
            batch = Batch(
                batch_id=batch_id,
                description=description,
                created=self._wall(),
                created_mono=self._mono(),
                queries=qs,
                concurrency=concurrency,
                timeout_minutes=timeout_minutes,
                split_accounts_policy=split_accounts_policy,
                split_dates_policy=split_dates_policy,
                output_format=output_format,
                exclude_account_errors=exclude_account_errors,
                clean_data_types=clean_data_types,
            )
            self._batches[batch_id] = batch
            return batch

    # -- progression --------------------------------------------------------------------------
    def _step(self, b: Batch) -> None:
        now = self._wall()
        if b.status_code == STOPPED or (b.stop_due_mono is not None and b.status_code == QUEUED):
            return  # stopped, or cancelled before it started: it starts nothing
        if b.status_code == QUEUED:
            b.status_code, b.start = RUNNING, now
        else:
            for q in b.queries:
                if q.status_code == RUNNING:
                    failed = self._rng.random() < self.progression.failure_rate
                    q.status_code, q.end = (FAILURE if failed else SUCCESS), now
                    q.error_code = "DATASOURCE_ERROR" if failed else None
                    q.rows = 0 if failed else self._rng.randint(1, 5000)
        running = sum(q.status_code == RUNNING for q in b.queries)
        for q in b.queries if b.stop_due_mono is None else ():  # a cancelled batch starts nothing new
            if running >= b.concurrency:
                break
            if q.status_code == QUEUED:
                q.status_code, q.start = RUNNING, now
                running += 1
        if all(q.status_code in (SUCCESS, FAILURE) for q in b.queries):
            b.status_code, b.end = STOPPED, now

    def _refresh(self, b: Batch) -> None:
        if b.stop_due_mono is not None and self._mono() >= b.stop_due_mono:
            self._stop_now(b)
        tick = self.progression.tick
        if tick and b.status_code != STOPPED:
            due = int((self._mono() - b.created_mono) / tick)
            # A batch finishes in at most len(queries) + 2 steps; never loop longer than that.
            due = min(due, len(b.queries) + 2)
            while b.steps_applied < due and b.status_code != STOPPED:
                b.steps_applied += 1
                self._step(b)

    def _stop_now(self, b: Batch) -> None:
        """Stop a cancelled batch: running queries end as FAILURE/QUERY_CANCELLED, queued ones
        never start (they stay QUEUED, without start or end time), successes stay."""
        now = self._wall()
        for q in b.queries:
            if q.status_code == RUNNING:
                q.status_code, q.end, q.error_code = FAILURE, now, "QUERY_CANCELLED"
        b.status_code, b.end, b.stop_due_mono = STOPPED, now, None
        if b.start is None:
            b.start = now

    def advance(self, batch_ids: Iterable[str] | None = None, steps: int = 1) -> None:
        """Move the given batches (default: all) `steps` steps forward."""
        with self.lock:
            targets = self._batches.values() if batch_ids is None else [self._batches[i] for i in batch_ids]
            for b in list(targets):
                for _ in range(steps):
                    self._step(b)

    def set_status(self, batch_id: str, status: str) -> None:
        """Force a batch to QUEUED, RUNNING or STOPPED (finished on its own, not cancelled)."""
        if status not in BATCH_STATUSES:
            raise ValueError(f"status must be one of {BATCH_STATUSES}, not {status!r}")
        with self.lock:
            b = self._batches[batch_id]
            if status == RUNNING and b.status_code == QUEUED:
                self._step(b)
            elif status == STOPPED and b.stop_due_mono is not None:
                self._stop_now(b)  # a cancel waiting for its stop delay: stopped now
            elif status == STOPPED:
                while b.status_code != STOPPED:
                    self._step(b)

    # -- access -------------------------------------------------------------------------------
    def get(self, batch_id: str) -> Batch | None:
        with self.lock:
            b = self._batches.get(batch_id)
            if b is not None:
                self._refresh(b)
            return b

    def cancel(self, batch_id: str) -> tuple[Batch | None, bool]:
        """Apply a cancel. Returns (batch, was_running_before); batch None when unknown."""
        with self.lock:
            b = self.get(batch_id)
            if b is None:
                return None, False
            b.deletes += 1
            if b.status_code == STOPPED or b.stop_due_mono is not None:
                return b, False
            b.cancels_applied += 1
            b.cancel_time = self._wall()
            delay = self.progression.stop_delay
            if delay > 0:
                b.stop_due_mono = self._mono() + delay
            else:
                self._stop_now(b)
            return b, True

    def all(self) -> list[Batch]:
        with self.lock:
            for b in self._batches.values():
                self._refresh(b)
            return list(self._batches.values())

    def clear(self) -> None:
        with self.lock:
            self._batches.clear()
