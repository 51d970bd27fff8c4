"""The PostgreSQL engine's read-only figures for metrics scrapes and `status` (router/observe.py).

One statement each; every app on the database shows up, since the figures come from the rows.
The report's history reads the ledger rows still kept with the daily totals of purged ones
(`ledger_days`, which the purge fills: sql.py), summed alike, so a purge changes no figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from ..leases import DRIVER, is_held
from ..records import HISTORY_FIELDS, LEDGER_FIGURE_FIELDS, BatchRow, Lease
from .sql import ANSWERED_BY, BATCH_ROWS, DAY_OF, ESCALATED_CALLS, MISSED_DEADLINE

if TYPE_CHECKING:
    from ..group_commit import GroupCommitter

CLASS_STATE_FIGURES = (
    "SELECT class, state, count(*), min(created_at),"
    " count(*) FILTER (WHERE escalated_at IS NOT NULL AND batch_id IS NULL),"
    " count(*) FILTER (WHERE escalated_at IS NOT NULL AND batch_id IS NOT NULL)"
    " FROM requests GROUP BY class, state ORDER BY class, state"
)
_OPEN_ROWS = BATCH_ROWS.format(
    columns="r.batch_id, r.state", batches="IN (SELECT id FROM batches WHERE state <> 'done')"
)
OPEN_BATCH_PROGRESS = f"SELECT batch_id, state, count(*) FROM ({_OPEN_ROWS}) AS b GROUP BY batch_id, state"
LEDGER_FIGURES = (
    "SELECT lane, model, class, result_type, duplicate, at >= $1 AS today, sum(calls)::bigint,"
    " sum(input_tokens)::bigint, sum(output_tokens)::bigint, sum(cache_write_5m)::bigint,"
    " sum(cache_write_1h)::bigint, sum(cache_read)::bigint, max(provider)"
    " FROM ledger GROUP BY lane, model, class, result_type, duplicate, today"
)
TURNAROUND_BUCKETS = """
WITH s AS (SELECT max(seconds) AS seconds FROM turnarounds GROUP BY batch_id)
SELECT (SELECT count(*) FROM s), (SELECT COALESCE(sum(seconds), 0.0) FROM s),
    ARRAY(SELECT (SELECT count(*) FROM s WHERE s.seconds <= u.b)
          FROM unnest($1::float8[]) WITH ORDINALITY AS u(b, i) ORDER BY u.i)
"""
BATCHES_AFTER = (
    "SELECT id, api_id, state, request_count, body_bytes, created_at, submitted_at, ended_at,"
    " next_poll_at, provider FROM batches WHERE id > $1 ORDER BY id"
)
LAST_BATCH_ID = "SELECT COALESCE(max(id), 0) FROM batches"
_TOKENS = "input_tokens, output_tokens, cache_write_5m, cache_write_1h, cache_read"
HISTORY_ROWS = f"""
SELECT day, lane, model, class, tag, result_type, duplicate, sum(calls)::bigint,
    sum(input_tokens)::bigint, sum(output_tokens)::bigint, sum(cache_write_5m)::bigint,
    sum(cache_write_1h)::bigint, sum(cache_read)::bigint, sum(escalated)::bigint, sum(missed)::bigint,
    max(provider)
FROM (
    SELECT {DAY_OF.format("at")} AS day, lane, model, COALESCE(class, '') AS class,
        COALESCE(tag, '') AS tag, result_type, duplicate, calls, {_TOKENS},
        {ESCALATED_CALLS} AS escalated, 0 AS missed, provider
    FROM ledger WHERE at >= $1
    UNION ALL
    SELECT day, lane, model, class, tag, result_type, duplicate, calls, {_TOKENS}, escalated, missed,
        provider
    FROM ledger_days WHERE day >= $1
    UNION ALL
    SELECT {DAY_OF.format("finished_at")}, {ANSWERED_BY}, model, class, COALESCE(tag, ''),
        COALESCE(outcome, ''), 0, 0, 0, 0, 0, 0, 0, 0, 1, provider
    FROM requests WHERE {MISSED_DEADLINE} AND finished_at >= $1
) AS h
GROUP BY day, lane, model, class, tag, result_type, duplicate
ORDER BY day, lane, model, class, tag, result_type, duplicate
"""


class FigureOps:
    """Read-only figures of the PostgreSQL store (a mixin of `PostgresStore`)."""

    if TYPE_CHECKING:  # PostgresStore's own
        _group: GroupCommitter

        async def _fetch(self, operation: str, query: str, *args: Any) -> list[asyncpg.Record]: ...
        async def lease(self, name: str = DRIVER) -> Lease | None: ...

    async def lease_holder(self, *, now: float, name: str = DRIVER) -> Lease | None:
        """Who holds the lease at `now` (wall-clock time), or None when no one does."""
        lease = await self.lease(name)
        return lease if is_held(lease, now) else None

    async def class_state_figures(self) -> list[tuple[str, str, int, float | None, int, int]]:
        rows = await self._fetch("class_state_figures", CLASS_STATE_FIGURES)
        return [(str(c), str(s), int(n), at, int(before), int(out)) for c, s, n, at, before, out in rows]

    async def open_batch_progress(self) -> dict[int, dict[str, int]]:
        out: dict[int, dict[str, int]] = {}
        for batch_id, state, count in await self._fetch("open_batch_progress", OPEN_BATCH_PROGRESS):
            out.setdefault(int(batch_id), {})[str(state)] = int(count)
        return out

    async def ledger_figures(self, today_since: float) -> list[dict[str, Any]]:
        await self._group.commit_ledger()  # this process's queued entries count too
        rows = await self._fetch("ledger_figures", LEDGER_FIGURES, today_since)
        return [dict(zip(LEDGER_FIGURE_FIELDS, tuple(r), strict=True)) for r in rows]

    async def history_rows(self, since_day: float) -> list[dict[str, Any]]:
        await self._group.commit_ledger()  # this process's queued entries count too
        rows = await self._fetch("history_rows", HISTORY_ROWS, float(since_day))
        return [dict(zip(HISTORY_FIELDS, tuple(r), strict=True)) for r in rows]

    async def turnaround_buckets(self, bounds: Sequence[float]) -> tuple[list[int], int, float]:
        ((total, seconds, within),) = await self._fetch(
            "turnaround_buckets", TURNAROUND_BUCKETS, [float(b) for b in bounds]
        )
        return [int(n) for n in within], int(total), float(seconds)

    async def batches_after(self, after_id: int) -> list[BatchRow]:
        return [BatchRow(*r) for r in await self._fetch("batches_after", BATCHES_AFTER, after_id)]

    async def last_batch_id(self) -> int:
        ((last,),) = await self._fetch("last_batch_id", LAST_BATCH_ID)
        return int(last)
