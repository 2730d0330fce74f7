"""The panel in a real browser: Voila serves smtoolkit/notebooks/panel.ipynb (which starts its own
sandbox), headless Chromium drives it as a user would, and the sandbox's request log
(read over its /_sandbox control API) says what really reached the API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.browser.chromium import ARTIFACTS, CHROMIUM, chromium_page
from tests.browser.servers import free_port, running_server, voila_args

ROOT = Path(__file__).parents[2]

pytestmark = pytest.mark.browser

if CHROMIUM is None:
    pytest.skip("no Chromium on this machine (apt-get install chromium); browser test not run",
                allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[browser]'")
pytest.importorskip("voila", reason="pip install -e '.[browser]'")


class Page:
    def __init__(self, url: str, ids_file: Path) -> None:
        self.url, self.ids_file = url, ids_file
        self.sandbox_url = ""

    def sandbox(self) -> list[str]:
        """[sandbox URL, batch IDs...] as the notebook wrote them once it ran."""
        lines = self.ids_file.read_text().split() if self.ids_file.exists() else []
        assert lines, "the notebook did not write its sandbox details"
        self.sandbox_url = lines[0]
        return lines

    def log(self) -> list[dict]:
        return requests.get(f"{self.sandbox_url}/_sandbox/requests", timeout=5).json()["data"]

    def truth(self, batch_id: str) -> dict:
        return requests.get(f"{self.sandbox_url}/_sandbox/batches/{batch_id}", timeout=5).json()["data"]


@pytest.fixture(scope="module")
def voila_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    home = tmp_path_factory.mktemp("home")
    ids_file = home / "sandbox-ids.txt"
    port = free_port()
    env = {**os.environ, "HOME": str(home), "SMTK_PANEL_IDS_OUT": str(ids_file), "SMTK_PANEL_SEED": "11",
           "JUPYTER_PLATFORM_DIRS": "1"}
    env.pop("SUPERMETRICS_API_KEY", None)
    env.pop("SUPERMETRICS_BASE_URL", None)
    url = f"http://127.0.0.1:{port}/"
    notebook = ROOT / "smtoolkit" / "notebooks" / "panel.ipynb"
    with running_server(voila_args(port, notebook), env, home, home / "voila.log", url + "api"):
        yield Page(url, ids_file)


def test_panel_in_chromium(voila_page: Page, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page(1100, 900) as page:
        page.goto(voila_page.url, timeout=90_000)
        batch_input = page.locator(".widget-text input").first
        batch_input.wait_for(state="visible", timeout=90_000)

        # The notebook wrote where its sandbox listens and which batches it made.
        _, *ids = voila_page.sandbox()
        target = ids[0]

        # The panel renders: its parts are on the page.
        for label in ("Look up", "Cancel batch", "Confirm cancel", "Export history"):
            assert page.locator("button.jupyter-button", has_text=label).count() == 1, label

        # Look-up: typing an ID and pressing Enter shows its status.
        batch_input.fill(target)
        batch_input.press("Enter")
        card = page.locator(".smtk-card")
        card.wait_for(timeout=120_000)
        page.wait_for_function("() => document.querySelector('.smtk-card')?.innerText.includes('RUNNING')",
                               timeout=120_000)
        assert "would_cancel" in card.inner_text()

        # Cancel asks for confirmation first; nothing is sent until confirmed.
        page.locator("button.jupyter-button", has_text="Cancel batch").click()
        page.wait_for_function("() => document.body.innerText.includes('About to cancel')", timeout=120_000)
        assert not [e for e in voila_page.log() if e["method"] == "DELETE"]
        confirm = page.locator("button.jupyter-button", has_text="Confirm cancel")
        confirm.click()
        page.wait_for_function(
            "() => document.querySelector('.smtk-card')?.innerText.includes('Cancel: cancelled')",
            timeout=120_000)
        card_text = card.inner_text()
        assert "STOPPED" in card_text and "UTC" in card_text
        history = page.locator(".smtk-history").inner_text()
        assert "cancel" in history and "cancelled" in history and target in history
        deletes = [e for e in voila_page.log() if e["method"] == "DELETE"]
        assert len(deletes) == 1 and deletes[0]["batch_id"] == target
        assert voila_page.truth(target)["cancelled"] is True
        page.screenshot(path=str(ARTIFACTS / "panel-after-cancel.png"), full_page=True)

        # An invalid ID shows the error and sends nothing.
        before = len(voila_page.log())
        batch_input.fill("qrb_../../admin")
        batch_input.press("Enter")
        page.wait_for_function("() => document.body.innerText.includes('Not sent')", timeout=120_000)
        assert len(voila_page.log()) == before
        page.screenshot(path=str(ARTIFACTS / "panel-invalid-id.png"), full_page=True)
        # Nor later: the kernel takes the page's messages in order and runs one request at a
        # time, so a look-up after it is answered after anything the invalid ID started.
        batch_input.fill(ids[1])
        batch_input.press("Enter")
        page.wait_for_function("id => document.querySelector('.smtk-card')?.innerText.includes(id)",
                               arg=ids[1], timeout=120_000)
        later = voila_page.log()[before:]
        assert later and {(e["method"], e["batch_id"]) for e in later} == {("GET", ids[1])}, later
    assert (ARTIFACTS / "panel-after-cancel.png").stat().st_size > 10_000

