"""The tree tells the architecture: front-ends live in `smtoolkit/ui/` and nothing below imports
them; no function is a long room (at most 80 lines, the few known exceptions listed by name)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import smtoolkit

PACKAGE = Path(smtoolkit.__file__).parent
MAX_FUNCTION_LINES = 80
# Functions still over the limit, as "path/in/smtoolkit.py:Qualified.name".
LONG_FUNCTIONS_ALLOWED: set[str] = set()
# The front-ends, which may import `ui`; `__init__.py` names `ui.panel.CancelPanel` as public API.
FRONT_ENDS = {"cli.py", "demo.py", "__init__.py"}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text("utf-8"), str(path))


def _long_functions(tree: ast.AST, limit: int) -> Iterator[tuple[str, int]]:
    """(qualified name, lines from `def` to its last line) of every function over `limit`, nested ones too."""
    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                if lines > limit:
                    yield prefix + child.name, lines
                yield from walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    return walk(tree, "")


def _imported(module: str, tree: ast.AST) -> Iterator[str]:
    """The absolute names of the modules `module` (a path in the package) imports."""
    package = ["smtoolkit", *module.removesuffix(".py").split("/")[:-1]]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, *([node.module] if node.module else [])])
            yield name
            yield from (f"{name}.{a.name}" for a in node.names)  # `from . import ui`


def test_no_function_is_longer_than_80_lines() -> None:
    found = {f"{module}:{name}": lines for module, tree in _modules()
             for name, lines in _long_functions(tree, MAX_FUNCTION_LINES)}
    too_long = {name: lines for name, lines in found.items() if name not in LONG_FUNCTIONS_ALLOWED}
    assert too_long == {}, f"split these into functions of at most about 60 lines: {too_long}"
    no_longer = LONG_FUNCTIONS_ALLOWED - set(found)
    assert no_longer == set(), f"these are short now (or gone): remove them from LONG_FUNCTIONS_ALLOWED: {no_longer}"


def test_the_length_check_sees_methods_and_nested_functions() -> None:
    tree = ast.parse("class A:\n    def m(self):\n        def inner():\n" + "            x = 1\n" * 90)
    assert dict(_long_functions(tree, MAX_FUNCTION_LINES)) == {"A.m": 92, "A.m.inner": 91}


def test_front_ends_live_in_ui() -> None:
    ui = {p.name for p in (PACKAGE / "ui").glob("*.py")}
    assert ui == {"__init__.py", "console.py", "console_view.py", "panel.py", "html.py", "page.py", "server.py", "limits.py", "audit.py"}
    assert not [p.name for p in PACKAGE.glob("*.py") if p.name.startswith(("panel", "audit"))]


def test_nothing_below_the_front_ends_imports_ui() -> None:
    offenders = [f"{module}: {name}" for module, tree in _modules()
                 if module not in FRONT_ENDS and not module.startswith("ui/")
                 for name in _imported(module, tree) if name == "smtoolkit.ui" or name.startswith("smtoolkit.ui.")]
    assert offenders == []


def test_the_import_check_resolves_relative_imports() -> None:
    tree = ast.parse("from .ui.panel import CancelPanel\nfrom . import ui\nfrom ..config import x\n")
    assert {"smtoolkit.ui.panel", "smtoolkit.ui"} <= set(_imported("runner.py", tree))
    assert "smtoolkit.config" in set(_imported("ui/panel.py", tree))
