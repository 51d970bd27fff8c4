"""Warning an app whose requests wait for a daemon that is not there.

With `[router] flusher = "daemon"` the app only stores requests: a daemon flushes and polls
them. If none runs, callers wait forever. The app looks at the database's lease now and
then (one primary-key read) and logs `no_daemon` once when no daemon has held it for
`NO_DAEMON_AFTER` seconds while requests wait; once more if a daemon comes back and goes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable

from .logs import get_logger
from .store import StoreEngine, leases

log = get_logger(__name__)

NO_DAEMON_AFTER = 30.0  # seconds without a lease holder before an app with waiting requests warns
CHECK_EVERY = 5.0  # seconds between looks at the lease

Clock = Callable[[], float]


class DaemonWatch:
    """Looks at the lease every `every` seconds while `active()`; see the module docstring."""

    def __init__(
        self,
        store: StoreEngine,
        *,
        clock: Clock,
        active: Callable[[], bool] = lambda: True,
        after: float = NO_DAEMON_AFTER,
        every: float | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._active = active
        self._after = after
        self._every = CHECK_EVERY if every is None else every
        # No warning sooner than `after` from now: a daemon started with the app gets its chance.
        self._last_held = clock()
        self._warned = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), name="hybrid-router-daemon-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def active(self) -> bool:
        """Whether the periodic look runs (not in a process that drives the database itself)."""
        return self._active()

    async def check(self) -> bool:
        """Look at the lease once; returns True when this look logged the warning."""
        now = self._clock()
        lease = await self._store.lease()
        if leases.is_held(lease, now):
            self._last_held = now
            if self._warned:
                self._warned = False
                owner = lease.owner if lease is not None else None
                log.info("daemon_lease_held", owner=owner, store=str(self._store.location))
            return False
        ended = lease.expires_at if lease is not None and lease.expires_at <= now else -math.inf
        absent_since = max(self._last_held, ended)
        if self._warned or now - absent_since < self._after:
            return False
        pending, _, _ = await self._store.pending_stats()
        batches = len(await self._store.open_batches())  # a few rows at most
        if not pending and not batches:
            return False
        self._warned = True
        log.warning(
            "no_daemon",
            store=str(self._store.location),
            pending=pending,
            open_batches=batches,
            seconds_without_daemon=round(now - absent_since),
            hint='[router] flusher = "daemon" but no daemon holds the lease: start `hybrid-router daemon`'
            ' on this database, or set flusher = "inline"',
        )
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            if not self.active:
                continue
            try:
                await self.check()
            except Exception as exc:  # a busy or closing store: look again next time
                log.debug("daemon_watch_failed", error=str(exc))
