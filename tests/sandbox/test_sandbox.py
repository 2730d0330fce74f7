"""The sandbox over real HTTP on 127.0.0.1 (requests, never mocks): endpoints, auth, cancel
semantics, progression, pagination, rate limits, the request log, every fault mode, the
control API and the loopback guard. Manual progression is the default, and the windows, tick
and stop_delay run on a fake clock (`Sandbox(clock=...)`), so no test sleeps; only latency and
hang take real time, as long as the server's delay.
"""

from __future__ import annotations

import ast
import gc
import http.client
import json
import re
import socket
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import requests

import smtoolkit.sandbox as sandbox_pkg
from smtoolkit.sandbox import API_PREFIX, CONTROL_PREFIX, Faults, Sandbox, fingerprint
from tests.helpers import Api, FakeClock, known, own

TIMEOUT = 5.0
REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")






def control(sb: Sandbox, method: str, route: str, body: Any = None) -> requests.Response:
    return requests.request(method, f"{sb.url}{CONTROL_PREFIX}{route}", json=body, timeout=TIMEOUT)


def fresh(sb: Sandbox, method: str, bid: str, timeout: float = TIMEOUT) -> requests.Response:
    """One request on a new connection (for faults that kill the connection)."""
    return requests.request(method, f"{sb.base_url}/query/batch/{bid}", timeout=timeout,
                            headers={"Authorization": f"Bearer {sb.api_key}"})


