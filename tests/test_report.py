"""The cost report's figures from the store's history, on both engines, and the purge that must
leave them as they were (ledger rows rolled into daily totals)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from router.config import RouterConfig
from router.pricing import TokenCounts
from router.report import Report, build_report, percentile, render_text
from router.store import LedgerEntry, NewRequest, StoreEngine, custom_id_for
from tests.stores import raw_rows

BOTH_ENGINES = True
DAY = 86400.0
D0 = 1_799_971_200.0  # a UTC midnight
HAIKU = "claude-haiku-4-5"
SONNET = "claude-sonnet-4-6"


def usage(n: int, *, cache_read: int = 0) -> TokenCounts:
    return TokenCounts(input=n, output=2 * n, cache_read=cache_read)


def realtime(at: float, tag: str | None, n: int, *, model: str = SONNET, **kw: Any) -> LedgerEntry:
    return LedgerEntry(at, "realtime", model, "realtime", tag, "succeeded", usage(n, **kw))


def result_line(request_id: int) -> bytes:
    body = {"type": "succeeded", "message": {"model": HAIKU, "usage": {"input_tokens": 1}}}
    return json.dumps({"custom_id": custom_id_for(request_id), "result": body}).encode()


async def finish(
    store: StoreEngine,
    key: str,
    *,
    tag: str,
    at: float,
    lane: str = "batch",
    deadline: float | None = None,
    outcome: str = "succeeded",
    n: int = 100,
) -> int:
    """A deferred request of `tag`, finished at `at` through `lane` (its ledger row with it)."""
    ticket = await store.enqueue(NewRequest(key, "daily", tag, HAIKU, b"{}", at - 60, deadline))
    rid = ticket.request_id
    ok = outcome == "succeeded"
    entry = (
        LedgerEntry(
            at, lane, HAIKU, "daily", tag, "succeeded", usage(n, cache_read=n), request_id=rid, batch_id=None
        )
        if ok
        else None
    )
    done = await store.complete(
        rid,
        from_states=("pending",),
        succeeded=ok,
        outcome=outcome,
        line=result_line(rid),
        now=at,
        ledger=entry,
    )
    assert done
    return rid


async def history(store: StoreEngine) -> None:
    """Three UTC days of calls: real-time chat, batched jobs, an escalation and missed deadlines."""
    for day in range(3):
        at = D0 + day * DAY + 3600
        await store.record_now(realtime(at, "chat", 10 + day))
        await store.record_now(realtime(at + 1, None, 5, model=HAIKU))
        for i in range(2):
            await finish(store, f"job-{day}-{i}", tag="jobs", at=at + 10 + i)
    await finish(store, "late", tag="jobs", at=D0 + 7200, deadline=D0 + 7000)  # answered after it
    await finish(store, "failed", tag="jobs", at=D0 + 7300, deadline=D0 + 7400, outcome="deadline")
    await finish(store, "escalated", tag="jobs", at=D0 + DAY + 100, lane="realtime", deadline=D0 + DAY + 900)
    # The newest request and completion: a purge always keeps them.
    await finish(store, "newest", tag="jobs", at=D0 + 3 * DAY, n=1)


def config() -> RouterConfig:
    return RouterConfig.default()


async def report(store: StoreEngine, *, since: float | None = None) -> Report:
    return await build_report(store, config(), since=since, now=D0 + 3 * DAY + 7200)


def figures(r: Report) -> dict[str, Any]:
    out = r.to_json()
    del out["generated_at"]
    return out


async def test_the_report_splits_cost_by_tag_day_and_lane(store: StoreEngine) -> None:
    await history(store)
    r = await report(store)
    tags = {t.tag: t for t in r.tags}
    assert set(tags) == {"chat", "jobs", None}
    chat, jobs = tags["chat"], tags["jobs"]
    assert (chat.calls, chat.realtime_calls, chat.batch_calls) == (3, 3, 0)
    assert chat.saving == 0 and chat.cost > 0
    # 6 batched jobs, "late", "newest" and the escalated one (real time); "failed" was not billed.
    assert (jobs.calls, jobs.batch_calls, jobs.realtime_calls) == (9, 8, 1)
    assert jobs.escalated == 1
    assert jobs.missed == 2  # "late" and "failed"
    assert jobs.cache_hit_rate == pytest.approx(0.5)
    assert jobs.saving > 0
    assert [d.date for d in r.days] == ["2027-01-15", "2027-01-16", "2027-01-17", "2027-01-18"]
    assert sum(d.batch + d.realtime for d in r.days) == pytest.approx(r.summary.total_cost)
    assert sum(d.all_realtime for d in r.days) == pytest.approx(r.summary.all_realtime_cost)
    # Real-time calls of chat, of no tag and the escalation: what each batch class would charge.
    opportunities = {o.tag: o for o in r.opportunities}
    assert set(opportunities) == {"chat", "jobs", None}
    assert opportunities["jobs"].escalated == 1
    option = opportunities["chat"].options[0]
    assert option.cost == pytest.approx(chat.cost / 2) and option.saving == pytest.approx(chat.cost / 2)
    assert {c.name for c in opportunities["chat"].options} == {
        c.name for c in config().classes.values() if c.is_batch
    }
    text = render_text(r)
    assert "by tag" in text and "opportunities" in text and "(no tag)" in text


async def test_since_starts_at_the_utc_day(store: StoreEngine) -> None:
    await history(store)
    r = await report(store, since=D0 + DAY + 50_000)  # in the second day: from its midnight on
    assert r.days[0].date == "2027-01-16"
    tags = {t.tag: t for t in r.tags}
    assert tags["chat"].calls == 2
    assert tags["jobs"].missed == 0  # both misses were on the first day


async def test_purge_rolls_the_ledger_into_daily_totals_and_the_report_stays(store: StoreEngine) -> None:
    await history(store)
    before = figures(await report(store))
    before_since = figures(await report(store, since=D0 + DAY))
    ledger_rows = (await raw_rows(store, "SELECT count(*) FROM ledger"))[0][0]

    dry = await store.purge(before=D0 + DAY + 7200, dry_run=True)
    assert dry.ledger > 0 and dry.days > 0 and dry.requests > 0
    assert (await raw_rows(store, "SELECT count(*) FROM ledger"))[0][0] == ledger_rows
    assert (await raw_rows(store, "SELECT count(*) FROM ledger_days"))[0][0] == 0

    # Mid-day: the first day and part of the second go, the rest of the second stays as rows.
    first = await store.purge(before=D0 + DAY + 7200)
    assert first == dry  # the dry run counted what the purge did
    assert figures(await report(store)) == before
    # Then the rest of the second day: its daily totals grow.
    second = await store.purge(before=D0 + 3 * DAY)
    assert second.ledger > 0
    assert figures(await report(store)) == before
    assert (await raw_rows(store, f"SELECT count(*) FROM ledger WHERE at < {D0 + 3 * DAY}"))[0][0] == 0
    assert figures(await report(store, since=D0 + DAY)) == before_since


async def test_an_empty_store_reports_nothing_spent(store: StoreEngine) -> None:
    r = await report(store)
    assert r.days == [] and r.tags == [] and r.opportunities == [] and r.turnarounds == []
    assert r.summary.total_cost == 0
    assert render_text(r).startswith("lane")


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, p) for p in (50, 90, 99, 100)] == [50.0, 90.0, 99.0, 100.0]
    assert percentile([7.0], 99) == 7.0
