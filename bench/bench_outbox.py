"""What the webhook outbox costs the store, on SQLite (synchronous=FULL), sides alternating
within each round, each on a fresh database file:

  - enqueue: 50,000 tagged requests, 1,024 concurrent callers (group commit), with the
    requests_by_tag index the outbox migration adds, against the same schema with that index
    dropped;
  - ingest: a 20,000-request batch in 10 tags, its results applied in chunks of 1,000 and the
    batch closed, with no webhooks (no OutboxPolicy: nothing written), against every event
    wanted (batch.ended, tag.drained, and request.completed for every request).

    .venv/bin/python bench/bench_outbox.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from _common import MODEL, banner, median, ratio, row

from router.providers.anthropic.provider import BATCH_FORMAT
from router.store import NewRequest, OutboxPolicy, Store, custom_id_for, events

CALLERS = 1024
N_ENQUEUE = 50_000
N_BATCH = 20_000
CHUNK = 1000
TAGS = 10


def _body(i: int) -> bytes:
    return json.dumps(
        {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": f"q{i}" * 20}]}
    ).encode()


async def _enqueue(folder: Path, name: str, *, index: bool) -> float:
    store = await Store.open(folder / f"{name}.db")
    try:
        if not index:
            async with store._transaction() as w:
                await w.execute("DROP INDEX requests_by_tag")
        now = time.time()
        queue = asyncio.Queue[int]()
        for i in range(N_ENQUEUE):
            queue.put_nowait(i)

        async def caller() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                await store.enqueue(
                    NewRequest(f"k{i}", "daily", f"tag-{i % TAGS}", MODEL, _body(i), now, None)
                )

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(CALLERS)))
        return N_ENQUEUE / (time.perf_counter() - started)
    finally:
        await store.close()


def _never(result: Mapping[str, Any], **_: Any) -> bool:
    return False


async def _ingest(folder: Path, name: str, *, policy: OutboxPolicy | None) -> float:
    store = await Store.open(folder / f"{name}.db")
    try:
        now = time.time()
        await store.enqueue_many(
            [
                NewRequest(f"k{i}", "daily", f"tag-{i % TAGS}", MODEL, _body(i), now, None)
                for i in range(N_BATCH)
            ]
        )
        claim = await store.claim_batch(
            frame=BATCH_FORMAT, latencies=None, max_requests=N_BATCH, max_bytes=10**9, now=now
        )
        assert claim is not None
        await store.mark_submitted(claim.batch_id, "msgbatch_bench", now=now, next_poll_at=now)
        store.set_outbox(policy)
        lines = [
            json.dumps(
                {
                    "custom_id": custom_id_for(rid),
                    "result": {
                        "type": "succeeded",
                        "message": {"model": MODEL, "usage": {"input_tokens": 10, "output_tokens": 5}},
                    },
                }
            ).encode()
            for rid in range(1, N_BATCH + 1)
        ]
        started = time.perf_counter()
        for start in range(0, N_BATCH, CHUNK):
            await store.apply_results(
                claim.batch_id, lines[start : start + CHUNK], now=now, max_attempts={}, retry=_never
            )
        await store.finish_batch(claim.batch_id, now=now)
        took = time.perf_counter() - started
        wanted = 0 if policy is None else N_BATCH + TAGS + 1
        assert sum((await store.outbox_counts()).values()) == wanted
        return took
    finally:
        await store.close()


def _costs(rows: Any) -> tuple[float, float]:
    return 0.0, 0.0


async def main(repeats: int) -> None:
    everything = OutboxPolicy(frozenset(events.EVENT_TYPES), request_keys=("*",), costs=_costs)
    with_index: list[float] = []
    without: list[float] = []
    quiet: list[float] = []
    loud: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for n in range(repeats):
            without.append(await _enqueue(folder, f"e-no-{n}", index=False))
            with_index.append(await _enqueue(folder, f"e-idx-{n}", index=True))
            quiet.append(await _ingest(folder, f"i-none-{n}", policy=None))
            loud.append(await _ingest(folder, f"i-all-{n}", policy=everything))
    banner(f"enqueue, {N_ENQUEUE:,} tagged requests, {CALLERS:,} callers (requests/s)")
    row("without requests_by_tag", without, "req/s")
    row("with requests_by_tag", with_index, "req/s")
    print(f"  with / without: {ratio(median(with_index), median(without))}")
    banner(f"ingest + close, {N_BATCH:,} results in {TAGS} tags (seconds)")
    row("no webhooks (nothing written)", quiet, "s", "{:.3f}")
    row(f"every event ({N_BATCH + TAGS + 1:,} events)", loud, "s", "{:.3f}")
    print(f"  every event / none: {ratio(median(loud), median(quiet))}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    asyncio.run(main(parser.parse_args().repeats))