def envelope(resp: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text[:300]
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json()
    assert set(body) == {"meta", "error"}
    assert REQUEST_ID.match(body["meta"]["request_id"])
    assert body["error"]["code"] == code
    assert 0 < len(body["error"]["message"]) <= 255
    return body


# -- the endpoints -------------------------------------------------------------------------------
def test_create_get_status_cancel_round_trip(api: Api, sandbox: Sandbox) -> None:
    resp = api.create({"description": "round trip", "timeout_minutes": 10, "query_concurrency": 2,
                       "split_accounts_policy": "all", "split_dates_policy": "day",
                       "queries": [{"ds_id": "GA4", "ds_accounts": ["a1", "a2"]}, {"ds_id": "FB"}]})
    assert resp.status_code == 201 and resp.headers["Content-Type"] == "application/json"
    created = resp.json()["data"]
    bid = created["batch_id"]
    assert re.fullmatch(r"qrb_[0-9a-f]{12}", bid)
    assert created["@type"] == "query_batch"
    assert (created["status_code"], created["start_time"], created["end_time"], created["cancel_time"]) == \
        ("QUEUED", None, None, None)
    assert ISO.match(created["schedule_time"])
    assert (created["description"], created["timeout_minutes"], created["query_concurrency"],
            created["query_amount"], created["split_accounts_policy"], created["split_dates_policy"],
            created["query_output_format"], created["add_exclude_account_errors"],
            created["add_clean_data_types"]) == ("round trip", 10, 2, 2, "all", "day", "json", False, False)
    # The status link works as given.
    href = created["links"]["status"]["href"]
    assert href == f"{sandbox.base_url}/query/batch/{bid}/status"
    page = api.s.get(href, timeout=TIMEOUT).json()
    assert page["meta"]["paginate"] == {"offset": 0, "limit": 100, "total": 2}
    assert page["meta"]["progress"] == {"queued": 2, "running": 0, "success": 0, "failure": 0}
    assert [q["split_info"]["ds_accounts"] for q in page["data"]] == [["a1"], ["a2"]]
    # GET answers the same record; the server counts it.
    got = api.get(bid)
    assert got.status_code == 200 and got.json()["data"] == created
    assert known(sandbox, bid)["gets"] == 1
    cancelled = api.delete(bid)
    assert cancelled.status_code == 200 and cancelled.json()["data"]["status_code"] == "STOPPED"
    truth = known(sandbox, bid)
    assert truth["cancelled"] and truth["deletes"] == truth["cancels_applied"] == 1


@pytest.mark.parametrize("data, fragment", [
    (b"{oops", "JSON object"),
    (b"\xff\xfe\x00", "JSON object"),
    (b"[]", "JSON object"),
    (b"{}", "'queries'"),
    (b'{"queries": [{"ds_accounts": ["a"]}]}', "'ds_id'"),
    (b'{"queries": [{"ds_id": "x"}], "timeout_minutes": 4}', "timeout_minutes"),
    (b'{"queries": [{"ds_id": "x"}], "query_concurrency": 51}', "query_concurrency"),
    (b'{"queries": [{"ds_id": "x"}], "query_concurrency": true}', "query_concurrency"),
    (b'{"queries": [{"ds_id": "x"}], "split_dates_policy": "week"}', "split_dates_policy"),
    (b'{"queries": [{"ds_id": "x"}], "add_clean_data_types": "yes"}', "add_clean_data_types"),
    (b'{"queries": [{"ds_id": "x"}], "description": "' + b"d" * 256 + b'"}', "description"),
])
def test_create_rejects_bad_bodies_with_problem_json(api: Api, sandbox: Sandbox, data: bytes, fragment: str) -> None:
    resp = api.create(data=data)
    assert resp.status_code == 400
    assert resp.headers["Content-Type"] == "application/problem+json"
    body = resp.json()
    assert body["status"] == 400 and body["title"] == "Bad Request" and fragment in body["detail"]
    assert sandbox.batches() == {}


def test_create_accepts_the_bounds(api: Api, sandbox: Sandbox) -> None:
    extras: list[dict[str, Any]] = [{"timeout_minutes": 5}, {"timeout_minutes": 60}, {"query_concurrency": 1},
                                    {"query_concurrency": 50}, {"description": "d" * 255}]
    for extra in extras:
        assert api.create({"queries": [{"ds_id": "x"}], **extra}).status_code == 201, extra
    assert len(sandbox.batches()) == 5


# -- auth ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("auth", [None, "Bearer not-the-key", "Basic {key}", "Token {key}", "{key}", "Bearer ", "Bearer"])
def test_bad_credentials_get_401_and_change_nothing(sandbox: Sandbox, auth: str | None) -> None:
    bid = sandbox.create_batches(1)[0]
    api = Api(sandbox, key="" if auth is None else None,
              auth=None if auth is None else auth.format(key=sandbox.api_key))
    for resp in (api.delete(bid), api.get(bid), api.status(bid), api.create({"queries": [{"ds_id": "x"}]})):
        body = envelope(resp, 401, "UNAUTHORIZED")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
        assert body["error"]["description"]
        assert resp.headers["X-RateLimit-Remaining"] == resp.headers["X-RateLimit-Limit"] == "5000"
    api.close()
    truth = known(sandbox, bid)
    assert truth["status_code"] == "RUNNING" and truth["deletes"] == 0 and truth["gets"] == 0
    assert len(sandbox.batches()) == 1
    assert [e["status"] for e in sandbox.requests] == [401] * 4


def test_bearer_scheme_is_case_insensitive(sandbox: Sandbox) -> None:
    bid = sandbox.create_batches(1)[0]
    api = Api(sandbox, auth=f"bearer {sandbox.api_key}")
    assert api.get(bid).status_code == 200
    api.close()


def test_revoke_key_mid_run_and_keys_have_own_budgets() -> None:
    with own(extra_keys=["second-key"], hourly_limit=10) as (sb, api):
        bid = sb.create_batches(1)[0]
        assert api.get(bid).status_code == 200
        sb.revoke_key(sb.api_key)
        envelope(api.delete(bid), 401, "UNAUTHORIZED")
        assert known(sb, bid)["status_code"] == "RUNNING"
        other = Api(sb, "second-key")
        resp = other.get(bid)
        assert resp.status_code == 200 and resp.headers["X-RateLimit-Remaining"] == "9"
        sb.add_key(sb.api_key)
        resp = api.get(bid)
        assert resp.status_code == 200 and resp.headers["X-RateLimit-Remaining"] == "8"
        other.close()


# -- not found, not allowed ----------------------------------------------------------------------
def test_unknown_batch_is_404(api: Api) -> None:
    for resp in (api.get("qrb_ffffffffffff"), api.delete("qrb_ffffffffffff"), api.status("qrb_ffffffffffff")):
        body = envelope(resp, 404, "NOT_FOUND")
        assert body["error"]["message"] == "Batch not found" and "qrb_ffffffffffff" in body["error"]["description"]
    envelope(api.s.get(api.sb.base_url + "/query/other", timeout=TIMEOUT), 404, "NOT_FOUND")
    envelope(api.s.get(api.sb.base_url + "/query/batch/a/b/c", timeout=TIMEOUT), 404, "NOT_FOUND")


def test_wrong_method_is_405_with_allow(api: Api, sandbox: Sandbox) -> None:
    bid = sandbox.create_batches(1)[0]
    for method, url, allow in [("PATCH", api.url(bid), "GET, DELETE"), ("POST", api.url(bid), "GET, DELETE"),
                               ("GET", api.url(), "POST"), ("PUT", api.url(bid, status=True), "GET")]:
        resp = api.s.request(method, url, timeout=TIMEOUT)
        envelope(resp, 405, "METHOD_NOT_ALLOWED")
        assert resp.headers["Allow"] == allow
    assert known(sandbox, bid)["status_code"] == "RUNNING"


# -- cancel --------------------------------------------------------------------------------------
def test_cancel_ends_running_queries_and_starts_no_queued_one() -> None:
    with own(seed=3, failure_rate=0.0) as (sb, api):
        bid2 = sb.create_batches(1, "QUEUED", queries=8)[0]
        sb.store.get(bid2).concurrency = 2  # type: ignore[union-attr]
        sb.advance([bid2], 2)  # 2 succeeded, 2 running, 4 queued
        before = {q["schedule_id"]: q for q in api.status(bid2).json()["data"]}
        assert api.status(bid2).json()["meta"]["progress"] == {"queued": 4, "running": 2, "success": 2, "failure": 0}
        resp = api.delete(bid2)
        assert resp.status_code == 200
        rec = resp.json()["data"]
        assert rec["status_code"] == "STOPPED" and ISO.match(rec["cancel_time"]) and ISO.match(rec["end_time"])
        assert rec["end_time"] >= rec["cancel_time"] >= rec["start_time"]
        page = api.status(bid2).json()
        assert page["meta"]["status_code"] == "STOPPED"
        # Queued queries never start, running ones end as failures, successes stay.
        assert page["meta"]["progress"] == {"queued": 4, "running": 0, "success": 2, "failure": 2}
        assert page["meta"]["progress"] == known(sb, bid2)["progress"]
        for q in page["data"]:
            was = before[q["schedule_id"]]["status_code"]
            if was == "SUCCESS":  # results collected stay available
                assert q == before[q["schedule_id"]]
            elif was == "RUNNING":
                assert q["status_code"] == "FAILURE" and q["error_info"]["code"] == "QUERY_CANCELLED"
                assert q["result_info"] is None and q["query_end_time"] == rec["end_time"]
            else:
                assert q == before[q["schedule_id"]] and q["query_start_time"] is None
        sb.advance([bid2], 5)  # a stopped batch never moves again
        assert api.status(bid2).json()["meta"]["progress"] == page["meta"]["progress"]


def test_cancel_queued_batch_starts_none_of_its_queries(api: Api, sandbox: Sandbox) -> None:
    bid = sandbox.create_batches(1, "QUEUED", queries=3)[0]
    rec = api.delete(bid).json()["data"]
    assert rec["status_code"] == "STOPPED" and rec["cancel_time"] and rec["end_time"]
    page = api.status(bid).json()
    assert [(q["status_code"], q["query_start_time"], q["error_info"]) for q in page["data"]] == \
        [("QUEUED", None, None)] * 3
    assert page["meta"]["progress"] == {"queued": 3, "running": 0, "success": 0, "failure": 0}


@pytest.mark.sandbox(stop_delay=3600.0)
def test_a_cancel_waiting_for_its_stop_delay_starts_no_new_query(api: Api, sandbox: Sandbox) -> None:
    bid = sandbox.create_batches(1, "QUEUED", queries=7)[0]
    sandbox.advance([bid])  # 5 running, 2 queued
    assert api.delete(bid).json()["data"]["status_code"] == "RUNNING"  # the stop takes its delay
    sandbox.advance([bid], 3)  # the running ones finish; the queued ones must not start
    progress = api.status(bid).json()["meta"]["progress"]
    assert progress["queued"] == 2 and progress["running"] == 0 and progress["success"] + progress["failure"] == 5


def test_cancel_already_stopped_ok_mode_is_200_unchanged(api: Api, sandbox: Sandbox) -> None:
    done, cancelled = sandbox.create_batches(2)
    sandbox.set_status(done, "STOPPED")
    first = api.delete(cancelled).json()["data"]
    for bid, expected in [(done, api.get(done).json()["data"]), (cancelled, first)]:
        resp = api.delete(bid)
        assert resp.status_code == 200 and resp.json()["data"] == expected
    assert api.get(done).json()["data"]["cancel_time"] is None  # finished on its own, never cancelled
    assert known(sandbox, done)["deletes"] == 1 and known(sandbox, done)["cancels_applied"] == 0
    assert known(sandbox, cancelled)["deletes"] == 2 and known(sandbox, cancelled)["cancels_applied"] == 1


def test_cancel_already_stopped_conflict_mode_is_409() -> None:
    with own(already_stopped="conflict") as (sb, api):
        done, running = sb.create_batches(2)
        sb.set_status(done, "STOPPED")
        before = known(sb, done)
        body = envelope(api.delete(done), 409, "CONFLICT_ERROR")
        assert done in body["error"]["description"]
        after = known(sb, done)
        assert after["status_code"] == "STOPPED" and after["cancel_time"] is None
        assert after["cancels_applied"] == before["cancels_applied"] == 0
        assert api.delete(running).status_code == 200
        envelope(api.delete(running), 409, "CONFLICT_ERROR")
        # Switchable at run time.
        sb.set_progression(already_stopped="ok")
        assert api.delete(running).status_code == 200
        with pytest.raises(ValueError):
            sb.set_progression(already_stopped="maybe")


# -- progression ---------------------------------------------------------------------------------
def test_manual_progression_moves_only_when_told(api: Api, sandbox: Sandbox) -> None:
    bid = sandbox.create_batches(1, "QUEUED", queries=7)[0]
    assert api.get(bid).json()["data"]["status_code"] == "QUEUED"
    assert api.get(bid).json()["data"]["status_code"] == "QUEUED"  # nothing moves by itself
    sandbox.advance([bid])
    rec = api.get(bid).json()["data"]
    assert rec["status_code"] == "RUNNING" and ISO.match(rec["start_time"]) and rec["end_time"] is None
    progress = api.status(bid).json()["meta"]["progress"]
    assert progress == {"queued": 2, "running": 5, "success": 0, "failure": 0}  # query_concurrency 5
    steps = 1
    while api.get(bid).json()["data"]["status_code"] != "STOPPED":
        sandbox.advance([bid])
        steps += 1
        assert steps < 10
    rec = api.get(bid).json()["data"]
    assert rec["end_time"] and rec["cancel_time"] is None
    meta = api.status(bid).json()["meta"]
    assert meta["progress"]["success"] + meta["progress"]["failure"] == 7
    assert not known(sandbox, bid)["cancelled"]


def test_set_status(api: Api, sandbox: Sandbox) -> None:
    a, b = sandbox.create_batches(2, "QUEUED")
    sandbox.set_status(a, "RUNNING")
    sandbox.set_status(b, "STOPPED")
    assert api.get(a).json()["data"]["status_code"] == "RUNNING"
    rec = api.get(b).json()["data"]
    assert rec["status_code"] == "STOPPED" and rec["cancel_time"] is None and rec["end_time"]
    with pytest.raises(ValueError):
        sandbox.set_status(a, "DONE")
    with pytest.raises(ValueError):
        sandbox.create_batches(1, "SUCCESS")


def test_automatic_progression_with_tick() -> None:
    clock = FakeClock()
    with own(tick=0.05, clock=clock.now) as (sb, api):
        bid = sb.create_batches(1, "QUEUED", queries=3)[0]
        order = {"QUEUED": 0, "RUNNING": 1, "STOPPED": 2}
        seen = [api.get(bid).json()["data"]["status_code"]]
        for _ in range(100):  # 100 ticks: far more than three queries need
            if seen[-1] == "STOPPED":
                break
            clock.sleep(0.05)
            seen.append(api.get(bid).json()["data"]["status_code"])
        assert seen[-1] == "STOPPED", seen
        assert [order[s] for s in seen] == sorted(order[s] for s in seen)  # never goes back
        assert len(set(seen)) == 3  # it moved a step at a time, not at once
        assert not known(sb, bid)["cancelled"]


def test_stop_delay_answers_running_then_stops() -> None:
    clock = FakeClock()
    with own(stop_delay=0.3, already_stopped="conflict", clock=clock.now) as (sb, api):
        bid = sb.create_batches(1)[0]
        rec = api.delete(bid).json()["data"]
        assert rec["status_code"] == "RUNNING" and rec["cancel_time"] and rec["end_time"] is None
        assert known(sb, bid)["stop_pending"]
        again = api.delete(bid)  # still stopping: 200 (not 409), nothing applied twice
        assert again.status_code == 200 and again.json()["data"]["status_code"] == "RUNNING"
        assert known(sb, bid)["cancels_applied"] == 1
        clock.sleep(0.29)
        assert api.get(bid).json()["data"]["status_code"] == "RUNNING"  # not before the delay
        clock.sleep(0.02)
        rec = api.get(bid).json()["data"]
        assert rec["status_code"] == "STOPPED" and rec["end_time"] >= rec["cancel_time"]
        assert not known(sb, bid)["stop_pending"]
        assert {q["status_code"] for q in api.status(bid).json()["data"]} == {"FAILURE"}


# -- pagination ----------------------------------------------------------------------------------
def test_status_pagination(api: Api, sandbox: Sandbox) -> None:
    bid = sandbox.create_batches(1, queries=250)[0]
    default = api.status(bid).json()
    assert len(default["data"]) == 100
    assert default["meta"]["paginate"] == {"offset": 0, "limit": 100, "total": 250}
    ids: list[str] = []
    for offset in (0, 100, 200):
        page = api.status(bid, offset=offset, limit=100).json()
        assert page["meta"]["paginate"] == {"offset": offset, "limit": 100, "total": 250}
        ids += [q["schedule_id"] for q in page["data"]]
    assert len(ids) == 250 == len(set(ids))
    assert [q["schedule_id"] for q in api.status(bid, limit=1000).json()["data"]] == ids
    assert [q["schedule_id"] for q in api.status(bid, offset=249, limit=1).json()["data"]] == ids[-1:]
    assert api.status(bid, offset=250).json()["data"] == []
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "x"}, {"offset": "1e2"}):
        envelope(api.status(bid, **params), 400, "BAD_REQUEST")


