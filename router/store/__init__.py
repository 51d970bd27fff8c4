"""Durable storage of deferred requests, batches and the cost ledger: SQLite (aiosqlite,
router/store/sqlite/) on one host, or PostgreSQL (asyncpg, router/store/postgres/) shared by
many; `open_store` opens the one the configuration names.

The engine-neutral part (records, states, the `StoreEngine` interface, leases) lives here;
each engine, with all of its SQL, in its own package."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import StoreSettings
from . import events, states
from .base import RetryPolicy, StoreClosedError, StoreEngine
from .bodies import entries_budget, entry_bytes
from .records import (
    NO_PREFIX,
    AtRisk,
    BatchClaim,
    BatchRow,
    ClaimSelector,
    Delivery,
    EndpointFigures,
    FinalRow,
    IngestStats,
    Lease,
    LedgerEntry,
    NewRequest,
    OutboxEvent,
    OutboxPolicy,
    PendingGroup,
    Prefix,
    PurgeReport,
    RequestRow,
    StoredResult,
    Ticket,
    custom_id_for,
    request_id_from,
)
from .sqlite import Store

__all__ = [
    "NO_PREFIX",
    "AtRisk",
    "BatchClaim",
    "BatchRow",
    "ClaimSelector",
    "Delivery",
    "EndpointFigures",
    "FinalRow",
    "IngestStats",
    "Lease",
    "LedgerEntry",
    "NewRequest",
    "OutboxEvent",
    "OutboxPolicy",
    "PendingGroup",
    "Prefix",
    "PurgeReport",
    "RequestRow",
    "RetryPolicy",
    "Store",
    "StoreClosedError",
    "StoreEngine",
    "StoredResult",
    "Ticket",
    "custom_id_for",
    "entries_budget",
    "entry_bytes",
    "events",
    "open_store",
    "request_id_from",
    "states",
]


async def open_store(settings: StoreSettings, *, create: bool = True) -> StoreEngine:
    """The store `settings` names, open: PostgreSQL for a `url`, else the SQLite file at `path`.

    `create=False` (the reading commands) opens an existing store only: an SQLite file that
    exists, a PostgreSQL database that already holds the schema (it is migrated if older).

    Raises StoreError (naming host, port and database, never a password) when a PostgreSQL
    server cannot be reached, its database holds no schema and `create` is False, or its
    schema is newer than this code.
    """
    if settings.url is not None:
        from .postgres import PostgresStore  # asyncpg only for those who use it

        return await PostgresStore.open(
            settings.url, pool_size=settings.pool_size, retry_for=settings.retry_for, create=create
        )
    return await Store.open(settings.path, durability=settings.durability, create=create)


# mypy holds each engine to the interface: a missing or different operation fails here.
_ENGINE: type[StoreEngine] = Store
if TYPE_CHECKING:
    from .postgres import PostgresStore

    _POSTGRES_ENGINE: type[StoreEngine] = PostgresStore
