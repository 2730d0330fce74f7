"""The fast paths for a million rows (issue 16) give exactly what the simple code gave.

Each fast path is checked against a reference: the per-row code it replaced, copied here
unchanged, on hostile inputs (values of every wrong type and range, plans with invalid and
duplicate rows, journal lines that are torn, foreign, mistyped or out of order). No timings:
benchmarks/bench_scale.py measures those.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtoolkit import frames, journal
from smtoolkit.core import outcomes as oc
from smtoolkit.core.answers import compact_json
from smtoolkit.core.ids import Plan, plan
from smtoolkit.core.outcomes import REPORT_COLUMNS, Outcome, Result, parse_time
from smtoolkit.errors import JournalError

API = "https://api.supermetrics.com/enterprise/v2"
HEADER = json.dumps({"format": journal.FORMAT, "version": journal.VERSION, "base_url": API}) + "\n"


# -- references: the code before the fast paths, unchanged -----------------------------------


def ref_parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


_INT64 = (-(2**63), 2**63 - 1)
_NS_RANGE = (datetime(1677, 9, 22), datetime(2262, 4, 10))


def ref_typed(values: list[Any], dtype: str, index: pd.Index) -> pd.Series:
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
        return pd.Series([ref_as_text(v) for v in values], index=index, dtype=dtype)
    raise AssertionError(dtype)


def ref_as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Outcome):
        return value.value
    return compact_json(value, 4096)


def ref_build_report(frame: pd.DataFrame, values: Sequence[Any], plan: Plan,
                     results: Mapping[str, Result], attrs: Mapping[str, Any]) -> pd.DataFrame:
    cols: dict[str, list[Any]] = {name: [] for name in REPORT_COLUMNS}
    labels = list(frame.index)
    for i, batch_id in enumerate(plan.ids):
        if batch_id is None:
            raw = values[i]
            r = Result(raw.strip() if isinstance(raw, str) else None, Outcome.INVALID_ID,
                       error_code=oc.INVALID_BATCH_ID, error_message=plan.problems.get(i))
        elif i in plan.duplicates:
            r = Result(batch_id, Outcome.DUPLICATE, error_code=oc.DUPLICATE_BATCH_ID,
                       error_message=f"same batch ID as input row {labels[plan.duplicates[i]]!r}; sent once")
        else:
            r = results[batch_id]
        for name in REPORT_COLUMNS:
            value = getattr(r, name)
            cols[name].append(value.value if isinstance(value, Outcome) else value)
    report = frame.drop(columns=[c for c in REPORT_COLUMNS if c in frame.columns and c != "batch_id"])
    for name in REPORT_COLUMNS:
        report[name] = ref_typed(cols[name], frames.DTYPES[name], frame.index)
    report.attrs.update(attrs)
    return report


def ref_result(record: dict[str, Any]) -> Result | None:
    try:
        outcome = Outcome(record.get("outcome"))
    except ValueError:
        return None
    values = {name: record.get(name) for name in journal._RESULT_FIELDS}
    values["outcome"] = outcome
    if not isinstance(values["batch_id"], str):
        return None
    for name in ("cancel_time", "end_time"):
        values[name] = ref_parse_time(values[name])
    for name in ("http_status", "ratelimit_remaining", "attempts"):
        v = values[name]
        values[name] = v if type(v) is int and 0 <= v < 2**53 else None
    values["attempts"] = values["attempts"] or 0
    for name in ("status_code", "error_code", "error_message", "error_description", "request_id"):
        if values[name] is not None and not isinstance(values[name], str):
            values[name] = None
    e = values["elapsed_s"]
    values["elapsed_s"] = float(e) if isinstance(e, (int, float)) and not isinstance(e, bool) and 0 <= e < 1e12 else 0.0
    return Result(**values)  # type: ignore[arg-type]


def ref_read(path: Path, base_url: str | None = None) -> tuple[dict[str, Any] | None, dict[str, Result]]:
    if not path.exists():
        return None, {}
    header: dict[str, Any] | None = None
    first: dict[str, Any] | None = None
    results: dict[str, Result] = {}
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if not isinstance(record, dict):
                continue
            if record.get("format") == journal.FORMAT:
                first, header = first or record, record  # the first decides the API; the last is returned
                expected = base_url if base_url is not None else first.get("base_url")
                if record.get("base_url") != expected:
                    raise JournalError(
                        f"journal {str(path)!r} line {number} starts a section for {record.get('base_url')!r}, "
                        f"not {expected!r}: a journal belongs to one API; use a new journal file for another")
                version = record.get("version")
                if not isinstance(version, int) or version > journal.VERSION:
                    raise JournalError(f"journal {str(path)!r} line {number} has format version {version!r}, "
                                       f"newer than this smtoolkit reads ({journal.VERSION}): upgrade smtoolkit")
                continue
            if header is None:
                continue
            r = ref_result(record)
            if r is not None and r.batch_id:
                results[r.batch_id] = r
    return header, results


def ref_export_columns(report: pd.DataFrame, excel: bool) -> pd.DataFrame:
    """What export_csv wrote before: strftime for times, `_safe_cell` value by value."""
    time_format = "%Y-%m-%d %H:%M:%S" if excel else "%Y-%m-%dT%H:%M:%S.%fZ"
    columns = []
    for i in range(report.shape[1]):
        col = report.iloc[:, i]
        if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(col.dtype):
            utc = col.dt.tz_convert("UTC") if isinstance(col.dtype, pd.DatetimeTZDtype) else col.dt.tz_localize("UTC")
            col = utc.dt.strftime(time_format).astype("object").where(col.notna(), None)
        elif col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
            col = col.map(frames._safe_cell, na_action="ignore")
        columns.append(col.reset_index(drop=True))
    out = pd.concat(columns, axis=1, ignore_index=True) if columns else pd.DataFrame(index=range(len(report)))
    out.columns = [frames._safe_cell(str(c)) for c in report.columns]
    return out


# -- hostile values ----------------------------------------------------------------------------


class Code(enum.IntEnum):
    OK = 200


class Text(str):
    pass


class Moment(datetime):
    pass


PLUS5 = timezone(timedelta(hours=5))
MINUS_ALMOST_A_DAY = timezone(-timedelta(hours=23, minutes=59))
EDGE_TIMES = [
    datetime(1677, 9, 22, tzinfo=UTC), datetime(1677, 9, 22, 0, 0, 1, tzinfo=UTC), datetime(1677, 9, 23, 1, tzinfo=UTC),
    datetime(2262, 4, 9, 23, 59, 59, tzinfo=UTC), datetime(2262, 4, 10, tzinfo=UTC), datetime(2262, 4, 8, 22, tzinfo=UTC),
    datetime(1677, 9, 22, 12, tzinfo=MINUS_ALMOST_A_DAY), datetime(2262, 4, 9, 1, tzinfo=MINUS_ALMOST_A_DAY),
    datetime(2262, 4, 9, 23, tzinfo=PLUS5), datetime(1, 1, 1, tzinfo=UTC), datetime(1, 1, 1, tzinfo=PLUS5),
    datetime(9999, 12, 31, tzinfo=UTC), datetime(9999, 12, 31, 23, tzinfo=MINUS_ALMOST_A_DAY),
    datetime(2026, 11, 29, 9, 0, 0, 123456), datetime(1970, 1, 1, tzinfo=UTC),
]
plain_time = st.datetimes(min_value=datetime(1800, 1, 1), max_value=datetime(2200, 1, 1),
                          timezones=st.sampled_from([UTC, PLUS5, MINUS_ALMOST_A_DAY]))
any_time = st.one_of(plain_time, st.sampled_from(EDGE_TIMES), st.datetimes(timezones=st.none() | st.just(UTC)),
                     plain_time.map(lambda d: Moment.fromisoformat(d.isoformat())),
                     plain_time.map(pd.Timestamp), st.just(pd.NaT), st.just(np.datetime64("2026-01-01")))
hostile = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-5, max_value=10_000),
    st.sampled_from([2**53, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**70, -(2**64), 10**30]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["=1+1", "+x", "-", "@a", "\tx", "\rx", "", "Zoë", "東京"]),
    st.sampled_from(list(Outcome)), st.just(Code.OK), st.builds(Text, st.text(max_size=3)),
    st.builds(np.int64, st.integers(-5, 5)), st.just(np.str_("np")), st.just(pd.NA), st.just(float("nan")),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2), st.lists(st.integers(), max_size=2),
    any_time,
)
# Columns as a run makes them: mostly plain values of the column's kind, sometimes anything.
PLAIN: dict[str, st.SearchStrategy[Any]] = {
    "string": st.one_of(st.none(), st.text(max_size=6), st.sampled_from(list(Outcome))),
    "Int64": st.one_of(st.none(), st.integers(min_value=0, max_value=2**40)),
    "int64": st.integers(min_value=0, max_value=50),
    "float64": st.floats(min_value=0, max_value=1e6),
    "datetime64[ns, UTC]": st.one_of(st.none(), plain_time),
}


def column(dtype: str) -> st.SearchStrategy[list[Any]]:
    plain = PLAIN[dtype]
    return st.one_of(st.lists(plain, max_size=12), st.lists(st.one_of(plain, hostile), max_size=12))


def same(got: Any, want: pd.Series | pd.DataFrame) -> None:
    if isinstance(want, pd.DataFrame):
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        assert got.attrs == want.attrs
    else:
        pd.testing.assert_series_equal(got, want, check_exact=True)


# -- frames._typed ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", sorted(set(frames.DTYPES.values())))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_typed_equals_the_value_by_value_reference(dtype: str, data: st.DataObject) -> None:
    values = data.draw(column(dtype))
    index = pd.RangeIndex(len(values))
    try:
        want = ref_typed(list(values), dtype, index)
    except Exception as exc:  # noqa: BLE001 - the fast path must fail the same way
        with pytest.raises(type(exc)):
            frames._typed(list(values), dtype, index)
        return
    same(frames._typed(list(values), dtype, index), want)


@pytest.mark.parametrize("dtype", ["datetime64[ns, UTC]"])
@pytest.mark.parametrize("edge", EDGE_TIMES, ids=str)
def test_typed_times_at_the_edges_of_the_range(dtype: str, edge: datetime) -> None:
    values = [datetime(2026, 1, 1, tzinfo=UTC), edge, None]
    index = pd.RangeIndex(3)
    same(frames._typed(values, dtype, index), ref_typed(values, dtype, index))


def test_typed_plain_columns_take_the_fast_path() -> None:
    index = pd.RangeIndex(3)
    cases: list[tuple[list[Any], str]] = [(["a", None, Outcome.CANCELLED], "string"), ([1, None, 2**63 - 1], "Int64"),
                          ([0, 1, 2], "int64"), ([0.5, 1.0, float("inf")], "float64"),
                          ([datetime(2026, 1, 1, tzinfo=UTC), None, datetime(2026, 1, 2)], "datetime64[ns, UTC]")]
    for values, dtype in cases:
        assert frames._typed_plain(values, dtype, index) is not None, dtype
    assert frames._typed_plain([2**63, None], "Int64", index) is None
    assert frames._typed_plain([datetime(9999, 1, 1, tzinfo=UTC)], "datetime64[ns, UTC]", index) is None
    assert frames._typed_plain([Text("a")], "string", index) is None


# -- frames.build_report -----------------------------------------------------------------------

raw_id = st.one_of(
    st.sampled_from(["qrb_a", "qrb_b", "qrb_c", " qrb_a ", "qrb_b\n", "..", "", "bad id", "a/b", "12", "qrb_d"]),
    st.integers(min_value=10, max_value=14), st.floats(allow_nan=True), st.none(), st.just(pd.NA),
    st.just(12.0), st.just(True), st.just(b"qrb_a"),
)
index_kind = st.sampled_from(["range", "labels", "repeated", "int64", "times"])


def make_index(kind: str, n: int) -> pd.Index:
    if kind == "labels":
        return pd.Index([f"row-{i}" for i in range(n)])
    if kind == "repeated":
        return pd.Index(["same"] * n)
    if kind == "int64":
        return pd.Index(np.arange(100, 100 + n, dtype=np.int64))
    if kind == "times":
        return pd.DatetimeIndex([datetime(2026, 1, 1) + timedelta(hours=i) for i in range(n)])
    return pd.RangeIndex(n)


result_field = {
    "http_status": column("Int64"), "status_code": column("string"), "error_code": column("string"),
    "error_message": column("string"), "error_description": column("string"), "request_id": column("string"),
    "cancel_time": column("datetime64[ns, UTC]"), "end_time": column("datetime64[ns, UTC]"),
    "attempts": column("int64"), "elapsed_s": column("float64"), "ratelimit_remaining": column("Int64"),
}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(raw_id, max_size=14), kind=index_kind, data=st.data(),
       with_columns=st.booleans())
def test_build_report_equals_the_per_row_reference(values: list[Any], kind: str, data: st.DataObject,
                                                   with_columns: bool) -> None:
    index = make_index(kind, len(values))
    frame = pd.DataFrame({"batch_id": values, "note": ["=x"] * len(values)} if with_columns else {},
                         index=index)
    if with_columns:
        frame["outcome"] = "kept by the input, replaced by the report"
    p = plan(values)
    fields = {name: data.draw(strategy) for name, strategy in result_field.items()}
    outcomes = data.draw(st.lists(st.sampled_from(list(Outcome)), min_size=1))
    results = {}
    for k, batch_id in enumerate(p.unique):
        given_ = {name: col[k] for name, col in fields.items() if k < len(col)}
        results[batch_id] = Result(batch_id, outcomes[k % len(outcomes)], **given_)
    want = ref_build_report(frame, values, p, results, {"run": 1})
    same(frames.build_report(frame, values, p, results, {"run": 1}), want)


def test_build_report_shares_one_message_per_earlier_row_and_names_labels_as_before() -> None:
    values = ["a", "b", "a", "a", "b", "bad id", "c"]
    frame = pd.DataFrame(index=pd.Index(np.arange(10, 17, dtype=np.int64)))
    p = plan(values)
    results = {b: Result(b, Outcome.CANCELLED, 200) for b in p.unique}
    report = frames.build_report(frame, values, p, results, {})
    same(report, ref_build_report(frame, values, p, results, {}))
    assert report["error_message"].tolist()[2:5] == ["same batch ID as input row 10; sent once"] * 2 + [
        "same batch ID as input row 11; sent once"]


def test_build_report_without_a_result_for_a_sent_id_raises_key_error_as_before() -> None:
    p = plan(["a", "b"])
    with pytest.raises(KeyError, match="b"):
        frames.build_report(pd.DataFrame(index=range(2)), ["a", "b"], p, {"a": Result("a", Outcome.CANCELLED)}, {})


# -- parse_time ---------------------------------------------------------------------------------

time_text = st.one_of(
    st.text(max_size=30),
    plain_time.map(lambda d: d.isoformat()),
    plain_time.map(lambda d: d.astimezone(UTC).isoformat().replace("+00:00", "Z")),
    st.datetimes().map(lambda d: d.isoformat() + "Z"), st.datetimes().map(lambda d: d.isoformat() + "z"),
    st.datetimes().map(lambda d: d.date().isoformat() + "Z"),
    st.tuples(st.datetimes().map(lambda d: d.isoformat()), st.sampled_from(["+00:00Z", "Z ", " Z", "ZZ", "+01Z"])).map(
        "".join),
    st.tuples(st.sampled_from([" ", "\n", "\u00a0", ""]), st.datetimes().map(lambda d: d.isoformat() + "Z")).map(
        "".join),
    st.sampled_from(["2026-01-01T00:00:00Z", "20260101T000000Z", "2026-01-01T00Z", "2026-W01-1T00:00Z",
                     "2026-01-01T00:00:00.123Z", "2026-01-01T24:00:00Z", "٢٠٢٦-01-01T00:00:00Z", "1Z", "Z"]),
)


@settings(max_examples=600, deadline=None)
@given(text=time_text)
def test_parse_time_equals_the_reference(text: str) -> None:
    assert parse_time(text) == ref_parse_time(text)
    got = parse_time(text)
    assert got is None or got.tzinfo is UTC or got.utcoffset() == timedelta(0)


# -- journal.read ---------------------------------------------------------------------------------

json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6)),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=4,
)
field_value: dict[str, st.SearchStrategy[Any]] = {
    "batch_id": st.sampled_from(["qrb_a", "qrb_b", "qrb_c", "", "qrb_{x}"]) | json_value,
    "outcome": st.sampled_from([o.value for o in Outcome] + ["CANCELLED", "nope"]) | json_value,
    "http_status": st.sampled_from([200, 404, 409, 2**53, -1, 0, True, 200.0]) | json_value,
    "cancel_time": time_text | json_value,
    "end_time": time_text | json_value,
    "attempts": st.sampled_from([0, 1, 3, -5, 2**60, False, 1.0]) | json_value,
    "elapsed_s": st.sampled_from([0.0, 0.25, 1e12, 1e12 - 1, -0.5, 3, True, float("nan"), float("inf")]) | json_value,
    "ratelimit_remaining": st.sampled_from([0, 5, 9000, 9000, 2**53, -1]) | json_value,
}
text_field = st.sampled_from(["STOPPED", "NOT_FOUND_ERROR", "Batch not found", "Zoë {x}", "[1]"]) | json_value


@st.composite
def record_line(draw: st.DrawFn) -> str:
    """One journal line: the writer's own, a record of any shape, or not a record at all."""
    record: dict[str, Any] = {}
    for name in journal._RESULT_FIELDS:
        if draw(st.integers(0, 9)) == 0:
            continue  # a missing field
        record[name] = draw(field_value.get(name, text_field))
    if draw(st.booleans()):
        record["extra"] = draw(json_value)
    kind = draw(st.integers(0, 12))
    if kind == 0:
        return json.dumps(record)[:-draw(st.integers(1, 20))] + "\n"  # torn by a crash
    if kind == 1:
        return json.dumps(record) + draw(st.sampled_from([" x\n", " {}\n", "\t\r\n", "", " \n", "\x0b\n"]))
    if kind == 2:
        return draw(st.sampled_from(["\n", "[]\n", "1\n", '"a"\n', "null\n", "\ufeff{}\n", " {}\n", "{" * 3000 + "\n",
                                     '{"a": 1}, {"b": 2}\n', '{"batch_id": "qrb_a", "outcome":\n', "NaN\n"]))
    if kind == 3:
        return json.dumps(record, indent=None, separators=(",", ":")) + "\n"
    if kind == 4:
        return draw(st.sampled_from([HEADER, HEADER.replace("version\": 1", "version\": 0"),
                                     json.dumps({"format": "other", "batch_id": "qrb_a", "outcome": "cancelled"}) + "\n",
                                     json.dumps({"format": journal.FORMAT, "version": 1, "base_url": API,
                                                 "batch_id": "qrb_a", "outcome": "cancelled"}) + "\n"]))
    if kind == 5:  # the writer's own line for a Result built from drawn values
        r = ref_result({**record, "batch_id": draw(st.sampled_from(["qrb_a", "qrb_b"])),
                        "outcome": draw(st.sampled_from([o.value for o in Outcome]))})
        assert r is not None
        return journal.record_line(journal.record_of(r))
    return json.dumps(record, ensure_ascii=draw(st.booleans())) + "\n"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(record_line(), max_size=12), header_at=st.integers(0, 12), base=st.sampled_from([API, None]))
