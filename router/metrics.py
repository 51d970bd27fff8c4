"""The daemon's HTTP endpoints: Prometheus text at /metrics, /healthz and /readyz.

Served by aiohttp inside the daemon's own event loop rather than by prometheus_client's
threaded server: the figures are read from the store through the daemon's own store
connections, which belong to that loop, and /healthz answering proves the loop itself answers.
A scrape takes one snapshot of the store (router/observe.py), and a custom Collector turns it
into metric families, so one scrape covers every app on the database.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from .config import is_loopback, parse_listen_address
from .errors import RouterError
from .logs import get_logger
from .observe import Snapshot

log = get_logger(__name__)


class MetricsAddressError(RouterError):
    """The metrics address is malformed, not loopback without --metrics-public, or cannot be bound."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def metrics_address(text: str, *, public: bool, what: str = "--metrics") -> Address:
    """Parse `host:port`; a non-loopback host needs `public` (the figures show what is stored)."""
    try:
        host, port = parse_listen_address(text)
    except ValueError as exc:
        raise MetricsAddressError(f"{what}: {exc}") from None
    if not public and not is_loopback(host):
        raise MetricsAddressError(
            f"{what} {text}: not a loopback address, so other hosts could read the metrics;"
            " use 127.0.0.1:PORT, or add --metrics-public to serve it to other hosts"
        )
    return Address(host, port)


@dataclass(frozen=True, slots=True)
class DaemonView:
    """What only the daemon knows, added to the store's figures at each scrape."""

    owner: str
    last_poll_age: float | None  # seconds since this daemon's last poll finished (None: none yet)


def families(snapshot: Snapshot, daemon: DaemonView) -> list[Metric]:
    """The snapshot as Prometheus metric families."""
    answers = CounterMetricFamily(
        "hybrid_router_requests",
        "API answers recorded in the store's ledger, by lane, latency class and outcome (the result"
        " type, or duplicate: an answer for a request the other lane had answered)",
        labels=["lane", "class", "outcome"],
    )
    for (lane, name, outcome), n in sorted(snapshot.answers.items()):
        answers.add_metric([lane, name, outcome], n)
    by_state = GaugeMetricFamily("hybrid_router_requests", "Stored requests by state", labels=["state"])
    for state, n in snapshot.states.items():
        by_state.add_metric([state], n)
    oldest = GaugeMetricFamily(
        "hybrid_router_oldest_pending_seconds",
        "Age of the oldest pending request of each batch class (0 when none is pending)",
        labels=["class"],
    )
    escalations = CounterMetricFamily(
        "hybrid_router_escalations",
        "Requests taken off the batch path and sent real time, by class and reason (turnaround: no"
        " batch could meet the deadline; batch_late: its batch had not ended near the deadline)",
        labels=["class", "reason"],
    )
    for name, c in snapshot.classes.items():
        first = c.oldest_pending_at
        oldest.add_metric([name], max(0.0, snapshot.at - first) if first is not None else 0.0)
        for reason, n in c.escalations.items():
            escalations.add_metric([name, reason], n)
    open_batches = GaugeMetricFamily(
        "hybrid_router_batches_open", "Batches not yet done (being created, in progress or ingesting)"
    )
    open_batches.add_metric([], len(snapshot.batches))
    t = snapshot.turnarounds
    turnaround = HistogramMetricFamily(
        "hybrid_router_batch_turnaround_seconds",
        "Batch turnaround, created to ended on the API's clock (canceled batches left out)",
        buckets=[*((_bound(b), n) for b, n in zip(t.bounds, t.within, strict=True)), ("+Inf", t.count)],
        sum_value=t.sum,
    )
    cost = CounterMetricFamily(
        "hybrid_router_cost_usd", "USD billed per lane, from the usage in the ledger", labels=["lane"]
    )
    cost.add_metric(["realtime"], snapshot.cost.realtime.cost)
    cost.add_metric(["batch"], snapshot.cost.batch.cost)
    saved = CounterMetricFamily(
        "hybrid_router_saved_usd", "USD saved against sending every call in the ledger real time"
    )
    saved.add_metric([], snapshot.cost.saving)
    provider_cost = CounterMetricFamily(
        "hybrid_router_provider_cost_usd",
        "USD billed per provider and lane, from the usage in the ledger (priced calls only)",
        labels=["provider", "lane"],
    )
    unpriced = CounterMetricFamily(
        "hybrid_router_provider_unpriced_requests",
        "Billed calls per provider whose model no price table knows: their cost is unknown, not 0",
        labels=["provider"],
    )
    for name, summary in snapshot.providers.items():
        provider_cost.add_metric([name, "realtime"], summary.realtime.cost)
        provider_cost.add_metric([name, "batch"], summary.batch.cost)
        unpriced.add_metric([name], summary.realtime.unpriced + summary.batch.unpriced)
    held = GaugeMetricFamily("hybrid_router_lease_held", "1 while this daemon holds the database's lease")
    held.add_metric([], 1.0 if snapshot.holds_lease(daemon.owner) else 0.0)
    poll_age = GaugeMetricFamily(
        "hybrid_router_last_poll_age_seconds", "Seconds since this daemon's last poll finished (NaN: none)"
    )
    poll_age.add_metric([], daemon.last_poll_age if daemon.last_poll_age is not None else math.nan)
    deliveries = GaugeMetricFamily(
        "hybrid_router_webhook_deliveries",
        "Webhook deliveries in the store by endpoint and state (pending, retrying: pending after a"
        " failed attempt, delivered, failed: given up)",
        labels=["endpoint", "state"],
    )
    failing = GaugeMetricFamily(
        "hybrid_router_webhook_endpoint_failing",
        "1 while an endpoint has a delivery waiting to be tried again after a failed attempt",
        labels=["endpoint"],
    )
    for w in snapshot.webhooks:
        for state, n in (
            ("pending", w.pending),
            ("retrying", w.retrying),
            ("delivered", w.delivered),
            ("failed", w.failed),
        ):
            deliveries.add_metric([w.endpoint, state], n)
        failing.add_metric([w.endpoint], 1.0 if w.failing else 0.0)
    return [
        answers,
        by_state,
        oldest,
        open_batches,
        turnaround,
        escalations,
        cost,
        saved,
        provider_cost,
        unpriced,
        held,
        poll_age,
        deliveries,
        failing,
    ]


