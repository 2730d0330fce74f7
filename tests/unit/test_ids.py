"""Unit tests for smtoolkit.core.ids: which IDs may be sent and how they become a path segment."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtoolkit.core.ids import MAX_ID_LENGTH, Checked, check_id, path_segment, plan

SAFE_RE = re.compile(r"[A-Za-z0-9._~-]{1,256}")
SAFE_CHARS = "ABCXYZabcxyz0189._~-"


def accepted(value: object) -> str:
    c = check_id(value)
    assert c.problem is None, f"{value!r} was rejected: {c.problem}"
    assert c.batch_id is not None
    return c.batch_id


def rejected(value: object) -> str:
    c = check_id(value)
    assert c.batch_id is None, f"{value!r} was accepted as {c.batch_id!r}"
    assert c.problem
    return c.problem


# -- check_id: accepted values -----------------------------------------------------------------


@pytest.mark.parametrize("raw", ["qrb_3feb5ff5c71e", "a", "A-Z.a_z~0-9", "x" * MAX_ID_LENGTH, ".a", "a.", "a..b", "..a", "~", "-", "_"])
def test_clean_ids_are_accepted_unchanged(raw: str) -> None:
    assert accepted(raw) == raw


@pytest.mark.parametrize(
    "raw",
    [" qrb_1", "qrb_1 ", "\tqrb_1\n", "\r\nqrb_1\r\n", "\ufeffqrb_1", "\u00a0qrb_1\u00a0", "\x0bqrb_1\x0c", "  \t qrb_1 \n\n"],
)
def test_surrounding_blanks_are_stripped(raw: str) -> None:
    assert accepted(raw) == "qrb_1"


def test_inner_blanks_are_not_stripped() -> None:
    assert "may only contain" in rejected("qrb 1")
    assert "may only contain" in rejected("qrb\t1")


def test_str_subclass_is_accepted_as_plain_str() -> None:
    class MyStr(str):
        pass

    got = accepted(MyStr(" qrb_9 "))
    assert got == "qrb_9"
    assert type(got) is str


@pytest.mark.parametrize("value, text", [(0, "0"), (7, "7"), (123456789, "123456789"), (10**255, "1" + "0" * 255)], ids=["0", "7", "9digits", "256digits"])
def test_ints_become_their_decimal_text(value: int, text: str) -> None:
    assert accepted(value) == text


def test_numpy_string_is_accepted() -> None:
    assert accepted(np.str_(" qrb_2 ")) == "qrb_2"


# -- check_id: rejected values -----------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_bools_are_rejected(value: object) -> None:
    problem = rejected(value)
    assert "must be text" in problem


@pytest.mark.parametrize("value", [Decimal("1"), 1j, b"qrb_1", bytearray(b"x"), ["qrb_1"], {"id": 1}, ("a",), object()])
def test_non_text_values_are_rejected_with_their_type(value: object) -> None:
    problem = rejected(value)
    assert problem == f"a batch ID must be text or a whole number, not {type(value).__name__}"


@pytest.mark.parametrize("value", [1.5, -0.25, math.inf, -math.inf, Fraction(1, 2), np.float64(2.5)])
def test_numbers_with_a_fraction_are_refused(value: object) -> None:
    assert "must be a whole number" in rejected(value)


def test_a_float_beyond_exact_integers_is_refused() -> None:
    assert "too large to be an exact ID" in rejected(2.0**60)


@pytest.mark.parametrize("value", [123, np.int64(123), np.int32(123), np.uint8(123), 123.0, np.float64(123.0),
                                   np.float32(123.0), "123", " 123 "])
def test_one_value_one_answer_in_every_numeric_form(value: object) -> None:
    assert check_id(value) == Checked("123")


def test_numeric_ids_from_pandas_columns_agree() -> None:
    ints = pd.DataFrame({"id": [123, 456]})["id"]
    gappy = pd.DataFrame({"id": [123, None, 456]})["id"]  # pandas makes this float64
    assert str(gappy.dtype) == "float64"
    assert plan(ints.tolist()).ids == ["123", "456"]
    assert plan(gappy.tolist()).ids == ["123", None, "456"]
    assert plan(list(gappy)).ids == ["123", None, "456"]  # numpy scalars, not Python floats


@pytest.mark.parametrize("value", [None, math.nan, float("nan"), np.nan, np.float64("nan"), pd.NA, pd.NaT])
def test_missing_values_are_reported_as_missing(value: object) -> None:
    assert rejected(value) == "missing batch ID"


def test_missing_values_from_a_pandas_frame() -> None:
    df = pd.DataFrame({"id": ["qrb_1", None, " qrb_2 "]})
    df2 = pd.Series(["qrb_1", pd.NA], dtype="string")
    assert [check_id(v).batch_id for v in df["id"]] == ["qrb_1", None, "qrb_2"]
    assert [check_id(v).problem for v in df2] == [None, "missing batch ID"]


@pytest.mark.parametrize("raw", ["", " ", "\t\n", "\ufeff", "\u00a0 \u00a0"])
def test_empty_or_blank_is_rejected(raw: str) -> None:
    assert rejected(raw) == "empty batch ID"


@pytest.mark.parametrize("raw", [".", "..", "...", "." * 256, " .. "])
def test_dots_only_is_rejected(raw: str) -> None:
    assert rejected(raw) == "batch ID may not be '.' or '..'"


@pytest.mark.parametrize(
    "raw",
    ["/", "a/b", "../x", "a\\b", "?", "a?b=1", "#", "a#frag", "%2e%2e", "%2E%2E", "a%2Fb", "%", "a+b", "a b", "a;b",
     "a:b", "a@b", "a&b", "a=b", "*", "qrb_é", "qrb_ｑ", "qrb_\u0430", "\u00e9", "٣", "qrb_😀", "a\x00b", "\x00",
     "a\nb", "a\rb", "a\x7f", "a\x1b[0m", "a\u200bb", "a\u2028b"],
)
def test_unsafe_characters_are_rejected(raw: str) -> None:
    assert rejected(raw) == "batch ID may only contain A-Z a-z 0-9 - . _ ~"


def test_control_char_at_the_end_that_is_not_a_blank_is_rejected() -> None:
    # \x00 is not one of the stripped blanks, so it stays and is refused.
    rejected("qrb_1\x00")
    # A trailing newline is a blank and is stripped.
    assert accepted("qrb_1\n") == "qrb_1"


@pytest.mark.parametrize("n", [MAX_ID_LENGTH + 1, 1000, 100_000])
def test_too_long_is_rejected(n: int) -> None:
    assert rejected("a" * n) == f"batch ID longer than {MAX_ID_LENGTH} characters"
    # Long *and* unsafe: still reported as too long, not crashing.
    assert "longer than" in rejected("/" * n)


def test_length_counts_after_stripping() -> None:
    assert accepted("  " + "a" * MAX_ID_LENGTH + "  ") == "a" * MAX_ID_LENGTH


@pytest.mark.parametrize("value", [10**256, -(10**300), 10**5000, -(10**5000)], ids=["1e256", "-1e300", "1e5000", "-1e5000"])
def test_huge_ints_are_rejected_not_raised(value: int) -> None:
    # str() of an int over 4300 digits raises ValueError on Python 3.11+.
    assert "longer than" in rejected(value)


def test_checked_is_frozen() -> None:
    c = check_id("a")
    assert c == Checked("a")
    with pytest.raises(AttributeError):
        c.batch_id = "b"  # type: ignore[misc]


# -- path_segment ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["qrb_3feb5ff5c71e", "A-Z.a_z~0-9", "-", "~"])
def test_path_segment_leaves_safe_ids_alone(raw: str) -> None:
    assert path_segment(raw) == raw


@pytest.mark.parametrize("raw, seg", [("a/b", "a%2Fb"), ("?", "%3F"), ("#", "%23"), ("%2e", "%252e"), ("a b", "a%20b"), ("é", "%C3%A9")])
def test_path_segment_escapes_everything_else(raw: str, seg: str) -> None:
    assert path_segment(raw) == seg
    assert unquote(seg) == raw


# -- plan --------------------------------------------------------------------------------------


def test_plan_duplicates_point_at_first_occurrence() -> None:
    p = plan(["a", " a", "b", "a\n", None, "b", "..", "c"])
    assert p.ids == ["a", "a", "b", "a", None, "b", None, "c"]
    assert p.duplicates == {1: 0, 3: 0, 5: 2}
    assert p.problems == {4: "missing batch ID", 6: "batch ID may not be '.' or '..'"}
    assert p.unique == ["a", "b", "c"]


def test_plan_unique_keeps_input_order() -> None:
    p = plan(["z", "c", "a", "c", "b", "z", "a"])
    assert p.unique == ["z", "c", "a", "b"]
    assert p.duplicates == {3: 1, 5: 0, 6: 2}
    assert p.problems == {}


def test_plan_int_and_text_of_same_id_are_duplicates() -> None:
    p = plan([12, "12", " 12 "])
    assert p.unique == ["12"]
    assert p.duplicates == {1: 0, 2: 0}


def test_plan_first_occurrence_is_the_first_valid_one() -> None:
    p = plan(["a/b", "ok", "ok"])
    assert p.problems.keys() == {0}
    assert p.duplicates == {2: 1}
    assert p.unique == ["ok"]


def test_plan_accepts_any_iterable_and_empty() -> None:
    p = plan(x for x in ["a", "b"])
    assert p.ids == ["a", "b"] and p.unique == ["a", "b"]
    e = plan([])
    assert (e.ids, e.problems, e.duplicates, e.unique) == ([], {}, {}, [])


def test_plan_on_pandas_series_with_missing() -> None:
    s = pd.Series(["qrb_1", np.nan, "qrb_1", pd.NA, "qrb_2"], dtype=object)
    p = plan(s)
    assert p.ids == ["qrb_1", None, "qrb_1", None, "qrb_2"]
    assert p.problems == {1: "missing batch ID", 3: "missing batch ID"}
    assert p.duplicates == {2: 0}
    assert p.unique == ["qrb_1", "qrb_2"]


def test_plan_is_linear_enough_for_large_inputs() -> None:
    ids = [f"qrb_{i % 50_000:06d}" for i in range(100_000)]
    p = plan(ids)
    assert len(p.unique) == 50_000
    assert len(p.duplicates) == 50_000
    assert p.duplicates[50_000] == 0 and p.duplicates[99_999] == 49_999


# -- properties --------------------------------------------------------------------------------

near_ids = st.text(alphabet=st.sampled_from(list(SAFE_CHARS + " ./?#%\x00\t\n\ufeff\u00a0é")), max_size=12)
anything = st.one_of(
    st.text(max_size=300),
    near_ids,
    st.integers(),
    st.integers(min_value=-(10**6000), max_value=10**6000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.binary(max_size=20),
    st.decimals(allow_nan=True),
    st.complex_numbers(),
    st.lists(st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(pd.NA),
    st.just(pd.NaT),
    st.just(np.nan),
    st.builds(object),
)


@settings(max_examples=600, deadline=None)
@given(anything)
def test_check_id_never_raises_and_accepted_ids_are_safe(value: object) -> None:
    c = check_id(value)
    assert isinstance(c, Checked)
    assert (c.batch_id is None) != (c.problem is None)
    if c.batch_id is None:
        assert isinstance(c.problem, str) and c.problem
        return
    bid = c.batch_id
    assert type(bid) is str
    assert SAFE_RE.fullmatch(bid)
    assert set(bid) != {"."}
    url = "/query/batch/" + path_segment(bid)
    after = url.split("batch/", 1)[1]
    assert after and "/" not in after and "?" not in after and "#" not in after
    assert after not in (".", "..")
    assert unquote(after) == bid


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(SAFE_CHARS)), min_size=1, max_size=MAX_ID_LENGTH), st.text(alphabet=" \t\r\n\ufeff\u00a0", max_size=3), st.text(alphabet=" \t\r\n\ufeff\u00a0", max_size=3))
def test_safe_text_with_blanks_is_accepted_stripped(core: str, left: str, right: str) -> None:
    c = check_id(left + core + right)
    if set(core) == {"."}:
        assert c.batch_id is None
    else:
        assert c.batch_id == core


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=MAX_ID_LENGTH))
def test_path_segment_is_always_one_segment(text: str) -> None:
    seg = path_segment(text)
    assert "/" not in seg and "?" not in seg and "#" not in seg
    assert unquote(seg, errors="strict") == text


pool = st.sampled_from(["a", " a", "b", "b\n", "..", "", None, math.nan, 3, "3", True, "x/y", "c", "qrb_1", "qrb_1\ufeff"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(pool, anything), max_size=30))
def test_plan_agrees_with_check_id(values: list[object]) -> None:
    p = plan(values)
    assert len(p.ids) == len(values)
    first: dict[str, int] = {}
    unique: list[str] = []
    for i, v in enumerate(values):
        c = check_id(v)
        assert p.ids[i] == c.batch_id
        if c.batch_id is None:
            assert p.problems[i] == c.problem
            assert i not in p.duplicates
            continue
        assert i not in p.problems
        if c.batch_id in first:
            assert p.duplicates[i] == first[c.batch_id]
            assert p.ids[p.duplicates[i]] == c.batch_id
            assert p.duplicates[i] < i
        else:
            first[c.batch_id] = i
            unique.append(c.batch_id)
            assert i not in p.duplicates
    assert p.unique == unique
    assert len(set(p.unique)) == len(p.unique)
