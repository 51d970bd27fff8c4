"""`client.openai`: the Router as an `openai.AsyncOpenAI` for chat completions, routed.

`client.openai.chat.completions.create(...)` takes every keyword of the SDK's
`chat.completions.create`, plus `latency`, `tag` and `key`, and returns a `ChatCompletion`
on both lanes: real time through the Router's real-time lane (its concurrency limit, its
cost ledger), deferred through the store and the OpenAI Batch API. Every other resource
(`models`, `files`, `batches`, ...) is the SDK client's own, unrouted.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, overload

import openai
from openai import AsyncStream
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from router.errors import InvalidRequestError
from router.logs import get_logger
from router.outcomes import Outcome, outcome_of, unwrap
from router.params import check_key, check_tag, take_routing
from router.pricing import TokenCounts
from router.providers.openai.params import batch_params, check_call_keywords, reject_batch_stream
from router.store import LedgerEntry, Ticket

if TYPE_CHECKING:
    from router.client import Router
    from router.config import LatencyClass

__all__ = ["OpenAIChat", "OpenAICompletions", "OpenAIDropIn", "usage_counts"]

log = get_logger(__name__)

PROVIDER = "openai"
DEFAULT_WINDOW = 100_000  # as messages.map: one full batch outstanding at most


def usage_counts(completion: ChatCompletion) -> TokenCounts:
    """A reply's billed tokens: prompt tokens read from the cache are billed as cache reads
    (the codec's rule for batch lines, router/providers/openai/codec.py)."""
    usage = completion.usage
    if usage is None:
        return TokenCounts()
    details = usage.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details is not None else 0
    return TokenCounts(
        input=max(0, usage.prompt_tokens - cached), output=usage.completion_tokens, cache_read=cached
    )


class OpenAIDropIn:
    """`client.openai`: `chat.completions` routed; any other attribute is the SDK client's."""

    def __init__(self, router: Router) -> None:
        self._router = router
        self.chat = OpenAIChat(router)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._router.openai_client, name)


class OpenAIChat:
    """`client.openai.chat`."""

    def __init__(self, router: Router) -> None:
        self.completions = OpenAICompletions(router)


class OpenAICompletions:
    """`client.openai.chat.completions`: create, submit and map, routed by latency class."""

    def __init__(self, router: Router) -> None:
        self._router = router

    @overload
    async def create(self, *, stream: bool = ..., **kwargs: Any) -> ChatCompletion: ...
    @overload
    async def create(self, **kwargs: Any) -> ChatCompletion | AsyncStream[ChatCompletionChunk]: ...
    async def create(self, **kwargs: Any) -> ChatCompletion | AsyncStream[ChatCompletionChunk]:
        """Same keywords as `AsyncOpenAI().chat.completions.create`, plus `latency`, `tag`, `key`.

        Returns a `ChatCompletion` on both lanes, or the SDK's `AsyncStream` for a real-time
        `stream=True` (a batch class refuses `stream=True` before anything is stored). A
        deferred call resolves when its batch result arrives and raises the `openai`
        exception the real-time call would have raised. A keyword the SDK does not take
        raises the SDK's own TypeError.
        """
        router = self._router
        cls, tag, key = _route(router, kwargs, "create")
        if cls.route == "realtime":
            client = router.openai_client
            try:
                reply = await router._lane.call(client.chat.completions.create, **kwargs)
            except openai.RateLimitError:
                if cls.on_rate_limit != "defer" or kwargs.get("stream"):
                    raise
                target = router.config.classes[cls.defer_class or ""]
                log.info("request_spilled_over", latency=cls.name, to=target.name, tag=tag, provider=PROVIDER)
                cls = target
            else:
                if isinstance(reply, ChatCompletion):  # a stream has no usage to record
                    _record(router, reply, latency=cls.name, tag=tag)
                result: ChatCompletion | AsyncStream[ChatCompletionChunk] = reply
                return result
        reject_batch_stream(kwargs, cls.name)
        ticket = await router._deferred_ticket(kwargs, cls, tag, key, provider=PROVIDER)
        completion: ChatCompletion = unwrap(await router._waiters.wait(ticket.request_id))
        return completion

    async def submit(self, **kwargs: Any) -> Ticket:
        """Store a deferrable chat completion and return its ticket once durably committed;
        `client.results.wait(key)` returns its `ChatCompletion`."""
        router = self._router
        cls, tag, key = _route(router, kwargs, "submit")
        if cls.route != "batch":
            raise InvalidRequestError(
                f"latency: class {cls.name!r} is real time; submit() stores deferrable requests only"
                " (use create() for real-time calls)"
            )
        reject_batch_stream(kwargs, cls.name)
        return await router._deferred_ticket(kwargs, cls, tag, key, provider=PROVIDER)

    def map(
        self,
        requests: Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]],
        *,
        latency: str | None = None,
        tag: str | None = None,
        window: int = DEFAULT_WINDOW,
    ) -> AsyncIterator[tuple[str, Outcome]]:
        """Defer many chat completions; yields `(key, ChatCompletion or exception)` as their
        results arrive, as `client.messages.map` does (an item may carry `key`, `tag` and
        `latency`; a bad item is yielded with its error, nothing stored for it)."""
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise InvalidRequestError(f"window: expected an integer >= 1, got {window!r}")
        _batch_class(self._router, latency, check_tag(tag), None)
        return _map(self._router, requests, latency=latency, tag=tag, window=window)


