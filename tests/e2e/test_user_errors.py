"""Every mistake a user can make gives ONE clear message, not a traceback from deep inside
pandas, requests or urllib3: an `InputError` or `ConfigError` (both ValueErrors) raised by
smtoolkit itself, whose one-line message names the offending thing and says what to do, and
nothing is sent to the API before it is raised.

Each case checks the exception's type, that its message mentions the offending value or
setting, that the innermost frame of its traceback is smtoolkit's own code, that no other
exception is chained into the printed traceback, and that the sandbox received no request.
"""

from __future__ import annotations

import math
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import smtoolkit as sm
from smtoolkit import Client
from smtoolkit.config import API_KEY_ENV, BASE_URL_ENV
from smtoolkit.sandbox import Sandbox
from tests.helpers import nothing_more_sent, requests_seen

PACKAGE = Path(sm.__file__).resolve().parent
pytestmark = pytest.mark.sandbox(seed=5, per_second=200)


def conn(sandbox: Sandbox) -> dict[str, Any]:
    return dict(api_key=sandbox.api_key, base_url=sandbox.base_url)


def expect(sandbox: Sandbox, call: Callable[[], Any], kind: type[Exception], *needles: str) -> str:
    """`call` raises `kind` with a clear message containing every needle; nothing was sent."""
    with pytest.raises(Exception) as info:
        call()
    exc = info.value
    shown = "".join(traceback.format_exception(exc))
    assert isinstance(exc, kind), f"expected {kind.__name__}, got {type(exc).__name__}:\n{shown}"
    assert isinstance(exc, ValueError) and isinstance(exc, sm.SmtoolkitError), type(exc).__mro__
    message = str(exc)
    assert message.strip() and "\n" not in message, f"not one line: {message!r}"
    for needle in needles:
        assert needle.lower() in message.lower(), f"{needle!r} not in the message {message!r}"
    innermost = Path(info.traceback[-1].path).resolve()
    assert PACKAGE in innermost.parents, f"raised from {innermost}, not by smtoolkit itself:\n{shown}"
    assert shown.count("Traceback (most recent call last)") == 1, f"chained exceptions:\n{shown}"
    assert sandbox.requests == [], f"{len(sandbox.requests)} request(s) sent before the error: {sandbox.requests[:3]}"
    return message


