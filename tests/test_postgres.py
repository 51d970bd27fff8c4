"""The PostgreSQL engine on a real server: opening, bad input, faults, and many routers on one
database woken by LISTEN/NOTIFY. The engine-level operations are in test_store_contract.py."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anthropic
import asyncpg
import pytest

from router import Router, RouterConfig
from router.cli import main
from router.config import StoreSettings
from router.emulator import Emulator
from router.errors import ConfigError, InvalidRequestError, StoreError
from router.store import AtRisk, NewRequest, open_store, states
from router.store.idempotency import digest_of
from router.store.postgres import PostgresStore
from router.store.postgres.schema import COMPLETION_LOCK, MIGRATIONS, SCHEMA_VERSION
from tests.helpers import ask, capture_router_logs, reply_text, stored, until
from tests.pgserver import ExternalPostgres, PostgresServer

SECRET = "hunter2-do-not-print"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _terminate_others(url: str) -> int:
    """pg_terminate_backend on every other session of the database: how many."""
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await conn.close()


def _config(url: str, emulator: Emulator, extra: str = "") -> RouterConfig:
    text = f'[store]\nurl = "{url}"\npool_size = 4\n[anthropic]\nbase_url = "{emulator.url}"\n{extra}'
    return RouterConfig.from_toml_text(text)


@pytest.fixture
async def pg_router(pg_url: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic) -> AsyncIterator[Router]:
    async with Router(
        _config(pg_url, emulator), anthropic=sdk, clock=emulator.clock.now, scheduler=False
    ) as r:
        yield r


# ---------------------------------------------------------------------------- opening and bad input


def test_the_url_selects_the_engine_and_a_plain_path_stays_sqlite(tmp_path: Path) -> None:
    assert StoreSettings(path=tmp_path / "x.db").engine == "sqlite"
    assert StoreSettings(url=f"sqlite:///{tmp_path}/y.db").path == tmp_path / "y.db"
    pg = StoreSettings(url=f"postgresql://app:{SECRET}@db.example:6543/queue")
    assert pg.engine == "postgresql"
    assert pg.location == "postgresql://app@db.example:6543/queue"
    assert SECRET not in pg.location
    assert SECRET not in repr(pg) and SECRET not in repr(
        RouterConfig.default().model_copy(update={"store": pg})
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://app@db:3306/q", "unknown scheme 'mysql'"),
        ("postgresql://app@db:port/q", "port is not a number"),
        ("postgresql://app@db:5432", "names no database"),
        ("db.example:5432/q", "expected a URL"),
    ],
)
def test_a_bad_store_url_is_a_config_error_that_never_echoes_it(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        RouterConfig.from_toml_text(f'[store]\nurl = "{url.replace("app@", f"app:{SECRET}@")}"\n')
    assert SECRET not in str(caught.value)
    assert "store.url" in str(caught.value)


async def test_an_unreachable_server_is_a_store_error_naming_host_and_port() -> None:
    port = _free_port()
    with pytest.raises(StoreError) as caught:
        await PostgresStore.open(f"postgresql://app:{SECRET}@127.0.0.1:{port}/queue")
    message = str(caught.value)
    assert f"127.0.0.1:{port}/queue" in message
    assert SECRET not in message and SECRET not in repr(caught.value)


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("mysql://app:{secret}@db.example:3306/q", "db.example:3306"),  # an unknown scheme
        ("postgresql://app:{secret}@db.example:5432", "db.example:5432"),  # no database
        ("postgresql://app:{secret}@db.example:port/q", "db.example:?"),  # no port
        ("postgresql://app:{secret}@127.0.0.1:{free}/q", "127.0.0.1:{free}"),  # nobody listening
    ],
)
def test_a_bad_or_unreachable_store_stops_the_daemon_at_start_naming_host_and_port(
    url: str, names: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    free = _free_port()
    config = tmp_path / "router.toml"
    config.write_text(f'[store]\nurl = "{url.format(secret=SECRET, free=free)}"\n', encoding="utf-8")
    assert main(["-c", str(config), "daemon"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hybrid-router: ") and err.count("\n") == 1, err
    assert names.format(free=free) in err and SECRET not in err


async def test_a_malformed_url_at_open_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="malformed store URL for db:"):
        await PostgresStore.open(f"postgresql://app:{SECRET}@db:nope/q")
    with pytest.raises(StoreError, match="not a PostgreSQL URL"):
        await PostgresStore.open("sqlite:///x.db")


async def test_a_missing_database_is_named(pg_server: PostgresServer | ExternalPostgres) -> None:
    with pytest.raises(StoreError, match=r"/no_such_db: .*does not exist"):
        await PostgresStore.open(pg_server.url_for("no_such_db"))


async def test_the_password_is_in_no_repr_or_location(pg_url: str) -> None:
    # The test server trusts local connections, so any password is accepted and ignored.
    url = pg_url.replace("@", f":{SECRET}@", 1)
    store = await open_store(StoreSettings(url=url))
    try:
        assert SECRET not in repr(store) and SECRET not in str(store.path)  # type: ignore[attr-defined]
        assert "127.0.0.1" in repr(store)
    finally:
        await store.close()


@pytest.fixture
async def password_db(pg_server: PostgresServer | ExternalPostgres, tmp_path: Path) -> AsyncIterator[str]:
    """A database only `pw_user` with password SECRET may open (scram): its URL, without the password."""
    if not isinstance(pg_server, PostgresServer):
        pytest.skip("changes pg_hba.conf of the tests' own server")
    name = f"pwcheck_{os.getpid()}_{int(time.time() * 1000) % 100_000}"
    admin = await asyncpg.connect(pg_server.url)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'pw_user'"):
            await admin.execute(f"CREATE ROLE pw_user LOGIN PASSWORD '{SECRET}'")
        await admin.execute(f'CREATE DATABASE "{name}" OWNER pw_user')
        hba = pg_server.data_dir / "pg_hba.conf"
        # Rules are read in order: this one, first, applies to this database alone.
        hba.write_text(f"host {name} all 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        await admin.execute("SELECT pg_reload_conf()")
    finally:
        await admin.close()
    yield f"postgresql://pw_user@127.0.0.1:{pg_server.port}/{name}"


async def test_the_password_comes_from_pgpassword(password_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", SECRET)
    store = await open_store(StoreSettings(url=password_db))
    await store.close()


async def test_the_password_comes_from_a_pgpass_file(
    password_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:*:*:pw_user:{SECRET}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    store = await open_store(StoreSettings(url=password_db))
    await store.close()


async def test_a_wrong_password_is_named_but_never_shown(
    password_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    wrong = "wrong-" + SECRET
    with pytest.raises(StoreError, match="password authentication failed") as caught:
        await open_store(StoreSettings(url=password_db.replace("pw_user@", f"pw_user:{wrong}@")))
    assert wrong not in str(caught.value) and "127.0.0.1:" in str(caught.value)
    # The URL in the URL form works.
    store = await open_store(StoreSettings(url=password_db.replace("pw_user@", f"pw_user:{SECRET}@")))
    assert SECRET not in repr(store)
    await store.close()


async def test_a_newer_schema_is_refused_naming_both_versions(pg_url: str) -> None:
    store = await PostgresStore.open(pg_url)
    await store.close()
    conn = await asyncpg.connect(pg_url)
    await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", SCHEMA_VERSION + 5)
    await conn.close()
    with pytest.raises(StoreError, match=f"version {SCHEMA_VERSION + 5} is newer .*\\({SCHEMA_VERSION}\\)"):
        await PostgresStore.open(pg_url)


async def _tables(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "argv", [["status"], ["report"], ["results", "k"], ["results", "--out", "-"], ["purge"]]
)
def test_reading_commands_never_create_the_schema(
    pg_url: str, tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = pg_url.replace("@", f":{SECRET}@", 1)  # the test server trusts loopback: any password does
    config = tmp_path / "router.toml"
    config.write_text(f'[store]\nurl = "{url}"\n', encoding="utf-8")
    assert main(["-c", str(config), *argv]) == 2
    parts = urlsplit(pg_url)
    assert capsys.readouterr().err == (
        f"hybrid-router: PostgreSQL at {parts.hostname}:{parts.port}{parts.path}: no database here"
        " (no hybrid-router schema in it); check [store] url in the config\n"
    )
    assert asyncio.run(_tables(pg_url)) == []


async def test_a_reading_open_refuses_an_empty_database_and_opens_a_set_up_one(pg_url: str) -> None:
    with pytest.raises(StoreError, match="no database here"):
        await open_store(StoreSettings(url=pg_url), create=False)
    assert await _tables(pg_url) == []
    await (await open_store(StoreSettings(url=pg_url))).close()
    store = await open_store(StoreSettings(url=pg_url), create=False)
    try:
        assert await store.state_counts() == {}
    finally:
        await store.close()


async def test_hosts_opening_a_new_database_at_once_migrate_it_once(pg_url: str) -> None:
    stores = await asyncio.gather(*(PostgresStore.open(pg_url, pool_size=1) for _ in range(4)))
    for store in stores:
        await store.close()
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_version") == SCHEMA_VERSION
    finally:
        await conn.close()


# ---------------------------------------------------------------------------- the Router on PostgreSQL


async def test_both_lanes_end_to_end(pg_router: Router, emulator: Emulator) -> None:
    now = await pg_router.messages.create(**ask("real time question"), latency="realtime")
    assert "real time question" in reply_text(now)
    calls = [
        asyncio.create_task(pg_router.messages.create(**ask(f"deferred {i}"), latency="daily"))
        for i in range(20)
    ]
    await stored(pg_router, 20)
    report = await pg_router.flush()
    assert report.requests == 20
    emulator.end_batches()
    await pg_router.poll()
    replies = await asyncio.wait_for(asyncio.gather(*calls), 30)
    assert [f"deferred {i}" in reply_text(m) for i, m in enumerate(replies)] == [True] * 20
    assert await pg_router.store.state_counts() == {states.SUCCEEDED: 20}
    lanes = {row["lane"] for row in await pg_router.store.ledger_totals()}
    assert lanes == {"batch", "realtime"}


async def test_a_waiter_in_another_router_is_woken_by_notify(
    pg_url: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    # The waiting router polls once an hour: only a NOTIFY can wake it within the test.
    slow = _config(pg_url, emulator, '[router]\nwatch_interval = "1h"\n')
    async with (
        Router(_config(pg_url, emulator), anthropic=sdk, clock=emulator.clock.now, scheduler=False) as driver,
        Router(slow, anthropic=sdk, clock=emulator.clock.now, scheduler=False) as waiter,
    ):
        await driver.messages.submit(**ask("wake me"), latency="daily", key="k1")
        waiting = asyncio.create_task(waiter.results.wait("k1", timeout=30))
        await waiter.store.listening()  # type: ignore[attr-defined]
        await driver.flush()
        emulator.end_batches()
        await driver.poll()
        message = await asyncio.wait_for(waiting, 30)
        assert "wake me" in reply_text(message)


async def test_terminated_connections_are_retried_and_nothing_is_lost(
    pg_router: Router, emulator: Emulator, pg_url: str
) -> None:
    calls = [
        asyncio.create_task(pg_router.messages.create(**ask(f"q{i}"), latency="daily")) for i in range(30)
    ]
    await stored(pg_router, 30)
    with capture_router_logs():
        assert await _terminate_others(pg_url) >= 1  # the pool's connections and the listener
        report = await pg_router.flush()
        assert report.requests == 30
        emulator.end_batches()
        await _terminate_others(pg_url)
        await pg_router.poll()
        replies = await asyncio.wait_for(asyncio.gather(*calls), 30)
    assert [f"q{i}" in reply_text(m) for i, m in enumerate(replies)] == [True] * 30
    # Not asserted: that a statement met a dead connection and was retried (`store_retry`).
    # Whether it does, or the pool replaces the connection first, depends on when the event
    # loop reads the server's goodbye; tests/pgproxy.py drops connections mid-statement.
    assert await pg_router.store.state_counts() == {states.SUCCEEDED: 30}
    assert await pg_router.store.batch_count() == 1


async def _flushed_with_a_waiter_elsewhere(
    driver: Router, waiter: Router, text: str, timeout: float
) -> asyncio.Task[Any]:
    """`driver` submits a deferred request and flushes it; `waiter` (another Router on the same
    database) waits for it, listening for completions: the task of that wait."""
    await driver.messages.submit(**ask(text), latency="daily", key="k1")
    waiting = asyncio.create_task(waiter.results.wait("k1", timeout=timeout))
    await waiter.store.listening()  # type: ignore[attr-defined]
    await driver.flush()
    return waiting


async def test_a_waiter_survives_a_server_restart(
    pg_server: PostgresServer | ExternalPostgres,
    pg_url: str,
    emulator: Emulator,
    sdk: anthropic.AsyncAnthropic,
) -> None:
    if not isinstance(pg_server, PostgresServer):
        pytest.skip("an external server is not restarted by the tests")
    slow = _config(pg_url, emulator, '[router]\nwatch_interval = "1h"\n')
    async with (
        Router(_config(pg_url, emulator), anthropic=sdk, clock=emulator.clock.now, scheduler=False) as driver,
        Router(slow, anthropic=sdk, clock=emulator.clock.now, scheduler=False) as waiter,
    ):
        waiting = await _flushed_with_a_waiter_elsewhere(driver, waiter, "across a restart", timeout=60)
        await asyncio.to_thread(pg_server.restart)
        assert not waiting.done()
        emulator.end_batches()
        await driver.poll()  # its first statements meet dead connections and are retried
        message = await asyncio.wait_for(waiting, 30)
        assert "across a restart" in reply_text(message)


async def test_a_waiter_resolves_after_an_outage_its_listener_could_not_reconnect_through(
    pg_server: PostgresServer | ExternalPostgres,
    pg_url: str,
    emulator: Emulator,
    sdk: anthropic.AsyncAnthropic,
) -> None:
    """The listening connection is lost and fails to reconnect while the server is down; once
    it is back, the waiter catches up from the completion sequence (it polls once an hour)."""
    if not isinstance(pg_server, PostgresServer):
        pytest.skip("an external server is not stopped by the tests")
    fast, slow = _config(pg_url, emulator), _config(pg_url, emulator, '[router]\nwatch_interval = "1h"\n')

    async def reconnects_failed() -> bool:
        return sum(e["event"] == "store_listen_failed" for e in logs) >= 2

    with capture_router_logs() as logs:
        async with (
            Router(fast, anthropic=sdk, clock=emulator.clock.now, scheduler=False) as driver,
            Router(slow, anthropic=sdk, clock=emulator.clock.now, scheduler=False) as waiter,
        ):
            waiting = await _flushed_with_a_waiter_elsewhere(driver, waiter, "through an outage", timeout=120)
            await asyncio.to_thread(pg_server.stop)
            try:
                await until(reconnects_failed, timeout=30)
            finally:
                await asyncio.to_thread(pg_server.start)
            assert not waiting.done()
            emulator.end_batches()
            await driver.poll()
            message = await asyncio.wait_for(waiting, 60)
            assert "through an outage" in reply_text(message)
    assert any(e["event"] == "store_listen_restored" for e in logs)


async def test_enqueue_is_durable_across_a_restart(
    pg_server: PostgresServer | ExternalPostgres, pg_url: str
) -> None:
    if not isinstance(pg_server, PostgresServer):
        pytest.skip("an external server is not restarted by the tests")
    store = await PostgresStore.open(pg_url)
    try:
        request = NewRequest("k", "daily", None, "m", b"{}", time.time(), None)
        ticket = await store.enqueue(request)
        await asyncio.to_thread(pg_server.restart)
        again = await store.enqueue(request)  # retried on a fresh connection, idempotent on its key
        assert (again.request_id, again.created) == (ticket.request_id, False)
        assert await store.state_counts() == {states.PENDING: 1}
    finally:
        await store.close()


async def test_no_index_of_requests_holds_the_state(pg_url: str) -> None:
    """The flush moves every claimed row from submitting to submitted: a HOT update (no index
    entries written) only while no index names `state`, in its columns or its predicate, and
    the row's page has room for its next version."""
    await (await PostgresStore.open(pg_url)).close()
    conn = await asyncpg.connect(pg_url)
    try:
        defs = [
            r[0]
            for r in await conn.fetch(
                "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'requests'::regclass"
            )
        ]
        options = await conn.fetchval("SELECT reloptions FROM pg_class WHERE oid = 'requests'::regclass")
    finally:
        await conn.close()
    assert any("queue = 'pending'" in d for d in defs), defs
    assert [d for d in defs if re.search(r"\bstate\b", d)] == []
    assert "fillfactor=50" in options


