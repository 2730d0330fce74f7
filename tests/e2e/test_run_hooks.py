"""`cancel_batches(on_result=..., stop=...)` against the sandbox: each result handed over as it
arrives (after the journal has it), a failing hook halts the run, and `stop` halts it as Ctrl-C
does. The console is built on these two."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from smtoolkit import Client, Result, cancel_batches
from smtoolkit.sandbox import Sandbox
from tests.helpers import deleted_ids


def test_on_result_sees_every_result_once_after_the_journal(sandbox: Sandbox, client: Client,
                                                            tmp_path: Path) -> None:
    ids = sandbox.create_batches(12)
    journal = tmp_path / "j.jsonl"
    seen: list[str] = []
    threads: set[str] = set()

    def hook(r: Result) -> None:
        assert r.batch_id is not None and r.batch_id in journal.read_text()  # the journal has it first
        seen.append(r.batch_id)
        threads.add(threading.current_thread().name)

    report = cancel_batches(ids + [ids[0], "bad id!"], client=client, journal=journal, progress=False, on_result=hook)
    assert sorted(seen) == sorted(ids)  # sent IDs only, each once
    assert len(threads) == 1  # the run's own thread, never a worker
    assert list(report.outcome) == ["cancelled"] * 12 + ["duplicate", "invalid_id"]


def test_a_hook_that_raises_halts_the_run(sandbox: Sandbox, client: Client) -> None:
    ids = sandbox.create_batches(30)
    calls = 0

    def hook(r: Result) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("the drawing failed")

    with pytest.warns(UserWarning, match="halted on an error: RuntimeError: the drawing failed"):
        report = cancel_batches(ids, client=client, workers=1, progress=False, on_result=hook)
    assert calls == 1
    assert report.attrs["stopped"] == "error"
    assert len(deleted_ids(sandbox)) <= 2  # the one that raised, and at most one already in flight
    assert (report.outcome == "skipped").sum() >= 28


def test_stop_halts_like_an_interrupt(sandbox: Sandbox, client: Client) -> None:
    ids = sandbox.create_batches(40)
    stop = threading.Event()
    seen: list[str] = []

    def hook(r: Result) -> None:
        seen.append(str(r.batch_id))
        if len(seen) == 3:
            stop.set()

    with pytest.warns(UserWarning, match="interrupted"):
        report = cancel_batches(ids, client=client, workers=1, progress=False, on_result=hook, stop=stop)
    sent = deleted_ids(sandbox)
    assert report.attrs["stopped"] == "interrupt"
    assert 3 <= len(sent) <= 4 and len(set(sent)) == len(sent)  # at most the one already taken
    by_id = report.set_index("batch_id")
    assert set(by_id.loc[sent, "outcome"]) == {"cancelled"}
    unsent = [i for i in ids if i not in sent]
    assert set(by_id.loc[unsent, "outcome"]) == {"skipped"}
    assert set(by_id.loc[unsent, "error_code"]) == {"INTERRUPTED"}


def test_stop_while_the_run_is_idle_waiting(sandbox: Sandbox) -> None:
    """A stop with no result arriving (every request held by a slow server) still halts."""
    ids = sandbox.create_batches(10)
    sandbox.set_faults(latency=0.4)
    stop = threading.Event()
    started = threading.Event()

    def hook(r: Result) -> None:
        started.set()

    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url, timeout=5.0) as c:
        done: dict[str, object] = {}
        t = threading.Thread(target=lambda: done.update(r=cancel_batches(ids, client=c, workers=1, progress=False,
                                                                         on_result=hook, stop=stop)))
        with pytest.warns(UserWarning, match="interrupted"):
            t.start()
            assert started.wait(30)
            stop.set()
            t.join()
    report = done["r"]
    assert report.attrs["stopped"] == "interrupt"  # type: ignore[attr-defined]
    assert len(deleted_ids(sandbox)) < len(ids)
