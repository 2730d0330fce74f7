"""Every notebook under notebooks/ runs headless, top to bottom, against the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert {p.name for p in NOTEBOOKS} >= {"cleanup.ipynb", "panel.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_headless(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUPERMETRICS_API_KEY", raising=False)
    monkeypatch.delenv("SUPERMETRICS_BASE_URL", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = json.dumps(nb)
    assert "Traceback" not in text
    if path.name == "cleanup.ipynb":
        outputs = "".join(json.dumps(c.get("outputs", [])) for c in nb.cells if c.cell_type == "code")
        assert "cancelled" in outputs and "application/vnd.jupyter.widget-view+json" in outputs
        assert "report: " in outputs
