"""cancel_batches / cancel_batch end to end over real HTTP against the sandbox (and a
scripted server for sequences the sandbox cannot produce)."""

from __future__ import annotations

import email.utils
import threading
import time
import warnings

import pandas as pd
import pytest

import smtoolkit as sm
from smtoolkit import Client, Outcome
from smtoolkit.frames import DTYPES
from smtoolkit.sandbox import Sandbox
from tests.helpers import FakeClock, fast_client, wait_for
from tests.scripted import Reply, Scripted, batch, envelope


def outcomes(report: pd.DataFrame) -> dict[str, str]:
    return dict(zip(report["batch_id"].astype(object), report["outcome"].astype(object), strict=False))


def max_in_any_second(times: list[float]) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


# -- the report ----------------------------------------------------------------------------

def test_report_matches_input_and_sandbox_truth(sandbox: Sandbox, client: Client) -> None:
    running = sandbox.create_batches(6, status="RUNNING")
    queued = sandbox.create_batches(3, status="QUEUED")
    done = sandbox.create_batches(2, status="STOPPED")
    ids = running + queued + done + ["qrb_doesnotexist", " " + running[0] + " ", "../etc", None, ""]
    df = pd.DataFrame({"batch_id": ids, "owner": [f"o{i}" for i in range(len(ids))]},
                      index=[f"r{i}" for i in range(len(ids))])
    before = df.copy(deep=True)

    report = sm.cancel_batches(df, client=client, progress=False)

    pd.testing.assert_frame_equal(df, before)  # the input is never modified
    assert list(report.index) == list(df.index)
    assert list(report["owner"]) == list(df["owner"])
    for name, dtype in DTYPES.items():
        assert str(report[name].dtype) == dtype, name
    got = list(report["outcome"])
    assert got[:9] == ["cancelled"] * 9
    assert got[9:11] == ["already_stopped"] * 2
    assert got[11] == "not_found"
    assert got[12] == "duplicate" and report["error_code"].iloc[12] == "DUPLICATE_BATCH_ID"
    assert got[13:] == ["invalid_id"] * 3
    assert set(report["error_code"].iloc[13:]) == {"INVALID_BATCH_ID"}

    truth = sandbox.batches()
    for row in report.itertuples():
        if row.outcome == "cancelled":
            assert truth[row.batch_id]["cancelled"] and truth[row.batch_id]["status_code"] == "STOPPED"
            assert row.cancel_time is not pd.NaT and row.http_status == 200 and row.attempts == 1
    stopped_by_run = {b for b, t in truth.items() if t["cancelled"]}
    assert stopped_by_run == set(running + queued)
    # Sent once each: the duplicate and the invalid IDs were never sent.
    deletes = [r for r in sandbox.requests if r["method"] == "DELETE"]
    assert len(deletes) == 12
    assert report.attrs["requests_sent"] == 12 and report.attrs["base_url"] == sandbox.base_url
    assert report.attrs["ratelimit_limit"] == 5000


def test_empty_input_gives_empty_report_with_columns(client: Client) -> None:
    report = sm.cancel_batches([], client=client, progress=False)
    assert len(report) == 0
    for name, dtype in DTYPES.items():
        assert str(report[name].dtype) == dtype


def test_series_and_list_inputs(sandbox: Sandbox, client: Client) -> None:
    ids = sandbox.create_batches(2)
    by_series = sm.cancel_batches(pd.Series(ids, name="id"), client=client, progress=False)
    assert list(by_series["id"]) == ids and set(by_series["outcome"]) == {"cancelled"}
    # A batch cancelled earlier still reads STOPPED with a cancel_time: by the documented rule
    # that is "cancelled" again (the API does not say who cancelled it).
    again = sm.cancel_batches(tuple(ids), client=client, progress=False)
    assert set(again["outcome"]) == {"cancelled"}


