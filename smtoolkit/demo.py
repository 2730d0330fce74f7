"""`smtoolkit demo`: a cleanup session against an in-process sandbox, start to finish."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from .api import cancel_batches
from .client import Client
from .frames import export_csv, summarize


def demo_input(sb: object) -> pd.DataFrame:
    """A realistic mix of batch IDs, each with the outcome a correct run must report."""
    from .sandbox import Sandbox

    assert isinstance(sb, Sandbox)
    rows: list[tuple[str | None, str, str]] = []
    for bid in sb.create_batches(24, status="RUNNING", description="nightly load"):
        rows.append((bid, "running", "cancelled"))
    for bid in sb.create_batches(10, status="QUEUED", description="backfill"):
        rows.append((bid, "queued", "cancelled"))
    for bid in sb.create_batches(6, status="STOPPED", description="finished earlier"):
        rows.append((bid, "finished earlier", "already_stopped"))
    for bid in ("qrb_000000000001", "qrb_000000000002", "qrb_deadbeef0000"):
        rows.append((bid, "unknown ID", "not_found"))
    for first, _, _ in rows[:3]:
        rows.append((first, "pasted twice", "duplicate"))
    rows.append(("qrb_../../admin", "malformed", "invalid_id"))
    rows.append(("", "blank cell", "invalid_id"))
    return pd.DataFrame(rows, columns=["batch_id", "kind", "expected"])


def run_demo(out: str | Path, progress: bool = True) -> int:
    """Run the demo; 0 when every row got its expected outcome."""
    from .sandbox import Faults, Sandbox

    # A little trouble, as in real life: some 503s and slow answers, retried transparently.
    faults = Faults(latency=0.01, jitter=0.02, error_rate=0.05)
    with Sandbox(seed=2026, faults=faults) as sb:
        df = demo_input(sb)
        print(f"Sandbox running at {sb.base_url}", file=sys.stderr)
        print(f"Cancelling {len(df)} rows: {df['kind'].value_counts().to_dict()}", file=sys.stderr)
        with Client(api_key=sb.api_key, base_url=sb.base_url, backoff_base=0.1, backoff_cap=1.0) as client:
            report = cancel_batches(df, client=client, progress=progress)
        truth = sb.batches()
    print(summarize(report).to_string())
    path = export_csv(report, out)
    print(f"\nReport: {path} ({len(report)} rows; {report.attrs['requests_sent']} requests, "
          f"{report.attrs['throttled']} throttled)")
    wrong = report[report["outcome"] != report["expected"]]
    lied = [b for b, o in zip(report["batch_id"], report["outcome"], strict=False)
            if o == "cancelled" and not truth.get(str(b), {}).get("cancelled")]
    if len(wrong) or lied:
        print(f"{len(wrong)} row(s) did not get the expected outcome:", file=sys.stderr)
        print(wrong[["batch_id", "kind", "expected", "outcome", "error_code"]].to_string(), file=sys.stderr)
        return 1
    print("Every row got the expected outcome, and the sandbox agrees with the report.")
    return 0


def run_long_demo(progress: bool = True) -> int:
    """A long cleanup played in seconds: 60 batches on a budget of 25 requests per 3-second
    "hour" (5 kept for production). The run waits for the budget twice and finishes; 0 when
    every batch was cancelled without spending the reserve."""
    import warnings

    from .sandbox import Sandbox

    limit, kept, window = 25, 5, 3.0
    with Sandbox(seed=2026, hourly_limit=limit, budget_window=window) as sb:
        ids = sb.create_batches(60, description="stuck load")
        print(f"Sandbox running at {sb.base_url}: a budget of {limit} requests per {window:g} s 'hour', "
              f"{kept} kept for production", file=sys.stderr)
        with Client(api_key=sb.api_key, base_url=sb.base_url, reserve=kept) as client, warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda message, *a, **k: print(f"plan: {message}", file=sys.stderr)
            report = cancel_batches(ids, client=client, progress=progress, wait_for_budget=60,
                                    budget_check_every=1.0)
        deletes = [r for r in sb.requests if r["method"] == "DELETE"]
        truth = sb.batches()
    a = report.attrs
    print(summarize(report).to_string())
    print(f"\nWaited for the budget {a['budget_waits']} time(s), {a['budget_waited_s']:.1f} s in all, "
          f"with {a['budget_looks']} look(s); {a['requests_sent']} requests in all.")
    spent_reserve = any(r["remaining"] is not None and r["remaining"] < kept for r in deletes)
    ok = set(report["outcome"]) == {"cancelled"} and all(truth[i]["cancelled"] for i in ids) and not spent_reserve
    print("Every batch cancelled, and no cancel touched the reserve." if ok
          else "Something went wrong: see the report above.")
    return 0 if ok else 1
