"""The command line in a hostile shell (#21): outputs that cannot be written are refused before
anything is sent; closed standard streams degrade to no bar and no printout, never a crash;
every duration and rate has a bound checked where it is parsed; UTF-16 without a byte-order
mark is named; a huge cell or a terminal control sequence never reaches the terminal whole."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

import smtoolkit as sm
from smtoolkit import cli
from smtoolkit.core import bounds
from smtoolkit.errors import ConfigError, InputError
from smtoolkit.frames import check_writable
from smtoolkit.idfile import read_id_file
from smtoolkit.limiter import Limiter
from smtoolkit.sandbox import Faults, Sandbox
from tests.helpers import CLI_TIMEOUT as TIMEOUT
from tests.helpers import check_no_leak, cli_env, run_cli
from tests.scripted import Reply, Scripted

POSIX_ONLY = pytest.mark.skipif(os.name == "nt", reason="closes descriptors in the child with preexec_fn (POSIX)")


# -- outputs are proven writable before the first request ---------------------------------------

@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder no one can write, root included: a tmpfs mounted read-only (skipped, with the
    reason, where mounting is not allowed); a folder without write permission when not root."""
    d = tmp_path / "ro"
    d.mkdir()
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        d.chmod(0o500)
        yield d
        d.chmod(0o700)
        return
    got = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)], capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {got.stderr.strip() or got.returncode}")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=False)


def test_a_read_only_folder_is_refused_by_the_probe(read_only_dir: Path) -> None:
    with pytest.raises(InputError, match="cannot write .*report.csv"):
        check_writable(read_only_dir / "report.csv")
    assert list(read_only_dir.iterdir()) == []


@pytest.mark.parametrize("option", ["--out", "--journal"])
def test_cancel_refuses_an_unwritable_output_before_sending(sandbox: Sandbox, read_only_dir: Path,
                                                            option: str) -> None:
    ids = sandbox.create_batches(3)
    p = run_cli(sandbox, "cancel", *ids, "--yes", "--no-progress", option, str(read_only_dir / "x.csv"))
    assert p.returncode == cli.EXIT_USAGE, p.stderr
    assert f"{option}: cannot write" in p.stderr
    assert sandbox.requests == []  # not one request: not even a look-up


def test_status_demo_and_sandbox_refuse_an_unwritable_output(sandbox: Sandbox, read_only_dir: Path) -> None:
    (bid,) = sandbox.create_batches(1)
    assert run_cli(sandbox, "status", bid, "--out", str(read_only_dir / "s.csv")).returncode == cli.EXIT_USAGE
    assert sandbox.requests == []
    demo = run_cli(None, "demo", "--no-progress", "--out", str(read_only_dir / "d.csv"), key=None)
    assert demo.returncode == cli.EXIT_USAGE and "cannot write" in demo.stderr
    sb = run_cli(None, "sandbox", "--ids-out", str(read_only_dir / "ids.csv"), "--batches", "2", key=None)
    assert sb.returncode == cli.EXIT_USAGE and "--ids-out: cannot write" in sb.stderr
    assert "Sandbox listening" not in sb.stdout


def test_the_panel_refuses_an_unwritable_audit_trail(read_only_dir: Path) -> None:
    p = run_cli(None, "panel", "--audit", str(read_only_dir / "a.jsonl"), "--port", "0", key="k")
    assert p.returncode == cli.EXIT_USAGE and "cannot write the audit file" in p.stderr


# -- closed standard streams -------------------------------------------------------------------

def run_closed(sb: Sandbox, close: tuple[int, ...], *args: str) -> subprocess.CompletedProcess[bytes]:
    """The CLI with descriptors `close` closed, as `>&-` / `2>&-` leave them."""
    def closer() -> None:
        for fd in close:
            os.close(fd)

    cmd = [sys.executable, "-m", "smtoolkit", *args, "--base-url", sb.base_url]
    return subprocess.run(cmd, env=cli_env(sb.api_key), stdin=subprocess.DEVNULL, capture_output=True,
                          preexec_fn=closer, timeout=TIMEOUT, start_new_session=True)


