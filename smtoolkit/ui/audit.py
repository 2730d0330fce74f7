"""The audit trail of the shared panel page: one line per look-up or cancel, appended as it happens.

Each line is a journal record (`journal.record_of`, written by `journal.record_line`: the report's
fields, times in ISO 8601 UTC) with four more fields in front: `at` (UTC time of the action),
`action` (`lookup` or `cancel`), `visitor` (the browser's address as the server saw it, or null)
and `base_url` (the API it went to); on a page that asks for a reason (`smtoolkit panel
--ask-reason`) also `reason`, the text in the page's reason box when the action started (null when empty). The API key is never written. The file has no journal
header, so no cancel run will take it for a journal by mistake.

Every visitor of the page is a kernel of its own, i.e. a process of its own, and they all append
to one file. Each line is written with a single `os.write` on an `O_APPEND` descriptor while an
OS file lock on `<audit>.lock` is held (filelock, as the journal): `O_APPEND` alone keeps whole
lines apart on a local POSIX disk, the lock makes it so on Windows (where appending is a seek and
a write) and on network drives. The file is reopened for every line, so a rotated trail is
followed, and synced before the call returns.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..core.outcomes import Result
from ..core.record import check_reason
from ..errors import InputError
from ..journal import record_line, record_of

DEFAULT_AUDIT = "smtoolkit-panel-audit.jsonl"
ACTIONS = ("lookup", "cancel")
LOCK_TIMEOUT = 10.0  # seconds to wait for another visitor's line to be written
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)  # no newline translation


def audit_path(path: str | os.PathLike[str]) -> Path:
    """The absolute path of an audit file that can be appended to, created (empty) if new.

    Raises InputError naming the file and the cause: a directory, a missing folder, no
    permission. Called once when the page is started, so a trail that cannot be written stops
    the server before anyone can use it.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InputError("the audit file must be a file path such as 'smtoolkit-panel-audit.jsonl'")
    p = Path(path).expanduser().absolute()
    if p.is_dir():
        raise InputError(f"the audit file {str(p)!r} is a directory; give a file name")
    if not p.parent.is_dir():
        raise InputError(f"cannot write the audit file {str(p)!r}: the directory {str(p.parent)!r} does not exist")
    try:
        os.close(os.open(p, _FLAGS, 0o666))
        with FileLock(str(p) + ".lock", timeout=LOCK_TIMEOUT):
            pass
    except OSError as exc:
        raise InputError(f"cannot write the audit file {str(p)!r}: {exc.strerror or exc}") from None
    return p


class AuditTrail:
    """Appends one record per action of one visitor's page to the audit file.

    `append` raises OSError when the line could not be written; the caller (the page) then
    refuses further actions, since they would leave no trail.
    """

    def __init__(self, path: str | os.PathLike[str], *, visitor: str | None, base_url: str,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.path = Path(path)
        self.visitor = visitor
        self.base_url = base_url
        self._now = now

    def record(self, action: str, result: Result, *reason: str | None) -> dict[str, Any]:
        """The audit record of one action (not written); with a `reason` (the panel passes one
        when it asks for it) a `reason` field, made encodable by `core.record.check_reason`."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, not {action!r}")
        said = {"reason": check_reason(reason[0])[0]} if reason else {}
        return {"at": self._now(), "action": action, "visitor": self.visitor, "base_url": self.base_url,
                **said, **record_of(result)}

    def append(self, action: str, result: Result, *reason: str | None) -> dict[str, Any]:
        """Write the record of one action as one line, synced to disk; returns the record."""
        record = self.record(action, result, *reason)
        line = record_line(record).encode("utf-8")
        with FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT):
            if _ends_torn(self.path):
                line = b"\n" + line  # isolate a line torn by a killed writer from this one
            fd = os.open(self.path, _FLAGS, 0o666)
            try:
                view = memoryview(line)
                while view:  # one write in practice; a short write is finished under the lock
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        return record


def _ends_torn(path: Path) -> bool:
    """True when the file does not end with a newline (a writer was killed mid-line)."""
    try:
        with path.open("rb") as fh:
            if fh.seek(0, os.SEEK_END) == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except FileNotFoundError:
        return False
