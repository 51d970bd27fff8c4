"""The throwaway PostgreSQL server the Postgres-engine tests and benchmarks stand on."""

from __future__ import annotations

import os

import pytest

from tests.pgserver import HOW_TO_ENABLE, PostgresServer, available, postgres_server

asyncpg = pytest.importorskip("asyncpg")


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    if not available():
        if os.environ.get("CI") == "true":
            pytest.fail(HOW_TO_ENABLE)
        pytest.skip(HOW_TO_ENABLE)
    with postgres_server() as running:
        yield running


async def test_the_server_takes_connections_and_durable_commits(server) -> None:  # type: ignore[no-untyped-def]
    url = server.create_database("harness")
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        assert await conn.fetchval("SHOW fsync") == "on"
        await conn.execute("CREATE TABLE t (x int)")
        await conn.execute("INSERT INTO t VALUES (1)")
    finally:
        await conn.close()


async def test_a_restart_keeps_committed_rows_and_drops_sessions(server) -> None:  # type: ignore[no-untyped-def]
    if not isinstance(server, PostgresServer):
        pytest.skip("an external server is not restarted")
    url = server.create_database("restart")
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
    server.restart()
    with pytest.raises(
        (
            asyncpg.exceptions.ConnectionDoesNotExistError,
            asyncpg.exceptions.AdminShutdownError,
            ConnectionError,
            OSError,
        )
    ):
        await conn.fetchval("SELECT 1")
    conn.terminate()
    again = await asyncpg.connect(url)
    try:
        assert await again.fetchval("SELECT x FROM t") == 42
    finally:
        await again.close()
