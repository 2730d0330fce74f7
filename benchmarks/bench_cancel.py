"""How close bulk cancel gets to the API's own limit, side by side with what users write instead.

    python benchmarks/bench_cancel.py            # all settings (about 10 minutes)
    python benchmarks/bench_cancel.py --quick    # smaller N
    python benchmarks/bench_cancel.py --before ../wt-before --reps 3   # beside older code

The sandbox runs in a child process (`smtoolkit sandbox`, which imports nothing from the client)
and enforces a strict sliding one-second window: a request is refused when R were admitted in
the second before it; the "max/s" column checks that on the server's own log. For every
(R, L, N) setting, each contender cancels N fresh batches on the same server, and the server's
own request log says how many requests and 429s it took.

smtoolkit runs in a child process of its own, from this checkout or, with `--before DIR`, also
from the code in DIR, in alternating turns (before, now, now, before, ...) so that a busy moment
on a shared machine slows both alike; its CPU time is the child's, from just before
`cancel_batches` to just after.

"ideal" is the best a client can do in that run: N starts evenly spaced at exactly the limit,
plus one latency. Against a server stricter than `max_rps` (R < max_rps) it is the best a
client honouring Retry-After can do: evenly at max_rps until the first 429 (after R starts),
then the Retry-After of this server (1 s: it rounds up to whole seconds), then the rest evenly
at exactly R.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

import smtoolkit as sm
from smtoolkit.core.ids import plan
from smtoolkit.core.outcomes import Outcome, Result
from smtoolkit.frames import build_report, extract


@dataclass
class Setting:
    rate: int  # server per-second limit R
    latency: float  # server latency L
    n: int
    max_rps: float | None = None  # smtoolkit's max_rps for the "tuned" run (None: = R)
    workers: int = 4  # smtoolkit's workers (4 is cancel_batches' default)
    target: float | None = None  # smtoolkit's smallest acceptable "of limit" (or of the ideal, if stricter)
    defaults: bool = True  # also run smtoolkit with its defaults (max_rps=20)

    @property
    def name(self) -> str:
        return f"R={self.rate} L={self.latency * 1000:g}ms N={self.n}" + (f" w={self.workers}" if self.workers != 4 else "")


class Server:
    """`smtoolkit sandbox` in a child process, driven through its /_sandbox control API."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smtoolkit", "sandbox", "--port", "0", "--hourly-limit", "10000",
             "--api-key", "bench-key-0123456789"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"Base URL: (\S+)", line)
        if not m:
            raise RuntimeError(f"sandbox did not start: {line!r}")
        self.base_url = m.group(1)
        self.root = self.base_url.rsplit("/enterprise/v2", 1)[0] + "/_sandbox"
        self.key = "bench-key-0123456789"
        self.http = requests.Session()

    def setup(self, s: Setting) -> list[str]:
        self.http.post(f"{self.root}/reset").raise_for_status()
        self.http.put(f"{self.root}/limits", json={"per_second": s.rate, "hourly_limit": 100000}).raise_for_status()
        self.http.put(f"{self.root}/faults", json={"latency": s.latency}).raise_for_status()
        r = self.http.post(f"{self.root}/batches", json={"count": s.n, "status": "RUNNING"})
        r.raise_for_status()
        ids: list[str] = r.json()["batch_ids"]
        # Let the per-second window of the previous contender drain.
        time.sleep(1.1)
        return ids

    def log(self) -> list[dict]:
        return self.http.get(f"{self.root}/requests").json()["data"]

    def truth(self) -> dict[str, dict]:
        return {b["batch_id"]: b for b in self.http.get(f"{self.root}/batches").json()["data"]}

    def close(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- the contenders --------------------------------------------------------------------------

# Against a server stricter than max_rps, smtoolkit must reach this share of the ideal.
STRICTER_SHARE = 0.95
HERE = Path(sm.__file__).resolve().parents[1]  # the checkout this script's smtoolkit is from

CHILD = """
import json, sys, time
import smtoolkit as sm
import smtoolkit.frames  # noqa: F401  (pandas, imported before the clock starts)
cancel = sm.cancel_batches  # imports the library's modules (lazily loaded) before the clock starts
a = json.load(sys.stdin)
kw = {} if a["max_rps"] is None else {"max_rps": a["max_rps"]}
c0, t0 = time.process_time(), time.perf_counter()
cancel(a["ids"], api_key=a["key"], base_url=a["base_url"], progress=False, workers=a["workers"], **kw)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"wall": wall, "cpu": cpu, "file": sm.__file__}))
"""


@dataclass
class Timed:
    """What a contender measured itself (a child process): workers, wall and CPU seconds."""

    workers: int
    wall: float
    cpu: float


def run_smtoolkit(srv: Server, ids: list[str], max_rps: float | None, workers: int, code: Path) -> Timed:
    """smtoolkit's cancel_batches from the checkout `code`, in a child process."""
    env = dict(os.environ, PYTHONPATH=str(code))
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=code, capture_output=True, text=True, check=True,
                         input=json.dumps({"ids": ids, "key": srv.key, "base_url": srv.base_url,
                                           "max_rps": max_rps, "workers": workers}))
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if not Path(got["file"]).resolve().is_relative_to(code.resolve()):
        raise RuntimeError(f"the child ran {got['file']}, not the code in {code}")
    return Timed(workers, got["wall"], got["cpu"])


