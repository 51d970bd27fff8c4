"""One snapshot of a database's figures, read from the store: what `/metrics` and `status` show.

Every figure comes from the rows, not from any process's memory, so one snapshot covers every
app and daemon on the database. Counts over finished work (answers, escalations, cost) are
totals over what the store still holds: a purge past `[store] retention` lowers them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apscheduler.triggers.interval import IntervalTrigger

from .config import LatencyClass, RouterConfig
from .cron import cron_trigger
from .pricing import CostSummary
from .report import summary_of
from .store import EndpointFigures, Lease, StoreEngine, states
from .units import format_duration

# Every request state, in the order of its life (DESIGN.md section 4).
STATES = (
    states.PENDING,
    states.SUBMITTING,
    states.SUBMITTED,
    states.ESCALATED,
    states.SUCCEEDED,
    states.FAILED,
)
# Why a request left the batch path, as the store can tell: it was never in a batch (no batch
# could meet its deadline, at submit or while it waited), or it was taken out of one that had
# not ended near its deadline.
ESCALATION_REASONS = ("turnaround", "batch_late")
# Batch turnaround buckets, seconds: most batches end within the hour, all within 24 h.
TURNAROUND_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0)


@dataclass(frozen=True)
class ClassFigures:
    """One latency class: its requests by state, its oldest pending one and its next flush."""

    name: str
    route: str | None  # None: rows of a class the config no longer has
    states: dict[str, int]
    oldest_pending_at: float | None
    escalations: dict[str, int]  # reason -> requests
    trigger: str  # the flush triggers, as configured ("every 15m", "cron 0 2 * * * UTC", ...)
    next_flush_at: float | None  # None when no trigger time is known (see next_flush_at())


@dataclass(frozen=True)
class BatchFigures:
    """An open batch, with the store's view of its progress."""

    id: int
    api_id: str | None  # None while batches.create has not answered
    state: str
    requests: int
    by_state: dict[str, int]  # its requests by state, now
    created_at: float
    submitted_at: float | None
    ended_at: float | None

    @property
    def finished(self) -> int:
        """Its requests with a final outcome (ingested from its results, or answered elsewhere)."""
        return sum(self.by_state.get(s, 0) for s in states.FINAL_STATES)


@dataclass(frozen=True)
class Turnarounds:
    """Batch turnarounds (API created -> ended): counts at or under each bound, all, their sum."""

    bounds: tuple[float, ...]
    within: list[int]
    count: int
    sum: float


