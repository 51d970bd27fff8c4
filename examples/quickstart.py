"""The drop-in swap, runnable offline: `.venv/bin/python examples/quickstart.py`.

Starts the built-in emulator, sends one real-time call and one deferred call, ends the
batch on the emulator's clock and prints both replies. Point `base_url` at the real API (and
set ANTHROPIC_API_KEY) to do the same for real.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import anthropic

from router import Router, RouterConfig
from router.emulator import Emulator, EmulatorClock
from router.logs import configure_logging


async def main() -> None:
    configure_logging("warning")  # the library logs through structlog; the app decides where
    async with Emulator(clock=EmulatorClock(start=time.time()), batch_seconds=3600) as emulator:
        sdk = anthropic.AsyncAnthropic(base_url=emulator.url, api_key="emulator")
        config = RouterConfig.default(store_path=Path(tempfile.mkdtemp()) / "quickstart.db")
        async with Router(config, anthropic=sdk) as client:
            now = await client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=64,
                messages=[{"role": "user", "content": "Summarise ticket #1"}],
                latency="realtime",
            )
            print("real time:", now.content[0].text)  # type: ignore[union-attr]

            # submit() returns once the request is durably stored; create() would wait for the reply.
            ticket = await client.messages.submit(
                model="claude-haiku-4-5",
                max_tokens=16,
                messages=[{"role": "user", "content": "Label: 'refund not received'"}],
                latency="daily",
                tag="nightly-classify",
                key="ticket-1-label",
            )
            report = await client.flush()  # the scheduler would do this on its own
            print(f"flushed {report.requests} request(s) into {report.batches}")
            emulator.clock.advance(3600)  # an hour later on the emulator's clock
            await client.poll()
            later = await client.results.wait(ticket.key)  # works from any process on the same store
            print("batched:", later.content[0].text)  # type: ignore[union-attr]
        await sdk.close()


if __name__ == "__main__":
    asyncio.run(main())
