"""The fault matrix: `cancel_batches` over N batches with 8 workers against the sandbox in
every fault mode it can produce, one mode at a time and all of them at once, checked row by
row against the sandbox's own truth and request log.

Every mode runs at a small N by default (the whole file stays well under a minute and a half)
and again at N=2000 under `-m slow`. Each mode has its own seed (sandbox faults, client
jitter, the input's shuffle), so a failure reproduces; its message names the mode, the seed
and the offending rows with the requests the sandbox saw for them.

The input is deliberately mixed: live batches (RUNNING and QUEUED), batches that had already
stopped on their own, well-formed IDs the server does not know, duplicates, invalid IDs, a
non-default index and an extra column, shuffled.

What must hold in every mode:

- exactly one report row per input row, same index, same order, input columns kept;
- a batch the sandbox shows as cancelled is reported cancelled/already_stopped/stopping, never
  a failure, unless no answer about it ever reached the client intact (every answer after
  the request that applied it was lost): then nobody could know, and the row must be a
  network/server/rate-limit failure that says so;
- a row reported `cancelled` is cancelled in the sandbox;
- a row that did not end fine carries an error_code and an error_message saying why;
- with the key revoked mid-run: 401 rows were not cancelled by that answer, unsent rows are
  skipped/SKIPPED_AUTH_FAILED and really were not sent, and after the first 401 (by the
  sandbox's arrival order) at most workers-1 requests arrived: those already in flight.
"""

from __future__ import annotations

import random
import threading
import time
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pytest

import smtoolkit as sm
from smtoolkit import Client
from smtoolkit.sandbox import Sandbox

WORKERS = 8
RPS = 400  # the sandbox's per-second limit and the client's max_rps
SMALL_N = 150
LARGE_N = 2000
CLIENT_TIMEOUT = 1.0
HANG_SECONDS = 2.5  # longer than CLIENT_TIMEOUT: the client gives up, the server applied it
STORM_RATE = 0.7  # share of requests throttled while a 429 storm blows

FINE = {"cancelled", "already_stopped", "not_found", "duplicate", "would_cancel"}
STOPPED_FINE = {"cancelled", "already_stopped", "stopping"}
FAILURES = {"network_error", "server_error", "rate_limited"}
# Sandbox faults after which the request was applied but its answer never reached the client
# intact (hang: slower than the client's timeout).
APPLIED_BUT_LOST = {"reset_after", "truncate", "hang"}
# How the sandbox's log names each fault setting (problem_rate only changes the body's shape).
FAULT_LABELS = {"error_rate": "error", "throttle_rate": "throttle", "html_rate": "html",
                "reset_before_rate": "reset_before", "reset_after_rate": "reset_after",
                "truncate_rate": "truncate", "hang_rate": "hang"}


@dataclass(frozen=True)
class Mode:
    name: str
    faults: dict[str, Any] = field(default_factory=dict)
    already_stopped: str = "conflict"  # the sandbox's answer to cancelling a STOPPED batch
    storms: tuple[float, ...] = ()  # 429 storms start once this share of N requests arrived
    storm_seconds: float = 0.0
    storm_retry_after: bool = True
    revoke_at: float | None = None  # revoke the key once this share of N requests arrived

    @property
    def seed(self) -> int:
        return zlib.crc32(self.name.encode()) % 100_000


MIX = dict(latency=0.002, jitter=0.01, error_rate=0.04, html_rate=0.03, reset_before_rate=0.03,
           reset_after_rate=0.03, truncate_rate=0.03, hang_rate=0.01, hang_seconds=HANG_SECONDS, problem_rate=0.5)

