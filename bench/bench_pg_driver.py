"""Which PostgreSQL driver for the store: asyncpg or psycopg 3, measured on the store's own shapes.

Three shapes, each on a throwaway server (tests/pgserver.py), each driver side by side,
alternating, medians of N rounds:
  group    1,024 callers' rows (850-byte bodies) in multi-row INSERT ... SELECT FROM unnest,
           one statement and one commit per group of up to 4,096 rows (the enqueue path);
  single   the same rows, one INSERT and one commit each, through a 10-connection pool;
  stream   100,000 x 2 KB bodies read back in id order through a server-side cursor
           (the flush path), with the peak RSS growth.

    .venv/bin/python bench/bench_pg_driver.py [--rows 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import psycopg
import psycopg_pool

from tests.pgserver import postgres_server

SCHEMA = "CREATE TABLE IF NOT EXISTS req (id bigserial PRIMARY KEY, key text UNIQUE, params bytea)"
GROUP = 4096


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def asyncpg_group(url: str, rows: list[tuple[str, bytes]]) -> float:
    conn = await asyncpg.connect(url)
    await conn.execute("TRUNCATE req")
    start = time.perf_counter()
    for i in range(0, len(rows), GROUP):
        part = rows[i : i + GROUP]
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO req (key, params) SELECT * FROM unnest($1::text[], $2::bytea[])",
                [k for k, _ in part],
                [p for _, p in part],
            )
    took = time.perf_counter() - start
    await conn.close()
    return len(rows) / took


async def psycopg_group(url: str, rows: list[tuple[str, bytes]]) -> float:
    conn = await psycopg.AsyncConnection.connect(url)
    await conn.execute("TRUNCATE req")
    await conn.commit()
    start = time.perf_counter()
    for i in range(0, len(rows), GROUP):
        part = rows[i : i + GROUP]
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO req (key, params) SELECT * FROM unnest(%s::text[], %s::bytea[])",
                ([k for k, _ in part], [p for _, p in part]),
            )
    took = time.perf_counter() - start
    await conn.close()
    return len(rows) / took


async def asyncpg_single(url: str, rows: list[tuple[str, bytes]]) -> float:
    pool = await asyncpg.create_pool(url, min_size=10, max_size=10)
    await pool.execute("TRUNCATE req")

    async def one(key: str, params: bytes) -> None:
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO req (key, params) VALUES ($1, $2)", key, params)

    start = time.perf_counter()
    await _callers([one(k, p) for k, p in rows])
    took = time.perf_counter() - start
    await pool.close()
    return len(rows) / took


async def psycopg_single(url: str, rows: list[tuple[str, bytes]]) -> float:
    pool = psycopg_pool.AsyncConnectionPool(url, min_size=10, max_size=10, open=False)
    await pool.open()
    async with pool.connection() as conn:
        await conn.execute("TRUNCATE req")

    async def one(key: str, params: bytes) -> None:
        async with pool.connection() as conn:
            await conn.execute("INSERT INTO req (key, params) VALUES (%s, %s)", (key, params))

    start = time.perf_counter()
    await _callers([one(k, p) for k, p in rows])
    took = time.perf_counter() - start
    await pool.close()
    return len(rows) / took


async def _callers(jobs: list[Any], width: int = 1024) -> None:
    """At most `width` callers at once, as 1,024 application tasks would be."""
    gate = asyncio.Semaphore(width)

    async def run(job: Any) -> None:
        async with gate:
            await job

    await asyncio.gather(*(run(j) for j in jobs))


async def fill_stream_table(url: str, count: int) -> None:
    conn = await asyncpg.connect(url)
    await conn.execute("DROP TABLE IF EXISTS big; CREATE TABLE big (id bigserial PRIMARY KEY, params bytea)")
    body = b"x" * 2048
    for i in range(0, count, 10_000):
        n = min(10_000, count - i)
        await conn.execute("INSERT INTO big (params) SELECT $1::bytea FROM generate_series(1, $2)", body, n)
    await conn.close()


async def asyncpg_stream(url: str) -> tuple[float, int]:
    conn = await asyncpg.connect(url)
    start = time.perf_counter()
    total = 0
    async with conn.transaction():
        cursor = await conn.cursor("SELECT id, params FROM big ORDER BY id")
        while chunk := await cursor.fetch(2000):
            total += sum(len(r[1]) for r in chunk)
    took = time.perf_counter() - start
    await conn.close()
    return took, total


async def psycopg_stream(url: str) -> tuple[float, int]:
    conn = await psycopg.AsyncConnection.connect(url)
    start = time.perf_counter()
    total = 0
    async with conn.transaction(), conn.cursor(name="c") as cursor:
        await cursor.execute("SELECT id, params FROM big ORDER BY id")
        while chunk := await cursor.fetchmany(2000):
            total += sum(len(r[1]) for r in chunk)
    took = time.perf_counter() - start
    await conn.close()
    return took, total


async def main(rows_count: int, rounds: int, stream_rows: int) -> None:
    rows = [(f"k{i}", b"p" * 850) for i in range(rows_count)]
    with postgres_server() as server:
        url = server.create_database("bench")
        conn = await asyncpg.connect(url)
        await conn.execute(SCHEMA)
        await conn.close()
        figures: dict[str, list[float]] = {}
        for _ in range(rounds):
            for name, fn in (
                ("asyncpg group", asyncpg_group),
                ("psycopg group", psycopg_group),
                ("asyncpg single/pool10", asyncpg_single),
                ("psycopg single/pool10", psycopg_single),
            ):
                figures.setdefault(name, []).append(await fn(url, rows))
        await fill_stream_table(url, stream_rows)
        for _ in range(rounds):
            for name, sfn in (("asyncpg stream", asyncpg_stream), ("psycopg stream", psycopg_stream)):
                took, _ = await sfn(url)
                figures.setdefault(name, []).append(took)
    print(f"{rows_count:,} rows x 850 B, {rounds} rounds, medians; PostgreSQL 15, synchronous_commit=on")
    for name, values in figures.items():
        unit = "s" if "stream" in name else "rows/s"
        print(f"  {name:<24} {statistics.median(values):>12,.2f} {unit}")
    print(f"  peak RSS {rss_mib():.0f} MiB (the process, all shapes)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stream-rows", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.rounds, args.stream_rows))
