"""The client's own costs at a million rows (no requests), each beside a plain baseline.

    python benchmarks/bench_scale.py             # N = 1,000,000 (about 10 minutes on 2 cores)
    python benchmarks/bench_scale.py --quick     # N = 100,000
    python benchmarks/bench_scale.py --rows 250000

Four figures, each the best of `--repeat` (default 3) timings, ours and its baseline in turns:
  (a) report: `frames.build_report` (what cancel_batches calls) on N input rows with 20%
      duplicates, and on N rows with 90% duplicates, vs `pd.DataFrame` from plain column lists
      of the same shape and values; also `core.ids.plan` on the N values;
  (b) resume: reading an N-line journal written by `journal.Journal` itself (what
      cancel_batches does before sending: lock, read, keep the final results) vs
      `[json.loads(line) for line in f]`; time and extra peak memory, both measured in a fresh
      child process (peak RSS, VmHWM in /proc/self/status, minus the RSS before the step);
  (c) export: `export_csv` vs the report's own `to_csv`, same frame, same directory;
  (d) progress: the cost per result of the bar (tqdm text to a null stream) vs disabled.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from smtoolkit import frames
from smtoolkit.core.ids import Plan, plan
from smtoolkit.core.outcomes import REPORT_COLUMNS, Outcome, Result
from smtoolkit.journal import Journal
from smtoolkit.progress import Progress

BASE_URL = "https://api.supermetrics.com/enterprise/v2"


def best(fn: Callable[[], Any], repeat: int) -> float:
    """The best wall time of `repeat` calls (the result of each call is dropped before the next)."""
    return min(timed(fn) for _ in range(repeat))


def best_of_both(ours: Callable[[], Any], plain: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """The best times of two contenders, timed in turns, so that a busy moment on a shared
    machine slows both."""
    times = [(timed(ours), timed(plain)) for _ in range(repeat)]
    return min(t[0] for t in times), min(t[1] for t in times)


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- inputs as a run would hand them over -------------------------------------------------------


def make_ids(n: int, unique_share: float, seed: int = 1) -> list[str]:
    """N IDs of which `unique_share` are distinct (the rest repeat earlier ones), 0.1% invalid."""
    rng = random.Random(seed)
    unique = max(1, int(n * unique_share))
    ids = [f"qrb_{i:012x}" for i in range(unique)]
    ids += [ids[rng.randrange(unique)] for _ in range(n - unique)]
    rng.shuffle(ids)
    for i in range(0, n, 1000):
        ids[i] = "not an id!"
    return ids


def make_result(batch_id: str, k: int, base: datetime) -> Result:
    """A result like the client's: mostly cancelled, some already stopped or not found."""
    if k % 20 == 0:
        return Result(batch_id, Outcome.NOT_FOUND, 404, error_code="NOT_FOUND_ERROR",
                      error_message="Batch not found", request_id=f"req_{k:016x}", attempts=1,
                      elapsed_s=0.0113 + k % 7 / 1000, ratelimit_remaining=9000 - k % 9000)
    if k % 20 == 1:
        return Result(batch_id, Outcome.ALREADY_STOPPED, 409, status_code="STOPPED", error_code="CONFLICT_ERROR",
                      error_message="Batch is not running", request_id=f"req_{k:016x}", attempts=1,
                      elapsed_s=0.0121, ratelimit_remaining=9000 - k % 9000)
    t = base + timedelta(microseconds=k * 1234)
    return Result(batch_id, Outcome.CANCELLED, 200, status_code="STOPPED", request_id=f"req_{k:016x}",
                  cancel_time=t, end_time=t + timedelta(milliseconds=3), attempts=1 + (k % 50 == 0),
                  elapsed_s=0.0107 + k % 13 / 1000, ratelimit_remaining=9000 - k % 9000)


def make_run(n: int, unique_share: float) -> tuple[pd.DataFrame, list[Any], Plan, dict[str, Result]]:
    """(frame, values, plan, results) exactly as cancel_batches has them before the report."""
    df = pd.DataFrame({"batch_id": make_ids(n, unique_share), "note": "from the CRM export"})
    frame, values = frames.extract(df, "batch_id")
    p = plan(values)
    base = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    results = {b: make_result(b, k, base) for k, b in enumerate(p.unique)}
    return frame, values, p, results


def plain_columns(frame: pd.DataFrame, p: Plan, results: dict[str, Result]) -> dict[str, list[Any]]:
    """The same shape and values as plain lists: what pandas is handed in the baseline."""
    cols: dict[str, list[Any]] = {"note": frame["note"].tolist()}
    rows = [results[b].row() if b is not None else Result(None, Outcome.INVALID_ID).row() for b in p.ids]
    for name in REPORT_COLUMNS:
        cols[name] = [r[name] for r in rows]
    return cols


def bench_report(n: int, repeat: int) -> list[str]:
    lines = []
    for share, label in ((0.8, "20% duplicates"), (0.1, "90% duplicates")):
        frame, values, p, results = make_run(n, share)
        if share == 0.8:
            t_plan = best(partial(plan, values), repeat)
        ours, plain = best_of_both(partial(frames.build_report, frame, values, p, results, {}),
                                   partial(pd.DataFrame, plain_columns(frame, p, results)), repeat)
        lines.append(f"(a) report, {n:,} rows, {label}: build_report {ours:6.2f} s   "
                     f"pd.DataFrame(plain lists) {plain:5.2f} s   ratio {ours / plain:5.1f}x   (target: 3 s)")
        del frame, values, p, results
        gc.collect()
    lines.append(f"    core.ids.plan on {n:,} values: {t_plan:.2f} s")
    return lines