@dataclass(frozen=True)
class Snapshot:
    """A database's figures at one moment (`take`)."""

    store: str
    at: float  # wall-clock time it was taken
    flusher: str  # [router] flusher of the config that took it
    classes: dict[str, ClassFigures]
    batches: list[BatchFigures]
    lease: Lease | None  # the driver lease row, live or lapsed
    answers: dict[tuple[str, str, str], int]  # (lane, class, outcome) -> API answers in the ledger
    cost: CostSummary  # everything the ledger holds
    today: CostSummary  # ledger rows from local midnight on
    today_since: float
    turnarounds: Turnarounds
    webhooks: list[EndpointFigures] = field(default_factory=list)  # deliveries per endpoint
    providers: dict[str, CostSummary] = field(default_factory=dict)  # `cost`, by provider

    @property
    def states(self) -> dict[str, int]:
        """Requests by state, over every class (every state present, 0 when none)."""
        out = dict.fromkeys(STATES, 0)
        for figures in self.classes.values():
            for state, n in figures.states.items():
                out[state] = out.get(state, 0) + n
        return out

    @property
    def lease_live(self) -> bool:
        """True when a daemon holds the lease now (its last renewal has not run out)."""
        return self.lease is not None and self.lease.expires_at > self.at

    def holds_lease(self, owner: str) -> bool:
        return self.lease_live and self.lease is not None and self.lease.owner == owner

    def to_json(self) -> dict[str, Any]:
        """The figures as plain JSON values (`status --json`); times are Unix seconds."""
        lease: dict[str, Any] = {"held": self.lease_live}
        if self.lease is not None and self.lease_live:
            lease.update(
                owner=self.lease.owner,
                acquired_at=self.lease.acquired_at,
                expires_at=self.lease.expires_at,
            )
        else:
            lease["message"] = "no daemon holds the lease"
        return {
            "store": self.store,
            "at": self.at,
            "flusher": self.flusher,
            "requests": self.states,
            "classes": {
                name: {
                    "route": c.route,
                    "requests": c.states,
                    "oldest_pending_at": c.oldest_pending_at,
                    "oldest_pending_seconds": _age(self.at, c.oldest_pending_at),
                    "trigger": c.trigger,
                    "next_flush_at": c.next_flush_at,
                    "escalations": c.escalations,
                }
                for name, c in self.classes.items()
            },
            "batches": [
                {
                    "id": b.id,
                    "api_id": b.api_id,
                    "state": b.state,
                    "requests": b.requests,
                    "finished": b.finished,
                    "by_state": b.by_state,
                    "created_at": b.created_at,
                    "submitted_at": b.submitted_at,
                    "ended_at": b.ended_at,
                    "age_seconds": _age(self.at, b.created_at),
                }
                for b in self.batches
            ],
            "lease": lease,
            "webhooks": [
                {
                    "endpoint": w.endpoint,
                    "failing": w.failing,
                    "pending": w.pending,
                    "retrying": w.retrying,
                    "delivered": w.delivered,
                    "failed": w.failed,
                    "max_attempts": w.max_attempts,
                    "last_error": w.last_error,
                    "oldest_pending_seconds": _age(self.at, w.oldest_pending_at),
                }
                for w in self.webhooks
            ],
            "spend_today": _spend(self.today) | {"since": self.today_since},
            "spend_total": _spend(self.cost),
        }


def _age(now: float, since: float | None) -> float | None:
    return None if since is None else max(0.0, now - since)


def _spend(summary: CostSummary) -> dict[str, Any]:
    return {
        "requests": summary.requests,
        "cost_usd": round(summary.total_cost, 6),
        "all_realtime_usd": round(summary.all_realtime_cost, 6),
        "saved_usd": round(summary.saving, 6),
        "saved_pct": round(summary.saving_pct, 2),
        "by_lane": {"realtime": round(summary.realtime.cost, 6), "batch": round(summary.batch.cost, 6)},
    }


def local_midnight(now: float) -> float:
    """The start of `now`'s day in this machine's time zone."""
    return datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def describe_trigger(cls: LatencyClass) -> str:
    """A class's flush triggers in the config's words."""
    parts = []
    if cls.every:
        parts.append(f"every {format_duration(cls.every)}")
    if cls.cron:
        parts.append(f"cron {cls.cron} {cls.timezone}")
    if cls.max_wait:
        parts.append(f"max_wait {format_duration(cls.max_wait)}")
    if cls.max_pending:
        parts.append(f"max_pending {cls.max_pending:,}")
    if cls.max_pending_bytes:
        parts.append(f"max_pending_bytes {cls.max_pending_bytes:,}")
    return ", ".join(parts)


def next_flush_at(
    cls: LatencyClass, now: float, *, oldest_pending_at: float | None, scheduler_since: float | None
) -> float | None:
    """When the class flushes next, from its triggers (APScheduler's own trigger classes).

    A cron fires at known times. An `every` interval counts from when the scheduler that runs it
    started (`scheduler_since`: the daemon's lease was acquired then), unknown without one. A
    `max_wait` fires once the oldest pending request is that old. Size triggers have no time.
    """
    at = datetime.fromtimestamp(now, UTC)
    times: list[float] = []
    if cls.cron:
        fire = cron_trigger(cls.cron, timezone=cls.timezone).get_next_fire_time(None, at)
        if fire is not None:
            times.append(fire.timestamp())
    if cls.every and scheduler_since is not None:
        # The scheduler's interval jobs start one interval after they were added.
        start = datetime.fromtimestamp(scheduler_since + cls.every, UTC)
        fire = IntervalTrigger(seconds=cls.every, start_date=start, timezone=UTC).get_next_fire_time(None, at)
        if fire is not None:
            times.append(fire.timestamp())
    if cls.max_wait and oldest_pending_at is not None:
        times.append(max(now, oldest_pending_at + cls.max_wait))
    return min(times) if times else None


