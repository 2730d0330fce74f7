"""The `smtoolkit` command: a thin shell over the library.

Results go to stdout; prompts, progress and warnings to stderr. Errors become one message
and an exit code in `main`, nowhere else.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ._version import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _sandbox(args: argparse.Namespace) -> int:
    from .sandbox import Faults, Sandbox

    faults = Faults(latency=args.latency, error_rate=args.error_rate, throttle_rate=args.throttle_rate)
    sb = Sandbox(api_key=args.api_key, host=args.host, port=args.port, hourly_limit=args.hourly_limit,
                 per_second=args.per_second, tick=args.tick or None, stop_delay=args.stop_delay,
                 already_stopped="conflict" if args.conflict else "ok", faults=faults, seed=args.seed,
                 allow_remote=args.allow_remote)
    sb.start()
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
        sb.serve_forever()
    except KeyboardInterrupt:
        print("sandbox stopped", file=sys.stderr)
    finally:
        sb.close()
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smtoolkit", description="Cancel Supermetrics query batches in bulk.")
    parser.add_argument("--version", action="version", version=f"smtoolkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("sandbox", help="run a local sandbox of the Supermetrics batch API until Ctrl-C")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    p.add_argument("--api-key", default=None, help="the valid API key (default: a random one, printed)")
    p.add_argument("--batches", type=int, default=0, help="create this many RUNNING batches at start")
    p.add_argument("--ids-out", default=None, metavar="FILE", help="write the created batch IDs to this CSV")
    p.add_argument("--per-second", type=int, default=20, help="per-second limit per key (default 20)")
    p.add_argument("--hourly-limit", type=int, default=5000, help="hourly budget per key (default 5000)")
    p.add_argument("--tick", type=float, default=0.0, help="seconds per progression step (default: only when told)")
    p.add_argument("--stop-delay", type=float, default=0.0, help="seconds from a cancel until STOPPED (default 0)")
    p.add_argument("--conflict", action="store_true", help="answer 409 to cancelling a STOPPED batch")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of answers that are 5xx")
    p.add_argument("--throttle-rate", type=float, default=0.0, help="share of answers that are 429")
    p.add_argument("--seed", type=int, default=0, help="seed for IDs and faults")
    p.add_argument("--allow-remote", action="store_true", help="permit a --host that is not loopback")
    p.set_defaults(func=_sandbox)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ValueError as exc:  # ConfigError, InputError and bad settings
        print(f"smtoolkit: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
