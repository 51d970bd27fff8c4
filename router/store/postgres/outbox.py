"""The webhook outbox on PostgreSQL: events written inside the transactions that cause them
(the `emit_*` functions, given the transaction's connection), and the delivery side
(`OutboxOps`). What each event holds is built in router/store/events.py.

Every transaction that makes requests final holds the completion lock (engine.py), and the
drain check takes it too: whichever transaction finishes a tag's last request sees every
other one's finals committed, so no drain goes unseen and none is announced twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from .. import events
from ..records import (
    LEDGER_TOTAL_FIELDS,
    AtRisk,
    Delivery,
    EndpointFigures,
    OutboxEvent,
    OutboxPolicy,
    delivery_of,
    endpoint_figures_of,
    outbox_event_of,
)
from .schema import COMPLETION_LOCK
from .sql import BATCH_ROWS, LISTED_BY_BATCH

T = TypeVar("T")
Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"

_INSERT_MANY = (
    "INSERT INTO outbox (type, created_at, tag, payload)"
    " SELECT t, $1, g, p FROM unnest($2::text[], $3::text[], $4::text[]) AS u(t, g, p)"
)
_UNFINISHED = "('pending', 'submitting', 'submitted', 'escalated')"
_LEDGER = (
    "SELECT lane, model, duplicate, sum(calls)::bigint, sum(input_tokens)::bigint,"
    " sum(output_tokens)::bigint, sum(cache_write_5m)::bigint, sum(cache_write_1h)::bigint,"
    " sum(cache_read)::bigint FROM ledger WHERE result_type = 'succeeded' AND {where}"
    " GROUP BY lane, model, duplicate"
)


async def _insert_many(conn: Conn, rows: Sequence[events.OutboxRow], now: float) -> None:
    if rows:
        kinds, tags, payloads = (list(c) for c in zip(*rows, strict=True))
        await conn.execute(_INSERT_MANY, now, kinds, tags, payloads)


async def emit_ingest_events(
    conn: Conn, policy: OutboxPolicy | None, done: Sequence[asyncpg.Record], now: float
) -> None:
    """request.completed / request.failed for the rows a chunk made final (ingest.WRITE's
    `done`, in completion order), inside the chunk's transaction."""
    if policy is None or not (policy.wants(events.REQUEST_COMPLETED) or policy.wants(events.REQUEST_FAILED)):
        return
    rows = [event for r in done if (event := events.request_final(policy, r)) is not None]
    await _insert_many(conn, rows, now)


async def emit_request_final(conn: Conn, policy: OutboxPolicy | None, request_id: int, now: float) -> None:
    """The event of one request made final outside an ingest, and its tag's drain."""
    if policy is None:
        return
    row = await conn.fetchrow(
        "SELECT id, key, class, tag, model, state, attempts, outcome FROM requests WHERE id = $1", request_id
    )
    if row is None:
        return
    if (event := events.request_final(policy, row)) is not None:
        await _insert_many(conn, [event], now)
    if (tag := row[3]) is not None:
        await emit_drains(conn, policy, [tag], now)


async def emit_escalated(
    conn: Conn, policy: OutboxPolicy | None, rows: Sequence[AtRisk], won: Sequence[int], now: float
) -> None:
    """request.escalated for each request the escalation took, inside its transaction."""
    if not (taken := events.escalations(policy, rows, won)):
        return
    ids = list({r.id for r in taken})
    tags = {
        int(i): t
        for i, t in await conn.fetch("SELECT id, tag FROM requests WHERE id = ANY($1::bigint[])", ids)
    }
    await _insert_many(conn, events.escalated(taken, tags), now)


async def _ledger(conn: Conn, where: str, *args: Any) -> list[dict[str, Any]]:
    rows = await conn.fetch(_LEDGER.format(where=where), *args)
    return [dict(zip(LEDGER_TOTAL_FIELDS, tuple(r), strict=True)) for r in rows]


