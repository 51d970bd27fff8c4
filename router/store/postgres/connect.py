"""Where a PostgreSQL store is, how to reach it, and which failures are worth another try.

The password (from the URL, PGPASSWORD or a .pgpass file, which asyncpg reads as libpq
does) is never part of what this module says: every message names host, port and database.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import asyncpg

from ...config import POSTGRES_SCHEMES, store_url_problem
from ...errors import StoreError
from ...logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")

# Failures that say the connection or the server went away (a restart, pg_terminate_backend,
# a network fault) or that the server asks for another try: the operation is retried on a
# fresh connection. Class 08 (connection exceptions), 57P01-57P03 (shutdown, not yet up),
# 40001/40P01 (serialization failure, deadlock: the transaction was rolled back whole).
TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    ConnectionError,
    OSError,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT):
        return True
    # A connection the server said goodbye to while it sat in the pool is stuck mid-protocol
    # ("another operation is in progress") until asyncpg reads the end of the socket.
    if isinstance(exc, asyncpg.InternalClientError):
        return True
    # asyncpg says "connection is closed" (and the like) as a plain InterfaceError.
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)


@dataclass(frozen=True)
class Location:
    """A PostgreSQL database as named by a store URL; `str()` leaves the password out."""

    url: str = field(repr=False)
    host: str
    port: int
    database: str

    def __str__(self) -> str:
        return f"PostgreSQL at {self.host}:{self.port}/{self.database}"

    def scrub(self, text: str) -> str:
        """`text` with the URL's password, should a driver message echo it, replaced by ***."""
        password = urlsplit(self.url).password
        if password:
            text = text.replace(password, "***").replace(unquote(password), "***")
        return text


def parse_location(url: str) -> Location:
    """The database a store URL names (libpq's defaults fill what it leaves out); a StoreError
    naming the problem when it is malformed or not a PostgreSQL URL."""
    problem = store_url_problem(url)
    scheme = url.partition("://")[0]
    if problem is None and scheme not in POSTGRES_SCHEMES:
        problem = f"not a PostgreSQL URL (scheme {scheme[:20]!r})"
    if problem is not None:
        where = ""
        try:
            parts = urlsplit(url)
            where = f" for {parts.hostname or '?'}:{parts.port or '?'}"
        except ValueError:
            hostname = urlsplit(url).hostname if "://" in url else None
            where = f" for {hostname}" if hostname else ""
        raise StoreError(f"malformed store URL{where}: {problem}")
    parts = urlsplit(url)
    user = unquote(parts.username) if parts.username else os.environ.get("PGUSER", "")
    return Location(
        url=url,
        host=parts.hostname or os.environ.get("PGHOST", "localhost"),
        port=parts.port or int(os.environ.get("PGPORT", "5432")),
        database=unquote(parts.path.lstrip("/")) or os.environ.get("PGDATABASE", user),
    )


async def create_pool(
    location: Location,
    *,
    size: int,
    init: Callable[[asyncpg.Connection[asyncpg.Record]], Coroutine[Any, Any, None]] | None = None,
    retry_for: float = 60.0,
) -> asyncpg.Pool:
    """A pool of `size` connections, the first one made now: a StoreError naming host and port
    when the server cannot be reached or refuses us. A server reached that drops the connection
    or is still starting (a restart) is tried again for up to `retry_for` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry_for
    while True:
        try:
            return await _create_pool(location, size=size, init=init)
        except StoreError as exc:
            cause = exc.__cause__
            unreachable = isinstance(cause, OSError | TimeoutError) and not isinstance(
                cause, asyncpg.PostgresConnectionError
            )
            if unreachable or cause is None or not is_transient(cause) or loop.time() > deadline:
                raise exc.with_traceback(None) from None
        await asyncio.sleep(0.2)


async def _create_pool(
    location: Location,
    *,
    size: int,
    init: Callable[[asyncpg.Connection[asyncpg.Record]], Coroutine[Any, Any, None]] | None,
) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            dsn=location.url,
            min_size=1,
            max_size=size,
            init=init,
            # Durable commits whatever the server's default (a caller told "stored" keeps it).
            # jit off: the store's statements are short, and compiling them cost more than
            # running them (460 ms of a 690 ms ingest chunk).
            # The pid in the name tells an operator (and the tests) whose connections these are.
            server_settings={
                "synchronous_commit": "on",
                "jit": "off",
                "application_name": f"hybrid-router:{os.getpid()}",
            },
            timeout=10.0,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The cause is create_pool's to judge; it raises the error without it.
        raise StoreError(f"cannot open the store: {location}: {location.scrub(describe(exc))}") from exc
    assert pool is not None
    return pool


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Retrier:
    """Runs an operation again after a transient failure, with backoff, for up to `give_up_after`
    seconds; then a StoreError naming the database."""

    def __init__(self, location: Location, *, give_up_after: float = 60.0) -> None:
        self.location = location
        self.give_up_after = give_up_after

    async def run(self, operation: str, attempt: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.give_up_after
        delay = 0.05
        tries = 0
        while True:
            try:
                return await attempt()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                tries += 1
                if loop.time() + delay > deadline:
                    raise StoreError(
                        f"{self.location}: {operation} failed after {tries} tries:"
                        f" {self.location.scrub(describe(exc))}"
                    ) from None
                log.warning(
                    "store_retry",
                    operation=operation,
                    store=str(self.location),
                    error=self.location.scrub(describe(exc)),
                    tries=tries,
                )
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)
