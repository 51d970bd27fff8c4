"""HTTP faults on create / retrieve / results: retried with backoff, no duplicate batch, no lost result."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from router import Router, poller
from router.emulator import Emulator
from router.store import Store, request_id_from
from router.store.sqlite import store as store_module
from tests.engine import batch_states, calls, creates, ledger_rows, quiet_router
from tests.helpers import ask, reply_text, until

# Every test runs on SQLite and on PostgreSQL (tests/stores.py), but those marked sqlite_only:
# they look into the SQLite file, or into the SQLite engine's ingest.
BOTH_ENGINES = True

CERTAIN_CREATE_FAILURES = [
    pytest.param({"status": 429, "retry_after": 30}, id="429-retry-after"),
    pytest.param({"status": 500}, id="500"),
    pytest.param({"status": 529}, id="529"),
]
POLL_FAULTS = [
    pytest.param({"status": 429, "retry_after": 45}, id="429-retry-after"),
    pytest.param({"status": 500}, id="500"),
    pytest.param({"status": 529}, id="529"),
    pytest.param({"drop": True}, id="dropped-connection"),
]


async def submit_many(router: Router, count: int, latency: str = "daily") -> None:
    for i in range(count):
        await router.messages.submit(**ask(f"request {i}"), latency=latency, key=f"k{i}")


async def all_delivered(router: Router, count: int) -> None:
    for i in range(count):
        assert f"request {i}" in reply_text(await router.results.wait(f"k{i}")), i
    rows = await ledger_rows(router)
    assert sorted(r for r, _, _ in rows) == list(range(1, count + 1))  # each result once
    assert all(t == "succeeded" and not dup for _, t, dup in rows)


@pytest.mark.parametrize("fault", CERTAIN_CREATE_FAILURES)
async def test_create_answered_with_an_error_is_retried_after_a_backoff(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic, fault: dict[str, Any]
) -> None:
    async with quiet_router(store_location, emulator, sdk) as router:
        await submit_many(router, 5)
        emulator.faults.fail_next("batches.create", **fault)
        await router._scheduled_flush("daily")
        assert not emulator.batches  # the API said no: certainly no batch
        assert await router.store.state_counts() == {"pending": 5}
        # The scheduler's next tick waits out the backoff (retry-after when given) ...
        await router._scheduled_flush("daily")
        assert len(creates(emulator)) == 1
        emulator.clock.advance(fault.get("retry_after", 1) + 0.5)
        # ... then creates exactly one batch.
        await router._scheduled_flush("daily")
        assert [e.status for e in creates(emulator)] == [fault["status"], 200]
        emulator.end_batches()
        await router.poll()
        await all_delivered(router, 5)
        assert len(emulator.batches) == 1


async def test_backoff_grows_while_create_keeps_failing(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    async with quiet_router(store_location, emulator, sdk) as router:
        await submit_many(router, 1)
        emulator.faults.fail_next("batches.create", status=500, count=3)
        waits = []
        for _ in range(3):
            await router._scheduled_flush("daily")
            waits.append(router._create_backoff.not_before - emulator.clock.now())
            emulator.clock.advance(waits[-1])
        assert waits == [1.0, 2.0, 4.0]
        await router._scheduled_flush("daily")
        assert len(emulator.batches) == 1
        assert router._create_backoff.failures == 0


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"drop": True}, id="dropped-before"),
        pytest.param({"drop": True, "after": True}, id="dropped-after-creating"),
    ],
)
async def test_create_without_an_answer_is_never_sent_twice(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic, fault: dict[str, Any]
) -> None:
    async with quiet_router(store_location, emulator, sdk) as router:
        await submit_many(router, 3)
        emulator.faults.fail_next("batches.create", **fault)
        report = await router.flush()
        assert report.uncertain == 1 and report.requests == 0
        assert len(emulator.batches) == (1 if fault.get("after") else 0)
        # Uncertain: the requests stay with their `creating` batch for the reconciler.
        assert await router.store.state_counts() == {"submitting": 3}
        assert await batch_states(router) == ["creating"]
        for _ in range(3):
            assert (await router.flush()).requests == 0
        assert len(creates(emulator)) == 1


async def test_create_timeout_is_uncertain_and_never_resent(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    impatient = sdk.with_options(timeout=0.2)
    emulator.faults.set("batches.create", slow_seconds=0.6)
    async with quiet_router(store_location, emulator, impatient) as router:
        await submit_many(router, 2)
        report = await router.flush()
        assert report.uncertain == 1
        assert isinstance(report.failure, anthropic.APITimeoutError)
        emulator.faults.clear()
        assert (await router.flush()).requests == 0

        async def answered() -> bool:  # the emulator finishes the slow create after the client left
            return len(creates(emulator)) >= 1

        await until(answered)
        assert len(creates(emulator)) == 1 and len(emulator.batches) <= 1
        assert await router.store.state_counts() == {"submitting": 2}


@contextlib.contextmanager
def nothing_listening() -> Iterator[str]:
    """A base URL on 127.0.0.1 that refuses connections: a port bound, never listened on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("cause", ["no-credentials", "connection-refused", "name-not-resolved"])
