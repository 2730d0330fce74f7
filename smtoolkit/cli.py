"""The `smtoolkit` command: a thin shell over the library.

Results go to stdout; prompts, progress and warnings to stderr. Errors become one message
and an exit code in `main`, nowhere else.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .runner import MAX_WORKERS
from .ui.limits import CONNECT_TIMEOUT, MAX_PAGES, MAX_PAGES_PER_VISITOR

if TYPE_CHECKING:
    from argparse import _SubParsersAction

    import pandas as pd

    from .client import Client

    _Subparsers = _SubParsersAction[argparse.ArgumentParser]


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONFIG, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
DEMO_REPORT = "smtoolkit-demo-report.csv"
# The sandbox's own bounds (it shares no code with the client; it refuses beyond them too).
SANDBOX_MAX_WINDOW, SANDBOX_MAX_DELAY, SANDBOX_MAX_LATENCY = 7 * 86400.0, 7 * 86400.0, 3600.0


class UsageError(Exception):
    """Wrong arguments or input on the command line (exit 2)."""


def _read_ids(args: argparse.Namespace) -> pd.DataFrame:
    """IDs from the arguments and/or a CSV/TSV file ('-' is stdin), as a DataFrame."""
    import pandas as pd

    frames = []
    if args.ids:
        frames.append(pd.DataFrame({args.column: list(args.ids)}))
    if args.file is not None:
        frames.append(_read_file(args))
    if not frames:
        raise UsageError("give batch IDs as arguments, or a file with -f FILE (or -f - for stdin)")
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _read_file(args: argparse.Namespace) -> pd.DataFrame:
    from .errors import InputError
    from .idfile import read_id_file

    name = args.file
    shown = "stdin" if name == "-" else repr(name)
    try:
        if name == "-":
            data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
        else:
            with open(name, "rb") as fh:
                data = fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read {shown}: {exc.strerror or exc}") from None
    try:
        got = read_id_file(data, shown, args.column, encoding=args.encoding,
                           sep=_sep(args.sep) if args.sep is not None else None)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    for note in got.notes:
        print(f"note: {note}", file=sys.stderr)
    return got.frame


def _console() -> str:
    """Where to ask when stdin is taken or not a terminal: the console device of this OS."""
    return "CONIN$" if sys.platform == "win32" else "/dev/tty"


def _confirm(question: str, stdin_used: bool) -> bool:
    """Ask on the terminal; raise UsageError when there is none."""
    print(question, end=" ", file=sys.stderr, flush=True)
    if sys.stdin is not None and sys.stdin.isatty() and not stdin_used:
        answer = sys.stdin.readline()
    else:
        try:
            with open(_console(), encoding="utf-8", errors="replace") as tty:
                answer = tty.readline()
        except OSError:
            print("", file=sys.stderr)
            raise UsageError("no terminal to confirm on: pass --yes to cancel without asking") from None
    return answer.strip().lower() in ("y", "yes")


def _client(args: argparse.Namespace) -> Client:
    from .client import Client
    from .config import base_url_from_env

    return Client(base_url=args.base_url or base_url_from_env(), max_rps=args.max_rps, reserve=args.reserve,
                  timeout=args.timeout, max_retries=args.max_retries)


def _check_out(path: str | None, option: str = "--out") -> None:
    """Refuse an output that cannot be written before anything is sent, not after: its folder
    must exist and take a new file (a probe is created and removed)."""
    from .errors import InputError
    from .frames import check_writable

    if path:
        try:
            check_writable(path)
        except InputError as exc:
            raise UsageError(f"{option}: {exc}") from None


def _emit(report: pd.DataFrame, args: argparse.Namespace, show: Callable[[], None] | None = None) -> int:
    """Write --out first (the report must not be lost to a console that cannot print it),
    then print the results. Returns the exit code, at least 1 when --out failed."""
    from .frames import export_csv

    code = _exit_code(report, getattr(args, "ignore_not_found", True))
    if args.out:
        try:
            path = export_csv(report, args.out, excel=args.excel, sep=_sep(args.out_sep))
        except Exception as exc:  # noqa: BLE001 - said below; the results still go to stdout
            print(f"smtoolkit: error: the report could not be written: {exc}", file=sys.stderr)
            code = max(code, EXIT_FAILED) if code != EXIT_INTERRUPTED else code
        else:
            print(f"report written to {path}", file=sys.stderr)
    try:
        (show or (lambda: _print_results(report, args)))()
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()  # the reader went away (`| head`): not an error of ours
    if report.attrs.get("halted") == "error" or report.attrs.get("error"):
        print(f"smtoolkit: the run halted on an error: {report.attrs.get('error')}", file=sys.stderr)
    return code


def _drop_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _print_results(report: pd.DataFrame, args: argparse.Namespace) -> None:
    from .frames import summarize

    if args.output == "csv":
        # "\n", not os.linesep: stdout is a text stream that already turns "\n" into the
        # platform's line end (on Windows "\r\n"; os.linesep there would give "\r\r\n").
        sys.stdout.write(report.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ", lineterminator="\n"))
    elif args.output == "json":
        sys.stdout.write(report.to_json(orient="records", date_format="iso", indent=1) + "\n")
    else:
        print(summarize(report).to_string())
        if report.attrs.get("query_counts"):
            print(_counts_line(report))
        failed = report[~report["outcome"].isin(_fine(getattr(args, "ignore_not_found", True)))]
        if len(failed):
            cols = [c for c in ("batch_id", "outcome", "error_code", "error_message") if c in failed.columns]
            print(f"\n{len(failed)} row(s) need attention:")
            print(_for_people(failed[cols].head(20)).to_string(index=False))


def _counts_line(report: pd.DataFrame) -> str:
    """What the cancel did to the queries of the batches that ended STOPPED (`--query-counts`)."""
    counted = report.dropna(subset=["queued"]) if "queued" in report.columns else report.iloc[:0]
    total = {k: int(counted[k].sum()) for k in ("queued", "running", "success", "failure")} if len(counted) else {}
    line = (f"\nqueries of {len(counted)} stopped batch(es): {total.get('success', 0)} had delivered results "
            f"(success), {total.get('queued', 0)} never ran (queued), {total.get('failure', 0)} failed or were "
            "cut off (failure)" + (f", {total['running']} still running" if total.get("running") else ""))
    missing = report.attrs.get("query_counts_missing") or 0
    if missing:
        line += f"\nquery counts missing for {missing} stopped batch(es): the status request failed or was not sent"
    return line


def _for_people(table: pd.DataFrame, width: int = 60) -> pd.DataFrame:
    """A table to print: every text cell on one line, without controls, at most `width` wide."""
    from .text import shorten

    out = table.copy()
    for i in range(out.shape[1]):
        col = out.iloc[:, i]
        if col.dtype == object or str(col.dtype).startswith("string"):
            out.isetitem(i, [shorten(v, width) if isinstance(v, str) else v for v in col])
    return out


def _sep(text: str) -> str:
    return "\t" if text == "tab" else text


def _exit_code(report: pd.DataFrame, ignore_not_found: bool = False) -> int:
    halted = report.attrs.get("halted")
    if halted == "interrupt":
        return EXIT_INTERRUPTED
    if halted in ("auth", "unreachable") or report["outcome"].isin(["unauthorized", "forbidden"]).any():
        return EXIT_CONFIG  # the key, or the network/base URL/proxy: fix it, then run again
    if halted == "error" or report.attrs.get("error"):
        return EXIT_FAILED  # the run ended early, or its journal is incomplete
    return EXIT_OK if report["outcome"].isin(_fine(ignore_not_found)).all() else EXIT_FAILED


def _fine(ignore_not_found: bool = True) -> list[str]:
    """Outcomes that are fine on the command line: a missing batch is not, unless asked
    (`--ignore-not-found`, as kubectl): a typo in an ID must not look like success."""
    from .core.outcomes import FINE, Outcome

    return [o.value for o in FINE if ignore_not_found or o is not Outcome.NOT_FOUND]


def _cancel(args: argparse.Namespace) -> int:
    from .api import cancel_batches
    from .core.ids import plan

    choosing = _choosing(args)  # checked before anything is read or sent
    ids = _retry_input(args) if args.retry else _read_ids(args)
    if ids is None:
        return EXIT_OK  # --retry with --dry-run only lists, or nothing to retry
    _check_out(args.out)
    if not args.dry_run:
        _check_out(args.journal, "--journal")
    client = _client(args)
    p = plan(ids[args.column].tolist())
    skipped = len(ids) - len(p.unique)
    what = "look up" if args.dry_run or choosing else "cancel"
    print(f"{what}: {len(p.unique)} batch(es) at {client.base_url}"
          + (" (then cancel only those that match)" if choosing and not args.dry_run else "")
          + (f" ({skipped} invalid or duplicate row(s) will not be sent)" if skipped else ""), file=sys.stderr)
    asker = _PlanAsker(args)
    if choosing and asker.asks:
        asker.check_terminal()  # before the look-ups: a refusal sends nothing
    elif not choosing and not args.dry_run and not args.yes and p.unique:
        if not _confirm(f"Cancel {len(p.unique)} batch(es)? Proceed? [y/N]", args.file == "-"):
            print("Nothing was cancelled.", file=sys.stderr)
            return EXIT_OK
    with client:
        report = cancel_batches(ids, column=args.column, client=client, workers=args.workers,
                                dry_run=args.dry_run, progress=not args.no_progress, wait=args.wait,
                                journal=args.journal, wait_for_budget=args.wait_for_budget,
                                budget_check_every=args.budget_check_every, **choosing,
                                on_plan=asker if choosing else None, query_counts=args.query_counts,
                                reason=args.reason)
    if asker.refused is not None:
        raise asker.refused
    if report.attrs.get("confirmed") is False:
        print("Nothing was cancelled.", file=sys.stderr)
        return EXIT_OK
    if args.query_counts and args.output != "table":
        print(_counts_line(report).strip(), file=sys.stderr)  # stdout holds the data
    return _emit(report, args)


def _choosing(args: argparse.Namespace) -> dict[str, Any]:
    """The filters of `cancel` (--only-status, --older-than, --description) as the keywords of
    `cancel_batches`, checked by the core's own `criteria` now: a misspelt status, an
    unreadable age or regex is refused (exit 2) before anything is read or sent."""
    from .core.select import criteria, description_regex

    if args.retry and (args.ids or args.file is not None):
        raise UsageError("--retry takes its rows from the report: give no IDs and no -f/--file with it")
    given = {"only_status": [s for s in args.only_status.split(",") if s.strip()] if args.only_status is not None
             else None,
             "older_than": args.older_than,
             "description": description_regex(args.description) if args.description is not None else None}
    chosen = {k: v for k, v in given.items() if v is not None}
    if chosen and args.retry:
        raise UsageError("--retry cancels exactly the rows its report says a retry could change: "
                         "drop --only-status/--older-than/--description")
    if args.only_status is not None and not chosen.get("only_status"):
        raise UsageError(f"--only-status {args.only_status!r} names no status: give QUEUED, RUNNING and/or STOPPED")
    if chosen:
        criteria(status=chosen.get("only_status"), older_than=chosen.get("older_than"),
                 description=chosen.get("description"))
    return chosen


def _retry_input(args: argparse.Namespace) -> pd.DataFrame | None:
    """The rows of the --retry report a retry could change, as the input of a cancel; with
    --dry-run they are only listed (None: nothing more to do)."""
    from .frames import read_report, retry_input, to_retry

    if args.column != "batch_id":
        raise UsageError("--retry reads the report's own batch_id column: drop --column")
    report = read_report(args.retry)
    rows = to_retry(report)
    counts = rows["outcome"].value_counts()
    why = ", ".join(f"{k} {v:,}" for k, v in counts.items())
    print(f"retry: {len(rows):,} of {len(report):,} row(s) in {args.retry} could change"
          + (f" ({why})" if why else ""), file=sys.stderr)
    if args.dry_run:
        _emit(rows.reset_index(drop=True), args, show=lambda: _print_retry(rows, args))
        return None
    if rows.empty:
        print("Nothing to retry: every row of the report is settled.", file=sys.stderr)
        return None
    return retry_input(rows)


def _print_retry(rows: pd.DataFrame, args: argparse.Namespace) -> None:
    if args.output == "table":
        cols = ["batch_id", "outcome", "error_code", "error_message"]
        print(_for_people(rows[cols]).to_string(index=False) if len(rows) else "(no rows to retry)")
    else:
        _print_results(rows.reset_index(drop=True), args)


class _PlanAsker:
    """`on_plan` for a cancel that chooses: print the plan on stderr, then ask on the terminal
    (unless --yes or --dry-run, or nothing is chosen). A terminal that cannot be found is kept
    in `refused` and raised after the run (nothing was cancelled)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.asks = not args.yes and not args.dry_run
        self.stdin_used = args.file == "-"
        self.refused: UsageError | None = None

    def check_terminal(self) -> None:
        if not (sys.stdin is not None and sys.stdin.isatty() and not self.stdin_used):
            try:
                with open(_console(), encoding="utf-8"):
                    pass
            except OSError:
                raise UsageError("no terminal to confirm on: pass --yes to cancel without asking") from None

    def __call__(self, plan: object) -> bool:
        print(str(plan), file=sys.stderr, flush=True)
        if not self.asks or not getattr(plan, "to_cancel", 0):
            return True
        try:
            return _confirm(f"Cancel {getattr(plan, 'to_cancel', 0)} batch(es)? Proceed? [y/N]", self.stdin_used)
        except UsageError as exc:
            self.refused = exc
            return False


