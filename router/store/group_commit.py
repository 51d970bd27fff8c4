"""Group commit, whatever the engine: concurrent enqueues and ledger entries share transactions.

Callers queue requests (and the real-time lane its ledger entries) here; one task takes what
has gathered as a group and hands it to the engine's `WriteGroup`, which writes it in one
transaction, so durability costs one commit per group rather than one per request. Each
caller is answered once its group committed, and groups are answered in the order they were
taken, even when the engine lets more than one be written at once (`in_flight`).

Ledger entries nobody waits for ride along with the next group, or gather on their own for up
to `LEDGER_LINGER` seconds before a commit of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeAlias

from ..logs import get_logger
from .base import StoreClosedError
from .ledger import LedgerBuffer, LedgerRow
from .records import LedgerEntry, NewRequest, Ticket

log = get_logger(__name__)

# Writes requests and ledger rows in one transaction: a Ticket per request, in order, or the
# exception that stands for that request alone (a key reused with other params). Raising
# fails the whole group.
WriteGroup: TypeAlias = Callable[[Sequence[NewRequest], Sequence[LedgerRow]], Awaitable[Sequence[Any]]]
# Writes ledger rows alone, in one transaction; raises when it could not.
WriteLedger: TypeAlias = Callable[[Sequence[LedgerRow]], Awaitable[None]]

GROUP_MAX = 4096  # requests per group
# A ledger-only group (the real-time lane's accounting) waits this long, or until this many
# entries, before its commit. Each commit costs the lane's cores a trip to the database;
# committed 10 to 20 times a second they cost the real-time lane about 10 % of its throughput
# on 2 cores with SQLite, once a second about 2 % (bench/RESULTS.md, real-time lane). A crash
# loses at most the last second of real-time accounting; this process's own reads of the
# ledger commit the queue first (`commit_ledger`).
LEDGER_LINGER = 1.0
LEDGER_GROUP_MAX = 5000

_Waiter: TypeAlias = "tuple[NewRequest, asyncio.Future[Ticket]]"


class GroupCommitter:
    """The queue of one store's enqueues and ledger entries, and the task that commits them.

    `write_group` and `write_ledger` are the engine's transactions; `in_flight` is how many
    groups may be written at once (each on its own connection: 1 on SQLite's one writer).
    `log_fields` go with every event it logs (which store).
    """

    def __init__(
        self,
        write_group: WriteGroup,
        write_ledger: WriteLedger,
        *,
        in_flight: int = 1,
        log_fields: Mapping[str, object] | None = None,
    ) -> None:
        self._write_group = write_group
        self._write_ledger = write_ledger
        self._log_fields = dict(log_fields or {})
        self._in_flight = in_flight
        self._slots = asyncio.Semaphore(in_flight)
        self._writing: set[asyncio.Task[None]] = set()
        self._last: asyncio.Task[None] | None = None  # the group taken last, answered last
        self._queue: list[_Waiter] = []
        self._ledger = LedgerBuffer()
        self._group_max = GROUP_MAX
        self._ledger_linger = LEDGER_LINGER
        self._ledger_group_max = LEDGER_GROUP_MAX
        self._wake = asyncio.Event()
        self._closed = False
        self._task = asyncio.create_task(self._run(), name="hybrid-router-group-commit")

    async def enqueue(self, request: NewRequest) -> Ticket:
        """Queue one request; returns its Ticket once its group committed."""
        if self._closed:
            raise StoreClosedError("the store is closed")
        future: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        self._wake.set()
        return await future

    def record(self, entry: LedgerEntry) -> None:
        """Queue a ledger entry into the next commit; the caller does not wait for it."""
        if not self._closed:
            # Wake the committer for the first entry only: later ones ride along (see _run),
            # until the group is full.
            self._ledger.add(entry)
            if self._ledger.entries in (1, self._ledger_group_max):
                self._wake.set()

    async def commit_ledger(self, rows: Sequence[LedgerRow] | None = None) -> None:
        """Commit `rows`, or else the entries queued so far, now (a read of the ledger counts
        them). Accounting only: a failure is logged, not raised."""
        if rows is None:
            if not self._ledger.entries:
                return
            rows = self._ledger.take()
        try:
            await self._write_ledger(rows)
        except Exception as exc:  # nobody waits on it, so log and go on
            log.error("ledger_write_failed", error=str(exc), rows=len(rows), **self._log_fields)

    async def close(self) -> None:
        """Commit everything queued, then stop; later enqueues raise StoreClosedError."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue and self._ledger.entries and not self._closed:
                # Only ledger rows: nobody waits for them, so let more gather per commit (the
                # real-time lane records one per reply). An enqueue, close() or a full group
                # ends the wait at once.
                until = loop.time() + self._ledger_linger
                while (
                    not self._queue
                    and not self._closed
                    and self._ledger.entries < self._ledger_group_max
                    and (left := until - loop.time()) > 0
                ):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(left):
                            await self._wake.wait()
                    self._wake.clear()
            while self._queue or self._ledger.entries:
                # A free slot first, then the group: it takes in whatever arrived meanwhile.
                await self._slots.acquire()
                group, self._queue = self._queue[: self._group_max], self._queue[self._group_max :]
                ledger = self._ledger.take()
                if not group:
                    try:
                        await self.commit_ledger(ledger)
                    finally:
                        self._slots.release()
                    if self._closed or self._queue:
                        continue
                    # Entries queued during that commit wait for a linger of their own (the
                    # first of them woke us): going round at once would commit every few
                    # entries, back to back.
                    break
                if self._in_flight == 1:
                    # In this task: the next group is taken as soon as this one is answered,
                    # with no hand-off to another task in between.
                    await self._commit(group, ledger, after=None)
                    continue
                task = asyncio.create_task(self._commit(group, ledger, after=self._last))
                self._writing.add(task)
                task.add_done_callback(self._writing.discard)
                self._last = task
            if self._closed:
                await asyncio.gather(*self._writing)
                return

    async def _commit(
        self, group: list[_Waiter], ledger: Sequence[LedgerRow], *, after: asyncio.Task[None] | None
    ) -> None:
        """Write one group, then answer its callers once the group taken before it is answered."""
        try:
            tickets: Sequence[Any] | Exception = await self._write_group([r for r, _ in group], ledger)
        except Exception as exc:  # the whole group rolled back: every caller learns why
            tickets = exc
        finally:
            self._slots.release()
        if isinstance(tickets, Exception):
            log.error("enqueue_failed", error=str(tickets), group=len(group), **self._log_fields)
            if ledger:  # the accounting that rode along is nobody's request: try it alone
                await self.commit_ledger(ledger)
        if after is not None and not after.done():
            await asyncio.wait([after])
        if isinstance(tickets, Exception):
            for _, fut in group:
                if not fut.done():
                    fut.set_exception(tickets)
            return
        for (_, fut), ticket in zip(group, tickets, strict=True):
            if not fut.done():
                if isinstance(ticket, Exception):
                    fut.set_exception(ticket)
                else:
                    fut.set_result(ticket)
