"""Deadline drill: >= 1,000 deferred requests through slow, unpredictable batches.

Simulates a day on the emulator's manual clock, one minute a step: requests arrive over the
first hours, the router flushes every 10 minutes, polls batches as they fall due and runs
its escalation pass every step; a share of the batches is far slower than the router's estimate. It
prints how many requests were escalated, how many deadlines were missed (must be 0) and
the cost against sending everything real time.

    .venv/bin/python bench/deadline_drill.py [--requests 1200] [--slow-share 0.5] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anthropic

from router import Router, RouterConfig
from router.emulator import Emulator, EmulatorClock
from router.logs import configure_logging
from router.report import cost_summary

MINUTE = 60.0
HOUR = 3600.0

CONFIG = """
[store]
path = "{db}"
[batch]
turnaround_prior = "1h"
deadline_margin = "5m"
[classes.four_hours]
route = "batch"
deadline = "4h"
[classes.daily]
route = "batch"
deadline = "24h"
"""


@dataclass
class DrillResult:
    requests: int
    escalated: int
    missed: int
    batches: int
    slow_batches: int
    canceled_batches: int
    cost: float
    all_realtime_cost: float
    seconds: float

    def render(self) -> str:
        saving = 100 * (1 - self.cost / self.all_realtime_cost) if self.all_realtime_cost else 0.0
        return (
            f"deferred requests   {self.requests}\n"
            f"batches             {self.batches}"
            f" ({self.slow_batches} slow, {self.canceled_batches} canceled)\n"
            f"escalated           {self.escalated}\n"
            f"deadlines missed    {self.missed}\n"
            f"cost                ${self.cost:.4f} vs ${self.all_realtime_cost:.4f} all-realtime"
            f" ({saving:.1f}% saved)\n"
            f"wall time           {self.seconds:.1f} s"
        )


async def run_drill(
    requests: int = 1200, *, slow_share: float = 0.5, seed: int = 1, step_minutes: int = 1
) -> DrillResult:
    """Run the drill; `step_minutes` must stay below the 5-minute deadline margin."""
    rng = random.Random(seed)
    started = time.monotonic()
    emulator = Emulator(clock=EmulatorClock(start=1_800_000_000.0), seed=seed)
    await emulator.start()
    db = Path(tempfile.mkdtemp(prefix="deadline-drill-")) / "drill.db"
    config = RouterConfig.from_toml_text(CONFIG.format(db=db), db.parent / "router.toml")
    client = anthropic.AsyncAnthropic(base_url=emulator.url, api_key="drill", max_retries=0)
    clock = emulator.clock
    # Arrival minute of each request over the first six hours.
    arrivals = sorted(rng.randrange(0, 6 * 60) for _ in range(requests))
    slow = canceled = 0
    try:
        async with Router(config, anthropic=client, clock=clock.now, scheduler=False) as router:
            minute = 0
            submitted = 0
            while True:
                while submitted < len(arrivals) and arrivals[submitted] <= minute:
                    latency = "four_hours" if submitted % 3 == 0 else "daily"
                    await router.messages.submit(
                        model="claude-haiku-4-5",
                        max_tokens=32,
                        messages=[{"role": "user", "content": f"drill request {submitted}"}],
                        latency=latency,
                        key=f"drill-{submitted}",
                    )
                    submitted += 1
                if minute % 10 < step_minutes:
                    # Some batches are three times slower than anything the router expects.
                    is_slow = rng.random() < slow_share
                    emulator.batch_seconds = 12 * HOUR if is_slow else 20 * MINUTE
                    report = await router.flush()
                    slow += len(report.batches) if is_slow else 0
                escalation = await router.escalate()
                canceled += len(escalation.canceled_batches)
                await router._deadlines.drain()
                await router.poll(force=False)  # each batch when due, backing off as it ages
                counts = await router.store.state_counts()
                if submitted == len(arrivals) and set(counts) <= {"succeeded", "failed"}:
                    break
                clock.advance(step_minutes * MINUTE)
                minute += step_minutes
                if minute > 48 * 60:
                    raise RuntimeError(f"drill did not finish: {counts}")
            with contextlib.closing(sqlite3.connect(router.store.path)) as db:
                total, missed, escalated = db.execute(
                    "SELECT COUNT(*), SUM(finished_at > deadline_at), SUM(escalated_at IS NOT NULL)"
                    " FROM requests"
                ).fetchone()
            summary = await cost_summary(router.store, router.config)
            batches = await router.store.batch_count()
    finally:
        await client.close()
        await emulator.stop()
    return DrillResult(
        requests=int(total),
        escalated=int(escalated or 0),
        missed=int(missed or 0),
        batches=batches,
        slow_batches=slow,
        canceled_batches=canceled,
        cost=summary.total_cost,
        all_realtime_cost=summary.all_realtime_cost,
        seconds=time.monotonic() - started,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--slow-share", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    configure_logging("warning")
    result = asyncio.run(run_drill(args.requests, slow_share=args.slow_share, seed=args.seed))
    print(result.render())
    return 0 if result.missed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
