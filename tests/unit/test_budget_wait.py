"""Waiting for the hourly budget, without sockets: the look schedule on a fake clock, a look's
reading of the budget, and the plan line."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from smtoolkit.core.pacing import Budget, budget_plan
from smtoolkit.limiter import BudgetWait, Limiter
from smtoolkit.progress import waiting_text
from tests.helpers import FakeClock


def _limiter(clock: FakeClock, remaining: int, limit: int = 100, reserve: int = 10) -> Limiter:
    lim = Limiter(20.0, reserve, clock=clock.now, sleep=clock.sleep)
    t = lim.acquire(None, float("inf"))
    lim.answered(t, limit, remaining)
    return lim


def wait_for(wait: BudgetWait, halt: threading.Event | None, look: Callable[[], float | None]) -> bool:
    """What a client's worker does at the reserve: join the wait, and when it leads it, send
    each look when one is due; True when the budget is back."""
    watch = wait.join(halt)
    if isinstance(watch, bool):
        return watch
    with watch:
        while watch.look_due():
            watch.looked(look())
        return watch.back


class Server:
    """What looks read: the budget the server would show at each time (a function of the clock)."""

    def __init__(self, lim: Limiter, clock: FakeClock, remaining_at: dict[float, int], retry_after: float | None = None):
        self.lim, self.clock, self.remaining_at, self.retry_after = lim, clock, remaining_at, retry_after
        self.times: list[float] = []

    def look(self) -> float | None:
        t = self.lim.acquire(None, float("inf"), look=True)
        self.times.append(t)
        remaining = [v for at, v in sorted(self.remaining_at.items()) if at <= t][-1]
        self.lim.answered(t, 100, remaining, look=True)
        return self.retry_after if remaining == 0 else None


def test_it_looks_once_per_interval_until_the_budget_is_back() -> None:
    clock = FakeClock(0.0)
    lim = _limiter(clock, remaining=10)  # at the reserve: nothing may start
    assert not lim.budget_allows()
    server = Server(lim, clock, {0: 9, 200: 100})
    wait = BudgetWait(lim, limit=3600, every=60)
    assert wait_for(wait, None, server.look) is True
    assert server.times == [60.0, 120.0, 180.0, 240.0]  # the first look one interval in; 240 sees it back
    assert wait.looks == 4 and wait.waits == 1 and wait.waited == pytest.approx(240.0)
    assert lim.budget_allows() and lim.budget.remaining == 100


def test_a_look_may_touch_the_reserve_but_nothing_else_may() -> None:
    clock = FakeClock(0.0)
    lim = _limiter(clock, remaining=10)
    from smtoolkit.limiter import Refused

    with pytest.raises(Refused, match="reserve"):
        lim.acquire(None, float("inf"))
    lim.acquire(None, float("inf"), look=True)  # allowed


def test_the_wait_limit_ends_the_wait_and_no_look_is_squeezed_in() -> None:
    clock = FakeClock(0.0)
    lim = _limiter(clock, remaining=10)
    server = Server(lim, clock, {0: 9})
    wait = BudgetWait(lim, limit=150, every=60)
    assert wait_for(wait, None, server.look) is False
    assert server.times == [60.0, 120.0] and clock.now() == pytest.approx(150.0)
    assert wait_for(wait, None, server.look) is False and server.times == [60.0, 120.0]  # spent: no more waiting


def test_the_wait_limit_counts_over_the_whole_run() -> None:
    clock = FakeClock(0.0)
    lim = _limiter(clock, remaining=10)
    server = Server(lim, clock, {0: 9, 60: 50})
    wait = BudgetWait(lim, limit=100, every=60)
    assert wait_for(wait, None, server.look) is True  # back at 60
    lim.answered(lim.acquire(None, float("inf")), 100, 10)  # spent again: at the reserve
    server.remaining_at[60.5] = 9
    assert wait_for(wait, None, server.look) is False  # 40 s left of 100: no look fits
    assert wait.waited == pytest.approx(100.0, abs=0.01) and wait.waits == 2


def test_a_looks_retry_after_pushes_the_next_look_back() -> None:
    clock = FakeClock(0.0)
    lim = _limiter(clock, remaining=10)
    server = Server(lim, clock, {0: 0, 950: 100}, retry_after=900.0)
    wait = BudgetWait(lim, limit=3600, every=60)
    assert wait_for(wait, None, server.look) is True
    assert server.times == [60.0, 960.0]


def test_a_stop_ends_the_wait_at_once() -> None:
    lim = Limiter(20.0, 10)  # the real clock: the wait really blocks until stopped
    lim.answered(lim.acquire(None, float("inf")), 100, 10)
    stop = threading.Event()
    wait = BudgetWait(lim, limit=3600, every=60)
    threading.Timer(0.2, stop.set).start()
    looks: list[int] = []
    assert wait_for(wait, stop, lambda: looks.append(1)) is False  # type: ignore[func-returns-value]
    assert looks == []  # it ended before its first look was due (60 s in): at once, not at a look
    assert wait.status() is None


def test_one_worker_looks_while_the_others_wait_for_its_verdict() -> None:
    lim = Limiter(20.0, 10)
    lim.answered(lim.acquire(None, float("inf")), 100, 10)
    wait = BudgetWait(lim, limit=30, every=0.2)
    looked = []

    def look() -> None:
        looked.append(threading.current_thread().name)
        t = lim.acquire(None, float("inf"), look=True)
        lim.answered(t, 100, 80, look=True)

    verdicts: list[bool] = []
    threads = [threading.Thread(target=lambda: verdicts.append(wait_for(wait, None, look))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert verdicts == [True] * 4 and len(looked) == 1 and wait.waits == 1


def test_status_says_since_when_and_the_next_look() -> None:
    text = waiting_text({"since": 0.0, "next_look": 42.4}, now=0.0)
    assert text == "waiting for the hourly budget (reserve reached) since 00:00:00 UTC, next look in 42 s"
    assert "next look" not in waiting_text({"since": 0.0, "next_look": float("nan")}, now=0.0)


# -- a look's reading ----------------------------------------------------------------------------


def test_a_look_takes_a_small_rise_that_a_normal_answer_would_not() -> None:
    b = Budget(reserve=10)
    b.observe(100, 10, in_flight=0, sent_at=1.0)
    b.observe(100, 11, in_flight=0, sent_at=2.0)  # a rise of 1: could be noise, kept at the lowest
    assert b.remaining == 10
    b.observe(100, 11, in_flight=0, sent_at=3.0, look=True)  # a rolling window gave one back
    assert b.remaining == 11
    b.observe(100, 30, in_flight=0, sent_at=2.5)  # an older answer, arriving late: says nothing new
    assert b.remaining == 11


# -- the plan line -------------------------------------------------------------------------------


def test_no_plan_when_the_budget_covers_the_run() -> None:
    assert budget_plan(100, limit=10_000, remaining=5_000, kept=1_000, max_rps=20, wait_for_budget=None) is None


def test_the_plan_says_what_is_needed_what_is_allowed_and_an_estimate() -> None:
    text = budget_plan(30_000, limit=10_000, remaining=9_000, kept=1_000, max_rps=20, wait_for_budget=4 * 3600)
    assert text is not None
    assert "needs at least 30,000" in text and "allows 8,000 now" in text and "1,000 kept" in text
    # 22,000 more at 9,000 an hour: about 2 h 27 min, labelled as an estimate.
    assert "estimate: about 2 h 27 min at 9,000 requests an hour" in text and "waiting up to 4 h 00 min" in text
    assert "may be skipped" not in text
    short = budget_plan(30_000, limit=10_000, remaining=9_000, kept=1_000, max_rps=20, wait_for_budget=3600)
    assert short is not None and "the wait limit is shorter" in short
    unwaited = budget_plan(30_000, limit=10_000, remaining=9_000, kept=1_000, max_rps=20, wait_for_budget=None)
    assert unwaited is not None and "skipped (BUDGET_RESERVE) unless the run waits" in unwaited


def test_a_reserve_that_is_the_whole_budget_is_said_plainly() -> None:
    text = budget_plan(10, limit=100, remaining=100, kept=100, max_rps=20, wait_for_budget=60)
    assert text is not None and "nothing more can be sent" in text


def test_the_widget_bar_says_it_is_waiting_and_then_what_it_did(capsys: pytest.CaptureFixture[str]) -> None:
    from tqdm.notebook import tqdm as notebook_tqdm

    from smtoolkit.core.outcomes import Outcome, Result
    from smtoolkit.progress import Progress

    status: dict[str, float] | None = {"since": 0.0, "next_look": float("nan")}
    bar = Progress(2, enabled=True, desc="cancelling", tqdm_class=notebook_tqdm, waiting=lambda: status)
    label = bar._bar.container.children[0]
    bar.tick()
    assert "waiting for the hourly budget" in label.value.replace("\u2007", " ")
    status = None
    bar.update(Result("a", Outcome.CANCELLED))
    bar.tick()
    assert "waiting" not in label.value and "cancelling" in label.value
    bar.update(Result("b", Outcome.CANCELLED))
    bar.close()
    capsys.readouterr()
