"""The HTTP client: one per API key, safe to share between threads.

It owns the shared pacer and budget (so every worker of every run on this client obeys one
limit), sends requests with `requests`, retries per `RetryPolicy`, and turns every answer
or failure into a `Result`. It never raises for what happens to a batch.
"""

from __future__ import annotations

import math
import queue
import random
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import requests

from ._version import __version__
from .config import DEFAULT_BASE_URL, api_key_from, check_base_url, is_loopback
from .core import outcomes as oc
from .core.answers import Answer, parse_answer, progress_counts
from .core.ids import check_id, path_segment
from .core.outcomes import Outcome, Result, result_from_answer
from .core.pacing import Budget, Pacer
from .core.retry import RetryBudget, RetryPolicy
from .errors import ConfigError
from .transport import ACCEPT_ENCODING, BoundedAdapter, TransportError, Watchdog, exchange

# GETs that may follow a cancel whose own answer was lost, to learn whether it was applied.
VERIFY_TRIES = 3


class Tally:
    """What one run sent through a client: requests started and 429s received.

    A client may serve several runs at once (threads sharing it); each run passes its own
    tally, so its facts count only its own requests. Updated under the client's lock.
    """

    __slots__ = ("sent", "throttled")

    def __init__(self) -> None:
        self.sent = 0
        self.throttled = 0


class _BearerAuth(requests.auth.AuthBase):
    """Adds the key; also stops requests from replacing it with .netrc credentials."""

    __slots__ = ("_key",)

    def __init__(self, key: str) -> None:
        self._key = key

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._key}"
        return r

    def __repr__(self) -> str:
        return "<BearerAuth ***>"