def _bound(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


class SnapshotCollector(Collector):
    """Turns the snapshot taken for the current scrape into metric families."""

    def __init__(self) -> None:
        self.current: tuple[Snapshot, DaemonView] | None = None

    def collect(self) -> Iterable[Metric]:
        return families(*self.current) if self.current is not None else []


Ready = tuple[bool, dict[str, object]]


class MetricsServer:
    """/metrics, /healthz and /readyz on one address, in the running event loop."""

    def __init__(
        self,
        address: Address,
        *,
        snapshot: Callable[[], Awaitable[tuple[Snapshot, DaemonView]]],
        ready: Callable[[], Awaitable[Ready]],
        what: str = "--metrics",
    ) -> None:
        self.address = address
        self._snapshot = snapshot
        self._ready = ready
        self._what = what
        self._collector = SnapshotCollector()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self._collector)
        for extra in (ProcessCollector, PlatformCollector, GCCollector):
            extra(registry=self._registry)
        self._runner: web.AppRunner | None = None
        self.bound: Address | None = None

    async def start(self) -> Address:
        """Bind and serve; returns the address bound (port 0 picks a free one)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.address.host, self.address.port, shutdown_timeout=1.0)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise MetricsAddressError(f"{self._what} {self.address}: cannot listen there: {reason}") from None
        self._runner = runner
        bound = runner.addresses
        self.bound = Address(self.address.host, int(bound[0][1])) if bound else self.address
        log.info("metrics_serving", address=str(self.bound))
        return self.bound

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        try:
            current = await self._snapshot()
        except Exception as exc:  # the store did not answer: say so instead of serving stale figures
            log.warning("metrics_scrape_failed", error=str(exc))
            return web.Response(status=503, text=f"the store did not answer: {exc}\n")
        # No await from here to the output: a concurrent scrape cannot swap the snapshot.
        self._collector.current = current
        try:
            body = generate_latest(self._registry)
        finally:
            self._collector.current = None
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return _json(200, {"ok": True, "at": time.time()})

    async def _readyz(self, _request: web.Request) -> web.Response:
        try:
            ready, body = await self._ready()
        except Exception as exc:
            ready, body = False, {"reason": f"the readiness check failed: {exc}"}
        return _json(200 if ready else 503, {"ready": ready, **body})


def _json(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body) + "\n", content_type="application/json")
