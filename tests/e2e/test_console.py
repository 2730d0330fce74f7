"""CancelConsole end to end in plain pytest (no kernel): the model is driven in code and through
its buttons (`.click()`), worker threads are joined with `wait()`, and every request goes over
real HTTP to the sandbox, whose own log is the judge."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import smtoolkit as sm
from smtoolkit import CancelConsole, Client, InputError, JournalError
from smtoolkit.sandbox import Sandbox
from tests.helpers import deleted_ids, fast_client


def methods(sb: Sandbox) -> list[str]:
    return [r["method"] for r in sb.requests]


def after_results(con: CancelConsole, n: int) -> threading.Event:
    """An event set once the console has drawn at least `n` results (its progress bar)."""
    seen = threading.Event()
    con.view.bar.observe(lambda change: seen.set() if change["new"] >= n else None, names="value")
    return seen


@pytest.fixture
def mixed(sandbox: Sandbox) -> dict[str, list[str]]:
    running = sandbox.create_batches(5, age=2 * 3600) + sandbox.create_batches(3)
    queued = sandbox.create_batches(3, status="QUEUED")
    stopped = sandbox.create_batches(2, status="STOPPED")
    return {"running": running, "old": running[:5], "queued": queued, "stopped": stopped}


@pytest.fixture
def console(sandbox: Sandbox, client: Client, mixed: dict[str, list[str]]) -> Iterator[CancelConsole]:
    ids = mixed["running"] + mixed["queued"] + mixed["stopped"]
    con = CancelConsole(pd.DataFrame({"batch_id": ids + ["bad id!", ids[0]]}), client=client)
    yield con
    con.stop()
    con.wait()


def test_nothing_is_sent_before_cancel(sandbox: Sandbox, console: CancelConsole) -> None:
    assert len(console.frame) == 13 and list(console.rejected["reason"].str[:9]) == ["batch ID ", "duplicate"]
    console.select(all=True)
    console.plan()
    console.view.cancel_button.click()  # arms and states the plan; sends nothing
    assert "Cancel 13 selected batches (not looked up 13)" in console.view.message.value
    assert not console.view.confirm_button.disabled
    assert sandbox.requests == []


def test_refresh_sends_gets_only_and_fills_the_rows(sandbox: Sandbox, console: CancelConsole,
                                                    mixed: dict[str, list[str]]) -> None:
    console.refresh()
    assert set(methods(sandbox)) == {"GET"} and len(sandbox.requests) == 13
    f = console.frame.set_index("batch_id")
    assert set(f.loc[mixed["running"], "status_code"]) == {"RUNNING"}
    assert set(f.loc[mixed["stopped"], "status_code"]) == {"STOPPED"}
    assert f["schedule_time"].notna().all() and f["description"].str.startswith("sandbox batch").all()
    assert all(sandbox.batch(b)["deletes"] == 0 for b in f.index)  # type: ignore[index]


def test_only_selected_ids_get_a_delete_each_once(sandbox: Sandbox, console: CancelConsole,
                                                  mixed: dict[str, list[str]]) -> None:
    console.refresh()
    chosen = console.select(status=["RUNNING"], older_than="1h")
    assert sorted(chosen) == sorted(mixed["old"])
    assert [r["batch_id"] for r in sandbox.requests if r["method"] == "DELETE"] == []
    report = console.cancel()
    assert sorted(deleted_ids(sandbox)) == sorted(mixed["old"])  # each once, no other
    assert set(report["outcome"]) == {"cancelled"} and console.report is report
    assert console.selected == []  # nothing left a retry could change
    f = console.frame.set_index("batch_id")
    assert set(f.loc[mixed["old"], "status_code"]) == {"STOPPED"} and f.loc[mixed["old"], "cancel_time"].notna().all()
    young = [b for b in mixed["running"] if b not in mixed["old"]]
    assert set(f.loc[young, "status_code"]) == {"RUNNING"}
    assert all(sandbox.batch(b)["status_code"] == "RUNNING" for b in young)  # type: ignore[index]


def test_cancel_with_nothing_selected_sends_nothing(sandbox: Sandbox, console: CancelConsole) -> None:
    with pytest.raises(InputError, match="nothing selected"):
        console.cancel()
    console.view.cancel_button.click()
    assert "Nothing selected" in console.view.message.value
    assert sandbox.requests == []


def test_select_rules_and_the_grid_round_trip(console: CancelConsole, mixed: dict[str, list[str]]) -> None:
    with pytest.raises(InputError, match="RUNING"):
        console.select(status=["RUNING"])
    with pytest.raises(InputError, match="at least one criterion"):
        console.select()
    picked = console.select(ids=[mixed["queued"][1], mixed["running"][0]])
    assert picked == [mixed["running"][0], mixed["queued"][1]]  # table order
    assert console.view.grid.selected_rows == [0, 9]
    with pytest.raises(InputError, match="no row of this console"):
        console.select(ids=["bad id!"])
    assert console.selected == picked  # an error leaves the selection as it was
    console.view.grid.selected_rows = [1, 2, 12]  # ticks in the grid
    assert console.selected == [mixed["running"][1], mixed["running"][2], mixed["stopped"][1]]
    console.view.status_boxes["QUEUED"].value = True
    console.view.select_button.click()
    assert console.selected == [] and "0 row(s) selected" in console.view.message.value  # status not known yet
    console.refresh()
    console.view.select_button.click()
    assert console.selected == mixed["queued"] and console.view.grid.selected_rows == [8, 9, 10]


def test_a_double_click_on_confirm_sends_once(sandbox: Sandbox, console: CancelConsole,
                                              mixed: dict[str, list[str]]) -> None:
    console.select(ids=mixed["running"])
    console.view.cancel_button.click()
    console.view.confirm_button.click()
    console.view.confirm_button.click()
    console.wait()
    assert sorted(deleted_ids(sandbox)) == sorted(mixed["running"])
    assert "Nothing sent" in console.view.message.value or "Cancel done" in console.view.message.value


def test_failures_stay_selected_and_a_retry_sends_only_them(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(60)
    with fast_client(sandbox, max_retries=1) as c:
        con = CancelConsole(ids + ["qrb_unknown01"], client=c)
        con.select(ids=ids + ["qrb_unknown01"])
        # The server fails mid-cancel: from the first results the console draws on. That happens in
        # the run's own thread, so the faults are on before it sends more; pacing at 20/s keeps
        # most of the 61 rows unsent by then, however busy the machine.
        def fail_from_now(change: dict[str, object]) -> None:
            if isinstance(change["new"], int) and change["new"] >= 1:
                con.view.bar.unobserve(fail_from_now, names="value")  # once: the retry runs fault-free
                sandbox.set_faults(error_rate=1.0)

        con.view.bar.observe(fail_from_now, names="value")
        con.view.cancel_button.click()
        con.view.confirm_button.click()
        con.wait()
        report = con.report
        assert report is not None
        failed = report.loc[report.outcome == "server_error", "batch_id"].tolist()
        assert failed and con.selected == [b for b in con.frame.batch_id if b in failed]
        assert "cancelled" in set(report.outcome)
        assert set(report.outcome) <= {"cancelled", "not_found", "server_error"}
        for b in failed:
            truth = sandbox.batch(b)
            assert truth is None or not truth["cancelled"]
        before = len(deleted_ids(sandbox))
        sandbox.set_faults(error_rate=0.0)
        retry = con.cancel()
        assert sorted(deleted_ids(sandbox)[before:]) == sorted(failed)
        assert set(retry.outcome) <= {"cancelled", "not_found"} and con.selected == []


def test_stop_halts_the_cancel_and_keeps_the_rest_selected(sandbox: Sandbox, client: Client) -> None:
    ids = sandbox.create_batches(40)
    sandbox.set_faults(latency=0.05)
    con = CancelConsole(ids, client=client)
    con.select(all=True)
    started = after_results(con, 1)
    con.view.cancel_button.click()
    con.view.confirm_button.click()
    assert started.wait(60)
    con.view.stop_button.click()
    con.wait()
    report = con.report
    assert report is not None and report.attrs["stopped"] == "interrupt"
    sent = deleted_ids(sandbox)
    assert 1 <= len(sent) < 40 and len(set(sent)) == len(sent)
    skipped = report.loc[report.outcome == "skipped"]
    assert set(skipped.error_code) == {"INTERRUPTED"} and len(skipped) == 40 - len(sent)
    assert set(con.selected) == set(skipped.batch_id)  # what was not sent stays selected
    assert "halted" in con.view.message.value and con.view.stop_button.disabled


def test_an_auth_failure_halts_and_nothing_more_is_sent(sandbox: Sandbox, client: Client) -> None:
    ids = sandbox.create_batches(10)
    con = CancelConsole(ids, client=client)
    con.select(all=True)
    sandbox.revoke_key(sandbox.api_key)
    report = con.cancel()
    assert len(deleted_ids(sandbox)) == 1  # one request finds a bad key, not one per worker
    assert report.attrs["stopped"] == "auth"
    assert sorted(report.outcome.unique()) == ["skipped", "unauthorized"]
    assert con.selected == ids  # nothing was cancelled: all of them stay selected
    assert "halted" in con.view.message.value


def test_a_selection_changed_during_a_cancel_does_not_change_what_it_sends(sandbox: Sandbox,
                                                                           client: Client) -> None:
    first, second = sandbox.create_batches(12), sandbox.create_batches(12)
    sandbox.set_faults(latency=0.05)
    con = CancelConsole(first + second, client=client)
    con.select(ids=first)
    started = after_results(con, 1)
    con.view.cancel_button.click()
    con.view.confirm_button.click()
    assert started.wait(60)
    con.select(ids=second)  # while the cancel runs
    con.view.cancel_button.click()
    con.view.confirm_button.click()  # refused: still running
    con.wait()
    assert sorted(deleted_ids(sandbox)) == sorted(first)
    assert con.selected == second  # the new selection, untouched by the cancel's outcome
    assert all(not sandbox.batch(b)["cancelled"] for b in second)  # type: ignore[index]


def test_the_journal_records_and_a_second_console_sends_nothing_final(sandbox: Sandbox, client: Client,
                                                                      tmp_path: Path) -> None:
    ids = sandbox.create_batches(6)
    journal = tmp_path / "cleanup.jsonl"
    con = CancelConsole(ids, client=client, journal=str(journal))
    con.select(ids=ids[:4])
    con.cancel()
    lines = journal.read_text().splitlines()
    assert sum(any(b in line for line in lines) for b in ids[:4]) == 4 and not any(ids[5] in ln for ln in lines)
    again = CancelConsole(ids, client=client, journal=str(journal))
    again.select(ids=ids)
    report = again.cancel()
    assert sorted(deleted_ids(sandbox)) == sorted(ids)  # the first four once, the last two once
    assert report.attrs["resumed_from_journal"] == 4 and set(report.outcome) == {"cancelled"}


def test_export_writes_only_on_click(sandbox: Sandbox, console: CancelConsole, tmp_path: Path,
                                     mixed: dict[str, list[str]]) -> None:
    target = tmp_path / "report.csv"
    console.view.export_path.value = str(target)
    console.select(ids=mixed["queued"])
    console.cancel()
    assert not target.exists()
    console.view.excel.value = True
    console.view.export_button.click()
    assert target.read_bytes().startswith(b"\xef\xbb\xbf")  # Excel's BOM
    assert "Report written" in console.view.message.value
    assert len(pd.read_csv(target, encoding="utf-8-sig")) == 3


def test_refresh_beyond_the_budget_asks_first(sandbox: Sandbox) -> None:
    sandbox.set_limits(hourly_limit=30)
    ids = sandbox.create_batches(40)
    with fast_client(sandbox, reserve=5) as c:
        con = CancelConsole(ids, client=c)
        con.refresh(ids[:2])  # now the budget is known: 28 left, 23 to spend
        con.select(ids=ids[:3])
        sent = len(sandbox.requests)
        con.view.refresh_all.click()
        assert "Refresh all</b> again" in con.view.message.value and len(sandbox.requests) == sent
        con.view.refresh_selected.click()
        con.wait()
        assert len(sandbox.requests) == sent + 3 and set(methods(sandbox)) == {"GET"}


def test_a_console_on_a_journal_shows_what_it_settled_before_sending(sandbox: Sandbox, client: Client,
                                                                     tmp_path: Path) -> None:
    ids = sandbox.create_batches(6)
    journal = tmp_path / "cleanup.jsonl"
    sm.cancel_batches(ids[:4], client=client, journal=journal, progress=False)
    sent = len(sandbox.requests)
    con = CancelConsole(ids, client=client, journal=journal)
    assert len(sandbox.requests) == sent  # built from the journal alone
    frame = con.frame.set_index("batch_id")
    assert list(frame.loc[ids[:4], "outcome"]) == ["cancelled"] * 4
    assert list(frame.loc[ids[:4], "status_code"]) == ["STOPPED"] * 4
    assert frame.loc[ids[4:], "outcome"].isna().all()
    assert con.select(all=True) == ids[4:]  # what the journal says is over is not offered again


def test_a_console_on_another_apis_journal_is_refused_before_sending(sandbox: Sandbox, client: Client,
                                                                      tmp_path: Path) -> None:
    journal = tmp_path / "other.jsonl"
    journal.write_text('{"format": "smtoolkit-journal", "version": 1, "base_url": "https://elsewhere.example"}\n')
    with pytest.raises(JournalError, match="elsewhere"):
        CancelConsole(sandbox.create_batches(2), client=client, journal=journal)
    assert sandbox.requests == []


def test_a_console_cancel_waits_for_the_budget_when_told() -> None:
    limit, kept = 20, 5
    with Sandbox(hourly_limit=limit, budget_window=2.0, per_second=50, seed=3) as sb:
        ids = sb.create_batches(2 * (limit - kept))
        with Client(api_key=sb.api_key, base_url=sb.base_url, reserve=kept) as c:
            waiting = CancelConsole(ids, client=c, wait_for_budget=60, budget_check_every=0.5)
            waiting.select(all=True)
            report = waiting.cancel()
        assert set(report["outcome"]) == {"cancelled"} and report.attrs["halted"] is None
        assert report.attrs["budget_waits"] >= 1 and all(sb.batch(b)["cancelled"] for b in ids)  # type: ignore[index]
    with Sandbox(hourly_limit=limit, budget_window=120.0, per_second=50, seed=3) as sb:
        ids = sb.create_batches(limit)
        with Client(api_key=sb.api_key, base_url=sb.base_url, reserve=kept) as c:
            halting = CancelConsole(ids, client=c)
            halting.select(all=True)
            report = halting.cancel()
        assert report.attrs["halted"] and "skipped" in set(report["outcome"])
        assert halting.selected == list(report.loc[report.outcome == "skipped", "batch_id"])
