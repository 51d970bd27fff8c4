"""Deadlines: batch turnaround estimates and escalation of at-risk requests to real time.

A deferred request must never miss its deadline because of the batch path. A request whose
deadline a batch cannot meet (now + estimated turnaround + margin) goes real time at once;
one that is pending or in flight when its deadline comes within the margin is escalated:
sent real time, its caller resolved with that reply, and a late batch result for it
recorded for cost but not delivered twice. First final outcome wins, whichever lane.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import RouterConfig
from .logs import get_logger
from .realtime import RealtimeLane
from .store import AtRisk, LedgerEntry, StoreEngine, custom_id_for, states

log = get_logger(__name__)

MIN_SAMPLES = 3  # batches of history before the estimate replaces the prior


class TurnaroundEstimator:
    """A high percentile of observed batch turnaround (submit -> ended), per model."""

    def __init__(self, store: StoreEngine, *, prior: float, percentile: float) -> None:
        self._store = store
        self.prior = prior
        self.percentile = percentile
        self._by_model: dict[str, float] = {}
        self._overall: float | None = None

    async def refresh(self) -> None:
        samples: dict[str, list[float]] = {}
        overall = await self._store.turnaround_samples(None)
        for model, seconds in await self._store.recent_turnarounds(5000):
            bucket = samples.setdefault(model, [])
            if len(bucket) < 200:
                bucket.append(seconds)
        self._by_model = {m: self._quantile(s) for m, s in samples.items() if len(s) >= MIN_SAMPLES}
        self._overall = self._quantile(overall) if len(overall) >= MIN_SAMPLES else None

    def _quantile(self, values: list[float]) -> float:
        ordered = sorted(values)
        rank = max(0, math.ceil(self.percentile * len(ordered)) - 1)  # nearest-rank percentile
        return ordered[rank]

    def estimate(self, model: str | None) -> float:
        """Seconds a batch is expected to take for `model` (the prior until there is history)."""
        if model is not None and model in self._by_model:
            return self._by_model[model]
        return self._overall if self._overall is not None else self.prior

    def longest(self) -> float:
        return max([self.prior, *self._by_model.values(), *([self._overall] if self._overall else [])])


@dataclass
class EscalationReport:
    """What one escalation pass did."""

    escalated: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)  # on_deadline_risk = "fail"
    canceled_batches: list[str] = field(default_factory=list)


class Escalator:
    """Finds requests whose deadline a batch can no longer meet and sends them real time."""

    def __init__(
        self,
        *,
        store: StoreEngine,
        lane: RealtimeLane,
        config: RouterConfig,
        lanes: Mapping[str, RealtimeLane] | None = None,
        estimator: TurnaroundEstimator,
        clock: Callable[[], float],
        on_finished: Callable[[list[int]], None],
    ) -> None:
        self._store = store
        self._lane = lane
        # Each provider's real-time lane; `lane` serves a provider that has none here.
        self._lanes: Mapping[str, RealtimeLane] = lanes if lanes is not None else {lane.provider.name: lane}
        self._config = config
        self._estimator = estimator
        self._clock = clock
        self._on_finished = on_finished
        self._sending: dict[int, asyncio.Task[None]] = {}
        self._retry: set[int] = set()  # escalated by this process, real-time send failed: try again

    def at_risk_now(self, model: str | None, deadline_at: float | None, now: float) -> bool:
        """Whether a request entering the batch path now would miss its deadline."""
        if deadline_at is None:
            return False
        margin = self._config.batch.deadline_margin
        return now + self._estimator.estimate(model) + margin >= deadline_at

    async def run(self) -> EscalationReport:
        """One pass: escalate (or fail) at-risk requests, resend lost sends, cancel escalated batches."""
        report = EscalationReport()
        now = self._clock()
        margin = self._config.batch.deadline_margin
        candidates = await self._store.at_risk(now + margin + self._estimator.longest())
        due: list[AtRisk] = []
        for row in candidates:
            if row.state == states.SUBMITTED:
                risky = now + margin >= row.deadline_at  # its batch is late: no time left to wait
            else:
                risky = self.at_risk_now(row.model, row.deadline_at, now)
            if risky:
                due.append(row)
        to_fail = [r for r in due if self._policy(r.latency) == "fail"]
        to_escalate = [r for r in due if self._policy(r.latency) != "fail"]
        for row in to_fail:
            if await self._fail(row, now):
                report.failed.append(row.id)
        won = await self._store.mark_escalated(to_escalate, now)
        report.escalated.extend(won)
        for rid in won:
            log.info("request_escalated", request_id=rid, reason="deadline_at_risk")
        # Real-time sends lost with a crashed process (never those in flight here).
        stale_before = now - self._config.anthropic.timeout
        self._retry.update(await self._store.take_over_stale(before=stale_before, now=now))
        self._start_sends([*won, *self._retry])
        self._retry.clear()
        touched = {r.batch_id for r in to_escalate if r.id in won}
        report.canceled_batches = await self._cancel_mostly_escalated(touched)
        if report.failed:
            self._on_finished(report.failed)
        return report

    async def escalate_ids(self, ids: list[int], now: float) -> list[int]:
        """Escalate specific pending requests at once (submit() of a request no batch can serve in time)."""
        rows = [AtRisk(i, "", "", "", states.PENDING, now, None) for i in ids]
        won = await self._store.mark_escalated(rows, now)
        self._start_sends(won)
        return won

    async def drain(self) -> None:
        """Wait for the real-time sends in progress (tests, shutdown)."""
        while self._sending:
            await asyncio.gather(*list(self._sending.values()), return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._sending.values()):
            task.cancel()
        await asyncio.gather(*list(self._sending.values()), return_exceptions=True)
        self._sending.clear()

    def _policy(self, latency: str) -> str:
        cls = self._config.classes.get(latency)
        return cls.on_deadline_risk if cls is not None else "escalate"

    def _start_sends(self, ids: list[int]) -> None:
        fresh = [i for i in dict.fromkeys(ids) if i not in self._sending]
        if not fresh:
            return
        loop = asyncio.get_running_loop()
        for rid in fresh:
            task = loop.create_task(self._send(rid), name=f"hybrid-router-escalate-{rid}")
            self._sending[rid] = task
            task.add_done_callback(functools.partial(self._sent, rid))

    def _sent(self, request_id: int, _task: asyncio.Task[None]) -> None:
        self._sending.pop(request_id, None)

    async def _send(self, request_id: int) -> None:
        rows = await self._store.escalated_params([request_id])
        if not rows:
            return  # purged meanwhile
        _, latency, tag, _model, params, provider_name = rows[0]
        kwargs: dict[str, Any] = json.loads(params)
        lane = self._lanes.get(provider_name, self._lane)
        provider = lane.provider
        try:
            reply = await lane.send(kwargs)
        except Exception as exc:
            if provider.is_retryable(exc):
                self._retry.add(request_id)
                log.warning("escalation_send_failed", request_id=request_id, error=str(exc))
                return
            errored = provider.error_result(exc)
            if errored is None:
                raise
            line = _line(request_id, errored)
            await self._finish(request_id, line, succeeded=False, outcome="errored", ledger=None)
            return
        line = _line(request_id, provider.reply_result(reply))
        entry = lane.ledger_entry(reply, latency=latency, tag=tag, request_id=request_id)
        await self._finish(request_id, line, succeeded=True, outcome="succeeded", ledger=entry)

    async def _finish(
        self, request_id: int, line: bytes, *, succeeded: bool, outcome: str, ledger: LedgerEntry | None
    ) -> None:
        done = await self._store.complete(
            request_id,
            from_states=(states.ESCALATED,),
            succeeded=succeeded,
            outcome=outcome,
            line=line,
            now=self._clock(),
            ledger=ledger,
        )
        if done:
            self._on_finished([request_id])
        elif ledger is not None:
            # The batch answered first: this real-time reply was billed but is not delivered.
            await self._store.record_now(dataclasses.replace(ledger, duplicate=True))

    async def _fail(self, row: AtRisk, now: float) -> bool:
        reason = (
            f"request {row.key!r} (class {row.latency!r}) cannot meet its deadline through a batch and its"
            ' class says on_deadline_risk = "fail"'
        )
        line = _line(row.id, {"type": "deadline", "reason": reason})
        return await self._store.complete(
            row.id,
            from_states=(row.state,),
            succeeded=False,
            outcome="deadline",
            line=line,
            now=now,
        )

    async def _cancel_mostly_escalated(self, batch_ids: set[int | None]) -> list[str]:
        canceled: list[str] = []
        wanted = {b for b in batch_ids if b is not None}
        if not wanted:
            return canceled
        for batch in await self._store.open_batches():
            if batch.id not in wanted or batch.api_id is None or batch.state != states.B_IN_PROGRESS:
                continue
            remaining = await self._store.still_in_batch(batch.id)
            if remaining * 2 < batch.request_count:
                provider = self._lanes.get(batch.provider, self._lane).provider
                try:
                    await provider.cancel_batch(batch.api_id)
                except Exception as exc:
                    if not provider.is_transient(exc):
                        raise
                    log.warning("batch_cancel_failed", batch_id=batch.api_id, error=str(exc))
                    continue
                await self._store.update_batch(batch.id, state=states.B_CANCELING)
                canceled.append(batch.api_id)
                log.info("batch_canceled_for_escalation", batch_id=batch.api_id, remaining=remaining)
        return canceled


def _line(request_id: int, result: dict[str, Any]) -> bytes:
    return json.dumps({"custom_id": custom_id_for(request_id), "result": result}).encode()
