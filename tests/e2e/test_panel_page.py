"""The page `smtoolkit panel` serves, built as a visitor's kernel builds it (`ui.page.page`)
from the settings the server leaves in the environment, and driven in code against the sandbox.
The browser tests (tests/browser/test_share_browser.py) drive the same page through Voilà."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from smtoolkit.config import API_KEY_ENV, BASE_URL_ENV, PANEL_TOKEN_ENV, export_panel_settings
from smtoolkit.errors import ConfigError
from smtoolkit.sandbox import Sandbox
from smtoolkit.ui.page import page
from smtoolkit.ui.panel import CancelPanel
from tests.helpers import SandboxAnswers, audit_lines

KEY = "sbx_PAGE-SECRET-KEY_4c9e1a7f2b"
pytestmark = pytest.mark.sandbox(api_key=KEY, seed=5)  # the `sandbox` fixture, with this key


def text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def serve_settings(monkeypatch: pytest.MonkeyPatch, sb: Sandbox, audit: Path, *, ask_key: bool,
                   ask_reason: bool = False) -> None:
    """What `smtoolkit panel` does to the environment its kernels inherit."""
    monkeypatch.setenv(API_KEY_ENV, KEY)
    monkeypatch.setenv(PANEL_TOKEN_ENV, "a-token-the-kernels-never-need")
    for name in ("SMTK_PANEL_AUDIT", "SMTK_PANEL_ASK_KEY", "SMTK_PANEL_ASK_REASON", BASE_URL_ENV):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    export_panel_settings(base_url=sb.base_url, audit=str(audit), ask_key=ask_key, ask_reason=ask_reason)


def look_up_and_cancel(panel: CancelPanel, bid: str) -> None:
    panel.id_input.value = bid
    panel.wait()
    panel.cancel_button.click()
    panel.confirm_button.click()
    panel.wait()


def test_the_page_uses_the_servers_key_says_so_and_records_each_action(
        sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    audit = tmp_path / "audit.jsonl"
    serve_settings(monkeypatch, sandbox, audit, ask_key=False)
    (bid,) = sandbox.create_batches(1)
    answers = SandboxAnswers(sandbox)
    pg = page(visitor="192.0.2.44")
    notice = text(pg.children[0].value)
    assert "API key of the server" in notice and "never shown" in notice and sandbox.base_url in notice
    assert "recorded on the server" in notice and "192.0.2.44" in notice
    assert pg.panel.key_input is None and pg.panel.export_button is None and pg.panel.export_path is None

    look_up_and_cancel(pg.panel, bid)
    assert sandbox.batch(bid)["cancelled"]  # type: ignore[index]
    got = audit_lines(audit)
    assert [(g["action"], g["outcome"], g["batch_id"], g["visitor"]) for g in got] == [
        ("lookup", "would_cancel", bid, "192.0.2.44"), ("cancel", "cancelled", bid, "192.0.2.44")]
    by_id = answers.by_request_id()  # the sandbox's own answers
    assert (by_id[got[0]["request_id"]]["method"], by_id[got[0]["request_id"]]["path"]) == (
        "GET", f"/enterprise/v2/query/batch/{bid}")
    assert (by_id[got[1]["request_id"]]["method"], by_id[got[1]["request_id"]]["path"]) == (
        "DELETE", f"/enterprise/v2/query/batch/{bid}")
    assert KEY not in audit.read_text(encoding="utf-8")
    assert pg.panel.reason_input is None and all("reason" not in g for g in got)  # no --ask-reason
    pg.close()


def test_with_ask_reason_a_cancel_is_refused_until_a_reason_is_given_and_the_audit_carries_it(
        sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    audit = tmp_path / "audit.jsonl"
    serve_settings(monkeypatch, sandbox, audit, ask_key=False, ask_reason=True)
    (bid,) = sandbox.create_batches(1)
    pg = page(visitor="192.0.2.45")
    panel = pg.panel
    assert panel.reason_input is not None and panel.reason_input in panel.children

    look_up_and_cancel(panel, bid)  # no reason typed: the cancel is refused, the look-up is not
    assert "Nothing sent" in text(panel.message.value) and "Reason box" in text(panel.message.value)
    assert [r["method"] for r in sandbox.requests] == ["GET", "GET"]  # the look-up and its query counts
    assert panel.armed == bid  # still armed: give a reason, then confirm

    panel.reason_input.value = "x" * 2001
    panel.confirm_button.click()
    assert "2,001 characters" in text(panel.message.value) and not sandbox.batch(bid)["cancelled"]  # type: ignore[index]

    hostile = "=cmd|' /C calc'!A0\nINC-5 \x1b[2J \ud83d"
    panel.reason_input.value = hostile
    panel.confirm_button.click()
    panel.wait()
    assert sandbox.batch(bid)["cancelled"]  # type: ignore[index]
    got = audit_lines(audit)
    assert [(g["action"], g["reason"]) for g in got] == [
        ("lookup", None), ("cancel", hostile.strip().replace("\ud83d", "\ufffd"))]
    assert got[1]["visitor"] == "192.0.2.45" and got[1]["outcome"] == "cancelled"
    pg.close()


def test_panel_ask_reason_option_reaches_the_serve_plan(sandbox: Sandbox, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from smtoolkit.cli import build_parser
    from smtoolkit.ui.server import serve_plan

    monkeypatch.setenv(API_KEY_ENV, KEY)
    args = build_parser().parse_args(["panel", "--ask-reason", "--audit", str(tmp_path / "a.jsonl")])
    assert args.ask_reason is True
    plan = serve_plan(ask_reason=args.ask_reason, audit=args.audit, base_url=sandbox.base_url)
    assert plan.ask_reason is True and serve_plan(base_url=sandbox.base_url, audit=args.audit).ask_reason is False


def test_with_ask_key_nothing_is_sent_before_the_visitor_types_a_key(
        sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    audit = tmp_path / "audit.jsonl"
    serve_settings(monkeypatch, sandbox, audit, ask_key=True)
    import os

    assert API_KEY_ENV not in os.environ and PANEL_TOKEN_ENV not in os.environ  # what kernels inherit
    (bid,) = sandbox.create_batches(1)
    pg = page(visitor=None)
    notice = text(pg.children[0].value)
    assert "Type your own API key" in notice and "written nowhere" in notice and "where known" in notice
    panel = pg.panel
    assert panel.key_input is not None and panel.key_input in panel.children

    look_up_and_cancel(panel, bid)  # no key typed: refused locally, every time
    assert "no API key" in text(panel.message.value)
    assert sandbox.requests == [] and audit_lines(audit) == []

    panel.key_input.value = KEY
    panel.lookup_button.click()
    panel.wait()
    panel.cancel_button.click()
    panel.confirm_button.click()
    panel.wait()
    assert sandbox.batch(bid)["cancelled"]  # type: ignore[index]
    assert panel.key_input.value == ""  # the key lives in the kernel's client only
    got = audit_lines(audit)
    assert [(g["action"], g["visitor"]) for g in got] == [("lookup", None), ("cancel", None)]
    assert KEY not in audit.read_text(encoding="utf-8")
    assert KEY not in json.dumps([w.get_state() for w in _all_widgets(pg)], default=str)
    pg.close()


def test_an_action_that_cannot_be_recorded_stops_the_page(
        sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trail is the condition of use: once a line cannot be written, nothing more is sent."""
    audit = tmp_path / "audit.jsonl"
    serve_settings(monkeypatch, sandbox, audit, ask_key=False)
    a, b = sandbox.create_batches(2)
    pg = page(visitor="192.0.2.9")
    audit.mkdir()  # the trail cannot be written any more (here: a folder now stands in its place)
    pg.panel.id_input.value = a
    pg.panel.wait()
    assert "could not be recorded" in text(pg.panel.message.value)
    assert "would_cancel" in pg.panel.card.value  # the look-up itself is shown
    sent = len(sandbox.requests)
    look_up_and_cancel(pg.panel, b)
    assert len(sandbox.requests) == sent and not sandbox.batch(b)["cancelled"]  # type: ignore[index]
    assert "sends nothing more" in text(pg.panel.message.value)
    assert pg.panel.lookup_button.disabled and pg.panel.cancel_button.disabled
    pg.close()


