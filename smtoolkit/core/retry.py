"""Retry policy: which failures are retried, how long to wait, and Retry-After parsing.

Immutable and pure, after urllib3's `Retry`: `RetryPolicy.wait` returns seconds and never
sleeps; randomness is passed in.
"""

from __future__ import annotations

import email.utils
import math
import random
from dataclasses import dataclass
from datetime import UTC

# Statuses retried with backoff; 429 additionally pauses the whole pool (see pacing).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# A Retry-After longer than this is treated as this (urllib3 #3743: huge values crash sleep).
MAX_RETRY_AFTER = 300.0
# Retries of a request that never reached the server (DNS, refused, TLS): a blip passes in a
# second or two; a dead network or a wrong base URL does not, and must not cost minutes per row.
CONNECT_RETRIES = 2


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), capped.

    A date without a zone is UTC; a date in the past means 0; garbage means None.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():  # str.isdigit alone is True for '²', which int() refuses
        seconds = float(int(value[:12]))
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        try:
            seconds = when.timestamp() - now
        except (OverflowError, OSError, ValueError):
            return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failed request is retried.

    max_retries: retries after the first attempt.
    backoff_base / backoff_cap: full-jitter exponential backoff,
        ``uniform(0, min(cap, base * 2**retry))`` (capped *before* randomizing).
    row_deadline: seconds one batch may spend in total, waits included.
    connect_retries: retries (of max_retries) after a failure that sent nothing.
    """

    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    row_deadline: float = 300.0
    connect_retries: int = CONNECT_RETRIES

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.connect_retries < 0:
            raise ValueError("max_retries and connect_retries must be >= 0")
        if self.backoff_base < 0 or self.backoff_cap < 0 or self.row_deadline <= 0:
            raise ValueError("backoff_base, backoff_cap must be >= 0 and row_deadline > 0")

    def exhausted(self, retries: int, reached: bool) -> bool:
        """No retry after `retries` retries: max_retries, or fewer when the last failure never
        reached the server (`reached` False: no connection could be made)."""
        return retries >= (self.max_retries if reached else min(self.max_retries, self.connect_retries))

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Wait before retry number `retry` (0-based) when the server gave no Retry-After."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2 ** min(retry, 30)))
        return rng.uniform(0.0, ceiling)

    def wait(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry `retry`: Retry-After plus a little jitter, else backoff."""
        if retry_after is not None:
            # Small positive jitter so clients sharing a key do not come back in lockstep.
            return min(retry_after + rng.uniform(0.0, min(1.0, 0.1 * retry_after + 0.05)), MAX_RETRY_AFTER + 1)
        return self.backoff(retry, rng)


class RetryBudget:
    """A run-wide allowance for retries (after botocore's retry quota): each retry costs
    tokens, each success returns one, so a failing server is not hammered by every row in
    turn. With a cost of 2 and a refund of 1 the allowance only drains while more than a
    third of requests fail: a server that is merely flaky keeps being retried, one that is
    down stops being hammered after about 250 retries. Not thread-safe; the client guards it."""

    def __init__(self, capacity: int = 500, retry_cost: int = 2, success_refund: int = 1) -> None:
        self.capacity = capacity
        self.tokens = capacity
        self.retry_cost = retry_cost
        self.success_refund = success_refund

    def take(self) -> bool:
        if self.tokens < self.retry_cost:
            return False
        self.tokens -= self.retry_cost
        return True

    def refund(self) -> None:
        self.tokens = min(self.capacity, self.tokens + self.success_refund)
