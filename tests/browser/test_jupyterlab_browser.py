"""smtoolkit/notebooks/cleanup.ipynb in a real JupyterLab (and Notebook 7), driven by headless Chromium
as a user would: Run All, then look at what the page shows, then use the panel by clicks.

The test owns the API: it starts a `Sandbox` in this process, seeds it like the notebook's own
sandbox mode, and hands it to the notebook the way a user points it at the real API
(SUPERMETRICS_API_KEY, SUPERMETRICS_BASE_URL, SMTK_IDS_CSV). The sandbox's request log and its
truth say what really reached the API. Screenshots go to test-artifacts/."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from smtoolkit.sandbox import Sandbox
from tests.browser.chromium import ARTIFACTS, CHROMIUM, chromium_page
from tests.browser.servers import START_TIMEOUT, free_port, jupyter_args, jupyter_home, running_server
from tests.helpers import wait_for

ROOT = Path(__file__).parents[2]
NOTEBOOK = ROOT / "smtoolkit" / "notebooks" / "cleanup.ipynb"
RUN_TIMEOUT = 180_000  # ms for Run All (the cancel run alone is ~4 s at 20 requests/s)
GUARD_MS = 120_000  # ms: a hang guard for one step, never the expected time (the suite runs on a loaded machine)

pytestmark = pytest.mark.browser

if CHROMIUM is None:
    pytest.skip("no Chromium on this machine (apt-get install chromium); browser test not run",
                allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[browser]'")


@dataclass(frozen=True)
class App:
    name: str  # the artifact prefix
    module: str  # python -m jupyter <module>
    package: str  # what provides it
    path: str  # the notebook's URL path


APPS = [App("jupyterlab", "lab", "jupyterlab", "/lab/tree/cleanup.ipynb"),
        App("notebook7", "notebook", "notebook", "/notebooks/cleanup.ipynb")]


@dataclass
class Session:
    app: App
    url: str  # server root, ending in "/"
    token: str
    sandbox: Sandbox
    ids: dict[str, list[str]]  # the seeded batches by kind
    rows: int  # rows in the ids CSV
    root: Path  # the server's root dir (the notebook's folder)
    log_path: Path

    def log_tail(self, n: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"\n--- {self.app.name} server log (tail) ---\n{text[-n:]}"


def _seed(sandbox: Sandbox, csv_path: Path) -> tuple[dict[str, list[str]], int]:
    """The same batches and CSV the notebook makes in its own sandbox mode."""
    ids = {
        "running": sandbox.create_batches(25, status="RUNNING", description="nightly load"),
        "queued": sandbox.create_batches(10, status="QUEUED", description="backfill"),
        "finished": sandbox.create_batches(5, status="STOPPED", description="finished"),
    }
    rows = [*ids["running"], *ids["queued"], *ids["finished"], "qrb_000000000bad", ids["running"][0], "not/an/id"]
    csv_path.write_text("batch_id,ticket\n" + "".join(f"{b},OPS-{100 + i}\n" for i, b in enumerate(rows)))
    return ids, len(rows)


@pytest.fixture(params=APPS, ids=lambda a: a.name)
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    app: App = request.param
    if importlib.util.find_spec(app.package) is None:
        pytest.skip(f"{app.package} is not installed: pip install -e '.[browser]'")
    home, root = tmp_path / "home", tmp_path / "root"
    home.mkdir()
    root.mkdir()
    shutil.copy(NOTEBOOK, root / "cleanup.ipynb")
    with Sandbox(seed=42) as sandbox:
        ids_csv = home / "stuck_batches.csv"
        ids, rows = _seed(sandbox, ids_csv)
        token, port = secrets.token_hex(24), free_port()
        env = jupyter_home(home, SUPERMETRICS_API_KEY=sandbox.api_key, SUPERMETRICS_BASE_URL=sandbox.base_url,
                           SMTK_IDS_CSV=str(ids_csv))
        s = Session(app, f"http://127.0.0.1:{port}/", token, sandbox, ids, rows, root, tmp_path / f"{app.name}-server.log")

        def shutdown() -> None:  # shuts the kernel down too
            requests.post(s.url + "api/shutdown", headers={"Authorization": f"token {token}"}, timeout=5)

        with running_server(jupyter_args(app.module, port, token, root), env, root, s.log_path, s.url + "api",
                            ok=lambda status: status == 200, shutdown=shutdown):
            yield s


def _bars(page: Any) -> list[dict[str, Any]]:
    """Every tqdm widget on the page (not the console's own bar): its text, value and style, as the browser shows them (each
    scrolled into view first: the notebook does not lay out cells that are off screen)."""
    bars = page.locator(".jp-Notebook .jp-OutputArea-output:not(:has(.itables_anywidget)) .widget-hprogress")
    found = []
    for i in range(bars.count()):
        bar = bars.nth(i)
        bar.scroll_into_view_if_needed()
        # laid out once on screen (cells off screen are skipped by the browser until then)
        bar.element_handle().wait_for_element_state("stable", timeout=GUARD_MS)
        page.wait_for_function("p => p.getBoundingClientRect().width > 0 && p.closest('.widget-hbox').innerText",
                               arg=bar.element_handle(), timeout=GUARD_MS)
        found.append(bar.evaluate("""p => {
            const box = p.closest('.widget-hbox');
            const bar = p.querySelector('.progress-bar');
            return {
                text: box ? box.innerText.replace(/\\s+/g, ' ').trim() : '',
                classes: bar ? bar.className : '',
                width: bar ? bar.style.width : '',
                color: bar ? getComputedStyle(bar).backgroundColor : '',
                // drawn: the bar takes room on screen and its filled part has the bar's width
                track: Math.round(p.getBoundingClientRect().width),
                filled: bar ? Math.round(bar.getBoundingClientRect().width) : 0,
            };
        }"""))
    return found


def _outputs_text(page: Any) -> str:
    """The text of every output area (textContent: cells off screen have no innerText)."""
    return page.eval_on_selector_all(".jp-Notebook .jp-OutputArea-output",
                                     "os => os.map(o => o.textContent).join('\\n')")


def _run_all(page: Any, app: App) -> None:
    """Run → Run All Cells, from the menu bar, as a user would."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).first.click()
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"], '
                 '.lm-Menu-item[data-command="notebook:run-all-cells"]').first.click()


