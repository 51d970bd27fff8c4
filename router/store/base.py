"""The store's interface with the rest of the router, whatever the engine behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import RouterError
from .records import (
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
    PurgeReport,
    RequestRow,
    StoredResult,
    Ticket,
)

if TYPE_CHECKING:
    from ..providers.base import BatchFormat


class StoreClosedError(RouterError):
    """The store was used after close()."""


class RetryPolicy(Protocol):
    """Decides, for a batch result line that is not `succeeded`, whether its request goes back
    to pending for another batch (True) or fails with that result (False).

    The router's policy is `router.retry.should_resubmit`; the caller of an ingest passes it
    in, so the store holds no policy of its own. `result` is the line's ``result`` object,
    `attempts` the batch attempts made so far including the one that produced it,
    `deadline_at` the request's stored deadline.
    """

    def __call__(
        self,
        result: Mapping[str, Any],
        *,
        attempts: int,
        max_attempts: int,
        deadline_at: float | None,
        now: float,
    ) -> bool: ...


class StoreEngine(Protocol):
    """Every operation the router asks of its store, whatever the engine (SQLite or PostgreSQL).

    Domain operations only: no connection, cursor or row tied to one crosses this line, only
    the records of records.py and plain values. Every state change is guarded on the state it
    starts from (DESIGN.md section 4), so two processes acting on one row cannot both win.
    `router.store.Store` (SQLite) is checked against it by mypy (router/store/__init__.py).
    """

    @property
    def location(self) -> object:
        """Where the store is, for messages: its str() is the file, or host, port and database
        (never a password)."""

    async def close(self) -> None:
        """Commit what is queued, then close; later calls raise StoreClosedError."""

    # Enqueue and the ledger

    async def enqueue(self, request: NewRequest) -> Ticket:
        """Store one request durably (idempotent on its key); returns once committed."""

    async def enqueue_many(self, requests: Sequence[NewRequest]) -> list[Ticket]:
        """Store many requests in one transaction; an InvalidRequestError stands in the list for a
        key reused with different params."""

    def record(self, entry: LedgerEntry) -> None:
        """Queue a ledger entry into the next commit; the caller does not wait."""

    async def record_now(self, entry: LedgerEntry) -> None:
        """Commit a ledger entry before returning."""

    async def ledger_totals(self) -> list[dict[str, Any]]:
        """Token totals of billed results by lane, model and duplicate flag."""

    # Flush: claim, stream, mark submitted or release

    async def pending_stats(self, latencies: Sequence[str] | None = None) -> tuple[int, int, float | None]:
        """(count, bytes, oldest created_at) of pending requests, of some classes or all."""

    async def claim_batch(
        self,
        *,
        latencies: Sequence[str] | None,
        max_requests: int,
        max_bytes: int,
        now: float,
        frame: BatchFormat,
        select: ClaimSelector | None = None,
        provider: str = "anthropic",
        one_model: bool = False,
    ) -> BatchClaim | None:
        """Move the oldest pending requests that fit one batch (or, with `select`, those it
        picks, in its order) to `submitting` under a new batch intent, committed before
        batches.create is called; None when nothing is pending. `frame`: the provider's body
        framing, which `max_bytes` bounds and `BatchClaim.body_bytes` measures. Only
        `provider`'s requests are claimed, and with `one_model` only those of the model of
        the oldest of them (`BatchClaim.model`); the batch row records the provider."""

    # Prompt caching (router/grouping.py, router/cache_report.py)

    async def pending_groups(self, latencies: Sequence[str] | None = None) -> list[PendingGroup]:
        """Pending requests that mark a prefix, by class, model and prefix key, oldest first."""

    async def prefix_status(self, keys: Sequence[str]) -> dict[str, tuple[float | None, bool]]:
        """For each of `keys`: (when a request with it last succeeded, or None; whether one is
        claimed or in a batch)."""

    async def cache_calibration(self, limit: int = 2000) -> dict[str, tuple[int, int]]:
        """Per model, over the latest `limit` batch results that read or wrote the cache: the
        cache tokens returned and the prefix tokens estimated for those requests."""

    async def prefix_sizes(self, limit: int = 5000) -> list[tuple[str, str | None, str, int]]:
        """(class, tag, model, estimated prefix tokens) of the latest `limit` requests that mark one."""

    async def cache_figures(self) -> list[dict[str, Any]]:
        """Cache tokens of billed batch results of requests with a prefix key (CACHE_FIGURE_FIELDS)."""

    def iter_claimed(self, batch_id: int, chunk: int = 1000) -> AsyncIterator[list[tuple[int, bytes]]]:
        """(request id, params) of a claimed batch in id order, a chunk at a time."""

    async def mark_submitted(self, batch_id: int, api_id: str, *, now: float, next_poll_at: float) -> None:
        """batches.create answered: the intent gets its API id, its requests become submitted."""

    async def release_batch(self, batch_id: int) -> int:
        """batches.create certainly failed: the claimed requests go back to pending; how many."""

    # Intents whose create answer was lost (reconcile.py)

    async def known_api_ids(self, api_ids: Collection[str]) -> set[str]:
        """Those of `api_ids` some batch of this store already has."""

    async def adopt_batch(self, intent_id: int, api_id: str, *, state: str, now: float) -> bool:
        """Attach a remote batch to the intent still in `state`; False if it moved on or the
        batch was adopted elsewhere first."""

    async def release_intent(self, intent_id: int, *, state: str, to: str) -> int:
        """Put the intent's claimed requests back to pending, the intent becoming `to`; how many."""

    async def close_released_intent(self, intent_id: int) -> None:
        """Stop looking for the batch of a released intent."""

    # Poll and ingest

    async def open_batches(self) -> list[BatchRow]:
        """Every batch not done, in id order."""

    async def update_batch(self, batch_id: int, **fields: Any) -> None:
        """Set a batch's state, ended_at or next_poll_at."""

    async def apply_results(
        self,
        batch_id: int,
        lines: Sequence[bytes | str],
        *,
        now: float,
        max_attempts: Mapping[str, int],
        retry: RetryPolicy,
        default_max_attempts: int = 1,
    ) -> tuple[IngestStats, list[FinalRow]]:
        """Apply one chunk of result lines in one transaction, de-duplicated by custom_id; returns
        the stats and the rows made final, in completion order (`IngestStats.completions`
        gives their done_seq numbers when the engine knows them all to be consecutive)."""

    async def finish_batch(self, batch_id: int, *, now: float) -> int:
        """Close a fully ingested batch; its requests with no result line go back to pending (how many)."""

    async def unanswered(self, batch_id: int) -> list[int]:
        """The requests of a batch still waiting for its result, in id order."""

    async def fail_missing(self, batch_id: int, *, now: float, reason: str) -> list[int]:
        """Fail the unanswered requests of a batch whose results are lost, close it; their ids."""

    async def record_turnaround(self, batch_id: int, seconds: float) -> None:
        """Remember how long a batch took, once per model it carried."""

    # Results and completions

    async def get_by_key(self, key: str) -> RequestRow | None:
        """The request stored under `key`."""

    async def get_many(self, ids: Sequence[int]) -> list[RequestRow]:
        """The requests of these ids that exist, in no particular order."""

    async def max_done_seq(self) -> int:
        """The last completion number given (0 if none)."""

    async def completed_since(self, cursor: int, limit: int = 5000) -> tuple[int, list[int]]:
        """The last completion number and the request ids of up to `limit` completions after
        `cursor`, in completion order; `(cursor, [])` when there are none."""

    async def wait_for_completions(self, after_seq: int, timeout: float) -> bool:
        """Return True as soon as completions past `after_seq` may have committed (PostgreSQL:
        a NOTIFY from any process), False after `timeout` (SQLite: always; watchers poll)."""

    async def digests_by_key(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The params digest stored under each of `keys` that is stored."""

    async def finished_results(self, *, after: int, limit: int) -> list[StoredResult]:
        """Finished requests with a result line, of id above `after`, in id order."""

    async def results_by_key(self, keys: Sequence[str]) -> dict[str, StoredResult]:
        """The state and result line of each of `keys` that is stored."""

    # Deadlines and escalation

    async def at_risk(self, horizon: float, limit: int = 5000) -> list[AtRisk]:
        """Pending or submitted requests whose deadline is at or before `horizon`, soonest first."""

    async def mark_escalated(self, rows: Sequence[AtRisk], now: float) -> list[int]:
        """Take requests off the batch path, each guarded on the state it was read in; the winners."""

    async def take_over_stale(self, *, before: float, now: float, limit: int = 1000) -> list[int]:
        """Escalated requests whose real-time send was lost: claimed to send again."""

    async def escalated_params(
        self, ids: Sequence[int]
    ) -> list[tuple[int, str, str | None, str, bytes, str]]:
        """(id, class, tag, model, params, provider) of requests to send real time."""

    async def complete(
        self,
        request_id: int,
        *,
        from_states: Sequence[str],
        succeeded: bool,
        outcome: str,
        line: bytes,
        now: float,
        ledger: LedgerEntry | None = None,
    ) -> bool:
        """Write a final outcome for a request still in one of `from_states`; False if it was not."""

    async def still_in_batch(self, batch_id: int) -> int:
        """How many requests of a batch still wait for its result."""

    async def turnaround_samples(self, model: str | None, limit: int = 200) -> list[float]:
        """The most recent batch turnarounds, of one model or of all."""

    async def recent_turnarounds(self, limit: int = 5000) -> list[tuple[str, float]]:
        """(model, seconds) of the most recent turnarounds, newest first."""

    async def escalated_count(self) -> int:
        """How many stored requests were ever escalated."""

    # Reporting

    async def state_counts(self) -> dict[str, int]:
        """Requests by state."""

    async def batch_count(self) -> int:
        """Batches the API accepted."""

    # The daemon's lease and retention

    async def lease(self, name: str = ...) -> Lease | None:
        """The named lease as stored (perhaps expired), or None."""

    async def lease_holder(self, *, now: float, name: str = ...) -> Lease | None:
        """Who holds the named lease at `now` (live, its owner not known dead), or None."""

    async def acquire_lease(self, owner: str, *, ttl: float, now: float, name: str = ...) -> bool:
        """Take or renew the lease; True when `owner` holds it until `now + ttl`."""

    async def release_lease(self, owner: str, *, name: str = ...) -> bool:
        """Give the lease up, if `owner` holds it."""

    async def purge(self, *, before: float, dry_run: bool = False) -> PurgeReport:
        """Delete finished requests, done batches and ledger rows older than `before`, the ledger
        rows added to daily totals first; a `dry_run` counts the same and changes nothing."""

    async def history_rows(self, since_day: float) -> list[dict[str, Any]]:
        """Ledger sums and the daily totals of purged rows together, from the UTC day starting at
        `since_day` on, by day, lane, model, class, tag ('' for none), result type and duplicate
        flag (the keys of records.HISTORY_FIELDS)."""

    # Figures for metrics and `status` (read-only, one statement each)

    async def class_state_figures(self) -> list[tuple[str, str, int, float | None, int, int]]:
        """Per (class, state): requests, the oldest created_at, escalated never in a batch, and
        escalated out of one."""

    async def open_batch_progress(self) -> dict[int, dict[str, int]]:
        """For each open batch, its requests by state."""

    async def ledger_figures(self, today_since: float) -> list[dict[str, Any]]:
        """Ledger sums by lane, model, class, result type, duplicate flag and today-or-not."""

    async def turnaround_buckets(self, bounds: Sequence[float]) -> tuple[list[int], int, float]:
        """Batch turnarounds at most each of `bounds`, their count and their sum in seconds."""

    async def batches_after(self, after_id: int) -> list[BatchRow]:
        """Batch rows above `after_id` in id order, any state (a flush in progress)."""

    async def last_batch_id(self) -> int:
        """The highest batch id (0 if none)."""

    # The webhook outbox (router/webhooks/). Events are written by the operations above, in the
    # transactions of the changes they announce, when the policy wants them.

    def set_outbox(self, policy: OutboxPolicy | None) -> None:
        """Which events to write from now on (None: none)."""

    async def unrouted_events(self, limit: int = 1000) -> list[OutboxEvent]:
        """Events whose deliveries are not made yet, oldest first."""

    async def route_events(
        self, event_ids: Sequence[int], deliveries: Sequence[tuple[int, str]], *, now: float
    ) -> None:
        """In one transaction: a pending delivery per (event id, endpoint) not made already, and
        `event_ids` marked routed."""

    async def claim_deliveries(self, *, now: float, hold: float, limit: int = 100) -> list[Delivery]:
        """Pending deliveries due at `now`, each with one more attempt counted and held (not due)
        until `now + hold`, so that no other sender takes it meanwhile."""

    async def record_delivery(
        self,
        delivery_id: int,
        *,
        state: str,
        next_at: float | None,
        status: int | None,
        error: str | None,
        now: float,
    ) -> None:
        """Record an attempt's outcome: `state` pending (tried again at `next_at`), delivered or failed."""

    async def list_deliveries(self, limit: int = 50, event_id: int | None = None) -> list[Delivery]:
        """The most recent deliveries (of one event), newest first."""

    async def outbox_event(self, event_id: int) -> OutboxEvent | None:
        """The event of this id, if the outbox still holds it."""

    async def endpoint_figures(self) -> list[EndpointFigures]:
        """Deliveries by endpoint and state, for `status` and metrics."""

    async def outbox_counts(self) -> dict[str, int]:
        """Events held, by type."""

    async def purge_outbox(self, *, before: float) -> int:
        """Delete events older than `before` with no delivery pending, and their deliveries."""
