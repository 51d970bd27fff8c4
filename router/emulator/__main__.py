"""``python -m router.emulator --port P --batch-seconds S``: run the emulator until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from router.emulator.clock import EmulatorClock
from router.emulator.config import DEFAULT_BATCH_PARALLELISM
from router.emulator.emulator import serve
from router.logs import configure_logging
from router.process import freeze_imports


def parallelism(text: str) -> int:
    """An argparse type for ``--batch-parallelism``: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 1, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m router.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default 0: a free one, printed)")
    parser.add_argument("--batch-seconds", type=float, default=3600.0, help="batch turnaround (default 3600)")
    parser.add_argument(
        "--batch-parallelism",
        type=parallelism,
        default=DEFAULT_BATCH_PARALLELISM,
        metavar="N",
        help="width of the parallel waves a batch's requests are processed in; a request reads only"
        f" the cache writes of earlier waves (default {DEFAULT_BATCH_PARALLELISM}; 1: one at a time)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of faults, outcomes and result order")
    parser.add_argument("--api-key", default=None, help="accept only this key (default: any non-empty key)")
    parser.add_argument(
        "--manual-clock",
        type=float,
        nargs="?",
        const=-1.0,
        default=None,
        metavar="START",
        help="run on a manual clock (moved by POST /_emulator/clock/advance), starting at START "
        "unix seconds (default: now)",
    )
    return parser


async def _run(args: argparse.Namespace) -> None:
    task = asyncio.current_task()
    if task is not None:
        # SIGTERM (how test harnesses stop subprocesses) shuts down as cleanly as Ctrl-C.
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    clock = None
    if args.manual_clock is not None:
        clock = EmulatorClock(start=None if args.manual_clock < 0 else args.manual_clock)
    with contextlib.suppress(asyncio.CancelledError):
        await serve(
            args.host,
            args.port,
            args.batch_seconds,
            args.seed,
            api_key=args.api_key,
            clock=clock,
            batch_parallelism=args.batch_parallelism,
        )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve until SIGINT/SIGTERM."""
    freeze_imports()
    args = _parser().parse_args(argv)
    configure_logging("warning")  # a program of its own: its handler failures go to stderr
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