@POSIX_ONLY
@pytest.mark.parametrize("close", [(1,), (2,), (1, 2)], ids=[">&-", "2>&-", ">&- 2>&-"])
def test_a_closed_stdout_or_stderr_is_no_crash(sandbox: Sandbox, tmp_path: Path, close: tuple[int, ...]) -> None:
    ids = sandbox.create_batches(6)
    out, journal = tmp_path / "r.csv", tmp_path / "j.jsonl"
    p = run_closed(sandbox, close, "cancel", *ids, "--yes", "--out", str(out), "--journal", str(journal))
    assert p.returncode == cli.EXIT_OK, p
    assert all(sandbox.batch(i)["cancelled"] for i in ids)
    assert list(pd.read_csv(out)["outcome"]) == ["cancelled"] * 6
    # Nothing meant for stdout or stderr landed in the journal (it could have become descriptor 2).
    assert [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]


def test_no_stdout_and_no_stderr_at_all_pythonw(sandbox: Sandbox, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """pythonw on Windows, and some services, start with sys.stdout and sys.stderr None."""
    ids = sandbox.create_batches(3)
    monkeypatch.setenv("SUPERMETRICS_API_KEY", sandbox.api_key)
    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stderr", None)
    code = cli.main(["cancel", *ids, "--yes", "--base-url", sandbox.base_url, "--out", str(tmp_path / "r.csv")])
    assert code == cli.EXIT_OK
    assert all(sandbox.batch(i)["cancelled"] for i in ids)


def test_the_library_draws_no_bar_without_stderr(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = sandbox.create_batches(2)
    monkeypatch.setattr(sys, "stderr", None)
    report = sm.cancel_batches(ids, api_key=sandbox.api_key, base_url=sandbox.base_url, progress=True)
    assert list(report["outcome"]) == ["cancelled", "cancelled"]


# -- durations and rates have bounds, checked where parsed ---------------------------------------

FLOAT_EXTREMES = ["-1", "nan", "inf", "-inf", "1e12", "1" + "0" * 400]


@pytest.mark.parametrize(("option", "highest", "lowest_bad"), [
    ("--timeout", bounds.MAX_TIMEOUT, "0"),
    ("--max-rps", bounds.MAX_RPS, "0.001"),
    ("--wait", bounds.MAX_WAIT, None),
    ("--wait-for-budget", bounds.MAX_WAIT, None),
    ("--budget-check-every", bounds.MAX_CHECK_EVERY, "0"),
])
def test_each_cancel_option_takes_its_bound_and_refuses_beyond(option: str, highest: float,
                                                               lowest_bad: str | None) -> None:
    parser = cli.build_parser()
    got = parser.parse_args(["cancel", "x", option, repr(highest)])
    assert getattr(got, option.lstrip("-").replace("-", "_")) == highest
    bad = [*FLOAT_EXTREMES, repr(highest * 1.0001), *([lowest_bad] if lowest_bad else [])]
    if option == "--wait-for-budget":
        bad = ["-1", "1e12", "1" + "0" * 400, f"{int(highest // 3600) + 1}h", "999999999h"]
    for value in bad:
        p = run_cli(None, "cancel", "qrb_1", "--yes", option, value, key="k", base_url=False)
        assert p.returncode == cli.EXIT_USAGE, (option, value, p.stderr)
        assert option in p.stderr, p.stderr
        if value in ("1e12", repr(highest * 1.0001)) and option != "--wait-for-budget":
            assert f"{highest:g}" in p.stderr  # the message names the bound


@pytest.mark.parametrize(("option", "highest"), [
    ("--budget-window", cli.SANDBOX_MAX_WINDOW), ("--tick", cli.SANDBOX_MAX_DELAY),
    ("--stop-delay", cli.SANDBOX_MAX_DELAY), ("--latency", cli.SANDBOX_MAX_LATENCY),
])
def test_each_sandbox_duration_option_has_a_bound(option: str, highest: float) -> None:
    parser = cli.build_parser()
    assert getattr(parser.parse_args(["sandbox", option, repr(highest)]), option[2:].replace("-", "_")) == highest
    for value in [*FLOAT_EXTREMES, repr(highest * 2)]:
        with pytest.raises(SystemExit):
            parser.parse_args(["sandbox", option, value])


@pytest.mark.parametrize(("setting", "highest", "too_low"), [
    ("timeout", bounds.MAX_TIMEOUT, 0), ("max_rps", bounds.MAX_RPS, 0.001),
    ("row_deadline", bounds.MAX_ROW_DEADLINE, 0), ("backoff_base", bounds.MAX_BACKOFF, -1),
    ("backoff_cap", bounds.MAX_BACKOFF, -1),
])
def test_each_client_setting_has_a_bound(setting: str, highest: float, too_low: float) -> None:
    with sm.Client(api_key="k", base_url="http://127.0.0.1:9", **{setting: highest}):
        pass
    for value in (too_low, highest * 1.0001, 10**12, math.inf, math.nan, True, "5"):
        with pytest.raises(ConfigError, match=setting):
            sm.Client(api_key="k", base_url="http://127.0.0.1:9", **{setting: value})


@pytest.mark.parametrize(("setting", "highest"), [
    ("wait", bounds.MAX_WAIT), ("wait_for_budget", bounds.MAX_WAIT), ("budget_check_every", bounds.MAX_CHECK_EVERY)])
def test_each_cancel_batches_duration_has_a_bound(sandbox: Sandbox, setting: str, highest: float) -> None:
    ids = sandbox.create_batches(1)
    for value in (highest * 1.0001, 10**12, math.inf, math.nan, -1):
        with pytest.raises(InputError, match=setting):
            sm.cancel_batches(ids, api_key=sandbox.api_key, base_url=sandbox.base_url, progress=False,
                              **{setting: value})
    assert sandbox.requests == []
    report = sm.cancel_batches(ids, api_key=sandbox.api_key, base_url=sandbox.base_url, progress=False,
                               **{setting: highest})
    assert list(report["outcome"]) == ["cancelled"]


def test_each_sandbox_duration_has_a_bound() -> None:
    makers: list[Callable[[float], object]] = [
        lambda v: Sandbox(budget_window=v), lambda v: Sandbox(tick=v), lambda v: Sandbox(stop_delay=v),
        lambda v: Faults(latency=v), lambda v: Faults(jitter=v), lambda v: Faults(hang_seconds=v)]
    for make in makers:
        for value in (-1, 1e12, math.inf, math.nan):
            with pytest.raises(ValueError):
                make(value)


def test_a_wait_longer_than_the_os_can_sleep_is_taken_in_pieces_and_ends_on_stop() -> None:
    """threading's waits overflow beyond TIMEOUT_MAX (49.7 days on Windows); the limiter's own
    wait never asks for more than MAX_ONE_SLEEP at once, and a stop still ends it."""
    stop = threading.Event()
    limiter = Limiter(20.0, None)
    started = threading.Event()
    errors: list[BaseException] = []

    def waiter() -> None:
        started.set()
        try:
            limiter.wait(10.0**12, stop)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    started.wait()
    stop.set()
    t.join()
    assert errors == []
    assert bounds.MAX_ONE_SLEEP < threading.TIMEOUT_MAX and bounds.MAX_ONE_SLEEP <= 4294967


def test_every_bound_is_one_windows_can_wait_for() -> None:
    windows_timeout_max = 4294967.0  # threading.TIMEOUT_MAX there
    for value in (bounds.MAX_WAIT, bounds.MAX_CHECK_EVERY, bounds.MAX_TIMEOUT, bounds.MAX_ROW_DEADLINE,
                  bounds.MAX_BACKOFF, bounds.MAX_ONE_SLEEP, 1 / bounds.MIN_RPS):
        assert value < windows_timeout_max


# -- UTF-16 without a byte-order mark ------------------------------------------------------------

@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_bom_is_named_and_nothing_is_sent(sandbox: Sandbox, tmp_path: Path, codec: str) -> None:
    ids = sandbox.create_batches(3)
    f = tmp_path / "ids.csv"
    f.write_bytes(("batch_id\r\n" + "\r\n".join(ids) + "\r\n").encode(codec))
    p = run_cli(sandbox, "cancel", "-f", str(f), "--yes", "--no-progress")
    assert p.returncode == cli.EXIT_USAGE
    assert f"--encoding {codec}" in p.stderr and "without a byte-order mark" in p.stderr
    assert sandbox.requests == []
    p = run_cli(sandbox, "cancel", "-f", str(f), "--encoding", codec, "--yes", "--no-progress")
    assert p.returncode == cli.EXIT_OK, p.stderr
    assert all(sandbox.batch(i)["cancelled"] for i in ids)


def test_other_nul_bytes_are_named_too() -> None:
    with pytest.raises(InputError, match="NUL bytes"):
        read_id_file(b"batch_id\nqrb_1\x00\x00\x00\nqrb_2\n", "ids.csv", "batch_id")


# -- what reaches the terminal -------------------------------------------------------------------

def test_a_huge_line_is_cut_in_the_summary_but_kept_whole_in_the_report(sandbox: Sandbox, tmp_path: Path) -> None:
    (bid,) = sandbox.create_batches(1)
    huge = "x" * 5_000_000
    f = tmp_path / "ids.csv"
    f.write_text(f"batch_id\n{huge}\n{bid}\n", encoding="utf-8")
    out = tmp_path / "r.csv"
    for output in ("table",):
        p = run_cli(sandbox, "cancel", "-f", str(f), "--yes", "--no-progress", "-o", output, "--out", str(out))
        assert p.returncode == cli.EXIT_FAILED
        assert len(p.stdout) < 5_000 and len(p.stderr) < 5_000
        assert "invalid_id" in p.stdout and "xxx…" in p.stdout
    assert huge in out.read_text(encoding="utf-8")
    s = run_cli(sandbox, "status", "-f", str(f), "--no-progress")
    assert len(s.stdout) < 5_000 and "xxx…" in s.stdout
    # A header line as huge: the message names a few characters of it.
    g = tmp_path / "wide.csv"
    g.write_text("a," + "y" * 3_000_000 + "\n1,2\n", encoding="utf-8")
    p = run_cli(sandbox, "cancel", "-f", str(g), "--yes", "--no-progress")
    assert p.returncode == cli.EXIT_USAGE and len(p.stderr) < 2_000


def test_a_servers_control_characters_never_reach_the_terminal() -> None:
    body = {"meta": {"request_id": "req_ctl"},
            "error": {"code": "NOT_FOUND", "message": "gone\x1b[2J\x1b]0;pwned\x07\u202eevil", "description": "d"}}
    with Scripted([Reply(404, body)]) as server:
        p = subprocess.run([sys.executable, "-m", "smtoolkit", "cancel", "qrb_ctl", "--yes", "--no-progress",
                            "--base-url", server.base_url], env=cli_env("k"), capture_output=True, text=True,
                           encoding="utf-8", timeout=TIMEOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    check_no_leak(None, p.stdout, p.stderr)
    assert p.returncode == cli.EXIT_FAILED
    assert "\x1b" not in p.stdout and "\x07" not in p.stdout and "\u202e" not in p.stdout
    assert "gone\\x1b[2J" in p.stdout
