"""The `smtoolkit` command line, run as a real child process against an in-process sandbox.

The sandbox runs in the test process; the CLI runs in a child (`python -m smtoolkit ...`) and
talks real HTTP to it on 127.0.0.1. Every child is started in a new session, so it has no
controlling terminal unless a test hands it a pseudo-terminal: a developer's own terminal can
never answer a prompt by accident. Every run is checked for a leaked API key and a traceback.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from smtoolkit.cli import build_parser
from smtoolkit.sandbox import Sandbox
from tests.helpers import CLI_TIMEOUT as TIMEOUT
from tests.helpers import check_no_leak, cli_env, deleted_ids, run_cli, wait_for

REPO = Path(__file__).resolve().parents[2]


def methods(sb: Sandbox) -> list[str]:
    return [r["method"] for r in sb.requests]


def cancelled(sb: Sandbox, ids: list[str]) -> list[bool]:
    return [bool(sb.batch(i)["cancelled"]) for i in ids]  # type: ignore[index]


def read_csv_text(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), dtype={"batch_id": str}, keep_default_na=False)


# -- exit codes ------------------------------------------------------------------------------

def test_exit_0_when_every_row_is_fine(sandbox: Sandbox) -> None:
    running = sandbox.create_batches(3)
    stopped = sandbox.create_batches(1, status="STOPPED")
    ids = [*running, *stopped, "qrb_000000000404", running[0]]  # unknown (when ignored) and a duplicate are fine
    p = run_cli(sandbox, "cancel", *ids, "--yes", "--no-progress", "-o", "csv", "--ignore-not-found")
    assert p.returncode == 0, p.stderr
    report = read_csv_text(p.stdout)
    assert report["outcome"].tolist() == ["cancelled"] * 3 + ["already_stopped", "not_found", "duplicate"]
    assert cancelled(sandbox, running) == [True] * 3
    assert sorted(deleted_ids(sandbox)) == sorted([*running, *stopped, "qrb_000000000404"])  # duplicate sent once


def test_exit_1_when_rows_are_skipped_at_the_budget_reserve(sandbox: Sandbox) -> None:
    sandbox.set_limits(hourly_limit=6)
    ids = sandbox.create_batches(6)
    p = run_cli(sandbox, "cancel", *ids, "--yes", "--no-progress", "--reserve", "3", "--workers", "1",
                "-o", "csv")
    assert p.returncode == 1, p.stderr
    report = read_csv_text(p.stdout)
    assert (report["outcome"] == "skipped").any()
    assert set(report.loc[report["outcome"] == "skipped", "error_code"]) == {"BUDGET_RESERVE"}
    assert len(deleted_ids(sandbox)) == (report["outcome"] == "cancelled").sum() < 6
    assert "reserve" in p.stderr


def test_exit_1_when_a_cancel_is_still_stopping(sandbox: Sandbox) -> None:
    sandbox.set_progression(stop_delay=60)
    ids = sandbox.create_batches(2)
    p = run_cli(sandbox, "cancel", *ids, "--yes", "--no-progress")
    assert p.returncode == 1, p.stderr
    assert "stopping" in p.stdout and "need attention" in p.stdout


def test_exit_1_on_network_errors(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(2)
    sandbox.set_faults(reset_before_rate=1.0)
    p = run_cli(sandbox, "cancel", *ids, "--yes", "--no-progress", "-o", "csv", "--max-retries", "0")
    assert p.returncode == 1, p.stderr
    report = read_csv_text(p.stdout)
    assert report["outcome"].tolist() == ["network_error", "network_error"]
    assert cancelled(sandbox, ids) == [False, False]


def test_exit_1_for_an_invalid_id(sandbox: Sandbox) -> None:
    [bid] = sandbox.create_batches(1)
    p = run_cli(sandbox, "cancel", bid, "qrb_../../admin", "--yes", "--no-progress")
    assert p.returncode == 1
    assert "invalid_id" in p.stdout
    assert deleted_ids(sandbox) == [bid]


@pytest.mark.parametrize("args, message", [
    ([], "give batch IDs"),
    (["qrb_a", "--frobnicate"], "unrecognized arguments"),
    (["-f", "no-such-file.csv"], "cannot read"),
    (["-o", "xml", "qrb_a"], "invalid choice"),
])
def test_exit_2_usage_errors(sandbox: Sandbox, tmp_path: Path, args: list[str], message: str) -> None:
    p = run_cli(sandbox, "cancel", *args, "--yes", cwd=tmp_path)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert message in p.stderr
    assert p.stdout == ""
    assert sandbox.requests == []


def test_exit_2_without_a_subcommand() -> None:
    p = run_cli(None, key="x")
    assert p.returncode == 2
    assert "cancel" in p.stderr and p.stdout == ""


def test_exit_2_file_without_the_column(sandbox: Sandbox, tmp_path: Path) -> None:
    f = tmp_path / "ids.csv"
    f.write_text("account,owner\nqrb_a,ann\nqrb_b,bob\n", encoding="utf-8")
    p = run_cli(sandbox, "cancel", "-f", str(f), "--yes")
    assert p.returncode == 2
    assert "no column 'batch_id'" in p.stderr and "'account'" in p.stderr and "--column" in p.stderr
    assert sandbox.requests == []


def test_exit_3_without_api_key(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(1)
    p = run_cli(sandbox, "cancel", *ids, "--yes", key=None)
    assert p.returncode == 3
    assert "SUPERMETRICS_API_KEY" in p.stderr
    assert sandbox.requests == []


def test_exit_3_wrong_key_is_unauthorized(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(12)
    wrong = "sbx_wrong_key_0123456789"
    p = run_cli(sandbox, "cancel", *ids, "--yes", "--no-progress", "-o", "csv", key=wrong)
    assert p.returncode == 3, p.stderr
    check_no_leak(None, p.stdout, p.stderr)
    assert wrong not in p.stdout + p.stderr
    report = read_csv_text(p.stdout)
    assert "unauthorized" in set(report["outcome"])
    assert set(report["outcome"]) <= {"unauthorized", "skipped"}
    assert (report["error_code"] == "SKIPPED_AUTH_FAILED").any()  # the run stopped early
    assert len(sandbox.requests) < len(ids)
    assert not any(cancelled(sandbox, ids))


def test_exit_3_plain_http_to_a_remote_host_is_refused(sandbox: Sandbox) -> None:
    p = run_cli(sandbox, "cancel", "qrb_a", "--yes", "--base-url", "http://example.com", base_url=False)
    assert p.returncode == 3
    assert "refusing plain http://" in p.stderr
    assert p.stdout == ""


@pytest.mark.skipif(sys.platform == "win32", reason="sending SIGINT to a child is POSIX (Windows has CTRL_C_EVENT)")
def test_exit_130_on_interrupt(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(60)
    sandbox.set_faults(latency=0.2)
    cmd = [sys.executable, "-m", "smtoolkit", "cancel", *ids, "--yes", "--no-progress", "-o", "csv",
           "--base-url", sandbox.base_url]
    p = subprocess.Popen(cmd, env=cli_env(sandbox.api_key), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: len(deleted_ids(sandbox)) >= 3, "the CLI's first cancels")  # well under way
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    check_no_leak(sandbox, out, err)
    assert p.returncode == 130, err
    assert "interrupted" in err
    report = read_csv_text(out)
    assert len(report) == 60
    sent = set(deleted_ids(sandbox))
    assert 0 < len(sent) < 60
    skipped = report[report["error_code"] == "INTERRUPTED"]
    assert len(skipped) > 0 and set(skipped["outcome"]) == {"skipped"}
    assert not set(skipped["batch_id"]) & sent  # "not sent" means not sent
    truth = sandbox.batches()
    for bid in report.loc[report["outcome"] == "cancelled", "batch_id"]:
        assert truth[bid]["cancelled"]


# -- confirmation ----------------------------------------------------------------------------

def test_no_terminal_without_yes_refuses_and_sends_nothing(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(3)
    p = run_cli(sandbox, "cancel", *ids, "--no-progress")
    assert p.returncode == 2
    assert "--yes" in p.stderr
    assert sandbox.requests == []
    assert "DELETE" not in methods(sandbox)


def test_ids_on_stdin_without_yes_refuse_and_send_nothing(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(2)
    p = run_cli(sandbox, "cancel", "-f", "-", "--no-progress", input="batch_id\n" + "\n".join(ids) + "\n")
    assert p.returncode == 2
    assert sandbox.requests == []


def run_on_pty(sb: Sandbox, answer: bytes, *args: str) -> tuple[int, str, str]:
    """Run `cancel` with a pseudo-terminal as stdin and type `answer` on it."""
    pty = pytest.importorskip("pty", reason="needs a POSIX pseudo-terminal (Windows: see test_platforms.py)")
    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "smtoolkit", "cancel", *args, "--no-progress", "--base-url", sb.base_url]
    try:
        p = subprocess.Popen(cmd, env=cli_env(sb.api_key), stdin=slave, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
        os.close(slave)
        slave = -1
        os.write(master, answer)
        try:
            out, err = p.communicate(timeout=TIMEOUT)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    check_no_leak(sb, out, err)
    return p.returncode, out, err


@pytest.mark.parametrize("answer", [b"n\n", b"\n", b"whatever\n"])
def test_declining_on_a_terminal_sends_nothing(sandbox: Sandbox, answer: bytes) -> None:
    ids = sandbox.create_batches(3)
    rc, out, err = run_on_pty(sandbox, answer, *ids)
    assert rc == 0, err
    assert "Proceed? [y/N]" in err and "3 batch(es)" in err
    assert "Proceed" not in out
    assert "Nothing was cancelled" in err
    assert sandbox.requests == []
    assert not any(cancelled(sandbox, ids))


@pytest.mark.parametrize("answer", [b"y\n", b"YES\n"])
def test_accepting_on_a_terminal_cancels(sandbox: Sandbox, answer: bytes) -> None:
    ids = sandbox.create_batches(3)
    rc, out, err = run_on_pty(sandbox, answer, *ids, "qrb_000000000404", ids[0], "--ignore-not-found")
    assert rc == 0, err
    assert "Cancel 4 batch(es)? Proceed? [y/N]" in err  # unique valid IDs, not rows
    assert "2 invalid or duplicate" not in err and "1 invalid or duplicate" in err
    assert "Proceed" not in out
    assert all(cancelled(sandbox, ids))
    assert "cancelled" in out


def test_dry_run_asks_nothing_and_only_gets(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(3)
    stopped = sandbox.create_batches(1, status="STOPPED")
    p = run_cli(sandbox, "cancel", *ids, *stopped, "--dry-run", "--no-progress", "-o", "csv")
    assert p.returncode == 0, p.stderr
    assert "Proceed" not in p.stderr
    assert set(methods(sandbox)) == {"GET"}
    assert read_csv_text(p.stdout)["outcome"].tolist() == ["would_cancel"] * 3 + ["already_stopped"]
    assert not any(cancelled(sandbox, ids))


# -- where IDs come from ---------------------------------------------------------------------

def test_csv_file_with_column(sandbox: Sandbox, tmp_path: Path) -> None:
    ids = sandbox.create_batches(3)
    f = tmp_path / "stuck.csv"
    f.write_text("account,id,owner\n" + "".join(f"acc{i},{b},team{i}\n" for i, b in enumerate(ids)),
                 encoding="utf-8")
    p = run_cli(sandbox, "cancel", "-f", str(f), "--column", "id", "--yes", "--no-progress", "-o", "csv")
    assert p.returncode == 0, p.stderr
    report = read_csv_text(p.stdout)
    assert report["outcome"].tolist() == ["cancelled"] * 3
    assert report["account"].tolist() == ["acc0", "acc1", "acc2"]  # the input's columns are kept
    assert report["owner"].tolist() == ["team0", "team1", "team2"]
    assert all(cancelled(sandbox, ids))


def test_tsv_file(sandbox: Sandbox, tmp_path: Path) -> None:
    ids = sandbox.create_batches(2)
    f = tmp_path / "stuck.tsv"
    f.write_text("batch_id\tnote\n" + "".join(f"{b}\tnote, with comma\n" for b in ids), encoding="utf-8")
    p = run_cli(sandbox, "cancel", "-f", str(f), "--yes", "--no-progress", "-o", "csv")
    assert p.returncode == 0, p.stderr
    report = read_csv_text(p.stdout)
    assert report["batch_id"].tolist() == ids
    assert report["note"].tolist() == ["note, with comma"] * 2
    assert all(cancelled(sandbox, ids))


def test_stdin_with_yes(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(3)
    p = run_cli(sandbox, "cancel", "-f", "-", "--yes", "--no-progress", "-o", "csv",
                input="batch_id\n" + "\n".join(ids) + "\n")
    assert p.returncode == 0, p.stderr
    assert read_csv_text(p.stdout)["batch_id"].tolist() == ids
    assert all(cancelled(sandbox, ids))


def test_arguments_and_file_together(sandbox: Sandbox, tmp_path: Path) -> None:
    ids = sandbox.create_batches(3)
    f = tmp_path / "ids.csv"
    f.write_text("batch_id\n" + "\n".join(ids[1:]) + "\n", encoding="utf-8")
    p = run_cli(sandbox, "cancel", ids[0], "-f", str(f), "--yes", "--no-progress", "-o", "csv")
    assert p.returncode == 0, p.stderr
    assert read_csv_text(p.stdout)["batch_id"].tolist() == ids
    assert all(cancelled(sandbox, ids))


@pytest.mark.parametrize("via_stdin", [False, True])
def test_one_column_file_without_header(sandbox: Sandbox, tmp_path: Path, via_stdin: bool) -> None:
    ids = sandbox.create_batches(3)
    text = "\n".join(ids) + "\n"
    if via_stdin:
        p = run_cli(sandbox, "cancel", "-f", "-", "--yes", "--no-progress", "-o", "csv", input=text)
    else:
        f = tmp_path / "ids.txt"
        f.write_text(text, encoding="utf-8")
        p = run_cli(sandbox, "cancel", "-f", str(f), "--yes", "--no-progress", "-o", "csv")
    assert p.returncode == 0, p.stderr
    assert "note:" in p.stderr and "no 'batch_id' header" in p.stderr and "one ID per line" in p.stderr
    assert "note:" not in p.stdout
    assert read_csv_text(p.stdout)["batch_id"].tolist() == ids  # the first line is an ID too
    assert all(cancelled(sandbox, ids))


def test_duplicates_and_invalid_ids_are_counted(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(2)
    rows = [ids[0], ids[0], "qrb_../../admin", ids[1], ids[1], "bad id"]
    p = run_cli(sandbox, "cancel", *rows, "--yes", "--no-progress", "-o", "csv")
    assert "cancel: 2 batch(es)" in p.stderr
    assert "(4 invalid or duplicate row(s) will not be sent)" in p.stderr
    report = read_csv_text(p.stdout)
    assert report["outcome"].tolist() == ["cancelled", "duplicate", "invalid_id", "cancelled", "duplicate",
                                          "invalid_id"]
    assert sorted(deleted_ids(sandbox)) == sorted(ids)
    assert all("admin" not in r["path"] for r in sandbox.requests)


# -- output ----------------------------------------------------------------------------------

def test_default_output_is_the_summary_table(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(2)
    p = run_cli(sandbox, "cancel", *ids, "qrb_000000000404", "--yes", "--no-progress", "--ignore-not-found")
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert re.search(r"^cancelled\s+2\s", p.stdout, re.M), p.stdout
    assert re.search(r"^not_found\s+1\s", p.stdout, re.M), p.stdout
    assert any("count" in line and "share" in line for line in lines)
    assert "need attention" not in p.stdout
    assert "cancel: 3 batch(es)" in p.stderr and "cancel:" not in p.stdout


def test_csv_output_one_row_per_input(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(3)
    rows = [ids[0], "  " + ids[1] + " ", ids[2], ids[0], "qrb_000000000404", ""]
    p = run_cli(sandbox, "cancel", *rows, "--yes", "-o", "csv")  # with the progress bar on stderr
    assert p.returncode == 1  # the blank cell is an invalid_id
    report = read_csv_text(p.stdout)
    assert len(report) == len(rows)
    assert report["batch_id"].tolist() == [ids[0], ids[1], ids[2], ids[0], "qrb_000000000404", ""]
    assert report["outcome"].tolist() == ["cancelled"] * 3 + ["duplicate", "not_found", "invalid_id"]
    for col in ("http_status", "status_code", "error_code", "request_id", "cancel_time", "attempts"):
        assert col in report.columns
    assert report["cancel_time"][0].endswith("Z")
    assert "%|" not in p.stdout and "batch/s" not in p.stdout  # progress stays on stderr
    assert "batch/s" in p.stderr


def test_json_output(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(2)
    p = run_cli(sandbox, "cancel", *ids, "qrb_000000000404", "--yes", "--no-progress", "-o", "json")
    assert p.returncode == 1  # a missing batch is not success (see --ignore-not-found)
    records = json.loads(p.stdout)
    assert isinstance(records, list) and len(records) == 3
    assert [r["batch_id"] for r in records] == [*ids, "qrb_000000000404"]
    assert [r["outcome"] for r in records] == ["cancelled", "cancelled", "not_found"]
    assert records[0]["http_status"] == 200 and records[2]["http_status"] == 404
    assert re.match(r"\d{4}-\d\d-\d\dT", records[0]["cancel_time"])


def test_out_file_writes_the_report(sandbox: Sandbox, tmp_path: Path) -> None:
    ids = sandbox.create_batches(2)
    out = tmp_path / "report.csv"
    p = run_cli(sandbox, "cancel", *ids, "qrb_000000000404", "--yes", "--no-progress", "--out", str(out),
                "--ignore-not-found")
    assert p.returncode == 0
    assert "report written to" in p.stderr and "report written" not in p.stdout
    report = pd.read_csv(out, dtype={"batch_id": str})
    assert report["batch_id"].tolist() == [*ids, "qrb_000000000404"]
    assert report["outcome"].tolist() == ["cancelled", "cancelled", "not_found"]
    assert "cancelled" in p.stdout  # the table still goes to stdout


def test_api_key_never_appears_in_outputs_or_files(sandbox: Sandbox, tmp_path: Path) -> None:
    ids = sandbox.create_batches(3)
    files = [tmp_path / "r.csv", tmp_path / "j.jsonl", tmp_path / "s.csv"]
    outs = []
    for extra in (["-o", "csv"], ["-o", "json"], []):
        p = run_cli(sandbox, "cancel", *ids, "--yes", "--out", str(files[0]), "--journal", str(files[1]),
                    *extra)  # progress bar on
        outs += [p.stdout, p.stderr]
    p = run_cli(sandbox, "status", *ids, "--with-progress", "--out", str(files[2]), "-o", "json")
    outs += [p.stdout, p.stderr]
    sandbox.set_faults(problem_rate=1.0)  # error answers as problem+json, echoed in the report
    p = run_cli(sandbox, "cancel", "qrb_000000000404", "--yes", "-o", "csv")
    assert "NOT_FOUND" in p.stdout or "not_found" in p.stdout
    outs += [p.stdout, p.stderr]
    for f in files:
        assert f.exists()
        outs.append(f.read_text(encoding="utf-8"))
    assert all(sandbox.api_key not in text for text in outs)


# -- journal ---------------------------------------------------------------------------------

def test_journal_rerun_sends_nothing_for_final_batches(sandbox: Sandbox, tmp_path: Path) -> None:
    ids = sandbox.create_batches(3)
    journal = tmp_path / "cleanup.jsonl"
    first = [*ids, "qrb_000000000404"]
    p1 = run_cli(sandbox, "cancel", *first, "--yes", "--no-progress", "--journal", str(journal))
    assert p1.returncode == 1  # the missing batch
    lines = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["batch_id"] for r in lines if "batch_id" in r) == sorted(first)  # after a header
    before = len(deleted_ids(sandbox))
    assert before == 4
    [new] = sandbox.create_batches(1)
    p2 = run_cli(sandbox, "cancel", *first, new, "--yes", "--no-progress", "--journal", str(journal),
                 "-o", "csv", "--ignore-not-found")
    assert p2.returncode == 0, p2.stderr
    assert deleted_ids(sandbox)[before:] == [new]  # only the batch not yet final is sent
    report = read_csv_text(p2.stdout)
    assert report["outcome"].tolist() == ["cancelled"] * 3 + ["not_found", "cancelled"]
    assert cancelled(sandbox, [*ids, new]) == [True] * 4


# -- status ----------------------------------------------------------------------------------

def test_status_changes_nothing(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(2)
    stopped = sandbox.create_batches(1, status="STOPPED")
    p = run_cli(sandbox, "status", *ids, *stopped, "qrb_000000000404", "--no-progress")
    assert p.returncode == 0, p.stderr
    assert set(methods(sandbox)) == {"GET"}
    assert not any(cancelled(sandbox, ids))
    assert [sandbox.batch(b)["status_code"] for b in ids] == ["RUNNING", "RUNNING"]  # type: ignore[index]
    for bid in (*ids, *stopped):
        assert bid in p.stdout
    assert "RUNNING" in p.stdout and "already_stopped" in p.stdout and "not_found" in p.stdout
    assert "Proceed" not in p.stderr


def test_status_with_progress_adds_query_counts(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(2, queries=5)
    plain = read_csv_text(run_cli(sandbox, "status", *ids, "--no-progress", "-o", "csv").stdout)
    assert not {"queued", "running", "success", "failure"} & set(plain.columns)
    p = run_cli(sandbox, "status", *ids, "--no-progress", "--with-progress", "-o", "csv")
    assert p.returncode == 0
    report = read_csv_text(p.stdout)
    counts = report[["queued", "running", "success", "failure"]].astype(int)
    assert counts.sum(axis=1).tolist() == [5, 5]
    assert set(methods(sandbox)) == {"GET"}
    assert not any(cancelled(sandbox, ids))


# -- demo ------------------------------------------------------------------------------------

def test_demo_gets_every_expected_outcome(tmp_path: Path) -> None:
    p = run_cli(None, "demo", "--out", "demo.csv", "--no-progress", key=None, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    report = pd.read_csv(tmp_path / "demo.csv", dtype=str, keep_default_na=False)
    assert len(report) == 48
    assert report["kind"].value_counts().to_dict() == {
        "running": 24, "queued": 10, "finished earlier": 6, "unknown ID": 3, "pasted twice": 3,
        "malformed": 1, "blank cell": 1}
    assert (report["outcome"] == report["expected"]).all(), report[report["outcome"] != report["expected"]]
    assert "Every row got the expected outcome" in p.stdout


# -- documentation ---------------------------------------------------------------------------

def test_every_subcommand_and_option_is_in_the_command_line_page() -> None:
    readme = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    [subs] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(subs.choices) == {"cancel", "status", "journal", "demo", "notebook", "sandbox", "panel"}
    missing = []
    for name, sub in subs.choices.items():
        if f"## smtoolkit {name}" not in readme:
            missing.append(name)
        for action in sub._actions:
            if action.help == argparse.SUPPRESS:
                continue  # hidden on purpose (a knob for tests)
            spellings = [s for s in action.option_strings if s not in ("-h", "--help")]
            if spellings and not any(re.search(rf"(?<![\w-]){re.escape(s)}(?![\w-])", readme)
                                     for s in spellings):
                missing.append(f"{name} {'/'.join(spellings)}")
    assert not missing, f"not in docs/cli.md: {missing}"


# -- bugs found while writing these tests, now fixed -----------------------------------------

def test_unwritable_out_is_refused_before_anything_is_sent(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(2)
    p = run_cli(sandbox, "cancel", *ids, "--yes", "--no-progress", "--out", "/nonexistent/dir/r.csv")
    assert p.returncode == 2
    assert deleted_ids(sandbox) == []


def test_headerless_file_with_leading_blank_line(sandbox: Sandbox, tmp_path: Path) -> None:
    ids = sandbox.create_batches(2)
    f = tmp_path / "ids.txt"
    f.write_text("\n" + "\n".join(ids) + "\n", encoding="utf-8")
    p = run_cli(sandbox, "cancel", "-f", str(f), "--yes", "--no-progress", "-o", "csv")
    assert p.returncode == 0
    assert read_csv_text(p.stdout)["batch_id"].tolist() == ids
