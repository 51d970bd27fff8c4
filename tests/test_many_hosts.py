"""Many hosts on one PostgreSQL database, proved with real processes (issue 14, item 4).

Three app processes submit 600 keyed deferred requests and three more wait for them; two
daemons share the database, one active and one standby. During the run every connection of
the database is cut with pg_terminate_backend while a batches.create is in flight (a flush
mid-way), the active daemon is SIGKILLed in the middle of an ingest, and the server is
restarted once. Then every request has exactly one outcome, its own reply, delivered to its
waiter once; nothing is lost; every duplicate submission the API saw is counted.
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from router.emulator import Emulator
from router.store import request_id_from
from tests.durability import (
    APP,
    env,
    finish,
    lease_owner,
    prompt,
    query,
    start_daemon,
    stop,
    until,
    write_config,
)
from tests.pgserver import ExternalPostgres, PostgresServer

APPS = 3
REQUESTS = 600


async def _terminate_all(url: str) -> int:
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


async def _app(config: Path, mode: str, keys: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(APP),
        mode,
        str(config),
        *keys,
        env=env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def _owner_pid(url: str) -> int | None:
    owner = lease_owner(url)
    return int(owner.split(":")[1]) if owner else None


async def test_three_apps_two_daemons_kills_cuts_and_a_restart_lose_nothing(
    pg_server: PostgresServer | ExternalPostgres, pg_url: str, tmp_path: Path
) -> None:
    if not isinstance(pg_server, PostgresServer):
        pytest.skip("restarts the tests' own server")
    started = time.monotonic()
    emulator = Emulator(batch_seconds=0.3)  # real clock: batches end on their own
    async with emulator:
        # A lease long enough that cut connections and a loaded machine never let it lapse: the
        # standby takes over from the SIGKILLed daemon at once anyway (a dead local holder).
        # A reconcile grace well past the slowed creates: reconcile matches a listed batch to its
        # intent only within the grace after the intent, and a create answered later than that
        # under load was taken for one never made (resubmitted, its batch never ingested).
        config = write_config(tmp_path, emulator.url, lease_ttl="5s", grace="10s", store=pg_url)
        keys = [f"host{n}-{i}" for n in range(APPS) for i in range(REQUESTS // APPS)]
        parts = [keys[n::APPS] for n in range(APPS)]
        processes: list[asyncio.subprocess.Process] = []
        try:
            # The active daemon dies in the middle of an ingest (chunks of 2 lines: its 20th).
            active = await start_daemon(config, crash_at="ingest.after_chunk:20")
            processes.append(active)
            await until(lambda: _owner_pid(pg_url) == active.pid, timeout=30)
            standby = await start_daemon(config, "--standby")
            processes.append(standby)
            # Creates take a second, so a flush is certainly mid-way when the connections go.
            emulator.faults.set("batches.create", slow_seconds=1.0)
            submitters = [await _app(config, "submit", part) for part in parts]
            processes.extend(submitters)

            def creating() -> bool:
                return bool(query(pg_url, "SELECT count(*) FROM batches WHERE state = 'creating'")[0][0])

            await until(creating, timeout=30)
            terminated = await _terminate_all(pg_url)
            emulator.faults.clear()
            accepted: set[str] = set()
            for proc in submitters:
                done = await finish(proc, timeout=60)
                assert done.code == 0, done.stderr[-3000:]
                accepted.update(done.stdout.split())
            assert accepted == set(keys)
            waiters = [await _app(config, "wait", part) for part in parts]  # a key must exist to wait on
            processes.extend(waiters)

            def waiting() -> bool:
                # Each waiter has opened its store (or is done already): a process that starts while
                # the server is down fails at once, by design.
                names = {r[0] for r in query(pg_url, "SELECT application_name FROM pg_stat_activity")}
                return all(p.returncode is not None or f"hybrid-router:{p.pid}" in names for p in waiters)

            await until(waiting, timeout=60)

            killed = await finish(active, timeout=60)
            assert killed.code == -signal.SIGKILL, killed.stderr[-3000:]
            await until(lambda: _owner_pid(pg_url) == standby.pid, timeout=30)
            await asyncio.to_thread(pg_server.restart)
            restarts = 1

            def settled() -> bool:
                counts = dict(query(pg_url, "SELECT state, count(*) FROM requests GROUP BY state"))
                open_batches = query(pg_url, "SELECT count(*) FROM batches WHERE state <> 'done'")[0][0]
                return (
                    set(counts) <= {"succeeded", "failed"}
                    and sum(counts.values()) == REQUESTS
                    and not open_batches
                )

            await until(settled, timeout=120)
            delivered: collections.Counter[str] = collections.Counter()
            for proc, part in zip(waiters, parts, strict=True):
                done = await finish(proc, timeout=120)
                assert done.code == 0, done.stderr[-3000:]
                for answer in map(json.loads, done.stdout.splitlines()):
                    assert prompt(answer["key"]) in answer["text"], answer
                    delivered[answer["key"]] += 1
                assert set(part) <= set(delivered)
            stopped = await stop(standby)
            assert stopped.code == 0, stopped.stderr[-3000:]

            rows = {
                str(k): (int(i), str(s)) for k, i, s in query(pg_url, "SELECT key, id, state FROM requests")
            }
            lost = sorted(k for k in keys if rows.get(k, (0, ""))[1] != "succeeded")
            twice = sorted(k for k, n in delivered.items() if n > 1)
            billed = collections.Counter(
                int(r)
                for (r,) in query(
                    pg_url,
                    "SELECT request_id FROM ledger"
                    " WHERE lane = 'batch' AND duplicate = 0 AND result_type = 'succeeded'",
                )
            )
            assert lost == [] and twice == []
            assert sorted(billed.values()) == [1] * REQUESTS
            assert set(billed) == {rows[k][0] for k in keys}
            emulator.end_batches()
            sent = collections.Counter(
                request_id_from(line["custom_id"])
                for batch in emulator.batches.values()
                for line in batch.results()
            )
            submitted_twice = sum(c - 1 for c in sent.values() if c > 1)
            detected = int(query(pg_url, "SELECT count(*) FROM ledger WHERE duplicate = 1")[0][0])
            assert detected == submitted_twice
        finally:  # nothing outlives a failed run
            for proc in processes:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    print(
        f"\nmany hosts: {APPS} apps + {APPS} waiting apps, 2 daemons, requests {REQUESTS},"
        f" kills 1 (active daemon mid-ingest), connections terminated {terminated}, restarts {restarts},"
        f" lost {len(lost)}, delivered twice {len(twice)}, duplicate submissions {submitted_twice}"
        f" (counted {detected}), remote batches {len(emulator.batches)}, {time.monotonic() - started:.1f} s"
    )
