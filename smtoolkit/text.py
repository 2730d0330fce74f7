"""Text shown to people: cut to a width and stripped of what a terminal would obey.

A human-facing table or message shows at most a few dozen characters of any one value (a
20 MB line in an ID file must not become a 40 MB summary), and never a control character a
server or a file could use to move the cursor or clear the screen. Reports and files keep
every value whole; only what is printed is cut.
"""

from __future__ import annotations

import re

ELLIPSIS = "…"
#: C0 and C1 controls, DEL, and the bidirectional overrides that reorder what a line shows.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def shorten(text: str, width: int = 60) -> str:
    """`text` on one line, controls shown as escapes (`\\x1b`), cut to `width` characters with …"""
    cut = text[: width * 4 + 1]  # enough to fill `width` even when every character is escaped
    shown = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), cut)
    if len(shown) > width or len(text) > len(cut):
        return shown[: max(width - 1, 0)] + ELLIPSIS
    return shown