async def test_the_idempotency_key_is_unique_in_params_not_requests(pg_url: str) -> None:
    """A claim rewrites every claimed row of `requests` (not a HOT update), entering each new
    version in every index of the table: the key's unique index lives on `request_params`."""
    await (await PostgresStore.open(pg_url)).close()
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch(
            "SELECT indrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
            " WHERE indrelid IN ('requests'::regclass, 'request_params'::regclass) AND indisunique"
        )
    finally:
        await conn.close()
    assert sorted((table, re.sub(r".* USING btree ", "", d)) for table, d in rows) == [
        ("request_params", "(id)"),
        ("request_params", "(key)"),
        ("requests", "(done_seq) WHERE (done_seq IS NOT NULL)"),
        ("requests", "(id)"),
    ]


async def test_keys_stored_before_the_key_moved_to_params_still_hold(pg_url: str) -> None:
    moved = next(i for i, m in enumerate(MIGRATIONS) if "request_params_key" in m)
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "CREATE TABLE schema_version (version INTEGER NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for number, migration in enumerate(MIGRATIONS[:moved]):
            await conn.execute(migration)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", number + 1)
        # A request as the code before the move stored it: its key unique in `requests` only.
        rid = await conn.fetchval(
            "INSERT INTO requests (key, class, model, digest, size, state, created_at)"
            " VALUES ('old', 'daily', 'm', $1, 2, 'pending', 0) RETURNING id",
            digest_of(b"{}"),
        )
        await conn.execute("INSERT INTO request_params (id, params) VALUES ($1, '{}')", rid)
    finally:
        await conn.close()
    store = await PostgresStore.open(pg_url)
    try:
        again = await store.enqueue(NewRequest("old", "daily", None, "m", b"{}", time.time(), None))
        assert (again.request_id, again.created) == (rid, False)
        with pytest.raises(InvalidRequestError, match="key 'old' was already used"):
            await store.enqueue(NewRequest("old", "daily", None, "m", b'{"other": 1}', time.time(), None))
        fresh = await store.enqueue(NewRequest("new", "daily", None, "m", b"{}", time.time(), None))
        assert fresh.created and fresh.request_id > rid
        assert (await store.get_by_key("old")) is not None
        assert await store.state_counts() == {states.PENDING: 2}
    finally:
        await store.close()