def _status(args: argparse.Namespace) -> int:
    from .api import get_batches

    ids = _read_ids(args)
    _check_out(args.out)
    with _client(args) as client:
        report = get_batches(ids, column=args.column, client=client, workers=args.workers,
                             progress=not args.no_progress, query_counts=args.query_counts)
    if args.output == "table":
        cols = [c for c in ("batch_id", "outcome", "status_code", "description", "start_time", "end_time",
                            "cancel_time", "queued", "running", "success", "failure", "error_code")
                if c in report.columns]
        return _emit(report, args, show=lambda: print(_for_people(report[cols]).to_string(index=False)))
    return _emit(report, args)


def _journal(args: argparse.Namespace) -> int:
    import json

    from .journal import survey

    facts = survey(args.file)
    if args.output == "json":
        sys.stdout.write(json.dumps(facts, indent=1, ensure_ascii=False) + "\n")
    else:
        print("\n".join(_journal_lines(facts)))
    return EXIT_OK


def _journal_lines(facts: dict[str, object]) -> list[str]:
    """`smtoolkit journal` as people read it: one fact a line, text shortened and made printable."""
    from .text import shorten

    def text(value: object, width: int = 100) -> str:
        return shorten(value, width) if isinstance(value, str) else "-"

    held, pid = facts["held"], facts["holder_pid"]
    in_use = ("unknown (this OS does not tell without taking the lock)" if held is None
              else f"yes, by process {pid}" if held and pid else "yes" if held else "no")
    outcomes = facts["outcomes"] if isinstance(facts["outcomes"], dict) else {}
    lines = [f"journal: {text(facts['journal'], 200)}", f"base URL: {text(facts['base_url'], 200)}",
             f"settled: {facts['settled']} batch(es), {facts['final']} of them final (not sent again on a resume)"]
    lines += [f"  {name:<16} {count}" for name, count in outcomes.items()]
    lines += [f"last written: {facts['last_written_at']} ({facts['seconds_since_last_write']} s ago)",
              f"in use by a run now: {in_use}",
              f"latest run: started {text(facts['run_started_at'])} by {text(facts['operator'])}"
              + (f" (process {facts['run_pid']})" if facts["run_pid"] else ""),
              f"reason: {text(facts['reason'], 200)}"]
    return lines


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if not args.long:
        _check_out(args.out or DEMO_REPORT)
    if args.long:
        from .demo import run_long_demo

        return run_long_demo(progress=not args.no_progress)
    return run_demo(out=args.out or DEMO_REPORT, progress=not args.no_progress)


