"""smtoolkit: cancel Supermetrics query batches in bulk, paced by the API's rate limits,
with a truthful report of what happened to every row.

Everything a user may import is listed in `__all__`; other modules are internal. Names that
need pandas, requests or ipywidgets are imported on first use, so `smtoolkit --help` and
`--version` do not pay for them.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import ConfigError, InputError, JournalError, SmtoolkitError

if TYPE_CHECKING:
    from .api import budget_plan, cancel_batch, cancel_batches, get_batches
    from .client import Client
    from .core.outcomes import FINAL, Outcome, Result
    from .frames import export_csv, read_report, summarize, to_retry
    from .ui.console import CancelConsole
    from .ui.panel import CancelPanel

__all__ = [
    "CancelConsole",
    "CancelPanel",
    "Client",
    "ConfigError",
    "FINAL",
    "InputError",
    "JournalError",
    "Outcome",
    "Result",
    "SmtoolkitError",
    "__version__",
    "budget_plan",
    "cancel_batch",
    "cancel_batches",
    "export_csv",
    "get_batches",
    "read_report",
    "summarize",
    "to_retry",
]

# Where each lazily imported public name lives.
_LAZY = {
    "CancelConsole": ".ui.console",
    "CancelPanel": ".ui.panel",
    "Client": ".client",
    "FINAL": ".core.outcomes",
    "Outcome": ".core.outcomes",
    "Result": ".core.outcomes",
    "budget_plan": ".api",
    "cancel_batch": ".api",
    "cancel_batches": ".api",
    "export_csv": ".frames",
    "get_batches": ".api",
    "read_report": ".frames",
    "summarize": ".frames",
    "to_retry": ".frames",
}

# A library does not configure logging; this only keeps Python's last-resort handler from
# printing our warnings a second time (they are also issued with `warnings`).
logging.getLogger("smtoolkit").addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # once imported, a plain attribute
        return value
    raise AttributeError(f"module 'smtoolkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