def run_sequential(srv: Server, ids: list[str]) -> int:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {srv.key}"
    for i in ids:
        s.delete(f"{srv.base_url}/query/batch/{i}", timeout=30)
    return 1


def run_pool(srv: Server, ids: list[str], workers: int = 8) -> int:
    local = __import__("threading").local()

    def one(i: str) -> None:
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
            s.headers["Authorization"] = f"Bearer {srv.key}"
        s.delete(f"{srv.base_url}/query/batch/{i}", timeout=30)

    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, ids))
    return workers


def run_urllib3_retry(srv: Server, ids: list[str], workers: int = 8) -> int:
    local = __import__("threading").local()
    retry = Retry(total=8, backoff_factor=0.2, status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=None, respect_retry_after_header=True)

    def one(i: str) -> None:
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
            s.mount("http://", HTTPAdapter(max_retries=retry))
            s.headers["Authorization"] = f"Bearer {srv.key}"
        try:
            s.delete(f"{srv.base_url}/query/batch/{i}", timeout=30)
        except requests.RequestException:
            pass

    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, ids))
    return workers


@dataclass
class Row:
    setting: str
    name: str
    code: str  # "now", "before" or "" (not smtoolkit)
    wall: float
    limit: float
    ratio: float
    ideal: float  # the ideal's "of limit" (see the module docstring)
    target: float | None  # smtoolkit's smallest acceptable "of limit"
    max_per_s: int  # most admitted requests in any one-second window on the server's clock
    per_batch: float
    throttled: int
    burst: int
    not_cancelled: int
    cpu_ms: float


def measure(srv: Server, s: Setting, name: str, fn: Callable[[Server, list[str]], int | Timed], code: str = "") -> Row:
    ids = srv.setup(s)
    gc.collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    got = fn(srv, ids)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    if isinstance(got, Timed):
        workers, wall, cpu = got.workers, got.wall, got.cpu
    else:
        workers = got
    log = srv.log()
    truth = srv.truth()
    limit = min(s.rate, workers / s.latency) if s.latency else s.rate
    ideal, target = math.nan, None
    if name.startswith("smtoolkit"):
        # smtoolkit's own ceiling is also its max_rps (20 by default, the vendor's advice).
        mine = max_rps_of(name, s)
        limit = min(limit, mine)
        ideal = ideal_ratio(s.n, limit, s.latency, mine, s.rate)
        if mine > s.rate:
            target = STRICTER_SHARE * ideal
        elif s.target is not None and mine == max_rps_of("tuned", s):
            target = s.target
    t429 = sorted(e["time"] for e in log if e["status"] == 429)
    cancelled = sum(1 for i in ids if truth[i]["cancelled"])
    admitted = [e["admitted_at"] for e in log if e["status"] != 429 and e["admitted_at"] is not None]
    return Row(
        setting=s.name,
        name=name,
        code=code,
        wall=wall,
        limit=limit,
        ratio=(cancelled / wall) / limit,
        ideal=ideal,
        target=target,
        max_per_s=_max_in_window(admitted),
        per_batch=len(log) / s.n,
        throttled=len(t429),
        burst=_largest_episode(t429),
        not_cancelled=sum(1 for i in ids if not truth[i]["cancelled"]),
        cpu_ms=cpu / s.n * 1000,
    )


