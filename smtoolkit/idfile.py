"""Reading a file of batch IDs the way its user meant it: Excel's CSV exports included.

Encodings: UTF-8 with or without a BOM, UTF-16 with a BOM (Excel's "Unicode Text"), and
Windows-1252 (Excel's "CSV" on a Western Windows) when the bytes are not UTF-8. Separators:
comma, semicolon (Excel in many European locales), tab or `|`, detected from the header
line. Either can be given instead. What was guessed is said in `notes`, and a file that
still cannot be read raises one InputError naming the file and the options.
"""

from __future__ import annotations

import codecs
import io
from dataclasses import dataclass, field

import pandas as pd

from .errors import InputError
from .text import shorten

SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_OPTIONS = "use --encoding (utf-8, cp1252, utf-16...) and --sep (',' ';' 'tab' '|') to say how it is written"


@dataclass
class IdFile:
    """A file's IDs (`frame`, the ID column named `column`) and what was guessed to read it."""

    frame: pd.DataFrame
    encoding: str
    sep: str
    notes: list[str] = field(default_factory=list)


def read_id_file(data: bytes, name: str, column: str, *, encoding: str | None = None,
                 sep: str | None = None) -> IdFile:
    """Parse the bytes of an ID file (CSV/TSV, with or without a header naming `column`)."""
    notes: list[str] = []
    text, used = _decode(data, name, encoding, notes)
    if sep is not None and sep not in SEPARATORS:
        raise InputError(f"--sep must be one of ',' ';' 'tab' '|', not {sep!r}")
    if not text.strip():
        return IdFile(pd.DataFrame({column: pd.Series([], dtype="string")}), used, sep or ",", notes)
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0]
    chosen = sep or _detect_sep(header, name)
    if sep is None and chosen != ",":
        notes.append(f"{name}: read as {SEPARATORS[chosen]}-separated")
    try:
        df = pd.read_csv(io.StringIO(text), sep=chosen, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except (ValueError, pd.errors.ParserError) as exc:
        why = shorten((str(exc).strip().splitlines() or [""])[0], 200)
        raise InputError(f"cannot read {name} as CSV: {why}; {_OPTIONS}") from None
    if column in df.columns:
        return IdFile(df, used, chosen, notes)
    if len(df.columns) == 1:
        others = [s for s in SEPARATORS if s != chosen and s in header]
        if others:
            raise InputError(f"{name} has no column {shorten(column, 40)!r}, and its header {shorten(header, 80)!r} looks "
                             f"{SEPARATORS[others[0]]}-separated: {_OPTIONS}, or --column for the ID column")
        notes.append(f"{name} has no {shorten(column, 40)!r} header; reading it as one ID per line")
        raw = pd.read_csv(io.StringIO(text), sep=chosen, header=None, dtype=str, keep_default_na=False,
                          skip_blank_lines=True)
        return IdFile(pd.DataFrame({column: raw.iloc[:, 0].tolist()}), used, chosen, notes)
    cols = ", ".join(repr(shorten(str(c), 40)) for c in list(df.columns)[:10])
    raise InputError(f"{name} has no column {shorten(column, 40)!r} (columns: {cols}); use --column")


def _decode(data: bytes, name: str, encoding: str | None, notes: list[str]) -> tuple[str, str]:
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise InputError(f"cannot read {name}: --encoding {encoding!r} is not an encoding Python knows "
                             "(try utf-8 or cp1252)") from None
        try:
            return data.decode(encoding).lstrip("\ufeff"), encoding
        except UnicodeDecodeError as exc:
            raise InputError(f"{name} is not valid {encoding} (byte {exc.start}); {_OPTIONS}") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = data.decode("utf-16").lstrip("\ufeff")
        except UnicodeDecodeError:
            raise InputError(f"{name} starts like UTF-16 but is not valid UTF-16; {_OPTIONS}") from None
        notes.append(f"{name}: read as UTF-16 (it starts with a UTF-16 byte-order mark)")
        return text, "utf-16"
    if b"\x00" in data:
        raise InputError(_nul_problem(data, name))
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        raise InputError(f"{name} is neither UTF-8 nor Windows-1252 text; {_OPTIONS}") from None
    notes.append(f"{name} is not UTF-8: read it as Windows-1252 (Excel's 'CSV'); use --encoding to choose another")
    return text, "cp1252"


def _nul_problem(data: bytes, name: str) -> str:
    """Why a file with NUL bytes (never in an ID file's text) cannot be read as it is: most
    often UTF-16 saved without a byte-order mark, where every other byte of plain text is 0."""
    sample = data[:4096]
    even, odd = sample[0::2], sample[1::2]
    if odd and odd.count(0) >= 0.9 * len(odd) and even.count(0) < 0.1 * len(even):
        return f"{name} looks like UTF-16 without a byte-order mark (little-endian): use --encoding utf-16-le"
    if even and even.count(0) >= 0.9 * len(even) and odd.count(0) < 0.1 * len(odd):
        return f"{name} looks like UTF-16 without a byte-order mark (big-endian): use --encoding utf-16-be"
    return f"{name} contains NUL bytes, which no ID file's text has: is it a text file? {_OPTIONS}"


def _detect_sep(header: str, name: str) -> str:
    """The separator the header line uses most (outside quotes); tab for .tsv files with none."""
    counts = dict.fromkeys(SEPARATORS, 0)
    quoted = False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(counts, key=lambda s: counts[s])
    if counts[best] == 0:
        return "\t" if name.lower().endswith((".tsv", ".tab")) else ","
    return best
