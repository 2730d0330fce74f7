"""The cleanup console in headless Chromium, in Voilà and in JupyterLab, driven by clicks as a
user would: 200 rows, Refresh all, tick RUNNING and type "1h" in Older than, Select all
matching, Cancel selected…, Confirm, and watch the rows turn STOPPED. The sandbox (in this
process, so its batches can be made older) is the judge: one DELETE per selected ID, none for
the others. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from smtoolkit.sandbox import Sandbox
from tests.browser.chromium import ARTIFACTS, CHROMIUM, chromium_page
from tests.browser.servers import free_port, jupyter_args, jupyter_home, running_server, voila_args

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.browser

if CHROMIUM is None:
    pytest.skip("no Chromium on this machine (apt-get install chromium); browser test not run",
                allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[browser]'")

NOTEBOOK_CODE = """import os
import pandas as pd
import smtoolkit as sm

batches = pd.read_csv(os.environ["SMTK_IDS_CSV"], dtype=str)
console = sm.CancelConsole(batches, base_url=os.environ["SUPERMETRICS_BASE_URL"], max_rps=100)
console"""


@dataclass
class Served:
    name: str
    url: str  # the page to open
    sandbox: Sandbox
    ids: dict[str, list[str]]


def _seed(sb: Sandbox, csv_path: Path) -> dict[str, list[str]]:
    """200 batches: 60 RUNNING for two hours, 60 RUNNING for minutes, 50 QUEUED for two hours, 30 STOPPED."""
    ids = {"old": sb.create_batches(60, description="stuck load", age=2 * 3600),
           "young": sb.create_batches(60, description="fresh load"),
           "queued": sb.create_batches(50, status="QUEUED", description="old backfill", age=2 * 3600),
           "stopped": sb.create_batches(30, status="STOPPED", description="finished")}
    rows = [b for kind in ("old", "young", "queued", "stopped") for b in ids[kind]]
    csv_path.write_text("batch_id\n" + "".join(f"{b}\n" for b in rows))
    return ids


def _write_notebook(path: Path) -> None:
    metadata = json.loads((ROOT / "smtoolkit" / "notebooks" / "cleanup.ipynb").read_text())["metadata"]  # the kernel, named
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": "c0nsole1", "metadata": {},
                     "outputs": [], "source": NOTEBOOK_CODE}],
          "metadata": metadata,
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


@pytest.fixture(params=["voila", "jupyterlab"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    home, root = tmp_path / "home", tmp_path / "root"
    home.mkdir()
    root.mkdir()
    _write_notebook(root / "console.ipynb")
    with Sandbox(seed=24, per_second=200) as sb:
        ids = _seed(sb, home / "ids.csv")
        port, token = free_port(), secrets.token_hex(16)
        env = jupyter_home(home, SUPERMETRICS_API_KEY=sb.api_key, SUPERMETRICS_BASE_URL=sb.base_url,
                           SMTK_IDS_CSV=str(home / "ids.csv"))
        base = f"http://127.0.0.1:{port}/"
        if request.param == "voila":
            args, page_url = voila_args(port, root / "console.ipynb"), base
        else:
            args, page_url = jupyter_args("lab", port, token, root), f"{base}lab/tree/console.ipynb?token={token}"
        with running_server(args, env, root, tmp_path / f"{request.param}.log", base + "api"):
            yield Served(request.param, page_url, sb, ids)


def _console(page: Any, served: Served) -> Any:
    """The console's output area, once drawn (in JupyterLab after Run All)."""
    if served.name == "jupyterlab":
        page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=90_000)
        # Run All once the page is connected to a running kernel (before, JupyterLab asks which one).
        page.wait_for_function("""() => {
            const name = document.querySelector('.jp-Toolbar-kernelName, .jp-KernelName');
            const state = document.querySelector('.jp-Notebook-ExecutionIndicator');
            return name && /Python/.test(name.textContent) && state && state.dataset.status === 'idle';
        }""", timeout=90_000)
        page.locator(".jp-Notebook .jp-Cell").first.click()
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).first.click()
        page.locator('.lm-Menu-item[data-command="runmenu:run-all"], '
                     '.lm-Menu-item[data-command="notebook:run-all-cells"]').first.click()
    box = page.locator(".widget-vbox:has(.itables_anywidget)").first
    try:
        box.wait_for(state="visible", timeout=120_000)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / f"console-{served.name}-not-drawn.png"))
        raise
    _wait_text(page, box, "of 200 selected")
    page.wait_for_function("el => el.querySelectorAll('.itables_anywidget tbody tr').length >= 10",
                           arg=box.element_handle(), timeout=120_000)
    return box


