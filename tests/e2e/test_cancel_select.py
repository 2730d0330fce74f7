"""`cancel_batches(only_status=, older_than=, description=, on_plan=)` and retrying from a
report, over real HTTP against the sandbox, judged by the sandbox's own request log."""

from __future__ import annotations

import threading
from pathlib import Path

import smtoolkit as sm
from smtoolkit import Client
from smtoolkit.core.select import CancelPlan
from smtoolkit.sandbox import Sandbox
from tests.helpers import deleted_ids, fast_client

HOURS = 3600.0


def test_lookups_count_in_requests_sent_and_only_matches_are_deleted(sandbox: Sandbox, client: Client) -> None:
    old = sandbox.create_batches(3, age=5 * HOURS)
    young = sandbox.create_batches(2)
    plans: list[CancelPlan] = []
    report = sm.cancel_batches([*old, *young], client=client, progress=False, older_than=2 * HOURS,
                               on_plan=lambda p: plans.append(p) or True)
    assert sorted(deleted_ids(sandbox)) == sorted(old)
    assert report.attrs["requests_sent"] == len(sandbox.requests) == 5 + 3
    assert report.attrs["lookups"] == 5 and report.attrs["confirmed"] is True
    [plan] = plans
    assert plan.to_cancel == 3 and plan.looked_up == 5 and report.attrs["plan"] == str(plan)
    assert report["outcome"].tolist() == ["cancelled"] * 3 + ["left_alone"] * 2
    assert report["attempts"].tolist() == [2, 2, 2, 1, 1]  # a cancelled row counts its look-up too
    assert report["status_seen"].tolist() == ["RUNNING"] * 5


def test_a_plan_not_confirmed_sends_no_delete(sandbox: Sandbox, client: Client) -> None:
    ids = sandbox.create_batches(3)
    report = sm.cancel_batches(ids, client=client, progress=False, only_status="RUNNING", on_plan=lambda p: False)
    assert deleted_ids(sandbox) == []
    assert set(report["outcome"]) == {"skipped"} and set(report["error_code"]) == {"NOT_CONFIRMED"}
    assert report.attrs["confirmed"] is False
    assert sm.to_retry(report)["batch_id"].tolist() == ids


def test_a_failed_lookup_is_not_cancelled_and_says_why(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(2)
    sandbox.set_faults(error_rate=1.0)
    with fast_client(sandbox, max_retries=1) as c:
        report = sm.cancel_batches(ids, client=c, progress=False, only_status=["RUNNING"])
    assert deleted_ids(sandbox) == []
    assert set(report["outcome"]) == {"server_error"}
    assert all(m.startswith("not cancelled: the look-up failed") for m in report["error_message"])
    assert sm.to_retry(report)["batch_id"].tolist() == ids


def test_a_halt_during_the_lookups_cancels_nothing_and_reports_every_row(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(6)
    sandbox.set_limits(hourly_limit=4)
    with fast_client(sandbox, reserve=1) as c:
        report = sm.cancel_batches([*ids, "bad id!"], client=c, progress=False, only_status="RUNNING")
    assert deleted_ids(sandbox) == []
    assert report.attrs["halted"] == "reserve"
    assert len(report) == 7 and report["outcome"].iloc[-1] == "invalid_id"
    assert set(report["outcome"].iloc[:-1]) == {"skipped"}
    assert set(report["error_code"].iloc[:-1]) == {"BUDGET_RESERVE"}
    assert "plan" not in report.attrs or report.attrs["plan"] is None


def test_stop_during_the_lookups_cancels_nothing(sandbox: Sandbox, client: Client) -> None:
    ids = sandbox.create_batches(3)
    stop = threading.Event()
    stop.set()
    report = sm.cancel_batches(ids, client=client, progress=False, only_status="RUNNING", stop=stop)
    assert deleted_ids(sandbox) == []
    assert report.attrs["halted"] == "interrupt" and set(report["outcome"]) == {"skipped"}


def test_the_journal_records_rows_left_alone_only_once_the_plan_goes_ahead(sandbox: Sandbox, client: Client,
                                                                           tmp_path: Path) -> None:
    running = sandbox.create_batches(2)
    queued = sandbox.create_batches(1, status="QUEUED")
    journal = tmp_path / "j.jsonl"
    sm.cancel_batches([*running, *queued], client=client, progress=False, only_status="QUEUED",
                      journal=journal, on_plan=lambda p: False)
    assert not journal.exists() or "left_alone" not in journal.read_text(encoding="utf-8")
    report = sm.cancel_batches([*running, *queued], client=client, progress=False, only_status="QUEUED",
                               journal=journal)
    text = journal.read_text(encoding="utf-8")
    assert text.count('"left_alone"') == 2 and text.count('"cancelled"') == 1
    assert deleted_ids(sandbox) == queued
    assert report["outcome"].tolist() == ["left_alone", "left_alone", "cancelled"]


def test_the_console_selects_the_retry_rows_of_a_report(sandbox: Sandbox, client: Client, tmp_path: Path) -> None:
    ids = sandbox.create_batches(5)
    sandbox.set_limits(hourly_limit=4)
    with fast_client(sandbox, reserve=1) as c:
        report = sm.cancel_batches(ids, client=c, progress=False, workers=1)
    sm.export_csv(report, tmp_path / "r.csv", excel=True)
    back = sm.read_report(tmp_path / "r.csv")
    seen = len(sandbox.requests)
    console = sm.CancelConsole(back, client=client)
    assert console.select(retry=True) == sm.to_retry(back)["batch_id"].tolist()
    assert len(console.selected) == 2 and len(sandbox.requests) == seen  # selecting sends nothing
    sandbox.set_limits(hourly_limit=5000)
    console.cancel()
    assert deleted_ids(sandbox)[-2:] == console.report["batch_id"].tolist()
