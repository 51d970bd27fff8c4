"""The `hybrid-router` command line."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import RouterConfig, load_config
from .errors import ConfigError, RouterError, StoreError
from .logs import configure_logging
from .presets import EXAMPLE, load_preset, preset_names, write_config
from .process import freeze_imports

DEFAULT_CONFIG = "router.toml"
CONFIG_ENV = "HYBRID_ROUTER_CONFIG"
_NO_CONFIG = f"no --config, ${CONFIG_ENV} or ./{DEFAULT_CONFIG}"


def _named(given: str, where: str | None = None) -> Path:
    """A config file the user named: it must exist (a typo must not mean the defaults)."""
    if not Path(given).exists():
        named = f" (named by {where})" if where else ""
        raise ConfigError(
            f"{given}: config file not found{named}; `hybrid-router init --path {given}` writes one"
        )
    return Path(given)


def _config_file(args: argparse.Namespace) -> Path | None:
    """The file the lookup rule names, or None for the built-in defaults."""
    if args.config:
        return _named(args.config, "--config")
    if os.environ.get(CONFIG_ENV):
        return _named(os.environ[CONFIG_ENV], f"${CONFIG_ENV}")
    return Path(DEFAULT_CONFIG) if Path(DEFAULT_CONFIG).exists() else None


def _load(args: argparse.Namespace, *, announce: bool = True) -> RouterConfig:
    path = _config_file(args)
    if path is not None:
        return load_config(path)
    config = RouterConfig.default()
    if announce:  # a forgotten config silently means another database and another policy
        print(f"hybrid-router: {_defaults_note(config)}", file=sys.stderr)
    return config


def _defaults_note(config: RouterConfig) -> str:
    return f"{_NO_CONFIG}: using the built-in defaults (store {Path(config.store.path).absolute()})"


def _require_api_key(command: str) -> None:
    """Refuse before anything is claimed: the SDK cannot authenticate a batch create without a key."""
    if not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")):
        raise RouterError(
            f"ANTHROPIC_API_KEY is not set; {command} needs it to send batches"
            " (for `hybrid-router emulate`, any value will do)"
        )


# Commands that read (or purge) what is stored: a mistyped path must not create an empty database.
EXISTING_STORE_ONLY = frozenset({"status", "report", "results", "purge", "webhooks"})


def _with_router(args: argparse.Namespace, body: Callable[[Any], Coroutine[Any, Any, int]]) -> int:
    from .client import Router

    create = args.command not in EXISTING_STORE_ONLY
    defaults = _config_file(args) is None
    # A reading command on the defaults' store says so in its one line, if that store is missing.
    config = _load(args, announce=create or not defaults)

    async def run() -> int:
        async with Router(config, scheduler=False, create_store=create) as router:
            return await body(router)

    try:
        return asyncio.run(run())
    except StoreError as exc:
        if create or not defaults:
            raise
        raise StoreError(f"{exc} ({_defaults_note(config)})") from None


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
    from .emulator import DEFAULT_BATCH_PARALLELISM, serve

    if not 0 <= args.port <= 65535:
        raise RouterError(f"emulate --port {args.port}: expected a port from 0 to 65535 (0: any free one)")
    width = args.batch_parallelism if args.batch_parallelism is not None else DEFAULT_BATCH_PARALLELISM
    if width < 1:
        raise RouterError(
            f"emulate --batch-parallelism {width}: expected a wave width of at least 1"
            " (1: one request at a time)"
        )
    try:
        asyncio.run(serve(args.host, args.port, args.batch_seconds, args.seed, batch_parallelism=width))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # the bind: a taken port, an address not on this host
        hint = "; choose another --port (0: any free one)" if exc.errno == errno.EADDRINUSE else ""
        where = f"{args.host}:{args.port}"
        raise RouterError(f"emulate: cannot listen on {where}: {exc.strerror or exc}{hint}") from None
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    path = args.path or args.config or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    written = write_config(path, args.preset, force=args.force)
    print(f"wrote {written} (preset {args.preset}); check it with: hybrid-router validate {written}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .policy import format_effective_policy

    if args.config_file and args.preset:
        raise RouterError("validate: give a FILE or --preset NAME, not both")
    if args.preset:
        config, source = load_preset(args.preset), f"preset {args.preset}"
    else:
        path = _named(args.config_file) if args.config_file else _config_file(args)
        if path is not None:
            config, source = load_config(path), str(path)
        else:
            config, source = RouterConfig.default(), f"the built-in defaults; {_NO_CONFIG}"
    from .webhooks.commands import describe_endpoints

    print(format_effective_policy(config, source))
    print("\n".join(describe_endpoints(config)))
    if args.store:  # the typical cached prefix needs stored requests: read them
        from .cache_report import typical_prefixes
        from .client import Router

        async def prefixes() -> str:
            async with Router(config, scheduler=False, create_store=False) as router:
                return await typical_prefixes(router.store, config)

        print(asyncio.run(prefixes()), end="")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .status import run_status
    from .units import parse_duration

    try:
        interval = parse_duration(args.interval)
    except ValueError as exc:
        raise RouterError(f"--interval: {exc}") from None
    if interval <= 0:
        raise RouterError(f"--interval: expected a duration longer than 0s, got {args.interval!r}")

    async def body(router: Any) -> int:
        return await run_status(router, watch=args.watch, interval=interval, as_json=args.json)

    try:
        return _with_router(args, body)
    except KeyboardInterrupt:  # Ctrl-C before the screen is up (status only reads)
        return 0


def cmd_flush(args: argparse.Namespace) -> int:
    from .progress import flush_with_progress

    _require_api_key("flush")

    async def body(router: Any) -> int:
        report = await flush_with_progress(router, args.latency)
        print(f"flushed {report.requests} requests into {len(report.batches)} batch(es)")
        for batch_id in report.batches:
            print(f"  {batch_id}")
        if report.released or report.uncertain:
            print(f"  {report.released} put back to pending, {report.uncertain} batch(es) to reconcile")
        if args.poll:
            polled = await router.poll()
            print(f"polled {polled.polled}, ended {len(polled.ended)}, delivered {polled.delivered}")
        if report.failure is not None:
            from .batcher import describe_failure

            print(
                f"hybrid-router: flush: batches.create failed: {describe_failure(report.failure)}",
                file=sys.stderr,
            )
            return 1
        return 0

    return _with_router(args, body)


def cmd_report(args: argparse.Namespace) -> int:
    import json
    import time

    from .cache_report import cache_report
    from .report import build_report, render_text
    from .units import parse_duration

    try:
        age = parse_duration(args.since) if args.since else None
    except ValueError as exc:
        raise RouterError(f"--since: {exc}") from None

    async def body(router: Any) -> int:
        now = time.time()
        report = await build_report(
            router.store, router.config, since=None if age is None else now - age, now=now
        )
        if args.html:
            from .report_html import render_html

            page = render_html(report)
            try:
                await asyncio.to_thread(Path(args.html).write_text, page, encoding="utf-8")
            except OSError as exc:
                raise RouterError(f"--html {args.html}: cannot write: {exc.strerror or exc}") from None
            print(f"wrote the report to {args.html}", file=sys.stderr)
        if args.json:
            cache = await cache_report(router.store, router.config)
            print(json.dumps({**report.to_json(), "cache": cache.to_json()}, indent=2))
        elif not args.html:
            cache = await cache_report(router.store, router.config)
            print(render_text(report))
            if text := cache.render():
                print(text)
        return 0

    return _with_router(args, body)


def cmd_enqueue(args: argparse.Namespace) -> int:
    from .jsonl import describe, enqueue_file
    from .progress import count_lines, progress, shown

    async def body(router: Any) -> int:
        with progress(f"checking {args.file}", count_lines(args.file) if shown() else None) as bar:
            report = await enqueue_file(
                router,
                args.file,
                latency=args.latency,
                tag=args.tag,
                progress=lambda phase, lines: bar.update(lines, description=f"{phase} {args.file}"),
            )
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
        outcome = outcome_of(row, router.outcomes)
        if isinstance(outcome, BaseException):
            print(json.dumps({"key": row.key, "state": row.state, "error": str(outcome)}))
            return 1
        print(outcome.model_dump_json())
        return 0

    return _with_router(args, body)


def _export_results(args: argparse.Namespace) -> int:
    from .jsonl import export_results
    from .progress import counting, progress, shown

    keys = ([args.key] if args.key else []) + list(args.keys or [])

    async def body(router: Any) -> int:
        if args.out in (None, "-"):
            report = await export_results(router, sys.stdout.buffer, keys=keys or None)
            sys.stdout.buffer.flush()
        else:
            total = None
            if shown():
                counts = await router.store.state_counts()
                total = len(set(keys)) if keys else counts.get("succeeded", 0) + counts.get("failed", 0)
            with (
                open(args.out, "wb") as out,  # noqa: ASYNC230 - a CLI writing its one output file
                progress(f"writing {args.out}", total) as bar,
            ):
                report = await export_results(router, counting(out, bar), keys=keys or None)
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

    try:
        ttl = parse_duration(args.lease_ttl) if args.lease_ttl else None
    except ValueError as exc:
        raise RouterError(f"--lease-ttl: {exc}") from None
    _require_api_key("daemon")
    config = _load(args)
    daemon = Daemon(
        config, standby=args.standby, lease_ttl=ttl, metrics=args.metrics, metrics_public=args.metrics_public
    )
    return asyncio.run(daemon.run())


def cmd_purge(args: argparse.Namespace) -> int:
    import time

    from .units import format_duration, parse_duration

    try:
        given = parse_duration(args.older_than) if args.older_than else None
    except ValueError as exc:  # before the store is opened: a typo must not delete anything
        raise RouterError(f"--older-than: {exc}") from None

    async def body(router: Any) -> int:
        age = given if given is not None else router.config.store.retention
        report = await router.store.purge(before=time.time() - age, dry_run=args.dry_run)
        verb = "would purge" if args.dry_run else "purged"
        print(
            f"{verb} {report.requests} finished requests, {report.batches} done batches and"
            f" {report.ledger} ledger rows older than {format_duration(age)}"
            f"; the ledger rows go into {report.days} daily-total rows, so the report keeps their figures"
        )
        return 0

    return _with_router(args, body)


def cmd_webhooks(args: argparse.Namespace) -> int:
    from .webhooks import commands

    if args.action == "test":
        hook = commands.ping(args.url, args.secret_env, _load(args, announce=False))
        code, line = asyncio.run(commands.test_endpoint(hook))
        print(line)
        return code
    if args.action == "list" and args.limit < 1:
        raise RouterError(f"webhooks list --limit: expected a number of at least 1, got {args.limit}")

    async def body(router: Any) -> int:
        if args.action == "list":
            print(await commands.list_deliveries(router.store, limit=args.limit))
            return 0
        code, lines = await commands.replay(router.store, router.config, args.id)
        print("\n".join(lines))
        return code

    return _with_router(args, body)


# ---------------------------------------------------------------------------- parser


def _add_common_options(parser: argparse.ArgumentParser, *, default: Any) -> None:
    group = parser.add_argument_group("common options (before or after the command)")
    group.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        default=default,
        help=f"config file (default: ${CONFIG_ENV}, else ./{DEFAULT_CONFIG} if it exists, else the built-in"
        " defaults); a file named here or in the variable must exist",
    )
    group.add_argument(
        "--log-level",
        default=default,
        metavar="LEVEL",
        help="debug, info, warning (default; info for daemon), error",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybrid-router",
        description="Route Anthropic API calls between real time and the Message Batches API.",
    )
    parser.add_argument("--version", action="version", version=f"hybrid-router {__version__}")
    _add_common_options(parser, default=None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="write a commented config file from a preset")
    p.add_argument(
        "--preset",
        choices=preset_names(),
        default="default",
        help=f"the policy to start from (default: default; {EXAMPLE}: every key with its default)",
    )
    p.add_argument("--path", help=f"where to write (default: --config, ${CONFIG_ENV} or {DEFAULT_CONFIG})")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_init)

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
    p.add_argument(
        "--batch-parallelism",
        type=int,
        default=None,
        metavar="N",
        # The default is the emulator's (150), not imported here: the CLI loads the emulator lazily.
        help="width of the parallel waves a batch's requests are processed in; a request reads only"
        " the cache writes of earlier waves (default 150; 1: one at a time)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_emulate)

    p = sub.add_parser("validate", help="check a config file and print the effective policy")
    p.add_argument("config_file", nargs="?", metavar="FILE", help="the file (default: the --config lookup)")
    p.add_argument("--preset", choices=preset_names(), help="check a shipped preset instead of a file")
    p.add_argument(
        "--store",
        action="store_true",
        help="also read the configured store: the typical cached prefix per class and tag, against"
        " the model's minimum cacheable length",
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("daemon", help="flush, poll, reconcile, escalate and purge one database until stopped")
    p.add_argument("--standby", action="store_true", help="wait for the lease instead of exiting (code 3)")
    p.add_argument("--lease-ttl", help="override [router] lease_ttl, e.g. 15s")
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve /metrics (Prometheus), /healthz and /readyz here, e.g. 127.0.0.1:9464"
        " (default: [daemon] metrics)",
    )
    p.add_argument(
        "--metrics-public",
        action="store_true",
        help="allow a --metrics address other hosts can reach (default: loopback only)",
    )
    p.set_defaults(func=cmd_daemon)

    p = sub.add_parser("purge", help="delete finished requests, done batches and ledger rows past an age")
    p.add_argument("--older-than", help="a duration such as 30d (default: [store] retention)")
    p.add_argument("--dry-run", action="store_true", help="show what would be purged, change nothing")
    p.set_defaults(func=cmd_purge)

    p = sub.add_parser(
        "status", help="requests by class and state, open batches, next flushes, the lease, spend today"
    )
    shown = p.add_mutually_exclusive_group()
    shown.add_argument(
        "--watch", action="store_true", help="redraw in place on a terminal until Ctrl-C (off one: once)"
    )
    shown.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.add_argument("--interval", default="2s", help="how often --watch redraws (default 2s)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("flush", help="send pending requests to the Batch API now")
    p.add_argument("--latency", help="only this class")
    p.add_argument("--poll", action="store_true", help="also poll open batches afterwards")
    p.set_defaults(func=cmd_flush)

    p = sub.add_parser("report", help="cost per lane, day and tag against sending everything real time")
    p.add_argument("--since", help="only from the UTC day this long ago, e.g. 30d (default: all history)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.add_argument("--html", metavar="FILE", help="write the report as one self-contained HTML page")
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

    p = sub.add_parser("webhooks", help="webhook deliveries: list them, replay an event, ping an endpoint")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("list", help="recent deliveries and their status, and each endpoint's state")
    a.add_argument("--limit", type=int, default=50, help="how many deliveries (default 50)")
    a = actions.add_parser("replay", help="send a stored event again now, with the same webhook-id")
    a.add_argument("id", metavar="ID", help="the event's number (webhooks list) or its webhook-id")
    a = actions.add_parser("test", help="send a signed webhook.ping to URL")
    a.add_argument("url", metavar="URL", help="a [[webhooks]] url, or any URL with --secret-env")
    a.add_argument(
        "--secret-env", metavar="VAR", help="the environment variable holding the secret to sign with"
    )
    for action in actions.choices.values():
        _add_common_options(action, default=argparse.SUPPRESS)
    p.set_defaults(func=cmd_webhooks)

    # Every command takes the common options after its name too. SUPPRESS: an option left out
    # after the command must not overwrite the one given before it.
    for command in sub.choices.values():
        _add_common_options(command, default=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    freeze_imports()
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
    except OSError as exc:  # a file, folder or port the command was pointed at: a setup problem
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"hybrid-router: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
