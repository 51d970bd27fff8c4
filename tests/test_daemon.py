"""The daemon as a real subprocess: daemon-mode apps, the lease, clean shutdown, takeover after SIGKILL."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import pytest

from router import Router, RouterConfig, daemon_watch
from router.config import StoreSettings
from router.daemon_watch import NO_DAEMON_AFTER
from router.emulator import Emulator
from router.store import leases, open_store
from tests import helpers
from tests.durability import (
    env,
    finish,
    lease_owner,
    prompt,
    query,
    run_app,
    start_daemon,
    stderr_events,
    stop,
    until,
    write_config,
)
from tests.engine import CLASSES
from tests.helpers import MODEL, ask, reply_text

# Every test runs on SQLite and on PostgreSQL (tests/stores.py): the daemons and apps share
# the SQLite file beside their config, or one PostgreSQL database.
BOTH_ENGINES = True


@pytest.fixture
def db(store_location: str) -> Path | str:
    """The store every process of a test shares: the SQLite file, or a PostgreSQL URL."""
    return store_location if "://" in store_location else Path(store_location)


def settings_of(db: Path | str) -> StoreSettings:
    return StoreSettings(url=db) if isinstance(db, str) else StoreSettings(path=db)


def states(db: Path | str) -> dict[str, int]:
    return {str(s): int(n) for s, n in query(db, "SELECT state, COUNT(*) FROM requests GROUP BY state")}


def owned_by(db: Path | str, proc: asyncio.subprocess.Process) -> bool:
    owner = lease_owner(db)
    return owner is not None and f":{proc.pid}:" in owner


async def read_until_event(proc: asyncio.subprocess.Process, event: str, timeout: float = 60.0) -> list[str]:
    """Read the process's stderr (JSON logs) until `event` is logged."""
    assert proc.stderr is not None
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            line = (await proc.stderr.readline()).decode()
            if not line:
                raise AssertionError(f"process ended before logging {event}: {''.join(seen)[-2000:]}")
            seen.append(line)
            if line.startswith("{") and json.loads(line).get("event") == event:
                return seen