def max_rps_of(name: str, s: Setting) -> float:
    return 20.0 if "defaults" in name else float(s.max_rps or s.rate)


def ideal_ratio(n: int, limit: float, latency: float, max_rps: float, rate: float) -> float:
    """The ideal's "of limit": N starts evenly at the limit plus one latency; against a server
    stricter than max_rps, evenly at max_rps up to the first 429, its 1 s Retry-After, then
    evenly at the server's rate."""
    if max_rps <= rate:
        wall = (n - 1) / limit + latency
    else:
        wall = rate / max_rps + 1.0 + (n - rate - 1) / rate + latency
    return n / wall / limit


def _max_in_window(times: list[float]) -> int:
    """Most of `times` in any window (t - 1, t]: what a strict sliding one-second window counts."""
    s, best, j = sorted(times), 0, 0
    for i, t in enumerate(s):
        while s[j] <= t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def _largest_episode(times: list[float]) -> int:
    """429s in the largest group of 429s less than a second apart (1 = a lone 429)."""
    best, size, last = 0, 0, None
    for t in times:
        size = size + 1 if last is not None and t - last < 1.0 else 1
        best, last = max(best, size), t
    return best


def prepare_million() -> float:
    ids = [f"qrb_{i:012x}" for i in range(1_000_000)]
    import pandas as pd

    df = pd.DataFrame({"batch_id": ids})
    t0 = time.perf_counter()
    frame, values = extract(df, "batch_id")
    plan(values)
    return time.perf_counter() - t0


