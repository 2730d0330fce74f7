"""Nothing lost: the journal and resume, a clean stop on interrupt, waiting for batches to
really stop, and look-ups that change nothing."""

from __future__ import annotations

import _thread
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pandas as pd
import pytest

import smtoolkit as sm
from smtoolkit import Client
from smtoolkit.journal import read
from smtoolkit.sandbox import Faults, Sandbox
from tests.helpers import run_ended, wait_for


def test_journal_resume_skips_final_rows_and_retries_the_rest(tmp_path: Path, sandbox: Sandbox, client: Client) -> None:
    ids = sandbox.create_batches(12)
    journal = tmp_path / "run.jsonl"
    sandbox.set_faults(error_rate=1.0)
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url, max_retries=0) as flaky:
        first = sm.cancel_batches(ids[:4], client=flaky, journal=journal, progress=False)
    assert set(first["outcome"]) == {"server_error"}
    sandbox.set_faults(error_rate=0.0)
    second = sm.cancel_batches(ids[4:8], client=client, journal=journal, progress=False)
    assert set(second["outcome"]) == {"cancelled"}
    before = len(sandbox.requests)

    merged = sm.cancel_batches(ids, client=client, journal=journal, progress=False)

    sent = sandbox.requests[before:]
    sent_ids = {r["batch_id"] for r in sent}
    assert sent_ids == set(ids[:4]) | set(ids[8:])  # the 4 final ones were not sent again
    assert list(merged["batch_id"]) == ids and set(merged["outcome"]) == {"cancelled"}
    assert merged.attrs["resumed_from_journal"] == 4
    header, results = read(journal)
    assert header is not None and header["base_url"] == sandbox.base_url
    assert {r.outcome.value for r in results.values()} == {"cancelled"}
    assert sandbox.api_key not in journal.read_text()


def test_journal_with_a_torn_last_line_reads_and_appends(tmp_path: Path, sandbox: Sandbox, client: Client) -> None:
    ids = sandbox.create_batches(3)
    journal = tmp_path / "j.jsonl"
    sm.cancel_batches(ids[:1], client=client, journal=journal, progress=False)
    with journal.open("a") as fh:
        fh.write('{"batch_id": "' + ids[1] + '", "outcome": "canc')  # killed mid-line
    report = sm.cancel_batches(ids, client=client, journal=journal, progress=False)
    assert set(report["outcome"]) == {"cancelled"}
    lines = journal.read_text().splitlines()
    assert sum(1 for line in lines if line.startswith('{"batch_id"') and line.endswith("}")) == 3
    assert all(json.loads(line) for line in lines if line.endswith("}"))


def test_journal_refuses_another_api(tmp_path: Path, sandbox: Sandbox, client: Client) -> None:
    journal = tmp_path / "j.jsonl"
    journal.write_text('{"format": "smtoolkit-journal", "version": 1, "base_url": "https://elsewhere/v2"}\n')
    with pytest.raises(sm.InputError, match="belongs to"):
        sm.cancel_batches(["qrb_a"], client=client, journal=journal, progress=False)
    with pytest.raises(sm.InputError, match="does not exist"):
        sm.cancel_batches(["qrb_a"], client=client, journal=tmp_path / "no" / "j.jsonl", progress=False)
    assert sandbox.requests == []


