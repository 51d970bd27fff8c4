"""An application for tests/test_logging.py: uses the router against an emulator, configuring
logging only where its mode says so.

    python tests/logging_app.py MODE URL DB [COUNT]

Modes:
  submit          COUNT deferred submits, one real-time call, a flush whose create the test
                  made fail (a warning), a flush that succeeds, close; logging left alone
  close-in-flush  close while a scheduled (size-triggered) flush waits on batches.create
  close-in-poll   close while the scheduled poll waits on the Batch API
  basic           as `submit` with COUNT requests, after logging.basicConfig(level=DEBUG)
  configured      as `submit` with COUNT requests, after configure_logging("debug")
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2

from router import Router, RouterConfig

MODEL = "claude-haiku-4-5"


def ask(i: int) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": f"request {i}"}]}


def config(url: str, db: str) -> RouterConfig:
    return RouterConfig.from_toml_text(
        f"""
[anthropic]
base_url = "{url}"
max_retries = 0

[store]
path = "{db}"

[batch]
poll_interval = "50ms"

[classes.daily]
route = "batch"
deadline = "1d"
every = "1h"

[classes.soon]
route = "batch"
deadline = "1d"
max_pending = 1
"""
    )


class Gate:
    """Holds the SDK's requests that `match` until `release` is set, and says when one arrived."""

    def __init__(self, method: str, path_prefix: str) -> None:
        self.method = method
        self.path_prefix = path_prefix
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, request: httpx2.Request) -> None:
        if request.method == self.method and request.url.path.startswith(self.path_prefix):
            self.entered.set()
            await self.release.wait()


def sdk(url: str, gate: Gate | None = None) -> anthropic.AsyncAnthropic:
    hooks: dict[str, list[Callable[..., Any]]] = {"request": [gate]} if gate is not None else {}
    return anthropic.AsyncAnthropic(
        base_url=url, api_key="test-key", max_retries=0, http_client=httpx2.AsyncClient(event_hooks=hooks)
    )


async def use(url: str, db: str, count: int) -> None:
    async with Router(config(url, db), anthropic=sdk(url)) as client:
        for i in range(count):
            await client.messages.submit(**ask(i), latency="daily", key=f"k{i}")
        await client.messages.create(**ask(-1), latency="realtime")
        await client.flush("daily")  # the test made this create fail: batch_create_failed
        await client.flush("daily")


async def close_while_held(client: Router, gate: Gate) -> None:
    """Close the Router while a scheduled job waits in `gate`, then let the job go on."""
    async with asyncio.timeout(30):  # a safety net: the job arrives in milliseconds
        await gate.entered.wait()
    closing = asyncio.create_task(client.close())
    await asyncio.sleep(0)  # close() has stopped the scheduler and waits for the running job
    gate.release.set()
    await closing


async def close_in_flush(url: str, db: str) -> None:
    gate = Gate("POST", "/v1/messages/batches")
    client = Router(config(url, db), anthropic=sdk(url, gate))
    await client.open()
    await client.messages.submit(**ask(0), latency="soon", key="k0")  # max_pending = 1: a wake flush
    await close_while_held(client, gate)


async def close_in_poll(url: str, db: str) -> None:
    gate = Gate("GET", "/v1/messages/batches")
    client = Router(config(url, db), anthropic=sdk(url, gate))
    await client.open()
    await client.messages.submit(**ask(0), latency="daily", key="k0")
    await client.flush("daily")  # a POST: not held
    await close_while_held(client, gate)  # the scheduled poll, every 50 ms


def main(argv: list[str]) -> None:
    mode, url, db = argv[:3]
    count = int(argv[3]) if len(argv) > 3 else 1
    if mode == "basic":
        logging.basicConfig(level=logging.DEBUG, format="%(name)s %(funcName)s %(levelname)s %(message)s")
    elif mode == "configured":
        from router.logs import configure_logging

        configure_logging("debug")
    if mode == "close-in-flush":
        asyncio.run(close_in_flush(url, db))
    elif mode == "close-in-poll":
        asyncio.run(close_in_poll(url, db))
    else:
        asyncio.run(use(url, db, count))


if __name__ == "__main__":
    main(sys.argv[1:])
