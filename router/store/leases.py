"""Store operations for leases: one named holder per database at a time, with an expiry.

Taken and renewed in `BEGIN IMMEDIATE` with guarded statements, so two processes racing
for the same lease cannot both win. Times are wall-clock (`time.time()`): leases are shared
between processes, which share no other clock.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime

from .connections import Connections
from .records import Lease

DRIVER = "driver"  # the lease of whoever flushes, polls, reconciles and purges a database


def new_owner() -> str:
    """An owner id naming this host and process (so a dead local holder can be recognised)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str) -> bool:
    """True only when the owner certainly died: a process of this host that no longer exists."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another host: only the expiry tells
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # A zombie (killed, not yet reaped by its parent) still has a pid but holds nothing.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return False


def is_held(lease: Lease | None, now: float) -> bool:
    """True when `lease` is in force at `now`: not expired, and its owner not known to be dead."""
    return lease is not None and lease.expires_at > now and not owner_is_dead(lease.owner)


def describe_holder(lease: Lease | None, now: float) -> str:
    """One line for `status`: who drives the database, or that no daemon does."""
    if lease is None or not is_held(lease, now):
        return "no daemon holds the lease"
    until = datetime.fromtimestamp(lease.expires_at, UTC).isoformat(timespec="seconds")
    return f"daemon {lease.owner} holds the lease (renewed until {until})"


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
