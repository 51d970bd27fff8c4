"""Store operations for retention: drop finished rows past a cutoff, never anything still in flight.

Ledger rows are not lost with them: each purge first adds them to the daily totals of
`ledger_days` (history.py reads both), and the deadlines the purged requests missed too.
"""

from __future__ import annotations

from ..._crashpoints import crash_point
from ..records import DryRun, PurgeReport
from .connections import Connections
from .history import ANSWERED_BY, DAY_OF, ESCALATED_CALLS, MISSED_DEADLINE

_PURGEABLE = (
    "state IN ('succeeded', 'failed') AND finished_at < ?"
    " AND id < (SELECT MAX(id) FROM requests)"
    " AND (done_seq IS NULL OR done_seq < (SELECT MAX(done_seq) FROM requests WHERE done_seq IS NOT NULL))"
)
_PURGE_RESULTS = f"DELETE FROM results WHERE done_seq IN (SELECT done_seq FROM requests WHERE {_PURGEABLE})"

_DAY_KEY = "day, lane, model, class, tag, result_type, duplicate"
_SUMS = (
    "calls",
    "input_tokens",
    "output_tokens",
    "cache_write_5m",
    "cache_write_1h",
    "cache_read",
    "escalated",
    "missed",
)
_ADD_TO_DAY = f" ON CONFLICT ({_DAY_KEY}) DO UPDATE SET " + ", ".join(
    f"{c} = ledger_days.{c} + excluded.{c}" for c in _SUMS
)
# WHERE comes before GROUP BY, so SQLite cannot read ON CONFLICT as a join's ON.
ROLL_UP_LEDGER = (
    f"INSERT INTO ledger_days ({_DAY_KEY}, provider, {', '.join(_SUMS)})"
    f" SELECT {DAY_OF.format('at')}, lane, model, COALESCE(class, ''), COALESCE(tag, ''), result_type,"
    " duplicate, max(provider), SUM(calls), SUM(input_tokens), SUM(output_tokens), SUM(cache_write_5m),"
    f" SUM(cache_write_1h), SUM(cache_read), SUM({ESCALATED_CALLS}), 0"
    f" FROM ledger WHERE at < ? GROUP BY 1, 2, 3, 4, 5, 6, 7{_ADD_TO_DAY}"
)
ROLL_UP_MISSED = (
    f"INSERT INTO ledger_days ({_DAY_KEY}, provider, missed)"
    f" SELECT {DAY_OF.format('finished_at')}, {ANSWERED_BY}, model, class, COALESCE(tag, ''),"
    f" COALESCE(outcome, ''), 0, max(provider), COUNT(*) FROM requests"
    f" WHERE {_PURGEABLE} AND {MISSED_DEADLINE}"
    f" GROUP BY 1, 2, 3, 4, 5, 6{_ADD_TO_DAY}"
)


class RetentionOps(Connections):
    """Retention operations of the store (a mixin of `Store`)."""

    async def purge(self, *, before: float, dry_run: bool = False) -> PurgeReport:
        """Delete final requests finished before `before`, done batches ended before it, and ledger
        rows, after adding those rows to the daily totals. A `dry_run` does the same in a
        transaction it rolls back: the counts are what a purge would do now.

        Pending, submitting, submitted and escalated requests are never touched, nor open batches.
        The newest request id and the newest completion number are always kept: SQLite would
        otherwise hand a purged id out again (a new request would then answer to an old
        `custom_id`), and a watcher's completion cursor must never run backwards.
        """
        try:
            async with self._transaction() as w:
                cur = await w.execute(ROLL_UP_MISSED, (before,))
                days = max(cur.rowcount, 0)
                cur = await w.execute(ROLL_UP_LEDGER, (before,))
                days += max(cur.rowcount, 0)
                # Their result lines first: `results`, keyed by done_seq.
                await w.execute(_PURGE_RESULTS, (before,))
                cur = await w.execute(f"DELETE FROM requests WHERE {_PURGEABLE}", (before,))
                requests = cur.rowcount
                cur = await w.execute(
                    "DELETE FROM batches WHERE state = 'done'"
                    " AND COALESCE(ended_at, submitted_at, created_at) < ?"
                    " AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.batch_id = batches.id"
                    " AND r.state IN ('submitting', 'submitted'))",
                    (before,),
                )
                batches = cur.rowcount
                cur = await w.execute("DELETE FROM ledger WHERE at < ?", (before,))
                ledger = cur.rowcount
                report = PurgeReport(requests, batches, ledger, days)
                if dry_run:
                    raise DryRun(report)
                crash_point("purge.before_commit")
        except DryRun as done:
            return done.report
        return report
