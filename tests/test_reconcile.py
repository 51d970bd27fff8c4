"""Reconciling lost create answers, and retention, in process over the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from router import Router
from router.batcher import create_batch
from router.cli import main
from router.emulator import Emulator
from router.providers.anthropic.provider import BATCH_FORMAT
from router.store import Store, states
from tests.durability import query
from tests.helpers import ask, reply_text, run_batches


def batch_creates(emulator: Emulator) -> int:
    return sum(1 for e in emulator.journal if e.method == "POST" and e.path == "/v1/messages/batches")


async def submit(router: Router, n: int, prefix: str = "q") -> list[str]:
    keys = [f"{prefix}{i}" for i in range(n)]
    for key in keys:
        await router.messages.submit(**ask(f"question {key}"), latency="daily", key=key)
    return keys


async def batch_states(router: Router) -> list[tuple[str, str | None]]:
    rows = query(router.store.path, "SELECT state, api_id FROM batches ORDER BY id")
    return [(str(s), a) for s, a in rows]


async def ledger_rows(router: Router) -> list[tuple[int, int]]:
    rows = query(
        router.store.path, "SELECT request_id, duplicate FROM ledger WHERE lane = 'batch' ORDER BY id"
    )
    return [(int(r), int(d)) for r, d in rows]


async def test_a_created_batch_whose_answer_was_lost_is_adopted_not_resubmitted(
    router: Router, emulator: Emulator
) -> None:
    keys = await submit(router, 3)
    claim = await router.store.claim_batch(
        frame=BATCH_FORMAT, latencies=None, max_requests=100, max_bytes=10**6, now=router.clock()
    )
    assert claim is not None
    remote = await create_batch(router.provider, router.store, claim)  # ...and the process "died" here
    router.settled_before = router.clock() + 1  # as a daemon that took the lease after that crash
    await router.poll()
    assert await batch_states(router) == [("in_progress", remote.id)]
    assert (await router.store.state_counts()) == {"submitted": 3}
    await run_batches(router, emulator)
    for key in keys:
        assert f"question {key}" in reply_text(await router.results.wait(key, timeout=5))
    assert batch_creates(emulator) == 1  # nothing sent twice
    assert sorted(await ledger_rows(router)) == [(1, 0), (2, 0), (3, 0)]


async def test_an_intent_with_no_remote_batch_is_released_and_sent_once(
    router: Router, emulator: Emulator
) -> None:
    await submit(router, 2)
    claim = await router.store.claim_batch(
        frame=BATCH_FORMAT, latencies=None, max_requests=100, max_bytes=10**6, now=router.clock()
    )
    assert claim is not None
    await router.poll()  # younger than the grace period, not settled: left alone
    assert (await router.store.state_counts()) == {"submitting": 2}
    emulator.clock.advance(router.config.batch.reconcile_grace)
    await router.poll()
    assert (await router.store.state_counts()) == {"pending": 2}
    assert await batch_states(router) == [("done", None)]
    await run_batches(router, emulator)
    assert (await router.store.state_counts()) == {"succeeded": 2}
    assert batch_creates(emulator) == 1


async def test_a_dropped_create_answer_is_reconciled_by_the_same_process(
    router: Router, emulator: Emulator
) -> None:
    await submit(router, 2)
    emulator.faults.fail_next("batches.create", drop=True)
    report = await router.flush()
    assert report.uncertain == 1 and report.batches == []
    await router.poll()  # its own lost answer: settled at once, the listing shows no batch
    assert (await router.store.state_counts()) == {"pending": 2}
    await run_batches(router, emulator)
    assert (await router.store.state_counts()) == {"succeeded": 2}


async def test_unsure_intent_is_resubmitted_and_a_late_found_duplicate_is_counted_not_delivered(
    router: Router, emulator: Emulator
) -> None:
    keys = await submit(router, 3)
    claim = await router.store.claim_batch(
        frame=BATCH_FORMAT, latencies=None, max_requests=100, max_bytes=10**6, now=router.clock()
    )
    assert claim is not None
    first = await create_batch(router.provider, router.store, claim)  # answer lost
    emulator.clock.advance(router.config.batch.reconcile_grace)
    emulator.faults.fail_next("batches.list", status=500, count=1)
    await router.poll()  # cannot list: not sure, so resubmit and keep looking
    assert await batch_states(router) == [(states.B_RELEASED, None)]
    assert (await router.store.state_counts()) == {"pending": 3}
    second = (await router.flush()).batches
    assert len(second) == 1
    await router.poll()  # the listing works again: the first batch is found, adopted and (ended) read
    assert await batch_states(router) == [("done", first.id), ("in_progress", second[0])]
    assert (await router.store.state_counts()) == {"submitted": 3}  # its results were duplicates only
    emulator.end_batches()
    await router.poll()
    assert (await router.store.state_counts()) == {"succeeded": 3}
    rows = await ledger_rows(router)
    assert sorted(r for r, d in rows if d == 0) == [1, 2, 3]  # one delivery each
    assert sorted(r for r, d in rows if d == 1) == [1, 2, 3]  # the duplicate submission, counted
    for key in keys:
        assert f"question {key}" in reply_text(await router.results.wait(key, timeout=5))
    totals = await router.store.ledger_totals()
    assert sum(t["requests"] for t in totals if t["duplicate"]) == 3


async def test_purge_drops_old_finished_rows_and_keeps_everything_in_flight(
    router: Router, emulator: Emulator
) -> None:
    await submit(router, 4, "done")
    await run_batches(router, emulator)
    await submit(router, 2, "later")
    await router.flush()  # two in flight
    await submit(router, 1, "waiting")  # one pending
    report = await router.store.purge(before=router.clock() + 1)
    # The newest finished request stays (its id and completion number must never be reused).
    assert (report.requests, report.batches) == (3, 1)
    assert report.ledger == 4
    counts = await router.store.state_counts()
    assert counts == {"succeeded": 1, "submitted": 2, "pending": 1}
    # Result lines went with their requests: only the kept one's is left.
    assert query(router.store.path, "SELECT COUNT(*) FROM results") == [(1,)]
    emulator.end_batches()
    await router.poll()
    assert (await router.store.state_counts())["succeeded"] == 3
    assert await router.results.get("later0") is not None


def test_purge_command_checks_its_argument_before_touching_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "p.db"
    config = tmp_path / "p.toml"
    config.write_text(f'[store]\npath = "{db}"\n', encoding="utf-8")
    assert main(["--config", str(config), "purge", "--older-than", "30x"]) == 2
    assert "--older-than: expected" in capsys.readouterr().err
    assert not db.exists()
    assert main(["--config", str(config), "purge", "--older-than", "30d"]) == 2
    assert "no database here" in capsys.readouterr().err  # purge opens a database, never makes one
    assert not db.exists()
    asyncio.run(_create_store(db))
    assert main(["--config", str(config), "purge", "--older-than", "30d"]) == 0
    assert (
        "purged 0 finished requests, 0 done batches and 0 ledger rows older than 30d"
        in capsys.readouterr().out
    )


async def test_daemon_purge_uses_store_retention(router: Router, emulator: Emulator) -> None:
    from router.daemon import Daemon

    await submit(router, 4)
    await run_batches(router, emulator)
    daemon = Daemon(router.config)
    daemon._router = router
    assert (await daemon.purge()).total == 0  # nothing is 30 days old
    cutoff = time.time() - router.config.store.retention - 10
    with contextlib.closing(sqlite3.connect(router.store.path, timeout=10)) as db, db:
        db.execute("UPDATE requests SET finished_at = ? WHERE id IN (1, 2, 3)", (cutoff,))
    ((expected,),) = query(
        router.store.path,
        "SELECT COUNT(*) FROM requests WHERE id IN (1, 2, 3)"
        " AND done_seq < (SELECT MAX(done_seq) FROM requests)",
    )
    assert expected >= 2
    assert (await daemon.purge()).requests == expected
    assert await router.results.get("q3") is not None  # the newest stays


async def _create_store(path: Path) -> None:
    await (await Store.open(path)).close()
