"""The Router as an `anthropic.AsyncAnthropic`: `client.messages` routed by latency class.

`client.messages.create(...)` takes every keyword of the SDK's `messages.create`, plus
`latency`, `tag` and `key`, and returns a `Message` on both lanes: real time through the
Router's real-time lane (its concurrency limit, its cost ledger), deferred through the
store and the Message Batches API. `client.results` finds a deferred request's outcome by
key. `messages.batches`, `messages.count_tokens`, `models` and `beta` are the SDK client's
own, unrouted.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

import anthropic
from anthropic import AsyncAnthropic, AsyncAPIResponse, AsyncStream
from anthropic.resources.beta import AsyncBeta
from anthropic.resources.messages import AsyncBatches, AsyncBatchesWithRawResponse
from anthropic.resources.models import AsyncModels
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent
from typing_extensions import Unpack

from router import bulk
from router.errors import InvalidRequestError
from router.logs import get_logger
from router.outcomes import outcome_of, unwrap
from router.params import check_tag, take_routing
from router.store import RequestRow, Ticket, states

from .create_params import CreateParams, CreateParamsMaybeStreaming, CreateParamsStreaming, SubmitParams
from .limits import check_realtime_size
from .params import check_call_keywords

if TYPE_CHECKING:
    from router.client import Router
    from router.config import LatencyClass

__all__ = ["AnthropicDropIn", "Messages", "MessagesWithRawResponse", "Outcome", "Results"]

log = get_logger(__name__)

Outcome = Message | BaseException  # what a deferred request ends with: its Message or the error


class AnthropicDropIn:
    """What makes the Router an `AsyncAnthropic`: `models` and `beta` here, `messages` and
    `results` set by the Router."""

    @property
    @abstractmethod
    def anthropic(self) -> AsyncAnthropic:
        """The SDK client the Router sends Anthropic calls through."""

    @property
    def models(self) -> AsyncModels:
        """The SDK's `models` resource (list and retrieve the models the API offers)."""
        return self.anthropic.models

    @property
    def beta(self) -> AsyncBeta:
        """The SDK's `beta` resources, unrouted: beta calls go straight to the API."""
        return self.anthropic.beta


class Messages:
    """`client.messages`: the SDK's messages resource, routed."""

    def __init__(self, router: Router) -> None:
        self._router = router
        self.with_raw_response = MessagesWithRawResponse(router)

    @overload
    async def create(self, **kwargs: Unpack[CreateParams]) -> Message: ...
    @overload
    async def create(self, **kwargs: Unpack[CreateParamsStreaming]) -> AsyncStream[RawMessageStreamEvent]: ...
    @overload
    async def create(
        self, **kwargs: Unpack[CreateParamsMaybeStreaming]
    ) -> Message | AsyncStream[RawMessageStreamEvent]: ...
    async def create(self, **kwargs: Any) -> Message | AsyncStream[RawMessageStreamEvent]:
        """Same keywords as `AsyncAnthropic().messages.create`, plus `latency`, `tag` and `key`.

        Returns an `anthropic.types.Message` on both lanes (or the SDK's stream for a
        real-time `stream=True`). A deferred call resolves when its batch result arrives and
        raises the exception the real-time endpoint would have raised for the same error.
        An unknown keyword raises TypeError, as the SDK's create() does.
        """
        router = self._router
        cls, tag, key = _route(router, kwargs, "create")
        if cls.route == "realtime":
            check_realtime_size(kwargs)
            try:
                reply: Message | AsyncStream[RawMessageStreamEvent] = await router._lane.call(
                    router.anthropic.messages.create, **kwargs
                )
            except anthropic.RateLimitError:
                if cls.on_rate_limit != "defer" or kwargs.get("stream"):
                    raise
                target = router.config.classes[cls.defer_class or ""]
                log.info("request_spilled_over", latency=cls.name, to=target.name, tag=tag)
                cls = target
            else:
                router._lane.record(reply, latency=cls.name, tag=tag)  # a stream has no usage to record
                return reply
        ticket = await router._deferred_ticket(kwargs, cls, tag, key)
        message: Message = unwrap(await router._waiters.wait(ticket.request_id))
        return message

    async def submit(self, **kwargs: Unpack[SubmitParams]) -> Ticket:
        """Store a deferrable request and return its ticket once durably committed."""
        call = dict(kwargs)
        cls, tag, key = _route(self._router, call, "submit")
        if cls.route != "batch":
            raise InvalidRequestError(
                f"latency: class {cls.name!r} is real time; submit() stores deferrable requests only"
                " (use create() for real-time calls)"
            )
        return await self._router._deferred_ticket(call, cls, tag, key)

    @property
    def batches(self) -> AsyncBatches:
        """The SDK's `messages.batches`, unrouted: batches this client makes itself are not in the store."""
        return self._router.anthropic.messages.batches

    def map(
        self,
        requests: Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]],
        *,
        latency: str | None = None,
        tag: str | None = None,
        window: int = bulk.DEFAULT_WINDOW,
    ) -> AsyncIterator[tuple[str, Outcome]]:
        """Defer many requests; yields `(key, Message or exception)` as their results arrive.

        `requests` is an iterable or async iterable of create() keyword dicts, each of which
        may carry its own `key` (and `tag`); it is read lazily, and at most `window` requests
        are stored but not yet yielded. A bad item is yielded with its InvalidRequestError
        (nothing stored for it). Requests are flushed by the scheduler (or the daemon); results
        come in completion order. Stopping early leaves the stored requests in the store.
        """
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise InvalidRequestError(f"window: expected an integer >= 1, got {window!r}")
        bulk.check_batch_class(self._router, latency, tag)
        return bulk.map_requests(self._router, requests, latency=latency, tag=tag, window=window)

    def stream(self, **kwargs: Any) -> Any:
        """Real-time streaming, exactly as `AsyncAnthropic().messages.stream`."""
        latency = kwargs.pop("latency", None)
        tag = check_tag(kwargs.pop("tag", None))
        kwargs.pop("key", None)
        cls = self._router.resolve_class(latency, tag, kwargs.get("model"))
        if cls.route != "realtime":
            raise InvalidRequestError(
                f"latency: class {cls.name!r} is deferred to batches, which cannot stream;"
                ' use latency="realtime" to stream'
            )
        return self._router.anthropic.messages.stream(**kwargs)

    async def count_tokens(self, **kwargs: Any) -> Any:
        """Passes through to `AsyncAnthropic().messages.count_tokens`."""
        return await self._router.anthropic.messages.count_tokens(**kwargs)