# -- rate limits ---------------------------------------------------------------------------------
def test_hourly_budget_counts_down_refuses_then_resets() -> None:
    clock = FakeClock()
    with own(hourly_limit=5, budget_window=1.0, clock=clock.now) as (sb, api):
        bid = sb.create_batches(1)[0]
        remaining = []
        for _ in range(5):
            resp = api.get(bid)
            assert resp.status_code == 200 and resp.headers["X-RateLimit-Limit"] == "5"
            remaining.append(int(resp.headers["X-RateLimit-Remaining"]))
        assert remaining == [4, 3, 2, 1, 0]
        clock.sleep(0.9375)  # the budget window has not turned over (steps of 1/16 s are exact floats)
        for _ in range(2):  # a refused request costs nothing and changes nothing
            resp = api.delete(bid)
            body = envelope(resp, 429, "TOO_MANY_REQUESTS")
            assert "Hourly" in body["error"]["message"]
            assert resp.headers["X-RateLimit-Remaining"] == "0" and resp.headers["Retry-After"] == "1"
        assert known(sb, bid)["deletes"] == 0
        clock.sleep(0.0625)
        resp = api.delete(bid)
        assert resp.status_code == 200 and resp.headers["X-RateLimit-Remaining"] == "4"


def test_per_second_limit() -> None:
    clock = FakeClock()
    with own(per_second=3, clock=clock.now) as (sb, api):
        bid = sb.create_batches(1)[0]
        assert [api.get(bid).status_code for _ in range(3)] == [200, 200, 200]
        clock.sleep(0.9375)  # still within the second (steps of 1/16 s are exact floats)
        resp = api.get(bid)
        body = envelope(resp, 429, "TOO_MANY_REQUESTS")
        assert "per second" in body["error"]["message"]
        assert resp.headers["Retry-After"] == "1" and resp.headers["X-RateLimit-Remaining"] == "4997"
        clock.sleep(0.0625)
        resp = api.get(bid)
        assert resp.status_code == 200 and resp.headers["X-RateLimit-Remaining"] == "4996"


