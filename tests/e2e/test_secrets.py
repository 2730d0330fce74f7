"""The API key never shows: one distinctive key (a canary) and a distinctive wrong key run
through every path smtoolkit has, and every text those paths produce is searched for them.

Paths: success, every error (401, 404, 409, 429, 5xx, problem+json, resets, truncated and
HTML bodies, timeouts), the budget reserve, dry run, `get_batches`, `cancel_batch`, the
journal and `export_csv` files, the progress bar, the command line (stdout, stderr, `-o csv`,
`-o json`, `--out`, `--journal`), the panel (history, card, message, repr, widget state,
exported history), logging of every logger at DEBUG (urllib3 included), warnings, the
messages and tracebacks of configuration errors, reprs of Client, Result and report.attrs,
and the sandbox's request log and truth.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import subprocess
import sys
import traceback
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pandas as pd
import pytest

import smtoolkit as sm
from smtoolkit import Client
from smtoolkit.config import API_KEY_ENV
from smtoolkit.sandbox import Faults, Sandbox
from smtoolkit.ui.panel import CancelPanel

_KEY_HEX = secrets.token_hex(16)
_WRONG_HEX = secrets.token_hex(16)
KEY = "sk_LEAKCANARY_" + _KEY_HEX
WRONG_KEY = "sk_WRONGCANARY_" + _WRONG_HEX
pytestmark = pytest.mark.sandbox(api_key=KEY, seed=11, per_second=400, already_stopped="conflict")
# The random parts alone too: a key cut, wrapped or re-encoded still carries them.
CANARIES = {"key": KEY, "wrong key": WRONG_KEY, "key's random part": _KEY_HEX,
            "wrong key's random part": _WRONG_HEX, "key's prefix": "LEAKCANARY", "wrong key's prefix": "WRONGCANARY"}
FAST: dict[str, Any] = dict(timeout=1.0, backoff_base=0.01, backoff_cap=0.05, max_rps=400)
TIMEOUT = 60


class Surfaces:
    """Everything smtoolkit showed during a test, by where it showed it."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, value: Any) -> None:
        self.texts.append((where, value if isinstance(value, str) else repr(value)))

    def add_report(self, where: str, report: pd.DataFrame) -> None:
        self.add(f"{where}: repr", repr(report))
        self.add(f"{where}: to_csv", report.to_csv())
        self.add(f"{where}: to_json", report.to_json(orient="records", date_format="iso"))
        self.add(f"{where}: attrs", repr(report.attrs))
        self.add(f"{where}: summarize", sm.summarize(report).to_string())

    def add_exception(self, where: str, exc: BaseException) -> None:
        self.add(f"{where}: str", str(exc))
        self.add(f"{where}: repr", repr(exc))
        self.add(f"{where}: traceback", "".join(traceback.format_exception(exc)))

    def assert_clean(self) -> None:
        assert self.texts, "nothing was collected"
        leaks = [f"{name} in {where}: ...{text[max(0, text.find(c) - 60):text.find(c) + 60]!r}..."
                 for where, text in self.texts for name, c in CANARIES.items() if c in text]
        assert not leaks, f"{len(leaks)} leak(s):\n  " + "\n  ".join(leaks[:20])


def raised(call: Callable[[], Any], kind: type[BaseException] = sm.ConfigError) -> BaseException:
    with pytest.raises(kind) as info:
        call()
    return info.value


@pytest.fixture
def surfaces() -> Surfaces:
    return Surfaces()


def fixture_ids(sandbox: Sandbox, live: int = 3) -> dict[str, list[Any]]:
    return {"live": sandbox.create_batches(live), "pre": sandbox.create_batches(1, status="STOPPED"),
            "unknown": ["qrb_nosuchbatch01"], "invalid": ["not valid/", None]}


