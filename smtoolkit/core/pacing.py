"""Pacing: when the next request may start, and how much of the hourly budget may be spent.

Pure state machines driven by an explicit `now` (monotonic seconds). The client holds one
`Pacer` and one `Budget`, shared by all its workers, behind a lock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

# Requests leave on schedule but reach the server with a few milliseconds of jitter; pacing
# at this share of max_rps keeps *arrivals*, not only departures, inside the limit.
SAFETY = 0.975
# Never slower than this, however often we are throttled (botocore's floor).
MIN_RPS = 0.5
# After a throttle the rate climbs back quickly (FAST_STEP per second) to just under what the
# server was measured to accept, then probes above it slowly (PROBE_STEP per PROBE_PERIOD of
# calm), so a server stricter than max_rps costs one 429 a minute, not one every few seconds.
FAST_STEP = 0.10
PROBE_PERIOD = 30.0
PROBE_STEP = 0.02
# A start this late or less (a sleeping thread wakes a few milliseconds late: the switch
# interval, timer slack, a busy machine) keeps the schedule: the next slot is its own slot plus
# 1/rate, not its actual start plus 1/rate, so lateness is absorbed instead of added to every
# later start. A later start (an idle pool, a pause) starts a new schedule from itself.
LATE_TOLERANCE = 0.010
# Absorbing lateness must not eat the margin SAFETY leaves for jitter on the way to the
# server: the window guard keeps any floor(max_rps) + 1 starts at least floor(max_rps) /
# (max_rps * SAFETY) seconds apart (1/SAFETY = 1.0256 s at a whole max_rps), as even spacing
# does, less this much (and never less than a second), so that a late start followed by one on
# time is not held back again.
SQUEEZE = 0.003
# Starts are remembered this long, so that a 429 answered long after its request was sent
# (slow server, long timeout) can still be measured against the second before it.
HISTORY = 120.0


class Pacer:
    """Evenly spaced starts on a schedule of their own: at most `max_rps` in any sliding
    one-second window.

    Each start takes the next slot of a grid that advances by 1/rate per start (GCRA, the
    generic cell rate algorithm); a start up to LATE_TOLERANCE after its slot keeps the grid,
    so late wake-ups do not slow every later request. No start is ever before its slot.

    A 429 pauses every worker until a shared "not before" time and lowers the rate to what
    the server was measured to accept; calm periods then raise it gradually back to max_rps.
    """

    def __init__(self, max_rps: float) -> None:
        if not (isinstance(max_rps, (int, float)) and math.isfinite(max_rps) and max_rps > 0):
            raise ValueError(f"max_rps must be a positive number, not {max_rps!r}")
        self.max_rps = float(max_rps)
        self._top = self.max_rps * SAFETY
        self._floor = min(MIN_RPS, self._top)  # never above what the user allowed
        # Starts allowed in any sliding one-second window (at least one, for max_rps < 1).
        self._per_window = max(1, math.floor(self.max_rps))
        # ...and in any window this long: what even spacing at full rate gives them, and at least
        # a second. A start held by it is late; the schedule absorbs that like any lateness.
        self._span = max(1.0, self._per_window / self._top - SQUEEZE)
        self._base = self._top  # rate right after the last throttle
        self._target = self._top  # where the fast climb after a throttle stops
        self._last_cut: float | None = None
        self._calm_since: float | None = None  # None: never throttled
        self._slot: float | None = None  # the last start's slot on the schedule (None: no start yet)
        self.pause_until = -math.inf
        self._recent: deque[float] = deque()
        self.throttles = 0

    @property
    def window_count(self) -> int:
        """Starts allowed in any sliding one-second window."""
        return self._per_window

    def rate(self, now: float) -> float:
        """Current requests per second."""
        if self._calm_since is None:
            return self._top
        calm = max(0.0, now - self._calm_since)
        r = self._base
        if r < self._target:
            climb = math.log(self._target / r) / math.log(1 + FAST_STEP)  # seconds to the target
            if calm < climb:
                return min(self._top, r * math.pow(1 + FAST_STEP, calm))
            calm -= climb
            r = self._target
        steps = int(calm // PROBE_PERIOD)
        return min(self._top, r * (1 + PROBE_STEP) ** min(steps, 1000))

    def earliest(self, now: float) -> float:
        """The earliest time the next request may start (never before `now`)."""
        return max(self._due(now), now)

    def _due(self, now: float) -> float:
        """The next slot, pushed back by a full window (see `_span`)."""
        t = self._scheduled(now)
        # Even spacing alone allows ceil(rate) starts in a second, more than a non-integer
        # max_rps (and float rounding can add one more at integer rates); a late start
        # followed by on-time ones would squeeze the window too: guard it.
        if self._slot is not None and len(self._recent) >= self._per_window:
            t = max(t, self._recent[-self._per_window] + self._span)
        return t

    def _scheduled(self, now: float) -> float:
        """The next slot of the schedule (at the current rate), or the end of a pause."""
        if self._slot is None:
            return self.pause_until
        return max(self.pause_until, self._slot + 1.0 / self.rate(now))

    def start(self, now: float) -> None:
        """Record that a request starts now (call only when `earliest(now) <= now`).

        This start's slot on the schedule is the next slot when the start is at most
        LATE_TOLERANCE after it, else `now` itself; the next slot is 1/rate after it."""
        scheduled = self._scheduled(now)
        self._slot = scheduled if now - scheduled <= LATE_TOLERANCE else now
        self._recent.append(now)
        while self._recent and self._recent[0] <= now - HISTORY:
            self._recent.popleft()

    def throttled(self, now: float, sent_at: float, wait: float) -> bool:
        """A 429 arrived for a request started at `sent_at`: pause everyone for `wait` seconds.

        Lowers the rate once per episode (a 429 for a request sent before the previous one
        was handled belongs to the same episode). Returns True when the rate was lowered.
        """
        paused_until = self.pause_until  # the end of the previous pause
        self.pause_until = max(self.pause_until, now + max(0.0, wait))
        if self._calm_since is not None and sent_at < self._calm_since:
            return False
        if self._last_cut is not None and now - self._last_cut < 1.0:
            return False  # at most one cut per second: a burst of 429s is one episode
        self._last_cut = now
        self.throttles += 1
        current = self.rate(now)
        # What the server accepted: our starts in the second before the refused one (early in
        # a run, all of them: the server's window holds nothing else of ours). That second
        # says nothing when we were paused in it or sent nothing at all. Never cut below half
        # at once, so a 429 that was not about our rate (a storm, another client) cannot
        # stall the run.
        accepted = 0
        if sent_at - 1.0 >= paused_until:
            accepted = sum(1 for t in self._recent if sent_at - 1.0 <= t < sent_at)
        if accepted:
            new = min(current, max(accepted * SAFETY, current * 0.5))
            target = min(current, accepted * SAFETY)
        else:
            # Nothing to measure: back off multiplicatively, and climb back to where we were
            # (a burst of unmeasurable 429s must not ratchet the ceiling down).
            new = current * 0.7
            target = max(current, self._target)
        self._base = max(self._floor, new)
        self._target = max(self._base, min(self._top, target))
        self._calm_since = max(now, self.pause_until)  # recovery counts from the end of the pause
        return True


class Neighbours:
    """The recent starts of every client of this process to one API host.

    The per-second limit is per licence and IP, not per client: a client made right after
    another one (each `cancel_batches(...)` without `client=` makes its own) or running beside
    it shares the server's window with it. A start waits until fewer than `count` starts (the
    highest count of any client that started lately) lie in the last SPAN seconds, so the
    clients of a process together keep the pace one of them keeps alone.
    """

    SPAN = 1.0 / SAFETY - SQUEEZE  # as a single client's guard at a whole max_rps
    KEEP = 2.0  # seconds a start is remembered (longer than any span)

    def __init__(self) -> None:
        self._starts: deque[tuple[float, int]] = deque()

    def earliest(self, now: float, count: int) -> float:
        """The earliest time a client allowed `count` starts a second may start (never before `now`)."""
        self._forget(now)
        n = max([count, *(c for _, c in self._starts)])
        if len(self._starts) < n:
            return now
        return max(now, self._starts[-n][0] + self.SPAN)

    def started(self, now: float, count: int) -> None:
        self._starts.append((now, count))

    def idle(self, now: float) -> bool:
        """Nothing started lately: forgetting these neighbours loses nothing."""
        self._forget(now)
        return not self._starts

    def _forget(self, now: float) -> None:
        while self._starts and self._starts[0][0] <= now - self.KEEP:
            self._starts.popleft()


@dataclass
class Budget:
    """The hourly budget seen in X-RateLimit-* headers, and the reserve left for production.

    reserve: requests never to spend; None means 10% of the limit once a limit is seen.
    Remaining counts are taken as the lowest seen, unless one jumps up by more than the
    requests in flight could explain (a new window). An answer without the header counts as
    one request spent.

    Pass `sent_at` (when the answered request was started) to `observe`: answers arrive out of
    order, and only then can a late answer to an old request (whose count is high because the
    server saw it early) be told apart from a new window. Without it, such a late answer that
    overtook more than `in_flight + 1` requests is taken for a new window and the estimate
    rises above the truth.
    """

    reserve: int | None = None
    limit: int | None = None
    remaining: int | None = None
    _read_at: float | None = field(default=None, init=False, repr=False, compare=False)  # newest reading's request
    _window_from: float = field(default=-math.inf, init=False, repr=False, compare=False)  # where the window began
    _unread: list[float] = field(default_factory=list, init=False, repr=False, compare=False)  # headerless answers

    def __post_init__(self) -> None:
        if self.reserve is not None and (not isinstance(self.reserve, int) or self.reserve < 0):
            raise ValueError(f"reserve must be a whole number >= 0, not {self.reserve!r}")

    @property
    def kept(self) -> int:
        """Requests kept back for production (0 until a limit is known)."""
        if self.reserve is not None:
            return self.reserve
        return math.ceil(self.limit * 0.10) if self.limit else 0

    def observe(self, limit: int | None, remaining: int | None, in_flight: int, sent_at: float | None = None,
                *, look: bool = False) -> None:
        """Take in one answer's headers; `in_flight` excludes the answered request.

        A `look` (a request sent only to read the budget while the run waits for it) is the
        newest reading there is: its count is taken as it is, even a small rise (a rolling
        window gives the budget back a little at a time)."""
        if limit is not None:
            self.limit = limit
        if look and remaining is not None and sent_at is not None and (self._read_at is None or sent_at > self._read_at):
            self.remaining = max(0, remaining - sum(1 for t in self._unread if t > sent_at))
            self._window_from = self._read_at = sent_at
            self._unread = [t for t in self._unread if t > sent_at]
            return
        if remaining is None:
            # An answer without the header (a gateway page, say) may still have been counted:
            # assume it was, or a run of such answers would spend past the reserve unseen.
            if self.remaining is not None:
                self.remaining = max(0, self.remaining - 1)
                if sent_at is not None:
                    self._unread.append(sent_at)
            return
        if sent_at is None:
            if self.remaining is None or remaining <= self.remaining or remaining > self.remaining + in_flight + 1:
                self.remaining = remaining
            return
        # The server counted everything it processed before this request, but not the
        # headerless answers to requests sent after it.
        value = max(0, remaining - sum(1 for t in self._unread if t > sent_at))
        newer = self._read_at is None or sent_at > self._read_at
        if self.remaining is None or (newer and value > self.remaining + in_flight + 1):
            self.remaining = value  # the first reading, or a new window
            self._window_from = sent_at
            self._unread = [t for t in self._unread if t > sent_at]
        elif sent_at >= self._window_from:
            self.remaining = min(self.remaining, value)
        # else: an answer from before the current window began; it says nothing about it.
        if newer:
            self._read_at = sent_at

    def allows(self, in_flight: int) -> bool:
        """May one more request start, with `in_flight` already sent and unanswered?"""
        if self.remaining is None:
            return True
        return self.remaining - in_flight - 1 >= self.kept

    def spendable(self, in_flight: int = 0) -> int | None:
        """Requests that may still be sent before reaching the reserve (None if unknown)."""
        if self.remaining is None:
            return None
        return max(0, self.remaining - in_flight - self.kept)


HOUR = 3600.0


def budget_plan(needed: int, *, limit: int, remaining: int, kept: int, max_rps: float,
                wait_for_budget: float | None) -> str | None:
    """One line about a run that needs more requests than the budget allows now, or None.

    The finish time is an estimate: the API documents an hourly budget but not when its
    window turns over, and production may spend from the same key meanwhile.
    """
    spendable = max(0, remaining - kept)
    if needed <= spendable:
        return None
    per_hour = limit - kept
    head = (f"this run needs at least {needed:,} request(s); the hourly budget allows {spendable:,} now "
            f"({remaining:,} left of {limit:,}, {kept:,} kept for production)")
    if per_hour <= 0:
        return head + ": the reserve is the whole budget, so nothing more can be sent; lower reserve="
    seconds = max(needed / max_rps, (needed - spendable) / per_hour * HOUR)
    estimate = (f"estimate: about {_duration(seconds)} at {per_hour:,} requests an hour, if the budget refills "
                "at its hourly limit and nothing else spends the key")
    if wait_for_budget is None or wait_for_budget <= 0:
        return f"{head}; rows beyond that are skipped (BUDGET_RESERVE) unless the run waits for the budget ({estimate})"
    tail = f"waiting up to {_duration(wait_for_budget)} for the budget as asked ({estimate})"
    if seconds > wait_for_budget + needed / max_rps:
        tail += "; the wait limit is shorter, so the last rows may be skipped (BUDGET_RESERVE)"
    return f"{head}; {tail}"


def _duration(seconds: float) -> str:
    """'2 h 05 min', '12 min', '40 s'."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m:02d} min" if h else f"{m} min"
