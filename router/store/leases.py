"""Leases, whatever the engine: one named holder per database at a time, with an expiry.

Each engine takes and renews them with guarded statements (router/store/<engine>/leases.py),
so two processes racing for the same lease cannot both win. Times are wall-clock
(`time.time()`): leases are shared between processes, which share no other clock.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime

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
