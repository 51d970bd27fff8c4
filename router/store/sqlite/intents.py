"""Store operations for batch intents whose `batches.create` answer was lost (see reconcile.py).

An intent is a batch row with no `api_id` yet (state `creating`, or `released` once its
requests were resubmitted while the router kept looking). Every write is guarded on the
intent's state and on its `api_id` still being unset, so two processes reconciling at once
cannot both adopt or release it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection

from .. import states
from .connections import Connections

_KNOWN_CHUNK = 500  # api ids per lookup


class IntentOps(Connections):
    """Intent operations of the store (a mixin of `Store`)."""

    async def known_api_ids(self, api_ids: Collection[str]) -> set[str]:
        """Those of `api_ids` that some batch row of this store already has."""
        known: set[str] = set()
        ids = list(api_ids)
        for start in range(0, len(ids), _KNOWN_CHUNK):
            part = ids[start : start + _KNOWN_CHUNK]
            async with self._reader.execute(
                f"SELECT api_id FROM batches WHERE api_id IN ({','.join('?' * len(part))})", part
            ) as cur:
                known.update(str(r[0]) for r in await cur.fetchall())
        return known

    async def adopt_batch(self, intent_id: int, api_id: str, *, state: str, now: float) -> bool:
        """Attach a remote batch to the intent still in `state`; its claimed requests become submitted.

        False when the intent moved on, or when another process attached the same remote batch first.
        """
        try:
            async with self._transaction() as w:
                cur = await w.execute(
                    "UPDATE batches SET api_id = ?, state = ?, submitted_at = ?, next_poll_at = ?"
                    " WHERE id = ? AND state = ? AND api_id IS NULL",
                    (api_id, states.B_IN_PROGRESS, now, now, intent_id, state),
                )
                if cur.rowcount != 1:
                    return False
                if state == states.B_CREATING:
                    await w.execute(
                        "UPDATE requests SET state = 'submitted' WHERE batch_id = ? AND state = 'submitting'",
                        (intent_id,),
                    )
        except sqlite3.IntegrityError:  # the unique api_id: another process adopted it first
            return False
        return True

    async def release_intent(self, intent_id: int, *, state: str, to: str) -> int:
        """Put the claimed requests of the intent still in `state` back to pending, the intent
        becoming `to` (done, or released); returns how many requests went back."""
        async with self._transaction() as w:
            cur = await w.execute(
                "UPDATE batches SET state = ? WHERE id = ? AND state = ? AND api_id IS NULL",
                (to, intent_id, state),
            )
            if cur.rowcount != 1:
                return 0
            cur = await w.execute(
                "UPDATE requests SET state = 'pending' WHERE batch_id = ? AND state = 'submitting'",
                (intent_id,),
            )
            return cur.rowcount

    async def close_released_intent(self, intent_id: int) -> None:
        """Stop looking for the batch of a released intent (its requests went out again already)."""
        async with self._transaction() as w:
            await w.execute(
                "UPDATE batches SET state = ? WHERE id = ? AND state = ? AND api_id IS NULL",
                (states.B_DONE, intent_id, states.B_RELEASED),
            )
