"""Real-time lane throughput: Router.messages.create(latency="realtime") vs AsyncAnthropic directly.

Both sides call the same emulator, run as a subprocess (so its CPU is not on the client's event
loop), with 16 concurrent callers, alternating sides each repeat. Target: router >= 0.95x direct.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anthropic
from _common import banner, emulator_process, median, params_of_size, ratio, row

from router import Router, RouterConfig

CONCURRENCY = 16
N = 1000
REPEATS = 21


async def _drive(n: int, call: Callable[[int], Awaitable[object]]) -> float:
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await call(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return n / (time.perf_counter() - start)


async def main() -> int:
    banner(f"real-time lane, concurrency {CONCURRENCY}, {N:,} calls per run, emulator in a subprocess")
    params = [params_of_size(i, 300) for i in range(N)]
    direct_runs: list[float] = []
    router_runs: list[float] = []
    with emulator_process() as url, tempfile.TemporaryDirectory() as tmp:
        sdk = anthropic.AsyncAnthropic(base_url=url, api_key="bench-key", max_retries=0)
        config = RouterConfig.default(store_path=Path(tmp) / "router.db").with_base_url(url)
        async with Router(config, anthropic=sdk, scheduler=False) as client:

            async def direct(i: int) -> object:
                return await sdk.messages.create(**params[i])

            async def routed(i: int) -> object:
                return await client.messages.create(**params[i], latency="realtime")

            await _drive(200, direct)  # warm up connections on both sides
            await _drive(200, routed)
            for i in range(REPEATS):
                # Alternate which side goes first, so drift in machine load does not favour one.
                if i % 2:
                    router_runs.append(await _drive(N, routed))
                    direct_runs.append(await _drive(N, direct))
                else:
                    direct_runs.append(await _drive(N, direct))
                    router_runs.append(await _drive(N, routed))
        await sdk.close()
    row("AsyncAnthropic.messages.create", direct_runs, "calls/s")
    row('Router.messages.create(latency="realtime")', router_runs, "calls/s")
    paired = median([r / d for r, d in zip(router_runs, direct_runs, strict=True)])
    print(
        f"  ratio router / direct: {ratio(median(router_runs), median(direct_runs))} (ratio of medians),"
        f" {paired:.2f}x (median of back-to-back pairs)"
    )
    print(f"  target >= 0.95x: {'met' if paired >= 0.95 else 'MISSED'} (on the paired median)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
