"""Unit tests for smtoolkit.core.retry: Retry-After parsing, backoff, retry budget."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtoolkit.core.answers import Answer
from smtoolkit.core.retry import (
    CONNECT_RETRIES,
    MAX_RETRY_AFTER,
    RETRY_STATUSES,
    RetryBudget,
    RetryPolicy,
    parse_retry_after,
)
from smtoolkit.core.settle import is_final

NOW = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 UTC


# -- parse_retry_after -------------------------------------------------------------------------


@pytest.mark.parametrize("raw, seconds", [("0", 0.0), ("1", 1.0), ("120", 120.0), (" 5 ", 5.0), ("\t30\r\n", 30.0),
                                          ("007", 7.0), ("300", 300.0), ("301", MAX_RETRY_AFTER)])
def test_delta_seconds(raw: str, seconds: float) -> None:
    assert parse_retry_after(raw, NOW) == seconds


@pytest.mark.parametrize("raw", ["9999999999", "99999999999999999999", "1" + "0" * 400, "3600"])
def test_huge_delta_is_capped(raw: str) -> None:
    got = parse_retry_after(raw, NOW)
    assert got == MAX_RETRY_AFTER
    assert isinstance(got, float)


def test_delta_is_independent_of_now() -> None:
    assert parse_retry_after("12", 0.0) == parse_retry_after("12", NOW) == 12.0


@pytest.mark.parametrize("raw, seconds", [
    ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
    ("Wed, 21 Oct 2015 07:30:00 GMT", 120.0),
    ("Wed, 21 Oct 2015 07:28:30 UTC", 30.0),
    ("Wed, 21 Oct 2015 07:28:30 +0000", 30.0),
    ("Wed, 21 Oct 2015 09:28:30 +0200", 30.0),
    ("Wed, 21 Oct 2015 02:28:30 -0500", 30.0),
    ("21 Oct 2015 07:28:30 GMT", 30.0),
    ("Wednesday, 21-Oct-15 07:28:30 GMT", 30.0),  # RFC 850, obsolete but allowed by RFC 9110
])
def test_http_date(raw: str, seconds: float) -> None:
    assert parse_retry_after(raw, NOW) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["Wed, 21 Oct 2015 07:28:30", "Wed, 21 Oct 2015 07:28:30 -0000", "21 Oct 2015 07:28:30"])
def test_http_date_without_zone_is_utc(raw: str) -> None:
    # urllib3 #1896: a zone-less date must not be read as local time.
    assert parse_retry_after(raw, NOW) == pytest.approx(30.0)


@pytest.mark.parametrize("raw", ["Wed, 21 Oct 2015 07:27:59 GMT", "Sun, 06 Nov 1994 08:49:37 GMT", "Wed, 21 Oct 2015 07:28:00 GMT",
                                 "Mon, 01 Jan 0001 00:00:00 GMT"])
def test_past_or_present_date_is_zero(raw: str) -> None:
    assert parse_retry_after(raw, NOW) == 0.0


@pytest.mark.parametrize("raw", ["Thu, 22 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "Fri, 31 Dec 9999 23:59:59 -1200"])
def test_far_future_date_is_capped(raw: str) -> None:
    assert parse_retry_after(raw, NOW) == MAX_RETRY_AFTER


@pytest.mark.parametrize("raw", [None, "", "   ", "soon", "-5", "+5", "1.5", "1e3", "0x10", "5s", "5 5", "NaN", "inf",
                                 "²", "٣", "١٢٠", "Wed, 32 Oct 2015 07:28:30 GMT", "Wed, 21 Foo 2015 07:28:30 GMT",
                                 "Wed, 21 Oct 2015 25:61:61 GMT", "Wed, 21 Oct", "\x00", "GMT"])
def test_garbage_is_none(raw: str | None) -> None:
    assert parse_retry_after(raw, NOW) is None


# -- RetryPolicy -------------------------------------------------------------------------------


class RecordingRng:
    """Stands in for random.Random: records uniform()'s bounds and returns the upper one."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return b