class Stop(Exception):
    """Internal: the gate refused to start a request (run stopped, reserve, deadline)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Try:
    answer: Answer | None
    error: str | None
    sent_at: float


class Client:
    """A paced, retrying client for the Supermetrics query-batch API.

    Args:
        api_key: falls back to $SUPERMETRICS_API_KEY; missing altogether raises ConfigError.
        base_url: the API root; plain http:// is refused except to loopback.
        timeout: seconds one exchange may take in total: connecting, sending and reading the
            whole answer (answers are also cut at MAX_ANSWER_BYTES).
        max_rps: at most this many requests start in any one-second window, across threads.
        reserve: requests of the hourly budget never spent (default: 10% of the limit once
            the first answer shows it).
        max_retries: retries per request for 429, 5xx and connection failures.
        row_deadline: seconds within which every request for one batch must start (retries and
            verification included); a row never takes longer than row_deadline + timeout.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 30.0,
        max_rps: float = 20.0,
        reserve: int | None = None,
        max_retries: int = 5,
        *,
        row_deadline: float = 300.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        seed: int | None = None,
    ) -> None:
        self.base_url = check_base_url(base_url)
        key = api_key_from(api_key)
        _setting("timeout", timeout, "a positive number of seconds", lambda v: 0 < v < 1e6)
        _setting("max_rps", max_rps, "a positive number of requests per second", lambda v: 0 < v < 1e6)
        _setting("max_retries", max_retries, "a whole number from 0 to 100", lambda v: 0 <= v <= 100, whole=True)
        _setting("row_deadline", row_deadline, "a positive number of seconds", lambda v: 0 < v < 1e9)
        _setting("backoff_base", backoff_base, "a number of seconds >= 0", lambda v: 0 <= v < 1e6)
        _setting("backoff_cap", backoff_cap, "a number of seconds >= 0", lambda v: 0 <= v < 1e6)
        if reserve is not None:
            _setting("reserve", reserve, "a whole number >= 0 (or None)", lambda v: v >= 0, whole=True)
        self.policy = RetryPolicy(int(max_retries), float(backoff_base), float(backoff_cap), float(row_deadline))
        self._pacer = Pacer(float(max_rps))
        self.budget = Budget(reserve=reserve)
        self.timeout = float(timeout)
        self.max_rps = float(max_rps)
        self._auth = _BearerAuth(key)
        self._loopback = is_loopback(urlsplit(self.base_url).hostname or "")
        self._lock = threading.Lock()
        self._gate = threading.Lock()
        self._sessions: queue.LifoQueue[requests.Session] = queue.LifoQueue()
        self._all_sessions: list[requests.Session] = []
        self._rng = random.Random(seed)
        self._watchdog = Watchdog()
        self._retry_budget = RetryBudget()
        self._in_flight = 0
        self._answered = False
        self._clock = time.monotonic
        self._wall = time.time
        self.requests_sent = 0
        self.throttled = 0

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, max_rps={self.max_rps:g}, api_key='***')"

    # -- sessions -----------------------------------------------------------------------------
    @contextmanager
    def _session(self) -> Iterator[requests.Session]:
        try:
            s = self._sessions.get_nowait()
        except queue.Empty:
            s = requests.Session()
            s.auth = self._auth
            # A proxy is never wanted for a local sandbox; for the real API the environment's
            # proxy settings apply.
            s.trust_env = not self._loopback
            s.headers["User-Agent"] = f"smtoolkit/{__version__}"
            s.headers["Accept"] = "application/json"
            s.headers["Accept-Encoding"] = ACCEPT_ENCODING  # what transport.py can inflate
            adapter = BoundedAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
            s.mount("https://", adapter)
            s.mount("http://", adapter)
            with self._lock:
                self._all_sessions.append(s)
        try:
            yield s
        finally:
            self._sessions.put(s)

    def close(self) -> None:
        """Close pooled connections. The client can still be used afterwards."""
        with self._lock:
            sessions, self._all_sessions = self._all_sessions, []
        self._sessions = queue.LifoQueue()
        for s in sessions:
            s.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pacing -------------------------------------------------------------------------------
    def _acquire(self, stop: threading.Event | None, deadline: float, tally: Tally | None) -> float:
        """Block until this request may start; returns its start time or raises Stop.

        Workers queue on a gate lock and only its holder waits for the next slot, so a
        paced pool wakes one thread per request instead of all of them.
        """
        while not self._gate.acquire(timeout=0.25):
            if stop is not None and stop.is_set():
                raise Stop("stopped")
            if self._clock() > deadline:
                raise Stop("deadline")
        try:
            return self._wait_for_slot(stop, deadline, tally)
        finally:
            self._gate.release()

    def _wait_for_slot(self, stop: threading.Event | None, deadline: float, tally: Tally | None) -> float:
        while True:
            if stop is not None and stop.is_set():
                raise Stop("stopped")
            with self._lock:
                now = self._clock()
                if now > deadline:
                    raise Stop("deadline")
                if not self.budget.allows(self._in_flight):
                    raise Stop("reserve")
                start = self._pacer.earliest(now)
                if not self._answered and self._in_flight:
                    # Until the first answer shows the budget (or a bad key), one at a time.
                    start = max(start, now + 0.005)
                elif start <= now:
                    self._pacer.start(now)
                    self._in_flight += 1
                    self.requests_sent += 1
                    if tally is not None:
                        tally.sent += 1
                    return now
            if start > deadline:
                raise Stop("deadline")
            self._wait(start - now, stop)

    @staticmethod
    def _wait(seconds: float, stop: threading.Event | None) -> None:
        if seconds <= 0:
            return
        if stop is not None:
            stop.wait(seconds)
        else:
            time.sleep(seconds)

    def _throttled(self, sent_at: float, wait: float, tally: Tally | None) -> None:
        """A 429: pause the whole pool for `wait` seconds and lower the shared rate."""
        with self._lock:
            self.throttled += 1
            if tally is not None:
                tally.throttled += 1
            self._pacer.throttled(self._clock(), sent_at, wait)

    def pacing(self) -> dict[str, Any]:
        """The shared limiter's current state (for progress displays and run facts)."""
        with self._lock:
            return {
                "rate": self._pacer.rate(self._clock()),
                "max_rps": self.max_rps,
                "throttled": self.throttled,
                "requests_sent": self.requests_sent,
                "ratelimit_limit": self.budget.limit,
                "ratelimit_remaining": self.budget.remaining,
                "reserve": self.budget.kept,
                "spendable": self.budget.spendable(self._in_flight),
            }

    # -- one HTTP exchange --------------------------------------------------------------------
    def _url(self, batch_id: str, suffix: str = "") -> str:
        return f"{self.base_url}/query/batch/{path_segment(batch_id)}{suffix}"

    def _exchange(self, method: str, url: str, params: dict[str, Any] | None,
                  stop: threading.Event | None, deadline: float, tally: Tally | None) -> _Try:
        sent_at = self._acquire(stop, deadline, tally)
        answer: Answer | None = None
        error: str | None = None
        try:
            with self._session() as s:
                got = exchange(s, self._watchdog, method, url, params, self.timeout)
            answer = parse_answer(got.status, got.headers, got.body, self._wall(), too_large=got.too_large)
        except TransportError as exc:
            error = str(exc)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._answered = True
                # A request that got no answer may still have been counted by the server.
                self.budget.observe(answer.ratelimit_limit if answer else None,
                                    answer.ratelimit_remaining if answer else None,
                                    self._in_flight, sent_at=sent_at)
        return _Try(answer, error, sent_at)

    # -- the retry loop -----------------------------------------------------------------------
    def _call(self, method: str, batch_id: str, stop: threading.Event | None, tally: Tally | None, *,
              suffix: str = "", params: dict[str, Any] | None = None, dry_run: bool = False) -> Result:
        return self._call_raw(method, batch_id, stop, tally, suffix=suffix, params=params, dry_run=dry_run)[0]

    def _call_raw(self, method: str, batch_id: str, stop: threading.Event | None, tally: Tally | None, *,
                  suffix: str = "", params: dict[str, Any] | None = None,
                  dry_run: bool = False) -> tuple[Result, Answer | None]:
        started = self._clock()
        deadline = started + self.policy.row_deadline
        url = self._url(batch_id, suffix)
        attempts, retry = 0, 0
        last: _Try | None = None
        applied = False  # a DELETE got a 2xx whose body could not be read
        ended_by: str | None = None
        while True:
            try:
                last = self._exchange(method, url, params, stop, deadline, tally)
            except Stop as s:
                ended_by = s.reason
                break
            attempts += 1
            a = last.answer
            if a is not None and 200 <= a.status < 300 and a.readable:
                with self._lock:
                    self._retry_budget.refund()
                break
            if a is not None and 200 <= a.status < 300 and method == "DELETE":
                applied = True
            status = None if a is None or (200 <= a.status < 300) else a.status
            if a is not None and status is not None and not self.policy.retryable(status):
                break
            wait = self.policy.wait(retry, a.retry_after if a else None, self._rng)
            if a is not None and a.status == 429:
                self._throttled(last.sent_at, wait, tally)
                wait = 0.0  # the pacer now holds every worker, this one included
            if retry >= self.policy.max_retries:
                ended_by = "retries"
                break
            if self._clock() + wait > deadline:
                ended_by = "deadline"
                break
            with self._lock:
                allowed = self._retry_budget.take()
            if not allowed:
                ended_by = "retry_budget"
                break
            retry += 1
            self._wait(wait, stop)
        result = self._finish(method, batch_id, last, attempts, ended_by, applied, dry_run, stop, deadline, tally)
        result.elapsed_s = round(self._clock() - started, 6)
        return result, (last.answer if last else None)

    def _finish(self, method: str, batch_id: str, last: _Try | None, attempts: int, ended_by: str | None,
                applied: bool, dry_run: bool, stop: threading.Event | None, deadline: float,
                tally: Tally | None) -> Result:
        if last is None or attempts == 0:
            return _not_sent(batch_id, ended_by or "stopped")
        a = last.answer
        if a is not None and a.readable and 200 <= a.status < 300:
            r = result_from_answer(batch_id, a, dry_run=dry_run)
        elif a is not None and a.status == 409 and applied:
            # Our earlier DELETE got a 2xx we could not read; the 409 is our own cancel.
            r = result_from_answer(batch_id, a)
            r.outcome = Outcome.CANCELLED
        elif a is not None and not (200 <= a.status < 300):
            r = result_from_answer(batch_id, a, dry_run=dry_run)
        else:
            r = Result(batch_id, Outcome.NETWORK_ERROR,
                       http_status=a.status if a else None,
                       error_code=(a.error_code or oc.UNREADABLE_RESPONSE) if a else oc.NETWORK_ERROR,
                       error_message=(a.error_message or "the answer's body could not be read") if a else last.error,
                       ratelimit_remaining=a.ratelimit_remaining if a else None)
        r.attempts = attempts
        if ended_by in ("deadline", "retry_budget") and r.outcome in (
                Outcome.RATE_LIMITED, Outcome.SERVER_ERROR, Outcome.NETWORK_ERROR):
            r.error_description = _join(r.error_description, {
                "deadline": "gave up: the row's time limit (row_deadline) was reached",
                "retry_budget": "gave up: the run's retry budget is spent (the server keeps failing)",
            }[ended_by])
        if method == "DELETE" and r.outcome in (Outcome.SERVER_ERROR, Outcome.NETWORK_ERROR, Outcome.RATE_LIMITED):
            r = self._verify(batch_id, r, applied, stop, deadline, tally)
        return r

    def _verify(self, batch_id: str, failed: Result, applied: bool,
                stop: threading.Event | None, deadline: float, tally: Tally | None) -> Result:
        """A cancel whose answer was lost may still have been applied: a GET tells.

        Up to VERIFY_TRIES GETs (not charged to the retry budget): reporting a batch the
        server stopped as failed is the one lie the report must not tell.
        """
        def unknown() -> Result:
            if applied:
                # The server accepted the cancel (2xx) but nothing readable says more.
                failed.outcome = Outcome.STOPPING
                failed.error_description = _join(failed.error_description,
                                                 "the API accepted the cancel (HTTP 2xx) but its answer could not "
                                                 "be read, nor could the batch's state afterwards")
            return failed

        a: Answer | None = None
        for attempt in range(VERIFY_TRIES):
            if attempt:
                self._wait(self.policy.backoff(attempt, self._rng), stop)
            try:
                # Within the row's own deadline: verification gets no time beyond it.
                t = self._exchange("GET", self._url(batch_id), None, stop, deadline, tally)
            except Stop:
                return unknown()
            failed.attempts += 1
            a = t.answer
            if a is not None and a.status == 429:
                self._throttled(t.sent_at, self.policy.wait(attempt, a.retry_after, self._rng), tally)
            if a is not None and a.readable and 200 <= a.status < 300:
                break
            if a is not None and not self.policy.retryable(a.status) and not 200 <= a.status < 300:
                return unknown()
        if a is None or not a.readable or not (200 <= a.status < 300):
            return unknown()
        seen = result_from_answer(batch_id, a)
        if seen.status_code == "STOPPED" or applied:
            outcome = Outcome.CANCELLED if seen.cancel_time is not None else Outcome.ALREADY_STOPPED
            if seen.status_code != "STOPPED":
                outcome = Outcome.STOPPING
            seen.outcome = outcome
            seen.attempts = failed.attempts
            seen.error_description = (f"the cancel's own answer was lost ({failed.error_code}); "
                                      "the batch's state was confirmed with a GET")
            return seen
        failed.status_code = seen.status_code
        failed.ratelimit_remaining = seen.ratelimit_remaining
        return failed

    # -- public operations --------------------------------------------------------------------
    def cancel(self, batch_id: str, *, stop: threading.Event | None = None, tally: Tally | None = None) -> Result:
        """Cancel one batch (DELETE), retrying as the policy allows; never raises for the API's answer."""
        c = check_id(batch_id)
        if c.batch_id is None:
            return invalid(batch_id, c.problem)
        return self._call("DELETE", c.batch_id, stop, tally)

    def lookup(self, batch_id: str, *, stop: threading.Event | None = None, tally: Tally | None = None) -> Result:
        """Read one batch (GET) without changing it; the outcome is what a cancel would do."""
        c = check_id(batch_id)
        if c.batch_id is None:
            return invalid(batch_id, c.problem)
        return self._call("GET", c.batch_id, stop, tally, dry_run=True)

    def query_progress(self, batch_id: str, *, stop: threading.Event | None = None,
                       tally: Tally | None = None) -> dict[str, int] | None:
        """Per-query counts (queued/running/success/failure) from the status endpoint, or None."""
        c = check_id(batch_id)
        if c.batch_id is None:
            return None
        r, answer = self._call_raw("GET", c.batch_id, stop, tally, suffix="/status",
                                   params={"offset": 0, "limit": 1}, dry_run=True)
        return progress_counts(answer.meta) if answer is not None and r.http_status == 200 else None

    def check_budget(self) -> dict[str, Any]:
        """What is known of the hourly budget (after at least one answer)."""
        return self.pacing()