def test_limits_change_at_run_time(api: Api, sandbox: Sandbox) -> None:
    bid = sandbox.create_batches(1)[0]
    assert api.get(bid).headers["X-RateLimit-Limit"] == "5000"
    sandbox.set_limits(hourly_limit=2)
    resp = api.get(bid)
    assert resp.headers["X-RateLimit-Limit"] == "2" and resp.headers["X-RateLimit-Remaining"] == "0"
    assert api.get(bid).status_code == 429


def _server_end(client: socket.socket) -> socket.socket:
    """The sandbox's own socket for a connection this process opened to it (same process)."""
    me = client.getsockname()
    for obj in gc.get_objects():
        if isinstance(obj, socket.socket) and obj is not client:
            try:
                if obj.getpeername() == me:
                    return obj
            except OSError:
                continue
    raise AssertionError(f"no server socket has the peer {me}")


def test_keep_alive_requests_are_not_held_back() -> None:
    """Regression: without TCP_NODELAY each request on a kept-alive connection cost ~40 ms
    (Nagle's algorithm held the body until the client's delayed ACK). Checked on the server's
    end of the connection, not on the clock; the time 30 requests took is printed."""
    with own(per_second=1000) as (sb, api):
        bid = sb.create_batches(1)[0]
        conn = http.client.HTTPConnection(*sb.url.removeprefix("http://").rsplit(":", 1), timeout=TIMEOUT)
        try:
            t0 = time.monotonic()
            for _ in range(30):  # one kept-alive connection
                conn.request("GET", f"{API_PREFIX}/query/batch/{bid}", headers={"Authorization": f"Bearer {sb.api_key}"})
                resp = conn.getresponse()
                assert resp.status == 200 and resp.read()
            took = time.monotonic() - t0
            assert conn.sock is not None
            assert _server_end(conn.sock).getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            conn.close()
    print(f"\n30 requests on one kept-alive connection: {took * 1000:.0f} ms (Nagle would add ~1200 ms)")


