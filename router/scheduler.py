"""APScheduler wiring: per-class flush triggers, batch polling and purging.

SQLite is the durable state, so jobs live in APScheduler's memory job store, with
`coalesce=True`. APScheduler only starts each job as a task of ours (in the loop's thread);
a job still running when its trigger fires again is skipped, so a slow flush is never
stacked on itself.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .config import LatencyClass
from .cron import cron_trigger
from .logs import get_logger

log = get_logger(__name__)

_JOB_DEFAULTS: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}


class RouterScheduler:
    """Runs the router's periodic work inside the current asyncio loop."""

    def __init__(
        self,
        *,
        classes: Mapping[str, LatencyClass],
        flush: Callable[[str], Awaitable[object]],
        check_triggers: Callable[[str], Awaitable[object]],
        poll: Callable[[], Awaitable[object]],
        poll_tick: float,
        escalate: Callable[[], Awaitable[object]] | None = None,
        escalate_every: float = 30.0,
        housekeeping: Callable[[], Awaitable[object]] | None = None,
        housekeeping_every: float = 86_400.0,
    ) -> None:
        self._running: set[asyncio.Task[object]] = set()
        self._stopping = False
        self._by_job: dict[str, asyncio.Task[object]] = {}
        self._flush = flush
        self._scheduler = AsyncIOScheduler(
            executors={"default": DebugExecutor()}, job_defaults=_JOB_DEFAULTS, timezone=UTC
        )
        for name, cls in classes.items():
            if cls.route != "batch":
                continue
            if cls.every:
                self._add(flush, IntervalTrigger(seconds=cls.every), f"flush:{name}", name)
            if cls.cron:
                self._add(flush, cron_trigger(cls.cron, timezone=cls.timezone), f"cron:{name}", name)
            if cls.max_wait or cls.max_pending or cls.max_pending_bytes:
                # Size triggers also fire from enqueue; this catches what other processes stored.
                every = max(0.5, min((cls.max_wait or 60.0) / 4, 30.0))
                self._add(check_triggers, IntervalTrigger(seconds=every), f"triggers:{name}", name)
        self._add(poll, IntervalTrigger(seconds=poll_tick), "poll")
        if escalate is not None:
            self._add(escalate, IntervalTrigger(seconds=escalate_every), "escalate")
        if housekeeping is not None:
            self._add(housekeeping, IntervalTrigger(seconds=housekeeping_every), "housekeeping")

    def _add(
        self, func: Callable[..., Awaitable[object]], trigger: BaseTrigger, job_id: str, *args: object
    ) -> None:
        self._scheduler.add_job(
            self._launcher(func, job_id), trigger, args=list(args), id=job_id, replace_existing=True
        )

    def _launcher(self, job: Callable[..., Awaitable[object]], job_id: str) -> Callable[..., None]:
        """What APScheduler runs: a plain function that starts the job as a task of ours.

        APScheduler's asyncio executor would await the job in a task of its own and, at
        shutdown, cancel that task and log the CancelledError with its traceback; a flush cut
        in half would also leave a batch created but unrecorded. The `DebugExecutor` calls this
        function at once in the loop's thread, so APScheduler never holds anything to cancel:
        `shutdown()` stops new runs and `drain()` waits for the running ones to finish their
        step. A job still running when its trigger fires again is skipped, as
        `max_instances=1` would, without APScheduler's warning.
        """

        def launch(*args: object) -> None:
            if self._stopping:
                return
            running = self._by_job.get(job_id)
            if running is not None and not running.done():
                log.debug("job_skipped", job=job_id, reason="still running")
                return
            task: asyncio.Task[object] = asyncio.ensure_future(job(*args))
            self._by_job[job_id] = task
            self._running.add(task)
            task.add_done_callback(functools.partial(self._finished, job_id))

        return launch

    def _finished(self, job_id: str, task: asyncio.Task[object]) -> None:
        self._running.discard(task)
        if self._by_job.get(job_id) is task:
            del self._by_job[job_id]
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("job_failed", job=job_id, error=str(exc), exc_info=exc)

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        """Stop starting jobs; running ones go on until `drain()`."""
        self._stopping = True
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    async def abandon(self) -> None:
        """Stop starting jobs and cancel the running ones, mid-step (what a crash would leave:
        the store's transactions roll back, and the next driver reconciles a create whose answer
        was not recorded)."""
        self.shutdown()
        for task in list(self._running):
            task.cancel()
        await self.drain()

    async def drain(self) -> None:
        """Wait for the jobs that were running at shutdown."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    def flush_now(self, latency: str) -> None:
        """Wake a class's flush at once (a size or age trigger was reached)."""
        self._add(self._flush, DateTrigger(datetime.now(UTC)), f"wake:{latency}", latency)
        log.debug("flush_woken", latency=latency)

    def every(self, seconds: float, func: Callable[[], Awaitable[object]], job_id: str) -> None:
        """Add a periodic job (the daemon's lease renewal)."""
        self._add(func, IntervalTrigger(seconds=seconds), job_id)

    def next_run(self, job_id: str, after: datetime) -> datetime | None:
        """When a job's trigger fires next after `after` (None if the job or a next time does not exist)."""
        job = self._scheduler.get_job(job_id)
        if job is None:
            return None
        fire: datetime | None = job.trigger.get_next_fire_time(None, after)
        return fire

    def job_ids(self) -> list[str]:
        return sorted(job.id for job in self._scheduler.get_jobs())
