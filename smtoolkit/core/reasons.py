"""Why a request was not sent, or why its retries ended without a final answer.

One vocabulary shared by the gate that refuses a start (`limiter.Refused`), the client's retry
loop that records it in a row's story, and `core.settle`, which turns it into words.
"""

from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    """Why a request's story ended without a final answer (a readable answer needs none)."""

    HALTED = "halted"  # the run halted (auth, reserve, unreachable, interrupt, error): start nothing more
    RESERVE = "reserve"  # the hourly budget reached the reserve kept for production
    DEADLINE = "deadline"  # the row's time limit (row_deadline) passed
    RETRIES = "retries"  # max_retries were spent
    RETRY_BUDGET = "retry_budget"  # the run's retry budget is spent (the server keeps failing)

    def __str__(self) -> str:
        return self.value
