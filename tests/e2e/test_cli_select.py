"""`smtoolkit cancel` choosing by what each batch is (--only-status, --older-than, --description)
and retrying from a report (--retry), run as a child process against an in-process sandbox.

Every claim is judged against the sandbox's own request log: which batches got a DELETE, and
that nothing at all was sent when the command line was refused."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import smtoolkit as sm
from smtoolkit.sandbox import Sandbox
from tests.helpers import CLI_TIMEOUT, check_no_leak, cli_env, deleted_ids, run_cli

HOURS = 3600.0


def report_of(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


def fleet(sb: Sandbox) -> dict[str, list[str]]:
    """Batches of each kind a cleanup meets, in the order they are given to the CLI."""
    return {
        "old_running": sb.create_batches(2, age=3 * HOURS, description="Nightly sync"),
        "young_running": sb.create_batches(2, description="Nightly sync"),
        "old_queued": sb.create_batches(1, status="QUEUED", age=3 * HOURS, description="ad hoc export"),
        "old_stopped": sb.create_batches(1, status="STOPPED", age=3 * HOURS, description="Nightly sync"),
    }


def all_ids(kinds: dict[str, list[str]]) -> list[str]:
    return [i for ids in kinds.values() for i in ids]


# -- only the matches are cancelled ------------------------------------------------------------

def test_only_matching_batches_receive_a_delete_and_every_row_is_reported(sandbox: Sandbox) -> None:
    kinds = fleet(sandbox)
    given = [*all_ids(kinds), "qrb_000000000404", kinds["old_running"][0], "bad id!"]
    p = run_cli(sandbox, "cancel", *given, "--only-status", "RUNNING,queued", "--older-than", "2h",
                "--yes", "--no-progress", "-o", "csv", "--ignore-not-found")
    assert p.returncode == 1, p.stderr  # the invalid ID
    matches = kinds["old_running"] + kinds["old_queued"]
    assert sorted(deleted_ids(sandbox)) == sorted(matches)
    report = report_of(p.stdout)
    assert report["batch_id"].tolist()[:-1] == given[:-1] and len(report) == len(given)
    by_id = report.drop_duplicates("batch_id").set_index("batch_id")
    assert set(by_id.loc[matches, "outcome"]) == {"cancelled"}
    assert by_id.loc[kinds["old_running"], "status_seen"].tolist() == ["RUNNING", "RUNNING"]
    young = by_id.loc[kinds["young_running"]]
    assert set(young["outcome"]) == {"left_alone"} and set(young["status_seen"]) == {"RUNNING"}
    assert all("less than 2 h 00 min ago" in m for m in young["error_message"])
    stopped = by_id.loc[kinds["old_stopped"][0]]
    assert stopped["outcome"] == "left_alone" and "status STOPPED is not one of QUEUED, RUNNING" in stopped["error_message"]
    assert report["outcome"].tolist()[-3:] == ["not_found", "duplicate", "invalid_id"]
    assert "Plan: Cancel 3 selected batches (QUEUED 1, RUNNING 2)" in p.stderr
    assert "Left alone (not matching): 3 (RUNNING 2, STOPPED 1)" in p.stderr
    truth = sandbox.batches()
    assert [truth[i]["cancelled"] for i in kinds["young_running"]] == [False, False]


def test_description_regex_chooses_by_description(sandbox: Sandbox) -> None:
    kinds = fleet(sandbox)
    p = run_cli(sandbox, "cancel", *all_ids(kinds), "--description", "^nightly", "--yes", "--no-progress")
    assert p.returncode == 0, p.stderr
    # Nightly ones still running are cancelled; the stopped one matches but needs no DELETE.
    assert sorted(deleted_ids(sandbox)) == sorted(kinds["old_running"] + kinds["young_running"])


def run_on_pty_until_prompt(sb: Sandbox, answer: bytes, *args: str) -> tuple[int, str, str, int]:
    """Run `cancel` with a pseudo-terminal as stdin; read stderr until the prompt, count the
    DELETEs the sandbox has seen at that moment, then type `answer`. Returns (exit code,
    stdout, stderr, DELETEs seen while the prompt was waiting)."""
    pty = pytest.importorskip("pty", reason="needs a POSIX pseudo-terminal")
    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "smtoolkit", "cancel", *args, "--no-progress", "--base-url", sb.base_url]
    p = subprocess.Popen(cmd, env=cli_env(sb.api_key), stdin=slave, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    os.close(slave)
    try:
        assert p.stderr is not None
        err = b""
        while b"Proceed? [y/N]" not in err:
            chunk = os.read(p.stderr.fileno(), 65536)  # blocks until the child writes or exits
            assert chunk, f"the CLI ended without asking: {err.decode(errors='replace')}"
            err += chunk
        at_prompt = len(deleted_ids(sb))
        os.write(master, answer)
        out, rest = p.communicate(timeout=CLI_TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
        os.close(master)
    text = (err + rest).decode("utf-8", errors="replace")
    check_no_leak(sb, out.decode("utf-8", errors="replace"), text)
    return p.returncode, out.decode("utf-8", errors="replace"), text, at_prompt


def test_the_plan_is_printed_and_confirmed_before_the_first_delete(sandbox: Sandbox) -> None:
    kinds = fleet(sandbox)
    rc, out, err, at_prompt = run_on_pty_until_prompt(sandbox, b"y\n", *all_ids(kinds), "--only-status", "RUNNING")
    assert rc == 0, err
    assert at_prompt == 0  # the plan was on stderr and the prompt waiting, with no DELETE sent yet
    plan = err.index("Plan: Cancel 4 selected batches (RUNNING 4): 4 DELETE request(s)")
    assert "the hourly budget allows" in err and "estimate: about" in err
    assert plan < err.index("Cancel 4 batch(es)? Proceed? [y/N]")
    assert sorted(deleted_ids(sandbox)) == sorted(kinds["old_running"] + kinds["young_running"])
    assert "cancelled" in out


def test_declining_the_plan_sends_no_delete(sandbox: Sandbox) -> None:
    kinds = fleet(sandbox)
    rc, out, err, _ = run_on_pty_until_prompt(sandbox, b"n\n", *all_ids(kinds), "--older-than", "2h")
    assert rc == 0, err
    assert "Nothing was cancelled" in err
    assert deleted_ids(sandbox) == []
    assert {r["method"] for r in sandbox.requests} == {"GET"}


def test_without_a_terminal_or_yes_it_refuses_before_any_lookup(sandbox: Sandbox) -> None:
    kinds = fleet(sandbox)
    p = run_cli(sandbox, "cancel", *all_ids(kinds), "--only-status", "RUNNING", "--no-progress")
    assert p.returncode == 2
    assert "--yes" in p.stderr
    assert sandbox.requests == []


@pytest.mark.parametrize(("flag", "value"), [
    ("--only-status", "RUNING"), ("--only-status", "RUNNING,STOPED"), ("--only-status", ","),
    ("--older-than", "2x"), ("--older-than", "-5"), ("--description", "(unclosed"), ("--description", ""),
])
def test_a_bad_filter_is_refused_and_nothing_is_sent(sandbox: Sandbox, flag: str, value: str) -> None:
    kinds = fleet(sandbox)
    p = run_cli(sandbox, "cancel", *all_ids(kinds), flag, value, "--yes", "--no-progress")
    assert p.returncode == 2, p.stderr
    shown = value.split(",")[-1] if flag == "--only-status" and value != "," else value
    assert repr(shown) in p.stderr or f"'{shown}'" in p.stderr
    assert sandbox.requests == []  # not even a look-up


def test_dry_run_with_filters_prints_the_plan_and_sends_only_gets(sandbox: Sandbox) -> None:
    kinds = fleet(sandbox)
    p = run_cli(sandbox, "cancel", *all_ids(kinds), "--only-status", "QUEUED", "--dry-run", "--no-progress",
                "-o", "csv")
    assert p.returncode == 0, p.stderr
    assert "Plan: Cancel 1 selected batch (QUEUED 1)" in p.stderr
    assert "Proceed" not in p.stderr
    assert {r["method"] for r in sandbox.requests} == {"GET"}
    assert len(sandbox.requests) == len(all_ids(kinds))  # one look-up each, nothing more
    report = report_of(p.stdout).set_index("batch_id")
    assert report.loc[kinds["old_queued"][0], "outcome"] == "would_cancel"
    assert set(report.loc[kinds["old_running"] + kinds["young_running"], "outcome"]) == {"left_alone"}


# -- the journal ------------------------------------------------------------------------------

def test_a_resume_never_cancels_a_row_the_plan_left_alone(sandbox: Sandbox, tmp_path: Path) -> None:
    kinds = fleet(sandbox)
    journal = tmp_path / "cleanup.jsonl"
    args = ["cancel", *all_ids(kinds), "--only-status", "QUEUED", "--journal", str(journal), "--yes",
            "--no-progress", "-o", "csv"]
    first = run_cli(sandbox, *args)
    assert first.returncode == 0, first.stderr
    assert deleted_ids(sandbox) == kinds["old_queued"]
    seen = len(sandbox.requests)
    for bid in kinds["young_running"] + kinds["old_running"]:
        sandbox.set_status(bid, "QUEUED")  # they would match now
    second = run_cli(sandbox, *args)
    assert second.returncode == 0, second.stderr
    assert sandbox.requests[seen:] == []  # settled in the journal: neither looked up nor cancelled
    report = report_of(second.stdout).set_index("batch_id")
    assert set(report.loc[kinds["young_running"] + kinds["old_running"], "outcome"]) == {"left_alone"}
    # Without the filters, the same journal still leaves them alone: it is one cleanup's record.
    third = run_cli(sandbox, "cancel", *all_ids(kinds), "--journal", str(journal), "--yes", "--no-progress")
    assert third.returncode == 0, third.stderr
    assert sandbox.requests[seen:] == []


def test_a_resume_cancels_the_matches_a_halted_run_did_not_send(sandbox: Sandbox, tmp_path: Path) -> None:
    running = sandbox.create_batches(6)
    queued = sandbox.create_batches(2, status="QUEUED")
    journal = tmp_path / "cleanup.jsonl"
    sandbox.set_limits(hourly_limit=10)  # 8 look-ups, then the reserve (1) halts the cancels
    args = ["cancel", *running, *queued, "--only-status", "RUNNING", "--journal", str(journal), "--yes",
            "--no-progress", "-o", "csv", "--reserve", "1"]
    first = run_cli(sandbox, *args)
    assert first.returncode == 1, first.stderr
    report = report_of(first.stdout).set_index("batch_id")
    assert set(report.loc[queued, "outcome"]) == {"left_alone"}
    sent_first = set(deleted_ids(sandbox))
    assert sent_first and sent_first < set(running)
    sandbox.set_limits(hourly_limit=5000, budget_window=3600.0)  # a new window
    seen = len(sandbox.requests)
    second = run_cli(sandbox, *args)
    assert second.returncode == 0, second.stderr
    later = sandbox.requests[seen:]
    assert {r["batch_id"] for r in later if r["method"] == "DELETE"} == set(running) - sent_first
    assert not {r["batch_id"] for r in later} & set(queued)  # left alone in the plan: not even looked up


# -- --retry ----------------------------------------------------------------------------------

@pytest.mark.parametrize("excel", [False, True], ids=["plain", "excel"])
def test_retry_cancels_exactly_the_rows_to_retry_names(sandbox: Sandbox, tmp_path: Path, excel: bool) -> None:
    ids = sandbox.create_batches(8)
    stopped = sandbox.create_batches(1, status="STOPPED")
    out = tmp_path / "report.csv"
    sandbox.set_limits(hourly_limit=6)
    given = [*ids, *stopped, "qrb_000000000404", ids[0], "bad id!"]
    first = run_cli(sandbox, "cancel", *given, "--yes", "--no-progress", "--reserve", "1", "--workers", "1",
                    "--out", str(out), *(["--excel", "--out-sep", ";"] if excel else []))
    assert first.returncode == 1, first.stderr
    expected = sm.to_retry(sm.read_report(out))
    assert set(expected["outcome"]) == {"skipped"} and len(expected) >= 2
    sandbox.set_limits(hourly_limit=5000, budget_window=3600.0)
    seen = len(sandbox.requests)
    listed = run_cli(sandbox, "cancel", "--retry", str(out), "--dry-run", "-o", "csv")
    assert listed.returncode == 0, listed.stderr
    assert sandbox.requests[seen:] == []  # listing sends nothing
    assert report_of(listed.stdout)["batch_id"].tolist() == expected["batch_id"].tolist()
    again = run_cli(sandbox, "cancel", "--retry", str(out), "--yes", "--no-progress", "-o", "csv",
                    "--ignore-not-found")
    assert again.returncode == 0, again.stderr + again.stdout
    sent = [r for r in sandbox.requests[seen:]]
    assert sorted(r["batch_id"] for r in sent if r["method"] == "DELETE") == sorted(expected["batch_id"])
    assert {r["method"] for r in sent} == {"DELETE"}
    outcomes = report_of(again.stdout).set_index("batch_id")["outcome"].to_dict()
    assert outcomes == {b: ("not_found" if b == "qrb_000000000404" else "already_stopped" if b in stopped
                            else "cancelled") for b in expected["batch_id"]}
    assert all(sandbox.batches()[b]["cancelled"] for b in ids)


def test_retry_with_nothing_to_retry_sends_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    ids = sandbox.create_batches(2)
    out = tmp_path / "r.csv"
    assert run_cli(sandbox, "cancel", *ids, "--yes", "--no-progress", "--out", str(out)).returncode == 0
    seen = len(sandbox.requests)
    p = run_cli(sandbox, "cancel", "--retry", str(out), "--yes", "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "Nothing to retry" in p.stderr
    assert sandbox.requests[seen:] == []


@pytest.mark.parametrize("content", [
    b"batch_id\nqrb_1\nqrb_2\n",  # an ID file, not a report
    b"\xff\xfe\x00garbage",
    None,  # a report whose outcome column was edited into something we never write
])
def test_retry_refuses_a_file_that_is_not_our_report(sandbox: Sandbox, tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "not-a-report.csv"
    if content is None:
        ids = sandbox.create_batches(1)
        assert run_cli(sandbox, "cancel", *ids, "--yes", "--no-progress", "--out", str(path)).returncode == 0
        path.write_text(path.read_text(encoding="utf-8").replace("cancelled", "done"), encoding="utf-8")
    else:
        path.write_bytes(content)
    seen = len(sandbox.requests)
    p = run_cli(sandbox, "cancel", "--retry", str(path), "--yes", "--no-progress")
    assert p.returncode == 2
    assert "is not a report written by smtoolkit" in p.stderr and str(path) in p.stderr
    assert sandbox.requests[seen:] == []


def test_retry_refuses_ids_or_filters_beside_it(sandbox: Sandbox, tmp_path: Path) -> None:
    for extra in (["qrb_1"], ["--only-status", "RUNNING"]):
        p = run_cli(sandbox, "cancel", "--retry", str(tmp_path / "r.csv"), *extra, "--yes", "--no-progress")
        assert p.returncode == 2 and "--retry" in p.stderr
    assert sandbox.requests == []
