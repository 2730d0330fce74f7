"""The panel page's audit trail (`smtoolkit.ui.audit`) on its own: no server, no browser.

Its lines are the journal's records plus who and when, whole lines even when several
processes (several visitors' kernels) append at once, in files with the usual permissions."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from smtoolkit.core.outcomes import Outcome, Result
from smtoolkit.errors import InputError
from smtoolkit.journal import record_line, record_of
from smtoolkit.ui.audit import AuditTrail, audit_path
from tests.helpers import audit_lines

AT = datetime(2026, 12, 1, 9, 30, 15, 250000, tzinfo=UTC)
API = "https://api.supermetrics.com/enterprise/v2"
posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes and umask are POSIX")


def result(batch_id: str = "qrb_3feb5ff5c71e", **fields: object) -> Result:
    defaults: dict[str, object] = dict(
        outcome=Outcome.CANCELLED, http_status=200, status_code="STOPPED", request_id="req_0123456789ab",
        cancel_time=datetime(2026, 12, 1, 9, 30, 14, tzinfo=UTC), attempts=1, elapsed_s=0.05,
        ratelimit_remaining=4990)
    defaults.update(fields)
    return Result(batch_id, **defaults)  # type: ignore[arg-type]


def test_a_line_is_the_journal_record_plus_who_and_when(tmp_path: Path) -> None:
    path = audit_path(tmp_path / "audit.jsonl")
    trail = AuditTrail(path, visitor="192.0.2.7", base_url=API, now=lambda: AT)
    r = result()
    trail.append("cancel", r)
    raw = path.read_text(encoding="utf-8")
    assert raw.endswith("\n") and raw.count("\n") == 1
    (line,) = audit_lines(path)
    assert list(line)[:4] == ["at", "action", "visitor", "base_url"]
    assert line["at"] == "2026-12-01T09:30:15.250000Z"
    assert (line["action"], line["visitor"], line["base_url"]) == ("cancel", "192.0.2.7", API)
    journal = json.loads(record_line(record_of(r)))  # exactly what a journal would write for it
    assert {k: v for k, v in line.items() if k in journal} == journal
    assert set(line) == {"at", "action", "visitor", "base_url"} | set(journal)


def test_lines_are_appended_in_order_and_an_unknown_visitor_is_null(tmp_path: Path) -> None:
    path = audit_path(tmp_path / "audit.jsonl")
    AuditTrail(path, visitor="2001:db8::1", base_url=API).append("lookup", result(outcome=Outcome.WOULD_CANCEL))
    AuditTrail(path, visitor=None, base_url=API).append("cancel", result(outcome=Outcome.NOT_FOUND, http_status=404))
    got = audit_lines(path)
    assert [(g["action"], g["outcome"], g["visitor"]) for g in got] == [
        ("lookup", "would_cancel", "2001:db8::1"), ("cancel", "not_found", None)]
    assert datetime.fromisoformat(str(got[0]["at"]).replace("Z", "+00:00")).tzinfo is not None


def test_an_unknown_action_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    path = audit_path(tmp_path / "audit.jsonl")
    with pytest.raises(ValueError, match="action"):
        AuditTrail(path, visitor=None, base_url=API).append("delete-everything", result())
    assert path.read_text() == ""


def test_a_line_torn_by_a_killed_writer_does_not_swallow_the_next(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"at": "2026-12-01T09:00:00Z", "action": "canc', encoding="utf-8")
    AuditTrail(audit_path(path), visitor="192.0.2.7", base_url=API).append("cancel", result())
    torn, whole = path.read_text(encoding="utf-8").split("\n")[:2]
    assert torn.endswith('"canc') and json.loads(whole)["batch_id"] == "qrb_3feb5ff5c71e"


def test_server_text_of_any_kind_stays_one_line(tmp_path: Path) -> None:
    path = audit_path(tmp_path / "audit.jsonl")
    nasty = 'line one\nline two\r\n\u2028"quoted" 東京 \x00'
    AuditTrail(path, visitor=None, base_url=API).append(
        "lookup", result(outcome=Outcome.SERVER_ERROR, error_message=nasty, error_description=nasty * 50))
    (line,) = audit_lines(path)
    assert line["error_message"] == nasty


def _append_many(path: str, writer: int, count: int) -> None:
    trail = AuditTrail(path, visitor=f"192.0.2.{writer}", base_url=API)
    for i in range(count):
        # ~9 KB lines: more than PIPE_BUF (4 KiB), so only the lock keeps them whole everywhere.
        trail.append("cancel", result(f"qrb_w{writer}_{i}", outcome=Outcome.SERVER_ERROR,
                                      error_description=f"w{writer}-{i}-" + "x" * 9000))


def test_visitors_appending_at_once_never_mix_their_lines(tmp_path: Path) -> None:
    """Each visitor is a kernel, a process of its own: four of them append 40 long lines each."""
    path = str(audit_path(tmp_path / "audit.jsonl"))
    ctx = multiprocessing.get_context("spawn" if sys.platform == "win32" else "fork")
    procs = [ctx.Process(target=_append_many, args=(path, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    got = audit_lines(Path(path))  # every line parses: none was torn or interleaved
    assert len(got) == 160
    for w in range(4):
        mine = [g["batch_id"] for g in got if g["visitor"] == f"192.0.2.{w}"]
        assert mine == [f"qrb_w{w}_{i}" for i in range(40)]  # each writer's lines in its own order


@posix_only
def test_a_new_trail_gets_the_umask_mode_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        new = audit_path(tmp_path / "new.jsonl")
        AuditTrail(new, visitor=None, base_url=API).append("lookup", result())
    finally:
        os.umask(old)
    assert stat.S_IMODE(new.stat().st_mode) == 0o640
    kept = tmp_path / "kept.jsonl"
    kept.write_text("")
    kept.chmod(0o600)
    AuditTrail(audit_path(kept), visitor=None, base_url=API).append("lookup", result())
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600


def test_a_trail_that_cannot_be_written_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        audit_path(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        audit_path(tmp_path / "missing" / "audit.jsonl")
    with pytest.raises(InputError, match="file path"):
        audit_path("  ")
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(InputError, match="does not exist"):
        audit_path(tmp_path / "blocker" / "audit.jsonl")


def test_a_relative_trail_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernels run in another folder: they must get a path that does not depend on it."""
    monkeypatch.chdir(tmp_path)
    p = audit_path("audit.jsonl")
    assert p.is_absolute() and p == tmp_path / "audit.jsonl" and p.exists()