def test_every_answer_has_rate_headers_and_a_unique_request_id(api: Api, sandbox: Sandbox) -> None:
    running, done = sandbox.create_batches(2)
    sandbox.set_status(done, "STOPPED")
    answers = [
        api.create({"queries": [{"ds_id": "x"}]}), api.get(running), api.status(running), api.delete(running),
        api.delete(done), api.get("qrb_000000000000"), api.status(running, limit=0),
        api.s.put(api.url(running), timeout=TIMEOUT), Api(sandbox, "nope").get(running),
        api.create(data=b"{"),
    ]
    ids = []
    for resp in answers:
        assert int(resp.headers["X-RateLimit-Limit"]) == 5000
        assert 0 <= int(resp.headers["X-RateLimit-Remaining"]) <= 5000
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        body = resp.json()
        if "meta" in body:
            ids.append(body["meta"]["request_id"])
    assert len(ids) == len(answers) - 1  # the bad create body is problem+json, without meta
    assert all(REQUEST_ID.match(i) for i in ids) and len(set(ids)) == len(ids)
    admitted = [int(r.headers["X-RateLimit-Remaining"]) for r in answers if r.status_code != 401]
    assert admitted == list(range(4999, 4999 - len(admitted), -1))


# -- the request log -----------------------------------------------------------------------------
def test_request_log_records_requests_but_never_the_key() -> None:
    secret = "sbx-SECRET-" + "k" * 24
    wrong = "WRONG-SECRET-" + "w" * 20
    with own(api_key=secret, faults=Faults(error_rate=0.5), seed=11) as (sb, api):
        bid = sb.create_batches(1)[0]
        for _ in range(6):
            api.get(bid)
        api.delete(bid)
        Api(sb, wrong).get(bid)
        log = sb.requests
        assert len(log) == 8
        assert [e["seq"] for e in log] == list(range(1, 9))
        assert [e["method"] for e in log] == ["GET"] * 6 + ["DELETE", "GET"]
        assert {e["path"] for e in log} == {f"{API_PREFIX}/query/batch/{bid}"}
        assert {e["batch_id"] for e in log} == {bid}
        assert [e["key"] for e in log] == [fingerprint(secret)] * 7 + [fingerprint(wrong)]
        assert log[-1]["status"] == 401
        faults = [e["fault"] for e in log]
        assert any(f and f.startswith("error_") for f in faults) and None in faults
        for e in log:
            assert e["status"] is not None and (e["fault"] is None) == (e["status"] in (200, 401))
        truth = sb.batches()
        control_log = control(sb, "GET", "/requests").text
        control_truth = control(sb, "GET", "/batches").text
        for text in (repr(log), str(log), json.dumps(log), repr(truth), str(truth), repr(sb),
                     control_log, control_truth):
            for key in (secret, wrong):
                assert key not in text
                assert key[:10] not in text
        fp = fingerprint(secret)
        assert fp is not None and len(fp) == 12 and fp in control_log


# -- faults --------------------------------------------------------------------------------------
def test_latency_and_jitter() -> None:
    with own(faults=Faults(latency=0.1, jitter=0.1)) as (sb, api):
        bid = sb.create_batches(1)[0]
        took = []
        for _ in range(5):
            t0 = time.monotonic()
            assert api.get(bid).status_code == 200
            took.append(time.monotonic() - t0)
        assert min(took) >= 0.1
        assert max(took) - min(took) > 0.005  # jitter varies the delay
        print(f"\nlatency 0.1 s + jitter 0.1 s: answers took {', '.join(f'{t:.3f}' for t in took)} s")
        sb.set_faults(latency=60, jitter=0)
        with pytest.raises(requests.Timeout):  # the new latency applies at once...
            fresh(sb, "GET", bid, timeout=0.5)
        sb.set_faults(latency=0)
        # ...and so does none: an answer within a timeout far shorter than the old latency
        # (a hang guard: the answer comes in milliseconds).
        assert fresh(sb, "GET", bid, timeout=30).status_code == 200


