"""examples/webhook_receiver.py as the delivery test runs it: a real process on a fixed port
that the test kills and starts again. Around the example, for the figures: every delivery is
checked with the `standardwebhooks` package itself and logged, and a fifth of them are
answered 500 after the example handled them (a receiver that did the work but failed to
say so), so the sender retries what was in fact received.

    python tests/webhook_receiver_app.py PORT SEED
"""

from __future__ import annotations

import os
import random
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvicorn
from fastapi import Request, Response
from standardwebhooks import Webhook

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.webhook_receiver import app

FAIL_RATE = 0.2
_random = random.Random(0)  # seeded from the command line
_log = sqlite3.connect(os.environ["RECEIVER_LOG"], isolation_level=None)
_log.execute("PRAGMA journal_mode = WAL")
_log.execute(
    "CREATE TABLE IF NOT EXISTS received (n INTEGER PRIMARY KEY, id TEXT, verified INTEGER, status INTEGER)"
)


@app.middleware("http")
async def faults(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    if request.url.path != "/webhooks":
        return await call_next(request)
    body = await request.body()
    try:
        Webhook(os.environ["WEBHOOK_SECRET"]).verify(body, dict(request.headers))
        verified = 1
    except Exception:
        verified = 0
    response = await call_next(request)
    status = response.status_code
    if status == 200 and _random.random() < FAIL_RATE:
        status = 500
        response = Response(status_code=500, content=b"injected failure")
    _log.execute(
        "INSERT INTO received (id, verified, status) VALUES (?, ?, ?)",
        (request.headers.get("webhook-id"), verified, status),
    )
    return response


if __name__ == "__main__":
    port, seed = int(sys.argv[1]), int(sys.argv[2])
    _random.seed(seed)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