async def test_a_create_that_never_reached_the_api_releases_its_requests_at_once(
    db_path: Path,
    emulator: Emulator,
    sdk: anthropic.AsyncAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    cause: str,
) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with contextlib.ExitStack() as stack:
        base_url = {
            "no-credentials": emulator.url,
            "connection-refused": stack.enter_context(nothing_listening()),
            "name-not-resolved": "http://hybrid-router-test.invalid",  # RFC 6761: never resolves
        }[cause]
        broken = anthropic.AsyncAnthropic(
            base_url=base_url, api_key=None if cause == "no-credentials" else "test-key", max_retries=0
        )
        async with quiet_router(db_path, emulator, broken) as router:
            await submit_many(router, 3)
            report = await router.flush()
            assert (report.released, report.uncertain, report.batches) == (3, 0, [])
            expected = TypeError if cause == "no-credentials" else anthropic.APIConnectionError
            assert isinstance(report.failure, expected)
            # Back to pending now, not after [batch] reconcile_grace: nothing was sent.
            assert await router.store.state_counts() == {"pending": 3}
            assert await batch_states(router) == ["done"]
            await router.poll()  # and no reconciliation puts them anywhere else
            assert await router.store.state_counts() == {"pending": 3}
        await broken.close()
    assert creates(emulator) == []
    async with quiet_router(db_path, emulator, sdk) as router:  # fixed: sent once, all of them
        assert (await router.flush()).requests == 3
        emulator.end_batches()
        await router.poll()
        await all_delivered(router, 3)
    assert len(creates(emulator)) == 1


@pytest.mark.parametrize("fault", POLL_FAULTS)
async def test_retrieve_fault_is_retried_with_backoff(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic, fault: dict[str, Any]
) -> None:
    async with quiet_router(store_location, emulator, sdk) as router:
        await submit_many(router, 4)
        await router.flush()
        emulator.end_batches()
        emulator.faults.fail_next("batches.retrieve", **fault)
        first = await router.poll()
        assert (first.errors, first.delivered) == (1, 0)
        (batch,) = await router.store.open_batches()
        wait = max(router.config.batch.poll_interval, fault.get("retry_after", 0))
        assert batch.next_poll_at == pytest.approx(emulator.clock.now() + wait)
        before = calls(emulator, "batches.retrieve")
        await router.poll(force=False)  # not due yet: left alone
        assert calls(emulator, "batches.retrieve") == before
        emulator.clock.advance(wait)
        assert (await router.poll(force=False)).delivered == 4
        await all_delivered(router, 4)


@pytest.mark.parametrize("fault", POLL_FAULTS)
async def test_results_download_fault_is_retried_with_backoff(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic, fault: dict[str, Any]
) -> None:
    async with quiet_router(store_location, emulator, sdk) as router:
        await submit_many(router, 4)
        await router.flush()
        emulator.end_batches()
        emulator.faults.fail_next("batches.results", **fault)
        first = await router.poll()
        assert (first.errors, first.delivered) == (1, 0)
        assert await batch_states(router) == ["ended"]  # known ended; results still to fetch
        before = calls(emulator, "batches.results")
        await router.poll(force=False)
        assert calls(emulator, "batches.results") == before  # backing off
        emulator.clock.advance(max(router.config.batch.poll_interval, fault.get("retry_after", 0)))
        assert (await router.poll(force=False)).delivered == 4
        await all_delivered(router, 4)
        assert calls(emulator, "batches.results") == 2


