"""`smtoolkit sandbox` as a user runs it: a real subprocess, talked to with curl, stopped with
Ctrl-C (SIGINT)."""

from __future__ import annotations

import csv
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.helpers import GUARD

KEY = "cli-test-key-0123456789"
CURL = shutil.which("curl")


def _restore_sigint() -> None:
    # A shell that runs the tests in the background starts them with SIGINT ignored; a child
    # inherits that, and Python then never raises KeyboardInterrupt. Only used in that case.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _lines(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


@pytest.fixture
def cli_sandbox(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path, list[str]]]:
    ids_file = tmp_path / "ids.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "smtoolkit", "sandbox", "--port", "0", "--batches", "5",
         "--api-key", KEY, "--ids-out", str(ids_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=(_restore_sigint if os.name == "posix" and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
                    else None),  # preexec_fn is POSIX-only
    )
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    printed: list[str] = []
    base_url = None
    deadline = time.monotonic() + GUARD  # a hang guard: the sandbox prints its URL at once
    try:
        while base_url is None:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"the sandbox exited early: {proc.wait()} {proc.stderr.read() if proc.stderr else ''}"
            printed.append(line)
            m = re.search(r"Base URL: (\S+)", line)
            if m:
                base_url = m.group(1)
        while len(printed) < 4:  # the key, the batch count and the control URL follow
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None
            printed.append(line)
        yield proc, base_url, ids_file, printed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def curl(*args: str) -> tuple[int, dict[str, str], Any]:
    """Run curl; return (HTTP status, headers lower-cased, parsed JSON body)."""
    assert CURL is not None
    done = subprocess.run([CURL, "-sS", "--max-time", "5", "-D", "-", *args],
                          capture_output=True, timeout=15, check=True)
    head, _, body = done.stdout.decode("utf-8").partition("\r\n\r\n")  # bytes: keep the CRLFs
    status_line, *header_lines = head.split("\r\n")
    status = int(status_line.split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    return status, headers, json.loads(body)


@pytest.mark.skipif(CURL is None, reason="curl is not installed: cannot drive the CLI sandbox the way a user would")
@pytest.mark.skipif(sys.platform == "win32", reason="sending SIGINT to a child is POSIX")
def test_cli_sandbox_serves_curl_and_stops_on_sigint(cli_sandbox: tuple[subprocess.Popen[str], str, Path, list[str]]) -> None:
    assert CURL is not None
    proc, base_url, ids_file, printed = cli_sandbox
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/enterprise/v2", base_url)
    assert printed[1].strip() == f"API key: {KEY}"
    assert printed[2].startswith("Batches created: 5") and str(ids_file) in printed[2]
    assert printed[3].startswith("Control API: http://127.0.0.1:")

    # The IDs CSV: a header and the five batch IDs.
    with ids_file.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["batch_id"] and len(rows) == 6
    ids = [r[0] for r in rows[1:]]
    assert len(set(ids)) == 5 and all(re.fullmatch(r"qrb_[0-9a-f]{12}", i) for i in ids)

    auth = ["-H", f"Authorization: Bearer {KEY}"]
    status, headers, body = curl(*auth, f"{base_url}/query/batch/{ids[0]}")
    assert status == 200 and headers["content-type"] == "application/json"
    assert headers["x-ratelimit-limit"] == "5000" and headers["x-ratelimit-remaining"] == "4999"
    assert set(body) == {"meta", "data"} and body["meta"]["request_id"]
    data = body["data"]
    assert (data["@type"], data["batch_id"], data["status_code"], data["cancel_time"]) == \
        ("query_batch", ids[0], "RUNNING", None)
    assert data["links"]["status"]["href"] == f"{base_url}/query/batch/{ids[0]}/status"

    status, headers, body = curl(*auth, "-X", "DELETE", f"{base_url}/query/batch/{ids[0]}")
    assert status == 200 and headers["x-ratelimit-remaining"] == "4998"
    assert body["data"]["status_code"] == "STOPPED" and body["data"]["cancel_time"] and body["data"]["end_time"]

    status, _, body = curl(*auth, f"{base_url}/query/batch/{ids[0]}/status?limit=2")
    assert status == 200 and body["meta"]["paginate"] == {"offset": 0, "limit": 2, "total": 4}
    assert {q["status_code"] for q in body["data"]} == {"FAILURE"}

    status, headers, body = curl(f"{base_url}/query/batch/{ids[1]}")  # no key
    assert status == 401 and headers["www-authenticate"].startswith("Bearer ")
    assert body["error"]["code"] == "UNAUTHORIZED"

    # The server's truth agrees, through the control API.
    control = base_url.replace("/enterprise/v2", "/_sandbox")
    status, _, body = curl(f"{control}/batches/{ids[0]}")
    assert status == 200 and body["data"]["cancelled"] is True
    status, _, body = curl(f"{control}/batches/{ids[1]}")
    assert status == 200 and body["data"]["cancelled"] is False

    # Ctrl-C stops it cleanly, and then nothing listens there any more.
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert proc.stderr is not None and "sandbox stopped" in proc.stderr.read()
    refused = subprocess.run([CURL, "-sS", "--max-time", "3", f"{base_url}/query/batch/{ids[0]}"],
                             capture_output=True, text=True, timeout=10)
    assert refused.returncode == 7  # curl: failed to connect


def test_cli_sandbox_refuses_a_remote_host_without_allow_remote() -> None:
    done = subprocess.run([sys.executable, "-m", "smtoolkit", "sandbox", "--host", "0.0.0.0", "--port", "0"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 3  # EXIT_CONFIG
    assert "allow_remote" in done.stderr and done.stdout == ""
