"""Cache drill: an LLM-as-judge eval job through batches, with and without cache-aware batching.

2,000 deferred requests share a ~3,000-token rubric as a system block; each grades a
~200-token answer, and the judge replies with a short score (max_tokens = 16). Each variant
runs on a fresh emulator and a fresh SQLite store, on the emulator's manual clock: every
request is stored at t0, then the drill flushes, moves the clock to the next batch end,
polls, and flushes again, until every request has its result.

    a   no cache_control
    b   cache_control as the caller wrote it (5 min), no priming (cache_ttl = "keep")
    c   grouping + 1 h TTL + priming (the defaults)
    c5  variant c with the 5-minute TTL (cache_ttl = "keep"): what the default's choice rests on
    d   variant c, mixed with 3 other jobs with different rubrics, arriving interleaved

For each it prints the cache hit rate (share of results that read the cache), the rubric's
cost as a percentage of list (the same tokens at the real-time input price, uncached), the
whole job's cost as a percentage of the same job sent real time without caching, and the
turnaround added to one batch's (in seconds of emulator time, and in batch turnarounds).
Costs come from the usage the emulator returned, through the router's ledger and
router/cache_report.py.

    .venv/bin/python bench/cache_drill.py [--requests 2000] [--others 500] [--batch-seconds 1200]
        [--variants a b c c5 d] [--db-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import random
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic

from router import Router, RouterConfig
from router.cache_report import cache_report
from router.emulator import Emulator, EmulatorClock
from router.logs import configure_logging
from router.prefix import identify
from router.pricing import PriceTable, TokenCounts
from router.providers.anthropic.params import serialize

MODEL = "claude-sonnet-4-5"  # minimum cacheable prefix 1,024 tokens
TAG = "judge"
CONFIG = """
[store]
path = "{db}"
[batch]
turnaround_prior = "{turnaround}s"
[classes.evals]
route = "batch"
deadline = "24h"
cache_ttl = "{ttl}"
cache_priming = "{priming}"
"""
VARIANTS = {
    "a": ("no cache_control", None, "keep", "off", 0),
    "b": ("cache_control as written, no priming", {"type": "ephemeral"}, "keep", "off", 0),
    "c": ("grouping + 1 h TTL + priming", {"type": "ephemeral"}, "1h", "batch", 0),
    "c5": ("c with the 5 min TTL (keep)", {"type": "ephemeral"}, "keep", "batch", 0),
    "d": ("c, among 3 other jobs, interleaved", {"type": "ephemeral"}, "1h", "batch", 3),
}

_WORDS = (
    "accuracy evidence reasoning clarity completeness citation relevance structure tone grammar"
    " factual correct partial wrong missing score criteria rubric example answer question judge"
).split()


def text(rng: random.Random, tokens: int) -> str:
    """About `tokens` tokens of words (the emulator counts 4 characters a token)."""
    words: list[str] = []
    chars = 0
    while chars < tokens * 4:
        word = rng.choice(_WORDS)
        words.append(word)
        chars += len(word) + 1
    return " ".join(words)


def rubric(seed: int) -> str:
    return f"Rubric {seed}. Grade the answer from 1 to 5. " + text(random.Random(f"rubric{seed}"), 3000)


def request(system: str, answer: str, mark: dict[str, str] | None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": system}
    if mark is not None:
        block["cache_control"] = dict(mark)
    return {
        "model": MODEL,
        "max_tokens": 16,
        "system": [block],
        "messages": [{"role": "user", "content": f"Answer to grade:\n{answer}\nScore:"}],
    }


@dataclass
class Figures:
    variant: str
    what: str
    requests: int
    batches: int
    hit_rate: float
    prefix_pct: float
    job_pct: float
    added: float  # seconds of emulator time beyond one batch turnaround
    seconds: float  # wall time of the variant


async def run_variant(
    name: str, *, requests: int, others: int, batch_seconds: float, seed: int, db_dir: Path | None = None
) -> Figures:
    what, mark, ttl, priming, other_jobs = VARIANTS[name]
    rng = random.Random(seed)
    jobs = [(TAG, rubric(0), requests)] + [(f"other{j}", rubric(j), others) for j in range(1, other_jobs + 1)]
    arrivals = [(tag, system) for tag, system, n in jobs for _ in range(n)]
    if other_jobs:
        rng.shuffle(arrivals)  # the jobs' requests arrive interleaved
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        db = (db_dir or Path(tmp)) / f"drill-{name}.db"
        db.unlink(missing_ok=True)
        config = RouterConfig.from_toml_text(
            CONFIG.format(db=db, ttl=ttl, priming=priming, turnaround=batch_seconds)
        )
        clock = EmulatorClock(start=1_800_000_000.0)
        async with Emulator(clock=clock, batch_seconds=batch_seconds, seed=seed) as emu:
            sdk = anthropic.AsyncAnthropic(base_url=emu.url, api_key="drill", max_retries=0)
            config = config.with_base_url(emu.url)
            async with Router(config, anthropic=sdk, clock=clock.now, scheduler=False) as router:
                t0 = clock.now()
                for tag, system in arrivals:
                    answer = text(rng, 200)
                    await router.messages.submit(**request(system, answer, mark), latency="evals", tag=tag)
                batches = 0
                done = t0
                while True:
                    batches += len((await router.flush("evals")).batches)
                    open_ends = [b.ends_at for b in emu.batches.values() if not b.ended]
                    if not open_ends:
                        counts = await router.store.state_counts()
                        if counts.get("pending", 0) == 0:
                            break
                        clock.advance(60.0)  # held groups (none expected here): let time pass
                        continue
                    clock.advance(max(0.0, min(open_ends) - clock.now()))
                    report = await router.poll()
                    if report.delivered:
                        done = clock.now()
                cache = await cache_report(router.store, router.config)
                tag_line = next((t for t in cache.tags if t.name == TAG), None)
            await sdk.close()
        job_cost, job_baseline, prefix_tokens_a = _job_cost(db, mark)
    if tag_line is not None and tag_line.prefix_pct is not None:
        hit_rate, prefix_pct = tag_line.hit_rate, tag_line.prefix_pct
    else:  # no marked prefix: the rubric is billed as plain input at the batch price
        hit_rate, prefix_pct = 0.0, 100.0 * 0.5 * prefix_tokens_a / prefix_tokens_a
    return Figures(
        name,
        what,
        requests,
        batches,
        hit_rate,
        prefix_pct,
        100.0 * job_cost / job_baseline,
        max(0.0, done - t0 - batch_seconds),
        time.perf_counter() - started,
    )


def _job_cost(db: Path, mark: dict[str, str] | None) -> tuple[float, float, int]:
    """The judge job's cost at batch prices with cache rates, the same usage at real-time prices
    with every cache token as plain input, and the rubric's tokens."""
    price = PriceTable.bundled().price(MODEL)
    assert price is not None
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT SUM(input_tokens), SUM(output_tokens), SUM(cache_write_5m), SUM(cache_write_1h),"
            " SUM(cache_read) FROM ledger WHERE tag = ? AND result_type = 'succeeded'",
            (TAG,),
        ).fetchone()
    counts = TokenCounts(*(int(v or 0) for v in row))
    uncached = TokenCounts(
        input=counts.input + counts.cache_read + counts.cache_write_5m + counts.cache_write_1h,
        output=counts.output,
    )
    marked = identify(serialize(request(rubric(0), "x", mark or {"type": "ephemeral"})))
    assert marked is not None
    return counts.price(price, "batch"), uncached.price(price, "realtime"), marked.tokens


