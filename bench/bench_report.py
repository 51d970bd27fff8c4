"""The cost report's read of the history, and the purge that rolls the ledger into daily totals.

A store gets `--rows` ledger rows (one per batch result: 60 days, 20 tags, 3 models, both
lanes), then: `report` (StoreEngine.history_rows plus the pricing of router/report.py) timed
`--repeats` times; one purge of the rows older than 30 days (rolled into `ledger_days`, then
deleted), timed; `report` timed again, reading the kept rows plus the daily totals. Both
reports must give the same figures (checked). Medians in milliseconds.

    .venv/bin/python bench/bench_report.py [--engine sqlite|postgresql|both] [--rows 200000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

from _common import banner, chosen_engines, engines_argument, master_store, median, open_location

from router.config import RouterConfig
from router.pricing import TokenCounts
from router.report import build_report
from router.store import LedgerEntry

DAY = 86400.0
MODELS = ("claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-5")


async def fill(store: Any, rows: int, now: float) -> None:
    rng = random.Random(7)
    for i in range(rows):
        lane = "realtime" if rng.random() < 0.25 else "batch"
        store.record(
            LedgerEntry(
                at=now - rng.uniform(0, 60 * DAY),
                lane=lane,
                model=rng.choice(MODELS),
                latency="daily" if lane == "batch" else "realtime",
                tag=f"tag-{rng.randrange(20)}",
                result_type="succeeded",
                usage=TokenCounts(input=rng.randrange(100, 2000), output=rng.randrange(10, 400)),
                request_id=i + 1,
                batch_id=1 + i // 10_000,
            )
        )
        if i % 10_000 == 9_999:
            await store.history_rows(now)  # commits the queued rows
    await store.history_rows(now)


async def timed_reports(store: Any, repeats: int, now: float) -> tuple[float, dict[str, Any]]:
    config = RouterConfig.default()
    runs = []
    figures: dict[str, Any] = {}
    for _ in range(repeats):
        started = time.perf_counter()
        report = await build_report(store, config, now=now)
        runs.append((time.perf_counter() - started) * 1000)
        figures = report.to_json()
    del figures["generated_at"]
    return median(runs), figures


async def run(location: str, rows: int, repeats: int) -> None:
    now = time.time()
    store = await open_location(location)
    try:
        await fill(store, rows, now)
        before_ms, before = await timed_reports(store, repeats, now)
        started = time.perf_counter()
        purged = await store.purge(before=now - 30 * DAY)
        purge_ms = (time.perf_counter() - started) * 1000
        after_ms, after = await timed_reports(store, repeats, now)
    finally:
        await store.close()
    assert after == before, "the purge changed the report's figures"
    kept = rows - purged.ledger
    print(f"  report, {rows:,} ledger rows: {before_ms:.1f} ms (median)")
    print(f"  purge of {purged.ledger:,} rows into {purged.days:,} daily totals: {purge_ms:.1f} ms (one run)")
    print(f"  report, {kept:,} rows + {purged.days:,} daily totals: {after_ms:.1f} ms (median)")
    print(f"  ratio before / after purge: {before_ms / after_ms:.2f}x; figures identical: yes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    engines_argument(parser)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for engine in chosen_engines(args.engine):
        banner(f"report history ({engine})")
        with master_store(engine, "bench_report") as location:
            asyncio.run(run(location, args.rows, args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