@pytest.mark.parametrize("base, cap", [(0.5, 30.0), (1.0, 10.0), (0.05, 0.5), (2.0, 1.0)])
def test_backoff_ceiling_is_capped_before_randomizing(base: float, cap: float) -> None:
    p = RetryPolicy(backoff_base=base, backoff_cap=cap)
    for n in range(0, 40):
        rng = RecordingRng()
        p.backoff(n, rng)  # type: ignore[arg-type]
        assert rng.calls == [(0.0, min(cap, base * 2**n))]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 6, 10, 31, 1000, 10**9])
def test_backoff_full_jitter_within_bounds(n: int) -> None:
    p = RetryPolicy(backoff_base=0.5, backoff_cap=30.0)
    ceiling = min(30.0, 0.5 * 2 ** min(n, 60))
    rng = random.Random(n)
    waits = [p.backoff(n, rng) for _ in range(400)]
    assert all(0.0 <= w <= ceiling for w in waits)
    # Full jitter: spread over the whole range, not bunched at the top.
    assert min(waits) < 0.1 * ceiling
    assert max(waits) > 0.9 * ceiling
    assert 0.35 * ceiling < statistics.mean(waits) < 0.65 * ceiling


def test_backoff_at_the_cap_spreads_the_workers() -> None:
    # tenacity #703: jitter then clamp makes every worker at the cap sleep exactly the cap.
    p = RetryPolicy(backoff_base=0.5, backoff_cap=30.0)
    waits = [p.backoff(20, random.Random(seed)) for seed in range(200)]
    assert len(set(waits)) == len(waits)
    assert sum(1 for w in waits if w >= 29.9) < 10
    assert statistics.pstdev(waits) > 5.0


def test_backoff_grows_with_retry_number() -> None:
    p = RetryPolicy(backoff_base=0.5, backoff_cap=30.0)
    means = [statistics.mean(p.backoff(n, random.Random(1000 * n + k)) for k in range(300)) for n in range(6)]
    assert means == sorted(means)
    assert means[5] > 8 * means[0]


def test_backoff_zero_base_is_zero() -> None:
    p = RetryPolicy(backoff_base=0.0, backoff_cap=30.0)
    assert {p.backoff(n, random.Random(n)) for n in range(10)} == {0.0}


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    p = RetryPolicy()
    assert [p.backoff(3, random.Random(7)) for _ in range(2)] == [p.backoff(3, random.Random(7))] * 2


@pytest.mark.parametrize("ra", [0.0, 0.5, 1.0, 7.0, 9.5, 10.0, 60.0, 299.0, MAX_RETRY_AFTER])
def test_wait_with_retry_after_adds_small_positive_jitter(ra: float) -> None:
    p = RetryPolicy()
    jitter_max = min(1.0, 0.1 * ra + 0.05)
    waits = [p.wait(n % 7, ra, random.Random(n)) for n in range(300)]
    assert all(ra <= w <= min(ra + jitter_max, MAX_RETRY_AFTER + 1) for w in waits)
    assert len(set(waits)) > 250  # not in lockstep
    assert max(waits) - ra > 0.5 * jitter_max


def test_wait_with_retry_after_ignores_the_retry_number() -> None:
    p = RetryPolicy(backoff_base=10.0, backoff_cap=1000.0)
    assert p.wait(0, 2.0, random.Random(1)) == p.wait(30, 2.0, random.Random(1))
    assert 2.0 <= p.wait(30, 2.0, random.Random(1)) <= 2.25


def test_wait_with_huge_retry_after_is_capped() -> None:
    p = RetryPolicy()
    assert p.wait(0, 1e12, random.Random(1)) == MAX_RETRY_AFTER + 1


def test_wait_without_retry_after_is_backoff() -> None:
    p = RetryPolicy()
    for n in range(8):
        assert p.wait(n, None, random.Random(n)) == p.backoff(n, random.Random(n))


@pytest.mark.parametrize("status", sorted(RETRY_STATUSES) + [None])
def test_retryable(status: int | None) -> None:
    # None stands for a transport failure (timeout, reset, broken body): retried too.
    assert not is_final(None if status is None else Answer(status))


def test_retry_statuses_are_the_documented_ones() -> None:
    assert RETRY_STATUSES == {429, 500, 502, 503, 504}


