"""50 concurrent clients hammer one key for a few seconds: the sandbox's per-second limit and
its X-RateLimit-Remaining must hold under real concurrency, judged from the server's own log.

The limit is enforced on the limiter's clock at admission, so the log's `admitted_at` (that
clock, recorded for every admitted request) is the time to judge it by. `time` and `seq` are
taken on arrival, before the limiter's lock, so under contention they are not admission order.
"""

from __future__ import annotations

import bisect
import threading
import time

import requests

from smtoolkit.sandbox import Sandbox

CLIENTS = 50
PER_SECOND = 20
HAMMER_SECONDS = 2.5


def test_fifty_clients_never_beat_the_per_second_limit() -> None:
    with Sandbox(per_second=PER_SECOND, hourly_limit=5000, seed=21) as sb:
        ids = sb.create_batches(5)
        start = threading.Barrier(CLIENTS)
        received = [0] * CLIENTS
        errors: list[BaseException] = []
        seen_remaining: list[list[int]] = [[] for _ in range(CLIENTS)]

        def client(i: int) -> None:
            with requests.Session() as s:
                s.headers["Authorization"] = f"Bearer {sb.api_key}"
                url = f"{sb.base_url}/query/batch/{ids[i % len(ids)]}"
                try:
                    start.wait(timeout=10)
                    stop = time.monotonic() + HAMMER_SECONDS
                    while time.monotonic() < stop:
                        resp = s.get(url, timeout=10)
                        received[i] += 1
                        assert resp.status_code in (200, 429), resp.status_code
                        assert resp.headers["X-RateLimit-Limit"] == "5000"
                        if resp.status_code == 200:
                            seen_remaining[i].append(int(resp.headers["X-RateLimit-Remaining"]))
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=HAMMER_SECONDS + 20)
        assert not any(t.is_alive() for t in threads), "clients did not finish"
        elapsed = time.monotonic() - t0
        assert errors == []

        log = sb.requests
        # Every answer a client got is in the server's log, and nothing else is.
        assert sum(received) == len(log)
        assert sorted(e["seq"] for e in log) == list(range(1, len(log) + 1))
        assert {e["status"] for e in log} == {200, 429}

        admitted = sorted((e for e in log if e["status"] == 200), key=lambda e: e["admitted_at"])
        refused = [e for e in log if e["status"] == 429]
        assert len(refused) > len(admitted)  # the limit was really under pressure
        assert all(e["admitted_at"] is None for e in refused)

        # No sliding one-second window holds more than PER_SECOND admitted requests.
        times = [e["admitted_at"] for e in admitted]
        busiest = max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))
        assert busiest <= PER_SECOND
        # ...and the limiter did admit about as many as it may (it is not over-strict).
        assert len(admitted) >= PER_SECOND * int(min(elapsed, HAMMER_SECONDS))
        assert len(admitted) <= PER_SECOND * (int(elapsed) + 2)

        # X-RateLimit-Remaining, in admission order, drops by exactly one each time: it never rises,
        # never goes below zero, and no two admitted requests were given the same value.
        remaining = [e["remaining"] for e in admitted]
        assert remaining == list(range(4999, 4999 - len(admitted), -1))
        assert min(remaining) >= 0 and len(set(remaining)) == len(remaining)
        # The clients saw exactly those values, each once.
        assert sorted(v for vs in seen_remaining for v in vs) == sorted(remaining)
        # Each client saw its own admitted answers with falling budgets.
        for vs in seen_remaining:
            assert vs == sorted(vs, reverse=True)
