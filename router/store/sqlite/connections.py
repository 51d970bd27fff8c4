"""What the store's operation modules build on: the reader connection and the write transaction.

`Store` (store.py) opens both. The operations of each concept (deadlines.py, intents.py,
leases.py, lookups.py, missing.py, purge.py) are a mixin of `Connections`, so a concept's SQL
sits in its own module while `Store` stays the one object that offers every operation.
"""

from __future__ import annotations

import contextlib

import aiosqlite

from ..records import OutboxPolicy
from .ingest import FOLD_COMPLETIONS
from .sql import NEXT_DONE_SEQ


class Connections:
    """The connections an operation mixin uses; `Store` provides them."""

    # The read-only connection: sees committed data, never blocks the writer (WAL).
    _reader: aiosqlite.Connection
    # Which events the outbox takes (outbox.py); None: none.
    _outbox: OutboxPolicy | None = None

    def _transaction(self) -> contextlib.AbstractAsyncContextManager[aiosqlite.Connection]:
        """The writer connection inside `BEGIN IMMEDIATE`; commits on exit, rolls back on error."""
        raise NotImplementedError


async def fold_completions(w: aiosqlite.Connection) -> None:
    """Fold every completion into its request's row, inside the caller's transaction.
    Whatever closes a batch calls it first, so no done batch leaves a request unfolded."""
    for statement in FOLD_COMPLETIONS:
        await w.execute(statement)


async def next_done_seq(w: aiosqlite.Connection) -> int:
    """The next completion number; call inside the write transaction that completes the row."""
    async with w.execute(NEXT_DONE_SEQ) as cur:
        return int((await cur.fetchone() or (1,))[0])