async def test_completion_numbers_become_visible_in_their_order(pg_url: str) -> None:
    # A transaction holding completion number N makes the next completer wait, so a reader's
    # cursor can never pass N before N is committed (and so never skip it).
    store = await PostgresStore.open(pg_url)
    raw = await asyncpg.connect(pg_url)
    try:
        tickets = await store.enqueue_many(
            [NewRequest(f"k{i}", "daily", None, "m", b"{}", time.time(), None) for i in range(2)]
        )
        first, second = (t.request_id for t in tickets)
        at_risk = [AtRisk(t.request_id, t.key, "daily", "m", states.PENDING, 0.0, None) for t in tickets]
        assert len(await store.mark_escalated(at_risk, 0.0)) == 2
        transaction = raw.transaction()
        await transaction.start()
        await raw.execute("SELECT pg_advisory_xact_lock($1)", COMPLETION_LOCK)
        await raw.execute(
            "UPDATE requests SET state = 'succeeded', done_seq = nextval('done_seq_numbers'),"
            " finished_at = 0 WHERE id = $1",
            first,
        )
        later = asyncio.create_task(
            store.complete(
                second,
                from_states=[states.ESCALATED],
                succeeded=True,
                outcome="succeeded",
                line=b"{}",
                now=0.0,
            )
        )

        async def blocked() -> bool:
            waiting = await raw.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            return bool(waiting)

        await until(blocked)
        assert await store.completed_since(0) == (0, [])
        await transaction.commit()
        assert await asyncio.wait_for(later, 10)
        assert (await store.completed_since(0))[1] == [first, second]
    finally:
        await raw.close()
        await store.close()


def test_no_driver_import_outside_the_store() -> None:
    root = Path(__file__).resolve().parent.parent / "router"
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if "store" not in path.relative_to(root).parts[:1]
        and any(name in path.read_text() for name in ("import asyncpg", "import aiosqlite", "import psycopg"))
    ]
    assert offenders == []
    assert os.path.isdir(root / "store" / "postgres")
