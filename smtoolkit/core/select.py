"""Which batches a selection takes, and what a cancel of it would cost: for the cleanup
console (`CancelConsole.select`) and for a cancel run that chooses by what each batch is
(`cancel_batches(only_status=, older_than=, description=)`, `smtoolkit cancel --only-status`).

One place decides: `criteria` checks what the user asked for (raising `InputError` naming a
misspelt status, an unreadable age, or no criterion at all), `matching` returns the positions
of the rows that meet every criterion given (`miss` says which criterion a row fails), and
`choose` turns a cancel run's look-ups into the rows it leaves alone and the IDs it cancels.
Invalid and duplicate input values never become rows (`core.ids.plan` decides them), so they
can never be selected. "Now" is passed in: no clock is read here.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ..errors import InputError
from .outcomes import FINAL, NOT_SELECTED, Outcome, Result, could_retry, parse_time

#: Batch statuses the API documents, and so the only ones `status=` accepts.
STATUSES = ("QUEUED", "RUNNING", "STOPPED")
#: Outcomes after which the batch is known to be over: `all=True` leaves these rows out.
FINAL_OUTCOMES = frozenset(o.value for o in FINAL)
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
    retry: bool = False  # only rows whose last outcome a retry could change (`outcomes.could_retry`)


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


def description_regex(text: object) -> re.Pattern[str]:
    """A case-insensitive regular expression from text (the command line's `--description`);
    InputError naming it when it is empty or not a valid expression."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"description must be a non-empty regular expression, not {text!r} "
                         "(an empty filter would match every batch)")
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise InputError(f"description {text!r} is not a valid regular expression: {exc}") from None


def criteria(*, ids: object = None, status: object = None, older_than: object = None,
             description: object = None, all: bool = False,  # noqa: A002 - the documented name
             retry: bool = False) -> Criteria:
    """Check a selection request; InputError when no criterion is given or one is unreadable."""
    if ids is None and status is None and older_than is None and description is None and not all and not retry:
        raise InputError("select needs at least one criterion (ids=, status=, older_than=, description=, "
                         "all=True or retry=True); the selection was left as it was")
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
        retry=bool(retry),
    )


def all_text(values: Iterable[object]) -> bool:
    return all(isinstance(v, str) for v in values)


def matching(rows: Sequence[Row], c: Criteria, now: datetime) -> list[int]:
    """Positions of the rows meeting every criterion of `c`, in table order. A row whose
    schedule time is not known never matches `older_than`; `all` leaves out final rows;
    `retry` takes only rows whose last outcome a retry could change."""
    cutoff = now - timedelta(seconds=c.older_than) if c.older_than is not None else None
    return [i for i, r in enumerate(rows) if miss(r, c, cutoff) is None]


def miss(r: Row, c: Criteria, cutoff: datetime | None) -> str | None:
    """The first criterion of `c` that row `r` fails ("ids", "status", "age", "description",
    "final", "retry"), or None when it meets them all. `cutoff`: now minus `older_than`."""
    if c.ids is not None and r.batch_id not in c.ids:
        return "ids"
    if c.statuses is not None and r.status not in c.statuses:
        return "status"
    if cutoff is not None and (r.schedule_time is None or not r.schedule_time < cutoff):
        return "age"
    if c.description is not None and (r.description is None or c.description.search(r.description) is None):
        return "description"
    if c.all and r.final:
        return "final"
    if c.retry and (r.outcome is None or not could_retry(r.outcome)):
        return "retry"
    return None


def unknown_ids(rows: Sequence[Row], c: Criteria) -> list[str]:
    """The IDs `c` names that are no row (invalid, or not in the input), sorted."""
    if c.ids is None:
        return []
    known = {r.batch_id for r in rows}
    return sorted(c.ids - known)


@dataclass(frozen=True, slots=True)
class Choice:
    """What a cancel run's look-ups decided: the rows it sends nothing more for (`decided`:
    left alone, already stopped, not found, look-up failed or not sent), the IDs it cancels
    (`to_cancel`, in input order), and what each readable look-up saw (`seen`)."""

    decided: Mapping[str, Result]
    to_cancel: tuple[str, ...]
    seen: Mapping[str, Row]


@dataclass(frozen=True, slots=True)
class CancelPlan:
    """The plan of a cancel run that chose by what each batch is, given to `on_plan` before any
    DELETE: its text (`str(plan)`, several lines), how many batches it cancels, how many it
    looked up."""

    text: str
    to_cancel: int
    looked_up: int

    def __str__(self) -> str:
        return self.text


def seen_row(lookup: Result) -> Row | None:
    """What a look-up read of a batch (status, schedule time, description), or None when it
    read no batch record (not found, a failure, not sent)."""
    if lookup.outcome not in (Outcome.WOULD_CANCEL, Outcome.ALREADY_STOPPED) or lookup.batch is None:
        return None
    description = lookup.batch.get("description")
    return Row(str(lookup.batch_id), lookup.status_code, None, parse_time(lookup.batch.get("schedule_time")),
               description if isinstance(description, str) else None)


