"""Plain records passed between the store and the rest of the router."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..pricing import TokenCounts


@dataclass(frozen=True, slots=True)
class NewRequest:
    """A deferred request about to be stored."""

    key: str
    latency: str
    tag: str | None
    model: str
    params: bytes
    created_at: float
    deadline_at: float | None


@dataclass(frozen=True, slots=True)
class Ticket:
    """Proof that a deferred request is durably stored. `created` is False when the key existed already."""

    key: str
    request_id: int
    latency: str
    deadline_at: float | None
    created: bool

    @property
    def custom_id(self) -> str:
        return custom_id_for(self.request_id)


class RequestRow(NamedTuple):
    """A stored request as a reader sees it (params left out).

    A NamedTuple, so that `FinalRow` (the same values in a plain tuple) converts to and
    from it for free.
    """

    id: int
    key: str
    latency: str
    tag: str | None
    model: str
    state: str
    attempts: int
    outcome: str | None
    result: bytes | None
    created_at: float
    deadline_at: float | None
    batch_id: int | None


# A RequestRow's values as a plain tuple, in field order (`RequestRow._make(values)`). Ingest
# hands final rows over in this form: the garbage collector stops tracking a plain tuple of
# plain values, but not a NamedTuple, and 100,000 tracked rows alive at once during a
# 100,000-line ingest set off full collections that each walked every waiting task.
FinalRow = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class BatchClaim:
    """Pending requests claimed into a local batch row, ready for batches.create."""

    batch_id: int
    request_count: int
    body_bytes: int


@dataclass(frozen=True, slots=True)
class BatchRow:
    id: int
    api_id: str | None
    state: str
    request_count: int
    body_bytes: int
    created_at: float
    submitted_at: float | None
    ended_at: float | None
    next_poll_at: float | None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One billed (or unbilled) API outcome, for the cost report."""

    at: float
    lane: str
    model: str
    latency: str | None
    tag: str | None
    result_type: str
    usage: TokenCounts
    request_id: int | None = None
    batch_id: int | None = None
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class IngestStats:
    """What one chunk of batch results did to the store."""

    delivered: int = 0  # final outcomes written
    retried: int = 0  # sent back to pending
    duplicates: int = 0  # results for requests already answered elsewhere
    skipped: int = 0  # lines already ingested (a re-read stream)
    unknown: int = 0  # custom_ids this store does not know


@dataclass(frozen=True, slots=True)
class AtRisk:
    """A request still on the batch path whose deadline is near."""

    id: int
    key: str
    latency: str
    model: str
    state: str
    deadline_at: float
    batch_id: int | None


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds a named lease of the database, and until when (wall-clock seconds)."""

    name: str
    owner: str
    acquired_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """Rows a purge deleted."""

    requests: int
    batches: int
    ledger: int

    @property
    def total(self) -> int:
        return self.requests + self.batches + self.ledger


@dataclass(frozen=True, slots=True)
class StoredResult:
    """A request's state and stored result line (None until it has one), for export by key."""

    id: int
    key: str
    state: str
    line: bytes | None


CUSTOM_ID_PREFIX = "r"


def custom_id_for(request_id: int) -> str:
    """The batch custom_id of a stored request: always matches ^[a-zA-Z0-9_-]{1,64}$ whatever the key."""
    return f"{CUSTOM_ID_PREFIX}{request_id}"


def request_id_from(custom_id: str) -> int | None:
    """The request id in a custom_id written by custom_id_for, else None."""
    digits = custom_id[len(CUSTOM_ID_PREFIX) :]
    if not custom_id.startswith(CUSTOM_ID_PREFIX) or not digits.isascii() or not digits.isdigit():
        return None
    return int(digits) if custom_id_for(int(digits)) == custom_id else None


# The keys of ledger_totals' rows, and of ledger_figures' (which also split by class, result
# type and whether the row is from today), in the order both engines select them.
_TOKEN_SUMS = ("requests", "input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h", "cache_read")
LEDGER_TOTAL_FIELDS = ("lane", "model", "duplicate", *_TOKEN_SUMS)
LEDGER_FIGURE_FIELDS = ("lane", "model", "class", "result_type", "duplicate", "today", *_TOKEN_SUMS)


@dataclass(frozen=True, slots=True)
class OutboxPolicy:
    """Which events the store writes into its outbox, in the transactions that make them happen.

    `events` names the event types some webhook wants (router/webhooks/events.py). A
    `request.completed` or `request.failed` event is written only for a request with a key of
    the caller's whose key matches one of `request_keys` or whose tag matches one of
    `request_tags` (globs: ``*``, ``?``). `costs` turns ledger sums (rows with the keys of
    `LEDGER_TOTAL_FIELDS`) into (cost, saving) in USD, at the configured prices.
    """

    events: frozenset[str]
    request_keys: tuple[str, ...] = ()
    request_tags: tuple[str, ...] = ()
    costs: Callable[[Sequence[Mapping[str, Any]]], tuple[float, float]] | None = None

    def wants(self, event: str) -> bool:
        return event in self.events


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An event as the outbox holds it; `payload` is the JSON text of its `data`."""

    id: int
    type: str
    created_at: float
    tag: str | None
    payload: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event on its way to one endpoint (claimed for an attempt, or as listed)."""

    id: int
    event: OutboxEvent
    endpoint: str
    state: str  # pending | delivered | failed
    attempts: int
    next_at: float | None
    last_status: int | None
    last_error: str | None
    updated_at: float | None
    first_tried_at: float | None


@dataclass(frozen=True, slots=True)
class EndpointFigures:
    """Where the deliveries to one endpoint stand, for `status` and metrics."""

    endpoint: str
    pending: int
    retrying: int  # pending, tried and failed at least once
    delivered: int
    failed: int  # given up (a 4xx other than 429, or retried past the limit)
    max_attempts: int  # attempts of the most-tried pending delivery
    last_error: str | None
    oldest_pending_at: float | None  # created_at of the oldest event still pending

    @property
    def failing(self) -> bool:
        """True while a delivery to it waits to be tried again after a failed attempt."""
        return self.retrying > 0
