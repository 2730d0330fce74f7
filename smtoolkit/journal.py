"""A crash-safe journal of results, one JSON object per line (JSON Lines).

Every result is appended and flushed the moment it is known, so a killed process loses at
most the requests it had in flight. Reading tolerates a torn last line. A header line names
the API base URL the journal belongs to; the API key is never written.

Exact by construction:
- a record counts only after a header for this base URL; a journal holding a header for
  another API (two journals concatenated, say) is refused before anything is sent;
- only one run at a time may write a journal: an OS file lock (`filelock`) on
  `<journal>.lock`, released by the OS if the process dies, so a killed run never blocks
  the next one.

Each run that writes appends a header line of its own (the first one starts the file): the
base URL, and what the run keeps on record: when it started, the operator (the OS user name),
the reason given (or null) and its process ID. Older readers take it as a repeated header.
A reader that only looks (`survey`, `smtoolkit journal`) never takes the lock.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, TypeVar

from filelock import FileLock, Timeout

from .core.answers import safe_text
from .core.outcomes import FINAL, REPORT_COLUMNS, SETTLED, Outcome, Result, parse_time, restored
from .core.record import check_reason
from .errors import InputError, JournalError

FORMAT = "smtoolkit-journal"
VERSION = 1
_RESULT_FIELDS = list(REPORT_COLUMNS)
T = TypeVar("T")


def _path(path: str | os.PathLike[str]) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InputError("journal must be a file path such as 'cleanup.journal.jsonl'")
    p = Path(path).expanduser()
    if p.is_dir():
        raise InputError(f"journal {str(p)!r} is a directory; give a file name")
    if not p.parent.is_dir():
        raise InputError(f"cannot write journal {str(p)!r}: the directory {str(p.parent)!r} does not exist")
    return p


def read(path: str | os.PathLike[str], base_url: str | None = None) -> tuple[dict[str, Any] | None, dict[str, Result]]:
    """(last header, {batch_id: last result}) from a journal; unreadable lines are skipped.

    Records before the first header are not trusted. With `base_url`, a header for any other
    base URL raises JournalError naming its line (without it, the first header decides). The
    last header is the latest run's (its reason and operator, when it wrote them).
    """
    p = _path(path)
    if not p.exists():
        return None, {}
    header: dict[str, Any] | None = None
    first: dict[str, Any] | None = None
    results: dict[str, Result] = {}
    try:
        fh = p.open("r", encoding="utf-8", errors="replace")
    except OSError as exc:
        raise JournalError(f"cannot read journal {str(p)!r}: {exc.strerror or exc}") from None
    shared: dict[Any, Any] = {}
    with fh, _collector_paused():
        for number, line in enumerate(fh, 1):
            record = _decode(line)
            if record is None:
                continue  # a line torn by a crash, or not a JSON object
            if "format" in record and record["format"] == FORMAT:
                first, header = first or record, record
                expected = base_url if base_url is not None else first.get("base_url")
                if record.get("base_url") != expected:
                    raise JournalError(
                        f"journal {str(p)!r} line {number} starts a section for {record.get('base_url')!r}, "
                        f"not {expected!r}: a journal belongs to one API; use a new journal file for another")
                version = record.get("version")
                if not isinstance(version, int) or version > VERSION:
                    raise JournalError(f"journal {str(p)!r} line {number} has format version {version!r}, "
                                       f"newer than this smtoolkit reads ({VERSION}): upgrade smtoolkit")
                continue
            if header is None:
                continue  # not under any header: not trusted
            r = _result(record, shared)
            if r is not None and r.batch_id:
                results[r.batch_id] = r
    return header, results


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (process-wide) while a journal is read: the
    results are kept, and a million of them would be traversed again and again for nothing.
    It is resumed afterwards, unless it was off to begin with."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


# What json.loads runs for a line, without its per-call wrapping (the C scanner, where there is one).
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_JSON_SPACE = " \t\n\r"


def _decode(line: str) -> dict[str, Any] | None:
    """The JSON object on `line`, or None when json.loads would fail or return something else.

    The journal's own lines (`{...}` and a line end) are scanned directly, which costs a
    third of json.loads; any other line goes through json.loads itself."""
    if line.startswith("{"):
        try:
            value, end = _scan(line, 0)
        except (ValueError, StopIteration, RecursionError):
            return None
        if end != len(line) and line[end:].strip(_JSON_SPACE):
            return None  # "Extra data": json.loads refuses the line
        return value  # type: ignore[no-any-return]
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


_OUTCOMES = {o.value: o for o in Outcome}
_FIELDS = itemgetter(*_RESULT_FIELDS)
_MAX_COUNT = 2**53
_SHARED = 10_000  # distinct values shared per read


def _result(record: dict[str, Any], shared: dict[Any, Any] | None = None) -> Result | None:
    """The Result a decoded record holds, or None when it holds none (no known outcome, or a
    batch_id that is not text). A field of the wrong type or range reads as missing (attempts
    as 0, elapsed_s as 0.0), so nothing a journal holds can break a report.

    Values that repeat across records (status and error texts, the remaining budget) are kept
    once through `shared`, for the first 10,000 distinct ones: a million results fit in less.
    Written out field by field: this runs once per journal line."""
    try:
        (batch_id, outcome, http_status, status_code, error_code, error_message, error_description,
         request_id, cancel_time, end_time, attempts, elapsed_s, ratelimit_remaining) = _FIELDS(record)
    except KeyError:  # not one of the journal's own records: absent fields are None
        (batch_id, outcome, http_status, status_code, error_code, error_message, error_description,
         request_id, cancel_time, end_time, attempts, elapsed_s, ratelimit_remaining) = map(record.get, _RESULT_FIELDS)
    if type(batch_id) is not str or type(outcome) is not str or (outcome := _OUTCOMES.get(outcome)) is None:
        return None
    if shared is None:
        shared = {}
    seen = shared.get
    return restored(
        batch_id, outcome,
        http_status if type(http_status) is int and 0 <= http_status < _MAX_COUNT else None,
        (seen(status_code) or _share(status_code, shared)) if type(status_code) is str else None,
        (seen(error_code) or _share(error_code, shared)) if type(error_code) is str else None,
        (seen(error_message) or _share(error_message, shared)) if type(error_message) is str else None,
        (seen(error_description) or _share(error_description, shared)) if type(error_description) is str else None,
        request_id if type(request_id) is str else None,
        None if cancel_time is None else parse_time(cancel_time),
        None if end_time is None else parse_time(end_time),
        attempts if type(attempts) is int and 0 <= attempts < _MAX_COUNT else 0,
        float(elapsed_s) if type(elapsed_s) in (float, int) and 0 <= elapsed_s < 1e12 else 0.0,
        ((seen(ratelimit_remaining) or _share(ratelimit_remaining, shared))
         if type(ratelimit_remaining) is int and 0 <= ratelimit_remaining < _MAX_COUNT else None))


def _share(value: T, shared: dict[Any, Any]) -> T:
    """Remember `value` as the one to share, while fewer than 10,000 are remembered."""
    if len(shared) < _SHARED:
        shared[value] = value
    return value


class Journal:
    """A journal one run owns: `with Journal(path, base_url) as j:` locks it (when writing),
    reads what earlier runs recorded (`j.done()`), and appends results (`j.append`).

    Raises JournalError (an InputError) before anything is sent when the journal is locked by
    another run, belongs to another API, or cannot be opened. `append` raises JournalError
    when the disk refuses a write; the run that called it ends and reports why.
    """

    def __init__(self, path: str | os.PathLike[str], base_url: str, *, write: bool = True,
                 reason: str | None = None, operator: str | None = None) -> None:
        self.path = _path(path)
        self.base_url = base_url
        self.write = write
        self.operator = operator
        self.reason = reason  # once entered: the run's reason, the latest run's when none is given
        self.earlier_reason: str | None = None  # once entered: the reason of the latest earlier run
        self._final: dict[str, Result] = {}
        self._lock = FileLock(str(self.path) + ".lock") if write else None
        self._fh: IO[str] | None = None

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r}, write={self.write})"

    def done(self) -> Mapping[str, Result]:
        """Results already settled (cancelled, already_stopped, not_found, and left_alone: the
        rows a confirmed plan chose not to cancel): not to be sent again. A read-only view: a
        million of them are not copied."""
        return MappingProxyType(self._final)

    def __enter__(self) -> Journal:
        if self._lock is not None:
            try:
                # filelock reports a lock file it cannot create as "held": find that out first.
                with open(self._lock.lock_file, "a", encoding="utf-8"):
                    pass
            except OSError as exc:
                raise JournalError(f"cannot write journal {str(self.path)!r}: {exc.strerror or exc}") from None
            try:
                self._lock.acquire(timeout=0)
            except Timeout:
                owner = _lock_owner(self._lock.lock_file)
                who = ("another run in this process" if owner == os.getpid()
                       else f"process {owner}" if owner else "another run")
                raise JournalError(f"journal {str(self.path)!r} is in use by {who}: only one run at a time "
                                   "may use a journal (wait for it to finish, or use another journal file)") from None
            except OSError as exc:
                raise JournalError(f"cannot lock journal {str(self.path)!r}: {exc.strerror or exc}") from None
        try:
            header, self._final = read(self.path, self.base_url)
            _keep_final(self._final)
            self.earlier_reason = check_reason((header or {}).get("reason"))[0]
            if self.reason is None:
                self.reason = self.earlier_reason  # a resume keeps the reason on record
            if self.write:
                self._open()
        except BaseException:
            self._unlock()
            raise
        return self

    def _open(self) -> None:
        try:
            needs_newline = False
            if self.path.exists() and self.path.stat().st_size:
                with self.path.open("rb") as fh:
                    fh.seek(-1, os.SEEK_END)
                    needs_newline = fh.read(1) != b"\n"
            self._fh = self.path.open("a", encoding="utf-8", newline="\n")
            if needs_newline:
                self._fh.write("\n")  # isolate a torn last line from what follows
            self._write(run_header(self.base_url, reason=self.reason, operator=self.operator))
        except OSError as exc:
            self._close_quietly()
            raise JournalError(f"cannot write journal {str(self.path)!r}: {exc.strerror or exc}") from None

    def append(self, result: Result) -> None:
        """Record one result, flushed to the OS at once; JournalError if that fails."""
        try:
            self._write(record_of(result))
        except OSError as exc:
            raise JournalError(f"the journal {str(self.path)!r} could not be written "
                               f"({exc.strerror or exc})") from None

    def _write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            raise OSError("the journal is not open for writing")
        self._fh.write(record_line(record))
        self._fh.flush()

    def close(self) -> None:
        """Sync, close and unlock; JournalError if the last writes could not be saved."""
        error: OSError | None = None
        if self._fh is not None:
            try:
                self._fh.flush()
                os.fsync(self._fh.fileno())
            except OSError as exc:
                error = exc
            self._close_quietly()
        self._unlock()
        if error is not None:
            raise JournalError(f"the journal {str(self.path)!r} could not be saved "
                               f"({error.strerror or error})")

    def _close_quietly(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.close()
            except OSError:
                pass  # the fd is closed all the same

    def _unlock(self) -> None:
        if self._lock is not None and self._lock.is_locked:
            try:
                self._lock.release()
            except OSError:
                pass

    def __exit__(self, *exc: object) -> None:
        self.close()


def _keep_final(results: dict[str, Result]) -> None:
    """Drop the results that are not settled, in place (no second dict of a million entries)."""
    final = tuple(SETTLED)  # `in` a tuple tests identity first; an Enum's hash is Python code
    for batch_id in [k for k, r in results.items() if r.outcome not in final]:
        del results[batch_id]


def run_header(base_url: str, *, reason: str | None, operator: str | None) -> dict[str, Any]:
    """The header line a writing run starts with: the journal's format and base URL, then what
    the run keeps on record (when it started, who ran it, why, and its process ID)."""
    return {"format": FORMAT, "version": VERSION, "base_url": base_url,
            "started_at": datetime.now(UTC), "operator": operator, "reason": reason, "pid": os.getpid()}


def record_of(result: Result) -> dict[str, Any]:
    """A result as a journal record: the report's fields, the outcome as its string value."""
    record = {name: getattr(result, name) for name in _RESULT_FIELDS}
    record["outcome"] = result.outcome.value
    return record


