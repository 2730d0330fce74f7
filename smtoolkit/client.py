"""The HTTP client: one per API key, safe to share between threads.

It holds the sessions and the shared `Limiter` (so every worker of every run on this client
obeys one limit), sends bounded exchanges (`transport`), retries per `RetryPolicy` while
recording each row's `Story` (attempts, why they ended, verification checks), and hands the
story to `core.settle`, which alone decides the row. It never raises for what happens to a batch.
"""

from __future__ import annotations

import math
import queue
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import requests

from ._version import __version__
from .config import DEFAULT_BASE_URL, api_key_from, check_base_url, check_setting, is_loopback, origin_of
from .core.answers import Answer, parse_answer, query_counts_in
from .core.bounds import MAX_BACKOFF, MAX_ROW_DEADLINE, MAX_RPS, MAX_TIMEOUT, MIN_RPS
from .core.ids import check_id, path_segment
from .core.outcomes import Result
from .core.pacing import Budget
from .core.reasons import Reason
from .core.retry import RetryPolicy
from .core.settle import VERIFY_TRIES, Attempt, Story, invalid_id, is_final, needs_verification, settle
from .limiter import BudgetWait, Clock, Limiter, Refused, RunContext, Sleep, Tally
from .transport import ACCEPT_ENCODING, BoundedAdapter, TransportError, Watchdog, exchange

__all__ = ["Client", "RunContext", "Tally"]


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


