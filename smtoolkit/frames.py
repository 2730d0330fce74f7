"""The pandas edge: IDs out of a DataFrame/Series/list, the report DataFrame back, its
summary, and CSV export. No network here."""

from __future__ import annotations

import io
import os
import secrets
import stat
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from itertools import compress, repeat
from operator import attrgetter, is_
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from .core import settle
from .core.answers import compact_json
from .core.ids import Plan
from .core.outcomes import REPORT_COLUMNS, Outcome, Result, could_retry, parse_time
from .errors import InputError

DTYPES: dict[str, str] = {
    "batch_id": "string",
    "outcome": "string",
    "http_status": "Int64",
    "status_code": "string",
    "error_code": "string",
    "error_message": "string",
    "error_description": "string",
    "request_id": "string",
    "cancel_time": "datetime64[ns, UTC]",
    "end_time": "datetime64[ns, UTC]",
    "attempts": "int64",
    "elapsed_s": "float64",
    "ratelimit_remaining": "Int64",
}
OUTCOME_ORDER = [o.value for o in Outcome]
# Spreadsheets treat cells starting with these as formulas (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def extract(batches: Any, column: str) -> tuple[pd.DataFrame, list[Any]]:
    """The input as a frame to extend (never the caller's object) and its raw ID values."""
    if not isinstance(column, (str, int)) or isinstance(column, bool):
        raise InputError(f"column must be the name of one column (a string), not {column!r}")
    if isinstance(batches, pd.DataFrame):
        if column not in batches.columns:
            shown = ", ".join(map(repr, list(batches.columns)[:10])) or "none"
            raise InputError(f"the DataFrame has no column {column!r} (columns: {shown}); "
                             f"pass column='<name of the ID column>'")
        picked = batches[column]
        if isinstance(picked, pd.DataFrame):
            raise InputError(f"the DataFrame has more than one column named {column!r}")
        return batches.copy(), picked.tolist()
    if isinstance(batches, pd.Series):
        name = batches.name if batches.name is not None else column
        return batches.to_frame(name=name), batches.tolist()
    if batches is None or isinstance(batches, (str, bytes, Mapping)) or not isinstance(batches, Iterable):
        kind = type(batches).__name__
        hint = " (for one ID use cancel_batch)" if isinstance(batches, str) else ""
        raise InputError(f"batches must be a DataFrame, a Series or a list of IDs, not {kind}{hint}")
    values = list(batches)
    return pd.DataFrame(index=pd.RangeIndex(len(values))), values


def build_report(frame: pd.DataFrame, values: Sequence[Any], plan: Plan,
                 results: Mapping[str, Result], attrs: Mapping[str, Any]) -> pd.DataFrame:
    """One row per input row, in input order, input columns kept, result columns added.

    Little Python per row: each column is typed once over the distinct results (a sent ID's,
    one shared by all duplicate rows, one per invalid row) and spread to the rows by index;
    duplicate rows then get their own ID and message."""
    distinct, where, duplicates = _row_results(values, plan, results)
    own = _duplicate_fields(frame, plan, duplicates)
    report = frame.drop(columns=[c for c in REPORT_COLUMNS if c in frame.columns and c != "batch_id"])
    for name in REPORT_COLUMNS:
        typed = _typed(list(map(attrgetter(name), distinct)), DTYPES[name], pd.RangeIndex(len(distinct)))
        column = typed.array.take(where)
        if name in own:
            column[duplicates] = own[name]
        report[name] = pd.Series(column, index=frame.index)
    report.attrs.update(attrs)
    return report


def not_sent(report: pd.DataFrame) -> int:
    """How many of a report's rows were not sent because the run halted (`skipped`)."""
    return int((report["outcome"] == Outcome.SKIPPED.value).sum()) if len(report) else 0


