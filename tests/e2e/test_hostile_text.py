"""Text no writer can encode, from a server: lone UTF-16 surrogates ("\\ud83d", half an emoji)
sent as JSON escapes or as raw CESU-8 bytes, in every field the client reads (error code,
message, description, request ID, problem details, batch fields). It is made encodable once,
where answers are parsed, so the journal, the audit trail, CSV, JSON and the terminal all
write it, and the run goes on (#21)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import smtoolkit as sm
from smtoolkit.config import API_KEY_ENV, BASE_URL_ENV, PANEL_TOKEN_ENV, export_panel_settings
from smtoolkit.ui.page import page
from tests.helpers import cli_env, fast_client
from tests.scripted import Reply, Scripted

KEY = "scripted-hostile-text-key"
LONE = b"\\ud83d"  # a JSON escape of a lone high surrogate
CESU = b"\xed\xa0\xbd"  # the same code point as raw bytes (json.loads passes it on)

# One body per kind of answer; each holds `per_body[kind]` lone surrogates.
BODIES: dict[str, bytes] = {
    "stopped": b'{"meta": {"request_id": "req_' + LONE + b'"}, "data": {"@type": "query_batch", '
               b'"batch_id": "%(id)s", "status_code": "STOPPED", "cancel_time": "2026-01-01T00:00:00Z", '
               b'"description": "nightly ' + LONE + b' load ' + CESU + b'", "' + LONE + b'key": "v"}}',
    "weird_status": b'{"meta": {}, "data": {"batch_id": "%(id)s", "status_code": "STOP' + LONE + b'PED"}}',
    "envelope": b'{"meta": {"request_id": "req_x"}, "error": {"code": "NOT_' + LONE + b'FOUND", '
                b'"message": "no ' + CESU + b' batch", "description": "cut ' + LONE + b'"}}',
    "problem": b'{"type": "about:blank", "title": "Bad ' + LONE + b'", "detail": "d' + CESU + b'", '
               b'"instance": "/x' + LONE + b'"}',
}
PER_BODY = {"stopped": 4, "weird_status": 1, "envelope": 3, "problem": 3}
STATUS = {"stopped": 200, "weird_status": 200, "envelope": 404, "problem": 400}
KINDS = list(BODIES)


def kind_of(batch_id: str) -> str:
    return KINDS[int(batch_id.rsplit("_", 1)[1]) % len(KINDS)]


def responder(method: str, path: str) -> Reply:
    batch_id = path.split("?")[0].rstrip("/").split("/")[-1]
    kind = kind_of(batch_id)
    ct = "application/problem+json" if kind == "problem" else "application/json"
    return Reply(STATUS[kind], BODIES[kind] % {b"id": batch_id.encode()}, content_type=ct)


@pytest.fixture
def server() -> Scripted:
    with Scripted(responder=responder) as s:
        yield s


IDS = [f"qrb_hostile_{i}" for i in range(40)]


def strict_utf8(path: Path) -> str:
    return path.read_bytes().decode("utf-8")  # raises on anything a strict reader refuses


def test_a_journaled_run_writes_every_row_and_counts_what_it_replaced(server: Scripted, tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    with fast_client(server, api_key=KEY) as c:
        report = sm.cancel_batches(pd.DataFrame({"batch_id": IDS}), client=c, progress=False, journal=journal)
    # The run went on to the end: nothing halted, nothing skipped.
    assert report.attrs["stopped"] is None and report.attrs["error"] is None
    assert "skipped" not in set(report["outcome"])
    assert report.attrs["text_replaced"] == sum(PER_BODY[kind_of(i)] for i in IDS)
    text_cols = ["error_code", "error_message", "error_description", "request_id", "status_code"]
    for col in text_cols:
        for value in report[col].dropna():
            assert not re.search("[\ud800-\udfff]", value), (col, value)
    assert "\ufffd" in "".join(report["error_code"].dropna())  # replaced, not dropped
    # Every writer takes it: the journal, CSV (plain and Excel), JSON.
    lines = strict_utf8(journal).splitlines()
    recorded = {json.loads(line).get("batch_id") for line in lines[1:]}
    assert recorded == set(IDS)
    for excel in (False, True):
        out = sm.export_csv(report, tmp_path / f"r{excel}.csv", excel=excel)
        assert "\ufffd" in strict_utf8(out)
    json.loads(report.to_json(orient="records", date_format="iso"))
    # The journal resumes: the final rows (cancelled, not_found) are not sent again.
    with fast_client(server, api_key=KEY) as c:
        again = sm.cancel_batches(pd.DataFrame({"batch_id": IDS}), client=c, progress=False, journal=journal)
    final = {i for i in IDS if kind_of(i) in ("stopped", "envelope")}
    assert again.attrs["resumed_from_journal"] == len(final)
    sent_again = {e["path"].rsplit("/", 1)[-1] for e in server.log[-again.attrs["requests_sent"]:]}
    assert not sent_again & final


def test_the_batch_record_fields_are_encodable(server: Scripted) -> None:
    with fast_client(server, api_key=KEY) as c:
        report = sm.get_batches(["qrb_hostile_0", "qrb_hostile_4"], client=c, progress=False)
    assert list(report["description"]) == ["nightly \ufffd load \ufffd"] * 2
    json.loads(report.to_json(orient="records", date_format="iso"))


@pytest.mark.parametrize("output", ["table", "csv", "json"])
def test_each_cli_output_format_writes_it(server: Scripted, tmp_path: Path, output: str) -> None:
    env = cli_env(KEY)
    env["PYTHONIOENCODING"] = "utf-8:strict"
    out, journal = tmp_path / "out.csv", tmp_path / "j.jsonl"
    p = subprocess.run([sys.executable, "-m", "smtoolkit", "cancel", *IDS[:8], "--yes", "--no-progress",
                        "--base-url", server.base_url, "-o", output, "--out", str(out), "--journal", str(journal),
                        "--max-retries", "0"],
                       env=env, capture_output=True, timeout=60, stdin=subprocess.DEVNULL, start_new_session=True)
    stdout, stderr = p.stdout.decode("utf-8"), p.stderr.decode("utf-8")
    assert p.returncode == 1, stderr  # some rows are not_found/client_error: 1, never 4 (a crash)
    assert "Traceback" not in stderr and "unexpected error" not in stderr
    if output == "json":
        rows = json.loads(stdout)
        assert len(rows) == 8
        assert any("\ufffd" in (r["error_code"] or "") for r in rows)
    else:
        assert "\ufffd" in stdout
    if output == "csv":
        assert len(pd.read_csv(out)) == 8
    assert len(strict_utf8(out).splitlines()) == 9
    assert len(strict_utf8(journal).splitlines()) == 9  # header + 8 records


def test_the_panel_page_records_it_in_the_audit_trail_and_goes_on(
        server: Scripted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    audit = tmp_path / "audit.jsonl"
    monkeypatch.setenv(API_KEY_ENV, KEY)
    monkeypatch.setenv(PANEL_TOKEN_ENV, "a-token-the-kernels-never-need")
    for name in ("SMTK_PANEL_AUDIT", "SMTK_PANEL_ASK_KEY", BASE_URL_ENV):
        monkeypatch.delenv(name, raising=False)
    export_panel_settings(base_url=server.base_url, audit=str(audit), ask_key=False)
    panel = page(visitor="192.0.2.7").panel
    for bid in ("qrb_hostile_0", "qrb_hostile_1", "qrb_hostile_2", "qrb_hostile_3"):
        panel.id_input.value = bid  # a look-up
        panel.wait()
        panel.cancel_button.click()
        panel.confirm_button.click()  # a cancel
        panel.wait()
    lines = strict_utf8(audit).splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["action"], r["batch_id"]) for r in records] == [
        (a, f"qrb_hostile_{i}") for i in range(4) for a in ("lookup", "cancel")]
    assert any("\ufffd" in (r.get("error_code") or "") for r in records)
    assert "could not be recorded" not in panel.message.value
    assert "\ufffd" in panel.card.value or "\ufffd" in panel.history_view.value


def test_a_name_from_the_command_line_with_undecodable_bytes_is_written_too(tmp_path: Path) -> None:
    """The user's own text can hold lone surrogates too (POSIX argv decodes undecodable bytes
    to them): an invalid ID of that kind is reported, printed and written, never a crash."""
    if os.name == "nt":
        pytest.skip("Windows command lines are UTF-16: no undecodable bytes reach argv")
    out = tmp_path / "out.csv"
    env = cli_env("k")
    p = subprocess.run([sys.executable.encode(), b"-m", b"smtoolkit", b"cancel", b"qrb_\xff\xfe", b"--yes",
                        b"--no-progress", b"--base-url", b"http://127.0.0.1:9", b"--out", str(out).encode(),
                        b"-o", b"json"],
                       env=env, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 1, p.stderr
    assert json.loads(p.stdout)[0]["outcome"] == "invalid_id"
    assert "invalid_id" in strict_utf8(out)
