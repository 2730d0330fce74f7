"""The README and docs/ as a reader uses them: every runnable code block runs against a sandbox,
every other `python`/`bash` block says it is illustrative, and the README stays a front door.

Blocks are found and run by mktestdocs (`grab_code_blocks`, its Python and bash executors): a
page's Python blocks run in order in one namespace; each shell block runs in `bash -e -u`. They
run in an empty folder with `smtoolkit` on the PATH, SUPERMETRICS_API_KEY and
SUPERMETRICS_BASE_URL pointing at a fresh sandbox, and stuck_batches.csv holding 30 of its
RUNNING batch IDs. The README's Quick start is left to `.ci/run`, which runs it as written.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from mktestdocs import grab_code_blocks
from mktestdocs.__main__ import check_raw_file_full, exec_bash

from smtoolkit.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").rglob("*.md"))]
ILLUSTRATIVE = re.compile(r'(python|bash) title="illustrative[^"]*"')
CODE_LANGS = {"python", "python3", "py", "bash", "sh", "shell", "console", "pycon", "zsh"}


def name(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def runnable_text(path: Path) -> str:
    """The page as the runner sees it: the README without its Quick start (CI runs that)."""
    text = path.read_text(encoding="utf-8")
    if path == README:
        start = text.index("## Quick start")
        end = text.index("\n## ", start + 1)
        text = text[:start] + text[end:]
    return text


def fences(text: str) -> list[tuple[int, str]]:
    """(line number, info string) of every opening fence, fences inside longer fences skipped."""
    found, outer = [], None
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*(`{3,})(.*)$", line)
        if not m:
            continue
        ticks, info = m.groups()
        if outer is None:
            outer = ticks
            found.append((n, info.strip()))
        elif ticks == outer and not info.strip():
            outer = None
    return found


def blocks(lang: str) -> list[tuple[str, str]]:
    return [(name(p), runnable_text(p)) for p in PAGES if grab_code_blocks(runnable_text(p), lang=lang)]


@pytest.fixture
def reader_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> Path:
    """An empty folder, a sandbox with 30 RUNNING batches in stuck_batches.csv, its settings in
    the environment, and a `smtoolkit` command that runs this checkout with this interpreter."""
    ids = sandbox.create_batches(30)
    (tmp_path / "stuck_batches.csv").write_text("batch_id\n" + "".join(f"{i}\n" for i in ids), encoding="utf-8")
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "smtoolkit"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m smtoolkit "$@"\n', encoding="utf-8")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SUPERMETRICS_API_KEY", sandbox.api_key)
    monkeypatch.setenv("SUPERMETRICS_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("page", "text"), blocks("python"), ids=[n for n, _ in blocks("python")])
def test_the_python_blocks_of_a_page_run(page: str, text: str, reader_folder: Path) -> None:
    check_raw_file_full(text, lang="python")


@pytest.mark.skipif(shutil.which("bash") is None, reason="the shell blocks are bash")
@pytest.mark.parametrize(("page", "text"), blocks("bash"), ids=[n for n, _ in blocks("bash")])
def test_the_shell_blocks_of_a_page_run(page: str, text: str, reader_folder: Path) -> None:
    for block in grab_code_blocks(text, lang="bash"):
        exec_bash(block)  # raises CalledProcessError when a command fails


def test_there_are_blocks_of_both_kinds_to_run() -> None:
    assert len(blocks("python")) >= 6 and len(blocks("bash")) >= 3


@pytest.mark.parametrize("path", PAGES, ids=name)
def test_every_python_or_shell_block_runs_or_says_it_is_illustrative(path: Path) -> None:
    """mktestdocs runs only fences tagged exactly `python` or `bash`: a block tagged `py` or
    `python notest` would silently not run, so any other code fence must be marked."""
    wrong = [(n, info) for n, info in fences(runnable_text(path))
             if info.split(" ")[0] in CODE_LANGS and info not in ("python", "bash") and not ILLUSTRATIVE.fullmatch(info)]
    assert not wrong, f"{name(path)}: fences neither run nor marked illustrative (line, info): {wrong}"


def test_a_failing_block_fails_the_test(tmp_path: Path) -> None:
    """The runner this suite relies on raises for a broken block of either kind."""
    with pytest.raises(ZeroDivisionError):
        check_raw_file_full("```python\nx = 1\n```\n\n```python\nx / 0\n```\n", lang="python")
    with pytest.raises(Exception):  # noqa: B017 - subprocess.CalledProcessError, whatever its module
        exec_bash("false")


# -- the README as a front door --------------------------------------------------------------

def test_the_readme_is_at_most_250_lines() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 250, f"README.md has {lines} lines; move sections into docs/"


def test_the_readme_links_only_to_files_that_exist() -> None:
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link.split("#")[0] for link in links if not re.match(r"[a-z]+:", link) and not link.startswith("#")]
    assert any(link.startswith("docs/") for link in local)
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_every_docs_page_is_reachable_from_the_readme_or_the_site() -> None:
    """Each page in docs/ is in mkdocs.yml's nav (pages other helpers add are listed there too)."""
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    pages = [p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md")]
    assert not [p for p in pages if f": {p}" not in nav], "docs pages missing from mkdocs.yml's nav"


def test_the_readme_quick_start_holds_the_two_commands_ci_runs() -> None:
    quick = README.read_text(encoding="utf-8").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    firsts = [b.splitlines()[0] for b in re.findall(r"^```bash\n(.*?)^```", quick, re.S | re.M)]
    assert firsts[:2] == [
        "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/smtoolkit demo",
        'python3 -m venv .venv && .venv/bin/pip install -e ".[test,browser]" && .venv/bin/python -m pytest',
    ]
