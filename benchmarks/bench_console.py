"""The cleanup console at 30,000 rows (not a timed test): building it, a `select` by status, the
cost of one grid redraw during a cancel, and cancel throughput through the console against
`cancel_batches` on the same sandbox, in alternating turns.

Targets (issue 24): build at most 2 s, select at most 0.2 s, cancel throughput within 2% of
`cancel_batches`. Run: PYTHONPATH=. python benchmarks/bench_console.py [--rows N] [--cancel N] [--turns N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import pandas as pd

import smtoolkit as sm
from smtoolkit.sandbox import Sandbox
from smtoolkit.ui.console_view import grid_frame


def frame_of(n: int) -> pd.DataFrame:
    """A previous report's shape: IDs with a status, a description and a schedule time."""
    rng = np.random.default_rng(1)
    return pd.DataFrame({
        "batch_id": [f"qrb_{i:012x}" for i in range(n)],
        "status_code": rng.choice(["QUEUED", "RUNNING", "STOPPED"], n),
        "description": [f"load {i % 97}" for i in range(n)],
        "schedule_time": pd.Timestamp("2026-12-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 86400 * 5, n), "s"),
    })


def best(f, turns: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(turns):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def local_costs(rows: int) -> None:
    df = frame_of(rows)
    with Sandbox(seed=1) as sb:
        build = best(lambda: sm.CancelConsole(df, api_key=sb.api_key, base_url=sb.base_url))
        con = sm.CancelConsole(df, api_key=sb.api_key, base_url=sb.base_url)
        select = best(lambda: con.select(status=["RUNNING"]), 5)
        select_age = best(lambda: con.select(status=["RUNNING", "QUEUED"], older_than="2h", description="load 1"), 5)
        n_sel = len(con.select(status=["RUNNING"]))
        redraw = best(lambda: con.view.draw_grid(grid_frame(con.frame), con._selected), 3)
    print(f"{rows:,} rows: build {build:.2f} s (target <= 2 s); select by status {select * 1000:.0f} ms "
          f"({n_sel:,} rows; target <= 200 ms); status+age+description {select_age * 1000:.0f} ms; "
          f"one grid redraw {redraw:.2f} s (during a cancel at most one per max(0.5 s, 5 x its cost))")


def throughput(rows: int, n: int, turns: int) -> None:
    """Batches cancelled per second: the console (n selected among `rows`) and cancel_batches (n IDs)."""
    results: dict[str, list[float]] = {"console": [], "cancel_batches": []}
    walls: dict[str, list[float]] = {"console": [], "cancel_batches": []}
    with Sandbox(seed=2, per_second=20) as sb, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for turn in range(turns):
            for who in (("console", "cancel_batches") if turn % 2 == 0 else ("cancel_batches", "console")):
                ids = sb.create_batches(n, queries=1)
                with sm.Client(api_key=sb.api_key, base_url=sb.base_url) as c:
                    if who == "console":
                        df = pd.concat([pd.DataFrame({"batch_id": ids, "status_code": "RUNNING"}),
                                        frame_of(rows - n).assign(status_code="QUEUED")], ignore_index=True)
                        con = sm.CancelConsole(df, client=c)
                        con.select(status=["RUNNING"])
                        t = time.perf_counter()
                        report = con.cancel()
                    else:
                        t = time.perf_counter()
                        report = sm.cancel_batches(ids, client=c, progress=False)
                    wall = time.perf_counter() - t
                assert (report.outcome == "cancelled").sum() == n, report.outcome.value_counts()
                # The run itself (first request to report), as cancel_batches records it; the wall
                # time of con.cancel() adds the console's last redraw of all its rows.
                run = (pd.Timestamp(report.attrs["finished_at"]) - pd.Timestamp(report.attrs["started_at"])).total_seconds()
                results[who].append(n / run)
                walls[who].append(wall)
                print(f"  turn {turn + 1} {who}: {n / run:.2f} batches/s (run {run:.2f} s, call {wall:.2f} s)")
    c_med, b_med = statistics.median(results["console"]), statistics.median(results["cancel_batches"])
    print(f"cancel {n} of {rows:,} rows at 20/s: console {c_med:.2f}/s, cancel_batches {b_med:.2f}/s "
          f"(console/cancel_batches {c_med / b_med:.3f}; target >= 0.98); median extra time of con.cancel() "
          f"after the run (the last redraw of every row): "
          f"{statistics.median(w - n / r for w, r in zip(walls['console'], results['console'], strict=True)):.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=30_000)
    ap.add_argument("--cancel", type=int, default=300)
    ap.add_argument("--turns", type=int, default=4)
    a = ap.parse_args()
    local_costs(a.rows)
    throughput(a.rows, a.cancel, a.turns)


if __name__ == "__main__":
    main()
