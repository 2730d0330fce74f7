"""After the cancel (#25): query counts that match the sandbox's own, a reason and operator on
record, and `smtoolkit journal` reading a journal that another process is writing. Over real HTTP
against the sandbox (or a scripted server where the sandbox cannot fail on cue); the CLI runs as a
subprocess."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import smtoolkit as sm
from smtoolkit.sandbox import Sandbox
from tests.helpers import CLI_TIMEOUT, check_no_leak, cli_env, fast_client, run_cli, wait_for
from tests.scripted import Reply, Scripted, batch

COUNTS = ["queued", "running", "success", "failure"]
HOSTILE = "=HYPERLINK(\"x\")\nline two\r\x00\x1b[2J\ttab \ud800 end"


def _mixed(sb: Sandbox) -> dict[str, list[str]]:
    """Batches whose counts differ: running with queries still queued, queued, finished, part done."""
    ids = {"running": sb.create_batches(2, "RUNNING", queries=7), "queued": sb.create_batches(1, "QUEUED", queries=3),
           "finished": sb.create_batches(1, "STOPPED", queries=4), "partly": sb.create_batches(1, "RUNNING", queries=9)}
    sb.advance(ids["partly"], 1)  # 5 of 9 done, 4 running: results delivered before the cancel
    return ids


def _status_gets(sb: Sandbox) -> Counter[str]:
    return Counter(r["batch_id"] for r in sb.requests if r["method"] == "GET" and r["path"].endswith("/status"))


def _truth(sb: Sandbox, ids: list[str]) -> dict[str, dict[str, int]]:
    return {b: sb.batch(b)["progress"] for b in ids}  # type: ignore[index]


# -- item 2: query counts ------------------------------------------------------------------------
def test_query_counts_match_the_sandbox_and_cost_one_request_per_stopped_batch(sandbox: Sandbox) -> None:
    ids = _mixed(sandbox)
    stopped = [b for group in ids.values() for b in group]
    rows = [*stopped, "qrb_000000000bad", "not an id", stopped[0]]
    with fast_client(sandbox) as c:
        report = sm.cancel_batches(rows, client=c, progress=False, query_counts=True)
    assert report["outcome"].tolist()[:5] == ["cancelled"] * 3 + ["already_stopped", "cancelled"]
    truth = _truth(sandbox, stopped)
    for i, b in enumerate(stopped):
        assert report.loc[i, COUNTS].astype(int).to_dict() == truth[b], b
    # After the cancel: queued queries never ran, running ones ended, successes stayed.
    assert truth[ids["queued"][0]] == {"queued": 3, "running": 0, "success": 0, "failure": 0}
    partly = truth[ids["partly"][0]]
    assert partly["success"] > 0 and partly["queued"] == partly["running"] == 0 and sum(partly.values()) == 9
    finished = truth[ids["finished"][0]]
    assert finished["queued"] == finished["running"] == 0 and finished["success"] + finished["failure"] == 4
    assert report.loc[5:, COUNTS].isna().all().all()  # not found, invalid, duplicate: NA
    assert all(str(report[k].dtype) == "Int64" for k in COUNTS)
    # Exactly one extra request per stopped batch, counted in requests_sent.
    assert _status_gets(sandbox) == Counter(stopped)
    assert report.attrs["requests_sent"] == len(sandbox.requests) == len(stopped) + 1 + len(stopped)
    assert report.attrs["query_counts"] is True and report.attrs["query_counts_missing"] == 0


def test_a_choosing_run_counts_the_matches_it_found_stopped_too(sandbox: Sandbox) -> None:
    """With filters, a match the look-up saw STOPPED gets no DELETE, yet it ends STOPPED: it
    gets its one status request like a cancelled one; rows left alone get none."""
    ids = _mixed(sandbox)
    rows = [b for group in ids.values() for b in group]
    with fast_client(sandbox) as c:
        report = sm.cancel_batches(rows, client=c, progress=False, query_counts=True,
                                   only_status=["RUNNING", "STOPPED"])
    outcome = dict(zip(report["batch_id"], report["outcome"], strict=True))
    assert outcome[ids["finished"][0]] == "already_stopped" and outcome[ids["queued"][0]] == "left_alone"
    ended = [b for b in rows if outcome[b] in ("cancelled", "already_stopped")]
    truth = _truth(sandbox, ended)
    for b in ended:
        row = report.loc[report["batch_id"] == b, COUNTS].iloc[0]
        assert row.astype(int).to_dict() == truth[b], b
    assert report.loc[report["batch_id"] == ids["queued"][0], COUNTS].isna().all(axis=None)
    assert _status_gets(sandbox) == Counter(ended)  # one each, none for the row left alone
    assert report.attrs["requests_sent"] == len(sandbox.requests) and report.attrs["query_counts_missing"] == 0


def test_query_counts_use_the_same_names_and_types_as_get_batches(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(2, "RUNNING", queries=6)
    with fast_client(sandbox) as c:
        looked = sm.get_batches(ids, client=c, progress=False, query_counts=True)
        with pytest.warns(UserWarning, match="query_counts"):
            old = sm.get_batches(ids, client=c, progress=False, with_progress=True)
        cancelled = sm.cancel_batches(ids, client=c, progress=False, query_counts=True)
    assert {k: str(looked[k].dtype) for k in COUNTS} == {k: str(cancelled[k].dtype) for k in COUNTS}
    assert looked[COUNTS].equals(old[COUNTS])
    assert looked.loc[0, "queued"] == 1 and cancelled.loc[0, "queued"] == 1  # the queued one never started


def test_without_query_counts_nothing_more_is_sent(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(3)
    with fast_client(sandbox) as c:
        report = sm.cancel_batches(ids, client=c, progress=False)
    assert not _status_gets(sandbox) and not set(COUNTS) & set(report.columns)
    assert report.attrs["query_counts"] is False and report.attrs["requests_sent"] == 3


def test_a_failed_count_keeps_the_cancel_and_says_the_counts_are_missing() -> None:
    def answer(method: str, path: str) -> Reply:
        if path.split("?")[0].endswith("/status"):
            return Reply(503, {"meta": {"request_id": "req_scripted03"}, "error": {"code": "SERVICE_UNAVAILABLE"}})
        return Reply(200, batch(path.split("?")[0].rsplit("/", 1)[-1]))

    with Scripted(responder=answer) as server, fast_client(server, max_retries=1) as c:
        with pytest.warns(UserWarning, match="query counts are missing for 2 stopped"):
            report = sm.cancel_batches(["qrb_a", "qrb_b"], client=c, progress=False, query_counts=True)
    assert report["outcome"].tolist() == ["cancelled", "cancelled"]
    assert report[COUNTS].isna().all().all() and report.attrs["query_counts_missing"] == 2
    assert report.attrs["halted"] is None
    assert sum(e["path"].split("?")[0].endswith("/status") for e in server.log) == 4  # retried, then given up


@pytest.mark.sandbox(hourly_limit=4)
def test_the_reserve_reached_by_a_count_still_returns_the_whole_report(sandbox: Sandbox) -> None:
    a, b, c_ = sandbox.create_batches(3)
    with fast_client(sandbox, reserve=1) as c, pytest.warns(UserWarning):
        report = sm.cancel_batches([a, b, c_], client=c, workers=1, progress=False, query_counts=True)
    # DELETE a, its count, DELETE b (now at the reserve): b's count and c's DELETE are not sent.
    assert report["outcome"].tolist() == ["cancelled", "cancelled", "skipped"]
    assert report.loc[0, COUNTS].astype(int).to_dict() == sandbox.batch(a)["progress"]  # type: ignore[index]
    assert report.loc[1, COUNTS].isna().all() and report.attrs["query_counts_missing"] == 1
    assert report.attrs["halted"] == "reserve" and _status_gets(sandbox) == Counter([a])


def test_cli_query_counts_summary_and_columns_match_the_sandbox(sandbox: Sandbox, tmp_path: Path) -> None:
    ids = _mixed(sandbox)
    stopped = [b for group in ids.values() for b in group]
    out = tmp_path / "r.csv"
    p = run_cli(sandbox, "cancel", *stopped, "--yes", "--no-progress", "--query-counts", "--out", str(out))
    assert p.returncode == 0, p.stderr
    report = pd.read_csv(out, dtype={k: "Int64" for k in COUNTS})
    truth = _truth(sandbox, stopped)
    assert {r.batch_id: {k: int(getattr(r, k)) for k in COUNTS} for r in report.itertuples()} == truth
    total = {k: sum(t[k] for t in truth.values()) for k in COUNTS}
    assert (f"queries of {len(stopped)} stopped batch(es): {total['success']} had delivered results (success), "
            f"{total['queued']} never ran (queued)") in p.stdout
    assert _status_gets(sandbox) == Counter(stopped)
    # With -o csv the data stays alone on stdout; the summary line goes to stderr.
    again = run_cli(sandbox, "cancel", *stopped[:2], "--yes", "--no-progress", "--query-counts", "-o", "csv")
    assert "queries of 2 stopped batch(es)" in again.stderr and "queries of" not in again.stdout
    assert list(csv.reader(io.StringIO(again.stdout)))[0][-4:] == COUNTS


def test_cli_status_query_counts_and_its_old_name(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(2, queries=6)
    new = run_cli(sandbox, "status", *ids, "--no-progress", "--query-counts", "-o", "csv")
    old = run_cli(sandbox, "status", *ids, "--no-progress", "--with-progress", "-o", "csv")
    assert new.returncode == old.returncode == 0
    rows = [pd.read_csv(io.StringIO(x.stdout))[COUNTS].to_dict("records") for x in (new, old)]
    assert rows[0] == rows[1] == [{"queued": 1, "running": 5, "success": 0, "failure": 0}] * 2


# -- item 4: a reason on record -------------------------------------------------------------------
def _headers(journal: Path) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in journal.read_text(encoding="utf-8").split("\n") if x]
    return [x for x in lines if x.get("format") == "smtoolkit-journal"]


def test_reason_and_operator_in_journal_attrs_and_csv(sandbox: Sandbox, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGNAME", "maria")  # getpass.getuser() reads $LOGNAME first
    ids = sandbox.create_batches(2)
    journal = tmp_path / "j.jsonl"
    with fast_client(sandbox) as c:
        report = sm.cancel_batches(ids, client=c, progress=False, journal=journal, reason=f"  {HOSTILE}  ")
    kept = HOSTILE.replace("\ud800", "\ufffd")
    assert report.attrs["reason"] == kept and report.attrs["operator"] == "maria"
    assert report["reason"].tolist() == [kept, kept] and str(report["reason"].dtype) == "string"
    [header] = _headers(journal)
    assert header["reason"] == kept and header["operator"] == "maria" and isinstance(header["pid"], int)
    for excel in (False, True):
        path = sm.export_csv(report, tmp_path / f"r{excel}.csv", excel=excel)
        rows = list(csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8-sig"), newline="")))
        assert [r["reason"] for r in rows] == ["'" + kept] * 2  # whole, and not run as a formula


def test_reason_is_checked_before_anything_is_sent(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(1)
    with fast_client(sandbox) as c:
        for bad, says in [("x" * 2001, "2,001 characters"), (42, "must be text")]:
            with pytest.raises(sm.InputError, match=says):
                sm.cancel_batches(ids, client=c, progress=False, reason=bad)
        report = sm.cancel_batches(ids, client=c, progress=False, reason="   ")
    assert report.attrs["reason"] is None and "reason" not in report.columns
    assert len(sandbox.requests) == 1  # only the last call sent anything


def test_a_resume_keeps_the_reason_and_another_reason_is_recorded_beside_it(sandbox: Sandbox, tmp_path: Path) -> None:
    ids = sandbox.create_batches(3)
    journal = tmp_path / "j.jsonl"
    with fast_client(sandbox) as c:
        sm.cancel_batches(ids[:1], client=c, progress=False, journal=journal, reason="INC-1")
        kept = sm.cancel_batches(ids[:2], client=c, progress=False, journal=journal)
        with pytest.warns(UserWarning, match="another reason \\('INC-1'\\); this run records 'INC-2'"):
            other = sm.cancel_batches(ids, client=c, progress=False, journal=journal, reason="INC-2")
    assert kept.attrs["reason"] == "INC-1" and kept["reason"].tolist() == ["INC-1"] * 2
    assert other.attrs["reason"] == "INC-2"
    assert [h["reason"] for h in _headers(journal)] == ["INC-1", "INC-1", "INC-2"]


def test_cli_reason_and_operator_reach_journal_and_csv(sandbox: Sandbox, tmp_path: Path) -> None:
    ids = sandbox.create_batches(2)
    journal, out = tmp_path / "j.jsonl", tmp_path / "r.csv"
    env = {**cli_env(sandbox.api_key), "LOGNAME": "ops-bot"}
    cmd = [sys.executable, "-m", "smtoolkit", "cancel", *ids, "--base-url", sandbox.base_url, "--yes",
           "--no-progress", "--reason", "=1+1 cleanup\nsecond line", "--journal", str(journal), "--out", str(out),
           "--excel"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)
    check_no_leak(sandbox, p.stdout, p.stderr)
    assert p.returncode == 0, p.stderr
    [header] = _headers(journal)
    assert (header["reason"], header["operator"]) == ("=1+1 cleanup\nsecond line", "ops-bot")
    rows = list(csv.DictReader(io.StringIO(out.read_bytes().decode("utf-8-sig"), newline="")))
    assert [r["reason"] for r in rows] == ["'=1+1 cleanup\nsecond line"] * 2


@pytest.mark.parametrize("reason, says", [("", "must not be empty"), ("y" * 2001, "2,001 characters")])
def test_cli_bad_reason_exits_2_and_sends_nothing(sandbox: Sandbox, reason: str, says: str) -> None:
    ids = sandbox.create_batches(1)
    p = run_cli(sandbox, "cancel", *ids, "--yes", "--reason", reason)
    assert p.returncode == 2 and says in p.stderr and "y" * 100 not in p.stderr
    assert sandbox.requests == []


def test_operator_is_unknown_when_the_os_does_not_say(monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    from smtoolkit.config import operator_name

    def no_user() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr(getpass, "getuser", no_user)
    assert operator_name() == "unknown"
    monkeypatch.setattr(getpass, "getuser", lambda: "b\udcffd")  # undecodable bytes in $USER
    assert operator_name() == "b\ufffdd"


# -- item 5: smtoolkit journal -------------------------------------------------------------------
JSON_KEYS = {"journal", "base_url", "settled", "final", "outcomes", "last_written_at", "seconds_since_last_write",
             "held", "holder_pid", "reason", "operator", "run_started_at", "run_pid"}


def _journal_json(path: Path) -> dict[str, Any]:
    p = run_cli(None, "journal", str(path), "-o", "json")
    assert p.returncode == 0, p.stderr
    facts: dict[str, Any] = json.loads(p.stdout)
    assert set(facts) == JSON_KEYS
    return facts


def _gated_run(sb: Sandbox, tmp_path: Path, name: str, read: bool) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """A real cancel run in another process that cannot end before the test lets it: its second
    batch is cancelled with a stop delay of an hour, and `--wait` polls it until the test stops it.
    Returns its report and what `smtoolkit journal` said meanwhile (nothing when `read` is False)."""
    sb.set_progression(stop_delay=3600.0)  # a cancel takes an hour to stop the batch
    ids = sb.create_batches(1, "STOPPED") + sb.create_batches(3)
    journal, out = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.csv"
    cmd = [sys.executable, "-m", "smtoolkit", "cancel", *ids, "--base-url", sb.base_url, "--yes", "--no-progress",
           "--workers", "1", "--wait", "3600", "--reason", "INC-7", "--journal", str(journal), "--out", str(out)]
    proc = subprocess.Popen(cmd, env=cli_env(sb.api_key), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen: list[dict[str, Any]] = []
    try:
        wait_for(lambda: sb.batch(ids[1])["stop_pending"] and journal.exists(),  # type: ignore[index]
                 "the run to cancel its second batch")
        if read:
            for _ in range(3):
                seen.append(_journal_json(journal))
        sb.set_progression(stop_delay=0.0)  # later cancels stop at once
        sb.set_status(ids[1], "STOPPED")  # its stop delay is over: the run goes on
        stdout, stderr = proc.communicate(timeout=CLI_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    check_no_leak(sb, stdout, stderr)
    return pd.read_csv(out), seen


def test_journal_is_read_while_another_process_writes_it_and_that_run_is_unchanged(
        sandbox: Sandbox, tmp_path: Path) -> None:
    unread, _ = _gated_run(sandbox, tmp_path, "unread", read=False)
    report, seen = _gated_run(sandbox, tmp_path, "read", read=True)
    for facts in seen:
        assert facts["held"] is True and facts["holder_pid"] == facts["run_pid"]
        assert facts["settled"] == 1 and facts["outcomes"] == {"already_stopped": 1} and facts["final"] == 1
        assert facts["reason"] == "INC-7" and facts["operator"] and facts["base_url"] == sandbox.base_url
    stable = ["outcome", "http_status", "status_code", "error_code", "reason"]
    assert report[stable].equals(unread[stable])
    assert report["outcome"].tolist() == ["already_stopped", "cancelled", "cancelled", "cancelled"]
    assert report.loc[[0, 2, 3], "attempts"].tolist() == unread.loc[[0, 2, 3], "attempts"].tolist() == [1, 1, 1]
    after = _journal_json(tmp_path / "read.jsonl")
    assert after["held"] is False and after["holder_pid"] is None and after["settled"] == 4
    assert after["outcomes"] == {"cancelled": 3, "already_stopped": 1}


def test_journal_command_table_and_its_exit_codes(sandbox: Sandbox, tmp_path: Path) -> None:
    ids = sandbox.create_batches(2)
    journal = tmp_path / "j.jsonl"
    with fast_client(sandbox) as c:
        sm.cancel_batches([*ids, "qrb_000000000bad"], client=c, progress=False, journal=journal,
                          reason="INC-9\x1b[2J")
    p = run_cli(None, "journal", str(journal))
    assert p.returncode == 0, p.stderr
    assert "settled: 3 batch(es), 3 of them final" in p.stdout and "cancelled        2" in p.stdout
    assert "in use by a run now: no" in p.stdout and "reason: INC-9\\x1b[2J" in p.stdout and "\x1b" not in p.stdout
    missing = run_cli(None, "journal", str(tmp_path / "none.jsonl"))
    assert missing.returncode == 2 and "none.jsonl" in missing.stderr
    other = tmp_path / "notes.txt"
    other.write_text("hello\n", encoding="utf-8")
    refused = run_cli(None, "journal", str(other), "-o", "json")
    assert refused.returncode == 2 and "not a smtoolkit journal" in refused.stderr and refused.stdout == ""


def test_a_torn_last_line_is_a_record_being_written(tmp_path: Path, sandbox: Sandbox) -> None:
    journal = tmp_path / "j.jsonl"
    with fast_client(sandbox) as c:
        sm.cancel_batches(sandbox.create_batches(2), client=c, progress=False, journal=journal)
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"batch_id": "qrb_00000000abcd", "outcome": "canc')  # mid-write
    facts = _journal_json(journal)
    assert facts["settled"] == 2 and facts["outcomes"] == {"cancelled": 2}
    assert journal.read_bytes().endswith(b'"canc')  # the reader wrote nothing


def test_held_is_unknown_where_the_os_does_not_tell(tmp_path: Path, sandbox: Sandbox,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from smtoolkit import journal as jmod

    path = tmp_path / "j.jsonl"
    with jmod.Journal(path, sandbox.base_url, reason="r", operator="o"):
        held = jmod.survey(path)
        monkeypatch.setattr(sys, "platform", "darwin")
        elsewhere = jmod.survey(path)
        monkeypatch.setattr(sys, "platform", "win32")
        windows = jmod.survey(path)
        monkeypatch.undo()
    assert (held["held"], held["holder_pid"]) == (True, held["run_pid"])
    assert (elsewhere["held"], elsewhere["holder_pid"]) == (None, None) == (windows["held"], windows["holder_pid"])
    assert jmod.survey(path)["held"] is False


def test_the_console_keeps_its_reason_on_record(sandbox: Sandbox, tmp_path: Path) -> None:
    ids = sandbox.create_batches(3)
    journal = tmp_path / "j.jsonl"
    with fast_client(sandbox) as c:
        with pytest.raises(sm.InputError, match="must be text"):
            sm.CancelConsole(ids, client=c, reason=7)  # type: ignore[arg-type]
        console = sm.CancelConsole(ids, client=c, journal=str(journal), reason="INC-3")
        console.select(ids=ids[:1])
        first = console.cancel()
        console.select(ids=ids[1:2])
        with pytest.warns(UserWarning, match="another reason"):
            second = console.cancel(reason="INC-4 \ud800")
    assert first.attrs["reason"] == "INC-3" and first["reason"].tolist() == ["INC-3"]
    assert second.attrs["reason"] == console.reason == "INC-4 \ufffd"
    assert [h["reason"] for h in _headers(journal)] == ["INC-3", "INC-4 \ufffd"]
    assert sandbox.requests and all(r["method"] == "DELETE" for r in sandbox.requests)
