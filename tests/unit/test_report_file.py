"""A report written by `export_csv` reads back as the report it was (`read_report`), and
`to_retry` takes exactly the rows `core.outcomes.could_retry` names. No sockets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

import smtoolkit as sm
from smtoolkit import frames
from smtoolkit.core.ids import plan
from smtoolkit.core.outcomes import Outcome, Result, could_retry
from smtoolkit.errors import InputError

T = datetime(2026, 12, 8, 12, 0, 1, 250000, tzinfo=UTC)


def sample() -> pd.DataFrame:
    values = ["qrb_a", "-starts-like-a-formula", "qrb_c", "qrb_d", "bad id!", "qrb_a"]
    results = {
        "qrb_a": Result("qrb_a", Outcome.CANCELLED, 200, "STOPPED", cancel_time=T, end_time=T, attempts=2,
                        elapsed_s=0.25, ratelimit_remaining=4990),
        "-starts-like-a-formula": Result("-starts-like-a-formula", Outcome.SKIPPED, error_code="BUDGET_RESERVE",
                                         error_message="=not a formula"),
        "qrb_c": Result("qrb_c", Outcome.LEFT_ALONE, 200, "RUNNING", "NOT_SELECTED", "left alone: Zoë, 東京"),
        "qrb_d": Result("qrb_d", Outcome.SERVER_ERROR, 503, error_code="SERVICE_UNAVAILABLE", attempts=6),
    }
    frame = pd.DataFrame({"batch_id": values, "owner": ["ann", "bob", "cy", "di", "ed", "fay"]})
    return frames.build_report(frame, values, plan(values), results, {})


@pytest.mark.parametrize(("excel", "sep"), [(False, ","), (True, ","), (True, ";"), (False, "\t"), (True, "|")])
def test_a_report_reads_back_as_written(tmp_path: Path, excel: bool, sep: str) -> None:
    report = sample()
    path = frames.export_csv(report, tmp_path / "r.csv", excel=excel, sep=sep)
    back = sm.read_report(path)
    assert list(back.columns) == list(report.columns)
    assert back.dtypes.to_dict() == report.dtypes.to_dict()
    plain = [c for c in report.columns if c not in ("cancel_time", "end_time")]
    pd.testing.assert_frame_equal(back[plain], report[plain])
    times = report["cancel_time"].dt.floor("s") if excel else report["cancel_time"]
    pd.testing.assert_series_equal(back["cancel_time"], times)


def test_to_retry_takes_the_rows_could_retry_names() -> None:
    report = sample()
    rows = sm.to_retry(report)
    assert rows["batch_id"].tolist() == ["-starts-like-a-formula", "qrb_d"]
    assert all(could_retry(o) for o in rows["outcome"])
    assert not any(could_retry(o) for o in report.drop(rows.index)["outcome"])
    assert frames.retry_input(rows).columns.tolist() == ["batch_id", "owner"]
    with pytest.raises(InputError, match="to_retry"):
        sm.to_retry(pd.DataFrame({"id": [1]}))


@pytest.mark.parametrize(("content", "said"), [
    (b"batch_id\nqrb_1\n", "no 'outcome'"),
    (b"\xff\xfe\x00\x00junk", "not UTF-8"),
])
def test_a_file_that_is_not_a_report_is_refused(tmp_path: Path, content: bytes, said: str) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=said):
        sm.read_report(path)


def test_an_outcome_we_never_write_is_refused(tmp_path: Path) -> None:
    path = frames.export_csv(sample(), tmp_path / "r.csv")
    path.write_text(path.read_text(encoding="utf-8").replace("server_error", "oops"), encoding="utf-8")
    with pytest.raises(InputError, match="'oops' is no outcome"):
        sm.read_report(path)
    with pytest.raises(InputError, match="cannot read"):
        sm.read_report(tmp_path / "missing.csv")
