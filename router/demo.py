"""`hybrid-router demo`: a mixed workload through the router, offline against the emulator.

Runs >= 1,000 requests over both providers (Claude through `client.messages`, GPT through
`client.openai.chat.completions`; some real time, most deferrable across several tags),
flushes them into batches, ends the batches on the emulator's clock, checks that every
caller got the reply to its own request, and prints what the batch lane saved, in all and
per provider.
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .client import Router
from .config import RouterConfig
from .pricing import provider_for
from .providers.anthropic.client import connect
from .report import billed, cost_summary, summary_of

if TYPE_CHECKING:
    from .providers.openai.client import AsyncOpenAI

# (tag, latency class, model, share of the workload, provider)
WORKLOAD: tuple[tuple[str, str, str, float, str], ...] = (
    ("chat", "realtime", "claude-sonnet-4-6", 0.10, "anthropic"),
    ("support-triage", "hourly", "claude-haiku-4-5", 0.10, "anthropic"),
    ("nightly-classify", "daily", "claude-haiku-4-5", 0.25, "anthropic"),
    ("enrichment", "daily", "claude-sonnet-4-6", 0.15, "anthropic"),
    ("evals", "weekly", "claude-opus-4-5", 0.10, "anthropic"),
    ("gpt-chat", "realtime", "gpt-5.4", 0.05, "openai"),
    ("gpt-nightly", "daily", "gpt-5.4-mini", 0.15, "openai"),
    ("gpt-evals", "weekly", "gpt-5.4-mini", 0.10, "openai"),
)
PROVIDERS = ("anthropic", "openai")
DEFAULT_PROVIDERS: tuple[str, ...] = PROVIDERS  # a live run is Anthropic's only (its key)
_SYSTEM = "You label business documents. Answer with one word."

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
    per_provider: dict[str, str] = field(default_factory=dict)  # provider -> its saving line


def build_workload(
    total: int, seed: int = 7, providers: tuple[str, ...] = PROVIDERS
) -> list[tuple[str, dict[str, Any]]]:
    """`total` (provider, create() keywords) pairs, shuffled, in the WORKLOAD mix of `providers`."""
    rng = random.Random(seed)
    mix = [row for row in WORKLOAD if row[4] in providers]
    scale = 1.0 / sum(row[3] for row in mix)
    calls: list[tuple[str, dict[str, Any]]] = []
    for tag, latency, model, share, provider in mix:
        for _ in range(round(total * share * scale)):
            n = len(calls)
            subject = rng.choice(_SUBJECTS)
            question = {"role": "user", "content": f"[{tag} #{n}] Label this {subject}: item {n} of the run"}
            if provider == "openai":
                call: dict[str, Any] = {
                    "model": model,
                    "max_completion_tokens": 256,
                    "messages": [{"role": "system", "content": _SYSTEM}, question],
                }
            else:
                call = {"model": model, "max_tokens": 256, "system": _SYSTEM, "messages": [question]}
            calls.append((provider, {**call, "latency": latency, "tag": tag}))
    rng.shuffle(calls)
    return calls


def reply_text(reply: Any) -> str:
    """The text of a Message or a ChatCompletion."""
    choices = getattr(reply, "choices", None)
    if choices is not None:
        return "".join(choice.message.content or "" for choice in choices)
    return "".join(getattr(block, "text", "") for block in reply.content)


def question_of(call: dict[str, Any]) -> str:
    return str(call["messages"][-1]["content"])


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
    providers: tuple[str, ...] | None = None,
) -> DemoResult:
    """Run the demo; offline against an in-process emulator unless `live` (Anthropic only)."""
    from .emulator import Emulator, EmulatorClock

    out = out or sys.stdout
    result = DemoResult()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="hybrid-router-demo-"))
    db = db_path or workdir / "demo.db"
    if providers is None:
        providers = ("anthropic",) if live else DEFAULT_PROVIDERS
    calls = build_workload(total, providers=providers)
    if live:
        for _, call in calls:
            call["model"] = live_model or "claude-haiku-4-5"
            call["max_tokens"] = 16
    config = RouterConfig.default(store_path=db)

    emulator: Emulator | None = None
    if live:
        client = connect()
        out.write(f"Live run against {client.base_url} ({len(calls)} requests).\n")
    else:
        emulator = Emulator(clock=EmulatorClock(start=time.time()), batch_seconds=3600.0)
        await emulator.start()
        client = connect(base_url=emulator.url, api_key="emulator-demo-key")
        out.write(f"Emulator on {emulator.url} (no key, no network); store {db}\n")
    # The OpenAI side reaches the emulator's OpenAI routes through a client of its own; the
    # openai SDK loads only for it.
    openai_client: AsyncOpenAI | None = None
    if emulator is not None and "openai" in providers:
        from .providers.openai.client import connect as connect_openai

        openai_client = connect_openai(f"{emulator.url}/v1", "emulator-demo-key")
    progress = Progress(out)
    try:
        async with Router(config, anthropic=client, openai=openai_client) as router:
            stats = {"done": 0, "stored": 0}

            async def one(provider: str, call: dict[str, Any]) -> tuple[dict[str, Any], Any]:
                try:
                    if provider == "openai":
                        reply: Any = await router.openai.chat.completions.create(**call)
                    else:
                        reply = await router.messages.create(**call)
                except Exception as exc:
                    reply = exc
                stats["done"] += 1
                return call, reply

            tasks = [asyncio.create_task(one(provider, call)) for provider, call in calls]
            deferred = sum(1 for _, c in calls if c["latency"] != "realtime")
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
                if emulator is not None and question_of(call) not in reply_text(reply):
                    result.mismatched += 1
            result.batches = await router.store.batch_count()
            result.escalated = await router.store.escalated_count()
            summary = await cost_summary(router.store, router.config)
            result.summary_text = summary.render()
            result.per_provider = await provider_savings(router)
    finally:
        if emulator is not None:
            await emulator.stop()
        await client.close()
        if openai_client is not None:
            await openai_client.close()
    result.seconds = time.monotonic() - started
    _print_report(result, out)
    return result


async def provider_savings(router: Router) -> dict[str, str]:
    """Each provider's saving line, from the ledger rows of the models its price table knows."""
    rows = billed(await router.store.history_rows(-math.inf))
    lines: dict[str, str] = {}
    for provider in PROVIDERS:
        mine = [row for row in rows if provider_for(str(row["model"])) == provider]
        if mine:
            part = summary_of(mine, router.config)
            lines[provider] = (
                f"{part.requests} requests, ${part.total_cost:,.4f} against ${part.all_realtime_cost:,.4f}"
                f" all real time: saving ${part.saving:,.4f} ({part.saving_pct:.1f}%)"
            )
    return lines


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
    if result.per_provider:
        out.write("saving per provider\n")
        width = max(len(name) for name in result.per_provider)
        for name, line in result.per_provider.items():
            out.write(f"  {name.ljust(width)}  {line}\n")
    out.write(f"finished in {result.seconds:.1f} s\n")
