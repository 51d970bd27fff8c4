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
import heapq
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

import asyncpg
import pydantic_core
from asyncpg.pool import PoolConnectionProxy

from ..._crashpoints import crash_point
from ...errors import InvalidRequestError, StoreError
from ...logs import get_logger
from .. import states
from ..base import RetryPolicy
from ..leases import DRIVER, owner_is_dead
from ..records import (
    LEDGER_TOTAL_FIELDS,
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
)
from ..sqlite.ingest import DUPLICATE, FINAL, RETRY, SKIPPED, UNKNOWN
from ..sqlite.ledger import LedgerBuffer, LedgerRow, ledger_row
from ..sqlite.missing import missing_line
from ..sqlite.store import StoreClosedError, batch_body_bytes, digest_of
from . import ingest, outbox, sql
from .connect import Location, Retrier, create_pool, is_transient, parse_location
from .figures import FigureOps
from .notify import CHANNEL, CompletionSignal
from .outbox import OutboxOps
from .schema import COMPLETION_LOCK, migrate

log = get_logger(__name__)

T = TypeVar("T")

_GROUP_MAX = 4096  # rows per group commit
# Ledger-only groups (the real-time lane's accounting) gather this long: nobody waits for them.
_LEDGER_LINGER = 1.0
_LEDGER_GROUP_MAX = 5000

Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"


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
        self._queue: list[tuple[NewRequest, asyncio.Future[Ticket]]] = []
        self._ledger = LedgerBuffer()
        self._wake = asyncio.Event()
        self._signal = CompletionSignal(location)
        self._committer = asyncio.create_task(self._commit_loop(), name="hybrid-router-group-commit")
        self._closed = False

    def __repr__(self) -> str:
        return f"<PostgresStore {self.location}>"

    @property
    def path(self) -> str:
        """Where the store is, for messages (no password)."""
        return str(self.location)

    @classmethod
    async def open(cls, url: str, *, pool_size: int = 10, retry_for: float = 60.0) -> PostgresStore:
        """Connect, migrate the schema (refusing a newer one) and start the group commit; a
        StoreError naming host, port and database when any of it fails. A server that cannot
        be reached at all fails at once; one that drops the connection once reached (a restart
        under way) is tried again for up to `retry_for` seconds."""
        location = parse_location(url)
        pool = await create_pool(location, size=pool_size, init=_prepare, retry_for=retry_for)

        async def attempt() -> None:
            async with pool.acquire() as conn:
                try:
                    await migrate(conn, str(location))
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
        self._wake.set()
        await self._committer
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
        self._check_open()
        future: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        self._wake.set()
        return await future

    async def enqueue_many(self, requests: Sequence[NewRequest]) -> list[Ticket]:
        self._check_open()
        return await self._insert(requests, ledger=())

    def record(self, entry: LedgerEntry) -> None:
        if not self._closed:
            self._ledger.add(entry)
            if self._ledger.entries in (1, _LEDGER_GROUP_MAX):
                self._wake.set()

    async def record_now(self, entry: LedgerEntry) -> None:
        self._check_open()
        await self._commit_ledger([ledger_row(entry)], quiet=False)

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue and self._ledger.entries and not self._closed:
                until = loop.time() + _LEDGER_LINGER
                while (
                    not self._queue
                    and not self._closed
                    and self._ledger.entries < _LEDGER_GROUP_MAX
                    and (left := until - loop.time()) > 0
                ):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(left):
                            await self._wake.wait()
                    self._wake.clear()
            while self._queue or self._ledger.entries:
                group, self._queue = self._queue[:_GROUP_MAX], self._queue[_GROUP_MAX:]
                ledger = self._ledger.take()
                if not group:
                    await self._commit_ledger(ledger)
                    if self._closed or self._queue:
                        continue
                    break
                try:
                    tickets = await self._insert([r for r, _ in group], ledger=ledger)
                except Exception as exc:  # the whole group failed: every caller learns why
                    log.error("enqueue_failed", error=str(exc), group=len(group), store=str(self.location))
                    for _, fut in group:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), ticket in zip(group, tickets, strict=True):
                    if not fut.done():
                        if isinstance(ticket, Exception):
                            fut.set_exception(ticket)
                        else:
                            fut.set_result(ticket)
            if self._closed:
                return

    async def _commit_ledger(self, rows: Sequence[LedgerRow], *, quiet: bool = True) -> None:
        if not rows:
            return
        columns = _columns(rows)

        async def fn(conn: Conn) -> None:
            await conn.execute(sql.LEDGER_INSERT, *columns)

        try:
            await self._run("ledger", fn)
        except Exception as exc:  # accounting only: nobody waits on it, so log and go on
            if not quiet:
                raise
            log.error("ledger_write_failed", error=str(exc), rows=len(rows), store=str(self.location))

    async def _insert(self, requests: Sequence[NewRequest], *, ledger: Sequence[LedgerRow]) -> list[Any]:
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
        )
        columns = _columns(ledger)

        async def fn(conn: Conn) -> dict[str, asyncpg.Record]:
            found: dict[str, asyncpg.Record] = {}
            if unique:
                for row in await conn.fetch(sql.ENQUEUE, *arrays):
                    found[row[0]] = row
                # Keys another transaction committed while this one waited on them.
                late = [key for key, row in found.items() if row[1] is None]
                if late:
                    for row in await conn.fetch(sql.STORED_KEYS, late):
                        found[row[0]] = row
            if ledger:
                await conn.execute(sql.LEDGER_INSERT, *columns)
            crash_point("enqueue.before_commit")
            return found

        found = await self._run("enqueue", fn)
        crash_point("enqueue.after_commit")
        results: list[Any] = []
        seen: set[str] = set()
        for r, d in zip(requests, digests, strict=True):
            _, rid, created, stored_digest, latency, deadline = found[r.key]
            if bytes(stored_digest) != d:
                results.append(
                    InvalidRequestError(
                        f"key {r.key!r} was already used for a request with different parameters;"
                        " an idempotency key must name one request"
                    )
                )
                continue
            results.append(Ticket(r.key, int(rid), latency, deadline, bool(created) and r.key not in seen))
            seen.add(r.key)
        return results

    async def ledger_totals(self) -> list[dict[str, Any]]:
        if self._ledger.entries:
            await self._commit_ledger(self._ledger.take())
        rows = await self._fetch("ledger_totals", sql.LEDGER_TOTALS)
        return [dict(zip(LEDGER_TOTAL_FIELDS, tuple(r), strict=True)) for r in rows]

    # ------------------------------------------------------------------ flush

    async def pending_stats(self, latencies: Sequence[str] | None = None) -> tuple[int, int, float | None]:
        classes = None if latencies is None else list(latencies)
        (row,) = await self._fetch("pending_stats", sql.PENDING_STATS, classes)
        return int(row[0]), int(row[1]), row[2]

    async def claim_batch(
        self, *, latencies: Sequence[str] | None, max_requests: int, max_bytes: int, now: float
    ) -> BatchClaim | None:
        classes = None if latencies is None else list(latencies)

        async def fn(conn: Conn) -> BatchClaim:
            batch_id = int(await conn.fetchval(sql.NEW_INTENT, now))
            budget = max_bytes - sql.BODY_BUDGET
            row = await conn.fetchrow(sql.CLAIM, batch_id, classes, max_requests, budget)
            count, total = (0, 0) if row is None else row
            if count == 0:
                raise _NothingClaimed
            body = batch_body_bytes(int(total))
            await conn.execute(sql.SET_INTENT_SIZE, batch_id, count, body)
            crash_point("claim.before_commit")
            return BatchClaim(batch_id=batch_id, request_count=int(count), body_bytes=body)

        try:
            return await self._run("claim_batch", fn)
        except _NothingClaimed:
            return None

    async def iter_claimed(self, batch_id: int, chunk: int = 1000) -> AsyncIterator[list[tuple[int, bytes]]]:
        """(request id, params) of a claimed batch in id order: one short query per chunk."""
        after = 0
        while True:
            rows = await self._fetch("iter_claimed", sql.CLAIMED_CHUNK, batch_id, after, chunk)
            if not rows:
                return
            after = int(rows[-1][0])
            yield [(int(r[0]), bytes(r[1])) for r in rows]

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
        data = [raw.encode() if isinstance(raw, str) else raw for raw in lines]
        texts = [_line_text(raw, number) for number, raw in enumerate(data, 1)]

        async def fn(conn: Conn) -> tuple[dict[str, int], list[asyncpg.Record]]:
            await conn.execute(ingest.PREPARE_CHUNK)
            try:
                await conn.execute(ingest.CLASSIFY, batch_id, texts)
            except (asyncpg.InvalidTextRepresentationError, asyncpg.UntranslatableCharacterError):
                _raise_for_bad_line(data)
            await conn.execute(ingest.ANALYZE_CHUNK)
            decide = await conn.fetch(ingest.TO_DECIDE)
            if decide:
                decided = _decisions(decide, data, now, max_attempts, default_max_attempts, retry)
                await conn.execute(ingest.SET_DECISIONS, *decided)
            await conn.execute(sql.TAKE_COMPLETION_LOCK, COMPLETION_LOCK)
            done = list(await conn.fetch(ingest.WRITE, batch_id, now))
            await outbox.emit_ingest_events(conn, self._outbox, done, now)
            counts = {str(v): int(n) for v, n in await conn.fetch(ingest.COUNTS)}
            if done:
                await conn.execute(sql.NOTIFY, CHANNEL, str(done[-1]["done_seq"]))
            crash_point("apply.before_commit")
            return counts, done

        counts, done = await self._run("apply_results", fn)
        stats = IngestStats(
            delivered=counts.get(FINAL, 0),
            retried=counts.get(RETRY, 0),
            duplicates=counts.get(DUPLICATE, 0),
            skipped=counts.get(SKIPPED, 0),
            unknown=counts.get(UNKNOWN, 0),
        )
        finals = [(*tuple(r)[:8], data[r[8]], *tuple(r)[9:12]) for r in done]
        return stats, finals

    async def finish_batch(self, batch_id: int, *, now: float) -> int:
        async def fn(conn: Conn) -> int:
            orphans = _count(await conn.execute(sql.UNANSWERED_RELEASED, batch_id))
            await conn.execute(sql.BATCH_DONE, batch_id, now)
            await outbox.emit_batch_closed(conn, self._outbox, batch_id, now)
            return orphans

        return await self._run("finish_batch", fn)

    async def fail_missing(self, batch_id: int, *, now: float, reason: str) -> list[int]:
        async def fn(conn: Conn) -> list[int]:
            ids = [int(r[0]) for r in await conn.fetch(sql.UNANSWERED, batch_id)]
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

    async def escalated_params(self, ids: Sequence[int]) -> list[tuple[int, str, str | None, str, bytes]]:
        rows = await self._fetch("escalated_params", sql.ESCALATED_PARAMS, list(ids))
        return [(int(r[0]), r[1], r[2], r[3], bytes(r[4])) for r in rows]

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

        return await self._run("complete", fn)

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

    async def purge(self, *, before: float) -> PurgeReport:
        async def fn(conn: Conn) -> PurgeReport:
            requests = _count(await conn.execute(sql.PURGE_REQUESTS, before))
            batches = _count(await conn.execute(sql.PURGE_BATCHES, before))
            ledger = _count(await conn.execute(sql.PURGE_LEDGER, before))
            crash_point("purge.before_commit")
            return PurgeReport(requests, batches, ledger)

        return await self._run("purge", fn)


