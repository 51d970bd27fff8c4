"""Failing the requests of a batch whose results can no longer be downloaded, on SQLite
(router/store/missing.py says when and why)."""

from __future__ import annotations

from .. import states
from ..missing import missing_line
from .connections import Connections, fold_completions, next_done_seq
from .outbox import emit_batch_closed
from .sql import NOT_COMPLETED, RESULT_INSERT


class MissingOps(Connections):
    """Failing the requests of a batch whose results are lost (a mixin of `Store`)."""

    async def unanswered(self, batch_id: int) -> list[int]:
        """The requests of the batch still waiting for their result (completions counted)."""
        rows = await self._reader.execute_fetchall(
            "SELECT id FROM requests_now WHERE batch_id = ? AND state = ? ORDER BY id",
            (batch_id, states.SUBMITTED),
        )
        return [int(r[0]) for r in rows]

    async def fail_missing(self, batch_id: int, *, now: float, reason: str) -> list[int]:
        """Fail every request of the batch still waiting for its result and close the batch;
        returns their ids."""
        async with self._transaction() as w:
            async with w.execute(
                f"SELECT id FROM requests WHERE batch_id = ? AND state = ? AND {NOT_COMPLETED} ORDER BY id",
                (batch_id, states.SUBMITTED),
            ) as cur:
                ids = [int(r[0]) for r in await cur.fetchall()]
            seq = await next_done_seq(w)
            await w.executemany(
                "UPDATE requests SET state = ?, outcome = 'missing', done_seq = ?, finished_at = ?,"
                " attempts = attempts + 1 WHERE id = ? AND batch_id = ? AND state = ?",
                [(states.FAILED, seq + n, now, rid, batch_id, states.SUBMITTED) for n, rid in enumerate(ids)],
            )
            # Same transaction as the SELECT above: every id read there was just updated.
            await w.executemany(
                RESULT_INSERT, [(seq + n, missing_line(rid, reason)) for n, rid in enumerate(ids)]
            )
            await fold_completions(w)  # what the broken-off ingests of this batch did complete
            await emit_batch_closed(w, self._outbox, batch_id, now)
            await w.execute(
                "UPDATE batches SET state = ?, ended_at = COALESCE(ended_at, ?) WHERE id = ?",
                (states.B_DONE, now, batch_id),
            )
        return ids
