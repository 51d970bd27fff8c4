"""The webhook outbox on SQLite: events written inside the transactions that cause them, and
the deliveries that carry them to each endpoint.

The `emit_*` functions run inside a caller's write transaction and write nothing unless the
store's `OutboxPolicy` wants the event. `OutboxOps` holds the delivery side.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import aiosqlite

from .. import events, states
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
from .connections import Connections
from .sql import chunks

T = TypeVar("T")

_INSERT = "INSERT INTO outbox (type, created_at, tag, payload) VALUES (?, ?, ?, ?)"
_UNFINISHED = "('pending', 'submitting', 'submitted', 'escalated')"


def _glob_filter(policy: OutboxPolicy) -> tuple[str, list[str]]:
    """SQL true for a request (alias r) whose key or tag matches the policy's globs."""
    parts = ["r.key GLOB ?"] * len(policy.request_keys) + ["r.tag GLOB ?"] * len(policy.request_tags)
    if not parts:
        return "0", []
    return "(" + " OR ".join(parts) + ")", [*policy.request_keys, *policy.request_tags]


def _wanted_finals(policy: OutboxPolicy) -> str | None:
    completed = policy.wants(events.REQUEST_COMPLETED)
    failed = policy.wants(events.REQUEST_FAILED)
    if completed and failed:
        return "1"
    if completed:
        return f"t.final_state = '{states.SUCCEEDED}'"
    if failed:
        return f"t.final_state = '{states.FAILED}'"
    return None


def emit_ingest_events(c: sqlite3.Connection, policy: OutboxPolicy | None, now: float) -> None:
    """request.completed / request.failed for the lines of the chunk just applied (ingest.py's
    temp table), in completion order; on the writer's thread, inside the chunk's transaction.
    One statement: SQLite picks and writes the rows, Python steps over none of them."""
    if policy is None or (which := _wanted_finals(policy)) is None:
        return
    match, args = _glob_filter(policy)
    c.execute(
        "INSERT INTO outbox (type, created_at, tag, payload)"
        f" SELECT iif(t.final_state = '{states.SUCCEEDED}', '{events.REQUEST_COMPLETED}',"
        f" '{events.REQUEST_FAILED}'), ?, r.tag,"
        " json_object('request_id', r.id, 'key', r.key, 'tag', r.tag, 'class', r.class,"
        " 'model', r.model, 'outcome', t.rtype, 'attempts', t.attempts + 1)"
        " FROM temp.ingest_lines t JOIN requests r ON r.id = t.rid"
        f" WHERE t.done_seq IS NOT NULL AND {which}"
        f" AND substr(r.key, 1, {len(events.GENERATED_KEY_PREFIX)}) <> '{events.GENERATED_KEY_PREFIX}'"
        f" AND {match} ORDER BY t.done_seq",
        (now, *args),
    )


async def _insert(w: aiosqlite.Connection, rows: Sequence[events.OutboxRow], now: float) -> None:
    await w.executemany(_INSERT, [(kind, now, tag, payload) for kind, tag, payload in rows])


