"""Group commit on PostgreSQL: groups written at once are answered in the order they were
taken, and a connection lost around COMMIT leaves enqueues and ledger writes taking effect
once. A proxy between the store and the server cuts the session right after the server
committed (the answer never arrives) or right before the COMMIT (it never happens)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from router.pricing import TokenCounts
from router.store import AtRisk, LedgerEntry, NewRequest, states
from router.store.postgres import PostgresStore
from tests.helpers import capture_router_logs, until
from tests.pgproxy import CommitCutter, Cut


@pytest.fixture
async def cutter(pg_url: str) -> AsyncIterator[CommitCutter]:
    async with CommitCutter(pg_url).running() as proxy:
        yield proxy


@pytest.fixture
async def store(cutter: CommitCutter) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(cutter.url, pool_size=2)
    try:
        yield store
    finally:
        await store.close()


def reply(n: int) -> LedgerEntry:
    return LedgerEntry(
        at=1000.0 + n,
        lane="realtime",
        model="claude-haiku-4-5",
        latency="realtime",
        tag=None,
        result_type="succeeded",
        usage=TokenCounts(input=10, output=n),
    )


async def ledger_calls(url: str) -> tuple[int, int]:
    """(rows, summed calls) of the ledger, read past the proxy."""
    conn = await asyncpg.connect(url)
    try:
        rows, calls = await conn.fetchrow("SELECT count(*), COALESCE(sum(calls), 0) FROM ledger")
        return int(rows), int(calls)
    finally:
        await conn.close()


@pytest.mark.parametrize("cut", ["after", "before"])
async def test_a_real_time_ledger_group_is_counted_once(
    store: PostgresStore, cutter: CommitCutter, pg_url: str, cut: Cut
) -> None:
    for n in range(3):
        store.record(reply(n))
    cutter.arm(cut)
    with capture_router_logs() as logs:
        totals = await store.ledger_totals()  # commits the gathered group first
    assert cutter.cuts == 1
    assert [t["requests"] for t in totals] == [3]
    assert await ledger_calls(pg_url) == (1, 3)
    confirmed = [e for e in logs if e["event"] == "store_commit_confirmed"]
    assert len(confirmed) == (1 if cut == "after" else 0)


async def test_record_now_is_counted_once_when_the_commit_answer_is_lost(
    store: PostgresStore, cutter: CommitCutter, pg_url: str
) -> None:
    cutter.arm("after")
    await store.record_now(reply(0))
    assert cutter.cuts == 1
    assert await ledger_calls(pg_url) == (1, 1)


@pytest.mark.parametrize("cut", ["after", "before"])
async def test_an_enqueue_is_stored_once_and_its_caller_told_it_created_it(
    store: PostgresStore, cutter: CommitCutter, pg_url: str, cut: Cut
) -> None:
    now = time.time()
    request = NewRequest("k1", "daily", None, "m", b'{"a":1}', now, now + 60)
    store.record(reply(0))  # rides along with the group
    cutter.arm(cut)
    ticket = await store.enqueue(request)
    assert cutter.cuts == 1
    assert ticket.created  # its own commit created it, though the answer was lost
    assert await store.state_counts() == {states.PENDING: 1}
    assert await ledger_calls(pg_url) == (1, 1)
    again = await store.enqueue(request)
    assert (again.request_id, again.created) == (ticket.request_id, False)


async def test_an_escalated_reply_completes_once_and_is_billed_once(
    store: PostgresStore, cutter: CommitCutter, pg_url: str
) -> None:
    now = time.time()
    ticket = await store.enqueue(NewRequest("k1", "daily", None, "m", b"{}", now, now + 60))
    at_risk = AtRisk(ticket.request_id, "k1", "daily", "m", states.PENDING, now + 60, None)
    assert await store.mark_escalated([at_risk], now) == [ticket.request_id]
    cutter.arm("after")
    won = await store.complete(
        ticket.request_id,
        from_states=[states.ESCALATED],
        succeeded=True,
        outcome="succeeded",
        line=b"{}",
        now=now,
        ledger=dataclasses.replace(reply(0), request_id=ticket.request_id),
    )
    assert cutter.cuts == 1
    # Its own commit completed it: told False, the caller would bill the reply again as a duplicate.
    assert won
    assert await store.state_counts() == {states.SUCCEEDED: 1}
    assert await ledger_calls(pg_url) == (1, 1)


async def test_a_later_group_that_commits_first_waits_to_be_answered(pg_url: str) -> None:
    store = await PostgresStore.open(pg_url, pool_size=4)
    raw = await asyncpg.connect(pg_url)
    try:
        now = time.time()
        blocker = raw.transaction()
        await blocker.start()  # holds key k0 uncommitted: the first group waits on it
        await raw.execute("INSERT INTO request_params (id, key, params) VALUES (-1, 'k0', '')")
        first = asyncio.create_task(store.enqueue(NewRequest("k0", "daily", None, "m", b"{}", now, None)))

        async def waiting_on_the_key() -> bool:
            return bool(
                await raw.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
            )

        await until(waiting_on_the_key)
        second = asyncio.create_task(store.enqueue(NewRequest("k1", "daily", None, "m", b"{}", now, None)))

        async def second_committed() -> bool:
            return bool(await raw.fetchval("SELECT count(*) FROM requests WHERE key = 'k1'"))

        answered: list[str] = []
        first.add_done_callback(lambda _: answered.append("k0"))
        second.add_done_callback(lambda _: answered.append("k1"))
        await until(second_committed)
        assert answered == []
        await blocker.rollback()
        tickets = await asyncio.wait_for(asyncio.gather(first, second), 30)
        assert answered == ["k0", "k1"]  # in the order taken, though k1 committed first
        assert [t.created for t in tickets] == [True, True]
        assert await store.state_counts() == {states.PENDING: 2}
    finally:
        await raw.close()
        await store.close()