def test_summarize_and_export(tmp_path, sandbox: Sandbox, client: Client) -> None:
    ids = sandbox.create_batches(3)
    df = pd.DataFrame({"batch_id": ids + ["nope", "=cmd|' /C calc'!A0"], "note": ["+1", "@x", "ok", "-2", "\tt"]})
    report = sm.cancel_batches(df, client=client, progress=False)
    summary = sm.summarize(report)
    assert summary.loc["cancelled", "count"] == 3
    assert summary.loc["not_found", "count"] == 1 and summary.loc["invalid_id", "count"] == 1
    assert summary["count"].sum() == len(report)
    path = sm.export_csv(report, tmp_path / "report.csv")
    text = path.read_text(encoding="utf-8")
    back = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert len(back) == 5
    assert back["note"].tolist() == ["'+1", "'@x", "ok", "'-2", "'\tt"]
    assert back["batch_id"].iloc[4].startswith("'=")
    assert back["cancel_time"].iloc[0].endswith("Z") and "T" in back["cancel_time"].iloc[0]
    assert sandbox.api_key not in text


# -- outcomes the sandbox produces ----------------------------------------------------------

def test_already_stopped_by_409(sandbox: Sandbox, client: Client) -> None:
    sandbox.set_progression(already_stopped="conflict")
    ids = sandbox.create_batches(2, status="STOPPED")
    report = sm.cancel_batches(ids, client=client, progress=False)
    assert list(report["outcome"]) == ["already_stopped"] * 2
    assert list(report["http_status"]) == [409, 409]
    assert list(report["error_code"]) == ["CONFLICT_ERROR"] * 2


def test_stopping_when_the_stop_takes_time(sandbox: Sandbox, client: Client) -> None:
    sandbox.set_progression(stop_delay=30)
    ids = sandbox.create_batches(2)
    report = sm.cancel_batches(ids, client=client, progress=False)
    assert list(report["outcome"]) == ["stopping"] * 2
    assert set(report["status_code"]) == {"RUNNING"}


def test_dry_run_sends_no_delete(sandbox: Sandbox, client: Client) -> None:
    running = sandbox.create_batches(3)
    done = sandbox.create_batches(1, status="STOPPED")
    report = sm.cancel_batches(running + done + ["qrb_missing", "bad id"], client=client, dry_run=True,
                               progress=False)
    assert list(report["outcome"]) == ["would_cancel"] * 3 + ["already_stopped", "not_found", "invalid_id"]
    assert not [r for r in sandbox.requests if r["method"] != "GET"]
    assert all(not t["cancelled"] for t in sandbox.batches().values())
    assert report.attrs["dry_run"] is True


