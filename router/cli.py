"""The `hybrid-router` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from .config import RouterConfig, load_config
from .errors import RouterError
from .logs import configure_logging

DEFAULT_CONFIG = "router.toml"


def _load(args: argparse.Namespace) -> RouterConfig:
    path = args.config or os.environ.get("HYBRID_ROUTER_CONFIG")
    if path:
        return load_config(path)
    if Path(DEFAULT_CONFIG).exists():
        return load_config(DEFAULT_CONFIG)
    return RouterConfig.default()


def _with_router(args: argparse.Namespace, body: Callable[[Any], Coroutine[Any, Any, int]]) -> int:
    from .client import Router

    async def run() -> int:
        async with Router(_load(args), scheduler=False) as router:
            return await body(router)

    return asyncio.run(run())


# ---------------------------------------------------------------------------- commands


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if args.live and not os.environ.get("ANTHROPIC_API_KEY"):
        print("hybrid-router demo --live needs ANTHROPIC_API_KEY in the environment", file=sys.stderr)
        return 2
    result = asyncio.run(
        run_demo(total=args.requests, live=args.live, db_path=Path(args.db) if args.db else None)
    )
    return 0 if result.failed == 0 and result.mismatched == 0 else 1


def cmd_emulate(args: argparse.Namespace) -> int:
    from .emulator import serve

    try:
        asyncio.run(serve(args.host, args.port, args.batch_seconds, args.seed))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .policy import format_effective_policy

    path = args.config_file or args.config or DEFAULT_CONFIG
    config = load_config(path)
    print(format_effective_policy(config, str(path)))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    async def body(router: Any) -> int:
        counts = await router.store.state_counts()
        batches = await router.store.open_batches()
        print(f"store {router.config.store.path}")
        for state in ("pending", "submitting", "submitted", "escalated", "succeeded", "failed"):
            print(f"  {state:<11} {counts.get(state, 0)}")
        print(f"open batches {len(batches)}")
        for b in batches:
            print(f"  {b.api_id or '(creating)'}  {b.state}  {b.request_count} requests")
        return 0

    return _with_router(args, body)


def cmd_flush(args: argparse.Namespace) -> int:
    async def body(router: Any) -> int:
        report = await router.flush(args.latency)
        print(f"flushed {report.requests} requests into {len(report.batches)} batch(es)")
        for batch_id in report.batches:
            print(f"  {batch_id}")
        if report.released or report.uncertain:
            print(f"  {report.released} put back to pending, {report.uncertain} batch(es) to reconcile")
        if args.poll:
            polled = await router.poll()
            print(f"polled {polled.polled}, ended {len(polled.ended)}, delivered {polled.delivered}")
        return 0

    return _with_router(args, body)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import cost_summary

    async def body(router: Any) -> int:
        summary = await cost_summary(router.store, router.config)
        print(summary.render())
        return 0

    return _with_router(args, body)


def cmd_enqueue(args: argparse.Namespace) -> int:
    from .jsonl import describe, enqueue_file

    async def body(router: Any) -> int:
        report = await enqueue_file(router, args.file, latency=args.latency, tag=args.tag)
        print(describe(report, args.file))
        return 0

    return _with_router(args, body)


def cmd_results(args: argparse.Namespace) -> int:
    from .outcomes import outcome_of

    if args.out is not None or args.keys:
        return _export_results(args)
    if args.key is None:
        print("hybrid-router results: give a KEY, or --out FILE (with --keys K ... to pick)", file=sys.stderr)
        return 2

    async def body(router: Any) -> int:
        row = await router.results.status(args.key)
        if row.state not in ("succeeded", "failed"):
            print(json.dumps({"key": row.key, "state": row.state, "attempts": row.attempts}))
            return 3
        outcome = outcome_of(row)
        if isinstance(outcome, BaseException):
            print(json.dumps({"key": row.key, "state": row.state, "error": str(outcome)}))
            return 1
        print(outcome.model_dump_json())
        return 0

    return _with_router(args, body)


def _export_results(args: argparse.Namespace) -> int:
    from .jsonl import export_results

    keys = ([args.key] if args.key else []) + list(args.keys or [])

    async def body(router: Any) -> int:
        if args.out in (None, "-"):
            report = await export_results(router, sys.stdout.buffer, keys=keys or None)
            sys.stdout.buffer.flush()
        else:
            with open(args.out, "wb") as out:  # noqa: ASYNC230 - a CLI writing its one output file
                report = await export_results(router, out, keys=keys or None)
        where = "stdout" if args.out in (None, "-") else args.out
        print(f"wrote {report.written} result(s) to {where}", file=sys.stderr)
        for key, state in report.unfinished.items():
            print(f"  {key}: not finished ({state})", file=sys.stderr)
        if report.unknown:
            print(f"  unknown key(s): {', '.join(report.unknown)}", file=sys.stderr)
            return 2
        return 3 if report.unfinished else 0

    return _with_router(args, body)


def cmd_daemon(args: argparse.Namespace) -> int:
    from .daemon import Daemon
    from .units import parse_duration

    config = _load(args)
    try:
        ttl = parse_duration(args.lease_ttl) if args.lease_ttl else None
    except ValueError as exc:
        raise RouterError(f"--lease-ttl: {exc}") from None
    return asyncio.run(Daemon(config, standby=args.standby, lease_ttl=ttl).run())


def cmd_purge(args: argparse.Namespace) -> int:
    import time

    from .units import format_duration, parse_duration

    try:
        given = parse_duration(args.older_than) if args.older_than else None
    except ValueError as exc:  # before the store is opened: a typo must not delete anything
        raise RouterError(f"--older-than: {exc}") from None

    async def body(router: Any) -> int:
        age = given if given is not None else router.config.store.retention
        report = await router.store.purge(before=time.time() - age)
        print(
            f"purged {report.requests} finished requests, {report.batches} done batches and"
            f" {report.ledger} ledger rows older than {format_duration(age)}"
        )
        return 0

    return _with_router(args, body)


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybrid-router",
        description="Route Anthropic API calls between real time and the Message Batches API.",
    )
    parser.add_argument(
        "--config", "-c", help=f"config file (default: $HYBRID_ROUTER_CONFIG or ./{DEFAULT_CONFIG})"
    )
    parser.add_argument(
        "--log-level", default=None, help="debug, info, warning (default; info for daemon), error"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run a mixed workload offline against the built-in emulator")
    p.add_argument("--requests", type=int, default=1200, help="how many requests (default 1200)")
    p.add_argument("--db", help="store path (default: a temporary file)")
    p.add_argument(
        "--live", action="store_true", help="use the real API (needs ANTHROPIC_API_KEY; costs money)"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("emulate", help="serve the Anthropic API emulator on 127.0.0.1")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--batch-seconds", type=float, default=60.0, help="batch turnaround (default 60)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_emulate)

    p = sub.add_parser("validate", help="check a config file and print the effective policy")
    p.add_argument("config_file", nargs="?", help="the file (default: --config or ./router.toml)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("daemon", help="flush, poll, reconcile, escalate and purge one database until stopped")
    p.add_argument("--standby", action="store_true", help="wait for the lease instead of exiting (code 3)")
    p.add_argument("--lease-ttl", help="override [router] lease_ttl, e.g. 15s")
    p.set_defaults(func=cmd_daemon)

    p = sub.add_parser("purge", help="delete finished requests, done batches and ledger rows past an age")
    p.add_argument("--older-than", help="a duration such as 30d (default: [store] retention)")
    p.set_defaults(func=cmd_purge)

    p = sub.add_parser("status", help="requests by state and open batches")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("flush", help="send pending requests to the Batch API now")
    p.add_argument("--latency", help="only this class")
    p.add_argument("--poll", action="store_true", help="also poll open batches afterwards")
    p.set_defaults(func=cmd_flush)

    p = sub.add_parser("report", help="cost per lane against sending everything real time")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "enqueue", help="store the requests of a Batch API JSONL file (custom_id + params per line)"
    )
    p.add_argument("file", help='one {"custom_id": ..., "params": {...}} per line; custom_id is the key')
    p.add_argument("--latency", help="batch class (default: the policy's choice per request)")
    p.add_argument("--tag", help="tag every request")
    p.set_defaults(func=cmd_enqueue)

    p = sub.add_parser(
        "results",
        help="print the result of a request by key (Message JSON), or write results as Batch API JSONL",
    )
    p.add_argument("key", nargs="?", help="one request's key: print its Message JSON")
    p.add_argument("--out", help='write {"custom_id": key, "result": ...} lines to this file ("-": stdout)')
    p.add_argument("--keys", nargs="+", metavar="KEY", help="only these keys (default: every finished one)")
    p.set_defaults(func=cmd_results)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        configure_logging(args.log_level or ("info" if args.command == "daemon" else "warning"))
    except ValueError as exc:
        parser.error(str(exc))
    try:
        code: int = args.func(args)
    except RouterError as exc:  # expected failures: a clear message, no traceback
        print(f"hybrid-router: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