async def emit_batch_closed(conn: Conn, policy: OutboxPolicy | None, batch_id: int, now: float) -> None:
    """batch.ended for a batch being closed, and tag.drained for the tags it carried."""
    if policy is None:
        return
    if policy.wants(events.BATCH_ENDED):
        batch = await conn.fetchrow(
            "SELECT api_id, submitted_at, COALESCE(ended_at, $2) FROM batches WHERE id = $1", batch_id, now
        )
        if batch is not None and batch[0] is not None:
            counts = {
                str(t): int(n)
                for t, n in await conn.fetch(
                    "SELECT result_type, count(*) FROM ledger WHERE batch_id = $1 AND duplicate = 0"
                    " GROUP BY result_type",
                    batch_id,
                )
            }
            # Rows failed for a missing result stay in requests_by_batch; naming its
            # predicate lets the planner read them there.
            missing = await conn.fetchval(
                "SELECT count(*) FROM requests WHERE batch_id = $1 AND outcome = 'missing' AND "
                + LISTED_BY_BATCH.format(""),
                batch_id,
            )
            classes = [
                str(r[0])
                for r in await conn.fetch(
                    "SELECT DISTINCT class FROM ledger WHERE batch_id = $1 AND class IS NOT NULL"
                    " ORDER BY class",
                    batch_id,
                )
            ]
            turnaround = await conn.fetchval(
                "SELECT max(seconds) FROM turnarounds WHERE batch_id = $1", batch_id
            )
            ledger = await _ledger(conn, "batch_id = $1", batch_id)
            event = events.batch_ended(
                policy,
                batch_id,
                tuple(batch),
                counts=counts,
                missing=int(missing),
                classes=classes,
                turnaround=turnaround,
                ledger=ledger,
            )
            await _insert_many(conn, [event], now)
    if policy.wants(events.TAG_DRAINED):
        tags = [
            str(r[0])
            for r in await conn.fetch(
                f"SELECT DISTINCT tag FROM ({BATCH_ROWS.format(columns='r.tag', batches='= $1')}) AS b"
                " WHERE tag IS NOT NULL",
                batch_id,
            )
        ]
        if tags:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", COMPLETION_LOCK)
            await emit_drains(conn, policy, tags, now)


async def emit_drains(conn: Conn, policy: OutboxPolicy, tags: Iterable[str], now: float) -> None:
    """tag.drained for each of `tags` with requests stored since its last drain and none of them
    unfinished; the caller holds the completion lock."""
    if not policy.wants(events.TAG_DRAINED):
        return
    for tag in sorted(set(tags)):
        after = await conn.fetchval("SELECT last_id FROM tag_drains WHERE tag = $1", tag) or 0
        still_open = await conn.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM requests WHERE tag = $1 AND id > $2 AND state IN {_UNFINISHED})",
            tag,
            after,
        )
        if still_open:
            continue
        rows = [
            tuple(r)
            for r in await conn.fetch(
                "SELECT outcome, count(*), min(created_at), max(created_at), max(id) FROM requests"
                " WHERE tag = $1 AND id > $2 GROUP BY outcome",
                tag,
                after,
            )
        ]
        if not rows:
            continue
        ledger = await _ledger(
            conn,
            "tag = $1 AND request_id > $2 AND (batch_id IN (SELECT DISTINCT batch_id FROM requests"
            " WHERE tag = $1 AND id > $2 AND batch_id IS NOT NULL) OR (batch_id IS NULL AND request_id IN"
            " (SELECT id FROM requests WHERE tag = $1 AND id > $2 AND escalated_at IS NOT NULL)))",
            tag,
            after,
        )
        await _insert_many(conn, [events.tag_drained(policy, tag, rows, ledger)], now)
        await conn.execute(
            "INSERT INTO tag_drains (tag, last_id, drained_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (tag) DO UPDATE SET last_id = excluded.last_id, drained_at = excluded.drained_at",
            tag,
            events.drained_through(rows),
            now,
        )


_DELIVERY_COLUMNS = (
    "d.id, d.endpoint, d.state, d.attempts, d.next_at, d.last_status, d.last_error, d.updated_at,"
    " d.first_tried_at, o.id, o.type, o.created_at, o.tag, o.payload"
)


