"""The shared page in a real browser: `smtoolkit panel` runs in a child process (the key only in
its environment) against a sandbox in this process, and headless Chromium visits it as a
colleague would. What the sandbox answered (`SandboxAnswers`), the audit file, the server's
processes and its output are the evidence. Screenshots go to test-artifacts/.

Where the key could show, it is looked for: the page's HTML (`page.content()`), what the page
shows (its text and every input's value: a screenshot renders nothing else; the PNG's bytes are
checked too), the audit file, and the server's stdout and stderr."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from smtoolkit.sandbox import Sandbox
from tests.browser.chromium import ARTIFACTS, CHROMIUM, chromium_page
from tests.helpers import SandboxAnswers, audit_lines, wait_for
from tests.served import ServedPanel, run_panel

ROOT = Path(__file__).parents[2]
KEY = "sbx_SHARED-PAGE-SECRET-KEY_0f4b9e27d3"  # distinctive: found anywhere means leaked

pytestmark = [pytest.mark.browser, pytest.mark.skipif(os.name != "posix", reason="Ctrl-C is sent as SIGINT"),
              pytest.mark.sandbox(api_key=KEY, seed=21)]  # the `sandbox` fixture, with this key

if CHROMIUM is None:
    pytest.skip("no Chromium on this machine (apt-get install chromium); browser test not run",
                allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[browser]'")
pytest.importorskip("voila", reason="pip install -e '.[browser]'")

BATCH_INPUT = ".widget-text input[type=text]"
BUTTON = "button.jupyter-button"


@pytest.fixture
def sandbox_answers(sandbox: Sandbox) -> tuple[Sandbox, SandboxAnswers]:
    return sandbox, SandboxAnswers(sandbox)


def shown(page: Any) -> str:
    """Everything the page can render: its HTML, its text and the values of its inputs."""
    values = page.eval_on_selector_all("input, textarea", "els => els.map(e => e.value)")
    return page.content() + page.inner_text("body") + json.dumps(values)


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5_000 and KEY.encode() not in path.read_bytes()
    return path


def wait_for_text(page: Any, selector: str, text: str, timeout: float = 30_000) -> None:
    page.wait_for_function("([s, t]) => document.querySelector(s)?.innerText.includes(t)", arg=[selector, text],
                           timeout=timeout)


def stop_and_check_output(served: ServedPanel) -> None:
    """Ctrl-C ends the server cleanly, and the key never went to its stdout or stderr."""
    code = served.stop()
    out, err = served.out(), served.err()
    assert code == 0, err[-3000:]
    assert "Traceback" not in err and "smtoolkit panel stopped" in err
    assert KEY not in out and KEY not in err


def test_without_the_token_the_page_is_refused_and_no_kernel_starts(
        sandbox_answers: tuple[Sandbox, SandboxAnswers], tmp_path: Path) -> None:
    sb, answers = sandbox_answers
    sb.create_batches(2)
    served = ServedPanel(tmp_path, key=KEY, base_url=sb.base_url)
    try:
        token = served.url.split("?token=")[1]
        with chromium_page() as page:
            for url in (served.base, served.base + "?token=" + "f" * len(token)):
                page.goto(url, timeout=60_000)
                assert "/login" in page.url  # sent to the login page, never to the panel
                assert page.locator("#password_input").count() == 1
                assert page.locator(".smtk-notice, .widget-text").count() == 0
            screenshot(page, "share-refused.png")
            assert served.kernels() == []  # (and none starts later: see the count after login)
            assert answers.answers == [] and audit_lines(served.audit) == []

            # The login page takes the token (and offers no "set a password" form).
            assert page.locator("input[name=new_password]").count() == 0
            page.fill("#password_input", token)
            page.click("#login_submit")
            page.locator(".smtk-notice").wait_for(timeout=90_000)
            assert len(served.kernels()) == 1
            # The server's log is in order: the refused visits came before this kernel's start.
            assert served.err().count("Kernel started") == 1, served.err()[-3000:]
    finally:
        stop_and_check_output(served)
    assert served.kernels() == []


def test_with_the_token_look_up_cancel_confirm_works_and_each_action_is_audited(
        sandbox_answers: tuple[Sandbox, SandboxAnswers], tmp_path: Path) -> None:
    sb, answers = sandbox_answers
    target, other = sb.create_batches(2, description="nightly load")
    served = ServedPanel(tmp_path, key=KEY, base_url=sb.base_url)
    try:
        with chromium_page() as page:
            page.goto(served.url, timeout=90_000)  # the URL exactly as printed
            page.locator(".smtk-notice").wait_for(timeout=90_000)
            notice = page.inner_text(".smtk-notice")
            assert "API key of the server it runs on" in notice and "never shown" in notice
            assert "recorded on the server" in notice and "your address (127.0.0.1)" in notice
            assert page.locator("input[type=password]").count() == 0  # the server's key: nothing to type
            assert page.locator(BUTTON, has_text="Export history").count() == 0  # no files written for visitors

            batch = page.locator(BATCH_INPUT).first
            batch.fill(target)
            batch.press("Enter")
            wait_for_text(page, ".smtk-card", "RUNNING")
            assert "would_cancel" in page.inner_text(".smtk-card")
            page.locator(BUTTON, has_text="Cancel batch").click()
            wait_for_text(page, "body", "About to cancel")
            assert not [a for a in answers.answers if a["method"] == "DELETE"]  # nothing sent before confirm
            assert [line["action"] for line in audit_lines(served.audit)] == ["lookup"]
            page.locator(BUTTON, has_text="Confirm cancel").click()
            wait_for_text(page, ".smtk-card", "Cancel: cancelled")
            assert sb.batch(target)["cancelled"] is True  # type: ignore[index]
            assert sb.batch(other)["cancelled"] is False  # type: ignore[index]
            screenshot(page, "share-after-cancel.png")
            assert KEY not in shown(page)
    finally:
        stop_and_check_output(served)

    lines = audit_lines(served.audit)
    assert [(x["action"], x["batch_id"], x["outcome"]) for x in lines] == [
        ("lookup", target, "would_cancel"), ("cancel", target, "cancelled")]
    by_id = answers.by_request_id()  # the request IDs the sandbox itself answered with
    path = f"/enterprise/v2/query/batch/{target}"
    assert (by_id[lines[0]["request_id"]]["method"], by_id[lines[0]["request_id"]]["path"]) == ("GET", path)
    assert (by_id[lines[1]["request_id"]]["method"], by_id[lines[1]["request_id"]]["path"]) == ("DELETE", path)
    assert [a["method"] for a in answers.answers if a["method"] == "DELETE"] == ["DELETE"]
    for line in lines:
        assert line["visitor"] == "127.0.0.1" and line["base_url"] == sb.base_url
        assert line["at"].endswith("Z") and line["status_code"] in ("RUNNING", "STOPPED")
    assert KEY not in served.audit.read_text(encoding="utf-8")


def test_ask_key_requires_a_key_before_anything_is_sent(
        sandbox_answers: tuple[Sandbox, SandboxAnswers], tmp_path: Path) -> None:
    """The server's environment holds the key, yet with --ask-key the page never uses it."""
    sb, answers = sandbox_answers
    (target,) = sb.create_batches(1)
    served = ServedPanel(tmp_path, "--ask-key", key=KEY, base_url=sb.base_url)
    try:
        assert "each visitor types their own API key" in served.out()
        with chromium_page() as page:
            page.goto(served.url, timeout=90_000)
            page.locator(".smtk-notice").wait_for(timeout=90_000)
            assert "Type your own API key" in page.inner_text(".smtk-notice")
            key_box = page.locator("input[type=password]")
            assert key_box.count() == 1

            batch = page.locator(BATCH_INPUT).first
            batch.fill(target)
            batch.press("Enter")  # a look-up without a key
            wait_for_text(page, "body", "no API key")
            page.locator(BUTTON, has_text="Cancel batch").click()
            page.locator(BUTTON, has_text="Confirm cancel").click(timeout=5_000, force=True)
            assert answers.answers == [] and audit_lines(served.audit) == []  # nothing sent, nothing done...
            screenshot(page, "share-ask-key-refused.png")

            key_box.fill(KEY)
            page.locator(BUTTON, has_text="Look up").click()
            wait_for_text(page, ".smtk-card", "RUNNING")
            # ...nor later: the kernel takes the page's messages in order and runs one request at
            # a time, so this look-up's answer comes after anything the clicks above started.
            assert [(a["method"], a["path"].endswith("/status")) for a in answers.answers] == [
                ("GET", False), ("GET", True)], answers.answers  # the look-up's two requests only
            assert [x["action"] for x in audit_lines(served.audit)] == ["lookup"]
            page.locator(BUTTON, has_text="Cancel batch").click()
            page.locator(BUTTON, has_text="Confirm cancel").click()
            wait_for_text(page, ".smtk-card", "Cancel: cancelled")
            assert key_box.input_value() == ""  # the key left the page for its kernel, and is not kept
            screenshot(page, "share-ask-key-after-cancel.png")
            assert KEY not in shown(page)

            # Leaving the page ends its kernel, and with it the key typed there.
            assert len(served.kernels()) == 1
            page.goto("about:blank")
            wait_for(lambda: not served.kernels(), "the page's kernel to end")
    finally:
        stop_and_check_output(served)
    assert sb.batch(target)["cancelled"] is True  # type: ignore[index]
    lines = audit_lines(served.audit)
    assert [(x["action"], x["outcome"]) for x in lines] == [("lookup", "would_cancel"), ("cancel", "cancelled")]
    assert {answers.by_request_id()[x["request_id"]]["method"] for x in lines} == {"GET", "DELETE"}
    assert KEY not in served.audit.read_text(encoding="utf-8")


