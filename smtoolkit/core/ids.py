"""Which batch IDs may be sent, and how an ID becomes exactly one URL path segment.

The API publishes no ID pattern (documented examples look like ``qrb_3feb5ff5c71e``), so
the rule is conservative: 1 to 256 of the URL-unreserved characters ``A-Z a-z 0-9 - . _ ~``,
and not made of dots alone. Such an ID never needs percent-encoding and can never name
another path; `path_segment` still encodes as a second line of defence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

MAX_ID_LENGTH = 256
_SAFE = re.compile(rf"[A-Za-z0-9._~-]{{1,{MAX_ID_LENGTH}}}")
_DOTS = re.compile(r"\.+")
_STRIP = " \t\r\n\x0b\x0c\ufeff\u00a0"


@dataclass(frozen=True, slots=True)
class Checked:
    """One input value after normalization: `batch_id` is set, or `problem` says why not."""

    batch_id: str | None
    problem: str | None = None


def check_id(value: object) -> Checked:
    """Normalize one raw ID (strip surrounding blanks) and decide whether it may be sent."""
    if type(value) is str:
        text = value.strip(_STRIP)
    elif isinstance(value, str):
        text = str(value).strip(_STRIP)
    elif isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > 4 * MAX_ID_LENGTH:
            # Over 300 digits; str() itself raises beyond 4300 digits (Python 3.11+).
            return Checked(None, f"batch ID longer than {MAX_ID_LENGTH} characters")
        text = str(value)
    elif _is_missing(value):
        return Checked(None, "missing batch ID")
    else:
        return Checked(None, f"a batch ID must be text, not {type(value).__name__}")
    if not text:
        return Checked(None, "empty batch ID")
    if _SAFE.fullmatch(text) is None:
        if len(text) > MAX_ID_LENGTH:
            return Checked(None, f"batch ID longer than {MAX_ID_LENGTH} characters")
        return Checked(None, "batch ID may only contain A-Z a-z 0-9 - . _ ~")
    if _DOTS.fullmatch(text):
        return Checked(None, "batch ID may not be '.' or '..'")
    return Checked(text)


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    # pandas.NA and NaT without importing pandas into the core.
    return type(value).__name__ in ("NAType", "NaTType")


def path_segment(batch_id: str) -> str:
    """Percent-encode an ID as exactly one path segment ('/' and everything else escaped)."""
    return quote(batch_id, safe="")


@dataclass(slots=True)
class Plan:
    """What to do with each input position.

    ids[i] is the normalized ID, or None with problems[i] saying why; duplicates[i] is the
    position of the earlier row with the same ID; `unique` lists IDs to send, in input order.
    """

    ids: list[str | None]
    problems: dict[int, str]
    duplicates: dict[int, int]
    unique: list[str]


def plan(values: Iterable[object]) -> Plan:
    """Normalize, validate and de-duplicate IDs in one pass (linear time)."""
    ids: list[str | None] = []
    problems: dict[int, str] = {}
    duplicates: dict[int, int] = {}
    seen: dict[str, int] = {}
    unique: list[str] = []
    safe, dots, strip = _SAFE.fullmatch, _DOTS.fullmatch, _STRIP
    for i, value in enumerate(values):
        # Fast path for the common case: clean text IDs.
        if type(value) is str and safe(text := value.strip(strip)) is not None and dots(text) is None:
            batch_id = text
        else:
            c = check_id(value)
            if c.batch_id is None:
                problems[i] = c.problem or "invalid batch ID"
                ids.append(None)
                continue
            batch_id = c.batch_id
        ids.append(batch_id)
        earlier = seen.setdefault(batch_id, i)
        if earlier == i:
            unique.append(batch_id)
        else:
            duplicates[i] = earlier
    return Plan(ids, problems, duplicates, unique)