# -- the input ----------------------------------------------------------------------------------
def test_wrong_column_name(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(2)
    frame = pd.DataFrame({"id": ids, "note": ["a", "b"]})
    expect(sandbox, lambda: sm.cancel_batches(frame, progress=False, **conn(sandbox)), sm.InputError,
           "'batch_id'", "'id'", "'note'", "column=")
    expect(sandbox, lambda: sm.cancel_batches(frame, column="batchid", progress=False, **conn(sandbox)), sm.InputError,
           "'batchid'", "'id'")
    expect(sandbox, lambda: sm.get_batches(frame, column="ID", progress=False, **conn(sandbox)), sm.InputError, "'ID'")
    expect(sandbox, lambda: sm.cancel_batches(frame, column=None, progress=False, **conn(sandbox)), sm.InputError, "None")  # type: ignore[arg-type]
    twice = pd.DataFrame([[ids[0], ids[1]]], columns=["batch_id", "batch_id"])
    expect(sandbox, lambda: sm.cancel_batches(twice, progress=False, **conn(sandbox)), sm.InputError,
           "more than one column", "'batch_id'")


def test_column_given_as_a_list(sandbox: Sandbox) -> None:
    frame = pd.DataFrame({"batch_id": sandbox.create_batches(1)})
    expect(sandbox, lambda: sm.cancel_batches(frame, column=["batch_id"], progress=False, **conn(sandbox)),  # type: ignore[arg-type]
           sm.InputError, "column", "['batch_id']")


@pytest.mark.parametrize("batches, needles", [
    ({"batch_id": ["qrb_a"]}, ["dict", "DataFrame"]),
    (42, ["int", "list of IDs"]),
    (None, ["NoneType", "DataFrame"]),
    ("qrb_3feb5ff5c71e", ["str", "cancel_batch"]),
    (b"qrb_3feb5ff5c71e", ["bytes"]),
    (3.5, ["float"]),
], ids=["dict", "int", "None", "plain string", "bytes", "float"])
def test_wrong_input_type(sandbox: Sandbox, batches: Any, needles: list[str]) -> None:
    expect(sandbox, lambda: sm.cancel_batches(batches, progress=False, **conn(sandbox)), sm.InputError, *needles)
    expect(sandbox, lambda: sm.cancel_batches(batches, dry_run=True, progress=False, **conn(sandbox)), sm.InputError, *needles)
    expect(sandbox, lambda: sm.get_batches(batches, progress=False, **conn(sandbox)), sm.InputError, *needles)


@pytest.mark.parametrize("empty", [np.nan, None, pd.NA, float("nan")], ids=["np.nan", "None", "pd.NA", "float nan"])
def test_id_column_full_of_missing_values_is_reported_not_raised(sandbox: Sandbox, empty: Any) -> None:
    frame = pd.DataFrame({"batch_id": [empty] * 4, "owner": list("abcd")}, index=[10, 11, 12, 13])
    for call in (lambda: sm.cancel_batches(frame, progress=False, **conn(sandbox)),
                 lambda: sm.cancel_batches(frame, dry_run=True, progress=False, **conn(sandbox)),
                 lambda: sm.get_batches(frame, progress=False, **conn(sandbox)),
                 lambda: sm.cancel_batches(frame["batch_id"], progress=False, **conn(sandbox))):
        report = call()
        assert list(report.index) == list(frame.index)
        assert list(report["outcome"]) == ["invalid_id"] * 4
        assert set(report["error_code"]) == {"INVALID_BATCH_ID"}
        assert report["error_message"].str.contains("missing batch ID").all(), list(report["error_message"])
        assert report["batch_id"].isna().all()
    assert sandbox.requests == []


# -- the key and the base URL -------------------------------------------------------------------
def test_missing_key(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(1)
    for call in (lambda: sm.cancel_batches(ids, base_url=sandbox.base_url, progress=False),
                 lambda: sm.get_batches(ids, base_url=sandbox.base_url, progress=False),
                 lambda: sm.cancel_batch(ids[0], base_url=sandbox.base_url),
                 lambda: Client(base_url=sandbox.base_url),
                 lambda: Client(api_key="", base_url=sandbox.base_url),
                 lambda: Client(api_key="   ", base_url=sandbox.base_url)):
        expect(sandbox, call, sm.ConfigError, "no API key", "api_key=", API_KEY_ENV)


@pytest.mark.parametrize("key, needles", [
    ("sk_live key", ["api_key", "spaces"]),
    ("sk_live\nkey", ["api_key", "cannot go in an HTTP header"]),
    ("sk_lïve", ["api_key", "cannot go in an HTTP header"]),
    (12345, ["api_key", "string"]),
], ids=["space", "newline", "non-ascii", "int"])
def test_unusable_key(sandbox: Sandbox, key: Any, needles: list[str]) -> None:
    expect(sandbox, lambda: Client(api_key=key, base_url=sandbox.base_url), sm.ConfigError, *needles)
    expect(sandbox, lambda: sm.cancel_batches(["qrb_a"], api_key=key, base_url=sandbox.base_url, progress=False),
           sm.ConfigError, *needles)


BAD_URLS = [
    ("ftp://api.example.com/enterprise/v2", ["https://"]),
    ("https://", ["host"]),
    ("https:///enterprise/v2", ["host"]),
    ("http://api.example.com/enterprise/v2", ["http://", "api.example.com", "127.0.0.1"]),
    ("http://10.0.0.5:8080/v2", ["http://", "10.0.0.5"]),
    ("https://user:secret@api.example.com/enterprise/v2", ["user name or password"]),
    ("https://api.example.com/v2?key=1", ["'?'"]),
    ("not a url", ["https://"]),
    ("", ["base_url"]),
    ("https://api.example.com:99999/v2", ["base_url", "port"]),
    ("https://[::1/v2", ["base_url", "not a valid URL"]),
]


@pytest.mark.parametrize("url, needles", BAD_URLS, ids=[u or "empty" for u, _ in BAD_URLS])
def test_bad_base_url(sandbox: Sandbox, url: str, needles: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    expect(sandbox, lambda: Client(api_key=sandbox.api_key, base_url=url), sm.ConfigError, *needles)
    expect(sandbox, lambda: sm.cancel_batches(sandbox.create_batches(1), api_key=sandbox.api_key, base_url=url, progress=False),
           sm.ConfigError, *needles)
    if url:
        monkeypatch.setenv(BASE_URL_ENV, url)
        monkeypatch.setenv(API_KEY_ENV, sandbox.api_key)
        from smtoolkit.config import base_url_from_env

        expect(sandbox, lambda: Client(base_url=base_url_from_env()), sm.ConfigError, *needles)


@pytest.mark.parametrize("url", ["https://api.super metrics.com/enterprise/v2", "https://api\tx.com/v2", "https://a..b/v2"],
                         ids=["space in host", "tab in host", "empty label"])
def test_garbage_host_in_base_url(sandbox: Sandbox, url: str) -> None:
    expect(sandbox, lambda: sm.cancel_batches(["qrb_a"], api_key=sandbox.api_key, base_url=url, progress=False,
                                         max_retries=0, timeout=1), sm.ConfigError, "base_url")


# -- files --------------------------------------------------------------------------------------
def test_unwritable_journal(sandbox: Sandbox, tmp_path: Path) -> None:
    ids = sandbox.create_batches(2)
    missing = tmp_path / "no-such-dir" / "j.jsonl"
    expect(sandbox, lambda: sm.cancel_batches(ids, journal=missing, progress=False, **conn(sandbox)), sm.InputError,
           "journal", "does not exist", str(missing.parent))
    expect(sandbox, lambda: sm.cancel_batches(ids, journal=tmp_path, progress=False, **conn(sandbox)), sm.InputError,
           "journal", "is a directory", str(tmp_path))
    expect(sandbox, lambda: sm.cancel_batches(ids, journal=12, progress=False, **conn(sandbox)), sm.InputError,  # type: ignore[arg-type]
           "journal must be a file path")
    expect(sandbox, lambda: sm.cancel_batches(ids, journal="", progress=False, **conn(sandbox)), sm.InputError,
           "journal must be a file path")
    if os.path.isdir("/proc/self"):
        expect(sandbox, lambda: sm.cancel_batches(ids, journal="/proc/self/smtoolkit.jsonl", progress=False, **conn(sandbox)),
               sm.InputError, "cannot write journal", "/proc/self/smtoolkit.jsonl")
    other = tmp_path / "other.jsonl"
    other.write_text('{"format": "smtoolkit-journal", "version": 1, "base_url": "https://elsewhere/v2"}\n')
    expect(sandbox, lambda: sm.cancel_batches(ids, journal=other, progress=False, **conn(sandbox)), sm.InputError,
           "belongs to", "https://elsewhere/v2", "new journal")
    assert not any(t["cancelled"] for t in sandbox.batches().values())


def test_unwritable_csv_path(sandbox: Sandbox, tmp_path: Path) -> None:
    report = sm.cancel_batches(["bad id"], progress=False, **conn(sandbox))  # invalid: nothing sent
    missing = tmp_path / "no-such-dir" / "r.csv"
    expect(sandbox, lambda: sm.export_csv(report, missing), sm.InputError, "does not exist", str(missing.parent))
    expect(sandbox, lambda: sm.export_csv(report, tmp_path), sm.InputError, "is a directory", "report.csv")
    expect(sandbox, lambda: sm.export_csv(report, ""), sm.InputError, "file path")
    expect(sandbox, lambda: sm.export_csv(report, None), sm.InputError, "file path")  # type: ignore[arg-type]
    if os.path.isdir("/proc/self"):
        expect(sandbox, lambda: sm.export_csv(report, "/proc/self/r.csv"), sm.InputError, "cannot write", "/proc/self/r.csv")
    expect(sandbox, lambda: sm.export_csv(report.to_dict(), tmp_path / "r.csv"), sm.InputError, "DataFrame")  # type: ignore[arg-type]
    assert not (tmp_path / "r.csv").exists() and list(tmp_path.iterdir()) == []  # no temp file left behind


# -- settings -----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, 65, -1, 2.5, "4", True, None], ids=repr)
def test_bad_workers(sandbox: Sandbox, value: Any) -> None:
    ids = sandbox.create_batches(1)
    expect(sandbox, lambda: sm.cancel_batches(ids, workers=value, progress=False, **conn(sandbox)), sm.InputError,
           "workers", "1 to 64", repr(value))
    expect(sandbox, lambda: sm.get_batches(ids, workers=value, progress=False, **conn(sandbox)), sm.InputError, "workers")


@pytest.mark.parametrize("value", [-1, "5", True, math.nan, [1]], ids=repr)
def test_bad_wait(sandbox: Sandbox, value: Any) -> None:
    ids = sandbox.create_batches(1)
    expect(sandbox, lambda: sm.cancel_batches(ids, wait=value, progress=False, **conn(sandbox)), sm.InputError,
           "wait", repr(value))
    expect(sandbox, lambda: sm.cancel_batch(ids[0], wait=value, **conn(sandbox)), sm.InputError, "wait")


SETTINGS: list[tuple[str, Any]] = [
    ("max_rps", 0), ("max_rps", -5), ("max_rps", "fast"), ("max_rps", math.nan), ("max_rps", math.inf),
    ("timeout", 0), ("timeout", -1), ("timeout", "30"), ("timeout", math.nan), ("timeout", None),
    ("reserve", -1), ("reserve", 2.5), ("reserve", "10"),
    ("max_retries", -1), ("row_deadline", 0),
]


@pytest.mark.parametrize("name, value", SETTINGS, ids=[f"{n}={v!r}" for n, v in SETTINGS])
def test_bad_client_setting(sandbox: Sandbox, name: str, value: Any) -> None:
    ids = sandbox.create_batches(1)
    expect(sandbox, lambda: Client(**conn(sandbox), **{name: value}), sm.ConfigError, name)
    expect(sandbox, lambda: sm.cancel_batches(ids, progress=False, **conn(sandbox), **{name: value}), sm.ConfigError, name)


BUGGY_SETTINGS: list[tuple[str, Any]] = [
    ("max_retries", "x"), ("max_retries", None), ("backoff_base", "x"), ("backoff_cap", None),
]


@pytest.mark.parametrize("name, value", BUGGY_SETTINGS, ids=[f"{n}={v!r}" for n, v in BUGGY_SETTINGS])
def test_bad_retry_setting_names_the_setting(sandbox: Sandbox, name: str, value: Any) -> None:
    expect(sandbox, lambda: Client(**conn(sandbox), **{name: value}), sm.ConfigError, name)


def test_infinite_timeout(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(3)
    expect(sandbox, lambda: sm.cancel_batches(ids, timeout=math.inf, progress=False, **conn(sandbox)), sm.ConfigError,
           "timeout")


def test_client_and_settings_together_or_a_wrong_client(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(1)
    with Client(**conn(sandbox)) as c:
        expect(sandbox, lambda: sm.cancel_batches(ids, client=c, max_rps=5, progress=False), sm.ConfigError,
               "either", "max_rps")
    expect(sandbox, lambda: sm.cancel_batches(ids, client="my-client", progress=False), sm.ConfigError,  # type: ignore[arg-type]
           "smtoolkit.Client", "str")
    expect(sandbox, lambda: sm.get_batches(ids, client=object(), progress=False), sm.ConfigError, "smtoolkit.Client")  # type: ignore[arg-type]


def test_a_mistyped_keyword_names_itself(sandbox: Sandbox) -> None:
    """A misspelt argument (colum= for column=) is named, with a did-you-mean, before anything is
    sent, whether or not a client was passed."""
    ids = sandbox.create_batches(1)
    with pytest.raises(sm.ConfigError, match="unknown argument 'colum'; did you mean 'column'"):
        sm.cancel_batches(ids, colum="id", progress=False, **conn(sandbox))
    with Client(**conn(sandbox)) as c, pytest.raises(sm.ConfigError, match="'colum'; did you mean 'column'"):
        sm.cancel_batches(ids, client=c, colum="id", progress=False)
    with pytest.raises(sm.ConfigError, match="did you mean 'max_rps'"):
        sm.get_batches(ids, max_rsp=3, progress=False, **conn(sandbox))
    assert sandbox.requests == []


# -- summarize ----------------------------------------------------------------------------------
@pytest.mark.parametrize("thing", [
    None, ["cancelled"], {"outcome": ["cancelled"]}, pd.Series(["cancelled"], name="outcome"),
    pd.DataFrame({"batch_id": ["qrb_a"]}), "report.csv",
], ids=["None", "list", "dict", "Series", "frame without outcome", "a path"])
def test_summarize_of_something_that_is_not_a_report(sandbox: Sandbox, thing: Any) -> None:
    expect(sandbox, lambda: sm.summarize(thing), sm.InputError, "summarize()", "cancel_batches", "'outcome'")


# -- a mistake that surfaces mid-run must stop the run ------------------------------------------
class _Exploding(Client):
    """A client whose cancel raises for one ID, as a mistake found only when a request is made
    (timeout=inf, a URL requests refuses...) does today."""

    bomb = ""
    defused = False  # set once measured: stray workers then fail at once instead of sending

    def cancel(self, batch_id: str, **kwargs: Any) -> sm.Result:
        if batch_id == self.bomb or self.defused:
            raise RuntimeError("boom")
        return super().cancel(batch_id, **kwargs)


def test_an_exception_in_one_row_stops_every_worker_and_the_report_is_returned(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(80)
    c = _Exploding(**conn(sandbox), max_rps=40)
    with c:
        c.bomb = ids[2]
        with pytest.warns(UserWarning, match="halted on an error: RuntimeError: boom"):
            report = sm.cancel_batches(ids, client=c, workers=4, progress=False)
        nothing_more_sent(sandbox, requests_seen(sandbox))
        c.defused = True
    assert report.attrs["stopped"] == "error" and "boom" in report.attrs["error"]
    assert list(report["batch_id"]) == ids
    row = report.set_index("batch_id").loc[ids[2]]
    assert row["outcome"] == "network_error" and row["error_code"] == "INTERNAL_ERROR"
    truth = sandbox.batches()
    for r in report.itertuples():
        assert (r.outcome == "cancelled") == truth[r.batch_id]["cancelled"]
        if r.outcome == "skipped":
            assert r.error_code == "RUN_ERROR"
    assert (report["outcome"] == "skipped").sum() >= 70
    assert report.attrs["requests_sent"] == len(sandbox.requests)