async def test_daemon_mode_app_gets_results_written_by_the_daemon(
    tmp_path: Path, db: Path | str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    config = write_config(tmp_path, emulator.url, store=str(db))
    daemon = await start_daemon(config)
    try:
        async with Router.from_config(config, anthropic=sdk) as app:
            assert app.scheduler is None  # flusher = "daemon": the app only stores and waits
            call = asyncio.create_task(
                app.messages.create(
                    model=MODEL,
                    max_tokens=32,
                    messages=[{"role": "user", "content": prompt("in-process")}],
                    latency="daily",
                )
            )
            await until(lambda: states(db).get("submitted", 0) == 1)  # the daemon flushed it
            assert not call.done()
            emulator.end_batches()
            message = await asyncio.wait_for(call, 60)  # the daemon polled and ingested it
            assert prompt("in-process") in reply_text(message)

        # submit + exit, then a new process waits for the results by key.
        submitted = await run_app(config, "submit", "k1", "k2")
        assert submitted.code == 0, submitted.stderr
        assert submitted.stdout.split() == ["k1", "k2"]
        await until(lambda: states(db).get("submitted", 0) == 2)
        emulator.end_batches()
        waited = await run_app(config, "wait", "k1", "k2")
        assert waited.code == 0, waited.stderr
        texts = {d["key"]: d["text"] for d in map(json.loads, waited.stdout.splitlines())}
        assert prompt("k1") in texts["k1"] and prompt("k2") in texts["k2"]
        assert "k2" not in texts["k1"]
    finally:
        done = await stop(daemon)
    assert done.code == 0, done.stderr
    events = [e["event"] for e in stderr_events(done.stderr)]  # JSON: stderr is not a terminal
    assert events[0] == "lease_acquired" and "daemon_started" in events
    assert "batch_submitted" in events and "batch_ingested" in events
    assert events[-1] == "daemon_stopped"
    assert lease_owner(db) is None  # released on a clean shutdown: a standby takes over at once
    assert states(db) == {"succeeded": 3}


async def test_second_daemon_exits_and_a_standby_takes_over_after_sigkill(
    tmp_path: Path, db: Path | str, emulator: Emulator
) -> None:
    config = write_config(tmp_path, emulator.url, lease_ttl="20s", store=str(db))
    first = await start_daemon(config)
    standby: asyncio.subprocess.Process | None = None
    try:
        await until(lambda: owned_by(db, first))
        second = await finish(await start_daemon(config))
        assert second.code == 3
        assert "already driven by another daemon" in second.stderr
        assert "--standby" in second.stderr
        assert owned_by(db, first)

        standby = await start_daemon(config, "--standby")
        await read_until_event(standby, "daemon_standby")
        assert owned_by(db, first)
        first.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await first.wait()
        (expires,) = query(db, "SELECT expires_at FROM leases WHERE name = 'driver'")[0]
        await until(lambda: standby is not None and owned_by(db, standby), timeout=60)
        takeover = time.monotonic() - killed
        print(f"\nlease takeover after SIGKILL (same host, standby daemon): {takeover * 1000:.0f} ms")
        assert time.time() < expires  # a dead local holder's lease is not waited out
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
        if standby is not None:
            done = await stop(standby)
            assert done.code == 0, done.stderr


async def test_a_lease_held_elsewhere_is_taken_only_once_it_lapses(
    tmp_path: Path, db: Path | str, emulator: Emulator
) -> None:
    # Its own lease is long: a renewal slowed by a busy machine must not end it before the stop.
    config = write_config(tmp_path, emulator.url, lease_ttl="30s", store=str(db))
    store = await open_store(settings_of(db))  # migrate, then plant a lease of a daemon on another host
    await store.close()
    query(
        db,
        "INSERT INTO leases (name, owner, acquired_at, expires_at) VALUES ('driver', 'elsewhere:1:x', ?, ?)",
        (time.time(), time.time() + 60),
    )
    daemon = await start_daemon(config, "--standby")
    try:
        await read_until_event(daemon, "daemon_standby")
        expires = time.time() + 1.0  # the silent holder's last renewal runs out in a second
        query(db, "UPDATE leases SET expires_at = ?", (expires,))
        await until(lambda: owned_by(db, daemon), timeout=10)
        taken = time.time()
        print(f"\nlease takeover from a silent holder on another host: {taken - expires:+.2f} s after expiry")
        assert taken >= expires  # never before the holder's lease ran out
        assert taken - expires < 10.0  # checked four times a second; the bound allows a loaded machine
    finally:
        done = await stop(daemon)
    assert done.code == 0, done.stderr


async def test_sigint_stops_a_daemon_cleanly(tmp_path: Path, db: Path | str, emulator: Emulator) -> None:
    config = write_config(tmp_path, emulator.url, store=str(db))
    daemon = await start_daemon(config)
    await read_until_event(daemon, "daemon_started")
    daemon.send_signal(signal.SIGINT)
    done = await finish(daemon)
    assert done.code == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert lease_owner(db) is None


async def test_sigterm_during_a_create_lets_it_finish_and_record_the_batch(
    tmp_path: Path, db: Path | str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    config = write_config(tmp_path, emulator.url, store=str(db))
    emulator.faults.set("batches.create", slow_seconds=1.0)  # the create is in flight for a second
    async with Router.from_config(config, anthropic=sdk) as app:
        for i in range(3):
            await app.messages.submit(
                model=MODEL,
                max_tokens=32,
                messages=[{"role": "user", "content": prompt(f"t{i}")}],
                latency="daily",
                key=f"t{i}",
            )
    daemon = await start_daemon(config)
    await until(lambda: states(db).get("submitting", 0) == 3)  # claimed; batches.create under way
    done = await stop(daemon)
    assert done.code == 0, done.stderr
    # The step finished: the batch exists and the store knows it; nothing is left half-made.
    assert states(db) == {"submitted": 3}
    assert query(db, "SELECT state, api_id IS NOT NULL FROM batches") == [("in_progress", 1)]
    assert len(emulator.batches) == 1
    events = [e["event"] for e in stderr_events(done.stderr)]
    assert events.index("batch_submitted") < events.index("daemon_stopped")


async def test_a_create_that_outlasts_the_lease_after_sigterm_keeps_the_standby_waiting(
    tmp_path: Path, db: Path | str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    # A 2 s lease is renewed every 0.67 s and stops the daemon when 1.6 s pass unrenewed: short
    # enough for a brief test, long enough that a busy machine's stall does not end it.
    config = write_config(tmp_path, emulator.url, lease_ttl="2s", store=str(db))
    emulator.faults.set("batches.create", slow_seconds=8.0)  # four leases long
    daemon = await start_daemon(config)
    await until(lambda: owned_by(db, daemon), timeout=60)
    standby = await start_daemon(config, "--standby")
    try:
        await read_until_event(standby, "daemon_standby", timeout=60)
        async with Router.from_config(config, anthropic=sdk) as app:
            await app.messages.submit(**helpers.ask("held"), latency="daily", key="held")
        await until(lambda: states(db).get("submitting", 0) == 1, timeout=60)  # the create is held
        done = await stop(daemon, timeout=60)
        assert done.code == 0, done.stderr
        (submitted,) = [e for e in stderr_events(done.stderr) if e["event"] == "batch_submitted"]
        await until(lambda: owned_by(db, standby), timeout=30)
        ((taken_at,),) = query(db, "SELECT acquired_at FROM leases WHERE name = 'driver'")
        # The lease was renewed while the create finished: the standby took over after it.
        assert taken_at > datetime.fromisoformat(submitted["timestamp"]).timestamp()
        assert len(emulator.batches) == 1
    finally:
        for proc in (daemon, standby):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


# A daemon that stops itself (SIGSTOP) right after a lease renewal once FLAG exists: hung at a
# known point, with no transaction of its own open (a process stopped inside one would hold the
# database's write lock, and the standby could not take the lease at all). It writes the lease
# it holds to OUT first, so the test knows when that lease runs out.
_FREEZING_DAEMON = """
import json, os, signal, sqlite3, sys
import router.daemon as daemon
from router.cli import main

flag, out = sys.argv[1], sys.argv[2]
renew = daemon.Daemon._renew

async def renew_then_freeze(self):
    await renew(self)
    if self._stop.is_set() or not os.path.exists(flag):
        return
    os.remove(flag)  # once: after SIGCONT it runs on
    # No await from the renewal's COMMIT to the SIGSTOP: no other write of ours can begin.
    store = self.config.store
    if store.url:
        import psycopg
        with psycopg.connect(store.url, autocommit=True) as pg:
            ((expires_at,),) = pg.execute(
                "SELECT expires_at FROM leases WHERE owner = %s", (self.owner,)
            ).fetchall()
    else:
        db = sqlite3.connect(str(store.path))
        ((expires_at,),) = db.execute("SELECT expires_at FROM leases WHERE owner = ?", (self.owner,))
        db.close()
    with open(out + ".tmp", "w") as f:
        json.dump({"expires_at": expires_at}, f)
    os.replace(out + ".tmp", out)
    os.kill(os.getpid(), signal.SIGSTOP)

daemon.Daemon._renew = renew_then_freeze
sys.exit(main(sys.argv[3:]))
"""


def stopped(proc: asyncio.subprocess.Process) -> bool:
    """True while the process is stopped by a signal (state T in /proc)."""
    with open(f"/proc/{proc.pid}/stat", encoding="ascii") as stat:
        return stat.read().rpartition(")")[2].split()[0] == "T"


async def test_a_hung_daemon_loses_its_lease_on_expiry_and_exits_when_it_wakes(
    tmp_path: Path, db: Path | str, emulator: Emulator
) -> None:
    # The hung daemon's lease is short (2 s), so the takeover comes soon; the standby's, once
    # it holds it, is long, so a renewal slowed by a busy machine cannot end it and the woken
    # daemon always finds the lease taken.
    config = write_config(tmp_path, emulator.url, lease_ttl="2s", store=str(db))
    standby_config = write_config(tmp_path, emulator.url, lease_ttl="30s", store=str(db), name="standby")
    flag, frozen = tmp_path / "freeze", tmp_path / "frozen.json"
    first = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _FREEZING_DAEMON,
        str(flag),
        str(frozen),
        "--config",
        str(config),
        "daemon",
        env=env(),
        cwd=str(tmp_path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await until(lambda: owned_by(db, first))
    standby = await start_daemon(standby_config, "--standby")
    try:
        await read_until_event(standby, "daemon_standby", timeout=60)
        flag.touch()  # the first daemon hangs right after its next renewal
        await until(lambda: frozen.exists() and stopped(first), timeout=60)
        expires_at = json.loads(frozen.read_text())["expires_at"]
        await until(lambda: owned_by(db, standby), timeout=60)  # alive but silent: only the expiry tells
        ((taken_at,),) = query(db, "SELECT acquired_at FROM leases WHERE name = 'driver'")
        late = (taken_at - expires_at) * 1000
        print(f"\nlease taken from a hung (SIGSTOP) daemon {late:+.0f} ms after its expiry")
        assert taken_at >= expires_at  # never before the hung daemon's lease ran out
        assert stopped(first)
        first.send_signal(signal.SIGCONT)
        woke = await finish(first, timeout=60)
        assert woke.code == 4  # its next renewal fails: it stops instead of driving alongside
        assert "lease_lost" in woke.stderr
        assert owned_by(db, standby)
    finally:
        if first.returncode is None:
            first.send_signal(signal.SIGCONT)
            first.kill()
            await first.wait()
        done = await stop(standby)
    assert done.code == 0, done.stderr


# ---------------------------------------------------------------------------- an app with no daemon

ELSEWHERE = "another-host:4242:cafe0001"  # a daemon on another host: only its lease's expiry tells


def no_daemon_warnings(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "no_daemon"]


async def test_an_app_waiting_with_no_daemon_warns_once_and_again_after_a_daemon_left(
    tmp_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_watch, "CHECK_EVERY", 3600.0)  # the test looks itself, on its clock
    config = RouterConfig.from_toml_text(
        f'[store]\npath = "{tmp_path / "router.db"}"\n[router]\nflusher = "daemon"\n{CLASSES}'
    )
    clock = emulator.clock
    with helpers.capture_router_logs() as logs:
        async with Router(config, anthropic=sdk, clock=clock.now) as app:
            watch = app._daemon_watch
            assert watch is not None and app.scheduler is None
            clock.advance(NO_DAEMON_AFTER + 1)
            assert not await watch.check()  # no daemon, but nothing waits for one
            await app.messages.submit(**ask("anyone there?"), latency="daily", key="k")
            assert await watch.check()
            for _ in range(3):  # once, not per look nor per request
                clock.advance(60)
                await app.messages.submit(**ask("still waiting"), latency="daily")
                assert not await watch.check()
            (warning,) = no_daemon_warnings(logs)
            assert warning["log_level"] == "warning" and warning["pending"] == 1
            assert warning["store"] == str(tmp_path / "router.db")

            # A daemon comes (its lease in force), then goes without releasing it (killed).
            assert await app.store.acquire_lease(ELSEWHERE, ttl=15.0, now=clock.now())
            assert not await watch.check()
            assert any(e["event"] == "daemon_lease_held" for e in logs)
            clock.advance(15.0 + NO_DAEMON_AFTER - 1)  # expired, but not for 30 s yet
            assert not await watch.check()
            clock.advance(2)
            assert await watch.check()
            assert [w["pending"] for w in no_daemon_warnings(logs)] == [1, 4]


async def test_the_app_looks_at_the_lease_on_its_own_and_only_in_daemon_mode(
    tmp_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_watch, "CHECK_EVERY", 0.01)
    db = tmp_path / "router.db"
    inline = RouterConfig.from_toml_text(f'[store]\npath = "{db}"\n{CLASSES}')
    async with Router(inline, anthropic=sdk, clock=emulator.clock.now, scheduler=False) as app:
        assert app._daemon_watch is None  # inline: this process flushes, nobody to wait for
    daemon_mode = RouterConfig.from_toml_text(
        f'[store]\npath = "{db}"\n[router]\nflusher = "daemon"\n{CLASSES}'
    )
    with helpers.capture_router_logs() as logs:
        async with Router(daemon_mode, anthropic=sdk, clock=emulator.clock.now) as app:
            await app.messages.submit(**ask("waiting"), latency="daily")
            emulator.clock.advance(NO_DAEMON_AFTER + 1)

            async def warned() -> bool:
                return bool(no_daemon_warnings(logs))

            await helpers.until(warned)
            app.start_scheduler()  # this process drives the database now: it stops looking
            assert app._daemon_watch is not None and not app._daemon_watch.active


async def test_status_says_who_holds_the_lease(router: Router) -> None:
    now = time.time()
    assert await router.store.lease_holder(now=now) is None
    assert leases.describe_holder(None, now) == "no daemon holds the lease"
    assert await router.store.acquire_lease(ELSEWHERE, ttl=15.0, now=now)
    lease = await router.store.lease_holder(now=now)
    assert lease is not None and lease.owner == ELSEWHERE
    until_text = datetime.fromtimestamp(now + 15.0, UTC).isoformat(timespec="seconds")
    assert (
        leases.describe_holder(lease, now)
        == f"daemon {ELSEWHERE} holds the lease (renewed until {until_text})"
    )
    assert await router.store.lease_holder(now=now + 15.0) is None  # expired
    assert leases.describe_holder(lease, now + 15.0) == "no daemon holds the lease"
    dead = f"{socket.gethostname()}:{2**22 + 7}:deadbeef"  # this host, a pid that does not exist
    assert await router.store.acquire_lease(dead, ttl=15.0, now=now + 16.0)
    assert await router.store.lease_holder(now=now + 16.0) is None