def test_unauthorized_stops_the_run_after_at_most_workers_requests(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(500)
    with fast_client(sandbox, api_key="wrong-key") as c, pytest.warns(UserWarning, match="unauthorized"):
        report = sm.cancel_batches(ids, client=c, workers=4, progress=False)
    sent = len(sandbox.requests)
    assert 1 <= sent <= 4
    counts = report["outcome"].value_counts()
    assert counts["unauthorized"] == sent
    assert counts["skipped"] == 500 - sent
    assert set(report.loc[report.outcome == "skipped", "error_code"]) == {"SKIPPED_AUTH_FAILED"}
    assert not any(t["cancelled"] for t in sandbox.batches().values())


def test_key_revoked_mid_run(sandbox: Sandbox, client: Client) -> None:
    ids = sandbox.create_batches(80)
    done: list[str] = []

    import threading

    def revoke_later() -> None:
        wait_for(lambda: len([r for r in sandbox.requests if r["status"] == 200]) >= 20, "20 cancels")
        sandbox.revoke_key(sandbox.api_key)
        done.append("revoked")

    t = threading.Thread(target=revoke_later, daemon=True)
    t.start()
    with pytest.warns(UserWarning):
        report = sm.cancel_batches(ids, client=client, workers=4, progress=False)
    t.join(5)
    truth = sandbox.batches()
    counts = report["outcome"].value_counts()
    assert counts.get("cancelled", 0) >= 20 and counts.get("unauthorized", 0) >= 1
    assert counts.get("skipped", 0) > 0
    first_401 = min(r["seq"] for r in sandbox.requests if r["status"] == 401)
    after = [r for r in sandbox.requests if r["seq"] > first_401]
    assert len(after) <= 3  # only requests already in flight
    for row in report.itertuples():
        assert (row.outcome == "cancelled") == truth[row.batch_id]["cancelled"]


def test_network_errors_are_reported_and_never_mislabel_a_stopped_batch(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(4)
    sandbox.set_faults(reset_before_rate=1.0)
    with fast_client(sandbox, max_retries=2) as c:
        report = sm.cancel_batches(ids, client=c, progress=False)
    assert set(report["outcome"]) == {"network_error"}
    assert set(report["error_code"]) == {"NETWORK_ERROR"}
    assert report["error_message"].str.contains("reset").all()
    assert not any(t["cancelled"] for t in sandbox.batches().values())


def test_every_answer_lost_after_apply_leaves_network_error_not_a_claim(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(6)
    sandbox.set_faults(reset_after_rate=1.0)  # every answer is lost, including the GET that verifies
    with fast_client(sandbox, max_retries=1) as c:
        report = sm.cancel_batches(ids, client=c, progress=False)
    truth = sandbox.batches()
    assert all(truth[i]["cancelled"] for i in ids)
    # Every answer was lost, so the client cannot know; it must not claim the batch was not stopped.
    assert set(report["outcome"]) == {"network_error"}


def test_lost_answer_is_settled_by_a_get(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(30)
    sandbox.set_faults(reset_after_rate=0.5)
    with fast_client(sandbox, max_retries=3) as c:
        report = sm.cancel_batches(ids, client=c, progress=False)
    truth = sandbox.batches()
    for row in report.itertuples():
        assert truth[row.batch_id]["cancelled"]
        if row.outcome != "network_error":
            assert row.outcome in ("cancelled", "already_stopped")
    assert (report["outcome"] == "cancelled").sum() >= 20


def test_server_errors_after_retries(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(3)
    sandbox.set_faults(error_rate=1.0)
    with fast_client(sandbox, max_retries=2) as c:
        report = sm.cancel_batches(ids, client=c, progress=False)
    assert set(report["outcome"]) == {"server_error"}
    assert set(report["attempts"]) == {6}  # 3 DELETEs + 3 verifying GETs (VERIFY_TRIES)
    assert report["error_code"].isin(["INTERNAL_SERVER_ERROR", "BAD_GATEWAY", "SERVICE_UNAVAILABLE"]).all()


def test_transient_errors_are_retried_to_success(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(40)
    sandbox.set_faults(error_rate=0.3, html_rate=0.1, truncate_rate=0.1)
    with fast_client(sandbox, max_retries=8) as c:
        report = sm.cancel_batches(ids, client=c, progress=False)
    truth = sandbox.batches()
    assert set(report["outcome"]) <= {"cancelled", "already_stopped"}
    assert all(truth[i]["cancelled"] for i in ids)
    assert report["attempts"].max() > 1


def test_rate_limited_after_retries(sandbox: Sandbox) -> None:
    ids = sandbox.create_batches(2)
    sandbox.set_faults(throttle_rate=1.0, throttle_retry_after=False)
    with fast_client(sandbox, max_retries=2, backoff_base=0.01, backoff_cap=0.05) as c:
        report = sm.cancel_batches(ids, client=c, workers=1, progress=False)
    assert set(report["outcome"]) == {"rate_limited"}
    assert set(report["error_code"]) == {"TOO_MANY_REQUESTS"}


def test_eight_workers_never_exceed_max_rps(sandbox: Sandbox) -> None:
    sandbox.set_limits(per_second=1000)  # the client alone must keep the pace
    ids = sandbox.create_batches(75)
    with fast_client(sandbox, max_rps=25) as c:
        started = time.monotonic()
        report = sm.cancel_batches(ids, client=c, workers=8, progress=False)
        took = time.monotonic() - started
    times = [r["time"] for r in sandbox.requests]
    assert len(times) == 75 and set(report["outcome"]) == {"cancelled"}
    assert max_in_any_second(times) <= 25
    assert took >= 74 / 25  # evenly spaced, not bursty


def test_server_limit_below_max_rps_adapts(sandbox: Sandbox) -> None:
    sandbox.set_limits(per_second=8)
    ids = sandbox.create_batches(60)
    with fast_client(sandbox, max_rps=20) as c:
        report = sm.cancel_batches(ids, client=c, workers=4, progress=False)
    assert set(report["outcome"]) == {"cancelled"}
    throttled = [r for r in sandbox.requests if r["status"] == 429]
    # It learns the server's limit instead of hammering: a handful of 429s, not one per row.
    assert len(throttled) <= 8
    assert report.attrs["throttled"] == len(throttled)


def test_reserve_is_kept(sandbox: Sandbox) -> None:
    sandbox.set_limits(hourly_limit=60)
    ids = sandbox.create_batches(100)
    with fast_client(sandbox, reserve=15) as c, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = sm.cancel_batches(ids, client=c, progress=False)
    admitted = [r for r in sandbox.requests if r["remaining"] is not None and r["status"] != 429]
    assert min(r["remaining"] for r in admitted) >= 15
    assert len(sandbox.requests) <= 45
    counts = report["outcome"].value_counts()
    assert counts["cancelled"] == len([r for r in sandbox.requests if r["status"] == 200])
    assert counts["skipped"] == 100 - counts["cancelled"]
    assert set(report.loc[report.outcome == "skipped", "error_code"]) == {"BUDGET_RESERVE"}
    texts = " ".join(str(w.message) for w in caught)
    assert "hourly budget allows" in texts and "budget reserve" in texts


def test_default_reserve_is_ten_percent(sandbox: Sandbox) -> None:
    sandbox.set_limits(hourly_limit=40)
    ids = sandbox.create_batches(50)
    with fast_client(sandbox) as c, pytest.warns(UserWarning):
        report = sm.cancel_batches(ids, client=c, progress=False)
    assert (report["outcome"] == "cancelled").sum() == 36
    assert report.attrs["reserve"] == 4 and report.attrs["ratelimit_remaining"] == 4


def test_cancel_batch_single(sandbox: Sandbox, client: Client) -> None:
    (bid,) = sandbox.create_batches(1)
    r = sm.cancel_batch(bid, client=client)
    assert r.outcome is Outcome.CANCELLED and r.status_code == "STOPPED" and r.request_id
    assert sm.cancel_batch("a/b", client=client).outcome is Outcome.INVALID_ID
    (other,) = sandbox.create_batches(1, status="STOPPED")
    assert sm.cancel_batch(other, api_key=sandbox.api_key, base_url=sandbox.base_url).outcome is Outcome.ALREADY_STOPPED


# -- sequences only a scripted server produces ----------------------------------------------

def test_forbidden_and_client_error() -> None:
    def respond(method: str, path: str) -> Reply:
        if path.endswith("/qrb_forbidden"):
            return Reply(403, envelope("PERMISSION_ERROR"))
        if path.endswith("/qrb_unprocessable"):
            return Reply(422, {"type": "about:blank", "title": "Unprocessable", "status": 422, "detail": "nope"},
                         content_type="application/problem+json")
        return Reply(200, batch(path.rsplit("/", 1)[1]))

    with Scripted(responder=respond) as srv, fast_client(srv) as c:
        report = sm.cancel_batches(["qrb_unprocessable", "qrb_ok", "qrb_forbidden"], client=c, workers=1,
                                   progress=False, stop_on_auth_error=False)
        got = outcomes(report)
        assert got == {"qrb_unprocessable": "client_error", "qrb_ok": "cancelled", "qrb_forbidden": "forbidden"}
        assert report.set_index("batch_id").loc["qrb_unprocessable", "error_description"] == "nope"
        assert report.set_index("batch_id").loc["qrb_forbidden", "error_code"] == "PERMISSION_ERROR"
        assert len(srv.log) == 3  # 4xx are never retried


def test_retry_after_seconds_is_honoured() -> None:
    clock = FakeClock()
    replies = [Reply(429, envelope("TOO_MANY_REQUESTS"), {"Retry-After": "7"}), Reply(200, batch("qrb_a"))]
    with Scripted(replies) as srv, fast_client(srv, clock=clock.now, sleep=clock.sleep) as c:
        r = c.cancel("qrb_a")
    assert r.outcome is Outcome.CANCELLED and r.attempts == 2 and len(srv.log) == 2
    # The whole wait is the server's 7 s (plus at most 1 s of jitter), on the client's own clock.
    assert 7.0 <= sum(clock.slept) <= 8.0 + 0.1
    assert 7.0 <= r.elapsed_s <= 8.1


def test_retry_after_http_date_is_honoured() -> None:
    clock = FakeClock()
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    replies = [Reply(503, envelope("SERVICE_UNAVAILABLE"), {"Retry-After": when}), Reply(200, batch("qrb_a"))]
    with Scripted(replies) as srv, fast_client(srv, clock=clock.now, sleep=clock.sleep) as c:
        r = c.cancel("qrb_a")
    assert r.outcome is Outcome.CANCELLED and len(srv.log) == 2
    assert 28.0 <= sum(clock.slept) <= 31.0 + 1.0  # an HTTP-date has whole seconds


def test_a_retry_after_beyond_the_row_deadline_gives_up_at_once() -> None:
    clock = FakeClock()
    replies = [Reply(503, envelope("SERVICE_UNAVAILABLE"), {"Retry-After": "120"})]
    with Scripted(replies) as srv, fast_client(srv, clock=clock.now, sleep=clock.sleep, row_deadline=60) as c:
        r = c.cancel("qrb_a")
    # No 120 s wait inside a 60 s row: the DELETE gives up, and the verification GETs (which
    # would also wait) are refused by the same deadline only once it has passed.
    assert r.outcome is Outcome.SERVER_ERROR and r.error_description is not None
    assert "row_deadline" in r.error_description and sum(clock.slept) <= 60.0
    assert [e["method"] for e in srv.log][0] == "DELETE"


def test_a_429_pauses_the_whole_pool() -> None:
    first = {"done": False}

    def respond(method: str, path: str) -> Reply:
        if not first["done"]:
            first["done"] = True
            return Reply(429, envelope("TOO_MANY_REQUESTS"), {"Retry-After": "1"})
        return Reply(200, batch(path.rsplit("/", 1)[1]))

    with Scripted(responder=respond) as srv, fast_client(srv, max_rps=50) as c:
        report = sm.cancel_batches([f"qrb_{i}" for i in range(12)], client=c, workers=4, progress=False)
    assert set(report["outcome"]) == {"cancelled"}
    t429 = srv.log[0]["time"]
    # Requests already sent may complete; nothing new starts within the pause.
    later = [e["time"] - t429 for e in srv.log[1:]]
    early = [g for g in later if g < 0.9]
    assert len(early) <= 3
    assert report.attrs["throttled"] == 1


def test_unreadable_success_body_is_verified() -> None:
    replies = [Reply(200, b'{"meta": {"request_id": "x"}, "data": {"@type": "que'),
               Reply(200, batch("qrb_a"))]
    with Scripted(replies) as srv, fast_client(srv) as c:
        r = c.cancel("qrb_a")
    assert r.outcome is Outcome.CANCELLED
    assert [e["method"] for e in srv.log] == ["DELETE", "DELETE"]


def test_unknown_batch_status_is_not_called_cancelled() -> None:
    with Scripted([Reply(200, batch("qrb_a", status="PAUSED", cancel_time=None))]) as srv, fast_client(srv) as c:
        r = c.cancel("qrb_a")
    assert r.outcome is Outcome.STOPPING and r.error_code == "UNKNOWN_STATUS" and r.status_code == "PAUSED"


# -- bad input and configuration -------------------------------------------------------------

def test_clear_errors_for_bad_input(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(sm.InputError, match="no column 'batch_id'"):
        sm.cancel_batches(pd.DataFrame({"id": ["a"]}), client=client, progress=False)
    with pytest.raises(sm.InputError, match="cancel_batch"):
        sm.cancel_batches("qrb_a", client=client, progress=False)
    with pytest.raises(sm.InputError, match="workers"):
        sm.cancel_batches(["a"], client=client, workers=0, progress=False)
    with pytest.raises(sm.ConfigError, match="either"):
        sm.cancel_batches(["a"], client=client, max_rps=3, progress=False)
    monkeypatch.delenv("SUPERMETRICS_API_KEY", raising=False)
    with pytest.raises(sm.ConfigError, match="SUPERMETRICS_API_KEY"):
        Client()
    with pytest.raises(sm.ConfigError, match="plain http"):
        Client(api_key="k", base_url="http://api.example.com/enterprise/v2")
    with pytest.raises(sm.ConfigError, match="user name or password"):
        Client(api_key="k", base_url="https://u:p@api.example.com/")


def test_api_key_from_environment(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERMETRICS_API_KEY", sandbox.api_key)
    (bid,) = sandbox.create_batches(1)
    assert sm.cancel_batch(bid, base_url=sandbox.base_url).outcome is Outcome.CANCELLED


def test_ids_never_reach_another_path(sandbox: Sandbox, client: Client) -> None:
    nasty = ["a/../b", "..", ".", "x?y=1", "x#y", "%2e%2e", "q\u00e9", "a b", "a\nb", "x" * 300]
    report = sm.cancel_batches(nasty, client=client, progress=False)
    assert set(report["outcome"]) == {"invalid_id"}
    assert sandbox.requests == []
    r = client.cancel("ok.id~-_")
    assert r.outcome is Outcome.NOT_FOUND
    assert sandbox.requests[-1]["path"] == "/enterprise/v2/query/batch/ok.id~-_"


def test_key_is_never_in_reprs_reports_or_errors(sandbox: Sandbox, client: Client, tmp_path) -> None:
    ids = sandbox.create_batches(2)
    report = sm.cancel_batches(ids + ["nope", "bad/"], client=client, progress=False)
    path = sm.export_csv(report, tmp_path / "r.csv")
    key = sandbox.api_key
    assert key not in repr(client) and key not in str(client.__dict__.get("_auth"))
    assert key not in report.to_csv() and key not in repr(report.attrs) and key not in path.read_text()
    assert key not in repr(sandbox) and key not in repr(sandbox.requests)


@pytest.mark.sandbox(per_second=25)
def test_two_clients_side_by_side_keep_one_pace(sandbox: Sandbox) -> None:
    """Two runs at once, each with its own client at 20/s, against a server allowing 25/s: the
    server's window is shared (per licence and IP), so together they keep to 20/s and see no 429."""
    ids = {"a": sandbox.create_batches(60), "b": sandbox.create_batches(60)}
    reports: dict[str, pd.DataFrame] = {}
    go = threading.Barrier(2)

    def run(name: str) -> None:
        go.wait()
        reports[name] = sm.cancel_batches(ids[name], api_key=sandbox.api_key, base_url=sandbox.base_url,
                                          progress=False)

    threads = [threading.Thread(target=run, args=(n,)) for n in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(set(reports[n]["outcome"]) == {"cancelled"} for n in ids)
    assert [r for r in sandbox.requests if r["status"] == 429] == []
    assert sum(reports[n].attrs["requests_sent"] for n in ids) == len(sandbox.requests) == 120
