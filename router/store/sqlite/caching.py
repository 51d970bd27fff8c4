"""Store reads for prompt caching: pending prefix groups, their warmth, and cache figures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..records import CACHE_FIGURE_FIELDS, CALIBRATION_DEPTH, PendingGroup
from .connections import Connections

# Cache tokens one ledger row returned.
_CACHED = "(l.cache_read + l.cache_write_5m + l.cache_write_1h)"


class CacheOps(Connections):
    """Reads behind cache-aware flushing and the cache report (a mixin of `Store`)."""

    async def pending_groups(self, latencies: Sequence[str] | None = None) -> list[PendingGroup]:
        """Pending requests that mark a prefix, by class, model and prefix key, oldest first."""
        where, args = "", tuple[str, ...]()
        if latencies is not None:
            where = f" AND class IN ({','.join('?' * len(latencies))})" if latencies else " AND 0"
            args = tuple(latencies)
        async with self._reader.execute(
            "SELECT class, model, prefix_key, COUNT(*), SUM(size), MIN(created_at), MIN(deadline_at),"
            " MAX(prefix_tokens) FROM requests WHERE state = 'pending' AND prefix_key IS NOT NULL"
            f"{where}"
            " GROUP BY class, model, prefix_key ORDER BY MIN(id)",
            args,
        ) as cur:
            return [
                PendingGroup(str(c), str(m), k, int(n), int(b), float(o), d, t)
                for c, m, k, n, b, o, d, t in await cur.fetchall()
            ]

    async def prefix_status(self, keys: Sequence[str]) -> dict[str, tuple[float | None, bool]]:
        """For each of `keys`: (when a request with it last succeeded, or None; whether one is
        claimed or in a batch). Two index probes a key, whatever its history. A batch's results
        count once its ingest is done (finish_batch folds them into their rows)."""
        status: dict[str, tuple[float | None, bool]] = {}
        for key in dict.fromkeys(keys):
            async with self._reader.execute(
                "SELECT (SELECT finished_at FROM requests WHERE prefix_key = ?1 AND finished_at IS NOT NULL"
                " AND state = 'succeeded' ORDER BY finished_at DESC LIMIT 1),"
                " EXISTS (SELECT 1 FROM requests WHERE prefix_key = ?1"
                " AND state IN ('submitting', 'submitted'))",
                (key,),
            ) as cur:
                succeeded_at, flying = await cur.fetchone() or (None, 0)
            status[key] = (succeeded_at, bool(flying))
        return status

    async def cache_calibration(self, limit: int = 2000) -> dict[str, tuple[int, int]]:
        """Per model: cache tokens returned and tokens estimated, over the latest `limit` batch
        results of marked requests that read or wrote the cache."""
        async with self._reader.execute(
            f"SELECT model, SUM(cached), SUM(estimate) FROM ("
            f" SELECT l.model, {_CACHED} AS cached, r.prefix_tokens AS estimate"
            " FROM (SELECT * FROM ledger ORDER BY id DESC LIMIT ?) l JOIN requests r ON r.id = l.request_id"
            f" WHERE l.lane = 'batch' AND r.prefix_tokens > 0 AND {_CACHED} > 0"
            " ORDER BY l.id DESC LIMIT ?) GROUP BY model",
            (CALIBRATION_DEPTH, limit),
        ) as cur:
            return {str(m): (int(c), int(e)) for m, c, e in await cur.fetchall()}

    async def prefix_sizes(self, limit: int = 5000) -> list[tuple[str, str | None, str, int]]:
        """(class, tag, model, estimated prefix tokens) of the latest `limit` requests that mark one."""
        async with self._reader.execute(
            "SELECT class, tag, model, prefix_tokens FROM requests WHERE prefix_key IS NOT NULL"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        ) as cur:
            return [(str(c), t, str(m), int(n or 0)) for c, t, m, n in await cur.fetchall()]

    async def cache_figures(self) -> list[dict[str, Any]]:
        """Cache tokens of billed batch results of requests with a prefix key (CACHE_FIGURE_FIELDS)."""
        async with self._reader.execute(
            f"SELECT l.model, l.tag, r.prefix_key, MAX(r.prefix_tokens), {_CACHED} AS cached,"
            " SUM(l.calls), SUM(l.cache_read > 0), SUM(l.input_tokens), SUM(l.output_tokens),"
            " SUM(l.cache_write_5m), SUM(l.cache_write_1h), SUM(l.cache_read)"
            " FROM ledger l JOIN requests r ON r.id = l.request_id"
            " WHERE l.lane = 'batch' AND l.duplicate = 0 AND l.result_type = 'succeeded'"
            " AND r.prefix_key IS NOT NULL"
            " GROUP BY l.model, l.tag, r.prefix_key, cached ORDER BY r.prefix_key, l.tag, cached"
        ) as cur:
            return [dict(zip(CACHE_FIGURE_FIELDS, tuple(row), strict=True)) for row in await cur.fetchall()]
