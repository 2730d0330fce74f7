"""What the panel shows, as pure functions returning HTML: the result card, the history
table and messages. No widgets and no threads here, so every view is testable on its own;
all text from a server or a user is escaped."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from ..core.answers import compact_json
from ..core.outcomes import Outcome, Result, parse_time

GOOD = frozenset({Outcome.CANCELLED, Outcome.ALREADY_STOPPED, Outcome.WOULD_CANCEL})
WARN = frozenset({Outcome.STOPPING, Outcome.NOT_FOUND, Outcome.DUPLICATE, Outcome.SKIPPED})
COLORS = {"good": ("#e7f6ec", "#1e7b34"), "warn": ("#fff6e0", "#8a5a00"), "bad": ("#fdecea", "#a12622")}


def fmt(value: Any) -> str:
    """A value as panel text: '—' when missing, times in UTC, JSON for non-text values."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, datetime):
        try:
            # isoformat, not strftime: the same four-digit years on every platform's C library.
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="seconds") + " UTC"
        except (ValueError, OverflowError):
            return "—"
    if isinstance(value, (dict, list)):
        return compact_json(value, 2048)
    return str(value)


def kind_of(outcome: Outcome) -> str:
    """'good', 'warn' or 'bad': the card's colour for an outcome."""
    return "good" if outcome in GOOD else "warn" if outcome in WARN else "bad"


def message_html(kind: str, text_html: str) -> str:
    """A coloured message line; `text_html` is already escaped by the caller."""
    bg, fg = COLORS[kind]
    return f'<div style="background:{bg};color:{fg};padding:4px 8px;border-radius:4px">{text_html}</div>'


def card_html(title: str, r: Result, counts: dict[str, int] | None, budget_left: int | None) -> str:
    """The card that shows one look-up or cancel."""
    kind = kind_of(r.outcome)
    bg, fg = COLORS[kind]
    batch = r.batch or {}
    rows: list[tuple[str, Any]] = [
        ("Batch", r.batch_id),
        ("Outcome", r.outcome.value),
        ("Batch status", r.status_code),
        ("Description", batch.get("description")),
        ("Scheduled", parse_time(batch.get("schedule_time"))),
        ("Started", parse_time(batch.get("start_time"))),
        ("Ended", r.end_time),
        ("Cancelled at", r.cancel_time),
    ]
    if counts:
        rows.append(("Queries", ", ".join(f"{k} {v}" for k, v in counts.items())))
    if r.error_code or r.error_message:
        rows.append(("Error", f"{r.error_code or ''} {r.error_message or ''}".strip()))
    if r.error_description:
        rows.append(("Details", r.error_description))
    rows += [("HTTP status", r.http_status), ("Request ID", r.request_id), ("Hourly budget left", budget_left)]
    body = "".join(
        f'<tr><td style="padding:1px 10px 1px 0;color:#555">{html.escape(k)}</td>'
        f'<td class="smtk-{html.escape(k.lower().replace(" ", "-"))}">{html.escape(fmt(v))}</td></tr>'
        for k, v in rows
    )
    return (f'<div class="smtk-card smtk-{kind}" style="background:{bg};border-left:5px solid {fg};'
            f'padding:6px 10px;border-radius:4px"><div style="color:{fg};font-weight:bold">'
            f'{html.escape(title)}: {html.escape(r.outcome.value)}</div><table>{body}</table></div>')


def history_html(recent: list[dict[str, Any]]) -> str:
    """The history table, newest first (rows as `Result.row()` plus `action` and `at`)."""
    cells = "".join(
        f"<tr><td>{html.escape(fmt(r['at']))}</td><td>{html.escape(r['action'])}</td>"
        f"<td><code>{html.escape(fmt(r['batch_id']))}</code></td>"
        f"<td class=\"smtk-outcome\">{html.escape(r['outcome'])}</td><td>{html.escape(fmt(r['status_code']))}</td></tr>"
        for r in recent)
    return ('<details open class="smtk-history"><summary>History (newest first)</summary>'
            '<table style="font-size:90%"><tr><th>at</th><th>action</th><th>batch</th><th>outcome</th>'
            f"<th>status</th></tr>{cells}</table></details>")


def armed_html(batch_id: str, seen: Result | None) -> str:
    """The message shown once a cancel is armed: what a confirm will cancel."""
    detail = ""
    if seen is not None and seen.batch:
        detail = (f" — status <b>{html.escape(fmt(seen.status_code))}</b>, "
                  f"“{html.escape(fmt(seen.batch.get('description') or ''))}”")
    return (f"About to cancel <code>{html.escape(batch_id)}</code>{detail}. "
            "Click <b>Confirm cancel</b> to send it.")


def page_notice_html(*, ask_key: bool, base_url: str, visitor: str | None, audited: bool) -> str:
    """What the shared page (`smtoolkit panel`) tells each visitor: whose key, and that it records."""
    api = f"<code>{html.escape(base_url)}</code>"
    if ask_key:
        key = (f"Type your own API key for {api}: it stays in this page's session on the server, is used only "
               "for your requests and is written nowhere. Reloading the page forgets it.")
    else:
        key = (f"This page acts with the API key of the server it runs on (chosen by whoever started it, "
               f"never shown), on {api}.")
    who = f"your address ({html.escape(visitor)})" if visitor else "your address where known"
    trail = (f"Every look-up and cancel made here is recorded on the server: the time, {who}, the batch and "
             "what happened." if audited else "This page keeps no record of what is done here.")
    return (f'<div class="smtk-notice" style="color:#444;font-size:90%;margin-bottom:4px">{key}<br>{trail}'
            "</div>")
