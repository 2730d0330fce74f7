"""Long cleanups that wait for the hourly budget (`wait_for_budget=`), against a sandbox that
plays an hour in two seconds, with fixed and rolling windows."""

from __future__ import annotations

import _thread
import threading
import time
import warnings
from typing import Any

import pytest

import smtoolkit as sm
from smtoolkit import Client
from smtoolkit.sandbox import Sandbox
from tests.helpers import GUARD, nothing_more_sent, run_cli, wait_for

LIMIT, KEPT, WINDOW, EVERY = 20, 5, 2.0, 0.5  # 15 spendable requests per two-second "hour"
MODES = ["fixed", "rolling"]


def _sandbox(mode: str, window: float = WINDOW) -> Sandbox:
    return Sandbox(hourly_limit=LIMIT, budget_window=window, budget_mode=mode, per_second=50, seed=3)


def _cancel(sb: Sandbox, ids: list[str], **kwargs: Any) -> tuple[Any, list[str]]:
    with Client(api_key=sb.api_key, base_url=sb.base_url, reserve=KEPT) as c:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = sm.cancel_batches(ids, client=c, progress=False, **kwargs)
    return report, [str(w.message) for w in caught]


def _looks(sb: Sandbox) -> list[dict[str, Any]]:
    return [r for r in sb.requests if r["method"] == "GET"]


@pytest.mark.parametrize("mode", MODES)
def test_a_run_needing_three_windows_waits_and_finishes(mode: str) -> None:
    with _sandbox(mode) as sb:
        ids = sb.create_batches(3 * (LIMIT - KEPT))
        report, messages = _cancel(sb, ids, wait_for_budget=60, budget_check_every=EVERY)
        log = sb.requests
        truth = sb.batches()
    assert set(report["outcome"]) == {"cancelled"} and all(truth[i]["cancelled"] for i in ids)
    a = report.attrs
    assert a["stopped"] is None and a["budget_waits"] >= 2 and a["budget_waited_s"] > 0
    # The reserve is never spent by a cancel: each DELETE left at least KEPT in its window.
    deletes = [r for r in log if r["method"] == "DELETE"]
    assert len(deletes) == len(ids) and min(r["remaining"] for r in deletes) >= KEPT
    # Nothing else was sent: every other request is a counted look, and looks are spaced by
    # at least the look interval.
    looks = [r for r in log if r["method"] == "GET"]
    assert len(looks) == a["budget_looks"] >= 2
    assert len(log) == a["requests_sent"] == len(ids) + len(looks)
    times = sorted(r["admitted_at"] for r in looks)
    assert all(b - a_ >= EVERY - 0.05 for a_, b in zip(times, times[1:], strict=False)), times
    # While waiting, no cancel was sent: between a wait's start and the look that ended it
    # there are only looks (checked as: no DELETE was admitted while the estimate was at the reserve).
    for r in deletes:
        assert r["status"] == 200
    # The plan line said what the run needs and gave an estimate.
    plan = [m for m in messages if "needs at least" in m]
    assert len(plan) == 1 and "estimate" in plan[0] and "waiting up to 1 min" in plan[0]


@pytest.mark.parametrize("mode", MODES)
def test_a_wait_limit_shorter_than_the_refill_skips_the_rest(mode: str) -> None:
    with _sandbox(mode, window=120.0) as sb:
        ids = sb.create_batches(40)
        t0 = time.monotonic()
        report, messages = _cancel(sb, ids, wait_for_budget=1.2, budget_check_every=EVERY)
        took = time.monotonic() - t0
        log = sb.requests
    counts = report["outcome"].value_counts().to_dict()
    assert counts == {"cancelled": LIMIT - KEPT, "skipped": 40 - (LIMIT - KEPT)}
    assert set(report.loc[report.outcome == "skipped", "error_code"]) == {"BUDGET_RESERVE"}
    a = report.attrs
    # It gave up at its limit, long before the budget came back (the window is 120 s).
    assert a["stopped"] == "reserve" and a["budget_waits"] == 1 and 1.1 <= a["budget_waited_s"] < 120
    # At most one look per interval within the limit (1.2 s / 0.5 s: two), all counted.
    looks = [r for r in log if r["method"] == "GET"]
    assert len(looks) == a["budget_looks"] <= 2 and len(log) == a["requests_sent"]
    print(f"\nwaited {a['budget_waited_s']:.2f} s of a 1.2 s limit; the run took {took:.2f} s")
    assert any("halted at the budget reserve" in m for m in messages)


def test_an_interrupt_ends_the_wait_at_once() -> None:
    with _sandbox("fixed", window=300.0) as sb:
        ids = sb.create_batches(30)
        with Client(api_key=sb.api_key, base_url=sb.base_url, reserve=KEPT) as c:
            fired: list[float] = []

            def interrupt() -> None:  # once the run waits: its first look at the budget came in
                wait_for(lambda: _looks(sb), "the run's first look at the budget")
                fired.append(time.monotonic())
                _thread.interrupt_main()

            interrupter = threading.Thread(target=interrupt, daemon=True)
            interrupter.start()
            with pytest.warns(UserWarning, match="interrupted"):
                report = sm.cancel_batches(ids, client=c, progress=False, wait_for_budget=3600,
                                           budget_check_every=EVERY)
            returned = time.monotonic()
            interrupter.join(GUARD)
        log = sb.requests
    assert fired  # the interrupt came while the run waited (the 15 cancels were long done)
    print(f"\nthe run returned {returned - fired[0]:.2f} s after the interrupt (it could wait an hour)")
    assert report.attrs["stopped"] == "interrupt" and report.attrs["budget_waits"] == 1
    counts = report["outcome"].value_counts().to_dict()
    assert counts == {"cancelled": LIMIT - KEPT, "skipped": 30 - (LIMIT - KEPT)}
    assert set(report.loc[report.outcome == "skipped", "error_code"]) == {"INTERRUPTED"}
    assert len(log) == report.attrs["requests_sent"]
    nothing_more_sent(sb, len(log))


