"""Durable storage of deferred requests, batches and the cost ledger.

The engine-neutral part (records, states, the `StoreEngine` interface, leases) lives here;
each engine, with all of its SQL, in its own package (`sqlite/`)."""

from __future__ import annotations

from . import states
from .base import RetryPolicy, StoreEngine
from .records import (
    AtRisk,
    BatchClaim,
    BatchRow,
    FinalRow,
    IngestStats,
    Lease,
    LedgerEntry,
    NewRequest,
    PurgeReport,
    RequestRow,
    StoredResult,
    Ticket,
    custom_id_for,
    request_id_from,
)
from .sqlite import (
    BODY_HEAD,
    BODY_TAIL,
    Store,
    StoreClosedError,
    batch_body_bytes,
    entry_bytes,
)

__all__ = [
    "BODY_HEAD",
    "BODY_TAIL",
    "AtRisk",
    "BatchClaim",
    "BatchRow",
    "FinalRow",
    "IngestStats",
    "Lease",
    "LedgerEntry",
    "NewRequest",
    "PurgeReport",
    "RequestRow",
    "RetryPolicy",
    "Store",
    "StoreClosedError",
    "StoreEngine",
    "StoredResult",
    "Ticket",
    "batch_body_bytes",
    "custom_id_for",
    "entry_bytes",
    "request_id_from",
    "states",
]

# mypy holds the SQLite store to the interface: a missing or different operation fails here.
_ENGINE: type[StoreEngine] = Store
