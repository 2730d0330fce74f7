"""Helpers shared by the tests (fixtures are in conftest.py)."""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Any

from smtoolkit import Client


def fast_client(server: Any, **settings: Any) -> Client:
    """A client for a sandbox or scripted server, with fast backoff so retries take
    milliseconds; `settings` override any Client argument."""
    key = settings.pop("api_key", getattr(server, "api_key", "scripted-key"))
    opts: dict[str, Any] = {"timeout": 5.0, "backoff_base": 0.05, "backoff_cap": 0.3}
    opts.update(settings)
    return Client(api_key=key, base_url=server.base_url, **opts)


def deletes(sb: Any) -> list[dict[str, Any]]:
    """The DELETE requests a sandbox has logged, in admission order."""
    return [r for r in sb.requests if r["method"] == "DELETE"]


def deleted_ids(sb: Any) -> list[str]:
    """The batch IDs of the DELETEs a sandbox has logged, in admission order."""
    return [r["batch_id"] for r in deletes(sb)]


def max_in_window(starts: list[float], width: float = 1.0) -> int:
    """Most starts in any half-open window [t, t + width)."""
    s = sorted(starts)
    best = 0
    for i, t in enumerate(s):  # the busiest window can always be taken to start at a start
        best = max(best, bisect_left(s, t + width) - i)
    return best


class FakeClock:
    """A monotonic clock that moves only when something sleeps on it: pass `clock=c.now,
    sleep=c.sleep` to a Client and its pacing, backoff and Retry-After waits take no time."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self._now += max(0.0, seconds)


class SandboxAnswers:
    """Every answer an in-process sandbox gave, in order: method, path, status and the
    `request_id` of its body. The sandbox's request log keeps no request IDs; this reads them
    from the answers themselves, so a test can match a report's or audit's request_id to the
    request the sandbox really answered."""

    def __init__(self, sb: Any) -> None:
        import json

        self.answers: list[dict[str, Any]] = []
        lock = threading.Lock()
        handle = sb.app.handle

        def recording(method: str, target: str, headers: dict[str, str], body: bytes) -> Any:
            resp = handle(method, target, headers, body)
            try:
                request_id = json.loads(resp.body).get("meta", {}).get("request_id")
            except (ValueError, AttributeError):
                request_id = None
            with lock:
                self.answers.append({"method": method, "path": target.split("?")[0],
                                     "status": resp.status, "request_id": request_id})
            return resp

        sb.app.handle = recording

    def by_request_id(self) -> dict[str, dict[str, Any]]:
        return {a["request_id"]: a for a in self.answers if a["request_id"]}
