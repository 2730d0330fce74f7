"""Per-key rate limits as the API enforces them: a per-second limit and an hourly budget."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Admission:
    """The outcome of asking to admit one request."""

    admitted: bool
    limit: int
    remaining: int
    retry_after: int | None = None
    reason: str | None = None  # "per_second" or "hourly" when refused
    at: float | None = None  # the limiter's (monotonic) clock when admitted; the limits hold on it


MODES = ("fixed", "rolling")


@dataclass
class _KeyWindow:
    window_start: float
    used: int = 0
    recent: deque[float] = field(default_factory=deque)  # admissions in the last second
    spent: deque[float] = field(default_factory=deque)  # rolling mode: admissions in the last window


class RateLimits:
    """Sliding one-second window plus an hourly budget window, per key, under one lock.

    The budget window is `budget_window` seconds long (an hour by default; tests and demos play
    a long day in seconds), in one of two modes, since the API's docs do not say which it is:
    "fixed" (the whole budget comes back when the window turns over) or "rolling" (each
    request is given back `budget_window` seconds after it was admitted).

    Only admitted requests count against either limit; a refused request costs nothing.
    `X-RateLimit-Remaining` is computed at admission and never goes below zero.
    """

    def __init__(
        self,
        hourly_limit: int,
        per_second: int,
        budget_window: float,
        mono: Callable[[], float],
        budget_mode: str = "fixed",
    ) -> None:
        self.hourly_limit = hourly_limit
        self.per_second = per_second
        self.budget_window = budget_window
        self.budget_mode = check_mode(budget_mode)
        self._mono = mono
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyWindow] = {}

    def _window(self, key: str, now: float) -> _KeyWindow:
        w = self._keys.get(key)
        if w is None or (self.budget_mode == "fixed" and now - w.window_start >= self.budget_window):
            w = _KeyWindow(window_start=now, recent=w.recent if w else deque())
            self._keys[key] = w
        if self.budget_mode == "rolling":
            while w.spent and w.spent[0] <= now - self.budget_window:
                w.spent.popleft()
            w.used = len(w.spent)
        return w

    def _back_in(self, w: _KeyWindow, now: float) -> float:
        """Seconds until a request of the budget is given back."""
        if self.budget_mode == "rolling" and w.spent:
            return w.spent[0] + self.budget_window - now
        return w.window_start + self.budget_window - now

    def peek(self, key: str | None) -> tuple[int, int]:
        """(limit, remaining) for a key without spending anything."""
        with self._lock:
            if key is None:
                return self.hourly_limit, self.hourly_limit
            w = self._window(key, self._mono())
            return self.hourly_limit, max(0, self.hourly_limit - w.used)

    def admit(self, key: str) -> Admission:
        with self._lock:
            now = self._mono()
            w = self._window(key, now)
            remaining = max(0, self.hourly_limit - w.used)
            if remaining == 0:
                return Admission(False, self.hourly_limit, 0, max(1, math.ceil(self._back_in(w, now))), "hourly")
            while w.recent and w.recent[0] <= now - 1.0:
                w.recent.popleft()
            if len(w.recent) >= self.per_second:
                wait = w.recent[0] + 1.0 - now
                return Admission(False, self.hourly_limit, remaining, max(1, math.ceil(wait)), "per_second")
            w.recent.append(now)
            w.used += 1
            if self.budget_mode == "rolling":
                w.spent.append(now)
            return Admission(True, self.hourly_limit, self.hourly_limit - w.used, at=now)

    def set_window(self, budget_window: float | None, budget_mode: str | None) -> None:
        with self._lock:
            if budget_window is not None:
                if not 0 < float(budget_window) <= 7 * 86400:
                    raise ValueError(f"budget_window must be a number of seconds > 0 and at most 604800, "
                                     f"not {budget_window!r}")
                self.budget_window = float(budget_window)
            if budget_mode is not None and check_mode(budget_mode) != self.budget_mode:
                self.budget_mode = budget_mode
                self._keys.clear()  # counts kept one way mean nothing the other way

    def reset(self) -> None:
        with self._lock:
            self._keys.clear()


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"budget_mode must be 'fixed' or 'rolling', not {mode!r}")
    return mode
