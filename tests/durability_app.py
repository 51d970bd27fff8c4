"""An application process for the daemon and crash tests (flusher = "daemon": it only stores and waits).

python tests/durability_app.py submit CONFIG KEY...   # prints each key once its ticket is returned
python tests/durability_app.py wait CONFIG KEY...     # prints {"key", "text"} per key as results arrive
"""

from __future__ import annotations

import asyncio
import json
import sys

from router import Router
from router.logs import configure_logging

MODEL = "claude-haiku-4-5"


async def main(mode: str, config: str, keys: list[str]) -> int:
    async with Router.from_config(config) as client:
        if mode == "submit":
            for key in keys:
                text = f"crash test request {key}"
                await client.messages.submit(
                    model=MODEL,
                    max_tokens=32,
                    messages=[{"role": "user", "content": text}],
                    latency="daily",
                    key=key,
                )
                print(key, flush=True)  # accepted: the ticket came back
        else:
            for key in keys:
                message = await client.results.wait(key, timeout=30)
                text = "".join(getattr(b, "text", "") for b in message.content)
                print(json.dumps({"key": key, "text": text}), flush=True)
    return 0


if __name__ == "__main__":
    configure_logging("warning", json=True)  # logs to stderr; stdout carries the answers
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:])))