def test_cleanup_notebook_in_chromium(session: Session) -> None:
    s, app = session, session.app
    # The server is not open: no token, no API (a redirect to the login page, or 403).
    for path in ("api/contents", "api/kernels", app.path.lstrip("/")):
        r = requests.get(s.url + path, timeout=10, allow_redirects=False)
        assert r.status_code in (302, 401, 403), (path, r.status_code)
        if r.status_code == 302:
            assert "/login" in r.headers["Location"], r.headers["Location"]
    assert requests.get(s.url + "api/contents", timeout=10,
                        headers={"Authorization": f"token {s.token}"}).status_code == 200

    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"{app.name}-failure.png").unlink(missing_ok=True)
    started = time.monotonic()
    with chromium_page(1280, 1000) as page:
        console_errors: list[str] = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        try:
            try:
                _drive(page, s)
            except BaseException:
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(ARTIFACTS / f"{app.name}-failure.png"))
                raise
        except (AssertionError, playwright_sync.Error) as exc:
            raise AssertionError(f"{exc}\nbrowser console errors: {console_errors[-10:]}" + s.log_tail()) from exc
    print(f"{app.name}: {time.monotonic() - started:.1f} s in the browser")
    for shot in ("after-run-all", "progress-bars", "panel-after-cancel"):
        assert (ARTIFACTS / f"{app.name}-{shot}.png").stat().st_size > 10_000, shot


