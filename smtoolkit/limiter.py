"""The gate every request of one client passes, shared by all its workers and runs.

Behind one lock: the pacer (when the next request may start), the hourly budget and its
reserve, the retry budget, the count of requests in flight, and each run's own tally. The
clock and the sleep are injected (real ones by default), so tests of pacing, Retry-After and
deadlines run on a clock of their own.

What rides along with every request of one run (its halt signal, its tally, its patience with
the budget) is one `RunContext`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from .core.bounds import MAX_ONE_SLEEP
from .core.pacing import Budget, Neighbours, Pacer
from .core.reasons import Reason
from .core.retry import RetryBudget

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class Refused(Exception):
    """The gate will not start this request: the run halted, the reserve, or the row's deadline."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.value)
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


@dataclass(frozen=True, slots=True)
class RunContext:
    """What rides along with every request of one run, passed as one value: the signal that the
    run halts (set: start nothing more), its own tally, and its patience with the hourly budget
    (None: at the reserve, a request is refused and the run halts)."""

    halt: threading.Event = field(default_factory=threading.Event)
    tally: Tally = field(default_factory=Tally)
    budget_wait: BudgetWait | None = None

    @property
    def halted(self) -> bool:
        return self.halt.is_set()


class _Shared:
    """`Neighbours` behind their own lock (taken after a limiter's lock, never before)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.starts = Neighbours()


_NEIGHBOURHOODS: dict[tuple[str, Clock], _Shared] = {}
_NEIGHBOURHOODS_LOCK = threading.Lock()


def neighbours(origin: str, clock: Clock) -> _Shared:
    """The starts every limiter of this process on `clock` shares for the API at `origin`."""
    with _NEIGHBOURHOODS_LOCK:
        now = clock()
        for key in [k for k, v in _NEIGHBOURHOODS.items() if k[1] is clock and k[0] != origin]:
            with _NEIGHBOURHOODS[key].lock:
                if _NEIGHBOURHOODS[key].starts.idle(now):
                    del _NEIGHBOURHOODS[key]
        return _NEIGHBOURHOODS.setdefault((origin, clock), _Shared())


class Limiter:
    """Pacing, budgets and counters for one client; thread-safe. With `origin` (the API's
    scheme, host and port), its pace is also kept together with every other limiter of this
    process on the same origin and clock: the server's per-second window is theirs too."""

    def __init__(self, max_rps: float, reserve: int | None, *, clock: Clock = time.monotonic,
                 sleep: Sleep | None = None, origin: str | None = None) -> None:
        self.max_rps = float(max_rps)
        self.pacer = Pacer(self.max_rps)
        self._shared = neighbours(origin, clock) if origin is not None else _Shared()
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
    def acquire(self, context: RunContext | None, deadline: float, *, look: bool = False) -> float:
        """Block until a request may start; returns its start time, or raises Refused.

        Workers queue on a gate lock and only its holder waits for the next slot, so a paced
        pool wakes one thread per request instead of all of them. A `look` (see `BudgetWait`)
        is paced like any request but is the one kind that may touch the reserve.
        """
        stop = context.halt if context is not None else None
        while not self._gate.acquire(timeout=0.25):
            if stop is not None and stop.is_set():
                raise Refused(Reason.HALTED)
            if self.clock() > deadline:
                raise Refused(Reason.DEADLINE)
        try:
            return self._wait_for_slot(stop, deadline, context.tally if context is not None else None, look)
        finally:
            self._gate.release()

    def _wait_for_slot(self, stop: threading.Event | None, deadline: float, tally: Tally | None,
                       look: bool) -> float:
        while True:
            if stop is not None and stop.is_set():
                raise Refused(Reason.HALTED)
            with self._lock, self._shared.lock:
                now = self.clock()
                if now > deadline:
                    raise Refused(Reason.DEADLINE)
                if not look and not self.budget.allows(self._in_flight):
                    raise Refused(Reason.RESERVE)
                count = self.pacer.window_count
                start = max(self.pacer.earliest(now), self._shared.starts.earliest(now, count))
                if not self._answered and self._in_flight:
                    # Until the first answer shows the budget (or a bad key), one at a time.
                    start = max(start, now + 0.005)
                elif start <= now:
                    self.pacer.start(now)
                    self._shared.starts.started(now, count)
                    self._in_flight += 1
                    self.requests_sent += 1
                    if tally is not None:
                        tally.sent += 1
                    return now
            if start > deadline:
                raise Refused(Reason.DEADLINE)
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
    def throttled(self, sent_at: float, wait: float, context: RunContext | None) -> None:
        """A 429: pause the whole pool for `wait` seconds and lower the shared rate."""
        with self._lock:
            self.throttled_count += 1
            if context is not None:
                context.tally.throttled += 1
            self.pacer.throttled(self.clock(), sent_at, wait)

    def replaced(self, count: int, context: RunContext | None) -> None:
        """Characters of an answer no writer could encode (replaced by U+FFFD), for the run's tally."""
        if count and context is not None:
            with self._lock:
                context.tally.replaced += count

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
    at most `limit` seconds over the whole run. One waiting worker at a time leads the wait
    (`join` hands it a `BudgetWatch`): it *looks*, sending one request (paced, counted; the only
    kind that may touch the reserve) whenever the watch says one is due, at most once per
    `every` seconds, and that answer's count says whether the budget is back. The others wait
    for its verdict. A look reads the server's own count, so a fixed window and a rolling one
    are handled alike. A halt (auth, Ctrl-C) ends the wait at once.
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

    def join(self, halt: threading.Event | None) -> BudgetWatch | bool:
        """Wait at the reserve: a `BudgetWatch` when this worker is to lead the wait (use it in a
        `with` block), else the verdict of the wait another worker led (True: the budget is
        back; False: the wait limit passed or the run halted)."""
        with self._cond:
            if self._expired:
                return False
            if self._waiting:  # another worker is looking: wait for its verdict
                episode = self._episode
                while self._waiting and self._episode == episode and not _set(halt):
                    self._cond.wait(0.25)
                return self._back and not _set(halt)
            self._waiting = True
            self._episode += 1
            self.waits += 1
            began = self.limiter.clock()
            self.since = time.time()
        return BudgetWatch(self, halt, began)

    def _over(self, began: float, back: bool) -> None:
        with self._cond:
            self.waited += max(0.0, self.limiter.clock() - began)
            self._waiting, self._back = False, back
            self.since = self.next_look = None
            self._cond.notify_all()

    def status(self) -> dict[str, float] | None:
        """While waiting: when the wait began and when the next look is (epoch seconds)."""
        since, next_look = self.since, self.next_look
        if since is None:
            return None
        return {"since": since, "next_look": next_look if next_look is not None else math.nan}

    def facts(self) -> dict[str, Any]:
        return {"budget_waits": self.waits, "budget_waited_s": round(self.waited, 3), "budget_looks": self.looks}