def _route(
    router: Router, kwargs: dict[str, Any], method: str
) -> tuple[LatencyClass, str | None, str | None]:
    """Check the call's keywords and take the routing ones out: (class, tag, key)."""
    check_call_keywords(kwargs, method)
    latency, tag, key = take_routing(kwargs)
    return _resolve(router, latency, tag, kwargs.get("model")), tag, key


def _resolve(router: Router, latency: object, tag: str | None, model: object) -> LatencyClass:
    if latency is not None and not isinstance(latency, str):
        raise InvalidRequestError(f"latency: expected a class name string, got {latency!r}")
    return router.policy.resolve(latency, tag, model if isinstance(model, str) else None, provider=PROVIDER)


def _batch_class(router: Router, latency: object, tag: str | None, model: object) -> LatencyClass:
    cls = _resolve(router, latency, tag, model)
    if cls.route != "batch":
        raise InvalidRequestError(
            f"latency: class {cls.name!r} is real time; map() stores deferrable requests only"
            " (use create() for real-time calls)"
        )
    return cls


def _record(router: Router, reply: ChatCompletion, *, latency: str, tag: str | None) -> None:
    router.store.record(
        LedgerEntry(
            at=router.clock(),
            lane="realtime",
            model=reply.model,
            latency=latency,
            tag=tag,
            result_type="succeeded",
            usage=usage_counts(reply),
        )
    )


async def _map(
    router: Router,
    items: Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]],
    *,
    latency: str | None,
    tag: str | None,
    window: int,
) -> AsyncIterator[tuple[str, Outcome]]:
    provider = router.providers[PROVIDER]
    listener = router.listener()
    outstanding: dict[int, list[str]] = {}  # request id -> the keys of the items that stored it
    pending = 0
    run = uuid.uuid4().hex[:16]  # default keys unique to this run
    try:
        index = 0
        async for item in _aiter(items):
            try:
                key, ticket = await _store_item(router, item, index, run, latency=latency, tag=tag)
            except (InvalidRequestError, TypeError) as exc:
                yield _item_key(item, index, run), exc
                continue
            finally:
                index += 1
            outstanding.setdefault(ticket.request_id, []).append(key)
            pending += 1
            await listener.add([ticket.request_id])
            for done in listener.take():
                for key_done in outstanding.pop(done.id, []):
                    pending -= 1
                    yield key_done, outcome_of(done, provider)
            while pending >= window:
                for done in await listener.get():
                    for key_done in outstanding.pop(done.id, []):
                        pending -= 1
                        yield key_done, outcome_of(done, provider)
        while pending:
            for done in await listener.get():
                for key_done in outstanding.pop(done.id, []):
                    pending -= 1
                    yield key_done, outcome_of(done, provider)
    finally:
        listener.close()


async def _store_item(
    router: Router, item: object, index: int, run: str, *, latency: str | None, tag: str | None
) -> tuple[str, Ticket]:
    if not isinstance(item, Mapping):
        raise InvalidRequestError(
            f"item {index}: expected a mapping of chat.completions.create() keywords,"
            f" got {type(item).__name__}"
        )
    kwargs = dict(item)
    key = _item_key(item, index, run)
    try:
        check_call_keywords(kwargs, "create")
    except TypeError as exc:  # items are data, not a call: bad input, yielded with the rest
        raise InvalidRequestError(f"item {index} (key {key!r}): {exc}") from None
    try:
        check_key(kwargs.pop("key", None))
        item_tag = check_tag(kwargs.pop("tag", tag))
        cls = _batch_class(router, kwargs.pop("latency", latency), item_tag, kwargs.get("model"))
        reject_batch_stream(kwargs, cls.name)
        batch_params(kwargs)  # every check before anything is stored
        ticket = await router._deferred_ticket(kwargs, cls, item_tag, key, provider=PROVIDER)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"item {index} (key {key!r}): {exc}") from None
    return key, ticket


def _item_key(item: object, index: int, run: str) -> str:
    key = item.get("key") if isinstance(item, Mapping) else None
    return key if isinstance(key, str) and key else f"map-{run}-{index}"


async def _aiter(
    items: Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]],
) -> AsyncIterator[Mapping[str, Any]]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