def report_memory() -> float:
    import pandas as pd

    n = 100_000
    ids = [f"qrb_{i:012x}" for i in range(n)]
    df = pd.DataFrame({"batch_id": ids})
    frame, values = extract(df, "batch_id")
    p = plan(values)
    results = {i: Result(i, Outcome.CANCELLED, 200, "STOPPED", request_id="req_0123456789abcdef", attempts=1,
                         elapsed_s=0.01, ratelimit_remaining=4000) for i in p.unique}
    gc.collect()
    tracemalloc.start()
    build_report(frame, values, p, results, {})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller N for a fast look")
    ap.add_argument("--before", type=Path, help="also run smtoolkit from this checkout, in alternating turns")
    ap.add_argument("--reps", type=int, default=1, help="turns of smtoolkit per setting (each code once a turn)")
    ap.add_argument("--smtoolkit-only", action="store_true", help="leave out the plain contenders")
    ap.add_argument("--rates", help="only the settings with these server limits R, e.g. 40,50")
    args = ap.parse_args()
    k = 0.3 if args.quick else 1.0
    settings = [
        Setting(20, 0.05, int(400 * k), target=0.965),              # the documented default limit
        Setting(10, 0.02, int(250 * k), defaults=True),             # server stricter than max_rps: must adapt
        Setting(40, 0.05, int(600 * k), max_rps=40),                # a higher limit, tuned max_rps
        Setting(50, 0.02, int(300 * k), max_rps=50, workers=8, target=0.965, defaults=False),
        Setting(100, 0.02, int(600 * k), max_rps=100, workers=8, target=0.95, defaults=False),
    ]
    if args.rates:
        settings = [s for s in settings if str(s.rate) in args.rates.split(",")]
    codes = [("now", HERE)] + ([("before", args.before.resolve())] if args.before else [])
    srv = Server()
    rows: list[Row] = []
    try:
        for s in settings:
            ours: list[tuple[str, float | None]] = [(f"smtoolkit max_rps={s.max_rps or s.rate:g}", s.max_rps or s.rate)]
            if s.defaults and s.rate != 20:
                ours.insert(0, ("smtoolkit (defaults)", None))
            for turn in range(args.reps):
                for label, code in codes if turn % 2 else codes[::-1]:
                    for name, max_rps in ours:
                        fn = lambda v, i, m=max_rps, c=code, w=s.workers: run_smtoolkit(v, i, m, w, c)  # noqa: E731
                        row = measure(srv, s, name, fn, label)
                        rows.append(row)
                        print(f"  {row.setting:28} {row.name:28} {label:6} done in {row.wall:6.2f}s "
                              f"({row.ratio:.3f} of limit)", file=sys.stderr, flush=True)
            if args.smtoolkit_only:
                continue
            plain: list[tuple[str, Callable[[Server, list[str]], int | Timed]]] = [
                ("sequential requests", run_sequential),
                ("ThreadPool x8, no pacing", run_pool),
                ("ThreadPool x8 + urllib3 Retry", run_urllib3_retry),
            ]
            for name, fn in plain:
                row = measure(srv, s, name, fn)
                rows.append(row)
                print(f"  {row.setting:28} {row.name:28} done in {row.wall:6.2f}s", file=sys.stderr, flush=True)
    finally:
        srv.close()
    header = (f"{'setting':28} {'contender':28} {'code':6} {'wall s':>7} {'limit':>6} {'of limit':>8} {'ideal':>6} "
              f"{'target':>6} {'req/batch':>9} {'429s':>5} {'burst':>5} {'max/s':>5} {'not canc.':>9} {'CPU ms/b':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        mark = "*" if r.not_cancelled else " "
        ok = "" if r.target is None else ("ok" if r.ratio >= r.target else "MISS")
        print(f"{r.setting:28} {r.name:28} {r.code:6} {r.wall:7.2f} {r.limit:6.1f} {r.ratio:7.3f}{mark} {r.ideal:6.3f} "
              f"{'' if r.target is None else f'{r.target:.3f}':>6} {r.per_batch:9.3f} {r.throttled:5d} {r.burst:5d} "
              f"{r.max_per_s:5d} {r.not_cancelled:9d} {r.cpu_ms:8.2f} {ok}")
    print("* rows were left not cancelled: throughput counts only the cancelled ones")
    print("max/s: most requests the server admitted in any one-second window (its limit is R)")
    if not args.smtoolkit_only and not args.before:
        prep = prepare_million()
        mem = report_memory()
        print(f"\nprepare 1,000,000 IDs (extract + normalize + validate + dedupe): {prep:.2f} s")
        print(f"peak memory building a 100,000-row report: {mem:.1f} MiB")
    print("\nsmtoolkit, per setting and code: of limit min-max (median) | CPU ms/batch min-max (median) | "
          "req/batch max | 429s max")
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        if r.code:
            groups.setdefault((r.setting, r.name, r.code), []).append(r)
    for (setting, name, code), rs in groups.items():
        ratios = sorted(r.ratio for r in rs)
        cpus = sorted(r.cpu_ms for r in rs)
        print(f"  {setting:28} {name:28} {code:6} {ratios[0]:.3f}-{ratios[-1]:.3f} ({_median(ratios):.3f}) | "
              f"{cpus[0]:.2f}-{cpus[-1]:.2f} ({_median(cpus):.2f}) | {max(r.per_batch for r in rs):.3f} | "
              f"{max(r.throttled for r in rs)}   ideal {rs[0].ideal:.3f}")
    now = [r for r in rows if r.code == "now"]
    misses = [r for r in now if r.target is not None and r.ratio < r.target]
    print(f"smtoolkit (now): targets missed in {len(misses)} of {sum(1 for r in now if r.target is not None)} runs; "
          f"requests per batch at most {max(r.per_batch for r in now):.3f}; "
          f"server's busiest second: {max(r.max_per_s - _rate_of(r.setting) for r in rows):+d} vs its limit")
    return 0


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return (s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2


def _rate_of(setting: str) -> int:
    return int(setting.split()[0].removeprefix("R="))


if __name__ == "__main__":
    raise SystemExit(main())
