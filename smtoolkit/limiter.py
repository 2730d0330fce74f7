"""The gate every request of one client passes, shared by all its workers and runs.

Behind one lock: the pacer (when the next request may start), the hourly budget and its
reserve, the retry budget, the count of requests in flight, and each run's own tally. The
clock and the sleep are injected (real ones by default), so tests of pacing, Retry-After and
deadlines run on a clock of their own.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from .core.bounds import MAX_ONE_SLEEP
from .core.pacing import Budget, Pacer
from .core.retry import RetryBudget

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class Refused(Exception):
    """The gate will not start this request: "stopped" (the run ended), "reserve", "deadline"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Tally:
    """What one run sent through a client: requests started, 429s received, and characters of
    answers that no writer could encode (replaced by U+FFFD where the answers were read).

    A client may serve several runs at once (threads sharing it); each run passes its own
    tally, so its facts count only its own requests. Updated under the limiter's lock.
    """

    __slots__ = ("sent", "throttled", "replaced")

    def __init__(self) -> None:
        self.sent = 0
        self.throttled = 0
        self.replaced = 0


class Limiter:
    """Pacing, budgets and counters for one client; thread-safe."""

    def __init__(self, max_rps: float, reserve: int | None, *, clock: Clock = time.monotonic,
                 sleep: Sleep | None = None) -> None:
        self.max_rps = float(max_rps)
        self.pacer = Pacer(self.max_rps)
        self.budget = Budget(reserve=reserve)
        self.retry_budget = RetryBudget()
        self.clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._gate = threading.Lock()
        self._in_flight = 0
        self._answered = False
        self.requests_sent = 0
        self.throttled_count = 0

    # -- starting a request -------------------------------------------------------------------
    def acquire(self, stop: threading.Event | None, deadline: float, tally: Tally | None, *,
                look: bool = False) -> float:
        """Block until a request may start; returns its start time, or raises Refused.

        Workers queue on a gate lock and only its holder waits for the next slot, so a paced
        pool wakes one thread per request instead of all of them. A `look` (see `BudgetWait`)
        is paced like any request but is the one kind that may touch the reserve.
        """
        while not self._gate.acquire(timeout=0.25):
            if stop is not None and stop.is_set():
                raise Refused("stopped")
            if self.clock() > deadline:
                raise Refused("deadline")
        try:
            return self._wait_for_slot(stop, deadline, tally, look)
        finally:
            self._gate.release()

    def _wait_for_slot(self, stop: threading.Event | None, deadline: float, tally: Tally | None,
                       look: bool) -> float:
        while True:
            if stop is not None and stop.is_set():
                raise Refused("stopped")
            with self._lock:
                now = self.clock()
                if now > deadline:
                    raise Refused("deadline")
                if not look and not self.budget.allows(self._in_flight):
                    raise Refused("reserve")
                start = self.pacer.earliest(now)
                if not self._answered and self._in_flight:
                    # Until the first answer shows the budget (or a bad key), one at a time.
                    start = max(start, now + 0.005)
                elif start <= now:
                    self.pacer.start(now)
                    self._in_flight += 1
                    self.requests_sent += 1
                    if tally is not None:
                        tally.sent += 1
                    return now
            if start > deadline:
                raise Refused("deadline")
            self.wait(start - now, stop)

    def answered(self, sent_at: float, limit: int | None, remaining: int | None, *, look: bool = False) -> None:
        """The request started at `sent_at` is over; its answer showed these headers (or none:
        a request that got no answer may still have been counted by the server)."""
        with self._lock:
            self._in_flight -= 1
            self._answered = True
            self.budget.observe(limit, remaining, self._in_flight, sent_at=sent_at, look=look)

    def budget_allows(self) -> bool:
        """Could one more request start now without touching the reserve?"""
        with self._lock:
            return self.budget.allows(self._in_flight)

    # -- after an answer ----------------------------------------------------------------------
    def throttled(self, sent_at: float, wait: float, tally: Tally | None) -> None:
        """A 429: pause the whole pool for `wait` seconds and lower the shared rate."""
        with self._lock:
            self.throttled_count += 1
            if tally is not None:
                tally.throttled += 1
            self.pacer.throttled(self.clock(), sent_at, wait)

    def retry_allowed(self) -> bool:
        with self._lock:
            return self.retry_budget.take()

    def succeeded(self) -> None:
        with self._lock:
            self.retry_budget.refund()

    def wait(self, seconds: float, stop: threading.Event | None) -> None:
        """Sleep `seconds` (the injected sleep, if any); a stop ends the real wait early."""
        if seconds <= 0:
            return
        if self._sleep is not None:
            self._sleep(seconds)
            return
        # In pieces of at most MAX_ONE_SLEEP: a longer wait would overflow the OS's timeout.
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if stop is not None:
                if stop.wait(min(left, MAX_ONE_SLEEP)):
                    return
            else:
                time.sleep(min(left, MAX_ONE_SLEEP))

    def snapshot(self) -> dict[str, Any]:
        """The current state, for progress displays and run facts."""
        with self._lock:
            return {
                "rate": self.pacer.rate(self.clock()),
                "max_rps": self.max_rps,
                "throttled": self.throttled_count,
                "requests_sent": self.requests_sent,
                "ratelimit_limit": self.budget.limit,
                "ratelimit_remaining": self.budget.remaining,
                "reserve": self.budget.kept,
                "spendable": self.budget.spendable(self._in_flight),
            }