async def emit_request_final(
    w: aiosqlite.Connection, policy: OutboxPolicy | None, request_id: int, now: float
) -> None:
    """The event of one request made final outside an ingest (real time, deadline), and the
    drain of its tag; inside the transaction that finished it."""
    if policy is None:
        return
    async with w.execute(
        "SELECT id, key, class, tag, model, state, attempts, outcome FROM requests WHERE id = ?",
        (request_id,),
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        return
    if (event := events.request_final(policy, row)) is not None:
        await _insert(w, [event], now)
    if (tag := row[3]) is not None:
        await emit_drains(w, policy, [tag], now)


async def emit_escalated(
    w: aiosqlite.Connection,
    policy: OutboxPolicy | None,
    rows: Sequence[AtRisk],
    won: Sequence[int],
    now: float,
) -> None:
    """request.escalated for each request the escalation took, inside its transaction."""
    if not (taken := events.escalations(policy, rows, won)):
        return
    tags: dict[int, str | None] = {}
    for part in chunks(list({r.id for r in taken})):
        async with w.execute(
            f"SELECT id, tag FROM requests WHERE id IN ({','.join('?' * len(part))})", part
        ) as cur:
            tags.update({int(i): t for i, t in await cur.fetchall()})
    await _insert(w, events.escalated(taken, tags), now)


async def _ledger(w: aiosqlite.Connection, where: str, args: Sequence[Any]) -> list[dict[str, Any]]:
    async with w.execute(
        "SELECT lane, model, duplicate, SUM(calls), SUM(input_tokens), SUM(output_tokens),"
        " SUM(cache_write_5m), SUM(cache_write_1h), SUM(cache_read) FROM ledger"
        f" WHERE result_type = 'succeeded' AND {where} GROUP BY lane, model, duplicate",
        tuple(args),
    ) as cur:
        return [dict(zip(LEDGER_TOTAL_FIELDS, r, strict=True)) for r in await cur.fetchall()]


async def emit_batch_closed(
    w: aiosqlite.Connection, policy: OutboxPolicy | None, batch_id: int, now: float
) -> None:
    """batch.ended for a batch being closed, and tag.drained for the tags it carried; inside the
    transaction that closes it, after its completions are folded into their rows."""
    if policy is None:
        return
    if policy.wants(events.BATCH_ENDED):
        async with w.execute(
            "SELECT api_id, submitted_at, COALESCE(ended_at, ?) FROM batches WHERE id = ?", (now, batch_id)
        ) as cur:
            batch = await cur.fetchone()
        if batch is not None and batch[0] is not None:
            async with w.execute(
                "SELECT result_type, COUNT(*) FROM ledger WHERE batch_id = ? AND duplicate = 0"
                " GROUP BY result_type",
                (batch_id,),
            ) as cur:
                counts = {str(t): int(n) for t, n in await cur.fetchall()}
            async with w.execute(
                "SELECT COUNT(*) FROM requests WHERE batch_id = ? AND outcome = 'missing'", (batch_id,)
            ) as cur:
                (missing,) = await cur.fetchone() or (0,)
            async with w.execute(
                "SELECT DISTINCT class FROM ledger WHERE batch_id = ? AND class IS NOT NULL ORDER BY class",
                (batch_id,),
            ) as cur:
                classes = [str(r[0]) for r in await cur.fetchall()]
            async with w.execute(
                "SELECT MAX(seconds) FROM turnarounds WHERE batch_id = ?", (batch_id,)
            ) as cur:
                (turnaround,) = await cur.fetchone() or (None,)
            ledger = await _ledger(w, "batch_id = ?", (batch_id,))
            event = events.batch_ended(
                policy,
                batch_id,
                batch,
                counts=counts,
                missing=int(missing),
                classes=classes,
                turnaround=turnaround,
                ledger=ledger,
            )
            await _insert(w, [event], now)
    if policy.wants(events.TAG_DRAINED):
        async with w.execute(
            "SELECT DISTINCT tag FROM requests WHERE batch_id = ? AND tag IS NOT NULL", (batch_id,)
        ) as cur:
            tags = [str(r[0]) for r in await cur.fetchall()]
        await emit_drains(w, policy, tags, now)


async def emit_drains(w: aiosqlite.Connection, policy: OutboxPolicy, tags: Iterable[str], now: float) -> None:
    """tag.drained for each of `tags` that has requests stored since its last drain and none of
    them unfinished; inside a write transaction that finished some of them."""
    if not policy.wants(events.TAG_DRAINED):
        return
    for tag in sorted(set(tags)):
        async with w.execute("SELECT last_id FROM tag_drains WHERE tag = ?", (tag,)) as cur:
            (after,) = await cur.fetchone() or (0,)
        # A submitted request with a completion not yet folded into its row is final.
        async with w.execute(
            "SELECT EXISTS (SELECT 1 FROM requests r WHERE r.tag = ? AND r.id > ?"
            f" AND r.state IN {_UNFINISHED}"
            " AND NOT EXISTS (SELECT 1 FROM completions c WHERE c.request_id = r.id))",
            (tag, after),
        ) as cur:
            (open_,) = await cur.fetchone() or (1,)
        if open_:
            continue
        async with w.execute(
            "SELECT COALESCE(c.outcome, r.outcome), COUNT(*), MIN(r.created_at), MAX(r.created_at), MAX(r.id)"
            " FROM requests r LEFT JOIN completions c ON c.request_id = r.id"
            " WHERE r.tag = ? AND r.id > ? GROUP BY 1",
            (tag, after),
        ) as cur:
            rows = list(await cur.fetchall())
        if not rows:
            continue
        ledger = await _ledger(
            w,
            "tag = ? AND request_id > ? AND (batch_id IN (SELECT DISTINCT batch_id FROM requests"
            " WHERE tag = ? AND id > ? AND batch_id IS NOT NULL) OR (batch_id IS NULL AND request_id IN"
            " (SELECT id FROM requests WHERE tag = ? AND id > ? AND escalated_at IS NOT NULL)))",
            (tag, after, tag, after, tag, after),
        )
        await _insert(w, [events.tag_drained(policy, tag, rows, ledger)], now)
        await w.execute(
            "INSERT INTO tag_drains (tag, last_id, drained_at) VALUES (?, ?, ?)"
            " ON CONFLICT (tag) DO UPDATE SET last_id = excluded.last_id, drained_at = excluded.drained_at",
            (tag, events.drained_through(rows), now),
        )


_DELIVERY_COLUMNS = (
    "d.id, d.endpoint, d.state, d.attempts, d.next_at, d.last_status, d.last_error, d.updated_at,"
    " d.first_tried_at, o.id, o.type, o.created_at, o.tag, o.payload"
)


class OutboxOps(Connections):
    """The delivery side of the outbox (a mixin of `Store`)."""

    def set_outbox(self, policy: OutboxPolicy | None) -> None:
        self._outbox = policy

    async def unrouted_events(self, limit: int = 1000) -> list[OutboxEvent]:
        rows = await self._reader.execute_fetchall(
            "SELECT id, type, created_at, tag, payload FROM outbox WHERE routed = 0 ORDER BY id LIMIT ?",
            (limit,),
        )
        return [outbox_event_of(r) for r in rows]

    async def route_events(
        self, event_ids: Sequence[int], deliveries: Sequence[tuple[int, str]], *, now: float
    ) -> None:
        async with self._transaction() as w:
            await w.executemany(
                "INSERT INTO deliveries (event_id, endpoint, state, next_at) VALUES (?, ?, 'pending', ?)"
                " ON CONFLICT (event_id, endpoint) DO NOTHING",
                [(eid, endpoint, now) for eid, endpoint in deliveries],
            )
            await w.executemany("UPDATE outbox SET routed = 1 WHERE id = ?", [(i,) for i in event_ids])

    async def claim_deliveries(self, *, now: float, hold: float, limit: int = 100) -> list[Delivery]:
        async with self._transaction() as w:
            async with w.execute(
                "UPDATE deliveries SET next_at = ?, attempts = attempts + 1,"
                " first_tried_at = COALESCE(first_tried_at, ?)"
                " WHERE id IN (SELECT id FROM deliveries WHERE state = 'pending' AND next_at <= ?"
                " ORDER BY next_at, id LIMIT ?) RETURNING id",
                (now + hold, now, now, limit),
            ) as cur:
                ids = [int(r[0]) for r in await cur.fetchall()]
            if not ids:
                return []
            async with w.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d JOIN outbox o ON o.id = d.event_id"
                f" WHERE d.id IN ({','.join('?' * len(ids))}) ORDER BY d.next_at, d.id",
                ids,
            ) as cur:
                return [delivery_of(r) for r in await cur.fetchall()]

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
        async with self._transaction() as w:
            await w.execute(
                "UPDATE deliveries SET state = ?, next_at = ?, last_status = ?, last_error = ?,"
                " updated_at = ? WHERE id = ?",
                (state, next_at, status, error, now, delivery_id),
            )

    async def list_deliveries(self, limit: int = 50, event_id: int | None = None) -> list[Delivery]:
        where, args = ("WHERE d.event_id = ?", (event_id, limit)) if event_id is not None else ("", (limit,))
        rows = await self._reader.execute_fetchall(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d JOIN outbox o ON o.id = d.event_id {where}"
            " ORDER BY d.id DESC LIMIT ?",
            args,
        )
        return [delivery_of(r) for r in rows]

    async def outbox_event(self, event_id: int) -> OutboxEvent | None:
        rows = list(
            await self._reader.execute_fetchall(
                "SELECT id, type, created_at, tag, payload FROM outbox WHERE id = ?", (event_id,)
            )
        )
        return outbox_event_of(rows[0]) if rows else None

    async def endpoint_figures(self) -> list[EndpointFigures]:
        rows = await self._reader.execute_fetchall(
            "SELECT d.endpoint, SUM(d.state = 'pending'),"
            " SUM(d.state = 'pending' AND (d.last_status IS NOT NULL OR d.last_error IS NOT NULL)),"
            " SUM(d.state = 'delivered'),"
            " SUM(d.state = 'failed'), COALESCE(MAX(iif(d.state = 'pending', d.attempts, 0)), 0),"
            " MIN(iif(d.state = 'pending', o.created_at, NULL)),"
            " (SELECT last_error FROM deliveries e WHERE e.endpoint = d.endpoint AND e.last_error IS NOT NULL"
            "  ORDER BY e.updated_at DESC LIMIT 1)"
            " FROM deliveries d JOIN outbox o ON o.id = d.event_id GROUP BY d.endpoint ORDER BY d.endpoint"
        )
        return [endpoint_figures_of(r) for r in rows]

    async def outbox_counts(self) -> dict[str, int]:
        rows = await self._reader.execute_fetchall("SELECT type, COUNT(*) FROM outbox GROUP BY type")
        return {str(k): int(n) for k, n in rows}

    async def purge_outbox(self, *, before: float) -> int:
        async with self._transaction() as w:
            cur = await w.execute(
                "DELETE FROM outbox WHERE created_at < ? AND routed = 1 AND NOT EXISTS"
                " (SELECT 1 FROM deliveries d WHERE d.event_id = outbox.id AND d.state = 'pending')",
                (before,),
            )
            gone = cur.rowcount
            await w.execute(
                "DELETE FROM deliveries WHERE state <> 'pending'"
                " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = deliveries.event_id)"
            )
        return gone


def with_ingest_events(
    c: sqlite3.Connection, apply: Callable[..., T], policy: OutboxPolicy | None, *args: Any, **kwargs: Any
) -> T:
    """`apply(c, *args, **kwargs)` (ingest.apply_chunk), then the chunk's request events, in the
    same transaction."""
    outcome = apply(c, *args, **kwargs)
    emit_ingest_events(c, policy, kwargs["now"])
    return outcome
