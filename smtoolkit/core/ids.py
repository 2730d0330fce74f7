"""Which batch IDs may be sent, and how an ID becomes exactly one URL path segment.

The API publishes no ID pattern (documented examples look like ``qrb_3feb5ff5c71e``), so
the rule is conservative: 1 to 256 of the URL-unreserved characters ``A-Z a-z 0-9 - . _ ~``,
and not made of dots alone. Such an ID never needs percent-encoding and can never name
another path; `path_segment` still encodes as a second line of defence.
"""

from __future__ import annotations

import math
import numbers
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
    elif _is_missing(value):
        return Checked(None, "missing batch ID")
    elif isinstance(value, numbers.Integral) and not _is_bool(value):
        # int and numpy integers alike (what pandas hands out): the number's decimal text.
        number = int(value)
        if number.bit_length() > 4 * MAX_ID_LENGTH:
            # Over 300 digits; str() itself raises beyond 4300 digits (Python 3.11+).
            return Checked(None, f"batch ID longer than {MAX_ID_LENGTH} characters")
        text = str(number)
    elif isinstance(value, numbers.Real) and not _is_bool(value):
        # A float column (pandas makes one when a numeric ID column has a gap): 1234.0 is the
        # ID 1234; anything with a fraction or beyond float's exact integers is refused.
        number_f = float(value)
        if not (math.isfinite(number_f) and number_f.is_integer()):
            return Checked(None, f"a numeric batch ID must be a whole number, not {number_f!r}")
        if abs(number_f) > 2**53:
            return Checked(None, f"the number {number_f!r} is too large to be an exact ID; give the ID as text")
        text = str(int(number_f))
    else:
        return Checked(None, f"a batch ID must be text or a whole number, not {type(value).__name__}")
    if not text:
        return Checked(None, "empty batch ID")
    if _SAFE.fullmatch(text) is None:
        if len(text) > MAX_ID_LENGTH:
            return Checked(None, f"batch ID longer than {MAX_ID_LENGTH} characters")
        return Checked(None, "batch ID may only contain A-Z a-z 0-9 - . _ ~")
    if _DOTS.fullmatch(text):
        return Checked(None, "batch ID may not be '.' or '..'")
    return Checked(text)


def _is_bool(value: object) -> bool:
    return isinstance(value, bool) or type(value).__name__ in ("bool_", "bool")


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        try:
            return math.isnan(float(value))
        except (TypeError, ValueError):
            return False
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
    safe, strip = _SAFE.fullmatch, _STRIP
    for i, value in enumerate(values):
        # Fast path for the common case: clean text IDs (not dots alone: something is left
        # once the dots are stripped, which is what _DOTS says, at a quarter of its cost).
        if type(value) is str and safe(text := value.strip(strip)) is not None and text.strip("."):
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