# -- the library --------------------------------------------------------------------------------
def test_every_library_path_keeps_the_key_out(sandbox: Sandbox, surfaces: Surfaces, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: smtoolkit, urllib3, everything
    for name in ("urllib3", "requests", "smtoolkit"):  # even if something raised their own levels
        caplog.set_level(logging.DEBUG, logger=name)
    journal = tmp_path / "cleanup.jsonl"

    def cancel(ids: list[Any], **kw: Any) -> pd.DataFrame:
        report = sm.cancel_batches(ids, client=client, journal=journal, progress=True, **kw)
        surfaces.add_report(f"report of {sorted(set(report['outcome']))}", report)
        return report

    with Client(api_key=KEY, base_url=sandbox.base_url, max_retries=1, **FAST) as client:
        surfaces.add("repr(client)", repr(client))
        surfaces.add("str(client)", str(client))
        surfaces.add("vars(client)", vars(client))
        ids = fixture_ids(sandbox)
        # success, 409 (already stopped), 404, invalid IDs, a duplicate
        ok = cancel(ids["live"][:2] + ids["pre"] + ids["unknown"] + ids["invalid"] + ids["live"][:1])
        assert {"cancelled", "already_stopped", "not_found", "invalid_id", "duplicate"} <= set(ok["outcome"])

        faults: list[tuple[str, dict[str, Any]]] = [
            ("rate_limited", dict(throttle_rate=1.0, throttle_retry_after=False)),
            ("server_error", dict(error_rate=1.0)),
            ("server_error", dict(error_rate=1.0, problem_rate=1.0)),
            ("server_error", dict(html_rate=1.0)),
            ("network_error", dict(reset_before_rate=1.0)),
            ("network_error", dict(reset_after_rate=1.0)),
            ("cancelled", dict(truncate_rate=1.0)),  # the retry's 409 settles it
        ]
        for expected, fault in faults:
            bid = sandbox.create_batches(1)
            sandbox.set_faults(Faults(**fault))  # only this fault
            report = cancel(bid)
            assert report["outcome"].iloc[0] == expected, (fault, report.iloc[0].to_dict())
        sandbox.set_faults(Faults())
        # problem+json on a 404
        sandbox.set_faults(problem_rate=1.0)
        assert cancel(["qrb_nosuchbatch02"])["error_code"].iloc[0] == "NOT_FOUND"
        sandbox.set_faults(problem_rate=0.0)

        # dry run, look-ups, one cancel
        surfaces.add_report("dry run", sm.cancel_batches(ids["live"][2:] + ids["unknown"], client=client,
                                                        dry_run=True, progress=True))
        surfaces.add_report("get_batches", sm.get_batches(ids["live"] + ids["unknown"] + ids["invalid"],
                                                          client=client, query_counts=True))
        one = sm.cancel_batch(ids["live"][2], client=client)
        surfaces.add("Result repr", repr(one))
        surfaces.add("Result str", str(one))
        surfaces.add("Result row", one.row())
        surfaces.add("Result batch", one.batch)
        surfaces.add("client.pacing()", client.pacing())
        surfaces.add("client.budget", client.budget)
        path = sm.export_csv(ok, tmp_path / "report.csv")
        surfaces.add("export_csv file", path.read_text(encoding="utf-8"))

    # a timeout: the answer comes after the client gave up
    sandbox.set_faults(hang_rate=1.0, hang_seconds=1.5)
    with Client(api_key=KEY, base_url=sandbox.base_url, max_retries=0, **{**FAST, "timeout": 0.3}) as slow:
        late = sm.cancel_batches(sandbox.create_batches(1), client=slow, progress=False)
        surfaces.add_report("timeout", late)
        assert late["outcome"].iloc[0] in ("network_error", "cancelled")
    sandbox.set_faults(hang_rate=0.0)

    # the wrong key: 401, the run stops, a warning
    with Client(api_key=WRONG_KEY, base_url=sandbox.base_url, **FAST) as wrong:
        surfaces.add("repr(wrong client)", repr(wrong))
        denied = sm.cancel_batches(sandbox.create_batches(5), client=wrong, workers=1, progress=True)
        assert denied["outcome"].iloc[0] == "unauthorized" and "skipped" in set(denied["outcome"])
        surfaces.add_report("unauthorized", denied)
        surfaces.add("Result 401", repr(sm.cancel_batch(ids["live"][0], client=wrong)))
        surfaces.add_report("get_batches 401", sm.get_batches(ids["live"], client=wrong, progress=False))

    # the budget: a warning that it cannot cover the run, then a stop at the reserve
    with Sandbox(api_key=KEY, seed=12, per_second=400, hourly_limit=12) as tight, \
            Client(api_key=KEY, base_url=tight.base_url, reserve=2, **FAST) as client2:
        reserve = sm.cancel_batches(tight.create_batches(15), client=client2, progress=True)
        assert reserve.attrs["stopped"] == "reserve"
        surfaces.add_report("budget reserve", reserve)
        surfaces.add("tight sandbox log", tight.requests)

    surfaces.add("journal file", journal.read_text(encoding="utf-8"))
    surfaces.add("sandbox request log", sandbox.requests)
    surfaces.add("sandbox truth", sandbox.batches())
    surfaces.add("repr(sandbox)", repr(sandbox))
    for route in ("/_sandbox/requests", "/_sandbox/batches", "/_sandbox/faults"):
        with urllib.request.urlopen(sandbox.url + route, timeout=10) as resp:
            surfaces.add(f"sandbox control {route}", resp.read().decode())

    # the logs, the warnings and the progress bars
    assert any(r.name.startswith("urllib3") for r in caplog.records), "urllib3 debug logging was not captured"
    surfaces.add("log text", caplog.text)
    for r in caplog.records:
        surfaces.add(f"log record {r.name}", {"msg": r.msg, "args": r.args, "message": r.getMessage()})
    messages = [str(w.message) for w in recwarn]
    assert any("unauthorized" in m for m in messages) and any("reserve" in m for m in messages), messages
    surfaces.add("warnings", messages)
    out = capsys.readouterr()
    assert "cancelling" in out.err or "batch" in out.err, "no progress bar was shown"
    surfaces.add("stdout", out.out)
    surfaces.add("stderr (progress bars)", out.err)
    surfaces.assert_clean()


def test_configuration_errors_never_echo_the_key(sandbox: Sandbox, surfaces: Surfaces,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Each mistake raises ConfigError/InputError, and neither message nor traceback holds the key."""
    bad_urls = ["ftp://api.example.com/v2", "http://api.example.com/v2", f"https://user:{KEY}@api.example.com/v2",
                f"https://{KEY}@api.example.com/v2", f"https://api.example.com/v2?api_key={KEY}",
                f"https://api.example.com/v2#{KEY}", "https://", "not a url", ""]
    for url in bad_urls:
        surfaces.add_exception(f"base_url {url[:12]!r}", raised(lambda: Client(api_key=KEY, base_url=url)))
        surfaces.add_exception(f"cancel_batches base_url {url[:12]!r}", raised(
            lambda: sm.cancel_batches(["qrb_a"], api_key=KEY, base_url=url, progress=False)))
    for key in (KEY + " extra", KEY + "\nX", "Bearer " + KEY, KEY + "é", WRONG_KEY + "\t" + KEY):
        surfaces.add_exception("a key with a space", raised(lambda: Client(api_key=key, base_url=sandbox.base_url)))
        monkeypatch.setenv(API_KEY_ENV, key)
        surfaces.add_exception("a bad key in the environment", raised(lambda: Client(base_url=sandbox.base_url)))
        monkeypatch.delenv(API_KEY_ENV)
    settings: list[dict[str, Any]] = [dict(timeout=-1), dict(max_rps=0), dict(reserve=-1), dict(max_retries=-1),
                                      dict(timeout="soon"), dict(max_rps="fast")]
    for setting in settings:
        surfaces.add_exception(f"setting {setting}", raised(lambda: Client(api_key=KEY, base_url=sandbox.base_url, **setting)))
    monkeypatch.setenv(API_KEY_ENV, KEY)
    surfaces.add_exception("env key, bad url", raised(lambda: Client(base_url="http://example.com/")))
    with Client(base_url=sandbox.base_url) as client:
        surfaces.add("repr(env client)", repr(client))
        surfaces.add_exception("client and settings", raised(
            lambda: sm.cancel_batches(["qrb_a"], client=client, api_key=KEY, progress=False)))
        surfaces.add_exception("a wrong column", raised(
            lambda: sm.cancel_batches(pd.DataFrame({KEY[:3]: ["qrb_a"]}), client=client, progress=False),
            sm.InputError))
    surfaces.add_exception("an unknown setting", raised(
        lambda: sm.cancel_batches(["qrb_a"], api_key=KEY, base_url=sandbox.base_url, colum="id", progress=False),
        sm.ConfigError))
    surfaces.add_exception("CancelPanel with a bad URL", raised(
        lambda: CancelPanel(api_key=KEY, base_url="http://example.com/")))
    assert sandbox.requests == []
    surfaces.assert_clean()


# -- the panel ----------------------------------------------------------------------------------
def widget_states(root: widgets.Widget, skip: tuple[widgets.Widget, ...] = ()) -> dict[str, Any]:
    """The synced state of a widget and all its descendants (what a notebook saves)."""
    states: dict[str, Any] = {}
    todo = [root]
    while todo:
        w = todo.pop()
        if w in skip:
            continue
        states[f"{type(w).__name__}#{w.model_id}"] = w.get_state()
        todo.extend(c for c in getattr(w, "children", ()) if isinstance(c, widgets.Widget))
    return states


def drive_panel(p: CancelPanel, bid: str, tmp_path: Path, surfaces: Surfaces, where: str) -> None:
    p.id_input.value = bid
    p.wait()
    p.cancel_button.click()
    p.confirm_button.click()
    p.wait()
    surfaces.add(f"{where}: card", p.card.value)
    p.id_input.value = "qrb_nosuchbatch03"
    p.wait()
    p.id_input.value = "not valid/"
    p.wait()
    surfaces.add(f"{where}: message", p.message.value)
    p.export_path.value = str(tmp_path / f"{where}.csv")
    p.export_button.click()
    surfaces.add(f"{where}: export message", p.message.value)
    surfaces.add(f"{where}: exported history", (tmp_path / f"{where}.csv").read_text(encoding="utf-8"))
    p.export_path.value = str(tmp_path / "missing" / "h.csv")
    p.export_button.click()
    surfaces.add(f"{where}: export error", p.message.value)
    surfaces.add(f"{where}: history", p.history.to_csv())
    surfaces.add(f"{where}: history view", p.history_view.value)
    surfaces.add(f"{where}: busy", p.busy.value)
    surfaces.add(f"{where}: repr", repr(p))
    surfaces.add(f"{where}: str", str(p))
    surfaces.add(f"{where}: mimebundle", p._repr_mimebundle_())
    surfaces.add(f"{where}: widget state", widget_states(p, skip=(p.key_input,) if p.key_input else ()))


def test_the_panel_keeps_the_key_out(sandbox: Sandbox, surfaces: Surfaces, tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    ids = sandbox.create_batches(4)
    with Client(api_key=KEY, base_url=sandbox.base_url, **FAST) as client:
        p = CancelPanel(client=client)
        drive_panel(p, ids[0], tmp_path, surfaces, "panel with a client")
        assert "cancelled" in p.card.value or "cancelled" in set(p.history["outcome"])
    built = CancelPanel(api_key=KEY, base_url=sandbox.base_url, **FAST)  # a panel built with the key
    drive_panel(built, ids[1], tmp_path, surfaces, "panel built with the key")
    assert built.key_input is None
    wrong = CancelPanel(api_key=WRONG_KEY, base_url=sandbox.base_url, **FAST)
    drive_panel(wrong, ids[2], tmp_path, surfaces, "panel with the wrong key")
    assert "unauthorized" in set(wrong.history["outcome"])
    sandbox.set_faults(error_rate=1.0, problem_rate=1.0)
    failing = CancelPanel(api_key=KEY, base_url=sandbox.base_url, max_retries=0, **FAST)
    drive_panel(failing, ids[3], tmp_path, surfaces, "panel with server errors")
    assert "server_error" in set(failing.history["outcome"])
    sandbox.set_faults(error_rate=0.0, problem_rate=0.0)
    # a panel that asks for the key (its password box is allowed to hold it: checked below)
    typed = CancelPanel(base_url=sandbox.base_url, **FAST)
    assert typed.key_input is not None
    typed.key_input.value = KEY
    drive_panel(typed, sandbox.create_batches(1)[0], tmp_path, surfaces, "panel with a typed key")
    assert "cancelled" in set(typed.history["outcome"])
    surfaces.add("log text", caplog.text)
    for panel in (p, built, wrong, failing, typed):
        panel.close()
    surfaces.assert_clean()


def test_a_typed_key_does_not_stay_in_the_widget_state(sandbox: Sandbox) -> None:
    (bid,) = sandbox.create_batches(1)
    p = CancelPanel(base_url=sandbox.base_url, **FAST)
    assert p.key_input is not None
    p.key_input.value = KEY
    p.id_input.value = bid
    p.wait()
    assert "would_cancel" in set(p.history["outcome"])  # the key was used
    state = json.dumps(widget_states(p), default=str)
    p.close()
    assert KEY not in state


# -- the command line ---------------------------------------------------------------------------
def cli(sandbox: Sandbox, *args: str, key: str | None = KEY, base_url: bool = True) -> subprocess.Popen[str]:
    """Start the CLI in a child process, the key only in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERMETRICS_")}
    env.update(PYTHONIOENCODING="utf-8", COLUMNS="120")
    if key is not None:
        env[API_KEY_ENV] = key
    cmd = [sys.executable, "-m", "smtoolkit", *args] + (["--base-url", sandbox.base_url] if base_url else [])
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def finish(where: str, p: subprocess.Popen[str], surfaces: Surfaces) -> int:
    try:
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
    assert "Traceback" not in err, (where, err)
    surfaces.add(f"{where}: stdout", out)
    surfaces.add(f"{where}: stderr", err)
    return p.returncode


def test_the_command_line_keeps_the_key_out(sandbox: Sandbox, surfaces: Surfaces, tmp_path: Path) -> None:
    ids = fixture_ids(sandbox, live=16)
    live, pre, unknown = ids["live"], ids["pre"][0], ids["unknown"][0]
    out_csv, journal = tmp_path / "out.csv", tmp_path / "j.jsonl"
    # Independent runs (their own IDs, no faults) go in parallel; the progress bar is on.
    runs: dict[str, tuple[list[str], dict[str, Any], set[int]]] = {
        "cancel, table": (["cancel", "--yes", live[0], live[1], "not/valid"], {}, {1}),
        "cancel, -o csv": (["cancel", "--yes", "-o", "csv", live[2], pre, unknown], {}, {1}),  # 1: not_found
        "cancel, -o json --out --journal": (["cancel", "--yes", "-o", "json", "--out", str(out_csv),
                                             "--journal", str(journal), live[3], live[4]], {}, {0}),
        "dry run": (["cancel", "--dry-run", "-o", "json", live[5], unknown], {}, {1}),
        "status": (["status", "--with-progress", "-o", "csv", live[6], pre, unknown], {}, {0}),
        "wrong key": (["cancel", "--yes", "--workers", "1", live[7], live[8]], dict(key=WRONG_KEY), {3}),
        "wrong key, status": (["status", "-o", "json", live[7]], dict(key=WRONG_KEY), {3}),
        "a key with a space": (["cancel", "--yes", live[9]], dict(key=KEY + " " + WRONG_KEY), {3}),
        "plain http to a remote host": (["cancel", "--yes", "--base-url", "http://example.com/v2", "qrb_a"],
                                        dict(base_url=False), {3}),
        "the key in the URL": (["cancel", "--yes", "--base-url", f"https://x:{KEY}@example.com/v2", "qrb_a"],
                               dict(base_url=False), {3}),
        "no terminal to confirm on": (["cancel", live[10]], {}, {2}),
    }
    started = {where: cli(sandbox, *args, **kw) for where, (args, kw, _) in runs.items()}
    for where, p in started.items():
        code = finish(where, p, surfaces)
        assert code in runs[where][2], (where, code)
    # Failures seen from the command line: 5xx (problem+json and envelope), HTML, resets, 429.
    sandbox.set_faults(Faults(error_rate=0.4, problem_rate=0.5, html_rate=0.2, reset_before_rate=0.2,
                         throttle_rate=0.2, throttle_retry_after=False))
    code = finish("faults", cli(sandbox, "cancel", "--yes", "-o", "csv", "--timeout", "1", "--workers", "5",
                                *live[11:16]), surfaces)
    sandbox.set_faults(Faults())
    assert code in (0, 1)
    assert out_csv.exists() and journal.exists()
    assert len(pd.read_csv(io.StringIO(out_csv.read_text(encoding="utf-8")))) == 2
    surfaces.add("--out file", out_csv.read_text(encoding="utf-8"))
    surfaces.add("--journal file", journal.read_text(encoding="utf-8"))
    surfaces.add("sandbox request log", sandbox.requests)
    assert not sandbox.batch(live[10])["cancelled"]  # type: ignore[index]
    surfaces.assert_clean()
