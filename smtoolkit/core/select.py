"""Which rows of the cleanup console a selection takes, and what a cancel of it would cost.

One place decides: `criteria` checks what the user asked for (raising `InputError` naming a
misspelt status, an unreadable age, or no criterion at all), `matching` returns the positions
of the rows that meet every criterion given. Invalid and duplicate input values never become
rows (`core.ids.plan` decides them), so they can never be selected. "Now" is passed in: no
clock is read here.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..errors import InputError

#: Batch statuses the API documents, and so the only ones `status=` accepts.
STATUSES = ("QUEUED", "RUNNING", "STOPPED")
#: Outcomes after which the batch is known to be over: `all=True` leaves these rows out, and a
#: cancel drops them from the selection (a retry could not change them).
FINAL_OUTCOMES = frozenset({"cancelled", "already_stopped", "not_found"})
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_AGE = re.compile(r"(?:(\d+(?:\.\d+)?)\s*([dhms]))\s*", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True, slots=True)
class Row:
    """What the console knows of one batch: its last seen status and record, and the outcome
    of the last request about it (None until known)."""

    batch_id: str
    status: str | None = None
    outcome: str | None = None
    schedule_time: datetime | None = None
    description: str | None = None

    @property
    def final(self) -> bool:
        """Known to be over: STOPPED, or a cancel/look-up said so (cancelled, not found...)."""
        return self.status == "STOPPED" or self.outcome in FINAL_OUTCOMES


@dataclass(frozen=True, slots=True)
class Criteria:
    """A checked selection request; every field that is not None must match."""

    ids: frozenset[str] | None = None
    statuses: frozenset[str] | None = None
    older_than: float | None = None  # seconds
    description: re.Pattern[str] | None = None
    all: bool = False


def parse_age(value: object) -> float:
    """Seconds from a number of seconds, a `timedelta`, or text such as "90m", "2h",
    "1h30m", "1d", "45s" or "3600"; InputError for anything else or a negative age."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise InputError(f"older_than must be seconds, a timedelta or text like '2h', not {value!r}")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _age_text(value)
    else:
        raise InputError(f"older_than must be seconds, a timedelta or text like '2h', not {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise InputError(f"older_than must be a finite age of 0 or more, not {value!r}")
    return seconds


def _age_text(value: str) -> float:
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    total, at = 0.0, 0
    units: list[str] = []
    for m in _AGE.finditer(text):
        if m.start() != at:
            break
        unit = m.group(2).lower()
        if unit in units:
            break
        units.append(unit)
        total += float(m.group(1)) * _UNITS[unit]
        at = m.end()
    if not text or at != len(text) or units != sorted(units, key="dhms".index):
        raise InputError(f"older_than {value!r} is not an age: use seconds, or text like '90m', '2h', '1h30m', '1d'")
    return total


def parse_statuses(value: object) -> frozenset[str]:
    """The statuses asked for (one name or a list, any case); InputError naming a misspelt one."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, Iterable):
        raise InputError(f"status must be a status or a list of them ({', '.join(STATUSES)}), not {value!r}")
    found: set[str] = set()
    for name in names:
        text = name.strip().upper() if isinstance(name, str) else None
        if text not in STATUSES:
            close = difflib.get_close_matches(text or "", STATUSES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"unknown status {name!r}{hint}: a batch status is one of {', '.join(STATUSES)}")
        found.add(text)
    if not found:
        raise InputError("status names no status: give one or more of " + ", ".join(STATUSES))
    return frozenset(found)


def _pattern(value: object) -> re.Pattern[str]:
    if isinstance(value, re.Pattern):
        if not isinstance(value.pattern, str):
            raise InputError("description must be a text pattern, not a bytes pattern")
        return value
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"description must be non-empty text or a compiled regex, not {value!r} "
                         "(an empty filter would match every row)")
    return re.compile(re.escape(value), re.IGNORECASE)


def criteria(*, ids: object = None, status: object = None, older_than: object = None,
             description: object = None, all: bool = False) -> Criteria:  # noqa: A002 - the documented name
    """Check a selection request; InputError when no criterion is given or one is unreadable."""
    if ids is None and status is None and older_than is None and description is None and not all:
        raise InputError("select needs at least one criterion (ids=, status=, older_than=, description= "
                         "or all=True); the selection was left as it was")
    id_set = None
    if ids is not None:
        listed = [ids] if isinstance(ids, str) else list(ids) if isinstance(ids, Iterable) else None
        if listed is None or not all_text(listed):
            raise InputError(f"ids must be a list of batch IDs, not {ids!r}")
        id_set = frozenset(i.strip() for i in listed)
    return Criteria(
        ids=id_set,
        statuses=parse_statuses(status) if status is not None else None,
        older_than=parse_age(older_than) if older_than is not None else None,
        description=_pattern(description) if description is not None else None,
        all=bool(all),
    )


def all_text(values: Iterable[object]) -> bool:
    return all(isinstance(v, str) for v in values)


def matching(rows: Sequence[Row], c: Criteria, now: datetime) -> list[int]:
    """Positions of the rows meeting every criterion of `c`, in table order. A row whose
    schedule time is not known never matches `older_than`; `all` leaves out final rows."""
    cutoff = now - timedelta(seconds=c.older_than) if c.older_than is not None else None
    search = c.description.search if c.description is not None else None
    out: list[int] = []
    for i, r in enumerate(rows):
        if c.ids is not None and r.batch_id not in c.ids:
            continue
        if c.statuses is not None and r.status not in c.statuses:
            continue
        if cutoff is not None and (r.schedule_time is None or not r.schedule_time < cutoff):
            continue
        if search is not None and (r.description is None or search(r.description) is None):
            continue
        if c.all and r.final:
            continue
        out.append(i)
    return out


def unknown_ids(rows: Sequence[Row], c: Criteria) -> list[str]:
    """The IDs `c` names that are no row (invalid, or not in the input), sorted."""
    if c.ids is None:
        return []
    known = {r.batch_id for r in rows}
    return sorted(c.ids - known)


def still_to_retry(outcome: str | None) -> bool:
    """Whether a row stays selected after a cancel: a retry could still change it."""
    return outcome not in FINAL_OUTCOMES


def cancel_plan(rows: Sequence[Row], *, remaining: int | None, limit: int | None, kept: int,
                max_rps: float, over_budget: str | None) -> str:
    """One line: how many rows a cancel takes, by status last seen, the requests it costs, what
    the hourly budget allows now (the reserve kept), and an estimate, labelled as such.
    `over_budget` is the engine's own line for a run beyond the budget (or None)."""
    n = len(rows)
    counts: dict[str, int] = {}
    for r in rows:
        key = r.status or "not looked up"
        counts[key] = counts.get(key, 0) + 1
    order = [*STATUSES, *sorted(k for k in counts if k not in STATUSES)]
    by_status = ", ".join(f"{k} {counts[k]:,}" for k in order if k in counts)
    head = f"Cancel {n:,} selected batch{'es' if n != 1 else ''} ({by_status}): {n:,} DELETE request(s), " \
           "plus retries if the server fails"
    if over_budget is not None:
        return f"{head}; {over_budget}"
    if remaining is None or limit is None:
        budget = "the hourly budget is not known yet (no answer has shown it)"
    else:
        budget = (f"the hourly budget allows {max(0, remaining - kept):,} now ({remaining:,} left of {limit:,}, "
                  f"{kept:,} kept for production)")
    seconds = n / max_rps if max_rps > 0 else 0.0
    return f"{head}; {budget}; estimate: about {_duration(seconds)} at {max_rps:g} requests/s"


def _duration(seconds: float) -> str:
    s = max(0, math.ceil(seconds))
    if s < 60:
        return f"{s} s"
    h, m = divmod(math.ceil(s / 60), 60)
    return f"{h} h {m:02d} min" if h else f"{m} min"
