"""Result-to-caller latency across processes: a result committed by one process, the caller
waiting on `results.wait(key)` in another.

The writer (this process, as the daemon would) stores the requests, claims them into a batch
and marks it submitted; a spawned waiter process opens a Router on the same store (no
scheduler) and waits on every key. Once all are waiting, the writer applies the batch's
result lines in small groups (`Store.apply_results`, what the daemon's ingest commits), with
a pause between groups, and notes the wall-clock time (time.time(), one clock for both
processes on one machine) just before each call and right after its commit returns. The
waiter notes the time each `results.wait` returns. Latency = resolved - committed, per key
(a NOTIFY can beat the commit's reply to the writer, hence a few negative values), and, as an
upper bound, resolved - the apply's start.

  - PostgreSQL: the commit's NOTIFY wakes the waiter's watcher (LISTEN);
  - SQLite: the waiter's watcher polls every `watch_interval` (0.25 s by default).
Targets (PostgreSQL): p50 <= 50 ms, p99 <= 250 ms.

    .venv/bin/python bench/bench_wake.py [--engine sqlite|postgresql|both] [--results 300] [--group 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import random
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _common import MODEL, banner, chosen_engines, engines_argument, open_location, params_of_size, postgres

from router.store import NewRequest, custom_id_for

PAUSE = (0.05, 0.15)  # seconds between groups, drawn at random: not in step with any poll


def result_line(request_id: int) -> bytes:
    message = {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 1},
    }
    line = {"custom_id": custom_id_for(request_id), "result": {"type": "succeeded", "message": message}}
    return json.dumps(line, separators=(",", ":")).encode()


def waiter(location: str, keys: list[str], pipe: Connection) -> None:
    asyncio.run(_wait_all(location, keys, pipe))


async def _wait_all(location: str, keys: list[str], pipe: Connection) -> None:
    from router import Router, RouterConfig

    resolved: dict[str, float] = {}
    async with Router(RouterConfig.default().with_store(location), scheduler=False) as client:
        listening = getattr(client.store, "listening", None)
        if listening is not None:
            await listening()  # PostgreSQL: LISTEN is up before the first commit

        async def one(key: str) -> None:
            await client.results.wait(key)
            resolved[key] = time.time()

        tasks = [asyncio.create_task(one(k)) for k in keys]
        while client._waiters.waiting < len(keys):  # noqa: ASYNC110 - a count, not an event
            await asyncio.sleep(0.01)
        pipe.send("ready")
        await asyncio.gather(*tasks)
        interval = client.config.router.watch_interval
    pipe.send((resolved, interval))


Times = dict[str, float]


def store_arguments() -> tuple[dict[str, Any], dict[str, Any]]:
    """The keywords `claim_batch` and `apply_results` need beyond the ones of the code before the
    store's engine seam (bench_before_after.py runs this script on that code too): the batch
    body's framing and the retry decision, which that code took from its own modules."""
    try:
        from router.providers.anthropic.provider import BATCH_FORMAT
        from router.retry import should_resubmit
    except ImportError:
        return {}, {}
    return {"frame": BATCH_FORMAT}, {"retry": should_resubmit}


async def run_engine(location: str, count: int, group: int) -> tuple[Times, Times, Times, float]:
    """Per key: when its apply_results call began and when it returned (committed), when the
    waiter resolved; and the waiter's watch_interval."""
    claim_kw, apply_kw = store_arguments()
    store = await open_location(location)
    now = time.time()
    keys = [f"wake{i}" for i in range(count)]
    body = [json.dumps(params_of_size(i, 300), separators=(",", ":")).encode() for i in range(count)]
    tickets = await store.enqueue_many(
        [NewRequest(k, "daily", None, MODEL, b, now, now + 86400) for k, b in zip(keys, body, strict=True)]
    )
    claim = await store.claim_batch(
        latencies=None, max_requests=count, max_bytes=256_000_000, now=now, **claim_kw
    )
    assert claim is not None and claim.request_count == count, claim
    await store.mark_submitted(claim.batch_id, "msgbatch_bench_wake", now=now, next_poll_at=now + 3600)

    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=waiter, args=(location, keys, theirs))
    proc.start()
    began: Times = {}
    committed: Times = {}
    try:
        assert await asyncio.to_thread(ours.recv) == "ready"
        for first in range(0, count, group):
            part = tickets[first : first + group]
            start = time.time()
            await store.apply_results(
                claim.batch_id,
                [result_line(t.request_id) for t in part],
                now=time.time(),
                max_attempts={"daily": 1},
                **apply_kw,
            )
            at = time.time()
            for t in part:
                began[t.key], committed[t.key] = start, at
            await asyncio.sleep(random.uniform(*PAUSE))
        resolved, interval = await asyncio.to_thread(ours.recv)
    finally:
        await asyncio.to_thread(proc.join, 60)
        if proc.is_alive():
            proc.kill()
        await store.close()
    return began, committed, resolved, interval


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(label: str, committed: dict[str, float], resolved: dict[str, float]) -> dict[str, float]:
    ms = [1000 * (resolved[k] - committed[k]) for k in committed]
    figures = {f"p{int(q * 100)}": percentile(ms, q) for q in (0.5, 0.9, 0.99)}
    figures["max"], figures["min"] = max(ms), min(ms)
    shown = ", ".join(f"{name} {value:.1f}" for name, value in figures.items())
    print(f"  {label:<46} {shown} ms   ({len(ms)} results)", flush=True)
    return figures


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    engines_argument(parser)
    parser.add_argument("--results", type=int, default=300)
    parser.add_argument("--group", type=int, default=5)
    args = parser.parse_args()
    banner(
        f"result-to-caller latency across processes: {args.results} results in groups of {args.group},"
        f" {PAUSE[0]:.2f} to {PAUSE[1]:.2f} s apart"
    )
    engines = chosen_engines(args.engine)
    server = postgres() if "postgresql" in engines else contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as tmp, server as pg:
        for engine in engines:
            if engine == "postgresql":
                location = await asyncio.to_thread(pg.create_database, "wake")
            else:
                location = str(Path(tmp) / "wake.db")
            began, committed, resolved, interval = await run_engine(location, args.results, args.group)
            name = "PostgreSQL, NOTIFY" if engine == "postgresql" else f"SQLite, {interval:g} s polls"
            figures = report(f"{name}, from commit", committed, resolved)
            report(f"{name}, from the apply's start", began, resolved)
            if engine == "postgresql":
                ok = figures["p50"] <= 50 and figures["p99"] <= 250
                print(f"  target p50 <= 50 ms, p99 <= 250 ms: {'met' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
