"""Resolving waiting callers when their requests reach a final state, whoever wrote it.

Completions carry a `done_seq` (completion order, indexed), so a watcher reads only what
is new since its cursor: no table scans, and results written by another process (the
daemon) arrive the same way as those written by this one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence

from .errors import RouterError
from .logs import get_logger
from .outcomes import Outcome, ProviderOutcomes, outcome_of
from .providers.base import Provider
from .store import FinalRow, RequestRow, StoreEngine, states

log = get_logger(__name__)

DELIVER_SLICE = 64  # callers woken per event-loop turn by the delivery task


class CompletionWatcher:
    """Maps request ids to the futures waiting on them and resolves them from the store."""

    def __init__(self, store: StoreEngine, provider: Provider | ProviderOutcomes, *, interval: float) -> None:
        """`provider` decodes the results of succeeded and errored requests."""
        self._store = store
        self._provider = provider
        self._interval = interval
        # Futures get the final row's values; each caller builds its RequestRow and Message in
        # its own task, so a chunk of 10,000 completions leaves no 10,000 objects for the
        # garbage collector to track (see records.FinalRow).
        self._waiters: dict[int, list[asyncio.Future[FinalRow]]] = defaultdict(list)
        # Bulk callers: one listener per map() call, one dict entry per awaited id (no futures).
        self._listeners: dict[int, list[CompletionListener]] = {}
        # Final rows handed to deliver(), a list per chunk, woken by the delivery task in order;
        # their ids, which the done_seq pass leaves to it.
        self._to_deliver: deque[Sequence[FinalRow]] = deque()
        self._claimed: set[int] = set()
        self._delivery: asyncio.Task[None] | None = None
        self._held = 0  # ingests of this process in progress: see holding()
        self._wake = asyncio.Event()
        self._cursor = 0
        # Completion numbers delivered past the cursor, start -> stop: chunks in flight together
        # may commit out of their order, so a chunk's numbers can come before the cursor reaches
        # them (see deliver()).
        self._delivered_ahead: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._cursor = await self._store.max_done_seq()
        self._task = asyncio.create_task(self._run(), name="hybrid-router-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await self._task
            self._task = None
        if self._delivery is not None:
            self._delivery.cancel()
            await asyncio.wait([self._delivery])
            self._delivery = None
        while self._to_deliver:  # their rows are final: wake them now rather than cancel them
            self._wake_callers(self._to_deliver.popleft())
        for futures in self._waiters.values():
            for fut in futures:
                if not fut.done():
                    fut.cancel()
        self._waiters.clear()
        for listener in {each for group in self._listeners.values() for each in group}:
            listener._stop()
        self._listeners.clear()

    @property
    def waiting(self) -> int:
        return sum(len(f) for f in self._waiters.values())

    def wake(self) -> None:
        """Look for completions now (called when this process finished requests outside an ingest)."""
        self._wake.set()

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Hold the done_seq pass while this process ingests a batch, and run it right after.

        The ingest hands what it makes final to deliver(), but only after its COMMIT is back
        on the event loop; a pass in between reads those rows back for nothing. Only around
        the ingest itself: results other processes write wait at most that long.
        """
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            self._wake.set()

    def notify(self, ids: Sequence[int]) -> None:
        if any(i in self._waiters or i in self._listeners for i in ids):
            self._wake.set()

    def deliver(self, finals: Sequence[FinalRow], completions: range = range(0)) -> None:
        """Resolve this process's waiters and listeners from rows it just made final.

        Saves reading the rows back. Their ids are claimed at once, so the `done_seq` pass,
        which sees these rows too, leaves them to the delivery instead of reading them again;
        a caller that registers afterwards finds its row final in the store. The rows'
        `completions` (consecutive numbers, so nobody else's lie among them), once the pass's
        cursor reaches them, are skipped without being read at all.

        The delivery task wakes them DELIVER_SLICE per event-loop turn, in order, and lets
        the woken callers run in between. Each wake-up is a few objects queued in the event
        loop, and so is each claim held as more than an id: 10,000 of them at once live long
        enough to reach the collector's oldest generation, where they set off full
        collections that walk every waiting task (~0.3 s each per 100,000-line ingest).
        """
        self._claimed.update(values[0] for values in finals)
        if completions:
            self._delivered_ahead[completions.start] = completions.stop
            self._skip_delivered()
        self._to_deliver.append(finals)
        if self._delivery is None or self._delivery.done():
            self._delivery = asyncio.create_task(self._deliver_in_slices(), name="hybrid-router-delivery")

    def _skip_delivered(self) -> None:
        """Move the cursor past the delivered completions it has reached."""
        ahead = self._delivered_ahead
        while ahead and (start := min(ahead)) <= self._cursor + 1:
            self._cursor = max(self._cursor, ahead.pop(start) - 1)

    async def delivered(self) -> None:
        """Return once every caller handed to deliver() so far is woken."""
        while self._delivery is not None and not self._delivery.done():
            await asyncio.shield(self._delivery)

    async def _deliver_in_slices(self) -> None:
        queue = self._to_deliver
        while queue:
            finals = queue[0]
            for start in range(0, len(finals), DELIVER_SLICE):
                self._wake_callers(finals[start : start + DELIVER_SLICE])
                await asyncio.sleep(0)
            queue.popleft()

    def _wake_callers(self, finals: Sequence[FinalRow]) -> None:
        """Resolve the callers of `finals`, rows as deliver() or the done_seq pass has them
        (those woken before are gone from the maps)."""
        waiters, listeners, claimed = self._waiters, self._listeners, self._claimed
        for values in finals:
            rid = values[0]
            claimed.discard(rid)
            for fut in waiters.pop(rid, ()):
                if not fut.done():
                    fut.set_result(values)
            for listener in listeners.pop(rid, ()):
                listener._push(RequestRow._make(values))

    def listen(self) -> CompletionListener:
        """A listener that collects the final rows of the ids added to it, as they complete."""
        return CompletionListener(self, self._store)

    async def wait(self, request_id: int, timeout: float | None = None) -> Outcome:
        """Wait for a request's final outcome."""
        fut: asyncio.Future[FinalRow] = asyncio.get_running_loop().create_future()
        self._waiters[request_id].append(fut)
        try:
            # Registered first, checked second: a completion between the two cannot be missed.
            rows = await self._store.get_many([request_id])
            if rows and rows[0].state in states.FINAL_STATES:
                self._resolve(rows[0])
            # Not kept in the frame while it waits: 100,000 waiting callers pinned 100,000
            # rows, which the garbage collector then walked in every full collection.
            del rows
            values = await asyncio.wait_for(fut, timeout) if timeout is not None else await fut
            return outcome_of(RequestRow._make(values), self._provider)
        finally:
            futures = self._waiters.get(request_id)
            if futures is not None:
                with contextlib.suppress(ValueError):
                    futures.remove(fut)
                if not futures:
                    del self._waiters[request_id]

    def _resolve(self, row: RequestRow) -> None:
        for fut in self._waiters.get(row.id, ()):
            if not fut.done():
                fut.set_result(row)

    async def _run(self) -> None:
        while not self._stopping:
            await self._idle()
            self._wake.clear()
            if self._stopping:
                return
            if self._held:
                continue
            try:
                await self._drain()
            except Exception as exc:  # a read error must not kill the watcher: retry next tick
                log.warning("watcher_read_failed", error=str(exc))

    async def _idle(self) -> None:
        """Until woken, or the store signals completions past the cursor (PostgreSQL's NOTIFY,
        from any process), or one interval has passed."""
        if self._held:  # the ingest's end wakes us (holding()), and the store's signal would not wait
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            return
        woken = asyncio.ensure_future(self._wake.wait())
        signalled = asyncio.ensure_future(self._store.wait_for_completions(self._cursor, self._interval))
        try:
            await asyncio.wait(
                (woken, signalled), timeout=self._interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiting in (woken, signalled):
                waiting.cancel()
            await asyncio.wait((woken, signalled))
            if not signalled.cancelled() and signalled.exception() is not None:
                log.warning("watcher_signal_failed", error=str(signalled.exception()))

    async def _drain(self) -> None:
        while True:
            cursor, ids = await self._store.completed_since(self._cursor)
            # deliver() may have moved the cursor past these meanwhile: never back.
            self._cursor = max(self._cursor, cursor)
            self._skip_delivered()
            if not ids:
                return
            wanted = [
                rid
                for rid in ids
                if (rid in self._waiters or rid in self._listeners) and rid not in self._claimed
            ]
            if wanted:
                self._wake_callers(await self._store.get_many(wanted))


class CompletionListener:
    """Final rows of a set of request ids, handed over in completion order (for `messages.map`).

    Memory is one dict entry per id still awaited plus the rows completed but not taken yet.
    """

    def __init__(self, watcher: CompletionWatcher, store: StoreEngine) -> None:
        self._watcher = watcher
        self._store = store
        self._ids: set[int] = set()
        self._ready: list[RequestRow] = []
        self._event = asyncio.Event()
        self._stopped = False

    @property
    def awaited(self) -> int:
        return len(self._ids)

    async def add(self, ids: Sequence[int]) -> None:
        """Start listening for `ids`; those already final are ready at once."""
        new = [i for i in ids if i not in self._ids]
        for rid in new:
            self._ids.add(rid)
            self._watcher._listeners.setdefault(rid, []).append(self)
        # Registered first, checked second: a completion between the two cannot be missed.
        for row in await self._store.get_many(new):
            if row.state in states.FINAL_STATES and self._unregister(row.id):
                self._push(row)

    def take(self) -> list[RequestRow]:
        """The rows completed since the last take (possibly none), without waiting."""
        rows, self._ready = self._ready, []
        self._event.clear()
        return rows

    async def get(self) -> list[RequestRow]:
        """Wait until at least one row is ready and take them all."""
        while not self._ready:
            if self._stopped:
                raise RouterError("the Router was closed while results were still awaited")
            await self._event.wait()
            self._event.clear()
        return self.take()

    def close(self) -> None:
        for rid in self._ids:
            self._unregister(rid)
        self._ids.clear()
        self._ready.clear()

    def _unregister(self, rid: int) -> bool:
        group = self._watcher._listeners.get(rid)
        if group is None or self not in group:
            return False
        group.remove(self)
        if not group:
            del self._watcher._listeners[rid]
        return True

    def _stop(self) -> None:
        self._stopped = True
        self._event.set()

    def _push(self, row: RequestRow) -> None:
        if row.id in self._ids:
            self._ids.discard(row.id)
            self._ready.append(row)
            self._event.set()