class OutboxOps:
    """The delivery side of the outbox (a mixin of `PostgresStore`)."""

    _outbox: OutboxPolicy | None = None

    if TYPE_CHECKING:  # PostgresStore's own

        async def _fetch(self, operation: str, query: str, *args: Any) -> list[asyncpg.Record]: ...
        async def _run(
            self, operation: str, fn: Callable[[Conn], Awaitable[T]], *, transaction: bool = True
        ) -> T: ...

    def set_outbox(self, policy: OutboxPolicy | None) -> None:
        self._outbox = policy

    async def unrouted_events(self, limit: int = 1000) -> list[OutboxEvent]:
        rows = await self._fetch(
            "unrouted_events",
            "SELECT id, type, created_at, tag, payload FROM outbox WHERE routed = 0 ORDER BY id LIMIT $1",
            limit,
        )
        return [outbox_event_of(r) for r in rows]

    async def route_events(
        self, event_ids: Sequence[int], deliveries: Sequence[tuple[int, str]], *, now: float
    ) -> None:
        async def fn(conn: Conn) -> None:
            if deliveries:
                await conn.execute(
                    "INSERT INTO deliveries (event_id, endpoint, state, next_at)"
                    " SELECT e, u, 'pending', $3 FROM unnest($1::bigint[], $2::text[]) AS x(e, u)"
                    " ON CONFLICT (event_id, endpoint) DO NOTHING",
                    [e for e, _ in deliveries],
                    [u for _, u in deliveries],
                    now,
                )
            await conn.execute("UPDATE outbox SET routed = 1 WHERE id = ANY($1::bigint[])", list(event_ids))

        await self._run("route_events", fn)

    async def claim_deliveries(self, *, now: float, hold: float, limit: int = 100) -> list[Delivery]:
        async def fn(conn: Conn) -> list[Delivery]:
            rows = await conn.fetch(
                "WITH due AS (SELECT id FROM deliveries WHERE state = 'pending' AND next_at <= $1"
                " ORDER BY next_at, id LIMIT $3 FOR UPDATE SKIP LOCKED),"
                " claimed AS (UPDATE deliveries d SET next_at = $2, attempts = d.attempts + 1,"
                " first_tried_at = COALESCE(d.first_tried_at, $1) FROM due WHERE d.id = due.id RETURNING d.*)"
                f" SELECT {_DELIVERY_COLUMNS} FROM claimed d JOIN outbox o ON o.id = d.event_id"
                " ORDER BY d.id",
                now,
                now + hold,
                limit,
            )
            return [delivery_of(tuple(r)) for r in rows]

        return await self._run("claim_deliveries", fn)

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
        async def fn(conn: Conn) -> None:
            await conn.execute(
                "UPDATE deliveries SET state = $2, next_at = $3, last_status = $4, last_error = $5,"
                " updated_at = $6 WHERE id = $1",
                delivery_id,
                state,
                next_at,
                status,
                error,
                now,
            )

        await self._run("record_delivery", fn)

    async def list_deliveries(self, limit: int = 50, event_id: int | None = None) -> list[Delivery]:
        rows = await self._fetch(
            "list_deliveries",
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d JOIN outbox o ON o.id = d.event_id"
            " WHERE $2::bigint IS NULL OR d.event_id = $2 ORDER BY d.id DESC LIMIT $1",
            limit,
            event_id,
        )
        return [delivery_of(tuple(r)) for r in rows]

    async def outbox_event(self, event_id: int) -> OutboxEvent | None:
        rows = await self._fetch(
            "outbox_event", "SELECT id, type, created_at, tag, payload FROM outbox WHERE id = $1", event_id
        )
        return outbox_event_of(rows[0]) if rows else None

    async def endpoint_figures(self) -> list[EndpointFigures]:
        rows = await self._fetch(
            "endpoint_figures",
            "SELECT d.endpoint, count(*) FILTER (WHERE d.state = 'pending'),"
            " count(*) FILTER (WHERE d.state = 'pending' AND (d.last_status IS NOT NULL"
            " OR d.last_error IS NOT NULL)),"
            " count(*) FILTER (WHERE d.state = 'delivered'), count(*) FILTER (WHERE d.state = 'failed'),"
            " COALESCE(max(d.attempts) FILTER (WHERE d.state = 'pending'), 0),"
            " min(o.created_at) FILTER (WHERE d.state = 'pending'),"
            " (SELECT last_error FROM deliveries e WHERE e.endpoint = d.endpoint AND e.last_error IS NOT NULL"
            "  ORDER BY e.updated_at DESC LIMIT 1)"
            " FROM deliveries d JOIN outbox o ON o.id = d.event_id GROUP BY d.endpoint ORDER BY d.endpoint",
        )
        return [endpoint_figures_of(r) for r in rows]

    async def outbox_counts(self) -> dict[str, int]:
        rows = await self._fetch("outbox_counts", "SELECT type, count(*) FROM outbox GROUP BY type")
        return {str(k): int(n) for k, n in rows}

    async def purge_outbox(self, *, before: float) -> int:
        async def fn(conn: Conn) -> int:
            status = await conn.execute(
                "DELETE FROM outbox WHERE created_at < $1 AND routed = 1 AND NOT EXISTS"
                " (SELECT 1 FROM deliveries d WHERE d.event_id = outbox.id AND d.state = 'pending')",
                before,
            )
            await conn.execute(
                "DELETE FROM deliveries WHERE state <> 'pending'"
                " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = deliveries.event_id)"
            )
            return int(status.rpartition(" ")[2] or 0)

        return await self._run("purge_outbox", fn)