def _count(status: str) -> int:
    """The row count of a command status such as ``UPDATE 3``."""
    return int(status.rpartition(" ")[2] or 0)


def _request(row: asyncpg.Record) -> RequestRow:
    values = tuple(row)
    result = values[8]
    return RequestRow._make((*values[:8], None if result is None else bytes(result), *values[9:]))


def _bytes(value: bytes | None) -> bytes | None:
    return None if value is None else bytes(value)


def _line_text(raw: bytes, number: int) -> str:
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"batch result line {number} of the chunk is not UTF-8: {exc}") from None
    if "\x00" in text:
        raise ValueError(f"batch result line {number} of the chunk holds a NUL character")
    return text


def _raise_for_bad_line(lines: Sequence[bytes]) -> None:
    for number, line in enumerate(lines, 1):
        try:
            pydantic_core.from_json(line)
        except ValueError as exc:
            raise ValueError(f"batch result line {number} of the chunk is not JSON: {exc}") from None
    raise ValueError("a batch result line is not JSON that PostgreSQL can read")


def _decisions(
    decide: Sequence[asyncpg.Record],
    lines: Sequence[bytes],
    now: float,
    max_attempts: Mapping[str, int],
    default_max_attempts: int,
    retry: RetryPolicy,
) -> tuple[list[int], list[str], list[str | None]]:
    """(line indexes, verdicts, final states) of the lines the retry policy decides."""
    idx: list[int] = []
    verdicts: list[str] = []
    finals: list[str | None] = []
    for i, latency, attempts, deadline in decide:
        result = pydantic_core.from_json(lines[i]).get("result")
        resubmit = retry(
            result if isinstance(result, dict) else {},
            attempts=attempts + 1,
            max_attempts=max_attempts.get(latency, default_max_attempts),
            deadline_at=deadline,
            now=now,
        )
        idx.append(i)
        verdicts.append(RETRY if resubmit else FINAL)
        finals.append(None if resubmit else states.FAILED)
    return idx, verdicts, finals