def parallelism() -> str:
    """How the emulator runs a batch's requests (sequentially unless it takes a width)."""
    taken = inspect.signature(Emulator).parameters
    if "batch_parallelism" in taken:
        default = taken["batch_parallelism"].default
        return f"parallel waves of {default} (the emulator's default)"
    return "one after another (this emulator has no batch parallelism)"


def render(rows: list[Figures], batch_seconds: float) -> str:
    header = ("variant", "what it does", "batches", "hit rate", "prefix % of list", "job % of rt", "added")
    body = [
        (
            r.variant,
            r.what,
            str(r.batches),
            f"{100 * r.hit_rate:.1f}%",
            f"{r.prefix_pct:.1f}%",
            f"{r.job_pct:.1f}%",
            f"{r.added:,.0f} s ({r.added / batch_seconds:.2f} turnarounds)",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in (header, *body)
    )


async def main_async(args: argparse.Namespace) -> None:
    rows = []
    for name in args.variants:
        rows.append(
            await run_variant(
                name,
                requests=args.requests,
                others=args.others,
                batch_seconds=args.batch_seconds,
                seed=args.seed,
                db_dir=args.db_dir,
            )
        )
        print(f"  ran {name} in {rows[-1].seconds:.1f} s", file=sys.stderr)
    print(
        f"cache drill: {args.requests} judge requests ({MODEL}), ~3,000-token rubric, ~200-token answers,"
        f" max_tokens 16; batch turnaround {args.batch_seconds:g} s; emulator runs a batch's requests"
        f" {parallelism()}"
    )
    print(render(rows, args.batch_seconds))


def main() -> None:
    configure_logging("warning")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--others", type=int, default=500, help="requests of each other job of variant d")
    parser.add_argument("--batch-seconds", type=float, default=1200.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--db-dir",
        type=Path,
        help="keep each variant's database here (drill-VARIANT.db), for `hybrid-router report`",
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