@pytest.mark.parametrize("cut", ["results_cut_after", "results_cut_bytes"])
async def test_results_stream_cut_midway_resumes_skipping_what_is_stored(
    store_location: str,
    emulator: Emulator,
    sdk: anthropic.AsyncAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    cut: str,
) -> None:
    monkeypatch.setattr(poller, "INGEST_CHUNK", 10)  # several committed chunks before the cut
    async with quiet_router(store_location, emulator, sdk) as router:
        await submit_many(router, 60)
        await router.flush()
        emulator.end_batches()
        (remote,) = emulator.batches.values()
        lines = list(remote.result_lines())
        where = 35 if cut == "results_cut_after" else sum(len(line) for line in lines[:35]) + 17
        emulator.faults.set("batches.results", **{cut: where})
        first = await router.poll()
        assert first.errors == 1
        # Three whole chunks were committed before the stream broke; the line cut in two was not.
        assert await router.store.state_counts() == {"succeeded": 30, "submitted": 30}
        emulator.faults.clear()
        second = await router.poll()
        assert (second.delivered, second.duplicates, second.errors) == (30, 0, 0)
        await all_delivered(router, 60)
        assert await router.store.open_batches() == []


BrokenOff = tuple[Router, set[int]]


@pytest.fixture
async def broken_off(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[BrokenOff]:
    """A router whose ingest broke off: 40 requests in one ended batch, the results stream cut
    after 25 lines, so two chunks of 10 are stored and the rest waits (the fault is cleared).
    Yields the router and the ids of the 20 requests completed."""
    monkeypatch.setattr(poller, "INGEST_CHUNK", 10)
    async with quiet_router(store_location, emulator, sdk) as router:
        await submit_many(router, 40)
        await router.flush()
        emulator.end_batches()
        (remote,) = emulator.batches.values()
        done = {request_id_from(json.loads(line)["custom_id"]) for line in list(remote.result_lines())[:20]}
        emulator.faults.set("batches.results", results_cut_after=25)
        assert (await router.poll()).errors == 1
        emulator.faults.clear()
        yield router, done


@pytest.mark.sqlite_only
async def test_outcomes_of_a_broken_off_ingest_are_final_to_every_reader_and_writer(
    broken_off: BrokenOff, db_path: Path
) -> None:
    # A chunk appends its outcomes to `completions`; they reach the requests' rows only when
    # the batch's ingest ends (schema 8). Until then they must count as final everywhere.
    router, done = broken_off
    with sqlite3.connect(db_path) as raw:  # the rows themselves are not written yet
        assert raw.execute("SELECT COUNT(*) FROM completions").fetchone() == (20,)
        assert raw.execute("SELECT DISTINCT state FROM requests").fetchall() == [("submitted",)]

    other = await Store.open(db_path)  # what another process sees
    try:
        rows = await other.get_many(sorted(done))
        assert {(r.state, r.outcome, r.attempts) for r in rows} == {("succeeded", "succeeded", 1)}
        assert all(b"succeeded" in bytes(r.result or b"") for r in rows)
        _, ids = await other.completed_since(0)
        assert set(ids) == done
        assert await other.state_counts() == {"succeeded": 20, "submitted": 20}
        at_risk = await other.at_risk(horizon=float("inf"))
        assert len(at_risk) == 20 and not {r.id for r in at_risk} & done
        # A writer holding a stale read (submitted) cannot take a finished request off the batch.
        stale = [dataclasses.replace(at_risk[0], id=min(done))]
        assert await other.mark_escalated(stale, now=1.0) == []
        # Nor can a write that forgets the rule: SQLite refuses it.
        with (
            pytest.raises(sqlite3.IntegrityError, match="has a completion"),
            contextlib.closing(sqlite3.connect(db_path, timeout=10)) as raw,
            raw,
        ):
            raw.execute("UPDATE requests SET state = 'pending' WHERE id = ?", (min(done),))
    finally:
        await other.close()

    assert (await router.poll()).delivered == 20
    with sqlite3.connect(db_path) as raw:  # the batch's end folded every outcome in
        assert raw.execute("SELECT COUNT(*) FROM completions").fetchone() == (0,)
        assert raw.execute(
            "SELECT state, COUNT(DISTINCT done_seq) FROM requests GROUP BY state"
        ).fetchall() == [("succeeded", 40)]
    await all_delivered(router, 40)


async def test_a_line_read_again_after_a_purge_took_its_ledger_row_is_not_applied_twice(
    broken_off: BrokenOff, emulator: Emulator
) -> None:
    # A re-read skips the lines it stored by their ledger rows. If a purge took those, the
    # completion itself must still make the request final (found by review: the chunk died on
    # completions' unique request_id, and every later poll with it).
    router, _ = broken_off
    emulator.clock.advance(2 * 3600)
    assert (await router.store.purge(before=emulator.clock.now() - 3600)).ledger == 20
    report = await router.poll()
    assert (report.delivered, report.duplicates, report.errors) == (20, 20, 0)
    assert await router.store.open_batches() == []
    assert await router.store.state_counts() == {"succeeded": 40}


@pytest.mark.sqlite_only
async def test_a_batch_failed_for_missing_results_folds_what_its_broken_off_ingest_completed(
    broken_off: BrokenOff, db_path: Path, emulator: Emulator
) -> None:
    router, _ = broken_off
    emulator.clock.advance(30 * 86400)  # past the 29 days: the results are gone
    assert (await router.poll()).delivered == 20  # the 20 unanswered fail as `missing`
    assert await router.store.open_batches() == []
    assert await router.store.state_counts() == {"succeeded": 20, "failed": 20}
    with sqlite3.connect(db_path) as raw:  # nothing left for a purge to trip over
        assert raw.execute("SELECT COUNT(*) FROM completions").fetchone() == (0,)
        assert raw.execute("SELECT COUNT(*) FROM requests WHERE state = 'submitted'").fetchone() == (0,)


async def test_many_faults_at_rates_lose_nothing_and_duplicate_nothing(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(poller, "INGEST_CHUNK", 7)
    emulator.faults.set("batches.create", rate_limit=0.2, overloaded=0.2, server_error=0.2)
    for endpoint in ("batches.retrieve", "batches.results"):
        emulator.faults.set(endpoint, rate_limit=0.15, overloaded=0.15, server_error=0.15, drop=0.15)
    emulator.outcomes.errored = {"overloaded_error": 0.1}
    emulator.outcomes.expired = 0.1
    extra = "[batch]\nmax_requests = 40\n"
    async with quiet_router(store_location, emulator, sdk, extra) as router:
        await submit_many(router, 150, latency="weekly")
        for _ in range(60):
            await router.flush()
            emulator.end_batches()
            await router.poll()
            emulator.clock.advance(60)
            counts = await router.store.state_counts()
            if set(counts) <= {"succeeded", "failed"}:
                break
        counts = await router.store.state_counts()
        assert sum(counts.values()) == 150 and set(counts) <= {"succeeded", "failed"}, counts
        rows = await ledger_rows(router)
        assert not any(dup for _, _, dup in rows)
        finals = [r for r, t, _ in rows if t == "succeeded"]
        assert len(finals) == len(set(finals)) == counts.get("succeeded", 0)
        # Every batch the API accepted holds requests no other accepted batch held at the same time.
        assert sum(b.request_count for b in emulator.batches.values()) == len(rows)


@pytest.mark.parametrize("after", [True, False], ids=["created-answer-lost", "never-created"])
async def test_lost_create_answer_with_a_failing_list_ends_in_one_batch(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic, after: bool
) -> None:
    async with quiet_router(store_location, emulator, sdk) as router:
        await submit_many(router, 3)
        emulator.faults.fail_next("batches.create", drop=True, after=after)
        assert (await router.flush()).uncertain == 1
        emulator.faults.fail_next("batches.list", status=500)
        await router.poll()  # the listing fails: nothing is decided, nothing is resent
        assert await router.store.state_counts() == {"submitting": 3}
        emulator.faults.fail_next("batches.list", status=429, retry_after=5)
        await router.poll()
        assert await router.store.state_counts() == {"submitting": 3}
        await router.poll()  # the listing answers: adopted if it exists, else back to pending
        await router.flush()
        emulator.end_batches()
        await router.poll()
        await all_delivered(router, 3)
        assert len(emulator.batches) == 1
        assert calls(emulator, "batches.list") >= 3


@pytest.mark.parametrize("endpoint", ["batches.retrieve", "batches.results"])
async def test_poll_timeouts_are_retried(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic, endpoint: str
) -> None:
    async with quiet_router(store_location, emulator, sdk.with_options(timeout=0.2)) as router:
        await submit_many(router, 2)
        await router.flush()
        emulator.end_batches()
        emulator.faults.set(endpoint, slow_seconds=0.5)
        report = await router.poll()
        assert (report.errors, report.delivered) == (1, 0)
        emulator.faults.clear()
        emulator.clock.advance(router.config.batch.poll_interval)
        assert (await router.poll(force=False)).delivered == 2
        await all_delivered(router, 2)


@pytest.mark.sqlite_only
async def test_cancelled_poll_waits_for_the_chunk_in_sqlites_thread_and_loses_nothing(
    db_path: Path,
    emulator: Emulator,
    sdk: anthropic.AsyncAnthropic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A chunk's transaction runs whole in SQLite's thread: a cancel cannot stop it half-way,
    # so the cancelled poll waits for it, and what it committed stays committed.
    monkeypatch.setattr(poller, "INGEST_CHUNK", 5)
    entered, release = threading.Event(), threading.Event()
    original = store_module.apply_chunk

    def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(10)
        return original(*args, **kwargs)

    async with quiet_router(db_path, emulator, sdk) as router:
        await submit_many(router, 12)
        await router.flush()
        emulator.end_batches()
        monkeypatch.setattr(store_module, "apply_chunk", held)
        poll = asyncio.create_task(router.poll())
        assert await asyncio.to_thread(entered.wait, 10)
        poll.cancel()
        for _ in range(100):  # loop turns, not time: the poll could only finish by not waiting
            await asyncio.sleep(0)
        assert not poll.done()  # still waiting for the transaction it cannot interrupt
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await poll
        monkeypatch.setattr(store_module, "apply_chunk", original)
        # Whole chunks only: the held one, and the next if it reached the thread before the cancel.
        counts = await router.store.state_counts()
        done = counts.get("succeeded", 0)
        assert done in (5, 10) and counts.get("submitted", 0) == 12 - done, counts
        again = await router.poll()
        assert again.delivered == 12 - done
        assert await router.store.state_counts() == {"succeeded": 12}
        totals = await router.store.ledger_totals()
        assert [(t["requests"], t["duplicate"]) for t in totals] == [(12, 0)]


@pytest.mark.sqlite_only
async def test_a_chunk_that_fails_half_written_is_rolled_back_whole(
    db_path: Path,
    emulator: Emulator,
    sdk: anthropic.AsyncAnthropic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from router.store.sqlite import ingest

    async with quiet_router(db_path, emulator, sdk) as router:
        await submit_many(router, 6)
        await router.flush()
        emulator.end_batches()
        # The last statement on the writer's thread fails, after every write of the chunk ran.
        monkeypatch.setattr(ingest, "_STATUS", "SELECT * FROM no_such_table")
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await router.poll()  # a store failure is not an API fault: the caller sees it
        assert await router.store.state_counts() == {"submitted": 6}
        with sqlite3.connect(db_path) as raw:
            assert raw.execute("SELECT COUNT(*) FROM results").fetchone() == (0,)
        monkeypatch.undo()
        assert (await router.poll()).delivered == 6
        await all_delivered(router, 6)