# -- journal: measured in a child process, so peak memory is the step's own ----------------------


def write_journal(path: Path, n: int) -> None:
    """An N-line journal written by Journal itself: 95% final results, 5% stopping/rate limited."""
    base = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    with Journal(path, BASE_URL) as j:
        for k in range(n):
            r = make_result(f"qrb_{k:012x}", k, base)
            if k % 20 == 2:
                r = replace(r, outcome=Outcome.RATE_LIMITED, http_status=429, error_code="RATE_LIMIT_ERROR")
            j.append(r)


def _status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: now; VmHWM: this process's peak)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(step: str, path: str) -> None:
    """Run one step in this (fresh) process; print its wall time and extra peak RSS as JSON.

    Peak RSS is VmHWM from /proc/self/status, not getrusage's ru_maxrss: Linux carries the
    parent's high-water mark into ru_maxrss across fork/exec, VmHWM is this process's own."""
    gc.collect()
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    if step == "resume":
        with Journal(path, BASE_URL) as j:
            kept = len(j.done())
    else:
        with open(path, encoding="utf-8") as fh:
            kept = len([json.loads(line) for line in fh])
    wall = time.perf_counter() - t0
    print(json.dumps({"wall": wall, "extra_mib": (_status_kib("VmHWM") - before) / 1024, "kept": kept}))


def run_child(step: str, path: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", step, str(path)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def bench_journal(n: int, repeat: int, tmp: Path) -> list[str]:
    path = tmp / "scale.journal.jsonl"
    write_journal(path, n)
    size = path.stat().st_size / 2**20
    runs = [(run_child("resume", path), run_child("json", path)) for _ in range(repeat)]
    ours, plain = [r[0] for r in runs], [r[1] for r in runs]
    o_t, p_t = min(r["wall"] for r in ours), min(r["wall"] for r in plain)
    o_m, p_m = min(r["extra_mib"] for r in ours), min(r["extra_mib"] for r in plain)
    return [f"(b) resume from a {n:,}-line journal ({size:.0f} MiB, {int(ours[0]['kept']):,} final): "
            f"Journal read {o_t:6.2f} s, +{o_m:.0f} MiB peak RSS   "
            f"[json.loads(line) for line in f] {p_t:5.2f} s, +{p_m:.0f} MiB   ratio {o_t / p_t:4.2f}x   "
            f"(target: 1.00x, +500 MiB)"]


# -- export ------------------------------------------------------------------------------------


def bench_export(n: int, repeat: int, tmp: Path) -> list[str]:
    frame, values, p, results = make_run(n, 0.8)
    report = frames.build_report(frame, values, p, results, {})
    del frame, values, p, results
    ours, plain = best_of_both(lambda: frames.export_csv(report, tmp / "ours.csv"),
                               lambda: report.to_csv(tmp / "plain.csv", index=False), repeat)
    return [f"(c) export {n:,} rows: export_csv {ours:6.2f} s   report.to_csv {plain:5.2f} s   "
            f"ratio {ours / plain:4.2f}x   (target: 1.5x)"]


# -- progress bar --------------------------------------------------------------------------------


def bench_progress(n: int, repeat: int) -> list[str]:
    results = [make_result(f"qrb_{k:012x}", k, datetime(2026, 11, 29, tzinfo=UTC)) for k in range(1000)]

    def feed(enabled: bool) -> None:
        with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
            bar = Progress(n, enabled=enabled, desc="cancelling", facts=lambda: {"ratelimit_remaining": 9000})
            update = bar.update
            for k in range(n):
                update(results[k % 1000])
            bar.close()

    on, off = best_of_both(lambda: feed(True), lambda: feed(False), repeat)
    return [f"(d) progress, {n:,} results: bar on {on / n * 1e6:5.2f} us/result ({on:.2f} s)   "
            f"bar off {off / n * 1e6:5.2f} us/result   extra {(on - off) / n * 1e6:5.2f} us/result"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="N (default 1,000,000)")
    ap.add_argument("--quick", action="store_true", help="N = 100,000 for a fast look")
    ap.add_argument("--repeat", type=int, default=3, help="timings per figure; the best is shown")
    ap.add_argument("--only", choices=["report", "journal", "export", "progress"], action="append",
                    help="run only these figures (repeatable)")
    ap.add_argument("--child", nargs=2, metavar=("STEP", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0
    n = 100_000 if args.quick else args.rows
    wanted = args.only or ["report", "journal", "export", "progress"]
    print(f"smtoolkit scale benchmark: N = {n:,}, best of {args.repeat}, Python {sys.version.split()[0]}, "
          f"pandas {pd.__version__}, {os.cpu_count()} CPUs, {datetime.now(UTC):%Y-%m-%d}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        steps: dict[str, Callable[[], list[str]]] = {
            "report": lambda: bench_report(n, args.repeat),
            "journal": lambda: bench_journal(n, args.repeat, tmp),
            "export": lambda: bench_export(n, args.repeat, tmp),
            "progress": lambda: bench_progress(n, args.repeat),
        }
        for name in wanted:
            for line in steps[name]():
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
