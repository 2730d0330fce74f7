"""The documented range of every duration and rate smtoolkit accepts.

Each bound is checked where the value is parsed (the CLI's options, `Client`, `cancel_batches`),
so that every accepted value is one the code can really wait for: `threading.Event.wait` and
`time.sleep` overflow beyond `threading.TIMEOUT_MAX`, which is about 49.7 days on Windows.
"""

from __future__ import annotations

import math

DAY = 86400.0

#: wait= / --wait (polling until STOPPED) and wait_for_budget= / --wait-for-budget, in seconds.
MAX_WAIT = 30 * DAY
#: budget_check_every= / --budget-check-every: looking less than once a day is not waiting.
MAX_CHECK_EVERY = DAY
#: timeout= / --timeout: one exchange, in seconds.
MAX_TIMEOUT = DAY
#: row_deadline=: every request for one batch starts within this many seconds.
MAX_ROW_DEADLINE = 30 * DAY
#: backoff_base= and backoff_cap=, in seconds.
MAX_BACKOFF = DAY
#: max_rps= / --max-rps: from one request per 100 seconds to 10,000 a second.
MIN_RPS, MAX_RPS = 0.01, 10_000.0
#: The longest single sleep the code asks of the OS; longer waits are taken in pieces.
MAX_ONE_SLEEP = DAY


def seconds_text(seconds: float) -> str:
    """A bound as people say it: '30 days', '1 day', '0.01'."""
    if seconds >= DAY and seconds % DAY == 0:
        days = int(seconds // DAY)
        return f"{days} day" + ("s" if days != 1 else "")
    return f"{seconds:g} seconds"


def within(value: object, low: float, high: float, *, low_open: bool = False) -> bool:
    """Is `value` a real (not bool) finite number in [low, high] (or (low, high])?"""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    v = float(value)
    if not math.isfinite(v):
        return False
    return (low < v if low_open else low <= v) and v <= high
