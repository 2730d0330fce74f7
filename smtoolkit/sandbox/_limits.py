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


@dataclass
class _KeyWindow:
    window_start: float
    used: int = 0
    recent: deque[float] = field(default_factory=deque)


class RateLimits:
    """Sliding one-second window plus a fixed hourly window, per key, under one lock.

    Only admitted requests count against either limit; a refused request costs nothing.
    `X-RateLimit-Remaining` is computed at admission, so within a window it never rises and
    never goes below zero.
    """

    def __init__(
        self,
        hourly_limit: int,
        per_second: int,
        window_seconds: float,
        mono: Callable[[], float],
    ) -> None:
        self.hourly_limit = hourly_limit
        self.per_second = per_second
        self.window_seconds = window_seconds
        self._mono = mono
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyWindow] = {}

    def _window(self, key: str, now: float) -> _KeyWindow:
        w = self._keys.get(key)
        if w is None or now - w.window_start >= self.window_seconds:
            w = _KeyWindow(window_start=now, recent=w.recent if w else deque())
            self._keys[key] = w
        return w

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
                wait = w.window_start + self.window_seconds - now
                return Admission(False, self.hourly_limit, 0, max(1, math.ceil(wait)), "hourly")
            while w.recent and w.recent[0] <= now - 1.0:
                w.recent.popleft()
            if len(w.recent) >= self.per_second:
                wait = w.recent[0] + 1.0 - now
                return Admission(False, self.hourly_limit, remaining, max(1, math.ceil(wait)), "per_second")
            w.recent.append(now)
            w.used += 1
            return Admission(True, self.hourly_limit, self.hourly_limit - w.used, at=now)

    def reset(self) -> None:
        with self._lock:
            self._keys.clear()