@pytest.mark.parametrize("status", [200, 201, 204, 301, 400, 401, 403, 404, 405, 409, 413, 422, 501, 505, 599])
def test_not_retryable(status: int) -> None:
    # A readable answer (an empty JSON object) that is no 429/5xx-retry status: final.
    assert is_final(Answer(status, {} if 200 <= status < 300 else None))


@pytest.mark.parametrize("kwargs", [{"max_retries": -1}, {"backoff_base": -0.1}, {"backoff_cap": -1.0}, {"row_deadline": 0.0},
                                    {"row_deadline": -5.0}])
def test_policy_rejects_bad_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_defaults_and_immutability() -> None:
    p = RetryPolicy()
    assert (p.max_retries, p.backoff_base, p.backoff_cap, p.row_deadline) == (5, 0.5, 30.0, 300.0)
    with pytest.raises(AttributeError):
        p.max_retries = 3  # type: ignore[misc]


def test_a_failure_that_sent_nothing_is_retried_only_a_little() -> None:
    p = RetryPolicy(max_retries=5)
    assert CONNECT_RETRIES == p.connect_retries == 2
    assert [p.exhausted(n, reached=False) for n in range(4)] == [False, False, True, True]
    assert [p.exhausted(n, reached=True) for n in range(7)] == [False] * 5 + [True] * 2
    # max_retries is the ceiling for both: 0 means no retry at all.
    assert RetryPolicy(max_retries=0).exhausted(0, reached=False)
    assert RetryPolicy(max_retries=1).exhausted(1, reached=False)
    with pytest.raises(ValueError):
        RetryPolicy(connect_retries=-1)


# -- RetryBudget -------------------------------------------------------------------------------


def test_retry_budget_runs_out_and_refills() -> None:
    b = RetryBudget()
    assert (b.capacity, b.tokens, b.retry_cost, b.success_refund) == (500, 500, 2, 1)
    assert all(b.take() for _ in range(250))
    assert b.tokens == 0
    assert not b.take()
    assert b.tokens == 0  # a refused take costs nothing
    b.refund()
    assert not b.take() and b.tokens == 1
    b.refund()
    assert b.take() and b.tokens == 0


def test_retry_budget_refund_is_capped_at_capacity() -> None:
    b = RetryBudget(capacity=10, retry_cost=3, success_refund=2)
    b.refund()
    assert b.tokens == 10
    assert b.take() and b.tokens == 7
    b.refund()
    b.refund()
    assert b.tokens == 10


def test_retry_budget_partial_tokens_are_not_enough() -> None:
    b = RetryBudget(capacity=12, retry_cost=5)
    assert b.take() and b.take()
    assert b.tokens == 2
    assert not b.take()


# -- properties --------------------------------------------------------------------------------

retry_after_texts = st.one_of(
    st.text(max_size=40),
    st.integers(0, 10**30).map(str),
    st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT")),
    st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S")),
    st.datetimes().map(lambda d: d.strftime("%d %b %Y %H:%M:%S %z+0930")),
    st.text(alphabet=st.sampled_from(list("0123456789 ,:+-GMTUC²٣WedOctJanFri")), max_size=32),
)


@settings(max_examples=600, deadline=None)
@given(retry_after_texts, st.floats(-1e10, 1e11, allow_nan=False), st.integers(0, 10**6), st.integers(0, 2**32))
def test_any_retry_after_and_retry_give_a_bounded_wait(raw: str, now: float, retry: int, seed: int) -> None:
    ra = parse_retry_after(raw, now)
    assert ra is None or 0.0 <= ra <= MAX_RETRY_AFTER
    p = RetryPolicy()
    w = p.wait(retry, ra, random.Random(seed))
    assert 0.0 <= w <= MAX_RETRY_AFTER + 1
    if ra is not None:
        assert w >= ra
    else:
        assert w <= p.backoff_cap


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 100), st.floats(0, 1000), st.integers(-5, 10**6), st.integers(0, 2**32))
def test_backoff_bounds_for_any_policy(base: float, cap: float, retry: int, seed: int) -> None:
    p = RetryPolicy(backoff_base=base, backoff_cap=cap)
    w = p.backoff(retry, random.Random(seed))
    assert 0.0 <= w <= min(cap, base * 2.0 ** min(max(retry, -5), 30)) + 1e-9
