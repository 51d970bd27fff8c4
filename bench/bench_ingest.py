"""Ingest of a 100,000-line batch results file: store every result and resolve the waiting callers,
on SQLite and on PostgreSQL (a throwaway server from tests/pgserver.py).

Setup (not timed): 100,000 requests stored and flushed into one batch of the emulator (a
subprocess), the batch ended through the emulator's admin route. Each run works on a fresh
copy of that store (PostgreSQL: a database made from it as a template), in its own spawned
subprocess, with 100,000 callers waiting:
  - ours: 100,000 tasks waiting on the completion watcher (what `results.wait(key)` does
    once it found the key's row), then `client.poll()` (results streamed in
    chunks into the store, waiters resolved by the completion watcher); timed until every
    waiter has its Message,
  - competitor: 100,000 futures keyed by custom_id, the SDK's own
    `client.messages.batches.results(id)` (one pydantic object per line), each chunk of 2,000
    written with executemany in one transaction, futures resolved with the parsed Message.
Peak RSS growth is sampled (VmRSS every 2 ms) from just before the poll to the last waiter, and
so is our side's CPU: the process's, and on PostgreSQL the server's processes' (from /proc).
Both sides run one gc.collect() after their waiters are registered, before the timer starts
(see settle_garbage).
Targets for ours: SQLite <= 3 s and <= 150 MiB; PostgreSQL <= 4 s.

`--before DIR` also measures the code of another checkout (say a `git worktree` of main) in
the same run: its own master store, prepared by its own code, and its "ours" run in turn with
this code's in every repeat (HYBRID_ROUTER_BENCH_CODE, as bench_before_after.py sets it).

    .venv/bin/python bench/bench_ingest.py [--engine sqlite|postgresql|both] [--repeats 3]
        [--before DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sqlite3
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import (
    CpuClock,
    RssSampler,
    banner,
    build_store,
    chosen_engines,
    copy_database,
    emulator_process,
    engines_argument,
    master_store,
    measured_flush,
    median,
    ratio,
    report_time_and_memory,
    row,
    run_async_child,
    run_on_copy,
    server_parent,
)

N = 100_000
SIZE = 300
REPEATS = 3


class LastWaiter:
    """Sets `done` when the N-th waiter is through (`with last:` around each waiter's body).

    The timer stops there, on both sides. It used to stop when `asyncio.gather(*tasks)`
    returned, which by then was mostly gather's own work: 100,000 done callbacks queued at
    once (a handle, a context copy and an argument tuple each), enough young objects to set
    off a full collection (~0.25 s) of the 1,000,000 objects the waiting tasks keep alive.
    """

    def __init__(self) -> None:
        self.finished = 0
        self.done = asyncio.Event()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self.finished += 1
        if self.finished == N:
            self.done.set()


def settle_garbage() -> None:
    """Collect once before the timer starts, on both sides.

    Registering 100,000 waiting callers leaves ~200,000 young objects (their futures' iterators
    and wake-up methods); whichever code runs next pays the full collection their promotion
    sets off (~0.4 s per collection here, walking ~1,000,000 live objects). That is the
    setup's cost, not the ingest's: without this, both sides pay it inside the timer.
    """
    gc.collect()


async def prepare(db: str, url: str) -> str:
    """Store N requests, flush them into one emulator batch and end it; returns the batch id."""
    await build_store(db, N, SIZE)
    report, _, _ = await measured_flush(db, url, max_requests=N)  # Router.poll() forces the poll
    assert len(report.batches) == 1 and report.requests == N, report
    await asyncio.to_thread(_end_batches, url)
    return report.batches[0]


def _end_batches(url: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(f"{url}/_emulator/batches/end", method="POST")) as r:
        r.read()


async def ours(db: str, url: str) -> dict[str, Any]:
    import anthropic

    from router import Router, RouterConfig
    from router.outcomes import unwrap

    config = RouterConfig.default().with_store(db).with_base_url(url)
    sdk = anthropic.AsyncAnthropic(base_url=url, api_key="bench-key", max_retries=0, timeout=600)
    got = 0
    last = LastWaiter()

    async with Router(config, anthropic=sdk, scheduler=False) as client:

        async def waiter(request_id: int) -> None:
            nonlocal got
            with last:
                message = unwrap(await watcher.wait(request_id))
                got += message.usage.output_tokens > 0

        # What `results.wait(key)` does after looking up the key (a second query per caller,
        # which would only make the untimed setup longer).
        watcher = client._waiters
        ids = await request_ids(db)
        looked_up = count_lookups(client.store)
        tasks = [asyncio.create_task(waiter(i)) for i in ids]
        # Wait until every caller is registered and has looked its row up. Counted: on
        # PostgreSQL the lookups share a pool whose queue is not first come, first served, so
        # a read issued after them can return while thousands still wait for a connection.
        while watcher.waiting < N or looked_up() < N:  # noqa: ASYNC110 - a count, not an event
            await asyncio.sleep(0.05)
        await client.store.max_done_seq()
        postmaster = await server_parent(db) if "://" in db else None
        await asyncio.sleep(0.1)
        settle_garbage()
        with RssSampler() as rss, CpuClock(postmaster) as cpu:
            start = time.perf_counter()
            report = await client.poll()
            await last.done.wait()
            seconds = time.perf_counter() - start
        await asyncio.gather(*tasks)  # after the timer: raises what a waiter raised
    await sdk.close()
    assert report.delivered == N and got == N, (report, got)
    return figures(seconds, rss, cpu)


async def daemon(db: str, url: str) -> dict[str, Any]:
    """The daemon's ingest: `Router.poll()` with no caller waiting in the process, as
    `hybrid-router daemon` runs it while the callers wait in other processes (on PostgreSQL
    woken by NOTIFY, on SQLite by their watchers' polling); timed until the poll returns,
    every line committed."""
    import anthropic

    from router import Router, RouterConfig

    config = RouterConfig.default().with_store(db).with_base_url(url)
    sdk = anthropic.AsyncAnthropic(base_url=url, api_key="bench-key", max_retries=0, timeout=600)
    async with Router(config, anthropic=sdk, scheduler=False) as client:
        await client.store.max_done_seq()
        postmaster = await server_parent(db) if "://" in db else None
        settle_garbage()
        with RssSampler() as rss, CpuClock(postmaster) as cpu:
            start = time.perf_counter()
            report = await client.poll()
            seconds = time.perf_counter() - start
    await sdk.close()
    assert report.delivered == N, report
    return figures(seconds, rss, cpu)


def figures(seconds: float, rss: RssSampler, cpu: CpuClock) -> dict[str, Any]:
    """What one timed run of ours reports to the parent process."""
    return {
        "seconds": seconds,
        "growth": rss.growth,
        "peak": rss.peak,
        "cpu": cpu.client,
        "server_cpu": cpu.server,
    }


def count_lookups(store: Any) -> Callable[[], int]:
    """Count the store's finished `get_many` calls (the waiters' look-ups); returns the count's getter."""
    done = 0
    real = store.get_many

    async def get_many(ids: Any) -> Any:
        nonlocal done
        try:
            return await real(ids)
        finally:
            done += 1

    store.get_many = get_many  # the watcher calls it through the same object
    return lambda: done


async def request_ids(db: str) -> list[int]:
    if "://" in db:
        import asyncpg

        conn = await asyncpg.connect(db)
        try:
            return [int(r[0]) for r in await conn.fetch("SELECT id FROM requests")]
        finally:
            await conn.close()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [int(r[0]) for r in conn.execute("SELECT id FROM requests")]


class SqliteWriter:
    """The competitor's writes on SQLite: one aiosqlite connection, FULL, a transaction a chunk."""

    async def open(self, db: str) -> str:
        import aiosqlite

        self.conn = await aiosqlite.connect(db, isolation_level=None)
        await self.conn.execute("PRAGMA journal_mode = WAL")
        await self.conn.execute("PRAGMA synchronous = FULL")
        async with self.conn.execute("SELECT api_id FROM batches WHERE api_id IS NOT NULL") as cur:
            (api_id,) = await cur.fetchone() or ("",)
        return str(api_id)

    async def write(self, rows: list[tuple[str, bytes, int]]) -> None:
        await self.conn.execute("BEGIN IMMEDIATE")
        await self.conn.executemany(
            "UPDATE requests SET state = 'succeeded', outcome = ?, result = ? WHERE id = ?", rows
        )
        await self.conn.execute("COMMIT")

    async def close(self) -> None:
        await self.conn.close()


class PostgresWriter:
    """The competitor's writes on PostgreSQL: one asyncpg connection, executemany in a transaction a chunk."""

    async def open(self, db: str) -> str:
        import asyncpg

        self.conn = await asyncpg.connect(db)
        return str(await self.conn.fetchval("SELECT api_id FROM batches WHERE api_id IS NOT NULL"))

    async def write(self, rows: list[tuple[str, bytes, int]]) -> None:
        async with self.conn.transaction():
            await self.conn.executemany(
                "UPDATE requests SET state = 'succeeded', outcome = $1, result = $2 WHERE id = $3", rows
            )

    async def close(self) -> None:
        await self.conn.close()


async def sdk_side(db: str, url: str) -> dict[str, Any]:
    import anthropic

    writer = PostgresWriter() if "://" in db else SqliteWriter()
    api_id = await writer.open(db)
    client = anthropic.AsyncAnthropic(base_url=url, api_key="bench-key", max_retries=0, timeout=600)
    loop = asyncio.get_running_loop()
    futures: dict[str, asyncio.Future[Any]] = {f"r{i}": loop.create_future() for i in range(1, N + 1)}
    got = 0
    last = LastWaiter()

    async def waiter(fut: asyncio.Future[Any]) -> None:
        nonlocal got
        with last:
            message = await fut
            got += message.usage.output_tokens > 0

    tasks = [asyncio.create_task(waiter(f)) for f in futures.values()]
    await asyncio.sleep(0)
    settle_garbage()

    async def apply(chunk: list[Any]) -> None:
        await writer.write(
            [(r.result.type, r.to_json(indent=None).encode(), int(r.custom_id[1:])) for r in chunk]
        )
        for r in chunk:
            futures[r.custom_id].set_result(r.result.message)

    try:
        with RssSampler() as rss:
            start = time.perf_counter()
            chunk: list[Any] = []
            async for result in await client.messages.batches.results(api_id):
                chunk.append(result)
                if len(chunk) >= 2000:
                    await apply(chunk)
                    chunk = []
            if chunk:
                await apply(chunk)
            await last.done.wait()
            seconds = time.perf_counter() - start
        await asyncio.gather(*tasks)  # after the timer: raises what a waiter raised
    finally:
        await client.close()
        await writer.close()
    assert got == N, got
    return {"seconds": seconds, "growth": rss.growth, "peak": rss.peak}


def run_engine(engine: str, repeats: int, before: Path | None = None) -> None:
    where = "PostgreSQL" if engine == "postgresql" else "SQLite"
    banner(f"ingest of a {N:,}-line results file into {where}, {N:,} callers waiting")
    runs: dict[str, list[dict[str, Any]]] = {
        side: [] for side in ("ours", "sdk", "before", "daemon", "before daemon")
    }
    with master_store(engine, "ingest_master") as master, emulator_process() as url:
        old = sibling(master, "ingest_master_before") if before is not None else master
        t = time.perf_counter()
        asyncio.run(prepare(master, url))
        print(f"  (setup: {N:,} requests stored, flushed and ended in {time.perf_counter() - t:.1f} s)")
        if before is not None:
            print(f"  before: {before}", flush=True)
            with measuring(before):
                run_async_child(prepare, old, url)
        for i in range(repeats):
            sides: list[tuple[str, Callable[..., Any], str, Path | None]] = [
                ("ours", ours, master, None),
                ("daemon", daemon, master, None),
                ("sdk", sdk_side, master, None),
            ]
            if before is not None:  # which goes first alternates
                sides.insert(i % 2, ("before", ours, old, before))
                sides.insert(2 + i % 2, ("before daemon", daemon, old, before))
            for name, fn, store, code in sides:
                with measuring(code):
                    runs[name].append(run_on_copy(store, f"{name}_{i}", fn, url))
    if before is not None:
        t_before = [r["seconds"] for r in runs["before"]]
        row("before: Router.poll + watcher, time", t_before, "s", "{:.2f}")
        row("before: peak RSS growth", [r["growth"] / 2**20 for r in runs["before"]], "MiB", "{:.1f}")
    t_ours, _, m_ours, _ = report_time_and_memory(
        runs, "Router.poll + watcher", "results() + executemany + futures"
    )
    for side in ("before", "ours"):
        if runs[side]:
            report_cpu(side, runs[side], where)
    if before is not None:
        print(f"  ratio time before / ours: {ratio(median(t_before), t_ours)}")
    t_daemon = median([r["seconds"] for r in runs["daemon"]])
    for side in ("before daemon", "daemon"):
        if runs[side]:
            row(
                f"{side}: Router.poll, no caller in the process, time",
                [r["seconds"] for r in runs[side]],
                "s",
                "{:.2f}",
            )
            row(f"{side}: peak RSS growth", [r["growth"] / 2**20 for r in runs[side]], "MiB", "{:.1f}")
            report_cpu(side, runs[side], where)
    if before is not None:
        t_before_daemon = median([r["seconds"] for r in runs["before daemon"]])
        print(f"  ratio time before daemon / daemon: {ratio(t_before_daemon, t_daemon)}")
    if engine == "postgresql":
        print(f"  target <= 4 s, callers in the process: {'met' if t_ours <= 4 else 'MISSED'}")
        print(f"  target <= 4 s, the daemon's ingest: {'met' if t_daemon <= 4 else 'MISSED'}")
    else:
        ok = t_ours <= 3 and m_ours <= 150
        print(f"  target <= 3 s, <= 150 MiB: {'met' if ok else 'MISSED'}")
    print(f"  load average at the end: {os.getloadavg()[0]:.2f}", flush=True)


def report_cpu(side: str, runs: list[dict[str, Any]], where: str) -> None:
    """The CPU seconds of the timed window: this process, and the server's (PostgreSQL)."""
    row(f"{side}: CPU of the process", [r["cpu"] for r in runs], "s", "{:.2f}")
    served = [r["server_cpu"] for r in runs if r.get("server_cpu") is not None]
    if len(served) == len(runs):
        row(f"{side}: CPU of the {where} server", served, "s", "{:.2f}")


def sibling(master: str, name: str) -> str:
    """An empty store beside `master` (a file in its directory, or a database on its server)."""
    if "://" in master:
        return copy_database(master, name)  # made before `master` is filled
    return str(Path(master).with_name(f"{name}.db"))


@contextlib.contextmanager
def measuring(code: Path | None) -> Iterator[None]:
    """Children spawned in the block import `router` from `code` (None: this checkout)."""
    if code is None:
        yield
        return
    saved = os.environ.get("HYBRID_ROUTER_BENCH_CODE")
    os.environ["HYBRID_ROUTER_BENCH_CODE"] = str(code.resolve())
    try:
        yield
    finally:
        if saved is None:
            del os.environ["HYBRID_ROUTER_BENCH_CODE"]
        else:
            os.environ["HYBRID_ROUTER_BENCH_CODE"] = saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    engines_argument(parser)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--before", type=Path, default=None, help="a checkout of the code to compare with")
    args = parser.parse_args()
    for engine in chosen_engines(args.engine):
        run_engine(engine, args.repeats, args.before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