def choose(ids: Sequence[str], lookups: Mapping[str, Result], c: Criteria, now: datetime,
           halted: tuple[str, str] | None = None) -> Choice:
    """Decide each looked-up ID. It is cancelled when it meets every criterion and its look-up
    saw it QUEUED or RUNNING (or a status not known). Otherwise its row is settled now:
    `left_alone` (it fails a criterion: the status seen and why), `already_stopped` (it
    matches, and was seen STOPPED: nothing to send), or the look-up's own row (`not_found`;
    a failure, which says the batch was not cancelled; `skipped`). When the look-ups halted,
    `halted` (the halt's code and message) makes every match `skipped`: no plan, no cancel."""
    cutoff = now - timedelta(seconds=c.older_than) if c.older_than is not None else None
    decided: dict[str, Result] = {}
    to_cancel: list[str] = []
    seen: dict[str, Row] = {}
    for b in ids:
        lookup = lookups[b]
        row = seen_row(lookup)
        if row is None:
            decided[b] = lookup if lookup.outcome in (Outcome.NOT_FOUND, Outcome.SKIPPED) else lookup_failed(lookup)
            continue
        seen[b] = row
        why = miss(row, c, cutoff)
        if why is not None:
            decided[b] = replace(lookup, outcome=Outcome.LEFT_ALONE, error_code=NOT_SELECTED,
                                 error_message=f"left alone: {_why(why, row, c)}", error_description=None)
        elif lookup.outcome is Outcome.ALREADY_STOPPED:
            decided[b] = lookup
        elif halted is not None:
            decided[b] = held_back(lookup, *halted)
        else:
            to_cancel.append(b)
    return Choice(decided, tuple(to_cancel), seen)


def lookup_failed(lookup: Result) -> Result:
    """The row of a batch whose look-up got no usable answer: its failure, and not cancelled."""
    said = lookup.error_message
    return replace(lookup, error_message="not cancelled: the look-up failed" + (f" ({said})" if said else ""))


def held_back(lookup: Result, code: str, message: str) -> Result:
    """The row of a chosen batch that was not sent its cancel (the look-ups halted, or the plan
    was not confirmed): `skipped` with `code` and `message`, the look-up's facts kept."""
    return replace(lookup, outcome=Outcome.SKIPPED, http_status=None, error_code=code, error_message=message,
                   error_description=None)


def with_lookup(result: Result, lookup: Result) -> Result:
    """A cancelled batch's row, counting its look-up's request(s) and time too."""
    return replace(result, attempts=result.attempts + lookup.attempts, elapsed_s=result.elapsed_s + lookup.elapsed_s)


def _why(key: str, row: Row, c: Criteria) -> str:
    if key == "status":
        wanted = ", ".join(s for s in STATUSES if c.statuses and s in c.statuses)
        return f"status {row.status or 'not known'} is not one of {wanted}"
    if key == "age":
        assert c.older_than is not None
        if row.schedule_time is None:
            return "its schedule time is not known, so it is not older than " + _duration(c.older_than)
        return f"scheduled {row.schedule_time:%Y-%m-%d %H:%M:%S} UTC, less than {_duration(c.older_than)} ago"
    if key == "description":
        assert c.description is not None
        return f"its description does not match {c.description.pattern!r}"
    return "not selected"


def selection_plan(choice: Choice, *, remaining: int | None, limit: int | None, kept: int, max_rps: float,
                   over_budget: str | None) -> str:
    """The plan of a cancel run that chose by what each batch is, one fact per line: what it
    cancels (by status seen, the DELETE requests, the budget, an estimate: `cancel_plan`),
    what it leaves alone (by status seen), and what it does not cancel for another reason."""
    chosen = [choice.seen[b] for b in choice.to_cancel]
    if chosen:
        head = cancel_plan(chosen, remaining=remaining, limit=limit, kept=kept, max_rps=max_rps,
                           over_budget=over_budget)
    else:
        head = "Cancel nothing: no batch matches (no DELETE request)"
    left: dict[str, int] = {}
    other: dict[str, int] = {}
    for b, r in choice.decided.items():
        if r.outcome is Outcome.LEFT_ALONE:
            key = choice.seen[b].status or "status not known"
            left[key] = left.get(key, 0) + 1
        else:
            other[r.outcome.value] = other.get(r.outcome.value, 0) + 1
    lines = [f"Plan: {head}"]
    n_left = sum(left.values())
    order = [*STATUSES, *sorted(k for k in left if k not in STATUSES)]
    lines.append(f"Left alone (not matching): {n_left:,}" + (
        " (" + ", ".join(f"{k} {left[k]:,}" for k in order if k in left) + ")" if left else ""))
    if other:
        lines.append("Not cancelled, as the look-up found them: " + ", ".join(f"{k} {v:,}" for k, v in sorted(other.items())))
    return "\n".join(lines)


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
