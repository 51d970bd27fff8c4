"""Small helpers shared by the router tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from anthropic.types import Message

from router import Router

MODEL = "claude-haiku-4-5"


def ask(text: str, **extra: Any) -> dict[str, Any]:
    """create() keywords for a one-turn question."""
    return {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": text}], **extra}


def reply_text(message: Message) -> str:
    return "".join(getattr(block, "text", "") for block in message.content)


async def until(condition: Callable[[], Awaitable[bool]], *, timeout: float = 10.0) -> None:
    """Wait for a condition on the store (not for a batch: batches move on the emulator clock)."""
    async with asyncio.timeout(timeout):
        while not await condition():  # noqa: ASYNC110 - a store condition, not an event
            await asyncio.sleep(0.005)


async def stored(router: Router, count: int) -> None:
    """Wait until `count` requests are durably stored."""

    async def enough() -> bool:
        return sum((await router.store.state_counts()).values()) >= count

    await until(enough)


async def run_batches(router: Router, emulator: Any) -> None:
    """Flush, end every batch on the emulator clock, and ingest the results."""
    await router.flush()
    emulator.end_batches()
    await router.poll()


class _EventList(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = dict(record.msg) if isinstance(record.msg, dict) else {"event": record.getMessage()}
        self.events.append({**event, "log_level": record.levelname.lower(), "logger": record.name})


@contextlib.contextmanager
def capture_router_logs() -> Iterator[list[dict[str, Any]]]:
    """The router's log events (every level) as dicts, while the block runs."""
    handler = _EventList()
    logger = logging.getLogger("router")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.events
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def interruptible() -> None:
    """`preexec_fn` of a child that a test stops with Ctrl-C (SIGINT): pytest-xdist's workers
    ignore SIGINT, and an ignored signal stays ignored across exec, so without this the
    child would never see the Ctrl-C (Python installs its KeyboardInterrupt handler only
    where SIGINT is not ignored at start)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
