"""A database outage longer than the daemon's lease, on a real PostgreSQL server stopped and
started again: the active daemon stops driving before its lease can run out (from then on a
standby may take over, and two daemons must never flush or ingest at once), the standby takes
over once the server is back, and an app waiting all along resolves without a restart."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from router import Router
from router.config import StoreSettings
from router.daemon import EXIT_LEASE_LOST
from router.emulator import Emulator
from router.store import open_store
from tests.durability import Child, lease_owner, query, reaped, start_daemon, until, write_config
from tests.helpers import ask, reply_text
from tests.pgserver import ExternalPostgres, PostgresServer


def owned_by(db: str, child: Child) -> bool:
    return f":{child.pid}:" in (lease_owner(db) or "")


async def test_a_lease_that_runs_out_in_an_outage_stops_the_daemon_before_a_standby_takes_over(
    tmp_path: Path, pg_server: PostgresServer | ExternalPostgres, pg_url: str, emulator: Emulator
) -> None:
    if not isinstance(pg_server, PostgresServer):
        pytest.skip("the outage stops the server: it needs the tests' own PostgreSQL")
    # The active daemon's lease is short, so the outage that outlasts it is short too. The
    # standby's, written once it takes over, is long: a renewal slowed by a busy machine after
    # the restart must not make it step down before the test is done with it.
    config = write_config(tmp_path, emulator.url, lease_ttl="4s", store=pg_url)
    standby_config = write_config(tmp_path, emulator.url, lease_ttl="30s", store=pg_url, name="standby")
    children: list[Child] = []
    async with reaped(children), asyncio.timeout(240):
        active = Child("active", await start_daemon(config))
        children.append(active)
        await until(lambda: owned_by(pg_url, active), timeout=60, what="the lease")
        standby = Child("standby", await start_daemon(standby_config, "--standby"))
        children.append(standby)
        await until(lambda: bool(standby.events("daemon_standby")), timeout=60, what="the standby")

        async with Router.from_config(config) as app:
            await app.messages.submit(**ask("through an outage"), latency="daily", key="k")
            # Waiting from now on (the daemon's flush waits for a tick of its trigger).
            waiting = asyncio.create_task(app.results.wait("k", timeout=300))
            await until(
                lambda: query(pg_url, "SELECT state FROM requests") == [("submitted",)],
                timeout=60,
                what="the batch created",
            )

            await asyncio.to_thread(pg_server.stop)
            try:
                # Nothing can be renewed now. The active daemon stops driving while the server
                # is still down: before its lease could run out, so before anyone could take over.
                await until(lambda: bool(active.events("lease_lost")), timeout=30, what="the step-down")
                assert not standby.events("lease_acquired")
                assert not waiting.done()
            finally:
                await asyncio.to_thread(pg_server.start)
            (lost,) = active.events("lease_lost")
            assert lost["reason"] == "not renewed in time", lost
            assert await active.exited(timeout=90) == EXIT_LEASE_LOST  # once its reads give up

            # The server is back: the standby takes over and ingests; the app, never restarted,
            # gets its reply.
            await until(lambda: owned_by(pg_url, standby), timeout=60, what="the takeover")
            emulator.clock.advance(emulator.config.batch_seconds + 1)
            message = await asyncio.wait_for(waiting, 60)
            assert "through an outage" in reply_text(message)
        assert not active.events("batch_ingested")
        assert len(standby.events("batch_ingested")) == 1
        assert standby.proc.returncode is None, standby.events("lease_lost") or standby.err[-30:]
        standby.proc.send_signal(signal.SIGTERM)
        assert await standby.exited(timeout=30) == 0, standby.err[-20:]


@pytest.mark.parametrize("retry_for", ["60s", "1s"], ids=["retried-through", "retries-give-up"])
async def test_a_standby_whose_takeover_outlasts_its_lease_in_an_outage_drives_with_a_fresh_one(
    tmp_path: Path,
    pg_server: PostgresServer | ExternalPostgres,
    pg_url: str,
    emulator: Emulator,
    retry_for: str,
) -> None:
    """The standby's look at the lease begins while the server is down and is retried until it
    is back, longer than a lease: the expiry it writes comes from the `now` it began with, so
    that lease has run out when it is taken. The standby renews it before driving, rather than
    stepping down (exit 4) at once and leaving the database without a daemon. With retries
    shorter than the outage, its look fails instead, and it keeps waiting rather than exiting."""
    if not isinstance(pg_server, PostgresServer):
        pytest.skip("the outage stops the server: it needs the tests' own PostgreSQL")
    ttl = 4.0  # renewed every 1.3 s once it drives: a busy machine's stall must not stop it
    config = write_config(tmp_path, emulator.url, lease_ttl=f"{ttl:g}s", store=pg_url, retry_for=retry_for)
    store = await open_store(StoreSettings(url=pg_url))  # migrate, then plant the holder's lease
    await store.close()
    children: list[Child] = []
    # The holder: a live process of this host, so its lease is waited on until it dies.
    holder = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(600)")
    try:
        query(
            pg_url,
            "INSERT INTO leases (name, owner, acquired_at, expires_at) VALUES ('driver', ?, ?, ?)",
            (f"{socket.gethostname()}:{holder.pid}:cafe0001", time.time(), time.time() + 3600),
        )
        async with reaped(children), asyncio.timeout(240):
            standby = Child("standby", await start_daemon(config, "--standby"))
            children.append(standby)
            await until(lambda: bool(standby.events("daemon_standby")), timeout=60, what="the standby")

            await asyncio.to_thread(pg_server.stop)
            try:
                holder.kill()  # the lease is free once the standby can read it again
                await holder.wait()
                # The standby looks at the lease every half second: a look under way now began
                # after the stop, and is retried. Outlast a lease from then on; leases are
                # judged by the wall clock, which no test clock stands in for.
                back_after = time.time() + 0.5 + ttl
                await until(lambda: time.time() > back_after, timeout=30, what="an outage past a lease")
            finally:
                await asyncio.to_thread(pg_server.start)

            await until(lambda: bool(standby.events("lease_acquired")), timeout=60, what="the takeover")
            if retry_for == "1s":
                assert standby.events("lease_check_failed")
            await until(lambda: bool(standby.events("daemon_started")), timeout=60, what="the daemon started")
            assert owned_by(pg_url, standby)
            standby.proc.send_signal(signal.SIGTERM)
            assert await standby.exited(timeout=30) == 0, standby.events("lease_lost") or standby.err[-20:]
            assert lease_owner(pg_url) is None  # released on the clean shutdown
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