def _button(box: Any, label: str) -> Any:
    return box.locator("button.jupyter-button", has_text=label).first


def _wait_text(page: Any, box: Any, text: str, timeout: int = 60_000) -> None:
    try:
        page.wait_for_function("([el, t]) => el.innerText.includes(t)", arg=[box.element_handle(), text],
                               timeout=timeout)
    except Exception as exc:
        page.screenshot(path=str(ARTIFACTS / "console-waiting-failed.png"))
        raise AssertionError(f"never showed {text!r}; it shows: {box.inner_text()[-1500:]}") from exc


def test_filter_select_cancel_confirm_in_chromium(served: Served) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    sb, old = served.sandbox, served.ids["old"]
    with chromium_page(1280, 1100) as page:
        page.goto(served.url, timeout=90_000)
        box = _console(page, served)
        assert [r for r in sb.requests if r["method"] == "DELETE"] == []

        _button(box, "Refresh all").click()  # GETs only: now the status and the age are known
        _wait_text(page, box, "Look-up done:")
        assert {r["method"] for r in sb.requests} == {"GET"} and len(sb.requests) == 200

        box.locator(".widget-checkbox", has_text="RUNNING").locator("input").check()
        box.locator(".widget-text", has_text="Older than").locator("input").fill("1h")
        _button(box, "Select all matching").click()
        _wait_text(page, box, "60 of 200 selected")
        page.screenshot(path=str(ARTIFACTS / f"console-{served.name}-selected.png"))

        _button(box, "Cancel selected").click()
        _wait_text(page, box, "Cancel 60 selected batches (RUNNING 60)")
        # The plan is shown by the click's own handler, which starts nothing: nothing was sent.
        assert [r for r in sb.requests if r["method"] == "DELETE"] == []
        page.screenshot(path=str(ARTIFACTS / f"console-{served.name}-plan.png"))
        _button(box, "Confirm").click()
        _wait_text(page, box, "Cancel done: cancelled 60")
        # The grid's first page (the old RUNNING rows come first) now reads STOPPED / cancelled.
        page.wait_for_function("el => [...el.querySelectorAll('.itables_anywidget tbody tr')].slice(0, 10)"
                               ".every(tr => tr.innerText.includes('STOPPED') && tr.innerText.includes('cancelled'))",
                               arg=box.element_handle(), timeout=120_000)
        _wait_text(page, box, "0 of 200 selected")
        page.screenshot(path=str(ARTIFACTS / f"console-{served.name}-after-cancel.png"))
        ticked = _tick_in_grid(page, box, "fresh load", 2)
        _wait_text(page, box, "2 of 200 selected")  # the grid's ticks reached Python, after its redraws
        _button(box, "Cancel selected").click()
        _wait_text(page, box, "Cancel 2 selected batches (RUNNING 2)")
        _button(box, "Confirm").click()
        _wait_text(page, box, "Cancel done: cancelled 2")
        page.screenshot(path=str(ARTIFACTS / f"console-{served.name}-ticked-cancel.png"))
    assert set(ticked) <= set(served.ids["young"])
    deletes = [r["batch_id"] for r in sb.requests if r["method"] == "DELETE"]
    assert sorted(deletes) == sorted(old + ticked)  # exactly one DELETE per selected ID, none for the others
    assert all(sb.batch(b)["cancelled"] for b in old + ticked)  # type: ignore[index]
    others = [b for b in served.ids["young"] if b not in ticked] + served.ids["queued"] + served.ids["stopped"]
    assert not any(sb.batch(b)["cancelled"] for b in others)  # type: ignore[index]


def _tick_in_grid(page: Any, box: Any, search: str, n: int) -> list[str]:
    """Narrow the grid with its own search box, click the first `n` rows as a user ticks them;
    returns their batch IDs as the grid shows them."""
    box.locator(".itables_anywidget input[type=search]").first.fill(search)
    rows = box.locator(".itables_anywidget tbody tr")
    page.wait_for_function("([el, t]) => { const rs = [...el.querySelectorAll('.itables_anywidget tbody tr')];"
                           " return rs.length > 0 && rs.every(tr => tr.innerText.includes(t)); }",
                           arg=[box.element_handle(), search], timeout=120_000)
    ticked = []
    for i in range(n):
        row = rows.nth(i)
        ticked.append(row.locator("td").first.inner_text().strip())
        row.locator("td").nth(1).click()
    return ticked
