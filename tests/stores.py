"""Store fixtures for both engines: a session's throwaway PostgreSQL server, a fresh database
per test, and `store_settings` parametrized over SQLite and PostgreSQL.

conftest.py loads this module as a plugin. Without server
binaries (and without HYBRID_ROUTER_TEST_POSTGRES_URL) the PostgreSQL cases are skipped with one
line saying how to enable them; under CI=true that skip is a failure.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from router.config import StoreSettings
from router.store import StoreEngine, open_store
from tests.durability import query as query_sqlite
from tests.pgserver import HOW_TO_ENABLE, ExternalPostgres, PostgresServer, available, postgres_server

ENGINES = ("sqlite", "postgresql")
_databases = itertools.count()


def _skip_or_fail() -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, and the PostgreSQL tests cannot run: {HOW_TO_ENABLE}")
    pytest.skip(HOW_TO_ENABLE)


# The tests' server keeps its files in memory where the machine has a tmpfs: on a disk, the
# hundreds of databases the suite creates cost seconds of writes and a minute to delete. (The
# benchmarks keep theirs on disk, in the system's temporary directory.)
IN_MEMORY = "/dev/shm"


def _in_memory() -> str | None:
    """/dev/shm if it can hold a worker's server (about 0.5 GB by the end of a run), else None."""
    try:
        room = os.statvfs(IN_MEMORY)
    except OSError:
        return None
    enough = room.f_bavail * room.f_frsize >= 2 << 30
    return IN_MEMORY if enough and os.access(IN_MEMORY, os.W_OK | os.X_OK) else None


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer | ExternalPostgres]:
    """One throwaway server for each session, or each pytest-xdist worker (about 1.5 s to start)."""
    if not available():
        _skip_or_fail()
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        _skip_or_fail()
    with postgres_server(_in_memory()) as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PostgresServer | ExternalPostgres) -> str:
    """A new, empty database on the session's server."""
    return pg_server.create_database(f"hr_{os.getpid()}_{next(_databases)}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: reads or writes the SQLite file itself; runs on SQLite alone"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test of a module that sets `BOTH_ENGINES = True` and uses the `engine` fixture (the
    `store`, `store_location` and conftest's `config` fixtures do) runs once per engine,
    unless it is marked `sqlite_only`."""
    if "engine" not in metafunc.fixturenames or not getattr(metafunc.module, "BOTH_ENGINES", False):
        return
    if metafunc.definition.get_closest_marker("sqlite_only") is not None:
        return
    metafunc.parametrize("engine", ENGINES, indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    """The engine under test: SQLite, unless pytest_generate_tests parametrized it."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def store_settings(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> StoreSettings:
    """Settings of an empty store of the engine under test."""
    if engine == "postgresql":
        return StoreSettings(url=request.getfixturevalue("pg_url"), pool_size=4)
    return StoreSettings(path=tmp_path / "router.db")


@pytest.fixture
def store_location(store_settings: StoreSettings) -> str:
    """What `RouterConfig.with_store` and the test configs take for this store: the SQLite file
    (conftest's `db_path`) or the PostgreSQL URL."""
    return store_settings.url or str(store_settings.path)


def store_toml(location: str | os.PathLike[str]) -> str:
    """The `[store]` table's key naming `location` (a file path or a URL)."""
    text = os.fspath(location)
    return f'url = "{text}"' if "://" in text else f'path = "{text}"'


async def raw_rows(store: Any, query: str) -> list[tuple[Any, ...]]:
    """Rows of a plain SQL query both engines understand, on the store's own database: for
    tests that look below the store's operations (batch states, ledger rows)."""
    pool = getattr(store, "_pool", None)
    if pool is not None:
        async with pool.acquire() as conn:
            return [tuple(r) for r in await conn.fetch(query)]
    return query_sqlite(store.path, query)


@pytest.fixture
async def store(store_settings: StoreSettings) -> AsyncIterator[StoreEngine]:
    opened = await open_store(store_settings)
    try:
        yield opened
    finally:
        await opened.close()
