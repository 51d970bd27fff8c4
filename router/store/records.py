"""Plain records passed between the store and the rest of the router."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..pricing import TokenCounts


@dataclass(frozen=True, slots=True)
class Prefix:
    """The cacheable prefix a request marks (router/prefix.py): its group key (a hash of the
    prefix, the model and what else selects the cache entry), its estimated tokens, and the
    bytes its params grow by when every mark is rewritten to the 1-hour TTL."""

    key: str
    tokens: int
    ttl_1h_delta: int = 0


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
    prefix: Prefix | None = None  # None: the request marks no cacheable prefix
    provider: str = "anthropic"  # the provider whose batches carry it (router/providers/)


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
    ttl_1h: bool = False  # the body is sent with every cache mark at the 1-hour TTL
    provider: str = "anthropic"
    model: str | None = None  # the one model of the batch, when the claim took one model only


@dataclass(frozen=True, slots=True)
class PendingGroup:
    """Pending requests of one class and model that share a cacheable prefix (`prefix_key`)."""

    latency: str
    model: str
    prefix_key: str
    requests: int
    bytes: int
    oldest_at: float
    deadline_at: float | None  # the earliest
    prefix_tokens: int | None  # the estimate (router/prefix.py)


# In a ClaimSelector's groups, the requests that have no prefix key.
NO_PREFIX = ""


@dataclass(frozen=True, slots=True)
class ClaimSelector:
    """Which pending requests a claim takes: those of `groups` (prefix keys, `NO_PREFIX` for
    requests without one), group after group in the order given and in id order within one,
    at most `per_group` of each (None: all). With `ttl_1h` the batch body is measured with
    every mark rewritten to the 1-hour TTL (the `ttl_1h_delta` stored with each request)."""

    groups: tuple[str, ...]
    per_group: int | None = None
    ttl_1h: bool = False


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
    provider: str = "anthropic"


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
    provider: str = "anthropic"


@dataclass(frozen=True, slots=True)
class IngestStats:
    """What one chunk of batch results did to the store."""

    delivered: int = 0  # final outcomes written
    retried: int = 0  # sent back to pending
    duplicates: int = 0  # results for requests already answered elsewhere
    skipped: int = 0  # lines already ingested (a re-read stream)
    unknown: int = 0  # custom_ids this store does not know
    # The completion numbers (done_seq) the chunk wrote, when they are consecutive: then no
    # other completion lies among them, and a watcher handed these rows need not read that
    # range back. Empty when unknown (an engine may leave it so).
    completions: range = field(default=range(0), compare=False)


def completion_numbers(first: int | None, last: int | None, count: int) -> range:
    """IngestStats.completions of a chunk whose `count` final rows were numbered `first` to
    `last`: that range when it holds `count` numbers (none skipped), else empty."""
    numbers = range(first, last + 1) if first is not None and last is not None else range(0)
    return numbers if len(numbers) == count else range(0)


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
    """Rows a purge deleted (or, for a dry run, would delete)."""

    requests: int
    batches: int
    ledger: int
    days: int = 0  # daily-total rows (ledger_days) written: inserted, or added to

    @property
    def total(self) -> int:
        return self.requests + self.batches + self.ledger


class DryRun(Exception):
    """Raised inside the purge's transaction to roll it back, carrying what it did."""

    def __init__(self, report: PurgeReport) -> None:
        super().__init__("dry run")
        self.report = report


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
LEDGER_FIGURE_FIELDS = (
    "lane",
    "model",
    "class",
    "result_type",
    "duplicate",
    "today",
    *_TOKEN_SUMS,
    "provider",
)

# The keys of history_rows' rows: ledger sums and daily rollups by UTC day (its start, epoch
# seconds), lane, model, class and tag ('' for none), result type and duplicate flag, with
# the real-time calls that were deadline escalations and the requests that missed a deadline.
HISTORY_FIELDS = (
    "day",
    "lane",
    "model",
    "class",
    "tag",
    "result_type",
    "duplicate",
    *_TOKEN_SUMS,
    "escalated",
    "missed",
    "provider",
)

# The keys of cache_figures' rows: ledgered batch results of requests with a prefix key,
# summed by model, tag, group and the cache tokens each result returned (read + written).
CACHE_FIGURE_FIELDS = (
    "model", "tag", "prefix_key", "prefix_tokens", "cached", "requests", "hits",
    "input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h", "cache_read",
)  # fmt: skip
# How many of the latest ledger rows calibrate the estimate: a bounded read, whatever the history.
CALIBRATION_DEPTH = 20_000


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


def outbox_event_of(row: Iterable[Any]) -> OutboxEvent:
    """An OutboxEvent from a row of (id, type, created_at, tag, payload), as both engines select it."""
    eid, kind, at, tag, payload = row
    return OutboxEvent(int(eid), str(kind), float(at), tag, str(payload))


def delivery_of(row: Sequence[Any]) -> Delivery:
    """A Delivery from a row of `_DELIVERY_COLUMNS` (both engines select them in this order)."""
    did, endpoint, state, attempts, next_at, status, error, updated, first, *event_row = row
    event = outbox_event_of(event_row)
    return Delivery(
        int(did), event, str(endpoint), str(state), int(attempts), next_at, status, error, updated, first
    )


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


def endpoint_figures_of(row: Iterable[Any]) -> EndpointFigures:
    """EndpointFigures from a row of (endpoint, pending, retrying, delivered, failed,
    max_attempts, oldest_pending_at, last_error), as both engines select it."""
    endpoint, pending, retrying, delivered, failed, most, oldest, error = row
    return EndpointFigures(
        str(endpoint), int(pending), int(retrying), int(delivered), int(failed), int(most), error, oldest
    )
