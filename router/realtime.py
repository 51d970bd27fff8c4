"""The real-time lane: calls go straight to the provider's real-time endpoint, a bounded
number at a time, and their usage goes to the cost ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .providers.base import Provider
from .store import LedgerEntry, StoreEngine

_T = TypeVar("_T")


class RealtimeLane:
    """Runs real-time calls with at most `concurrency` in flight, and records their usage."""

    def __init__(
        self,
        provider: Provider,
        *,
        concurrency: int,
        store: StoreEngine | None,
        clock: Callable[[], float],
    ) -> None:
        self.provider = provider
        self._limit = asyncio.Semaphore(concurrency)
        self._store = store
        self._clock = clock

    async def call(self, fn: Callable[..., Awaitable[_T]], /, **kwargs: Any) -> _T:
        """`await fn(*args, **kwargs)` within the lane's concurrency (an SDK call of the drop-in)."""
        async with self._limit:
            return await fn(**kwargs)

    async def send(self, params: dict[str, Any]) -> Any:
        """Send stored batch params real time (escalation); the caller records the usage."""
        async with self._limit:
            return await self.provider.send(params)

    def record(self, reply: Any, *, latency: str | None, tag: str | None) -> None:
        """Put a real-time reply's usage in the ledger (nothing for a reply without one: a stream)."""
        if self._store is not None:
            entry = self.ledger_entry(reply, latency=latency, tag=tag)
            if entry is not None:
                self._store.record(entry)

    def ledger_entry(
        self, reply: Any, *, latency: str | None, tag: str | None, request_id: int | None = None
    ) -> LedgerEntry | None:
        """The cost-ledger row of a real-time reply, from the usage the API returned."""
        usage = self.provider.reply_usage(reply)
        if usage is None:
            return None
        model, counts = usage
        return LedgerEntry(
            at=self._clock(),
            lane="realtime",
            model=model,
            latency=latency,
            tag=tag,
            result_type="succeeded",
            usage=counts,
            request_id=request_id,
            provider=self.provider.name,
        )
