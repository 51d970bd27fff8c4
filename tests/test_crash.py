"""Crash safety, proved with real processes and SIGKILL at named points of every step.

One database and one emulator (batches end 0.2 s after creation, real clock) go through a
sequence of phases. Each phase kills an app (during enqueue) or a daemon (claim, create,
reconcile, poll, ingest, lease, purge) at a precise point via HYBRID_ROUTER_CRASH_AT; the
next phase restarts whatever died. A last daemon runs to completion while the listing of
batches fails for a while (so one lost create cannot be confirmed and is resubmitted), and a
second daemon is started against the same database meanwhile. Then: every accepted request
has exactly one final outcome, its own reply, one non-duplicate ledger row, and every
duplicate submission the API saw is counted in the ledger.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from pathlib import Path

import anthropic

from router import Router
from router.emulator import Emulator
from router.store import request_id_from
from router.store.sqlite.sql import RESULT_OF_REQUEST
from tests.durability import finish, go, prompt, query, run_app, start_daemon, stop, until, write_config
from tests.helpers import MODEL, reply_text

APP_POINTS = [
    "enqueue.before_commit:1",
    "enqueue.after_commit:1",
    "enqueue.before_commit:3",
    "enqueue.after_commit:3",
]
# In order: each point finds the state the previous kill left (e.g. a lost create to reconcile).
DAEMON_POINTS = [
    "lease.after_acquire",
    "claim.before_commit",
    "flush.after_claim",  # leaves an intent with no remote batch...
    "reconcile.before_release",  # ...which the next daemon lists for, and is killed before releasing
    "create.mid_body",  # killed while uploading the batch body
    "flush.after_create",  # the batch exists, the store does not know its id...
    "reconcile.after_list",  # ...found by listing, killed before adopting
    "reconcile.after_adopt",
    "flush.after_mark_submitted",
    "poll.after_retrieve",
    "poll.after_ended",
    "ingest.after_chunk:1",
    "ingest.after_chunk:2",  # mid-results: chunks of 2 lines, one transaction each
    "apply.before_commit:1",
    "apply.before_commit:2",
    "ingest.before_finish",
    "lease.after_renew",
    "purge.before_commit",
]
PER_PHASE = 3
# Runs on SQLite and on PostgreSQL (tests/stores.py): the same kill points, the same proof.
BOTH_ENGINES = True


async def test_sigkill_at_every_step_loses_nothing_and_delivers_nothing_twice(
    tmp_path: Path, store_location: str, sdk: anthropic.AsyncAnthropic
) -> None:
    started = time.monotonic()
    emulator = Emulator(batch_seconds=0.2)  # real clock: batches end on their own
    async with emulator:
        config = write_config(tmp_path, emulator.url, lease_ttl="10s", grace="1s", store=store_location)
        postgres = "://" in store_location
        db: Path | str = store_location if postgres else tmp_path / "router.db"
        result_of_request = "result" if postgres else RESULT_OF_REQUEST
        accepted: set[str] = set()
        killed: list[str] = []

        def open_count() -> int:
            rows = query(db, "SELECT COUNT(*) FROM batches WHERE state <> 'done'")
            return int(rows[0][0])

        async with Router.from_config(config, anthropic=sdk) as app:  # an app in this process too

            async def submit(keys: list[str]) -> None:
                for key in keys:
                    await app.messages.submit(
                        model=MODEL,
                        max_tokens=32,
                        messages=[{"role": "user", "content": prompt(key)}],
                        latency="daily",
                        key=key,
                    )
                    accepted.add(key)

            # Apps killed while enqueueing: what they printed was accepted; a restart finishes.
            # (independent apps, so they run side by side)
            app_keys = [[f"app{n}-{i}" for i in range(4)] for n in range(len(APP_POINTS))]
            runs = await asyncio.gather(
                *(
                    run_app(config, "submit", *keys, crash_at=p)
                    for keys, p in zip(app_keys, APP_POINTS, strict=True)
                )
            )
            for point, run in zip(APP_POINTS, runs, strict=True):
                assert run.code == -9, f"{point}: app was not killed ({run.code}): {run.stderr[-2000:]}"
                accepted.update(run.stdout.split())
                killed.append(f"app {point}")
            all_app_keys = [k for keys in app_keys for k in keys]
            restarted = await run_app(config, "submit", *all_app_keys)
            assert restarted.code == 0, restarted.stderr
            assert restarted.stdout.split() == all_app_keys  # idempotent: same keys, same tickets
            accepted.update(all_app_keys)

            # Daemons killed at each step; each phase brings new work.
            upcoming = await start_daemon(config, crash_at=DAEMON_POINTS[0], gated=True)
            for n, point in enumerate(DAEMON_POINTS):
                await submit([f"d{n}-{i}" for i in range(PER_PHASE)])
                daemon = upcoming
                await go(daemon)
                # The next one imports meanwhile; it starts only once this one is dead.
                following = DAEMON_POINTS[n + 1] if n + 1 < len(DAEMON_POINTS) else "flush.after_create"
                upcoming = await start_daemon(config, crash_at=following, gated=True)
                done = await finish(daemon)
                assert done.code == -9, f"{point}: daemon was not killed ({done.code}): {done.stderr[-3000:]}"
                killed.append(f"daemon {point}")

            # A create whose answer is lost while the listing fails: the router cannot be sure.
            await submit([f"dup-{i}" for i in range(PER_PHASE)])
            await go(upcoming)  # crash_at="flush.after_create"
            done = await finish(upcoming)
            assert done.code == -9, done.stderr[-3000:]
            killed.append("daemon flush.after_create")
            unrecorded = query(db, "SELECT COUNT(*) FROM batches WHERE state = 'creating'")[0][0]
            assert unrecorded >= 1
            emulator.faults.fail_next("batches.list", status=500, count=10**6)

            final = await start_daemon(config)
            await until(lambda: query(db, "SELECT COUNT(*) FROM batches WHERE state = 'released'")[0][0] > 0)
            second = await finish(await start_daemon(config))  # a second daemon meanwhile
            assert second.code == 3 and "already driven by another daemon" in second.stderr
            emulator.faults.clear()  # the listing works again: the lost batch is found late

            def settled() -> bool:
                counts = dict(query(db, "SELECT state, COUNT(*) FROM requests GROUP BY state"))
                return set(counts) <= {"succeeded", "failed"} and open_count() == 0

            await until(settled)
            stopped = await stop(final)
            assert stopped.code == 0, stopped.stderr[-3000:]

            # ---- every accepted request: exactly one outcome, its own, delivered once
            rows = {
                str(k): (int(i), str(s), bytes(r) if r is not None else None)
                for k, i, s, r in query(db, f"SELECT key, id, state, {result_of_request} FROM requests")
            }
            lost = sorted(k for k in accepted if k not in rows or rows[k][1] not in ("succeeded", "failed"))
            assert lost == []
            for key in accepted:
                rid, state, result = rows[key]
                assert state == "succeeded", (key, state)
                assert result is not None and json.loads(result)["custom_id"] == f"r{rid}"
                message = await app.results.get(key)
                assert message is not None and prompt(key) in reply_text(message), key

            delivered = collections.Counter(
                int(r)
                for (r,) in query(
                    db,
                    "SELECT request_id FROM ledger"
                    " WHERE lane = 'batch' AND duplicate = 0 AND result_type = 'succeeded'",
                )
            )
            twice = sorted(r for r, c in delivered.items() if c > 1)
            assert twice == []
            assert set(delivered) == {rows[k][0] for k in accepted}

            # ---- duplicate submissions: what the API received twice, and what the ledger counted
            emulator.end_batches()
            sent = collections.Counter(
                request_id_from(line["custom_id"])
                for batch in emulator.batches.values()
                for line in batch.results()
            )
            submitted_twice = sum(c - 1 for c in sent.values() if c > 1)
            detected = int(query(db, "SELECT COUNT(*) FROM ledger WHERE duplicate = 1")[0][0])
            assert submitted_twice >= 1  # the unsure create above really was sent twice
            assert detected == submitted_twice  # ...and every duplicate is counted

    elapsed = time.monotonic() - started
    print(
        f"\ncrash test: kills {len(killed)} at {len(set(killed))} distinct points"
        f" ({len(APP_POINTS)} app, {len(DAEMON_POINTS)} daemon),"
        f" requests accepted {len(accepted)}, lost {len(lost)}, delivered twice {len(twice)},"
        f" duplicate submissions {submitted_twice} (detected in the ledger {detected}),"
        f" remote batches {len(emulator.batches)}, {elapsed:.1f} s"
    )
    assert len(set(killed)) >= 20