def test_read_equals_the_json_loads_reference(tmp_path_factory: pytest.TempPathFactory, lines: list[str],
                                              header_at: int, base: str | None) -> None:
    lines = lines[:header_at] + [HEADER] + lines[header_at:]
    path = tmp_path_factory.mktemp("j") / "j.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    try:
        want = ref_read(path, base)
    except JournalError as exc:
        with pytest.raises(JournalError) as got:
            journal.read(path, base)
        assert str(got.value) == str(exc)
        return
    header, results = journal.read(path, base)
    assert header == want[0]
    assert results == want[1] and list(results) == list(want[1])


def test_read_a_foreign_header_or_a_newer_version_is_refused_the_same_way(tmp_path: Path) -> None:
    for text in [HEADER + HEADER.replace(API, "https://other.example"), HEADER.replace('"version": 1', '"version": 9')]:
        path = tmp_path / "j.jsonl"
        path.write_text(text + journal.record_line({"batch_id": "qrb_a", "outcome": "cancelled"}), encoding="utf-8")
        with pytest.raises(JournalError) as want:
            ref_read(path, API)
        with pytest.raises(JournalError) as got:
            journal.read(path, API)
        assert str(got.value) == str(want.value)


@pytest.mark.parametrize("line", [
    "{}\n", '{"a": 1}\n', '{"a": 1} \t\r\n', '{"a": 1}x\n', '{"a": 1}\x0b\n', '{"a": 1}\u00a0\n', '{"a": 1}{}\n',
    '{"a": 1', '{"a": \n', "{" * 5000 + "\n", " {}\n", "\ufeff{}\n", "[]\n", "1\n", "\n", "", "{'a': 1}\n",
    '{"a": NaN, "b": -Infinity}\n', '{"a": 1, "a": 2}\n', '{"a": "\\u00e9\\n"}\n', '{"a": "\x01"}\n',
])
def test_decode_equals_json_loads(line: str) -> None:
    try:
        want = json.loads(line)
    except (ValueError, RecursionError):
        want = None
    want = want if isinstance(want, dict) else None
    got = journal._decode(line)
    assert (got is None and want is None) or got == want


