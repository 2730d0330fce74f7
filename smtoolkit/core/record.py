"""What a run keeps on record about itself besides its results: the reason the operator gave.

The reason is user text and goes into the journal, the report's attrs and CSV, and the panel's
audit trail; it is checked once, here, so that every writer downstream can take it.
"""

from __future__ import annotations

from .answers import safe_text

#: The longest reason kept, in characters (a sentence or a ticket reference, not a document).
MAX_REASON = 2000


def check_reason(value: object) -> tuple[str | None, str | None]:
    """(the reason as kept, None), or (None, what is wrong with it).

    None or blank text means no reason. The text kept is stripped of surrounding white space,
    with lone surrogates replaced by U+FFFD (no UTF-8 writer can encode them); newlines and
    other control characters are kept (the journal's JSON escapes them, CSV quotes them, and
    printed text shows them as escapes)."""
    if value is None:
        return None, None
    if not isinstance(value, str):
        return None, f"reason must be text, not {type(value).__name__}"
    text = value.strip()
    if not text:
        return None, None
    if len(text) > MAX_REASON:
        return None, f"reason is {len(text):,} characters long; at most {MAX_REASON:,} are kept"
    return safe_text(text)[0], None
