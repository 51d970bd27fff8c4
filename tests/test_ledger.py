"""The cost ledger's group commits: real-time entries gather for one commit, summed by kind, and
reads see them."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from router.pricing import TokenCounts
from router.store import LedgerEntry, Store, group_commit
from router.store.ledger import LedgerRow


def entry(n: int) -> LedgerEntry:
    return LedgerEntry(
        at=1000.0 + n,
        lane="realtime",
        model="claude-haiku-4-5",
        latency="realtime",
        tag=None,
        result_type="succeeded",
        usage=TokenCounts(input=10 + n, output=n),
    )


def committed(path: Path) -> int:
    """Calls in the ledger rows another connection sees (what a crash would keep)."""
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COALESCE(SUM(calls), 0) FROM ledger").fetchone()[0])


async def let_the_loop_run() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


@pytest.fixture
def long_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group_commit, "LEDGER_LINGER", 3600.0)


@pytest.mark.usefixtures("long_linger")
async def test_entries_wait_for_a_group_and_this_process_reads_them_at_once(tmp_path: Path) -> None:
    path = tmp_path / "router.db"
    store = await Store.open(path)
    try:
        for n in range(3):
            store.record(entry(n))
        await let_the_loop_run()
        assert committed(path) == 0  # still gathering company for one commit
        totals = await store.ledger_totals()
        assert [(t["lane"], t["requests"], t["input_tokens"]) for t in totals] == [("realtime", 3, 33)]
        assert committed(path) == 3
    finally:
        await store.close()


@pytest.mark.usefixtures("long_linger")
async def test_a_full_group_commits_and_later_entries_wait_for_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group_commit, "LEDGER_GROUP_MAX", 2)
    path = tmp_path / "router.db"
    store = await Store.open(path)
    commits: list[int] = []
    first_done = asyncio.Event()
    original = store._write_ledger

    async def write_ledger(rows: Sequence[LedgerRow]) -> None:
        if not commits:
            store.record(entry(9))  # arrives while the first group is being written
        commits.append(sum(row[-1] for row in rows))  # the calls the rows sum
        await original(rows)
        first_done.set()

    monkeypatch.setattr(store._group, "_write_ledger", write_ledger)
    try:
        store.record(entry(0))
        store.record(entry(1))  # the group is full: no linger
        await asyncio.wait_for(first_done.wait(), 10)
        await let_the_loop_run()
        # The late entry did not trigger a commit of its own right behind the first one.
        assert commits == [2]
        assert committed(path) == 2
    finally:
        await store.close()
    assert commits == [2, 1]  # close() commits what was still gathering
    assert committed(path) == 3


async def test_record_now_is_committed_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "router.db"
    store = await Store.open(path)
    try:
        await store.record_now(entry(0))
        assert committed(path) == 1
    finally:
        await store.close()


async def test_real_time_replies_are_summed_by_kind_and_request_rows_stay_whole(tmp_path: Path) -> None:
    path = tmp_path / "router.db"
    store = await Store.open(path)
    replies = [
        dataclasses.replace(entry(n), model=model, tag=tag, at=2000.0 + n)
        for n, (model, tag) in enumerate(
            [
                ("claude-haiku-4-5", "a"),
                ("claude-haiku-4-5", "a"),
                ("claude-haiku-4-5", "b"),
                ("claude-opus-4-1", "a"),
            ]
        )
    ]
    escalated = dataclasses.replace(entry(7), request_id=42)
    try:
        for e in [*replies, escalated]:
            store.record(e)
        totals = await store.ledger_totals()
    finally:
        await store.close()
    assert {t["model"]: t["requests"] for t in totals} == {"claude-haiku-4-5": 4, "claude-opus-4-1": 1}
    assert sum(t["input_tokens"] for t in totals) == sum(e.usage.input for e in [*replies, escalated])
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT model, tag, request_id, calls, at, input_tokens, output_tokens FROM ledger"
            " ORDER BY model, tag, request_id"
        ).fetchall()
    assert rows == [
        ("claude-haiku-4-5", None, 42, 1, 1007.0, 17, 7),  # a request's row is its own
        ("claude-haiku-4-5", "a", None, 2, 2001.0, 21, 1),  # two replies: summed, at the later one
        ("claude-haiku-4-5", "b", None, 1, 2002.0, 12, 2),
        ("claude-opus-4-1", "a", None, 1, 2003.0, 13, 3),
    ]
