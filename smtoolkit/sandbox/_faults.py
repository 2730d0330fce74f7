"""Fault injection settings and their seeded, per-request decisions."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from typing import Any

MAX_DELAY = 3600.0  # latency, jitter, hang_seconds: an hour at most per answer


@dataclass
class Faults:
    """What goes wrong, and how often. Every rate is a probability per API request (0 = off).

    latency / jitter: seconds added to every answer (fixed + uniform(0, jitter)).
    error_rate: answer 500, 502 or 503 (503 carries Retry-After) without applying the request.
    throttle_rate: answer 429 TOO_MANY_REQUESTS (a "storm"); with Retry-After when
        `throttle_retry_after` is true.
    html_rate: answer 502 with an HTML page instead of JSON (a gateway).
    reset_before_rate: drop the connection before doing anything.
    reset_after_rate: apply the request, then drop the connection: the client never hears.
    truncate_rate: apply the request, then send only part of the JSON body.
    hang_rate: wait `hang_seconds` before answering (longer than any sane client timeout).
    problem_rate: render error answers as RFC 9457 problem+json instead of the envelope.
    """

    latency: float = 0.0
    jitter: float = 0.0
    error_rate: float = 0.0
    throttle_rate: float = 0.0
    throttle_retry_after: bool = True
    html_rate: float = 0.0
    reset_before_rate: float = 0.0
    reset_after_rate: float = 0.0
    truncate_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 60.0
    problem_rate: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_rate") and not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{f.name} must be between 0 and 1, not {value!r}")
            if f.name in ("latency", "jitter", "hang_seconds") and not 0 <= float(value) <= MAX_DELAY:
                raise ValueError(f"{f.name} must be a number of seconds from 0 to {MAX_DELAY:g}, not {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def updated(self, **changes: Any) -> Faults:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        return Faults(**{**self.to_dict(), **changes})


class Dice:
    """Reproducible random decisions for the n-th request under a seed.

    Each request gets its own generator seeded by (seed, n), so a run that sends the same
    requests in the same order sees the same faults, whatever the thread timing.
    """

    def __init__(self, seed: int, n: int) -> None:
        self._rng = random.Random(f"{seed}:{n}")

    def roll(self, rate: float) -> bool:
        # Always draw, so one setting never shifts the decisions of another.
        return self._rng.random() < rate

    def choice(self, options: tuple[int, ...]) -> int:
        return self._rng.choice(options)

    def uniform(self, high: float) -> float:
        return self._rng.uniform(0.0, high)
