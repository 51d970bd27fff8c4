"""A server that reads a `POST /v1/messages/batches` body to the end and answers at once.

Used to time the client side of a batches.create without the server's parsing: the body is
read in full (every byte crosses the socket), discarded, and a valid MessageBatch returned.
Run as ``python bench/_sink.py``; prints ``sink listening on URL``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta

from aiohttp import web

_ids = itertools.count(1)


async def create(request: web.Request) -> web.Response:
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
    now = datetime.now(UTC)
    body = {
        "id": f"msgbatch_sink_{next(_ids):08d}",
        "type": "message_batch",
        "processing_status": "in_progress",
        "request_counts": {"processing": 1, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
        "created_at": now.isoformat().replace("+00:00", "Z"),
        "expires_at": (now + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        "ended_at": None,
        "cancel_initiated_at": None,
        "archived_at": None,
        "results_url": None,
    }
    return web.json_response(body, headers={"x-body-bytes": str(size), "x-at": str(time.time())})


async def main() -> None:
    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/v1/messages/batches", create)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"sink listening on http://127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
