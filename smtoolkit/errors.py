"""Exceptions smtoolkit raises.

Only mistakes the caller must fix raise; what happens to individual batches (404, 429, a
dropped connection...) is data in the report, never an exception.

    SmtoolkitError
     ├── ConfigError   bad or missing API key, base URL or setting       (also a ValueError)
     │    └── MissingKeyError   no API key given nor in $SUPERMETRICS_API_KEY
     └── InputError    the batches given cannot be read as batch IDs     (also a ValueError)
          └── JournalError   the journal cannot be used (locked by another run, foreign, unwritable)
"""

from __future__ import annotations


class SmtoolkitError(Exception):
    """Base class of everything smtoolkit raises on purpose."""


class ConfigError(SmtoolkitError, ValueError):
    """The client cannot be set up as asked: fix the setting named in the message."""


class MissingKeyError(ConfigError):
    """No API key: none was passed and $SUPERMETRICS_API_KEY is not set."""


class InputError(SmtoolkitError, ValueError):
    """The input cannot be turned into batch IDs: fix the input named in the message."""


class JournalError(InputError):
    """The journal cannot be read, locked or written: the message names the file and the cause.

    Raised before anything is sent. A journal that fails *during* a run never raises: the run
    ends, and the report says so (`report.attrs["halted"] == "error"`, rows `JOURNAL_ERROR`).
    """
