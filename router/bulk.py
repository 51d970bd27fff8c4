"""`client.messages.map`: millions of deferred requests with bounded memory.

The input is read lazily, a chunk at a time, and stored with one transaction per chunk;
at most `window` requests are outstanding (stored, result not yet yielded), so a slow
consumer or slow batches stop the reading of the input instead of filling memory.
Results come from one `CompletionListener` (a set of ids), not one future per request,
and a `Message` is built only when its result is yielded.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import DeadlineError, InvalidRequestError, RouterError
from .logs import get_logger
from .outcomes import Outcome, outcome_of
from .params import check_key, check_tag
from .prefix import identify
from .providers.anthropic.params import batch_params, check_keywords, serialize
from .store import NewRequest, entries_budget, entry_bytes

if TYPE_CHECKING:
    from .client import Router
    from .config import LatencyClass
    from .outcomes import ProviderOutcomes
    from .providers.base import Provider

log = get_logger(__name__)

DEFAULT_WINDOW = 100_000  # one full batch outstanding at most: about 10 MB of bookkeeping
MAX_CHUNK = 1000  # requests per enqueue transaction

MapItem = Mapping[str, Any]


def check_batch_class(router: Router, latency: object, tag: object) -> LatencyClass:
    """The batch class `latency` names (or the policy picks for `tag`); real-time classes refused."""
    cls = router.resolve_class(latency, check_tag(tag), None)
    if cls.route != "batch":
        raise InvalidRequestError(
            f"latency: class {cls.name!r} is real time; map() stores deferrable requests only"
            " (use create() for real-time calls)"
        )
    return cls


async def map_requests(
    router: Router,
    items: Iterable[MapItem] | AsyncIterable[MapItem],
    *,
    latency: str | None,
    tag: str | None,
    window: int,
) -> AsyncIterator[tuple[str, Outcome]]:
    """Store `items` (create() keywords, each may carry `key`) and yield `(key, outcome)` as they finish."""
    default_cls = check_batch_class(router, latency, tag)
    store = router.store
    listener = router.listener()
    chunk_size = min(MAX_CHUNK, window)
    run = uuid.uuid4().hex[:16]
    at_risk: set[str] = set()  # keys of the current chunk no batch can answer in time
    outstanding: dict[int, int] = {}  # request id -> times it appears in the input still unanswered
    pending = 0
    index = 0
    source = _aiter(items)
    exhausted = False
    try:
        while True:
            while not exhausted and pending < window:
                requests: list[NewRequest] = []
                classes: list[LatencyClass] = []
                want = min(chunk_size, window - pending)
                while len(requests) < want:
                    try:
                        item = await anext(source)
                    except StopAsyncIteration:
                        exhausted = True
                        break
                    try:
                        request, cls = _build(router, item, index, run, default_cls, tag)
                        if router.deadline_risk(request, cls):
                            at_risk.add(request.key)
                    except (InvalidRequestError, DeadlineError) as exc:
                        yield _item_key(item, index, run), exc
                        continue
                    finally:
                        index += 1
                    requests.append(request)
                    classes.append(cls)
                if not requests:
                    break
                tickets = await store.enqueue_many(requests)
                ids: list[int] = []
                escalate: list[int] = []
                for request, cls, ticket in zip(requests, classes, tickets, strict=True):
                    if isinstance(ticket, BaseException):
                        yield request.key, ticket
                        continue
                    outstanding[ticket.request_id] = outstanding.get(ticket.request_id, 0) + 1
                    pending += 1
                    ids.append(ticket.request_id)
                    if ticket.created and request.key in at_risk:
                        escalate.append(ticket.request_id)
                    elif ticket.created:
                        router.after_enqueue(cls)
                at_risk.clear()
                await listener.add(ids)
                if escalate:  # after listening: a quick real-time answer cannot be missed
                    await router.escalate_now(escalate)
                    log.info("requests_escalated", requests=len(escalate), reason="turnaround")
                for key, outcome in _take(listener.take(), outstanding, router.outcomes):
                    pending -= 1
                    yield key, outcome
            if pending == 0 and exhausted:
                return
            for key, outcome in _take(await listener.get(), outstanding, router.outcomes):
                pending -= 1
                yield key, outcome
    finally:
        listener.close()
        if pending:
            log.info("map_left_early", awaited=pending, stored=index)


def _take(
    rows: Iterable[Any], outstanding: dict[int, int], provider: Provider | ProviderOutcomes
) -> Iterable[tuple[str, Outcome]]:
    for row in rows:
        times = outstanding.pop(row.id, 0)
        outcome = outcome_of(row, provider)
        for _ in range(times):
            yield row.key, outcome


def _build(
    router: Router, item: object, index: int, run: str, default_cls: LatencyClass, default_tag: str | None
) -> tuple[NewRequest, LatencyClass]:
    if not isinstance(item, Mapping):
        raise InvalidRequestError(
            f"item {index}: expected a mapping of messages.create() keywords, got {type(item).__name__}"
        )
    kwargs = dict(item)
    key = _item_key(item, index, run)
    try:
        check_key(kwargs.pop("key", None))
        tag = check_tag(kwargs.pop("tag", default_tag))
        latency = kwargs.pop("latency", None)
        cls = default_cls if latency is None else check_batch_class(router, latency, tag)
        check_keywords(kwargs)
        params = batch_params(kwargs)
        body = serialize(params)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"item {index} (key {key!r}): {exc}") from None
    frame = router.provider.batch_format
    limit = entries_budget(frame, router.config.batch.max_bytes)
    if entry_bytes(frame, 10**12, len(body)) > limit:
        raise InvalidRequestError(
            f"item {index} (key {key!r}): request body is {len(body):,} bytes, more than fits in one batch"
            f" ({limit:,} bytes with the batch envelope; [batch] max_bytes)"
        )
    now = router.clock()
    request = NewRequest(
        key=key,
        latency=cls.name,
        tag=tag,
        model=str(params["model"]),
        params=body,
        created_at=now,
        deadline_at=now + cls.deadline if cls.deadline is not None else None,
        prefix=identify(body),
    )
    return request, cls


def _item_key(item: object, index: int, run: str) -> str:
    key = item.get("key") if isinstance(item, Mapping) else None
    return key if isinstance(key, str) and key else f"map-{run}-{index}"


async def _aiter(items: Iterable[MapItem] | AsyncIterable[MapItem]) -> AsyncIterator[MapItem]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    elif isinstance(items, Iterable):
        for item in items:
            yield item
    else:
        raise RouterError(f"map() takes an iterable or async iterable of params, got {type(items).__name__}")
