"""Durable enqueue (synchronous=FULL) with 1,024 concurrent callers.

Sides, same process run, each on a fresh database file:
  - Store.enqueue (group commit),
  - Router.messages.submit (validation + serialization + Store.enqueue),
  - competitor: plain aiosqlite, one INSERT + COMMIT per request (1,024 callers on one connection).
Target: >= 25,000 requests/s for the first two.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiosqlite
from _common import MODEL, banner, median, params_of_size, ratio, row

from router import Router, RouterConfig
from router.store import NewRequest, Store

CALLERS = 1024
N_OURS = 100_000
N_PLAIN = 5_000
REPEATS = 3
PARAMS_SIZE = 300


async def _callers(n: int, work: object) -> float:
    """Run `n` calls of `work(i)` from CALLERS concurrent tasks; returns requests per second."""
    counter = iter(range(n))

    async def caller() -> None:
        for i in counter:
            await work(i)  # type: ignore[operator]

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return n / (time.perf_counter() - start)


async def bench_store(db: Path) -> float:
    store = await Store.open(db)
    bodies = [
        json.dumps(params_of_size(i, PARAMS_SIZE), separators=(",", ":")).encode() for i in range(N_OURS)
    ]

    async def one(i: int) -> None:
        now = time.time()
        await store.enqueue(NewRequest(f"k{i}", "daily", None, MODEL, bodies[i], now, now + 86400))

    try:
        return await _callers(N_OURS, one)
    finally:
        await store.close()


async def bench_router(db: Path) -> float:
    config = RouterConfig.default(store_path=db)
    params = [params_of_size(i, PARAMS_SIZE) for i in range(N_OURS)]
    async with Router(config, scheduler=False) as client:

        async def one(i: int) -> None:
            await client.messages.submit(**params[i], latency="daily", key=f"k{i}")

        return await _callers(N_OURS, one)


async def bench_plain(db: Path) -> float:
    conn = await aiosqlite.connect(db, isolation_level=None)
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA synchronous = FULL")
    await conn.execute(
        "CREATE TABLE requests (id INTEGER PRIMARY KEY, key TEXT UNIQUE, class TEXT, model TEXT,"
        " params BLOB, state TEXT, created_at REAL)"
    )
    bodies = [
        json.dumps(params_of_size(i, PARAMS_SIZE), separators=(",", ":")).encode() for i in range(N_PLAIN)
    ]

    async def one(i: int) -> None:
        # aiosqlite runs calls in order on one thread: BEGIN/INSERT/COMMIT of one caller may
        # interleave with another's, so each request is one autocommit INSERT (one fsync each).
        await conn.execute(
            "INSERT INTO requests (key, class, model, params, state, created_at) VALUES (?,?,?,?,?,?)",
            (f"k{i}", "daily", MODEL, bodies[i], "pending", time.time()),
        )

    try:
        return await _callers(N_PLAIN, one)
    finally:
        await conn.close()


async def main() -> int:
    banner(f"durable enqueue, synchronous=FULL, {CALLERS} concurrent callers, ~{PARAMS_SIZE} B params")
    results: dict[str, list[float]] = {"store": [], "router": [], "plain": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(REPEATS):
            for name, fn in (("store", bench_store), ("router", bench_router), ("plain", bench_plain)):
                db = Path(tmp) / f"{name}-{uuid.uuid4().hex}.db"
                results[name].append(await fn(db))
    row(f"Store.enqueue (group commit), {N_OURS:,} req", results["store"], "req/s")
    row(f"Router.messages.submit, {N_OURS:,} req", results["router"], "req/s")
    row(f"plain aiosqlite commit per row, {N_PLAIN:,} req", results["plain"], "req/s")
    s, r, p = (median(results[k]) for k in ("store", "router", "plain"))
    print(f"  ratio Store.enqueue / plain: {ratio(s, p)};  Router.submit / plain: {ratio(r, p)}")
    ok = s >= 25_000 and r >= 25_000
    print(f"  target >= 25,000 req/s: {'met' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