async def take(store: StoreEngine, config: RouterConfig, *, now: float | None = None) -> Snapshot:
    """Read every figure of the database behind `store` (a handful of read-only statements)."""
    now = time.time() if now is None else now
    today_since = local_midnight(now)
    lease = await store.lease()
    live = lease is not None and lease.expires_at > now
    per_class: dict[str, dict[str, int]] = {}
    oldest: dict[str, float] = {}
    escalations: dict[str, dict[str, int]] = {}
    for name, state, count, first, before, out in await store.class_state_figures():
        per_class.setdefault(name, {})[state] = count
        if state == states.PENDING and first is not None:
            oldest[name] = first
        esc = escalations.setdefault(name, dict.fromkeys(ESCALATION_REASONS, 0))
        esc["turnaround"] += before
        esc["batch_late"] += out
    names = [n for n, c in config.classes.items() if c.is_batch]
    names += sorted(set(per_class) - set(names))  # rows of a class the config no longer has
    classes: dict[str, ClassFigures] = {}
    for name in names:
        cls = config.classes.get(name)
        batch = cls is not None and cls.is_batch
        classes[name] = ClassFigures(
            name=name,
            route=cls.route if cls is not None else None,
            states=dict.fromkeys(STATES, 0) | per_class.get(name, {}),
            oldest_pending_at=oldest.get(name),
            escalations=escalations.get(name, dict.fromkeys(ESCALATION_REASONS, 0)),
            trigger=describe_trigger(cls) if cls is not None and batch else "",
            next_flush_at=next_flush_at(
                cls,
                now,
                oldest_pending_at=oldest.get(name),
                scheduler_since=lease.acquired_at if live and lease is not None else None,
            )
            if cls is not None and batch
            else None,
        )
    progress = await store.open_batch_progress()
    batches = [
        BatchFigures(
            id=b.id,
            api_id=b.api_id,
            state=b.state,
            requests=b.request_count,
            by_state=progress.get(b.id, {}),
            created_at=b.created_at,
            submitted_at=b.submitted_at,
            ended_at=b.ended_at,
        )
        for b in await store.open_batches()
    ]
    ledger = await store.ledger_figures(today_since)
    answers: dict[tuple[str, str, str], int] = {}
    for row in ledger:
        outcome = "duplicate" if row["duplicate"] else str(row["result_type"])
        key = (str(row["lane"]), str(row["class"] or ""), outcome)
        answers[key] = answers.get(key, 0) + int(row["requests"] or 0)
    billed = [row for row in ledger if row["result_type"] == "succeeded"]
    within, count, total = await store.turnaround_buckets(TURNAROUND_BUCKETS)
    return Snapshot(
        store=str(store.location),
        at=now,
        flusher=config.router.flusher,
        classes=classes,
        batches=batches,
        lease=lease,
        answers=answers,
        cost=summary_of(billed, config),
        today=summary_of([row for row in billed if row["today"]], config),
        today_since=today_since,
        turnarounds=Turnarounds(TURNAROUND_BUCKETS, within, count, total),
        webhooks=await store.endpoint_figures(),
        providers={
            name: summary_of([row for row in billed if (row["provider"] or "anthropic") == name], config)
            for name in sorted({str(row["provider"] or "anthropic") for row in billed})
        },
    )
