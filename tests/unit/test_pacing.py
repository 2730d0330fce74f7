"""Unit tests for smtoolkit.core.pacing with a simulated clock: Pacer (per-second pacing, 429
pauses, adaptive rate) and Budget (the hourly X-RateLimit budget and the reserve)."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtoolkit.core.pacing import LATE_TOLERANCE, MIN_RPS, PROBE_PERIOD, PROBE_STEP, SAFETY, SQUEEZE, Budget, Pacer
from tests.helpers import max_in_window

# -- helpers -----------------------------------------------------------------------------------


def allowed_per_second(max_rps: float) -> int:
    """Starts a one-second window may hold: max_rps rounded down, and at least the one start
    that any positive rate needs."""
    return max(1, math.floor(max_rps))


def drive(pacer: Pacer, *, workers: int, count: int, latency: Callable[[int, int], float] = lambda w, n: 0.0,
          t0: float = 0.0, until: float = math.inf) -> list[float]:
    """Workers that each loop: ask `earliest`, sleep until then, start, wait `latency`.

    Mimics the client's acquire loop on a simulated clock: a worker that wakes and finds it
    may not start yet goes back to sleep until the new `earliest`.
    """
    heap = [(t0, w) for w in range(workers)]
    heapq.heapify(heap)
    starts: list[float] = []
    while heap and len(starts) < count:
        now, w = heapq.heappop(heap)
        if now >= until:
            break
        e = pacer.earliest(now)
        assert e >= now
        if e <= now:
            pacer.start(now)
            starts.append(now)
            heapq.heappush(heap, (now + latency(w, len(starts)), w))
        else:
            heapq.heappush(heap, (e, w))
    return starts


# -- Pacer: construction -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf, "20", None, [20], complex(1, 0)])
def test_bad_max_rps_raises_value_error(bad: object) -> None:
    with pytest.raises(ValueError):
        Pacer(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_rps", [1, 2.5, 20, 20.0, 1000])
def test_fresh_pacer(max_rps: float) -> None:
    p = Pacer(max_rps)
    assert p.max_rps == float(max_rps)
    assert p.rate(0.0) == pytest.approx(max_rps * SAFETY)
    assert p.earliest(123.5) == 123.5  # nothing sent yet: go now
    assert p.throttles == 0


# -- Pacer: spacing and the sliding window -----------------------------------------------------

RATES = [0.5, 0.75, 1, 1.5, 2.5, 5, 10, 19, 20, 25, 50, 100, 20 / SAFETY, 10 / SAFETY, 39 / SAFETY, 1 / SAFETY]


@pytest.mark.parametrize("max_rps", RATES)
def test_many_workers_are_evenly_spaced_and_within_max_rps(max_rps: float) -> None:
    p = Pacer(max_rps)
    n = int(max_rps * 6) + 5
    starts = drive(p, workers=64, count=n, latency=lambda w, k: 0.05 + 0.37 * ((w * 7 + k) % 5), t0=10.0)
    assert len(starts) == n
    assert starts[0] == 10.0
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    spacing = 1.0 / (max_rps * SAFETY)
    assert all(g >= spacing * (1 - 1e-9) for g in gaps)
    assert max_in_window(starts) <= allowed_per_second(max_rps)
    if math.ceil(max_rps * SAFETY - 1e-9) <= allowed_per_second(max_rps):
        # Even spacing already keeps every window within max_rps: exactly even.
        assert all(g == pytest.approx(spacing, rel=1e-9) for g in gaps)
    else:
        # A non-integer max_rps (1.5, 2.5): windows hold floor(max_rps) starts, no more, no fewer.
        per = allowed_per_second(max_rps)
        assert all(starts[i + per] - starts[i] == pytest.approx(1.0) for i in range(len(starts) - per))


@pytest.mark.parametrize("max_rps", [20, 20 / SAFETY, 7.5])
def test_long_run_throughput_is_close_to_the_allowed_rate(max_rps: float) -> None:
    p = Pacer(max_rps)
    starts = drive(p, workers=100, count=10**6, until=60.0)
    expected = min(max_rps * SAFETY, allowed_per_second(max_rps)) * 60
    assert expected - 2 <= len(starts) <= expected + 2


@pytest.mark.parametrize("max_rps", [1, 5, 20])
def test_slow_workers_are_not_held_back_more_than_needed(max_rps: float) -> None:
    # 3 workers with 1 s latency cannot reach max_rps; they must not be slowed further.
    p = Pacer(max_rps)
    starts = drive(p, workers=3, count=30, latency=lambda w, k: 1.0)
    assert max_in_window(starts) <= min(3, allowed_per_second(max_rps))
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 1.0 / (max_rps * SAFETY) - 1e-12


def test_start_after_earliest_is_counted_from_the_actual_start() -> None:
    p = Pacer(10)
    p.start(0.0)
    assert p.earliest(0.0) == pytest.approx(1 / 9.75)
    p.start(5.0)  # a late start
    assert p.earliest(5.0) == pytest.approx(5.0 + 1 / 9.75)
    assert p.earliest(7.0) == 7.0


def test_max_rps_below_the_floor_is_still_respected() -> None:
    # A user asking for one request every 10 s must not get MIN_RPS (one every 2 s).
    p = Pacer(0.1)
    assert p.rate(0.0) <= 0.1
    starts = drive(p, workers=8, count=5)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 10.0
    p.throttled(starts[-1] + 0.1, starts[-1], 0.0)
    assert 0 < p.rate(starts[-1] + 0.1) <= 0.1


# -- Pacer: 429 pauses everyone ----------------------------------------------------------------


@pytest.mark.parametrize("wait", [0.0, 0.3, 1.0, 2.5, 30.0])
def test_nothing_starts_before_pause_until(wait: float) -> None:
    p = Pacer(20)
    before = drive(p, workers=20, count=40)
    now = before[-1] + 0.01
    p.throttled(now, before[-1], wait)
    assert p.pause_until == pytest.approx(now + wait)
    for t in (now, now + wait / 2, now + wait - 1e-9):
        assert p.earliest(t) >= now + wait
    after = drive(p, workers=20, count=40, t0=now)
    assert after[0] >= now + wait
    assert after[0] >= before[-1] + 1.0 / p.rate(after[0]) - 1e-12
    assert max_in_window(before + after) <= 20


def test_pause_is_never_shortened_and_negative_wait_is_zero() -> None:
    p = Pacer(20)
    p.start(0.0)
    p.throttled(1.0, 0.0, 5.0)
    p.throttled(2.0, 0.5, 1.0)  # same episode, shorter wait
    assert p.pause_until == 6.0
    q = Pacer(20)
    q.throttled(3.0, 2.0, -10.0)
    assert q.pause_until == 3.0


def test_pause_extends_when_a_later_429_asks_for_more() -> None:
    p = Pacer(20)
    p.start(0.0)
    p.throttled(1.0, 0.0, 2.0)
    p.throttled(1.5, 0.2, 4.0)  # same episode, longer wait: pause grows, rate does not drop again
    assert p.pause_until == 5.5
    assert p.throttles == 1


# -- Pacer: adaptive rate ----------------------------------------------------------------------


def run_full_speed(max_rps: float = 20, seconds: float = 3.0) -> tuple[Pacer, list[float]]:
    p = Pacer(max_rps)
    starts = drive(p, workers=50, count=10**6, until=seconds)
    return p, starts


def test_throttle_with_history_lowers_rate_to_what_was_accepted() -> None:
    p, starts = run_full_speed(20, 3.0)
    sent_at = starts[-1]
    accepted = sum(1 for t in starts if sent_at - 1.0 <= t < sent_at)
    assert accepted in (19, 20)
    assert p.throttled(sent_at + 0.05, sent_at, 1.0) is True
    assert p.throttles == 1
    assert p.rate(sent_at + 0.05) == pytest.approx(min(20 * SAFETY, accepted * SAFETY))


def test_throttle_measures_what_was_sent_in_the_second_before_the_refused_request() -> None:
    p = Pacer(50)
    for t in [0.0, 0.5, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0]:
        p.start(t)
    # The 429 is for the request sent at 1.8: starts in [0.8, 1.8) are 1.0..1.6 -> 4, but one
    # episode never cuts the rate below half.
    p.throttled(2.1, 1.8, 0.0)
    assert p.rate(2.1) == pytest.approx(max(4 * SAFETY, 0.5 * 50 * SAFETY))


def test_throttle_lowers_to_the_measured_rate_when_above_half() -> None:
    p = Pacer(20)
    for i in range(12):
        p.start(1.0 + i * 0.08)  # 12 starts in [1.0, 1.88]
    p.start(2.0)
    p.throttled(2.05, 2.0, 0.0)
    assert p.rate(2.05) == pytest.approx(12 * SAFETY)


def test_throttle_measure_survives_a_slow_429() -> None:
    # The 429 arrives 2.5 s after its request while other workers kept sending: the starts in
    # the second before the refused one must still be counted (not forgotten after 2 s).
    p = Pacer(20)
    starts = drive(p, workers=50, count=10**6, until=6.0)
    sent_at = next(t for t in starts if t >= 3.0)
    accepted = sum(1 for t in starts if sent_at - 1.0 <= t < sent_at)
    assert p.throttled(starts[-1] + 0.01, sent_at, 0.0)
    assert p.rate(starts[-1] + 0.01) == pytest.approx(accepted * SAFETY)
    assert p.rate(starts[-1] + 0.01) > 15


def test_throttle_early_in_a_run_counts_every_start_so_far() -> None:
    # Less than a second into a run, the server's window holds all of our requests.
    p = Pacer(20)
    starts = drive(p, workers=50, count=10**6, until=0.9)
    assert starts[-1] - starts[0] < 1.0
    p.throttled(starts[-1] + 0.05, starts[-1], 0.5)
    accepted = len(starts) - 1
    assert p.rate(starts[-1] + 0.05) == pytest.approx(max(accepted * SAFETY, 0.5 * 20 * SAFETY))


def test_throttle_of_the_very_first_request() -> None:
    p = Pacer(20)
    p.start(0.0)
    assert p.throttled(0.2, 0.0, 1.0)
    assert p.rate(0.2) == pytest.approx(20 * SAFETY * 0.7)
    assert p.earliest(0.2) == 1.2


def test_throttle_right_after_a_pause_does_not_collapse_the_rate() -> None:
    # Two 429s in a row around a pause: the second's "previous second" was spent paused, so it
    # measures nothing; the rate must drop by the multiplicative step, not to the floor.
    p, starts = run_full_speed(20, 3.0)
    t = starts[-1]
    p.throttled(t + 0.05, t, 1.0)
    r1 = p.rate(t + 0.05)
    (first,) = drive(p, workers=50, count=1, t0=t + 0.05)
    assert first == pytest.approx(t + 1.05)
    assert p.throttled(first + 0.05, first, 1.0)
    r2 = p.rate(first + 0.05)
    assert r2 < r1
    assert r2 >= 0.7 * r1 - 1e-9


def test_throttle_after_an_idle_gap_does_not_collapse_the_rate() -> None:
    p = Pacer(20)
    drive(p, workers=10, count=40)
    p.start(100.0)  # long idle, then one request refused (someone else used the limit)
    p.throttled(100.1, 100.0, 0.0)
    assert p.rate(100.1) == pytest.approx(20 * SAFETY * 0.7)


def test_rate_never_drops_below_min_rps() -> None:
    p = Pacer(20)
    t = 0.0
    rates = []
    for _ in range(40):
        p.start(t)
        assert p.throttled(t + 0.01, t, 0.0)
        rates.append(p.rate(t + 0.01))
        t += 1.1  # nothing else in the second before: each throttle backs off by 0.7
    assert min(rates) == pytest.approx(MIN_RPS)
    assert all(r >= MIN_RPS for r in rates)
    assert rates == sorted(rates, reverse=True)
    assert p.throttles == 40


def test_rate_recovers_in_steps_up_to_max() -> None:
    p, starts = run_full_speed(20, 3.0)
    t = starts[-1] + 0.05
    p.throttled(t, starts[-1], 0.0)
    base = p.rate(t)
    top = 20 * SAFETY
    assert base < top
    steps = math.ceil(math.log(top / base) / math.log(1 + PROBE_STEP))
    for k in range(steps + 5):
        want = min(top, base * (1 + PROBE_STEP) ** k)
        assert p.rate(t + k * PROBE_PERIOD) == pytest.approx(want)
        assert p.rate(t + (k + 1) * PROBE_PERIOD - 1e-6) == pytest.approx(want)
    assert p.rate(t + steps * PROBE_PERIOD) == pytest.approx(top)
    assert p.rate(t + 10**7) == pytest.approx(top)
    samples = [p.rate(t + x * 0.7) for x in range(2000)]
    assert samples == sorted(samples)
    assert max(samples) <= top + 1e-12


def test_recovery_from_the_floor_reaches_the_top() -> None:
    p = Pacer(20)
    for i in range(30):
        p.start(i * 1.1)
        p.throttled(i * 1.1 + 0.005, i * 1.1, 0.0)
    t = 29 * 1.1 + 0.005
    assert p.rate(t) == pytest.approx(MIN_RPS)
    assert p.rate(t + 10**6) == pytest.approx(20 * SAFETY)


def test_paced_starts_follow_the_lowered_rate() -> None:
    p, starts = run_full_speed(20, 3.0)
    t = starts[-1] + 0.05
    p.throttled(t, starts[-1], 0.5)
    r = p.rate(t)
    after = drive(p, workers=50, count=int(r * 3), t0=t)
    assert after[0] >= t + 0.5
    gaps = [b - a for a, b in zip(after, after[1:], strict=False)]
    assert min(gaps) >= 1.0 / (r * (1 + PROBE_STEP)) - 1e-9
    assert max_in_window(after) <= math.ceil(r)


def test_stale_429_does_not_lower_the_rate_again() -> None:
    p, starts = run_full_speed(20, 3.0)
    t = starts[-1] + 0.05
    assert p.throttled(t, starts[-1], 1.0) is True
    r = p.rate(t)
    # Requests sent before the first 429 was handled belong to the same episode.
    assert p.throttled(t + 0.1, starts[-2], 1.0) is False
    assert p.throttled(t + 0.2, starts[-1], 1.0) is False
    assert p.throttled(t + 0.3, t - 1e-9, 2.0) is False
    assert p.rate(t + 0.3) == r
    assert p.throttles == 1
    assert p.pause_until == pytest.approx(t + 2.3)  # but the pause is still honoured
    # A request sent after the episode began starts a new one.
    later = drive(p, workers=5, count=3, t0=t)
    assert p.throttled(later[-1] + 0.1, later[-1], 1.0) is True
    assert p.throttles == 2
    assert p.rate(later[-1] + 0.1) < r


# -- Budget ------------------------------------------------------------------------------------


def test_budget_unknown_allows_and_keeps_nothing() -> None:
    b = Budget()
    assert b.kept == 0
    assert b.allows(0) and b.allows(10_000)
    assert b.spendable() is None and b.spendable(5) is None


@pytest.mark.parametrize("limit, kept", [(5000, 500), (5001, 501), (1, 1), (9, 1), (10, 1), (11, 2), (10000, 1000), (0, 0)])
def test_budget_default_reserve_is_ten_percent_rounded_up(limit: int, kept: int) -> None:
    b = Budget()
    b.observe(limit, None, 0)
    assert b.limit == limit
    assert b.kept == kept
    assert b.remaining is None and b.allows(50)


@pytest.mark.parametrize("reserve", [0, 1, 100, 6000])
def test_budget_explicit_reserve_wins(reserve: int) -> None:
    b = Budget(reserve=reserve)
    assert b.kept == reserve
    b.observe(5000, 5000, 0)
    assert b.kept == reserve


@pytest.mark.parametrize("bad", [-1, 1.5, "10", 10.0])
def test_budget_bad_reserve(bad: object) -> None:
    with pytest.raises(ValueError):
        Budget(reserve=bad)  # type: ignore[arg-type]


def test_budget_allows_stops_exactly_at_the_reserve() -> None:
    b = Budget()
    b.observe(5000, 510, 0)
    assert b.kept == 500
    assert b.allows(0)
    assert b.allows(9)  # 510 - 9 - 1 == 500
    assert not b.allows(10)
    assert b.spendable() == 10
    assert b.spendable(4) == 6
    assert b.spendable(50) == 0
    b.observe(None, 500, 0)
    assert not b.allows(0)
    assert b.spendable() == 0
    assert b.limit == 5000  # a missing limit header does not forget the limit


def test_budget_reserve_zero_may_spend_everything() -> None:
    b = Budget(reserve=0)
    b.observe(100, 1, 0)
    assert b.allows(0) and not b.allows(1)
    b.observe(100, 0, 0)
    assert not b.allows(0)


def test_budget_observe_takes_the_minimum() -> None:
    b = Budget()
    b.observe(5000, 100, 3)
    b.observe(5000, 90, 3)
    assert b.remaining == 90
    b.observe(5000, 94, 3)  # up by 4 <= in_flight + 1: an older answer arriving late, ignored
    assert b.remaining == 90
    b.observe(5000, 94, 2)  # up by 4 > in_flight + 1: more than in flight could explain, a new window
    assert b.remaining == 94


@pytest.mark.parametrize("in_flight", [0, 1, 5, 20])
def test_budget_jump_threshold(in_flight: int) -> None:
    b = Budget()
    b.observe(5000, 1000, in_flight)
    b.observe(5000, 1000 + in_flight + 1, in_flight)
    assert b.remaining == 1000
    b.observe(5000, 1000 + in_flight + 2, in_flight)
    assert b.remaining == 1000 + in_flight + 2


@pytest.mark.parametrize("with_sent_at", [False, True])
def test_budget_answer_without_header_counts_as_spent(with_sent_at: bool) -> None:
    b = Budget()
    b.observe(None, None, 0, **({"sent_at": 0.0} if with_sent_at else {}))
    assert b.remaining is None  # nothing known yet: nothing to lower
    b.observe(100, 12, 0, **({"sent_at": 1.0} if with_sent_at else {}))
    for i in range(3):
        b.observe(None, None, 0, **({"sent_at": 2.0 + i} if with_sent_at else {}))
    assert b.remaining == 9
    assert b.limit == 100
    for i in range(20):
        b.observe(None, None, 0, **({"sent_at": 10.0 + i} if with_sent_at else {}))
    assert b.remaining == 0
    assert not b.allows(0)


def test_budget_late_answer_to_an_old_request_is_not_a_new_window() -> None:
    # Request A (sent at 1) is slow; B and C (sent at 2 and 3) are answered first. A's count is
    # higher than C's by far more than what is in flight: it is old, not a new window.
    b = Budget()
    b.observe(5000, 1000, 2, sent_at=1.5)
    b.observe(5000, 900, 1, sent_at=3.0)
    b.observe(5000, 990, 0, sent_at=1.0)  # up by 90 with nothing in flight
    assert b.remaining == 900


def test_budget_new_window_with_sent_at() -> None:
    b = Budget()
    b.observe(5000, 520, 0, sent_at=1.0)
    assert not b.allows(20)
    b.observe(5000, 4990, 3, sent_at=2.0)  # newer and far higher: the hour rolled over
    assert b.remaining == 4990
    b.observe(5000, 515, 2, sent_at=1.5)  # sent before the new window began: ignored
    assert b.remaining == 4990
    b.observe(5000, 4985, 1, sent_at=1.9)  # a request reordered around the start of the window
    assert b.remaining == 4990
    b.observe(5000, 4980, 0, sent_at=2.5)
    assert b.remaining == 4980


def test_budget_late_reading_is_lowered_by_headerless_answers_sent_after_it() -> None:
    b = Budget()
    b.observe(5000, 100, 3, sent_at=1.0)
    b.observe(None, None, 2, sent_at=2.0)
    b.observe(None, None, 1, sent_at=3.0)
    assert b.remaining == 98
    # The answer to a request sent at 1.5 says 97: the server had counted up to it, but not
    # the two headerless requests sent after it.
    b.observe(5000, 97, 0, sent_at=1.5)
    assert b.remaining == 95
    b.observe(5000, 94, 0, sent_at=4.0)
    assert b.remaining == 94


def test_budget_new_window_after_exhaustion() -> None:
    b = Budget()
    b.observe(5000, 500, 0)
    assert not b.allows(0)
    b.observe(5000, 4999, 0)
    assert b.allows(0) and b.spendable() == 4499


# -- property: a simulated sender against a simulated server -----------------------------------


@dataclass
class Server:
    """Counts what arrives; answers with what the test decided."""

    remaining: int
    sent: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Step:
    advance: float  # seconds this step lasts
    refuse: bool  # answers to requests sent in this step are 429
    retry_after: float | None
    header: bool  # answers carry X-RateLimit-*
    latency: float  # seconds from send to answer


steps_strategy = st.lists(
    st.builds(Step, st.floats(0.0, 3.0), st.booleans(), st.none() | st.floats(0.0, 4.0), st.booleans(), st.floats(0.0, 2.5)),
    min_size=1, max_size=25,
)


def simulate(max_rps: float, limit: int, start_remaining: int, reserve: int | None, steps: list[Step],
             *, pass_sent_at: bool, latency: float | None = None) -> None:
    """An eager sender (as many workers as it likes) against a server that counts every request
    and answers as `steps` say; checks the per-second limit, the pauses and the reserve."""
    start_remaining = min(start_remaining, limit)
    pacer, budget, server = Pacer(max_rps), Budget(reserve=reserve), Server(start_remaining)
    # The first answer has been seen (the budget is unknown before any answer).
    budget.observe(limit, start_remaining, 0, **({"sent_at": -1.0} if pass_sent_at else {}))
    kept = budget.kept
    now = 0.0
    # (due, seq, sent_at, remaining after it, step)
    flight: list[tuple[float, int, float, int, Step]] = []
    pauses: list[tuple[int, float, float]] = []  # (starts so far, from, until)
    seq = 0
    for step in steps:
        end = now + step.advance
        while True:
            send_at = pacer.earliest(now) if budget.allows(len(flight)) else math.inf
            answer_at = flight[0][0] if flight else math.inf
            nxt = min(send_at, answer_at)
            if nxt > end:
                break
            now = nxt
            if answer_at <= send_at:
                _, _, sent_at, remaining_then, how = heapq.heappop(flight)
                budget.observe(limit if how.header else None, remaining_then if how.header else None, len(flight),
                               **({"sent_at": sent_at} if pass_sent_at else {}))
                if how.refuse:
                    wait = how.retry_after if how.retry_after is not None else 0.5
                    pacer.throttled(now, sent_at, wait)
                    pauses.append((len(server.sent), now, now + wait))
            else:
                assert budget.allows(len(flight))
                pacer.start(now)
                server.sent.append(now)
                server.remaining -= 1  # every request counts against the hour, refused or not
                assert server.remaining >= kept, "the reserve was crossed"
                lag = step.latency if latency is None else latency
                heapq.heappush(flight, (now + lag, seq, now, server.remaining, step))
                seq += 1
        now = end
    # At most max_rps starts in any sliding second; none inside a pause.
    assert max_in_window(server.sent) <= allowed_per_second(max_rps)
    for n, a, b in pauses:
        assert not any(a <= t < b for t in server.sent[n:]), "a request started during a 429 pause"
    # Never below the reserve (nothing at all is sent when the reserve is already reached).
    if start_remaining - 1 < kept:
        assert server.sent == []
    assert server.remaining >= min(kept, start_remaining)
    assert pacer.rate(now) >= min(MIN_RPS, max_rps * SAFETY) - 1e-12
    assert pacer.rate(now) <= max_rps * SAFETY + 1e-9


sim_args = dict(
    max_rps=st.one_of(st.sampled_from([1, 2, 5, 20, 20 / SAFETY]), st.floats(0.5, 60)),
    limit=st.integers(1, 400),
    start_remaining=st.integers(0, 400),
    reserve=st.none() | st.integers(0, 60),
    steps=steps_strategy,
)


@settings(max_examples=150, deadline=None)
@given(**sim_args)
def test_simulated_sender_respects_rate_pauses_and_reserve(max_rps: float, limit: int, start_remaining: int,
                                                           reserve: int | None, steps: list[Step]) -> None:
    # Answers come back out of order (each step has its own latency); the budget is told when
    # each answered request was sent.
    simulate(max_rps, limit, start_remaining, reserve, steps, pass_sent_at=True)


@settings(max_examples=100, deadline=None)
@given(**sim_args, latency=st.floats(0.0, 2.5))
def test_simulated_sender_without_sent_at_with_answers_in_order(max_rps: float, limit: int, start_remaining: int,
                                                                reserve: int | None, steps: list[Step],
                                                                latency: float) -> None:
    # The legacy call (no sent_at) is safe as long as answers come back in the order sent.
    simulate(max_rps, limit, start_remaining, reserve, steps, pass_sent_at=False, latency=latency)


def test_after_an_unmeasured_throttle_the_rate_climbs_back_fast_then_probes_slowly() -> None:
    from smtoolkit.core.pacing import FAST_STEP

    p = Pacer(20)
    p.start(0.0)
    p.throttled(0.1, 0.0, 0.0)  # nothing to measure: x0.7
    before = 20 * SAFETY
    assert p.rate(0.1) == pytest.approx(before * 0.7)
    climb = math.log(1 / 0.7) / math.log(1 + FAST_STEP)
    assert p.rate(0.1 + climb / 2) == pytest.approx(before * 0.7 * (1 + FAST_STEP) ** (climb / 2))
    assert p.rate(0.1 + climb + 0.01) == pytest.approx(before)  # back where it was, capped at the top


def test_after_a_measured_throttle_the_rate_stays_under_the_measure_for_a_probe_period() -> None:
    p = Pacer(20)
    for i in range(10):
        p.start(1.0 + i * 0.09)
    p.start(1.95)
    p.throttled(2.0, 1.95, 1.0)  # the server took 10 in its second: it allows about 10/s
    assert p.rate(3.0) == pytest.approx(10 * SAFETY)
    assert p.rate(3.0 + PROBE_PERIOD - 0.01) == pytest.approx(10 * SAFETY)
    assert p.rate(3.0 + PROBE_PERIOD) == pytest.approx(10 * SAFETY * (1 + PROBE_STEP))


def test_a_burst_of_429s_within_a_second_cuts_the_rate_once() -> None:
    p = Pacer(20)
    p.start(0.0)
    assert p.throttled(0.1, 0.0, 0.05) is True
    after_first = p.rate(0.15)
    p.start(0.2)
    assert p.throttled(0.3, 0.2, 0.05) is False  # same second: same episode
    assert p.rate(0.3) >= after_first
    assert p.pause_until == pytest.approx(0.35)  # but the pause still applies


def test_unmeasured_throttles_do_not_ratchet_the_ceiling_down() -> None:
    from smtoolkit.core.pacing import FAST_STEP

    p = Pacer(20)
    t = 0.0
    for _ in range(5):  # 429s 1.1 s apart, each right after a pause: nothing measurable
        p.start(t)
        p.throttled(t + 0.01, t, 1.05)
        t += 1.1
    low = p.rate(t)
    assert low < 20 * SAFETY * 0.7
    # ...but the climb goes back to the original rate within seconds, not minutes.
    climb = math.log(20 * SAFETY / (low / (1 + FAST_STEP) ** 0)) / math.log(1 + FAST_STEP)
    assert p.rate(t + climb + 2) == pytest.approx(20 * SAFETY)


# -- Pacer: a schedule of its own (late wake-ups) ----------------------------------------------


def test_a_slightly_late_start_keeps_the_schedule() -> None:
    p = Pacer(50)
    step = 1 / (50 * SAFETY)
    p.start(0.0)
    p.start(step + 0.002)  # woke 2 ms late
    assert p.earliest(step + 0.002) == pytest.approx(2 * step)  # the lateness is not passed on
    p.start(2 * step + 0.002)
    assert p.earliest(0.0) == pytest.approx(3 * step)


def test_a_start_later_than_the_tolerance_begins_a_new_schedule() -> None:
    p = Pacer(50)
    step = 1 / (50 * SAFETY)
    p.start(0.0)
    late = step + LATE_TOLERANCE + 0.001  # an idle pool, not a late wake-up: no catching up
    p.start(late)
    assert p.earliest(late) == pytest.approx(late + step)


def test_a_start_held_by_the_window_guard_is_not_caught_up() -> None:
    # 2.5/s: two starts a second; the third waits for the window, and the fourth is spaced from it.
    p = Pacer(2.5)
    step = 1 / (2.5 * SAFETY)
    p.start(0.0)
    p.start(step)
    assert p.earliest(step) == pytest.approx(1.0)
    p.start(1.0)
    assert p.earliest(1.0) == pytest.approx(1.0 + step)


def simulate_late_workers(max_rps: float, workers: int, latency: float, late: list[float], count: int,
                          throttles: dict[int, float]) -> tuple[Pacer, list[float], list[tuple[int, float, float]]]:
    """Workers on a simulated clock, as the limiter runs them: each asks `earliest`, sleeps until
    then and wakes `late[i % len(late)]` seconds late (or starts at once), waits `latency` for
    the answer, and the answer to start number k is a 429 asking for `throttles[k]` seconds.
    Returns the pacer, the starts and the pauses (starts before it, from, until)."""
    pacer = Pacer(max_rps)
    events = [(0.0, w, -1) for w in range(workers)]  # (time, worker, start answered or -1)
    heapq.heapify(events)
    starts: list[float] = []
    pauses: list[tuple[int, float, float]] = []
    wakes = 0
    while events and len(starts) < count:
        now, w, answered = heapq.heappop(events)
        if answered in throttles:
            pauses.append((len(starts), now, now + throttles[answered]))
            pacer.throttled(now, starts[answered], throttles[answered])
        e = pacer.earliest(now)
        assert e >= now
        if e <= now:
            pacer.start(now)
            starts.append(now)
            heapq.heappush(events, (now + latency, w, len(starts) - 1))
        else:
            heapq.heappush(events, (e + late[wakes % len(late)], w, -1))
            wakes += 1
    return pacer, starts, pauses


@settings(max_examples=200, deadline=None)
@given(max_rps=st.one_of(st.integers(1, 200), st.floats(0.5, 200), st.sampled_from([20 / SAFETY, 2.5, 1.5])),
       workers=st.integers(1, 12), latency=st.floats(0.0, 0.5),
       late=st.lists(st.floats(0.0, 0.05), min_size=1, max_size=12),
       throttles=st.dictionaries(st.integers(0, 250), st.floats(0.0, 3.0), max_size=6))
def test_late_wake_ups_and_429s_never_overfill_a_window(max_rps: float, workers: int, latency: float,
                                                        late: list[float], throttles: dict[int, float]) -> None:
    pacer, starts, pauses = simulate_late_workers(max_rps, workers, latency, late, 250, throttles)
    assert len(starts) == 250
    assert max_in_window(starts) <= allowed_per_second(max_rps)
    # ...and absorbing lateness never squeezes the margin that pacing at SAFETY leaves.
    span = max(1.0, allowed_per_second(max_rps) / (max_rps * SAFETY) - SQUEEZE)
    assert max_in_window(starts, span * (1 - 1e-9)) <= allowed_per_second(max_rps)
    for n, a, b in pauses:
        assert not any(a <= t < b for t in starts[n:]), "a request started during a 429 pause"


@settings(max_examples=100, deadline=None)
@given(max_rps=st.integers(1, 200), workers=st.integers(1, 12),
       late=st.lists(st.floats(0.0, SQUEEZE * 0.999), min_size=1, max_size=12))
def test_late_wake_ups_cost_nothing_downstream(max_rps: int, workers: int, late: list[float]) -> None:
    # Eager workers, wake-ups a few milliseconds late (up to SQUEEZE): start k is never later
    # than its slot on the schedule from the first start plus one wake-up's lateness.
    _, starts, _ = simulate_late_workers(max_rps, workers, 0.0, late, 250, {})
    step = 1 / (max_rps * SAFETY)
    assert all(t - starts[0] <= k * step + max(late) + 1e-9 for k, t in enumerate(starts))
