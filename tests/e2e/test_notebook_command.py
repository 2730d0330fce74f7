"""`smtoolkit notebook [DIR]`, run as a child process: the shipped notebooks written for a pip user."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run_cli

SHIPPED = Path(__file__).resolve().parents[2] / "smtoolkit" / "notebooks"
NAMES = ["cleanup.ipynb", "panel.ipynb"]


def test_writes_both_notebooks_into_a_folder_it_creates(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper"
    p = run_cli(None, "notebook", str(target), key=None)
    assert p.returncode == 0, p.stderr
    assert sorted(q.name for q in target.iterdir()) == NAMES
    for name in NAMES:
        assert (target / name).read_bytes() == (SHIPPED / name).read_bytes()
        assert json.loads((target / name).read_text(encoding="utf-8"))["nbformat"] == 4
        assert f"wrote {target / name}" in p.stdout


def test_the_default_folder_is_the_current_one(tmp_path: Path) -> None:
    p = run_cli(None, "notebook", key=None, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert sorted(q.name for q in tmp_path.iterdir()) == NAMES


def test_an_existing_notebook_is_kept_and_named_and_nothing_is_written(tmp_path: Path) -> None:
    mine = tmp_path / "cleanup.ipynb"
    mine.write_text("my own work", encoding="utf-8")
    p = run_cli(None, "notebook", str(tmp_path), key=None)
    assert p.returncode == 2
    assert str(mine) in p.stderr and "--force" in p.stderr
    assert mine.read_text(encoding="utf-8") == "my own work"
    assert not (tmp_path / "panel.ipynb").exists()  # all or nothing


def test_force_overwrites(tmp_path: Path) -> None:
    (tmp_path / "panel.ipynb").write_text("old", encoding="utf-8")
    p = run_cli(None, "notebook", str(tmp_path), "--force", key=None)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "panel.ipynb").read_bytes() == (SHIPPED / "panel.ipynb").read_bytes()


def test_a_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x", encoding="utf-8")
    p = run_cli(None, "notebook", str(a_file), key=None)
    assert p.returncode == 2
    assert str(a_file) in p.stderr and "is a file" in p.stderr
    assert a_file.read_text(encoding="utf-8") == "x"


def test_a_notebook_name_taken_by_a_folder_is_refused_even_with_force(tmp_path: Path) -> None:
    (tmp_path / "cleanup.ipynb").mkdir()
    p = run_cli(None, "notebook", str(tmp_path), "--force", key=None)
    assert p.returncode == 2
    assert str(tmp_path / "cleanup.ipynb") in p.stderr
    assert not (tmp_path / "panel.ipynb").exists()


def test_help_says_what_it_writes_and_its_exit_codes() -> None:
    p = run_cli(None, "notebook", "--help", key=None)
    assert p.returncode == 0
    assert "cleanup.ipynb" in p.stdout and "--force" in p.stdout and "Exit codes" in p.stdout
