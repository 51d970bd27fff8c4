"""The Router: one async, drop-in interface over the real-time and batch lanes.

It composes the providers by name (router/providers/): it opens their SDK clients, lanes
and outcomes, and runs the flush, poll, reconciliation and escalation over them. What
callers see of each provider is its drop-in: `client.messages` (and `models`, `beta`,
`results`) in router/providers/anthropic/dropin.py, `client.openai` in
router/providers/openai/dropin.py.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from . import batcher, poller, reconcile
from .config import LatencyClass, OpenAISettings, RouterConfig, load_config
from .daemon_watch import DaemonWatch
from .deadlines import EscalationReport, Escalator, TurnaroundEstimator
from .errors import DeadlineError, InvalidRequestError, RouterError
from .logs import get_logger
from .outcomes import Outcome, ProviderOutcomes, outcome_of
from .policy import Policy
from .prefix import identify
from .pricing import PriceTable
from .providers.anthropic.client import AsyncAnthropic
from .providers.anthropic.client import build_client as build_anthropic_client
from .providers.anthropic.dropin import AnthropicDropIn, Messages, Results
from .providers.anthropic.params import batch_params, serialize
from .providers.anthropic.provider import AnthropicProvider
from .providers.base import Provider
from .realtime import RealtimeLane
from .retry import Backoff, should_resubmit
from .scheduler import RouterScheduler
from .store import (
    NewRequest,
    RequestRow,
    StoreEngine,
    Ticket,
    entries_budget,
    entry_bytes,
    open_store,
    states,
)
from .watcher import CompletionListener, CompletionWatcher
from .webhooks import Dispatcher, outbox_policy

if TYPE_CHECKING:
    from .providers.openai.client import AsyncOpenAI
    from .providers.openai.dropin import OpenAIDropIn

log = get_logger(__name__)

Clock = Callable[[], float]
_T = TypeVar("_T")


class UnknownKeyError(RouterError, KeyError):
    """No request with this key is stored."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown key"


