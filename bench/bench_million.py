"""1,000,000 pending requests in the store: the flusher submits them all (10 batches of 100,000).

Setup (not timed): a store of 1,000,000 pending requests (~1 KB of params each). Each side runs
in its own spawned subprocess on its own copy, against the emulator (a subprocess, so its
memory is not counted); a thread samples the flusher's VmRSS every 2 ms:
  - ours: `batcher.flush` (what the scheduler and the daemon call), one call for all 10 batches,
  - competitor: the SDK's `batches.create(requests=[...])`, 100,000 rows read and parsed at a
    time (already the frugal way to use it: all 1,000,000 as dicts would need ~6 GiB).
Target: ours stays under 300 MiB RSS (absolute) while it submits them all.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    MiB,
    RssSampler,
    banner,
    build_store,
    emulator_process,
    measured_flush,
    ratio,
    run_async_child,
)

N = 1_000_000
PER_BATCH = 100_000
SIZE = 1000


async def ours(db: str, url: str) -> dict[str, Any]:
    report, figures, counts = await measured_flush(db, url, max_requests=PER_BATCH)
    assert report.requests == N and len(report.batches) == N // PER_BATCH, report
    assert counts.get("submitted") == N, counts
    return figures


async def sdk_side(db: str, url: str) -> dict[str, Any]:
    import aiosqlite
    import anthropic

    conn = await aiosqlite.connect(db)
    client = anthropic.AsyncAnthropic(base_url=url, api_key="bench-key", max_retries=0, timeout=600)
    batches = 0
    try:
        with RssSampler() as rss:
            start = time.perf_counter()
            after = 0
            while True:
                async with conn.execute(
                    "SELECT r.id, p.params FROM requests r JOIN request_params p ON p.id = r.id"
                    " WHERE r.state = 'pending' AND r.id > ? ORDER BY r.id LIMIT ?",
                    (after, PER_BATCH),
                ) as cur:
                    rows = await cur.fetchall()
                if not rows:
                    break
                after = rows[-1][0]
                requests: list[Any] = [{"custom_id": f"r{rid}", "params": json.loads(p)} for rid, p in rows]
                del rows
                await client.messages.batches.create(requests=requests)
                del requests
                batches += 1
            seconds = time.perf_counter() - start
    finally:
        await client.close()
        await conn.close()
    assert batches == N // PER_BATCH, batches
    return {"seconds": seconds, "growth": rss.growth, "peak": rss.peak, "base": rss.base}


def main() -> int:
    banner(f"{N:,} pending requests (~{SIZE:,} B params), flushed as {N // PER_BATCH} batches")
    with tempfile.TemporaryDirectory() as tmp:
        master = Path(tmp) / "master.db"
        t = time.perf_counter()
        asyncio.run(build_store(master, N, SIZE, chunk=20_000))
        print(
            f"  (store of {N:,} requests built in {time.perf_counter() - t:.0f} s,"
            f" {master.stat().st_size / MiB:,.0f} MiB)",
            flush=True,
        )
        results: dict[str, dict[str, Any]] = {}
        for name, fn in (("ours", ours), ("sdk", sdk_side)):
            db = Path(tmp) / f"{name}.db"
            shutil.copyfile(master, db)
            # A fresh emulator per side: it keeps every batch in memory.
            with emulator_process() as url:
                results[name] = run_async_child(fn, str(db), url)
            db.unlink()
    for name, label in (("ours", "ours: batcher.flush"), ("sdk", "SDK batches.create, 100k at a time")):
        r = results[name]
        print(
            f"  {label:<44} {r['seconds']:.1f} s, peak RSS {r['peak'] / MiB:,.0f} MiB"
            f" (start {r['base'] / MiB:,.0f} MiB, growth {r['growth'] / MiB:,.0f} MiB)"
        )
    o, s = results["ours"], results["sdk"]
    print(f"  ratio peak RSS SDK / ours: {ratio(s['peak'], o['peak'])}")
    print(f"  target: ours under 300 MiB RSS: {'met' if o['peak'] < 300 * MiB else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
