"""`hybrid-router daemon`: the one process that drives a database.

It owns flushing (per-class triggers), polling, reconciliation of lost create answers,
deadline escalation and the daily purge, by running a Router's scheduler, but only while
it holds the database's lease. A second daemon on the same database exits (or, with
`--standby`, waits and takes over when the lease is released or lapses). SIGTERM/SIGINT
let the current create or ingest step finish; in-flight batches stay in the store and the
next daemon tracks them. With `--metrics HOST:PORT` (or `[daemon] metrics`) it serves
/metrics, /healthz and /readyz (router/metrics.py) from the start, standby included.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ._crashpoints import crash_point
from .client import Router
from .config import RouterConfig
from .errors import StoreError
from .leftovers import sweep
from .logs import get_logger
from .store import PurgeReport, leases

if TYPE_CHECKING:
    from .metrics import Address, DaemonView
    from .observe import Snapshot
    from .providers.anthropic.client import AsyncAnthropic  # only handed to the Router
    from .scheduler import RouterScheduler

log = get_logger(__name__)

EXIT_OK = 0
EXIT_LEASE_HELD = 3  # another daemon drives this database (and --standby was not given)
EXIT_LEASE_LOST = 4  # the lease was taken over, or ran out unrenewed (a stall, a database outage)

# A daemon stops driving once less than this share of its lease is left unrenewed: another
# host judges the expiry by its own clock, and the work under way needs a moment to be cut.
LEASE_MARGIN = 0.2

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
        metrics: str | None = None,
        metrics_public: bool = False,
    ) -> None:
        """`metrics`: "host:port" for /metrics, /healthz and /readyz (default: `[daemon] metrics`);
        a non-loopback host needs `metrics_public` (or `[daemon] metrics_public`)."""
        self.config = config
        self.standby = standby
        self.lease_ttl = lease_ttl if lease_ttl is not None else config.router.lease_ttl
        self.owner = owner or leases.new_owner()
        self._anthropic = anthropic
        self._stop = asyncio.Event()
        self._code = EXIT_OK
        self._router: Router | None = None
        # The loop's clock when the lease runs out as last written: an acquisition or renewal
        # that succeeds moves it to the time the call began plus the TTL (its expiry was
        # computed from a wall-clock `now` read at that moment).
        self._held_until = -math.inf
        self._renewed = asyncio.Event()
        self._lapsed = asyncio.Event()  # set when this daemon must drive no more
        self.metrics = _metrics_address(config, metrics, metrics_public)

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
            async with (
                Router(self.config, anthropic=self._anthropic, scheduler=False) as router,
                self._serving(),
            ):
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

    @contextlib.asynccontextmanager
    async def _serving(self) -> AsyncIterator[None]:
        """Serve the metrics and health endpoints meanwhile, if asked; binding fails at once."""
        if self.metrics is None:
            yield
            return
        from .metrics import MetricsServer

        address, what = self.metrics
        server = MetricsServer(address, snapshot=self._figures, ready=self.readiness, what=what)
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    def _poll_age(self) -> float | None:
        at = self._router.last_poll_at if self._router is not None else None
        return None if at is None else time.monotonic() - at

    async def _figures(self) -> tuple[Snapshot, DaemonView]:
        from . import observe
        from .metrics import DaemonView

        if self._router is None:
            raise RuntimeError("the daemon is starting")
        snapshot = await observe.take(self._router.store, self.config)
        return snapshot, DaemonView(owner=self.owner, last_poll_age=self._poll_age())

    async def readiness(self) -> tuple[bool, dict[str, object]]:
        """(ready, details): ready while this daemon holds the lease, the store answers, and the
        last poll finished less than twice `[batch] poll_interval` ago; else the reason."""
        router = self._router
        if router is None or self._stop.is_set():
            return False, {"reason": "the daemon is starting or stopping"}
        try:
            async with asyncio.timeout(5.0):
                lease = await router.store.lease()
        except Exception as exc:
            return False, {"reason": f"the store does not answer: {exc or type(exc).__name__}"}
        now = time.time()
        if lease is None or lease.expires_at <= now:
            return False, {"reason": "no daemon holds the lease"}
        if lease.owner != self.owner:
            return False, {
                "reason": f"another daemon holds the lease ({lease.owner}); this one waits (--standby)",
                "holder": lease.owner,
            }
        age = self._poll_age()
        limit = 2 * self.config.batch.poll_interval
        details: dict[str, object] = {"owner": self.owner, "last_poll_age_seconds": age}
        if age is None:
            return False, {"reason": "no poll has finished yet", **details}
        if age >= limit:
            running = "; one is running" if router.polling else ""
            reason = f"the last poll finished {age:.1f} s ago (twice poll_interval: {limit:g} s{running})"
            return False, {"reason": reason, **details}
        return True, details

    async def _take_lease(self, router: Router) -> bool:
        store = router.store
        waiting = False
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            began = loop.time()
            try:
                acquired = await store.acquire_lease(self.owner, ttl=self.lease_ttl, now=time.time())
                holder = None if acquired else await store.lease()
            except StoreError as exc:
                if not self.standby:
                    raise
                # The database is still away after the store's own retries: a standby is there
                # to take over once it is back, so it keeps waiting rather than exiting.
                log.warning("lease_check_failed", owner=self.owner, error=str(exc))
                await self._pause()
                continue
            if acquired:
                took = loop.time() - began
                if took >= self.lease_ttl * (1 - LEASE_MARGIN):
                    # The store answered late (retried through an outage, or stalled): the
                    # expiry it wrote came from the call's `now`, so the lease has run out or
                    # nearly, and _watch_lease would stop this daemon as soon as it started.
                    # Renew it from a fresh `now` before driving; another daemon may have
                    # taken it meanwhile, and then this one waits again.
                    log.info("lease_acquired_late", owner=self.owner, took=round(took, 3))
                    continue
                self._held(began)
                log.info(
                    "lease_acquired", owner=self.owner, store=router.config.store.location, waited=waiting
                )
                crash_point("lease.after_acquire")
                return True
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
            await self._pause()
        return False

    async def _pause(self) -> None:
        # Look again well within one lease period: a released or lapsed lease is taken quickly.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(self.lease_ttl / 4, 1.0)):
                await self._stop.wait()

    def _held(self, began: float) -> None:
        self._held_until = max(self._held_until, began + self.lease_ttl)
        self._renewed.set()

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
        catch_up = asyncio.ensure_future(self._catch_up(router))
        watch = asyncio.ensure_future(self._watch_lease())
        try:
            await self._stop.wait()
            if not self._lapsed.is_set():
                # Asked to stop: the step under way finishes under the lease, still renewed (the
                # scheduler's renewal stops with its other jobs) and still watched.
                renewing = asyncio.ensure_future(self._keep_renewing())
                finishing = asyncio.ensure_future(self._finish_step(router, catch_up))
                lapsed = asyncio.ensure_future(self._lapsed.wait())
                try:
                    await asyncio.wait([finishing, lapsed], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    renewing.cancel()
                    lapsed.cancel()
                    if self._lapsed.is_set():
                        await self._abandon(scheduler, catch_up)
                    await asyncio.wait([finishing, renewing, lapsed])
        finally:
            watch.cancel()
            await asyncio.wait([watch])
            if self._lapsed.is_set():
                await self._abandon(scheduler, catch_up)
            await asyncio.wait([catch_up])

    async def _finish_step(self, router: Router, catch_up: asyncio.Future[None]) -> None:
        await asyncio.wait([catch_up])
        await router.quiesce()

    @staticmethod
    async def _abandon(scheduler: RouterScheduler, catch_up: asyncio.Future[None]) -> None:
        """Another daemon may drive now: nothing of this one's may still be under way."""
        catch_up.cancel()
        await scheduler.abandon()

    def _lapse(self, reason: str, **fields: object) -> None:
        """The lease is gone, or about to be: stop driving now, whatever else asked to stop."""
        if self._code != EXIT_LEASE_LOST:
            log.error("lease_lost", owner=self.owner, reason=reason, **fields)
        self._code = EXIT_LEASE_LOST
        self._stop.set()
        self._lapsed.set()

    async def _watch_lease(self) -> None:
        """Stop driving before the lease can run out unrenewed (the store unreachable, or this
        process stalled): past its expiry a standby may take over, and two daemons must never
        flush or ingest at once. The renewal may still be waiting for the store then."""
        loop = asyncio.get_running_loop()
        while True:
            self._renewed.clear()
            left = self._held_until - self.lease_ttl * LEASE_MARGIN - loop.time()
            if left <= 0:
                unrenewed = loop.time() - (self._held_until - self.lease_ttl)
                self._lapse("not renewed in time", unrenewed_for=round(unrenewed, 3))
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._renewed.wait()

    async def _keep_renewing(self) -> None:
        while not self._lapsed.is_set():
            await self._renew_once()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.lease_ttl / 3):
                    await self._lapsed.wait()

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
        if self._stop.is_set():
            return  # stopping: _keep_renewing renews until the step under way is done
        await self._renew_once()

    async def _renew_once(self) -> None:
        router = self._router
        if router is None or self._lapsed.is_set():
            return
        began = asyncio.get_running_loop().time()
        try:
            held = await router.store.acquire_lease(self.owner, ttl=self.lease_ttl, now=time.time())
        except Exception as exc:  # a busy database: the lease may still have time (_watch_lease)
            log.warning("lease_renew_failed", error=str(exc))
            return
        if not held:
            self._lapse("taken over")
            return
        if self._lapsed.is_set():
            return  # too late: this daemon stopped driving meanwhile
        self._held(began)
        crash_point("lease.after_renew")

    async def purge(self) -> PurgeReport:
        """Drop what is past `[store] retention` (finished requests, done batches, ledger rows),
        and delete what the providers keep that no batch needs (router/leftovers.py)."""
        assert self._router is not None
        # First, while the store still knows the batches it has closed.
        await sweep(self._router.providers, self._router.store, now=self._router.clock())
        before = time.time() - self.config.store.retention
        report = await self._router.store.purge(before=before)
        # Events past retention whose deliveries are all done; pending ones are kept.
        events = await self._router.store.purge_outbox(before=before)
        log.info(
            "purge_done",
            requests=report.requests,
            batches=report.batches,
            ledger=report.ledger,
            events=events,
        )
        return report

    async def _scheduled_purge(self) -> None:
        try:
            await self.purge()
        except Exception as exc:
            log.error("purge_failed", error=str(exc))


def _metrics_address(config: RouterConfig, given: str | None, public: bool) -> tuple[Address, str] | None:
    """The metrics address to serve and where it was set (for errors), or None."""
    text = given if given is not None else config.daemon.metrics
    if text is None:
        return None
    from .metrics import metrics_address

    what = "--metrics" if given is not None else "[daemon] metrics"
    return metrics_address(text, public=public or config.daemon.metrics_public, what=what), what


async def run_daemon(config: RouterConfig, *, standby: bool = False, lease_ttl: float | None = None) -> int:
    return await Daemon(config, standby=standby, lease_ttl=lease_ttl).run()