def test_error_rate_gives_500_502_503_without_applying() -> None:
    with own(faults=Faults(error_rate=1.0), per_second=1000, seed=5) as (sb, api):
        ids = sb.create_batches(30)
        seen: dict[int, requests.Response] = {}
        codes = {500: "INTERNAL_SERVER_ERROR", 502: "BAD_GATEWAY", 503: "SERVICE_UNAVAILABLE"}
        for bid in ids:
            resp = api.delete(bid)
            envelope(resp, resp.status_code, codes[resp.status_code])
            assert ("Retry-After" in resp.headers) is (resp.status_code == 503)
            seen.setdefault(resp.status_code, resp)
            if len(seen) == 3:
                break
        assert set(seen) == {500, 502, 503}
        assert seen[503].headers["Retry-After"] == "1"
        assert all(known(sb, b)["deletes"] == 0 and known(sb, b)["status_code"] == "RUNNING" for b in ids)
        assert {e["fault"] for e in sb.requests} == {"error_500", "error_502", "error_503"}


@pytest.mark.parametrize("retry_after", [True, False])
def test_throttle_rate(retry_after: bool) -> None:
    with own(faults=Faults(throttle_rate=1.0, throttle_retry_after=retry_after)) as (sb, api):
        bid = sb.create_batches(1)[0]
        resp = api.delete(bid)
        envelope(resp, 429, "TOO_MANY_REQUESTS")
        assert resp.headers.get("Retry-After") == ("1" if retry_after else None)
        assert known(sb, bid)["status_code"] == "RUNNING"
        assert sb.requests[-1]["fault"] == "throttle"


def test_html_rate_is_a_gateway_page() -> None:
    with own(faults=Faults(html_rate=1.0)) as (sb, api):
        bid = sb.create_batches(1)[0]
        resp = api.delete(bid)
        assert resp.status_code == 502 and resp.headers["Content-Type"].startswith("text/html")
        assert resp.text.startswith("<!DOCTYPE html>")
        with pytest.raises(ValueError):
            resp.json()
        assert resp.headers["X-RateLimit-Remaining"] == "4999"
        assert known(sb, bid)["status_code"] == "RUNNING" and sb.requests[-1]["fault"] == "html"


def test_reset_before_drops_connection_and_changes_nothing() -> None:
    with own(faults=Faults(reset_before_rate=1.0)) as (sb, api):
        bid = sb.create_batches(1)[0]
        with pytest.raises(requests.ConnectionError):
            fresh(sb, "DELETE", bid)
        truth = known(sb, bid)
        assert truth["status_code"] == "RUNNING" and truth["deletes"] == 0 and not truth["cancelled"]
        entry = sb.requests[-1]
        assert entry["fault"] == "reset_before" and entry["status"] is None and entry["remaining"] is None


def test_reset_after_applies_then_drops_connection() -> None:
    with own(faults=Faults(reset_after_rate=1.0)) as (sb, api):
        bid = sb.create_batches(1)[0]
        with pytest.raises(requests.ConnectionError):
            fresh(sb, "DELETE", bid)
        truth = known(sb, bid)
        assert truth["status_code"] == "STOPPED" and truth["cancelled"] and truth["cancels_applied"] == 1
        assert sb.requests[-1]["fault"] == "reset_after" and sb.requests[-1]["remaining"] == 4999


def test_truncate_sends_broken_json_after_applying() -> None:
    with own(faults=Faults(truncate_rate=1.0)) as (sb, api):
        bid = sb.create_batches(1)[0]
        resp = api.delete(bid)
        assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
        assert int(resp.headers["Content-Length"]) == len(resp.content) > 0
        with pytest.raises(ValueError):
            json.loads(resp.content)
        assert resp.text.startswith('{"meta"')
        assert known(sb, bid)["status_code"] == "STOPPED" and sb.requests[-1]["fault"] == "truncate"


def test_hang_outlasts_a_client_timeout() -> None:
    with own(faults=Faults(hang_rate=1.0, hang_seconds=60.0)) as (sb, api):
        bid = sb.create_batches(1)[0]
        t0 = time.monotonic()
        with pytest.raises(requests.Timeout):  # the server would answer after a minute
            fresh(sb, "GET", bid, timeout=0.5)
        assert time.monotonic() - t0 >= 0.45  # the client's timeout ended it, nothing sooner
        assert sb.requests[-1]["fault"] == "hang"
        sb.set_faults(hang_rate=0)
        assert fresh(sb, "GET", bid, timeout=0.5).status_code == 200


def test_problem_rate_renders_errors_as_problem_json() -> None:
    with own(faults=Faults(problem_rate=1.0)) as (sb, api):
        bid = sb.create_batches(1)[0]
        assert api.get(bid).headers["Content-Type"] == "application/json"  # successes unaffected
        resp = api.get("qrb_000000000000")
        assert resp.status_code == 404 and resp.headers["Content-Type"] == "application/problem+json"
        body = resp.json()
        assert body == {"type": "https://api.supermetrics.com/problems/404", "title": "Not Found", "status": 404,
                        "detail": "Batch not found", "instance": f"{API_PREFIX}/query/batch/qrb_000000000000"}
        resp = Api(sb, "").get(bid)
        assert resp.status_code == 401 and resp.headers["Content-Type"] == "application/problem+json"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_zero_rates_really_mean_off() -> None:
    rates = [f.name for f in fields(Faults) if f.name.endswith("_rate")]
    on: dict[str, Any] = {r: 0.5 for r in rates}
    off: dict[str, Any] = {r: 0 for r in rates}
    assert len(rates) == 8
    with own(per_second=1000, faults=Faults(**on, hang_seconds=0.01), seed=9) as (sb, api):
        bid = sb.create_batches(1)[0]
        sb.set_faults(**off)  # 0 turns each one off
        statuses = {api.get(bid).status_code for _ in range(300)}
        assert statuses == {200}
        log = sb.requests
        assert len(log) == 300 and {e["fault"] for e in log} == {None}
        assert {e["status"] for e in log} == {200}


