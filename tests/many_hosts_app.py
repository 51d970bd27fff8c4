"""An application process for the many-hosts test (flusher = "daemon": it stores, calls in real
time, and waits; the daemons flush).

python tests/many_hosts_app.py CONFIG NAME COUNT REALTIME

Submits COUNT keyed deferred requests (`NAME-0` ...) at once, makes REALTIME real-time calls,
then waits for every key at once. Each step prints one JSON line on stdout as it happens:
{"accepted": key}, {"realtime": n, "text": ...}, {"key": key, "text": ...}.
"""

from __future__ import annotations

import asyncio
import json
import sys

from router import Router
from router.logs import configure_logging

MODEL = "claude-haiku-4-5"
WAIT_TIMEOUT = 300.0  # a safety net only: the test's own timeouts fail first


def prompt(key: str) -> str:
    return f"many hosts request {key}"


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def text_of(message: object) -> str:
    return "".join(getattr(block, "text", "") for block in getattr(message, "content", []))


async def main(config: str, name: str, count: int, realtime: int) -> int:
    keys = [f"{name}-{i}" for i in range(count)]
    async with Router.from_config(config) as client:

        async def submit(key: str) -> None:
            await client.messages.submit(
                model=MODEL,
                max_tokens=32,
                messages=[{"role": "user", "content": prompt(key)}],
                latency="daily",
                key=key,
            )
            say(accepted=key)  # the ticket came back: durably stored

        async def wait(key: str) -> None:
            message = await client.results.wait(key, timeout=WAIT_TIMEOUT)
            say(key=key, text=text_of(message))

        await asyncio.gather(*(submit(key) for key in keys))
        for n in range(realtime):
            message = await client.messages.create(
                model=MODEL,
                max_tokens=32,
                messages=[{"role": "user", "content": prompt(f"{name}-realtime-{n}")}],
                latency="realtime",
            )
            say(realtime=f"{name}-realtime-{n}", text=text_of(message))
        await asyncio.gather(*(wait(key) for key in keys))
    return 0


if __name__ == "__main__":
    configure_logging("warning", json=True)  # logs to stderr; stdout carries the answers
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
