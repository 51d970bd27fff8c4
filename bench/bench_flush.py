"""Flush of 100,000 stored requests (~2 KB of params each) into one batches.create, from SQLite
and from PostgreSQL (a throwaway server from tests/pgserver.py).

Sides, each in its own spawned subprocess (so one side's peak RSS cannot hide the other's),
each on a fresh copy of the same store file (PostgreSQL: a database made from the prepared one
as a template):
  - ours: `batcher.flush` (claim in SQL, body streamed from the store with an exact Content-Length),
  - competitor: read the same rows, build `requests=[{"custom_id", "params": dict}]` and call the
    SDK's own `client.messages.batches.create(requests=...)`.

Client-side time is the duration of the call against `bench/_sink.py`, a subprocess server that
reads every byte of the body and answers at once (so the server's JSON parsing is not counted).
Once per run, ours is also flushed into the real emulator (subprocess) to show it accepts it.
Peak RSS growth: a thread samples VmRSS every 2 ms; growth = peak - RSS just before the call.
Ours is also timed by phase (PHASES): the claim, the body's reads and upload, mark_submitted.
Targets: SQLite <= 1.5 s, <= 100 MiB, ratio >= 3x on time, >= 6x on memory; PostgreSQL
<= 2 s and <= 100 MiB.

    .venv/bin/python bench/bench_flush.py [--engine sqlite|postgresql|both] [--repeats 3]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    MiB,
    RssSampler,
    banner,
    build_store,
    emulator_process,
    master_store,
    measured_flush,
    report_time_and_memory,
    row,
    run_on_copy,
    run_per_engine,
    sink_process,
)

N = 100_000
SIZE = 2000
REPEATS = 3


async def ours(db: str, url: str) -> dict[str, Any]:
    phases: dict[str, float] = dict.fromkeys(PHASES, 0.0)
    _time_phases(phases)
    report, figures, _ = await measured_flush(db, url, max_requests=N)
    assert report.requests == N and len(report.batches) == 1, report
    return {**figures, "phases": phases}


# Where ours spends the flush: the store's three operations, timed around the calls. The body
# phase runs from the first read of claimed rows to the last (the upload overlaps it); "reads"
# is the part of it spent waiting on the store for the next chunk.
PHASES = {
    "claim_batch": "ours: claim_batch (claim + intent)",
    "body": "ours: body streamed (reads + upload)",
    "reads": "ours: of which reads of claimed rows",
    "mark_submitted": "ours: mark_submitted",
}


def _time_phases(phases: dict[str, float]) -> None:
    """Wrap the store classes' flush operations, in this (spawned, one-run) process only."""
    from router.store import Store

    classes: list[Any] = [Store]
    with contextlib.suppress(ImportError):
        from router.store.postgres import PostgresStore

        classes.append(PostgresStore)
    for cls in classes:
        for name in ("claim_batch", "mark_submitted"):
            setattr(cls, name, _timed(getattr(cls, name), name, phases))
        cls.iter_claimed = _timed_rows(cls.iter_claimed, phases)


def _timed(call: Any, name: str, phases: dict[str, float]) -> Any:
    async def timed(*args: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        try:
            return await call(*args, **kw)
        finally:
            phases[name] += time.perf_counter() - start

    return timed


def _timed_rows(iter_claimed: Any, phases: dict[str, float]) -> Any:
    async def timed_rows(*args: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        rows = iter_claimed(*args, **kw)
        while True:
            waited = time.perf_counter()
            try:
                chunk = await rows.__anext__()
            except StopAsyncIteration:
                break
            finally:
                phases["reads"] += time.perf_counter() - waited
            yield chunk
        phases["body"] += time.perf_counter() - start

    return timed_rows


async def sdk(db: str, url: str) -> dict[str, Any]:
    import anthropic

    read = _read_postgres if "://" in db else _read_sqlite
    client = anthropic.AsyncAnthropic(base_url=url, api_key="bench-key", max_retries=0, timeout=600)
    try:
        with RssSampler() as rss:
            start = time.perf_counter()
            rows = await read(db)
            requests: list[Any] = [{"custom_id": f"r{rid}", "params": json.loads(p)} for rid, p in rows]
            del rows
            batch = await client.messages.batches.create(requests=requests)
            seconds = time.perf_counter() - start
        assert batch.id
        return {"seconds": seconds, "growth": rss.growth, "peak": rss.peak}
    finally:
        await client.close()


PENDING = (
    "SELECT r.id, p.params FROM requests r JOIN request_params p ON p.id = r.id"
    " WHERE r.state = 'pending' ORDER BY r.id LIMIT {}"
)


async def _read_sqlite(db: str) -> list[tuple[int, bytes]]:
    import aiosqlite

    async with aiosqlite.connect(db) as conn, conn.execute(PENDING.format("?"), (N,)) as cur:
        return list(await cur.fetchall())  # type: ignore[arg-type]


async def _read_postgres(url: str) -> list[tuple[int, bytes]]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return [(r[0], r[1]) for r in await conn.fetch(PENDING.format("$1"), N)]
    finally:
        await conn.close()


def run_engine(engine: str, repeats: int) -> None:
    where = "PostgreSQL" if engine == "postgresql" else "SQLite"
    banner(f"flush of {N:,} stored requests (~{SIZE:,} B params each) from {where} into one batches.create")
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "sdk": [], "emulator": []}
    with master_store(engine, "flush_master") as master:
        t = time.perf_counter()
        asyncio.run(build_store(master, N, SIZE))
        size = "" if "://" in master else f", {Path(master).stat().st_size / MiB:,.0f} MiB"
        print(f"  (store of {N:,} requests built in {time.perf_counter() - t:.1f} s{size})", flush=True)
        with sink_process() as sink, emulator_process() as emu:
            for i in range(repeats):
                for name, fn, url in (("ours", ours, sink), ("sdk", sdk, sink), ("emulator", ours, emu)):
                    if name == "emulator" and i > 0:
                        continue
                    runs[name].append(run_on_copy(master, f"{name}_{i}", fn, url))
    emulator = runs.pop("emulator")
    row("ours into the real emulator (incl. its parse)", [r["seconds"] for r in emulator], "s", "{:.2f}")
    growth = [r["growth"] / MiB for r in emulator]
    row("ours into the real emulator, peak RSS growth", growth, "MiB", "{:.1f}")
    for key, label in PHASES.items():
        row(label, [r["phases"][key] for r in runs["ours"]], "s", "{:.2f}")
    t_ours, t_sdk, m_ours, m_sdk = report_time_and_memory(
        runs, "batcher.flush (sink server)", "batches.create(requests=[...])"
    )
    if engine == "postgresql":
        ok = t_ours <= 2 and m_ours <= 100
        print(f"  target <= 2 s, <= 100 MiB: {'met' if ok else 'MISSED'}")
    else:
        ok = t_ours <= 1.5 and m_ours <= 100 and t_sdk / t_ours >= 3 and m_sdk / max(m_ours, 1e-9) >= 6
        print(f"  target <= 1.5 s, <= 100 MiB, >= 3x time, >= 6x memory: {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(run_per_engine(__doc__, run_engine, repeats=REPEATS))