def _setting(name: str, value: object, what: str, ok: Callable[[float], bool], whole: bool = False) -> None:
    """Raise a ConfigError naming the setting unless `value` is a fitting number."""
    good = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if good and whole:
        good = isinstance(value, int)
    if not good or not ok(float(value)):  # type: ignore[arg-type]
        raise ConfigError(f"{name} must be {what}, not {value!r}")


def _join(a: str | None, b: str) -> str:
    return f"{a}; {b}" if a else b


def invalid(value: object, problem: str | None) -> Result:
    """The result for an ID rejected locally (never sent)."""
    shown = value if isinstance(value, str) else None
    return Result(shown, Outcome.INVALID_ID, error_code=oc.INVALID_BATCH_ID,
                  error_message=problem or "invalid batch ID")


_NOT_SENT = {
    "stopped": (oc.SKIPPED_AUTH_FAILED, "not sent: the run stopped"),
    "reserve": (oc.BUDGET_RESERVE, "not sent: the hourly budget reached the reserve kept for production"),
    "deadline": (oc.ROW_DEADLINE, "not sent: the row's time limit passed while waiting for the rate limit"),
}


def _not_sent(batch_id: str, reason: str) -> Result:
    code, message = _NOT_SENT.get(reason, (oc.SKIPPED_AUTH_FAILED, "not sent"))
    return Result(batch_id, Outcome.SKIPPED, error_code=code, error_message=message)