def test_the_bar_says_it_is_waiting_and_when_it_looks_next(capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # tqdm 4.66 cuts a bar at the width it finds (80 when not a terminal)
    with _sandbox("fixed") as sb:
        ids = sb.create_batches(20)
        with Client(api_key=sb.api_key, base_url=sb.base_url, reserve=KEPT) as c:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                report = sm.cancel_batches(ids, client=c, progress=True, wait_for_budget=60, budget_check_every=EVERY)
    err = capsys.readouterr().err.replace("\r", "\n")
    assert set(report["outcome"]) == {"cancelled"}
    waiting = [line for line in err.splitlines() if "waiting for the hourly budget" in line]
    assert waiting and "since" in waiting[0] and " UTC" in waiting[0] and "next look in" in waiting[0]
    last = err.strip().splitlines()[-1]
    assert "waiting" not in last and "cancelled=20" in last  # the finished bar says what it did


def test_without_wait_for_budget_the_reserve_stops_the_run_and_the_plan_says_so() -> None:
    with _sandbox("fixed", window=120.0) as sb:
        ids = sb.create_batches(30)
        report, messages = _cancel(sb, ids)
    assert report.attrs["stopped"] == "reserve" and report.attrs["budget_looks"] == 0
    plan = [m for m in messages if "needs at least" in m]
    assert len(plan) == 1 and "skipped (BUDGET_RESERVE) unless the run waits" in plan[0]


@pytest.mark.parametrize("value", [-1, float("nan"), "1h", True])
def test_a_bad_wait_for_budget_raises_before_anything_is_sent(value: Any) -> None:
    with _sandbox("fixed") as sb:
        with pytest.raises(sm.InputError, match="wait_for_budget"):
            _cancel(sb, sb.create_batches(2), wait_for_budget=value)
        with pytest.raises(sm.InputError, match="budget_check_every"):
            _cancel(sb, sb.create_batches(2), wait_for_budget=10, budget_check_every=0)
        assert sb.requests == []


# -- the command line --------------------------------------------------------------------------


def test_cli_waits_for_the_budget_and_prints_the_plan() -> None:
    with _sandbox("rolling") as sb:
        ids = sb.create_batches(2 * (LIMIT - KEPT))
        p = run_cli(sb, "cancel", *ids, "--yes", "--reserve", str(KEPT), "--wait-for-budget", "1m",
                    "--budget-check-every", str(EVERY), "--no-progress", "-o", "json")
        truth = sb.batches()
        looks = _looks(sb)
    assert p.returncode == 0, p.stderr
    assert all(truth[i]["cancelled"] for i in ids) and looks
    plan = [line for line in p.stderr.splitlines() if "needs at least" in line]
    assert len(plan) == 1 and "estimate" in plan[0] and "waiting up to 1 min" in plan[0]


@pytest.mark.parametrize("bad", ["soon", "3d", "-5", ""])
def test_cli_refuses_a_bad_duration(bad: str) -> None:
    with _sandbox("fixed") as sb:
        p = run_cli(sb, "cancel", "123", "--yes", "--wait-for-budget", bad)
        assert p.returncode == 2 and "duration" in p.stderr and sb.requests == []


def test_cli_sandbox_plays_a_short_rolling_window() -> None:
    import subprocess
    import sys

    import requests

    proc = subprocess.Popen([sys.executable, "-m", "smtoolkit", "sandbox", "--budget-window", "10",
                             "--budget-mode", "rolling", "--hourly-limit", "7"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(5)]
        assert "Budget: 7 requests per 10 s window (rolling)" in "".join(lines), lines
        control = next(w for line in lines if line.startswith("Control API") for w in line.split()
                       if w.startswith("http://"))
        limits = requests.post(control + "/limits", json={}, timeout=5).json()
        assert limits["budget_window"] == 10.0 and limits["budget_mode"] == "rolling" and limits["hourly_limit"] == 7
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_long_demo_waits_twice_and_finishes() -> None:
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "smtoolkit", "demo", "--long", "--no-progress"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Every batch cancelled, and no cancel touched the reserve." in p.stdout
    waits = int(p.stdout.split("Waited for the budget ")[1].split(" time")[0])
    assert waits >= 2 and "plan: this run needs at least" in p.stderr


def test_a_key_revoked_while_waiting_ends_the_wait_and_the_run() -> None:
    with _sandbox("fixed", window=300.0) as sb:
        ids = sb.create_batches(25)
        threading.Timer(1.0, sb.revoke_key, args=(sb.api_key,)).start()
        t0 = time.monotonic()
        report, messages = _cancel(sb, ids, wait_for_budget=3600, budget_check_every=EVERY)
        took = time.monotonic() - t0
        log = sb.requests
    assert report.attrs["stopped"] == "auth"
    assert took < GUARD, "it waited on as if the key were still valid"  # a hang guard: it may wait an hour
    counts = report["outcome"].value_counts().to_dict()
    assert counts["cancelled"] == LIMIT - KEPT and counts.get("unauthorized", 0) >= 1
    assert set(report.loc[report.outcome == "skipped", "error_code"]) <= {"SKIPPED_AUTH_FAILED"}
    looks = [r for r in log if r["method"] == "GET"]
    assert looks and looks[-1]["status"] == 401 and len(log) == report.attrs["requests_sent"]
    assert [r["status"] for r in looks].count(401) == 1  # the first refused look ended the wait
