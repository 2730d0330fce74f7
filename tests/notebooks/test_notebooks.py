"""Every notebook under smtoolkit/notebooks/ (shipped in the wheel) runs headless, top to bottom, against the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[2] / "smtoolkit" / "notebooks").glob("*.ipynb"))


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
        # What a Jupyter without the widget front-end shows in place of each widget (the bars and
        # the panel): plain text that says so and what to install, whole.
        widgets = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert len(widgets) >= 3
        for o in widgets:
            assert "pip install jupyterlab_widgets" in o["data"]["text/plain"], o["data"]["text/plain"]
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:  # the README's plain install (.ci/run's "plain" job)
            assert "No chart: matplotlib is not installed" in outputs


def test_the_cleanup_journal_survives_a_kernel_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two kernels, one after the other, on the same WORKDIR and API: the second sends no cancel
    for a batch the first one finished (the journal lives next to the notebook, not in a temp dir)."""
    from smtoolkit.sandbox import Sandbox

    path = next(p for p in NOTEBOOKS if p.name == "cleanup.ipynb")
    with Sandbox(seed=7, per_second=200) as api:
        ids = api.create_batches(6)
        ids_csv = tmp_path / "ids.csv"
        ids_csv.write_text("batch_id,ticket\n" + "".join(f"{i},OPS-{n}\n" for n, i in enumerate(ids)))
        monkeypatch.setenv("SUPERMETRICS_API_KEY", api.api_key)
        monkeypatch.setenv("SUPERMETRICS_BASE_URL", api.base_url)
        monkeypatch.setenv("SMTK_IDS_CSV", str(ids_csv))
        monkeypatch.delenv("SMTK_WORKDIR", raising=False)  # the default: next to the notebook
        deletes = []
        for _ in range(2):
            nb = nbformat.read(path, as_version=4)
            NotebookClient(nb, timeout=120, kernel_name="python3",
                           resources={"metadata": {"path": str(tmp_path)}}).execute()
            assert "Traceback" not in json.dumps(nb)
            deletes.append([r["batch_id"] for r in api.requests if r["method"] == "DELETE"])
        assert sorted(deletes[0]) == sorted(ids)  # the first kernel cancelled every batch
        assert deletes[1] == deletes[0]  # the second sent no DELETE at all
        assert all(api.batch(i)["cancelled"] for i in ids)  # type: ignore[index]
    assert (tmp_path / "smtoolkit-cleanup" / "cleanup.jsonl").is_file()
    assert (tmp_path / "smtoolkit-cleanup" / "cleanup-report.csv").is_file()