@dataclass(frozen=True, slots=True)
class _Sent:
    """One exchange as the client saw it: the attempt, and when it started (for 429s)."""

    attempt: Attempt
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
        max_retries: retries per request for 429, 5xx and connection failures (at most
            `RetryPolicy.connect_retries` of them when no connection could be made at all).
        row_deadline: seconds within which every request for one batch must start (retries and
            verification included); a row never takes longer than row_deadline + timeout.
        backoff_base: the first retry waits up to this long (full-jitter exponential backoff).
        backoff_cap: no wait between retries is longer than this.
        seed: seeds the backoff jitter (for reproducible runs).
        clock: the monotonic clock for pacing, backoff and deadlines (tests pass their own; the
            network's own timeouts always run on real time).
        sleep: the sleep that goes with `clock`.
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
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.base_url = check_base_url(base_url)
        key = api_key_from(api_key)
        check_setting("timeout", timeout, f"a number of seconds > 0 and at most {MAX_TIMEOUT:g}",
                 lambda v: 0 < v <= MAX_TIMEOUT)
        check_setting("max_rps", max_rps, f"a number of requests per second from {MIN_RPS:g} to {MAX_RPS:g}",
                 lambda v: MIN_RPS <= v <= MAX_RPS)
        check_setting("max_retries", max_retries, "a whole number from 0 to 100", lambda v: 0 <= v <= 100, whole=True)
        check_setting("row_deadline", row_deadline, f"a number of seconds > 0 and at most {MAX_ROW_DEADLINE:g}",
                 lambda v: 0 < v <= MAX_ROW_DEADLINE)
        check_setting("backoff_base", backoff_base, f"a number of seconds from 0 to {MAX_BACKOFF:g}",
                 lambda v: 0 <= v <= MAX_BACKOFF)
        check_setting("backoff_cap", backoff_cap, f"a number of seconds from 0 to {MAX_BACKOFF:g}",
                 lambda v: 0 <= v <= MAX_BACKOFF)
        if reserve is not None:
            check_setting("reserve", reserve, "a whole number >= 0 (or None)", lambda v: v >= 0, whole=True)
        self.policy = RetryPolicy(int(max_retries), float(backoff_base), float(backoff_cap), float(row_deadline))
        self.limiter = Limiter(float(max_rps), reserve, clock=clock or time.monotonic, sleep=sleep,
                               origin=origin_of(self.base_url))
        self.timeout = float(timeout)
        self.max_rps = float(max_rps)
        self._auth = _BearerAuth(key)
        self._loopback = is_loopback(urlsplit(self.base_url).hostname or "")
        self._lock = threading.Lock()
        self._sessions: queue.LifoQueue[requests.Session] = queue.LifoQueue()
        self._all_sessions: list[requests.Session] = []
        self._rng = random.Random(seed)
        self._watchdog = Watchdog()
        self._wall = time.time

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, max_rps={self.max_rps:g}, api_key='***')"

    @property
    def budget(self) -> Budget:
        """The hourly budget as seen in X-RateLimit-* headers, and the reserve kept."""
        return self.limiter.budget

    def pacing(self) -> dict[str, Any]:
        """The shared limiter's current state (for progress displays and run facts)."""
        return self.limiter.snapshot()

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

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one exchange -------------------------------------------------------------------------
    def _url(self, batch_id: str, suffix: str = "") -> str:
        return f"{self.base_url}/query/batch/{path_segment(batch_id)}{suffix}"

    def _exchange(self, method: str, url: str, params: dict[str, Any] | None, context: RunContext,
                  deadline: float, *, look: bool = False) -> _Sent:
        """Start when the limiter allows (or raise Refused) and return what came back."""
        sent_at = self.limiter.acquire(context, deadline, look=look)
        answer: Answer | None = None
        error: str | None = None
        not_sent: str | None = None
        try:
            with self._session() as s:
                got = exchange(s, self._watchdog, method, url, params, self.timeout)
            answer = parse_answer(got.http_status, got.headers, got.body, self._wall(), too_large=got.too_large)
            self.limiter.replaced(answer.replaced, context)
        except TransportError as exc:
            error, not_sent = str(exc), exc.not_sent
        finally:
            self.limiter.answered(sent_at, answer.ratelimit_limit if answer else None,
                                  answer.ratelimit_remaining if answer else None, look=look)
        return _Sent(Attempt(answer, error, not_sent), sent_at)

    # -- one row ------------------------------------------------------------------------------
    def _story(self, method: str, batch_id: str, context: RunContext, *, suffix: str = "",
               params: dict[str, Any] | None = None) -> Story:
        """Everything one row's request takes, recorded: attempts, then verification GETs if
        `core.settle` says they are needed. The story goes to `settle`, which decides the row."""
        started = self.limiter.clock()
        attempts, ended, deadline = self._attempts(method, self._url(batch_id, suffix), params, context,
                                                   started + self.policy.row_deadline)
        story = Story(batch_id, method, tuple(attempts), ended)
        checks = self._checks(batch_id, context, deadline) if needs_verification(story) else ()
        return replace(story, checks=checks, elapsed_s=round(self.limiter.clock() - started, 6))

    def _attempts(self, method: str, url: str, params: dict[str, Any] | None, context: RunContext,
                  deadline: float) -> tuple[list[Attempt], Reason | None, float]:
        """Send and retry until a final answer or a reason to give up; returns what happened,
        why it ended (None: a final answer) and the row's deadline (moved on by any time spent
        waiting for the budget)."""
        attempts: list[Attempt] = []
        retry = 0
        while True:
            try:
                sent = self._exchange(method, url, params, context, deadline)
            except Refused as refused:
                if refused.reason is not Reason.RESERVE or context.budget_wait is None:
                    return attempts, refused.reason, deadline
                began = self.limiter.clock()
                back, key_refused = self._wait_for_budget(url, context, context.budget_wait)
                if key_refused is not None:  # the key was revoked while waiting: that is the row's answer
                    return [*attempts, key_refused], None, deadline
                deadline += self.limiter.clock() - began
                if back:
                    continue
                return attempts, Reason.HALTED if context.halted else Reason.RESERVE, deadline
            attempts.append(sent.attempt)
            a = sent.attempt.answer
            if a is not None and a.ok:
                self.limiter.succeeded()
                return attempts, None, deadline
            if is_final(a):
                return attempts, None, deadline
            wait = self.policy.wait(retry, a.retry_after if a else None, self._rng)
            if a is not None and a.http_status == 429:
                self.limiter.throttled(sent.sent_at, wait, context)
                wait = 0.0  # the pacer now holds every worker, this one included
            if self.policy.exhausted(retry, reached=sent.attempt.not_sent is None):
                return attempts, Reason.RETRIES, deadline
            if self.limiter.clock() + wait > deadline:
                return attempts, Reason.DEADLINE, deadline
            if not self.limiter.retry_allowed():
                return attempts, Reason.RETRY_BUDGET, deadline
            retry += 1
            self.limiter.wait(wait, context.halt)

    def _wait_for_budget(self, url: str, context: RunContext,
                         budget_wait: BudgetWait) -> tuple[bool, Attempt | None]:
        """Wait at the reserve, sending the looks when `budget_wait` says one is due (a GET of
        `url` that may touch the reserve). Returns whether the budget is back, and the attempt
        of a look refused as unauthorized/forbidden, which ends the row's story."""
        watch = budget_wait.join(context.halt)
        if isinstance(watch, bool):  # another worker led the wait: its verdict
            return watch, None
        with watch:
            while watch.look_due():
                try:
                    sent = self._exchange("GET", url, None, context, math.inf, look=True)
                except Refused:  # the run halted: look_due says so
                    continue
                a = sent.attempt.answer
                if a is not None and a.http_status in (401, 403):
                    return False, sent.attempt
                watch.looked(a.retry_after if a is not None and a.http_status == 429 else None)
            return watch.back, None

    def _checks(self, batch_id: str, context: RunContext, deadline: float) -> tuple[Attempt, ...]:
        """Up to VERIFY_TRIES GETs after a cancel that ended failed, within the row's deadline
        (not charged to the retry budget)."""
        checks: list[Attempt] = []
        for n in range(VERIFY_TRIES):
            if n:
                self.limiter.wait(self.policy.backoff(n, self._rng), context.halt)
            try:
                sent = self._exchange("GET", self._url(batch_id), None, context, deadline)
            except Refused:
                break
            checks.append(sent.attempt)
            a = sent.attempt.answer
            if a is not None and a.http_status == 429:
                self.limiter.throttled(sent.sent_at, self.policy.wait(n, a.retry_after, self._rng), context)
            if is_final(a):
                break
        return tuple(checks)

    # -- public operations --------------------------------------------------------------------
    def cancel(self, batch_id: str, *, context: RunContext | None = None) -> Result:
        """Cancel one batch (DELETE), retrying as the policy allows; never raises for the API's
        answer. `context` is the run's (halt signal, tally; with a budget wait, a request that
        would touch the reserve waits for the budget first)."""
        c = check_id(batch_id)
        if c.batch_id is None:
            return invalid_id(batch_id, c.problem)
        return settle(self._story("DELETE", c.batch_id, context or RunContext()))

    def lookup(self, batch_id: str, *, context: RunContext | None = None) -> Result:
        """Read one batch (GET) without changing it; the outcome is what a cancel would do."""
        c = check_id(batch_id)
        if c.batch_id is None:
            return invalid_id(batch_id, c.problem)
        return settle(self._story("GET", c.batch_id, context or RunContext()))

    def query_counts(self, batch_id: str, *, context: RunContext | None = None) -> dict[str, int] | None:
        """Per-query counts (queued/running/success/failure) from the status endpoint, or None."""
        c = check_id(batch_id)
        if c.batch_id is None:
            return None
        story = self._story("GET", c.batch_id, context or RunContext(), suffix="/status",
                            params={"offset": 0, "limit": 1})
        answer = story.last_answer
        return query_counts_in(answer.meta) if answer is not None and answer.http_status == 200 else None
