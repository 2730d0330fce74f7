"""The gate every request of one client passes, shared by all its workers and runs.

Behind one lock: the pacer (when the next request may start), the hourly budget and its
reserve, the retry budget, the count of requests in flight, and each run's own tally. The
clock and the sleep are injected (real ones by default), so tests of pacing, Retry-After and
deadlines run on a clock of their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

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
    """What one run sent through a client: requests started and 429s received.

    A client may serve several runs at once (threads sharing it); each run passes its own
    tally, so its facts count only its own requests. Updated under the limiter's lock.
    """

    __slots__ = ("sent", "throttled")

    def __init__(self) -> None:
        self.sent = 0
        self.throttled = 0


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
    def acquire(self, stop: threading.Event | None, deadline: float, tally: Tally | None) -> float:
        """Block until a request may start; returns its start time, or raises Refused.

        Workers queue on a gate lock and only its holder waits for the next slot, so a paced
        pool wakes one thread per request instead of all of them.
        """
        while not self._gate.acquire(timeout=0.25):
            if stop is not None and stop.is_set():
                raise Refused("stopped")
            if self.clock() > deadline:
                raise Refused("deadline")
        try:
            return self._wait_for_slot(stop, deadline, tally)
        finally:
            self._gate.release()

    def _wait_for_slot(self, stop: threading.Event | None, deadline: float, tally: Tally | None) -> float:
        while True:
            if stop is not None and stop.is_set():
                raise Refused("stopped")
            with self._lock:
                now = self.clock()
                if now > deadline:
                    raise Refused("deadline")
                if not self.budget.allows(self._in_flight):
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

    def answered(self, sent_at: float, limit: int | None, remaining: int | None) -> None:
        """The request started at `sent_at` is over; its answer showed these headers (or none:
        a request that got no answer may still have been counted by the server)."""
        with self._lock:
            self._in_flight -= 1
            self._answered = True
            self.budget.observe(limit, remaining, self._in_flight, sent_at=sent_at)

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
        elif stop is not None:
            stop.wait(seconds)
        else:
            time.sleep(seconds)

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
