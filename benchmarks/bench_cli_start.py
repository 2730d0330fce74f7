"""How fast the command line answers `--help` and `--version` (target: under 0.2 s).

    python benchmarks/bench_cli_start.py             # 15 runs of each
    python benchmarks/bench_cli_start.py --runs 50

Each command runs in a fresh interpreter, as a user's shell runs it; the baseline is the same
interpreter doing nothing (`python -c pass`), so the difference is smtoolkit's own start-up.
Also says whether pandas was imported on the way (it must not be: it alone costs ~0.5 s).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "smtoolkit --version": [sys.executable, "-m", "smtoolkit", "--version"],
    "smtoolkit --help": [sys.executable, "-m", "smtoolkit", "--help"],
    "smtoolkit cancel --help": [sys.executable, "-m", "smtoolkit", "cancel", "--help"],
}
PANDAS_CHECK = ("import sys, runpy; sys.argv = ['smtoolkit', '--help']\n"
                "try:\n    runpy.run_module('smtoolkit', run_name='__main__')\n"
                "except SystemExit:\n    pass\n"
                "print('pandas imported' if 'pandas' in sys.modules else 'pandas not imported', file=sys.stderr)")


def timed(cmd: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="runs per command (default 15)")
    args = ap.parse_args()
    print(f"Python {sys.version.split()[0]}, {args.runs} runs each (seconds: best / median)")
    for name, cmd in COMMANDS.items():
        t = timed(cmd, args.runs)
        print(f"  {name:<28} {min(t):.3f} / {statistics.median(t):.3f}")
    check = subprocess.run([sys.executable, "-c", PANDAS_CHECK], capture_output=True, text=True)
    print(f"  --help: {check.stderr.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()