def _drive(page: Any, s: Session) -> None:
    app, sandbox = s.app, s.sandbox
    page.goto(s.url + app.path.lstrip("/") + f"?token={s.token}", timeout=START_TIMEOUT * 1000)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=START_TIMEOUT * 1000)
    # The kernel is up before Run All: the server has started it and the page is connected to it
    # (the page says "Idle" already while it has no kernel, so the kernel's name is checked too).
    _wait_for_kernel(s)
    page.wait_for_function(
        """() => {
            const name = document.querySelector('.jp-Toolbar-kernelName, .jp-KernelName');
            const state = document.querySelector('.jp-Notebook-ExecutionIndicator');
            return name && /Python/.test(name.textContent) && state && state.dataset.status === 'idle';
        }""", timeout=START_TIMEOUT * 1000)
    code_cells = sum(c["cell_type"] == "code" for c in json.loads(NOTEBOOK.read_text())["cells"])
    page.wait_for_function(f"() => document.querySelectorAll('.jp-Notebook .jp-CodeCell').length >= {code_cells}",
                           timeout=START_TIMEOUT * 1000)
    assert page.locator(".jp-Notebook .jp-CodeCell").count() == code_cells

    _run_all(page, app)
    # Done when every code cell shows an execution count ([n]:, not [ ]: or [*]:).
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')];
            return prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:$/.test(p.textContent.trim()));
        }""", timeout=RUN_TIMEOUT)
    counts = page.eval_on_selector_all(".jp-Notebook .jp-CodeCell .jp-InputArea-prompt",
                                       "ps => ps.map(p => Number(p.textContent.trim().slice(1, -2)))")
    assert counts == list(range(counts[0], counts[0] + code_cells)), f"cells ran out of order: {counts}"
    # Widgets render asynchronously after their output arrives: give them time to settle.
    page.wait_for_function(
        """() => !/Loading widget|Error displaying widget/.test(document.querySelector('.jp-Notebook').textContent)
                 && document.querySelectorAll('.widget-hprogress').length >= 3""", timeout=GUARD_MS)

    # Every cell ran without an error output; stderr is allowed (smtoolkit may warn), tracebacks are not.
    text = _outputs_text(page)
    mime = '.jp-Notebook .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.{}"]'.format
    assert page.locator(mime("stdout")).count() > 0  # the outputs are marked by type (so the next line means something)
    assert page.locator(mime("error")).count() == 0, text[-3000:]
    stderr = page.locator(mime("stderr")).all_text_contents()
    print(f"{app.name}: {len(stderr)} stderr output(s): {stderr}")
    assert "Traceback" not in text and "Error displaying widget" not in text, text[-3000:]
    assert f"{s.rows} rows, {s.rows - 1} distinct IDs" in text

    # Two progress bars (look-up, dry run), drawn as widgets (not text), each ending green and
    # full, with the counts a user reads next to the bar.
    page.screenshot(path=str(ARTIFACTS / f"{app.name}-after-run-all.png"))
    _shot_of(page, ".jp-Notebook .jp-CodeCell:has(.widget-hprogress)", f"{app.name}-progress-bars.png")
    bars = _bars(page)
    assert len(bars) == 2, bars
    # Each bar counts the distinct well-formed IDs (the duplicate row and "not/an/id" are never sent).
    total = s.rows - 2
    cancelled = len(s.ids["running"]) + len(s.ids["queued"])
    for bar, desc in zip(bars, ("looking up", "dry run"), strict=True):
        assert bar["text"].startswith(f"{desc}: 100%") and f"{total}/{total} [" in bar["text"], bar
        # tqdm ends a finished run green: the style and the colour the user sees.
        assert "progress-bar-success" in bar["classes"] and bar["width"] == "100%", bar
        assert bar["color"] == "rgb(56, 142, 60)", bar
        # Drawn wide enough to read, and full: the long counts text beside it once squeezed the
        # bar to a few pixels in a 1280 px window; now the text wraps and the bar keeps 160 px.
        assert bar["track"] >= 150 and bar["filled"] >= bar["track"] - 2, bar
        assert "cannot draw" not in bar["text"]
    print(f"{app.name}: progress bars {[(b['track'], b['text']) for b in bars]}")
    assert "Widget Jupyter cannot draw" not in text and "HBox(children=" not in text

    # The console, drawn as a grid and controls: the cancel done in code shows in it.
    console = page.locator(".jp-OutputArea-output:has(.itables_anywidget)").first
    console.scroll_into_view_if_needed()
    page.wait_for_function(f"el => el.innerText.includes('Cancel done: cancelled {cancelled}')",
                           arg=console.element_handle(), timeout=GUARD_MS)
    assert console.locator(".itables_anywidget table tbody tr").count() >= 10
    _shot_of(page, ".jp-OutputArea-output:has(.itables_anywidget)", f"{app.name}-console.png")

    # The chart rendered as an image (matplotlib is in the test extra), the report was written.
    assert page.locator(".jp-Notebook .jp-RenderedImage img").count() == 1
    assert (s.root / "smtoolkit-cleanup" / "cleanup-report.csv").is_file()
    assert "report: " in text

    # The API saw the run: every seeded batch that was running or queued is now cancelled.
    assert all(sandbox.batch(b)["cancelled"] for b in s.ids["running"] + s.ids["queued"])  # type: ignore[index]
    assert not any(sandbox.batch(b)["cancelled"] for b in s.ids["finished"])  # type: ignore[index]
    # One DELETE per batch the console selected (RUNNING or QUEUED), none for the stopped or
    # unknown ones, the duplicate row or the malformed ID.
    # (A DELETE the server refused with 429, which a loaded machine's jitter can cause, was retried:
    # it reached no batch, so each selected ID was sent again and accepted once.)
    sent = [e for e in sandbox.requests if e["method"] == "DELETE"]
    assert {e["batch_id"] for e in sent} == {*s.ids["running"], *s.ids["queued"]}
    deletes = [e["batch_id"] for e in sent if e["status"] != 429]
    assert sorted(deletes) == sorted([*s.ids["running"], *s.ids["queued"]])

    # The panel, rendered as widgets in the last output that has them.
    panel = page.locator(".jp-OutputArea-output:has(button.jupyter-button)").last
    panel.scroll_into_view_if_needed()
    for label in ("Look up", "Cancel batch", "Confirm cancel", "Export history"):
        assert panel.locator("button.jupyter-button", has_text=label).count() == 1, label
    assert panel.locator("button.jupyter-button", has_text="Confirm cancel").is_disabled()

    # Someone pastes one more ID: a fresh running batch the notebook never saw.
    target = sandbox.create_batches(1, status="RUNNING", description="pasted in chat")[0]
    mark = len(sandbox.requests)
    batch_input = panel.locator(".widget-text input").first
    batch_input.click()
    batch_input.fill(target)
    # Enter looks it up, as the notebook says. (Not "type, then click Look up": JupyterLab 4.6
    # with ipykernel 7 handles the text box's change and the button's click on two different
    # threads, so that path can start two look-ups at once: reported, not tested here.)
    batch_input.press("Enter")
    card = panel.locator(".smtk-card")
    card.wait_for(timeout=GUARD_MS)
    # (the card's element is replaced at each update: watch the panel's output, which stays)
    page.wait_for_function(
        "el => el.innerText.includes('Look-up: would_cancel') && el.innerText.includes('RUNNING')",
        arg=panel.element_handle(), timeout=GUARD_MS)
    assert "pasted in chat" in card.inner_text()
    # One look-up so far (a second one, had Enter started two, is caught below: see `later`).
    lookup = [(e["method"], e["path"]) for e in sandbox.requests[mark:]]
    batch_path = f"{urlsplit(sandbox.base_url).path}/query/batch/{target}"
    assert lookup == [("GET", batch_path), ("GET", batch_path + "/status")], lookup

    # Cancel asks first: nothing is sent until confirmed.
    panel.locator("button.jupyter-button", has_text="Cancel batch").click()
    page.wait_for_function("el => el.innerText.includes('About to cancel')",
                           arg=panel.element_handle(), timeout=GUARD_MS)
    assert len(sandbox.requests) == mark + 2
    confirm = panel.locator("button.jupyter-button", has_text="Confirm cancel")
    assert confirm.is_enabled()
    confirm.click()
    page.wait_for_function("el => el.innerText.includes('Cancel: cancelled')",
                           arg=panel.element_handle(), timeout=GUARD_MS)
    card_text = card.inner_text()
    assert "STOPPED" in card_text and "UTC" in card_text, card_text
    history = panel.locator(".smtk-history").inner_text()
    assert "lookup" in history and "cancel" in history and target in history, history
    assert sandbox.batch(target)["cancelled"] is True  # type: ignore[index]
    assert confirm.is_disabled()
    _shot_of(page, ".jp-OutputArea-output:has(.smtk-history)", f"{app.name}-panel-after-cancel.png")

    # Nothing else was sent, then or later: the kernel takes the page's messages in order and
    # runs one request at a time, so one more look-up is answered after anything the steps
    # above started (a stray request shows up before its GETs).
    other = sandbox.create_batches(1, status="RUNNING", description="asked about later")[0]
    batch_input.fill(other)
    batch_input.press("Enter")
    page.wait_for_function(f"el => el.innerText.includes('{other}') && el.innerText.includes('Look-up: would_cancel')",
                           arg=panel.element_handle(), timeout=GUARD_MS)
    panel_requests = [(e["method"], e["path"], e["status"]) for e in sandbox.requests[mark:]]
    other_path = f"{urlsplit(sandbox.base_url).path}/query/batch/{other}"
    assert panel_requests == [("GET", batch_path, 200), ("GET", batch_path + "/status", 200),
                              ("DELETE", batch_path, 200),
                              ("GET", other_path, 200), ("GET", other_path + "/status", 200)], panel_requests


def _wait_for_kernel(s: Session) -> None:
    """Until the server has a session for the notebook whose kernel is idle."""
    sessions: list[Any] = []

    def idle() -> bool:
        sessions[:] = requests.get(s.url + "api/sessions", headers={"Authorization": f"token {s.token}"},
                                   timeout=10).json()
        return any(x["path"].endswith("cleanup.ipynb") and x["kernel"]["execution_state"] == "idle"
                   for x in sessions)

    wait_for(idle, "an idle kernel for the notebook", START_TIMEOUT, detail=lambda: f": {sessions}")


def _shot_of(page: Any, selector: str, name: str) -> None:
    """A screenshot of the page with `selector`'s element scrolled into view (the notebook
    scrolls inside its own panel, so a full-page shot would show only its first screen)."""
    el = page.locator(selector).last
    el.scroll_into_view_if_needed()
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")  # painted
    page.screenshot(path=str(ARTIFACTS / name))