class BudgetWatch:
    """One worker leading a wait for the budget: `look_due()` sleeps until the next look is due
    and says whether to send it; the worker sends it and reports its Retry-After with `looked`.
    `back` says how the wait ended; leaving the `with` block ends it for every worker."""

    def __init__(self, wait: BudgetWait, halt: threading.Event | None, began: float) -> None:
        self._wait, self._halt, self.began = wait, halt, began
        self._end = began + max(0.0, wait.limit - wait.waited)
        self._not_before = -math.inf  # from a look's Retry-After
        self.back = False

    def __enter__(self) -> BudgetWatch:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._wait._over(self.began, self.back)

    def look_due(self) -> bool:
        """Sleep until the next look: True to send it now; False when the wait is over (the
        budget is back, the wait limit passed, or the run halted)."""
        w, halt = self._wait, self._halt
        clock = w.limiter.clock
        if _set(halt):
            return False
        if w.limiter.budget_allows():  # another answer showed it meanwhile
            self.back = True
            return False
        at = max(max(self.began, w._last_look) + w.every, self._not_before)
        if at > self._end:  # no look fits in what is left of the wait: wait it out, then give up
            w.next_look = None
            w.limiter.wait(self._end - clock(), halt)
            if not _set(halt):
                w._expired = True  # the wait limit passed: no more waiting in this run
            return False
        w.next_look = time.time() + (at - clock())
        w.limiter.wait(at - clock(), halt)
        if _set(halt):
            return False
        w._last_look = clock()
        w.looks += 1
        return True

    def looked(self, retry_after: float | None) -> None:
        """The look's answer asked for this many seconds before the next (429 Retry-After)."""
        if retry_after:
            self._not_before = self._wait._last_look + retry_after


def _set(halt: threading.Event | None) -> bool:
    return halt is not None and halt.is_set()
