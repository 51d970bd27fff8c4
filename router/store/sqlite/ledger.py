"""Writing cost-ledger rows (router/store/ledger.py) to SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import aiosqlite

from ..ledger import LEDGER_COLUMNS, LedgerRow
from .sql import json_param

# Ledger rows as one JSON array of tuples in this column order: one statement, so sqlite3
# gives up the GIL once rather than at every row (see ingest.py on why that matters).
LEDGER_INSERT_JSON = (
    f"INSERT OR IGNORE INTO ledger ({', '.join(LEDGER_COLUMNS)}) SELECT "
    + ", ".join(f"json_extract(v, '$[{i}]')" for i in range(len(LEDGER_COLUMNS)))
    + " FROM (SELECT value AS v FROM json_each(?))"
)


def insert_ledger_json(c: sqlite3.Connection, rows: Sequence[LedgerRow]) -> None:
    """Insert ledger rows in one statement, on the writer's own thread (`Store._on_writer_thread`)."""
    if rows:
        c.execute(LEDGER_INSERT_JSON, (json_param(rows),))


async def insert_ledger(w: aiosqlite.Connection, rows: Sequence[LedgerRow]) -> None:
    """Insert ledger rows inside the caller's transaction, in one statement."""
    if rows:
        await w.execute(LEDGER_INSERT_JSON, (json_param(rows),))