class BudgetWait:
    """One run's patience with the hourly budget (opt-in: `wait_for_budget=`).

    When a request would dip into the reserve, its worker waits here instead of giving up, for
    at most `limit` seconds over the whole run. One waiting worker at a time *looks*: it sends
    one request (paced, counted; the only kind that may touch the reserve) at most once per
    `every` seconds, and that answer's count says whether the budget is back. A look reads the
    server's own count, so a fixed window and a rolling one are handled alike. A stop (the run
    halted, Ctrl-C) ends the wait at once.
    """

    def __init__(self, limiter: Limiter, limit: float, every: float) -> None:
        self.limiter, self.limit, self.every = limiter, float(limit), float(every)
        self._cond = threading.Condition()
        self._waiting = False
        self._episode = 0
        self._back = False  # how the last wait ended
        self._expired = False
        self._last_look = -math.inf
        self.waits = 0  # times the run began to wait
        self.waited = 0.0  # seconds spent waiting, all waits together
        self.looks = 0
        self.since: float | None = None  # wall-clock time (epoch) the current wait began
        self.next_look: float | None = None  # wall-clock time of the next look, while waiting

    def wait(self, stop: threading.Event | None, look: Callable[[], float | None]) -> bool:
        """Block until the budget is back (True), or the limit passed or the run stopped (False).

        `look()` sends one look and returns the answer's Retry-After, if any; whatever it
        raises (a look refused as unauthorized, say) ends this wait and reaches the caller.
        """
        with self._cond:
            if self._expired:
                return False
            if self._waiting:  # another worker is looking: wait for its verdict
                episode = self._episode
                while self._waiting and self._episode == episode and not (stop is not None and stop.is_set()):
                    self._cond.wait(0.25)
                return self._back and not (stop is not None and stop.is_set())
            self._waiting = True
            self._episode += 1
            self.waits += 1
            began = self.limiter.clock()
            self.since = time.time()
        back = False
        try:
            back = self._look_until_back(stop, look, began)
        finally:
            with self._cond:
                self.waited += max(0.0, self.limiter.clock() - began)
                self._waiting, self._back = False, back
                self.since = self.next_look = None
                self._cond.notify_all()
        return back

    def _look_until_back(self, stop: threading.Event | None, look: Callable[[], float | None], began: float) -> bool:
        clock = self.limiter.clock
        end = began + max(0.0, self.limit - self.waited)
        not_before = -math.inf  # from a look's Retry-After
        while not (stop is not None and stop.is_set()):
            if self.limiter.budget_allows():  # another answer showed it meanwhile
                return True
            at = max(max(began, self._last_look) + self.every, not_before)
            if at > end:  # no look fits in what is left of the wait: wait it out, then give up
                self.next_look = None
                self.limiter.wait(end - clock(), stop)
                if not (stop is not None and stop.is_set()):
                    self._expired = True  # the wait limit passed: no more waiting in this run
                return False
            self.next_look = time.time() + (at - clock())
            self.limiter.wait(at - clock(), stop)
            if stop is not None and stop.is_set():
                return False
            self._last_look = clock()
            self.looks += 1
            retry_after = look()
            if retry_after:
                not_before = self._last_look + retry_after
        return False

    def status(self) -> dict[str, float] | None:
        """While waiting: when the wait began and when the next look is (epoch seconds)."""
        since, next_look = self.since, self.next_look
        if since is None:
            return None
        return {"since": since, "next_look": next_look if next_look is not None else math.nan}

    def facts(self) -> dict[str, Any]:
        return {"budget_waits": self.waits, "budget_waited_s": round(self.waited, 3), "budget_looks": self.looks}
