"""Durable enqueue with 1,024 concurrent callers, on SQLite (synchronous=FULL) and PostgreSQL
(synchronous_commit=on, a throwaway server from tests/pgserver.py).

Sides, alternating within each round, each on a fresh database file or database:
  - Store.enqueue (group commit),
  - Router.messages.submit (validation + serialization + Store.enqueue),
  - competitor: one INSERT + COMMIT per request: on SQLite plain aiosqlite (1,024 callers on one
    connection), on PostgreSQL a 10-connection asyncpg pool.
Targets: SQLite >= 25,000 requests/s for the first two; PostgreSQL Router.messages.submit
>= 15,000 requests/s (20,000 requests of ~850 B params) and >= 3x the competitor.

Then `messages.submit` with logging as a program that configures nothing leaves it, against
`configure_logging("warning")` (quiet): 20,000 requests of ~850-byte prompts, each run in its
own spawned process, in alternating pairs. Target: unconfigured within 10 % of quiet.

    .venv/bin/python bench/bench_enqueue.py [--engine sqlite|postgresql|both] [--repeats 3]
    .venv/bin/python bench/bench_enqueue.py --logging     # only the logging pairs
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
from _common import (
    MODEL,
    banner,
    median,
    open_location,
    params_of_size,
    postgres,
    ratio,
    row,
    run_async_child,
    run_per_engine,
)

from router import Router, RouterConfig
from router.logs import configure_logging, reset_logging
from router.store import NewRequest

CALLERS = 1024
N_OURS = 100_000
N_PLAIN = 5_000
REPEATS = 3
PARAMS_SIZE = 300
# PostgreSQL: the shape (the competitor, ~4,000/s, would take minutes for 100,000).
N_PG = 20_000
PG_PARAMS_SIZE = 850
PG_POOL = 10
N_LOGGING = 20_000
PROMPT_PARAMS_SIZE = 950  # params JSON of ~950 B: a prompt of ~850 B
LOGGING_PAIRS = 7


async def _callers(n: int, work: object) -> float:
    """Run `n` calls of `work(i)` from CALLERS concurrent tasks; returns requests per second."""
    counter = iter(range(n))

    async def caller() -> None:
        for i in counter:
            await work(i)  # type: ignore[operator]

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return n / (time.perf_counter() - start)


def _bodies(n: int, size: int) -> list[bytes]:
    return [json.dumps(params_of_size(i, size), separators=(",", ":")).encode() for i in range(n)]


async def bench_store(location: str, n: int, size: int) -> float:
    store = await open_location(location)
    bodies = _bodies(n, size)

    async def one(i: int) -> None:
        now = time.time()
        await store.enqueue(NewRequest(f"k{i}", "daily", None, MODEL, bodies[i], now, now + 86400))

    try:
        return await _callers(n, one)
    finally:
        await store.close()


async def bench_router(location: str, n: int, size: int) -> float:
    config = RouterConfig.default().with_store(location)
    params = [params_of_size(i, size) for i in range(n)]
    async with Router(config, scheduler=False) as client:

        async def one(i: int) -> None:
            await client.messages.submit(**params[i], latency="daily", key=f"k{i}")

        return await _callers(n, one)


async def bench_plain(db: str) -> float:
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


async def bench_plain_pg(url: str) -> float:
    import asyncpg

    pool = await asyncpg.create_pool(url, min_size=PG_POOL, max_size=PG_POOL)
    await pool.execute(
        "CREATE TABLE requests (id bigserial PRIMARY KEY, key text UNIQUE, class text, model text,"
        " params bytea, state text, created_at double precision)"
    )
    bodies = _bodies(N_PG, PG_PARAMS_SIZE)

    async def one(i: int) -> None:
        async with pool.acquire() as conn:  # autocommit: one INSERT, one commit
            await conn.execute(
                "INSERT INTO requests (key, class, model, params, state, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                f"k{i}",
                "daily",
                MODEL,
                bodies[i],
                "pending",
                time.time(),
            )

    try:
        return await _callers(N_PG, one)
    finally:
        await pool.close()


async def sqlite_side(repeats: int) -> None:
    banner(f"durable enqueue, synchronous=FULL, {CALLERS} concurrent callers, ~{PARAMS_SIZE} B params")
    results: dict[str, list[float]] = {"store": [], "router": [], "plain": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for name in results:
                db = str(Path(tmp) / f"{name}-{uuid.uuid4().hex}.db")
                if name == "plain":
                    results[name].append(await bench_plain(db))
                else:
                    fn = bench_store if name == "store" else bench_router
                    results[name].append(await fn(db, N_OURS, PARAMS_SIZE))
    row(f"Store.enqueue (group commit), {N_OURS:,} req", results["store"], "req/s")
    row(f"Router.messages.submit, {N_OURS:,} req", results["router"], "req/s")
    row(f"plain aiosqlite commit per row, {N_PLAIN:,} req", results["plain"], "req/s")
    s, r, p = (median(results[k]) for k in ("store", "router", "plain"))
    print(f"  ratio Store.enqueue / plain: {ratio(s, p)};  Router.submit / plain: {ratio(r, p)}")
    ok = s >= 25_000 and r >= 25_000
    print(f"  target >= 25,000 req/s: {'met' if ok else 'MISSED'}")


async def postgres_side(repeats: int) -> None:
    banner(
        f"durable enqueue on PostgreSQL, synchronous_commit=on, {CALLERS} concurrent callers,"
        f" ~{PG_PARAMS_SIZE} B params, {N_PG:,} requests a side"
    )
    results: dict[str, list[float]] = {"store": [], "router": [], "plain": []}
    with postgres() as server:
        for i in range(repeats):
            for name in results:
                url = await asyncio.to_thread(server.create_database, f"enqueue_{name}_{i}")
                if name == "plain":
                    results[name].append(await bench_plain_pg(url))
                else:
                    fn = bench_store if name == "store" else bench_router
                    results[name].append(await fn(url, N_PG, PG_PARAMS_SIZE))
    row("Store.enqueue (group commit)", results["store"], "req/s")
    row("Router.messages.submit", results["router"], "req/s")
    row(f"asyncpg pool of {PG_POOL}, commit per row", results["plain"], "req/s")
    s, r, p = (median(results[k]) for k in ("store", "router", "plain"))
    print(f"  ratio Store.enqueue / plain: {ratio(s, p)};  Router.submit / plain: {ratio(r, p)}")
    ok = r >= 15_000 and r >= 3 * p
    print(f"  target Router.submit >= 15,000 req/s and >= 3x: {'met' if ok else 'MISSED'}")


async def bench_submit_logging(db: str, configured: bool) -> float:
    """One `messages.submit` run in a fresh process, logging unconfigured or configured quiet."""
    if configured:
        configure_logging("warning")
    else:
        reset_logging()  # bench/_common.py configures on import; back to a bare program's state
    config = RouterConfig.default(store_path=db)
    params = [params_of_size(i, PROMPT_PARAMS_SIZE) for i in range(N_LOGGING)]
    async with Router(config, scheduler=False) as client:

        async def one(i: int) -> None:
            await client.messages.submit(**params[i], latency="daily", key=f"k{i}")

        return await _callers(N_LOGGING, one)


def logging_pairs(tmp: str) -> None:
    banner(
        f"messages.submit, logging unconfigured vs quiet, {N_LOGGING:,} req, {CALLERS} callers,"
        f" ~{PROMPT_PARAMS_SIZE} B params, FULL"
    )
    runs: dict[bool, list[float]] = {False: [], True: []}
    pair_ratios: list[float] = []
    for pair in range(LOGGING_PAIRS):
        order = (False, True) if pair % 2 == 0 else (True, False)
        got: dict[bool, float] = {}
        for configured in order:
            db = Path(tmp) / f"logging-{uuid.uuid4().hex}.db"
            got[configured] = run_async_child(bench_submit_logging, str(db), configured)
            runs[configured].append(got[configured])
        pair_ratios.append(got[False] / got[True])
    row("submit, logging unconfigured", runs[False], "req/s")
    row('submit, configure_logging("warning")', runs[True], "req/s")
    unconfigured, quiet = median(runs[False]), median(runs[True])
    print(
        f"  ratio unconfigured / quiet: {ratio(unconfigured, quiet)} of medians,"
        f" {median(pair_ratios):.2f}x median of pairs"
        f" (pairs: {', '.join(f'{r:.2f}' for r in pair_ratios)})"
    )
    ok = median(pair_ratios) >= 0.90
    print(f"  target unconfigured within 10 % of quiet: {'met' if ok else 'MISSED'}")


def run_engine(engine: str, repeats: int) -> None:
    asyncio.run((sqlite_side if engine == "sqlite" else postgres_side)(repeats))


def main() -> int:
    if "--logging" not in sys.argv[1:]:
        run_per_engine(__doc__, run_engine, repeats=REPEATS)
    else:
        sys.argv.remove("--logging")
    with tempfile.TemporaryDirectory() as tmp:
        logging_pairs(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
