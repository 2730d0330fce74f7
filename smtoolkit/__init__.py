"""smtoolkit: cancel Supermetrics query batches in bulk, paced by the API's rate limits,
with a truthful report of what happened to every row.

Everything a user may import is listed in `__all__`; other modules are internal.
"""

import logging

from ._version import __version__
from .api import cancel_batch, cancel_batches, get_batches
from .client import Client
from .core.outcomes import FINAL, Outcome, Result
from .errors import ConfigError, InputError, JournalError, SmtoolkitError
from .frames import export_csv, summarize

__all__ = [
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
    "cancel_batch",
    "cancel_batches",
    "export_csv",
    "get_batches",
    "summarize",
]

# A library does not configure logging; this only keeps Python's last-resort handler from
# printing our warnings a second time (they are also issued with `warnings`).
logging.getLogger("smtoolkit").addHandler(logging.NullHandler())


def __getattr__(name: str) -> object:
    # The panel pulls in ipywidgets; import it only when asked for.
    if name == "CancelPanel":
        from .panel import CancelPanel

        return CancelPanel
    raise AttributeError(f"module 'smtoolkit' has no attribute {name!r}")
