"""A webhook receiver for tests: a real HTTP server on 127.0.0.1 (aiohttp, in the test's loop)
that records every delivery and answers what the test tells it to."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    got: list[Received] = field(default_factory=list)
    # What to answer to the n-th delivery (0-based): a status, or "hang" (no answer until the
    # receiver stops).
    answer: Callable[[int], int | str] = lambda n: 200
    hanging: asyncio.Event = field(default_factory=asyncio.Event)
    redirect_hits: int = 0


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    app = web.Application()
    runner = web.AppRunner(app)
    box: list[Receiver] = []

    async def hook(request: web.Request) -> web.Response:
        rec = box[0]
        n = len(rec.got)
        rec.got.append(Received({k.lower(): v for k, v in request.headers.items()}, await request.read()))
        answer = rec.answer(n)
        if answer == "hang":
            await rec.hanging.wait()  # cut off by the sender's timeout; let go at the end
        if answer == 302:
            raise web.HTTPFound("/elsewhere")
        return web.Response(status=int(answer), headers={"retry-after": "0"} if answer == 429 else None)

    async def elsewhere(request: web.Request) -> web.Response:
        box[0].redirect_hits += 1
        return web.Response(status=200)

    app.router.add_post("/hook", hook)
    app.router.add_route("*", "/elsewhere", elsewhere)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    box.append(Receiver(f"http://127.0.0.1:{port}/hook"))
    try:
        yield box[0]
    finally:
        box[0].hanging.set()
        await runner.cleanup()
