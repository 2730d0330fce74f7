"""The panel's views as pure functions: no widgets, no threads, no server."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime

import pytest

from smtoolkit.core.outcomes import Outcome, Result
from smtoolkit.ui.html import armed_html, card_html, fmt, history_html, kind_of, message_html


def cell(card: str, name: str) -> str | None:
    m = re.search(rf'<td class="smtk-{re.escape(name)}">(.*?)</td>', card, re.S)
    return html.unescape(m.group(1)) if m else None


@pytest.mark.parametrize("outcome, kind", [(Outcome.CANCELLED, "good"), (Outcome.WOULD_CANCEL, "good"),
                                           (Outcome.STOPPING, "warn"), (Outcome.NOT_FOUND, "warn"),
                                           (Outcome.SERVER_ERROR, "bad"), (Outcome.UNAUTHORIZED, "bad")])
def test_the_card_colour_follows_the_outcome(outcome: Outcome, kind: str) -> None:
    assert kind_of(outcome) == kind
    assert f"smtk-card smtk-{kind}" in card_html("Cancel", Result("qrb_a", outcome), None, 10)


def test_the_card_escapes_everything_the_server_sent() -> None:
    evil = '<img src=x onerror="alert(1)">'
    r = Result("qrb_a", Outcome.CLIENT_ERROR, http_status=400, error_code=evil, error_message=evil,
               batch={"description": evil, "schedule_time": "2026-01-01T00:00:00Z"})
    card = card_html("Cancel", r, {"queued": 1, "running": 0, "success": 2, "failure": 0}, 42)
    assert "<img" not in card and "&lt;img" in card
    assert cell(card, "description") == evil
    assert cell(card, "scheduled") == "2026-01-01 00:00:00 UTC"
    assert cell(card, "queries") == "queued 1, running 0, success 2, failure 0"
    assert cell(card, "hourly-budget-left") == "42"


def test_fmt_never_raises_and_never_shows_a_python_repr() -> None:
    assert fmt(None) == "—" and fmt(float("nan")) == "—"
    assert fmt({"a": [1, "Ł"]}) == '{"a":[1,"Ł"]}'
    assert fmt(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02 03:04:05 UTC"
    assert fmt(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01 00:00:00 UTC"


def test_history_and_messages() -> None:
    row = {**Result("qrb_<b>", Outcome.CANCELLED, status_code="STOPPED").row(), "action": "cancel",
           "at": datetime(2026, 1, 1, tzinfo=UTC)}
    table = history_html([row])
    assert "qrb_&lt;b&gt;" in table and "<td class=\"smtk-outcome\">cancelled</td>" in table
    assert message_html("bad", "x").startswith('<div style="background:#fdecea')
    seen = Result("qrb_a", Outcome.WOULD_CANCEL, status_code="RUNNING", batch={"description": "<i>d</i>"})
    text = armed_html("qrb_a", seen)
    assert "RUNNING" in text and "&lt;i&gt;d&lt;/i&gt;" in text and "Confirm cancel" in text
