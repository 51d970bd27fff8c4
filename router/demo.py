"""`hybrid-router demo`: a mixed workload through the router, offline against the emulator.

Runs >= 1,000 requests (some real time, most deferrable across several tags), flushes
them into batches, ends the batches on the emulator's clock, checks that every caller got
the reply to its own request, and prints what the batch lane saved.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import anthropic
from anthropic.types import Message

from .client import Router
from .config import RouterConfig
from .report import cost_summary

# (tag, latency class, model, share of the workload)
WORKLOAD: tuple[tuple[str, str, str, float], ...] = (
    ("chat", "realtime", "claude-sonnet-4-6", 0.15),
    ("support-triage", "hourly", "claude-haiku-4-5", 0.15),
    ("nightly-classify", "daily", "claude-haiku-4-5", 0.35),
    ("enrichment", "daily", "claude-sonnet-4-6", 0.20),
    ("evals", "weekly", "claude-opus-4-5", 0.15),
)

_SUBJECTS = ("invoice", "support ticket", "product review", "news article", "bug report", "contract clause")


@dataclass
class DemoResult:
    """Figures of one demo run (also used by the tests)."""

    requests: int = 0
    realtime: int = 0
    deferred: int = 0
    batches: int = 0
    escalated: int = 0  # deferrable requests a batch could not serve in time: sent real time
    mismatched: int = 0
    failed: int = 0
    seconds: float = 0.0
    summary_text: str = ""
    per_tag: dict[str, int] = field(default_factory=dict)


def build_workload(total: int, seed: int = 7) -> list[dict[str, Any]]:
    """`total` create() keyword sets, shuffled, with tags and classes in the WORKLOAD mix."""
    rng = random.Random(seed)
    calls: list[dict[str, Any]] = []
    for tag, latency, model, share in WORKLOAD:
        for _ in range(round(total * share)):
            n = len(calls)
            subject = rng.choice(_SUBJECTS)
            calls.append(
                {
                    "model": model,
                    "max_tokens": 256,
                    "system": "You label business documents. Answer with one word.",
                    "messages": [
                        {"role": "user", "content": f"[{tag} #{n}] Label this {subject}: item {n} of the run"}
                    ],
                    "latency": latency,
                    "tag": tag,
                }
            )
    rng.shuffle(calls)
    return calls


class Progress:
    """One status line, redrawn in place on a terminal, printed every few seconds otherwise."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._last = 0.0

    def show(self, text: str, *, final: bool = False) -> None:
        now = time.monotonic()
        if self._tty:
            self._out.write("\r\033[K" + text + ("\n" if final else ""))
            self._out.flush()
        elif final or now - self._last >= 2.0:
            self._out.write(text + "\n")
            self._out.flush()
            self._last = now


async def run_demo(
    *,
    total: int = 1200,
    live: bool = False,
    db_path: Path | None = None,
    out: TextIO | None = None,
    live_model: str | None = None,
) -> DemoResult:
    """Run the demo; offline against an in-process emulator unless `live`."""
    from .emulator import Emulator, EmulatorClock

    out = out or sys.stdout
    result = DemoResult()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="hybrid-router-demo-"))
    db = db_path or workdir / "demo.db"
    calls = build_workload(total)
    if live:
        for call in calls:
            call["model"] = live_model or "claude-haiku-4-5"
            call["max_tokens"] = 16
    config = RouterConfig.default(store_path=db)

    emulator: Emulator | None = None
    if live:
        client = anthropic.AsyncAnthropic()
        out.write(f"Live run against {client.base_url} ({len(calls)} requests).\n")
    else:
        emulator = Emulator(clock=EmulatorClock(start=time.time()), batch_seconds=3600.0)
        await emulator.start()
        client = anthropic.AsyncAnthropic(base_url=emulator.url, api_key="emulator-demo-key")
        out.write(f"Emulator on {emulator.url} (no key, no network); store {db}\n")
    progress = Progress(out)
    try:
        async with Router(config, anthropic=client) as router:
            stats = {"done": 0, "stored": 0}

            async def one(call: dict[str, Any]) -> tuple[dict[str, Any], Message | BaseException]:
                try:
                    reply: Message | BaseException = await router.messages.create(**call)
                except Exception as exc:
                    reply = exc
                stats["done"] += 1
                return call, reply

            tasks = [asyncio.create_task(one(call)) for call in calls]
            deferred = sum(1 for c in calls if c["latency"] != "realtime")
            # Wait until every deferrable request is durably stored, showing progress.
            while True:
                counts = await router.store.state_counts()
                stats["stored"] = sum(counts.values())
                progress.show(
                    f"stored {stats['stored']}/{deferred} deferred, {stats['done']}/{len(calls)} answered"
                )
                if stats["stored"] >= deferred:
                    break
                await asyncio.sleep(0.05)
            progress.show(
                f"stored {stats['stored']}/{deferred} deferred, {stats['done']}/{len(calls)} answered",
                final=True,
            )
            flushed = await router.flush()
            out.write(f"Flushed {flushed.requests} requests into {len(flushed.batches)} batch(es).\n")
            if emulator is not None:
                emulator.clock.advance(emulator.batch_seconds)  # batches end on the emulator clock
            while stats["done"] < len(calls):
                await router.poll(force=emulator is not None)
                if stats["done"] < len(calls):
                    progress.show(f"answered {stats['done']}/{len(calls)}")
                    await asyncio.sleep(0.05 if emulator is not None else router.config.batch.poll_interval)
            progress.show(f"answered {stats['done']}/{len(calls)}", final=True)
            for call, reply in await asyncio.gather(*tasks):
                result.requests += 1
                result.per_tag[call["tag"]] = result.per_tag.get(call["tag"], 0) + 1
                if call["latency"] == "realtime":
                    result.realtime += 1
                else:
                    result.deferred += 1
                if isinstance(reply, BaseException):
                    result.failed += 1
                    continue
                text = "".join(getattr(b, "text", "") for b in reply.content)
                if emulator is not None and call["messages"][0]["content"] not in text:
                    result.mismatched += 1
            result.batches = await router.store.batch_count()
            result.escalated = await router.store.escalated_count()
            summary = await cost_summary(router.store, router.config)
            result.summary_text = summary.render()
    finally:
        if emulator is not None:
            await emulator.stop()
        await client.close()
    result.seconds = time.monotonic() - started
    _print_report(result, out)
    return result


def _print_report(result: DemoResult, out: TextIO) -> None:
    out.write("\n== hybrid-router demo report ==\n")
    out.write(
        f"requests        {result.requests}: {result.realtime} real time, {result.deferred} deferrable\n"
    )
    out.write(f"  batched       {result.deferred - result.escalated}\n")
    if result.escalated:
        out.write(
            f"  escalated     {result.escalated} sent real time at once: a batch could not meet their"
            " deadline (turnaround prior + margin)\n"
        )
    out.write("by tag          " + ", ".join(f"{t} {n}" for t, n in sorted(result.per_tag.items())) + "\n")
    out.write(f"batches         {result.batches}\n")
    out.write(f"failed          {result.failed}\n")
    out.write(f"wrong replies   {result.mismatched}\n")
    out.write(result.summary_text.rstrip() + "\n")
    out.write(f"finished in {result.seconds:.1f} s\n")
