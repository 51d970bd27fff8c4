"""The PostgreSQL store: one database shared by every app host and daemon.

A pool of asyncpg connections (`[store] pool_size`). Concurrent enqueues share one multi-row
INSERT and one commit (group commit, `synchronous_commit = on`). Claims take rows with `FOR
UPDATE SKIP LOCKED`; every state change is guarded on the state it starts from, as on SQLite.
Transactions that complete requests number them from one sequence while holding a
transaction-level advisory lock, so completion numbers become visible in order and a
watcher's cursor never steps over one still to commit; they NOTIFY at commit (notify.py).
A transient fault (a dropped connection, a server restart) is retried on a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import asyncpg
from asyncpg.cursor import Cursor
from asyncpg.pool import PoolConnectionProxy
from asyncpg.transaction import Transaction

from ..._crashpoints import crash_point
from ...errors import InvalidRequestError, StoreError
from ...logs import get_logger
from .. import states
from ..base import RetryPolicy, StoreClosedError
from ..bodies import claimed, entries_budget, entry_cost
from ..group_commit import GroupCommitter
from ..idempotency import digest_of
from ..leases import DRIVER, owner_is_dead
from ..ledger import LedgerRow, ledger_row
from ..missing import missing_line
from ..records import (
    CACHE_FIGURE_FIELDS,
    CALIBRATION_DEPTH,
    LEDGER_TOTAL_FIELDS,
    AtRisk,
    BatchClaim,
    BatchRow,
    ClaimSelector,
    DryRun,
    FinalRow,
    IngestStats,
    Lease,
    LedgerEntry,
    NewRequest,
    PendingGroup,
    PurgeReport,
    RequestRow,
    StoredResult,
    Ticket,
    completion_numbers,
)
from ..verdicts import DUPLICATE, FINAL, RETRY, SKIPPED, UNKNOWN
from . import caching, ingest, outbox, sql
from .connect import Location, Retrier, create_pool, is_transient, parse_location

if TYPE_CHECKING:
    from ...providers.base import BatchFormat
from .figures import FigureOps
from .notify import CHANNEL, CompletionSignal
from .outbox import OutboxOps
from .schema import COMPLETION_LOCK, migrate

log = get_logger(__name__)

T = TypeVar("T")

Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"

# Enqueue groups written at once, each on its own pooled connection: one is sent while the
# one before waits for its commit to reach the disk.
_GROUPS_IN_FLIGHT = 2


class _NothingClaimed(Exception):
    """Rolls back a claim that found nothing pending."""


async def _prepare(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    await conn.execute(ingest.SCRATCH_TABLE)


def _columns(rows: Sequence[LedgerRow]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in sql.LEDGER_TYPES]


class PostgresStore(FigureOps, OutboxOps):
    """Async access to the router's PostgreSQL database. Open with `await PostgresStore.open(url)`."""

    def __init__(self, location: Location, pool: asyncpg.Pool, *, retry_for: float) -> None:
        self.location = location
        self._pool = pool
        self._retrier = Retrier(location, give_up_after=retry_for)
        self._signal = CompletionSignal(location)
        self._group = GroupCommitter(
            self._insert,
            self._write_ledger,
            in_flight=min(_GROUPS_IN_FLIGHT, pool.get_max_size()),
            log_fields={"store": str(location)},
        )
        self._closed = False

    def __repr__(self) -> str:
        return f"<PostgresStore {self.location}>"

    @property
    def path(self) -> str:
        """Where the store is, for messages (no password)."""
        return str(self.location)

    @classmethod
    async def open(
        cls, url: str, *, pool_size: int = 10, retry_for: float = 60.0, create: bool = True
    ) -> PostgresStore:
        """Connect, migrate the schema (refusing a newer one) and start the group commit; a
        StoreError naming host, port and database when any of it fails. With `create` False
        (the reading commands) a database without the schema is refused, not set up. A server
        that cannot be reached at all fails at once; one that drops the connection once reached
        (a restart under way) is tried again for up to `retry_for` seconds."""
        location = parse_location(url)
        pool = await create_pool(location, size=pool_size, init=_prepare, retry_for=retry_for)

        async def attempt() -> None:
            async with pool.acquire() as conn:
                try:
                    await migrate(conn, str(location), create=create)
                except Exception as exc:
                    if is_transient(exc):
                        with contextlib.suppress(asyncpg.InterfaceError):
                            conn.terminate()
                    raise

        try:
            await Retrier(location, give_up_after=retry_for).run("open", attempt)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError):
                raise StoreError(f"cannot open the store: {location}: {location.scrub(str(exc))}") from None
            raise
        return cls(location, pool, retry_for=retry_for)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._group.close()
        await self._signal.close()
        await self._pool.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")

    async def _run(
        self, operation: str, fn: Callable[[Conn], Awaitable[T]], *, transaction: bool = True
    ) -> T:
        """`fn(connection)` on a pooled connection, in a transaction, retried on a transient fault."""

        async def attempt() -> T:
            async with self._pool.acquire() as conn:
                try:
                    if not transaction:
                        return await fn(conn)
                    async with conn.transaction():
                        return await fn(conn)
                except Exception as exc:
                    if is_transient(exc):
                        # Dead, or left mid-protocol by the server's goodbye: the pool
                        # replaces a terminated connection with a new one. One the pool
                        # saw close has been detached from `conn` already.
                        with contextlib.suppress(asyncpg.InterfaceError):
                            conn.terminate()
                    raise

        return await self._retrier.run(operation, attempt)

    async def _run_once(self, operation: str, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """`fn(connection)` in a transaction that takes effect once, retried on a transient fault.

        A connection lost once COMMIT may have been sent leaves the outcome unknown: the
        transaction may have committed all the same. The server is asked (`txid_status`)
        before another try, and a committed one returns what `fn` returned in it. Real-time
        ledger sums have no key to make a second insert harmless, and a retried enqueue
        would tell its callers their own new requests were already stored.
        """

        async def attempt() -> T:
            xid = 0
            returned: list[T] = []
            try:
                async with self._pool.acquire() as conn:
                    try:
                        async with conn.transaction():
                            xid = int(await conn.fetchval(sql.CURRENT_XID))
                            returned.append(await fn(conn))
                        return returned[0]
                    except Exception as exc:
                        if is_transient(exc):
                            with contextlib.suppress(asyncpg.InterfaceError):
                                conn.terminate()
                        raise
            except Exception as exc:
                if returned and is_transient(exc) and await self._committed(operation, xid):
                    log.warning("store_commit_confirmed", operation=operation, store=str(self.location))
                    return returned[0]
                raise

        return await self._retrier.run(operation, attempt)

    async def _committed(self, operation: str, xid: int) -> bool:
        """Whether transaction `xid`, whose COMMIT went unanswered, committed (asked on another
        connection; one still in progress, its backend not yet aware of the loss, is waited for)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retrier.give_up_after
        while True:
            (row,) = await self._fetch(f"{operation} outcome", sql.XACT_STATUS, xid)
            if row[0] != "in progress":
                return bool(row[0] == "committed")
            if loop.time() > deadline:
                raise StoreError(f"{self.location}: {operation}: the outcome of its commit is still unknown")
            await asyncio.sleep(0.05)

    async def _fetch(self, operation: str, query: str, *args: Any) -> list[asyncpg.Record]:
        async def fn(conn: Conn) -> list[asyncpg.Record]:
            return list(await conn.fetch(query, *args))

        return await self._run(operation, fn, transaction=False)

    async def _execute(self, operation: str, query: str, *args: Any) -> str:
        async def fn(conn: Conn) -> str:
            return str(await conn.execute(query, *args))

        return await self._run(operation, fn, transaction=False)

    # ------------------------------------------------------------------ enqueue and the ledger

    async def enqueue(self, request: NewRequest) -> Ticket:
        return await self._group.enqueue(request)

    async def enqueue_many(self, requests: Sequence[NewRequest]) -> list[Ticket]:
        self._check_open()
        return await self._insert(requests, ledger=())

    def record(self, entry: LedgerEntry) -> None:
        self._group.record(entry)

    async def record_now(self, entry: LedgerEntry) -> None:
        self._check_open()
        await self._write_ledger([ledger_row(entry)])

    async def _write_ledger(self, rows: Sequence[LedgerRow]) -> None:
        """Commit ledger rows alone, in one transaction."""
        if not rows:
            return
        columns = _columns(rows)

        async def fn(conn: Conn) -> None:
            await conn.execute(sql.LEDGER_INSERT, *columns)

        await self._run_once("ledger", fn)

    async def _insert(self, requests: Sequence[NewRequest], ledger: Sequence[LedgerRow]) -> list[Any]:
        """Insert requests (idempotent on key) and ledger rows in one transaction: one Ticket per
        request, or an InvalidRequestError where a key was reused with different params."""
        digests = [digest_of(r.params) for r in requests]
        first: dict[str, int] = {}
        for i, r in enumerate(requests):
            first.setdefault(r.key, i)
        unique = [requests[i] for i in first.values()]
        arrays = (
            [r.key for r in unique],
            [r.latency for r in unique],
            [r.tag for r in unique],
            [r.model for r in unique],
            [digests[i] for i in first.values()],
            [len(r.params) for r in unique],
            [r.created_at for r in unique],
            [r.deadline_at for r in unique],
            [r.params for r in unique],
            [r.provider for r in unique],
        )
        columns = _columns(ledger)

        async def fn(conn: Conn) -> tuple[dict[str, int], dict[str, asyncpg.Record]]:
            created: dict[str, int] = {}
            stored: dict[str, asyncpg.Record] = {}
            if unique:
                created = {row[0]: row[1] for row in await conn.fetch(sql.ENQUEUE, *arrays)}
                # Keys stored before, or by another transaction while this one waited on them.
                known = [key for key in first if key not in created]
                if known:
                    stored = {row[0]: row for row in await conn.fetch(sql.STORED_KEYS, known)}
                prefixed = [
                    (created[r.key], r.prefix) for r in unique if r.prefix is not None and r.key in created
                ]
                if prefixed:
                    await conn.execute(
                        sql.SET_PREFIXES,
                        [rid for rid, _ in prefixed],
                        [p.key for _, p in prefixed],
                        [p.tokens for _, p in prefixed],
                        [p.ttl_1h_delta for _, p in prefixed],
                    )
            if ledger:
                await conn.execute(sql.LEDGER_INSERT, *columns)
            crash_point("enqueue.before_commit")
            return created, stored

        created, stored = await self._run_once("enqueue", fn)
        crash_point("enqueue.after_commit")
        results: list[Any] = []
        seen: set[str] = set()
        for r, d in zip(requests, digests, strict=True):
            rid = created.get(r.key)
            if rid is not None:  # this group's: as its first request with this key says
                i = first[r.key]
                ticket = Ticket(r.key, rid, requests[i].latency, requests[i].deadline_at, r.key not in seen)
                stored_digest = digests[i]
            else:
                _, rid, stored_digest, latency, deadline = stored[r.key]
                ticket = Ticket(r.key, int(rid), latency, deadline, False)
            if bytes(stored_digest) != d:
                results.append(
                    InvalidRequestError(
                        f"key {r.key!r} was already used for a request with different parameters;"
                        " an idempotency key must name one request"
                    )
                )
                continue
            results.append(ticket)
            seen.add(r.key)
        return results

    async def ledger_totals(self) -> list[dict[str, Any]]:
        await self._group.commit_ledger()
        rows = await self._fetch("ledger_totals", sql.LEDGER_TOTALS)
        return [dict(zip(LEDGER_TOTAL_FIELDS, tuple(r), strict=True)) for r in rows]

    # ------------------------------------------------------------------ flush

    async def pending_stats(self, latencies: Sequence[str] | None = None) -> tuple[int, int, float | None]:
        classes = None if latencies is None else list(latencies)
        (row,) = await self._fetch("pending_stats", sql.PENDING_STATS, classes)
        return int(row[0]), int(row[1]), row[2]

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
        classes = None if latencies is None else list(latencies)
        cost = entry_cost(frame)

        async def fn(conn: Conn) -> BatchClaim:
            await conn.execute(sql.CLAIM_MEMORY)
            model: str | None = None
            if one_model:
                model = await conn.fetchval(sql.FIRST_PENDING_MODEL, classes, provider)
                if model is None:
                    raise _NothingClaimed
            batch_id = int(await conn.fetchval(sql.NEW_INTENT, now, provider))
            budget = entries_budget(frame, max_bytes)
            if select is None:
                row = await conn.fetchrow(
                    sql.CLAIM, batch_id, classes, max_requests, budget, cost, provider, model
                )
            else:
                row = await conn.fetchrow(
                    caching.CLAIM_SELECTED,
                    batch_id,
                    classes,
                    max_requests,
                    budget,
                    list(select.groups),
                    select.per_group,
                    select.ttl_1h,
                    cost,
                    provider,
                    model,
                )
            count, total = (0, 0) if row is None else row
            if count == 0:
                raise _NothingClaimed
            claim = claimed(
                frame, batch_id, int(count), int(total), select=select, provider=provider, model=model
            )
            await conn.execute(sql.SET_INTENT_SIZE, batch_id, claim.request_count, claim.body_bytes)
            crash_point("claim.before_commit")
            return claim

        try:
            return await self._run("claim_batch", fn)
        except _NothingClaimed:
            return None

    # ------------------------------------------------------------------ prompt caching

    async def pending_groups(self, latencies: Sequence[str] | None = None) -> list[PendingGroup]:
        classes = None if latencies is None else list(latencies)
        rows = await self._fetch("pending_groups", caching.PENDING_GROUPS, classes)
        return [PendingGroup(r[0], r[1], r[2], int(r[3]), int(r[4]), r[5], r[6], r[7]) for r in rows]

    async def prefix_status(self, keys: Sequence[str]) -> dict[str, tuple[float | None, bool]]:
        rows = await self._fetch("prefix_status", caching.PREFIX_STATUS, list(dict.fromkeys(keys)))
        return {str(r[0]): (r[1], bool(r[2])) for r in rows}

    async def cache_calibration(self, limit: int = 2000) -> dict[str, tuple[int, int]]:
        rows = await self._fetch("cache_calibration", caching.CALIBRATION, limit, CALIBRATION_DEPTH)
        return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}

    async def prefix_sizes(self, limit: int = 5000) -> list[tuple[str, str | None, str, int]]:
        rows = await self._fetch("prefix_sizes", caching.PREFIX_SIZES, limit)
        return [(str(r[0]), r[1], str(r[2]), int(r[3] or 0)) for r in rows]

    async def cache_figures(self) -> list[dict[str, Any]]:
        await self._group.commit_ledger()
        rows = await self._fetch("cache_figures", caching.CACHE_FIGURES)
        return [dict(zip(CACHE_FIGURE_FIELDS, tuple(r), strict=True)) for r in rows]

    async def iter_claimed(self, batch_id: int, chunk: int = 2000) -> AsyncIterator[list[tuple[int, bytes]]]:
        """(request id, params) of a claimed batch in id order, `chunk` rows at a time from one
        server-side cursor in a read-only transaction, held while the body is consumed. The
        next chunk is fetched while one is consumed (sent, in a flush), so the server reads
        and the client sends at once. After a transient fault a new cursor resumes after the
        last row yielded."""
        after = 0
        while True:
            conn, transaction, cursor, rows = await self._retrier.run(
                "iter_claimed", functools.partial(self._open_claimed, batch_id, after, chunk)
            )
            ahead: asyncio.Future[list[asyncpg.Record]] | None = None
            try:
                while rows:
                    after = int(rows[-1][0])
                    ahead = asyncio.ensure_future(cursor.fetch(chunk))
                    yield [(int(r[0]), bytes(r[1])) for r in rows]
                    rows, ahead = await ahead, None
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                with contextlib.suppress(asyncpg.InterfaceError):
                    conn.terminate()
            finally:
                if ahead is not None:  # the consumer stopped early: let the fetch end first
                    with contextlib.suppress(Exception):
                        await ahead
                await _end_read(self._pool, conn, transaction)

    async def _open_claimed(
        self, batch_id: int, after: int, chunk: int
    ) -> tuple[Conn, Transaction, Cursor, list[asyncpg.Record]]:
        """A connection, its read-only transaction, the claimed rows' cursor and its first rows."""
        conn: Conn = await self._pool.acquire()
        transaction = conn.transaction(readonly=True)
        try:
            await transaction.start()
            cursor = await conn.cursor(sql.CLAIMED, batch_id, after)
            return conn, transaction, cursor, list(await cursor.fetch(chunk))
        except Exception as exc:
            if is_transient(exc):
                with contextlib.suppress(asyncpg.InterfaceError):
                    conn.terminate()
            await _end_read(self._pool, conn, transaction)
            raise

    async def mark_submitted(self, batch_id: int, api_id: str, *, now: float, next_poll_at: float) -> None:
        async def fn(conn: Conn) -> None:
            await conn.execute(sql.SUBMITTED_INTENT, batch_id, api_id, now, next_poll_at)
            await conn.execute(sql.CLAIMED_SUBMITTED, batch_id)

        await self._run("mark_submitted", fn)

    async def release_batch(self, batch_id: int) -> int:
        async def fn(conn: Conn) -> int:
            released = _count(await conn.execute(sql.CLAIMED_RELEASED, batch_id))
            await conn.execute(sql.CREATING_DONE, batch_id)
            return released

        return await self._run("release_batch", fn)

    # ------------------------------------------------------------------ intents

    async def known_api_ids(self, api_ids: Collection[str]) -> set[str]:
        rows = await self._fetch("known_api_ids", sql.KNOWN_API_IDS, list(api_ids))
        return {str(r[0]) for r in rows}

    async def adopt_batch(self, intent_id: int, api_id: str, *, state: str, now: float) -> bool:
        async def fn(conn: Conn) -> bool:
            if _count(await conn.execute(sql.ADOPT, intent_id, api_id, now, state)) != 1:
                return False
            if state == states.B_CREATING:
                await conn.execute(sql.CLAIMED_SUBMITTED, intent_id)
            return True

        try:
            return await self._run("adopt_batch", fn)
        except asyncpg.UniqueViolationError:  # the unique api_id: another process adopted it first
            return False

    async def release_intent(self, intent_id: int, *, state: str, to: str) -> int:
        async def fn(conn: Conn) -> int:
            if _count(await conn.execute(sql.RELEASE_INTENT, intent_id, state, to)) != 1:
                return 0
            return _count(await conn.execute(sql.CLAIMED_RELEASED, intent_id))

        return await self._run("release_intent", fn)

    async def close_released_intent(self, intent_id: int) -> None:
        await self._execute("close_released_intent", sql.CLOSE_RELEASED, intent_id)

    # ------------------------------------------------------------------ poll and ingest

    async def open_batches(self) -> list[BatchRow]:
        return [BatchRow(*r) for r in await self._fetch("open_batches", sql.OPEN_BATCHES)]

    async def update_batch(self, batch_id: int, **fields: Any) -> None:
        allowed = {"state", "ended_at", "next_poll_at"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"update_batch takes {sorted(allowed)}, got {sorted(fields)}")
        sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, 2))
        query = sql.UPDATE_BATCH.format(sets=sets)
        await self._execute("update_batch", query, batch_id, *fields.values())

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
        """Apply one chunk of result lines in one transaction (see ingest.py); `retry` decides
        the lines that are neither `succeeded` nor for a request answered elsewhere."""
        chunk = ingest.Chunk([raw.encode() if isinstance(raw, str) else raw for raw in lines])

        async def fn(conn: Conn) -> tuple[dict[str, int], list[asyncpg.Record]]:
            counts, done = await ingest.apply_chunk(
                conn,
                batch_id,
                chunk,
                now=now,
                max_attempts=max_attempts,
                default_max_attempts=default_max_attempts,
                retry=retry,
                completion_lock=COMPLETION_LOCK,
                channel=CHANNEL,
            )
            await outbox.emit_ingest_events(conn, self._outbox, done, now)
            crash_point("apply.before_commit")
            return counts, done

        counts, done = await self._run("apply_results", fn)
        # WRITE returns its rows in done_seq order.
        first, last = (int(done[0]["done_seq"]), int(done[-1]["done_seq"])) if done else (None, None)
        stats = IngestStats(
            delivered=counts.get(FINAL, 0),
            retried=counts.get(RETRY, 0),
            duplicates=counts.get(DUPLICATE, 0),
            skipped=counts.get(SKIPPED, 0),
            unknown=counts.get(UNKNOWN, 0),
            completions=completion_numbers(first, last, len(done)),
        )
        lines = chunk.lines
        finals = [(*r[:8], lines[r[8]], *r[9:12]) for r in done]  # RequestRow's order, see WRITE
        return stats, finals

    async def finish_batch(self, batch_id: int, *, now: float) -> int:
        async def fn(conn: Conn) -> int:
            orphans = _count(await conn.execute(sql.UNANSWERED_RELEASED, batch_id))
            await conn.execute(sql.BATCH_DONE, batch_id, now)
            await outbox.emit_batch_closed(conn, self._outbox, batch_id, now)
            return orphans

        return await self._run("finish_batch", fn)

    async def unanswered(self, batch_id: int) -> list[int]:
        return await self._run("unanswered", functools.partial(_unanswered, batch_id=batch_id))

    async def fail_missing(self, batch_id: int, *, now: float, reason: str) -> list[int]:
        async def fn(conn: Conn) -> list[int]:
            ids = await _unanswered(conn, batch_id)
            if ids:
                await conn.execute(sql.TAKE_COMPLETION_LOCK, COMPLETION_LOCK)
                lines = [missing_line(rid, reason) for rid in ids]
                seqs = await conn.fetch(sql.FAIL_MISSING, batch_id, now, ids, lines)
                await conn.execute(sql.NOTIFY, CHANNEL, str(max(int(r[0]) for r in seqs)))
            await conn.execute(sql.BATCH_DONE, batch_id, now)
            await outbox.emit_batch_closed(conn, self._outbox, batch_id, now)
            return ids

        return await self._run("fail_missing", fn)

    async def record_turnaround(self, batch_id: int, seconds: float) -> None:
        await self._execute("record_turnaround", sql.TURNAROUND, batch_id, seconds)

    # ------------------------------------------------------------------ results and completions

    async def get_by_key(self, key: str) -> RequestRow | None:
        rows = await self._fetch("get_by_key", sql.BY_KEY, key)
        return _request(rows[0]) if rows else None

    async def get_many(self, ids: Sequence[int]) -> list[RequestRow]:
        return [_request(r) for r in await self._fetch("get_many", sql.BY_IDS, list(ids))]

    async def max_done_seq(self) -> int:
        (row,) = await self._fetch("max_done_seq", sql.MAX_DONE_SEQ)
        return int(row[0])

    async def completed_since(self, cursor: int, limit: int = 5000) -> tuple[int, list[int]]:
        rows = await self._fetch("completed_since", sql.COMPLETED_SINCE, cursor, limit)
        if not rows:
            return cursor, []
        return int(rows[-1][0]), [int(r[1]) for r in rows]

    async def wait_for_completions(self, after_seq: int, timeout: float) -> bool:
        """True as soon as another transaction has completed requests past `after_seq` (a
        NOTIFY), or the listening connection came back and callers should catch up; False
        after `timeout`."""
        if self._closed:
            await asyncio.sleep(timeout)
            return False
        return await self._signal.wait(after_seq, timeout)

    async def listening(self) -> None:
        """Return once this store hears completion notifications (tests, benchmarks)."""
        await self._signal.connected()

    async def digests_by_key(self, keys: Sequence[str]) -> dict[str, bytes]:
        rows = await self._fetch("digests_by_key", sql.DIGESTS, list(keys))
        return {str(k): bytes(d) for k, d in rows}

    async def finished_results(self, *, after: int, limit: int) -> list[StoredResult]:
        rows = await self._fetch("finished_results", sql.FINISHED_RESULTS, after, limit)
        return [StoredResult(int(i), str(k), str(s), bytes(r)) for i, k, s, r in rows]

    async def results_by_key(self, keys: Sequence[str]) -> dict[str, StoredResult]:
        rows = await self._fetch("results_by_key", sql.RESULTS_BY_KEY, list(keys))
        return {str(k): StoredResult(int(i), str(k), str(s), _bytes(r)) for i, k, s, r in rows}

    # ------------------------------------------------------------------ deadlines and escalation

    async def at_risk(self, horizon: float, limit: int = 5000) -> list[AtRisk]:
        found: list[list[AtRisk]] = []
        for query in (sql.PENDING_AT_RISK, sql.SUBMITTED_AT_RISK):
            found.append([AtRisk(*row) for row in await self._fetch("at_risk", query, horizon, limit)])
        return list(itertools.islice(heapq.merge(*found, key=lambda row: row.deadline_at), limit))

    async def mark_escalated(self, rows: Sequence[AtRisk], now: float) -> list[int]:
        if not rows:
            return []
        ids, from_states = [r.id for r in rows], [r.state for r in rows]

        async def fn(conn: Conn) -> list[int]:
            won = [int(r[0]) for r in await conn.fetch(sql.ESCALATE, now, ids, from_states)]
            await outbox.emit_escalated(conn, self._outbox, rows, won, now)
            return won

        won = set(await self._run("mark_escalated", fn))
        return [r.id for r in rows if r.id in won]

    async def take_over_stale(self, *, before: float, now: float, limit: int = 1000) -> list[int]:
        stale = await self._fetch("take_over_stale", sql.STALE_ESCALATED, before, limit)
        if not stale:
            return []
        ids, ats = [int(r[0]) for r in stale], [float(r[1]) for r in stale]

        async def fn(conn: Conn) -> list[int]:
            return [int(r[0]) for r in await conn.fetch(sql.TAKE_OVER, now, ids, ats)]

        won = set(await self._run("take_over_stale", fn))
        return [rid for rid in ids if rid in won]

    async def escalated_params(
        self, ids: Sequence[int]
    ) -> list[tuple[int, str, str | None, str, bytes, str]]:
        rows = await self._fetch("escalated_params", sql.ESCALATED_PARAMS, list(ids))
        return [(int(r[0]), r[1], r[2], r[3], bytes(r[4]), r[5]) for r in rows]

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
        final = states.SUCCEEDED if succeeded else states.FAILED
        columns = _columns([ledger_row(ledger)]) if ledger is not None else None

        async def fn(conn: Conn) -> bool:
            await conn.execute(sql.TAKE_COMPLETION_LOCK, COMPLETION_LOCK)
            seq = await conn.fetchval(sql.COMPLETE, request_id, final, outcome, now, line, list(from_states))
            if seq is None:
                return False
            if columns is not None:
                await conn.execute(sql.LEDGER_INSERT, *columns)
            await outbox.emit_request_final(conn, self._outbox, request_id, now)
            await conn.execute(sql.NOTIFY, CHANNEL, str(seq))
            return True

        return await self._run_once("complete", fn)

    async def still_in_batch(self, batch_id: int) -> int:
        (row,) = await self._fetch("still_in_batch", sql.STILL_IN_BATCH, batch_id)
        return int(row[0])

    async def turnaround_samples(self, model: str | None, limit: int = 200) -> list[float]:
        if model is None:
            rows = await self._fetch("turnaround_samples", sql.TURNAROUNDS_ALL, limit)
        else:
            rows = await self._fetch("turnaround_samples", sql.TURNAROUNDS_OF, model, limit)
        return [float(r[0]) for r in rows]

    async def recent_turnarounds(self, limit: int = 5000) -> list[tuple[str, float]]:
        rows = await self._fetch("recent_turnarounds", sql.RECENT_TURNAROUNDS, limit)
        return [(str(m), float(s)) for m, s in rows]

    async def escalated_count(self) -> int:
        (row,) = await self._fetch("escalated_count", sql.ESCALATED_COUNT)
        return int(row[0])

    # ------------------------------------------------------------------ reporting

    async def state_counts(self) -> dict[str, int]:
        return {str(s): int(n) for s, n in await self._fetch("state_counts", sql.STATE_COUNTS)}

    async def batch_count(self) -> int:
        (row,) = await self._fetch("batch_count", sql.BATCH_COUNT)
        return int(row[0])

    # ------------------------------------------------------------------ lease and retention

    async def lease(self, name: str = DRIVER) -> Lease | None:
        rows = await self._fetch("lease", sql.LEASE, name)
        return Lease(*rows[0]) if rows else None

    async def acquire_lease(self, owner: str, *, ttl: float, now: float, name: str = DRIVER) -> bool:
        """Take or renew the lease: free, ours, expired, or held by a local process that is gone."""
        holder = await self.lease(name)
        dead = holder is not None and holder.owner != owner and owner_is_dead(holder.owner)
        gone = holder.owner if dead and holder else ""

        async def fn(conn: Conn) -> bool:
            return bool(await conn.fetchval(sql.ACQUIRE_LEASE, name, owner, now, now + ttl, gone) == owner)

        return await self._run("acquire_lease", fn)

    async def release_lease(self, owner: str, *, name: str = DRIVER) -> bool:
        return _count(await self._execute("release_lease", sql.RELEASE_LEASE, name, owner)) == 1

    async def purge(self, *, before: float, dry_run: bool = False) -> PurgeReport:
        """The ledger rows and the purged requests' missed deadlines go into the daily totals
        first (`ledger_days`); a `dry_run` rolls the transaction back."""

        async def fn(conn: Conn) -> PurgeReport:
            days = _count(await conn.execute(sql.ROLL_UP_MISSED, before))
            days += _count(await conn.execute(sql.ROLL_UP_LEDGER, before))
            requests = int(await conn.fetchval(sql.PURGE_REQUESTS, before))
            batches = _count(await conn.execute(sql.PURGE_BATCHES, before))
            ledger = _count(await conn.execute(sql.PURGE_LEDGER, before))
            report = PurgeReport(requests, batches, ledger, days)
            if dry_run:
                raise DryRun(report)
            crash_point("purge.before_commit")
            return report

        try:
            return await self._run("purge", fn)
        except DryRun as done:
            return done.report


async def _end_read(pool: asyncpg.Pool, conn: Conn, transaction: Transaction) -> None:
    """Roll back a read-only transaction (nothing to keep) and give its connection back."""
    try:
        if not conn.is_closed():
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await transaction.rollback()
    finally:
        await pool.release(conn)


def _count(status: str) -> int:
    """The row count of a command status such as ``UPDATE 3``."""
    return int(status.rpartition(" ")[2] or 0)


def _request(row: asyncpg.Record) -> RequestRow:
    values = tuple(row)
    result = values[8]
    return RequestRow._make((*values[:8], None if result is None else bytes(result), *values[9:]))


def _bytes(value: bytes | None) -> bytes | None:
    return None if value is None else bytes(value)


async def _unanswered(conn: Conn, batch_id: int) -> list[int]:
    """The batch's requests still waiting for their result, in the caller's transaction."""
    return [int(r[0]) for r in await conn.fetch(sql.UNANSWERED, batch_id)]