MODES = [
    Mode("5xx", dict(error_rate=0.25)),
    # A storm longer than Retry-After (1 s): the pool pauses, comes back into the storm, pauses again.
    Mode("429_storm_retry_after", storms=(0.25, 0.6), storm_seconds=1.5, storm_retry_after=True),
    Mode("429_storm_no_retry_after", storms=(0.25, 0.6), storm_seconds=0.3, storm_retry_after=False),
    Mode("reset_before", dict(reset_before_rate=0.2)),
    Mode("reset_after", dict(reset_after_rate=0.2), already_stopped="ok"),
    Mode("reset_after_conflict", dict(reset_after_rate=0.2), already_stopped="conflict"),
    Mode("hang", dict(hang_rate=0.02, hang_seconds=HANG_SECONDS), already_stopped="ok"),
    Mode("truncate", dict(truncate_rate=0.2)),
    Mode("html", dict(html_rate=0.2)),
    Mode("problem_json", dict(problem_rate=1.0, error_rate=0.15)),
    # Latency keeps several requests in flight when the key dies, so the in-flight bound is tested.
    Mode("revoked_key", dict(latency=0.02, jitter=0.03), revoke_at=1 / 3),
    Mode("mix", MIX, storms=(0.5,), storm_seconds=0.3, storm_retry_after=False),
    Mode("mix_revoked_key", MIX, storms=(0.2,), storm_seconds=1.2, revoke_at=1 / 3),
]


# -- the input ----------------------------------------------------------------------------------
@dataclass
class Case:
    """One run's input and what each row is."""

    frame: pd.DataFrame
    kind: dict[Any, str]  # index label -> live | prestopped | unknown | invalid | duplicate


INVALID: list[Any] = ["bad id", "a/b", "", None, "..", "x" * 300, "qrb_é", float("nan")]


