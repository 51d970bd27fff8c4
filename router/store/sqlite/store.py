"""The durable SQLite store: the source of truth for every deferred request.

One writer connection per process (WAL, `BEGIN IMMEDIATE`), one reader connection.
Concurrent enqueues share one transaction (group commit), so durability costs one
fsync per group rather than one per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import aiosqlite

from ..._crashpoints import crash_point
from ...errors import InvalidRequestError, RouterError, StoreError
from .. import states
from ..base import RetryPolicy, StoreClosedError
from ..bodies import claimed, entries_budget, entry_cost
from ..group_commit import GroupCommitter
from ..idempotency import digest_of
from ..ledger import LedgerRow, ledger_row
from ..records import (
    LEDGER_FIGURE_FIELDS,
    LEDGER_TOTAL_FIELDS,
    BatchClaim,
    BatchRow,
    ClaimSelector,
    FinalRow,
    IngestStats,
    LedgerEntry,
    NewRequest,
    RequestRow,
    Ticket,
)
from .caching import CacheOps
from .connections import fold_completions
from .deadlines import DeadlineOps
from .failures import StoreErrors
from .history import HistoryOps
from .ingest import (
    READ_FINAL_ROWS,
    SCRATCH_SCHEMA,
    apply_chunk,
    final_rows,
    spans_of,
    stats_of,
)
from .intents import IntentOps
from .leases import LeaseOps
from .ledger import insert_ledger, insert_ledger_json
from .lookups import LookupOps
from .missing import MissingOps
from .outbox import OutboxOps, emit_batch_closed, with_ingest_events
from .purge import RetentionOps
from .schema import MIGRATIONS, SCHEMA_VERSION
from .sql import (
    NEXT_DONE_SEQ,
    RESULT_OF_REQUEST,
    chunks,
    in_transaction,
)

if TYPE_CHECKING:
    from ...providers.base import BatchFormat

T = TypeVar("T")

Durability = Literal["full", "normal"]

_REQUEST_COLUMNS = (
    f"id, key, class, tag, model, state, attempts, outcome, {RESULT_OF_REQUEST}, created_at, deadline_at,"
    " batch_id"
)


_Method = TypeVar("_Method", bound=Callable[..., Coroutine[Any, Any, Any]])


def _store_errors(method: _Method) -> _Method:
    """A Store method whose file, folder and disk errors leave as StoreErrors (see failures.py).
    Not on the hot paths (enqueue, the watcher's reads): those translate where they fail."""

    @functools.wraps(method)
    async def translated(self: Store, *args: Any, **kwargs: Any) -> Any:
        with self._store_errors:
            return await method(self, *args, **kwargs)

    return cast(_Method, translated)


def _row_to_request(row: sqlite3.Row | tuple[Any, ...]) -> RequestRow:
    return RequestRow(*row)


def _create_private_file(path: Path) -> None:
    """Create the database file with mode 0600 before SQLite opens it (it holds prompts and replies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)


def _check_existing(path: Path) -> None:
    """Refuse, creating nothing, a path that holds no database (read-only commands open with this)."""
    hint = "check [store] path in the config"
    if os.path.isdir(path):
        raise StoreError(f"{path}: this is a folder, not a database file; {hint}")
    if not os.path.lexists(path):
        folder = path.absolute().parent
        where = "" if os.path.isdir(folder) else f" (no folder {folder})"
        raise StoreError(f"{path}: no database here{where}; {hint}")
    if os.path.getsize(path) == 0:  # SQLite would make it a database on first use
        raise StoreError(f"{path}: no database here (the file is empty); {hint}")


def _uri(path: Path) -> str:
    """An SQLite URI that opens `path` read-write and never creates it: the file is made (0600)
    by `_create_private_file` or must already exist."""
    return path.absolute().as_uri() + "?mode=rw"


class Store(
    CacheOps, DeadlineOps, HistoryOps, IntentOps, LeaseOps, LookupOps, MissingOps, OutboxOps, RetentionOps
):
    """Async access to the router's SQLite database. Open with `await Store.open(path)`.

    Each mixin holds the operations of one concept, with their SQL (see connections.py).
    """

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._store_errors = StoreErrors(path)
        self._group = GroupCommitter(self._write_group, self._write_ledger)
        self._closed = False

    @property
    def location(self) -> Path:
        """Where the store is, for messages: the database file."""
        return self.path

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, durability: Durability = "full", create: bool = True
    ) -> Store:
        """Open the database at `path`, creating it (and its folders) unless `create` is False.

        Raises StoreError, naming the file and the cause, when the folder is not writable, the
        file is not a SQLite database or is corrupt, its schema is newer than this code, or
        (with `create=False`) there is no database at `path`.
        """
        db_path = Path(path)
        _check_sqlite()
        with StoreErrors(db_path):
            if create:
                _create_private_file(db_path)
            else:
                _check_existing(db_path)
            return await cls._connect(db_path, durability)

    @classmethod
    async def _connect(cls, db_path: Path, durability: Durability) -> Store:
        writer = await aiosqlite.connect(_uri(db_path), uri=True, isolation_level=None)
        try:
            await _configure(writer, durability)
            await _migrate(writer, db_path)
            for statement in SCRATCH_SCHEMA:
                await writer.execute(statement)
            reader = await aiosqlite.connect(_uri(db_path), uri=True, isolation_level=None)
            try:
                await _configure(reader, durability)
                await reader.execute("PRAGMA query_only = ON")
            except BaseException:
                await reader.close()
                raise
        except BaseException:
            await writer.close()
            raise
        return cls(db_path, writer, reader)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._group.close()
        await self._reader.close()
        await self._writer.close()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """The writer connection inside `BEGIN IMMEDIATE`; commits on exit, rolls back on error."""
        async with self._write_lock:
            with self._store_errors:
                try:  # BEGIN inside: a cancelled BEGIN may still have run
                    await self._writer.execute("BEGIN IMMEDIATE")
                    yield self._writer
                    await self._writer.execute("COMMIT")
                except BaseException:
                    await rollback(self._writer)
                    raise

    # ------------------------------------------------------------------ enqueue

    async def enqueue(self, request: NewRequest) -> Ticket:
        """Store one request durably; returns once its group's transaction committed."""
        return await self._group.enqueue(request)

    async def enqueue_many(self, requests: Sequence[NewRequest]) -> list[Ticket]:
        """Store many requests in one transaction (bulk callers: map, enqueue)."""
        if self._closed:
            raise StoreClosedError("the store is closed")
        async with self._write_lock:
            with self._store_errors:
                return await self._insert(requests, ledger=())

    def record(self, entry: LedgerEntry) -> None:
        """Queue a ledger entry into the next group commit; the caller does not wait for the disk."""
        self._group.record(entry)

    async def record_now(self, entry: LedgerEntry) -> None:
        """Commit a ledger entry before returning (rare entries a crash must not lose)."""
        if self._closed:
            raise StoreClosedError("the store is closed")
        await self._group.commit_ledger([ledger_row(entry)])

    async def _write_group(self, requests: Sequence[NewRequest], ledger: Sequence[LedgerRow]) -> list[Any]:
        """One group commit's transaction (group_commit.py): file and disk errors as StoreErrors."""
        async with self._write_lock:
            with self._store_errors:
                return await self._insert(requests, ledger=ledger)

    async def _write_ledger(self, rows: Sequence[LedgerRow]) -> None:
        """Commit ledger rows alone, in one hand-off to SQLite's thread (the real-time lane's
        accounting: statement by statement, each trip waited behind the event loop's work)."""
        async with self._write_lock:
            await self._on_writer_thread(in_transaction, insert_ledger_json, rows)

    async def _insert(self, requests: Sequence[NewRequest], *, ledger: Sequence[LedgerRow]) -> list[Any]:
        """Insert requests (idempotent on key) and ledger rows in one transaction.

        Returns one Ticket per request, or an InvalidRequestError where a key was reused
        with different params.
        """
        w = self._writer
        rows = []
        digests = []
        for r in requests:
            d = digest_of(r.params)
            digests.append(d)
            rows.append(
                (
                    r.key,
                    r.latency,
                    r.tag,
                    r.model,
                    d,
                    len(r.params),
                    states.PENDING,
                    r.created_at,
                    r.deadline_at,
                    r.prefix.key if r.prefix is not None else None,
                    r.prefix.tokens if r.prefix is not None else None,
                    r.prefix.ttl_1h_delta if r.prefix is not None else 0,
                    r.provider,
                )
            )
        try:  # BEGIN inside: a cancelled BEGIN may still have run
            await w.execute("BEGIN IMMEDIATE")
            results: list[Any] = []
            if rows:
                async with w.execute("SELECT COALESCE(MAX(id), 0) FROM requests") as cur:
                    before = (await cur.fetchone() or (0,))[0]
                await w.executemany(
                    # params live in request_params, so state changes rewrite small rows.
                    "INSERT INTO requests (key, class, tag, model, params, digest, size, state, created_at,"
                    " deadline_at, prefix_key, prefix_tokens, ttl_1h_delta, provider)"
                    " VALUES (?,?,?,?,x'',?,?,?,?,?,?,?,?,?) ON CONFLICT (key) DO NOTHING",
                    rows,
                )
                found: dict[str, tuple[int, bytes, str, float | None]] = {}
                keys = list(dict.fromkeys(r.key for r in requests))
                for part in chunks(keys):
                    marks = ",".join("?" * len(part))
                    async with w.execute(
                        f"SELECT key, id, digest, class, deadline_at FROM requests WHERE key IN ({marks})",
                        part,
                    ) as cur:
                        for key, rid, digest, latency, deadline in await cur.fetchall():
                            found[key] = (rid, digest, latency, deadline)
                seen: set[str] = set()
                new_params: list[tuple[int, bytes]] = []
                for r, d in zip(requests, digests, strict=True):
                    rid, stored_digest, latency, deadline = found[r.key]
                    if stored_digest != d:
                        results.append(
                            InvalidRequestError(
                                f"key {r.key!r} was already used for a request with different parameters;"
                                " an idempotency key must name one request"
                            )
                        )
                        continue
                    created = rid > before and r.key not in seen
                    seen.add(r.key)
                    if created:
                        new_params.append((rid, r.params))
                    results.append(Ticket(r.key, rid, latency, deadline, created))
                if new_params:
                    await w.executemany("INSERT INTO request_params (id, params) VALUES (?, ?)", new_params)
            await insert_ledger(w, ledger)
            crash_point("enqueue.before_commit")
            await w.execute("COMMIT")
        except BaseException:
            await rollback(w)
            raise
        crash_point("enqueue.after_commit")
        return results

    # ------------------------------------------------------------------ flush

    @_store_errors
    async def pending_stats(self, latencies: Sequence[str] | None = None) -> tuple[int, int, float | None]:
        """(count, bytes, oldest created_at) of pending requests, optionally for some classes."""
        where, args = _class_filter(latencies)
        async with self._reader.execute(
            f"SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(created_at) FROM requests"
            f" WHERE state = 'pending'{where}",
            args,
        ) as cur:
            count, size, oldest = await cur.fetchone() or (0, 0, None)
        return int(count), int(size), oldest

    @_store_errors
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
        """Move the oldest pending requests that fit one batch (or those `select` picks) to
        `submitting` under a new batch row.

        The intent (the batch row) is committed before batches.create is called, so a crash
        after the call can be reconciled instead of blindly resubmitted.
        """
        where, args = _class_filter(latencies)
        where += " AND provider = ?"
        args = (*args, provider)
        scope = (where, args)
        if one_model:
            where += " AND model = ?"
        entry = f"size + {entry_cost(frame):d} + length(id)"
        if select is not None and select.ttl_1h:
            entry += " + ttl_1h_delta"
        if select is None:
            pick = f"""
                        SELECT id FROM (
                            SELECT id, SUM({entry})
                                       OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) AS total
                            FROM requests WHERE state = 'pending'{where}
                            ORDER BY id LIMIT ?
                        ) WHERE total <= ?"""
            pick_args: tuple[Any, ...] = (*args, max_requests, entries_budget(frame, max_bytes))
        else:
            # Group after group in the selector's order; ROW_NUMBER caps each group (primers).
            pick = f"""
                        SELECT id FROM (
                            SELECT id, SUM({entry}) OVER (ORDER BY pos, id ROWS UNBOUNDED PRECEDING) AS total
                            FROM (
                                SELECT r.id, r.size, r.ttl_1h_delta, g.pos,
                                    ROW_NUMBER() OVER (PARTITION BY g.pos ORDER BY r.id) AS nth
                                FROM requests r JOIN (
                                    SELECT CAST(key AS INTEGER) AS pos, value AS prefix FROM json_each(?)
                                ) g ON COALESCE(r.prefix_key, '') = g.prefix
                                WHERE r.state = 'pending'{where}
                            ) WHERE ? IS NULL OR nth <= ?
                            ORDER BY pos, id LIMIT ?
                        ) WHERE total <= ?"""
            pick_args = (
                json.dumps(list(select.groups)),
                *args,
                select.per_group,
                select.per_group,
                max_requests,
                entries_budget(frame, max_bytes),
            )
        async with self._write_lock:
            w = self._writer
            try:  # BEGIN inside: a cancelled BEGIN may still have run
                await w.execute("BEGIN IMMEDIATE")
                model: str | None = None
                if one_model:  # the model of the oldest pending request in scope
                    async with w.execute(
                        f"SELECT model FROM requests WHERE state = 'pending'{scope[0]} ORDER BY id LIMIT 1",
                        scope[1],
                    ) as c:
                        first = await c.fetchone()
                    if first is None:
                        await rollback(w)
                        return None
                    model = str(first[0])
                    pick_args = _with_model(
                        pick_args, len(scope[1]) + (1 if select is not None else 0), model
                    )
                cur = await w.execute(
                    "INSERT INTO batches (state, request_count, body_bytes, created_at, provider)"
                    " VALUES (?, 0, 0, ?, ?)",
                    (states.B_CREATING, now, provider),
                )
                batch_id = cur.lastrowid
                assert batch_id is not None
                await w.execute(
                    f"UPDATE requests SET state = 'submitting', batch_id = ? WHERE id IN ({pick})",
                    (batch_id, *pick_args),
                )
                async with w.execute(
                    f"SELECT COUNT(*), COALESCE(SUM({entry}), 0)"
                    " FROM requests WHERE batch_id = ? AND state = 'submitting'",
                    (batch_id,),
                ) as c:
                    count, total = await c.fetchone() or (0, 0)
                if count == 0:
                    await rollback(w)
                    return None
                claim = claimed(
                    frame, batch_id, int(count), int(total), select=select, provider=provider, model=model
                )
                await w.execute(
                    "UPDATE batches SET request_count = ?, body_bytes = ? WHERE id = ?",
                    (claim.request_count, claim.body_bytes, batch_id),
                )
                crash_point("claim.before_commit")
                await w.execute("COMMIT")
            except BaseException:
                await rollback(w)
                raise
        return claim

    async def iter_claimed(self, batch_id: int, chunk: int = 1000) -> AsyncIterator[list[tuple[int, bytes]]]:
        """Yield (request id, params) of a claimed batch in id order, `chunk` rows at a time.

        One short statement per chunk (keyset pagination), never a cursor held open across
        awaits: that would pin the reader connection to an old snapshot for every other read
        of this process, and hold back WAL checkpoints, for as long as the upload lasts.
        """
        after = 0
        while True:
            async with self._reader.execute(
                "SELECT r.id, p.params FROM requests r JOIN request_params p ON p.id = r.id"
                " WHERE r.batch_id = ? AND r.state = 'submitting' AND r.id > ? ORDER BY r.id LIMIT ?",
                (batch_id, after, chunk),
            ) as cur:
                rows = list(await cur.fetchall())
            if not rows:
                return
            after = int(rows[-1][0])
            yield [(int(r[0]), bytes(r[1])) for r in rows]

    @_store_errors
    async def mark_submitted(self, batch_id: int, api_id: str, *, now: float, next_poll_at: float) -> None:
        async with self._write_lock:
            w = self._writer
            try:  # BEGIN inside: a cancelled BEGIN may still have run
                await w.execute("BEGIN IMMEDIATE")
                await w.execute(
                    "UPDATE batches SET api_id = ?, state = ?, submitted_at = ?, next_poll_at = ?"
                    " WHERE id = ? AND state = ?",
                    (api_id, states.B_IN_PROGRESS, now, next_poll_at, batch_id, states.B_CREATING),
                )
                await w.execute(
                    "UPDATE requests SET state = 'submitted' WHERE batch_id = ? AND state = 'submitting'",
                    (batch_id,),
                )
                await w.execute("COMMIT")
            except BaseException:
                await rollback(w)
                raise

    @_store_errors
    async def release_batch(self, batch_id: int) -> int:
        """batches.create certainly failed: put the claimed requests back to pending. Returns how many."""
        async with self._write_lock:
            w = self._writer
            try:  # BEGIN inside: a cancelled BEGIN may still have run
                await w.execute("BEGIN IMMEDIATE")
                cur = await w.execute(
                    "UPDATE requests SET state = 'pending' WHERE batch_id = ? AND state = 'submitting'",
                    (batch_id,),
                )
                released = cur.rowcount
                await w.execute(
                    "UPDATE batches SET state = ? WHERE id = ? AND state = ?",
                    (states.B_DONE, batch_id, states.B_CREATING),
                )
                await w.execute("COMMIT")
            except BaseException:
                await rollback(w)
                raise
        return released

    # ------------------------------------------------------------------ poll and ingest

    @_store_errors
    async def open_batches(self) -> list[BatchRow]:
        async with self._reader.execute(
            "SELECT id, api_id, state, request_count, body_bytes, created_at, submitted_at, ended_at,"
            " next_poll_at, provider FROM batches WHERE state <> 'done' ORDER BY id"
        ) as cur:
            return [BatchRow(*r) for r in await cur.fetchall()]

    @_store_errors
    async def update_batch(self, batch_id: int, **fields: Any) -> None:
        allowed = {"state", "ended_at", "next_poll_at"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"update_batch takes {sorted(allowed)}, got {sorted(fields)}")
        sets = ", ".join(f"{name} = ?" for name in fields)
        async with self._write_lock:
            await self._writer.execute(
                f"UPDATE batches SET {sets} WHERE id = ?", (*fields.values(), batch_id)
            )

    @_store_errors
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
        """Apply one chunk of result lines in one transaction; `retry` decides the lines that are
        neither `succeeded` nor for a request answered elsewhere.

        Returns the stats and the row, as now stored, of each request that reached a final
        state, as a FinalRow (so this process resolves its waiters without reading back). A line
        already ingested (stream re-read after a crash) is skipped; a result for a request
        answered by another batch or by the real-time lane is recorded in the ledger as a
        duplicate only.
        """
        data = [raw.encode() if isinstance(raw, str) else raw for raw in lines]
        async with self._write_lock:
            outcome = await self._on_writer_thread(
                in_transaction,
                with_ingest_events,
                apply_chunk,
                self._outbox,
                batch_id,
                data,
                b"".join(data),
                spans_of(data),
                crash_before_commit="apply.before_commit",
                now=now,
                max_attempts=max_attempts,
                default_max_attempts=default_max_attempts,
                retry=retry,
            )
        stats = stats_of(outcome)
        if not stats.delivered:
            return stats, []
        # Read by the reader, after the COMMIT, while the writer takes on the next chunk.
        ((*columns,),) = await self._reader.execute_fetchall(READ_FINAL_ROWS, (outcome[2],))
        return stats, final_rows(outcome, columns, data)

    async def _on_writer_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(connection, *args, **kwargs)` on the writer connection's own thread, in one hand-off.

        For transactions of many statements (see ingest.py). Hold the write lock. aiosqlite
        has no public way to run a function on its thread, hence its `_execute` (every
        ingest test goes through it). A cancelled caller still waits for `fn` to end: `fn` runs to
        its COMMIT or ROLLBACK regardless, and nothing may write after the caller returned.
        """
        writer = self._writer
        execute = cast(Callable[..., Awaitable[T]], writer._execute)
        task = asyncio.ensure_future(execute(fn, writer._conn, *args, **kwargs))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait([task])
            raise

    @_store_errors
    async def finish_batch(self, batch_id: int, *, now: float) -> int:
        """Close a batch whose results are all ingested.

        Every completion is folded into its request's row first. A request of the
        batch with no result line at all goes back to pending (it will be sent again); returns
        how many did.
        """
        async with self._write_lock:
            w = self._writer
            try:
                await w.execute("BEGIN IMMEDIATE")  # inside the try: a cancelled BEGIN may still have run
                await fold_completions(w)
                cur = await w.execute(
                    "UPDATE requests SET state = 'pending' WHERE batch_id = ? AND state = 'submitted'",
                    (batch_id,),
                )
                orphans = cur.rowcount
                await emit_batch_closed(w, self._outbox, batch_id, now)
                await w.execute(
                    "UPDATE batches SET state = ?, ended_at = COALESCE(ended_at, ?) WHERE id = ?",
                    (states.B_DONE, now, batch_id),
                )
                await w.execute("COMMIT")
            except BaseException:
                await rollback(w)
                raise
        return orphans

    # ------------------------------------------------------------------ results

    # Reads a caller may issue by the thousand at once (one per waiting caller) use
    # execute_fetchall: one trip to aiosqlite's thread, and the statement is finished at once.
    # With execute() + fetch, every concurrent caller kept a statement open, each new one was
    # compiled afresh, and 100,000 concurrent lookups took minutes instead of seconds.

    @_store_errors
    async def get_by_key(self, key: str) -> RequestRow | None:
        sql = f"SELECT {_REQUEST_COLUMNS} FROM requests_now AS requests WHERE key = ?"
        rows = list(await self._reader.execute_fetchall(sql, (key,)))
        return _row_to_request(rows[0]) if rows else None

    async def get_many(self, ids: Sequence[int]) -> list[RequestRow]:
        out: list[RequestRow] = []
        for part in chunks(list(ids)):
            marks = ",".join("?" * len(part))
            rows = await self._reader.execute_fetchall(
                f"SELECT {_REQUEST_COLUMNS} FROM requests_now AS requests WHERE id IN ({marks})", part
            )
            out.extend(_row_to_request(r) for r in rows)
        return out

    async def max_done_seq(self) -> int:
        """The last completion number given (0 if none): a watcher's starting cursor."""
        ((next_seq,),) = await self._reader.execute_fetchall(NEXT_DONE_SEQ)  # the index, not a scan
        return int(next_seq) - 1

    async def completed_since(self, cursor: int, limit: int = 5000) -> tuple[int, list[int]]:
        """The last done_seq and the request ids of up to `limit` completions after `cursor`,
        in completion order (index scan); `(cursor, [])` when there are none.

        One row of JSON, not a row per completion: it is read while an ingest keeps the event
        loop busy, and sqlite3 waits for the GIL at every row it steps over (see ingest.py).
        One flat array: 5,000 pairs parsed into 5,000 small lists lived long enough, in
        every pass, to reach the collector's oldest generation and set off a full collection.
        """
        # Completions folded into `requests` and those still in `completions`: no request is in both.
        ((last, ids),) = await self._reader.execute_fetchall(
            "SELECT MAX(done_seq), json_group_array(id) FROM ("
            " SELECT done_seq, id FROM requests WHERE done_seq > ?1"
            " UNION ALL SELECT done_seq, request_id FROM completions WHERE done_seq > ?1"
            " ORDER BY done_seq LIMIT ?2)",
            (cursor, limit),
        )
        return (cursor, []) if last is None else (int(last), json.loads(ids))

    async def wait_for_completions(self, after_seq: int, timeout: float) -> bool:
        """SQLite tells no other process of a commit: wait out `timeout` (the watcher polls)."""
        await asyncio.sleep(timeout)
        return False

    # ------------------------------------------------------------------ reporting

    @_store_errors
    async def state_counts(self) -> dict[str, int]:
        async with self._reader.execute("SELECT state, COUNT(*) FROM requests_now GROUP BY state") as cur:
            return {str(s): int(n) for s, n in await cur.fetchall()}

    @_store_errors
    async def ledger_totals(self) -> list[dict[str, Any]]:
        """Token totals grouped by lane, model and duplicate flag (billed results only).

        Entries this process has queued but not yet committed are committed first.
        """
        await self._group.commit_ledger()
        async with self._reader.execute(
            "SELECT lane, model, duplicate, SUM(calls), SUM(input_tokens), SUM(output_tokens),"
            " SUM(cache_write_5m), SUM(cache_write_1h), SUM(cache_read) FROM ledger"
            " WHERE result_type = 'succeeded' GROUP BY lane, model, duplicate ORDER BY lane, model"
        ) as cur:
            return [dict(zip(LEDGER_TOTAL_FIELDS, r, strict=True)) for r in await cur.fetchall()]

    @_store_errors
    async def batch_count(self) -> int:
        async with self._reader.execute("SELECT COUNT(*) FROM batches WHERE api_id IS NOT NULL") as cur:
            return int((await cur.fetchone() or (0,))[0])

    # ------------------------------------------------------------------ figures (router/observe.py)
    # Read-only, one statement each, for metrics scrapes and `status`: every app on the database
    # shows up, since the figures come from the rows rather than from any process's memory.

    @_store_errors
    async def class_state_figures(self) -> list[tuple[str, str, int, float | None, int, int]]:
        """Per (class, state): requests, the oldest one's created_at, and how many of them were
        escalated while never in a batch, and escalated out of a batch (one scan of requests)."""
        rows = await self._reader.execute_fetchall(
            "SELECT class, state, COUNT(*), MIN(created_at),"
            " COALESCE(SUM(escalated_at IS NOT NULL AND batch_id IS NULL), 0),"
            " COALESCE(SUM(escalated_at IS NOT NULL AND batch_id IS NOT NULL), 0)"
            " FROM requests_now GROUP BY class, state ORDER BY class, state"
        )
        return [(str(c), str(s), int(n), at, int(before), int(out)) for c, s, n, at, before, out in rows]

    @_store_errors
    async def open_batch_progress(self) -> dict[int, dict[str, int]]:
        """For each open batch, its requests by state (finished ones are those already ingested)."""
        rows = await self._reader.execute_fetchall(
            "SELECT batch_id, state, COUNT(*) FROM requests_now"
            " WHERE batch_id IN (SELECT id FROM batches WHERE state <> 'done') GROUP BY batch_id, state"
        )
        out: dict[int, dict[str, int]] = {}
        for batch_id, state, count in rows:
            out.setdefault(int(batch_id), {})[str(state)] = int(count)
        return out

    @_store_errors
    async def ledger_figures(self, today_since: float) -> list[dict[str, Any]]:
        """Ledger sums by lane, model, class, result type, duplicate flag and whether the row is
        from `today_since` on. The keys of ledger_totals' rows, plus class, result_type and today.

        Entries this process has queued but not yet committed are committed first.
        """
        await self._group.commit_ledger()
        rows = await self._reader.execute_fetchall(
            "SELECT lane, model, class, result_type, duplicate, at >= ? AS today, SUM(calls),"
            " SUM(input_tokens), SUM(output_tokens), SUM(cache_write_5m), SUM(cache_write_1h),"
            " SUM(cache_read), MAX(provider) FROM ledger"
            " GROUP BY lane, model, class, result_type, duplicate, today",
            (today_since,),
        )
        return [dict(zip(LEDGER_FIGURE_FIELDS, r, strict=True)) for r in rows]

    @_store_errors
    async def turnaround_buckets(self, bounds: Sequence[float]) -> tuple[list[int], int, float]:
        """Batch turnarounds (API created -> ended, canceled batches left out): how many are at
        most each of `bounds`, how many in all, and their sum in seconds."""
        counts = ", COALESCE(SUM(seconds <= ?), 0)" * len(bounds)
        ((total, seconds, *within),) = await self._reader.execute_fetchall(
            f"SELECT COUNT(*), COALESCE(SUM(seconds), 0.0){counts}"
            " FROM (SELECT MAX(seconds) AS seconds FROM turnarounds GROUP BY batch_id)",
            tuple(float(b) for b in bounds),
        )
        return [int(n) for n in within], int(total), float(seconds)

    @_store_errors
    async def batches_after(self, after_id: int) -> list[BatchRow]:
        """Batch rows with an id above `after_id` (the ones a flush in progress made), any state."""
        async with self._reader.execute(
            "SELECT id, api_id, state, request_count, body_bytes, created_at, submitted_at, ended_at,"
            " next_poll_at, provider FROM batches WHERE id > ? ORDER BY id",
            (after_id,),
        ) as cur:
            return [BatchRow(*r) for r in await cur.fetchall()]

    @_store_errors
    async def last_batch_id(self) -> int:
        ((last,),) = await self._reader.execute_fetchall("SELECT COALESCE(MAX(id), 0) FROM batches")
        return int(last)


def _with_model(args: tuple[Any, ...], at: int, model: str) -> tuple[Any, ...]:
    """A claim's arguments with the model's placeholder value put in at `at` (after the
    scope's class and provider values)."""
    return (*args[:at], model, *args[at:])


def _class_filter(latencies: Sequence[str] | None) -> tuple[str, tuple[str, ...]]:
    if latencies is None:
        return "", ()
    if not latencies:
        return " AND 0", ()
    return f" AND class IN ({','.join('?' * len(latencies))})", tuple(latencies)


async def rollback(w: aiosqlite.Connection) -> None:
    """Roll back the open transaction, if there still is one.

    A cancelled await does not stop the statement in aiosqlite's thread: a COMMIT may have
    completed after all, and then there is nothing left to roll back.
    """
    try:
        await w.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "no transaction is active" not in str(exc):
            raise


MIN_SQLITE = (3, 33, 0)  # UPDATE ... FROM (ingest); JSON functions are checked separately


def _check_sqlite() -> None:
    """Refuse an SQLite library too old for the store's statements, saying what is needed."""
    found = sqlite3.sqlite_version
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise RouterError(
            f"hybrid-router needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer; this Python's"
            f" sqlite3 module uses {found}"
        )
    try:
        sqlite3.connect(":memory:").execute("SELECT json_extract('[1]', '$[0]')").close()
    except sqlite3.OperationalError:
        raise RouterError(
            f"hybrid-router needs SQLite's JSON functions; this Python's SQLite {found} was built"
            " without them"
        ) from None


async def _configure(conn: aiosqlite.Connection, durability: Durability) -> None:
    await conn.execute("PRAGMA busy_timeout = 10000")
    await conn.execute("PRAGMA journal_mode = WAL")
    # FULL: a caller told "stored" keeps the request through a power loss. NORMAL is opt-in.
    await conn.execute(f"PRAGMA synchronous = {'FULL' if durability == 'full' else 'NORMAL'}")
    await conn.execute("PRAGMA foreign_keys = ON")
    await conn.execute("PRAGMA temp_store = MEMORY")  # ingest's scratch tables (ingest.py)


def _statements(script: str) -> list[str]:
    """Split a migration into statements (SQLite's own tokenizer decides; `;` in comments is fine)."""
    out: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                out.append(pending)
            pending = ""
    return out


async def _migrate(conn: aiosqlite.Connection, path: Path) -> None:
    try:  # BEGIN inside: a cancelled BEGIN may still have run
        await conn.execute("BEGIN IMMEDIATE")
        async with conn.execute("PRAGMA user_version") as cur:
            version = int((await cur.fetchone() or (0,))[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path}: schema version {version} is newer than this hybrid-router ({SCHEMA_VERSION});"
                " upgrade hybrid-router"
            )
        for number in range(version, SCHEMA_VERSION):
            for statement in _statements(MIGRATIONS[number]):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {number + 1}")
        await conn.execute("COMMIT")
    except BaseException:
        await rollback(conn)
        raise
