"""Store operations for retention: drop finished rows past a cutoff, never anything still in flight."""

from __future__ import annotations

from ..._crashpoints import crash_point
from ..records import PurgeReport
from .connections import Connections

_PURGEABLE = (
    "state IN ('succeeded', 'failed') AND finished_at < ?"
    " AND id < (SELECT MAX(id) FROM requests)"
    " AND (done_seq IS NULL OR done_seq < (SELECT MAX(done_seq) FROM requests WHERE done_seq IS NOT NULL))"
)


class RetentionOps(Connections):
    """Retention operations of the store (a mixin of `Store`)."""

    async def purge(self, *, before: float) -> PurgeReport:
        """Delete final requests finished before `before`, done batches ended before it, and ledger rows.

        Pending, submitting, submitted and escalated requests are never touched, nor open batches.
        The newest request id and the newest completion number are always kept: SQLite would
        otherwise hand a purged id out again (a new request would then answer to an old
        `custom_id`), and a watcher's completion cursor must never run backwards.
        """
        async with self._transaction() as w:
            # Their result lines first: `results`, keyed by done_seq.
            await w.execute(
                f"DELETE FROM results WHERE done_seq IN (SELECT done_seq FROM requests WHERE {_PURGEABLE})",
                (before,),
            )
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
            crash_point("purge.before_commit")
        return PurgeReport(requests, batches, ledger)
