"""A local server that behaves like the Supermetrics query-batch API.

    with Sandbox(per_second=20) as sb:
        ids = sb.create_batches(100)
        ...  # point a client at sb.base_url with sb.api_key
        sb.batch(ids[0])  # the server's own truth about a batch

The sandbox shares no code with the smtoolkit client, so the two cannot share a bug. It
binds to loopback unless `allow_remote=True`. Settings needed across processes (faults,
limits, keys, truth, the request log, reset) are served under `/_sandbox`, never `/query`.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ._app import API_PREFIX, CONTROL_PREFIX, App, Response, fingerprint
from ._faults import Faults
from ._http import Server
from ._limits import RateLimits
from ._state import BATCH_STATUSES, Progression, Store

__all__ = ["API_PREFIX", "CONTROL_PREFIX", "Faults", "Sandbox", "fingerprint"]


#: The sandbox's bounds for its durations, so that every accepted value is one it can wait for.
MAX_WINDOW = 7 * 86400.0  # budget_window
MAX_DELAY = 7 * 86400.0  # tick, stop_delay


def _check_progression(tick: float | None, stop_delay: float) -> None:
    if tick is not None and not 0 <= float(tick) <= MAX_DELAY:
        raise ValueError(f"tick must be a number of seconds from 0 to {MAX_DELAY:g} (or None), not {tick!r}")
    if not 0 <= float(stop_delay) <= MAX_DELAY:
        raise ValueError(f"stop_delay must be a number of seconds from 0 to {MAX_DELAY:g}, not {stop_delay!r}")


class Sandbox:
    """An in-memory, thread-safe Supermetrics batch API on a real socket.

    Args:
        api_key: the valid key (default: a fresh random one, see `api_key`).
        extra_keys: more keys that are valid at start.
        host: the address to listen on (loopback unless `allow_remote`).
        port: the port to listen on; 0 picks a free port.
        hourly_limit: budget per key and window (`X-RateLimit-Limit`).
        per_second: admitted requests per key in any sliding one-second window.
        budget_window: length of the budget window in seconds (an hour; a test or a demo can
            play a long day in seconds).
        budget_mode: "fixed" (the whole budget returns when the window turns over) or
            "rolling" (each request is given back `budget_window` seconds after it was made).
        tick: seconds per step of automatic progression, or None: batches move only when
            told (`advance`, `set_status`).
        stop_delay: seconds from an accepted cancel until the batch reads STOPPED.
        already_stopped: answer to cancelling a STOPPED batch: "ok" (200, unchanged) or
            "conflict" (409 CONFLICT_ERROR).
        faults: what goes wrong, see `Faults`; change it later with `set_faults`.
        seed: makes IDs, query outcomes and faults reproducible.
        allow_remote: permit a non-loopback `host`.
        clock: the monotonic clock (seconds) the rate windows and progression run on; a test
            passes a fake one to step through the per-second and budget windows without sleeping.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        extra_keys: Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        hourly_limit: int = 5000,
        per_second: int = 20,
        budget_window: float = 3600.0,
        budget_mode: str = "fixed",
        tick: float | None = None,
        stop_delay: float = 0.0,
        failure_rate: float = 0.1,
        already_stopped: str = "ok",
        faults: Faults | None = None,
        seed: int = 0,
        allow_remote: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not allow_remote and not _is_loopback(host):
            raise ValueError(f"refusing to listen on {host!r}: pass allow_remote=True to leave loopback")
        if hourly_limit < 1 or per_second < 1:
            raise ValueError("hourly_limit and per_second must be at least 1")
        if not 0 < budget_window <= MAX_WINDOW:
            raise ValueError(f"budget_window must be a number of seconds > 0 and at most {MAX_WINDOW:g}, "
                             f"not {budget_window!r}")
        _check_progression(tick, stop_delay)
        self.api_key = api_key or "sbx_" + secrets.token_urlsafe(18)
        self._host, self._port = host, port
        self._closing = threading.Event()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self.store = Store(Progression(tick, stop_delay, failure_rate), seed, time.time, clock)
        self.limits = RateLimits(hourly_limit, per_second, budget_window, clock, budget_mode)
        self.app = App(self.store, self.limits, faults or Faults(), {self.api_key, *extra_keys},
                       seed, already_stopped, lambda: self.url)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Sandbox:
        if self._server is not None:
            return self
        self._closing.clear()
        self._server = Server((self._host, self._port), self._dispatch, self._closing)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="smtoolkit-sandbox", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def serve_forever(self) -> None:
        """Block until interrupted (for the `smtoolkit sandbox` command)."""
        self.start()
        try:
            while not self._closing.wait(0.5):
                pass
        finally:
            self.close()

    def __repr__(self) -> str:
        state = self.url if self._server else "stopped"
        return f"<Sandbox {state} key={fingerprint(self.api_key)}>"

    # -- where --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The server root, e.g. http://127.0.0.1:54321."""
        if self._server is None:
            raise RuntimeError("the sandbox is not running; use `with Sandbox() as sb:` or start()")
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        """The API base URL, the sandbox's equivalent of .../enterprise/v2."""
        return self.url + API_PREFIX

    # -- data ---------------------------------------------------------------------------------
    def create_batches(self, n: int, status: str = "RUNNING", description: str = "sandbox batch",
                       queries: int = 4, *, age: float = 0.0) -> list[str]:
        """Create `n` batches in the given status and return their IDs in creation order;
        `age` seconds moves their schedule_time into the past (batches stuck for hours)."""
        if status not in BATCH_STATUSES:
            raise ValueError(f"status must be one of {BATCH_STATUSES}")
        if not 0 <= age <= 10 * 365 * 86400:
            raise ValueError(f"age must be a number of seconds from 0 to ten years, not {age!r}")
        ids = []
        for i in range(n):
            b = self.store.create(description=f"{description} {i + 1}",
                                  accounts=[f"acc_{j + 1}" for j in range(queries)], queries=queries)
            if age:
                with self.store.lock:
                    b.created -= age
            self.store.set_status(b.batch_id, status)
            ids.append(b.batch_id)
        return ids

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        """The server's truth about one batch (None if unknown)."""
        with self.store.lock:
            b = self.store.get(batch_id)
            return b.truth() if b else None

    def batches(self) -> dict[str, dict[str, Any]]:
        with self.store.lock:
            return {b.batch_id: b.truth() for b in self.store.all()}

    def advance(self, batch_ids: Iterable[str] | None = None, steps: int = 1) -> None:
        self.store.advance(batch_ids, steps)

    def set_status(self, batch_id: str, status: str) -> None:
        self.store.set_status(batch_id, status)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every API request so far: method, path, status, fault, key fingerprint (never the key)."""
        with self.app._lock:
            return [dict(e) for e in self.app.log]

    # -- run-time settings --------------------------------------------------------------------
    @property
    def faults(self) -> Faults:
        return self.app.faults

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> Faults:
        """Replace the faults, or change some settings of the current ones (0 turns one off)."""
        self.app.faults = (faults or self.app.faults).updated(**changes)
        return self.app.faults

    def set_limits(self, *, per_second: int | None = None, hourly_limit: int | None = None,
                   budget_window: float | None = None, budget_mode: str | None = None) -> None:
        if per_second is not None:
            self.limits.per_second = int(per_second)
        if hourly_limit is not None:
            self.limits.hourly_limit = int(hourly_limit)
        self.limits.set_window(budget_window, budget_mode)

    def set_progression(self, *, tick: float | None = ..., stop_delay: float | None = None,  # type: ignore[assignment]
                        already_stopped: str | None = None) -> None:
        _check_progression(None if tick is ... else tick, stop_delay or 0.0)
        if tick is not ...:
            self.store.progression.tick = tick
        if stop_delay is not None:
            self.store.progression.stop_delay = float(stop_delay)
        if already_stopped is not None:
            if already_stopped not in ("ok", "conflict"):
                raise ValueError("already_stopped must be 'ok' or 'conflict'")
            self.app.already_stopped = already_stopped

    def revoke_key(self, key: str) -> None:
        """Make a key invalid from now on (a token that dies mid-run)."""
        self.app.keys.discard(key)

    def add_key(self, key: str) -> None:
        self.app.keys.add(key)

    def reset(self) -> None:
        """Forget batches, the request log and rate-limit windows; keep keys and settings."""
        self.store.clear()
        self.limits.reset()
        with self.app._lock:
            self.app.log.clear()

    # -- HTTP dispatch ------------------------------------------------------------------------
    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Response:
        if target.split("?")[0].startswith(CONTROL_PREFIX + "/") or target == CONTROL_PREFIX:
            try:
                return self._control(method, target.split("?")[0][len(CONTROL_PREFIX):], body)
            except (ValueError, KeyError, TypeError) as exc:
                return _json(400, {"error": {"code": "BAD_REQUEST", "message": str(exc)[:255]}})
        return self.app.handle(method, target, headers, body)

    def _control(self, method: str, path: str, body: bytes) -> Response:
        data = json.loads(body) if body else {}
        if not isinstance(data, dict):
            raise ValueError("control requests take a JSON object")
        route = (method, path.rstrip("/"))
        if route == ("GET", "/batches"):
            return _json(200, {"data": list(self.batches().values())})
        if route == ("POST", "/batches"):
            ids = self.create_batches(int(data.get("count", 1)), data.get("status", "RUNNING"),
                                      data.get("description", "sandbox batch"), int(data.get("queries", 4)))
            return _json(201, {"batch_ids": ids})
        if method == "GET" and path.startswith("/batches/"):
            truth = self.batch(path[len("/batches/"):])
            return _json(200, {"data": truth}) if truth else _json(404, {"error": {"code": "NOT_FOUND"}})
        if route == ("POST", "/advance"):
            self.advance(data.get("batch_ids"), int(data.get("steps", 1)))
            return _json(200, {"ok": True})
        if route == ("GET", "/faults"):
            return _json(200, self.faults.to_dict())
        if route in (("PUT", "/faults"), ("POST", "/faults")):
            return _json(200, self.set_faults(Faults(), **data).to_dict() if data.pop("replace", False)
                         else self.set_faults(**data).to_dict())
        if route in (("PUT", "/limits"), ("POST", "/limits")):
            self.set_limits(**data)
            return _json(200, {"per_second": self.limits.per_second, "hourly_limit": self.limits.hourly_limit,
                               "budget_window": self.limits.budget_window,
                               "budget_mode": self.limits.budget_mode})
        if route in (("PUT", "/progression"), ("POST", "/progression")):
            self.set_progression(**data)
            return _json(200, {"ok": True})
        if route == ("POST", "/keys/revoke"):
            self.revoke_key(str(data["key"]))
            return _json(200, {"ok": True})
        if route == ("POST", "/keys/add"):
            self.add_key(str(data["key"]))
            return _json(200, {"ok": True})
        if route == ("GET", "/requests"):
            return _json(200, {"data": self.requests})
        if route == ("POST", "/reset"):
            self.reset()
            return _json(200, {"ok": True})
        return _json(404, {"error": {"code": "NOT_FOUND", "message": "unknown sandbox control route"}})


def _json(status: int, payload: Any) -> Response:
    return Response(status, json.dumps(payload).encode())


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