class Router(AnthropicDropIn):
    """Routes `messages.create` calls to real time or to batches by latency class.

    Use as ``async with Router.from_config("router.toml") as client: ...``.
    """

    def __init__(
        self,
        config: RouterConfig | None = None,
        *,
        anthropic: AsyncAnthropic | None = None,
        openai: AsyncOpenAI | None = None,
        clock: Clock | None = None,
        scheduler: bool | None = None,
        create_store: bool = True,
    ) -> None:
        """`create_store=False` opens an existing database only: a missing one is a StoreError
        and nothing is created (the CLI's status, report, results and purge). `openai`: the
        OpenAI SDK client to use (else one is built from [providers.openai] when OpenAI is
        configured, see `openai_configured`)."""
        self.config = config if config is not None else RouterConfig.default()
        self.policy = Policy(self.config)
        self.clock: Clock = clock or time.time
        self._given_client = anthropic
        self._client: AsyncAnthropic | None = None
        self._provider: AnthropicProvider | None = None
        self._given_openai = openai
        self._openai: AsyncOpenAI | None = None
        self._providers: dict[str, Provider] = {}
        self._outcomes: ProviderOutcomes | None = None
        self._lanes: dict[str, RealtimeLane] = {}
        self._store: StoreEngine | None = None
        self._watcher: CompletionWatcher | None = None
        self._realtime: RealtimeLane | None = None
        self._scheduler: RouterScheduler | None = None
        self._estimator: TurnaroundEstimator | None = None
        self._escalator: Escalator | None = None
        self._daemon_watch: DaemonWatch | None = None
        self._webhooks: Dispatcher | None = None
        # None: run the scheduler when [router] flusher = "inline"; CLI one-shot commands pass False.
        self._run_scheduler = scheduler
        self._create_store = create_store
        self._flush_locks: dict[str, asyncio.Lock] = {}
        # Scheduled flushes wait out a failed batches.create (429 retry-after, 5xx) before trying again.
        self._create_backoff = Backoff()
        self._poll_lock = asyncio.Lock()
        self.last_poll_at: float | None = None  # time.monotonic() when a poll last finished here
        # Reconciliation of lost create answers: batches being created here right now, those
        # whose create ended here without an answer, and the time before which no other
        # process can still be creating one (the daemon sets it to the start of its lease).
        self._creating: set[int] = set()
        self._settled: set[int] = set()
        self.settled_before = float("-inf")
        self._enqueued_since_check: dict[str, int] = {}
        self._held_classes: set[str] = set()  # classes whose last flush held prefix groups back
        self._prices: PriceTable | None = None
        self.messages = Messages(self)
        self.results = Results(self)

    @classmethod
    def from_config(cls, path: str | os.PathLike[str], **kwargs: Any) -> Router:
        """A Router configured from a TOML file (see config.example.toml)."""
        return cls(load_config(path), **kwargs)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Router:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        if self._store is not None:
            return
        cfg = self.config
        self._store = await open_store(cfg.store, create=self._create_store)
        self._store.set_outbox(outbox_policy(cfg))
        self._client = self._given_client or build_anthropic_client(cfg.anthropic)
        self._provider = AnthropicProvider(self._client)
        self._providers = {"anthropic": self._provider}
        if self._given_openai is not None or openai_configured(cfg):
            # Imported only here: the openai SDK takes ~2 s to import, which an Anthropic-only
            # process (a CLI command, an app) should not pay.
            from .providers.openai import OpenAIProvider

            self._openai = self._given_openai or build_openai_client(cfg)
            self._providers["openai"] = OpenAIProvider(self._openai)
        self._outcomes = ProviderOutcomes(self._providers)
        self._realtime = RealtimeLane(
            self._provider,
            concurrency=cfg.anthropic.realtime_concurrency,
            store=self._store,
            clock=self.clock,
        )
        self._lanes = {"anthropic": self._realtime}
        if "openai" in self._providers:
            self._lanes["openai"] = RealtimeLane(
                self._providers["openai"],
                concurrency=(cfg.providers.openai or OpenAISettings()).realtime_concurrency,
                store=self._store,
                clock=self.clock,
            )
        self._watcher = CompletionWatcher(self._store, self._outcomes, interval=cfg.router.watch_interval)
        await self._watcher.start()
        self._estimator = TurnaroundEstimator(
            self._store, prior=cfg.batch.turnaround_prior, percentile=cfg.batch.turnaround_percentile
        )
        await self._estimator.refresh()
        self._escalator = Escalator(
            store=self._store,
            lane=self._realtime,
            lanes=self._lanes,
            config=cfg,
            estimator=self._estimator,
            clock=self.clock,
            on_finished=self._finished,
        )
        run_scheduler = cfg.router.flusher == "inline" if self._run_scheduler is None else self._run_scheduler
        if run_scheduler:
            self.start_scheduler()
        elif cfg.router.flusher == "daemon":  # warn when no daemon serves the requests this app waits on
            self._daemon_watch = DaemonWatch(
                self._store, clock=self.clock, active=lambda: self._scheduler is None
            )
            self._daemon_watch.start()
        log.debug("router_opened", store=cfg.store.location, flusher=cfg.router.flusher)

    def start_scheduler(
        self,
        *,
        housekeeping: Callable[[], Awaitable[object]] | None = None,
        housekeeping_every: float = 86_400.0,
    ) -> RouterScheduler:
        """Run the flush, trigger, poll and escalation jobs in this process (the daemon calls
        it once it holds the database's lease; an inline Router at open)."""
        if self._scheduler is not None:
            return self._scheduler
        cfg = self.config
        self._scheduler = RouterScheduler(
            classes=cfg.classes,
            flush=self._scheduled_flush,
            check_triggers=self.check_triggers,
            poll=self._scheduled_poll,
            poll_tick=max(0.05, min(cfg.batch.poll_interval, 5.0)),
            escalate=self._scheduled_escalate,
            escalate_every=max(1.0, min(cfg.batch.deadline_margin / 4, 30.0)),
            housekeeping=housekeeping,
            housekeeping_every=housekeeping_every,
        )
        if cfg.webhooks:
            self._webhooks = Dispatcher(self.store, cfg.webhooks)
            self._scheduler.every(cfg.router.webhook_interval, self._scheduled_delivery, "webhooks")
        self._scheduler.start()
        return self._scheduler

    async def close(self) -> None:
        if self._daemon_watch is not None:
            await self._daemon_watch.stop()
            self._daemon_watch = None
        if self._scheduler is not None:
            self._scheduler.shutdown()
            if self._webhooks is not None:
                self._webhooks.stop()  # a hanging receiver must not hold up the shutdown
            await self._scheduler.drain()  # let a running flush record the batch it created
            self._scheduler = None
        if self._webhooks is not None:
            await self._webhooks.close()
            self._webhooks = None
        if self._escalator is not None:
            await self._escalator.stop()
            self._escalator = None
        if self._watcher is not None:
            await self._watcher.stop()
            self._watcher = None
        if self._store is not None:
            await self._store.close()
            self._store = None
        if self._client is not None and self._given_client is None:
            await self._client.close()
        if self._openai is not None and self._given_openai is None:
            await self._openai.close()
        self._client = None
        self._provider = None
        self._openai = None
        self._providers = {}
        self._outcomes = None
        self._lanes = {}

    async def quiesce(self) -> None:
        """Stop the scheduler starting jobs, then wait for a flush or poll already running here to
        finish its step (a batches.create recorded, an ingest chunk committed). The daemon calls
        it before it gives up its lease."""
        if self._scheduler is not None:
            self._scheduler.shutdown()
            if self._webhooks is not None:
                self._webhooks.stop()
            await self._scheduler.drain()
        for _ in range(2):  # a job that started just before the shutdown takes its lock next
            async with self._poll_lock:
                pass
            for lock in list(self._flush_locks.values()):
                async with lock:
                    pass
            await asyncio.sleep(0)

    @property
    def store(self) -> StoreEngine:
        return _opened(self._store)

    @property
    def anthropic(self) -> AsyncAnthropic:
        """The `anthropic.AsyncAnthropic` client: the one given, else one of [anthropic]."""
        return _opened(self._client)

    @property
    def provider(self) -> AnthropicProvider:
        """The provider the engine (flush, poll, reconcile, escalation) works through."""
        return _opened(self._provider)

    @property
    def openai(self) -> OpenAIDropIn:
        """`client.openai`: an `openai.AsyncOpenAI` for chat completions, routed by latency
        class like `client.messages` (router/providers/openai/dropin.py)."""
        from .providers.openai.dropin import OpenAIDropIn  # loads the openai SDK on first use

        _opened(self._store)
        return OpenAIDropIn(self)

    @property
    def providers(self) -> dict[str, Provider]:
        """The providers this Router sends batches to, by name ("anthropic" always; "openai"
        when OpenAI is configured)."""
        _opened(self._store)
        return self._providers

    @property
    def outcomes(self) -> ProviderOutcomes:
        """Decodes a stored result with the provider it came from."""
        return _opened(self._outcomes)

    @property
    def openai_client(self) -> AsyncOpenAI:
        """The `openai.AsyncOpenAI` client of [providers.openai]."""
        _opened(self._store)
        if self._openai is None:
            raise RouterError(
                "OpenAI is not configured: add a [providers.openai] table to the config, or set"
                " OPENAI_API_KEY (and OPENAI_BASE_URL for another endpoint)"
            )
        return self._openai

    def _provider_named(self, name: str) -> Provider:
        provider = self.providers.get(name)
        if provider is None:
            raise RouterError(
                f"provider {name!r} is not configured here (configured: {', '.join(sorted(self.providers))})"
            )
        return provider

    @property
    def scheduler(self) -> RouterScheduler | None:
        return self._scheduler

    @property
    def _lane(self) -> RealtimeLane:
        return _opened(self._realtime)

    @property
    def _deadlines(self) -> Escalator:
        return _opened(self._escalator)

    @property
    def _turnaround(self) -> TurnaroundEstimator:
        return _opened(self._estimator)

    def _finished(self, ids: Sequence[int]) -> None:
        self._waiters.notify(ids)
        self._waiters.wake()

    @property
    def _waiters(self) -> CompletionWatcher:
        return _opened(self._watcher)

    def listener(self) -> CompletionListener:
        """Collects the final rows of the request ids added to it, as they complete (bulk callers:
        one listener, no future per request). Close it when done."""
        return self._waiters.listen()

    # ------------------------------------------------------------------ flushing and polling

    def batch_classes(self) -> list[str]:
        """The names of the latency classes routed to batches."""
        return [name for name, cls in self.config.classes.items() if cls.route == "batch"]

    async def flush(self, latency: str | None = None) -> batcher.FlushReport:
        """Send pending requests (of one class, or all) to the Batch API now."""
        names = [latency] if latency is not None else self.batch_classes()
        unknown = [n for n in names if n not in self.config.classes]
        if unknown:
            raise InvalidRequestError(f"latency: unknown class {unknown[0]!r}")
        lock = self._flush_locks.setdefault(latency or "*", asyncio.Lock())
        async with lock:
            for name in names:
                self._enqueued_since_check[name] = 0
            report = batcher.FlushReport()
            # One provider after another: a claim takes one provider's requests only.
            for provider in self.providers.values():
                part = await batcher.flush(
                    self.store,
                    provider,
                    latencies=names,
                    max_requests=min(self.config.batch.max_requests, provider.limits.max_requests),
                    max_bytes=min(self.config.batch.max_bytes, provider.limits.max_bytes),
                    now=self.clock(),
                    first_poll_after=self.config.batch.poll_interval,
                    in_flight=self._creating,
                    # Prefix groups are Anthropic's prompt caching.
                    cache=self._cache_context() if provider.name == "anthropic" else None,
                )
                report.merge(part)
        # Held prefix groups go once a primer ends or they have waited: the next poll that
        # ends a batch flushes these classes again (see poll()).
        if report.plan is not None and report.plan.held:
            self._held_classes.update(names)
        else:
            self._held_classes.difference_update(names)
        self._settled.update(report.uncertain_ids)
        if report.batches:
            log.info("flush_done", batches=len(report.batches), requests=report.requests)
        return report

    def _cache_context(self) -> batcher.CacheContext:
        if self._prices is None:
            self._prices = PriceTable.bundled().with_overrides(self.config.pricing)
        return batcher.CacheContext(
            classes=self.config.classes,
            turnaround=self._turnaround.estimate,
            margin=self.config.batch.deadline_margin,
            prices=self._prices,
        )

    @property
    def polling(self) -> bool:
        """True while a poll (status checks and ingest) runs in this process."""
        return self._poll_lock.locked()

    async def poll(self, *, force: bool = True) -> poller.PollReport:
        """Check in-flight batches now (all of them with `force`, else those due) and ingest ended ones.

        Returns once this process's callers waiting on the results ingested are woken.
        """
        async with self._poll_lock:
            report = await self._poll(force)
            self.last_poll_at = time.monotonic()
        if report.delivered:
            await self._waiters.delivered()
        if report.ended:
            await self._turnaround.refresh()
            if self._scheduler is not None:
                for name in sorted(self._held_classes):
                    self._scheduler.flush_now(name)
        return report

    async def escalate(self) -> EscalationReport:
        """Escalate (or fail, per policy) requests whose deadline a batch can no longer meet."""
        return await self._deadlines.run()

    async def escalate_now(self, ids: Sequence[int], now: float | None = None) -> list[int]:
        """Send stored pending requests real time at once, the case of requests no batch can answer
        in time (see deadline_risk); returns the ids this call took off the batch path."""
        return await self._deadlines.escalate_ids(list(ids), self.clock() if now is None else now)

    async def drain_escalations(self) -> None:
        """Wait for the real-time sends of escalated requests in progress here (before exiting)."""
        await self._deadlines.drain()

    @property
    def webhooks(self) -> Dispatcher | None:
        """The webhook deliverer this process runs (with the scheduler, when [[webhooks]] exist)."""
        return self._webhooks

    async def _scheduled_delivery(self) -> None:
        # Its own job: a receiver that hangs holds up only this, never a flush or a poll.
        if self._webhooks is None:
            return
        try:
            await self._webhooks.run_once()
        except Exception as exc:
            log.error("webhook_delivery_failed", error=str(exc))

    async def _scheduled_escalate(self) -> None:
        try:
            await self.escalate()
        except Exception as exc:
            log.error("escalation_failed", error=str(exc))

    async def _poll(self, force: bool) -> poller.PollReport:
        # Lost create answers first: an adopted batch is then polled like any other.
        await reconcile.reconcile(
            self.providers,
            self.store,
            now=self.clock(),
            grace=self.config.batch.reconcile_grace,
            in_flight=self._creating,
            settled=self._settled,
            settled_before=self.settled_before,
        )
        return await poller.poll(
            self.providers,
            self.store,
            now=self.clock(),
            base_interval=self.config.batch.poll_interval,
            max_interval=self.config.batch.poll_max_interval,
            max_attempts={name: cls.max_attempts for name, cls in self.config.classes.items()},
            retry=should_resubmit,
            on_finished=self._waiters.notify,
            on_final=self._waiters.deliver,
            ingesting=self._waiters.holding,
            force=force,
        )

    async def _scheduled_flush(self, latency: str) -> None:
        if not self._create_backoff.ready(self.clock()):
            log.debug("flush_backing_off", latency=latency, until=self._create_backoff.not_before)
            return
        try:
            report = await self.flush(latency)
        except Exception as exc:  # a scheduled job must log, not die silently
            log.exception("flush_failed", latency=latency, error=str(exc))
            return
        if report.failure is not None:
            until = self._create_backoff.failed(
                self.clock(),
                self._provider_named(report.failed_provider or "anthropic").retry_after(report.failure),
            )
            log.warning("flush_backoff", latency=latency, retry_in=until - self.clock())
        elif report.batches:
            self._create_backoff.succeeded()

    async def _scheduled_poll(self) -> None:
        try:
            await self.poll(force=False)
        except Exception as exc:
            log.error("poll_failed", error=str(exc))

    async def check_triggers(self, latency: str) -> bool:
        """Flush a class now if its size or age trigger is reached. Returns whether it fired."""
        cls = self.config.classes[latency]
        count, size, oldest = await self.store.pending_stats([latency])
        fired = (
            (cls.max_pending is not None and count >= cls.max_pending)
            or (cls.max_pending_bytes is not None and size >= cls.max_pending_bytes)
            or (cls.max_wait is not None and oldest is not None and self.clock() - oldest >= cls.max_wait)
        )
        if fired and self._scheduler is not None:
            self._scheduler.flush_now(latency)
        return fired

    def after_enqueue(self, cls: LatencyClass) -> None:
        """Count a new request stored for `cls` (not escalated): every so often this checks the
        class's size triggers, and flushes it when one is reached (only with a scheduler here)."""
        if self._scheduler is None or (cls.max_pending is None and cls.max_pending_bytes is None):
            return
        seen = self._enqueued_since_check.get(cls.name, 0) + 1
        # Counting in memory spares a query per enqueue; the store is asked every `step` requests.
        step = min(cls.max_pending or 100, 100)
        if seen < step:
            self._enqueued_since_check[cls.name] = seen
            return
        self._enqueued_since_check[cls.name] = 0
        task = asyncio.get_running_loop().create_task(self.check_triggers(cls.name))
        task.add_done_callback(_log_task_error)

    # ------------------------------------------------------------------ the two lanes

    def resolve_class(self, latency: object, tag: str | None, model: object) -> LatencyClass:
        """The latency class a call goes to: the one `latency` names, else the policy's choice for
        `tag` and `model`. Raises InvalidRequestError for a name that is not a class."""
        return self._resolve_class(latency, tag, model)

    def _resolve_class(self, latency: object, tag: str | None, model: object) -> LatencyClass:
        if latency is not None and not isinstance(latency, str):
            raise InvalidRequestError(f"latency: expected a class name string, got {latency!r}")
        return self.policy.resolve(latency, tag, model if isinstance(model, str) else None)

    def deadline_risk(self, request: NewRequest, cls: LatencyClass) -> bool:
        """Whether no batch can answer `request` before its deadline (the turnaround estimate plus
        `[batch] deadline_margin`): such a request is escalated once stored. Raises DeadlineError
        instead when the class says `on_deadline_risk = "fail"`."""
        if not self._deadlines.at_risk_now(request.model, request.deadline_at, request.created_at):
            return False
        if cls.on_deadline_risk == "fail":
            raise DeadlineError(
                f"latency: class {cls.name!r} has a {cls.deadline or 0:.0f} s deadline but batches are"
                f" expected to take {self._turnaround.estimate(request.model):.0f} s (+ the"
                f" {self.config.batch.deadline_margin:.0f} s margin), and the class says"
                ' on_deadline_risk = "fail"'
            )
        return True

    async def _deferred_ticket(
        self,
        kwargs: dict[str, Any],
        cls: LatencyClass,
        tag: str | None,
        key: str | None,
        *,
        provider: str = "anthropic",
    ) -> Ticket:
        """Store a deferred request for `provider`'s batches. For "openai", `kwargs` are the
        chat-completions keywords, checked and stored as the body of one batch line."""
        target = self._provider_named(provider)
        if provider == "anthropic":
            params = batch_params(kwargs)
        else:
            from .providers.openai.params import batch_params as openai_batch_params

            params = openai_batch_params(kwargs)
        body = serialize(params)  # every provider's body in the one stored encoding
        frame = target.batch_format
        max_bytes = min(self.config.batch.max_bytes, target.limits.max_bytes)
        limit = entries_budget(frame, max_bytes)
        if entry_bytes(frame, 10**12, len(body)) > limit:
            raise InvalidRequestError(
                f"request body is {len(body):,} bytes, more than fits in one {provider} batch ({limit:,}"
                ' bytes with the batch envelope; [batch] max_bytes); send it with latency="realtime"'
                " or make it smaller"
            )
        now = self.clock()
        request = NewRequest(
            key=key or f"auto-{uuid.uuid4().hex}",
            latency=cls.name,
            tag=tag,
            model=str(params["model"]),
            params=body,
            created_at=now,
            deadline_at=now + cls.deadline if cls.deadline is not None else None,
            prefix=identify(body) if provider == "anthropic" else None,
            provider=provider,
        )
        # A batch that cannot finish before the deadline is no option: go real time at once.
        at_risk = self.deadline_risk(request, cls)
        ticket = await self.store.enqueue(request)
        if ticket.created and at_risk:
            await self._deadlines.escalate_ids([ticket.request_id], now)
            log.info("request_escalated", request_id=ticket.request_id, reason="turnaround", latency=cls.name)
        elif ticket.created:
            log.debug("request_deferred", request_id=ticket.request_id, latency=cls.name, tag=tag)
            self.after_enqueue(cls)
        return ticket

    async def _row_by_key(self, key: str) -> RequestRow:
        row = await self.store.get_by_key(key)
        if row is None:
            raise UnknownKeyError(f"no request with key {key!r} in {self.config.store.location}")
        return row

    async def _wait_key(self, key: str, timeout: float | None) -> Outcome:
        """The reply of the request stored under `key`, or its error, once it is final."""
        row = await self._row_by_key(key)
        if row.state in states.FINAL_STATES:
            return outcome_of(row, self.outcomes)
        return await self._waiters.wait(row.id, timeout)


def _opened(part: _T | None) -> _T:
    """A part that exists only while the Router is open."""
    if part is None:
        raise RouterError("the Router is not open: use `async with Router(...) as client:`")
    return part


def openai_configured(config: RouterConfig) -> bool:
    """Whether this config (or the environment) asks for the OpenAI provider: a
    [providers.openai] table, or OPENAI_API_KEY or OPENAI_BASE_URL set."""
    return (
        config.providers.openai is not None
        or bool(os.environ.get("OPENAI_API_KEY"))
        or bool(os.environ.get("OPENAI_BASE_URL"))
    )


def build_openai_client(config: RouterConfig) -> AsyncOpenAI:
    """The SDK client described by [providers.openai] (base_url, else OPENAI_BASE_URL); the
    key comes from OPENAI_API_KEY only."""
    from .providers.openai import build_client

    return build_client(config.providers.openai or OpenAISettings())


def _log_task_error(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background_task_failed", error=str(task.exception()))