def record_line(record: dict[str, Any]) -> str:
    """One JSON Lines line, newline included, as the journal writes it (times in ISO 8601 UTC)."""
    return json.dumps(record, default=_iso, ensure_ascii=False) + "\n"


def _lock_owner(lock_file: str) -> int | None:
    """The PID holding an OS lock on `lock_file`, where the OS tells (Linux: /proc/locks)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return _proc_locks_owner(lock_file)
    except (OSError, ValueError):
        return None


def _proc_locks_owner(lock_file: str) -> int | None:
    """The PID holding a lock on `lock_file` as /proc/locks lists it (Linux), or None when no
    process holds one; OSError when the lock file or /proc/locks cannot be read."""
    st = os.stat(lock_file)
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks", encoding="ascii", errors="replace") as fh:
        for line in fh:
            parts = line.split()
            # "1: FLOCK  ADVISORY  WRITE 4242 fe:01:1234 0 EOF" (a blocked waiter has "->")
            if "->" not in parts and len(parts) >= 6 and parts[5] == wanted and parts[4].isdigit():
                return int(parts[4])
    return None


def holder(path: str | os.PathLike[str]) -> tuple[bool | None, int | None]:
    """(held, pid): whether a run holds the journal's lock now, and its process ID, as far as
    the OS tells without taking the lock (taking it, even for a moment, could turn away the run
    that is starting). Linux lists locks in /proc/locks: (True, pid) or (False, None). Other
    systems do not tell: (None, None), unknown."""
    if not sys.platform.startswith("linux"):
        return None, None
    lock_file = str(path) + ".lock"
    if not os.path.exists(lock_file):
        return False, None
    try:
        pid = _proc_locks_owner(lock_file)
    except (OSError, ValueError):
        return None, None
    return pid is not None, pid


def survey(path: str | os.PathLike[str], *, now: datetime | None = None) -> dict[str, Any]:
    """What a journal says so far, read without taking its lock (a run may be writing it: a
    torn last line is a record being written, skipped like any unreadable line).

    Keys (stable; `smtoolkit journal -o json` prints them): `journal`, `base_url`, `settled`
    (batches with a result), `final` (of those, the ones a resumed run would not send again),
    `outcomes` ({outcome: batches}, in the outcome order), `last_written_at` (the file's
    modification time, ISO 8601 UTC) and `seconds_since_last_write`, `held` (true/false, null
    where the OS does not tell) and `holder_pid`, and from the latest run's header `reason`,
    `operator`, `run_started_at` and `run_pid`. Raises JournalError when the file is missing,
    is not a journal, or cannot be read."""
    p = _path(path)
    try:
        mtime = p.stat().st_mtime
    except OSError as exc:
        raise JournalError(f"cannot read journal {str(p)!r}: {exc.strerror or exc}") from None
    header, results = read(p)
    if header is None:
        raise JournalError(f"{str(p)!r} is not a smtoolkit journal (it has no journal header line)")
    counts: dict[str, int] = {o.value: 0 for o in Outcome}
    for r in results.values():
        counts[r.outcome.value] += 1
    final = tuple(FINAL)
    written = datetime.fromtimestamp(mtime, UTC)
    held, pid = holder(p)
    return {"journal": str(p), "base_url": _text_or_none(header.get("base_url")), "settled": len(results),
            "final": sum(r.outcome in final for r in results.values()),
            "outcomes": {k: v for k, v in counts.items() if v},
            "last_written_at": _iso(written),
            "seconds_since_last_write": round(max(0.0, ((now or datetime.now(UTC)) - written).total_seconds()), 3),
            "held": held, "holder_pid": pid, "reason": check_reason(header.get("reason"))[0],
            "operator": _text_or_none(header.get("operator")),
            "run_started_at": _text_or_none(header.get("started_at")),
            "run_pid": header.get("pid") if type(header.get("pid")) is int else None}


def _text_or_none(value: Any) -> str | None:
    """Text a journal holds, made encodable; anything else (a hand-edited line) as None."""
    return safe_text(value)[0] if isinstance(value, str) else None


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)
