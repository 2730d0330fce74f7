"""Exceptions smtoolkit raises.

Only mistakes the caller must fix raise; what happens to individual batches (404, 429, a
dropped connection...) is data in the report, never an exception.

    SmtoolkitError
     ├── ConfigError   bad or missing API key, base URL or setting       (also a ValueError)
     └── InputError    the batches given cannot be read as batch IDs     (also a ValueError)
"""

from __future__ import annotations


class SmtoolkitError(Exception):
    """Base class of everything smtoolkit raises on purpose."""


class ConfigError(SmtoolkitError, ValueError):
    """The client cannot be set up as asked: fix the setting named in the message."""


class InputError(SmtoolkitError, ValueError):
    """The input cannot be turned into batch IDs: fix the input named in the message."""
