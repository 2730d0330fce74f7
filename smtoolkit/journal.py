"""A crash-safe journal of results, one JSON object per line (JSON Lines).

Every result is appended and flushed the moment it is known, so a killed process loses at
most the requests it had in flight. Reading tolerates a torn last line. The first line
names the API base URL the journal belongs to; the API key is never written.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from .core.outcomes import FINAL, Outcome, Result, parse_time
from .errors import InputError

FORMAT = "smtoolkit-journal"
VERSION = 1
_RESULT_FIELDS = [f.name for f in fields(Result) if f.name != "batch"]


def _path(path: str | os.PathLike[str]) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InputError("journal must be a file path such as 'cleanup.journal.jsonl'")
    p = Path(path).expanduser()
    if p.is_dir():
        raise InputError(f"journal {str(p)!r} is a directory; give a file name")
    if not p.parent.is_dir():
        raise InputError(f"cannot write journal {str(p)!r}: the directory {str(p.parent)!r} does not exist")
    return p


def read(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, dict[str, Result]]:
    """(header, {batch_id: last result}) from a journal; unreadable lines are skipped."""
    p = _path(path)
    if not p.exists():
        return None, {}
    header: dict[str, Any] | None = None
    results: dict[str, Result] = {}
    with p.open("r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash
            if not isinstance(record, dict):
                continue
            if record.get("format") == FORMAT:
                header = header or record
                continue
            r = _result(record)
            if r is not None and r.batch_id:
                results[r.batch_id] = r
    return header, results


def _result(record: dict[str, Any]) -> Result | None:
    try:
        outcome = Outcome(record.get("outcome"))
    except ValueError:
        return None
    values = {name: record.get(name) for name in _RESULT_FIELDS}
    values["outcome"] = outcome
    for name in ("cancel_time", "end_time"):
        values[name] = parse_time(values[name])
    for name in ("http_status", "ratelimit_remaining"):
        values[name] = values[name] if isinstance(values[name], int) else None
    values["attempts"] = values["attempts"] if isinstance(values["attempts"], int) else 0
    values["elapsed_s"] = float(values["elapsed_s"]) if isinstance(values["elapsed_s"], (int, float)) else 0.0
    return Result(**values)  # type: ignore[arg-type]


class Journal:
    """Appends results to a journal file; use as a context manager."""

    def __init__(self, path: str | os.PathLike[str], base_url: str) -> None:
        self.path = _path(path)
        self.base_url = base_url
        header, self.previous = read(self.path)
        if header is not None and header.get("base_url") != base_url:
            raise InputError(
                f"journal {str(self.path)!r} belongs to {header.get('base_url')!r}, not {base_url!r}: "
                "use a new journal file for another API"
            )
        self._fh: IO[str] | None = None
        self._header_needed = header is None

    def done(self) -> dict[str, Result]:
        """Results already final (cancelled, already_stopped, not_found): not to be sent again."""
        return {k: r for k, r in self.previous.items() if r.outcome in FINAL}

    def __enter__(self) -> "Journal":
        try:
            needs_newline = False
            if self.path.exists() and self.path.stat().st_size:
                with self.path.open("rb") as fh:
                    fh.seek(-1, os.SEEK_END)
                    needs_newline = fh.read(1) != b"\n"
            self._fh = self.path.open("a", encoding="utf-8", newline="\n")
            if needs_newline:
                self._fh.write("\n")  # isolate a torn last line from what follows
            if self._header_needed:
                self._write({"format": FORMAT, "version": VERSION, "base_url": self.base_url})
        except OSError as exc:
            raise InputError(f"cannot write journal {str(self.path)!r}: {exc.strerror or exc}") from None
        return self

    def append(self, result: Result) -> None:
        record = {name: getattr(result, name) for name in _RESULT_FIELDS}
        record["outcome"] = result.outcome.value
        self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        assert self._fh is not None, "use the journal as a context manager"
        self._fh.write(json.dumps(record, default=_iso, ensure_ascii=False) + "\n")
        self._fh.flush()

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            try:
                os.fsync(self._fh.fileno())
            except OSError:
                pass
            self._fh.close()
            self._fh = None


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)