_CHILD = textwrap.dedent("""
    import os, sys
    import smtoolkit as sm
    ids = open(sys.argv[1]).read().split()
    sm.cancel_batches(ids, api_key=os.environ["SMTK_TEST_KEY"], base_url=os.environ["SMTK_TEST_URL"],
                      journal=sys.argv[2], workers=8, max_rps=400, progress=False)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_sigkill_then_resume_from_journal(tmp_path: Path) -> None:
    with Sandbox(per_second=2000, hourly_limit=100_000, seed=7) as sb:
        ids = sb.create_batches(2000)
        ids_file, journal = tmp_path / "ids.txt", tmp_path / "kill.jsonl"
        ids_file.write_text("\n".join(ids))
        env = {**os.environ, "SMTK_TEST_KEY": sb.api_key, "SMTK_TEST_URL": sb.base_url}
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(ids_file), str(journal)], env=env)
        try:
            def journaled_400() -> bool:
                assert proc.poll() is None, "the child finished before it could be killed"
                return journal.exists() and journal.read_text().count("\n") >= 400

            wait_for(journaled_400, "400 rows in the child's journal")
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        _, journaled = read(journal)
        final_before = {b for b, r in journaled.items() if r.outcome.value in ("cancelled", "already_stopped")}
        assert 300 <= len(final_before) < 2000
        seq_before = max(r["seq"] for r in sb.requests)

        with Client(api_key=sb.api_key, base_url=sb.base_url, max_rps=400) as c:
            report = sm.cancel_batches(ids, client=c, journal=journal, workers=8, progress=False)

        assert len(report) == 2000 and list(report["batch_id"]) == ids
        assert set(report["outcome"]) == {"cancelled"}
        resent = {r["batch_id"] for r in sb.requests if r["seq"] > seq_before}
        assert not (resent & final_before)  # nothing already cancelled was sent again
        assert resent | final_before == set(ids)
        truth = sb.batches()
        assert all(truth[b]["cancelled"] for b in ids)
        _, after = read(journal)
        assert set(after) == set(ids) and all(r.outcome.value == "cancelled" for r in after.values())


def test_keyboard_interrupt_returns_a_partial_report(sandbox: Sandbox, client: Client, tmp_path: Path) -> None:
    sandbox.set_faults(latency=0.15)
    ids = sandbox.create_batches(300)
    journal = tmp_path / "int.jsonl"
    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    with pytest.warns(UserWarning, match="interrupted") as caught:
        report = sm.cancel_batches(ids, client=client, workers=4, journal=journal, progress=False)
    timer.cancel()
    assert len([w for w in caught if "interrupted" in str(w.message)]) == 1
    assert len(report) == 300 and report.attrs["stopped"] == "interrupt"
    counts = report["outcome"].value_counts()
    assert 5 <= counts["cancelled"] < 300 and counts["skipped"] > 0
    assert set(counts.index) <= {"cancelled", "skipped"}
    assert set(report.loc[report.outcome == "skipped", "error_code"]) == {"INTERRUPTED"}
    run_ended()  # anything still on the wire has landed before the truth is read
    truth = sandbox.batches()
    for row in report.itertuples():
        # Nothing in flight left unreported: every batch the server stopped is reported cancelled.
        assert (row.outcome == "cancelled") == truth[row.batch_id]["cancelled"], row.batch_id
    _, journaled = read(journal)
    assert {b for b, r in journaled.items() if r.outcome.value == "cancelled"} == set(
        report.loc[report.outcome == "cancelled", "batch_id"])


def test_wait_turns_stopping_into_cancelled(sandbox: Sandbox, client: Client) -> None:
    sandbox.set_progression(stop_delay=1.0)
    ids = sandbox.create_batches(3)
    report = sm.cancel_batches(ids, client=client, wait=10, progress=False)
    assert set(report["outcome"]) == {"cancelled"} and set(report["status_code"]) == {"STOPPED"}
    assert report["end_time"].notna().all() and report["cancel_time"].notna().all()
    assert (report["attempts"] >= 2).all()
    gets = [r for r in sandbox.requests if r["method"] == "GET"]
    assert gets and report.attrs["polls"] == len(gets)
    assert report.attrs["requests_sent"] == len(sandbox.requests)


def test_too_short_wait_leaves_stopping_with_last_status(sandbox: Sandbox, client: Client) -> None:
    sandbox.set_progression(stop_delay=30)
    (bid,) = sandbox.create_batches(1)
    r = sm.cancel_batch(bid, client=client, wait=1.2)
    assert r.outcome is sm.Outcome.STOPPING and r.status_code == "RUNNING"
    assert "after waiting" in (r.error_description or "")
    assert any(e["method"] == "GET" for e in sandbox.requests)


def test_get_batches_changes_nothing(sandbox: Sandbox, client: Client) -> None:
    running = sandbox.create_batches(2)
    done = sandbox.create_batches(1, status="STOPPED")
    df = pd.DataFrame({"id": running + done + ["qrb_nope", "bad id"]})
    info = sm.get_batches(df, column="id", client=client, query_counts=True, progress=False)
    assert list(info["outcome"]) == ["would_cancel", "would_cancel", "already_stopped", "not_found", "invalid_id"]
    assert list(info["status_code"][:3]) == ["RUNNING", "RUNNING", "STOPPED"]
    assert info["description"].iloc[0].startswith("sandbox batch")
    assert info["query_amount"].iloc[0] == 4
    assert info.loc[0, ["queued", "running", "success", "failure"]].sum() == 4
    assert pd.isna(info.loc[3, "queued"])
    assert all(r["method"] == "GET" for r in sandbox.requests)
    assert not any(t["cancelled"] for t in sandbox.batches().values())


def test_wait_polls_are_paced_by_the_shared_limiter(sandbox: Sandbox) -> None:
    sandbox.set_progression(stop_delay=1.0)
    ids = sandbox.create_batches(6)
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url, max_rps=5) as c:
        report = sm.cancel_batches(ids, client=c, wait=15, workers=4, progress=False)
    assert set(report["outcome"]) == {"cancelled"}
    times = sorted(r["time"] for r in sandbox.requests)
    for i in range(len(times) - 5):
        # Never more than 5 in a second, as the client started them; arrivals carry the machine's
        # jitter (a late request followed by an on-time one), so the server may see them 0.2 s closer.
        assert times[i + 5] - times[i] > 0.8


def test_faults_object_in_sandbox_is_configurable() -> None:
    with pytest.raises(ValueError):
        Faults(error_rate=2)
