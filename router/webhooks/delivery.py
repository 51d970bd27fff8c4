"""Delivering the outbox: each event to each endpoint that wants it, signed, at least once.

A pass routes new events into deliveries, then claims the deliveries that are due and sends
them concurrently. A claim holds a delivery for twice the attempt's timeout, so a sender
that dies mid-attempt leaves it due again, and it is sent again under the same
`webhook-id` (receivers de-duplicate on it). Timeouts, connection errors, 429 and 5xx are
tried again after an exponential backoff with jitter, until `give_up_after` from the first
attempt; any other answer but 2xx fails the delivery at once. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx2

from .._crashpoints import crash_point
from ..config import WebhookSettings
from ..logs import get_logger
from ..store import Delivery, OutboxEvent, StoreEngine, events
from .routing import routes
from .signing import headers_for

log = get_logger(__name__)

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"

_ERROR_CHARS = 200


def message_id(event: OutboxEvent) -> str:
    """The `webhook-id` of an event: the same on every attempt and replay, to every endpoint."""
    return f"evt_{event.id}_{int(event.created_at * 1000)}"


def body_of(event: OutboxEvent) -> str:
    """The JSON body of an event, the same bytes on every attempt (Standard Webhooks' shape)."""
    at = events.rfc3339(event.created_at)
    return f'{{"type":"{event.type}","timestamp":"{at}","data":{event.payload}}}'


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST came to: the status (None when none came back) and the error, if any."""

    status: int | None
    error: str | None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


@dataclass
class PassReport:
    """What one delivery pass did."""

    routed: int = 0
    sent: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


def backoff(hook: WebhookSettings, attempts: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds before the next attempt after `attempts` failed ones: doubling from
    `retry_initial`, at most `retry_max`, with half of it random (jitter)."""
    ceiling = min(hook.retry_max, hook.retry_initial * 2.0 ** max(0, attempts - 1))
    return ceiling / 2 + rand() * ceiling / 2


class Dispatcher:
    """Routes and delivers the outbox of one store to the configured endpoints."""

    def __init__(
        self,
        store: StoreEngine,
        hooks: Sequence[WebhookSettings],
        *,
        clock: Callable[[], float] = time.time,
        client: httpx2.AsyncClient | None = None,
        concurrency: int = 16,
        batch: int = 200,
    ) -> None:
        self._store = store
        self._hooks = list(hooks)
        self._by_url: dict[str, WebhookSettings] = {}
        for hook in self._hooks:
            self._by_url.setdefault(hook.url, hook)
        self._clock = clock
        self._own_client = client is None
        self._client = client or httpx2.AsyncClient(follow_redirects=False, trust_env=False)
        self._limit = asyncio.Semaphore(concurrency)
        self._batch = batch
        self._sending: set[asyncio.Task[None]] = set()
        self._stopped = False
        self.totals = PassReport()

    def stop(self) -> None:
        """Cut off the sends in flight and start no more: a receiver that hangs must not hold
        up a shutdown. What was cut off is still claimed, and is due again once its hold ends."""
        self._stopped = True
        for task in self._sending:
            task.cancel()

    async def close(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def run_once(self) -> PassReport:
        """Route new events, then send every delivery due now (in rounds of `batch`)."""
        report = PassReport()
        if self._stopped:
            return report
        while events_ := await self._store.unrouted_events():
            pairs = routes(self._hooks, events_)
            await self._store.route_events([e.id for e in events_], pairs, now=self._clock())
            report.routed += len(pairs)
        while True:
            # Long enough for the slowest endpoint to time out; a sender that died mid-attempt
            # leaves the delivery due again soon after.
            hold = 2 * max((h.timeout for h in self._hooks), default=10.0) + 1.0
            claimed = await self._store.claim_deliveries(now=self._clock(), hold=hold, limit=self._batch)
            if not claimed:
                break
            tasks = [asyncio.ensure_future(self._deliver(d, report)) for d in claimed]
            self._sending.update(tasks)
            try:
                await asyncio.gather(*tasks)
            finally:
                self._sending.difference_update(tasks)
            if len(claimed) < self._batch or self._stopped:
                break
        for name in ("routed", "sent", "delivered", "retrying", "failed"):
            setattr(self.totals, name, getattr(self.totals, name) + getattr(report, name))
        for status, n in report.statuses.items():
            self.totals.statuses[status] = self.totals.statuses.get(status, 0) + n
        return report

    async def send(self, hook: WebhookSettings, msg_id: str, body: str) -> Attempt:
        """One signed POST of `body` to `hook` (see `send_signed`), within the concurrency bound."""
        async with self._limit:
            return await send_signed(self._client, hook, msg_id, body)

    async def _deliver(self, delivery: Delivery, report: PassReport) -> None:
        now = self._clock()
        hook = self._by_url.get(delivery.endpoint)
        if hook is None:  # no longer configured: kept, and looked at again later
            missing = "this endpoint is not in the config"
            await self._store.record_delivery(
                delivery.id, state=PENDING, next_at=now + 3600.0, status=None, error=missing, now=now
            )
            return
        crash_point("webhooks.before_send")
        attempt = await self.send(hook, message_id(delivery.event), body_of(delivery.event))
        crash_point("webhooks.after_send")
        report.sent += 1
        label = str(attempt.status) if attempt.status is not None else "error"
        report.statuses[label] = report.statuses.get(label, 0) + 1
        now = self._clock()
        first = delivery.first_tried_at if delivery.first_tried_at is not None else now
        if attempt.ok:
            state, next_at = DELIVERED, None
            report.delivered += 1
        elif attempt.retryable and now - first < hook.give_up_after:
            wait = max(backoff(hook, delivery.attempts), min(attempt.retry_after or 0.0, hook.retry_max))
            state, next_at = PENDING, now + wait
            report.retrying += 1
        else:
            state, next_at = FAILED, None
            report.failed += 1
        await self._store.record_delivery(
            delivery.id, state=state, next_at=next_at, status=attempt.status, error=attempt.error, now=now
        )
        emit = log.info if attempt.ok else log.warning
        emit(
            "webhook_delivered" if attempt.ok else "webhook_attempt_failed",
            endpoint=delivery.endpoint,
            event_type=delivery.event.type,
            webhook_id=message_id(delivery.event),
            attempt=delivery.attempts,
            status=attempt.status,
            error=attempt.error,
            state=state,
        )


async def send_signed(client: httpx2.AsyncClient, hook: WebhookSettings, msg_id: str, body: str) -> Attempt:
    """One signed POST of `body` to `hook`, cut off after its timeout, redirects not followed;
    never raises for what the endpoint or the network does."""
    headers = {
        "content-type": "application/json",
        "user-agent": "hybrid-router-webhooks",
        **headers_for(hook.secret(), msg_id, body, time.time()),
    }
    try:
        response = await client.post(
            hook.url, content=body.encode(), headers=headers, timeout=hook.timeout, follow_redirects=False
        )
    except httpx2.TimeoutException:
        return Attempt(None, f"no answer within {hook.timeout:g} s")
    except httpx2.HTTPError as exc:
        return Attempt(None, f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS])
    status = response.status_code
    if 200 <= status < 300:
        return Attempt(status, None)
    if 300 <= status < 400:
        where = response.headers.get("location", "?")
        return Attempt(status, f"HTTP {status}: redirect to {where} not followed"[:_ERROR_CHARS])
    return Attempt(status, f"HTTP {status}", _retry_after(response.headers.get("retry-after")))


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