@pytest.mark.parametrize("ask_key", [False, True])
def test_the_page_creates_only_the_widgets_it_shows_and_none_writes_a_file(
        ask_key: bool, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every widget a page's kernel creates can be set and clicked by the visitor, shown or not
    (its model is opened on the page's connection). So each one must be reachable from the
    page shown, through the references in the widgets' own state (children, layout, style)."""
    import ipywidgets as widgets

    serve_settings(monkeypatch, sandbox, tmp_path / "audit.jsonl", ask_key=ask_key)
    created: list[widgets.Widget] = []
    before = widgets.Widget._widget_construction_callback
    widgets.Widget.on_widget_constructed(created.append)
    try:
        pg = page(visitor="192.0.2.7")
    finally:
        widgets.Widget.on_widget_constructed(before)
    shown = _reachable_in_state(pg)
    assert created and {w.model_id for w in created} <= shown, [
        (type(w).__name__, w.get_state()) for w in created if w.model_id not in shown]
    texts = sorted(type(w).__name__ + ":" + w.description for w in created
                   if isinstance(w, (widgets.Text, widgets.Password)))
    assert texts == (["Password:API key", "Text:Batch ID"] if ask_key else ["Text:Batch ID"])
    buttons = sorted(w.description for w in created if isinstance(w, widgets.Button))
    assert buttons == ["Cancel batch…", "Confirm cancel", "Look up"]
    assert pg.panel.export_button is None and pg.panel.export_path is None
    with pytest.raises(ConfigError, match="export=False"):
        pg.panel.export()
    pg.close()


def _reachable_in_state(root: object) -> set[str]:
    """The model IDs a front end reaches from `root` by the widget references in each state."""
    from ipywidgets import Widget, widget_serialization

    by_id: dict[str, Widget] = {}
    todo: list[object] = [root]
    while todo:
        w = todo.pop()
        if not isinstance(w, Widget) or w.model_id in by_id:
            continue
        by_id[w.model_id] = w
        refs: list[object] = [w.get_state()]
        while refs:
            v = refs.pop()
            if isinstance(v, dict):
                refs.extend(v.values())
            elif isinstance(v, (list, tuple)):
                refs.extend(v)
            elif isinstance(v, str) and v.startswith("IPY_MODEL_"):
                todo.append(widget_serialization["from_json"](v, None))
    return set(by_id)


def _all_widgets(root: object) -> list:
    out, todo = [], [root]
    while todo:
        w = todo.pop()
        out.append(w)
        todo.extend(getattr(w, "children", ()))
    return out