def _fault_run(seed: int) -> tuple[list[str], list[tuple[Any, ...]]]:
    faults = Faults(error_rate=0.2, throttle_rate=0.15, html_rate=0.1, problem_rate=0.3, truncate_rate=0.1)
    with own(per_second=1000, faults=faults, seed=seed) as (sb, api):
        ids = sb.create_batches(3)
        seen = []
        for i in range(45):
            bid = ids[i % 3]
            resp = api.status(bid) if i % 5 == 0 else api.get(bid if i % 7 else "qrb_000000000000")
            seen.append((resp.status_code, resp.headers["Content-Type"], resp.headers.get("Retry-After")))
        return ids, [(e["seq"], e["status"], e["fault"]) + s for e, s in zip(sb.requests, seen, strict=False)]


def test_same_seed_same_fault_sequence() -> None:
    ids_a, run_a = _fault_run(7)
    ids_b, run_b = _fault_run(7)
    ids_c, run_c = _fault_run(8)
    assert ids_a == ids_b and run_a == run_b
    assert len({r[2] for r in run_a}) >= 4  # a real mix of faults happened
    assert ids_c != ids_a and run_c != run_a


def test_fault_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        Faults(error_rate=1.5)
    with pytest.raises(ValueError):
        Faults(latency=-1)
    with pytest.raises(ValueError):
        Faults().updated(eror_rate=0.1)


# -- the control API -----------------------------------------------------------------------------
def test_control_api_over_http() -> None:
    with own() as (sb, api):
        resp = control(sb, "POST", "/batches", {"count": 3, "status": "QUEUED", "queries": 2})
        assert resp.status_code == 201
        ids = resp.json()["batch_ids"]
        assert len(ids) == 3 and all(known(sb, i)["status_code"] == "QUEUED" for i in ids)
        listed = control(sb, "GET", "/batches").json()["data"]
        assert [b["batch_id"] for b in listed] == ids
        one = control(sb, "GET", f"/batches/{ids[0]}").json()["data"]
        assert one == known(sb, ids[0]) and one["progress"]["queued"] == 2
        assert control(sb, "GET", "/batches/qrb_nope").status_code == 404
        assert control(sb, "POST", "/advance", {"batch_ids": [ids[0]], "steps": 1}).json() == {"ok": True}
        assert api.get(ids[0]).json()["data"]["status_code"] == "RUNNING"
        assert api.get(ids[1]).json()["data"]["status_code"] == "QUEUED"
        # Faults.
        assert control(sb, "PUT", "/faults", {"error_rate": 1.0}).json()["error_rate"] == 1.0
        assert control(sb, "GET", "/faults").json()["error_rate"] == 1.0
        assert api.get(ids[0]).status_code in (500, 502, 503)
        assert control(sb, "PUT", "/faults", {"replace": True}).json() == Faults().to_dict()
        assert api.get(ids[0]).status_code == 200
        assert control(sb, "PUT", "/faults", {"error_rate": 2}).status_code == 400
        assert control(sb, "PUT", "/faults", {"bogus": 1}).status_code == 400
        # Limits.
        limits = control(sb, "PUT", "/limits", {"hourly_limit": 50, "per_second": 7}).json()
        assert limits == {"per_second": 7, "hourly_limit": 50, "budget_window": 3600.0, "budget_mode": "fixed"}
        assert api.get(ids[0]).headers["X-RateLimit-Limit"] == "50"
        assert control(sb, "PUT", "/limits", {"daily": 1}).status_code == 400
        # Progression.
        assert control(sb, "POST", "/progression", {"already_stopped": "conflict"}).status_code == 200
        sb.set_status(ids[2], "STOPPED")
        assert api.delete(ids[2]).status_code == 409
        # Keys.
        assert control(sb, "POST", "/keys/revoke", {"key": sb.api_key}).status_code == 200
        assert api.get(ids[0]).status_code == 401
        assert control(sb, "POST", "/keys/add", {"key": sb.api_key}).status_code == 200
        assert api.get(ids[0]).status_code == 200
        # The request log.
        log = control(sb, "GET", "/requests").json()["data"]
        assert log == sb.requests and len(log) == 8
        # Unknown routes and bad bodies.
        assert control(sb, "GET", "/nothing").status_code == 404
        assert requests.post(f"{sb.url}{CONTROL_PREFIX}/advance", data=b"[1]", timeout=TIMEOUT).status_code == 400
        # Reset forgets batches, the log and the limit windows; keeps settings.
        assert control(sb, "POST", "/reset").json() == {"ok": True}
        assert sb.batches() == {} and sb.requests == []
        assert control(sb, "GET", "/batches").json() == {"data": []}
        new = sb.create_batches(1)[0]
        resp = api.get(new)
        assert resp.headers["X-RateLimit-Remaining"] == "49"
        # Control calls are neither logged nor charged.
        assert len(sb.requests) == 1


