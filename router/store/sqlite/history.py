"""The cost report's history: ledger rows still kept and the daily totals of purged ones, as one.

Both come out summed by UTC day, lane, model, class, tag, result type and duplicate flag, so a
purge (which rolls rows into `ledger_days`, purge.py) leaves the figures as they were.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..records import HISTORY_FIELDS
from .connections import Connections

if TYPE_CHECKING:
    from ..group_commit import GroupCommitter

# The start of the UTC day of a time, in epoch seconds.
DAY_OF = "(CAST(({0}) / 86400 AS INTEGER) * 86400.0)"
# A ledger row's deadline escalations: real-time calls of a stored request.
ESCALATED_CALLS = "CASE WHEN lane = 'realtime' AND request_id IS NOT NULL THEN calls ELSE 0 END"
# A final request that missed its deadline: answered after it, or failed for it.
MISSED_DEADLINE = (
    "deadline_at IS NOT NULL AND state IN ('succeeded', 'failed')"
    " AND (finished_at > deadline_at OR outcome = 'deadline')"
)
# The lane that answered a request, as its ledger row says.
ANSWERED_BY = "CASE WHEN escalated_at IS NOT NULL THEN 'realtime' ELSE 'batch' END"
TOKENS = "input_tokens, output_tokens, cache_write_5m, cache_write_1h, cache_read"

HISTORY_ROWS = f"""
SELECT day, lane, model, class, tag, result_type, duplicate, SUM(calls), SUM(input_tokens),
    SUM(output_tokens), SUM(cache_write_5m), SUM(cache_write_1h), SUM(cache_read), SUM(escalated),
    SUM(missed), MAX(provider)
FROM (
    SELECT {DAY_OF.format("at")} AS day, lane, model, COALESCE(class, '') AS class,
        COALESCE(tag, '') AS tag, result_type, duplicate, calls, {TOKENS},
        {ESCALATED_CALLS} AS escalated, 0 AS missed, provider
    FROM ledger WHERE at >= ?1
    UNION ALL
    SELECT day, lane, model, class, tag, result_type, duplicate, calls, {TOKENS}, escalated, missed,
        provider
    FROM ledger_days WHERE day >= ?1
    UNION ALL
    SELECT {DAY_OF.format("finished_at")}, {ANSWERED_BY}, model, class, COALESCE(tag, ''),
        COALESCE(outcome, ''), 0, 0, 0, 0, 0, 0, 0, 0, 1,
        (SELECT provider FROM requests p WHERE p.id = requests_now.id)
    FROM requests_now WHERE {MISSED_DEADLINE} AND finished_at >= ?1
)
GROUP BY day, lane, model, class, tag, result_type, duplicate
ORDER BY day, lane, model, class, tag, result_type, duplicate
"""


class HistoryOps(Connections):
    """The report's history (a mixin of `Store`)."""

    if TYPE_CHECKING:  # Store's own
        _group: GroupCommitter

    async def history_rows(self, since_day: float) -> list[dict[str, Any]]:
        """Ledger sums with the daily totals of purged rows, from the UTC day `since_day` on.

        Entries this process has queued but not yet committed are committed first.
        """
        await self._group.commit_ledger()
        rows = await self._reader.execute_fetchall(HISTORY_ROWS, (since_day,))
        return [dict(zip(HISTORY_FIELDS, r, strict=True)) for r in rows]