def test_a_host_other_than_loopback_without_a_token_serves_nothing(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = run_panel(tmp_path, "--host", "0.0.0.0", "--port", str(port), "--no-token", key=KEY)
    assert done.returncode == 2 and "refusing to serve on 0.0.0.0 without a token" in done.stderr
    assert KEY not in done.stdout + done.stderr
    with chromium_page() as page:
        with pytest.raises(playwright_sync.Error, match="ERR_CONNECTION_REFUSED"):
            page.goto(f"http://127.0.0.1:{port}/", timeout=10_000)


_PROBE = """async ([kernelId, code]) => {
  // What a visitor with the token could send from the page's own origin (their cookie goes along).
  const ws = new WebSocket('ws://' + location.host + '/api/kernels/' + kernelId + '/channels?session_id=probe');
  const got = [];
  await new Promise((ok, bad) => { ws.onopen = ok; ws.onerror = () => bad('websocket refused'); });
  ws.onmessage = (e) => { try { got.push(JSON.parse(e.data).msg_type); } catch (x) { got.push('?'); } };
  const msg = (type, content) => JSON.stringify({
    header: {msg_id: type + Math.random(), msg_type: type, username: 'visitor', session: 'probe', version: '5.3',
             date: new Date().toISOString()},
    parent_header: {}, metadata: {}, content: content, channel: 'shell', buffers: []});
  ws.send(msg('kernel_info_request', {}));
  ws.send(msg('execute_request', {code: code, silent: false, store_history: false, user_expressions: {},
                                  allow_stdin: false, stop_on_error: true}));
  await new Promise(r => setTimeout(r, 4000));
  ws.close();
  return got;
}"""


def test_a_visitor_with_the_token_cannot_run_code_in_the_kernel_that_holds_the_key(
        sandbox_answers: tuple[Sandbox, SandboxAnswers], tmp_path: Path) -> None:
    """The server's key sits in each visitor kernel's environment: the page must pass widget
    messages only. A request to execute code, sent over the page's own kernel connection, is
    dropped; a harmless kernel_info_request on the same connection is answered (so the probe
    itself works)."""
    import re

    sb, _ = sandbox_answers
    marker = tmp_path / "code-ran"
    served = ServedPanel(tmp_path, key=KEY, base_url=sb.base_url)
    try:
        with chromium_page() as page:
            page.goto(served.url, timeout=90_000)
            page.locator(".smtk-notice").wait_for(timeout=90_000)
            started = re.search(r"Kernel started: ([0-9a-f-]{36})", served.err())
            assert started, served.err()[-2000:]
            code = f"import os; open({str(marker)!r}, 'w').write(os.environ.get('SUPERMETRICS_API_KEY', ''))"
            got = page.evaluate(_PROBE, [started.group(1), code])
    finally:
        stop_and_check_output(served)
    assert "kernel_info_reply" in got, got  # the connection works
    assert "execute_reply" not in got and "execute_input" not in got, got
    assert not marker.exists()


# A visitor's own widget client, run in the page (its origin, its cookie) on a second connection
# to the page's kernel. Every call resolves when the kernel has finished handling the message
# (its "idle" status for that message), never after a fixed time.
_VISITOR = """async ([kernelId, steps, opens]) => {
  const ws = new WebSocket('ws://' + location.host + '/api/kernels/' + kernelId + '/channels?session_id=visitor');
  await new Promise((ok, bad) => { ws.onopen = ok; ws.onerror = () => bad('websocket refused'); });
  const idle = {}, replies = {}, seen = [];
  const done = {};
  // A message is handled when its "idle" status has come and, for a request, its reply: the two
  // travel on different channels, so either may arrive first.
  const idled = {}, wanted = {};
  const check = (id) => { if (idled[id] && (!wanted[id] || replies[id]) && done[id]) done[id](); };
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    seen.push(m);
    const parent = (m.parent_header || {}).msg_id;
    if (!parent) return;
    if (m.channel === 'shell') replies[parent] = m;
    if (m.msg_type === 'status' && m.content.execution_state === 'idle') idled[parent] = true;
    check(parent);
  };
  const send = (type, content, metadata) => {
    const id = type + '-' + Math.random().toString(16).slice(2);
    wanted[id] = type.endsWith('_request');
    const finished = new Promise(r => { done[id] = r; });
    ws.send(JSON.stringify({header: {msg_id: id, msg_type: type, username: 'visitor', session: 'visitor',
                                     version: '5.3', date: new Date().toISOString()},
                            parent_header: {}, metadata: metadata || {}, content: content, channel: 'shell',
                            buffers: []}));
    return finished.then(() => id);
  };
  const out = {comms: null, states: null, sent: []};
  let id = await send('comm_info_request', {target_name: 'jupyter.widget'});
  out.comms = replies[id].content.comms;
  const control = 'visitor-control-' + Math.random().toString(16).slice(2);
  await send('comm_open', {comm_id: control, target_name: 'jupyter.widget.control', data: {}}, {version: '1.0.0'});
  await send('comm_msg', {comm_id: control, data: {method: 'request_states'}});
  const states = seen.find(m => m.msg_type === 'comm_msg' && m.content.comm_id === control
                           && m.content.data.method === 'update_states');
  out.states = states ? states.content.data.states : null;
  for (const [commId, data] of steps) {
    await send('comm_msg', {comm_id: commId, data: data});
    out.sent.push([commId, data]);
  }
  for (const state of (opens || [])) {  // widgets of the visitor's own making
    const commId = 'visitor-widget-' + Math.random().toString(16).slice(2);
    await send('comm_open', {comm_id: commId, target_name: 'jupyter.widget',
                             data: {state: state, buffer_paths: []}}, {version: '2.1.0'});
  }
  id = await send('comm_info_request', {target_name: 'jupyter.widget'});
  out.after = replies[id].content.comms;
  ws.close();
  return out;
}"""


def _model_refs(state: object) -> list[str]:
    refs, todo = [], [state]
    while todo:
        v = todo.pop()
        if isinstance(v, dict):
            todo.extend(v.values())
        elif isinstance(v, list):
            todo.extend(v)
        elif isinstance(v, str) and v.startswith("IPY_MODEL_"):
            refs.append(v[len("IPY_MODEL_"):])
    return refs


def _displayed(root: str, states: dict[str, Any]) -> set[str]:
    """The models a front end reaches from the page's output: children, layouts, styles."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        m = todo.pop()
        if m in seen or m not in states:
            continue
        seen.add(m)
        todo.extend(_model_refs(states[m]["state"]))
    return seen


def test_a_visitor_driving_the_pages_widget_connection_reaches_only_the_shown_widgets_and_writes_no_file(
        sandbox_answers: tuple[Sandbox, SandboxAnswers], tmp_path: Path) -> None:
    """As a visitor with the token can: list every widget model the page's kernel holds, set
    every text value in it to a path, and click every button, over the page's own kernel
    connection. The kernel must hold only the widgets the page shows (each reachable from the
    page's output), and no file may appear at that path. A look-up asked for the same way
    afterwards (messages on one connection are handled in order) shows the hostile ones were
    handled first; and the audit trail stays the server's, one line per action."""
    import re

    sb, answers = sandbox_answers
    (target,) = sb.create_batches(1, description="nightly load")
    planted = tmp_path / "written-by-a-visitor.csv"
    served = ServedPanel(tmp_path, key=KEY, base_url=sb.base_url)
    try:
        with chromium_page() as page:
            sent_html = page.goto(served.url, timeout=90_000).text()  # as served, before scripts ran
            page.locator(".smtk-notice").wait_for(timeout=90_000)
            kernel = re.search(r"Kernel started: ([0-9a-f-]{36})", served.err())
            assert kernel, served.err()[-2000:]
            roots = re.findall(r'widget-view\+json": \{"model_id": "([0-9a-f]{32})"', sent_html)
            assert len(roots) == 1, roots  # the page shows one widget tree: the cell's output

            listed = page.evaluate(_VISITOR, [kernel.group(1), [], []])
            models = set(listed["comms"])
            states = listed["states"]
            assert models and set(states) == models  # the kernel's comms are its widgets
            displayed = _displayed(roots[0], states)
            hidden = {m: states[m]["model_name"] for m in models - displayed}
            assert hidden == {}, hidden  # each widget model in the kernel is part of the page shown
            texts = sorted(s["state"].get("description", "") for s in states.values()
                           if s["model_name"] in ("TextModel", "PasswordModel", "TextareaModel"))
            assert texts == ["Batch ID"]
            buttons = sorted(s["state"]["description"] for s in states.values() if s["model_name"] == "ButtonModel")
            assert buttons == ["Cancel batch…", "Confirm cancel", "Look up"]

            # Every text value the kernel holds becomes a path, then every button is clicked.
            hostile: list[list[Any]] = [
                [m, {"method": "update", "state": {"value": str(planted)}, "buffer_paths": []}]
                for m, s in states.items() if isinstance(s["state"].get("value"), str)]
            hostile += [[m, {"method": "custom", "content": {"event": "click"}}]
                        for m, s in states.items() if s["model_name"] == "ButtonModel"]
            batch_box = next(m for m, s in states.items() if s["state"].get("description") == "Batch ID")
            legit = [batch_box, {"method": "update", "state": {"value": target}, "buffer_paths": []}]
            # And widgets of the visitor's own: the kernel creates none.
            own = [{"_model_name": "TextModel", "_model_module": "@jupyter-widgets/controls",
                    "_model_module_version": "2.0.0", "_view_name": "TextView",
                    "_view_module": "@jupyter-widgets/controls", "_view_module_version": "2.0.0",
                    "value": str(planted)},
                   {"_model_name": "ButtonModel", "_model_module": "@jupyter-widgets/controls",
                    "_model_module_version": "2.0.0", "description": "mine"}]
            sent = page.evaluate(_VISITOR, [kernel.group(1), [*hostile, legit], own])
            assert len(sent["sent"]) == len(hostile) + 1 and set(sent["comms"]) == models
            assert set(sent["after"]) == models  # nothing new was opened, the visitor's widgets included

            wait_for_text(page, ".smtk-card", "RUNNING")  # the look-up asked for last was done
            screenshot(page, "share-visitor-messages.png")
    finally:
        stop_and_check_output(served)
    assert not planted.exists() and not list(tmp_path.rglob("*.csv"))
    assert [(x["action"], x["batch_id"]) for x in audit_lines(served.audit)] == [("lookup", target)]
    assert [a["method"] for a in answers.answers] == ["GET", "GET"]  # the look-up: batch, its status
    assert sb.batch(target)["cancelled"] is False  # type: ignore[index]


def test_past_the_page_caps_the_browser_and_scripts_get_too_many_open_pages_and_the_open_page_still_cancels(
        sandbox_answers: tuple[Sandbox, SandboxAnswers], tmp_path: Path) -> None:
    """With 3 pages allowed, 2 per address: a page open in the browser, one loaded by a script
    from the same address, then a new tab is refused with a readable 503; a second address gets
    the last place and a third is refused. The kernels stay at 3, and the page open in the
    browser still looks up and cancels against the sandbox afterwards."""
    from tests.e2e.test_panel_server import other_loopback_addresses

    sb, answers = sandbox_answers
    second, third = other_loopback_addresses()
    target, other = sb.create_batches(2, description="nightly load")
    served = ServedPanel(tmp_path, "--max-visitors", "3", "--max-pages-per-visitor", "2", "--connect-timeout", "600",
                         key=KEY, base_url=sb.base_url)
    try:
        with chromium_page() as page:
            page.goto(served.url, timeout=90_000)
            page.locator(".smtk-notice").wait_for(timeout=90_000)
            assert served.get_page()[0] == 200  # a script from the same address: its second page

            tab = page.context.browser.new_page(viewport={"width": 900, "height": 400})  # another tab, same address
            refused = tab.goto(served.url, timeout=90_000)
            assert refused is not None and refused.status == 503 and refused.headers["retry-after"] == "60"
            assert tab.title() == "Too many open pages"
            assert "You already have 2 pages of this panel open" in tab.inner_text(".smtk-refusal")
            assert tab.locator(".smtk-notice, .widget-text").count() == 0
            screenshot(tab, "share-too-many-pages.png")
            tab.close()

            assert served.get_page(second)[0] == 200
            status, _, text = served.get_page(third)
            assert status == 503 and "as many as its server allows" in text
            assert len(served.kernels()) == 3
            print(f"\n3 kernels at the cap: {served.kernels_rss() / 2**20:.0f} MiB together")

            batch = page.locator(BATCH_INPUT).first
            batch.fill(target)
            batch.press("Enter")
            wait_for_text(page, ".smtk-card", "RUNNING")
            page.locator(BUTTON, has_text="Cancel batch").click()
            wait_for_text(page, "body", "About to cancel")
            page.locator(BUTTON, has_text="Confirm cancel").click()
            wait_for_text(page, ".smtk-card", "Cancel: cancelled")
            screenshot(page, "share-open-page-works-past-the-cap.png")
            assert KEY not in shown(page)
            assert len(served.kernels()) == 3
    finally:
        stop_and_check_output(served)
    assert sb.batch(target)["cancelled"] is True and sb.batch(other)["cancelled"] is False  # type: ignore[index]
    assert [a["method"] for a in answers.answers if a["method"] == "DELETE"] == ["DELETE"]
    assert [x["action"] for x in audit_lines(served.audit)] == ["lookup", "cancel"]
    assert served.err().count(" 503 GET / ") == 2


def test_ask_reason_refuses_a_cancel_without_a_reason_and_audits_the_one_given(
        sandbox_answers: tuple[Sandbox, SandboxAnswers], tmp_path: Path) -> None:
    sb, answers = sandbox_answers
    (target,) = sb.create_batches(1)
    served = ServedPanel(tmp_path, "--ask-reason", key=KEY, base_url=sb.base_url)
    try:
        with chromium_page() as page:
            page.goto(served.url, timeout=90_000)
            page.locator(".smtk-notice").wait_for(timeout=90_000)
            reason_box = page.locator(".widget-text", has_text="Reason").locator("input")
            assert reason_box.count() == 1
            batch = page.locator(BATCH_INPUT).first
            batch.fill(target)
            batch.press("Enter")
            wait_for_text(page, ".smtk-card", "RUNNING")
            page.locator(BUTTON, has_text="Cancel batch").click()
            wait_for_text(page, "body", "About to cancel")
            page.locator(BUTTON, has_text="Confirm cancel").click()
            wait_for_text(page, "body", "Nothing sent: type the reason")
            assert not [a for a in answers.answers if a["method"] == "DELETE"]  # refused: no reason yet
            screenshot(page, "share-ask-reason-refused.png")
            reason_box.fill("INC-77: duplicate nightly load")
            page.locator(BUTTON, has_text="Confirm cancel").click()  # still armed: the reason was missing
            wait_for_text(page, ".smtk-card", "Cancel: cancelled")
            screenshot(page, "share-ask-reason-after-cancel.png")
    finally:
        stop_and_check_output(served)
    assert sb.batch(target)["cancelled"] is True  # type: ignore[index]
    lines = audit_lines(served.audit)
    assert [(x["action"], x.get("reason")) for x in lines if x["action"] == "cancel"] == [
        ("cancel", "INC-77: duplicate nightly load")]
    assert [a["method"] for a in answers.answers if a["method"] == "DELETE"] == ["DELETE"]
