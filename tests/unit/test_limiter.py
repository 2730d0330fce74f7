"""The shared gate on a clock of its own: pacing waits, deadlines, the reserve, run tallies."""

from __future__ import annotations

import pytest

from smtoolkit.core.reasons import Reason
from smtoolkit.limiter import Limiter, Refused, RunContext
from tests.helpers import FakeClock, max_in_window


def test_requests_are_spaced_on_the_injected_clock_and_counted_per_run() -> None:
    clock = FakeClock(0.0)
    gate = Limiter(10.0, None, clock=clock.now, sleep=clock.sleep)
    a, b = RunContext(), RunContext()
    starts = []
    for i in range(6):
        t = gate.acquire(a if i % 2 else b, deadline=1e9)
        starts.append(t)
        gate.answered(t, 5000, 4999 - i)
    gaps = [y - x for x, y in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 1 / (10 * 0.975) - 1e-9  # paced at 97.5% of max_rps, on the fake clock
    assert (a.tally.sent, b.tally.sent, gate.requests_sent) == (3, 3, 6)


def test_a_throttle_pauses_everyone_and_counts_for_its_run() -> None:
    clock = FakeClock(0.0)
    gate = Limiter(20.0, None, clock=clock.now, sleep=clock.sleep)
    run = RunContext()
    t = gate.acquire(run, 1e9)
    gate.answered(t, None, None)
    gate.throttled(t, 30.0, run)
    nxt = gate.acquire(None, 1e9)
    assert nxt >= t + 30.0 and run.tally.throttled == 1 and gate.throttled_count == 1


def test_the_deadline_refuses_a_start_that_would_wait_past_it() -> None:
    clock = FakeClock(0.0)
    gate = Limiter(20.0, None, clock=clock.now, sleep=clock.sleep)
    t = gate.acquire(None, 1e9)
    gate.answered(t, None, None)
    gate.throttled(t, 60.0, None)
    with pytest.raises(Refused) as info:
        gate.acquire(None, deadline=clock.now() + 10.0)
    assert info.value.reason is Reason.DEADLINE and sum(clock.slept) == 0  # gave up without waiting


def test_the_reserve_and_a_stop_refuse_at_once() -> None:
    clock = FakeClock(0.0)
    gate = Limiter(20.0, 100, clock=clock.now, sleep=clock.sleep)
    t = gate.acquire(None, 1e9)
    gate.answered(t, 5000, 100)  # 100 left, all of it the reserve
    with pytest.raises(Refused) as info:
        gate.acquire(None, 1e9)
    assert info.value.reason is Reason.RESERVE
    run = RunContext()
    run.halt.set()
    with pytest.raises(Refused) as info:
        Limiter(20.0, None).acquire(run, 1e9)
    assert info.value.reason is Reason.HALTED


def test_late_wake_ups_do_not_slow_every_later_request() -> None:
    # Every sleep wakes 2 ms late (the switch interval, timer slack, a busy machine): the
    # schedule absorbs it, so 1,000 starts at 50/s take (N-1)/(0.975 R) plus one late wake-up,
    # not 2 ms more per request (before the fix: 1.126x (N-1)/R).
    clock = FakeClock(0.0)
    gate = Limiter(50.0, None, clock=clock.now, sleep=lambda s: clock.sleep(s + 0.002))
    starts = []
    for _ in range(1000):
        t = gate.acquire(None, deadline=1e9)
        starts.append(t)
        gate.answered(t, None, None)
    ideal = (len(starts) - 1) / 50.0
    assert starts[-1] - starts[0] <= 1.03 * ideal
    assert max_in_window(starts) <= 50
    assert all(b > a for a, b in zip(starts, starts[1:], strict=False))


def test_clients_of_one_api_keep_one_pace_together() -> None:
    """The server's per-second window is per licence and IP: a client made right after another
    (or beside it) on the same API waits for the window the first one filled."""
    clock = FakeClock(0.0)
    first = Limiter(20.0, None, clock=clock.now, sleep=clock.sleep, origin="https://api.example:443")
    starts = []
    for _ in range(20):
        starts.append(first.acquire(None, 1e9))
        first.answered(starts[-1], None, None)
    second = Limiter(20.0, None, clock=clock.now, sleep=clock.sleep, origin="https://api.example:443")
    t = second.acquire(None, 1e9)
    assert t >= starts[0] + 1.0  # not a 21st start inside the first one's second
    elsewhere = Limiter(20.0, None, clock=clock.now, sleep=clock.sleep, origin="https://other.example:443")
    assert elsewhere.acquire(None, 1e9) == clock.now()  # another API's window is not shared


def test_side_by_side_clients_stay_within_one_limit_and_neither_starves() -> None:
    clock = FakeClock(0.0)
    fast = Limiter(20.0, None, clock=clock.now, sleep=clock.sleep, origin="https://side.example:443")
    slow = Limiter(5.0, None, clock=clock.now, sleep=clock.sleep, origin="https://side.example:443")
    starts: dict[str, list[float]] = {"fast": [], "slow": []}
    for _ in range(30):  # interleaved, as two threads would ask
        for name, gate in (("fast", fast), ("fast", fast), ("fast", fast), ("slow", slow)):
            starts[name].append(gate.acquire(None, 1e9))
            gate.answered(starts[name][-1], None, None)
    both = sorted(starts["fast"] + starts["slow"])
    assert max_in_window(both, 1.0) <= 20  # together within the limit a second
    assert max_in_window(starts["slow"], 1.0) <= 5  # and the slow one within its own
    assert len(starts["slow"]) == 30 and both[-1] - both[0] < 10  # and no one starved
