"""Schema migrations carry existing data forward."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import anthropic
import pytest

from router.errors import RouterError
from router.outcomes import outcome_of
from router.providers.anthropic.provider import AnthropicProvider
from router.store import Store
from router.store.sqlite import deadlines as store_deadlines
from router.store.sqlite.schema import MIGRATIONS, SCHEMA_VERSION


def _database_at(path: Path, version: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:version]:
        conn.executescript(migration)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def _line(custom_id: str, text: str) -> bytes:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 2},
    }
    return json.dumps({"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}).encode()


async def test_migration_5_moves_result_lines_into_their_own_table(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = _database_at(db, 4)
    insert = (
        "INSERT INTO requests (id, key, class, model, params, digest, size, state, created_at, outcome,"
        " result, done_seq, finished_at) VALUES (?, ?, 'daily', 'claude-haiku-4-5', x'', x'00', 2,"
        " 'succeeded', 1.5, 'succeeded', ?, ?, 2.5)"
    )
    conn.execute(insert, (1, "numbered", _line("r1", "first"), 7))
    conn.execute(insert, (2, "unnumbered", _line("r2", "second"), None))  # no done_seq: stays inline
    conn.close()

    store = await Store.open(db)
    provider = AnthropicProvider(anthropic.AsyncAnthropic(api_key="unused", base_url="http://127.0.0.1:9"))
    try:
        rows = {row.key: row for row in await store.get_many([1, 2])}
        assert [outcome_of(rows[k], provider).content[0].text for k in ("numbered", "unnumbered")] == [  # type: ignore[union-attr]
            "first",
            "second",
        ]
    finally:
        await store.close()
    check = sqlite3.connect(db)
    assert check.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert check.execute("SELECT done_seq FROM results").fetchall() == [(7,)]
    assert check.execute("SELECT id FROM requests WHERE result IS NOT NULL").fetchall() == [(2,)]
    check.close()


async def test_migration_6_finds_requests_at_risk_by_indexes_a_result_leaves_alone(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = _database_at(db, 5)
    conn.executescript(
        "INSERT INTO batches (id, state, request_count, body_bytes, created_at) VALUES"
        " (1, 'in_progress', 3, 0, 0), (2, 'done', 1, 0, 0);"
    )
    insert = (
        "INSERT INTO requests (id, key, class, model, params, digest, size, state, created_at,"
        " deadline_at, batch_id) VALUES (?, ?, 'hourly', 'claude-haiku-4-5', x'', x'00', 2, ?, 0, ?, ?)"
    )
    for row in (
        (1, "pending-late", "pending", 500.0, None),
        (2, "pending-soon", "pending", 30.0, None),
        (3, "submitted-soon", "submitted", 20.0, 1),
        (4, "submitted-late", "submitted", 400.0, 1),
        (5, "finished", "succeeded", 10.0, 1),
        (6, "no-deadline", "pending", None, None),
        (7, "stale-batch", "submitted", 15.0, 2),  # a done batch holds no submitted request
    ):
        conn.execute(insert, row)
    conn.close()

    store = await Store.open(db)
    try:
        found = await store.at_risk(horizon=450.0)
        assert [(r.key, r.state) for r in found] == [
            ("submitted-soon", "submitted"),
            ("pending-soon", "pending"),
            ("submitted-late", "submitted"),
        ]
        assert [r.key for r in await store.at_risk(horizon=450.0, limit=2)] == [
            "submitted-soon",
            "pending-soon",
        ]
    finally:
        await store.close()

    check = sqlite3.connect(db)
    indexes = {name for (name,) in check.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "requests_by_deadline" not in indexes
    plans = {
        query: " ".join(row[3] for row in check.execute("EXPLAIN QUERY PLAN " + query, (1.0, 5)))
        for query in (store_deadlines._PENDING_AT_RISK, store_deadlines._SUBMITTED_AT_RISK)
    }
    assert "requests_pending_by_deadline" in plans[store_deadlines._PENDING_AT_RISK]
    assert "requests_by_batch_deadline (batch_id=?" in plans[store_deadlines._SUBMITTED_AT_RISK]
    stale = "SELECT id FROM requests WHERE state = 'escalated' AND escalated_at < ? LIMIT ?"
    assert "requests_escalated" in " ".join(
        row[3] for row in check.execute("EXPLAIN QUERY PLAN " + stale, (1.0, 5))
    )
    check.close()


async def test_migration_7_counts_each_earlier_ledger_row_as_one_call(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = _database_at(db, 6)
    conn.executemany(
        "INSERT INTO ledger (at, lane, model, result_type, input_tokens, output_tokens)"
        " VALUES (?, 'realtime', 'claude-haiku-4-5', 'succeeded', ?, 1)",
        [(1.0, 10), (2.0, 20)],
    )
    conn.close()
    store = await Store.open(db)
    try:
        totals = await store.ledger_totals()
    finally:
        await store.close()
    assert [(t["lane"], t["requests"], t["input_tokens"]) for t in totals] == [("realtime", 2, 30)]


async def test_an_sqlite_without_what_the_store_needs_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    with pytest.raises(RouterError, match=r"needs SQLite 3\.33\.0 or newer; .* uses 3\.31\.1"):
        await Store.open(tmp_path / "router.db")
    assert not (tmp_path / "router.db").exists()  # refused before anything was created
