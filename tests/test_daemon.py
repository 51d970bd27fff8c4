"""The daemon as a real subprocess: daemon-mode apps, the lease, clean shutdown, takeover after SIGKILL."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import anthropic
import pytest

from router import Router
from router.config import StoreSettings
from router.emulator import Emulator
from router.store import open_store
from tests.durability import (
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
from tests.helpers import MODEL, reply_text

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


async def read_until_event(proc: asyncio.subprocess.Process, event: str, timeout: float = 15.0) -> list[str]:
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
            message = await asyncio.wait_for(call, 15)  # the daemon polled and ingested it
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
    config = write_config(tmp_path, emulator.url, lease_ttl="2s", store=str(db))
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
        await until(lambda: standby is not None and owned_by(db, standby), timeout=10)
        takeover = time.monotonic() - killed
        print(f"\nlease takeover after SIGKILL (same host, standby daemon): {takeover * 1000:.0f} ms")
        assert takeover < 2.0  # a dead local holder is not waited for (lease_ttl is 2s)
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
    config = write_config(tmp_path, emulator.url, lease_ttl="1s", store=str(db))
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
        assert taken - expires < 1.0
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


async def test_a_hung_daemon_loses_its_lease_on_expiry_and_exits_when_it_wakes(
    tmp_path: Path, db: Path | str, emulator: Emulator
) -> None:
    config = write_config(tmp_path, emulator.url, lease_ttl="1s", store=str(db))
    first = await start_daemon(config)
    await until(lambda: owned_by(db, first))
    standby = await start_daemon(config, "--standby")
    try:
        await read_until_event(standby, "daemon_standby")
        first.send_signal(signal.SIGSTOP)  # alive but silent: only the expiry can tell
        frozen = time.monotonic()
        await until(lambda: owned_by(db, standby), timeout=10)
        takeover = time.monotonic() - frozen
        print(f"\nlease takeover from a hung (SIGSTOP) daemon, lease_ttl 1s: {takeover * 1000:.0f} ms")
        assert takeover >= 0.3  # renewed every ttl/3, so never taken before it lapsed
        first.send_signal(signal.SIGCONT)
        woke = await finish(first)
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
