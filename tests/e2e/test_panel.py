"""CancelPanel end to end in plain pytest (no kernel): the widgets are driven in code
(`id_input.value`, `.click()`), the worker thread is joined with `wait()`, and the panel
talks real HTTP to the sandbox (or to a scripted server for exact 429 sequences)."""

from __future__ import annotations

import html
import re
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import ipywidgets as widgets
import pandas as pd
import pytest

from smtoolkit import Client
from smtoolkit.config import API_KEY_ENV
from smtoolkit.sandbox import Sandbox
from smtoolkit.ui.panel import CancelPanel
from tests.helpers import deletes, fast_client, nothing_more_sent, requests_seen
from tests.scripted import Reply, Scripted, batch, envelope

WRONG_KEY = "sbx_wrong_key_7c1e9d0a5b"


# -- helpers ------------------------------------------------------------------------------------
def cell(card: str, name: str) -> str | None:
    """The unescaped text of the card row whose CSS class is smtk-<name>, or None if absent."""
    m = re.search(rf'<td class="smtk-{re.escape(name)}">(.*?)</td>', card, re.S)
    return html.unescape(m.group(1)) if m else None


def text(fragment: str) -> str:
    """HTML to plain text (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def shown_time(iso: str) -> str:
    """How the card formats an API time (the sandbox's truth is ISO-8601 UTC)."""
    dt = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def assert_key_absent(panel: CancelPanel, key: str) -> None:
    for where, value in {
        "card": panel.card.value,
        "message": panel.message.value,
        "busy": panel.busy.value,
        "history": panel.history.to_csv(index=False),
        "repr": repr(panel),
        "str": str(panel),
    }.items():
        assert key not in value, f"the API key appears in the panel's {where}"


def look_up(panel: CancelPanel, batch_id: str) -> None:
    """Type an ID and press Enter (the panel looks it up by itself), then join the worker."""
    panel.id_input.value = batch_id
    panel.wait()


@pytest.fixture
def panel(client: Client) -> Iterator[CancelPanel]:
    p = CancelPanel(client=client)
    yield p
    p.wait()
    p.close()


# -- look-up ------------------------------------------------------------------------------------
def test_lookup_shows_the_batch_and_changes_nothing(sandbox: Sandbox, panel: CancelPanel) -> None:
    (bid,) = sandbox.create_batches(1, description="Nightly <i>sync</i> & co", queries=6)
    sandbox.advance([bid], steps=1)
    truth_before = sandbox.batch(bid)
    assert truth_before is not None

    look_up(panel, bid)  # Enter alone looks it up

    card = panel.card.value
    assert "Look-up: would_cancel" in text(card)
    assert cell(card, "batch") == bid
    assert cell(card, "outcome") == "would_cancel"
    assert cell(card, "batch-status") == truth_before["status_code"]
    assert cell(card, "description") == "Nightly <i>sync</i> & co 1"
    assert "<i>sync</i>" not in card  # escaped, never rendered as HTML
    progress = sandbox.batch(bid)["progress"]  # type: ignore[index]
    assert sum(progress.values()) == 6
    assert cell(card, "queries") == ", ".join(f"{k} {progress[k]}" for k in ("queued", "running", "success", "failure"))
    assert cell(card, "cancelled-at") == "—"
    assert cell(card, "http-status") == "200"
    request_id = cell(card, "request-id")
    assert request_id is not None and re.fullmatch(r"req_[0-9a-f]{20}", request_id)
    assert panel.message.value == ""
    assert panel.confirm_button.disabled and panel.armed is None

    panel.repeat_after = 0  # a deliberate refresh, not the click that follows typing
    panel.lookup_button.click()  # and the button does the same
    panel.wait()

    h = panel.history
    assert list(h["action"]) == ["lookup", "lookup"]
    assert list(h["outcome"]) == ["would_cancel", "would_cancel"]
    assert h["request_id"].iloc[0] == request_id
    assert h["request_id"].iloc[1] == cell(panel.card.value, "request-id") != request_id
    log = sandbox.requests
    assert log and {r["method"] for r in log} == {"GET"}
    assert {r["batch_id"] for r in log} == {bid}
    assert deletes(sandbox) == []
    truth = sandbox.batch(bid)
    assert truth is not None
    assert truth["status_code"] == truth_before["status_code"] and not truth["cancelled"]
    assert truth["deletes"] == 0 and truth["cancels_applied"] == 0


def test_unknown_id_shows_not_found(sandbox: Sandbox, panel: CancelPanel) -> None:
    look_up(panel, "qrb_doesnotexist0")
    card = panel.card.value
    assert cell(card, "outcome") == "not_found" and cell(card, "http-status") == "404"
    assert "smtk-queries" not in card  # no per-query counts for a batch that does not exist
    assert [(r["method"], r["status"]) for r in sandbox.requests] == [("GET", 404)]

    panel.cancel_button.click()
    panel.confirm_button.click()
    panel.wait()
    assert cell(panel.card.value, "outcome") == "not_found"
    assert [(r["method"], r["status"]) for r in deletes(sandbox)] == [("DELETE", 404)]
    assert list(panel.history["outcome"]) == ["not_found", "not_found"]
    assert list(panel.history["http_status"]) == [404, 404]


def test_an_unreachable_api_reads_as_not_sent_and_what_to_check() -> None:
    """A closed port: the card says nothing was sent, why, and what to check, in words (not
    requests' 'Max retries exceeded with url ... HTTPConnectionPool(...)')."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = CancelPanel(api_key=WRONG_KEY, base_url=f"http://127.0.0.1:{port}/enterprise/v2", backoff_base=0.01)
    try:
        look_up(p, "qrb_1")
        p.cancel_button.click()
        p.confirm_button.click()
        p.wait()
        card = p.card.value
    finally:
        p.close()
    assert "Cancel: network_error" in text(card)
    assert cell(card, "error") == f"CONNECT_FAILED not sent: 127.0.0.1:{port} refused the connection"
    assert cell(card, "details") == ("Check the base URL (host and port), and that the server or proxy "
                                     "there is running.")
    assert "Max retries" not in card and "Pool" not in card
    assert list(p.history["error_code"]) == ["CONNECT_FAILED", "CONNECT_FAILED"]
    assert list(p.history["attempts"]) == [3, 3]  # retried a little, never verified


# -- cancel behind a confirmation ---------------------------------------------------------------
def test_cancel_with_confirm_sends_exactly_one_delete(sandbox: Sandbox, panel: CancelPanel) -> None:
    bid, other = sandbox.create_batches(2, description="Weekly <b>ads</b>")
    look_up(panel, bid)

    panel.cancel_button.click()
    assert panel.armed == bid
    assert not panel.confirm_button.disabled
    said = text(panel.message.value)
    assert bid in said and "RUNNING" in said and "Weekly <b>ads</b> 1" in said and "Confirm cancel" in said
    assert "<b>ads</b>" not in panel.message.value  # the description is escaped
    assert deletes(sandbox) == []  # arming sends nothing

    panel.confirm_button.click()
    assert panel.confirm_button.disabled  # one click, one DELETE
    panel.wait()

    sent = deletes(sandbox)
    assert len(sent) == 1 and sent[0]["batch_id"] == bid and sent[0]["status"] == 200
    truth = sandbox.batch(bid)
    assert truth is not None
    assert truth["cancelled"] and truth["status_code"] == "STOPPED" and truth["cancels_applied"] == 1
    card = panel.card.value
    assert "Cancel: cancelled" in text(card)
    assert cell(card, "outcome") == "cancelled"
    assert cell(card, "batch-status") == "STOPPED"
    assert cell(card, "cancelled-at") == shown_time(truth["cancel_time"])
    assert cell(card, "description") == "Weekly <b>ads</b> 1"
    last = panel.history.iloc[-1]
    assert last["action"] == "cancel" and last["outcome"] == "cancelled" and last["batch_id"] == bid
    assert last["status_code"] == "STOPPED" and last["attempts"] == 1
    assert last["cancel_time"] == pd.Timestamp(truth["cancel_time"])
    assert panel.armed is None and panel.confirm_button.disabled

    # A second confirm (no new arm) sends nothing.
    panel.confirm_button.click()
    panel.wait()
    assert len(deletes(sandbox)) == 1
    assert "Nothing sent" in text(panel.message.value)
    assert not sandbox.batch(other)["cancelled"]  # type: ignore[index]


def test_surrounding_blanks_are_stripped_before_cancelling(sandbox: Sandbox, panel: CancelPanel) -> None:
    (bid,) = sandbox.create_batches(1)
    look_up(panel, f"  {bid}\t")
    panel.cancel_button.click()
    assert panel.armed == bid
    panel.confirm_button.click()
    panel.wait()
    assert [r["path"].rsplit("/", 1)[-1] for r in deletes(sandbox)] == [bid]
    assert cell(panel.card.value, "outcome") == "cancelled"


def test_cancel_without_confirm_sends_nothing(sandbox: Sandbox, panel: CancelPanel) -> None:
    a, b = sandbox.create_batches(2)
    look_up(panel, a)
    seen = requests_seen(sandbox)
    panel.cancel_button.click()
    assert panel.armed == a and not panel.confirm_button.disabled
    nothing_more_sent(sandbox, seen, ended=panel.wait)  # whatever the click started has ended
    assert deletes(sandbox) == []
    assert sandbox.batch(a)["status_code"] == "RUNNING"  # type: ignore[index]

    # Changing the ID after arming disarms; confirm then sends nothing for either ID.
    look_up(panel, b)
    assert panel.armed is None and panel.confirm_button.disabled
    panel.confirm_button.click()
    panel.wait()
    assert "Nothing sent" in text(panel.message.value)
    assert deletes(sandbox) == []

    # A -> arm -> B -> back to A: still disarmed.
    look_up(panel, a)
    panel.cancel_button.click()
    look_up(panel, b)
    look_up(panel, a)
    assert panel.armed is None and panel.confirm_button.disabled
    panel.confirm_button.click()
    panel.wait()
    assert deletes(sandbox) == []
    for bid in (a, b):
        truth = sandbox.batch(bid)
        assert truth is not None and truth["status_code"] == "RUNNING" and not truth["cancelled"]
    assert set(panel.history["action"]) == {"lookup"}


@pytest.mark.parametrize("bad", ["a/b", "..", "", "x?y", "../qrb_1", " . ", "qrb_1#frag", "%2e%2e"])
def test_invalid_ids_are_refused_and_nothing_is_sent(sandbox: Sandbox, panel: CancelPanel, bad: str) -> None:
    panel.id_input.value = bad  # Enter
    panel.wait()
    panel.lookup_button.click()
    panel.wait()
    assert "Not sent" in text(panel.message.value)
    panel.cancel_button.click()
    assert panel.armed is None and panel.confirm_button.disabled
    assert "Not sent" in text(panel.message.value)
    panel.confirm_button.click()
    panel.wait()
    assert sandbox.requests == []
    assert panel.card.value == ""
    assert len(panel.history) == 0


def test_an_invalid_id_clears_the_previous_card(sandbox: Sandbox, panel: CancelPanel) -> None:
    (bid,) = sandbox.create_batches(1)
    look_up(panel, bid)
    assert cell(panel.card.value, "batch") == bid
    before = len(sandbox.requests)
    look_up(panel, "a/b")
    assert panel.card.value == ""
    assert "Not sent" in text(panel.message.value) and "A-Z a-z 0-9" in text(panel.message.value)
    assert len(sandbox.requests) == before


# -- authentication -----------------------------------------------------------------------------
def test_wrong_key_shows_unauthorized_and_never_the_key(sandbox: Sandbox) -> None:
    (bid,) = sandbox.create_batches(1)
    p = CancelPanel(api_key=WRONG_KEY, base_url=sandbox.base_url, backoff_base=0.05, backoff_cap=0.3)
    assert p.key_input is None
    look_up(p, bid)
    card = p.card.value
    assert cell(card, "outcome") == "unauthorized" and cell(card, "http-status") == "401"
    assert "smtk-bad" in card
    p.cancel_button.click()
    p.confirm_button.click()
    p.wait()
    assert cell(p.card.value, "outcome") == "unauthorized"
    assert [(r["method"], r["status"]) for r in sandbox.requests] == [("GET", 401), ("DELETE", 401)]
    assert not sandbox.batch(bid)["cancelled"]  # type: ignore[index]
    assert list(p.history["outcome"]) == ["unauthorized", "unauthorized"]
    assert_key_absent(p, WRONG_KEY)
    assert_key_absent(p, sandbox.api_key)


def test_revoked_key_shows_unauthorized_and_never_the_key(sandbox: Sandbox, panel: CancelPanel) -> None:
    (bid,) = sandbox.create_batches(1)
    look_up(panel, bid)
    assert cell(panel.card.value, "outcome") == "would_cancel"
    panel.cancel_button.click()
    sandbox.revoke_key(sandbox.api_key)
    panel.confirm_button.click()
    panel.wait()
    assert cell(panel.card.value, "outcome") == "unauthorized"
    sent = deletes(sandbox)
    assert [(r["method"], r["status"]) for r in sent] == [("DELETE", 401)]  # a 401 is not retried
    truth = sandbox.batch(bid)
    assert truth is not None and not truth["cancelled"] and truth["status_code"] == "RUNNING"
    last = panel.history.iloc[-1]
    assert last["action"] == "cancel" and last["outcome"] == "unauthorized" and last["http_status"] == 401
    assert_key_absent(panel, sandbox.api_key)


def test_panel_without_a_key_asks_for_it_in_a_password_box(sandbox: Sandbox, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    (bid,) = sandbox.create_batches(1)
    p = CancelPanel(base_url=sandbox.base_url, backoff_base=0.05, backoff_cap=0.3)
    assert isinstance(p.key_input, widgets.Password)
    assert p.key_input in p.children

    look_up(p, bid)  # no key typed yet: refused locally
    assert "no API key" in text(p.message.value)
    assert sandbox.requests == [] and len(p.history) == 0

    p.key_input.value = sandbox.api_key
    p.lookup_button.click()
    p.wait()
    assert cell(p.card.value, "outcome") == "would_cancel"
    p.cancel_button.click()
    p.confirm_button.click()
    p.wait()
    assert cell(p.card.value, "outcome") == "cancelled"
    assert sandbox.batch(bid)["cancelled"]  # type: ignore[index]
    assert {r["key"] for r in sandbox.requests} == {sandbox.requests[0]["key"]}  # one key used throughout
    assert_key_absent(p, sandbox.api_key)
    p.export_path.value = str(tmp_path / "h.csv")
    p.export_button.click()
    assert sandbox.api_key not in (tmp_path / "h.csv").read_text()
    assert sandbox.api_key not in p.message.value


def test_a_key_retyped_after_a_wrong_one_is_used(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mistype the key, see `unauthorized`, type it again: the next look-up uses the new key."""
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    (bid,) = sandbox.create_batches(1)
    p = CancelPanel(base_url=sandbox.base_url, backoff_base=0.05, backoff_cap=0.3)
    assert p.key_input is not None
    p.key_input.value = WRONG_KEY
    look_up(p, bid)
    assert cell(p.card.value, "outcome") == "unauthorized"

    p.key_input.value = sandbox.api_key
    p.lookup_button.click()
    p.wait()
    assert cell(p.card.value, "outcome") == "would_cancel", "the panel kept using the mistyped key"
    assert_key_absent(p, WRONG_KEY)
    assert_key_absent(p, sandbox.api_key)


# -- rate limiting ------------------------------------------------------------------------------
def test_cancel_through_a_429_storm_ends_cancelled(sandbox: Sandbox, panel: CancelPanel) -> None:
    (bid,) = sandbox.create_batches(1)
    look_up(panel, bid)
    panel.cancel_button.click()
    sandbox.set_faults(throttle_rate=1.0)
    timer = threading.Timer(0.5, lambda: sandbox.set_faults(throttle_rate=0.0))
    timer.start()
    try:
        panel.confirm_button.click()
        panel.wait()
    finally:
        timer.cancel()
    sent = deletes(sandbox)
    assert sent[0]["status"] == 429 and sent[-1]["status"] == 200
    assert [r["status"] for r in sent].count(200) == 1
    last = panel.history.iloc[-1]
    assert last["outcome"] == "cancelled" and last["attempts"] >= 2 and last["attempts"] == len(sent)
    assert cell(panel.card.value, "outcome") == "cancelled"
    truth = sandbox.batch(bid)
    assert truth is not None and truth["cancelled"] and truth["cancels_applied"] == 1


def test_scripted_429_with_retry_after_then_200(tmp_path: Path) -> None:
    bid = "qrb_scripted0001"
    deletes_seen: list[int] = []

    def responder(method: str, path: str) -> Reply:
        if method == "DELETE":
            deletes_seen.append(1)
            if len(deletes_seen) == 1:
                return Reply(429, envelope("TOO_MANY_REQUESTS", "slow down"), headers={"Retry-After": "1"})
            return Reply(200, batch(bid))
        return Reply(200, batch(bid, status="RUNNING", cancel_time=None))

    with Scripted(responder=responder) as server, fast_client(server) as c:
        p = CancelPanel(client=c)
        look_up(p, bid)
        assert cell(p.card.value, "outcome") == "would_cancel"
        p.cancel_button.click()
        p.confirm_button.click()
        p.wait()
        dels = [e for e in server.log if e["method"] == "DELETE"]
    assert len(dels) == 2
    assert dels[1]["time"] - dels[0]["time"] >= 1.0  # Retry-After: 1 was honoured
    last = p.history.iloc[-1]
    assert last["outcome"] == "cancelled" and last["attempts"] == 2
    assert cell(p.card.value, "outcome") == "cancelled"
    assert cell(p.card.value, "cancelled-at") == "2026-01-01 00:00:00 UTC"
    assert_key_absent(p, "scripted-key")


# -- export -------------------------------------------------------------------------------------
def test_export_writes_the_history_csv(sandbox: Sandbox, panel: CancelPanel, tmp_path: Path) -> None:
    (bid,) = sandbox.create_batches(1)
    look_up(panel, "qrb_doesnotexist0")
    look_up(panel, bid)
    panel.cancel_button.click()
    panel.confirm_button.click()
    panel.wait()
    history = panel.history
    assert len(history) == 3

    target = tmp_path / "history.csv"
    panel.export_path.value = str(target)
    panel.export_button.click()
    assert target.is_file()
    back = pd.read_csv(target)
    assert len(back) == len(history)
    assert list(back.columns) == list(history.columns)
    assert list(back["action"]) == ["lookup", "lookup", "cancel"]
    assert list(back["outcome"]) == ["not_found", "would_cancel", "cancelled"]
    assert list(back["batch_id"]) == ["qrb_doesnotexist0", bid, bid]
    assert pd.to_datetime(back["cancel_time"].iloc[2], utc=True) == history["cancel_time"].iloc[2]
    said = text(panel.message.value)
    assert "3 rows" in said and str(target) in said
    assert sandbox.api_key not in target.read_text()


def test_export_of_an_empty_history_writes_the_header(panel: CancelPanel, tmp_path: Path) -> None:
    target = tmp_path / "empty.csv"
    panel.export_path.value = str(target)
    panel.export_button.click()
    back = pd.read_csv(target)
    assert len(back) == 0 and list(back.columns) == list(panel.history.columns)
    assert "0 rows" in text(panel.message.value)


@pytest.mark.parametrize("where", ["missing-dir/h.csv", "."])
def test_export_to_a_bad_path_shows_an_error_and_raises_nothing(sandbox: Sandbox, panel: CancelPanel,
                                                                 tmp_path: Path, where: str) -> None:
    (bid,) = sandbox.create_batches(1)
    look_up(panel, bid)
    target = tmp_path / where
    panel.export_path.value = str(target)
    panel.export_button.click()  # must not raise
    said = text(panel.message.value)
    assert said.startswith("cannot write") or "is a directory" in said
    assert "#fdecea" in panel.message.value  # shown as an error
    assert not (tmp_path / "missing-dir").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


# -- busy state ---------------------------------------------------------------------------------
def test_buttons_are_disabled_while_a_request_is_in_flight(sandbox: Sandbox, panel: CancelPanel) -> None:
    (bid,) = sandbox.create_batches(1)
    sandbox.set_faults(latency=0.3)
    buttons = (panel.lookup_button, panel.cancel_button, panel.export_button, panel.confirm_button)

    panel.id_input.value = bid  # Enter starts the look-up
    assert all(b.disabled for b in buttons)
    assert panel.busy.value.startswith("Looking up")
    panel.lookup_button.click()  # the same look-up: one action, not a second request nor a warning
    assert "still in flight" not in text(panel.message.value)
    panel.wait()
    assert not any(b.disabled for b in buttons[:3]) and panel.confirm_button.disabled
    assert panel.busy.value == ""
    assert len(sandbox.requests) == 2  # one GET and one status GET, not four
    assert len(panel.history) == 1

    panel.repeat_after = 0  # a deliberate refresh
    panel.lookup_button.click()
    assert all(b.disabled for b in buttons)
    panel.wait()
    assert not any(b.disabled for b in buttons[:3])

    panel.cancel_button.click()
    panel.confirm_button.click()
    assert all(b.disabled for b in buttons)
    assert panel.busy.value.startswith("Cancelling")
    panel.wait()
    assert not any(b.disabled for b in buttons[:3]) and panel.confirm_button.disabled
    assert panel.busy.value == ""
    assert cell(panel.card.value, "outcome") == "cancelled"
    assert len(deletes(sandbox)) == 1


def test_typing_an_id_then_clicking_look_up_is_one_look_up(sandbox: Sandbox, panel: CancelPanel) -> None:
    (bid,) = sandbox.create_batches(1)
    panel.id_input.value = bid  # leaving the box starts the look-up...
    panel.lookup_button.click()  # ...and the click that follows is the same action
    panel.wait()
    panel.lookup_button.click()  # even once the first has finished
    panel.wait()
    gets = [r for r in sandbox.requests if r["method"] == "GET" and r["path"].endswith(bid)]
    assert len(gets) == 1 and len(panel.history) == 1
    assert "still in flight" not in text(panel.message.value)
    (other,) = sandbox.create_batches(1)
    panel.id_input.value = other  # another ID is another action
    panel.wait()
    assert [r["action"] for r in panel.history.to_dict("records")] == ["lookup", "lookup"]


def _twice_at_once(action: Callable[[], None]) -> None:
    """Call `action` from two threads released together, as two Jupyter handler threads can."""
    import threading

    gate = threading.Barrier(2)

    def go() -> None:
        gate.wait()
        action()

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)


def test_actions_from_two_threads_at_once_send_one_request(sandbox: Sandbox, panel: CancelPanel) -> None:
    """JupyterLab with ipykernel 7 may run a text box's change handler and a button's click on
    different threads: typing an ID then clicking Look up (or Confirm twice) must still send once."""
    ids = sandbox.create_batches(15)
    for bid in ids:
        panel.id_input.unobserve(panel._on_id_change, names="value")
        panel.id_input.value = bid  # in the box, not looked up yet
        panel.id_input.observe(panel._on_id_change, names="value")
        _twice_at_once(panel.lookup)
        panel.wait()
    for bid in ids:
        gets = [r for r in sandbox.requests if r["batch_id"] == bid and r["method"] == "GET"]
        assert len(gets) == 2, (bid, [r["path"] for r in gets])  # the batch and its /status, once
    # Confirm clicked twice at once: one DELETE.
    target = ids[-1]  # the ID in the box
    panel.arm()
    _twice_at_once(panel.confirm)
    panel.wait()
    assert [r["batch_id"] for r in sandbox.requests if r["method"] == "DELETE"] == [target]