def build_input(sb: Sandbox, n: int, rng: random.Random) -> Case:
    n_invalid = max(len(INVALID), n // 100)
    n_dup = max(2, n // 50)
    n_unknown = max(3, n * 3 // 100)
    n_pre = max(3, n * 5 // 100)
    n_live = n - n_invalid - n_dup - n_unknown - n_pre
    running = sb.create_batches(n_live - n_live // 5, status="RUNNING")
    queued = sb.create_batches(n_live // 5, status="QUEUED")
    pre = sb.create_batches(n_pre, status="STOPPED")  # finished on their own, never cancelled
    live = running + queued
    unknown = [f"qrb_unknown{rng.getrandbits(40):010x}" for _ in range(n_unknown)]
    rows: list[tuple[Any, str]] = (
        [(b, "live") for b in live] + [(b, "prestopped") for b in pre] + [(b, "unknown") for b in unknown]
        + [(INVALID[i % len(INVALID)], "invalid") for i in range(n_invalid)]
    )
    rng.shuffle(rows)
    # Duplicates go after their first occurrence, some with blanks that are stripped.
    for i in range(n_dup):
        pos = rng.randrange(len(rows) // 2, len(rows))
        first = rng.choice([r for r in rows[:pos] if r[1] == "live"])[0]
        rows.insert(pos, (f"  {first}\t" if i % 2 else first, "duplicate"))
    assert len(rows) == n
    labels = [f"r{i:05d}" for i in rng.sample(range(10 * n), n)]  # unsorted, non-default index
    frame = pd.DataFrame({"batch_id": [r[0] for r in rows], "row_no": range(n)},
                         index=pd.Index(labels, name="label"))
    return Case(frame, {label: r[1] for label, r in zip(labels, rows, strict=False)})


# -- running one mode ---------------------------------------------------------------------------
@dataclass
class Run:
    mode: Mode
    n: int
    case: Case
    report: pd.DataFrame
    truth: dict[str, dict[str, Any]]
    log: list[dict[str, Any]]
    warnings: list[str]
    seconds: float
    revoked_at_seq: int | None

    def by_batch(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for e in self.log:
            out.setdefault(e["batch_id"], []).append(e)
        return out


def _controller(sb: Sandbox, mode: Mode, n: int, done: threading.Event, revoked: list[int]) -> None:
    """Blows the 429 storms and revokes the key when the run has got that far."""
    events: list[tuple[float, str]] = [(f, "storm") for f in mode.storms]
    if mode.revoke_at is not None:
        events.append((mode.revoke_at, "revoke"))
    for share, what in sorted(events):
        while len(sb.requests) < share * n:
            if done.wait(0.005):
                return
        if what == "revoke":
            sb.revoke_key(sb.api_key)
            revoked.append(len(sb.requests))
        else:
            sb.set_faults(throttle_rate=STORM_RATE)
            done.wait(mode.storm_seconds)
            sb.set_faults(throttle_rate=0.0)


def run_mode(mode: Mode, n: int) -> Run:
    rng = random.Random(mode.seed)
    with Sandbox(seed=mode.seed, per_second=RPS, hourly_limit=1_000_000,
                 already_stopped=mode.already_stopped) as sb:
        case = build_input(sb, n, rng)
        sb.set_faults(**mode.faults, throttle_retry_after=mode.storm_retry_after)
        done = threading.Event()
        revoked: list[int] = []
        ctl = threading.Thread(target=_controller, args=(sb, mode, n, done, revoked), daemon=True)
        with Client(api_key=sb.api_key, base_url=sb.base_url, timeout=CLIENT_TIMEOUT, max_rps=RPS,
                    backoff_base=0.05, backoff_cap=0.3, seed=mode.seed) as client, \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            started = time.monotonic()
            ctl.start()
            try:
                report = sm.cancel_batches(case.frame, client=client, workers=WORKERS, progress=False)
            finally:
                done.set()
                ctl.join(5)
            seconds = time.monotonic() - started
        sb.set_faults(throttle_rate=0.0)
        return Run(mode, n, case, report, sb.batches(), sb.requests,
                   [str(w.message) for w in caught if issubclass(w.category, UserWarning)],
                   seconds, revoked[0] if revoked else None)


# -- the checks ---------------------------------------------------------------------------------
def _requests_text(entries: list[dict[str, Any]]) -> str:
    return ", ".join(f"#{e['seq']} {e['method']} {e['status']}{'/' + e['fault'] if e['fault'] else ''}"
                     for e in entries) or "none"


def check_run(run: Run) -> list[str]:
    """Every broken promise, one line each (empty when the run is right)."""
    problems: list[str] = []
    rep, frame, mode = run.report, run.case.frame, run.mode
    by_batch = run.by_batch()

    # One row per input row, in order, input columns kept.
    if len(rep) != len(frame) or list(rep.index) != list(frame.index):
        return [f"the report has {len(rep)} rows (index {list(rep.index)[:5]}...), the input {len(frame)}"]
    if list(rep["row_no"]) != list(frame["row_no"]):
        problems.append("the input's extra column came back reordered")

    sent_ids = {e["batch_id"] for e in run.log}
    first_401 = min((e["seq"] for e in run.log if e["status"] == 401), default=None)

    for label, row in rep.iterrows():
        kind = run.case.kind[label]
        outcome = row["outcome"]
        bid = row["batch_id"] if isinstance(row["batch_id"], str) else None
        truth = run.truth.get(bid) if bid else None
        entries = by_batch.get(bid, []) if bid else []
        code = row["error_code"] if isinstance(row["error_code"], str) else None
        message = row["error_message"] if isinstance(row["error_message"], str) else None

        def bad(what: str) -> None:
            state = ("cancelled" if truth["cancelled"] else truth["status_code"]) if truth else "no such batch"
            problems.append(f"row {label} ({kind}) {bid!r}: {what} [reported {outcome}/{code}: {message!r}; "
                            f"sandbox: {state}; requests: {_requests_text(entries)}]")

        # Rows that did not end fine say why.
        if outcome not in FINE and (not code or not message or not message.strip()):
            bad("did not end fine but has no error_code/error_message")

        if kind == "invalid":
            if outcome != "invalid_id" or code != "INVALID_BATCH_ID":
                bad("an invalid ID must be invalid_id/INVALID_BATCH_ID")
            continue
        if kind == "duplicate":
            if outcome != "duplicate" or code != "DUPLICATE_BATCH_ID":
                bad("a repeated ID must be duplicate/DUPLICATE_BATCH_ID")
            continue
        if bid != str(frame.at[label, "batch_id"]).strip():
            bad(f"batch_id differs from the input {frame.at[label, 'batch_id']!r}")

        if outcome == "cancelled" and not (truth and truth["cancelled"]):
            bad("reported cancelled but the sandbox never cancelled it")
        if outcome == "already_stopped" and not (truth and truth["status_code"] == "STOPPED"):
            bad("reported already_stopped but the batch is not STOPPED")
        if kind == "prestopped" and truth and truth["cancelled"]:
            bad("a batch that had stopped on its own was cancelled")
        stopped_run = {"skipped", "unauthorized"}
        if kind == "unknown" and outcome not in {"not_found"} | FAILURES | stopped_run:
            bad("an unknown batch must be not_found (or a failure)")
        if kind == "prestopped" and outcome not in {"already_stopped"} | FAILURES | stopped_run:
            bad("a batch that had stopped on its own must be already_stopped (or a failure)")
        if kind == "live" and outcome not in STOPPED_FINE | FAILURES | stopped_run:
            bad("a live batch must end cancelled/stopping (or a failure)")

        if truth and truth["cancelled"] and outcome not in STOPPED_FINE:
            informative = [e for e in entries if e["status"] in (200, 409) and e["fault"] is None]
            applied_lost = [e for e in entries if e["fault"] in APPLIED_BUT_LOST]
            if informative:
                bad("cancelled in the sandbox, and an answer saying so reached the client, "
                    "yet reported as a failure")
            elif not applied_lost:
                bad("cancelled in the sandbox but reported as a failure")
            elif outcome not in FAILURES | {"unauthorized"}:
                bad("every answer was lost; the row must be a network/server/rate-limit failure")

        if outcome == "skipped":
            if entries:
                bad("reported skipped (not sent) but the sandbox received requests for it")
            if not message or "not sent" not in message:
                bad("a skipped row must say it was not sent")
        if outcome == "unauthorized":
            if row["http_status"] != 401 or not entries or entries[-1]["status"] != 401:
                bad("unauthorized without a 401 as the last answer")
            if truth and truth["cancelled"] and not any(e["fault"] in APPLIED_BUT_LOST for e in entries):
                bad("a 401 cannot have cancelled the batch")
        if outcome == "rate_limited" and row["http_status"] != 429:
            bad("rate_limited without a 429")
        if outcome == "server_error" and not (pd.notna(row["http_status"]) and row["http_status"] >= 500):
            bad("server_error without a 5xx")

    if mode.revoke_at is None:
        if first_401 is not None:
            problems.append(f"a 401 (#{first_401}) though the key was never revoked")
        if run.warnings:
            problems.append(f"unexpected warnings: {run.warnings}")
        if rep.attrs.get("stopped") is not None:
            problems.append(f"the run says it stopped ({rep.attrs.get('stopped')}) though nothing stopped it")
        if (rep["outcome"] == "skipped").any():
            problems.append(f"{int((rep['outcome'] == 'skipped').sum())} rows skipped though nothing stopped the run")
    else:
        if run.revoked_at_seq is None or first_401 is None:
            problems.append(f"the key was never revoked or no 401 came back (revoked after "
                            f"{run.revoked_at_seq} requests; first 401: {first_401})")
        else:
            after = [e for e in run.log if e["seq"] > first_401]
            if len(after) > WORKERS - 1:
                problems.append(f"{len(after)} requests arrived after the first 401 (#{first_401}); at most "
                                f"{WORKERS - 1} can have been in flight: {_requests_text(after[:20])}")
            if rep.attrs.get("stopped") != "auth":
                problems.append(f"attrs['stopped'] is {rep.attrs.get('stopped')!r}, not 'auth'")
            if not any("unauthorized" in w for w in run.warnings):
                problems.append(f"no warning about the auth stop: {run.warnings}")
            skipped = rep[rep["outcome"] == "skipped"]
            if len(skipped) == 0:
                problems.append("the key was revoked a third of the way, yet nothing was skipped")
            if set(skipped["error_code"]) - {"SKIPPED_AUTH_FAILED"}:
                problems.append(f"skipped rows with codes {set(skipped['error_code'])}")

    # The mode really happened (a matrix where nothing went wrong proves nothing).
    seen = {str(e["fault"]).split("_")[0] if str(e["fault"]).startswith("error_") else e["fault"] for e in run.log}
    wanted = {label for rate, label in FAULT_LABELS.items() if mode.faults.get(rate)}
    if mode.storms:
        wanted.add("throttle")
    missing = wanted - seen if not mode.name.startswith("mix") else set()
    if missing or (mode.name.startswith("mix") and len(wanted & seen) < 3):
        problems.append(f"faults never injected: {sorted(wanted - seen)} (seen: {sorted(map(str, seen))})")

    # Nothing invalid or unrelated reached the server; counts agree with the sandbox.
    known = {b for b in rep["batch_id"].dropna()}
    strays = sent_ids - known
    if strays:
        problems.append(f"requests for batches not in the report: {sorted(map(str, strays))[:5]}")
    invalid_ids = {str(v).strip() for lbl, v in frame["batch_id"].items() if run.case.kind[lbl] == "invalid"}
    if sent_ids & invalid_ids:
        problems.append(f"invalid IDs were sent: {sent_ids & invalid_ids}")
    if len(run.log) > rep.attrs["requests_sent"]:
        problems.append(f"the sandbox saw {len(run.log)} requests, the report counts {rep.attrs['requests_sent']}")
    return problems


def assert_run(run: Run) -> None:
    problems = check_run(run)
    counts = run.report["outcome"].value_counts().to_dict()
    head = (f"mode {run.mode.name!r} (N={run.n}, seed={run.mode.seed}, faults={run.mode.faults}, "
            f"already_stopped={run.mode.already_stopped!r}, {run.seconds:.1f} s, {len(run.log)} requests, "
            f"outcomes {counts})")
    shown = "\n  ".join(problems[:25])
    more = f"\n  ... and {len(problems) - 25} more" if len(problems) > 25 else ""
    assert not problems, f"{head}: {len(problems)} problem(s)\n  {shown}{more}"


# -- the tests ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES, ids=[m.name for m in MODES])
def test_fault_matrix(mode: Mode) -> None:
    assert_run(run_mode(mode, SMALL_N))


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES, ids=[m.name for m in MODES])
def test_fault_matrix_large(mode: Mode) -> None:
    assert_run(run_mode(mode, LARGE_N))


def test_the_matrix_really_injects_each_fault() -> None:
    """Guard against a matrix that passes because nothing went wrong: each mode's faults show
    up in the sandbox's log, and the failures reach the report."""
    run = run_mode(next(m for m in MODES if m.name == "mix_revoked_key"), SMALL_N)
    faults = {e["fault"] for e in run.log if e["fault"]}
    statuses = {e["status"] for e in run.log}
    assert {"reset_before", "reset_after", "truncate", "html", "throttle"} <= faults, faults
    assert {401, 404, 409} <= statuses, statuses
    assert any(str(f).startswith("error_") for f in faults), faults
    outcomes = set(run.report["outcome"])
    assert {"cancelled", "unauthorized", "skipped", "invalid_id", "duplicate"} <= outcomes, outcomes


def test_a_cancel_answered_2xx_is_never_reported_as_a_failure() -> None:
    with Sandbox(seed=3, per_second=RPS) as sb:
        ids = sb.create_batches(3)
        sb.set_faults(truncate_rate=1.0)  # every answer (DELETEs and GETs) arrives cut short
        with Client(api_key=sb.api_key, base_url=sb.base_url, timeout=CLIENT_TIMEOUT, max_rps=RPS,
                    backoff_base=0.01, backoff_cap=0.05, max_retries=1, seed=3) as c:
            report = sm.cancel_batches(ids, client=c, progress=False)
        truth = sb.batches()
    assert all(truth[i]["cancelled"] for i in ids)
    assert set(report["outcome"]) <= STOPPED_FINE, report[["batch_id", "outcome", "error_code"]].to_string()
