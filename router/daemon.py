"""`hybrid-router daemon`: the one process that drives a database.

It owns flushing (per-class triggers), polling, reconciliation of lost create answers,
deadline escalation and the daily purge, by running a Router's scheduler, but only while
it holds the database's lease. A second daemon on the same database exits (or, with
`--standby`, waits and takes over when the lease is released or lapses). SIGTERM/SIGINT
let the current create or ingest step finish; in-flight batches stay in the store and the
next daemon tracks them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from datetime import UTC, datetime

import structlog
from anthropic import AsyncAnthropic

from ._crashpoints import crash_point
from .client import Router
from .config import RouterConfig
from .store import PurgeReport, leases

log = structlog.get_logger()

EXIT_OK = 0
EXIT_LEASE_HELD = 3  # another daemon drives this database (and --standby was not given)
EXIT_LEASE_LOST = 4  # the lease was taken over while running (this process stalled too long)

DAY = 86_400.0


class Daemon:
    """Drives one database while holding its lease. `await Daemon(config).run()` returns an exit code."""

    def __init__(
        self,
        config: RouterConfig,
        *,
        standby: bool = False,
        lease_ttl: float | None = None,
        anthropic: AsyncAnthropic | None = None,
        owner: str | None = None,
    ) -> None:
        self.config = config
        self.standby = standby
        self.lease_ttl = lease_ttl if lease_ttl is not None else config.router.lease_ttl
        self.owner = owner or leases.new_owner()
        self._anthropic = anthropic
        self._stop = asyncio.Event()
        self._code = EXIT_OK
        self._router: Router | None = None

    def stop(self, code: int = EXIT_OK) -> None:
        """Ask the daemon to finish its current step and exit."""
        if not self._stop.is_set():
            self._code = code
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        try:
            async with Router(self.config, anthropic=self._anthropic, scheduler=False) as router:
                self._router = router
                if not await self._take_lease(router):
                    return self._code
                try:
                    await self._drive(router)
                finally:
                    await router.quiesce()
                    if self._code != EXIT_LEASE_LOST:
                        with contextlib.suppress(Exception):
                            await router.store.release_lease(self.owner)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        log.info("daemon_stopped", owner=self.owner, code=self._code)
        return self._code

    async def _take_lease(self, router: Router) -> bool:
        store = router.store
        waiting = False
        while not self._stop.is_set():
            if await store.acquire_lease(self.owner, ttl=self.lease_ttl, now=time.time()):
                log.info(
                    "lease_acquired", owner=self.owner, store=router.config.store.location, waited=waiting
                )
                crash_point("lease.after_acquire")
                return True
            holder = await store.lease()
            if not self.standby:
                until = (
                    datetime.fromtimestamp(holder.expires_at, UTC).isoformat(timespec="seconds")
                    if holder
                    else "?"
                )
                print(
                    f"hybrid-router daemon: {router.config.store.location} is already driven by another"
                    " daemon"
                    f" ({holder.owner if holder else 'unknown'}, lease renewed until {until});"
                    " only one daemon may drive a database. Use --standby to wait and take over.",
                    file=sys.stderr,
                )
                log.warning(
                    "lease_held", holder=holder.owner if holder else None, store=router.config.store.location
                )
                self._code = EXIT_LEASE_HELD
                return False
            if not waiting:
                log.info(
                    "daemon_standby",
                    holder=holder.owner if holder else None,
                    store=router.config.store.location,
                )
                waiting = True
            # Look again well within one lease period: a released or lapsed lease is taken quickly.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self.lease_ttl / 4, 1.0)):
                    await self._stop.wait()
        return False

    async def _drive(self, router: Router) -> None:
        # Intents recorded before this lease were made by a driver that is gone: reconcile them now.
        router.settled_before = time.time()
        scheduler = router.start_scheduler(housekeeping=self._scheduled_purge, housekeeping_every=DAY)
        scheduler.every(self.lease_ttl / 3, self._renew, "lease")
        log.info(
            "daemon_started",
            owner=self.owner,
            store=router.config.store.location,
            lease_ttl=self.lease_ttl,
            jobs=scheduler.job_ids(),
        )
        # Catch up at once rather than one interval later: lost creates, ended batches, old rows.
        await self._catch_up(router)
        await self._stop.wait()

    async def _catch_up(self, router: Router) -> None:
        try:
            await router.poll()
        except Exception as exc:
            log.error("poll_failed", error=str(exc))
        for name in router.batch_classes():
            try:
                await router.check_triggers(name)
            except Exception as exc:
                log.error("flush_failed", latency=name, error=str(exc))
        await self._scheduled_purge()

    async def _renew(self) -> None:
        router = self._router
        if router is None or self._stop.is_set():
            return
        try:
            held = await router.store.acquire_lease(self.owner, ttl=self.lease_ttl, now=time.time())
        except Exception as exc:  # a busy database: the lease still has time, try again next tick
            log.warning("lease_renew_failed", error=str(exc))
            return
        if not held:
            log.error("lease_lost", owner=self.owner)
            self.stop(EXIT_LEASE_LOST)
            return
        crash_point("lease.after_renew")

    async def purge(self) -> PurgeReport:
        """Drop what is past `[store] retention` (finished requests, done batches, ledger rows)."""
        assert self._router is not None
        report = await self._router.store.purge(before=time.time() - self.config.store.retention)
        log.info("purge_done", requests=report.requests, batches=report.batches, ledger=report.ledger)
        return report

    async def _scheduled_purge(self) -> None:
        try:
            await self.purge()
        except Exception as exc:
            log.error("purge_failed", error=str(exc))


async def run_daemon(config: RouterConfig, *, standby: bool = False, lease_ttl: float | None = None) -> int:
    return await Daemon(config, standby=standby, lease_ttl=lease_ttl).run()
