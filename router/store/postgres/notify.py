"""Completion wake-ups across processes and hosts: LISTEN/NOTIFY on `hybrid_router_done`.

Every transaction that completes requests sends `NOTIFY hybrid_router_done, '<its last
done_seq>'`, delivered at its commit. One listening connection per process (opened on the
first wait, apart from the pool) hears them. A notification is only a hint to read
`completed_since` now rather than at the next poll: one lost while the connection is down
costs a poll interval, and after a reconnect every waiter is told to catch up, so no caller
waits forever, and the watcher's cursor keeps any caller from being woken twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools

import asyncpg

from ...logs import get_logger
from .connect import Location, describe

log = get_logger(__name__)

CHANNEL = "hybrid_router_done"


class CompletionSignal:
    """The highest done_seq heard of, and an event for those waiting to hear of a higher one."""

    def __init__(self, location: Location) -> None:
        self._location = location
        self._heard = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._connected = asyncio.Event()

    async def wait(self, after_seq: int, timeout: float) -> bool:
        """True as soon as a completion past `after_seq` is heard of (or the listener came back
        and everyone should catch up); False after `timeout`."""
        if self._task is None and not self._closing:
            self._task = asyncio.create_task(self._listen(), name="hybrid-router-listen")
        if self._heard > after_seq:
            return True
        changed = self._changed
        try:
            async with asyncio.timeout(timeout):
                await changed.wait()
        except TimeoutError:
            return False
        return True

    async def connected(self) -> None:
        """Return once the listening connection is up (tests and benchmarks)."""
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="hybrid-router-listen")
        await self._connected.wait()

    def _hear(self, seq: int) -> None:
        if seq > self._heard:
            self._heard = seq
            self._tell()

    def _tell(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        with contextlib.suppress(ValueError):
            self._hear(int(str(payload)))

    async def _listen(self) -> None:
        delay = 0.05
        first = True
        while not self._closing:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(dsn=self._location.url, timeout=10.0)
            except Exception as exc:  # whatever it is, waiters fall back to polling meanwhile
                log.warning(
                    "store_listen_failed",
                    store=str(self._location),
                    error=self._location.scrub(describe(exc)),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                conn.add_termination_listener(functools.partial(_set, lost))
                await conn.add_listener(CHANNEL, self._on_notify)
                delay = 0.05
                self._connected.set()
                if not first:
                    # Notifications sent while we were away are gone: everyone reads from
                    # their cursor now.
                    log.info("store_listen_restored", store=str(self._location))
                    self._tell()
                first = False
                while not lost.is_set() and not self._closing:
                    # The termination callback is not certain to come on a silent network fault.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(5.0):
                            await lost.wait()
                    if conn.is_closed():
                        break
                    with contextlib.suppress(Exception):
                        await conn.execute("SELECT 1", timeout=5.0)
            except Exception as exc:  # the connection went in the middle of setting up
                log.warning(
                    "store_listen_failed",
                    store=str(self._location),
                    error=self._location.scrub(describe(exc)),
                )
                await asyncio.sleep(delay)
            finally:
                self._connected.clear()
                if not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2.0)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


def _set(event: asyncio.Event, _conn: object) -> None:
    event.set()