def test_results_read_back_share_repeated_texts(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text(HEADER + "".join(journal.record_line(journal.record_of(
        Result(f"qrb_{k}", Outcome.NOT_FOUND, 404, error_code="NOT_FOUND_ERROR", error_message="Batch not found",
               ratelimit_remaining=9000))) for k in range(3)), encoding="utf-8")
    results = list(journal.read(path, API)[1].values())
    assert results == list(ref_read(path, API)[1].values())
    assert results[0].error_message is results[2].error_message and results[0].error_code is results[1].error_code
    assert results[0].ratelimit_remaining is results[2].ratelimit_remaining


def test_done_keeps_the_final_results_read_only(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    rows = [Result("qrb_a", Outcome.CANCELLED, 200), Result("qrb_b", Outcome.RATE_LIMITED, 429),
            Result("qrb_c", Outcome.NOT_FOUND, 404), Result("qrb_a", Outcome.SERVER_ERROR, 500),
            Result("qrb_d", Outcome.ALREADY_STOPPED, 409)]
    path.write_text(HEADER + "".join(journal.record_line(journal.record_of(r)) for r in rows), encoding="utf-8")
    with journal.Journal(path, API, write=False) as j:
        done = j.done()
        want = {k: r for k, r in ref_read(path, API)[1].items() if r.outcome in oc.FINAL}
        assert dict(done) == want and list(done) == ["qrb_c", "qrb_d"]
        with pytest.raises(TypeError):
            done["qrb_x"] = rows[0]  # type: ignore[index]


def test_reading_leaves_the_garbage_collector_as_it_was(tmp_path: Path) -> None:
    import gc

    path = tmp_path / "j.jsonl"
    path.write_text(HEADER, encoding="utf-8")
    assert gc.isenabled()
    journal.read(path, API)
    assert gc.isenabled()
    gc.disable()
    try:
        journal.read(path, API)
        assert not gc.isenabled()
    finally:
        gc.enable()


# -- export_csv -----------------------------------------------------------------------------------

text_cell = st.one_of(st.none(), st.text(max_size=5), st.sampled_from(["=1+1", "+x", "-1", "@a", "\tx", "\rx", "'=",
                                                                       "a=b", ""]))
object_cell = st.one_of(text_cell, st.integers(-3, 3), st.floats(allow_nan=True), st.just(pd.NA),
                        st.just(np.str_("=np")), st.builds(Text, st.sampled_from(["=t", "t"])), st.just(b"=b"),
                        st.lists(st.integers(), max_size=2))
export_time = st.one_of(st.none(), st.datetimes(min_value=datetime(1678, 1, 1), max_value=datetime(2261, 12, 31)),
                        st.sampled_from([datetime(1969, 12, 31, 23, 59, 59, 999999), datetime(1970, 1, 1),
                                         datetime(1678, 1, 1), datetime(2261, 12, 31, 23, 59, 59, 999999)]))


@st.composite
def export_frame(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(0, 8))
    cells = st.lists(st.none(), min_size=n, max_size=n)
    texts = draw(st.lists(text_cell, min_size=n, max_size=n))
    frame = pd.DataFrame({
        "batch_id": pd.Series(texts, dtype="string"),
        "plain": pd.Series(draw(st.lists(st.text(max_size=4), min_size=n, max_size=n)), dtype=object),
        "mixed": pd.Series(draw(st.lists(object_cell, min_size=n, max_size=n)), dtype=object),
        "=formula name": draw(cells),
        "count": pd.Series(draw(st.lists(st.integers(0, 9) | st.none(), min_size=n, max_size=n)), dtype="Int64"),
    })
    times = draw(st.lists(export_time, min_size=n, max_size=n))
    tz = draw(st.sampled_from(["UTC", "Europe/Helsinki", "America/Sao_Paulo", None]))
    stamps = pd.to_datetime(pd.Series(times, dtype=object))
    unit = draw(st.sampled_from(["ns", "us", "ms", "s"]))
    stamps = stamps.astype(f"datetime64[{unit}]")  # type: ignore[call-overload]
    frame["at"] = stamps.dt.tz_localize("UTC").dt.tz_convert(tz) if tz else stamps
    if draw(st.booleans()) and n:  # beyond what numpy's text and strftime agree on
        frame["far"] = pd.Series(np.array(["9999-12-31T23:59:59"] + ["NaT"] * (n - 1), dtype="datetime64[s]"))
    return frame


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(report=export_frame(), excel=st.booleans())
def test_export_writes_what_the_value_by_value_code_wrote(tmp_path_factory: pytest.TempPathFactory,
                                                          report: pd.DataFrame, excel: bool) -> None:
    folder = tmp_path_factory.mktemp("csv")
    try:
        want = ref_export_columns(report, excel)
    except Exception as exc:  # noqa: BLE001 - then the new code must fail the same way
        with pytest.raises(type(exc)):
            frames.export_csv(report, folder / "r.csv", excel=excel)
        return
    frames.export_csv(report, folder / "r.csv", excel=excel)
    with (folder / "ref.csv").open("w", encoding="utf-8-sig" if excel else "utf-8", newline="") as fh:
        want.to_csv(fh, index=False, sep=",", lineterminator="\r\n" if excel else "\n")
    assert (folder / "r.csv").read_bytes() == (folder / "ref.csv").read_bytes()


def test_export_quotes_formulas_in_text_columns_without_touching_the_input(tmp_path: Path) -> None:
    report = pd.DataFrame({"a": pd.Series(["=1", None, "ok", "-2"], dtype="string"),
                           "b": pd.Series(["x", 1, "@y", None], dtype=object)})
    before = report.copy()
    text = frames.export_csv(report, tmp_path / "r.csv").read_text(encoding="utf-8")
    assert text == "a,b\n'=1,x\n,1\nok,'@y\n'-2,\n"
    pd.testing.assert_frame_equal(report, before)
