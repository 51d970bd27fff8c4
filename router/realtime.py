"""The real-time lane: calls go straight to POST /v1/messages through the SDK."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anthropic
from anthropic import AsyncAPIResponse
from anthropic.types import Message

from .pricing import TokenCounts
from .store import LedgerEntry, StoreEngine


class RealtimeLane:
    """Sends calls through the SDK with at most `concurrency` in flight, and records their usage."""

    def __init__(
        self,
        client: anthropic.AsyncAnthropic,
        *,
        concurrency: int,
        store: StoreEngine | None,
        clock: Callable[[], float],
    ) -> None:
        self.client = client
        self._limit = asyncio.Semaphore(concurrency)
        self._store = store
        self._clock = clock

    async def create(self, kwargs: dict[str, Any], *, latency: str | None, tag: str | None) -> Any:
        """`messages.create(**kwargs)`; a Message, or the SDK's stream when `stream=True`."""
        async with self._limit:
            reply = await self.client.messages.create(**kwargs)
        if isinstance(reply, Message):
            self.record(reply, latency=latency, tag=tag)
        return reply

    async def create_raw(
        self, kwargs: dict[str, Any], *, latency: str | None, tag: str | None
    ) -> AsyncAPIResponse[Any]:
        """`messages.with_raw_response.create(**kwargs)`: the SDK's raw response, usage recorded.

        The usage is read from the parsed Message; the SDK caches the parse, so the
        caller's own `await response.parse()` costs nothing more.
        """
        async with self._limit:
            response: AsyncAPIResponse[Any] = await self.client.messages.with_raw_response.create(**kwargs)
        if not kwargs.get("stream"):
            reply = await response.parse()
            if isinstance(reply, Message):
                self.record(reply, latency=latency, tag=tag)
        return response

    async def send(self, params: dict[str, Any]) -> Message:
        """Send stored batch params real time (escalation); the caller records the usage."""
        async with self._limit:
            reply: Message = await self.client.messages.create(**params)
        return reply

    def record(self, message: Message, *, latency: str | None, tag: str | None) -> None:
        if self._store is not None:
            self._store.record(self.ledger_entry(message, latency=latency, tag=tag))

    def ledger_entry(
        self, message: Message, *, latency: str | None, tag: str | None, request_id: int | None = None
    ) -> LedgerEntry:
        """The cost-ledger row of a real-time reply, from the usage the API returned."""
        return LedgerEntry(
            at=self._clock(),
            lane="realtime",
            model=message.model,
            latency=latency,
            tag=tag,
            result_type="succeeded",
            usage=TokenCounts.from_usage(message.usage),
            request_id=request_id,
        )
