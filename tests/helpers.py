"""Helpers shared by the tests (fixtures are in conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from smtoolkit import Client
from smtoolkit.sandbox import Sandbox

#: Seconds after which a wait for an event gives up and fails: it only turns a hang into a
#: clear failure (every wait below ends on its event, usually in milliseconds).
GUARD = 120.0
CLI_TIMEOUT = 60.0  # seconds: a hang guard for one CLI process
API_TIMEOUT = 5.0  # seconds, for one request of a test to the sandbox


def wait_for(condition: Callable[[], Any], what: str, guard: float = GUARD,
             detail: Callable[[], str] = str) -> Any:
    """Poll `condition` until it returns something truthy and return that; fail saying `what`
    was awaited (and `detail()`, e.g. a server's log) if `guard` seconds pass first: a hang,
    never a slow machine. `condition` may itself fail at once (say, when a process died)."""
    give_up = time.monotonic() + guard
    while not (found := condition()):
        assert time.monotonic() < give_up, f"gave up after {guard:g} s waiting for {what}{detail()}"
        time.sleep(0.01)  # the one polling interval of the suite's waits
    return found


def requests_seen(server: Any) -> int:
    """How many requests a sandbox, a scripted or a hostile server has logged so far."""
    log = server.requests if hasattr(server, "requests") else server.log
    return len(log)


def run_ended(guard: float = GUARD) -> None:
    """Wait for the end of every bulk run in this process: join each smtoolkit worker thread
    still alive (a run that returned must have none left that could send)."""
    give_up = time.monotonic() + guard
    for t in [t for t in threading.enumerate() if t.name.startswith("smtoolkit-worker-")]:
        t.join(max(0.0, give_up - time.monotonic()))
        assert not t.is_alive(), f"{t.name} still runs {guard:g} s after its run returned"


def nothing_more_sent(server: Any, seen: int, ended: Callable[[], object] = run_ended) -> None:
    """Assert that `server` got no request beyond the `seen` it had when the run returned.

    Waits on the run's own end, never on the clock: `ended()` returns once nothing of the run
    can still send (by default: every worker thread joined; for the CLI, its process exited;
    for the panel, its run thread joined). The server's log is then read once."""
    ended()
    log = list(server.requests if hasattr(server, "requests") else server.log)
    late = [{k: e.get(k) for k in ("seq", "method", "path", "status", "fault")} for e in log[seen:]]
    assert len(log) == seen, f"{len(log) - seen} request(s) reached the server after the run returned: {late}"


def fast_client(server: Any, **settings: Any) -> Client:
    """A client for a sandbox or scripted server, with fast backoff so retries take
    milliseconds; `settings` override any Client argument."""
    key = settings.pop("api_key", getattr(server, "api_key", "scripted-key"))
    opts: dict[str, Any] = {"timeout": 5.0, "backoff_base": 0.05, "backoff_cap": 0.3}
    opts.update(settings)
    return Client(api_key=key, base_url=server.base_url, **opts)


class Api:
    """A requests.Session pointed at a sandbox's API."""

    def __init__(self, sb: Sandbox, key: str | None = None, auth: str | None = None) -> None:
        self.sb = sb
        self.s = requests.Session()
        if auth is not None:
            self.s.headers["Authorization"] = auth
        elif key != "":
            self.s.headers["Authorization"] = f"Bearer {key or sb.api_key}"

    def url(self, bid: str = "", status: bool = False) -> str:
        return f"{self.sb.base_url}/query/batch" + (f"/{bid}" if bid else "") + ("/status" if status else "")

    def get(self, bid: str, **kw: Any) -> requests.Response:
        return self.s.get(self.url(bid), timeout=kw.pop("timeout", API_TIMEOUT), **kw)

    def delete(self, bid: str, **kw: Any) -> requests.Response:
        return self.s.delete(self.url(bid), timeout=kw.pop("timeout", API_TIMEOUT), **kw)

    def status(self, bid: str, **params: Any) -> requests.Response:
        return self.s.get(self.url(bid, status=True), params=params, timeout=API_TIMEOUT)

    def create(self, body: Any = None, data: bytes | None = None) -> requests.Response:
        if data is not None:
            return self.s.post(self.url(), data=data, timeout=API_TIMEOUT)
        return self.s.post(self.url(), json=body, timeout=API_TIMEOUT)

    def close(self) -> None:
        self.s.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def own(**settings: Any) -> Iterator[tuple[Sandbox, Api]]:
    """A sandbox of a test's own, with non-default `settings`, and a session for it."""
    with Sandbox(**settings) as sb, Api(sb) as api:
        yield sb, api


def known(sb: Sandbox, batch_id: str) -> dict[str, Any]:
    """The sandbox's truth about a batch it must know."""
    truth = sb.batch(batch_id)
    assert truth is not None, batch_id
    return truth


def cli_env(key: str | None) -> dict[str, str]:
    """The test's environment without any SUPERMETRICS_* setting, plus the key if given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERMETRICS_")}
    env["PYTHONIOENCODING"] = "utf-8"
    if key is not None:
        env["SUPERMETRICS_API_KEY"] = key
    return env


def check_no_leak(sb: Any, *texts: str) -> None:
    """No traceback, and never the sandbox's key, in what the CLI printed."""
    for text in texts:
        assert "Traceback" not in text, text
        if sb is not None:
            assert sb.api_key not in text


def run_cli(sb: Any, *args: str, key: Any = "sandbox", input: str | None = None,
            base_url: bool = True, cwd: Path | None = None,
            argv0: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion. `key="sandbox"` uses the sandbox's key; None sets none."""
    if key == "sandbox":
        key = sb.api_key if sb is not None else None
    cmd = [*(argv0 or [sys.executable, "-m", "smtoolkit"]), *args]
    if base_url and sb is not None:
        cmd += ["--base-url", sb.base_url]
    p = subprocess.run(cmd, env=cli_env(key), capture_output=True, text=True, timeout=CLI_TIMEOUT,
                       input=input, stdin=subprocess.DEVNULL if input is None else None,
                       start_new_session=True, cwd=cwd)
    check_no_leak(sb, p.stdout, p.stderr)
    return p


def audit_lines(path: Path) -> list[dict[str, Any]]:
    """The records of an audit trail (none if it was never written), split as JSON Lines are:
    on "\\n" only (U+2028 may sit inside a string)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


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
