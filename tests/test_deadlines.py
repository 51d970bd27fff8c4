"""Deadlines and escalation, on the emulator's manual clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import pytest

from router import DeadlineError, Router, RouterConfig
from router.emulator import Emulator
from tests.helpers import ask, reply_text, stored
from tests.stores import raw_rows, store_toml

# Every test runs on SQLite and on PostgreSQL (tests/stores.py).
BOTH_ENGINES = True
HOUR = 3600.0


def posts(emulator: Emulator, path: str) -> int:
    return sum(1 for e in emulator.journal if e.method == "POST" and e.path == path)


async def one_row(router: Router, sql: str) -> tuple[object, ...]:
    return (await raw_rows(router.store, sql))[0]


def make_config(store: str | Path, emulator: Emulator, extra: str = "") -> RouterConfig:
    text = f"""
[anthropic]
base_url = "{emulator.url}"
[store]
{store_toml(store)}
[batch]
turnaround_prior = "1h"
deadline_margin = "5m"
[classes.hourly]
route = "batch"
deadline = "1h"
[classes.daily]
route = "batch"
deadline = "24h"
{extra}
"""
    return RouterConfig.from_toml_text(text)


@pytest.fixture
async def deadline_router(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> AsyncIterator[Router]:
    config = make_config(store_location, emulator)
    async with Router(config, anthropic=sdk, clock=emulator.clock.now, scheduler=False) as router:
        yield router


async def test_a_deadline_shorter_than_the_turnaround_goes_real_time_at_once(
    deadline_router: Router, emulator: Emulator
) -> None:
    msg = await asyncio.wait_for(deadline_router.messages.create(**ask("urgent-ish"), latency="hourly"), 5)
    assert "urgent-ish" in reply_text(msg)
    assert posts(emulator, "/v1/messages") == 1
    assert posts(emulator, "/v1/messages/batches") == 0
    row = (await deadline_router.store.get_many([1]))[0]
    assert row.state == "succeeded" and row.batch_id is None
    totals = await deadline_router.store.ledger_totals()
    assert [(t["lane"], t["requests"], t["duplicate"]) for t in totals] == [("realtime", 1, 0)]


async def test_a_class_that_says_fail_raises_at_call_time_and_stores_nothing(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    strict = '[classes.strict]\nroute = "batch"\ndeadline = "30m"\non_deadline_risk = "fail"'
    config = make_config(store_location, emulator, strict)
    async with Router(config, anthropic=sdk, clock=emulator.clock.now, scheduler=False) as router:
        with pytest.raises(DeadlineError, match="strict"):
            await router.messages.create(**ask("x"), latency="strict")
        assert await router.store.state_counts() == {}
    assert emulator.journal == []


async def test_a_late_batch_is_escalated_before_the_deadlines_and_canceled(
    deadline_router: Router, emulator: Emulator
) -> None:
    router = deadline_router
    calls = [
        asyncio.create_task(router.messages.create(**ask(f"late {i}"), latency="daily")) for i in range(20)
    ]
    await stored(router, 20)
    emulator.batch_seconds = 30 * HOUR  # a batch far slower than the 1 h estimate
    report = await router.flush()
    batch_id = report.batches[0]
    start = emulator.clock.now()
    emulator.clock.advance(24 * HOUR - 10 * 60)  # 10 min before the deadline: not yet at risk (margin 5m)
    assert (await router.escalate()).escalated == []
    emulator.clock.advance(6 * 60)  # 4 min before: inside the margin
    escalation = await router.escalate()
    assert len(escalation.escalated) == 20
    assert escalation.canceled_batches == [batch_id]  # nothing of it is waited for any more
    await router._deadlines.drain()
    replies = await asyncio.wait_for(asyncio.gather(*calls), 5)
    for i, msg in enumerate(replies):
        assert f"late {i}" in reply_text(msg)
    rows = await router.store.get_many(list(range(1, 21)))
    assert all(r.state == "succeeded" for r in rows)
    last_answer, first_deadline = await one_row(
        router, "SELECT MAX(finished_at), MIN(deadline_at) FROM requests"
    )
    assert last_answer < first_deadline  # every answer before every deadline
    assert start + 24 * HOUR > emulator.clock.now()
    # The canceled batch's results come back later: recorded, never delivered twice.
    emulator.clock.advance(1)
    await router.poll()
    assert await one_row(router, "SELECT COUNT(DISTINCT done_seq) FROM requests") == (20,)
    totals = {(t["lane"], t["duplicate"]): t["requests"] for t in await router.store.ledger_totals()}
    assert totals == {("realtime", 0): 20}  # canceled results are not billed


async def test_a_late_batch_result_after_escalation_is_counted_but_not_delivered(
    deadline_router: Router, emulator: Emulator
) -> None:
    router = deadline_router
    early = await router.messages.submit(**ask("escalate me"), latency="daily", key="early")
    emulator.clock.advance(12 * HOUR)
    for i in range(3):
        await router.messages.submit(**ask(f"keep me {i}"), latency="daily", key=f"keep-{i}")
    await router.flush()  # one batch of four; only the first is near its deadline later
    emulator.clock.advance(12 * HOUR - 4 * 60)
    escalation = await router.escalate()
    assert escalation.escalated == [early.request_id]
    assert escalation.canceled_batches == []  # most of the batch is still wanted
    await router._deadlines.drain()
    first = await router.results.wait("early")
    emulator.end_batches()
    await router.poll()
    again = await router.results.wait("early")
    assert again.id == first.id  # the batch result did not replace the delivered one
    totals = {(t["lane"], t["duplicate"]): t["requests"] for t in await router.store.ledger_totals()}
    assert totals == {("realtime", 0): 1, ("batch", 0): 3, ("batch", 1): 1}
    for i in range(3):
        assert f"keep me {i}" in reply_text(await router.results.wait(f"keep-{i}"))


async def test_a_pending_request_near_its_deadline_is_escalated_without_a_flush(
    deadline_router: Router, emulator: Emulator
) -> None:
    router = deadline_router
    await router.messages.submit(**ask("never flushed"), latency="daily", key="p1")
    emulator.clock.advance(24 * HOUR - HOUR - 10 * 60)  # a batch (1 h prior) + margin no longer fit
    assert (await router.escalate()).escalated == []
    emulator.clock.advance(10 * 60)
    assert len((await router.escalate()).escalated) == 1
    await router._deadlines.drain()
    assert "never flushed" in reply_text(await router.results.wait("p1"))
    assert posts(emulator, "/v1/messages/batches") == 0


async def test_turnaround_history_replaces_the_prior(deadline_router: Router, emulator: Emulator) -> None:
    router = deadline_router
    emulator.batch_seconds = 600.0
    for i in range(3):
        await router.messages.submit(**ask(f"history {i}"), latency="daily")
        await router.flush()
        emulator.clock.advance(600)
        await router.poll()
    assert router._turnaround.estimate("claude-haiku-4-5") == pytest.approx(600.0)
    # With 10-minute batches a 1-hour deadline is now met by the batch lane.
    ticket = await router.messages.submit(**ask("now batchable"), latency="hourly")
    assert (await router.results.status(ticket.key)).state == "pending"


async def test_spillover_defers_a_rate_limited_realtime_call(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    extra = '[classes.realtime]\nroute = "realtime"\non_rate_limit = "defer"\ndefer_class = "daily"'
    config = make_config(store_location, emulator, extra)
    async with Router(config, anthropic=sdk, clock=emulator.clock.now, scheduler=False) as router:
        emulator.faults.fail_next("messages", status=429, count=1)
        call = asyncio.create_task(router.messages.create(**ask("spill me"), latency="realtime"))
        await stored(router, 1)
        await router.flush()
        emulator.end_batches()
        await router.poll()
        msg = await asyncio.wait_for(call, 5)
        assert "spill me" in reply_text(msg)
        assert posts(emulator, "/v1/messages/batches") == 1
        # Without the policy the 429 reaches the caller.
    async with Router(make_config(store_location, emulator), anthropic=sdk, scheduler=False) as router:
        emulator.faults.fail_next("messages", status=429, count=1)
        with pytest.raises(anthropic.RateLimitError):
            await router.messages.create(**ask("no spill"), latency="realtime")


async def test_deadline_drill_misses_no_deadline_with_slow_batches() -> None:
    from bench.deadline_drill import run_drill

    result = await run_drill(150, slow_share=0.5, seed=3, step_minutes=4)
    assert result.requests == 150
    assert result.slow_batches > 0 and result.escalated > 0  # the drill did put deadlines at risk
    assert result.missed == 0
    assert result.cost < result.all_realtime_cost
