"""The console's selection rule (`core/select.py`): pure, no widgets, no sockets, no clock."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtoolkit.core.outcomes import Outcome, Result, could_retry
from smtoolkit.core.select import (
    STATUSES,
    Criteria,
    Row,
    cancel_plan,
    choose,
    criteria,
    description_regex,
    matching,
    parse_age,
    parse_statuses,
    selection_plan,
    unknown_ids,
)
from smtoolkit.errors import InputError

NOW = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)


def ago(**kw: float) -> datetime:
    return NOW - timedelta(**kw)


ROWS = [
    Row("qrb_a", "RUNNING", None, ago(hours=3), "Nightly sync EU"),
    Row("qrb_b", "RUNNING", None, ago(minutes=10), "nightly sync US"),
    Row("qrb_c", "QUEUED", None, ago(hours=2), "Ad hoc"),
    Row("qrb_d", "STOPPED", "already_stopped", ago(days=1), "Nightly sync old"),
    Row("qrb_e", None, None, None, None),  # never looked up
    Row("qrb_f", None, "not_found", None, None),
    Row("qrb_g", "RUNNING", None, None, "nightly, time unknown"),
]


def pick(**kw: object) -> list[str]:
    return [ROWS[i].batch_id for i in matching(ROWS, criteria(**kw), NOW)]  # type: ignore[arg-type]


# -- ages -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "seconds"), [
    ("90m", 5400), ("2h", 7200), ("1h30m", 5400), ("1h 30m", 5400), ("1d", 86400), ("45s", 45),
    ("1d2h3m4s", 93784), ("3600", 3600), (" 2H ", 7200), ("1.5h", 5400), ("0", 0),
])
def test_ages_read_as_people_write_them(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize("value", [3600, 3600.0, timedelta(hours=1)])
def test_ages_as_seconds_or_timedelta(value: object) -> None:
    assert parse_age(value) == 3600.0


@pytest.mark.parametrize("bad", ["", "h", "2x", "30m1h", "1h1h", "1ms", "-5", "2 hours", "1h30", True, None,
                                 -1, float("nan"), float("inf"), timedelta(seconds=-1), [3600]])
def test_unreadable_ages_are_input_errors(bad: object) -> None:
    with pytest.raises(InputError, match="older_than"):
        parse_age(bad)


@given(h=st.integers(0, 99), m=st.integers(0, 59), s=st.integers(0, 59))
def test_any_h_m_s_text_is_its_seconds(h: int, m: int, s: int) -> None:
    assert parse_age(f"{h}h{m}m{s}s") == h * 3600 + m * 60 + s


# -- statuses ---------------------------------------------------------------------------------
def test_statuses_any_case_one_or_many() -> None:
    assert parse_statuses("running") == {"RUNNING"}
    assert parse_statuses(["QUEUED", "Running"]) == {"QUEUED", "RUNNING"}


@pytest.mark.parametrize(("bad", "named"), [("RUNING", "'RUNING'.*did you mean 'RUNNING'"),
                                            (["QUEUED", "DONE"], "'DONE'"), ([3], "3"), ([], "names no status")])
def test_a_misspelt_status_is_named(bad: object, named: str) -> None:
    with pytest.raises(InputError, match=named):
        parse_statuses(bad)


# -- criteria ---------------------------------------------------------------------------------
def test_no_criterion_is_an_input_error() -> None:
    with pytest.raises(InputError, match="at least one criterion"):
        criteria()
    with pytest.raises(InputError, match="at least one criterion"):
        criteria(all=False)


@pytest.mark.parametrize("bad", ["", "   ", 3, re.compile(b"x")])
def test_an_empty_or_odd_description_is_refused(bad: object) -> None:
    with pytest.raises(InputError, match="description"):
        criteria(description=bad)


def test_ids_must_be_text() -> None:
    with pytest.raises(InputError, match="ids"):
        criteria(ids=[1, 2])
    assert criteria(ids="qrb_a ").ids == {"qrb_a"}


# -- matching ---------------------------------------------------------------------------------
def test_status_and_age_together() -> None:
    assert pick(status=["RUNNING"], older_than="1h") == ["qrb_a"]
    assert pick(status=["RUNNING", "QUEUED"], older_than=3600) == ["qrb_a", "qrb_c"]


def test_a_row_of_unknown_time_never_matches_an_age() -> None:
    assert "qrb_g" not in pick(older_than=0) and "qrb_e" not in pick(older_than=0)
    assert pick(older_than=0) == ["qrb_a", "qrb_b", "qrb_c", "qrb_d"]


def test_description_substring_ignores_case_and_regex_is_searched() -> None:
    assert pick(description="NIGHTLY SYNC") == ["qrb_a", "qrb_b", "qrb_d"]
    assert pick(description="sync (") == []  # a substring, not a pattern
    assert pick(description=re.compile(r"^nightly")) == ["qrb_b", "qrb_g"]  # a regex keeps its own case rule


def test_all_leaves_out_rows_known_to_be_over() -> None:
    assert pick(all=True) == ["qrb_a", "qrb_b", "qrb_c", "qrb_e", "qrb_g"]
    assert pick(all=True, description="nightly") == ["qrb_a", "qrb_b", "qrb_g"]


def test_ids_exactly_these_in_table_order() -> None:
    assert pick(ids=["qrb_c", "qrb_a"]) == ["qrb_a", "qrb_c"]
    assert pick(ids=["qrb_d"]) == ["qrb_d"]  # named explicitly, a stopped row can be selected
    assert unknown_ids(ROWS, criteria(ids=["qrb_a", "nope", "bad id"])) == ["bad id", "nope"]


def test_an_age_boundary_is_strict() -> None:
    rows = [Row("x", "RUNNING", None, ago(hours=1))]
    assert matching(rows, criteria(older_than="1h"), NOW) == []
    assert matching(rows, criteria(older_than="59m"), NOW) == [0]


row_strategy = st.builds(
    Row,
    batch_id=st.text("abc", min_size=1, max_size=3),
    status=st.sampled_from([*STATUSES, None]),
    outcome=st.sampled_from([None, "cancelled", "not_found", "already_stopped", "server_error", "would_cancel"]),
    schedule_time=st.one_of(st.none(), st.integers(0, 10_000).map(lambda s: ago(seconds=s))),
    description=st.one_of(st.none(), st.text("ab ", max_size=5)),
)


@given(rows=st.lists(row_strategy, max_size=30), statuses=st.sets(st.sampled_from(STATUSES), min_size=1),
       age=st.integers(0, 10_000), use_age=st.booleans(), use_all=st.booleans())
def test_matching_is_the_conjunction_of_each_criterion(rows: list[Row], statuses: set[str], age: int,
                                                        use_age: bool, use_all: bool) -> None:
    c = criteria(status=sorted(statuses), older_than=age if use_age else None, all=use_all)
    got = matching(rows, c, NOW)
    assert got == sorted(got)
    for i, r in enumerate(rows):
        expected = (r.status in statuses
                    and (not use_age or (r.schedule_time is not None and NOW - r.schedule_time > timedelta(seconds=age)))
                    and (not use_all or not r.final))
        assert (i in got) == expected


@given(rows=st.lists(row_strategy, max_size=30))
def test_all_never_takes_a_final_row(rows: list[Row]) -> None:
    got = matching(rows, Criteria(all=True), NOW)
    assert [i for i, r in enumerate(rows) if not r.final] == got


def test_what_stays_selected_after_a_cancel() -> None:
    finished = ("cancelled", "already_stopped", "not_found", "left_alone", "invalid_id", "duplicate")
    assert [o for o in finished if could_retry(o)] == []
    for o in ("stopping", "server_error", "network_error", "rate_limited", "skipped", "unauthorized",
              "forbidden", "client_error", "would_cancel", Outcome.SKIPPED):
        assert could_retry(o)
    assert not could_retry(None) and not could_retry("nonsense")


# -- the plan line ----------------------------------------------------------------------------
def test_plan_states_count_by_status_requests_budget_and_an_estimate() -> None:
    rows = [ROWS[0], ROWS[1], ROWS[2], ROWS[4]]
    line = cancel_plan(rows, remaining=4000, limit=5000, kept=500, max_rps=20.0, over_budget=None)
    assert line.startswith("Cancel 4 selected batches (QUEUED 1, RUNNING 2, not looked up 1): 4 DELETE request(s)")
    assert "the hourly budget allows 3,500 now (4,000 left of 5,000, 500 kept for production)" in line
    assert line.endswith("estimate: about 1 s at 20 requests/s")
    assert "\n" not in line


def test_plan_before_any_answer_and_beyond_the_budget() -> None:
    line = cancel_plan([ROWS[0]], remaining=None, limit=None, kept=0, max_rps=20.0, over_budget=None)
    assert "Cancel 1 selected batch (RUNNING 1)" in line and "not known yet" in line
    line = cancel_plan([ROWS[0]] * 3, remaining=1, limit=10, kept=1, max_rps=20.0,
                       over_budget="this run needs at least 3 request(s); ...")
    assert line.endswith("; this run needs at least 3 request(s); ...")


# -- choosing from look-ups (a cancel run's criteria) -------------------------------------------
def _looked(bid: str, status: str | None, hours: float | None = 3, description: str = "Nightly",
            outcome: Outcome | None = None) -> Result:
    if status is None:
        return Result(bid, outcome or Outcome.NOT_FOUND, http_status=404, attempts=1)
    batch = {"status_code": status, "description": description,
             "schedule_time": None if hours is None else ago(hours=hours).isoformat()}
    seen = Outcome.ALREADY_STOPPED if status == "STOPPED" else Outcome.WOULD_CANCEL
    return Result(bid, seen, http_status=200, status_code=status, attempts=1, batch=batch)


def test_choose_cancels_matches_and_settles_every_other_row() -> None:
    looks = {"a": _looked("a", "RUNNING"), "b": _looked("b", "RUNNING", hours=1), "c": _looked("c", "STOPPED"),
             "d": _looked("d", None), "e": _looked("e", "QUEUED", hours=None),
             "f": Result("f", Outcome.SERVER_ERROR, http_status=503, error_message="busy", attempts=3)}
    c = criteria(older_than="2h")
    got = choose(list(looks), looks, c, NOW)
    assert got.to_cancel == ("a",)
    assert {k: r.outcome.value for k, r in got.decided.items()} == {
        "b": "left_alone", "c": "already_stopped", "d": "not_found", "e": "left_alone", "f": "server_error"}
    assert got.decided["b"].status_code == "RUNNING" and got.decided["b"].error_code == "NOT_SELECTED"
    assert "less than 2 h 00 min ago" in str(got.decided["b"].error_message)
    assert "schedule time is not known" in str(got.decided["e"].error_message)
    assert got.decided["f"].error_message == "not cancelled: the look-up failed (busy)"
    halted = choose(list(looks), looks, c, NOW, ("BUDGET_RESERVE", "not sent: reserve"))
    assert halted.to_cancel == () and halted.decided["a"].outcome is Outcome.SKIPPED
    assert halted.decided["a"].error_code == "BUDGET_RESERVE" and halted.decided["a"].http_status is None


def test_choose_uses_the_one_matching_rule() -> None:
    looks = {r.batch_id: _looked(r.batch_id, r.status, description=r.description or "")
             for r in ROWS if r.status is not None}
    for c in (criteria(status=["RUNNING", "QUEUED"]), criteria(description="sync"),
              criteria(status="STOPPED", description=re.compile("^night", re.I))):
        got = choose(list(looks), looks, c, NOW)
        rows = [got.seen[b] for b in looks]
        expected = [rows[i].batch_id for i in matching(rows, c, NOW)]
        chosen = [*got.to_cancel, *(b for b, r in got.decided.items() if r.outcome is Outcome.ALREADY_STOPPED)]
        assert sorted(chosen) == sorted(expected)


def test_selection_plan_says_what_is_cancelled_left_alone_and_not_cancelled() -> None:
    looks = {"a": _looked("a", "RUNNING"), "b": _looked("b", "QUEUED"), "c": _looked("c", "STOPPED"),
             "d": _looked("d", None)}
    text = selection_plan(choose(list(looks), looks, criteria(status="RUNNING"), NOW), remaining=100, limit=200,
                          kept=20, max_rps=20.0, over_budget=None)
    lines = text.split("\n")
    assert lines[0].startswith("Plan: Cancel 1 selected batch (RUNNING 1): 1 DELETE request(s)")
    assert "the hourly budget allows 80 now" in lines[0] and "estimate: about 1 s" in lines[0]
    assert lines[1] == "Left alone (not matching): 2 (QUEUED 1, STOPPED 1)"
    assert lines[2] == "Not cancelled, as the look-up found them: not_found 1"
    nothing = selection_plan(choose(["a"], looks, criteria(status="QUEUED"), NOW), remaining=None, limit=None,
                             kept=0, max_rps=20.0, over_budget=None)
    assert nothing.startswith("Plan: Cancel nothing: no batch matches")


@pytest.mark.parametrize("bad", ["", "(", "[a-"])
def test_a_description_regex_is_checked(bad: str) -> None:
    with pytest.raises(InputError, match=re.escape(repr(bad))):
        description_regex(bad)
    assert description_regex("^night").search("NIGHTLY sync")
