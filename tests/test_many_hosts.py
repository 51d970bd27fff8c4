"""Many hosts, proven: three app processes and two daemons on one PostgreSQL database.

The apps (tests/many_hosts_app.py) each store 200 keyed deferred requests, make two real-time
calls, and wait for their 200 results. The daemons are one active and one `--standby`. One
emulator on a manual clock: the batch ends only when the test advances it. Meanwhile:

1. the connections of every app and daemon are cut with pg_terminate_backend while the active
   daemon's batches.create is held at the emulator (the batch intent is `creating`);
2. the server is restarted while the apps wait;
3. the active daemon is SIGKILLed after its first ingest chunk committed (HYBRID_ROUTER_CRASH_AT),
   and the standby takes over and ingests the rest.

Then every request has exactly one outcome, its own reply, delivered once to its own app; none
is lost; the duplicate submissions the API saw are counted in the ledger. The figures (requests,
kills, connection terminations, restarts, lost, delivered twice, duplicate submissions, batches
created, standby takeovers) are printed and written to many_hosts_figures.json under tmp_path.
The lease is the product's default: with the daemon's lease watch, a lease shorter than the
restart would make the active daemon step down (exit 4) before the batch ends.
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from router.config import RouterSettings
from router.emulator import Emulator
from router.emulator.replies import REPLY_PREFIX
from router.store import request_id_from
from tests.durability import Child, env, go, lease_owner, query, reaped, start_daemon, until, write_config
from tests.many_hosts_app import prompt
from tests.pgserver import ExternalPostgres, PostgresServer

APP = Path(__file__).with_name("many_hosts_app.py")
APPS = 3
PER_APP = 200
REALTIME_PER_APP = 2
# batches.create answers this long after it arrived: long enough for the test to see the intent,
# cut every connection and see the intent still `creating` (a wait on the database, not a sleep).
CREATE_HOLD = 6.0
LEASE_TTL = RouterSettings().lease_ttl
CRASH_AT = "ingest.after_chunk:1"  # chunks of 2 lines (tests/durability.py), one commit each


async def start_app(config: Path, name: str) -> Child:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(APP),
        str(config),
        name,
        str(PER_APP),
        str(REALTIME_PER_APP),
        env=env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Child(name, proc)


async def daemon(config: Path, name: str, *extra: str, crash_at: str | None = None) -> Child:
    """A gated daemon (its imports done, it starts on `go`)."""
    return Child(name, await start_daemon(config, *extra, crash_at=crash_at, gated=True))


def terminate_backends(url: str) -> list[int]:
    """pg_terminate_backend on every other session of the database, from a separate superuser
    connection: the client ports of the sessions it ended."""
    # Materialized first: the planner may not test a condition before calling the function.
    rows = query(
        url,
        "WITH others AS MATERIALIZED (SELECT pid, client_port FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND backend_type = 'client backend')"
        " SELECT client_port FROM others WHERE pg_terminate_backend(pid)",
    )
    return [int(port) for (port,) in rows]


def count(db: str, sql: str) -> int:
    return int(query(db, sql)[0][0])


def creates_answered(emulator: Emulator) -> int:
    """The batches.create calls the emulator has answered (its journal logs a request when it ends)."""
    return sum(1 for entry in emulator.journal if entry.endpoint == "batches.create")


async def test_three_apps_two_daemons_one_database_kill_terminate_restart(
    tmp_path: Path, pg_server: PostgresServer | ExternalPostgres, pg_url: str, emulator: Emulator
) -> None:
    if not isinstance(pg_server, PostgresServer):
        pytest.skip("the many-hosts test restarts the server: it needs the tests' own PostgreSQL")
    started = time.monotonic()
    db = pg_url
    # The product's lease outlives the server's restart (several seconds on a busy machine), so
    # the active daemon is still the one that ingests when the batch ends; the standby takes
    # over only after the SIGKILL (at once: a dead local holder is not waited for).
    config = write_config(tmp_path, emulator.url, lease_ttl=f"{LEASE_TTL:g}s", grace="2s", store=db)
    names = [f"app{n}" for n in range(APPS)]
    expected = {f"{name}-{i}" for name in names for i in range(PER_APP)}
    children: list[Child] = []

    async with reaped(children), asyncio.timeout(180):
        # The daemons import while the apps store their requests; neither daemon runs yet.
        active = await daemon(config, "daemon A", crash_at=CRASH_AT)
        standby = await daemon(config, "daemon B", "--standby")
        apps = [await start_app(config, name) for name in names]
        children += [active, standby, *apps]

        def accepted() -> int:
            return sum(1 for app in apps for r in app.records() if "accepted" in r)

        await until(lambda: accepted() == len(expected), timeout=60, what="every request stored")
        assert count(db, "SELECT COUNT(*) FROM requests WHERE state = 'pending'") == len(expected)

        # ---- the active daemon, the standby, and a create held at the emulator
        emulator.faults.set("batches.create", slow_seconds=CREATE_HOLD)
        await go(active.proc)
        host = socket.gethostname()
        await until(lambda: (lease_owner(db) or "").startswith(f"{host}:{active.pid}:"), timeout=30)
        await go(standby.proc)
        await until(lambda: bool(standby.events("daemon_standby")), timeout=30)
        await until(lambda: count(db, "SELECT COUNT(*) FROM batches WHERE state = 'creating'") == 1)

        # ---- every connection cut in the middle of the flush: the intent is recorded and the
        # create not answered yet, before the cut and after it
        assert not emulator.batches and not creates_answered(emulator)
        ports = {child.name: child.tcp_ports() for child in children}
        cut = terminate_backends(db)
        assert count(db, "SELECT COUNT(*) FROM batches WHERE state = 'creating'") == 1  # still held
        assert not emulator.batches and not creates_answered(emulator)
        cut_by = collections.Counter(
            next((name for name, held in ports.items() if port in held), "other") for port in cut
        )
        for child in children:
            assert cut_by[child.name] >= 1, (child.name, cut_by)
        emulator.faults.clear()

        def submitted() -> bool:
            return count(db, "SELECT COUNT(*) FROM requests WHERE state = 'submitted'") == len(expected)

        await until(submitted, timeout=CREATE_HOLD + 30, what="the held create recorded")
        assert count(db, "SELECT COUNT(*) FROM batches WHERE state = 'creating'") == 0

        # ---- the server restarted while the apps wait
        await asyncio.to_thread(pg_server.restart)
        restarts = 1
        assert not standby.events("lease_acquired"), "the standby took over during the restart"
        for child in children:
            assert child.proc.returncode is None, (child.name, child.err[-20:])
        assert not any("key" in r for app in apps for r in app.records())  # nothing answered yet

        # ---- the batch ends; the active daemon dies after its first ingest chunk; B takes over
        emulator.clock.advance(emulator.config.batch_seconds + 1)
        assert await active.exited(timeout=30) == -signal.SIGKILL
        kills = 1
        assert not active.events("batch_ingested"), "the active daemon finished its ingest"
        await until(lambda: bool(standby.events("lease_acquired")), timeout=30, what="the takeover")
        for app in apps:
            assert await app.exited(timeout=60) == 0, (app.name, app.err[-20:])
        standby.proc.send_signal(signal.SIGTERM)
        assert await standby.exited(timeout=30) == 0, standby.err[-20:]

    elapsed = time.monotonic() - started
    # The standby re-read the whole batch: what the killed daemon had committed was skipped.
    (ingested,) = standby.events("batch_ingested")
    assert ingested["skipped"] >= 1 and ingested["delivered"] >= 1, ingested
    assert ingested["skipped"] + ingested["delivered"] == len(expected), ingested

    # ---- every request: one outcome, its own reply, delivered once to its own app
    resolved: collections.Counter[str] = collections.Counter()
    wrong: list[str] = []
    for app in apps:
        for record in app.records():
            if "key" in record:
                key = str(record["key"])
                resolved[key] += 1
                if not key.startswith(f"{app.name}-") or record["text"] != REPLY_PREFIX + prompt(key):
                    wrong.append(key)
            elif "realtime" in record and record["text"] != REPLY_PREFIX + prompt(str(record["realtime"])):
                wrong.append(str(record["realtime"]))
    realtime = sum(1 for app in apps for r in app.records() if "realtime" in r)
    rows = {str(k): (int(i), str(s)) for k, i, s in query(db, "SELECT key, id, state FROM requests")}
    lost = sorted(k for k in expected if resolved[k] == 0 or rows.get(k, (0, ""))[1] != "succeeded")
    twice = sorted(k for k, n in resolved.items() if n > 1)
    delivered = collections.Counter(
        int(r)
        for (r,) in query(
            db,
            "SELECT request_id FROM ledger"
            " WHERE lane = 'batch' AND duplicate = 0 AND result_type = 'succeeded'",
        )
    )
    ledger_twice = sorted(r for r, n in delivered.items() if n > 1)

    # ---- duplicate submissions: what the API received twice, and what the ledger counted
    emulator.end_batches()
    sent = collections.Counter(
        request_id_from(line["custom_id"]) for batch in emulator.batches.values() for line in batch.results()
    )
    submitted_twice = sum(n - 1 for n in sent.values() if n > 1)
    detected = count(db, "SELECT COUNT(*) FROM ledger WHERE duplicate = 1")

    takeovers = len(standby.events("lease_acquired"))
    figures = {
        "requests": len(expected),
        "realtime_requests": realtime,
        "kills": kills,
        "lines_committed_before_the_kill": ingested["skipped"],
        "lines_ingested_by_the_standby": ingested["delivered"],
        "connection_terminations": len(cut),
        "terminations_by_process": dict(sorted(cut_by.items())),
        "restarts": restarts,
        "lost": len(lost),
        "delivered_twice": len(twice),
        "delivered_twice_in_the_ledger": len(ledger_twice),
        "duplicate_submissions": submitted_twice,
        "duplicates_counted_in_the_ledger": detected,
        "wrong_replies": len(wrong),
        "batches_created": len(emulator.batches),
        "standby_takeovers": takeovers,
        "lease_ttl_seconds": LEASE_TTL,
        "seconds": round(elapsed, 1),
    }
    out = tmp_path / "many_hosts_figures.json"
    out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(
        f"\nmany hosts: {APPS} apps, 2 daemons, one PostgreSQL database;"
        f" requests {len(expected)} deferred + {realtime} real-time,"
        f" kills {kills} (active daemon mid-ingest: {ingested['skipped']} lines committed before,"
        f" {ingested['delivered']} by the standby), connection terminations {len(cut)}"
        f" ({', '.join(f'{name} {n}' for name, n in sorted(cut_by.items()))}), restarts {restarts},"
        f" lost {len(lost)}, delivered twice {len(twice)} (ledger {len(ledger_twice)}),"
        f" duplicate submissions {submitted_twice} (counted in the ledger {detected}),"
        f" wrong replies {len(wrong)}, batches created {len(emulator.batches)},"
        f" standby takeovers {takeovers}, {elapsed:.1f} s\nmany hosts figures: {out}"
    )
    assert lost == [] and twice == [] and ledger_twice == [] and wrong == []
    assert set(resolved) == expected and set(delivered) == {rows[k][0] for k in expected}
    assert realtime == APPS * REALTIME_PER_APP
    assert detected == submitted_twice
    assert takeovers == 1 and len(emulator.batches) >= 1
