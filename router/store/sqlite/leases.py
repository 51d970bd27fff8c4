"""The SQLite engine's lease operations: taken and renewed in `BEGIN IMMEDIATE` with guarded
statements, so two processes racing for the same lease cannot both win."""

from __future__ import annotations

from ..leases import DRIVER, is_held, owner_is_dead
from ..records import Lease
from .connections import Connections


class LeaseOps(Connections):
    """Lease operations of the store (a mixin of `Store`)."""

    async def lease(self, name: str = DRIVER) -> Lease | None:
        """The lease as stored (perhaps expired), or None when nobody ever took it or it was released."""
        # One primary-key read in one trip to the reader's thread: apps look every few seconds.
        rows = list(
            await self._reader.execute_fetchall(
                "SELECT name, owner, acquired_at, expires_at FROM leases WHERE name = ?", (name,)
            )
        )
        return Lease(*rows[0]) if rows else None

    async def lease_holder(self, *, now: float, name: str = DRIVER) -> Lease | None:
        """Who holds the lease at `now` (wall-clock time), or None when no one does."""
        lease = await self.lease(name)
        return lease if is_held(lease, now) else None

    async def acquire_lease(self, owner: str, *, ttl: float, now: float, name: str = DRIVER) -> bool:
        """Take or renew the lease; True when `owner` holds it until `now + ttl`.

        Succeeds when the lease is free, already ours, expired, or held by a local process
        that no longer exists (a SIGKILLed daemon need not be waited for).
        """
        holder = await self.lease(name)
        dead = holder is not None and holder.owner != owner and owner_is_dead(holder.owner)
        async with self._transaction() as w:
            await w.execute(
                "INSERT INTO leases (name, owner, acquired_at, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,"
                " acquired_at = CASE WHEN leases.owner = excluded.owner THEN leases.acquired_at"
                " ELSE excluded.acquired_at END,"
                " expires_at = excluded.expires_at"
                " WHERE leases.owner = excluded.owner OR leases.expires_at <= ? OR leases.owner = ?",
                (name, owner, now, now + ttl, now, holder.owner if dead and holder else ""),
            )
            async with w.execute("SELECT owner FROM leases WHERE name = ?", (name,)) as cur:
                row = await cur.fetchone()
        return row is not None and row[0] == owner

    async def release_lease(self, owner: str, *, name: str = DRIVER) -> bool:
        """Give the lease up (clean shutdown) so a standby takes over at once."""
        async with self._transaction() as w:
            cur = await w.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))
            return cur.rowcount == 1