class MessagesWithRawResponse:
    """`client.messages.with_raw_response`: the SDK's raw HTTP responses, for real-time calls.

    A deferred request travels inside a batch and has no HTTP response of its own, so
    `create()` with a batch class raises InvalidRequestError before anything is stored.
    """

    def __init__(self, router: Router) -> None:
        self._router = router

    @overload
    async def create(self, **kwargs: Unpack[CreateParams]) -> AsyncAPIResponse[Message]: ...
    @overload
    async def create(
        self, **kwargs: Unpack[CreateParamsStreaming]
    ) -> AsyncAPIResponse[AsyncStream[RawMessageStreamEvent]]: ...
    @overload
    async def create(
        self, **kwargs: Unpack[CreateParamsMaybeStreaming]
    ) -> AsyncAPIResponse[Message | AsyncStream[RawMessageStreamEvent]]: ...
    async def create(self, **kwargs: Any) -> AsyncAPIResponse[Any]:
        """`AsyncAnthropic().messages.with_raw_response.create`, routed: `.headers`, `await .parse()`.

        The call's usage is recorded in the cost ledger like any real-time call.
        """
        router = self._router
        cls, tag, _ = _route(router, kwargs, "create")
        if cls.route != "realtime":
            raise InvalidRequestError(
                f"latency: class {cls.name!r} is deferred to batches, and a request in a batch has no HTTP"
                ' response of its own; use messages.create() for it, or latency="realtime" for the raw'
                " response"
            )
        check_realtime_size(kwargs)
        # No spill-over into a batch on a 429: a raw response could not be handed back from one.
        response: AsyncAPIResponse[Any] = await router._lane.call(
            router.anthropic.messages.with_raw_response.create, **kwargs
        )
        if not kwargs.get("stream"):
            # The SDK caches the parse: the caller's own `await response.parse()` costs nothing more.
            router._lane.record(await response.parse(), latency=cls.name, tag=tag)
        return response

    @property
    def count_tokens(self) -> Callable[..., Awaitable[AsyncAPIResponse[MessageTokensCount]]]:
        """The SDK's `messages.with_raw_response.count_tokens`."""
        return self._router.anthropic.messages.with_raw_response.count_tokens

    @property
    def batches(self) -> AsyncBatchesWithRawResponse:
        """The SDK's `messages.with_raw_response.batches`, unrouted."""
        return self._router.anthropic.messages.with_raw_response.batches


class Results:
    """`client.results`: outcomes of deferred requests by key, from any process on the same store.

    A request of `client.openai` ends with its `ChatCompletion` in place of a Message."""

    def __init__(self, router: Router) -> None:
        self._router = router

    async def wait(self, key: str, *, timeout: float | None = None) -> Message:
        """Wait for the request stored under `key`; returns its Message or raises its error."""
        message: Message = unwrap(await self._router._wait_key(key, timeout))
        return message

    async def get(self, key: str) -> Message | None:
        """The Message if the request succeeded, None while it is in flight; raises its error if it failed."""
        row = await self.status(key)
        if row.state not in states.FINAL_STATES:
            return None
        message: Message | None = unwrap(outcome_of(row, self._router.outcomes))
        return message

    async def status(self, key: str) -> RequestRow:
        """The stored row of a request (state, attempts, batch), without its params."""
        return await self._router._row_by_key(key)

    async def wait_many(self, keys: Sequence[str]) -> list[Outcome]:
        """Outcomes (Message or exception instance) for several keys, in order."""
        return list(await asyncio.gather(*(self._router._wait_key(k, None) for k in keys)))


def _route(
    router: Router, kwargs: dict[str, Any], method: str
) -> tuple[LatencyClass, str | None, str | None]:
    """Check the call's keywords and take the routing ones out: (class, tag, key)."""
    check_call_keywords(kwargs, method)
    latency, tag, key = take_routing(kwargs)
    return router.resolve_class(latency, tag, kwargs.get("model")), tag, key
