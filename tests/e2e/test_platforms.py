"""Where users really are: Windows consoles and newlines, Excel's CSVs in and out, files with
the usual permissions, numeric IDs, and a missing batch that is not success.

This machine runs Linux; each Windows behaviour is proved by simulating what differs there
(the platform flag, the console device, the newline translation, a missing module), against
the real CLI and a real sandbox.
"""

from __future__ import annotations

import csv
import io
import os
import socket
import stat
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import smtoolkit as sm
from smtoolkit import cli
from smtoolkit.sandbox import Sandbox
from smtoolkit.sandbox._http import exclusive_bind, linger_abort
from tests.helpers import deleted_ids

REPO = Path(__file__).resolve().parents[2]


def run_main(argv: list[str], monkeypatch: pytest.MonkeyPatch, key: str, *, newline: str | None = None,
             stdin: bytes = b"") -> tuple[int, bytes, str]:
    """The CLI's main() in this process, with stdout as raw bytes through a text layer that
    translates newlines as the platform would (`newline="\\r\\n"` is Windows)."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", newline=newline, write_through=True)
    err = io.StringIO()
    monkeypatch.setenv("SUPERMETRICS_API_KEY", key)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    code = cli.main(argv)
    out.flush()
    return code, raw.getvalue(), err.getvalue()


# -- Windows: newlines, the console, collection without POSIX modules, sockets ---------------------


def test_csv_on_stdout_has_one_line_end_per_row_under_windows_newlines(
        sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = sandbox.create_batches(3)
    monkeypatch.setattr(os, "linesep", "\r\n")  # what pandas would use by default on Windows
    code, out, err = run_main(["cancel", *ids, "--yes", "--no-progress", "-o", "csv", "--base-url",
                               sandbox.base_url], monkeypatch, sandbox.api_key, newline="\r\n")
    assert code == 0, err
    assert b"\r\r\n" not in out and out.count(b"\r\n") == 4  # header + 3 rows
    rows = list(csv.reader(io.StringIO(out.decode("utf-8"), newline="")))
    assert [r[0] for r in rows] == ["batch_id", *ids]  # no blank row after each row
    assert len(pd.read_csv(io.BytesIO(out))) == 3


def test_the_prompt_uses_the_windows_console_not_dev_tty(
        sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ids = sandbox.create_batches(2)
    monkeypatch.setattr(sys, "platform", "win32")
    assert cli._console() == "CONIN$"
    monkeypatch.chdir(tmp_path)
    # No console to open: refuses, sends nothing (exit 2), as without a terminal on POSIX.
    code, _, err = run_main(["cancel", *ids, "--no-progress", "--base-url", sandbox.base_url],
                            monkeypatch, sandbox.api_key)
    assert code == 2 and "--yes" in err and sandbox.requests == []
    # A console that answers "y" (CONIN$ opened by name, as Windows does): the cancel goes out.
    (tmp_path / "CONIN$").write_text("y\n", encoding="utf-8")
    code, _, err = run_main(["cancel", *ids, "--no-progress", "--base-url", sandbox.base_url],
                            monkeypatch, sandbox.api_key)
    assert code == 0, err
    assert "Proceed? [y/N]" in err and sorted(deleted_ids(sandbox)) == sorted(ids)


def test_ids_on_stdin_confirmed_on_the_console(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    ids = sandbox.create_batches(2)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "CONIN$").write_text("n\n", encoding="utf-8")
    code, _, err = run_main(["cancel", "-f", "-", "--no-progress", "--base-url", sandbox.base_url], monkeypatch,
                            sandbox.api_key, stdin=("batch_id\n" + "\n".join(ids) + "\n").encode())
    assert code == 0 and "Nothing was cancelled" in err and sandbox.requests == []


_COLLECT = """
import signal, sys
try:  # third-party libraries handle Windows themselves (some ipykernel versions import SIGKILL)
    import ipykernel.comm, ipywidgets  # noqa: F401
except ImportError:
    pass
sys.modules["pty"] = None          # import pty -> ImportError, as on Windows
sys.modules["termios"] = None
for name in ("SIGKILL", "SIGHUP"):  # not in Windows' signal module: our tests must not need them to load
    if hasattr(signal, name):
        delattr(signal, name)
