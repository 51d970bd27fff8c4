"""APScheduler wiring: per-class flush triggers, batch polling and purging.

SQLite is the durable state, so jobs live in APScheduler's memory job store; every job
has `max_instances=1` and `coalesce=True` so a slow flush is never stacked on itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .config import LatencyClass
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
        flush = self._shielded(flush)
        check_triggers = self._shielded(check_triggers)
        poll = self._shielded(poll)
        escalate = self._shielded(escalate) if escalate is not None else None
        housekeeping = self._shielded(housekeeping) if housekeeping is not None else None
        self._flush = flush
        self._scheduler = AsyncIOScheduler(job_defaults=_JOB_DEFAULTS, timezone=UTC)
        for name, cls in classes.items():
            if cls.route != "batch":
                continue
            if cls.every:
                self._scheduler.add_job(
                    flush, IntervalTrigger(seconds=cls.every), args=[name], id=f"flush:{name}"
                )
            if cls.cron:
                self._scheduler.add_job(
                    flush,
                    CronTrigger.from_crontab(cls.cron, timezone=cls.timezone),
                    args=[name],
                    id=f"cron:{name}",
                )
            if cls.max_wait or cls.max_pending or cls.max_pending_bytes:
                # Size triggers also fire from enqueue; this catches what other processes stored.
                every = max(0.5, min((cls.max_wait or 60.0) / 4, 30.0))
                self._scheduler.add_job(
                    check_triggers, IntervalTrigger(seconds=every), args=[name], id=f"triggers:{name}"
                )
        self._scheduler.add_job(poll, IntervalTrigger(seconds=poll_tick), id="poll")
        if escalate is not None:
            self._scheduler.add_job(escalate, IntervalTrigger(seconds=escalate_every), id="escalate")
        if housekeeping is not None:
            self._scheduler.add_job(
                housekeeping, IntervalTrigger(seconds=housekeeping_every), id="housekeeping"
            )

    def _shielded(self, job: Callable[..., Awaitable[object]]) -> Callable[..., Awaitable[object]]:
        """Run a job as its own task, shielded from the executor's cancellation at shutdown.

        A flush cut in half would leave a batch created but unrecorded; shutdown instead stops
        new runs and waits (drain) for the running ones to finish their step.
        """

        async def run(*args: object) -> object:
            task: asyncio.Task[object] = asyncio.ensure_future(job(*args))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            return await asyncio.shield(task)

        return run

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        """Stop starting jobs; running ones go on until `drain()`."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    async def drain(self) -> None:
        """Wait for the jobs that were running at shutdown."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    def flush_now(self, latency: str) -> None:
        """Wake a class's flush at once (a size or age trigger was reached)."""
        self._scheduler.add_job(
            self._flush,
            "date",
            run_date=datetime.now(UTC),
            args=[latency],
            id=f"wake:{latency}",
            replace_existing=True,
        )
        log.debug("flush_woken", latency=latency)

    def every(self, seconds: float, func: Callable[[], Awaitable[object]], job_id: str) -> None:
        """Add a periodic job (the daemon's lease renewal)."""
        self._scheduler.add_job(func, IntervalTrigger(seconds=seconds), id=job_id, replace_existing=True)

    def next_run(self, job_id: str, after: datetime) -> datetime | None:
        """When a job's trigger fires next after `after` (None if the job or a next time does not exist)."""
        job = self._scheduler.get_job(job_id)
        if job is None:
            return None
        fire: datetime | None = job.trigger.get_next_fire_time(None, after)
        return fire

    def job_ids(self) -> list[str]:
        return sorted(job.id for job in self._scheduler.get_jobs())
