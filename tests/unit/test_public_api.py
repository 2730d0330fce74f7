"""The public surface is `smtoolkit.__all__`: sorted, complete, importable, typed."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

import smtoolkit


def test_all_is_sorted_and_importable() -> None:
    names = list(smtoolkit.__all__)
    assert names == sorted(names)
    for name in names:
        assert getattr(smtoolkit, name) is not None, name


def test_all_is_complete() -> None:
    """Every public name the package exposes is in __all__, and nothing else (as httpx checks)."""
    exposed = {name for name in dir(smtoolkit) if not name.startswith("_")} | {"__version__"}
    modules = {name for name in exposed if inspect.ismodule(getattr(smtoolkit, name))}
    helpers = {"annotations", "importlib", "logging", "TYPE_CHECKING", "Any"}
    assert exposed - modules - helpers == set(smtoolkit.__all__)
    assert smtoolkit.CancelPanel.__name__ == "CancelPanel" and smtoolkit.Client.__name__ == "Client"


def test_help_and_version_do_not_import_pandas() -> None:
    """The CLI's --help should feel instant: nothing heavy is imported to print it."""
    import subprocess
    import sys

    code = ("import sys, smtoolkit.cli as c; p = c.build_parser(); "
            "heavy = [m for m in ('pandas', 'requests', 'ipywidgets', 'numpy') if m in sys.modules]; "
            "print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout + done.stderr
    for args in (["--help"], ["--version"], ["cancel", "--help"]):
        run = subprocess.run([sys.executable, "-m", "smtoolkit", *args], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and "smtoolkit" in run.stdout


def test_errors_form_the_documented_tree() -> None:
    assert issubclass(smtoolkit.ConfigError, (smtoolkit.SmtoolkitError, ValueError))
    assert issubclass(smtoolkit.InputError, (smtoolkit.SmtoolkitError, ValueError))
    assert issubclass(smtoolkit.JournalError, smtoolkit.InputError)
    from smtoolkit.errors import MissingKeyError

    assert issubclass(MissingKeyError, smtoolkit.ConfigError)


def test_the_contract_signatures() -> None:
    params = inspect.signature(smtoolkit.Client).parameters
    assert list(params)[:7] == ["api_key", "base_url", "timeout", "max_rps", "reserve", "max_retries", "row_deadline"]
    assert params["base_url"].default == "https://api.supermetrics.com/enterprise/v2"
    assert (params["timeout"].default, params["max_rps"].default, params["max_retries"].default) == (30.0, 20.0, 5)
    cb = inspect.signature(smtoolkit.cancel_batches).parameters
    assert list(cb)[:7] == ["batches", "column", "client", "workers", "dry_run", "progress", "stop_on_auth_error"]
    assert (cb["column"].default, cb["workers"].default, cb["dry_run"].default) == ("batch_id", 4, False)
    assert "journal" in cb and "wait" in cb
    gb = inspect.signature(smtoolkit.get_batches).parameters
    assert list(gb)[:5] == ["batches", "column", "client", "workers", "progress"]
    # One keyword for per-query counts in both functions (with_progress= is get_batches' old name).
    assert cb["query_counts"].default is False and gb["query_counts"].default is False and "with_progress" not in gb
    assert cb["reason"].default is None


def test_package_is_typed() -> None:
    assert (Path(smtoolkit.__file__).parent / "py.typed").exists()


def test_pure_core_imports_no_io_or_frontend_libraries() -> None:
    core = Path(smtoolkit.__file__).parent / "core"
    banned = ("pandas", "requests", "tqdm", "ipywidgets", "socket", "urllib3", "threading", "time")
    for path in core.glob("*.py"):
        text = path.read_text()
        for name in banned:
            assert f"import {name}" not in text and f"from {name}" not in text, f"{path.name} imports {name}"


# -- a row's story: decided in the core, once, as an immutable value (issue 23) -------------------
PACKAGE = Path(smtoolkit.__file__).parent
#: The modules that pass rows along (client, gate, engine, pandas-facing API): none may decide one.
NO_OUTCOMES_HERE = ("client.py", "limiter.py", "runner.py", "api.py")


def test_no_outcome_is_decided_outside_the_core() -> None:
    for name in NO_OUTCOMES_HERE:
        tree = ast.parse((PACKAGE / name).read_text())
        named = [node.lineno for node in ast.walk(tree)
                 if (isinstance(node, ast.Name) and node.id == "Outcome")
                 or (isinstance(node, ast.Attribute) and node.attr == "Outcome")
                 or (isinstance(node, ast.alias) and node.name == "Outcome")]
        assert not named, f"{name} names Outcome (line {named[0]}): outcomes are decided in smtoolkit/core"


def test_a_result_is_frozen_and_changes_only_into_a_new_one() -> None:
    r = smtoolkit.Result("qrb_1", smtoolkit.Outcome.STOPPING, attempts=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.outcome = smtoolkit.Outcome.CANCELLED  # type: ignore[misc]
    later = dataclasses.replace(r, outcome=smtoolkit.Outcome.CANCELLED)
    assert r.outcome is smtoolkit.Outcome.STOPPING and later.outcome is smtoolkit.Outcome.CANCELLED


def test_reasons_are_one_enum_shared_by_the_gate_the_client_and_settle() -> None:
    from smtoolkit.core import settle
    from smtoolkit.core.reasons import Reason
    from smtoolkit.limiter import Limiter, Refused, RunContext

    assert set(settle.GAVE_UP) <= set(Reason) and set(settle.NOT_SENT) <= set(Reason)
    context = RunContext()
    context.halt.set()
    with pytest.raises(Refused) as info:
        Limiter(20.0, None).acquire(context, 1e9)
    assert info.value.reason is Reason.HALTED
    r = settle.settle(settle.Story("qrb_1", "DELETE", (), Reason.RESERVE))
    assert r.reason is Reason.RESERVE  # the runner halts on this value, not on the row's fields

