"""Store operations for deadlines: requests at risk, escalation to real time, batch turnaround history."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence

from .. import states
from ..ledger import ledger_row
from ..records import AtRisk, LedgerEntry
from .connections import Connections, next_done_seq
from .ledger import insert_ledger
from .outbox import emit_escalated, emit_request_final
from .sql import NOT_COMPLETED, RESULT_INSERT, chunks, not_completed

# Pending requests by their own index; submitted ones through the batches still open, each by
# (batch_id, deadline_at): the indexes a result leaves alone. CROSS JOIN
# keeps the open batches outside, so each is a range of that index. A submitted request with
# a completion not yet folded into its row is final.
_PENDING_AT_RISK = (
    "SELECT id, key, class, model, state, deadline_at, batch_id FROM requests"
    " WHERE state = 'pending' AND deadline_at <= ? ORDER BY deadline_at LIMIT ?"
)
_SUBMITTED_AT_RISK = (
    "SELECT r.id, r.key, r.class, r.model, r.state, r.deadline_at, r.batch_id"
    " FROM batches b CROSS JOIN requests r ON r.batch_id = b.id AND r.deadline_at <= ?"
    f" WHERE b.state <> 'done' AND r.state = 'submitted' AND {not_completed('r')}"
    " ORDER BY r.deadline_at LIMIT ?"
)


class DeadlineOps(Connections):
    """Deadline operations of the store (a mixin of `Store`)."""

    async def at_risk(self, horizon: float, limit: int = 5000) -> list[AtRisk]:
        """Pending or submitted requests whose deadline is at or before `horizon`, soonest first."""
        found: list[list[AtRisk]] = []
        for query in (_PENDING_AT_RISK, _SUBMITTED_AT_RISK):
            async with self._reader.execute(query, (horizon, limit)) as cur:
                found.append([AtRisk(*row) for row in await cur.fetchall()])
        return list(itertools.islice(heapq.merge(*found, key=lambda row: row.deadline_at), limit))

    async def mark_escalated(self, rows: Sequence[AtRisk], now: float) -> list[int]:
        """Take requests off the batch path (guarded on the state they were read in); returns the winners."""
        won: list[int] = []
        async with self._transaction() as w:
            for row in rows:
                cur = await w.execute(
                    f"UPDATE requests SET state = 'escalated', escalated_at = ? WHERE id = ? AND state = ?"
                    f" AND {NOT_COMPLETED}",
                    (now, row.id, row.state),
                )
                if cur.rowcount == 1:
                    won.append(row.id)
            await emit_escalated(w, self._outbox, rows, won, now)
        return won

    async def take_over_stale(self, *, before: float, now: float, limit: int = 1000) -> list[int]:
        """Escalated requests whose real-time send was lost (a crash): claim them to send again."""
        async with self._reader.execute(
            "SELECT id, escalated_at FROM requests WHERE state = 'escalated' AND escalated_at < ? LIMIT ?",
            (before, limit),
        ) as cur:
            stale = await cur.fetchall()
        won: list[int] = []
        async with self._transaction() as w:
            for rid, at in stale:
                cur = await w.execute(
                    "UPDATE requests SET escalated_at = ?"
                    " WHERE id = ? AND state = 'escalated' AND escalated_at = ?",
                    (now, rid, at),
                )
                if cur.rowcount == 1:
                    won.append(int(rid))
        return won

    async def escalated_params(
        self, ids: Sequence[int]
    ) -> list[tuple[int, str, str | None, str, bytes, str]]:
        """(id, class, tag, model, params, provider) of requests to send real time.

        No state filter: the final write is guarded on `escalated`, and a filter here would
        wrongly skip a request whose escalation this read does not see yet.
        """
        out: list[tuple[int, str, str | None, str, bytes, str]] = []
        for part in chunks(ids):
            marks = ",".join("?" * len(part))
            async with self._reader.execute(
                f"SELECT r.id, r.class, r.tag, r.model, p.params, r.provider FROM requests r"
                f" JOIN request_params p ON p.id = r.id WHERE r.id IN ({marks})",
                part,
            ) as cur:
                out.extend((int(r[0]), r[1], r[2], r[3], bytes(r[4]), r[5]) for r in await cur.fetchall())
        return out

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
        """Write a final outcome for a request still in one of `from_states`; False if it was not."""
        final = states.SUCCEEDED if succeeded else states.FAILED
        marks = ",".join("?" * len(from_states))
        async with self._transaction() as w:
            seq = await next_done_seq(w)
            cur = await w.execute(
                "UPDATE requests SET state = ?, outcome = ?, done_seq = ?, finished_at = ?"
                f" WHERE id = ? AND state IN ({marks}) AND {NOT_COMPLETED}",
                (final, outcome, seq, now, request_id, *from_states),
            )
            if cur.rowcount != 1:
                return False
            await w.execute(RESULT_INSERT, (seq, line))
            if ledger is not None:
                await insert_ledger(w, [ledger_row(ledger)])
            await emit_request_final(w, self._outbox, request_id, now)
        return True

    async def still_in_batch(self, batch_id: int) -> int:
        """How many requests of a batch are still waiting for its result."""
        async with self._reader.execute(
            f"SELECT COUNT(*) FROM requests WHERE batch_id = ? AND state = 'submitted' AND {NOT_COMPLETED}",
            (batch_id,),
        ) as cur:
            return int((await cur.fetchone() or (0,))[0])

    async def record_turnaround(self, batch_id: int, seconds: float) -> None:
        """Remember how long a batch took, once per model it carried."""
        async with self._transaction() as w:
            await w.execute(
                "INSERT OR IGNORE INTO turnarounds (batch_id, model, seconds)"
                " SELECT DISTINCT ?, model, ? FROM requests WHERE batch_id = ?",
                (batch_id, seconds, batch_id),
            )

    async def turnaround_samples(self, model: str | None, limit: int = 200) -> list[float]:
        """The most recent turnarounds, of one model or of all."""
        if model is None:
            sql, args = "SELECT seconds FROM turnarounds ORDER BY batch_id DESC LIMIT ?", (limit,)
        else:
            sql = "SELECT seconds FROM turnarounds WHERE model = ? ORDER BY batch_id DESC LIMIT ?"
            args = (model, limit)  # type: ignore[assignment]
        async with self._reader.execute(sql, args) as cur:
            return [float(r[0]) for r in await cur.fetchall()]

    async def recent_turnarounds(self, limit: int = 5000) -> list[tuple[str, float]]:
        """(model, seconds) of the most recent turnarounds, newest first."""
        async with self._reader.execute(
            "SELECT model, seconds FROM turnarounds ORDER BY batch_id DESC LIMIT ?", (limit,)
        ) as cur:
            return [(str(model), float(seconds)) for model, seconds in await cur.fetchall()]

    async def escalated_count(self) -> int:
        """How many stored requests were ever escalated to real time."""
        rows = await self._reader.execute_fetchall(
            "SELECT COUNT(*) FROM requests WHERE escalated_at IS NOT NULL"
        )
        return int(next(iter(rows))[0])