def _row_results(values: Sequence[Any], plan: Plan,
                 results: Mapping[str, Result]) -> tuple[list[Result], np.ndarray, np.ndarray]:
    """(the distinct results, the index into them of each input row, the duplicate rows).

    A sent ID's row has its result (KeyError when there is none), every duplicate row one
    shared DUPLICATE result (its ID and message are per row: `_duplicate_fields`), and each
    invalid row a result of its own."""
    ids = plan.ids
    n = len(ids)
    invalid = np.fromiter(compress(range(n), map(is_, ids, repeat(None))), dtype=np.intp)
    duplicates = np.fromiter((i for i in plan.duplicates if ids[i] is not None), dtype=np.intp)
    sent = np.ones(n, dtype=bool)
    sent[invalid] = False
    sent[duplicates] = False
    sent_rows = np.flatnonzero(sent)
    sent_ids = cast(list[str], ids).__getitem__  # a sent row has an ID
    distinct = list(map(results.__getitem__, map(sent_ids, sent_rows.tolist())))
    where = np.empty(n, dtype=np.intp)
    where[sent_rows] = np.arange(len(sent_rows))
    where[duplicates] = len(distinct)
    distinct.append(settle.duplicate())
    where[invalid] = np.arange(len(distinct), len(distinct) + len(invalid))
    for i in invalid.tolist():
        raw = values[i]
        # What the caller gave, made encodable (a name from argv may hold undecodable bytes).
        distinct.append(settle.invalid_id(raw.strip() if isinstance(raw, str) else None, plan.problems.get(i)))
    return distinct, where, duplicates


def _duplicate_fields(frame: pd.DataFrame, plan: Plan, duplicates: np.ndarray) -> dict[str, list[Any]]:
    """The batch_id and error_message of each duplicate row (in `duplicates` order)."""
    if not len(duplicates):
        return {}
    labels = list(frame.index)
    said: dict[int, str] = {}  # one message per earlier row, shared by its repeats
    messages = []
    rows = duplicates.tolist()
    for i in rows:
        earlier = plan.duplicates[i]
        text = said.get(earlier)
        if text is None:
            text = said[earlier] = settle.duplicate_message(labels[earlier])
        messages.append(text)
    return {"batch_id": [plan.ids[i] for i in rows], "error_message": messages}


_INT64 = (-(2**63), 2**63 - 1)
# What datetime64[ns] can hold (1677-09-21 to 2262-04-11), with a day to spare.
_NS_RANGE = (datetime(1677, 9, 22), datetime(2262, 4, 10))
# UTC times this far inside _NS_RANGE are inside it in any time zone (offsets are under a day).
_SAFE_UTC = (pd.Timestamp(_NS_RANGE[0] + timedelta(days=1), tz="UTC"),
             pd.Timestamp(_NS_RANGE[1] - timedelta(days=1), tz="UTC"))
_NONE = type(None)
_OUTCOME_TEXT: dict[Any, str] = {o: o.value for o in Outcome}


def _typed(values: list[Any], dtype: str, index: pd.Index) -> pd.Series:
    """A column of `dtype`; a value that does not fit (an int beyond Int64, a date beyond
    pandas' nanosecond range, an object where text belongs) becomes missing or text, so
    building a report never fails because of what a server or a journal held.

    Columns of plain values (text, ints, floats, datetimes in range, None) are built by
    pandas in one step; anything else goes value by value (`_typed_exact`), with the same result."""
    fast = _typed_plain(values, dtype, index)
    return fast if fast is not None else _typed_exact(values, dtype, index)


def _typed_plain(values: list[Any], dtype: str, index: pd.Index) -> pd.Series | None:
    """`_typed` for a column of plain values, or None when a value needs `_typed_exact`."""
    kinds = set(map(type, values))
    try:
        if dtype == "string" and kinds <= {str, _NONE, Outcome}:
            if Outcome in kinds:
                values = list(map(_OUTCOME_TEXT.get, values, values))
            return pd.Series(values, index=index, dtype=dtype)
        if (dtype == "Int64" and kinds <= {int, _NONE}) or (dtype == "int64" and kinds <= {int}):
            return pd.Series(values, index=index, dtype=dtype)  # OverflowError beyond int64
        if dtype == "float64" and kinds <= {float}:
            return pd.Series(values, index=index, dtype=dtype)
        if dtype.startswith("datetime64") and kinds <= {datetime, _NONE}:
            times = pd.to_datetime(pd.Series(values, dtype=object), utc=True)
            if times.notna().any() and not (_SAFE_UTC[0] < times.min() and times.max() < _SAFE_UTC[1]):
                return None  # near or beyond the range: decided value by value
            return pd.Series(times.array, index=index).astype(dtype)  # type: ignore[call-overload]
    except (OverflowError, ValueError, TypeError):  # out of bounds: decided value by value
        return None
    return None