def _sandbox(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .sandbox import Faults, Sandbox

    _check_out(args.ids_out, "--ids-out")
    try:  # the sandbox shares no code with the client: its refusals are plain ValueErrors
        faults = Faults(latency=args.latency, error_rate=args.error_rate, throttle_rate=args.throttle_rate)
        sb = Sandbox(api_key=args.api_key, host=args.host, port=args.port, hourly_limit=args.hourly_limit,
                     budget_window=args.budget_window, budget_mode=args.budget_mode,
                     per_second=args.per_second, tick=args.tick or None, stop_delay=args.stop_delay,
                     already_stopped="conflict" if args.conflict else "ok", faults=faults, seed=args.seed,
                     allow_remote=args.allow_remote)
        sb.start()
    except (ValueError, OSError) as exc:
        raise ConfigError(f"cannot start the sandbox: {exc}") from None
    try:
        ids = sb.create_batches(args.batches) if args.batches else []
        if args.ids_out:
            with open(args.ids_out, "w", encoding="utf-8", newline="") as fh:
                fh.write("batch_id\n")
                fh.writelines(f"{i}\n" for i in ids)
        print(f"Sandbox listening. Base URL: {sb.base_url}", flush=True)
        print(f"API key: {sb.api_key}", flush=True)
        print(f"Batches created: {len(ids)}" + (f" (IDs in {args.ids_out})" if args.ids_out else ""), flush=True)
        print(f"Control API: {sb.url}/_sandbox  (Ctrl-C to stop)", flush=True)
        print(f"Budget: {args.hourly_limit} requests per {args.budget_window:g} s window ({args.budget_mode}), "
              f"{args.per_second} per second", flush=True)
        sb.serve_forever()
    except KeyboardInterrupt:
        print("sandbox stopped", file=sys.stderr)
    finally:
        sb.close()
    return EXIT_OK


NOTEBOOKS = ("cleanup.ipynb", "panel.ipynb")


def _notebook(args: argparse.Namespace) -> int:
    """Write the shipped notebooks into a folder; nothing is written if one would be overwritten
    without --force."""
    from importlib.resources import files
    from pathlib import Path

    folder = Path(args.dir)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{str(folder)!r} is a file, not a folder: give a folder for the notebooks")
    targets = [folder / name for name in NOTEBOOKS]
    for target in targets:
        if target.is_dir():
            raise UsageError(f"{str(target)!r} is a folder: remove it or choose another folder")
        if target.exists() and not args.force:
            raise UsageError(f"{str(target)!r} already exists: pass --force to overwrite it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for target in targets:
            target.write_bytes((files("smtoolkit") / "notebooks" / target.name).read_bytes())
            print(f"wrote {target}")
    except OSError as exc:
        raise UsageError(f"cannot write into {str(folder)!r}: {exc.strerror or exc}") from None
    print(f"open {targets[0]} in Jupyter: it runs against a local sandbox until SUPERMETRICS_API_KEY and "
          "SUPERMETRICS_BASE_URL are set", file=sys.stderr)
    return EXIT_OK


def _panel(args: argparse.Namespace) -> int:
    from .ui.server import CannotServe, serve, serve_plan

    try:
        settings = serve_plan(host=args.host, port=args.port, token=args.token, no_token=args.no_token,
                        ask_key=args.ask_key, audit=args.audit, base_url=args.base_url,
                        max_pages=args.max_pages, max_pages_per_visitor=args.max_pages_per_visitor,
                        connect_timeout=args.connect_timeout, ask_reason=args.ask_reason)
        return serve(settings)
    except CannotServe as exc:
        raise UsageError(str(exc)) from None


def _number(text: str, ok: Callable[[float], bool], what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, not {text}")
    return value


def _seconds(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """An option's parser: a number of seconds in [low, high] (or (low, high]), said in the error."""
    from .core.bounds import seconds_text, within

    lowest = f"greater than {low:g}" if low_open else f"from {low:g}"

    def parse(text: str) -> float:
        return _number(text, lambda v: within(v, low, high, low_open=low_open),
                       f"{lowest} to {high:g} ({seconds_text(high)})")
    return parse


def _rate(text: str) -> float:
    from .core.bounds import MAX_RPS, MIN_RPS

    return _number(text, lambda v: MIN_RPS <= v <= MAX_RPS, f"from {MIN_RPS:g} to {MAX_RPS:g} requests per second")


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def _duration(text: str) -> float:
    """Seconds from '5400', '90s', '90m', '3h' or '1h30m', at most MAX_WAIT."""
    from .core.bounds import MAX_WAIT, seconds_text

    m = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or m is None or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: use seconds (5400) or 90s, 90m, 3h, 1h30m")
    h, mins, secs = (float(g) if g else 0.0 for g in m.groups())
    seconds = h * 3600 + mins * 60 + secs
    if not seconds <= MAX_WAIT:  # also inf, from a thousand-digit number
        raise argparse.ArgumentTypeError(f"must be at most {seconds_text(MAX_WAIT)} ({MAX_WAIT:g} s), not {text}")
    return seconds


def _reason(text: str) -> str:
    from .core.record import check_reason

    kept, problem = check_reason(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    if kept is None:
        raise argparse.ArgumentTypeError("must not be empty")
    return kept


def _count(text: str) -> int:
    return int(_number(text, lambda v: v >= 0 and v == int(v), "a whole number >= 0"))


def _retries(text: str) -> int:
    return int(_number(text, lambda v: 0 <= v <= 100 and v == int(v), "a whole number from 0 to 100"))


def _workers(text: str) -> int:
    return int(_number(text, lambda v: 1 <= v <= MAX_WORKERS and v == int(v), f"a whole number from 1 to {MAX_WORKERS}"))


def build_parser() -> argparse.ArgumentParser:
    """The `smtoolkit` parser: one subcommand per command, each built by its own function."""
    parser = argparse.ArgumentParser(
        prog="smtoolkit", description="Cancel Supermetrics query batches in bulk.",
        epilog="The API key is read only from $SUPERMETRICS_API_KEY. Exit codes: 0 all fine, 1 some rows "
               "failed or were skipped (or the run halted on an error, or --out could not be written), "
               "2 usage error, 3 authentication/configuration error (or the API could not be reached: the run "
               "stopped), 4 unexpected error (a bug), 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"smtoolkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_cancel, _add_status, _add_journal, _add_demo, _add_notebook, _add_sandbox, _add_panel):
        add(sub)
    return parser


def _add_ids_and_connection(p: argparse.ArgumentParser) -> None:
    """The options `cancel` and `status` share: which IDs, how to reach the API, what to write."""
    from .core.bounds import MAX_TIMEOUT

    p.add_argument("ids", nargs="*", metavar="ID", help="batch IDs")
    p.add_argument("-f", "--file", metavar="FILE", help="CSV/TSV file with the IDs ('-' reads stdin)")
    p.add_argument("--column", default="batch_id", help="the column holding the IDs (default batch_id)")
    p.add_argument("--encoding", default=None,
                   help="the file's encoding (default: UTF-8 with or without BOM, UTF-16 with BOM, "
                        "else Windows-1252, said in a note)")
    p.add_argument("--sep", default=None, choices=(",", ";", "tab", "|"),
                   help="the file's separator (default: detected from its header line)")
    p.add_argument("--base-url", default=None,
                   help="API base URL (default $SUPERMETRICS_BASE_URL or the Supermetrics API)")
    p.add_argument("--workers", type=_workers, default=4, help=f"parallel requests, 1 to {MAX_WORKERS} (default 4)")
    p.add_argument("--max-rps", type=_rate, default=20.0, help="requests per second at most (default 20)")
    p.add_argument("--reserve", type=_count, default=None,
                   help="hourly requests left untouched for production (default 10%% of the limit)")
    p.add_argument("--timeout", type=_seconds(0, MAX_TIMEOUT, low_open=True), default=30.0,
                   help="seconds one request may take in total, answer included (default 30)")
    p.add_argument("--max-retries", type=_retries, default=5,
                   help="retries of a request after 429, 5xx or a lost connection, 0 to 100 (default 5)")
    p.add_argument("-o", "--output", choices=("table", "csv", "json"), default="table",
                   help="what goes to stdout (default table: a summary)")
    p.add_argument("--out", metavar="FILE", default=None, help="also write the full report as CSV")
    p.add_argument("--excel", action="store_true",
                   help="write --out for Excel: UTF-8 with BOM, CRLF, times as YYYY-MM-DD HH:MM:SS (UTC)")
    p.add_argument("--out-sep", default=",", choices=(",", ";", "tab", "|"),
                   help="separator of --out (default ','; ';' for Excel in many European locales)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _add_cancel(sub: _Subparsers) -> None:
    from .core.bounds import MAX_CHECK_EVERY, MAX_WAIT

    p = sub.add_parser("cancel", help="cancel batches (asks to confirm unless --yes)")
    _add_ids_and_connection(p)
    p.add_argument("--journal", metavar="FILE", default=None,
                   help="record results as they arrive; re-running skips batches already final there")
    p.add_argument("--dry-run", action="store_true", help="only look the batches up (GET); cancel nothing")
    p.add_argument("--wait", type=_seconds(0, MAX_WAIT), default=None, metavar="SECONDS",
                   help="after a cancel, poll until each batch reads STOPPED, up to this long")
    p.add_argument("--wait-for-budget", type=_duration, default=None, metavar="DURATION",
                   help="at the budget reserve, wait for the hourly budget to come back instead of skipping "
                        "the rest, up to this long in total (seconds, or 90m, 3h, 1h30m)")
    p.add_argument("--budget-check-every", type=_seconds(0, MAX_CHECK_EVERY, low_open=True), default=60.0,
                   metavar="SECONDS",
                   help="while waiting for the budget, look (one GET) at most this often (default 60)")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--ignore-not-found", action="store_true",
                   help="batches that do not exist (not_found) count as fine for the exit code")
    choose = p.add_argument_group(
        "choosing by what each batch is",
        "With any of these, every batch is looked up first (GET, paced), the plan is printed on stderr "
        "(matches by status, rows left alone, the requests, the budget, an estimate) and confirmed, then only "
        "the matches are cancelled; the others are reported left_alone with the status seen. A bad value is "
        "refused (exit 2) before anything is sent.")
    choose.add_argument("--only-status", metavar="STATUSES", default=None,
                        help="only batches in these statuses, comma-separated: QUEUED,RUNNING,STOPPED")
    choose.add_argument("--older-than", metavar="AGE", default=None,
                        help="only batches scheduled more than AGE ago (seconds, or 90m, 2h, 1h30m, 1d)")
    choose.add_argument("--description", metavar="REGEX", default=None,
                        help="only batches whose description matches this regular expression (case-insensitive)")
    p.add_argument("--retry", metavar="REPORT", default=None,
                   help="cancel exactly the rows of an earlier report (plain or --excel CSV) whose outcome a "
                        "retry could change; with --dry-run, only list them")
    p.add_argument("--query-counts", action="store_true",
                   help="for every batch that ends STOPPED, one more request: its per-query counts "
                        "(queued/running/success/failure columns; the summary says how many queries had delivered "
                        "results and how many never ran)")
    p.add_argument("--reason", type=_reason, default=None, metavar="TEXT",
                   help="why these batches are cancelled: kept with your OS user name in the journal, the "
                        "report's attrs and a 'reason' column of the report")
    p.set_defaults(func=_cancel)


def _add_status(sub: _Subparsers) -> None:
    p = sub.add_parser("status", help="look batches up without changing anything")
    _add_ids_and_connection(p)
    p.add_argument("--query-counts", "--with-progress", dest="query_counts", action="store_true",
                   help="add per-query counts queued/running/success/failure (one more request each; "
                        "--with-progress is the old name)")
    p.set_defaults(func=_status)


def _add_journal(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "journal", help="show how far a cleanup's journal got, without disturbing the run writing it",
        description="Read a journal written by 'smtoolkit cancel --journal FILE' without taking its lock: results "
                    "so far by outcome, batches settled, when it was last written, whether a run holds it now (with "
                    "its process ID where the OS tells: Linux), and the latest run's reason and operator.",
        epilog="Exit codes: 0 read (whether or not a run holds it); 2 the file is missing, cannot be read, or is not "
               "a journal (or one for a newer smtoolkit); 4 unexpected error. With -o json the keys are: journal, "
               "base_url, settled, final, outcomes, last_written_at, seconds_since_last_write, held (true, false or "
               "null: unknown), holder_pid, reason, operator, run_started_at, run_pid.")
    p.add_argument("file", metavar="FILE", help="the journal file")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table",
                   help="what goes to stdout (default table; json: one object with stable keys, for scripts)")
    p.set_defaults(func=_journal)


def _add_demo(sub: _Subparsers) -> None:
    p = sub.add_parser("demo", help="start a sandbox, cancel a realistic mix of batches, write a report")
    p.add_argument("--out", metavar="FILE", default=None, help=f"report CSV (default {DEMO_REPORT})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--long", action="store_true",
                   help="instead: a long cleanup played in seconds, waiting twice for the hourly budget")
    p.set_defaults(func=_demo)


def _add_notebook(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "notebook", help="write the cleanup and panel notebooks into a folder, to open in Jupyter",
        description="Write cleanup.ipynb (a whole cleanup session) and panel.ipynb (the one-off cancel panel) "
                    "into DIR, created if missing. Both run against a local sandbox until SUPERMETRICS_API_KEY "
                    "and SUPERMETRICS_BASE_URL are set.",
        epilog="Exit codes: 0 written; 2 refused, nothing written (a notebook is already there without --force, "
               "DIR is a file, or DIR cannot be written).")
    p.add_argument("dir", nargs="?", default=".", metavar="DIR", help="the folder (default: the current one)")
    p.add_argument("--force", action="store_true", help="overwrite notebooks already in DIR")
    p.set_defaults(func=_notebook)


def _add_sandbox(sub: _Subparsers) -> None:
    p = sub.add_parser("sandbox", help="run a local sandbox of the Supermetrics batch API until Ctrl-C")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    p.add_argument("--api-key", default=None, help="the valid API key (default: a random one, printed)")
    p.add_argument("--batches", type=int, default=0, help="create this many RUNNING batches at start")
    p.add_argument("--ids-out", default=None, metavar="FILE", help="write the created batch IDs to this CSV")
    p.add_argument("--per-second", type=int, default=20, help="per-second limit per key (default 20)")
    p.add_argument("--hourly-limit", type=int, default=5000, help="hourly budget per key (default 5000)")
    p.add_argument("--budget-window", type=_seconds(0, SANDBOX_MAX_WINDOW, low_open=True), default=3600.0,
                   metavar="SECONDS",
                   help="length of the budget window (default 3600; 10 plays an hour in 10 seconds)")
    p.add_argument("--budget-mode", choices=("fixed", "rolling"), default="fixed",
                   help="fixed: the whole budget returns when the window turns over; rolling: each request "
                        "is given back a window after it was made (default fixed)")
    p.add_argument("--tick", type=_seconds(0, SANDBOX_MAX_DELAY), default=0.0,
                   help="seconds per progression step (default: only when told)")
    p.add_argument("--stop-delay", type=_seconds(0, SANDBOX_MAX_DELAY), default=0.0,
                   help="seconds from a cancel until STOPPED (default 0)")
    p.add_argument("--conflict", action="store_true", help="answer 409 to cancelling a STOPPED batch")
    p.add_argument("--latency", type=_seconds(0, SANDBOX_MAX_LATENCY), default=0.0,
                   help="seconds added to every answer")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of answers that are 5xx")
    p.add_argument("--throttle-rate", type=float, default=0.0, help="share of answers that are 429")
    p.add_argument("--seed", type=int, default=0, help="seed for IDs and faults")
    p.add_argument("--allow-remote", action="store_true", help="permit a --host that is not loopback")
    p.set_defaults(func=_sandbox)


def _add_panel(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "panel", help="serve the cancel panel as a web page for colleagues, until Ctrl-C",
        description="Serve the cancel panel as a web page (Voila, from the browser extra). It prints the URL to "
                    "open, with a random access token unless --token/$SMTK_PANEL_TOKEN gives one; every look-up "
                    "and cancel made on it is appended to an audit file. Use TLS or JupyterHub for anything "
                    "beyond a trusted network.",
        epilog="Exit codes: 0 stopped with Ctrl-C; 2 refused (a host other than loopback without a token, a bad "
               "token, port in use, an unwritable audit file, a limit below 1); 3 no API key (without --ask-key), "
               "a bad base URL, or Voila not installed.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs a token)")
    p.add_argument("--port", type=int, default=8866, help="port (default 8866; 0: a free one, printed)")
    p.add_argument("--token", default=None,
                   help="the access token (default: $SMTK_PANEL_TOKEN, else a random one printed with the URL; "
                        "prefer the variable: a command line is visible to other users)")
    p.add_argument("--no-token", action="store_true", help="no access token: only allowed on a loopback --host")
    p.add_argument("--ask-key", action="store_true",
                   help="every visitor types their own API key (default: the server's $SUPERMETRICS_API_KEY)")
    p.add_argument("--ask-reason", action="store_true",
                   help="the page has a reason box: a cancel is refused until the visitor gives a reason, and "
                        "the reason goes into the audit line")
    p.add_argument("--audit", metavar="FILE", default=None,
                   help="append every look-up and cancel here (default smtoolkit-panel-audit.jsonl in the "
                        "current folder)")
    p.add_argument("--base-url", default=None,
                   help="API base URL (default $SUPERMETRICS_BASE_URL or the Supermetrics API)")
    p.add_argument("--max-visitors", "--max-pages", dest="max_pages", metavar="N", type=int, default=MAX_PAGES,
                   help=f"at most N pages open at once, from all visitors (default {MAX_PAGES}); each is a kernel "
                        "of about 100 MiB. Past it a page is answered 503 'Too many open pages'")
    p.add_argument("--max-pages-per-visitor", metavar="N", type=int, default=MAX_PAGES_PER_VISITOR,
                   help=f"at most N pages open from one address (default {MAX_PAGES_PER_VISITOR}); behind a proxy "
                        "every visitor has the proxy's address: raise it to --max-visitors there")
    # Seconds a page may take to connect before its kernel is ended; short values are for tests.
    p.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT, help=argparse.SUPPRESS)
    p.set_defaults(func=_panel)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    import warnings

    from .errors import ConfigError, InputError

    if not _usable_streams() and hasattr(args, "no_progress"):
        args.no_progress = True  # no stderr to draw on
    _tolerant_streams()
    # Warnings are the CLI's messages: once each, as one line on stderr, no source line.
    warnings.showwarning = lambda message, *a, **k: print(f"warning: {message}", file=sys.stderr)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, InputError) as exc:
        print(f"smtoolkit: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"smtoolkit: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:  # noqa: BLE001 - a bug: say so, not "configuration error"
        from .runner import describe_error

        print(f"smtoolkit: unexpected error (please report it): {describe_error(exc)}", file=sys.stderr)
        return EXIT_INTERNAL


def _usable_streams() -> bool:
    """A closed stdout or stderr (`>&-`, `2>&-`, a service, pythonw) becomes the null device: no
    printout, never a crash. Returns False when there was no stderr (so: no progress bar)."""
    import os

    # Closed descriptors 0-2 are filled first, so that no file opened later (the journal, the
    # report) becomes "stderr" for whatever writes to descriptor 2.
    for _ in range(3):
        try:
            fd = os.open(os.devnull, os.O_RDWR)
        except OSError:
            break
        if fd > 2:
            os.close(fd)
            break
    had_stderr = sys.stderr is not None
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    return had_stderr


def _tolerant_streams() -> None:
    """Text the console's encoding cannot show (a cp1252 console and '東京', a name from the
    command line with undecodable bytes) is replaced, never fatal."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", "strict") in ("strict", "surrogateescape"):
            try:
                reconfigure(errors="replace")
            except (ValueError, OSError):
                pass
