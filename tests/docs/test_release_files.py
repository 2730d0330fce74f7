"""The files a package has, and the version kept in one place."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from smtoolkit._version import __version__

REPO = Path(__file__).resolve().parents[2]


def latest_release() -> str:
    """The first `## [x.y.z] - date` heading of CHANGELOG.md (below Unreleased)."""
    text = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert text.index("## [Unreleased]") < text.index("## [0."), "Unreleased comes first"
    m = re.search(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", text, re.M)
    assert m, "CHANGELOG.md has no release heading like '## [0.2.0] - 2026-12-07'"
    return m.group(1)


def test_the_version_is_the_latest_release_in_the_changelog() -> None:
    assert __version__ == latest_release() == "0.2.0"


def test_smtoolkit_version_prints_it() -> None:
    p = subprocess.run([sys.executable, "-m", "smtoolkit", "--version"], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert p.returncode == 0 and p.stdout.strip() == f"smtoolkit {__version__}"


def test_pyproject_reads_the_version_from_the_one_place() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "smtoolkit._version.__version__"}


def test_license_contributing_and_changelog_exist() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    license_text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert project["license"] == "MIT" and license_text.startswith("MIT License")
    assert "## Unreleased" in (REPO / "CHANGELOG.md").read_text(encoding="utf-8").replace("[Unreleased]", "Unreleased")
    contributing = (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8")
    assert all(word in contributing for word in ("ARCHITECTURE.md", ".ci/run", "-m slow", "benchmarks", "browser"))


def test_the_notebooks_are_package_data() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "notebooks/*.ipynb" in project["tool"]["setuptools"]["package-data"]["smtoolkit"]
    assert sorted(p.name for p in (REPO / "smtoolkit" / "notebooks").glob("*.ipynb")) == ["cleanup.ipynb", "panel.ipynb"]