def _typed_exact(values: list[Any], dtype: str, index: pd.Index) -> pd.Series:
    """`_typed`, deciding value by value (the reference for `_typed_plain`)."""
    if dtype.startswith("datetime64"):
        kept = [v if isinstance(v, datetime) and _NS_RANGE[0] < v.replace(tzinfo=None) < _NS_RANGE[1] else None
                for v in values]
        return pd.Series(pd.to_datetime(pd.Series(kept, dtype=object), utc=True).array, index=index).astype(dtype)  # type: ignore[call-overload]
    if dtype in ("Int64", "int64"):
        clean = [v if type(v) is int and _INT64[0] <= v <= _INT64[1] else None for v in values]
        if dtype == "int64":
            clean = [0 if v is None else v for v in clean]
        return pd.Series(clean, index=index, dtype=dtype)  # type: ignore[call-overload]
    if dtype == "float64":
        return pd.Series([float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")
                          for v in values], index=index, dtype=dtype)
    if dtype == "string":
        return pd.Series([_as_text(v) for v in values], index=index, dtype=dtype)
    return pd.Series(values, index=index, dtype=dtype)  # type: ignore[call-overload]


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Outcome):
        return value.value
    return compact_json(value, 4096)


def history_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The panel's history: `action` and `at`, then the report's columns, typed as a report."""
    index = pd.RangeIndex(len(rows))
    frame = pd.DataFrame({"action": _typed([r["action"] for r in rows], "string", index),
                          "at": _typed([r["at"] for r in rows], "datetime64[ns, UTC]", index)})
    for name in REPORT_COLUMNS:
        frame[name] = _typed([r[name] for r in rows], DTYPES[name], index)
    return frame


_BATCH_TIMES = ("schedule_time", "start_time")
_BATCH_INTS = ("query_amount", "query_concurrency", "timeout_minutes")


def with_batch_fields(report: pd.DataFrame, records: Sequence[Mapping[str, Any]],
                      names: Sequence[str]) -> pd.DataFrame:
    """`report` plus one typed column per batch-record field (times UTC, counts Int64, text)."""
    for name in names:
        values = [rec.get(name) for rec in records]
        if name in _BATCH_TIMES:
            report[name] = _typed([parse_time(v) for v in values], "datetime64[ns, UTC]", report.index)
        elif name in _BATCH_INTS:
            report[name] = _typed(values, "Int64", report.index)
        else:
            report[name] = _typed(values, "string", report.index)
    return report


def with_seen_fields(report: pd.DataFrame, lookups: Sequence[Result | None]) -> pd.DataFrame:
    """`report` plus what a choosing run's look-up saw of each row's batch: `status_seen`
    (before any cancel), `schedule_time` and `description` (missing where nothing was read)."""
    report["status_seen"] = _typed([r.status_code if r is not None and r.batch is not None else None
                                    for r in lookups], "string", report.index)
    return with_batch_fields(report, [(r.batch or {}) if r is not None else {} for r in lookups],
                             ("schedule_time", "description"))


def with_query_counts(report: pd.DataFrame, counts: Sequence[Mapping[str, int] | None]) -> pd.DataFrame:
    """`report` plus the per-query counts (queued/running/success/failure) as Int64 columns."""
    for key in ("queued", "running", "success", "failure"):
        report[key] = _typed([(c or {}).get(key) for c in counts], "Int64", report.index)
    return report


def summarize(report: pd.DataFrame) -> pd.DataFrame:
    """Counts, shares (0 to 1) and percentages (one decimal) per outcome, in the documented
    outcome order; all numeric, for code that uses them."""
    if not isinstance(report, pd.DataFrame) or "outcome" not in report.columns:
        raise InputError("summarize() takes a report returned by cancel_batches (it needs an 'outcome' column)")
    counts = report["outcome"].astype("string").value_counts(dropna=False)
    order = [o for o in OUTCOME_ORDER if o in counts.index] + [o for o in counts.index if o not in OUTCOME_ORDER]
    counts = counts.reindex(order)
    total = int(counts.sum())
    share = (counts / total if total else counts).astype("float64")
    out = pd.DataFrame({"count": counts.astype("int64"), "share": share.round(4),
                        "percent": (share * 100).round(1)})
    out.index.name = "outcome"
    return out


#: Separators export_csv writes (`;` is what Excel expects in many European locales).
SEPARATORS = (",", ";", "\t", "|")


def export_csv(report: pd.DataFrame, path: str | os.PathLike[str], *, excel: bool = False,
               sep: str = ",") -> Path:
    """Write a report as CSV; returns the path written.

    By default: UTF-8, `\n` line ends and ISO-8601 UTC times (`2026-01-01T00:00:00.000000Z`),
    for code. `excel=True`: UTF-8 *with a BOM* (so Excel reads `Zoë` as `Zoë`), `\r\n` line
    ends and times as `2026-01-01 00:00:00` (UTC), which Excel recognises; pass `sep=";"`
    where the locale's Excel expects it. Cells that a spreadsheet would run as a formula
    (starting with = + - @ tab or CR) are prefixed with ' so they show as text. The file is
    replaced atomically, with the usual permissions: a new file gets the process umask's, a
    replaced file keeps its mode.
    """
    if not isinstance(report, pd.DataFrame):
        raise InputError("export_csv() takes a DataFrame (the report returned by cancel_batches)")
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InputError("path must be a file path such as 'report.csv'")
    if sep not in SEPARATORS:
        raise InputError(f"sep must be one of {', '.join(map(repr, SEPARATORS))}, not {sep!r}")
    target, parent = _target(path)
    columns = []
    for i in range(report.shape[1]):  # by position: an input frame may repeat a column name
        col = report.iloc[:, i]
        if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(col.dtype):
            col = _times_as_text(col, excel)
        elif col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
            col = _formulas_quoted(col)
        columns.append(col.reset_index(drop=True))
    out = pd.concat(columns, axis=1, ignore_index=True) if columns else pd.DataFrame(index=range(len(report)))
    out.columns = [_safe_cell(str(c)) for c in report.columns]
    tmp = parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    try:
        try:
            keep = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            keep = None
        # O_EXCL on a fresh name: never follows a planted link; the mode goes through the umask.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        # Text from the API is already encodable; a caller's own column may not be: replaced, never fatal.
        with os.fdopen(fd, "w", encoding="utf-8-sig" if excel else "utf-8", errors="replace", newline="") as fh:
            out.to_csv(fh, index=False, sep=sep, lineterminator="\r\n" if excel else "\n")
        if keep is not None:
            os.chmod(tmp, keep)  # a replaced file keeps its mode (chmod is not subject to umask)
        os.replace(tmp, target)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise InputError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
    return target


def _target(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The file a report goes to and its folder; InputError when it is a folder or the folder is missing."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise InputError(f"{str(target)!r} is a directory; give a file name such as {str(target / 'report.csv')!r}")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write {str(target)!r}: the directory {str(parent)!r} does not exist")
    return target, parent


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Prove now that `export_csv` will be able to write `path`: its folder exists and takes a
    new file (one is created and removed again, the way export_csv writes: a new file beside the
    target, then a rename). Raises InputError naming the cause; returns the path."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InputError("path must be a file path such as 'report.csv'")
    target, parent = _target(path)
    probe = parent / f".{target.name}.{secrets.token_hex(4)}.probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
    return target


# Where numpy's ISO text and strftime's agree (four-digit years; numpy floors sub-seconds as
# strftime does): inside this, times are written by numpy in one step.
_ISO_YEARS = (np.datetime64("1678-01-01"), np.datetime64("2262-01-01"))


def _times_as_text(col: pd.Series, excel: bool) -> pd.Series:
    """A datetime column as export_csv writes it: UTC text (ISO 8601 with microseconds and Z,
    or Excel's `YYYY-MM-DD HH:MM:SS`), None where missing."""
    utc = col.dt.tz_convert("UTC") if isinstance(col.dtype, pd.DatetimeTZDtype) else col.dt.tz_localize("UTC")
    values = utc.dt.tz_localize(None).to_numpy()
    present = values[~np.isnat(values)]
    if present.size and not (_ISO_YEARS[0] <= present.min() and present.max() < _ISO_YEARS[1]):
        time_format = "%Y-%m-%d %H:%M:%S" if excel else "%Y-%m-%dT%H:%M:%S.%fZ"
        return utc.dt.strftime(time_format).astype("object").where(col.notna(), None)
    iso = np.datetime_as_string(values, unit="s" if excel else "us").tolist()
    text = [t.replace("T", " ") for t in iso] if excel else [t + "Z" for t in iso]
    return pd.Series(text, index=col.index, dtype=object).where(col.notna(), None)


def _formulas_quoted(col: pd.Series) -> pd.Series:
    """A text column with each cell a spreadsheet would run as a formula prefixed by '
    (`_safe_cell`): one pass in C over a column of text; value by value over other objects."""
    text = col.to_numpy(dtype=object, na_value="")
    try:
        hits = list(compress(range(len(text)), map(str.startswith, text, repeat(_FORMULA_START))))
    except TypeError:  # not all text
        return col.map(_safe_cell, na_action="ignore")
    if not hits:
        return col
    col = col.copy()
    col.iloc[hits] = ["'" + text[i] for i in hits]
    return col


#: Columns a run adds beside REPORT_COLUMNS (a choosing run's look-ups, query counts, the
#: reason): a retry does not carry them over from the report it retries.
ADDED_COLUMNS = ("status_seen", "schedule_time", "description", "queued", "running", "success", "failure",
                 "reason")


def to_retry(report: pd.DataFrame) -> pd.DataFrame:
    """The rows of a report whose outcome a retry could change (`core.outcomes.RETRY`: still
    stopping, would_cancel, a failure, skipped, a key refused), in report order. Not: final
    rows, rows left alone, invalid IDs, duplicates (their first row stands for them)."""
    if not isinstance(report, pd.DataFrame) or not {"batch_id", "outcome"} <= set(report.columns):
        raise InputError("to_retry() takes a report returned by cancel_batches or read_report "
                         "(it needs 'batch_id' and 'outcome' columns)")
    keep = [could_retry(o) for o in report["outcome"].tolist()]
    return report[keep]


def retry_input(rows: pd.DataFrame) -> pd.DataFrame:
    """The input of a retry of these report rows: their batch_id and the caller's own columns,
    without the columns the earlier run added."""
    ours = set(REPORT_COLUMNS[1:]) | set(ADDED_COLUMNS)
    return rows[[c for c in rows.columns if c not in ours]].reset_index(drop=True)


def read_report(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A report written by `export_csv` (or the CLI's `--out`), plain or `excel=True`, any of
    its separators, read back with the report's dtypes (cells quoted against formulas are
    restored). InputError naming the file when it cannot be read or is not one of our reports
    (a report column missing, an outcome smtoolkit does not know)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InputError("path must be a report file such as 'report.csv'")
    shown = str(path)
    try:
        text = Path(path).expanduser().read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read {shown!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{shown!r} is not a report written by smtoolkit: it is not UTF-8 text") from None
    header = text.split("\n", 1)[0]
    sep = max(SEPARATORS, key=header.count)
    try:
        raw = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{shown!r} is not a report written by smtoolkit: {exc}") from None
    raw.columns = [_unquoted(str(c)) for c in raw.columns]
    missing = [c for c in REPORT_COLUMNS if c not in raw.columns]
    if missing:
        raise InputError(f"{shown!r} is not a report written by smtoolkit: it has no {', '.join(map(repr, missing[:3]))}"
                         f"{' ...' if len(missing) > 3 else ''} column (a report has {', '.join(REPORT_COLUMNS)})")
    report = raw.map(lambda v: None if v == "" else _unquoted(v))  # type: ignore[operator]
    unknown = sorted(set(report["outcome"].dropna()) - set(OUTCOME_ORDER))
    if unknown or report["outcome"].isna().any():
        what = repr(unknown[0]) if unknown else "an empty outcome"
        raise InputError(f"{shown!r} is not a report written by smtoolkit: {what} is no outcome smtoolkit writes")
    for name, dtype in DTYPES.items():
        report[name] = _parsed(report[name], dtype)
    return report


def _parsed(col: pd.Series, dtype: str) -> pd.Series:
    """A report column read back as text, in its report dtype (unreadable values: missing)."""
    if dtype.startswith("datetime64"):
        return pd.to_datetime(col, utc=True, errors="coerce", format="ISO8601").astype(dtype)  # type: ignore[call-overload]
    if dtype in ("Int64", "int64", "float64"):
        numbers = pd.to_numeric(col, errors="coerce")
        if dtype == "float64":
            return numbers.astype(dtype)  # type: ignore[call-overload]
        whole = numbers.where(numbers.notna() & (numbers == numbers.round()))
        return whole.astype("Int64") if dtype == "Int64" else whole.fillna(0).astype("int64")  # type: ignore[call-overload]
    return col.astype(dtype)  # type: ignore[call-overload]


def _unquoted(value: str) -> str:
    """A cell as it was before `_safe_cell` quoted it against formulas."""
    return value[1:] if value[:1] == "'" and value[1:2] and value[1:].startswith(_FORMULA_START) else value


def _safe_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