import pytest
sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "-n", "0", "tests"]))
"""


def test_the_suite_collects_without_posix_only_modules() -> None:
    done = subprocess.run([sys.executable, "-c", _COLLECT], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "error" not in done.stdout.lower().split("collected")[-1]
    assert " tests collected" in done.stdout or "collected" in done.stdout


def test_two_sandboxes_cannot_share_a_port() -> None:
    with Sandbox() as first:
        port = int(first.base_url.split(":")[2].split("/")[0])
        with pytest.raises(OSError):
            Sandbox(port=port).start()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the first one still serves


def test_socket_options_are_chosen_per_platform() -> None:
    reuse, exclusive = exclusive_bind("win32")
    assert reuse is False and exclusive is not None  # SO_EXCLUSIVEADDRUSE, never SO_REUSEADDR
    assert exclusive_bind("linux") == (True, None) and exclusive_bind("darwin") == (True, None)
    assert struct.unpack("HH", linger_abort("win32")) == (1, 0) and len(linger_abort("win32")) == 4
    assert struct.unpack("ii", linger_abort("linux")) == (1, 0) and len(linger_abort("linux")) == 8


# -- Excel's CSVs in ------------------------------------------------------------------------------


NAMES = ["Zoë", "Łódź", "東京"]
CP1252_NAMES = ["Zoë", "Müller", "Café"]  # what Windows-1252 can hold


@pytest.mark.parametrize("encoding, sep, note", [
    ("utf-8", ",", None),
    ("utf-8-sig", ",", None),
    ("cp1252", ",", "Windows-1252"),
    ("utf-8-sig", ";", "semicolon"),
    ("cp1252", ";", "Windows-1252"),
    ("utf-8", "\t", "tab"),
    ("utf-8", "|", "pipe"),
    ("utf-16", "\t", "UTF-16"),
], ids=["utf8", "utf8-bom", "cp1252", "semicolon-bom", "semicolon-cp1252", "tab", "pipe", "utf16-tab"])
def test_excel_exports_read_as_meant(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     encoding: str, sep: str, note: str | None) -> None:
    ids = sandbox.create_batches(3)
    names = CP1252_NAMES if encoding == "cp1252" else NAMES
    text = f"batch_id{sep}owner\r\n" + "".join(f"{i}{sep}{n}\r\n" for i, n in zip(ids, names, strict=True))
    source = tmp_path / "ids.csv"
    source.write_bytes(text.encode(encoding))
    out = tmp_path / "report.csv"
    code, _, err = run_main(["cancel", "-f", str(source), "--yes", "--no-progress", "--base-url", sandbox.base_url,
                             "--out", str(out)], monkeypatch, sandbox.api_key)
    assert code == 0, err
    if note:
        assert note in err
    report = pd.read_csv(out, dtype=str)
    assert list(report["batch_id"]) == ids and list(report["owner"]) == names
    assert set(report["outcome"]) == {"cancelled"}


def test_separator_and_encoding_can_be_given(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    ids = sandbox.create_batches(2)
    source = tmp_path / "ids.txt"
    # A header that looks comma-separated, a file that is semicolon-separated: only --sep says.
    source.write_bytes(("batch_id;note, more\n" + "".join(f"{i};x, y\n" for i in ids)).encode("cp1252"))
    code, out, err = run_main(["cancel", "-f", str(source), "--sep", ";", "--encoding", "cp1252", "--yes",
                               "--no-progress", "-o", "csv", "--base-url", sandbox.base_url],
                              monkeypatch, sandbox.api_key)
    assert code == 0, err
    assert list(pd.read_csv(io.BytesIO(out))["batch_id"]) == ids


@pytest.mark.parametrize("data, args, needle", [
    (b"batch_id;note\nqrb_1;\x81\x8d\n", [], "neither UTF-8 nor Windows-1252"),
    (b"batch_id;note\nqrb_1;x\n", ["--sep", ","], "looks semicolon-separated"),
    (b"batch_id,note\nqrb_1,\xe9\n", ["--encoding", "utf-8"], "not valid utf-8"),
    (b"id,note\nqrb_1,x\n", [], "has no column 'batch_id'"),
    (b"batch_id\nqrb_1\n", ["--encoding", "klingon"], "not an encoding"),
], ids=["undecodable", "wrong-sep", "wrong-encoding", "no-column", "unknown-encoding"])
def test_a_file_that_cannot_be_read_gets_one_clear_error(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path, data: bytes, args: list[str],
                                                          needle: str) -> None:
    source = tmp_path / "bad.csv"
    source.write_bytes(data)
    code, _, err = run_main(["cancel", "-f", str(source), *args, "--yes", "--no-progress", "--base-url",
                             sandbox.base_url], monkeypatch, sandbox.api_key)
    assert code == 2 and needle in err and "bad.csv" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sandbox.requests == []


# -- files as colleagues expect --------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_report_gets_the_umask_permissions(tmp_path: Path, umask: int, expected: int) -> None:
    report = sm.cancel_batches([], api_key="k", base_url="http://127.0.0.1:9/v2", progress=False)
    old = os.umask(umask)
    try:
        path = sm.export_csv(report, tmp_path / "r.csv")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == expected


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_replaced_report_keeps_its_mode_and_is_replaced_atomically(tmp_path: Path) -> None:
    report = sm.cancel_batches([], api_key="k", base_url="http://127.0.0.1:9/v2", progress=False)
    target = tmp_path / "shared.csv"
    target.write_text("old\n")
    target.chmod(0o664)
    inode = target.stat().st_ino
    sm.export_csv(report, target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o664
    assert target.stat().st_ino != inode  # a new file renamed over the old one, not rewritten in place
    assert target.read_text().startswith("batch_id,")
    assert [p.name for p in tmp_path.iterdir()] == ["shared.csv"]  # no temporary file left


def test_the_excel_option_round_trips_non_latin_text(sandbox: Sandbox, tmp_path: Path) -> None:
    ids = sandbox.create_batches(2, description="x")
    frame = pd.DataFrame({"batch_id": ids, "owner": ["Zoë", "東京 → Łódź"], "formula": ["=1+1", "ok"]})
    report = sm.cancel_batches(frame, api_key=sandbox.api_key, base_url=sandbox.base_url, progress=False)
    path = sm.export_csv(report, tmp_path / "excel.csv", excel=True, sep=";")
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM that makes Excel read UTF-8
    assert b"\r\n" in raw and b"\r\r\n" not in raw
    # As Excel reads it: BOM -> UTF-8, the separator given, RFC 4180 quoting.
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    assert [r["owner"] for r in rows] == ["Zoë", "東京 → Łódź"] and rows[0]["formula"] == "'=1+1"
    assert all(len(r["cancel_time"]) == 19 and r["cancel_time"][10] == " " for r in rows)  # 2026-01-01 12:00:00
    back = pd.read_csv(path, sep=";", encoding="utf-8-sig")
    assert list(back["owner"]) == ["Zoë", "東京 → Łódź"] and list(back["batch_id"]) == ids
    # The default stays plain UTF-8 with ISO times, for code.
    plain = sm.export_csv(report, tmp_path / "plain.csv").read_bytes()
    assert not plain.startswith(b"\xef\xbb\xbf") and b"\r\n" not in plain and b"Z," in plain


def test_cli_excel_out(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ids = sandbox.create_batches(1)
    out = tmp_path / "r.csv"
    code, _, err = run_main(["cancel", *ids, "--yes", "--no-progress", "--out", str(out), "--excel", "--out-sep",
                             ";", "--base-url", sandbox.base_url], monkeypatch, sandbox.api_key)
    assert code == 0, err
    assert out.read_bytes().startswith(b"\xef\xbb\xbfbatch_id;")


def test_export_refuses_an_unknown_separator(tmp_path: Path) -> None:
    with pytest.raises(sm.InputError, match="sep must be one of"):
        sm.export_csv(pd.DataFrame({"a": [1]}), tmp_path / "x.csv", sep="::")


# -- one value, one answer --------------------------------------------------------------------------


def test_numeric_ids_are_the_same_id_in_every_form(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.hostile import Hostile, reply, stopped_batch

    def behave(method: str, path: str) -> object:
        return reply(200, stopped_batch(path.rsplit("/", 1)[-1]))

    forms = [1234, np.int64(1234), np.int32(1234), 1234.0, np.float64(1234.0), "1234"]
    with Hostile(behave) as h:
        for form in forms:
            report = sm.cancel_batches([form, 5678], api_key="k", base_url=h.base_url, progress=False)
            assert list(report["batch_id"]) == ["1234", "5678"] and set(report["outcome"]) == {"cancelled"}
        gappy = pd.DataFrame({"batch_id": [1234, None, 5678]})  # pandas stores it as float64
        report = sm.cancel_batches(gappy, api_key="k", base_url=h.base_url, progress=False)
        assert list(report["outcome"]) == ["cancelled", "invalid_id", "cancelled"]
        refused = sm.cancel_batches([12.5], api_key="k", base_url=h.base_url, progress=False)
        assert refused.loc[0, "outcome"] == "invalid_id" and "whole number" in refused.loc[0, "error_message"]
        paths = {e["path"].rsplit("/", 1)[-1] for e in h.log}
    assert paths == {"1234", "5678"}


# -- a missing batch is not success on the command line ---------------------------------------------


def test_cancel_of_a_missing_batch_exits_1_unless_told_to_ignore_it(
        sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    [real] = sandbox.create_batches(1)
    argv = ["cancel", real, "qrb_typo00000", "--yes", "--no-progress", "--base-url", sandbox.base_url]
    code, out, _ = run_main(argv, monkeypatch, sandbox.api_key)
    assert code == 1 and b"not_found" in out and b"need attention" in out
    code, out, _ = run_main([*argv, "--ignore-not-found"], monkeypatch, sandbox.api_key)
    assert code == 0 and b"need attention" not in out
    # The library's outcome does not change.
    assert sm.cancel_batch("qrb_typo00000", api_key=sandbox.api_key, base_url=sandbox.base_url).outcome \
        is sm.Outcome.NOT_FOUND