def test_api_paths_never_reach_control(sandbox: Sandbox) -> None:
    bid = sandbox.create_batches(1)[0]
    host, port = sandbox.url.removeprefix("http://").rsplit(":", 1)
    targets = [
        f"{API_PREFIX}/_sandbox/reset",
        f"{API_PREFIX}/query/batch/_sandbox",
        f"{API_PREFIX}/query/_sandbox/reset",
        f"{API_PREFIX}/query/batch/..%2F..%2F..%2F_sandbox%2Freset",
        f"{API_PREFIX}/query/../../_sandbox/reset",
        "/query/batch/_sandbox/reset",
        f"{API_PREFIX}{CONTROL_PREFIX}/batches",
    ]
    for target in targets:
        for method in ("GET", "POST"):
            conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
            conn.request(method, target, body=b"{}", headers={"Authorization": f"Bearer {sandbox.api_key}"})
            resp = conn.getresponse()
            raw = resp.read()
            conn.close()
            assert resp.status in (404, 405), (method, target, resp.status)
            assert resp.getheader("X-RateLimit-Limit") == "5000", target  # an API answer, not control
            assert json.loads(raw)["error"]["code"] in ("NOT_FOUND", "METHOD_NOT_ALLOWED")
    assert sandbox.batch(bid) is not None  # no reset happened
    assert len(sandbox.requests) == 2 * len(targets)  # all went to the API and were logged


# -- where it listens ----------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "example.com", ""])
def test_refuses_non_loopback_host(host: str) -> None:
    with pytest.raises(ValueError, match="allow_remote"):
        Sandbox(host=host)


def test_allow_remote_permits_other_hosts() -> None:
    sb = Sandbox(host="0.0.0.0", allow_remote=True)  # constructed, not started: nothing listens
    assert repr(sb).startswith("<Sandbox stopped")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost"])
def test_loopback_hosts_serve(host: str) -> None:
    with Sandbox(host=host) as sb:
        bid = sb.create_batches(1)[0]
        assert Api(sb).get(bid).status_code == 200
        assert sb.url.startswith("http://127.0.0.")


def test_ipv6_loopback_serves() -> None:
    probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM) if socket.has_ipv6 else None
    try:
        if probe is None:
            raise OSError("no IPv6 support")
        probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"this machine cannot bind ::1 ({exc})")
    finally:
        if probe is not None:
            probe.close()
    with Sandbox(host="::1") as sb:  # regression: the server used to be IPv4-only
        assert sb.url.startswith("http://[::1]:")
        bid = sb.create_batches(1)[0]
        assert Api(sb).get(bid).status_code == 200


def test_sandbox_must_be_running_for_urls() -> None:
    sb = Sandbox()
    with pytest.raises(RuntimeError):
        sb.base_url
    with sb:
        assert sb.base_url.endswith(API_PREFIX)
    with pytest.raises(RuntimeError):
        sb.url


# -- isolation from the client -------------------------------------------------------------------
def test_sandbox_imports_nothing_from_the_client() -> None:
    """The sandbox shares no code with the smtoolkit client, so the two cannot share a bug."""
    pkg_dir = Path(sandbox_pkg.__file__).parent
    modules = sorted(pkg_dir.glob("*.py"))
    assert {m.name for m in modules} >= {"__init__.py", "_app.py", "_state.py", "_limits.py", "_faults.py", "_http.py"}
    offenders = []
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text("utf-8"), str(module))):
            if isinstance(node, ast.ImportFrom):
                if node.level >= 2:  # from .. import x: outside the sandbox package
                    offenders.append(f"{module.name}: from {'.' * node.level}{node.module or ''}")
                elif node.level == 0 and node.module and _is_outside(node.module):
                    offenders.append(f"{module.name}: from {node.module}")
            elif isinstance(node, ast.Import):
                offenders += [f"{module.name}: import {a.name}" for a in node.names if _is_outside(a.name)]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                    "import_module", "__import__"):
                offenders.append(f"{module.name}: dynamic import")
    assert offenders == []


def _is_outside(name: str) -> bool:
    return (name == "smtoolkit" or name.startswith("smtoolkit.")) and not (
        name == "smtoolkit.sandbox" or name.startswith("smtoolkit.sandbox."))


def test_isolation_check_catches_offenders() -> None:
    assert _is_outside("smtoolkit") and _is_outside("smtoolkit.client")
    assert not _is_outside("smtoolkit.sandbox._app") and not _is_outside("smtoolkitx")


def test_the_budget_window_and_mode_are_checked_over_the_control_api() -> None:
    import requests

    with Sandbox() as sb:
        for bad in ({"budget_mode": "weird"}, {"budget_window": -1}, {"budget_window": 0}):
            r = requests.post(sb.url + "/_sandbox/limits", json=bad, timeout=5)
            assert r.status_code == 400, bad
        r = requests.post(sb.url + "/_sandbox/limits", json={"budget_mode": "rolling", "budget_window": 5}, timeout=5)
        assert r.json()["budget_mode"] == "rolling" and r.json()["budget_window"] == 5.0
    with pytest.raises(ValueError, match="budget_mode"):
        Sandbox(budget_mode="hourly")
    with pytest.raises(ValueError, match="budget_window"):
        Sandbox(budget_window=0)


def test_a_rolling_window_gives_each_request_back_a_window_later() -> None:
    clock = FakeClock()
    with Sandbox(hourly_limit=3, budget_window=0.5, budget_mode="rolling", clock=clock.now) as sb:
        first = sb.limits.admit(sb.api_key)
        clock.sleep(0.25)  # steps of 1/16 s are exact floats
        sb.limits.admit(sb.api_key)
        third = sb.limits.admit(sb.api_key)
        refused = sb.limits.admit(sb.api_key)
        assert (first.remaining, third.remaining, refused.admitted, refused.reason) == (2, 0, False, "hourly")
        clock.sleep(0.1875)
        assert sb.limits.peek(sb.api_key) == (3, 0)  # not yet a window since the first
        clock.sleep(0.0625)  # the first request is a window old: one comes back, not three
        assert sb.limits.peek(sb.api_key) == (3, 1)
